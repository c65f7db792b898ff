//! Every length a host puts in a command is bounded before the target
//! sizes anything by it.
//!
//! The commands go through a real [`Conn`] (as bytes, exactly as from the
//! socket) while a watching global allocator refuses, on the test's own
//! thread, any single allocation larger than [`ALLOC_LIMIT`]: a handler
//! that sized a buffer by a peer-chosen length before checking it aborts
//! the test binary instead of quietly allocating gigabytes. Each test then
//! checks the completion status the host gets.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use super::conn::{Close, Conn};
use super::testbed;
use super::{Target, TargetOptions};
use ferrofab_nvmeof_wire::spec::status::Status;
use ferrofab_nvmeof_wire::spec::{admin, fctype, nvm, prop};
use ferrofab_nvmeof_wire::wire::command::{SGL_DATA_BLOCK_OFFSET, SGL_TRANSPORT_DATA_BLOCK};
use ferrofab_nvmeof_wire::wire::pdu::{self, pdu_type};
use ferrofab_nvmeof_wire::wire::{DataHeader, DecodeStatus, Digests, IcReq, Pdu, Sgl, Sqe};

/// Largest single allocation a command may cause: MDTS (1 MiB by
/// default) plus PDU headers, with room to spare, and far below any
/// length a host can write in a command (up to 4 GiB in an SGL, 16 GiB in
/// NUMD).
const ALLOC_LIMIT: usize = 4 << 20;

const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-00000000a11c";
const NQN: &str = "nqn.2026-11.io.ferrofab:limits";

/// Delegates to the system allocator; while [`watch`] runs on a thread,
/// refuses that thread's allocations over the limit and remembers the
/// largest one asked for.
struct WatchingAlloc;

thread_local! {
    static WATCH_LIMIT: Cell<usize> = const { Cell::new(usize::MAX) };
    static LARGEST_REFUSED: Cell<usize> = const { Cell::new(0) };
}

fn over_limit(size: usize) -> bool {
    let limit = WATCH_LIMIT.try_with(Cell::get).unwrap_or(usize::MAX);
    if size <= limit {
        return false;
    }
    let _ = LARGEST_REFUSED.try_with(|l| l.set(l.get().max(size)));
    true
}

// SAFETY: every call is forwarded unchanged to `System`, or refused with a
// null pointer, which the `GlobalAlloc` contract allows.
unsafe impl GlobalAlloc for WatchingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if over_limit(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: same layout, forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if over_limit(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: same layout, forwarded.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if over_limit(new_size) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's pointer and layout, forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's pointer and layout, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: WatchingAlloc = WatchingAlloc;

/// Run `f` with this thread's allocations capped at [`ALLOC_LIMIT`].
fn watch<T>(f: impl FnOnce() -> T) -> T {
    LARGEST_REFUSED.with(|l| l.set(0));
    WATCH_LIMIT.with(|l| l.set(ALLOC_LIMIT));
    let out = f();
    WATCH_LIMIT.with(|l| l.set(usize::MAX));
    let refused = LARGEST_REFUSED.with(Cell::get);
    assert_eq!(refused, 0, "an allocation of {refused} bytes was attempted");
    out
}

struct Bed {
    target: Target,
    _dir: tempfile::TempDir,
}

fn bed() -> Bed {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = Target::new(TargetOptions {
        // Every answer is checked in the send buffer, so read data must
        // go through it rather than straight from the file.
        sendfile_min_bytes: 0,
        ..TargetOptions::default()
    })
    .expect("target");
    testbed::add_subsystem(&target, NQN, HOST);
    testbed::add_file_namespace(&target, NQN, &dir.path().join("ns.img"), 8 << 20);
    Bed { target, _dir: dir }
}

/// A connection whose peer end is drained by a thread.
fn connection(bed: &Bed) -> Conn {
    testbed::drained_conn(&bed.target).expect("connection")
}

fn capsule(sqe: &Sqe, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    pdu::encode_capsule_cmd(&mut out, sqe, data, Digests::default());
    out
}

fn no_data(length: u32) -> Sgl {
    Sgl {
        address: 0,
        length,
        id: SGL_TRANSPORT_DATA_BLOCK,
    }
}

fn connect_capsule(qid: u16, cntlid: u16) -> Vec<u8> {
    let mut data = vec![0u8; 1024];
    data[16..18].copy_from_slice(&cntlid.to_le_bytes());
    data[256..256 + NQN.len()].copy_from_slice(NQN.as_bytes());
    data[512..512 + HOST.len()].copy_from_slice(HOST.as_bytes());
    let sqe = Sqe {
        opcode: admin::FABRICS,
        cid: 1,
        nsid: u32::from(fctype::CONNECT),
        cdw10: u32::from(qid) << 16,
        cdw11: 31,
        sgl: Sgl {
            address: 0,
            length: 1024,
            id: SGL_DATA_BLOCK_OFFSET,
        },
        ..Default::default()
    };
    capsule(&sqe, &data)
}

/// ICReq, then Connect on `qid` (enabling the controller for the admin
/// queue). Returns the connection with its output cleared.
fn queue(bed: &Bed, qid: u16, cntlid: u16) -> Conn {
    let mut conn = connection(bed);
    let mut bytes = Vec::new();
    pdu::encode_ic_req(
        &mut bytes,
        &IcReq {
            pfv: 0,
            hpda: 0,
            digests: Digests::default(),
            maxr2t: 0,
        },
    );
    bytes.extend(connect_capsule(qid, cntlid));
    if qid == 0 {
        let enable = Sqe {
            opcode: admin::FABRICS,
            cid: 2,
            nsid: u32::from(fctype::PROPERTY_SET),
            cdw11: prop::CC,
            cdw12: (6 << 16) | (4 << 20) | 1,
            sgl: no_data(0),
            ..Default::default()
        };
        bytes.extend(capsule(&enable, &[]));
    }
    conn.feed(&bytes).expect("connect");
    let statuses = responses(&mut conn);
    assert!(
        statuses.iter().all(|s| s.0 == Status::SUCCESS),
        "set-up failed: {statuses:?}"
    );
    conn
}

/// An enabled admin queue, and an I/O queue on the same controller.
fn admin_and_io(bed: &Bed) -> (Conn, Conn) {
    let admin = queue(bed, 0, 0xFFFF);
    let cntlid = admin.queue.as_ref().map(|q| q.ctrl.cntlid).expect("cntlid");
    let io = queue(bed, 1, cntlid);
    (admin, io)
}

/// Completion statuses (with DW0) and the bytes of C2HData / R2T the
/// connection queued since the last call.
fn responses(conn: &mut Conn) -> Vec<(Status, u64, &'static str)> {
    let tx = std::mem::take(&mut conn.tx);
    let mut out = Vec::new();
    let mut at = 0;
    while at < tx.len() {
        match pdu::decode(&tx[at..], Digests::default(), 64 << 20) {
            Ok(DecodeStatus::Complete(d)) => {
                at += d.len;
                match d.pdu {
                    Pdu::CapsuleResp(c) => {
                        out.push((Status::from_field(c.status), c.result, "resp"))
                    }
                    Pdu::C2hData { .. } => out.push((Status::SUCCESS, 0, "c2h")),
                    Pdu::R2t(_) => out.push((Status::SUCCESS, 0, "r2t")),
                    Pdu::C2hTermReq(_) => out.push((Status::INTERNAL_ERROR, 0, "term")),
                    _ => out.push((Status::INTERNAL_ERROR, 0, "other")),
                }
            }
            other => panic!("target queued a bad PDU: {other:?}"),
        }
    }
    out
}

/// Send one command under the allocation watch and return the only
/// thing the target answers: a completion, with no data and no R2T.
fn refused(conn: &mut Conn, sqe: Sqe, data: &[u8]) -> Status {
    let bytes = capsule(&sqe, data);
    watch(|| conn.feed(&bytes)).expect("the connection stays up");
    let got = responses(conn);
    assert_eq!(got.len(), 1, "one completion and nothing else: {got:?}");
    assert_eq!(got[0].2, "resp");
    got[0].0
}

fn admin_sqe(opcode: u8, cdw10: u32, cdw11: u32, sgl_length: u32) -> Sqe {
    Sqe {
        opcode,
        cid: 9,
        nsid: 0,
        cdw10,
        cdw11,
        sgl: no_data(sgl_length),
        ..Default::default()
    }
}

/// NUMD all ones is 2^32 dwords, 16 GiB; the SGL can say at most 4 GiB.
/// Main allocated the whole 16 GiB before looking at either.
#[test]
fn get_log_page_numd_max_is_refused_without_allocating() {
    let bed = bed();
    let mut conn = queue(&bed, 0, 0xFFFF);
    // SMART log, NUMDL = NUMDU = FFFFh, SGL 4 GiB - 1.
    let sqe = admin_sqe(admin::GET_LOG_PAGE, 0x02 | (0xFFFF << 16), 0xFFFF, u32::MAX);
    assert_eq!(refused(&mut conn, sqe, &[]), Status::INVALID_FIELD);
    // The same NUMD with a small SGL: still over MDTS.
    let sqe = admin_sqe(admin::GET_LOG_PAGE, 0x02 | (0xFFFF << 16), 0xFFFF, 512);
    assert_eq!(refused(&mut conn, sqe, &[]), Status::INVALID_FIELD);
    // One dword past MDTS (1 MiB), SGL to match.
    let numd = (1 << 18) as u32; // 0-based: 2^18 + 1 dwords
    let sqe = admin_sqe(
        admin::GET_LOG_PAGE,
        0x02 | ((numd & 0xFFFF) << 16),
        numd >> 16,
        (1 << 20) + 4,
    );
    assert_eq!(refused(&mut conn, sqe, &[]), Status::INVALID_FIELD);
}

/// NUMD and the SGL must agree, as Linux nvmet requires (on fabrics it
/// answers Data SGL Length Invalid).
#[test]
fn get_log_page_numd_disagreeing_with_the_sgl_is_refused() {
    let bed = bed();
    let mut conn = queue(&bed, 0, 0xFFFF);
    let numd_512 = 127 << 16;
    for sgl in [0, 4, 511, 513, 4096, u32::MAX] {
        let sqe = admin_sqe(admin::GET_LOG_PAGE, 0x02 | numd_512, 0, sgl);
        assert_eq!(
            refused(&mut conn, sqe, &[]),
            Status::DATA_SGL_LENGTH_INVALID,
            "SGL {sgl}"
        );
    }
    // A read past the page's end is served: the page, then zeroes.
    let numd = 2047 << 16;
    let sqe = admin_sqe(admin::GET_LOG_PAGE, 0x02 | numd, 0, 8192);
    let bytes = capsule(&sqe, &[]);
    watch(|| conn.feed(&bytes)).expect("served");
    let kinds: Vec<_> = responses(&mut conn).iter().map(|r| r.2).collect();
    assert_eq!(kinds, ["c2h", "resp"]);
    // A read of MDTS is served too (the socket takes it at once), and
    // allocates no more than that.
    let numd = (1 << 18) - 1;
    let sqe = admin_sqe(
        admin::GET_LOG_PAGE,
        0x02 | ((numd & 0xFFFF) << 16),
        numd >> 16,
        1 << 20,
    );
    let bytes = capsule(&sqe, &[]);
    watch(|| conn.feed(&bytes)).expect("served");
}

/// Identify moves exactly 4 KiB whatever the CNS.
#[test]
fn identify_with_a_wrong_transfer_length_is_refused() {
    let bed = bed();
    let mut conn = queue(&bed, 0, 0xFFFF);
    for sgl in [0, 4095, 4097, u32::MAX] {
        let sqe = admin_sqe(admin::IDENTIFY, 1, 0, sgl);
        assert_eq!(
            refused(&mut conn, sqe, &[]),
            Status::DATA_SGL_LENGTH_INVALID,
            "SGL {sgl}"
        );
    }
}

/// Get and Set Features carry no data, except Get Host Identifier (16
/// bytes); Keep Alive, Asynchronous Event Request and Abort none at all.
#[test]
fn features_keep_alive_aer_and_abort_with_a_data_length_are_refused() {
    let bed = bed();
    let mut conn = queue(&bed, 0, 0xFFFF);
    let cases = [
        (admin::GET_FEATURES, 0x07, 0),
        (admin::SET_FEATURES, 0x06, 1),
        (admin::GET_FEATURES, 0x81, 1),
        (admin::SET_FEATURES, 0x81, 1),
        (admin::KEEP_ALIVE, 0, 0),
        (admin::ASYNC_EVENT_REQUEST, 0, 0),
        (admin::ABORT, 0, 0),
    ];
    for (opcode, cdw10, cdw11) in cases {
        let sqe = admin_sqe(opcode, cdw10, cdw11, u32::MAX);
        assert_eq!(
            refused(&mut conn, sqe, &[]),
            Status::DATA_SGL_LENGTH_INVALID,
            "opcode {opcode:#x} cdw10 {cdw10:#x}"
        );
    }
    // In-capsule data on a command that takes none.
    let mut sqe = admin_sqe(admin::SET_FEATURES, 0x06, 1, 64);
    sqe.sgl.id = SGL_DATA_BLOCK_OFFSET;
    assert_eq!(refused(&mut conn, sqe, &[0; 64]), Status::INVALID_FIELD);
}

/// Property Get and Set carry their value in the command.
#[test]
fn property_commands_with_a_data_length_are_refused() {
    let bed = bed();
    let mut conn = queue(&bed, 0, 0xFFFF);
    for fct in [fctype::PROPERTY_GET, fctype::PROPERTY_SET] {
        let sqe = Sqe {
            opcode: admin::FABRICS,
            cid: 9,
            nsid: u32::from(fct),
            cdw11: prop::CC,
            sgl: no_data(u32::MAX),
            ..Default::default()
        };
        assert_eq!(
            refused(&mut conn, sqe, &[]),
            Status::DATA_SGL_LENGTH_INVALID,
            "fctype {fct:#x}"
        );
    }
    // An unknown property offset is Invalid Field, whatever its value.
    let sqe = Sqe {
        opcode: admin::FABRICS,
        cid: 9,
        nsid: u32::from(fctype::PROPERTY_GET),
        cdw10: 1,
        cdw11: u32::MAX,
        sgl: no_data(0),
        ..Default::default()
    };
    assert_eq!(refused(&mut conn, sqe, &[]), Status::INVALID_FIELD);
}

/// Connect data is exactly 1024 bytes; a capsule cannot claim more than
/// it can hold, nor an offset past the end of memory.
#[test]
fn connect_data_lengths_and_offsets_are_checked() {
    let bed = bed();
    let mut conn = connection(&bed);
    let mut ic = Vec::new();
    pdu::encode_ic_req(
        &mut ic,
        &IcReq {
            pfv: 0,
            hpda: 0,
            digests: Digests::default(),
            maxr2t: 0,
        },
    );
    conn.feed(&ic).expect("icreq");
    let connect = |length: u32, address: u64| Sqe {
        opcode: admin::FABRICS,
        cid: 3,
        nsid: u32::from(fctype::CONNECT),
        cdw11: 31,
        sgl: Sgl {
            address,
            length,
            id: SGL_DATA_BLOCK_OFFSET,
        },
        ..Default::default()
    };
    let data = vec![0u8; 2048];
    // More than the capsule may hold.
    assert_eq!(
        refused(&mut conn, connect(u32::MAX, 0), &data),
        Status::DATA_SGL_LENGTH_INVALID
    );
    // An offset whose sum with the length overflows.
    assert_eq!(
        refused(&mut conn, connect(1024, u64::MAX - 8), &data),
        Status::DATA_SGL_LENGTH_INVALID
    );
    // Longer or shorter than the Connect data structure.
    assert_eq!(
        refused(&mut conn, connect(2048, 0), &data),
        Status::CONNECT_INVALID_PARAMETERS
    );
    assert_eq!(
        refused(&mut conn, connect(100, 0), &data[..100]),
        Status::CONNECT_INVALID_PARAMETERS
    );
    // Data promised through R2T instead of the capsule: none is asked for.
    let mut r2t = connect(u32::MAX, 0);
    r2t.sgl.id = SGL_TRANSPORT_DATA_BLOCK;
    assert_eq!(
        refused(&mut conn, r2t, &[]),
        Status::CONNECT_INVALID_PARAMETERS
    );
}

fn io_sqe(opcode: u8, nlb_0based: u32, sgl_length: u32) -> Sqe {
    Sqe {
        opcode,
        cid: 11,
        nsid: 1,
        cdw12: nlb_0based,
        sgl: no_data(sgl_length),
        ..Default::default()
    }
}

/// NLB can ask for 65536 blocks (32 MiB here, 256 MiB with 4 KiB blocks):
/// over MDTS is Invalid Field, an SGL disagreeing with NLB Data SGL Length
/// Invalid, and no R2T asks for the data.
#[test]
fn read_and_write_lengths_are_bounded_by_mdts_and_the_sgl() {
    let bed = bed();
    let (_admin, mut io) = admin_and_io(&bed);
    for opcode in [nvm::READ, nvm::WRITE] {
        let huge = io_sqe(opcode, 0xFFFF, u32::MAX);
        assert_eq!(
            refused(&mut io, huge, &[]),
            Status::LBA_OUT_OF_RANGE,
            "past the 8 MiB namespace"
        );
        let over_mdts = io_sqe(opcode, 4095, 4096 * 512);
        assert_eq!(refused(&mut io, over_mdts, &[]), Status::INVALID_FIELD);
        let mismatched = io_sqe(opcode, 7, u32::MAX);
        assert_eq!(
            refused(&mut io, mismatched, &[]),
            Status::DATA_SGL_LENGTH_INVALID
        );
    }
    // A Read cannot bring data in the capsule.
    let mut read = io_sqe(nvm::READ, 0, 512);
    read.sgl.id = SGL_DATA_BLOCK_OFFSET;
    assert_eq!(refused(&mut io, read, &[0; 512]), Status::INVALID_FIELD);
}

/// Dataset Management: NR allows 256 ranges (4 KiB); the SGL must match.
#[test]
fn dataset_management_ranges_must_match_the_sgl() {
    let bed = bed();
    let (_admin, mut io) = admin_and_io(&bed);
    for (nr, sgl) in [(0xFF, u32::MAX), (0, 32), (1, 16)] {
        let dsm = Sqe {
            cdw10: nr,
            cdw11: 1 << 2,
            ..io_sqe(nvm::DATASET_MANAGEMENT, 0, sgl)
        };
        assert_eq!(
            refused(&mut io, dsm, &[]),
            Status::DATA_SGL_LENGTH_INVALID,
            "NR {nr} SGL {sgl}"
        );
    }
    // In the capsule, more bytes than the ranges need.
    let mut dsm = Sqe {
        cdw10: 0,
        cdw11: 1 << 2,
        ..io_sqe(nvm::DATASET_MANAGEMENT, 0, 64)
    };
    dsm.sgl.id = SGL_DATA_BLOCK_OFFSET;
    assert_eq!(
        refused(&mut io, dsm, &[0; 64]),
        Status::DATA_SGL_LENGTH_INVALID
    );
}

/// Flush and Write Zeroes move no data.
#[test]
fn flush_and_write_zeroes_with_a_data_length_are_refused() {
    let bed = bed();
    let (_admin, mut io) = admin_and_io(&bed);
    for opcode in [nvm::FLUSH, nvm::WRITE_ZEROES] {
        let sqe = io_sqe(opcode, 0, u32::MAX);
        assert_eq!(
            refused(&mut io, sqe, &[]),
            Status::DATA_SGL_LENGTH_INVALID,
            "opcode {opcode:#x}"
        );
    }
}

/// H2CData must stay inside what the R2T asked for: a piece past it, or
/// larger than MAXH2CDATA, ends the connection with a C2HTermReq, having
/// stored and allocated nothing.
#[test]
fn h2c_data_outside_the_r2t_ends_the_connection() {
    let bed = bed();
    for (datao, datal) in [
        (4096u32, 512u32),
        (0, 8192),
        (u32::MAX - 100, 512),
        (0, 256 << 10),
    ] {
        let (_admin, mut io) = admin_and_io(&bed);
        let write = io_sqe(nvm::WRITE, 7, 4096);
        io.feed(&capsule(&write, &[])).expect("write");
        let kinds: Vec<_> = responses(&mut io).iter().map(|r| r.2).collect();
        assert_eq!(kinds, ["r2t"]);
        let mut bytes = Vec::new();
        pdu::encode_data_pdu(
            &mut bytes,
            pdu_type::H2C_DATA,
            &DataHeader {
                cccid: 11,
                ttag: 0,
                datao,
                datal,
            },
            pdu::flags::LAST_PDU,
            &vec![0xAB; datal as usize],
            Digests::default(),
        );
        let closed = watch(|| io.feed(&bytes));
        assert!(
            matches!(closed, Err(Close::Protocol(_))),
            "offset {datao} length {datal}: {closed:?}"
        );
        let kinds: Vec<_> = responses(&mut io).iter().map(|r| r.2).collect();
        assert_eq!(kinds, ["term"], "offset {datao} length {datal}");
    }
}
