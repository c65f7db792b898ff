//! Host connect and disconnect through the kernel's fabrics interface.
//!
//! Connecting is one `write()` of a comma-separated option string to
//! `/dev/nvme-fabrics`; the kernel answers `instance=N,cntlid=M` on a
//! `read()` of the *same* open file. Disconnecting is writing `1` to
//! `/sys/class/nvme/nvmeN/delete_controller`.

use std::io::{self, Read, Write};

use ferrofab_proto::v1::Connection;

use super::KernelPaths;

/// Keep-alive timeout the agent asks for, in seconds (the kernel's own
/// default, written explicitly so the option string says what is used).
pub const KEEP_ALIVE_TMO: u32 = 5;

/// Everything the host driver is told on connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectParams {
    pub transport: String,
    pub traddr: String,
    pub trsvcid: String,
    pub nqn: String,
    pub hostnqn: String,
    pub hostid: String,
    pub nr_io_queues: Option<u32>,
    pub queue_size: Option<u32>,
    pub ctrl_loss_tmo: Option<u32>,
    pub keep_alive_tmo: u32,
    pub hdr_digest: bool,
    pub data_digest: bool,
}

impl ConnectParams {
    /// The parameters for a desired connection.
    pub fn for_connection(c: &Connection, hostnqn: &str, hostid: &str) -> Self {
        let opts = c.options.unwrap_or_default();
        let nonzero = |v: u32| (v > 0).then_some(v);
        ConnectParams {
            transport: if c.transport.is_empty() {
                "tcp".into()
            } else {
                c.transport.to_lowercase()
            },
            traddr: c
                .address
                .trim_matches(|ch| ch == '[' || ch == ']')
                .to_string(),
            trsvcid: if c.port == 0 { 4420 } else { c.port }.to_string(),
            nqn: c.subsystem_nqn.clone(),
            hostnqn: hostnqn.into(),
            hostid: hostid.into(),
            nr_io_queues: nonzero(opts.nr_io_queues),
            queue_size: nonzero(opts.queue_size),
            ctrl_loss_tmo: nonzero(opts.ctrl_loss_tmo),
            keep_alive_tmo: KEEP_ALIVE_TMO,
            hdr_digest: opts.header_digest,
            data_digest: opts.data_digest,
        }
    }

    /// The option string, or which value cannot be expressed in it (the
    /// kernel splits on `,` and `=`, so those may not appear in values).
    pub fn option_string(&self) -> Result<String, String> {
        let mut parts: Vec<(&str, String)> = vec![
            ("transport", self.transport.clone()),
            ("traddr", self.traddr.clone()),
            ("trsvcid", self.trsvcid.clone()),
            ("nqn", self.nqn.clone()),
            ("hostnqn", self.hostnqn.clone()),
            ("hostid", self.hostid.clone()),
        ];
        for (k, v) in [
            ("nr_io_queues", self.nr_io_queues),
            ("queue_size", self.queue_size),
            ("ctrl_loss_tmo", self.ctrl_loss_tmo),
            ("keep_alive_tmo", Some(self.keep_alive_tmo)),
        ] {
            if let Some(v) = v {
                parts.push((k, v.to_string()));
            }
        }
        let mut out = Vec::new();
        for (k, v) in parts {
            if v.is_empty() || v.contains([',', '=', '\n']) {
                return Err(format!(
                    "connect option {k}={v:?} is empty or contains ',', '=' or a newline"
                ));
            }
            out.push(format!("{k}={v}"));
        }
        if self.hdr_digest {
            out.push("hdr_digest".into());
        }
        if self.data_digest {
            out.push("data_digest".into());
        }
        Ok(out.join(","))
    }
}

/// The DH-HMAC-CHAP options of connection `c` (`,dhchap_secret=…` and
/// `,dhchap_ctrl_secret=…`), appended to the recorded option string only
/// when it is written: they are never recorded or logged. The error names
/// the option, never its value.
pub fn secret_options(c: &Connection) -> Result<String, String> {
    let mut out = String::new();
    for (k, key) in [
        ("dhchap_secret", c.host_key.as_ref()),
        ("dhchap_ctrl_secret", c.ctrl_key.as_ref()),
    ] {
        let Some(key) = key else { continue };
        let v = key.secret.as_str();
        if !v.starts_with("DHHC-1:") || v.contains([',', '\n']) {
            return Err(format!(
                "connect option {k} (key generation {}) is not a DHHC-1 secret or contains ',' or a newline",
                key.generation
            ));
        }
        out.push_str(&format!(",{k}={v}"));
    }
    Ok(out)
}

/// Writes `options` to `/dev/nvme-fabrics`; returns the new controller's
/// name (`nvmeN`).
pub fn connect(paths: &KernelPaths, options: &str) -> io::Result<String> {
    let dev = paths.dev.join("nvme-fabrics");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&dev)?;
    f.write_all(options.as_bytes())?;
    let mut reply = String::new();
    f.read_to_string(&mut reply)?;
    parse_reply(&reply)
        .map(|n| format!("nvme{n}"))
        .ok_or_else(|| {
            io::Error::other(format!(
                "unexpected answer {reply:?} from {}",
                dev.display()
            ))
        })
}

/// The instance number in `instance=N,cntlid=M`.
pub fn parse_reply(reply: &str) -> Option<u32> {
    reply
        .trim()
        .split(',')
        .find_map(|kv| kv.strip_prefix("instance="))
        .and_then(|n| n.parse().ok())
}

/// Deletes controller `ctrl` (`nvmeN`): the kernel flushes, shuts it down
/// and removes its block devices.
pub fn delete_controller(paths: &KernelPaths, ctrl: &str) -> io::Result<()> {
    let p = paths
        .sysfs
        .join("class/nvme")
        .join(ctrl)
        .join("delete_controller");
    paths.write_attr(&p, "1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrofab_proto::v1::TransportOptions;

    #[test]
    fn secrets_are_appended_only_when_given_and_checked() {
        let key = |s: &str| {
            Some(ferrofab_proto::v1::DhchapKey {
                secret: s.into(),
                generation: 2,
                fingerprint: "f".into(),
            })
        };
        let mut c = Connection::default();
        assert_eq!(secret_options(&c).unwrap(), "");
        c.host_key = key("DHHC-1:01:aGVsbG8=:");
        assert_eq!(
            secret_options(&c).unwrap(),
            ",dhchap_secret=DHHC-1:01:aGVsbG8=:"
        );
        c.ctrl_key = key("DHHC-1:00:Y3RybA==:");
        assert_eq!(
            secret_options(&c).unwrap(),
            ",dhchap_secret=DHHC-1:01:aGVsbG8=:,dhchap_ctrl_secret=DHHC-1:00:Y3RybA==:"
        );
        // A value that would smuggle in another option is refused, and the
        // message does not repeat it.
        c.ctrl_key = key("DHHC-1:00:x,nqn=evil:");
        let m = secret_options(&c).unwrap_err();
        assert!(
            m.contains("dhchap_ctrl_secret") && !m.contains("evil"),
            "{m}"
        );
        c.ctrl_key = key("plain");
        assert!(secret_options(&c).is_err());
    }

    #[test]
    fn option_string_has_every_option() {
        let c = Connection {
            subsystem_nqn: "nqn.2026-11.io.ferrofab:v1".into(),
            address: "10.0.2.2".into(),
            port: 4421,
            options: Some(TransportOptions {
                header_digest: true,
                data_digest: true,
                nr_io_queues: 2,
                queue_size: 0,
                ctrl_loss_tmo: 60,
            }),
            ..Default::default()
        };
        let p = ConnectParams::for_connection(&c, "nqn.h", "0f0e-11");
        assert_eq!(
            p.option_string().unwrap(),
            "transport=tcp,traddr=10.0.2.2,trsvcid=4421,nqn=nqn.2026-11.io.ferrofab:v1,\
             hostnqn=nqn.h,hostid=0f0e-11,nr_io_queues=2,ctrl_loss_tmo=60,keep_alive_tmo=5,\
             hdr_digest,data_digest"
        );
        let bad = ConnectParams {
            nqn: "a,b".into(),
            ..p
        };
        assert!(bad.option_string().unwrap_err().contains("nqn"));
    }

    #[test]
    fn ipv6_addresses_lose_brackets() {
        let c = Connection {
            address: "[::1]".into(),
            ..Default::default()
        };
        let p = ConnectParams::for_connection(&c, "h", "i");
        assert_eq!(p.traddr, "::1");
        assert_eq!(p.trsvcid, "4420");
    }

    #[test]
    fn replies_parse() {
        assert_eq!(parse_reply("instance=3,cntlid=1\n"), Some(3));
        assert_eq!(parse_reply("cntlid=1"), None);
        assert_eq!(parse_reply(""), None);
    }
}
