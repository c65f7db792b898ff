//! Expose an NVMe-oF namespace as a Linux block device, `/dev/ublkbN`,
//! through ublk (`ublk_drv`, Linux 6.4 and newer: the ioctl-encoded
//! commands this server sends exist since 6.4).
//!
//! Why: the FUSE exposure is a file that workstations turn into a block
//! device with `losetup`, so every request crosses FUSE and the loop driver
//! (docs/benchmarks.md, issue 20 item 3). With ublk the kernel hands block
//! requests straight to this process through io_uring: many requests and
//! their answers per system call, and no file system in between.
//!
//! Shape: [`UblkDevice::create`] adds a device (ADD_DEV, SET_PARAMS from
//! the namespace's geometry), starts one thread per queue that fetches
//! requests for every tag, then starts the device (START_DEV) from the
//! calling thread. Each request becomes one [`Namespace::submit`] at once,
//! so up to the queue depth of NVMe commands are in flight per queue.
//! [`UblkDevice::stop`] (and `Drop`) removes the block device, ends the
//! queues and deletes the device: nothing is left behind.
//!
//! Limits are explicit ([`UblkOptions`], bounded by [`MAX_QUEUES`],
//! [`MAX_QUEUE_DEPTH`] and [`MAX_IO_BYTES`]).
//!
//! See docs/ublk-exposure.md.

pub mod ctrl;
pub mod io;
mod queue;
pub mod sys;

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ferrofab_nvmeof_host::{BlockIo, Namespace};

use ctrl::Control;
use queue::{QueueConfig, QueueMem, QueueShared};

/// Default queues per device: two (the kernel caps it at one per CPU).
/// Each queue thread also runs the kernel's copy between the request and
/// its buffer, so one queue serialises every copy of the device; with two,
/// 1 MiB writes through ublk went from 0.55-0.71x the FUSE file to
/// 0.98-2.6x in the same-run comparisons (docs/benchmarks.md, "Issue 20 item
/// 3: a ublk block device"). Each queue costs two threads (asleep when
/// idle) and at most `2 x depth x max_io_bytes` of buffers.
pub const DEFAULT_QUEUES: u16 = 2;
/// Most queues per device: each is a thread, a ring and
/// `depth x max_io_bytes` of buffers.
pub const MAX_QUEUES: u16 = 16;
/// Default tags (requests in flight) per queue: matches the initiator's
/// default NVMe queue size of 128 with room for a second queue.
pub const DEFAULT_QUEUE_DEPTH: u16 = 64;
/// Most tags per queue (below the kernel's 4096): each tag pins a buffer of
/// `max_io_bytes`.
pub const MAX_QUEUE_DEPTH: u16 = 1024;
/// Default largest request: 512 KiB (64 tags x 512 KiB = 32 MiB of buffers
/// per queue and at most as many spares, touched only as used).
pub const DEFAULT_MAX_IO_BYTES: u32 = 512 * 1024;
/// Largest request allowed: 1 MiB.
pub const MAX_IO_BYTES: u32 = 1024 * 1024;

/// How long to wait for udev-less devtmpfs nodes (/dev/ublkcN, /dev/ublkbN)
/// to appear after the kernel adds them.
const NODE_WAIT: Duration = Duration::from_secs(5);

/// Discard and write-zeroes requests are capped at this many sectors
/// (1 GiB): large enough to be cheap, small enough that one request is
/// not a minutes-long command on a slow target.
const MAX_DISCARD_SECTORS: u32 = 1 << 21;

#[derive(Debug, thiserror::Error)]
pub enum UblkError {
    #[error("ublk is not available: load ublk_drv, Linux 6.4 or newer ({path}: {source})", path = ctrl::CONTROL_PATH)]
    NotAvailable { source: std::io::Error },
    /// ADD_DEV refused the ioctl-encoded command (EOPNOTSUPP or EINVAL):
    /// a ublk older than 6.4 knows only the plain opcodes.
    #[error("the kernel's ublk is too old: ferrofab needs Linux 6.4 or newer (ioctl-encoded commands); ADD_DEV said: {source}")]
    KernelTooOld { source: std::io::Error },
    #[error("ublk {cmd} for device {dev_id} failed: {source}")]
    Command {
        cmd: &'static str,
        dev_id: u32,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("invalid ublk configuration: {0}")]
    Config(String),
    #[error("ublk queue {q_id}: {msg}")]
    Queue { q_id: u16, msg: String },
}

/// Identify Controller's ONCS bits for the operations a discard and a
/// write-zeroes request become (NVMe base spec, Optional NVM Command
/// Support): Dataset Management and Write Zeroes.
pub const ONCS_DATASET_MANAGEMENT: u16 = 1 << 2;
pub const ONCS_WRITE_ZEROES: u16 = 1 << 3;

/// Size of the device: queues, tags per queue, largest request; and which
/// optional operations the device advertises.
#[derive(Debug, Clone)]
pub struct UblkOptions {
    pub queues: u16,
    pub queue_depth: u16,
    pub max_io_bytes: u32,
    /// Advertise discard (becomes Dataset Management deallocate).
    pub discard: bool,
    /// Advertise write-zeroes (becomes Write Zeroes).
    pub write_zeroes: bool,
}

impl Default for UblkOptions {
    fn default() -> Self {
        UblkOptions {
            queues: DEFAULT_QUEUES,
            queue_depth: DEFAULT_QUEUE_DEPTH,
            max_io_bytes: DEFAULT_MAX_IO_BYTES,
            discard: true,
            write_zeroes: true,
        }
    }
}

impl UblkOptions {
    /// Advertise discard and write-zeroes only if the controller's ONCS
    /// (Identify Controller) says it implements the commands they become:
    /// else every discard of mkfs or fstrim would be an I/O error.
    pub fn with_oncs(mut self, oncs: u16) -> UblkOptions {
        self.discard = oncs & ONCS_DATASET_MANAGEMENT != 0;
        self.write_zeroes = oncs & ONCS_WRITE_ZEROES != 0;
        self
    }

    /// Check the bounds; say which one is wrong.
    pub fn validate(&self) -> Result<(), UblkError> {
        if self.queues == 0 || self.queues > MAX_QUEUES {
            return Err(UblkError::Config(format!(
                "queues = {} (must be 1..={MAX_QUEUES})",
                self.queues
            )));
        }
        if self.queue_depth == 0 || self.queue_depth > MAX_QUEUE_DEPTH {
            return Err(UblkError::Config(format!(
                "queue depth = {} (must be 1..={MAX_QUEUE_DEPTH})",
                self.queue_depth
            )));
        }
        let page = queue::page_size() as u32;
        if self.max_io_bytes < page
            || self.max_io_bytes > MAX_IO_BYTES
            || !self.max_io_bytes.is_multiple_of(page)
        {
            return Err(UblkError::Config(format!(
                "max I/O size = {} bytes (must be a multiple of {page} in {page}..={MAX_IO_BYTES})",
                self.max_io_bytes
            )));
        }
        Ok(())
    }
}

/// The ublk parameters for a namespace of `size` bytes in blocks of
/// `block_size` bytes, with requests of at most `max_io_bytes`.
pub fn params_for(block_size: u32, size: u64, max_io_bytes: u32) -> Result<sys::Params, UblkError> {
    if !block_size.is_power_of_two() || !(512..=4096).contains(&block_size) {
        return Err(UblkError::Config(format!(
            "namespace block size {block_size} (ublk takes 512..=4096, a power of two)"
        )));
    }
    if size < u64::from(block_size) {
        return Err(UblkError::Config(format!(
            "namespace of {size} bytes is smaller than one block"
        )));
    }
    let shift = block_size.trailing_zeros() as u8;
    let sectors = size / io::SECTOR;
    Ok(sys::Params {
        len: (std::mem::offset_of!(sys::Params, discard) + size_of::<sys::ParamDiscard>()) as u32,
        types: sys::UBLK_PARAM_TYPE_BASIC | sys::UBLK_PARAM_TYPE_DISCARD,
        basic: sys::ParamBasic {
            attrs: sys::UBLK_ATTR_VOLATILE_CACHE,
            logical_bs_shift: shift,
            physical_bs_shift: shift,
            io_opt_shift: shift,
            io_min_shift: shift,
            max_sectors: max_io_bytes / io::SECTOR as u32,
            chunk_sectors: 0,
            // Whole blocks only: a partial last block is not addressable.
            dev_sectors: sectors - sectors % u64::from(block_size / io::SECTOR as u32),
            virt_boundary_mask: 0,
        },
        discard: sys::ParamDiscard {
            discard_alignment: 0,
            discard_granularity: block_size,
            max_discard_sectors: MAX_DISCARD_SECTORS,
            max_write_zeroes_sectors: MAX_DISCARD_SECTORS,
            max_discard_segments: 1,
            reserved0: 0,
        },
    })
}

/// Leave out what the controller does not implement: no discard sectors
/// without Dataset Management, no write-zeroes sectors without Write
/// Zeroes, and no discard parameters at all without both.
fn apply_offloads(params: &mut sys::Params, discard: bool, write_zeroes: bool) {
    if !discard {
        params.discard.max_discard_sectors = 0;
    }
    if !write_zeroes {
        params.discard.max_write_zeroes_sectors = 0;
    }
    if !discard && !write_zeroes {
        params.types &= !sys::UBLK_PARAM_TYPE_DISCARD;
        params.discard = sys::ParamDiscard::default();
    }
}

struct QueueHandle {
    q_id: u16,
    shared: Arc<QueueShared>,
    thread: Option<JoinHandle<Result<(), UblkError>>>,
}

impl QueueHandle {
    /// Wait for the queue thread; its error, or a panic as an error.
    fn join(&mut self) -> Option<UblkError> {
        let t = self.thread.take()?;
        match t.join() {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(UblkError::Queue {
                q_id: self.q_id,
                msg: "the queue thread panicked".into(),
            }),
        }
    }
}

/// A running `/dev/ublkbN` served from one namespace.
pub struct UblkDevice {
    ctrl: Control,
    dev_id: u32,
    cdev: Option<File>,
    queues: Vec<QueueHandle>,
    /// Buffers the kernel may touch: freed only after DEL_DEV.
    mems: Vec<Arc<QueueMem>>,
    started: bool,
    deleted: bool,
}

impl UblkDevice {
    /// Create and start a block device for `ns`. On any failure whatever
    /// was set up is torn down again.
    pub fn create(ns: Namespace, opts: &UblkOptions) -> Result<UblkDevice, UblkError> {
        opts.validate()?;
        let mut params = params_for(ns.block_size(), ns.size(), opts.max_io_bytes)?;
        apply_offloads(&mut params, opts.discard, opts.write_zeroes);
        let mut ctrl = Control::open()?;
        let mut info = sys::DevInfo {
            nr_hw_queues: opts.queues,
            queue_depth: opts.queue_depth,
            max_io_buf_bytes: opts.max_io_bytes,
            dev_id: u32::MAX,
            ublksrv_pid: std::process::id() as i32,
            flags: sys::UBLK_F_CMD_IOCTL_ENCODE,
            ..sys::DevInfo::default()
        };
        ctrl.add_dev(&mut info)?;
        let mut dev = UblkDevice {
            ctrl,
            dev_id: info.dev_id,
            cdev: None,
            queues: Vec::new(),
            mems: Vec::new(),
            started: false,
            deleted: false,
        };
        let span = tracing::info_span!("ublk_device", dev_id = dev.dev_id, nsid = ns.nsid());
        let _g = span.enter();
        // The kernel may have granted less than asked: fewer queues (at
        // most one per CPU) or a page-rounded buffer size.
        let granted = info.max_io_buf_bytes.min(opts.max_io_bytes);
        params.basic.max_sectors = granted / io::SECTOR as u32;
        match dev.bring_up(ns, &params, info.nr_hw_queues, info.queue_depth, granted) {
            Ok(()) => {
                tracing::info!(
                    path = %dev.path().display(),
                    queues = info.nr_hw_queues,
                    depth = info.queue_depth,
                    max_io_bytes = granted,
                    "ublk device started"
                );
                Ok(dev)
            }
            Err(e) => {
                if let Err(t) = dev.teardown() {
                    tracing::warn!(error = %t, "cleaning up after a failed start");
                }
                Err(e)
            }
        }
    }

    fn bring_up(
        &mut self,
        ns: Namespace,
        params: &sys::Params,
        queues: u16,
        depth: u16,
        buf_len: u32,
    ) -> Result<(), UblkError> {
        self.ctrl.set_params(self.dev_id, params)?;
        let cpath = PathBuf::from(format!("/dev/ublkc{}", self.dev_id));
        wait_for_node(&cpath)?;
        let cdev = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&cpath)
            .map_err(|source| UblkError::Io {
                what: format!("opening {}", cpath.display()),
                source,
            })?;
        let fd = cdev.as_raw_fd();
        self.cdev = Some(cdev);
        let (ready_tx, ready_rx) = mpsc::channel();
        for q_id in 0..queues {
            let mem = Arc::new(QueueMem::new(usize::from(depth), buf_len as usize)?);
            self.mems.push(mem.clone());
            let shared = Arc::new(QueueShared::new(mem)?);
            let cfg = QueueConfig {
                q_id,
                depth,
                cdev: fd,
                ns: ns.clone(),
                shared: shared.clone(),
            };
            let tx = ready_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("ublk-q{q_id}"))
                .spawn(move || queue::run(cfg, tx))
                .map_err(|source| UblkError::Io {
                    what: "spawning a queue thread".into(),
                    source,
                })?;
            self.queues.push(QueueHandle {
                q_id,
                shared,
                thread: Some(thread),
            });
        }
        drop(ready_tx);
        for _ in 0..queues {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(UblkError::Config(
                        "a queue thread ended during set-up".into(),
                    ))
                }
            }
        }
        self.ctrl
            .start_dev(self.dev_id, std::process::id() as i32)?;
        self.started = true;
        wait_for_node(&self.path())
    }

    pub fn dev_id(&self) -> u32 {
        self.dev_id
    }

    /// The block device, `/dev/ublkbN`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/dev/ublkb{}", self.dev_id))
    }

    /// Why the device stopped serving, if a queue ended without being
    /// asked to (an error, or the kernel aborting its requests): the disk
    /// is gone or going, so the owner should tear down and report it.
    pub fn failure(&self) -> Option<String> {
        self.queues.iter().find_map(|q| q.shared.failure())
    }

    /// Remove the block device and delete it. Blocks while requests are in
    /// flight (the kernel completes them first).
    pub fn stop(mut self) -> Result<(), UblkError> {
        self.teardown()
    }

    /// STOP_DEV (queues still serving, since removing the disk may flush),
    /// then end the queue threads, close the char device and DEL_DEV. Every
    /// step runs even if one before it failed. A queue's error comes first
    /// (it is why the device died; the control commands then often fail
    /// for that reason), else the first control error.
    fn teardown(&mut self) -> Result<(), UblkError> {
        if self.deleted {
            return Ok(());
        }
        self.deleted = true;
        let mut first: Option<UblkError> = None;
        if self.started {
            if let Err(e) = self.ctrl.stop_dev(self.dev_id) {
                first.get_or_insert(e);
            }
        }
        for q in &self.queues {
            q.shared.request_stop();
        }
        let mut queue_err: Option<UblkError> = None;
        for q in &mut self.queues {
            if let Some(e) = q.join() {
                tracing::warn!(error = %e, "queue ended with an error");
                queue_err.get_or_insert(e);
            }
        }
        if let Some(e) = queue_err {
            first = Some(e);
        }
        self.cdev = None;
        if let Err(e) = self.ctrl.del_dev(self.dev_id) {
            first.get_or_insert(e);
        }
        // DEL_DEV returned: the kernel holds none of the buffers any more.
        self.mems.clear();
        match first {
            Some(e) => Err(e),
            None => {
                tracing::info!(dev_id = self.dev_id, "ublk device removed");
                Ok(())
            }
        }
    }
}

impl Drop for UblkDevice {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::warn!(dev_id = self.dev_id, error = %e, "removing the ublk device");
        }
    }
}

/// devtmpfs adds nodes as the kernel registers devices; allow it a moment.
fn wait_for_node(path: &Path) -> Result<(), UblkError> {
    let deadline = Instant::now() + NODE_WAIT;
    while !path.exists() {
        if Instant::now() >= deadline {
            return Err(UblkError::Io {
                what: format!("waiting for {}", path.display()),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_bounded() {
        assert!(UblkOptions::default().validate().is_ok());
        let bad = |f: fn(&mut UblkOptions)| {
            let mut o = UblkOptions::default();
            f(&mut o);
            o.validate().unwrap_err().to_string()
        };
        assert!(bad(|o| o.queues = 0).contains("queues = 0"));
        assert!(bad(|o| o.queues = MAX_QUEUES + 1).contains("queues"));
        assert!(bad(|o| o.queue_depth = MAX_QUEUE_DEPTH + 1).contains("queue depth"));
        assert!(bad(|o| o.max_io_bytes = MAX_IO_BYTES * 2).contains("max I/O size"));
        assert!(bad(|o| o.max_io_bytes = 4097).contains("max I/O size"));
    }

    #[test]
    fn params_follow_the_namespace_geometry() {
        let p = params_for(4096, (1 << 30) + 512, 512 * 1024).unwrap();
        assert_eq!(p.len, 60);
        assert_eq!(p.basic.logical_bs_shift, 12);
        assert_eq!(p.basic.physical_bs_shift, 12);
        assert_eq!(p.basic.max_sectors, 1024);
        // The trailing partial block is cut off.
        assert_eq!(p.basic.dev_sectors, (1 << 30) / 512);
        assert_eq!(p.discard.discard_granularity, 4096);
        assert_eq!(p.discard.max_discard_segments, 1);
        assert_ne!(p.basic.attrs & sys::UBLK_ATTR_VOLATILE_CACHE, 0);
        let p = params_for(512, 1 << 20, 65536).unwrap();
        assert_eq!(p.basic.logical_bs_shift, 9);
        assert_eq!(p.basic.dev_sectors, 2048);
        assert!(params_for(8192, 1 << 20, 65536).is_err());
        assert!(params_for(1000, 1 << 20, 65536).is_err());
        assert!(params_for(4096, 100, 65536).is_err());
    }

    #[test]
    fn discard_and_write_zeroes_follow_the_controllers_oncs() {
        let o = UblkOptions::default().with_oncs(0xC);
        assert!(o.discard && o.write_zeroes);
        let o = UblkOptions::default().with_oncs(ONCS_WRITE_ZEROES);
        assert!(!o.discard && o.write_zeroes);
        let o = UblkOptions::default().with_oncs(0);
        assert!(!o.discard && !o.write_zeroes);

        let full = params_for(4096, 1 << 30, 512 * 1024).unwrap();
        let mut p = full;
        apply_offloads(&mut p, true, true);
        assert_eq!(p.discard.max_discard_sectors, MAX_DISCARD_SECTORS);
        assert_eq!(p.discard.max_write_zeroes_sectors, MAX_DISCARD_SECTORS);
        let mut p = full;
        apply_offloads(&mut p, false, true);
        assert_eq!(p.discard.max_discard_sectors, 0);
        assert_eq!(p.discard.max_write_zeroes_sectors, MAX_DISCARD_SECTORS);
        assert_ne!(p.types & sys::UBLK_PARAM_TYPE_DISCARD, 0);
        let mut p = full;
        apply_offloads(&mut p, false, false);
        assert_eq!(p.types & sys::UBLK_PARAM_TYPE_DISCARD, 0);
        assert_eq!(p.discard.max_write_zeroes_sectors, 0);
    }

    #[test]
    fn a_queue_error_or_panic_is_returned_by_join() {
        let shared = Arc::new(QueueShared::new(Arc::new(QueueMem::new(1, 4096).unwrap())).unwrap());
        let mut failed = QueueHandle {
            q_id: 3,
            shared: shared.clone(),
            thread: Some(std::thread::spawn(|| {
                Err(UblkError::Queue {
                    q_id: 3,
                    msg: "ring broke".into(),
                })
            })),
        };
        assert!(failed.join().unwrap().to_string().contains("ring broke"));
        assert!(failed.join().is_none(), "joined once");
        let mut panicked = QueueHandle {
            q_id: 4,
            shared,
            thread: Some(std::thread::spawn(|| panic!("boom"))),
        };
        assert!(panicked.join().unwrap().to_string().contains("panicked"));
    }

    #[test]
    fn add_dev_refusals_name_the_kernel_version() {
        for errno in [libc::EOPNOTSUPP, libc::EINVAL] {
            let e = ctrl::add_dev_error(UblkError::Command {
                cmd: "ADD_DEV",
                dev_id: u32::MAX,
                source: std::io::Error::from_raw_os_error(errno),
            });
            assert!(
                e.to_string().starts_with(
                    "the kernel's ublk is too old: ferrofab needs Linux 6.4 or newer (ioctl-encoded commands)"
                ),
                "{e}"
            );
        }
        // Other failures stay as they are.
        let e = ctrl::add_dev_error(UblkError::Command {
            cmd: "ADD_DEV",
            dev_id: u32::MAX,
            source: std::io::Error::from_raw_os_error(libc::EPERM),
        });
        assert!(matches!(e, UblkError::Command { .. }), "{e}");
    }

    #[test]
    fn a_missing_control_device_names_the_module() {
        if Path::new(ctrl::CONTROL_PATH).exists() {
            return; // a kernel with ublk: nothing to check here
        }
        let e = Control::open().err().expect("no control device");
        let msg = e.to_string();
        assert!(
            msg.contains("ublk is not available: load ublk_drv, Linux 6.4 or newer"),
            "{msg}"
        );
    }
}
