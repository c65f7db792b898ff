//! Typed views of the stored objects, for the rules that decide on them.
//!
//! The prost messages say everything optionally and sizes as text
//! (`spec.capacity = "4TiB"`); a rule written against them spends most of
//! its lines on `Option` chains and parsing, and a parse error can surface
//! from deep inside a decision. So each rule gets the facts it needs as a
//! plain struct, converted once at its edge: `placement`
//! takes [`PoolView`]s and a [`TenantQuota`] built by the volume operations,
//! `planner` reads each volume and attachment through
//! [`VolumeFacts`] and [`AttachmentFacts`]. The conversions keep the error
//! messages users saw when the rules parsed the strings themselves.
//!
//! The planner's views borrow from the cache (it runs for every volume of a
//! node on every snapshot, so copying strings would cost); placement's
//! views own the little they hold, because placement runs once per create or grow.

use std::collections::HashMap;

use ferrofab_proto::v1::{
    AccessMode, Attachment, AttachmentPhase, BackingKind, Pool, ReclaimPolicy, Tenant, Volume,
};
use ferrofab_types::Bytes;

use crate::access;
use crate::cache::Objects;
use crate::error::ApiError;
use crate::resource::{parse_size, Selector};

/// Namespaces a pool serves when its spec sets no limit.
pub const DEFAULT_NAMESPACE_LIMIT: u32 = 256;

/// What bounds a pool's placements: the parsed `spec.capacity`, the
/// overcommit ratio and the namespace limit, defaults applied. Exists so
/// placement, the pool status and the cluster metrics compute the same
/// effective capacity from one parse.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolLimits {
    pub capacity: Bytes,
    /// Greater than zero (an unset ratio reads as 1).
    pub overcommit: f64,
    pub namespace_limit: u32,
}

impl PoolLimits {
    /// Effective (overcommitted) capacity: `capacity × overcommit`.
    pub fn effective(&self) -> Bytes {
        Bytes((self.capacity.0 as f64 * self.overcommit) as u64)
    }
}

impl TryFrom<&Pool> for PoolLimits {
    type Error = ApiError;

    fn try_from(pool: &Pool) -> Result<Self, ApiError> {
        let spec = pool.spec.clone().unwrap_or_default();
        Ok(Self {
            capacity: Bytes(parse_size("spec.capacity", &spec.capacity)?),
            overcommit: if spec.overcommit_ratio > 0.0 {
                spec.overcommit_ratio
            } else {
                1.0
            },
            namespace_limit: match spec.namespace_limit {
                0 => DEFAULT_NAMESPACE_LIMIT,
                n => n,
            },
        })
    }
}

/// A pool as placement weighs it. Exists so placement decides on facts
/// (is it usable, what are its limits) and never reads a message or parses
/// a size; the node's readiness is looked up here, once per pool.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolView {
    pub name: String,
    /// The storage node (a name; empty in a pool that names none).
    pub node: String,
    /// None when the stored pool has no metadata (only an empty selector
    /// selects it, as before).
    pub labels: Option<HashMap<String, String>>,
    pub deleting: bool,
    /// `reason: message` of the node's Ready=False condition.
    pub node_not_ready: Option<String>,
    /// The limits, or why the stored spec does not give any (a pool with
    /// an unparsable capacity stays a candidate that refuses with the
    /// parse error, so an administrator's refusal names it).
    pub limits: Result<PoolLimits, String>,
}

impl PoolView {
    /// Views `pool`, looking its node's readiness up in `objs`.
    pub fn of(objs: &Objects, pool: &Pool) -> Self {
        let meta = pool.metadata.as_ref();
        let node = pool.spec.as_ref().map_or("", |s| s.node.as_str());
        Self {
            name: meta.map_or(String::new(), |m| m.name.clone()),
            node: node.to_string(),
            labels: meta.map(|m| m.labels.clone()),
            deleting: meta.is_some_and(|m| m.deletion_timestamp.is_some()),
            node_not_ready: objs.nodes.get(node).and_then(crate::heartbeat::not_ready),
            limits: PoolLimits::try_from(pool).map_err(|e| e.to_string()),
        }
    }

    /// Every pool of the cache, in name order.
    pub fn all(objs: &Objects) -> Vec<Self> {
        objs.pools.values().map(|p| Self::of(objs, p)).collect()
    }

    /// Whether `selector` selects this pool.
    pub fn selected_by(&self, selector: &Selector) -> bool {
        match &self.labels {
            Some(labels) => selector.matches(labels),
            None => selector.matches_meta(None),
        }
    }
}

/// A tenant's quotas, parsed. Exists so placement checks numbers; the
/// quota string is parsed here with the message a bad one always gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantQuota {
    pub name: String,
    /// Most volumes the tenant may own; 0 for no limit.
    pub volume_quota: u32,
    /// Most bytes the tenant's volumes may hold; None for no limit.
    pub capacity_quota: Option<Bytes>,
}

impl TenantQuota {
    /// The quotas of tenant `name`, refused as today when it is unknown.
    pub fn of(objs: &Objects, name: &str) -> Result<Self, ApiError> {
        let tenant = objs.tenants.get(name).ok_or_else(|| {
            ApiError::invalid("spec.tenant", format!("tenant {name:?} does not exist"))
        })?;
        Self::try_from(tenant)
    }
}

impl TryFrom<&Tenant> for TenantQuota {
    type Error = ApiError;

    fn try_from(tenant: &Tenant) -> Result<Self, ApiError> {
        let spec = tenant.spec.clone().unwrap_or_default();
        let capacity_quota = match spec.capacity_quota.as_str() {
            "" => None,
            q => Some(Bytes(parse_size("spec.capacity_quota", q)?)),
        };
        Ok(Self {
            name: tenant
                .metadata
                .as_ref()
                .map_or(String::new(), |m| m.name.clone()),
            volume_quota: spec.volume_quota,
            capacity_quota,
        })
    }
}

/// A volume as the planner's rules read it: identity, placement and the
/// export's readiness, empty where the volume has no status yet. Exists so
/// the rules (export, removal, connection) share one reading of a volume
/// instead of each unwrapping the message its own way.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct VolumeFacts<'a> {
    pub name: &'a str,
    pub uid: &'a str,
    pub generation: u64,
    pub deleting: bool,
    /// 0 when the spec sets none.
    pub block_size: u32,
    pub expires_at: Option<prost_types::Timestamp>,
    /// The storage node it is placed on.
    pub node: &'a str,
    pub pool: &'a str,
    pub subsystem_nqn: &'a str,
    pub backing_path: &'a str,
    pub size: Bytes,
    pub uuid: &'a str,
    pub nguid: &'a str,
    pub serial: &'a str,
    /// The storage node reported the export served.
    pub export_ready: bool,
}

impl<'a> From<&'a Volume> for VolumeFacts<'a> {
    fn from(v: &'a Volume) -> Self {
        let mut f = Self::default();
        if let Some(m) = v.metadata.as_ref() {
            f.name = &m.name;
            f.uid = &m.uid;
            f.generation = m.generation;
            f.deleting = m.deletion_timestamp.is_some();
        }
        if let Some(s) = v.spec.as_ref() {
            f.block_size = s.block_size;
            f.expires_at = s.expires_at;
        }
        if let Some(st) = v.status.as_ref() {
            f.node = &st.node;
            f.pool = &st.pool;
            f.subsystem_nqn = &st.subsystem_nqn;
            f.backing_path = &st.backing_path;
            f.size = Bytes(st.size_bytes);
            f.uuid = &st.uuid;
            f.nguid = &st.nguid;
            f.serial = &st.serial;
            f.export_ready = st.export_ready;
        }
        f
    }
}

/// What a volume's pool says about its export and removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolFacts {
    /// As the wire carries it (`BackingKind`): an unknown kind goes to
    /// the agent unchanged, for it to refuse.
    pub backing_kind: i32,
    /// `reclaim_policy: RETAIN`: a deleted volume keeps its data.
    pub retain: bool,
}

impl From<Option<&Pool>> for PoolFacts {
    fn from(pool: Option<&Pool>) -> Self {
        let spec = pool.and_then(|p| p.spec.as_ref());
        Self {
            backing_kind: spec
                .and_then(|s| s.backing.as_ref())
                .map_or(BackingKind::Directory as i32, |b| b.kind),
            retain: spec.is_some_and(|s| s.reclaim_policy == ReclaimPolicy::Retain as i32),
        }
    }
}

/// The fence of a move: the workstation the attachment left, and whether
/// its host is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence<'a> {
    pub from_node: &'a str,
    pub released: bool,
}

/// An attachment as the planner's rules read it. Exists so the ordering
/// rules of the planner (detaching, fenced, read-only) test named facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachmentFacts<'a> {
    /// None when the stored attachment has no metadata (it then gets no
    /// connection, as before).
    pub name: Option<&'a str>,
    pub volume: &'a str,
    pub node: &'a str,
    pub mode: AccessMode,
    pub deleting: bool,
    /// Set while `status.moved_from_node` is.
    pub fence: Option<Fence<'a>>,
    /// `status.admitted_host`: the host the storage node reported allowed.
    pub admitted_host: &'a str,
    /// The workstation reported the attachment connected (phase Attached).
    pub attached: bool,
}

impl<'a> AttachmentFacts<'a> {
    /// The facts of `a`; None for an attachment without a spec, which the
    /// planner has always skipped.
    pub fn of(a: &'a Attachment) -> Option<Self> {
        let spec = a.spec.as_ref()?;
        let meta = a.metadata.as_ref();
        Some(Self {
            name: meta.map(|m| m.name.as_str()),
            volume: spec.volume.as_str(),
            node: spec.node.as_str(),
            mode: access::mode_of(a),
            deleting: meta.is_some_and(|m| m.deletion_timestamp.is_some()),
            fence: a
                .status
                .as_ref()
                .filter(|s| !s.moved_from_node.is_empty())
                .map(|s| Fence {
                    from_node: s.moved_from_node.as_str(),
                    released: s.moved_from_released,
                }),
            admitted_host: a.status.as_ref().map_or("", |s| s.admitted_host.as_str()),
            attached: a
                .status
                .as_ref()
                .is_some_and(|s| s.phase == AttachmentPhase::Attached as i32),
        })
    }

    /// The nodes whose host the export must allow for this attachment: its
    /// node, and the node it moved from until that one is released.
    pub fn holders(&self) -> impl Iterator<Item = &'a str> {
        let previous = self.fence.filter(|f| !f.released).map(|f| f.from_node);
        std::iter::once(self.node).chain(previous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrofab_proto::v1::{AttachmentSpec, AttachmentStatus, ObjectMeta, PoolSpec, TenantSpec};

    fn pool(capacity: &str, overcommit: f64, namespaces: u32) -> Pool {
        Pool {
            metadata: Some(ObjectMeta {
                name: "p".into(),
                ..Default::default()
            }),
            spec: Some(PoolSpec {
                capacity: capacity.into(),
                overcommit_ratio: overcommit,
                namespace_limit: namespaces,
                ..Default::default()
            }),
            status: None,
        }
    }

    fn tenant(quota: &str) -> Tenant {
        Tenant {
            metadata: Some(ObjectMeta {
                name: "t".into(),
                ..Default::default()
            }),
            spec: Some(TenantSpec {
                capacity_quota: quota.into(),
                volume_quota: 3,
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn pool_limits_apply_the_defaults_and_the_overcommit() {
        let l = PoolLimits::try_from(&pool("10GiB", 0.0, 0)).expect("limits");
        assert_eq!(l.capacity, Bytes(10 << 30));
        assert_eq!((l.overcommit, l.namespace_limit), (1.0, 256));
        assert_eq!(l.effective(), Bytes(10 << 30));
        let l = PoolLimits::try_from(&pool("10GiB", 1.5, 8)).expect("limits");
        assert_eq!((l.effective(), l.namespace_limit), (Bytes(15 << 30), 8));
    }

    /// A bad size reads as it did when placement parsed it: the field, the
    /// text and what is wrong with it.
    #[test]
    fn bad_sizes_give_the_message_users_saw() {
        let e = PoolLimits::try_from(&pool("ten gigs", 0.0, 0)).expect_err("bad");
        assert_eq!(
            e.to_string(),
            crate::resource::parse_size("spec.capacity", "ten gigs")
                .expect_err("bad")
                .to_string()
        );
        assert!(e.to_string().contains("spec.capacity"), "{e}");
        assert!(e.to_string().contains("\"ten gigs\""), "{e}");
        let e = TenantQuota::try_from(&tenant("0")).expect_err("zero");
        assert!(e.to_string().contains("spec.capacity_quota"), "{e}");
        assert!(e.to_string().contains("greater than zero"), "{e}");
        let view = PoolView::of(&Objects::default(), &pool("ten gigs", 0.0, 0));
        assert_eq!(view.limits, Err(e_text("spec.capacity", "ten gigs")));
    }

    fn e_text(field: &str, s: &str) -> String {
        crate::resource::parse_size(field, s)
            .expect_err("bad")
            .to_string()
    }

    #[test]
    fn tenant_quotas_parse_once_and_an_unknown_tenant_is_refused() {
        let q = TenantQuota::try_from(&tenant("20GiB")).expect("quota");
        assert_eq!(
            q,
            TenantQuota {
                name: "t".into(),
                volume_quota: 3,
                capacity_quota: Some(Bytes(20 << 30)),
            }
        );
        let q = TenantQuota::try_from(&tenant("")).expect("no quota");
        assert_eq!(q.capacity_quota, None);
        let e = TenantQuota::of(&Objects::default(), "zz").expect_err("unknown");
        assert!(
            e.to_string().contains("tenant \"zz\" does not exist"),
            "{e}"
        );
    }

    #[test]
    fn an_attachment_holds_its_node_and_an_unreleased_previous_one() {
        let mut a = Attachment {
            metadata: None,
            spec: Some(AttachmentSpec {
                volume: "v".into(),
                node: "w1".into(),
                ..Default::default()
            }),
            status: Some(AttachmentStatus {
                moved_from_node: "w2".into(),
                ..Default::default()
            }),
        };
        let f = AttachmentFacts::of(&a).expect("facts");
        assert_eq!((f.name, f.mode), (None, AccessMode::ReadWrite));
        assert_eq!(f.holders().collect::<Vec<_>>(), ["w1", "w2"]);
        a.status.as_mut().expect("status").moved_from_released = true;
        let f = AttachmentFacts::of(&a).expect("facts");
        assert!(f.fence.is_some(), "still fenced until cleared");
        assert_eq!(f.holders().collect::<Vec<_>>(), ["w1"]);
        a.spec = None;
        assert!(AttachmentFacts::of(&a).is_none());
    }

    #[test]
    fn a_volume_without_status_reads_as_unplaced() {
        let v = Volume::default();
        let f = VolumeFacts::from(&v);
        assert_eq!((f.name, f.size, f.block_size), ("", Bytes(0), 0));
        assert!(!f.export_ready && !f.deleting);
    }
}
