//! The `kernel` data path: Linux nvmet through configfs (target) and the
//! nvme-fabrics host through `/dev/nvme-fabrics` and sysfs (workstation).
//!
//! Everything is done with plain file operations on the kernel's own
//! interfaces (no nvmetcli or nvme-cli), and every status is read back
//! from configfs and sysfs. The roots of those trees are injectable
//! ([`KernelPaths`]) so the logic runs against a temporary directory in
//! unit tests; the real kernel paths are the defaults.

pub mod auth;
pub mod configfs;
pub mod fabrics;
pub mod host;
pub mod ownership;
pub mod sysfs;

use std::io;
use std::path::{Path, PathBuf};

use crate::config::KernelConfig;

/// The kernel interfaces the driver uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelPaths {
    /// configfs mount point (`/sys/kernel/config`).
    pub configfs: PathBuf,
    /// sysfs mount point (`/sys`).
    pub sysfs: PathBuf,
    /// devtmpfs (`/dev`), for `nvme-fabrics` and the block devices.
    pub dev: PathBuf,
    /// Plain directories stand in for configfs (unit tests): removing an
    /// item must then also remove the attribute files the test wrote,
    /// which configfs does by itself.
    pub emulated: bool,
}

impl KernelPaths {
    pub fn from_config(k: &KernelConfig) -> Self {
        KernelPaths {
            configfs: k.configfs.clone(),
            sysfs: k.sysfs.clone(),
            dev: k.dev.clone(),
            emulated: false,
        }
    }

    /// `<configfs>/nvmet`.
    pub fn nvmet(&self) -> PathBuf {
        self.configfs.join("nvmet")
    }

    /// `/sys/module/NAME` exists while the module is loaded (or built in
    /// with parameters).
    pub fn module_loaded(&self, module: &str) -> bool {
        self.sysfs
            .join("module")
            .join(module.replace('-', "_"))
            .exists()
    }

    /// Writes one configfs/sysfs attribute in a single `write()` (the
    /// kernel parses each write on its own). Real attributes already
    /// exist and must not be created or truncated.
    pub fn write_attr(&self, path: &Path, value: &str) -> io::Result<()> {
        use std::io::Write;
        if self.emulated {
            return std::fs::write(path, format!("{value}\n"));
        }
        let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.write_all(format!("{value}\n").as_bytes())
    }

    /// Writes a secret attribute exactly as given, in one `write()` and
    /// without a newline (nvmet keeps the bytes it is given and shows them
    /// back, and the host's `dhchap_secret` compares them with what it
    /// has). Errors name the path only, never the value.
    pub fn write_secret(&self, path: &Path, value: &str) -> io::Result<()> {
        use std::io::Write;
        let mut f = if self.emulated {
            std::fs::File::create(path)?
        } else {
            std::fs::OpenOptions::new().write(true).open(path)?
        };
        f.write_all(value.as_bytes())
    }

    /// Makes an attribute that shows a secret readable by root only.
    /// Linux creates nvmet's `dhchap_key`/`dhchap_ctrl_key` (configfs) and a
    /// controller's `dhchap_secret`/`dhchap_ctrl_secret` (sysfs) with mode
    /// 0644 and shows the secret on read; both filesystems keep a mode set
    /// with chmod for the life of the object. Absent attributes are skipped.
    pub fn restrict(&self, path: &Path) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let m = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if m.permissions().mode() & 0o077 == 0 {
            return Ok(());
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
    }

    /// Removes a configfs item (`rmdir`; configfs drops its attributes).
    pub fn remove_item(&self, path: &Path) -> io::Result<()> {
        let r = if self.emulated {
            std::fs::remove_dir_all(path)
        } else {
            std::fs::remove_dir(path)
        };
        match r {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Why nvmet cannot be driven, naming the module or mount to fix.
    pub fn target_unavailable(&self) -> Option<String> {
        if self.nvmet().is_dir() {
            return None;
        }
        if !self.configfs.is_dir() || is_empty_dir(&self.configfs) {
            return Some(format!(
                "configfs is not mounted at {} (kernel module configfs; mount -t configfs none {})",
                self.configfs.display(),
                self.configfs.display()
            ));
        }
        Some(format!(
            "kernel module nvmet is not loaded ({} missing; modprobe nvmet)",
            self.nvmet().display()
        ))
    }

    /// Why the nvme-fabrics host cannot be driven.
    pub fn host_unavailable(&self) -> Option<String> {
        let dev = self.dev.join("nvme-fabrics");
        if dev.exists() {
            return None;
        }
        Some(format!(
            "kernel module nvme-fabrics is not loaded ({} missing; modprobe nvme-fabrics)",
            dev.display()
        ))
    }
}

/// The kernel module that carries `transport` on the target side.
pub fn target_module(transport: &str) -> String {
    format!("nvmet-{transport}")
}

/// The kernel module that carries `transport` on the host side.
pub fn host_module(transport: &str) -> String {
    format!("nvme-{transport}")
}

fn is_empty_dir(p: &Path) -> bool {
    std::fs::read_dir(p).map_or(true, |mut d| d.next().is_none())
}

/// Reads an attribute, trimmed; `None` if it cannot be read.
pub fn read_attr(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Names of the entries of a directory (none if it cannot be read).
pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// An error message with the path and operation.
pub fn io_msg(what: &str, path: &Path, e: &io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Paths under a temporary root, as in the real layout.
    pub fn paths(root: &Path) -> KernelPaths {
        let p = KernelPaths {
            configfs: root.join("sys/kernel/config"),
            sysfs: root.join("sys"),
            dev: root.join("dev"),
            emulated: true,
        };
        for d in [
            p.nvmet().join("subsystems"),
            p.nvmet().join("ports"),
            p.nvmet().join("hosts"),
            p.sysfs.join("module/nvmet_tcp"),
            p.sysfs.join("class/nvme"),
            p.sysfs.join("class/block"),
            p.dev.clone(),
        ] {
            std::fs::create_dir_all(d).unwrap();
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_configfs_and_modules_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = KernelPaths {
            configfs: dir.path().join("config"),
            sysfs: dir.path().join("sys"),
            dev: dir.path().join("dev"),
            emulated: true,
        };
        let m = p.target_unavailable().unwrap();
        assert!(m.contains("configfs is not mounted"), "{m}");
        std::fs::create_dir_all(p.configfs.join("pci_ep")).unwrap();
        let m = p.target_unavailable().unwrap();
        assert!(m.contains("module nvmet "), "{m}");
        std::fs::create_dir_all(p.nvmet()).unwrap();
        assert_eq!(p.target_unavailable(), None);
        let m = p.host_unavailable().unwrap();
        assert!(m.contains("nvme-fabrics"), "{m}");
        assert!(!p.module_loaded("nvmet-tcp"));
        std::fs::create_dir_all(p.sysfs.join("module/nvmet_tcp")).unwrap();
        assert!(p.module_loaded("nvmet-tcp"));
    }
}
