//! Reading fabrics controllers and their namespaces back from sysfs.
//!
//! With native multipath (on in Debian) a controller `nvmeC` lists its
//! per-path nodes `nvmeScCnN`, which are hidden; the block device is the
//! subsystem head `nvmeSnN`. Without multipath the controller lists
//! `nvmeCnN` directly. Both are mapped to the device node name here.

use std::path::PathBuf;

use super::{entries, read_attr, KernelPaths};

/// One fabrics controller as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ControllerInfo {
    pub name: String,
    pub subsysnqn: String,
    pub hostnqn: String,
    pub transport: String,
    /// `traddr=...,trsvcid=...[,src_addr=...]`
    pub address: String,
    /// `live`, `connecting`, `resetting`, `deleting`, `dead`, ...
    pub state: String,
}

impl ControllerInfo {
    /// One `key=value` of the address attribute.
    pub fn address_field(&self, key: &str) -> Option<&str> {
        self.address.split(',').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k.trim() == key).then_some(v.trim())
        })
    }
}

fn class_nvme(paths: &KernelPaths) -> PathBuf {
    paths.sysfs.join("class/nvme")
}

/// The controller `name` (`nvme3`), if it exists.
pub fn controller(paths: &KernelPaths, name: &str) -> Option<ControllerInfo> {
    let dir = class_nvme(paths).join(name);
    if !dir.exists() {
        return None;
    }
    let attr = |a: &str| read_attr(&dir.join(a)).unwrap_or_default();
    Some(ControllerInfo {
        name: name.to_string(),
        subsysnqn: attr("subsysnqn"),
        hostnqn: attr("hostnqn"),
        transport: attr("transport"),
        address: attr("address"),
        state: attr("state"),
    })
}

/// Every controller in `/sys/class/nvme`.
pub fn controllers(paths: &KernelPaths) -> Vec<ControllerInfo> {
    entries(&class_nvme(paths))
        .iter()
        .filter_map(|n| controller(paths, n))
        .collect()
}

/// `nvmeScCnN` (a hidden path node) → `nvmeSnN`; `nvmeCnN` unchanged;
/// anything else → `None`.
pub fn block_name(entry: &str) -> Option<String> {
    let rest = entry.strip_prefix("nvme")?;
    let (head, ns) = rest.split_once('n')?;
    if ns.is_empty() || !ns.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let subsys = match head.split_once('c') {
        Some((s, c)) if c.bytes().all(|b| b.is_ascii_digit()) && !c.is_empty() => s,
        Some(_) => return None,
        None => head,
    };
    if subsys.is_empty() || !subsys.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(format!("nvme{subsys}n{ns}"))
}

/// The block device name of namespace `nsid` of controller `ctrl`, checked
/// against `uuid` when the namespace reports one.
pub fn find_namespace(
    paths: &KernelPaths,
    ctrl: &str,
    nsid: u32,
    uuid: Option<uuid::Uuid>,
) -> Result<Option<String>, String> {
    let block = paths.sysfs.join("class/block");
    for entry in entries(&class_nvme(paths).join(ctrl)) {
        let Some(name) = block_name(&entry) else {
            continue;
        };
        let dir = block.join(&name);
        let id: Option<u32> = read_attr(&dir.join("nsid")).and_then(|s| s.parse().ok());
        if id != Some(nsid) {
            continue;
        }
        let got = read_attr(&dir.join("uuid")).and_then(|s| uuid::Uuid::parse_str(&s).ok());
        if let (Some(want), Some(got)) = (uuid, got) {
            if want != got && !got.is_nil() {
                return Err(format!(
                    "namespace {nsid} of {ctrl} ({name}) has UUID {got}, not the volume's {want}"
                ));
            }
        }
        return Ok(Some(name));
    }
    Ok(None)
}

#[cfg(test)]
pub(crate) mod fake {
    use super::*;

    /// Adds controller `ctrl` listing `path_node`, namespace 1 of block
    /// device `block`.
    pub fn controller(
        paths: &KernelPaths,
        ctrl: &str,
        nqn: &str,
        path_node: &str,
        block: &str,
        uuid: &str,
    ) {
        let c = class_nvme(paths).join(ctrl);
        std::fs::create_dir_all(c.join(path_node)).unwrap();
        for (a, v) in [
            ("subsysnqn", nqn),
            ("transport", "tcp"),
            ("address", "traddr=10.0.2.2,trsvcid=4420"),
            ("state", "live"),
        ] {
            std::fs::write(c.join(a), format!("{v}\n")).unwrap();
        }
        let b = paths.sysfs.join("class/block").join(block);
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(b.join("nsid"), "1\n").unwrap();
        std::fs::write(b.join("uuid"), format!("{uuid}\n")).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::kernel::testing;

    #[test]
    fn path_nodes_map_to_heads() {
        assert_eq!(block_name("nvme1c3n2").as_deref(), Some("nvme1n2"));
        assert_eq!(block_name("nvme0n1").as_deref(), Some("nvme0n1"));
        for bad in [
            "nvme0",
            "nvme-fabrics",
            "nvmexn1",
            "nvme1c3n",
            "power",
            "nvme1cxn1",
        ] {
            assert_eq!(block_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn finds_the_namespace_and_checks_its_uuid() {
        let root = tempfile::tempdir().unwrap();
        let p = testing::paths(root.path());
        let u = uuid::Uuid::new_v4();
        fake::controller(&p, "nvme3", "nqn.s", "nvme1c3n1", "nvme1n1", &u.to_string());
        assert_eq!(
            find_namespace(&p, "nvme3", 1, Some(u)).unwrap().as_deref(),
            Some("nvme1n1")
        );
        assert_eq!(find_namespace(&p, "nvme3", 2, Some(u)).unwrap(), None);
        assert!(find_namespace(&p, "nvme3", 1, Some(uuid::Uuid::new_v4())).is_err());
        let c = controller(&p, "nvme3").unwrap();
        assert_eq!(c.subsysnqn, "nqn.s");
        assert_eq!(c.address_field("trsvcid"), Some("4420"));
        assert_eq!(controllers(&p).len(), 1);
        assert_eq!(controller(&p, "nvme9"), None);
    }
}
