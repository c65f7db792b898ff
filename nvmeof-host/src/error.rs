//! Errors of the initiator.
//!
//! Every message names the peer (address, subsystem NQN, queue) and what was
//! being done, because a host typically talks to many controllers at once
//! and an error without its peer is useless in a log. The enum is `Clone`
//! so one failure (say, a lost connection) can be handed to every command
//! that was in flight on it.

use std::io;
use std::sync::Arc;

use ferrofab_nvmeof_wire::spec::status::Status;

#[derive(Debug, Clone, thiserror::Error)]
pub enum HostError {
    /// TCP connect or socket set-up failed.
    #[error("cannot reach {addr} (queue {qid}): {source}")]
    Unreachable {
        addr: String,
        qid: u16,
        #[source]
        source: Arc<io::Error>,
    },
    /// The controller's ICResp broke the rules of NVMe/TCP.
    #[error("ICResp from {addr} (queue {qid}) rejected: {why}")]
    BadIcResp { addr: String, qid: u16, why: String },
    /// The controller refused a Connect command.
    #[error("connect to {subnqn} at {addr} refused: {reason} ({})", status.describe())]
    ConnectRejected {
        subnqn: String,
        addr: String,
        reason: String,
        status: Status,
    },
    /// A command completed with an error status.
    #[error("{cmd} failed on {subnqn} at {addr}: {status}")]
    Command {
        cmd: String,
        subnqn: String,
        addr: String,
        status: Status,
    },
    /// The peer sent something that breaks the protocol; the connection was
    /// closed.
    #[error("protocol error from {addr} (queue {qid}): {why}")]
    Protocol { addr: String, qid: u16, why: String },
    /// A connection broke (reset, closed by the peer, keep-alive timeout).
    #[error("connection to {addr} (queue {qid}) lost: {why}")]
    ConnectionLost { addr: String, qid: u16, why: String },
    /// A command or state change did not finish in time.
    #[error("{what} on {addr} timed out after {after_ms} ms")]
    Timeout {
        what: String,
        addr: String,
        after_ms: u64,
    },
    /// The data digest of received data did not match; the data was
    /// discarded.
    #[error("data digest mismatch on data from {addr} (queue {qid})")]
    DataDigest { addr: String, qid: u16 },
    /// The controller did not come back within ctrl-loss-tmo; pending and
    /// new I/O fail with this.
    #[error("controller {subnqn} at {addr} lost: could not reconnect within {tmo_s} s ({last})")]
    ControllerLost {
        subnqn: String,
        addr: String,
        tmo_s: u64,
        last: String,
    },
    /// The controller was disconnected by this host.
    #[error("controller {subnqn} at {addr} is disconnected")]
    Disconnected { subnqn: String, addr: String },
    /// The controller reported a fatal status or would not become ready.
    #[error("controller {subnqn} at {addr}: {why}")]
    Controller {
        subnqn: String,
        addr: String,
        why: String,
    },
    /// In-band authentication (DH-HMAC-CHAP) failed on a queue: a wrong
    /// key on either side, no key where one is required, nothing in common,
    /// or a controller that could not prove itself.
    #[error("authentication with {subnqn} at {addr} failed (queue {qid}): {why}")]
    AuthenticationFailed {
        subnqn: String,
        addr: String,
        qid: u16,
        why: String,
    },
    /// The caller asked for something impossible (unaligned I/O, beyond the
    /// end of the namespace, unknown namespace, bad NQN).
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// Reading or creating the host NQN / host ID files failed.
    #[error("host identity: {what} {path}: {source}")]
    Identity {
        what: &'static str,
        path: String,
        #[source]
        source: Arc<io::Error>,
    },
}

impl HostError {
    /// Whether the command may succeed if sent again on a new association.
    /// Used to decide what stays pending across a reconnect.
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            HostError::ConnectionLost { .. }
                | HostError::Protocol { .. }
                | HostError::Timeout { .. }
        )
    }

    /// Whether this is an authentication failure (a Connect refused with
    /// Authentication Required counts too).
    pub fn is_auth_failure(&self) -> bool {
        match self {
            HostError::AuthenticationFailed { .. } => true,
            HostError::ConnectRejected { status, .. } | HostError::Command { status, .. } => {
                *status == Status::AUTH_REQUIRED
            }
            _ => false,
        }
    }

    /// The NVMe status, if the error is a completion status.
    pub fn status(&self) -> Option<Status> {
        match self {
            HostError::Command { status, .. } | HostError::ConnectRejected { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }
}

impl From<HostError> for io::Error {
    fn from(e: HostError) -> io::Error {
        let kind = match &e {
            HostError::InvalidArgument(_) => io::ErrorKind::InvalidInput,
            HostError::Timeout { .. } => io::ErrorKind::TimedOut,
            HostError::Unreachable { .. } => io::ErrorKind::ConnectionRefused,
            HostError::ConnectionLost { .. } => io::ErrorKind::ConnectionAborted,
            HostError::Disconnected { .. } | HostError::ControllerLost { .. } => {
                io::ErrorKind::NotConnected
            }
            HostError::ConnectRejected { .. } | HostError::AuthenticationFailed { .. } => {
                io::ErrorKind::PermissionDenied
            }
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_rejected_message_names_everything() {
        let e = HostError::ConnectRejected {
            subnqn: "nqn.x".into(),
            addr: "10.0.0.1:4420".into(),
            reason: "host nqn.y not allowed".into(),
            status: Status::CONNECT_INVALID_HOST,
        };
        assert_eq!(
            e.to_string(),
            "connect to nqn.x at 10.0.0.1:4420 refused: host nqn.y not allowed (connect: host not allowed)"
        );
        let io: io::Error = e.into();
        assert_eq!(io.kind(), io::ErrorKind::PermissionDenied);
    }
}
