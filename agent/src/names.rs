//! Names from the desired state that become file names.
//!
//! The controller is trusted to say *what* to serve and consume, not
//! *where* on this node's file system: an exposure name is joined to
//! `expose_dir`, an NQN to configfs' `nvmet/subsystems`. A compromised or
//! buggy controller sending `../../etc/shadow` must not make the agent
//! touch anything outside those directories, so every such name is
//! checked as one safe path component with the same function
//! ([`ferrofab_nvmeof_expose::name_problem`]) the FUSE exposure uses,
//! by both drivers, and already when the desired state arrives.

use ferrofab_nvmeof_expose::name_problem;
use ferrofab_proto::v1::{Connection, DesiredState};
use ferrofab_types::Reason;

use crate::problem::Problem;

/// `name` as a single safe path component, or a Problem with `reason`
/// that says which name was refused and why.
pub fn check(reason: Reason, what: &str, name: &str) -> Result<(), Problem> {
    match name_problem(name) {
        None => Ok(()),
        Some(why) => Err(Problem::new(
            reason,
            format!(
                "refused {what} {:?}: {why}; it must be a single file name (no `/`, not `.` or `..`, no control characters, at most 255 bytes)",
                name.escape_debug().to_string()
            ),
        )),
    }
}

/// The file name a connection is exposed under (the volume's name when
/// the controller gives none), checked.
pub fn exposure_name(c: &Connection) -> Result<&str, Problem> {
    let name = if c.exposure_name.is_empty() {
        &c.volume
    } else {
        &c.exposure_name
    };
    check(Reason::InvalidExposureName, "exposure name", name)?;
    Ok(name)
}

/// Every name of `ds` that would be refused later, one message each:
/// checked on arrival so a bad desired state is logged and counted at
/// once; the drivers refuse the objects themselves (with a status).
pub fn refused(ds: &DesiredState) -> Vec<String> {
    let mut out = Vec::new();
    for c in &ds.connections {
        if let Err(p) = exposure_name(c) {
            out.push(format!("attachment {}: {p}", c.attachment));
        }
    }
    for e in &ds.exports {
        if let Err(p) = export_names(&e.subsystem_nqn, &e.allowed_hosts) {
            out.push(format!("export of volume {}: {p}", e.volume));
        }
    }
    out
}

/// The NQNs of an export: each becomes a configfs directory on the kernel
/// driver.
pub fn export_names(nqn: &str, hosts: &[String]) -> Result<(), Problem> {
    check(Reason::InvalidName, "subsystem NQN", nqn)?;
    for h in hosts {
        check(Reason::InvalidName, "allowed host NQN", h)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_single_safe_components_pass() {
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../../etc/shadow",
            "/etc/shadow",
            "a\0b",
            "a\nb",
            "tab\there",
            &"x".repeat(256),
        ] {
            let p = check(Reason::InvalidExposureName, "exposure name", bad).unwrap_err();
            assert_eq!(p.reason, Reason::InvalidExposureName);
            assert!(p.message.contains("single file name"), "{p}");
        }
        for good in [
            "v1",
            "scratch.img",
            "a..b",
            "..a",
            "ümlaut",
            &"x".repeat(255),
        ] {
            check(Reason::InvalidExposureName, "exposure name", good).unwrap();
        }
    }

    #[test]
    fn exposure_falls_back_to_the_volume_and_refusals_name_the_object() {
        let c = Connection {
            attachment: "a1".into(),
            volume: "v1".into(),
            ..Default::default()
        };
        assert_eq!(exposure_name(&c).unwrap(), "v1");
        let bad = Connection {
            exposure_name: "../../etc/shadow".into(),
            ..c
        };
        let ds = DesiredState {
            connections: vec![bad],
            ..Default::default()
        };
        let r = refused(&ds);
        assert_eq!(r.len(), 1);
        assert!(
            r[0].contains("attachment a1") && r[0].contains("etc/shadow"),
            "{r:?}"
        );
    }
}
