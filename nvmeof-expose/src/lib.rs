//! Local exposure of connected namespaces as regular files, through FUSE.
//!
//! The development and CI kernels have no NBD, ublk or NVMe host driver,
//! but FUSE works; a file that `losetup` can attach gives every local tool
//! (mkfs, mount, dd, fio) access to a remote namespace.
//!
//! [`Exposer::mount`] mounts one flat directory (e.g. `/run/ferrofab/volumes`)
//! with one file per volume; volumes are added, removed and resized while
//! mounted. Design choices, and why:
//!
//! * **Direct I/O, no page cache** (`FOPEN_DIRECT_IO`): data is never served
//!   stale from this host's cache after another host wrote the namespace.
//! * **Read-modify-write under per-block range locks** ([`rmw`]): files
//!   take any offset and length; namespaces take whole blocks.
//! * **fsync flushes the namespace** and replies only after the Flush
//!   completed; close answers at once without a Flush (a close must not
//!   hang for a reconnect window; see `fs::VolumeFs::flush`).
//! * **Bounded in flight** ([`ExposeOptions::max_in_flight_bytes`],
//!   [`ExposeOptions::max_in_flight_requests`]) and **one FUSE thread kept
//!   for requests that never block** ([`admit`]).
//! * **4 MiB max_write** ([`DEFAULT_MAX_WRITE`]) and **several FUSE threads** (fuser `n_threads`
//!   with cloned /dev/fuse descriptors) so large and concurrent I/O reach
//!   the initiator in parallel; **asynchronous direct I/O**
//!   (`FUSE_ASYNC_DIO`, [`ExposeOptions::max_background`]) so one
//!   process's `io_submit`/io_uring queue depth reaches them too.
//! * **Mounting** uses fuser's pure-Rust path: as root it calls mount(2)
//!   directly; otherwise it runs `fusermount3` (Debian package `fuse3`).
//!   No libfuse headers or library are needed to build.
//! * **Stale mounts** left by a process that died are lazily unmounted at
//!   start ([`mountpoint::prepare`]).
//!
//! # Layout
//!
//! * here — [`Exposer`]: the mount and the volumes added, resized and
//!   removed while mounted; [`validate_name`] for file names.
//! * [`fs`] — the FUSE filesystem (one flat directory, one file per
//!   volume) over [`DynBlockIo`] devices.
//! * [`rmw`] — byte-granular reads and writes on whole blocks, under range
//!   locks.
//! * [`connected`] — the files of one connected controller, following its
//!   namespace events (`ferrofab-nvmeof connect`).
//! * [`mountpoint`] — preparing the mount point, stale-mount recovery.
//!
//! The devices come from the initiator (`ferrofab-nvmeof-host`); this
//! crate is the only one in the workspace that links FUSE.

pub mod admit;
pub mod connected;
pub mod fs;
pub mod mountpoint;
pub mod replies;
pub mod rmw;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use fuser::{BackgroundSession, Config, MountOption, Notifier, SessionACL};
use thiserror::Error;

use ferrofab_nvmeof_host::{DynBlockIo, Namespace};
use fs::{Registry, VolumeFs};

/// Errors of the FUSE exposure.
#[derive(Debug, Error)]
pub enum ExposeError {
    #[error("mount point {0}: {1}")]
    MountPoint(PathBuf, #[source] std::io::Error),
    #[error("{0} is already a mount point (is another ferrofab process serving it?)")]
    AlreadyMounted(PathBuf),
    #[error("could not clear the stale mount at {0}: {1}")]
    StaleUnmount(PathBuf, #[source] std::io::Error),
    #[error("mounting FUSE at {0} failed (is /dev/fuse present, and fuse3 installed for non-root?): {1}")]
    Mount(PathBuf, #[source] std::io::Error),
    #[error("unmounting {0} failed: {1}")]
    Unmount(PathBuf, #[source] std::io::Error),
    #[error("invalid volume name {0:?}")]
    InvalidName(String),
    #[error("volume {0:?} already exists")]
    Exists(String),
    #[error("no volume named {0:?}")]
    NotFound(String),
    #[error("{0} exists and is not a link of ours (choose another --name)")]
    NameTaken(PathBuf),
    #[error("link {0}: {1}")]
    Link(PathBuf, #[source] std::io::Error),
}

/// Mount settings.
#[derive(Debug, Clone)]
pub struct ExposeOptions {
    /// FUSE worker threads. Reads and writes of whole blocks of an
    /// initiator namespace are answered asynchronously ([`replies`]), so a
    /// thread only reads a request and submits it; other requests (byte
    /// ranges, other devices, fsync) and waits for a range lock, the
    /// in-flight limit or a queue slot block their thread, on at most
    /// all threads but one ([`admit::Reserve`]). Default
    /// [`DEFAULT_THREADS`].
    pub threads: usize,
    /// Largest write the kernel sends in one request (and, through the
    /// kernel's max_pages, the largest read). Default [`DEFAULT_MAX_WRITE`].
    pub max_write: u32,
    /// Asynchronous requests (direct I/O from libaio or io_uring) the
    /// kernel keeps in flight to this mount; more wait in the kernel.
    /// Default [`DEFAULT_MAX_BACKGROUND`].
    pub max_background: u16,
    /// Raise the kernel's `fs.fuse.max_pages_limit` (a cap on every FUSE
    /// mount's pages per request, 256 by default) to what `max_write` needs
    /// plus one page, when it is lower and we may write it (root). Never
    /// lowers it. Without it the kernel cuts requests at 1 MiB of pages,
    /// whatever `max_write` says (see [`DEFAULT_MAX_WRITE`]).
    pub raise_max_pages_limit: bool,
    /// Let users other than the mounting one open the files.
    pub allow_other: bool,
    /// Bytes of asynchronous reads and writes in flight to initiator
    /// namespaces at once, over the whole mount; a FUSE thread with a
    /// request that does not fit waits ([`admit::Budget`]). A request
    /// larger than this goes alone. Default [`DEFAULT_MAX_IN_FLIGHT_BYTES`].
    pub max_in_flight_bytes: usize,
    /// Such requests in flight at once. Default
    /// [`DEFAULT_MAX_IN_FLIGHT_REQUESTS`].
    pub max_in_flight_requests: usize,
}

/// Default [`ExposeOptions::max_in_flight_bytes`]: 64 MiB. Every write in
/// flight holds a copy of its data (up to `max_write`, 4 MiB) until it
/// completed, and during a reconnect the initiator keeps every command
/// until it can re-send it; 64 MiB is sixteen 4 MiB writes, or a 4 KiB
/// QD256, well above what the benchmarks keep in flight (QD32).
pub const DEFAULT_MAX_IN_FLIGHT_BYTES: usize = 64 << 20;

/// Default [`ExposeOptions::max_in_flight_requests`]: 256, four times the
/// kernel's [`DEFAULT_MAX_BACKGROUND`] asynchronous requests, so it only
/// bites when many threads each add synchronous ones.
pub const DEFAULT_MAX_IN_FLIGHT_REQUESTS: usize = 256;

/// Default FUSE worker threads. With asynchronous replies a thread only
/// reads a request and submits it, so a few keep a 4 KiB QD32 random reader
/// busy; more threads cost CPU (each request woke a sleeping thread: 16
/// threads spent 11.6-12.3 µs of holder CPU per 4 KiB read against
/// 10.6-11.0 with 4, and served 54-62 MB/s against 71-101; one thread
/// 12.3-12.5 µs, and it would serialise the requests that still block, an
/// fsync or an unaligned write; docs/benchmarks.md, "Issue 20 item 3:
/// asynchronous replies"). An idle thread costs a stack and, once it
/// served a byte-granular read, its read buffer.
pub const DEFAULT_THREADS: usize = 4;

/// Default [`ExposeOptions::max_write`]: 4 MiB, well above the 1 MiB
/// blocks a writer typically uses. The kernel cuts a direct I/O into
/// requests of at most max_pages pages of the *caller's buffer*, and
/// max_pages follows max_write. A 1 MiB buffer from malloc starts 16 bytes
/// into a page and spans 257 pages: with a 1 MiB max_write (256 pages)
/// every such write arrived as 1 MiB - 16 bytes plus 16 bytes, two
/// unaligned requests that each cost a read-modify-write round trip to the
/// target (the microscope benchmark measured 0.21 GB/s through the file
/// against 0.8 GB/s through the initiator). With 1024 pages, writes and
/// reads of up to 4 MiB - 4 KiB from any buffer come as one request.
/// Costs nothing until used: fuser's request buffer is 16 MiB per thread
/// whatever this is, and only the pages a request fills are touched.
pub const DEFAULT_MAX_WRITE: u32 = 4 << 20;

/// Default [`ExposeOptions::max_background`]: above the threads, so the
/// kernel's queue never starves them (fuser's own default is 16).
pub const DEFAULT_MAX_BACKGROUND: u16 = 64;

impl Default for ExposeOptions {
    fn default() -> Self {
        Self {
            threads: DEFAULT_THREADS,
            max_write: DEFAULT_MAX_WRITE,
            max_background: DEFAULT_MAX_BACKGROUND,
            raise_max_pages_limit: true,
            allow_other: false,
            max_in_flight_bytes: DEFAULT_MAX_IN_FLIGHT_BYTES,
            max_in_flight_requests: DEFAULT_MAX_IN_FLIGHT_REQUESTS,
        }
    }
}

/// A mounted volume directory. Dropping it unmounts. Volume management
/// ([`Volumes`]) is reachable through `Deref`, and [`Exposer::volumes`]
/// hands out a clone for other threads (e.g. a namespace-change watcher).
pub struct Exposer {
    volumes: Volumes,
    session: Option<BackgroundSession>,
    /// Open file handles of the mount (see [`RELEASE_GRACE`]).
    open_files: Arc<AtomicUsize>,
    /// The mount's in-flight budget, for [`Exposer::in_flight`].
    budget: Arc<admit::Budget>,
}

/// How long an unmount waits for open files to be released. The kernel
/// sends RELEASE after `close(2)` has returned, so a file closed just
/// before an unmount can still count as open and make it fail with EBUSY
/// (and fall back to a lazy detach); a file really in use (a loop device)
/// costs this much extra before that fallback.
const RELEASE_GRACE: Duration = Duration::from_secs(1);

/// Adds, removes and resizes the files of a mounted directory. Cheap to
/// clone; every clone acts on the same mount. After unmount, changes still
/// succeed but are invisible.
#[derive(Clone)]
pub struct Volumes {
    mountpoint: PathBuf,
    registry: Arc<RwLock<Registry>>,
    notifier: Notifier,
}

impl std::ops::Deref for Exposer {
    type Target = Volumes;

    fn deref(&self) -> &Volumes {
        &self.volumes
    }
}

impl Exposer {
    /// Mount an empty volume directory at `dir` (created if missing, a
    /// stale mount from a dead process cleared first).
    pub fn mount(dir: &Path, opts: &ExposeOptions) -> Result<Self, ExposeError> {
        let mountpoint = mountpoint::prepare(dir)?;
        if opts.raise_max_pages_limit {
            // Before mounting: the kernel applies the cap at INIT.
            mountpoint::raise_max_pages_limit(opts.max_write);
        }
        let registry = Arc::new(RwLock::new(Registry::new()));
        let open_files = Arc::new(AtomicUsize::new(0));
        let budget = admit::Budget::new(opts.max_in_flight_bytes, opts.max_in_flight_requests);
        let limits = fs::Limits {
            max_write: opts.max_write,
            max_background: opts.max_background,
            threads: opts.threads.max(1),
            budget: Arc::clone(&budget),
        };
        let fs = VolumeFs::new(Arc::clone(&registry), limits, Arc::clone(&open_files));
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("ferrofab".into()),
            MountOption::Subtype("ferrofab".into()),
            MountOption::NoDev,
            MountOption::NoSuid,
            MountOption::NoExec,
        ];
        config.acl = if opts.allow_other {
            SessionACL::All
        } else {
            SessionACL::Owner
        };
        config.n_threads = Some(opts.threads.max(1));
        config.clone_fd = true;
        let session = fuser::spawn_mount(fs, &mountpoint, &config)
            .map_err(|e| ExposeError::Mount(mountpoint.clone(), e))?;
        tracing::info!(mountpoint = %mountpoint.display(), threads = opts.threads, "volumes mounted");
        Ok(Self {
            volumes: Volumes {
                notifier: session.notifier(),
                mountpoint,
                registry,
            },
            session: Some(session),
            open_files,
            budget,
        })
    }

    /// Bytes and requests in flight now, and the most seen at once (for
    /// logs and tests of [`ExposeOptions::max_in_flight_bytes`]).
    pub fn in_flight(&self) -> admit::Spent {
        self.budget.spent()
    }

    /// A handle for managing volumes from other threads.
    pub fn volumes(&self) -> Volumes {
        self.volumes.clone()
    }

    /// Unmount and wait for the FUSE threads. If a file is still in use
    /// (e.g. attached to a loop device) the mount is detached lazily
    /// instead, the threads keep serving until the last user closes it,
    /// and `Unmount` is returned with EBUSY.
    pub fn unmount(mut self) -> Result<(), ExposeError> {
        self.unmount_inner()
    }

    /// Gives releases still in flight up to [`RELEASE_GRACE`] to arrive.
    fn wait_for_releases(&self) {
        let deadline = std::time::Instant::now() + RELEASE_GRACE;
        while self.open_files.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn unmount_inner(&mut self) -> Result<(), ExposeError> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let mp = &self.volumes.mountpoint;
        self.wait_for_releases();
        match session.umount_and_join() {
            Ok(()) => {
                tracing::info!(mountpoint = %mp.display(), "volumes unmounted");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(mountpoint = %mp.display(), error = %e,
                    "unmount failed; detaching lazily");
                let _ = mountpoint::lazy_unmount(mp);
                Err(ExposeError::Unmount(mp.clone(), e))
            }
        }
    }
}

impl Volumes {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Path of the file for volume `name`.
    pub fn path_of(&self, name: &str) -> PathBuf {
        self.mountpoint.join(name)
    }

    /// Expose `dev` as file `name`; returns its path.
    pub fn add(&self, name: &str, dev: Arc<DynBlockIo>) -> Result<PathBuf, ExposeError> {
        self.add_device(name, dev, None)
    }

    /// Expose an initiator namespace as file `name`; returns its path. The
    /// same as [`Volumes::add`] with the namespace as the device, except
    /// that whole-block reads hand the initiator's buffer to the kernel
    /// without copying it first (what the holder of a namespace should use).
    pub fn add_namespace(&self, name: &str, ns: Namespace) -> Result<PathBuf, ExposeError> {
        let dev: Arc<DynBlockIo> = Arc::new(ns.clone());
        self.add_device(name, dev, Some(ns))
    }

    /// [`Volumes::add_namespace`] with `dev` as the file's device (size,
    /// block size, whether it is read-only: e.g. a read-only wrapper of
    /// `ns`) while whole-block reads still go to `ns` asynchronously.
    pub fn add_namespace_as(
        &self,
        name: &str,
        dev: Arc<DynBlockIo>,
        ns: Namespace,
    ) -> Result<PathBuf, ExposeError> {
        self.add_device(name, dev, Some(ns))
    }

    fn add_device(
        &self,
        name: &str,
        dev: Arc<DynBlockIo>,
        ns: Option<Namespace>,
    ) -> Result<PathBuf, ExposeError> {
        validate_name(name)?;
        let ino = self
            .registry
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert_with(name, dev, ns)
            .ok_or_else(|| ExposeError::Exists(name.to_string()))?;
        tracing::info!(volume = name, ino = ino.0, "volume exposed");
        Ok(self.path_of(name))
    }

    /// Remove file `name`. Descriptors already open keep working on the
    /// device until closed, as with an unlinked file.
    pub fn remove(&self, name: &str) -> Result<(), ExposeError> {
        self.registry
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
            .ok_or_else(|| ExposeError::NotFound(name.to_string()))?;
        // Drop the kernel's cached name now rather than after the TTL.
        if let Err(e) = self
            .notifier
            .inval_entry(fuser::INodeNo::ROOT, name.as_ref())
        {
            tracing::debug!(volume = name, error = %e, "inval_entry");
        }
        tracing::info!(volume = name, "volume removed");
        Ok(())
    }

    /// Re-read the size of volume `name` after a namespace rescan and make
    /// the kernel drop its cached attributes; returns the new size.
    pub fn refresh_size(&self, name: &str) -> Result<u64, ExposeError> {
        let vol = self
            .registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_name(name)
            .ok_or_else(|| ExposeError::NotFound(name.to_string()))?;
        let size = vol.dev.size();
        if let Err(e) = self.notifier.inval_inode(vol.ino, 0, 0) {
            // ENOENT: the kernel has not looked the file up; nothing cached.
            tracing::debug!(volume = name, error = %e, "inval_inode");
        }
        tracing::info!(volume = name, size, "volume size refreshed");
        Ok(size)
    }

    /// Names of the exposed volumes.
    pub fn names(&self) -> Vec<String> {
        let reg = self.registry.read().unwrap_or_else(|p| p.into_inner());
        reg.names()
    }
}

impl Drop for Exposer {
    fn drop(&mut self) {
        let _ = self.unmount_inner();
    }
}

/// Longest name accepted by [`validate_name`], in bytes (Linux NAME_MAX).
pub const MAX_NAME_BYTES: usize = 255;

/// Why `name` is not a single safe path component, or `None` if it is:
/// non-empty, at most [`MAX_NAME_BYTES`], not `.` or `..`, no `/`, no NUL
/// and no control characters (which would also mislead logs and shells).
///
/// The one check for every name that becomes a file name: the FUSE
/// exposure here, and the node agent's built-in and kernel drivers, which
/// join names from the controller's desired state to a directory.
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_NAME_BYTES {
        Some("it is longer than 255 bytes")
    } else if name == "." || name == ".." {
        Some("it is `.` or `..`")
    } else if name.contains('/') {
        Some("it contains `/`")
    } else if name.chars().any(char::is_control) {
        Some("it contains NUL or control characters")
    } else {
        None
    }
}

/// A volume name must be a single path component a shell can handle
/// (see [`name_problem`]).
pub fn validate_name(name: &str) -> Result<(), ExposeError> {
    match name_problem(name) {
        None => Ok(()),
        Some(_) => Err(ExposeError::InvalidName(name.to_string())),
    }
}

#[cfg(test)]
mod tests;
