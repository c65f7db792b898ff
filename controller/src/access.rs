//! Access modes of attachments and the fence of a move.
//!
//! A volume formatted with an ordinary filesystem (ext4, xfs) is destroyed
//! by two nodes writing it at once, so the controller refuses any
//! combination of attachments that could lead there (the matrix is in
//! resources.proto, `AccessMode`), and the storage node enforces the
//! read-only half on the wire. Attachments on the same node never conflict
//! with each other: one machine, one page cache.
//!
//! An attachment that is being deleted still counts as a holder: its
//! workstation may still be flushing until it reports the disconnect, and
//! only then is its host revoked.

use ferrofab_proto::v1::{AccessMode, Attachment, Node};

use crate::cache::Objects;
use crate::identity::Identity;
use crate::resource::Object;

/// UNSPECIFIED and unknown values mean READ_WRITE: the safe reading.
pub fn mode_of(a: &Attachment) -> AccessMode {
    match a
        .spec
        .as_ref()
        .map(|s| AccessMode::try_from(s.mode).unwrap_or(AccessMode::ReadWrite))
    {
        Some(AccessMode::ReadOnly) => AccessMode::ReadOnly,
        Some(AccessMode::ReadWriteMany) => AccessMode::ReadWriteMany,
        _ => AccessMode::ReadWrite,
    }
}

/// Whether attachments in modes `a` and `b` may coexist on two different
/// nodes.
pub fn compatible(a: AccessMode, b: AccessMode) -> bool {
    !matches!(a, AccessMode::ReadWrite) && !matches!(b, AccessMode::ReadWrite)
}

/// Human wording of a mode, as messages and the CLI show it.
pub fn mode_words(m: AccessMode) -> &'static str {
    match m {
        AccessMode::ReadOnly => "read-only",
        AccessMode::ReadWriteMany => "read-write-many",
        _ => "read-write",
    }
}

/// The node holding `a` (its spec.node).
fn node_of(a: &Attachment) -> &str {
    a.spec.as_ref().map_or("", |s| s.node.as_str())
}

/// The first attachment of `volume` on another node than `node` whose mode
/// is incompatible with `mode`, ignoring the attachment named `except` (the
/// one being updated).
pub fn conflict<'a>(
    objs: &'a Objects,
    volume: &str,
    node: &str,
    mode: AccessMode,
    except: &str,
) -> Option<&'a Attachment> {
    objs.attachments_of(volume)
        .filter(|a| a.name() != except)
        .filter(|a| node_of(a) != node)
        .find(|a| !compatible(mode, mode_of(a)))
}

/// The refusal for a conflicting request. Administrators and the volume's
/// tenant (who owns every attachment of its volumes) learn the holder; a
/// node acting for a local user learns only that there is one, since the
/// holder is another machine's business.
pub fn conflict_message(
    id: &Identity,
    volume: &str,
    wanted_node: &str,
    holder: &Attachment,
) -> String {
    let mode = mode_words(mode_of(holder));
    let deleting = holder
        .metadata
        .as_ref()
        .is_some_and(|m| m.deletion_timestamp.is_some());
    if matches!(id, Identity::Node(_)) {
        return format!(
            "volume {volume:?} is attached {mode} to another node; it must be detached there first"
        );
    }
    let node = node_of(holder);
    let name = holder.name();
    if deleting {
        return format!(
            "volume {volume:?} is still attached {mode} to node {node:?} (attachment {name:?} is being detached); wait until it is gone"
        );
    }
    format!(
        "volume {volume:?} is attached {mode} to node {node:?} (attachment {name:?}); detach it first or run: ferrofab volume move {volume} --to {wanted_node}"
    )
}

/// Whether attachment `a`, moved to another node, needs the fence: only
/// READ_WRITE ones do (readers and clustered writers may overlap).
pub fn fenced_mode(a: &Attachment) -> bool {
    mode_of(a) == AccessMode::ReadWrite
}

/// The host NQN of node `name`, when known.
pub fn host_of<'a>(objs: &'a Objects, name: &str) -> Option<&'a str> {
    objs.nodes
        .get(name)
        .and_then(|n: &Node| n.spec.as_ref())
        .map(|s| s.host_nqn.as_str())
        .filter(|h| !h.is_empty())
}

/// Whether a storage node's report proves that the previous holder of a
/// moved attachment is fenced: the report was made against a desired state
/// at least as new as the write that released the host (so that desired
/// state no longer lets it in), and the target neither allows nor has
/// connected `old_host`. A fence revision of 0 (not recorded yet) proves
/// nothing.
pub fn fence_done(
    desired_revision: u64,
    fence_revision: u64,
    old_host: Option<&str>,
    allowed: &[String],
    connected: &[String],
) -> bool {
    if fence_revision == 0 || desired_revision < fence_revision {
        return false;
    }
    old_host.is_none_or(|h| !allowed.iter().chain(connected).any(|x| x == h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix() {
        use AccessMode::*;
        assert!(!compatible(ReadWrite, ReadWrite));
        assert!(!compatible(ReadWrite, ReadOnly));
        assert!(!compatible(ReadOnly, ReadWrite));
        assert!(!compatible(ReadWriteMany, ReadWrite));
        assert!(compatible(ReadOnly, ReadOnly));
        assert!(compatible(ReadOnly, ReadWriteMany));
        assert!(compatible(ReadWriteMany, ReadWriteMany));
    }

    #[test]
    fn fence_needs_a_fresh_report_without_the_host() {
        let h = "nqn.host:ws2".to_string();
        // Stale report (desired state older than the move): not proof.
        assert!(!fence_done(4, 5, Some(&h), &[], &[]));
        // Not recorded yet.
        assert!(!fence_done(9, 0, Some(&h), &[], &[]));
        // Fresh, but the host is still allowed or still connected.
        assert!(!fence_done(5, 5, Some(&h), std::slice::from_ref(&h), &[]));
        assert!(!fence_done(6, 5, Some(&h), &[], std::slice::from_ref(&h)));
        // Fresh and gone.
        assert!(fence_done(5, 5, Some(&h), &["nqn.host:ws1".into()], &[]));
    }
}
