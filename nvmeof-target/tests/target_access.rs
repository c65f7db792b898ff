//! Per-host read-only access (issue 13, item 3): a host the subsystem lets
//! only read gets "Namespace is Write Protected" for every write-class
//! command and sees the namespace as write protected, while its reads and
//! flushes work and another host writes as usual.

use ferrofab_testkit::nvme::mini_host;

use std::net::SocketAddr;

use ferrofab_nvmeof_wire::spec::identify::IdentifyNamespace;
use ferrofab_nvmeof_wire::spec::status::Status;
use ferrofab_nvmeof_wire::spec::{admin, nvm};
use ferrofab_nvmeof_wire::wire::Digests;
use mini_host::*;

/// An admin queue and I/O queue 1 for `host`.
fn queues(addr: SocketAddr, host: &str) -> (MiniHost, MiniHost) {
    let mut a = MiniHost::open(addr, Digests::default());
    let r = a.connect(0, 0xFFFF, host, SUBNQN, 5000);
    assert_eq!(r.status(), Status::SUCCESS, "admin connect");
    let cntlid = r.cqe.map(|c| c.result as u16).unwrap_or_default();
    a.enable();
    let mut io = MiniHost::open(addr, Digests::default());
    assert_eq!(
        io.connect(1, cntlid, host, SUBNQN, 0).status(),
        Status::SUCCESS,
        "io connect"
    );
    (a, io)
}

fn write_zeroes(h: &mut MiniHost, slba: u64, nlb: u32) -> Status {
    let sqe = rw_sqe(nvm::WRITE_ZEROES, slba, nlb, 0);
    h.command(sqe, &[], true).status()
}

fn deallocate(h: &mut MiniHost, slba: u64, nlb: u32) -> Status {
    let mut range = vec![0u8; 16];
    range[4..8].copy_from_slice(&nlb.to_le_bytes());
    range[8..16].copy_from_slice(&slba.to_le_bytes());
    let mut sqe = rw_sqe(nvm::DATASET_MANAGEMENT, 0, 0, 16);
    sqe.cdw10 = 0; // one range
    sqe.cdw11 = 1 << 2; // AD: deallocate
    sqe.cdw12 = 0;
    h.command(sqe, &range, true).status()
}

fn flush(h: &mut MiniHost) -> Status {
    let sqe = rw_sqe(nvm::FLUSH, 0, 0, 0);
    h.command(sqe, &[], true).status()
}

fn nsattr(a: &mut MiniHost) -> u8 {
    let r = a.admin(admin::IDENTIFY, 1, 0, 0, 4096);
    IdentifyNamespace::decode(&r.data).nsattr
}

#[test]
fn a_read_only_host_cannot_write_and_a_writer_can() {
    let f = fixture();
    f.target.allow_host(SUBNQN, OTHER_HOST).expect("allow");
    f.target
        .set_host_read_only(SUBNQN, HOSTNQN, true)
        .expect("read-only");
    let (mut ro_admin, mut ro) = queues(f.addr, HOSTNQN);
    let (mut rw_admin, mut rw) = queues(f.addr, OTHER_HOST);

    // The writer writes; the reader reads it back.
    let data = pattern(4096, 7);
    assert_eq!(rw.write(8, &data, true).status(), Status::SUCCESS);
    let r = ro.read(8, 8);
    assert_eq!(r.status(), Status::SUCCESS);
    assert_eq!(r.data, data);

    // Every write-class command of the reader is refused with 0x20, and
    // nothing changed.
    let other = pattern(4096, 99);
    for (what, status) in [
        ("write (in capsule)", ro.write(8, &other, true).status()),
        ("write (R2T)", ro.write(8, &other, false).status()),
        ("write zeroes", write_zeroes(&mut ro, 8, 8)),
        ("deallocate", deallocate(&mut ro, 8, 8)),
    ] {
        assert_eq!(status, Status::NAMESPACE_WRITE_PROTECTED, "{what}");
        assert_eq!(status.sc, 0x20, "{what}: generic status 20h");
    }
    assert_eq!(rw.read(8, 8).data, data, "data untouched");
    assert_eq!(flush(&mut ro), Status::SUCCESS, "flush still works");
    assert_eq!(
        f.target.status().commands_refused_write_protected,
        4,
        "counted"
    );

    // Identify Namespace tells each host what it may do.
    assert_eq!(
        nsattr(&mut ro_admin) & 1,
        1,
        "write protected for the reader"
    );
    assert_eq!(nsattr(&mut rw_admin) & 1, 0, "writable for the writer");
    let st = f.target.status();
    assert_eq!(st.subsystems[0].read_only_hosts, vec![HOSTNQN.to_string()]);

    // Lifting it applies to the live controller at once.
    f.target
        .set_host_read_only(SUBNQN, HOSTNQN, false)
        .expect("read-write");
    assert_eq!(ro.write(8, &other, true).status(), Status::SUCCESS);
    assert_eq!(rw.read(8, 8).data, other);
    // And setting it again too.
    f.target
        .set_host_read_only(SUBNQN, HOSTNQN, true)
        .expect("read-only again");
    assert_eq!(
        ro.write(8, &data, true).status(),
        Status::NAMESPACE_WRITE_PROTECTED
    );
}
