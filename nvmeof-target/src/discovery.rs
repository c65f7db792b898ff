//! The discovery service: which subsystems a host may see, and where.

use std::net::{IpAddr, SocketAddr};

use ferrofab_nvmeof_wire::spec::identify::{subtype, DiscoveryEntry};

use super::listener::{ListenerKind, ListenerState};
use super::registry::Registry;

/// NVMe/TCP transport type.
const TRTYPE_TCP: u8 = 3;
/// Treq: secure channel not specified; SQ flow control disable supported.
const TREQ: u8 = 0x04;
/// Admin queue size advertised for the I/O controllers.
const ASQSZ: u16 = 32;

/// The discovery log entries `hostnqn` may see: every subsystem that
/// admits it, on every I/O listener. Subsystems it may not use stay
/// hidden, so a host learns nothing about other tenants' volumes.
pub(crate) fn entries_for(
    registry: &Registry,
    listeners: &[std::sync::Arc<ListenerState>],
    hostnqn: &str,
    local: SocketAddr,
) -> Vec<DiscoveryEntry> {
    let mut out = Vec::new();
    for subsys in registry.all() {
        if !subsys.host_allowed(hostnqn) {
            continue;
        }
        for l in listeners.iter().filter(|l| l.kind == ListenerKind::Io) {
            let traddr = advertised_address(l, local);
            out.push(DiscoveryEntry {
                trtype: TRTYPE_TCP,
                adrfam: if traddr.is_ipv4() { 1 } else { 2 },
                subtype: subtype::NVME,
                treq: TREQ,
                portid: l.portid,
                cntlid: ferrofab_nvmeof_wire::spec::CNTLID_DYNAMIC,
                asqsz: ASQSZ,
                trsvcid: l.bound.port().to_string(),
                subnqn: subsys.nqn.clone(),
                traddr: l.advertise.clone().unwrap_or_else(|| traddr.to_string()),
            });
        }
    }
    out
}

/// A listener bound to a wildcard address is reported at the address the
/// host reached the discovery controller on, which is one it can route to.
fn advertised_address(l: &ListenerState, local: SocketAddr) -> IpAddr {
    if l.bound.ip().is_unspecified() {
        local.ip()
    } else {
        l.bound.ip()
    }
}
