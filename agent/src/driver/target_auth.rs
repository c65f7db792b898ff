//! DH-HMAC-CHAP keys on the built-in target, from the desired state
//! (`Export.host_keys`, `ctrl_key`, `require_auth`).
//!
//! The secrets stay in the target (and this process's memory); what is
//! remembered here is each host's key generation and fingerprint, so that a
//! pass changes the target only when a key really changed, and so that the
//! agent can report which generation the target holds (the controller
//! hands a rotated key to the workstation only after that).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use ferrofab_nvmeof_target::{HostAuth, Target, TargetError};
use ferrofab_nvmeof_wire::auth::DhchapSecret;
use ferrofab_proto::v1::{DhchapKey, Export, KeyApplied};

/// What the target holds for one host: (key generation, fingerprint of the
/// host key, fingerprint of the controller key).
type Held = (u64, String, String);

/// Per subsystem NQN, per host NQN, what was given to the target.
#[derive(Debug, Default)]
pub struct KeyBook {
    held: Mutex<HashMap<String, BTreeMap<String, Held>>>,
}

fn parse(k: &DhchapKey, what: &str, nqn: &str) -> Result<DhchapSecret, TargetError> {
    // The error never includes the secret (SecretError's messages do not).
    DhchapSecret::parse(&k.secret)
        .map_err(|e| TargetError::InvalidOption(format!("{what} for {nqn}: {e}")))
}

impl KeyBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, BTreeMap<String, Held>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the keys and the policy of `e`'s subsystem exactly what `e`
    /// says. Keys go in before the caller admits new hosts, so a host
    /// that must authenticate is never let in without.
    pub fn sync(&self, target: &Target, e: &Export) -> Result<(), TargetError> {
        let nqn = &e.subsystem_nqn;
        let ctrl_fp = e
            .ctrl_key
            .as_ref()
            .map(|k| k.fingerprint.clone())
            .unwrap_or_default();
        let mut book = self.lock();
        let have = book.entry(nqn.clone()).or_default();
        for hk in &e.host_keys {
            let Some(key) = &hk.key else { continue };
            let want: Held = (key.generation, key.fingerprint.clone(), ctrl_fp.clone());
            if have.get(&hk.host_nqn) == Some(&want) {
                continue;
            }
            let ctrl_key = match &e.ctrl_key {
                Some(c) => Some(parse(c, "controller key", nqn)?),
                None => None,
            };
            let auth = HostAuth {
                key: parse(key, "host key", &hk.host_nqn)?,
                ctrl_key,
                hash: None,
                dhgroup: None,
            };
            target.set_host_key(nqn, &hk.host_nqn, auth)?;
            tracing::info!(%nqn, host = %hk.host_nqn, generation = key.generation,
                fingerprint = %key.fingerprint, "host key applied");
            have.insert(hk.host_nqn.clone(), want);
        }
        let gone: Vec<String> = have
            .keys()
            .filter(|h| !e.host_keys.iter().any(|k| &k.host_nqn == *h))
            .cloned()
            .collect();
        for h in gone {
            target.remove_host_key(nqn, &h)?;
            have.remove(&h);
        }
        target.set_require_auth(nqn, e.require_auth)
    }

    /// The generation of each host key the target holds for `nqn`.
    pub fn applied(&self, nqn: &str) -> Vec<KeyApplied> {
        self.lock()
            .get(nqn)
            .map(|m| {
                m.iter()
                    .map(|(h, (g, _, _))| KeyApplied {
                        host_nqn: h.clone(),
                        generation: *g,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Forgets a removed subsystem.
    pub fn forget(&self, nqn: &str) {
        self.lock().remove(nqn);
    }
}
