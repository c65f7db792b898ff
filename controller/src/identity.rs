//! Who is calling: the identity in the client certificate, as parsed by
//! `ferrofab-pki` (`admin`, `tenant:NAME`, `node:NAME`; CN and identity URI
//! SAN must agree). One parser for the whole project, so the CLI, the agent
//! and the controller can never disagree about who a certificate speaks for.

pub use ferrofab_pki::Identity;
