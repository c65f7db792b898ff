//! Authorization by certificate identity.
//!
//! * `admin`: everything.
//! * `tenant:NAME`: that tenant's volumes and attachments (read and write),
//!   and reading its own Tenant object.
//! * `node:NAME`: its own desired state and status, reading its own Node,
//!   and requesting/releasing attachments for itself.
//!
//! Every denial names the identity and the action, so that a refused
//! operator can tell which certificate to use instead. Objects an identity
//! may not read are answered as missing (NOT_FOUND, the same message as for
//! a name that does not exist), so a denial never reveals that another
//! tenant's object exists or who owns it.

use ferrofab_proto::v1::{Attachment, Node, Pool, Tenant, Volume};

use crate::action::Action;
use crate::cache::Objects;
use crate::error::ApiError;
use crate::identity::Identity;
use crate::resource::{kind_name, Object, Resource};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Read,
    Write,
}

/// Who an object belongs to, for authorization.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Owners {
    pub tenant: Option<String>,
    pub node: Option<String>,
    /// Tenants may write objects of this kind they own (volumes,
    /// attachments) but only read others (their Tenant).
    pub tenant_writable: bool,
    /// Nodes may write objects of this kind they own (attachments).
    pub node_writable: bool,
}

pub trait Owned: Resource {
    fn owners(&self, objs: &Objects) -> Owners;
}

impl Owned for Volume {
    fn owners(&self, _: &Objects) -> Owners {
        Owners {
            tenant: self.spec.as_ref().map(|s| s.tenant.clone()),
            tenant_writable: true,
            ..Default::default()
        }
    }
}

impl Owned for Attachment {
    fn owners(&self, objs: &Objects) -> Owners {
        let spec = self.spec.clone().unwrap_or_default();
        Owners {
            tenant: objs
                .volumes
                .get(&spec.volume)
                .and_then(|v| v.spec.as_ref())
                .map(|s| s.tenant.clone()),
            node: Some(spec.node),
            tenant_writable: true,
            node_writable: true,
        }
    }
}

impl Owned for Tenant {
    fn owners(&self, _: &Objects) -> Owners {
        Owners {
            tenant: Some(self.name().to_string()),
            ..Default::default()
        }
    }
}

impl Owned for Node {
    fn owners(&self, _: &Objects) -> Owners {
        Owners {
            node: Some(self.name().to_string()),
            ..Default::default()
        }
    }
}

impl Owned for Pool {
    fn owners(&self, _: &Objects) -> Owners {
        Owners::default()
    }
}

/// Whether `id` may apply `verb` to an object with these owners.
pub fn allowed(id: &Identity, verb: Verb, owners: &Owners) -> bool {
    match id {
        Identity::Admin => true,
        Identity::Tenant(t) => {
            owners.tenant.as_deref() == Some(t.as_str())
                && (verb == Verb::Read || owners.tenant_writable)
        }
        Identity::Node(n) => {
            owners.node.as_deref() == Some(n.as_str())
                && (verb == Verb::Read || owners.node_writable)
        }
    }
}

/// Checks `action` (e.g. [`Action::DeleteVolume`]) on the stored object `obj`.
///
/// An object the caller may not even read is reported exactly as a
/// missing one ([`hidden`]): PERMISSION_DENIED with the owner's name told a
/// tenant that another tenant's object exists and whom it belongs to. Only
/// an object the caller can read but not change gets PERMISSION_DENIED,
/// and its reason names no other owner.
pub fn check<R: Owned>(
    id: &Identity,
    action: Action,
    verb: Verb,
    obj: &R,
    objs: &Objects,
) -> Result<(), ApiError> {
    let owners = obj.owners(objs);
    if allowed(id, verb, &owners) {
        return Ok(());
    }
    if !allowed(id, Verb::Read, &owners) {
        return Err(hidden(R::KIND, obj.name()));
    }
    Err(deny(
        id,
        &format!("{action} {} {:?}", kind_name(R::KIND), obj.name()),
        "not permitted for this identity",
    ))
}

/// Checks `action` on an object the caller asks to create. The object is
/// the caller's own input, so the refusal may say what ownership it needs,
/// but names no other owner.
pub fn check_new<R: Owned>(
    id: &Identity,
    action: Action,
    obj: &R,
    objs: &Objects,
) -> Result<(), ApiError> {
    if allowed(id, Verb::Write, &obj.owners(objs)) {
        return Ok(());
    }
    let reason = match id {
        Identity::Admin => "not permitted for this identity".to_string(),
        Identity::Tenant(t) => format!("a tenant may only create objects of its own tenant {t}"),
        Identity::Node(n) => format!("a node may only create attachments for itself ({n})"),
    };
    Err(deny(
        id,
        &format!("{action} {} {:?}", kind_name(R::KIND), obj.name()),
        &reason,
    ))
}

/// The refusal for an object the caller may not read: the very error a
/// missing object gives, so the two cannot be told apart.
pub fn hidden(kind: ferrofab_proto::v1::Kind, name: &str) -> ApiError {
    ApiError::not_found(kind_name(kind), name)
}

/// Actions only administrators may perform.
pub fn admin_only(id: &Identity, action: Action) -> Result<(), ApiError> {
    if *id == Identity::Admin {
        Ok(())
    } else {
        Err(deny(id, action.as_str(), "only admin may"))
    }
}

pub fn deny(id: &Identity, action: &str, reason: &str) -> ApiError {
    ApiError::Denied {
        identity: id.to_string(),
        action: action.to_string(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrofab_proto::v1::{ObjectMeta, VolumeSpec};

    fn vol(tenant: &str) -> Volume {
        Volume {
            metadata: Some(ObjectMeta {
                name: "v".into(),
                ..Default::default()
            }),
            spec: Some(VolumeSpec {
                tenant: tenant.into(),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn tenants_touch_only_their_volumes() {
        let o = Objects::default();
        let me = Identity::Tenant("a".into());
        assert!(check(&me, Action::DeleteVolume, Verb::Write, &vol("a"), &o).is_ok());
        let e = check(&me, Action::DeleteVolume, Verb::Write, &vol("b"), &o).expect_err("hidden");
        assert!(matches!(e, ApiError::NotFound { .. }), "{e}");
        assert_eq!(e.to_string(), hidden(Volume::KIND, "v").to_string());
        assert!(!e.to_string().contains('b'), "names no owner: {e}");
        let e = check_new(&me, Action::CreateVolume, &vol("b"), &o).expect_err("denied");
        let msg = e.to_string();
        assert!(
            msg.contains("tenant:a") && msg.contains("CreateVolume"),
            "{msg}"
        );
        let node = Identity::Node("n".into());
        assert!(check(&node, Action::GetVolume, Verb::Read, &vol("a"), &o).is_err());
        assert!(check(
            &Identity::Admin,
            Action::UpdateVolume,
            Verb::Write,
            &vol("b"),
            &o
        )
        .is_ok());
    }
}
