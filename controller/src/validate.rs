//! Checks that bound what a client can store and that keep node identities
//! unique: metadata (labels, annotations) and total object size, pool
//! backing paths, and the host NQN and data addresses of nodes.
//!
//! Why a size bound at all: every object of a kind travels in one List
//! response, limited to the gRPC message size (4 MiB by default). Two
//! volumes with 3 MiB of annotations made `volume list` fail for every
//! user. Each error names the field and the limit, so the caller can fix
//! the request without reading the controller's logs.

use std::collections::HashMap;
use std::net::IpAddr;

use ferrofab_proto::v1::{DataAddress, NodeSpec, ObjectMeta};
use prost::Message;
use serde::Deserialize;

use crate::cache::Objects;
use crate::error::ApiError;
use crate::resource::{kind_name, Resource};

/// Longest key prefix (a DNS subdomain, as in `ferrofab.io/team`).
pub const MAX_KEY_PREFIX_BYTES: usize = 253;
/// Longest key name (the part after the prefix) and label value.
pub const MAX_KEY_NAME_BYTES: usize = 63;
/// Longest pool backing path: Linux's PATH_MAX including the NUL.
pub const MAX_PATH_BYTES: usize = 4095;

/// The `[objects]` section of the controller configuration.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ObjectLimits {
    /// Largest encoded object (metadata, spec and status), bytes.
    #[serde(default = "default_max_object_bytes")]
    pub max_object_bytes: usize,
    /// Most labels on one object.
    #[serde(default = "default_max_labels")]
    pub max_labels: usize,
    /// Most annotations on one object.
    #[serde(default = "default_max_annotations")]
    pub max_annotations: usize,
    /// Largest annotation value, bytes.
    #[serde(default = "default_max_annotation_value_bytes")]
    pub max_annotation_value_bytes: usize,
    /// The gRPC message limit (top-level `max_message_bytes`), which bounds
    /// List pages; set by [`ObjectLimits::with_message_limit`], not read
    /// from `[objects]`.
    #[serde(skip, default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
}

fn default_max_message_bytes() -> usize {
    ferrofab_proto::MAX_MESSAGE_BYTES
}

fn default_max_object_bytes() -> usize {
    256 * 1024
}
fn default_max_labels() -> usize {
    64
}
fn default_max_annotations() -> usize {
    64
}
fn default_max_annotation_value_bytes() -> usize {
    64 * 1024
}

impl Default for ObjectLimits {
    fn default() -> Self {
        Self {
            max_object_bytes: default_max_object_bytes(),
            max_labels: default_max_labels(),
            max_annotations: default_max_annotations(),
            max_annotation_value_bytes: default_max_annotation_value_bytes(),
            max_message_bytes: default_max_message_bytes(),
        }
    }
}

impl ObjectLimits {
    /// These limits with the server's message limit, which bounds pages.
    pub fn with_message_limit(mut self, max_message_bytes: usize) -> Self {
        self.max_message_bytes = max_message_bytes;
        self
    }

    /// Bytes of items one List response may carry: the message limit less
    /// an eighth for the response's other fields, the per-item framing and
    /// the status the pool and tenant lists add after paging.
    pub fn page_budget(&self) -> usize {
        self.max_message_bytes - self.max_message_bytes / 8
    }

    /// Refuses settings that would let one object fill a whole message, or
    /// a value that could never fit in an object.
    pub fn check(&self, max_message_bytes: usize) -> Result<(), String> {
        if self.max_object_bytes < 4096 || self.max_object_bytes > max_message_bytes / 4 {
            return Err(format!(
                "objects.max_object_bytes must be between 4096 and a quarter of \
                 max_message_bytes ({}), got {}",
                max_message_bytes / 4,
                self.max_object_bytes
            ));
        }
        if self.max_annotation_value_bytes > self.max_object_bytes {
            return Err(
                "objects.max_annotation_value_bytes must not exceed objects.max_object_bytes"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Sizes in messages: "3 MiB", "64 KiB", "17 bytes".
pub fn human_bytes(n: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= MIB {
        format!("{:.1} MiB", n as f64 / MIB as f64)
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{} KiB", n / KIB)
    } else if n >= KIB {
        format!("{:.1} KiB", n as f64 / KIB as f64)
    } else {
        format!("{n} bytes")
    }
}

// ------------------------------------------------------------ metadata

/// `[prefix/]name`: prefix a DNS subdomain of at most 253 bytes, name 1-63
/// of A-Z, a-z, 0-9, '-', '_', '.' beginning and ending alphanumeric. The
/// same rule for label and annotation keys, so tools can treat both alike.
fn key_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let dns_ok = !p.is_empty()
            && p.len() <= MAX_KEY_PREFIX_BYTES
            && p.split('.').all(ferrofab_types::name::is_valid_name);
        if !dns_ok {
            return Some(format!(
                "key prefix {} is not a DNS subdomain (lower-case, at most {MAX_KEY_PREFIX_BYTES} bytes)",
                quoted(p)
            ));
        }
    }
    let name_ok = !name.is_empty()
        && name.len() <= MAX_KEY_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    (!name_ok).then(|| {
        format!(
            "key name {} must be 1-{MAX_KEY_NAME_BYTES} of A-Z, a-z, 0-9, '-', '_', '.', \
             beginning and ending with a letter or digit",
            quoted(name)
        )
    })
}

/// A string for an error message, cut short so a 3 MiB key does not
/// become a 3 MiB error.
fn quoted(s: &str) -> String {
    const SHOWN: usize = 64;
    if s.len() <= SHOWN {
        return format!("{s:?}");
    }
    let mut end = SHOWN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({})", &s[..end], human_bytes(s.len()))
}

/// The field path of one map entry: `metadata.annotations["x"]`.
fn entry_field(map: &str, key: &str) -> String {
    format!("metadata.{map}[{}]", quoted(key))
}

/// Sorted keys, so that the first error reported is the same every time.
fn sorted(m: &HashMap<String, String>) -> Vec<(&String, &String)> {
    let mut v: Vec<_> = m.iter().collect();
    v.sort();
    v
}

/// Labels: at most `max_labels`, keys as [`key_problem`], values at most
/// 63 of the key-name characters (empty allowed), since selectors match
/// them literally.
pub fn validate_labels(m: &HashMap<String, String>, limits: &ObjectLimits) -> Result<(), ApiError> {
    if m.len() > limits.max_labels {
        return Err(ApiError::invalid(
            "metadata.labels",
            format!("{} labels, limit {}", m.len(), limits.max_labels),
        ));
    }
    for (k, v) in sorted(m) {
        if let Some(why) = key_problem(k) {
            return Err(ApiError::invalid(&entry_field("labels", k), why));
        }
        let value_ok = v.len() <= MAX_KEY_NAME_BYTES
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !value_ok {
            return Err(ApiError::invalid(
                &entry_field("labels", k),
                format!(
                    "value {} is invalid (at most {MAX_KEY_NAME_BYTES} of A-Z, a-z, 0-9, '-', '_', '.')",
                    quoted(v)
                ),
            ));
        }
    }
    Ok(())
}

/// Annotations: at most `max_annotations`, keys as [`key_problem`],
/// values any text up to `max_annotation_value_bytes`.
pub fn validate_annotations(
    m: &HashMap<String, String>,
    limits: &ObjectLimits,
) -> Result<(), ApiError> {
    if m.len() > limits.max_annotations {
        return Err(ApiError::invalid(
            "metadata.annotations",
            format!("{} annotations, limit {}", m.len(), limits.max_annotations),
        ));
    }
    for (k, v) in sorted(m) {
        if let Some(why) = key_problem(k) {
            return Err(ApiError::invalid(&entry_field("annotations", k), why));
        }
        if v.len() > limits.max_annotation_value_bytes {
            return Err(ApiError::invalid(
                &entry_field("annotations", k),
                format!(
                    "value is {}, limit {}",
                    human_bytes(v.len()),
                    human_bytes(limits.max_annotation_value_bytes)
                ),
            ));
        }
    }
    Ok(())
}

/// Labels and annotations of a client-written object.
pub fn validate_meta(m: &ObjectMeta, limits: &ObjectLimits) -> Result<(), ApiError> {
    validate_labels(&m.labels, limits)?;
    validate_annotations(&m.annotations, limits)
}

/// Metadata may fill at most seven eighths of `max_object_bytes`: the rest
/// is kept for the spec and for the status the controller and agents
/// write later, so that a tenant filling its annotations to the limit
/// cannot make the object's own status updates fail.
fn check_meta_size(m: &ObjectMeta, limits: &ObjectLimits) -> Result<(), ApiError> {
    let cap = limits.max_object_bytes - limits.max_object_bytes / 8;
    let len = m.encoded_len();
    if len > cap {
        return Err(ApiError::invalid(
            "metadata",
            format!(
                "labels and annotations are {} encoded, limit {} (seven eighths of \
                 objects.max_object_bytes; the rest is kept for spec and status)",
                human_bytes(len),
                human_bytes(cap)
            ),
        ));
    }
    Ok(())
}

/// The admission check of every write to the store (`ops::Shared::put`):
/// metadata is validated whenever it differs from the stored object's, and
/// the encoded object must fit in `max_object_bytes`.
///
/// An object already over the limit (stored before the limit existed, or
/// under a larger setting) may still be written if the write does not
/// grow it, so that it can be shrunk, finalized and deleted.
pub fn admit<R: Resource>(new: &R, old: Option<&R>, limits: &ObjectLimits) -> Result<(), ApiError> {
    let meta_changed = match (new.meta(), old.and_then(R::meta)) {
        (Some(n), Some(o)) => n.labels != o.labels || n.annotations != o.annotations,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if meta_changed {
        if let Some(m) = new.meta() {
            validate_meta(m, limits)?;
            let old_len = old.and_then(R::meta).map(Message::encoded_len);
            if old_len.is_none_or(|o| m.encoded_len() > o) {
                check_meta_size(m, limits)?;
            }
        }
    }
    let size = new.encoded_len();
    let grows = old.is_none_or(|o| size > o.encoded_len());
    if size > limits.max_object_bytes && grows {
        let meta = new.meta().map_or(0, Message::encoded_len);
        return Err(ApiError::invalid(
            &format!("{} {:?}", kind_name(R::KIND), new.name()),
            format!(
                "object is {} encoded (metadata {}), limit {} (objects.max_object_bytes)",
                human_bytes(size),
                human_bytes(meta),
                human_bytes(limits.max_object_bytes)
            ),
        ));
    }
    Ok(())
}

// ------------------------------------------------------------ list pages

/// One page of a List: the items after `token` (a name; items come in
/// name order), at most `page_size` of them when it is not 0, and at most
/// `budget` encoded bytes, but always at least one. Returns the items and
/// the token of the next page, empty at the end.
///
/// A request without `page_size` and `token` is from a client that does
/// not page (or an older one): its list is refused when it does not fit,
/// rather than silently cut, so such a client never mistakes a partial
/// list for the whole.
pub fn page<R: Resource>(
    items: Vec<R>,
    page_size: u32,
    token: &str,
    budget: usize,
) -> Result<(Vec<R>, String), ApiError> {
    let paging = page_size != 0 || !token.is_empty();
    let max_items = if page_size == 0 {
        usize::MAX
    } else {
        page_size as usize
    };
    let total = items.len();
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let mut rest = items
        .into_iter()
        .filter(|o| token.is_empty() || o.name() > token)
        .peekable();
    while let Some(next) = rest.peek() {
        let len = next.encoded_len();
        let framed = len + prost::encoding::encoded_len_varint(len as u64) + 1;
        let full = out.len() >= max_items || bytes.saturating_add(framed) > budget;
        if full && !out.is_empty() {
            break;
        }
        bytes += framed;
        out.extend(rest.next());
    }
    let more = rest.peek().is_some();
    if more && !paging {
        let left: usize = rest.map(|o| o.encoded_len()).sum();
        return Err(ApiError::Exhausted(format!(
            "the {total} {}s are {} encoded, more than one response may carry ({}); \
             set page_size and follow next_page_token (the ferrofab CLI does)",
            kind_name(R::KIND),
            human_bytes(bytes + left),
            human_bytes(budget)
        )));
    }
    let next = match (more, out.last()) {
        (true, Some(last)) => last.name().to_string(),
        _ => String::new(),
    };
    Ok((out, next))
}

// ------------------------------------------------------------ pool paths

/// A pool's backing path, which the storage agent joins volume uids to and
/// opens as root: absolute, at most [`MAX_PATH_BYTES`], no NUL or control
/// characters, no `.` or `..` components, no empty components (`//`) and
/// no trailing `/`.
///
/// Paths not in that normal form are refused with the normal form in the
/// message rather than rewritten: a stored path that differs from what the
/// layout file says would make every Apply report a change, and `..`
/// cannot be resolved without trusting the storage node's symlinks.
pub fn validate_pool_path(field: &str, path: &str) -> Result<(), ApiError> {
    let bad = |why: String| Err(ApiError::invalid(field, why));
    if path.len() > MAX_PATH_BYTES {
        return bad(format!(
            "path is {}, limit {MAX_PATH_BYTES} bytes",
            human_bytes(path.len())
        ));
    }
    if let Some(c) = path.chars().find(|c| c.is_control()) {
        return bad(format!(
            "{} contains the control character U+{:04X}",
            quoted(path),
            u32::from(c)
        ));
    }
    if !path.starts_with('/') {
        return bad(format!("{} must be an absolute path", quoted(path)));
    }
    if path.split('/').any(|c| c == "..") {
        return bad(format!(
            "{} contains a \"..\" component; give the path without it",
            quoted(path)
        ));
    }
    let normal = normal_form(path);
    if normal != path {
        return bad(format!(
            "{} is not in normal form; write {normal:?}",
            quoted(path)
        ));
    }
    Ok(())
}

/// `path` without empty and `.` components and without a trailing `/`.
fn normal_form(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

// ------------------------------------------------------------ node identity

/// A host NQN or data address that another node already has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeClash {
    /// The field of the incoming spec (`spec.host_nqn`, `spec.data_addresses[1]`).
    pub field: String,
    /// The clashing value as written in the incoming spec.
    pub value: String,
    /// The node that has it.
    pub other: String,
}

impl NodeClash {
    /// For administrators, who may know every node.
    pub fn to_admin_error(&self) -> ApiError {
        ApiError::FailedPrecondition(format!(
            "{}: {} already belongs to node {:?}; two nodes with one {} would receive each \
             other's traffic",
            self.field,
            self.value,
            self.other,
            if self.field == "spec.host_nqn" {
                "host NQN"
            } else {
                "data address"
            }
        ))
    }
}

/// A data address as compared: IP literals canonical (`0:0::1` is `::1`),
/// host names lower-case, port 0 as 4420, empty transport as tcp.
fn address_key(a: &DataAddress) -> (String, u32, String) {
    let host = match a.address.parse::<IpAddr>() {
        Ok(ip) => ip.to_canonical().to_string(),
        Err(_) => a.address.to_ascii_lowercase(),
    };
    let port = if a.port == 0 {
        crate::resource::DEFAULT_PORT
    } else {
        a.port
    };
    let transport = match a.transport.as_str() {
        "" => "tcp".to_string(),
        t => t.to_ascii_lowercase(),
    };
    (host, port, transport)
}

/// The first host NQN or data address of `spec` that a node other than
/// `name` already has. Why: a second node with the same host NQN would be
/// allowed into the first one's volumes; one with the same data address
/// would be planned exports it cannot serve.
pub fn node_clash(objs: &Objects, name: &str, spec: &NodeSpec) -> Option<NodeClash> {
    let others = objs.nodes.iter().filter(|(n, _)| n.as_str() != name);
    for (other, node) in others {
        let Some(os) = node.spec.as_ref() else {
            continue;
        };
        if !spec.host_nqn.is_empty() && spec.host_nqn == os.host_nqn {
            return Some(NodeClash {
                field: "spec.host_nqn".into(),
                value: spec.host_nqn.clone(),
                other: other.clone(),
            });
        }
        for (i, a) in spec.data_addresses.iter().enumerate() {
            let k = address_key(a);
            if os.data_addresses.iter().any(|b| address_key(b) == k) {
                return Some(NodeClash {
                    field: format!("spec.data_addresses[{i}]"),
                    value: format!("{}:{}/{}", k.0, k.1, k.2),
                    other: other.clone(),
                });
            }
        }
    }
    None
}

/// [`node_clash`] as an administrator's error.
pub fn check_node_unique(objs: &Objects, name: &str, spec: &NodeSpec) -> Result<(), ApiError> {
    match node_clash(objs, name, spec) {
        Some(c) => Err(c.to_admin_error()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Object;
    use ferrofab_proto::v1::{Node, Volume};

    fn meta_with(annotations: &[(&str, String)]) -> ObjectMeta {
        ObjectMeta {
            name: "v".into(),
            annotations: annotations
                .iter()
                .map(|(k, v)| ((*k).to_string(), v.clone()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn annotation_values_are_bounded_and_named() {
        let limits = ObjectLimits::default();
        let big = "x".repeat(3 << 20);
        let e = validate_meta(&meta_with(&[("note", big)]), &limits).expect_err("3 MiB");
        assert_eq!(
            e.to_string(),
            "invalid metadata.annotations[\"note\"]: value is 3 MiB, limit 64 KiB"
        );
        let ok = "y".repeat(limits.max_annotation_value_bytes);
        validate_meta(&meta_with(&[("ferrofab.io/note", ok)]), &limits).expect("at the limit");
    }

    #[test]
    fn annotation_keys_and_counts() {
        let limits = ObjectLimits::default();
        for bad in ["", "a b", "-x", "x/", "/x", "UPPER.io/x", &"k".repeat(64)] {
            let e = validate_meta(&meta_with(&[(bad, String::new())]), &limits)
                .expect_err(bad)
                .to_string();
            assert!(e.contains("metadata.annotations["), "{bad}: {e}");
        }
        let long_key = "k".repeat(5000);
        let e = validate_meta(&meta_with(&[(&long_key, String::new())]), &limits)
            .expect_err("long")
            .to_string();
        assert!(e.len() < 600, "the key is cut short in the message: {e}");
        let many: Vec<(String, String)> = (0..=limits.max_annotations)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        let m = ObjectMeta {
            annotations: many.into_iter().collect(),
            ..Default::default()
        };
        let e = validate_meta(&m, &limits)
            .expect_err("too many")
            .to_string();
        assert!(e.contains("65 annotations, limit 64"), "{e}");
    }

    #[test]
    fn labels_are_bounded() {
        let limits = ObjectLimits::default();
        let mut m = ObjectMeta::default();
        m.labels.insert("tier".into(), "x".repeat(64));
        let e = validate_meta(&m, &limits)
            .expect_err("long value")
            .to_string();
        assert!(e.contains("metadata.labels[\"tier\"]"), "{e}");
        m.labels.clear();
        for i in 0..=limits.max_labels {
            m.labels.insert(format!("l{i}"), String::new());
        }
        assert!(validate_meta(&m, &limits).is_err());
    }

    fn volume(annotations: usize, each: usize) -> Volume {
        let mut v = Volume {
            metadata: Some(ObjectMeta {
                name: "v".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        for i in 0..annotations {
            v.meta_mut()
                .annotations
                .insert(format!("k{i}"), "a".repeat(each));
        }
        v
    }

    #[test]
    fn total_size_is_bounded_but_big_old_objects_can_shrink() {
        let limits = ObjectLimits::default();
        // Five 60 KiB annotations: each value is fine, the metadata is not.
        let big = volume(5, 60 << 10);
        let e = admit(&big, None, &limits).expect_err("too big").to_string();
        assert!(
            e.starts_with("invalid metadata: labels and annotations are 300."),
            "{e}"
        );
        assert!(e.contains("limit 224 KiB"), "{e}");
        // Metadata within its share, but with the status the object is too big.
        let mut full = volume(3, 60 << 10);
        full.status = Some(ferrofab_proto::v1::VolumeStatus {
            backing_path: "p".repeat(80 << 10),
            ..Default::default()
        });
        let e = admit(&full, None, &limits).expect_err("object").to_string();
        assert!(e.starts_with("invalid volume \"v\": object is 260."), "{e}");
        assert!(
            e.contains("limit 256 KiB (objects.max_object_bytes)"),
            "{e}"
        );
        // A stored oversized object: a write that keeps or shrinks it passes
        // (status updates, finalizers, deletion), one that grows it does not.
        admit(&big, Some(&big), &limits).expect("unchanged");
        let smaller = volume(4, 60 << 10);
        admit(&smaller, Some(&big), &limits).expect("shrinks");
        let bigger = volume(5, 61 << 10);
        assert!(admit(&bigger, Some(&big), &limits).is_err());
        admit(&volume(2, 60 << 10), None, &limits).expect("fits");
    }

    #[test]
    fn metadata_is_checked_only_when_it_changes() {
        let limits = ObjectLimits::default();
        let mut old = volume(0, 0);
        old.meta_mut().labels.insert("bad key".into(), "x".into());
        admit(&old, Some(&old), &limits).expect("status-only write of a legacy object");
        assert!(admit(&old, None, &limits).is_err());
    }

    #[test]
    fn pool_paths() {
        let f = "spec.backing.path";
        validate_pool_path(f, "/srv/ferrofab/fast").expect("plain");
        validate_pool_path(f, "/").expect("root");
        for (bad, says) in [
            ("srv/pool", "absolute"),
            ("", "absolute"),
            ("/srv/../etc", "\"..\""),
            ("/srv/pool/..", "\"..\""),
            ("/srv/po\0ol", "U+0000"),
            ("/srv/po\nol", "U+000A"),
            ("/srv/po\u{7f}ol", "U+007F"),
            ("/srv//pool", "write \"/srv/pool\""),
            ("/srv/./pool/", "write \"/srv/pool\""),
        ] {
            let e = validate_pool_path(f, bad).expect_err(bad).to_string();
            assert!(e.starts_with("invalid spec.backing.path: "), "{e}");
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        let long = format!("/{}", "a".repeat(MAX_PATH_BYTES));
        assert!(validate_pool_path(f, &long).is_err());
        // A dot inside a name is not a component.
        validate_pool_path(f, "/srv/..pool/a.b").expect("dots in names");
    }

    fn node(nqn: &str, addrs: &[(&str, u32)]) -> Node {
        Node {
            spec: Some(NodeSpec {
                host_nqn: nqn.into(),
                data_addresses: addrs
                    .iter()
                    .map(|(a, p)| DataAddress {
                        address: (*a).into(),
                        port: *p,
                        transport: String::new(),
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn host_nqns_and_data_addresses_are_unique() {
        let mut objs = Objects::default();
        objs.nodes.insert(
            "a".into(),
            node("nqn.x:a", &[("10.0.0.1", 4420), ("fd00::1", 0)]),
        );
        let spec = |n: Node| n.spec.unwrap_or_default();
        let c = node_clash(&objs, "b", &spec(node("nqn.x:a", &[]))).expect("same nqn");
        assert_eq!((c.field.as_str(), c.other.as_str()), ("spec.host_nqn", "a"));
        let e = c.to_admin_error().to_string();
        assert!(e.contains("already belongs to node \"a\""), "{e}");
        // Port 0 means 4420, and IPv6 spellings compare equal.
        let c = node_clash(
            &objs,
            "b",
            &spec(node("", &[("10.0.0.2", 1), ("fd00:0::1", 4420)])),
        )
        .expect("same address");
        assert_eq!(c.field, "spec.data_addresses[1]");
        // The node itself, other ports and other addresses do not clash.
        assert!(node_clash(&objs, "a", &spec(node("nqn.x:a", &[("10.0.0.1", 4420)]))).is_none());
        assert!(node_clash(&objs, "b", &spec(node("nqn.x:b", &[("10.0.0.1", 4421)]))).is_none());
        assert!(node_clash(&objs, "b", &spec(node("", &[]))).is_none());
    }

    fn named(n: usize, annotation: usize) -> Vec<Volume> {
        (0..n)
            .map(|i| {
                let mut v = volume(1, annotation);
                v.meta_mut().name = format!("v{i:03}");
                v
            })
            .collect()
    }

    fn all_pages(items: Vec<Volume>, size: u32, budget: usize) -> Vec<Vec<String>> {
        let mut token = String::new();
        let mut pages = Vec::new();
        loop {
            let (page, next) = page(items.clone(), size, &token, budget).expect("page");
            pages.push(page.iter().map(|v| v.name().to_string()).collect());
            if next.is_empty() {
                return pages;
            }
            token = next;
        }
    }

    #[test]
    fn pages_bound_count_and_bytes_and_cover_everything() {
        let items = named(10, 1000);
        let pages = all_pages(items.clone(), 4, usize::MAX);
        assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [4, 4, 2]);
        // About three items of ~1 KiB fit in 3.5 KiB.
        let pages = all_pages(items.clone(), 1000, 3500);
        assert!(
            pages.iter().all(|p| p.len() == 3 || p.len() == 1),
            "{pages:?}"
        );
        let flat: Vec<String> = pages.concat();
        let want: Vec<String> = items.iter().map(|v| v.name().to_string()).collect();
        assert_eq!(flat, want, "every item once, in name order");
        // One item larger than the budget still comes, alone.
        let pages = all_pages(named(2, 5000), 1000, 100);
        assert_eq!(pages.len(), 2);
    }

    #[test]
    fn unpaged_lists_that_do_not_fit_are_refused_not_cut() {
        let (all, next) = page(named(3, 100), 0, "", usize::MAX).expect("fits");
        assert_eq!((all.len(), next.as_str()), (3, ""));
        let e = page(named(10, 1000), 0, "", 3500)
            .expect_err("does not fit")
            .to_string();
        assert!(e.contains("the 10 volumes are "), "{e}");
        assert!(e.contains("set page_size"), "{e}");
    }

    #[test]
    fn limits_are_checked_against_the_message_size() {
        let l = ObjectLimits::default();
        l.check(4 << 20).expect("defaults");
        assert!(
            l.check(512 << 10).is_err(),
            "256 KiB is more than a quarter"
        );
        let bad = ObjectLimits {
            max_annotation_value_bytes: 1 << 20,
            ..Default::default()
        };
        assert!(bad.check(4 << 20).is_err());
    }
}
