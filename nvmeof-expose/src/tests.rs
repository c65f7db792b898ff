//! End-to-end tests through a real FUSE mount.
//!
//! They need root, /dev/fuse, and the tools from Debian packages `fuse3`,
//! `e2fsprogs`, `mount` and `coreutils`. A missing prerequisite fails the
//! test with the package to install; nothing is skipped silently.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use ferrofab_nvmeof_bench::io::{BlockIo, MemBlockIo};

/// Fail loudly if a prerequisite is missing.
fn require(tool: &str, package: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "required tool `{tool}` is missing: apt-get install {package}"
    );
}

fn require_fuse_root() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: the FUSE exposure tests need a kernel with FUSE"
    );
    assert_eq!(
        // SAFETY: geteuid cannot fail and touches no memory of ours.
        unsafe { libc::geteuid() },
        0,
        "the FUSE exposure tests must run as root"
    );
}

/// Run a command; panic with its output unless it succeeds.
fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .unwrap_or_else(|e| panic!("spawning `{cmd}`: {e}"));
    assert!(
        out.status.success(),
        "`{cmd}` failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mount_tmp() -> (tempfile::TempDir, Exposer) {
    require_fuse_root();
    let tmp = tempfile::tempdir().expect("tempdir");
    let exp = Exposer::mount(&tmp.path().join("volumes"), &ExposeOptions::default())
        .expect("mount volumes");
    (tmp, exp)
}

fn sha256(path: &Path) -> String {
    sh(&format!("sha256sum '{}'", path.display()))
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn random_file(path: &Path, len: usize) {
    let mut state = 0x1234_5678u64;
    let data: Vec<u8> = (0..len)
        .map(|_| (ferrofab_nvmeof_bench::verify::splitmix(&mut state) >> 24) as u8)
        .collect();
    std::fs::write(path, data).expect("write source file");
}

#[test]
fn dd_in_and_out_round_trips() {
    require("dd", "coreutils");
    require("sha256sum", "coreutils");
    let (tmp, exp) = mount_tmp();
    let vol = exp
        .add("vol0", Arc::new(MemBlockIo::new(32 << 20, 4096)))
        .expect("add");
    assert_eq!(std::fs::metadata(&vol).expect("stat").len(), 32 << 20);

    // Odd length, so the tail is a partial block.
    let src = tmp.path().join("src");
    let len = (5 << 20) + 1234;
    random_file(&src, len);
    // Large blocks, then odd unaligned blocks (read-modify-write path).
    for bs in ["1M", "1000"] {
        sh(&format!(
            "dd if='{}' of='{}' bs={bs} conv=fsync status=none",
            src.display(),
            vol.display()
        ));
        let out = tmp.path().join(format!("out-{bs}"));
        sh(&format!(
            "dd if='{}' of='{}' bs=64k iflag=count_bytes count={len} status=none",
            vol.display(),
            out.display()
        ));
        assert_eq!(sha256(&src), sha256(&out), "bs={bs}");
    }
    // dd without conv=notrunc opened with O_TRUNC: the size must not change.
    assert_eq!(std::fs::metadata(&vol).expect("stat").len(), 32 << 20);
    exp.unmount().expect("unmount");
}

#[test]
fn volumes_come_go_and_grow_while_mounted() {
    let (_tmp, exp) = mount_tmp();
    let grow = Arc::new(MemBlockIo::new(1 << 20, 512));
    let a = exp
        .add("a", Arc::clone(&grow) as Arc<DynBlockIo>)
        .expect("add a");
    let b = exp
        .add("b", Arc::new(MemBlockIo::new(2 << 20, 512)))
        .expect("add b");
    assert!(matches!(
        exp.add("a", Arc::new(MemBlockIo::new(512, 512))),
        Err(ExposeError::Exists(_))
    ));
    assert!(matches!(
        exp.add("x/y", Arc::new(MemBlockIo::new(512, 512))),
        Err(ExposeError::InvalidName(_))
    ));
    let mut listed: Vec<String> = std::fs::read_dir(exp.mountpoint())
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    listed.sort();
    assert_eq!(listed, ["a", "b"]);
    assert_eq!(exp.names(), ["a", "b"]);

    assert_eq!(std::fs::metadata(&a).expect("stat a").len(), 1 << 20);
    grow.resize(3 << 20);
    // As a namespace-change watcher would: from another thread.
    let volumes = exp.volumes();
    let refreshed = std::thread::spawn(move || volumes.refresh_size("a"))
        .join()
        .expect("watcher thread");
    assert_eq!(refreshed.expect("refresh"), 3 << 20);
    assert_eq!(std::fs::metadata(&a).expect("stat a again").len(), 3 << 20);
    // The new space is usable at once.
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&a)
        .expect("open a");
    f.write_all_at(b"tail", (3 << 20) - 4)
        .expect("write new tail");
    let mut buf = [0u8; 4];
    f.read_exact_at(&mut buf, (3 << 20) - 4)
        .expect("read new tail");
    assert_eq!(&buf, b"tail");
    // Writing past the end fails instead of growing the file.
    let e = f.write_all_at(b"x", 3 << 20).expect_err("past the end");
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
    drop(f);

    exp.remove("b").expect("remove b");
    assert!(!b.exists(), "removed volume still visible");
    assert!(matches!(exp.remove("b"), Err(ExposeError::NotFound(_))));
    exp.unmount().expect("unmount");
}

/// Counts flushes and makes each one slow, to prove fsync waits for it.
struct SlowFlush {
    inner: MemBlockIo,
    flushes: AtomicU64,
    done: AtomicBool,
}

impl BlockIo for SlowFlush {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn block_size(&self) -> u32 {
        self.inner.block_size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.done.store(false, Ordering::SeqCst);
        self.inner.write_at(buf, offset)
    }
    fn flush(&self) -> std::io::Result<()> {
        std::thread::sleep(Duration::from_millis(200));
        self.flushes.fetch_add(1, Ordering::SeqCst);
        self.done.store(true, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn fsync_returns_only_after_flush_completed() {
    let (_tmp, exp) = mount_tmp();
    let dev = Arc::new(SlowFlush {
        inner: MemBlockIo::new(1 << 20, 4096),
        flushes: AtomicU64::new(0),
        done: AtomicBool::new(false),
    });
    let path = exp
        .add("v", Arc::clone(&dev) as Arc<DynBlockIo>)
        .expect("add");
    let f = OpenOptions::new().write(true).open(&path).expect("open");
    f.write_all_at(&[1u8; 4096], 0).expect("write");
    assert!(!dev.done.load(Ordering::SeqCst));
    f.sync_all().expect("fsync");
    assert!(
        dev.done.load(Ordering::SeqCst),
        "fsync returned before Flush completed"
    );
    assert!(dev.flushes.load(Ordering::SeqCst) >= 1);
    drop(f);
    exp.unmount().expect("unmount");
}

/// Asynchronous direct I/O (FUSE_ASYNC_DIO): one process's libaio queue
/// depth reaches the device as concurrent requests (without it the kernel
/// ran each io_submit synchronously: at most one in flight), and the
/// fsync at the end still reaches the device only after every write.
#[test]
fn libaio_queue_depth_reaches_the_device_and_fsync_follows_every_write() {
    require("fio", "fio");
    let (_tmp, exp) = mount_tmp();
    // Long enough per write for the next requests of the queue to arrive.
    let dev = Arc::new(Probe::new(8 << 20, 4096, Duration::from_millis(5)));
    let path = exp
        .add("v", Arc::clone(&dev) as Arc<DynBlockIo>)
        .expect("add");
    sh(&format!(
        "fio --name=qd --filename='{}' --direct=1 --ioengine=libaio --iodepth=8 \
         --rw=write --bs=64k --size=4M --end_fsync=1 --output=/dev/null",
        path.display()
    ));
    let writes = dev.writes_done.load(Ordering::SeqCst);
    assert_eq!(writes, 64, "4 MiB in 64 KiB writes");
    assert!(
        dev.max.load(Ordering::SeqCst) >= 2,
        "libaio at depth 8 reached the device one request at a time"
    );
    assert_eq!(
        dev.done_at_flush.load(Ordering::SeqCst),
        writes,
        "the fsync's flush started before every write had completed"
    );
    assert!(!dev.flush_overlapped.load(Ordering::SeqCst));
    exp.unmount().expect("unmount");
}

/// Records the requests that reach the device: their ranges, how many
/// writes were in it at once (each write lingers `write_delay`), and how
/// many writes had completed when the last flush started.
#[derive(Default)]
struct Probe {
    inner: Option<MemBlockIo>,
    write_delay: Duration,
    writes: std::sync::Mutex<Vec<(u64, usize)>>,
    reads: std::sync::Mutex<Vec<(u64, usize)>>,
    now: AtomicU64,
    max: AtomicU64,
    writes_done: AtomicU64,
    done_at_flush: AtomicU64,
    flush_overlapped: AtomicBool,
}

impl Probe {
    fn new(size: u64, block_size: u32, write_delay: Duration) -> Self {
        Self {
            inner: Some(MemBlockIo::new(size, block_size)),
            write_delay,
            ..Default::default()
        }
    }

    fn dev(&self) -> &MemBlockIo {
        self.inner.as_ref().expect("probe without a device")
    }
}

impl BlockIo for Probe {
    fn size(&self) -> u64 {
        self.dev().size()
    }
    fn block_size(&self) -> u32 {
        self.dev().block_size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.reads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((offset, buf.len()));
        self.dev().read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((offset, buf.len()));
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
        std::thread::sleep(self.write_delay);
        let r = self.dev().write_at(buf, offset);
        self.writes_done.fetch_add(1, Ordering::SeqCst);
        self.now.fetch_sub(1, Ordering::SeqCst);
        r
    }
    fn flush(&self) -> std::io::Result<()> {
        if self.now.load(Ordering::SeqCst) != 0 {
            self.flush_overlapped.store(true, Ordering::SeqCst);
        }
        self.done_at_flush
            .store(self.writes_done.load(Ordering::SeqCst), Ordering::SeqCst);
        Ok(())
    }
}

/// The file at `path`, open for reading and writing.
fn open_rw(path: &Path) -> std::fs::File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open")
}

/// 1 MiB of `raw` (1 MiB + 8 KiB long) starting 16 bytes into a page, as
/// malloc hands out, filled with a pattern of `seed`.
fn skewed_megabyte(raw: &mut [u8], seed: usize) -> &mut [u8] {
    let skew = raw.as_ptr().align_offset(4096) + 16;
    let buf = &mut raw[skew..skew + (1 << 20)];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i * seed + 1) as u8;
    }
    buf
}

/// A 1 MiB write or read from a buffer that does not start on a page (as
/// malloc hands out: 16 bytes in) spans 257 pages; it must still reach the
/// device as one whole-block request, not as two unaligned pieces that
/// each need a read-modify-write (what a 1 MiB max_write did).
#[test]
fn a_megabyte_from_an_unaligned_buffer_is_one_request() {
    let (_tmp, exp) = mount_tmp();
    let dev = Arc::new(Probe::new(8 << 20, 4096, Duration::ZERO));
    let path = exp
        .add("v", Arc::clone(&dev) as Arc<DynBlockIo>)
        .expect("add");
    let f = open_rw(&path);
    let mut raw = vec![0u8; (1 << 20) + 8192];
    let buf = skewed_megabyte(&mut raw, 7);
    let want = buf.to_vec();
    f.write_all_at(buf, 1 << 20).expect("write");
    assert_eq!(
        *dev.writes.lock().expect("writes"),
        [(1u64 << 20, 1usize << 20)],
        "one whole 1 MiB write"
    );
    assert!(
        dev.reads.lock().expect("reads").is_empty(),
        "no read-modify-write"
    );
    buf.fill(0);
    f.read_exact_at(buf, 1 << 20).expect("read");
    assert!(*buf == want[..], "read back differs");
    assert_eq!(
        *dev.reads.lock().expect("reads"),
        [(1u64 << 20, 1usize << 20)],
        "one whole 1 MiB read"
    );
    drop(f);
    exp.unmount().expect("unmount");
}

#[test]
fn concurrent_unaligned_writers_do_not_tear_each_other() {
    let (_tmp, exp) = mount_tmp();
    let path = exp
        .add("v", Arc::new(MemBlockIo::new(64 << 10, 4096)))
        .expect("add");
    let threads = 4u64;
    // Each thread owns every 4th 100-byte record; records straddle blocks.
    std::thread::scope(|s| {
        for t in 0..threads {
            let path = path.clone();
            s.spawn(move || {
                let f = OpenOptions::new().write(true).open(&path).expect("open");
                for i in 0..100u64 {
                    let rec = i * threads + t;
                    f.write_all_at(&[t as u8 + 1; 100], rec * 100)
                        .expect("write");
                }
            });
        }
    });
    let mut all = Vec::new();
    std::fs::File::open(&path)
        .expect("open")
        .read_to_end(&mut all)
        .expect("read");
    for rec in 0..(100 * threads) {
        let want = (rec % threads) as u8 + 1;
        let got = &all[(rec * 100) as usize..(rec * 100 + 100) as usize];
        assert!(got.iter().all(|&b| b == want), "record {rec} torn");
    }
    exp.unmount().expect("unmount");
}

/// Detaches the loop device and unmounts the ext4 mount even if the test
/// panics, so a failure does not leave the machine with a busy loop device.
struct LoopGuard {
    dev: String,
    mnt: PathBuf,
}

impl Drop for LoopGuard {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).output();
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).output();
    }
}

#[test]
fn ext4_on_a_loop_device_over_the_exposed_file_is_clean() {
    for (tool, pkg) in [
        ("losetup", "mount"),
        ("mount", "mount"),
        ("mkfs.ext4", "e2fsprogs"),
        ("e2fsck", "e2fsprogs"),
        ("sha256sum", "coreutils"),
    ] {
        require(tool, pkg);
    }
    let (tmp, exp) = mount_tmp();
    let vol = exp
        .add("ext4vol", Arc::new(MemBlockIo::new(96 << 20, 4096)))
        .expect("add");
    let dev = sh(&format!("losetup --find --show '{}'", vol.display()))
        .trim()
        .to_string();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir mnt");
    let guard = LoopGuard {
        dev: dev.clone(),
        mnt: mnt.clone(),
    };
    sh(&format!("mkfs.ext4 -q -F -b 4096 {dev}"));
    sh(&format!("mount -t ext4 {dev} '{}'", mnt.display()));
    let mut sums = Vec::new();
    for i in 0..4 {
        let p = mnt.join(format!("f{i}"));
        random_file(&p, (1 << 20) + i * 777);
        sums.push(sha256(&p));
    }
    let mut f = std::fs::File::create(mnt.join("small")).expect("create");
    f.write_all(b"hello ferrofab\n").expect("write small");
    f.sync_all().expect("fsync small");
    drop(f);
    sh(&format!("umount '{}'", mnt.display()));
    sh(&format!("e2fsck -fn {dev}"));
    // Data survives a remount.
    sh(&format!("mount -t ext4 -o ro {dev} '{}'", mnt.display()));
    for (i, want) in sums.iter().enumerate() {
        assert_eq!(&sha256(&mnt.join(format!("f{i}"))), want, "file f{i}");
    }
    sh(&format!("umount '{}'", mnt.display()));
    sh(&format!("losetup -d {dev}"));
    drop(guard);
    exp.unmount().expect("unmount");
}

/// Leave a dead FUSE mount behind, as a crashed process would: mount with
/// a /dev/fuse descriptor and close it without ever serving.
fn make_stale_mount(dir: &Path) {
    let fuse = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .expect("open /dev/fuse");
    use std::os::fd::AsRawFd;
    let opts = format!(
        "fd={},rootmode=40000,user_id=0,group_id=0",
        fuse.as_raw_fd()
    );
    let c = |s: &str| std::ffi::CString::new(s).expect("cstring");
    let (src, target, fstype, data) = (
        c("ferrofab"),
        c(&dir.to_string_lossy()),
        c("fuse.ferrofab"),
        c(&opts),
    );
    // SAFETY: valid C strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )
    };
    assert_eq!(rc, 0, "mount: {}", std::io::Error::last_os_error());
    drop(fuse);
}

#[test]
fn stale_mount_from_a_dead_process_is_cleared() {
    require_fuse_root();
    require("fusermount3", "fuse3");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("volumes");
    std::fs::create_dir(&dir).expect("mkdir");
    make_stale_mount(&dir);
    let e = std::fs::metadata(&dir).expect_err("stale mount must be dead");
    assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN));

    let exp = Exposer::mount(&dir, &ExposeOptions::default()).expect("mount over stale");
    exp.add("v", Arc::new(MemBlockIo::new(4096, 512)))
        .expect("add");
    assert!(dir.join("v").exists());
    // A live mount is refused rather than stolen.
    assert!(matches!(
        Exposer::mount(&dir, &ExposeOptions::default()),
        Err(ExposeError::AlreadyMounted(_))
    ));
    exp.unmount().expect("unmount");
    assert!(!mountpoint::is_mount_point(&dir));
}

/// Cost of the FUSE layer itself: the benchmark engine on an exposed
/// in-memory volume, through the target's file backend. A measurement, so
/// ignored by default: `cargo test --release -p ferrofab-nvmeof-expose
/// fuse_overhead -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a pass/fail test; run by hand in release mode"]
fn fuse_overhead() {
    use ferrofab_nvmeof_bench::engine::{self, RunOptions, Target};
    use ferrofab_nvmeof_bench::io::BackendBlockIo;
    use ferrofab_nvmeof_bench::report;
    use ferrofab_nvmeof_bench::workload::{JobParams, Limit, Pattern};
    use ferrofab_nvmeof_target::backend::FileOptions;
    let (_tmp, exp) = mount_tmp();
    let path = exp
        .add("v", Arc::new(MemBlockIo::new(256 << 20, 512)))
        .expect("add");
    let dev = Arc::new(BackendBlockIo::open(&path, &FileOptions::default()).expect("open"));
    for (pattern, bs, qd) in [
        (Pattern::Randread, 4096, 1),
        (Pattern::Randread, 4096, 8),
        (Pattern::Randwrite, 4096, 8),
        (Pattern::Read, 1 << 20, 2),
        (Pattern::Write, 1 << 20, 2),
    ] {
        let params = JobParams {
            pattern,
            block_size: bs,
            queue_depth: qd,
            limit: Limit::Time(Duration::from_secs(2)),
            ..Default::default()
        };
        let opts = RunOptions {
            target_name: "fuse-mem".into(),
            ..Default::default()
        };
        let r = engine::run(Target::Blocking(dev.clone()), &params, &opts).expect("job");
        print!("{}", report::job_table(&r));
    }
    drop(dev);
    exp.unmount().expect("unmount");
}

#[test]
fn unmount_while_a_loop_device_holds_a_file_detaches_lazily() {
    require("losetup", "mount");
    let (_tmp, exp) = mount_tmp();
    let vol = exp
        .add("busy", Arc::new(MemBlockIo::new(8 << 20, 512)))
        .expect("add");
    let mp = exp.mountpoint().to_path_buf();
    let dev = sh(&format!("losetup --find --show '{}'", vol.display()))
        .trim()
        .to_string();
    let guard = LoopGuard {
        dev: dev.clone(),
        mnt: mp.join("never-mounted"),
    };
    match exp.unmount() {
        Err(ExposeError::Unmount(..)) => {}
        other => panic!("expected EBUSY from unmount, got {other:?}"),
    }
    assert!(!mountpoint::is_mount_point(&mp), "mount not detached");
    // The loop device still works: the FUSE threads keep serving it.
    sh(&format!(
        "dd if={dev} of=/dev/null bs=64k count=16 status=none"
    ));
    drop(guard);
}

/// A 1 MiB write or read of whole blocks to an initiator namespace goes
/// to the target as [`fs::SPLIT_PIECE`] commands sent together (so both
/// sides work at once at queue depth 1), and reads back what was written;
/// a request under two pieces stays one command.
#[test]
fn a_megabyte_to_an_initiator_namespace_goes_in_pieces_sent_together() {
    use ferrofab_nvmeof_host::{ConnectOptions, Controller as HostController, HostIdentity};
    use ferrofab_testkit::nvme::mini_host::{fixture, HOSTNQN, SUBNQN};

    let (_tmp, exp) = mount_tmp();
    let f = fixture();
    let (target, addr, nqn) = (&f.target, f.addr, SUBNQN);
    let stats = || {
        let st = target.status();
        let ns = &st
            .subsystems
            .iter()
            .find(|s| s.nqn == nqn)
            .expect("subsystem")
            .namespaces[0];
        (ns.stats.writes, ns.stats.write_bytes, ns.stats.reads)
    };
    let identity = HostIdentity::new(HOSTNQN, uuid::Uuid::new_v4()).expect("identity");
    let ctrl = HostController::connect(ConnectOptions::new(addr.to_string(), nqn, identity))
        .expect("connect");
    let path = exp
        .add_namespace("v", ctrl.namespace(1).expect("namespace 1"))
        .expect("expose");
    let file = open_rw(&path);
    let mut raw = vec![0u8; (1 << 20) + 8192];
    let buf = skewed_megabyte(&mut raw, 13);
    let want = buf.to_vec();
    let pieces = (1u64 << 20) / fs::SPLIT_PIECE as u64;
    let (w0, wb0, r0) = stats();
    file.write_all_at(buf, 1 << 20).expect("write");
    let (w1, wb1, _) = stats();
    assert_eq!(
        (w1 - w0, wb1 - wb0),
        (pieces, 1 << 20),
        "1 MiB as {pieces} writes"
    );
    buf.fill(0);
    file.read_exact_at(buf, 1 << 20).expect("read");
    assert!(*buf == want[..], "read back differs");
    let (_, _, r1) = stats();
    assert_eq!(r1 - r0, pieces, "1 MiB as {pieces} reads");
    // Under two pieces: one command, as before.
    let small = &want[..fs::SPLIT_PIECE];
    file.write_all_at(small, 0).expect("small write");
    assert_eq!(stats().0 - w1, 1, "one piece is one write");
    drop(file);
    exp.remove("v").expect("remove");
    ctrl.disconnect().expect("disconnect");
    exp.unmount().expect("unmount");
    target.shutdown();
}

/// An initiator namespace on the test kit's scripted fake target, exposed
/// through a mount with `threads` FUSE threads.
struct FakeExposed {
    target: ferrofab_testkit::nvme::fake_target::FakeTarget,
    ctrl: ferrofab_nvmeof_host::Controller,
    exp: Exposer,
    path: PathBuf,
    _tmp: tempfile::TempDir,
}

fn fake_exposed(
    threads: usize,
    tune: impl FnOnce(&mut ferrofab_nvmeof_host::ConnectOptions),
) -> FakeExposed {
    let opts = ExposeOptions {
        threads,
        ..ExposeOptions::default()
    };
    fake_exposed_with(opts, tune)
}

/// [`fake_exposed`] with mount options of the caller's.
fn fake_exposed_with(
    opts: ExposeOptions,
    tune: impl FnOnce(&mut ferrofab_nvmeof_host::ConnectOptions),
) -> FakeExposed {
    use ferrofab_nvmeof_host::{ConnectOptions, Controller as HostController, HostIdentity};
    use ferrofab_testkit::nvme::fake_target::{FakeTarget, Knobs, SUBNQN};
    require_fuse_root();
    let target = FakeTarget::start(4096, Knobs::default());
    let mut o = ConnectOptions::new(target.addr.clone(), SUBNQN, HostIdentity::ephemeral());
    o.nr_io_queues = 2;
    o.reconnect_delay = Duration::from_millis(100);
    o.max_reconnect_delay = Duration::from_millis(400);
    tune(&mut o);
    let ctrl = HostController::connect(o).expect("connect");
    let tmp = tempfile::tempdir().expect("tempdir");
    let exp = Exposer::mount(&tmp.path().join("volumes"), &opts).expect("mount volumes");
    let path = exp
        .add_namespace("v", ctrl.namespace(1).expect("namespace 1"))
        .expect("expose");
    FakeExposed {
        target,
        ctrl,
        exp,
        path,
        _tmp: tmp,
    }
}

/// Opens `path` for direct I/O (no page cache between us and the holder).
fn open_direct(path: &Path) -> std::fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .expect("open O_DIRECT")
}

/// A 4 KiB page-aligned buffer inside `raw` (8 KiB long).
fn page(raw: &mut [u8]) -> &mut [u8] {
    let at = raw.as_ptr().align_offset(4096);
    &mut raw[at..at + 4096]
}

/// With one FUSE thread, a request whose command the target never answers
/// does not hold up the others: the thread submits and goes on reading, and
/// 32 reads issued after it complete while it is still in flight (with
/// synchronous replies they would all wait behind it, here until the I/O
/// timeout resets the association and the first read is re-sent).
#[test]
fn one_fuse_thread_keeps_many_requests_in_flight() {
    let f = fake_exposed(1, |o| o.io_timeout = Some(Duration::from_secs(5)));
    let file = open_direct(&f.path);
    for i in 0..33u64 {
        let mut raw = vec![0u8; 8192];
        let p = page(&mut raw);
        p.fill(i as u8 + 1);
        file.write_all_at(p, i * 4096).expect("fill");
    }
    let stuck = stuck_read(&f);
    let start = std::time::Instant::now();
    std::thread::scope(|s| {
        for i in 1..33u64 {
            let file = &file;
            s.spawn(move || {
                let mut raw = vec![0u8; 8192];
                let p = page(&mut raw);
                file.read_exact_at(p, i * 4096).expect("read");
                assert!(p.iter().all(|&b| b == i as u8 + 1), "read {i}");
            });
        }
    });
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "32 reads waited {:?} behind one unanswered command",
        start.elapsed()
    );
    assert!(!stuck.is_finished(), "the swallowed read completed early");
    assert_eq!(stuck.join().expect("join"), 1, "the re-sent read's data");
    drop(file);
    f.exp.unmount().expect("unmount");
    f.ctrl.disconnect().expect("disconnect");
}

/// Linux AIO by raw system calls (the libc crate has no `iocb`), just
/// enough for one write in flight while the test calls fsync.
mod aio {
    /// `struct iocb` of linux/aio_abi.h (little-endian layout).
    #[repr(C)]
    #[derive(Default)]
    pub struct Iocb {
        pub data: u64,
        pub key: u32,
        pub rw_flags: i32,
        pub opcode: u16,
        pub reqprio: i16,
        pub fildes: u32,
        pub buf: u64,
        pub nbytes: u64,
        pub offset: i64,
        pub reserved2: u64,
        pub flags: u32,
        pub resfd: u32,
    }

    /// `struct io_event`.
    #[repr(C)]
    #[derive(Default)]
    pub struct Event {
        pub data: u64,
        pub obj: u64,
        pub res: i64,
        pub res2: i64,
    }

    pub const CMD_PWRITE: u16 = 1;

    /// Start one pwrite of `buf` at `offset` on `fd`; returns the AIO
    /// context to reap it from with [`reap_one`].
    pub fn start_write(fd: i32, buf: &[u8], offset: i64, cb: &mut Iocb) -> u64 {
        let mut ctx: u64 = 0;
        // SAFETY: io_setup writes the context id into `ctx`, which lives
        // for the call.
        let r = unsafe { libc::syscall(libc::SYS_io_setup, 8, &mut ctx as *mut u64) };
        assert_eq!(r, 0, "io_setup: {}", std::io::Error::last_os_error());
        *cb = Iocb {
            opcode: CMD_PWRITE,
            fildes: fd as u32,
            buf: buf.as_ptr() as u64,
            nbytes: buf.len() as u64,
            offset,
            ..Iocb::default()
        };
        let mut list = [cb as *mut Iocb];
        // SAFETY: one valid iocb whose buffer the caller keeps alive until
        // it reaped the event (reap_one).
        let r = unsafe { libc::syscall(libc::SYS_io_submit, ctx, 1, list.as_mut_ptr()) };
        assert_eq!(r, 1, "io_submit: {}", std::io::Error::last_os_error());
        ctx
    }

    /// Wait for the one write of `ctx`; its result (bytes or -errno).
    pub fn reap_one(ctx: u64) -> i64 {
        let mut ev = Event::default();
        // SAFETY: room for one event, no timeout; then the context goes.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_getevents,
                ctx,
                1,
                1,
                &mut ev as *mut Event,
                std::ptr::null_mut::<libc::timespec>(),
            )
        };
        assert_eq!(r, 1, "io_getevents: {}", std::io::Error::last_os_error());
        // SAFETY: a context from io_setup with nothing left in flight.
        unsafe { libc::syscall(libc::SYS_io_destroy, ctx) };
        ev.res
    }
}

/// fsync while an asynchronous write (io_submit, which returns at once
/// with `FUSE_ASYNC_DIO`; the kernel does not wait for it at fsync) is in
/// flight in the holder sends its Flush only after that write completed:
/// NVMe's Flush covers completed writes only. The write's command is
/// swallowed until the I/O timeout re-sends it; the fsync must not return
/// before the target stored it.
#[test]
fn fsync_after_asynchronous_writes_waits_for_them() {
    use std::os::fd::AsRawFd;
    // Several threads: the write and the fsync may be served by different
    // ones, at the same time.
    let f = fake_exposed(3, |o| o.io_timeout = Some(Duration::from_secs(1)));
    let file = open_direct(&f.path);
    let n = f.target.commands.load(Ordering::SeqCst);
    f.target.swallow_at_command.store(n + 1, Ordering::SeqCst);
    let mut raw = vec![0u8; 8192];
    let p = page(&mut raw);
    p.fill(0x5A);
    let mut cb = aio::Iocb::default();
    let ctx = aio::start_write(file.as_raw_fd(), p, 8192, &mut cb);
    while f.target.commands.load(Ordering::SeqCst) <= n {
        std::thread::sleep(Duration::from_millis(1));
    }
    let stored_before = f.target.writes.load(Ordering::SeqCst);
    file.sync_all().expect("fsync");
    let stored_after = f.target.writes.load(Ordering::SeqCst);
    assert_eq!(aio::reap_one(ctx), 4096, "the write's result");
    assert_eq!(stored_before, 0, "the swallowed write was stored early");
    assert_eq!(
        stored_after, 1,
        "fsync returned before the write in flight was stored"
    );
    let data = f.target.data.lock().expect("data")[8192..8192 + 4096].to_vec();
    assert!(data.iter().all(|&b| b == 0x5A));
    drop(file);
    f.exp.unmount().expect("unmount");
    f.ctrl.disconnect().expect("disconnect");
}

/// A failed command is answered with EIO, for reads and writes alike.
#[test]
fn a_failed_command_answers_eio() {
    let f = fake_exposed(1, |o| o.ctrl_loss_tmo = Some(Duration::from_secs(1)));
    let file = open_direct(&f.path);
    f.target.set_refusing(true);
    f.target.drop_all();
    let mut raw = vec![0u8; 8192];
    let p = page(&mut raw);
    let e = file
        .read_exact_at(p, 0)
        .expect_err("read on a lost controller");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    let e = file
        .write_all_at(p, 0)
        .expect_err("write on a lost controller");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    drop(file);
    f.exp.unmount().expect("unmount");
}

/// A read-only device wrapper, as the agent puts around a read-only
/// attachment's namespace.
pub(crate) struct ReadOnlyDev<D>(pub D);

impl<D: BlockIo> BlockIo for ReadOnlyDev<D> {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn block_size(&self) -> u32 {
        self.0.block_size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.0.read_at(buf, offset)
    }
    fn write_at(&self, _buf: &[u8], _offset: u64) -> std::io::Result<()> {
        Err(std::io::Error::from_raw_os_error(libc::EROFS))
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn read_only(&self) -> bool {
        true
    }
}

/// `add_namespace_as`: the wrapper decides the file's attributes (opening
/// for writing is refused), the namespace serves whole-block reads.
#[test]
fn a_read_only_namespace_is_read_through_its_wrapper_attributes() {
    use std::os::unix::fs::OpenOptionsExt;
    let f = fake_exposed(1, |_| {});
    let ns = f.ctrl.namespace(1).expect("namespace 1");
    ns.write_blocks(4096, &[7u8; 4096]).expect("seed");
    let path = f
        .exp
        .add_namespace_as("ro", Arc::new(ReadOnlyDev(ns.clone())), ns.clone())
        .expect("expose read-only");
    let e = OpenOptions::new()
        .write(true)
        .open(&path)
        .expect_err("opened a read-only file for writing");
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    let mut raw = vec![0u8; 8192];
    let p = page(&mut raw);
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .expect("open read-only");
    file.read_exact_at(p, 4096).expect("read");
    assert!(p.iter().all(|&b| b == 7));
    for write in [false, true] {
        let e = OpenOptions::new()
            .read(true)
            .write(write)
            .append(!write)
            .open(&path)
            .expect_err("opened a read-only file for writing");
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    }
    // A read-only descriptor cannot write (the kernel refuses); the
    // holder's own refusal is `fs::tests::a_read_only_volume_refuses_writes`.
    let e = file.write_at(p, 4096).expect_err("wrote a read-only file");
    assert_eq!(e.raw_os_error(), Some(libc::EBADF), "{e}");
    let mut back = vec![0u8; 4096];
    ns.read_at(&mut back, 4096).expect("read back");
    assert!(back.iter().all(|&b| b == 7), "the namespace was written");
    drop(file);
    f.exp.unmount().expect("unmount");
    f.ctrl.disconnect().expect("disconnect");
}

/// Starts a read of the first block of `f`'s file whose command the
/// target swallows (answered only after the I/O timeout re-sends it);
/// returns once the target got it.
fn stuck_read(f: &FakeExposed) -> std::thread::JoinHandle<u8> {
    let file = open_direct(&f.path);
    let n = f.target.commands.load(Ordering::SeqCst);
    f.target.swallow_at_command.store(n + 1, Ordering::SeqCst);
    let stuck = std::thread::spawn(move || {
        let mut raw = vec![0u8; 8192];
        let p = page(&mut raw);
        file.read_exact_at(p, 0).expect("the stuck read");
        p[0]
    });
    while f.target.commands.load(Ordering::SeqCst) <= n {
        std::thread::sleep(Duration::from_millis(1));
    }
    stuck
}

/// A read of one block at `offset` on a thread of its own.
fn read_block(path: &Path, offset: u64) -> std::thread::JoinHandle<()> {
    let file = open_direct(path);
    std::thread::spawn(move || {
        let mut raw = vec![0u8; 8192];
        file.read_exact_at(page(&mut raw), offset).expect("read");
    })
}

/// `max_in_flight_requests`: with the one allowed request stuck at the
/// target, the next waits in the holder until the stuck one completed.
#[test]
fn the_in_flight_limit_holds_requests_back_until_one_completes() {
    let opts = ExposeOptions {
        max_in_flight_requests: 1,
        ..ExposeOptions::default()
    };
    let f = fake_exposed_with(opts, |o| o.io_timeout = Some(Duration::from_secs(2)));
    let stuck = stuck_read(&f);
    let start = std::time::Instant::now();
    let next = read_block(&f.path, 4096);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!stuck.is_finished(), "the swallowed read completed early");
    assert!(!next.is_finished(), "a second request got past the limit");
    next.join().expect("the second read");
    // It waited for the stuck read, re-sent after the 2 s I/O timeout.
    let waited = start.elapsed();
    assert!(waited > Duration::from_secs(1), "waited only {waited:?}");
    stuck.join().expect("the stuck read");
    let spent = f.exp.in_flight();
    assert_eq!(spent.peak_requests, 1, "{spent:?}");
    assert_eq!((spent.requests, spent.bytes), (0, 0), "{spent:?}");
    f.exp.unmount().expect("unmount");
    f.ctrl.disconnect().expect("disconnect");
}

/// With every FUSE thread but one blocked (here on the in-flight limit,
/// as they would be on a range lock, a queue slot or an fsync during an
/// outage), requests that never block are still answered: statfs, a
/// lookup and getattr of a new file, open and release.
#[test]
fn metadata_is_answered_while_the_other_threads_block() {
    let opts = ExposeOptions {
        threads: 2,
        max_in_flight_requests: 1,
        ..ExposeOptions::default()
    };
    let f = fake_exposed_with(opts, |o| o.io_timeout = Some(Duration::from_secs(3)));
    let stuck = stuck_read(&f);
    let blocked: Vec<_> = (1..4u64).map(|i| read_block(&f.path, i * 4096)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let start = std::time::Instant::now();
    // SAFETY: a zeroed statvfs for the call to fill in.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let dir = std::ffi::CString::new(f.exp.mountpoint().as_os_str().as_encoded_bytes())
        .expect("mount point path");
    // SAFETY: a valid path and a valid statvfs.
    let r = unsafe { libc::statvfs(dir.as_ptr(), &mut st) };
    assert_eq!(r, 0, "statvfs: {}", std::io::Error::last_os_error());
    let ns = f.ctrl.namespace(1).expect("namespace 1");
    let size = ns.size();
    let other = f.exp.add_namespace("w", ns).expect("expose w");
    assert_eq!(std::fs::metadata(&other).expect("stat w").len(), size);
    drop(OpenOptions::new().read(true).open(&other).expect("open w"));
    let took = start.elapsed();
    assert!(!stuck.is_finished(), "the swallowed read completed early");
    assert!(took < Duration::from_secs(1), "metadata waited {took:?}");
    stuck.join().expect("the stuck read");
    for b in blocked {
        b.join().expect("a blocked read");
    }
    f.exp.unmount().expect("unmount");
    f.ctrl.disconnect().expect("disconnect");
}
