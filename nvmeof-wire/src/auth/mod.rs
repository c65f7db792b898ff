//! NVMe in-band authentication: DH-HMAC-CHAP (NVMe Base 2.0 section 8.13,
//! Fabrics Authentication Send/Receive).
//!
//! Without it the only thing that tells one host from another is the host
//! NQN the host itself claims, in clear, in every Connect. With a shared
//! secret per host, the controller challenges the host on every queue (and,
//! with a controller secret, the host challenges the controller back), so a
//! peer that only knows the NQN is refused.
//!
//! This module holds what both ends share: the `DHHC-1` secret
//! representation and its transformation ([`secret`]), the hash and
//! Diffie-Hellman primitives ([`crypto`]), and the wire messages
//! ([`msg`]). The state machines live in `target::auth` and `host::auth`.
//! The primitives come from well-kept crates (sha2, hmac, num-bigint); the
//! protocol is written here from the specification.

pub mod crypto;
pub mod msg;
pub mod secret;

pub use crypto::{DhGroup, HashId};
pub use secret::{DhchapSecret, SecretError};

/// Security protocol of the Authentication Send/Receive commands (SECP):
/// 0xE9, the value assigned to NVMe in-band authentication.
pub const SECP_NVME_AUTH: u8 = 0xE9;
/// SPSP0 and SPSP1 of a DH-HMAC-CHAP transaction.
pub const SPSP_DHCHAP: u8 = 0x01;

/// Largest authentication message either side accepts or asks for.
///
/// A named constant, not a setting: the largest legitimate message (a
/// Reply with SHA-512 and an ffdhe8192 public value) is 16 + 2*64 + 1024 =
/// 1168 bytes, so 4 KiB is ample and nothing an operator would tune (the
/// Linux host and target use the same bound). A peer naming a larger
/// length is refused before anything is allocated.
pub const MAX_AUTH_MESSAGE: usize = 4096;

/// Authentication Send/Receive CDW10: SECP in bits 31:24, SPSP1 in 23:16,
/// SPSP0 in 15:8, NSSF in 7:0 (NSSF is 0).
pub fn auth_cdw10() -> u32 {
    (u32::from(SECP_NVME_AUTH) << 24)
        | (u32::from(SPSP_DHCHAP) << 16)
        | (u32::from(SPSP_DHCHAP) << 8)
}

/// Whether a CDW10 names the DH-HMAC-CHAP protocol.
pub fn is_dhchap_cdw10(cdw10: u32) -> bool {
    cdw10 & 0xFFFF_FF00 == auth_cdw10()
}

/// Connect response DW0 bit 17 (AUTHREQ.ATR): the host must run an
/// authentication transaction on this queue before anything else.
pub const CONNECT_ATR: u32 = 1 << 17;
/// Connect response DW0 bit 18 (AUTHREQ.ASCR): authentication with secure
/// channel concatenation required. Never set by this target.
pub const CONNECT_ASCR: u32 = 1 << 18;

/// Per-connection secrets of the host side. Both are optional: no host
/// secret means "do not authenticate" (a controller that requires it then
/// refuses us); a controller secret asks for bidirectional authentication.
#[derive(Clone, Default)]
pub struct HostSecrets {
    pub host: Option<DhchapSecret>,
    pub ctrl: Option<DhchapSecret>,
}

impl std::fmt::Debug for HostSecrets {
    /// Never prints the secrets themselves.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostSecrets")
            .field("host", &self.host.is_some())
            .field("ctrl", &self.ctrl.is_some())
            .finish()
    }
}
