//! `dev.toml`: the ports a directory's cluster keeps from one run to the
//! next, and how free loopback ports are picked on the first run.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

use super::paths::{write_atomic, Paths};
use super::PORT_RANGE;

/// What must stay the same from one run to the next.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DevState {
    /// Controller gRPC (mTLS) port; in client.toml and the agents' configs.
    pub(super) controller_port: u16,
    /// Controller /metrics and /healthz (plain HTTP).
    pub(super) http_port: u16,
    /// The storage node's NVMe/TCP port, registered in its node spec.
    pub(super) data_port: u16,
    /// The HTTPS JSON API and dashboard; 0 in a dev.toml from before it
    /// existed, and then picked (and saved) at the next start.
    #[serde(default)]
    pub(super) api_port: u16,
    /// The demo layout is applied once; later runs leave the objects as
    /// the user changed them (a re-apply would undo a resize or delete).
    #[serde(default)]
    pub(super) layout_applied: bool,
}

impl DevState {
    pub(super) fn load_or_create(paths: &Paths) -> anyhow::Result<Self> {
        let path = paths.state();
        match std::fs::read_to_string(&path) {
            Ok(t) => {
                let mut st: Self =
                    toml::from_str(&t).with_context(|| path.display().to_string())?;
                if st.api_port == 0 {
                    let taken = [st.controller_port, st.http_port, st.data_port];
                    st.api_port = pick_port(&taken, &mut port_seed())?;
                    st.save(paths)?;
                }
                st.check_ports_free(&path)?;
                Ok(st)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let st = Self::fresh()?;
                st.save(paths)?;
                Ok(st)
            }
            Err(e) => Err(e).with_context(|| path.display().to_string()),
        }
    }

    pub(super) fn fresh() -> anyhow::Result<Self> {
        let mut seed = port_seed();
        let mut taken = Vec::new();
        for _ in 0..4 {
            let p = pick_port(&taken, &mut seed)?;
            taken.push(p);
        }
        Ok(Self {
            controller_port: taken[0],
            http_port: taken[1],
            data_port: taken[2],
            api_port: taken[3],
            layout_applied: false,
        })
    }

    pub(super) fn save(&self, paths: &Paths) -> anyhow::Result<()> {
        let body = toml::to_string_pretty(self).context("encoding dev.toml")?;
        let text =
            format!("# Written by `ferrofab dev`: the ports of this directory's cluster.\n{body}");
        write_atomic(&paths.state(), &text)
    }

    /// A saved port someone else now uses would otherwise surface as a
    /// bind error deep in the controller or, for the data port, as an
    /// attachment that never becomes ready.
    pub(super) fn check_ports_free(&self, path: &Path) -> anyhow::Result<()> {
        for (what, port) in [
            ("controller_port", self.controller_port),
            ("http_port", self.http_port),
            ("data_port", self.data_port),
            ("api_port", self.api_port),
        ] {
            if !port_free(port) {
                bail!(
                    "port {port} ({what} in {}) is in use by another program; stop it and retry",
                    path.display()
                );
            }
        }
        Ok(())
    }
}

pub(super) fn port_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// A free loopback port in [`PORT_RANGE`] not already in `taken`.
pub(super) fn pick_port(taken: &[u16], seed: &mut u64) -> anyhow::Result<u16> {
    let span = u64::from(PORT_RANGE.end - PORT_RANGE.start);
    for _ in 0..500 {
        *seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let port = PORT_RANGE.start + ((*seed >> 33) % span) as u16;
        if !taken.contains(&port) && port_free(port) {
            return Ok(port);
        }
    }
    bail!(
        "no free loopback port found in {}..{}",
        PORT_RANGE.start,
        PORT_RANGE.end
    )
}

pub(super) fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picked_ports_are_distinct_and_in_range() {
        let st = DevState::fresh().unwrap();
        let ports = [st.controller_port, st.http_port, st.data_port];
        for p in ports {
            assert!(PORT_RANGE.contains(&p), "{p}");
        }
        assert_ne!(ports[0], ports[1]);
        assert_ne!(ports[1], ports[2]);
        assert_ne!(ports[0], ports[2]);
        let back: DevState = toml::from_str(&toml::to_string(&st).unwrap()).unwrap();
        assert_eq!(back.data_port, st.data_port);
    }
}
