//! The DH-HMAC-CHAP state each queue carries (see `auth` for the state
//! machine that drives it).
//!
//! It sits below the connection (which holds it) and the authentication
//! handlers (which advance it), so neither imports the other.

use std::sync::Arc;

use ferrofab_nvmeof_wire::auth::crypto::DhKeyPair;
use ferrofab_nvmeof_wire::auth::msg::FailureReason;
use ferrofab_nvmeof_wire::auth::HashId;

use super::registry::HostAuth;

/// Authentication state of one queue whose host has a key.
#[derive(Default)]
pub(crate) struct QueueAuth {
    pub authenticated: bool,
    /// The controller counts this queue as authenticating (its first
    /// transaction has not succeeded yet).
    pub counted: bool,
    pub(crate) step: Step,
}

impl QueueAuth {
    /// A queue about to authenticate; `counted` when it holds the
    /// controller's authentication deadline (see `Controller::begin_auth`).
    pub(crate) fn new(counted: bool) -> QueueAuth {
        QueueAuth {
            counted,
            ..QueueAuth::default()
        }
    }
}

#[derive(Default)]
pub(crate) enum Step {
    /// Waiting for AUTH_Negotiate.
    #[default]
    Idle,
    /// Negotiated: the next Receive returns the challenge.
    ChallengeReady(Box<Txn>),
    /// Challenge sent: waiting for the Reply.
    AwaitReply(Box<Txn>),
    /// The Reply checked out: the next Receive returns Success1.
    Success1Ready {
        tid: u16,
        hl: u8,
        response: Option<Vec<u8>>,
    },
    /// Success1 with the controller's response sent: waiting for the
    /// host to accept it.
    AwaitSuccess2 { tid: u16 },
    /// The next Receive returns AUTH_Failure1.
    FailureReady { tid: u16, reason: FailureReason },
}

/// One transaction's choices and secrets.
pub(crate) struct Txn {
    pub(crate) tid: u16,
    pub(crate) hash: HashId,
    pub(crate) dh: Option<DhKeyPair>,
    pub(crate) seqnum: u32,
    pub(crate) challenge: Vec<u8>,
    pub(crate) auth: Arc<HostAuth>,
}

impl QueueAuth {
    /// Whether a command other than Authentication Send/Receive (and
    /// Disconnect) may run.
    pub fn allows_commands(&self) -> bool {
        self.authenticated
    }
}
