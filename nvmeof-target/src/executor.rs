//! A pool of threads for backend I/O that bypasses the page cache.
//!
//! A read served from the page cache takes a microsecond, so the queue's
//! own thread does it inline and answers with no hand-off. A read with
//! `O_DIRECT` waits tens of microseconds for the device, and done inline
//! it would leave one backend I/O in flight per queue whatever the host's
//! queue depth. Those commands go to this pool instead: the queue thread
//! keeps reading commands, the device sees the host's queue depth, and the
//! worker sends the completion itself through the queue's [`ConnLink`].
//!
//! The hand-off is not free (a wake-up, a reply buffer and one send per
//! command instead of one per batch), so only namespaces that really wait
//! on a device come here: a file on tmpfs opens buffered in `auto` mode
//! even though the kernel accepts `O_DIRECT` there (`settle_direct_io`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use ferrofab_nvmeof_wire::spec::status::Status;
use ferrofab_nvmeof_wire::wire::pdu::{
    self, begin_data_pdu, encode_capsule_resp, finish_data_pdu, pdu_type,
};
use ferrofab_nvmeof_wire::wire::{Cqe, DataHeader};

use super::registry::Namespace;
use super::socket::ConnLink;
use super::sync::lock;
use crate::backend::BackendError;

/// Map a backend failure to the NVMe status the host should see.
pub(crate) fn backend_status(err: &BackendError) -> Status {
    if err.is_out_of_range() {
        Status::LBA_OUT_OF_RANGE
    } else if err.is_no_space() {
        Status::CAPACITY_EXCEEDED
    } else {
        Status::INTERNAL_ERROR
    }
}

/// What to do.
#[derive(Debug)]
pub(crate) enum JobKind {
    Read {
        offset: u64,
        len: usize,
    },
    Write {
        offset: u64,
        data: Vec<u8>,
        durable: bool,
    },
    Flush,
}

/// Where and how to answer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub link: Arc<ConnLink>,
    pub cid: u16,
    pub sqid: u16,
    /// Complete a read with the C2HData SUCCESS flag instead of a
    /// CapsuleResp (the host disabled SQ flow control).
    pub success_flag: bool,
    /// The connection's count of commands in the pool.
    pub in_flight: Arc<AtomicUsize>,
}

#[derive(Debug)]
pub(crate) struct Job {
    pub kind: JobKind,
    pub ns: Arc<Namespace>,
    pub reply: Reply,
}

/// The pool. Dropping it lets the workers finish their jobs and exit.
#[derive(Debug)]
pub(crate) struct Executor {
    tx: Mutex<Sender<Job>>,
}

impl Executor {
    pub(crate) fn start(threads: usize) -> std::io::Result<Executor> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            thread::Builder::new()
                .name(format!("nvmeof-io-{i}"))
                .spawn(move || worker(&rx))?;
        }
        Ok(Executor { tx: Mutex::new(tx) })
    }

    /// Queue a job. If the pool is gone, the job runs on the caller's
    /// thread so the command still completes.
    pub(crate) fn submit(&self, job: Job) {
        job.reply.in_flight.fetch_add(1, Ordering::AcqRel);
        let rejected = lock(&self.tx).send(job);
        if let Err(mpsc::SendError(job)) = rejected {
            run(job);
        }
    }
}

fn worker(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = match lock(rx).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        run(job);
    }
}

fn run(job: Job) {
    let started = Instant::now();
    let mut out = Vec::new();
    match job.kind {
        JobKind::Read { offset, len } => read(&job.ns, &job.reply, offset, len, &mut out),
        JobKind::Write {
            offset,
            data,
            durable,
        } => {
            let result = if durable {
                job.ns.backend.write_at_durable(&data, offset)
            } else {
                job.ns.backend.write_at(&data, offset)
            };
            let status = match result {
                Ok(()) => {
                    job.ns.stats.record_write(data.len(), started.elapsed());
                    Status::SUCCESS
                }
                Err(e) => {
                    job.ns.stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(nsid = job.ns.nsid, offset, len = data.len(), error = %e, "write failed");
                    backend_status(&e)
                }
            };
            respond(&job.reply, status, &mut out);
        }
        JobKind::Flush => {
            job.ns.stats.flushes.fetch_add(1, Ordering::Relaxed);
            let status = match job.ns.backend.flush() {
                Ok(()) => Status::SUCCESS,
                Err(e) => {
                    tracing::error!(nsid = job.ns.nsid, error = %e, "flush failed");
                    Status::WRITE_FAULT
                }
            };
            respond(&job.reply, status, &mut out);
        }
    }
    // A connection that went away meanwhile just loses the answer, as the
    // host would if it had been sent.
    let _ = job.reply.link.send(&out);
    job.reply.in_flight.fetch_sub(1, Ordering::AcqRel);
}

fn read(ns: &Namespace, reply: &Reply, offset: u64, len: usize, out: &mut Vec<u8>) {
    let started = Instant::now();
    let digests = reply.link.digests;
    let hdr = DataHeader {
        cccid: reply.cid,
        ttag: 0,
        datao: 0,
        datal: len as u32,
    };
    let extra = pdu::flags::LAST_PDU
        | if reply.success_flag {
            pdu::flags::SUCCESS
        } else {
            0
        };
    let at = begin_data_pdu(out, pdu_type::C2H_DATA, &hdr, extra, digests);
    if let Err(e) = ns.backend.read_append(out, len, offset) {
        out.clear();
        ns.stats.errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(nsid = ns.nsid, offset, len, error = %e, "read failed");
        let status = if e.is_out_of_range() {
            Status::LBA_OUT_OF_RANGE
        } else {
            Status::UNRECOVERED_READ_ERROR
        };
        respond(reply, status, out);
        return;
    }
    finish_data_pdu(out, at, digests);
    ns.stats.record_read(len, started.elapsed());
    if !reply.success_flag {
        respond(reply, Status::SUCCESS, out);
    }
}

fn respond(reply: &Reply, status: Status, out: &mut Vec<u8>) {
    let cqe = Cqe {
        result: 0,
        sqhd: reply.link.sqhd(),
        sqid: reply.sqid,
        cid: reply.cid,
        status: status.to_field(),
    };
    encode_capsule_resp(out, &cqe, reply.link.digests);
}
