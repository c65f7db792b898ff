//! The host's identity: its NQN and 16-byte host ID.
//!
//! Both travel in every Connect, and a target's allow-list is keyed on the
//! NQN, so they must stay the same across runs and reboots. Like nvme-cli we
//! keep them in `/etc/nvme/hostnqn` and `/etc/nvme/hostid`; a missing file
//! is created once, a present one is never rewritten (an administrator may
//! have registered it with targets already).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use uuid::Uuid;

use super::HostError;
use ferrofab_nvmeof_wire::spec::validate_nqn;

/// Default location of the host NQN file, shared with nvme-cli.
pub const DEFAULT_HOSTNQN_PATH: &str = "/etc/nvme/hostnqn";
/// Default location of the host ID file, shared with nvme-cli.
pub const DEFAULT_HOSTID_PATH: &str = "/etc/nvme/hostid";

/// Prefix of NQNs in the UUID format.
const UUID_NQN_PREFIX: &str = "nqn.2014-08.org.nvmexpress:uuid:";

/// Who this host is, as sent in Connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostIdentity {
    pub hostnqn: String,
    pub hostid: Uuid,
}

impl HostIdentity {
    /// Build an identity from explicit values (nothing is persisted).
    pub fn new(hostnqn: &str, hostid: Uuid) -> Result<HostIdentity, HostError> {
        validate_nqn(hostnqn)
            .map_err(|why| HostError::InvalidArgument(format!("host NQN: {why}")))?;
        Ok(HostIdentity {
            hostnqn: hostnqn.to_string(),
            hostid,
        })
    }

    /// A fresh random identity in the UUID NQN format. Used by tests and by
    /// callers that do not want to touch the file system.
    pub fn ephemeral() -> HostIdentity {
        let id = Uuid::new_v4();
        HostIdentity {
            hostnqn: format!("{UUID_NQN_PREFIX}{id}"),
            hostid: id,
        }
    }

    /// Load the identity from the default files, creating them if missing.
    pub fn load_or_create_default() -> Result<HostIdentity, HostError> {
        HostIdentity::load_or_create(
            Path::new(DEFAULT_HOSTNQN_PATH),
            Path::new(DEFAULT_HOSTID_PATH),
        )
    }

    /// Load the identity from `nqn_path` and `id_path`, creating whichever
    /// is missing. A new host ID reuses the UUID of a UUID-format NQN so
    /// that the two agree, as nvme-cli does.
    pub fn load_or_create(nqn_path: &Path, id_path: &Path) -> Result<HostIdentity, HostError> {
        let existing_nqn = read_trimmed(nqn_path)?;
        let existing_id = read_trimmed(id_path)?;
        let hostid = match &existing_id {
            Some(s) => Uuid::parse_str(s).map_err(|e| HostError::Identity {
                what: "invalid host ID (expected a UUID) in",
                path: id_path.display().to_string(),
                source: Arc::new(io::Error::new(io::ErrorKind::InvalidData, e)),
            })?,
            None => existing_nqn
                .as_deref()
                .and_then(|n| n.strip_prefix(UUID_NQN_PREFIX))
                .and_then(|u| Uuid::parse_str(u).ok())
                .unwrap_or_else(Uuid::new_v4),
        };
        let hostnqn = match existing_nqn {
            Some(n) => n,
            None => {
                let n = format!("{UUID_NQN_PREFIX}{hostid}");
                create_new(nqn_path, &n)?;
                tracing::info!(path = %nqn_path.display(), hostnqn = %n, "generated host NQN");
                n
            }
        };
        if existing_id.is_none() {
            create_new(id_path, &hostid.to_string())?;
            tracing::info!(path = %id_path.display(), %hostid, "generated host ID");
        }
        validate_nqn(&hostnqn).map_err(|why| HostError::Identity {
            what: "invalid host NQN in",
            path: nqn_path.display().to_string(),
            source: Arc::new(io::Error::new(io::ErrorKind::InvalidData, why)),
        })?;
        Ok(HostIdentity { hostnqn, hostid })
    }
}

fn read_trimmed(path: &Path) -> Result<Option<String>, HostError> {
    match fs::read_to_string(path) {
        Ok(s) => {
            let t = s.trim();
            Ok((!t.is_empty()).then(|| t.to_string()))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(HostError::Identity {
            what: "cannot read",
            path: path.display().to_string(),
            source: Arc::new(e),
        }),
    }
}

/// Write `contents` to a file that must not exist yet. `create_new` makes a
/// concurrent creator lose cleanly instead of overwriting; the loser then
/// uses what the winner wrote.
fn create_new(path: &Path, contents: &str) -> Result<(), HostError> {
    let err = |what, e| HostError::Identity {
        what,
        path: path.display().to_string(),
        source: Arc::new(e),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| err("cannot create the directory of", e))?;
    }
    let tmp: PathBuf = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = fs::File::create(&tmp).map_err(|e| err("cannot create", e))?;
    f.write_all(format!("{contents}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| err("cannot write", e))?;
    // hard_link fails if the target exists, which is the no-overwrite rule.
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(err("cannot create", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let nqn = dir.path().join("nvme/hostnqn");
        let id = dir.path().join("nvme/hostid");
        let a = HostIdentity::load_or_create(&nqn, &id).unwrap();
        assert!(a.hostnqn.starts_with(UUID_NQN_PREFIX));
        assert!(a.hostnqn.ends_with(&a.hostid.to_string()));
        let b = HostIdentity::load_or_create(&nqn, &id).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn keeps_existing_nqn_and_derives_id() {
        let dir = tempfile::tempdir().unwrap();
        let nqn = dir.path().join("hostnqn");
        let id = dir.path().join("hostid");
        fs::write(&nqn, "nqn.2026-11.io.ferrofab:host-a\n").unwrap();
        let a = HostIdentity::load_or_create(&nqn, &id).unwrap();
        assert_eq!(a.hostnqn, "nqn.2026-11.io.ferrofab:host-a");
        assert_eq!(
            fs::read_to_string(&nqn).unwrap(),
            "nqn.2026-11.io.ferrofab:host-a\n"
        );
        assert_eq!(
            fs::read_to_string(&id).unwrap().trim(),
            a.hostid.to_string()
        );
    }

    #[test]
    fn rejects_garbage_host_id() {
        let dir = tempfile::tempdir().unwrap();
        let nqn = dir.path().join("hostnqn");
        let id = dir.path().join("hostid");
        fs::write(&id, "not-a-uuid").unwrap();
        let e = HostIdentity::load_or_create(&nqn, &id).unwrap_err();
        assert!(e.to_string().contains("invalid host ID"), "{e}");
    }
}
