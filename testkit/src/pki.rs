//! Certificates for the tests, from `ferrofab-pki`, exactly as
//! `ferrofab pki init` and `ferrofab pki issue` make them in production.

use std::path::Path;
use std::time::{Duration, SystemTime};

use ferrofab_pki::{Ca, Identity, InitOptions, PkiDir, Validity};

/// A day: the validity of every certificate the kit issues.
pub const DAY: Duration = Duration::from_secs(86_400);

/// A certificate and its key, PEM.
#[derive(Clone)]
pub struct Cred {
    pub cert: String,
    pub key: String,
}

/// A CA that issues client certificates for the tests.
pub struct TestPki {
    pub ca_cert: String,
    ca: Ca,
}

impl TestPki {
    /// A CA of its own, unrelated to any controller (for "unknown CA" tests).
    pub fn new(_name: &str) -> Self {
        let ca = Ca::generate(Validity::from_now(DAY).expect("validity")).expect("CA");
        Self::from_ca(ca)
    }

    /// The CA of a `pki init` directory.
    pub fn load(dir: &Path) -> Self {
        Self::from_ca(PkiDir::new(dir).load_ca().expect("load CA"))
    }

    fn from_ca(ca: Ca) -> Self {
        Self {
            ca_cert: ca.cert_pem().to_string(),
            ca,
        }
    }

    fn issue(&self, identity: &str, validity: Validity) -> Cred {
        let id = identity.parse().expect("test identity");
        let c = self.ca.issue(&id, validity).expect("issue");
        Cred {
            cert: c.cert_pem,
            key: c.key_pem,
        }
    }

    /// A client certificate for `identity` (`admin`, `node:s1`, ...),
    /// valid for a day.
    pub fn client(&self, identity: &str) -> Cred {
        self.issue(identity, Validity::from_now(DAY).expect("validity"))
    }

    /// A client certificate that expired yesterday.
    pub fn expired_client(&self, identity: &str) -> Cred {
        let now = SystemTime::now();
        let v = Validity::between(now - 30 * DAY, now - DAY).expect("validity");
        self.issue(identity, v)
    }
}

/// `pki init` into `dir`, then `pki issue` of each of `identities` into
/// `dir` as `<stem>.crt` / `<stem>.key` (the files the CLI's client.toml
/// names). Returns the CA.
pub fn init_dir(dir: &Path, identities: &[Identity]) -> TestPki {
    ferrofab_pki::init(dir, &InitOptions::default()).expect("pki init");
    let ca = PkiDir::new(dir).load_ca().expect("load CA");
    let validity = Validity::from_now(DAY).expect("validity");
    for id in identities {
        ferrofab_pki::issue_to_dir(&ca, id, validity, dir, false).expect("issue to dir");
    }
    TestPki::from_ca(ca)
}
