//! Backend tests against real kernels objects: loop devices, tmpfs and
//! ramfs. They need root (as the target itself does). Missing tools are a
//! test failure, never a silent skip, so CI cannot go green without
//! exercising the block device path.

use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

const MIB: u64 = 1 << 20;

/// Runs a command, panicking with its output if it cannot run or fails.
fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| {
            panic!("cannot run {program} (these tests need it, and root): {err}")
        });
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A loop device over a sparse file in a temporary directory, detached on
/// drop even when the test panics.
struct LoopDevice {
    device: PathBuf,
    backing: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoopDevice {
    fn attach(size: u64, sector_size: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let backing = dir.path().join("backing.img");
        fs::File::create(&backing).unwrap().set_len(size).unwrap();
        let sector_size = sector_size.to_string();
        let backing_str = backing.to_str().unwrap();
        let device = run(
            "losetup",
            &[
                "--find",
                "--show",
                "--sector-size",
                &sector_size,
                backing_str,
            ],
        );
        assert!(
            device.starts_with("/dev/loop"),
            "unexpected losetup output {device:?}"
        );
        Self {
            device: PathBuf::from(device),
            backing,
            _dir: dir,
        }
    }

    /// Grows the backing file and tells the loop driver to pick it up.
    fn grow(&self, size: u64) {
        fs::OpenOptions::new()
            .write(true)
            .open(&self.backing)
            .unwrap()
            .set_len(size)
            .unwrap();
        run(
            "losetup",
            &["--set-capacity", self.device.to_str().unwrap()],
        );
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let status = Command::new("losetup").arg("-d").arg(&self.device).status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("failed to detach {}: {status:?}", self.device.display());
        }
    }
}

/// A ramfs mounted on a temporary directory. ramfs has neither `O_DIRECT`
/// nor `fallocate`, which makes it the one real filesystem on which every
/// fallback path of the file backend runs.
struct RamFs {
    dir: tempfile::TempDir,
}

impl RamFs {
    fn mount() -> Self {
        let dir = tempfile::tempdir().unwrap();
        run(
            "mount",
            &["-t", "ramfs", "ramfs", dir.path().to_str().unwrap()],
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for RamFs {
    fn drop(&mut self) {
        let status = Command::new("umount").arg(self.dir.path()).status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "failed to unmount {}: {status:?}",
                self.dir.path().display()
            );
        }
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

fn read(backend: &dyn BlockBackend, offset: u64, len: u64) -> Vec<u8> {
    let mut buf = vec![0u8; len as usize];
    backend.read_at(&mut buf, offset).unwrap();
    buf
}

fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

fn create_opts(size: u64) -> FileOptions {
    FileOptions {
        create: true,
        size: Some(size),
        ..FileOptions::default()
    }
}

#[test]
fn loop_device_read_write_discard_zeroout() {
    let dev = LoopDevice::attach(16 * MIB, 512);
    let backend = open_backend(&dev.device, &FileOptions::default()).unwrap();
    let info = backend.info();
    assert_eq!(info.kind, BackendKind::BlockDevice);
    assert_eq!(info.path, dev.device);
    assert_eq!((backend.size(), info.logical_block_size), (16 * MIB, 512));
    assert!(info.direct_io, "block devices use O_DIRECT by default");
    assert!(!info.deallocate_reads_zero);
    assert!(
        info.deallocate_supported,
        "loop devices on ext4 can discard"
    );

    let data = pattern(64 * 1024, 1);
    backend.write_at(&data, MIB).unwrap();
    assert_eq!(read(&*backend, MIB, data.len() as u64), data);

    let mut unaligned = vec![0u8; 4097];
    unaligned[1..].copy_from_slice(&pattern(4096, 2));
    backend.write_at_durable(&unaligned[1..], 512).unwrap();
    backend.flush().unwrap();
    assert_eq!(read(&*backend, 512, 4096), pattern(4096, 2));

    assert!(backend
        .write_at(&data, 16 * MIB - 512)
        .unwrap_err()
        .is_out_of_range());
    let err = backend.write_at(&data[..100], 0).unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Misaligned);

    backend
        .write_at(&vec![0xeeu8; 4 * MIB as usize], 4 * MIB)
        .unwrap();
    backend.write_zeroes(4 * MIB, MIB, false).unwrap();
    backend.write_zeroes(5 * MIB, MIB, true).unwrap();
    backend.deallocate(6 * MIB, MIB).unwrap();
    // A loop device discards by punching its backing file, so this one
    // does read back zeroes even though block devices do not promise it.
    assert!(all_zero(&read(&*backend, 4 * MIB, 3 * MIB)));
    assert!(read(&*backend, 7 * MIB, MIB).iter().all(|&b| b == 0xee));
    assert_eq!(read(&*backend, MIB, data.len() as u64), data);
}

#[test]
fn loop_device_resize_follows_the_device() {
    let dev = LoopDevice::attach(8 * MIB, 512);
    let backend = BlockDeviceBackend::open(&dev.device, &BlockDeviceOptions::default()).unwrap();
    assert_eq!(backend.size(), 8 * MIB);

    let err = backend.resize(12 * MIB).unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::InvalidArgument);
    assert!(err.to_string().contains("grow the device first"), "{err}");
    let err = backend.resize(4 * MIB).unwrap_err();
    assert!(err.to_string().contains("shrink"), "{err}");
    assert_eq!(backend.size(), 8 * MIB);

    dev.grow(16 * MIB);
    backend.resize(12 * MIB).unwrap();
    assert_eq!(backend.size(), 12 * MIB);
    backend.write_at(&[4u8; 512], 12 * MIB - 512).unwrap();
    assert!(backend
        .write_at(&[4u8; 512], 12 * MIB)
        .unwrap_err()
        .is_out_of_range());
}

#[test]
fn loop_device_block_sizes_and_exclusivity() {
    let dev = LoopDevice::attach(4 * MIB, 4096);
    let native = BlockDeviceBackend::open(&dev.device, &BlockDeviceOptions::default()).unwrap();
    assert_eq!(native.logical_block_size(), 4096);
    native.write_at(&pattern(4096, 3), 4096).unwrap();
    assert_eq!(
        native.write_at(&[0u8; 512], 0).unwrap_err().kind(),
        BackendErrorKind::Misaligned
    );

    // The device is claimed exclusively while a backend holds it.
    let err = BlockDeviceBackend::open(&dev.device, &BlockDeviceOptions::default()).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EBUSY), "{err}");
    assert_eq!(err.kind(), BackendErrorKind::Busy);
    drop(native);

    let too_small = BlockDeviceOptions {
        block_size: Some(512),
        ..BlockDeviceOptions::default()
    };
    let err = BlockDeviceBackend::open(&dev.device, &too_small).unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::InvalidArgument);

    let buffered = BlockDeviceOptions {
        direct_io: DirectIo::Off,
        block_size: Some(4096),
    };
    let backend = BlockDeviceBackend::open(&dev.device, &buffered).unwrap();
    assert!(!backend.info().direct_io);
    assert_eq!(read(&backend, 4096, 4096), pattern(4096, 3));
}

#[test]
fn open_backend_dispatches_on_file_type() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.img");
    let backend = open_backend(&path, &create_opts(MIB)).unwrap();
    assert_eq!(backend.info().kind, BackendKind::File);
    drop(backend);
    let backend = open_backend(&path, &FileOptions::default()).unwrap();
    assert_eq!(
        (backend.info().kind, backend.size()),
        (BackendKind::File, MIB)
    );

    let err = open_backend(dir.path(), &FileOptions::default()).unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::InvalidArgument);
    let err = open_backend("/dev/null", &FileOptions::default()).unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::InvalidArgument);
    assert!(err.to_string().contains("/dev/null"), "{err}");

    let dev = LoopDevice::attach(2 * MIB, 512);
    let err = open_backend(&dev.device, &create_opts(4 * MIB)).unwrap_err();
    assert!(err.to_string().contains("fewer than"), "{err}");
    let backend = open_backend(&dev.device, &create_opts(2 * MIB)).unwrap();
    assert_eq!(backend.info().kind, BackendKind::BlockDevice);
}

/// tmpfs gained `O_DIRECT` support in Linux 6.6; on older kernels the open
/// fails with `EINVAL`. Either way `Auto` opens the file buffered (the flag
/// would bypass nothing there, see `settle_direct_io`), and `On` gets
/// direct I/O exactly where the kernel allows it.
#[test]
fn tmpfs_auto_uses_buffered_io_and_on_matches_the_kernel() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let path = dir.path().join("ns.img");
    let backend = open_backend(&path, &create_opts(4 * MIB)).unwrap();
    let kernel_allows = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .is_ok();
    assert!(
        !backend.info().direct_io,
        "Auto on tmpfs must stay buffered"
    );
    let auto_direct = backend.info().direct_io;
    drop(backend);

    let on = FileOptions {
        direct_io: DirectIo::On,
        ..FileOptions::default()
    };
    match FileBackend::open(&path, &on) {
        Ok(backend) => assert!(kernel_allows && backend.info().direct_io),
        Err(err) => assert!(!kernel_allows && err.kind() == BackendErrorKind::Unsupported),
    }
    let backend = open_backend(&path, &FileOptions::default()).unwrap();
    assert_eq!(backend.info().direct_io, auto_direct);

    // tmpfs can punch holes but has no FALLOC_FL_ZERO_RANGE, so this
    // covers the zero-writing fallback of write_zeroes.
    backend
        .write_at(&vec![0x11u8; 2 * MIB as usize], 0)
        .unwrap();
    backend.write_zeroes(0, MIB, false).unwrap();
    backend.deallocate(MIB, 512 * 1024).unwrap();
    assert!(all_zero(&read(&*backend, 0, MIB + 512 * 1024)));
    assert!(read(&*backend, MIB + 512 * 1024, 512 * 1024)
        .iter()
        .all(|&b| b == 0x11));
}

/// ramfs refuses `O_DIRECT` (with `EINVAL`) and has no `fallocate`, so it
/// drives the buffered fallback and the zero-writing fallbacks of
/// deallocate and write zeroes on a real kernel.
#[test]
fn ramfs_falls_back_to_buffered_io_and_zero_writes() {
    let ramfs = RamFs::mount();
    let path = ramfs.path().join("ns.img");

    let on = FileOptions {
        direct_io: DirectIo::On,
        ..create_opts(MIB)
    };
    let err = FileBackend::open(&path, &on).unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Unsupported, "{err}");
    assert!(!path.exists(), "a failed create must remove the file");

    let thick = FileOptions {
        preallocate: true,
        ..create_opts(MIB)
    };
    let err = FileBackend::open(&path, &thick).unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Unsupported, "{err}");
    assert!(!path.exists());

    let backend = FileBackend::open(&path, &create_opts(2 * MIB)).unwrap();
    assert!(!backend.info().direct_io);
    backend
        .write_at(&vec![0x22u8; 2 * MIB as usize], 0)
        .unwrap();
    backend.deallocate(0, MIB).unwrap();
    backend.write_zeroes(MIB, 4096, true).unwrap();
    backend.write_zeroes(MIB + 4096, 4096, false).unwrap();
    assert!(all_zero(&read(&backend, 0, MIB + 8192)));
    assert!(read(&backend, MIB + 8192, MIB - 8192)
        .iter()
        .all(|&b| b == 0x22));
    backend.write_at_durable(&pattern(4096, 4), 0).unwrap();
    backend.flush().unwrap();
    assert_eq!(read(&backend, 0, 4096), pattern(4096, 4));
}
