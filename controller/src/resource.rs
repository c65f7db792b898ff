//! What the controller needs to know about each kind, in one place: its key
//! prefix, its metadata, how its spec is compared (generation bumps, Apply
//! diffs) and how it is validated.

use std::collections::BTreeMap;

use ferrofab_proto::v1::{
    self, watch_event, Attachment, Kind, Node, ObjectMeta, Pool, Tenant, Volume,
};

use crate::error::ApiError;
pub use ferrofab_proto::object::Object;

/// Finalizer held by a volume until its storage node reports the export gone.
pub const FINALIZER_EXPORT: &str = "ferrofab.io/export";
/// Finalizer held by an attachment until its workstation reports it
/// disconnected.
pub const FINALIZER_DETACH: &str = "ferrofab.io/detach";
/// NVMe/TCP's IANA port, used when an address has none.
pub const DEFAULT_PORT: u32 = 4420;

/// Store key of an object.
pub fn key(kind: Kind, name: &str) -> String {
    format!("{}{}", prefix(kind), name)
}

/// Key prefix of a kind; the store lists and watches by it.
pub fn prefix(kind: Kind) -> &'static str {
    match kind {
        Kind::Node => "nodes/",
        Kind::Pool => "pools/",
        Kind::Volume => "volumes/",
        Kind::Attachment => "attachments/",
        Kind::Tenant => "tenants/",
        Kind::Unspecified => "unspecified/",
    }
}

/// Lower-case kind name used in messages ("volume scratch not found").
pub fn kind_name(kind: Kind) -> &'static str {
    kind.noun()
}

/// Behaviour shared by the five kinds so CRUD, watch and Apply are written
/// once; what an object is (kind, metadata, conditions) is
/// [`Object`], shared with the CLI.
pub trait Resource: Object {
    /// Spec fields rendered as `path → value`; equality of these maps is
    /// what "the spec changed" means, and their difference is Apply's diff.
    fn spec_fields(&self) -> BTreeMap<String, String>;
    /// Drops the status (clients never write it through AdminService).
    fn clear_status(&mut self);
    /// Moves the status of `old` into `self` (updates keep the status).
    fn keep_status(&mut self, old: &Self);
    fn into_event_object(self) -> watch_event::Object;
}

/// Spec plus labels and annotations: everything an administrator owns.
pub fn owned_fields<R: Resource>(r: &R) -> BTreeMap<String, String> {
    let mut f = r.spec_fields();
    if let Some(m) = r.meta() {
        for (k, v) in &m.labels {
            f.insert(format!("metadata.labels.{k}"), v.clone());
        }
        for (k, v) in &m.annotations {
            f.insert(format!("metadata.annotations.{k}"), v.clone());
        }
    }
    f
}

fn put(f: &mut BTreeMap<String, String>, k: &str, v: impl ToString) {
    let v = v.to_string();
    if !v.is_empty() && v != "0" && v != "false" {
        f.insert(k.to_string(), v);
    }
}

fn selector_string(s: Option<&v1::LabelSelector>) -> String {
    s.map(|s| {
        s.match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    })
    .unwrap_or_default()
}

/// An enum value as the layout files spell it (`BACKING_KIND_BLOCK_DEVICE`
/// → `block-device`), so Apply diffs read like the input that caused them
/// instead of wire numbers. Values this build does not know stay visible as
/// `unknown(N)` rather than being hidden.
fn enum_name(proto_name: Option<&str>, prefix: &str, raw: i32) -> String {
    match proto_name {
        Some(n) => n
            .strip_prefix(prefix)
            .unwrap_or(n)
            .to_ascii_lowercase()
            .replace('_', "-"),
        None => format!("unknown({raw})"),
    }
}

fn backing_name(raw: i32) -> String {
    let n = v1::BackingKind::try_from(raw).ok().map(|k| k.as_str_name());
    enum_name(n, "BACKING_KIND_", raw)
}

/// UNSPECIFIED means DELETE (see resources.proto), so both render alike and
/// switching between them is not a change.
fn reclaim_name(raw: i32) -> String {
    let p = match v1::ReclaimPolicy::try_from(raw) {
        Ok(v1::ReclaimPolicy::Unspecified) => Ok(v1::ReclaimPolicy::Delete),
        other => other,
    };
    enum_name(p.ok().map(|p| p.as_str_name()), "RECLAIM_POLICY_", raw)
}

/// UNSPECIFIED means READ_WRITE (see resources.proto).
fn mode_name(raw: i32) -> String {
    let m = match v1::AccessMode::try_from(raw) {
        Ok(v1::AccessMode::Unspecified) => Ok(v1::AccessMode::ReadWrite),
        other => other,
    };
    enum_name(m.ok().map(|m| m.as_str_name()), "ACCESS_MODE_", raw)
}

/// `ADDR:PORT`, with `/TRANSPORT` only when it is not the default TCP; a
/// port of 0 means NVMe/TCP's 4420 (as the planner treats it).
fn address_string(a: &v1::DataAddress) -> String {
    let port = if a.port == 0 { DEFAULT_PORT } else { a.port };
    let host = if a.address.contains(':') {
        format!("[{}]", a.address)
    } else {
        a.address.clone()
    };
    match a.transport.as_str() {
        "" | "tcp" => format!("{host}:{port}"),
        t => format!("{host}:{port}/{t}"),
    }
}

fn ts_string(t: Option<&prost_types::Timestamp>) -> String {
    t.map(|t| crate::clock::rfc3339(t.seconds))
        .unwrap_or_default()
}

macro_rules! resource_impl {
    ($ty:ty, $variant:ident) => {
        impl Resource for $ty {
            fn spec_fields(&self) -> BTreeMap<String, String> {
                spec_fields_of(self)
            }
            fn clear_status(&mut self) {
                self.status = None;
            }
            fn keep_status(&mut self, old: &Self) {
                self.status = old.status.clone();
            }
            fn into_event_object(self) -> watch_event::Object {
                watch_event::Object::$variant(self)
            }
        }
    };
}

resource_impl!(Node, Node);
resource_impl!(Pool, Pool);
resource_impl!(Volume, Volume);
resource_impl!(Attachment, Attachment);
resource_impl!(Tenant, Tenant);

trait SpecFields {
    fn fields(&self) -> BTreeMap<String, String>;
}

fn spec_fields_of<T: SpecFields>(t: &T) -> BTreeMap<String, String> {
    t.fields()
}

impl SpecFields for Node {
    fn fields(&self) -> BTreeMap<String, String> {
        let mut f = BTreeMap::new();
        let Some(s) = &self.spec else { return f };
        let roles: Vec<&str> = s
            .roles
            .iter()
            .map(|r| match v1::NodeRole::try_from(*r) {
                Ok(v1::NodeRole::Storage) => "storage",
                Ok(v1::NodeRole::Workstation) => "workstation",
                _ => "unspecified",
            })
            .collect();
        put(&mut f, "spec.roles", roles.join(","));
        let addrs: Vec<String> = s.data_addresses.iter().map(address_string).collect();
        put(&mut f, "spec.data_addresses", addrs.join(","));
        put(&mut f, "spec.host_nqn", &s.host_nqn);
        f
    }
}

impl SpecFields for Pool {
    fn fields(&self) -> BTreeMap<String, String> {
        let mut f = BTreeMap::new();
        let Some(s) = &self.spec else { return f };
        put(&mut f, "spec.node", &s.node);
        if let Some(b) = &s.backing {
            put(&mut f, "spec.backing.kind", backing_name(b.kind));
            put(&mut f, "spec.backing.path", &b.path);
        }
        put(&mut f, "spec.capacity", &s.capacity);
        put(&mut f, "spec.overcommit_ratio", s.overcommit_ratio);
        put(&mut f, "spec.namespace_limit", s.namespace_limit);
        put(
            &mut f,
            "spec.reclaim_policy",
            reclaim_name(s.reclaim_policy),
        );
        f
    }
}

impl SpecFields for Volume {
    fn fields(&self) -> BTreeMap<String, String> {
        let mut f = BTreeMap::new();
        let Some(s) = &self.spec else { return f };
        put(&mut f, "spec.tenant", &s.tenant);
        put(&mut f, "spec.size", &s.size);
        put(&mut f, "spec.block_size", s.block_size);
        put(&mut f, "spec.pool", &s.pool);
        put(
            &mut f,
            "spec.pool_selector",
            selector_string(s.pool_selector.as_ref()),
        );
        put(&mut f, "spec.expires_at", ts_string(s.expires_at.as_ref()));
        // UNSPECIFIED means RETAIN: only the other choice is a field, so
        // spelling out the default is not a change.
        if s.expiry_action != v1::ExpiryAction::Unspecified as i32
            && s.expiry_action != v1::ExpiryAction::Retain as i32
        {
            let n = v1::ExpiryAction::try_from(s.expiry_action)
                .ok()
                .map(|a| a.as_str_name());
            put(
                &mut f,
                "spec.expiry_action",
                enum_name(n, "EXPIRY_ACTION_", s.expiry_action),
            );
        }
        f
    }
}

impl SpecFields for Attachment {
    fn fields(&self) -> BTreeMap<String, String> {
        let mut f = BTreeMap::new();
        let Some(s) = &self.spec else { return f };
        put(&mut f, "spec.volume", &s.volume);
        put(&mut f, "spec.node", &s.node);
        put(&mut f, "spec.mode", mode_name(s.mode));
        f
    }
}

impl SpecFields for Tenant {
    fn fields(&self) -> BTreeMap<String, String> {
        let mut f = BTreeMap::new();
        let Some(s) = &self.spec else { return f };
        put(&mut f, "spec.capacity_quota", &s.capacity_quota);
        put(&mut f, "spec.volume_quota", s.volume_quota);
        put(&mut f, "spec.allowed_nodes", s.allowed_nodes.join(","));
        f
    }
}

// ------------------------------------------------------------ validation

/// Object names: DNS labels, so they can appear in NQNs, paths and CNs
/// (the rule is `ferrofab_types::name`'s, shared with the PKI).
pub fn validate_name(field: &str, name: &str) -> Result<(), ApiError> {
    if ferrofab_types::name::is_valid_name(name) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            field,
            format!("{name:?} is not a valid name (1-63 of a-z, 0-9 and '-', not starting or ending with '-')"),
        ))
    }
}

fn label_part_ok(s: &str, allow_empty: bool) -> bool {
    (allow_empty || !s.is_empty())
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Label keys are `[prefix/]name`; values may be empty.
pub fn validate_labels(
    field: &str,
    labels: &std::collections::HashMap<String, String>,
) -> Result<(), ApiError> {
    for (k, v) in labels {
        let name = k.rsplit_once('/').map_or(k.as_str(), |(p, n)| {
            if p.is_empty() || p.len() > 253 {
                ""
            } else {
                n
            }
        });
        if !label_part_ok(name, false) {
            return Err(ApiError::invalid(
                &format!("{field}.{k}"),
                format!("label key {k:?} is invalid"),
            ));
        }
        if !label_part_ok(v, true) {
            return Err(ApiError::invalid(
                &format!("{field}.{k}"),
                format!(
                    "label value {v:?} is invalid (at most 63 of A-Z, a-z, 0-9, '-', '_', '.')"
                ),
            ));
        }
    }
    Ok(())
}

/// Sizes accept plain bytes or units ("4TiB"), via `ferrofab_types`' parser
/// so that every ferrofab tool agrees on what a size means.
pub fn parse_size(field: &str, s: &str) -> Result<u64, ApiError> {
    match ferrofab_types::size::parse_size(s) {
        Ok(0) => Err(ApiError::invalid(field, "size must be greater than zero")),
        Ok(n) => Ok(n),
        Err(e) => Err(ApiError::invalid(field, format!("{s:?}: {e}"))),
    }
}

/// NVMe Qualified Names: "nqn." prefix, at most 223 bytes, printable
/// (`ferrofab_types::nqn::check_shape`; the data path checks the full form).
pub fn validate_nqn(field: &str, nqn: &str) -> Result<(), ApiError> {
    match ferrofab_types::nqn::check_shape(nqn) {
        Ok(()) => Ok(()),
        Err(_) => Err(ApiError::invalid(
            field,
            format!("{nqn:?} is not an NVMe qualified name (nqn.*, at most 223 bytes)"),
        )),
    }
}

/// An equality label selector in string form: "a=b,c!=d,e".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    terms: Vec<Term>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
}

impl Selector {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut terms = Vec::new();
        for raw in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let term = if let Some((k, v)) = raw.split_once("!=") {
                Term::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = raw.split_once('=') {
                Term::Eq(k.trim().into(), v.trim().trim_start_matches('=').into())
            } else {
                Term::Exists(raw.into())
            };
            let key = match &term {
                Term::Eq(k, _) | Term::Ne(k, _) | Term::Exists(k) => k,
            };
            if key.is_empty() {
                return Err(ApiError::invalid(
                    "label_selector",
                    format!("{raw:?} has no key"),
                ));
            }
            terms.push(term);
        }
        Ok(Self { terms })
    }

    pub fn from_match_labels(m: &std::collections::HashMap<String, String>) -> Self {
        Self {
            terms: m
                .iter()
                .map(|(k, v)| Term::Eq(k.clone(), v.clone()))
                .collect(),
        }
    }

    pub fn matches(&self, labels: &std::collections::HashMap<String, String>) -> bool {
        self.terms.iter().all(|t| match t {
            Term::Eq(k, v) => labels.get(k) == Some(v),
            Term::Ne(k, v) => labels.get(k) != Some(v),
            Term::Exists(k) => labels.contains_key(k),
        })
    }

    pub fn matches_meta(&self, m: Option<&ObjectMeta>) -> bool {
        match m {
            Some(m) => self.matches(&m.labels),
            None => self.terms.is_empty(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn diff_fields_show_enum_names_and_clean_addresses() {
        let pool = Pool {
            spec: Some(v1::PoolSpec {
                backing: Some(v1::PoolBacking {
                    kind: v1::BackingKind::BlockDevice as i32,
                    path: "/dev/x".into(),
                }),
                reclaim_policy: 0,
                ..Default::default()
            }),
            ..Default::default()
        };
        let f = pool.spec_fields();
        assert_eq!(f["spec.backing.kind"], "block-device");
        assert_eq!(f["spec.reclaim_policy"], "delete");
        let node = Node {
            spec: Some(v1::NodeSpec {
                data_addresses: vec![
                    v1::DataAddress {
                        address: "127.0.0.1".into(),
                        port: 4420,
                        transport: String::new(),
                    },
                    v1::DataAddress {
                        address: "fd00::1".into(),
                        port: 0,
                        transport: "rdma".into(),
                    },
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            node.spec_fields()["spec.data_addresses"],
            "127.0.0.1:4420,[fd00::1]:4420/rdma"
        );
        assert_eq!(backing_name(99), "unknown(99)");
        assert_eq!(mode_name(0), "read-write");
    }

    #[test]
    fn names() {
        assert!(validate_name("metadata.name", "vol-1").is_ok());
        for bad in ["", "-a", "a-", "A", "a_b", &"x".repeat(64)] {
            let e = validate_name("metadata.name", bad).expect_err(bad);
            assert!(e.to_string().contains("metadata.name"));
        }
    }

    #[test]
    fn sizes_take_units_and_reject_zero() {
        assert_eq!(parse_size("spec.size", "4TiB").ok(), Some(4 << 40));
        assert!(parse_size("spec.size", "0").is_err());
        let e = parse_size("spec.size", "lots").expect_err("bad");
        assert!(e.to_string().contains("spec.size"));
    }

    #[test]
    fn selectors() {
        let s = Selector::parse("tier=fast, zone!=b,ssd").expect("parse");
        let mut l = HashMap::new();
        l.insert("tier".to_string(), "fast".to_string());
        l.insert("ssd".to_string(), String::new());
        assert!(s.matches(&l));
        l.insert("zone".to_string(), "b".to_string());
        assert!(!s.matches(&l));
        assert!(Selector::parse("=x").is_err());
    }

    #[test]
    fn labels_and_nqns() {
        let mut l = HashMap::new();
        l.insert("ferrofab.io/team".to_string(), "neuro".to_string());
        assert!(validate_labels("metadata.labels", &l).is_ok());
        l.insert("bad key".to_string(), "x".to_string());
        assert!(validate_labels("metadata.labels", &l).is_err());
        assert!(validate_nqn("spec.host_nqn", "nqn.2014-08.org.nvmexpress:uuid:1").is_ok());
        assert!(validate_nqn("spec.host_nqn", "iqn.x").is_err());
    }
}
