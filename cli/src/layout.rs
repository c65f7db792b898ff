//! The declarative layout file that `ferrofab apply -f` reads.
//!
//! ```toml
//! [[tenant]]
//! name = "neuro"
//! capacity_quota = "4TiB"
//! volume_quota = 20
//! allowed_nodes = ["ws-1"]
//!
//! [[node]]
//! name = "stor-1"
//! roles = ["storage"]
//! addresses = ["10.0.0.11:4420"]
//!
//! [[pool]]
//! name = "fast"
//! node = "stor-1"
//! backing = "directory"          # or "block-device"
//! path = "/srv/ferrofab/fast"
//! capacity = "8TiB"
//! labels = { tier = "nvme" }
//!
//! [[volume]]
//! name = "scratch-1"
//! tenant = "neuro"
//! size = "1TiB"
//! pool_selector = { tier = "nvme" }   # or pool = "fast"
//! expires_at = 2026-12-01T00:00:00Z
//! expiry_action = "retain"            # default; or "delete"
//!
//! [[attachment]]
//! name = "scratch-1-ws-1"
//! volume = "scratch-1"
//! node = "ws-1"
//! mode = "read-write"
//! ```
//!
//! Everything that can be checked without the controller is checked here,
//! so a typo fails before any diff is computed; references between objects
//! are left to the controller, which also knows objects not in the file.

use std::collections::{BTreeMap, HashMap, HashSet};

use ferrofab_proto::v1;
use ferrofab_types::size::parse_size;
use serde::Deserialize;

/// A layout file problem, phrased for the person who wrote it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// Not TOML, wrong types, or unknown keys.
    #[error("{0}")]
    Syntax(String),
    /// An object's field is invalid.
    #[error("{kind} {name:?}: {field}: {message}")]
    Invalid {
        /// Table name (`volume`).
        kind: &'static str,
        /// Object name.
        name: String,
        /// Offending field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Two objects of one kind share a name.
    #[error("{kind} {name:?} is defined more than once")]
    Duplicate {
        /// Table name.
        kind: &'static str,
        /// The repeated name.
        name: String,
    },
}

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutFile {
    #[serde(default)]
    tenant: Vec<TenantEntry>,
    #[serde(default)]
    node: Vec<NodeEntry>,
    #[serde(default)]
    pool: Vec<PoolEntry>,
    #[serde(default)]
    volume: Vec<VolumeEntry>,
    #[serde(default)]
    attachment: Vec<AttachmentEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantEntry {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    capacity_quota: Option<String>,
    #[serde(default)]
    volume_quota: u32,
    #[serde(default)]
    allowed_nodes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeEntry {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    addresses: Vec<String>,
    host_nqn: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolEntry {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    node: String,
    backing: String,
    path: String,
    capacity: String,
    overcommit_ratio: Option<f64>,
    namespace_limit: Option<u32>,
    reclaim_policy: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VolumeEntry {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    tenant: String,
    size: String,
    block_size: Option<u32>,
    pool: Option<String>,
    pool_selector: Option<BTreeMap<String, String>>,
    expires_at: Option<DateValue>,
    expiry_action: Option<String>,
}

/// TOML datetimes and RFC 3339 strings are both accepted.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DateValue {
    Toml(toml::value::Datetime),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttachmentEntry {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    volume: String,
    node: String,
    mode: Option<String>,
}

/// A parsed, validated layout: the API's `Layout` message.
pub type Layout = v1::Layout;

/// Parses and validates layout text.
pub fn parse(text: &str) -> Result<Layout, LayoutError> {
    let file: LayoutFile = toml::from_str(text).map_err(|e| syntax_error(text, &e))?;
    file.validate()
}

fn syntax_error(text: &str, e: &toml::de::Error) -> LayoutError {
    let line = e
        .span()
        .and_then(|r| text.get(..r.start))
        .map(|before| before.matches('\n').count() + 1);
    match line {
        Some(l) => LayoutError::Syntax(format!("line {l}: {}", e.message())),
        None => LayoutError::Syntax(e.message().to_owned()),
    }
}

impl LayoutFile {
    fn validate(self) -> Result<Layout, LayoutError> {
        Ok(Layout {
            tenants: convert_all("tenant", self.tenant, |e| &e.name, tenant)?,
            nodes: convert_all("node", self.node, |e| &e.name, node)?,
            pools: convert_all("pool", self.pool, |e| &e.name, pool)?,
            volumes: convert_all("volume", self.volume, |e| &e.name, volume)?,
            attachments: convert_all("attachment", self.attachment, |e| &e.name, attachment)?,
        })
    }
}

/// Checks names (valid, unique) and converts each entry.
fn convert_all<E, T>(
    kind: &'static str,
    entries: Vec<E>,
    name: impl Fn(&E) -> &String,
    convert: impl Fn(E) -> Result<T, LayoutError>,
) -> Result<Vec<T>, LayoutError> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let n = name(&e).clone();
        check_name(kind, &n, "name", &n)?;
        if !seen.insert(n.clone()) {
            return Err(LayoutError::Duplicate { kind, name: n });
        }
        out.push(convert(e)?);
    }
    Ok(out)
}

fn invalid(
    kind: &'static str,
    name: &str,
    field: &'static str,
    message: impl Into<String>,
) -> LayoutError {
    LayoutError::Invalid {
        kind,
        name: name.to_owned(),
        field,
        message: message.into(),
    }
}

fn check_name(
    kind: &'static str,
    obj: &str,
    field: &'static str,
    value: &str,
) -> Result<(), LayoutError> {
    ferrofab_pki::validate_name(value).map_err(|e| invalid(kind, obj, field, e.to_string()))
}

fn check_size(
    kind: &'static str,
    obj: &str,
    field: &'static str,
    value: &str,
) -> Result<String, LayoutError> {
    parse_size(value)
        .map(|_| value.trim().to_owned())
        .map_err(|e| invalid(kind, obj, field, e.to_string()))
}

fn meta(name: String, labels: BTreeMap<String, String>) -> Option<v1::ObjectMeta> {
    Some(v1::ObjectMeta {
        name,
        labels: labels.into_iter().collect::<HashMap<_, _>>(),
        ..Default::default()
    })
}

fn tenant(e: TenantEntry) -> Result<v1::Tenant, LayoutError> {
    let quota = match &e.capacity_quota {
        Some(q) => check_size("tenant", &e.name, "capacity_quota", q)?,
        None => String::new(),
    };
    for n in &e.allowed_nodes {
        check_name("tenant", &e.name, "allowed_nodes", n)?;
    }
    Ok(v1::Tenant {
        spec: Some(v1::TenantSpec {
            capacity_quota: quota,
            volume_quota: e.volume_quota,
            allowed_nodes: e.allowed_nodes,
        }),
        metadata: meta(e.name, e.labels),
        status: None,
    })
}

fn node(e: NodeEntry) -> Result<v1::Node, LayoutError> {
    let roles = e
        .roles
        .iter()
        .map(|r| parse_role(r).map(|r| r as i32))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|m| invalid("node", &e.name, "roles", m))?;
    let addresses = e
        .addresses
        .iter()
        .map(|a| parse_address(a))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|m| invalid("node", &e.name, "addresses", m))?;
    Ok(v1::Node {
        spec: Some(v1::NodeSpec {
            roles,
            data_addresses: addresses,
            host_nqn: e.host_nqn.unwrap_or_default(),
        }),
        metadata: meta(e.name, e.labels),
        status: None,
    })
}

fn pool(e: PoolEntry) -> Result<v1::Pool, LayoutError> {
    let n = &e.name;
    check_name("pool", n, "node", &e.node)?;
    let capacity = check_size("pool", n, "capacity", &e.capacity)?;
    let kind = parse_backing(&e.backing).map_err(|m| invalid("pool", n, "backing", m))?;
    if !e.path.starts_with('/') {
        return Err(invalid("pool", n, "path", "must be an absolute path"));
    }
    let reclaim = match &e.reclaim_policy {
        Some(r) => parse_reclaim(r).map_err(|m| invalid("pool", n, "reclaim_policy", m))?,
        None => v1::ReclaimPolicy::Unspecified,
    };
    let ratio = e.overcommit_ratio.unwrap_or(0.0);
    if e.overcommit_ratio.is_some() && !(ratio.is_finite() && ratio >= 1.0) {
        return Err(invalid(
            "pool",
            n,
            "overcommit_ratio",
            "must be at least 1.0",
        ));
    }
    Ok(v1::Pool {
        spec: Some(v1::PoolSpec {
            node: e.node,
            backing: Some(v1::PoolBacking {
                kind: kind as i32,
                path: e.path,
            }),
            capacity,
            overcommit_ratio: ratio,
            namespace_limit: e.namespace_limit.unwrap_or(0),
            reclaim_policy: reclaim as i32,
        }),
        metadata: meta(e.name, e.labels),
        status: None,
    })
}

fn volume(e: VolumeEntry) -> Result<v1::Volume, LayoutError> {
    let n = &e.name;
    check_name("volume", n, "tenant", &e.tenant)?;
    let size = check_size("volume", n, "size", &e.size)?;
    let block_size = e.block_size.unwrap_or(0);
    if ![0, 512, 4096].contains(&block_size) {
        return Err(invalid("volume", n, "block_size", "must be 512 or 4096"));
    }
    if e.pool.is_some() && e.pool_selector.is_some() {
        return Err(invalid(
            "volume",
            n,
            "pool",
            "give pool or pool_selector, not both",
        ));
    }
    if let Some(p) = &e.pool {
        check_name("volume", n, "pool", p)?;
    }
    let expires_at = match &e.expires_at {
        Some(d) => Some(parse_date(d).map_err(|m| invalid("volume", n, "expires_at", m))?),
        None => None,
    };
    let expiry_action = match &e.expiry_action {
        Some(a) => {
            parse_expiry_action(a).map_err(|m| invalid("volume", n, "expiry_action", m))? as i32
        }
        None => 0,
    };
    Ok(v1::Volume {
        spec: Some(v1::VolumeSpec {
            tenant: e.tenant,
            size,
            block_size,
            pool: e.pool.unwrap_or_default(),
            pool_selector: e.pool_selector.map(|m| v1::LabelSelector {
                match_labels: m.into_iter().collect(),
            }),
            expires_at,
            expiry_action,
        }),
        metadata: meta(e.name, e.labels),
        status: None,
    })
}

fn attachment(e: AttachmentEntry) -> Result<v1::Attachment, LayoutError> {
    let n = &e.name;
    check_name("attachment", n, "volume", &e.volume)?;
    check_name("attachment", n, "node", &e.node)?;
    let mode = match &e.mode {
        Some(m) => parse_mode(m).map_err(|msg| invalid("attachment", n, "mode", msg))?,
        None => v1::AccessMode::Unspecified,
    };
    Ok(v1::Attachment {
        spec: Some(v1::AttachmentSpec {
            volume: e.volume,
            node: e.node,
            mode: mode as i32,
        }),
        metadata: meta(e.name, e.labels),
        status: None,
    })
}

/// `storage` / `workstation`.
pub fn parse_role(s: &str) -> Result<v1::NodeRole, String> {
    match s {
        "storage" => Ok(v1::NodeRole::Storage),
        "workstation" => Ok(v1::NodeRole::Workstation),
        _ => Err(format!("unknown role {s:?} (use storage or workstation)")),
    }
}

/// `directory` / `block-device`.
pub fn parse_backing(s: &str) -> Result<v1::BackingKind, String> {
    match s {
        "directory" => Ok(v1::BackingKind::Directory),
        "block-device" => Ok(v1::BackingKind::BlockDevice),
        _ => Err(format!(
            "unknown backing {s:?} (use directory or block-device)"
        )),
    }
}

/// `delete` / `retain`.
pub fn parse_reclaim(s: &str) -> Result<v1::ReclaimPolicy, String> {
    match s {
        "delete" => Ok(v1::ReclaimPolicy::Delete),
        "retain" => Ok(v1::ReclaimPolicy::Retain),
        _ => Err(format!(
            "unknown reclaim policy {s:?} (use delete or retain)"
        )),
    }
}

/// `retain` / `delete`: what a burst volume's expiry does.
pub fn parse_expiry_action(s: &str) -> Result<v1::ExpiryAction, String> {
    match s {
        "retain" => Ok(v1::ExpiryAction::Retain),
        "delete" => Ok(v1::ExpiryAction::Delete),
        _ => Err(format!(
            "unknown expiry action {s:?} (use retain or delete)"
        )),
    }
}

/// `read-write` (`rw`) / `read-only` (`ro`) / `read-write-many` (`rwx`).
pub fn parse_mode(s: &str) -> Result<v1::AccessMode, String> {
    match s {
        "read-write" | "rw" => Ok(v1::AccessMode::ReadWrite),
        "read-only" | "ro" => Ok(v1::AccessMode::ReadOnly),
        "read-write-many" | "rwx" => Ok(v1::AccessMode::ReadWriteMany),
        _ => Err(format!(
            "unknown mode {s:?} (use read-write, read-only or read-write-many)"
        )),
    }
}

/// `HOST`, `HOST:PORT`, `[V6]:PORT` or a bare IPv6 literal.
pub fn parse_address(s: &str) -> Result<v1::DataAddress, String> {
    let bad = || format!("invalid address {s:?} (expected HOST[:PORT] or [IPv6]:PORT)");
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (h, None),
            p => (h, Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else if s.matches(':').count() == 1 {
        let (h, p) = s.split_once(':').ok_or_else(bad)?;
        (h, Some(p))
    } else {
        (s, None)
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?,
        None => 0,
    };
    Ok(v1::DataAddress {
        address: host.to_owned(),
        port: u32::from(port),
        transport: String::new(),
    })
}

fn parse_date(d: &DateValue) -> Result<prost_types::Timestamp, String> {
    let text = match d {
        DateValue::Toml(dt) => dt.to_string(),
        DateValue::Text(s) => s.clone(),
    };
    parse_rfc3339(&text)
}

/// RFC 3339 with an offset (`2026-12-01T00:00:00Z`); local times are
/// rejected because "midnight" on which machine is ambiguous.
pub fn parse_rfc3339(text: &str) -> Result<prost_types::Timestamp, String> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
            format!("{text:?} is not an RFC 3339 time with offset, e.g. 2026-12-01T00:00:00Z")
        })?;
    Ok(prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: 0,
    })
}

/// Every object of a layout as `(kind, name)`, in apply order.
pub fn object_refs(l: &Layout) -> Vec<(&'static str, String)> {
    fn names<T>(
        kind: &'static str,
        items: &[T],
        meta: impl Fn(&T) -> Option<&v1::ObjectMeta>,
    ) -> Vec<(&'static str, String)> {
        items
            .iter()
            .filter_map(|i| meta(i).map(|m| (kind, m.name.clone())))
            .collect()
    }
    let mut out = names("tenant", &l.tenants, |t| t.metadata.as_ref());
    out.extend(names("node", &l.nodes, |t| t.metadata.as_ref()));
    out.extend(names("pool", &l.pools, |t| t.metadata.as_ref()));
    out.extend(names("volume", &l.volumes, |t| t.metadata.as_ref()));
    out.extend(names("attachment", &l.attachments, |t| t.metadata.as_ref()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[[tenant]]
name = "neuro"
capacity_quota = "4TiB"
volume_quota = 20
allowed_nodes = ["ws-1"]

[[node]]
name = "stor-1"
roles = ["storage"]
addresses = ["10.0.0.11:4420", "[fd00::1]:4420", "stor-1.lan"]

[[pool]]
name = "fast"
node = "stor-1"
backing = "directory"
path = "/srv/ferrofab/fast"
capacity = "8TiB"
overcommit_ratio = 1.5
labels = { tier = "nvme" }

[[volume]]
name = "scratch-1"
tenant = "neuro"
size = "1TiB"
pool_selector = { tier = "nvme" }
expires_at = 2026-12-01T00:00:00Z
expiry_action = "delete"

[[volume]]
name = "scratch-2"
tenant = "neuro"
size = "512GiB"
pool = "fast"
block_size = 512

[[attachment]]
name = "scratch-1-ws-1"
volume = "scratch-1"
node = "ws-1"
mode = "ro"
"#;

    #[test]
    fn parses_full_example() {
        let l = parse(EXAMPLE).unwrap();
        assert_eq!(l.tenants.len(), 1);
        assert_eq!(l.volumes.len(), 2);
        let n = l.nodes[0].spec.as_ref().unwrap();
        assert_eq!(n.data_addresses[1].address, "fd00::1");
        assert_eq!(n.data_addresses[2].port, 0);
        let v = l.volumes[0].spec.as_ref().unwrap();
        assert_eq!(v.expires_at.as_ref().unwrap().seconds, 1_796_083_200);
        assert_eq!(v.expiry_action(), v1::ExpiryAction::Delete);
        assert_eq!(
            v.pool_selector.as_ref().unwrap().match_labels["tier"],
            "nvme"
        );
        let a = l.attachments[0].spec.as_ref().unwrap();
        assert_eq!(a.mode(), v1::AccessMode::ReadOnly);
        assert_eq!(
            object_refs(&l).first(),
            Some(&("tenant", "neuro".to_owned()))
        );
        assert_eq!(object_refs(&l).len(), 6);
    }

    #[test]
    fn empty_file_is_empty_layout() {
        assert_eq!(parse("").unwrap(), Layout::default());
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn syntax_errors_have_lines() {
        let e = err("[[volume]]\nname = \"a\"\ntenant = \"t\"\nsize = \"1GiB\"\nsizee = 1\n");
        assert!(e.starts_with("line 5: "), "{e}");
        let e = err("[[volumes]]\nname = \"a\"\n");
        assert!(e.contains("volumes"), "{e}");
    }

    #[test]
    fn semantic_errors_name_object_and_field() {
        assert_eq!(
            err("[[volume]]\nname = \"a\"\ntenant = \"t\"\nsize = \"4XB\"\n"),
            "volume \"a\": size: invalid size \"4XB\": unknown unit \"XB\" (use B, KiB, MiB, GiB, TiB, PiB, KB, MB, GB, TB, PB)"
        );
        assert!(err("[[tenant]]\nname = \"Bad\"\n").starts_with("tenant \"Bad\": name: "));
        assert_eq!(
            err("[[tenant]]\nname = \"a\"\n[[tenant]]\nname = \"a\"\n"),
            "tenant \"a\" is defined more than once"
        );
        assert!(err("[[volume]]\nname = \"a\"\ntenant = \"t\"\nsize = \"1GiB\"\npool = \"p\"\npool_selector = { a = \"b\" }\n")
            .contains("not both"));
        assert!(err(
            "[[volume]]\nname = \"a\"\ntenant = \"t\"\nsize = \"1GiB\"\nblock_size = 1024\n"
        )
        .contains("block_size"));
        assert!(err("[[pool]]\nname = \"p\"\nnode = \"n\"\nbacking = \"dir\"\npath = \"/x\"\ncapacity = \"1GiB\"\n")
            .contains("backing"));
        assert!(err("[[pool]]\nname = \"p\"\nnode = \"n\"\nbacking = \"directory\"\npath = \"x\"\ncapacity = \"1GiB\"\n")
            .contains("absolute"));
        assert!(err("[[node]]\nname = \"n\"\nroles = [\"master\"]\n").contains("roles"));
        assert!(err("[[node]]\nname = \"n\"\naddresses = [\"h:0\"]\n").contains("addresses"));
        assert!(err("[[volume]]\nname = \"a\"\ntenant = \"t\"\nsize = \"1GiB\"\nexpires_at = \"tomorrow\"\n")
            .contains("expires_at"));
        assert!(err("[[volume]]\nname = \"a\"\ntenant = \"t\"\nsize = \"1GiB\"\nexpiry_action = \"archive\"\n")
            .contains("expiry_action: unknown expiry action \"archive\" (use retain or delete)"));
        assert!(err(
            "[[attachment]]\nname = \"a\"\nvolume = \"v\"\nnode = \"n\"\nmode = \"write-only\"\n"
        )
        .contains("mode"));
    }

    #[test]
    fn addresses() {
        assert_eq!(parse_address("h:4420").unwrap().port, 4420);
        assert_eq!(parse_address("fd00::1").unwrap().address, "fd00::1");
        assert_eq!(parse_address("[fd00::1]").unwrap().port, 0);
        for bad in ["", ":1", "h:x", "[fd00::1", "[::1]x", "h:70000"] {
            assert!(parse_address(bad).is_err(), "{bad:?}");
        }
    }
}
