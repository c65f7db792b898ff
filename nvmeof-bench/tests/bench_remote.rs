//! The benchmark engine and the FUSE exposure against the built-in target
//! over loopback NVMe/TCP, through the ferrofab initiator.

use std::sync::Arc;

use ferrofab_nvmeof_bench::engine::{self, RunOptions};
use ferrofab_nvmeof_bench::io::DynBlockIo;
use ferrofab_nvmeof_bench::remote::{Remote, RemoteSpec};
use ferrofab_nvmeof_bench::workload::{JobParams, Limit, Pattern};
use ferrofab_nvmeof_bench::PollMode;
use ferrofab_nvmeof_host::HostIdentity;
use ferrofab_nvmeof_target::backend::{open_backend, DirectIo, FileOptions};
use ferrofab_nvmeof_target::{
    derive_uuid, ListenerKind, NamespaceConfig, SubsystemConfig, Target, TargetOptions,
};

const NQN: &str = "nqn.2026-11.io.ferrofab:bench";

struct Fixture {
    _target: Target,
    addr: String,
    _dir: tempfile::TempDir,
}

fn target() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = Target::new(TargetOptions::default()).expect("target");
    let addr = target
        .add_listener("127.0.0.1:0".parse().expect("addr"), ListenerKind::Io, None)
        .expect("listen");
    target
        .add_subsystem(SubsystemConfig {
            nqn: NQN.into(),
            serial: String::new(),
            model: String::new(),
            allow_any_host: true,
            allowed_hosts: vec![],
        })
        .expect("subsystem");
    let backend = open_backend(
        dir.path().join("ns1.img"),
        &FileOptions {
            create: true,
            size: Some(32 << 20),
            direct_io: DirectIo::Auto,
            block_size: 512,
            preallocate: false,
        },
    )
    .expect("backend");
    let uuid = derive_uuid(NQN, 1);
    target
        .add_namespace(
            NQN,
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
    Fixture {
        _target: target,
        addr: addr.to_string(),
        _dir: dir,
    }
}

fn connect(f: &Fixture, queues: u32, qd: u32) -> Remote {
    Remote::connect(&RemoteSpec {
        addr: f.addr.clone(),
        subnqn: NQN.into(),
        nsid: 1,
        queues,
        queue_depth: qd,
        poll: PollMode::Adaptive,
        dhchap: Default::default(),
        identity: Some(HostIdentity::ephemeral()),
    })
    .expect("connect")
}

#[test]
fn pipelined_verify_over_nvme_tcp() {
    let f = target();
    let remote = connect(&f, 2, 8);
    let params = JobParams {
        pattern: Pattern::Mixed,
        rwmixread: 50,
        block_size: 4096,
        queue_depth: 8,
        queues: 2,
        limit: Limit::Bytes(8 << 20),
        verify: true,
        ..Default::default()
    };
    let opts = RunOptions {
        target_name: "remote".into(),
        ..Default::default()
    };
    let r = engine::run(remote.target(2, 8), &params, &opts).expect("job");
    assert_eq!(r.total.bytes, 8 << 20);
    assert_eq!(r.workers, 2);
    let v = r.verify.expect("verify report");
    assert_eq!(v.failures, 0, "{v:?}");
    assert!(v.blocks_checked > 0);
    remote.disconnect().expect("disconnect");
}

#[test]
fn blocking_namespace_through_threads() {
    let f = target();
    let remote = connect(&f, 1, 4);
    let ns: Arc<DynBlockIo> = Arc::new(remote.namespace().clone());
    let params = JobParams {
        pattern: Pattern::Randwrite,
        block_size: 4096,
        queue_depth: 4,
        queues: 1,
        limit: Limit::Bytes(2 << 20),
        verify: true,
        ..Default::default()
    };
    let r = engine::run(
        engine::Target::Blocking(ns),
        &params,
        &RunOptions::default(),
    )
    .expect("job");
    assert_eq!(r.workers, 4);
    assert_eq!(r.verify.expect("verify").failures, 0);
    remote.disconnect().expect("disconnect");
}

/// Mount an exposure of `remote`'s namespace (a plain `BlockIo`, or with
/// `add_namespace`) and open its file for reading and writing.
fn expose_rw(
    remote: &Remote,
    as_namespace: bool,
) -> (
    tempfile::TempDir,
    ferrofab_nvmeof_expose::Exposer,
    std::fs::File,
) {
    use ferrofab_nvmeof_expose::{ExposeOptions, Exposer};
    assert_eq!(
        // SAFETY: geteuid cannot fail.
        unsafe { libc::geteuid() },
        0,
        "the FUSE test must run as root"
    );
    let mnt = tempfile::tempdir().expect("tempdir");
    let exp =
        Exposer::mount(&mnt.path().join("volumes"), &ExposeOptions::default()).expect("mount");
    let path = if as_namespace {
        exp.add_namespace("ns1", remote.namespace().clone())
    } else {
        let ns: Arc<DynBlockIo> = Arc::new(remote.namespace().clone());
        exp.add("ns1", ns)
    }
    .expect("add");
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), 32 << 20);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open");
    (mnt, exp, file)
}

#[test]
fn remote_namespace_exposed_through_fuse() {
    use std::os::unix::fs::FileExt;
    let f = target();
    let remote = connect(&f, 2, 4);
    let (_mnt, exp, file) = expose_rw(&remote, false);
    // Unaligned, spanning blocks, larger than one FUSE request.
    let data: Vec<u8> = (0..(3 << 20) + 777u32).map(|i| (i * 7 + 3) as u8).collect();
    file.write_all_at(&data, 12345).expect("write");
    file.sync_all().expect("fsync");
    let mut back = vec![0u8; data.len()];
    file.read_exact_at(&mut back, 12345).expect("read");
    assert!(back == data, "data read back differs");
    drop(file);
    exp.unmount().expect("unmount");
    remote.disconnect().expect("disconnect");
}

/// A namespace exposed with `add_namespace`: whole-block reads take the
/// initiator's buffer (no copy), everything else the byte-granular path;
/// both must return what was written, up to the end of the file.
#[test]
fn remote_namespace_exposed_with_owned_reads() {
    use std::os::unix::fs::FileExt;
    let f = target();
    let remote = connect(&f, 2, 4);
    let (_mnt, exp, file) = expose_rw(&remote, true);
    let size = 32u64 << 20;
    let data: Vec<u8> = (0..(4u32 << 20)).map(|i| (i * 13 + 5) as u8).collect();
    let at = size - data.len() as u64;
    file.write_all_at(&data, at).expect("write the tail");
    file.sync_all().expect("fsync");
    // Whole 1 MiB blocks (the owned path), odd pieces, and a read that
    // runs past the end (short, as at EOF). The kernel splits a direct
    // read at the pages of the user's buffer, so whole-block requests
    // need a page-aligned buffer, as fio and dd use.
    let mut raw = vec![0u8; (4 << 20) + 4096];
    let skew = raw.as_ptr().align_offset(4096);
    for (off, len) in [(0u64, 1usize << 20), (1 << 20, 3 << 20), (4097, 70_000)] {
        let back = &mut raw[skew..skew + len];
        file.read_exact_at(back, at + off).expect("read");
        assert!(
            *back == data[off as usize..off as usize + len],
            "read {off}+{len} differs"
        );
    }
    let mut tail = vec![0u8; 8192];
    let n = file
        .read_at(&mut tail, size - 4096)
        .expect("read at the end");
    assert_eq!(n, 4096, "a read past the end is short");
    assert!(tail[..n] == data[data.len() - 4096..]);
    drop(file);
    exp.unmount().expect("unmount");
    remote.disconnect().expect("disconnect");
}

/// The whole stack: ext4 on a loop device on the FUSE file of a remote
/// namespace served by our target.
#[test]
fn ext4_on_a_remote_namespace_is_clean() {
    use ferrofab_nvmeof_expose::{ExposeOptions, Exposer};
    use std::process::Command;
    let sh = |cmd: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .output()
            .expect("spawn sh");
        assert!(
            out.status.success(),
            "`{cmd}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let f = target();
    let remote = connect(&f, 2, 4);
    let tmp = tempfile::tempdir().expect("tempdir");
    let exp =
        Exposer::mount(&tmp.path().join("volumes"), &ExposeOptions::default()).expect("mount");
    let ns: Arc<DynBlockIo> = Arc::new(remote.namespace().clone());
    let vol = exp.add("ns1", ns).expect("add");
    let dev = sh(&format!("losetup --find --show '{}'", vol.display()));
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let m = mnt.display();
    let result = std::panic::catch_unwind(|| {
        sh(&format!("mkfs.ext4 -q -F {dev}"));
        sh(&format!("mount -t ext4 {dev} '{m}'"));
        sh(&format!(
            "dd if=/dev/urandom of='{m}/data' bs=64k count=64 status=none"
        ));
        let sum = sh(&format!("sha256sum < '{m}/data'"));
        sh(&format!("umount '{m}'"));
        sh(&format!("e2fsck -fn {dev}"));
        sh(&format!("mount -t ext4 -o ro {dev} '{m}'"));
        assert_eq!(sh(&format!("sha256sum < '{m}/data'")), sum);
        sh(&format!("umount '{m}'"));
    });
    let _ = Command::new("umount").arg(&mnt).output();
    let _ = Command::new("losetup").arg("-d").arg(&dev).output();
    exp.unmount().expect("unmount");
    remote.disconnect().expect("disconnect");
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}
