//! The target over real loopback TCP, driven by a minimal host that checks
//! every byte: the command set, transfers, digests, access control,
//! keep-alive, live reconfiguration and malformed input.

use ferrofab_testkit::nvme::mini_host;

use std::time::{Duration, Instant};

use ferrofab_nvmeof_target::TargetOptions;
use ferrofab_nvmeof_wire::spec::identify::{decode_ns_list, IdentifyController, IdentifyNamespace};
use ferrofab_nvmeof_wire::spec::status::Status;
use ferrofab_nvmeof_wire::spec::{admin, aen, feature, log, prop};
use ferrofab_nvmeof_wire::wire::pdu::{self, fes, pdu_type};
use ferrofab_nvmeof_wire::wire::{Digests, Sqe};
use mini_host::*;

const BOTH: Digests = Digests {
    header: true,
    data: true,
};

#[test]
fn identify_and_features_match_what_linux_checks() {
    let f = fixture();
    let (mut h, cntlid) = admin_queue(f.addr, Digests::default());
    let cap = h.prop_get(prop::CAP, true).cqe.unwrap().result;
    assert_eq!(cap & 0xFFFF, 127, "MQES");
    assert_eq!((cap >> 48) & 0xF, 0, "MPSMIN");
    let r = h.admin(admin::IDENTIFY, 0, 1, 0, 4096);
    assert_eq!(r.data.len(), 4096);
    let id = IdentifyController::decode(&r.data);
    assert_eq!(id.cntlid, cntlid);
    assert_eq!(id.subnqn, SUBNQN);
    assert!(id.maxcmd >= 32);
    assert!(id.kas > 0);
    assert_eq!(id.icdoff, 0);
    assert!(id.sgls & 3 != 0);
    assert_eq!(id.cmic & (1 << 3), 0, "no ANA");

    let r = h.admin(admin::IDENTIFY, 0, 2, 0, 4096);
    assert_eq!(decode_ns_list(&r.data), vec![1]);
    let r = h.admin(admin::IDENTIFY, 1, 0, 0, 4096);
    let ns = IdentifyNamespace::decode(&r.data);
    assert_eq!(ns.nsze, (64 << 20) / 512);
    assert_eq!(ns.block_size(), 512);
    let r = h.admin(admin::IDENTIFY, 1, 3, 0, 4096);
    assert_eq!(r.status(), Status::SUCCESS);
    // Unknown namespace descriptors are an error, CNS 06 is not supported.
    assert_eq!(
        h.admin(admin::IDENTIFY, 9, 3, 0, 4096).status(),
        Status::INVALID_NAMESPACE
    );
    assert_eq!(
        h.admin(admin::IDENTIFY, 0, 6, 0, 4096).status(),
        Status::INVALID_FIELD
    );

    let r = h.admin(
        admin::SET_FEATURES,
        0,
        u32::from(feature::NUMBER_OF_QUEUES),
        0x0003_0003,
        0,
    );
    assert_eq!(r.cqe.unwrap().result, 0x0003_0003);
    let r = h.admin(
        admin::GET_FEATURES,
        0,
        u32::from(feature::KEEP_ALIVE_TIMER),
        0,
        0,
    );
    assert_eq!(r.cqe.unwrap().result, 5000);
    assert_eq!(
        h.admin(admin::KEEP_ALIVE, 0, 0, 0, 0).status(),
        Status::SUCCESS
    );
    assert_eq!(h.admin(0x7E, 0, 0, 0, 0).status(), Status::INVALID_OPCODE);

    // Log pages 01, 02 and 04 with the lengths Linux asks for.
    for (lid, len) in [
        (log::ERROR_INFORMATION, 64u32),
        (log::SMART_HEALTH, 512),
        (log::CHANGED_NS_LIST, 4096),
    ] {
        let numd = len / 4 - 1;
        let r = h.admin(
            admin::GET_LOG_PAGE,
            0xFFFF_FFFF,
            u32::from(lid) | (numd << 16),
            0,
            len,
        );
        assert_eq!(r.status(), Status::SUCCESS, "log {lid:#x}");
        assert_eq!(r.data.len(), len as usize);
    }
    assert_eq!(
        h.admin(admin::GET_LOG_PAGE, 0, 0x33 | (127 << 16), 0, 512)
            .status(),
        Status::INVALID_LOG_PAGE
    );
}

/// `in_memory` puts the namespace file on `/dev/shm` (tmpfs), where large
/// reads may go out with sendfile; elsewhere they are copied.
fn io_roundtrip_in(digests: Digests, direct: DirectIo, in_memory: bool) {
    let f = if in_memory {
        let dir = tempfile::tempdir_in("/dev/shm").expect("a directory on /dev/shm (tmpfs)");
        fixture_in(TargetOptions::default(), direct, dir)
    } else {
        fixture_with_io(TargetOptions::default(), direct)
    };
    let ns = f.target.subsystem(SUBNQN).unwrap().namespace(1).unwrap();
    // Page-cache namespaces run inline; O_DIRECT ones on the I/O threads.
    assert_eq!(ns.offload, ns.backend.info().direct_io);
    if direct == DirectIo::Off {
        assert!(!ns.offload);
    }
    let (mut a, cntlid) = admin_queue(f.addr, digests);
    a.admin(
        admin::SET_FEATURES,
        0,
        u32::from(feature::NUMBER_OF_QUEUES),
        1,
        0,
    );
    let mut q = io_queue(f.addr, digests, cntlid, 1);
    let big = nvm_roundtrip(&mut q);
    // Large reads from a file in memory go out with sendfile, unless the
    // data digest needs the bytes in hand (or the I/O threads read them);
    // a file on disk is always read first (a cache miss must not stall the
    // connection's sends, nor fail after the data header went out).
    let sent = ns.stats.snapshot().sent_from_file;
    if digests.data || ns.offload || !in_memory {
        assert_eq!(
            sent, 0,
            "sendfile with a data digest, on the I/O threads or from disk"
        );
    } else {
        assert!(sent > 0, "the 1 MiB read should have used sendfile");
    }
    // The data is really in the backing file.
    let file = std::fs::read(f.dir.path().join("ns1.img")).unwrap();
    assert_eq!(
        &file[1008 * 512..1008 * 512 + 4096],
        &big[8 * 512..8 * 512 + 4096]
    );
}

fn io_roundtrip(digests: Digests, direct: DirectIo) {
    io_roundtrip_in(digests, direct, false);
}

#[test]
fn io_without_digests() {
    io_roundtrip(Digests::default(), DirectIo::Off);
    io_roundtrip_in(Digests::default(), DirectIo::Off, true);
}

#[test]
fn io_with_header_and_data_digests() {
    io_roundtrip(BOTH, DirectIo::Off);
}

/// A header digest alone still lets large reads go out with sendfile: the
/// digest covers only the header, which is in hand.
#[test]
fn io_with_header_digest_only() {
    io_roundtrip_in(
        Digests {
            header: true,
            data: false,
        },
        DirectIo::Off,
        true,
    );
}

/// With O_DIRECT (where the test directory's filesystem has it) the I/O
/// runs on the I/O threads, which answer the host themselves.
#[test]
fn io_on_the_io_threads() {
    io_roundtrip(Digests::default(), DirectIo::Auto);
    io_roundtrip(BOTH, DirectIo::Auto);
}

/// Many commands in one burst: on an O_DIRECT namespace they go to the I/O
/// threads, complete in any order, and each gets its own data.
#[test]
fn pipelined_reads_complete_out_of_order() {
    let f = fixture_with_io(TargetOptions::default(), DirectIo::Auto);
    let (_a, cntlid) = admin_queue(f.addr, Digests::default());
    let mut q = io_queue(f.addr, Digests::default(), cntlid, 1);
    let ns = f.target.subsystem(SUBNQN).unwrap().namespace(1).unwrap();
    for i in 0..32u64 {
        assert_eq!(
            q.write(i * 8, &pattern(4096, i as u8), true).status(),
            Status::SUCCESS
        );
    }
    let mut burst = Vec::new();
    for i in 0..32u16 {
        let mut sqe = rw_sqe(0x02, u64::from(i) * 8, 8, 4096);
        sqe.cid = 1000 + i;
        pdu::encode_capsule_cmd(&mut burst, &sqe, &[], q.digests);
    }
    q.send_raw(&burst);
    let mut data = std::collections::HashMap::new();
    let mut done = 0;
    while done < 32 {
        match q.recv_owned() {
            Some(OwnedPdu::C2hData { hdr, data: d, .. }) => {
                data.insert(hdr.cccid, d);
            }
            Some(OwnedPdu::CapsuleResp(c)) => {
                assert_eq!(Status::from_field(c.status), Status::SUCCESS);
                done += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    for i in 0..32u16 {
        assert_eq!(data[&(1000 + i)], pattern(4096, i as u8), "read {i}");
    }
    if ns.offload {
        assert!(
            ns.stats.snapshot().offloaded > 0,
            "a burst should use the I/O threads"
        );
    }
}

#[test]
fn io_inline_when_io_threads_are_off() {
    let f = fixture_with_io(
        TargetOptions {
            io_threads: 0,
            ..Default::default()
        },
        DirectIo::Auto,
    );
    assert!(
        !f.target
            .subsystem(SUBNQN)
            .unwrap()
            .namespace(1)
            .unwrap()
            .offload
    );
}

#[test]
fn out_of_range_and_bad_commands_get_statuses() {
    let f = fixture();
    let (_a, cntlid) = admin_queue(f.addr, Digests::default());
    let mut q = io_queue(f.addr, Digests::default(), cntlid, 1);
    let blocks = (64u64 << 20) / 512;
    assert_eq!(q.read(blocks - 1, 2).status(), Status::LBA_OUT_OF_RANGE);
    assert_eq!(q.read(u64::MAX - 1, 4).status(), Status::LBA_OUT_OF_RANGE);
    let mut bad_ns = rw_sqe(0x02, 0, 1, 512);
    bad_ns.nsid = 5;
    assert_eq!(
        q.command(bad_ns, &[], false).status(),
        Status::INVALID_NAMESPACE
    );
    // More than MDTS in one command.
    assert_eq!(q.read(0, 4096).status(), Status::INVALID_FIELD);
    // SGL length disagreeing with NLB.
    let mismatched = rw_sqe(0x02, 0, 8, 512);
    assert_eq!(
        q.command(mismatched, &[], false).status(),
        Status::DATA_SGL_LENGTH_INVALID
    );
    let unknown = Sqe {
        opcode: 0x55,
        nsid: 1,
        ..Default::default()
    };
    assert_eq!(
        q.command(unknown, &[], true).status(),
        Status::INVALID_OPCODE
    );
}

#[test]
fn host_not_allowed_and_unknown_subsystem_are_refused() {
    let f = fixture();
    let mut h = MiniHost::open(f.addr, Digests::default());
    let r = h.connect(0, 0xFFFF, OTHER_HOST, SUBNQN, 5000);
    assert_eq!(r.status(), Status::CONNECT_INVALID_HOST);
    assert_eq!(
        r.cqe.unwrap().result,
        512 | (1 << 16),
        "IPO names hostnqn in the data"
    );
    let mut h = MiniHost::open(f.addr, Digests::default());
    let r = h.connect(0, 0xFFFF, HOSTNQN, "nqn.2026-11.io.ferrofab:nope", 5000);
    assert_eq!(r.status(), Status::CONNECT_INVALID_PARAMETERS);
    // An I/O queue for a controller that does not exist.
    let mut h = MiniHost::open(f.addr, Digests::default());
    assert_eq!(
        h.connect(1, 77, HOSTNQN, SUBNQN, 0).status(),
        Status::CONNECT_INVALID_PARAMETERS
    );
}

#[test]
fn several_hosts_get_distinct_controllers() {
    let f = fixture();
    f.target.allow_host(SUBNQN, OTHER_HOST).unwrap();
    let (_a, c1) = admin_queue(f.addr, Digests::default());
    let mut h = MiniHost::open(f.addr, Digests::default());
    let r = h.connect(0, 0xFFFF, OTHER_HOST, SUBNQN, 5000);
    let c2 = r.cqe.unwrap().result as u16;
    assert_ne!(c1, c2);
    let st = f.target.status();
    assert_eq!(st.subsystems[0].controllers.len(), 2);
}

#[test]
fn revoking_a_host_ends_its_controllers() {
    let f = fixture();
    let (mut a, cntlid) = admin_queue(f.addr, Digests::default());
    let mut q = io_queue(f.addr, Digests::default(), cntlid, 1);
    f.target.revoke_host(SUBNQN, HOSTNQN).unwrap();
    assert!(q.recv_owned().is_none(), "I/O queue closed");
    assert!(a.recv_owned().is_none(), "admin queue closed");
    let mut h = MiniHost::open(f.addr, Digests::default());
    assert_eq!(
        h.connect(0, 0xFFFF, HOSTNQN, SUBNQN, 5000).status(),
        Status::CONNECT_INVALID_HOST
    );
}

#[test]
fn grow_raises_namespace_attribute_changed() {
    let f = fixture();
    let (mut a, _) = admin_queue(f.addr, Digests::default());
    a.admin(
        admin::SET_FEATURES,
        0,
        u32::from(feature::ASYNC_EVENT_CONFIG),
        aen::CFG_NS_ATTR,
        0,
    );
    // The AER stays outstanding: send it without waiting.
    let aer = Sqe {
        opcode: admin::ASYNC_EVENT_REQUEST,
        cid: 31,
        sgl: ferrofab_nvmeof_wire::wire::Sgl {
            id: 0x5A,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut out = Vec::new();
    pdu::encode_capsule_cmd(&mut out, &aer, &[], a.digests);
    a.send_raw(&out);
    f.target.resize_namespace(SUBNQN, 1, 128 << 20).unwrap();
    match a.recv_owned() {
        Some(OwnedPdu::CapsuleResp(c)) => {
            assert_eq!(c.cid, 31);
            assert_eq!(c.result as u32, aen::NS_ATTR_CHANGED);
        }
        other => panic!("expected the AER completion, got {other:?}"),
    }
    let r = a.admin(admin::GET_LOG_PAGE, 0xFFFF_FFFF, 4 | (1023 << 16), 0, 4096);
    assert_eq!(&r.data[..8], &[1, 0, 0, 0, 0, 0, 0, 0]);
    let r = a.admin(admin::IDENTIFY, 1, 0, 0, 4096);
    assert_eq!(IdentifyNamespace::decode(&r.data).nsze, (128 << 20) / 512);
    // Shrinking is refused.
    assert!(f.target.resize_namespace(SUBNQN, 1, 1 << 20).is_err());
}

#[test]
fn keep_alive_timeout_tears_the_controller_down() {
    let f = fixture();
    let mut h = MiniHost::open(f.addr, Digests::default());
    assert_eq!(
        h.connect(0, 0xFFFF, HOSTNQN, SUBNQN, 300).status(),
        Status::SUCCESS
    );
    let started = Instant::now();
    assert!(h.recv_owned().is_none(), "connection closed by KATO");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn shutdown_reports_complete() {
    let f = fixture();
    let (mut a, _) = admin_queue(f.addr, Digests::default());
    let cc = (6 << 16) | (4 << 20) | 1 | (1 << 14);
    assert_eq!(a.prop_set(prop::CC, cc).status(), Status::SUCCESS);
    let csts = a.prop_get(prop::CSTS, false).cqe.unwrap().result;
    assert_eq!((csts >> 2) & 3, 0b10, "SHST complete");
}

#[test]
fn malformed_pdus_end_the_connection_with_a_term_req() {
    let f = fixture();
    // A PDU type that does not exist.
    let mut h = MiniHost::open(f.addr, Digests::default());
    h.send_raw(&[0x0F, 0, 24, 0, 24, 0, 0, 0]);
    h.send_raw(&[0u8; 16]);
    match h.recv_owned() {
        Some(OwnedPdu::C2hTermReq { fes: code, .. }) => assert_eq!(code, fes::INVALID_HEADER_FIELD),
        other => panic!("{other:?}"),
    }
    assert!(h.recv_owned().is_none());
    // A capsule far larger than allowed.
    let mut h = MiniHost::open(f.addr, Digests::default());
    let mut hdr = vec![pdu_type::CAPSULE_CMD, 0, 72, 72];
    hdr.extend_from_slice(&(64u32 << 20).to_le_bytes());
    h.send_raw(&hdr);
    match h.recv_owned() {
        Some(OwnedPdu::C2hTermReq { fes: code, .. }) => assert_eq!(code, fes::DATA_LIMIT_EXCEEDED),
        other => panic!("{other:?}"),
    }
    // A header digest error.
    let mut h = MiniHost::open(f.addr, BOTH);
    let mut out = Vec::new();
    pdu::encode_capsule_cmd(&mut out, &Sqe::default(), &[], BOTH);
    out[20] ^= 0xFF;
    h.send_raw(&out);
    match h.recv_owned() {
        Some(OwnedPdu::C2hTermReq { fes: code, .. }) => assert_eq!(code, fes::HEADER_DIGEST_ERROR),
        other => panic!("{other:?}"),
    }
    // The target is still serving others.
    let (_a, _) = admin_queue(f.addr, Digests::default());
}

#[test]
fn commands_before_connect_are_refused() {
    let f = fixture();
    let mut h = MiniHost::open(f.addr, Digests::default());
    assert_eq!(
        h.admin(admin::IDENTIFY, 0, 1, 0, 4096).status(),
        Status::COMMAND_SEQUENCE_ERROR
    );
}

#[test]
fn small_queue_depth_option_is_honoured() {
    let opts = TargetOptions {
        queue_depth: 16,
        ..Default::default()
    };
    let f = fixture_with(opts);
    let mut h = MiniHost::open(f.addr, Digests::default());
    // Linux asks for 32 admin entries (sqsize 31); 16 cannot hold them.
    assert_eq!(
        h.connect(0, 0xFFFF, HOSTNQN, SUBNQN, 5000).status(),
        Status::CONNECT_INVALID_PARAMETERS
    );
}

/// Discovery as libnvme does it: the 1024-byte header first, then the
/// entries from offset 1024; only subsystems the host may use appear, and
/// the generation counter moves when they change.
#[test]
fn discovery_log_pages_by_offset_and_filters_by_host() {
    use ferrofab_nvmeof_wire::spec::identify::{decode_discovery_header, DiscoveryEntry};
    let f = fixture();
    f.target
        .add_subsystem(ferrofab_nvmeof_target::SubsystemConfig {
            nqn: "nqn.2026-11.io.ferrofab:hidden".into(),
            serial: String::new(),
            model: String::new(),
            allow_any_host: false,
            allowed_hosts: vec![OTHER_HOST.into()],
        })
        .unwrap();
    let mut h = MiniHost::open(f.addr, Digests::default());
    let r = h.connect(
        0,
        0xFFFF,
        HOSTNQN,
        ferrofab_nvmeof_wire::spec::DISCOVERY_NQN,
        0,
    );
    assert_eq!(r.status(), Status::SUCCESS);
    h.enable();
    let id = IdentifyController::decode(&h.admin(admin::IDENTIFY, 0, 1, 0, 4096).data);
    assert_eq!(id.cntrltype, 2, "discovery controller");
    let get = |h: &mut MiniHost, offset: u64, len: u32| {
        let numd = len / 4 - 1;
        let sqe = Sqe {
            opcode: admin::GET_LOG_PAGE,
            cdw10: 0x70 | (numd << 16),
            cdw12: offset as u32,
            cdw13: (offset >> 32) as u32,
            sgl: ferrofab_nvmeof_wire::wire::Sgl {
                address: 0,
                length: len,
                id: 0x5A,
            },
            ..Default::default()
        };
        h.command(sqe, &[], false)
    };
    let header = get(&mut h, 0, 1024);
    let (genctr, numrec) = decode_discovery_header(&header.data);
    assert_eq!(numrec, 1, "only the subsystem this host may use");
    let entries = get(&mut h, 1024, 1024);
    let e = DiscoveryEntry::decode(&entries.data);
    assert_eq!(e.subnqn, SUBNQN);
    assert_eq!(e.trsvcid, f.addr.port().to_string());
    assert_eq!(e.traddr, "127.0.0.1");
    f.target
        .allow_host("nqn.2026-11.io.ferrofab:hidden", HOSTNQN)
        .unwrap();
    let (genctr2, numrec2) = decode_discovery_header(&get(&mut h, 0, 1024).data);
    assert!(genctr2 > genctr, "genctr moves when the entries change");
    assert_eq!(numrec2, 2);
    // An offset past the page is an error, not a crash.
    assert_eq!(get(&mut h, 1 << 20, 1024).status(), Status::INVALID_FIELD);
}
