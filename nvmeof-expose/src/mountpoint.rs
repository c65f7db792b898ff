//! Preparing the mount point, including recovery from a process that died
//! while mounted: the kernel keeps such a FUSE mount around, and every
//! access to it fails with ENOTCONN until somebody unmounts it.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::ExposeError;

/// Create `dir` if needed and clear a dead FUSE mount left on it.
///
/// Refuses a directory with a live mount on it: another process is still
/// serving it, and stealing its mount point would hide its volumes.
pub fn prepare(dir: &Path) -> Result<PathBuf, ExposeError> {
    let dir = absolute(dir)?;
    match std::fs::metadata(&dir) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            tracing::warn!(mountpoint = %dir.display(), "clearing stale FUSE mount");
            lazy_unmount(&dir)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(ExposeError::MountPoint(dir, e)),
        Ok(m) if !m.is_dir() => {
            return Err(ExposeError::MountPoint(
                dir,
                io::Error::from_raw_os_error(libc::ENOTDIR),
            ))
        }
        Ok(_) if is_mount_point(&dir) => return Err(ExposeError::AlreadyMounted(dir)),
        Ok(_) => {}
    }
    std::fs::create_dir_all(&dir).map_err(|e| ExposeError::MountPoint(dir.clone(), e))?;
    Ok(dir)
}

fn absolute(dir: &Path) -> Result<PathBuf, ExposeError> {
    if dir.is_absolute() {
        return Ok(dir.to_path_buf());
    }
    let cwd = std::env::current_dir().map_err(|e| ExposeError::MountPoint(dir.to_path_buf(), e))?;
    Ok(cwd.join(dir))
}

/// Detach the mount at `dir`: `fusermount3 -uz` (works unprivileged), and
/// `umount2(MNT_DETACH)` if fusermount3 is missing or refuses.
pub fn lazy_unmount(dir: &Path) -> Result<(), ExposeError> {
    let fusermount = Command::new("fusermount3").arg("-uz").arg(dir).output();
    match fusermount {
        Ok(out) if out.status.success() => return Ok(()),
        Ok(out) => tracing::debug!(
            stderr = %String::from_utf8_lossy(&out.stderr).trim(),
            "fusermount3 -uz failed; trying umount2"
        ),
        Err(e) => tracing::debug!(error = %e, "fusermount3 not runnable; trying umount2"),
    }
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|_| {
        ExposeError::MountPoint(dir.to_path_buf(), io::ErrorKind::InvalidInput.into())
    })?;
    // SAFETY: a valid NUL-terminated path; umount2 does not retain it.
    let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    if rc != 0 {
        return Err(ExposeError::StaleUnmount(
            dir.to_path_buf(),
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// The kernel's cap on pages per FUSE request, for every mount (Linux
/// 6.13 and later; older kernels have a fixed 256).
const MAX_PAGES_LIMIT: &str = "/proc/sys/fs/fuse/max_pages_limit";

/// Raise the sysctl `fs.fuse.max_pages_limit` so that a request of `max_write` bytes from a
/// buffer that does not start on a page (one page more) fits in one FUSE
/// request. Only ever raises; failures (not root, an older kernel) are
/// logged and leave requests cut at the old limit, which costs speed on
/// unaligned buffers, not correctness.
pub fn raise_max_pages_limit(max_write: u32) {
    // SAFETY: sysconf has no preconditions.
    let page = u32::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .ok()
        .filter(|&p| p > 0)
        .unwrap_or(4096);
    let want = max_write.div_ceil(page).saturating_add(1);
    let current = match std::fs::read_to_string(MAX_PAGES_LIMIT) {
        Ok(s) => s.trim().parse::<u32>().unwrap_or(0),
        Err(e) => {
            tracing::debug!(error = %e, "no {MAX_PAGES_LIMIT}: the kernel's cap is fixed");
            return;
        }
    };
    if current >= want {
        return;
    }
    match std::fs::write(MAX_PAGES_LIMIT, want.to_string()) {
        Ok(()) => tracing::info!(from = current, to = want, "raised fs.fuse.max_pages_limit"),
        // Info, not a warning: without root (a `ferrofab dev` run by a
        // user) this is expected, and it costs speed, never correctness.
        Err(e) => tracing::info!(
            current, want, error = %e,
            "could not raise fs.fuse.max_pages_limit: large I/O from unaligned buffers is split"
        ),
    }
}

/// Whether `dir` is the mount point of some mount in this namespace.
pub fn is_mount_point(dir: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = dir.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| unescape_mountinfo(mp) == want)
}

/// mountinfo escapes space, tab, newline and backslash as octal `\NNN`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape_mountinfo(r"/run/a\040b"), "/run/a b");
        assert_eq!(unescape_mountinfo(r"/x\134y"), r"/x\y");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/trailing\04"), r"/trailing\04");
    }

    #[test]
    fn prepare_creates_missing_dir_and_rejects_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = tmp.path().join("a/b");
        assert_eq!(prepare(&d).expect("create"), d);
        assert!(d.is_dir());
        let f = tmp.path().join("file");
        std::fs::write(&f, b"x").expect("write");
        assert!(matches!(prepare(&f), Err(ExposeError::MountPoint(..))));
    }

    #[test]
    fn root_is_a_mount_point() {
        assert!(is_mount_point(Path::new("/")));
    }
}
