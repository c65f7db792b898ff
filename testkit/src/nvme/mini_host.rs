//! A deliberately small NVMe/TCP host used to test the target on its own,
//! byte by byte, without the real initiator. It sends one command at a time
//! and checks every PDU it gets back.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

pub use ferrofab_nvmeof_target::backend::DirectIo;
use ferrofab_nvmeof_target::backend::{open_backend, FileOptions};
use ferrofab_nvmeof_target::{
    derive_uuid, ListenerKind, NamespaceConfig, SubsystemConfig, Target, TargetOptions,
};
use ferrofab_nvmeof_wire::spec::status::Status;
use ferrofab_nvmeof_wire::spec::{admin, fctype, nvm, prop};
use ferrofab_nvmeof_wire::wire::command::{SGL_DATA_BLOCK_OFFSET, SGL_TRANSPORT_DATA_BLOCK};
use ferrofab_nvmeof_wire::wire::pdu::{self, flags, pdu_type};
use ferrofab_nvmeof_wire::wire::{Cqe, DataHeader, DecodeStatus, Digests, IcReq, Pdu, Sqe};

pub const SUBNQN: &str = "nqn.2026-11.io.ferrofab:test";
pub const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-000000000001";
pub const OTHER_HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-000000000002";

/// A target on a free loopback port with one 64 MiB namespace.
pub struct Fixture {
    pub target: Target,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

pub fn fixture() -> Fixture {
    fixture_with(TargetOptions::default())
}

pub fn fixture_with(opts: TargetOptions) -> Fixture {
    fixture_with_io(opts, DirectIo::Auto)
}

/// `direct` decides whether the namespace bypasses the page cache, and so
/// whether its I/O runs on the queue thread or on the I/O threads.
pub fn fixture_with_io(opts: TargetOptions, direct: DirectIo) -> Fixture {
    fixture_in(opts, direct, tempfile::tempdir().expect("tempdir"))
}

/// Like [`fixture_with_io`], with the namespace file in `dir` (for example
/// one on `/dev/shm`, a memory filesystem).
pub fn fixture_in(opts: TargetOptions, direct: DirectIo, dir: tempfile::TempDir) -> Fixture {
    let target = Target::new(opts).expect("target");
    let addr = target
        .add_listener("127.0.0.1:0".parse().expect("addr"), ListenerKind::Io, None)
        .expect("listen");
    serve(&target, dir.path(), direct);
    Fixture { target, addr, dir }
}

/// Serve SUBNQN (allowing HOSTNQN) with namespace 1 stored in
/// `dir`/ns1.img, creating the 64 MiB file the first time. Calling it again
/// on a new target with the same `dir` serves the same data, as a restart
/// would.
pub fn serve(target: &Target, dir: &std::path::Path, direct: DirectIo) {
    target
        .add_subsystem(SubsystemConfig {
            nqn: SUBNQN.into(),
            serial: String::new(),
            model: String::new(),
            allow_any_host: false,
            allowed_hosts: vec![HOSTNQN.into()],
        })
        .expect("subsystem");
    let backend = open_backend(
        dir.join("ns1.img"),
        &FileOptions {
            create: true,
            size: Some(64 << 20),
            direct_io: direct,
            block_size: 512,
            preallocate: false,
        },
    )
    .expect("backend");
    let uuid = derive_uuid(SUBNQN, 1);
    target
        .add_namespace(
            SUBNQN,
            NamespaceConfig {
                nsid: 1,
                backend,
                block_size: 512,
                uuid,
                nguid: *uuid.as_bytes(),
                read_only: false,
            },
        )
        .expect("namespace");
}

/// One queue connection.
pub struct MiniHost {
    pub stream: TcpStream,
    pub digests: Digests,
    buf: Vec<u8>,
    next_cid: u16,
    pub maxh2cdata: u32,
}

/// What came back for a command.
#[derive(Debug, Default)]
pub struct Reply {
    pub cqe: Option<Cqe>,
    pub data: Vec<u8>,
    pub success_flag: bool,
}

impl Reply {
    pub fn status(&self) -> Status {
        match &self.cqe {
            Some(c) => Status::from_field(c.status),
            None if self.success_flag => Status::SUCCESS,
            None => Status::INTERNAL_ERROR,
        }
    }
}

impl MiniHost {
    pub fn open(addr: SocketAddr, digests: Digests) -> MiniHost {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut h = MiniHost {
            stream,
            digests: Digests::default(),
            buf: Vec::new(),
            next_cid: 1,
            maxh2cdata: 0,
        };
        let mut out = Vec::new();
        pdu::encode_ic_req(
            &mut out,
            &IcReq {
                pfv: 0,
                hpda: 0,
                digests,
                maxr2t: 0,
            },
        );
        h.stream.write_all(&out).expect("send icreq");
        match h.recv_owned() {
            Some(OwnedPdu::IcResp(r)) => {
                assert_eq!(r.digests, digests);
                assert_eq!(r.cpda, 0);
                h.maxh2cdata = r.maxh2cdata;
            }
            other => panic!("expected ICResp, got {other:?}"),
        }
        h.digests = digests;
        h
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Read the next PDU; None at end of file.
    pub fn recv_owned(&mut self) -> Option<OwnedPdu> {
        loop {
            match pdu::decode(&self.buf, self.digests, 16 << 20) {
                Ok(DecodeStatus::Complete(d)) => {
                    assert!(d.data_digest_ok, "data digest from target must match");
                    let owned = OwnedPdu::from(d.pdu);
                    self.buf.drain(..d.len);
                    return Some(owned);
                }
                Ok(DecodeStatus::Need(_)) => {}
                Err(e) => panic!("target sent a bad PDU: {e}"),
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    pub fn cid(&mut self) -> u16 {
        let c = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1).max(1);
        c
    }

    /// Send a command, supplying `out_data` in-capsule or through R2T
    /// as the target asks, and collect the reply.
    pub fn command(&mut self, mut sqe: Sqe, out_data: &[u8], in_capsule: bool) -> Reply {
        sqe.cid = self.cid();
        let mut out = Vec::new();
        if !out_data.is_empty() && in_capsule {
            sqe.sgl.id = SGL_DATA_BLOCK_OFFSET;
            sqe.sgl.length = out_data.len() as u32;
            pdu::encode_capsule_cmd(&mut out, &sqe, out_data, self.digests);
        } else {
            sqe.sgl.id = SGL_TRANSPORT_DATA_BLOCK;
            if !out_data.is_empty() {
                sqe.sgl.length = out_data.len() as u32;
            }
            pdu::encode_capsule_cmd(&mut out, &sqe, &[], self.digests);
        }
        self.send_raw(&out);
        self.collect(sqe.cid, out_data)
    }

    fn collect(&mut self, cid: u16, out_data: &[u8]) -> Reply {
        let mut reply = Reply::default();
        loop {
            match self.recv_owned() {
                Some(OwnedPdu::CapsuleResp(c)) => {
                    assert_eq!(c.cid, cid);
                    reply.cqe = Some(c);
                    return reply;
                }
                Some(OwnedPdu::C2hData {
                    hdr,
                    flags: f,
                    data,
                }) => {
                    assert_eq!(hdr.cccid, cid);
                    assert_eq!(hdr.datao as usize, reply.data.len());
                    reply.data.extend_from_slice(&data);
                    if f & flags::SUCCESS != 0 {
                        reply.success_flag = true;
                        return reply;
                    }
                }
                Some(OwnedPdu::R2t(r)) => self.send_h2c(cid, r.ttag, r.r2to, r.r2tl, out_data),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    fn send_h2c(&mut self, cid: u16, ttag: u16, r2to: u32, r2tl: u32, data: &[u8]) {
        let mut off = r2to;
        let end = r2to + r2tl;
        let mut out = Vec::new();
        while off < end {
            let n = (end - off).min(self.maxh2cdata);
            let hdr = DataHeader {
                cccid: cid,
                ttag,
                datao: off,
                datal: n,
            };
            let last = if off + n == end { flags::LAST_PDU } else { 0 };
            pdu::encode_data_pdu(
                &mut out,
                pdu_type::H2C_DATA,
                &hdr,
                last,
                &data[off as usize..(off + n) as usize],
                self.digests,
            );
            off += n;
        }
        self.send_raw(&out);
    }

    pub fn connect(
        &mut self,
        qid: u16,
        cntlid: u16,
        hostnqn: &str,
        subnqn: &str,
        kato_ms: u32,
    ) -> Reply {
        let mut data = vec![0u8; 1024];
        data[..16].copy_from_slice(&[7u8; 16]);
        data[16..18].copy_from_slice(&cntlid.to_le_bytes());
        data[256..256 + subnqn.len()].copy_from_slice(subnqn.as_bytes());
        data[512..512 + hostnqn.len()].copy_from_slice(hostnqn.as_bytes());
        let sqe = Sqe {
            opcode: admin::FABRICS,
            nsid: u32::from(fctype::CONNECT),
            cdw10: u32::from(qid) << 16,
            cdw11: 31,
            cdw12: kato_ms,
            ..Default::default()
        };
        self.command(sqe, &data, true)
    }

    pub fn prop_get(&mut self, offset: u32, eight: bool) -> Reply {
        let sqe = Sqe {
            opcode: admin::FABRICS,
            nsid: u32::from(fctype::PROPERTY_GET),
            cdw10: u32::from(eight),
            cdw11: offset,
            ..Default::default()
        };
        self.command(sqe, &[], true)
    }

    pub fn prop_set(&mut self, offset: u32, value: u32) -> Reply {
        let sqe = Sqe {
            opcode: admin::FABRICS,
            nsid: u32::from(fctype::PROPERTY_SET),
            cdw11: offset,
            cdw12: value,
            ..Default::default()
        };
        self.command(sqe, &[], true)
    }

    /// Enable the controller the way Linux does.
    pub fn enable(&mut self) {
        let cc = (6 << 16) | (4 << 20) | 1;
        assert_eq!(self.prop_set(prop::CC, cc).status(), Status::SUCCESS);
        let csts = self.prop_get(prop::CSTS, false);
        assert_eq!(csts.cqe.map(|c| c.result & 1), Some(1), "CSTS.RDY");
    }

    pub fn admin(&mut self, opcode: u8, nsid: u32, cdw10: u32, cdw11: u32, len: u32) -> Reply {
        let sqe = Sqe {
            opcode,
            nsid,
            cdw10,
            cdw11,
            sgl: ferrofab_nvmeof_wire::wire::Sgl {
                address: 0,
                length: len,
                id: SGL_TRANSPORT_DATA_BLOCK,
            },
            ..Default::default()
        };
        self.command(sqe, &[], false)
    }

    pub fn read(&mut self, slba: u64, nlb: u32) -> Reply {
        let sqe = rw_sqe(nvm::READ, slba, nlb, nlb * 512);
        self.command(sqe, &[], false)
    }

    pub fn write(&mut self, slba: u64, data: &[u8], in_capsule: bool) -> Reply {
        let nlb = (data.len() / 512) as u32;
        let sqe = rw_sqe(nvm::WRITE, slba, nlb, data.len() as u32);
        self.command(sqe, data, in_capsule)
    }
}

pub fn rw_sqe(opcode: u8, slba: u64, nlb: u32, len: u32) -> Sqe {
    Sqe {
        opcode,
        nsid: 1,
        cdw10: slba as u32,
        cdw11: (slba >> 32) as u32,
        cdw12: nlb.saturating_sub(1),
        sgl: ferrofab_nvmeof_wire::wire::Sgl {
            address: 0,
            length: len,
            id: SGL_TRANSPORT_DATA_BLOCK,
        },
        ..Default::default()
    }
}

/// An admin queue connected and enabled, plus its cntlid.
pub fn admin_queue(addr: SocketAddr, digests: Digests) -> (MiniHost, u16) {
    let mut h = MiniHost::open(addr, digests);
    let r = h.connect(0, 0xFFFF, HOSTNQN, SUBNQN, 5000);
    assert_eq!(r.status(), Status::SUCCESS, "admin connect");
    let cntlid = r.cqe.map(|c| c.result as u16).unwrap_or_default();
    h.enable();
    (h, cntlid)
}

pub fn io_queue(addr: SocketAddr, digests: Digests, cntlid: u16, qid: u16) -> MiniHost {
    let mut h = MiniHost::open(addr, digests);
    let r = h.connect(qid, cntlid, HOSTNQN, SUBNQN, 0);
    assert_eq!(r.status(), Status::SUCCESS, "io connect");
    h
}

/// The data-path round trip the file and the memory namespace tests both
/// run on namespace 1 (512-byte blocks): a write in the capsule (8 KiB at
/// LBA 0) and one through R2T (1 MiB at LBA 1000, several H2CData PDUs),
/// both read back, then Flush, Write Zeroes of LBAs 1000..1008 and
/// Deallocate of LBAs 0..16, each checked. Returns the 1 MiB written at
/// LBA 1000 (its first 4 KiB now zeroed).
pub fn nvm_roundtrip(q: &mut MiniHost) -> Vec<u8> {
    // In-capsule (8 KiB) and R2T-sized (1 MiB, several H2CData PDUs).
    let small = pattern(8192, 1);
    assert_eq!(q.write(0, &small, true).status(), Status::SUCCESS);
    let big = pattern(1 << 20, 2);
    assert_eq!(q.write(1000, &big, false).status(), Status::SUCCESS);
    assert_eq!(q.read(0, 16).data, small);
    assert_eq!(q.read(1000, 2048).data, big);
    // Flush, write zeroes, deallocate.
    let flush = Sqe {
        opcode: 0,
        nsid: 1,
        ..Default::default()
    };
    assert_eq!(q.command(flush, &[], true).status(), Status::SUCCESS);
    let wz = rw_sqe(0x08, 1000, 8, 0);
    assert_eq!(q.command(wz, &[], true).status(), Status::SUCCESS);
    assert!(q.read(1000, 8).data.iter().all(|&b| b == 0));
    let mut range = vec![0u8; 16];
    range[4..8].copy_from_slice(&16u32.to_le_bytes());
    range[8..16].copy_from_slice(&0u64.to_le_bytes());
    let dsm = Sqe {
        opcode: 0x09,
        nsid: 1,
        cdw11: 1 << 2,
        ..Default::default()
    };
    assert_eq!(q.command(dsm, &range, true).status(), Status::SUCCESS);
    assert!(q.read(0, 16).data.iter().all(|&b| b == 0));
    big
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// An owned copy of a PDU, so tests can hold it across reads.
#[derive(Debug)]
pub enum OwnedPdu {
    IcResp(ferrofab_nvmeof_wire::wire::IcResp),
    CapsuleResp(Cqe),
    C2hData {
        hdr: DataHeader,
        flags: u8,
        data: Vec<u8>,
    },
    R2t(ferrofab_nvmeof_wire::wire::R2t),
    C2hTermReq {
        fes: u16,
        fei: u32,
    },
    Other(String),
}

impl From<Pdu<'_>> for OwnedPdu {
    fn from(p: Pdu<'_>) -> Self {
        match p {
            Pdu::IcResp(r) => OwnedPdu::IcResp(r),
            Pdu::CapsuleResp(c) => OwnedPdu::CapsuleResp(c),
            Pdu::C2hData { hdr, flags, data } => OwnedPdu::C2hData {
                hdr,
                flags,
                data: data.to_vec(),
            },
            Pdu::R2t(r) => OwnedPdu::R2t(r),
            Pdu::C2hTermReq(t) => OwnedPdu::C2hTermReq {
                fes: t.fes,
                fei: t.fei,
            },
            other => OwnedPdu::Other(format!("{other:?}")),
        }
    }
}

pub fn arc_target(f: Fixture) -> (Arc<Target>, SocketAddr, tempfile::TempDir) {
    (Arc::new(f.target), f.addr, f.dir)
}
