//! DH-HMAC-CHAP on the built-in initiator, from the desired state
//! (`Connection.host_key`, `ctrl_key`): the secrets a connect uses, and
//! key rotation on a live controller (re-authentication, no reconnect).

use ferrofab_nvmeof_host::Controller;
use ferrofab_nvmeof_wire::auth::DhchapSecret;
use ferrofab_proto::v1::{Connection, DhchapKey};
use tracing::{info, warn};

use crate::problem::Problem;

fn parse(k: Option<&DhchapKey>, what: &str) -> Option<DhchapSecret> {
    let k = k?;
    match DhchapSecret::parse(&k.secret) {
        Ok(s) => Some(s),
        Err(e) => {
            // Never the secret itself: SecretError does not carry it.
            warn!(generation = k.generation, error = %e, "unusable {what} from the controller; ignored");
            None
        }
    }
}

/// The host and controller secrets connection `c` authenticates with.
pub fn secrets(c: &Connection) -> (Option<DhchapSecret>, Option<DhchapSecret>) {
    (
        parse(c.host_key.as_ref(), "host key"),
        parse(c.ctrl_key.as_ref(), "controller key"),
    )
}

/// The generation and fingerprint of a key (what may be compared and shown).
fn id(k: Option<&DhchapKey>) -> Option<(u64, &str)> {
    k.map(|k| (k.generation, k.fingerprint.as_str()))
}

/// When the keys of a live connection changed (a rotation), gives the
/// controller the new ones and re-authenticates every queue with them.
/// I/O goes on meanwhile; a failure is a status, and the next pass tries
/// again (the old keys are kept until one succeeds).
pub fn follow_keys(ctrl: &Controller, old: &Connection, new: &Connection) -> Result<(), Problem> {
    if id(old.host_key.as_ref()) == id(new.host_key.as_ref())
        && id(old.ctrl_key.as_ref()) == id(new.ctrl_key.as_ref())
    {
        return Ok(());
    }
    if new.host_key.is_none() {
        // The controller does not know yet which key the target holds
        // (it restarted): keep the keys this session authenticated with.
        return Ok(());
    }
    let (host, ctrl_key) = secrets(new);
    ctrl.set_dhchap_secrets(host, ctrl_key).map_err(|e| {
        Problem::new(
            "ReauthenticationFailed",
            format!("re-authenticating with the new key failed: {e}"),
        )
    })?;
    info!(
        generation = new.host_key.as_ref().map_or(0, |k| k.generation),
        "re-authenticated with the rotated key"
    );
    Ok(())
}
