//! The holder's wire protocol: one JSON object per line on a Unix socket,
//! one request and one answer per connection.
//!
//! Request: `{"v":1,"op":"hello"|"list"|"ensure"|"remove"|"shutdown",...}`.
//! Answer: `{"ok":true,...}` or `{"ok":false,"error":{"code","message"}}`.
//!
//! `hello` is answered whatever `v` says, so an agent of any version can
//! always learn which protocol a running holder speaks; every other op
//! must carry exactly [`PROTOCOL_VERSION`]. Answers only ever gain
//! optional fields within one protocol version, and readers ignore fields
//! they do not know, so a holder and an agent of different builds that
//! share the protocol version understand each other.

use serde::{Deserialize, Serialize};

use ferrofab_nvmeof_host::ControllerState;
use ferrofab_proto::v1::{Connection, TransportOptions};

/// The protocol this build speaks. Bump on any change an older peer
/// would misread (a new op is fine only if old holders answer it with
/// `UnknownOp`, which they do).
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest request or answer line, in bytes, newline included. An ensure
/// is well under 2 KiB (names are bounded by NAME_MAX and NQN_MAX); a list
/// of many exposures stays far below this. A protocol constant, not a
/// setting: both sides must agree on it.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// A request as sent on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub v: u32,
    #[serde(flatten)]
    pub op: Op,
}

/// What the agent asks of the holder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// Who are you: protocol, version, pid, exposure counts.
    Hello,
    /// Every exposure with its state.
    List,
    /// Make this exposure true (idempotent).
    /// (Boxed: the spec, with its keys, dwarfs the other requests.)
    Ensure { spec: Box<ExposureSpec> },
    /// Detach one attachment (a no-op if absent).
    Remove { attachment: String },
    /// Detach everything, unmount and exit.
    Shutdown,
}

/// One exposure: everything the initiator and the FUSE file need. A
/// change of any field means a reconnect.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExposureSpec {
    pub attachment: String,
    pub volume: String,
    pub exposure_name: String,
    pub subsystem_nqn: String,
    pub address: String,
    pub port: u32,
    pub transport: String,
    /// The namespace UUID the volume must have (empty: not checked).
    pub uuid: String,
    pub read_only: bool,
    /// The host NQN the agent expects the holder to connect as; the
    /// holder refuses a spec naming another identity.
    pub hostnqn: String,
    pub header_digest: bool,
    pub data_digest: bool,
    pub nr_io_queues: u32,
    pub queue_size: u32,
    pub ctrl_loss_tmo: u32,
    /// DH-HMAC-CHAP keys (absent: no authentication). Only over the
    /// holder's private socket; redacted from Debug output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_key: Option<SecretKey>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctrl_key: Option<SecretKey>,
}

/// A key as the holder protocol carries it. A change of generation or
/// fingerprint re-authenticates; it is not a reconnect.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretKey {
    pub secret: String,
    pub generation: u64,
    pub fingerprint: String,
}

impl std::fmt::Debug for SecretKey {
    /// Never the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SecretKey(gen {}, {})",
            self.generation, self.fingerprint
        )
    }
}

impl SecretKey {
    fn from_proto(k: &ferrofab_proto::v1::DhchapKey) -> Self {
        SecretKey {
            secret: k.secret.clone(),
            generation: k.generation,
            fingerprint: k.fingerprint.clone(),
        }
    }

    fn to_proto(&self) -> ferrofab_proto::v1::DhchapKey {
        ferrofab_proto::v1::DhchapKey {
            secret: self.secret.clone(),
            generation: self.generation,
            fingerprint: self.fingerprint.clone(),
        }
    }
}

impl ExposureSpec {
    /// The spec of desired connection `c` for host `hostnqn`.
    pub fn from_connection(c: &Connection, hostnqn: &str) -> Self {
        let o = c.options.unwrap_or_default();
        ExposureSpec {
            attachment: c.attachment.clone(),
            volume: c.volume.clone(),
            exposure_name: c.exposure_name.clone(),
            subsystem_nqn: c.subsystem_nqn.clone(),
            address: c.address.clone(),
            port: c.port,
            transport: c.transport.clone(),
            uuid: c.uuid.clone(),
            read_only: c.read_only,
            hostnqn: hostnqn.to_string(),
            header_digest: o.header_digest,
            data_digest: o.data_digest,
            nr_io_queues: o.nr_io_queues,
            queue_size: o.queue_size,
            ctrl_loss_tmo: o.ctrl_loss_tmo,
            host_key: c.host_key.as_ref().map(SecretKey::from_proto),
            ctrl_key: c.ctrl_key.as_ref().map(SecretKey::from_proto),
        }
    }

    /// The spec without the secrets (their generation and fingerprint
    /// stay), for listings.
    pub fn redacted(mut self) -> Self {
        for k in [&mut self.host_key, &mut self.ctrl_key]
            .into_iter()
            .flatten()
        {
            k.secret.clear();
        }
        self
    }

    /// The connection the holder's reconciler works on.
    pub fn to_connection(&self) -> Connection {
        let o = TransportOptions {
            header_digest: self.header_digest,
            data_digest: self.data_digest,
            nr_io_queues: self.nr_io_queues,
            queue_size: self.queue_size,
            ctrl_loss_tmo: self.ctrl_loss_tmo,
        };
        Connection {
            attachment: self.attachment.clone(),
            volume: self.volume.clone(),
            subsystem_nqn: self.subsystem_nqn.clone(),
            address: self.address.clone(),
            port: self.port,
            transport: self.transport.clone(),
            options: (o != TransportOptions::default()).then_some(o),
            exposure_name: self.exposure_name.clone(),
            read_only: self.read_only,
            uuid: self.uuid.clone(),
            // Informational only; the holder never needs it (a change of
            // expiry is not a reconnect).
            expires_at: None,
            // The local API's word for the mode comes from the agent's
            // desired state; the holder needs only `read_only`.
            access_mode: 0,
            host_key: self.host_key.as_ref().map(SecretKey::to_proto),
            ctrl_key: self.ctrl_key.as_ref().map(SecretKey::to_proto),
            // Metrics labels only; the agent reads it from its own
            // desired state.
            pool: String::new(),
            // Used only by the kernel driver (its status when the kernel
            // cannot authenticate); the built-in initiator can.
            require_auth: false,
        }
    }
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Response {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hello: Option<Hello>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exposures: Option<Vec<ExposureStatus>>,
    /// `ensure`/`remove`: whether anything changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed: Option<bool>,
}

impl Response {
    pub fn ok() -> Self {
        Response {
            ok: true,
            ..Default::default()
        }
    }

    pub fn err(code: &str, message: impl Into<String>) -> Self {
        Response {
            ok: false,
            error: Some(WireError {
                code: code.to_string(),
                message: message.into(),
            }),
            ..Default::default()
        }
    }
}

/// A refused or failed request. `code` is a CamelCase reason (for an
/// `ensure`, the condition reason the agent reports).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct WireError {
    pub code: String,
    pub message: String,
}

/// The `hello` answer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Hello {
    pub protocol: u32,
    /// The holder's build, e.g. `ferrofab-agent 0.1.0`.
    pub version: String,
    pub pid: u32,
    pub expose_dir: String,
    pub hostnqn: String,
    /// Exposures attached now.
    pub exposures: usize,
    /// Whether this holder takes DH-HMAC-CHAP keys in `ensure`
    /// (`ExposureSpec.host_key`/`ctrl_key`). Holders built before keys
    /// existed omit it (false) and refuse a spec carrying them (their
    /// spec denies unknown fields): the agent sends such a holder no keys
    /// and reports the node unable to authenticate, so the controller
    /// issues none. An announcement rather than a protocol bump because
    /// a bump would leave every running holder with exposures unmanaged
    /// (`HolderOutdated`) after an agent upgrade.
    pub dhchap_keys: bool,
}

/// One exposure as `list` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ExposureStatus {
    pub spec: ExposureSpec,
    /// Controller state: `live`, `reconnecting`, `failed`, `closed`.
    pub state: String,
    /// Whether the file is in the FUSE directory.
    pub exposed: bool,
    pub path: String,
    pub size_bytes: u64,
}

impl ExposureStatus {
    /// The controller state (an unknown word reads as `Failed`).
    pub fn controller_state(&self) -> ControllerState {
        match self.state.as_str() {
            "live" => ControllerState::Live,
            "reconnecting" => ControllerState::Reconnecting,
            "closed" => ControllerState::Closed,
            _ => ControllerState::Failed,
        }
    }
}

/// The wire word of a controller state.
pub fn state_word(s: ControllerState) -> &'static str {
    match s {
        ControllerState::Live => "live",
        ControllerState::Reconnecting => "reconnecting",
        ControllerState::Failed => "failed",
        ControllerState::Closed => "closed",
    }
}

/// Why a request line was refused, with the code the answer carries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("request line longer than {MAX_LINE_BYTES} bytes")]
    TooLong,
    #[error("request is not valid UTF-8 JSON: {0}")]
    BadJson(String),
    #[error("request has no numeric protocol version \"v\"")]
    NoVersion,
    #[error("protocol version {got} is not supported (this holder speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion { got: u64 },
    #[error("bad request: {0}")]
    BadRequest(String),
}

impl ProtoError {
    /// The `error.code` of the answer.
    pub fn code(&self) -> &'static str {
        match self {
            ProtoError::TooLong => "LineTooLong",
            ProtoError::BadJson(_) => "BadJson",
            ProtoError::NoVersion => "NoVersion",
            ProtoError::UnsupportedVersion { .. } => "UnsupportedVersion",
            ProtoError::BadRequest(_) => "BadRequest",
        }
    }
}

/// Parses one request line (without its newline). `hello` is accepted
/// under any version; other ops only under [`PROTOCOL_VERSION`].
pub fn parse_request(line: &[u8]) -> Result<Op, ProtoError> {
    if line.len() >= MAX_LINE_BYTES {
        return Err(ProtoError::TooLong);
    }
    let v: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| ProtoError::BadJson(e.to_string()))?;
    let obj = v
        .as_object()
        .ok_or_else(|| ProtoError::BadRequest("not a JSON object".into()))?;
    let version = obj
        .get("v")
        .and_then(serde_json::Value::as_u64)
        .ok_or(ProtoError::NoVersion)?;
    let is_hello = obj.get("op").and_then(serde_json::Value::as_str) == Some("hello");
    if version != u64::from(PROTOCOL_VERSION) && !is_hello {
        return Err(ProtoError::UnsupportedVersion { got: version });
    }
    let mut obj = obj.clone();
    obj.remove("v");
    if is_hello {
        return Ok(Op::Hello);
    }
    serde_json::from_value(serde_json::Value::Object(obj))
        .map_err(|e| ProtoError::BadRequest(e.to_string()))
}

/// Reads one line of at most [`MAX_LINE_BYTES`] from `r` (newline
/// stripped). Never buffers more than the limit, whatever the peer sends.
pub fn read_line<R: std::io::BufRead>(r: &mut R) -> Result<Vec<u8>, LineError> {
    use std::io::{BufRead, Read};
    let mut buf = Vec::new();
    let mut limited = Read::take(r, MAX_LINE_BYTES as u64);
    let n = limited.read_until(b'\n', &mut buf).map_err(LineError::Io)?;
    if n == 0 {
        return Err(LineError::Eof);
    }
    if buf.last() != Some(&b'\n') {
        return Err(if buf.len() >= MAX_LINE_BYTES {
            LineError::TooLong
        } else {
            LineError::Eof
        });
    }
    buf.pop();
    Ok(buf)
}

/// Why no line could be read.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("line longer than {MAX_LINE_BYTES} bytes")]
    TooLong,
    #[error("connection closed before a full line")]
    Eof,
    #[error("{0}")]
    Io(#[source] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(op: &Op) -> Vec<u8> {
        serde_json::to_vec(&Request {
            v: PROTOCOL_VERSION,
            op: op.clone(),
        })
        .unwrap()
    }

    #[test]
    fn every_op_round_trips() {
        let spec = ExposureSpec {
            attachment: "a".into(),
            exposure_name: "v".into(),
            port: 4420,
            ctrl_loss_tmo: 30,
            ..Default::default()
        };
        for op in [
            Op::Hello,
            Op::List,
            Op::Ensure {
                spec: Box::new(spec),
            },
            Op::Remove {
                attachment: "a".into(),
            },
            Op::Shutdown,
        ] {
            assert_eq!(parse_request(&line(&op)).unwrap(), op);
        }
    }

    #[test]
    fn spec_and_connection_convert_both_ways() {
        let c = Connection {
            attachment: "a".into(),
            volume: "v".into(),
            subsystem_nqn: "nqn.x:v".into(),
            address: "10.0.0.1".into(),
            port: 4420,
            transport: "tcp".into(),
            options: Some(TransportOptions {
                header_digest: true,
                data_digest: true,
                nr_io_queues: 2,
                queue_size: 32,
                ctrl_loss_tmo: 45,
            }),
            exposure_name: "v".into(),
            read_only: true,
            uuid: "u".into(),
            expires_at: None,
            access_mode: 0,
            pool: String::new(),
            require_auth: false,
            host_key: Some(ferrofab_proto::v1::DhchapKey {
                secret: "DHHC-1:01:k:".into(),
                generation: 2,
                fingerprint: "f".into(),
            }),
            ctrl_key: None,
        };
        let s = ExposureSpec::from_connection(&c, "nqn.h");
        assert_eq!(s.to_connection(), c);
        // Listings and Debug output carry no secret.
        assert!(!format!("{s:?}").contains("DHHC-1"));
        let listed = s.clone().redacted();
        assert_eq!(listed.host_key.as_ref().map(|k| k.generation), Some(2));
        assert!(!serde_json::to_string(&listed).unwrap().contains("DHHC-1"));
        let plain = Connection { options: None, ..c };
        assert_eq!(
            ExposureSpec::from_connection(&plain, "nqn.h").to_connection(),
            plain
        );
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "BadJson"),
            (b"garbage", "BadJson"),
            (b"\xff\xfe{}", "BadJson"),
            (b"[1,2]", "BadRequest"),
            (b"{\"op\":\"list\"}", "NoVersion"),
            (b"{\"v\":\"1\",\"op\":\"list\"}", "NoVersion"),
            (b"{\"v\":2,\"op\":\"list\"}", "UnsupportedVersion"),
            (b"{\"v\":0,\"op\":\"shutdown\"}", "UnsupportedVersion"),
            (b"{\"v\":1,\"op\":\"fly\"}", "BadRequest"),
            (b"{\"v\":1}", "BadRequest"),
            (b"{\"v\":1,\"op\":\"ensure\"}", "BadRequest"),
            (
                b"{\"v\":1,\"op\":\"ensure\",\"spec\":{\"port\":-1}}",
                "BadRequest",
            ),
            (
                b"{\"v\":1,\"op\":\"remove\",\"attachment\":7}",
                "BadRequest",
            ),
        ];
        for (input, code) in cases {
            let e = parse_request(input).unwrap_err();
            assert_eq!(e.code(), *code, "{:?}: {e}", String::from_utf8_lossy(input));
            assert!(!e.to_string().is_empty());
        }
        let e = parse_request(b"{\"v\":9,\"op\":\"list\"}").unwrap_err();
        assert!(e.to_string().contains("version 9"), "{e}");
    }

    #[test]
    fn hello_is_answered_under_any_version() {
        assert_eq!(
            parse_request(b"{\"v\":99,\"op\":\"hello\",\"new_field\":1}").unwrap(),
            Op::Hello
        );
    }

    #[test]
    fn oversized_lines_are_refused_without_buffering_them() {
        let big = vec![b'x'; MAX_LINE_BYTES * 3];
        let mut r = std::io::Cursor::new(big.clone());
        assert!(matches!(read_line(&mut r), Err(LineError::TooLong)));
        // At most the limit was consumed.
        assert_eq!(r.position(), MAX_LINE_BYTES as u64);
        assert_eq!(parse_request(&big).unwrap_err().code(), "LineTooLong");
        let mut r = std::io::Cursor::new(b"{\"v\":1,\"op\":\"list\"}\nrest".to_vec());
        assert_eq!(
            parse_request(&read_line(&mut r).unwrap()).unwrap(),
            Op::List
        );
        assert!(matches!(read_line(&mut r), Err(LineError::Eof)));
        let mut r = std::io::Cursor::new(Vec::new());
        assert!(matches!(read_line(&mut r), Err(LineError::Eof)));
    }

    #[test]
    fn answers_ignore_unknown_fields() {
        let r: Response =
            serde_json::from_str("{\"ok\":true,\"future\":[1],\"hello\":{\"protocol\":1,\"x\":2}}")
                .unwrap();
        assert!(r.ok);
        assert_eq!(r.hello.unwrap().protocol, 1);
    }
}
