//! A memory namespace (`memory = "SIZE"` in the serve configuration) over
//! real loopback TCP, driven by the minimal test host: every command of
//! the NVM set, the batched zero-copy read path (headers and data of many
//! reads in one `sendmsg`, also when the socket fills up), and the copy
//! path a data digest needs.

use ferrofab_testkit::nvme::mini_host::*;

use ferrofab_nvmeof_target::config::{apply, ServeConfig};
use ferrofab_nvmeof_target::{ListenerKind, Target, TargetOptions};
use ferrofab_nvmeof_wire::spec::status::Status;
use ferrofab_nvmeof_wire::spec::{admin, feature};
use ferrofab_nvmeof_wire::wire::pdu;
use ferrofab_nvmeof_wire::wire::Digests;

/// A target serving SUBNQN with namespace 1 in 64 MiB of memory, set up
/// through the configuration file's schema.
fn memory_target() -> (Target, std::net::SocketAddr) {
    let text = format!(
        r#"
[[subsystem]]
nqn = "{SUBNQN}"
allowed_hosts = ["{HOSTNQN}"]

[[subsystem.namespace]]
nsid = 1
memory = "64MiB"
"#
    );
    let cfg: ServeConfig = toml::from_str(&text).expect("config parses");
    cfg.validate().expect("config is valid");
    let target = Target::new(TargetOptions::default()).expect("target");
    let report = apply(&target, &cfg);
    assert!(report.errors.is_empty(), "{report:?}");
    let addr = target
        .add_listener("127.0.0.1:0".parse().unwrap(), ListenerKind::Io, None)
        .expect("listen");
    (target, addr)
}

/// An I/O queue, and the admin queue that must stay open for it.
fn io_queue_with(addr: std::net::SocketAddr, digests: Digests) -> (MiniHost, MiniHost) {
    let (mut a, cntlid) = admin_queue(addr, digests);
    a.admin(
        admin::SET_FEATURES,
        0,
        u32::from(feature::NUMBER_OF_QUEUES),
        1,
        0,
    );
    let q = io_queue(addr, digests, cntlid, 1);
    (a, q)
}

fn roundtrip(digests: Digests) -> u64 {
    let (target, addr) = memory_target();
    let ns = target.subsystem(SUBNQN).unwrap().namespace(1).unwrap();
    assert!(ns.backend.memory().is_some(), "a memory backend");
    assert!(!ns.offload, "memory namespaces run inline");
    let (_admin, mut q) = io_queue_with(addr, digests);
    // A new namespace reads as zeroes.
    assert!(q.read(0, 16).data.iter().all(|&b| b == 0));
    // Writes, reads, Flush (does nothing), Write Zeroes and Deallocate
    // (both zero the range), each checked.
    let big = nvm_roundtrip(&mut q);
    assert_eq!(
        q.read(1000, 16).data[4096..],
        big[4096..8192],
        "past the zeroed blocks"
    );
    // Out of range is refused, not served.
    let beyond = q.read((64 << 20) / 512, 8);
    assert_eq!(beyond.status(), Status::LBA_OUT_OF_RANGE);
    ns.stats.snapshot().sent_from_memory
}

#[test]
fn memory_namespace_serves_every_command() {
    let sent = roundtrip(Digests::default());
    assert!(sent > 0, "reads should go out straight from the mapping");
}

#[test]
fn a_data_digest_takes_the_copy_path() {
    let sent = roundtrip(Digests {
        header: true,
        data: true,
    });
    assert_eq!(sent, 0, "a data digest needs the bytes in hand");
}

/// 32 reads of 128 KiB and 32 of 4 KiB sent in one burst: the target
/// answers many of them per gathered send, more than the socket takes at
/// once while the host is not reading (its receive buffer is shrunk), so
/// the rest is copied and sent after the locks are gone (counted in
/// `sent_from_memory_partial`); every byte must arrive in place, and each
/// read's data before its completion.
#[test]
fn a_burst_of_reads_arrives_whole_and_in_place() {
    let (target, addr) = memory_target();
    let ns = target.subsystem(SUBNQN).unwrap().namespace(1).unwrap();
    let (_admin, mut q) = io_queue_with(addr, Digests::default());
    shrink_receive_buffer(&q.stream);
    let data = pattern(8 << 20, 7);
    for (i, chunk) in data.chunks(1 << 20).enumerate() {
        let slba = (i as u64) * 2048;
        assert_eq!(q.write(slba, chunk, false).status(), Status::SUCCESS);
    }
    let mut burst = Vec::new();
    let mut want = std::collections::HashMap::new();
    for i in 0..64u16 {
        let (slba, nlb) = if i % 2 == 0 {
            (u64::from(i) * 256 + 3, 256) // 128 KiB, not stripe aligned
        } else {
            (u64::from(i) * 256 + 100, 8) // 4 KiB
        };
        let mut sqe = rw_sqe(0x02, slba, nlb, nlb * 512);
        sqe.cid = 2000 + i;
        pdu::encode_capsule_cmd(&mut burst, &sqe, &[], q.digests);
        let at = slba as usize * 512;
        want.insert(sqe.cid, data[at..at + nlb as usize * 512].to_vec());
    }
    q.send_raw(&burst);
    // Let the target fill the socket before anything is read.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut got = std::collections::HashMap::new();
    let mut done = 0;
    while done < 64 {
        match q.recv_owned() {
            Some(OwnedPdu::C2hData { hdr, data: d, .. }) => {
                got.insert(hdr.cccid, d);
            }
            Some(OwnedPdu::CapsuleResp(c)) => {
                assert_eq!(Status::from_field(c.status), Status::SUCCESS);
                assert!(
                    got.contains_key(&c.cid),
                    "read {}: completion before data",
                    c.cid
                );
                done += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    for (cid, w) in &want {
        assert!(got[cid] == *w, "read {cid}");
    }
    let stats = ns.stats.snapshot();
    assert!(stats.sent_from_memory >= 64);
    assert!(
        stats.sent_from_memory_partial > 0,
        "the socket should have filled: {stats:?}"
    );
}

/// Makes the host's socket take little before it is read: the target's
/// sends then meet a full socket.
fn shrink_receive_buffer(stream: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 64 * 1024;
    // SAFETY: an open socket and a valid int option of its size.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUF: {}", std::io::Error::last_os_error());
}
