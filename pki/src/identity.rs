//! Who a certificate speaks for.
//!
//! The identity lives in the subject CN (`admin`, `tenant:NAME`, `node:NAME`)
//! and, redundantly, in a URI SAN `ferrofab:identity:...`. The CN is the
//! source of truth; the SAN, when present, must agree, so a certificate whose
//! two fields disagree is rejected instead of being interpreted either way.

use std::fmt;
use std::str::FromStr;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::PkiError;

/// Prefix of the URI SAN that mirrors the CN.
pub const IDENTITY_URI_PREFIX: &str = "ferrofab:identity:";

/// Longest tenant or node name; the DNS label limit, so names can be used in
/// host names, NQNs and file names without escaping.
pub const MAX_NAME_LEN: usize = ferrofab_types::name::MAX_NAME_BYTES;

/// The principal a client certificate authenticates.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Identity {
    /// Full administrative access.
    Admin,
    /// A tenant, limited to its own objects.
    Tenant(String),
    /// A storage node's agent.
    Node(String),
}

impl Identity {
    /// A tenant identity, with the name validated.
    pub fn tenant(name: &str) -> Result<Self, PkiError> {
        validate_name(name)?;
        Ok(Self::Tenant(name.to_owned()))
    }

    /// A node identity, with the name validated.
    pub fn node(name: &str) -> Result<Self, PkiError> {
        validate_name(name)?;
        Ok(Self::Node(name.to_owned()))
    }

    /// The identity carried by a DER certificate's subject CN.
    ///
    /// This does not verify the chain: call it on a peer certificate that the
    /// TLS handshake already verified against the ferrofab CA.
    pub fn from_cert_der(der: &[u8]) -> Result<Self, PkiError> {
        let (rest, cert) = X509Certificate::from_der(der)
            .map_err(|e| PkiError::cert("certificate", e.to_string()))?;
        if !rest.is_empty() {
            return Err(PkiError::cert("certificate", "trailing bytes after DER"));
        }
        identity_of(&cert)
    }

    /// The URI SAN form, e.g. `ferrofab:identity:node:n1`.
    pub fn to_uri(&self) -> String {
        format!("{IDENTITY_URI_PREFIX}{self}")
    }

    /// A file-name-safe stem (`admin`, `tenant-NAME`, `node-NAME`), used for
    /// the `.crt`/`.key` files that `pki issue` writes.
    pub fn file_stem(&self) -> String {
        match self {
            Self::Admin => "admin".to_owned(),
            Self::Tenant(n) => format!("tenant-{n}"),
            Self::Node(n) => format!("node-{n}"),
        }
    }
}

/// Extracts and cross-checks the identity of a parsed certificate.
pub(crate) fn identity_of(cert: &X509Certificate<'_>) -> Result<Identity, PkiError> {
    let cn = single_common_name(cert)?;
    let identity: Identity = cn.parse()?;
    for uri in identity_uris(cert)? {
        if uri != identity.to_uri() {
            return Err(PkiError::cert(
                "certificate",
                format!("identity URI {uri:?} disagrees with subject CN {cn:?}"),
            ));
        }
    }
    Ok(identity)
}

/// The subject's CN, insisting on exactly one, as UTF-8.
fn single_common_name(cert: &X509Certificate<'_>) -> Result<String, PkiError> {
    let mut cns = cert.subject().iter_common_name();
    let first = cns
        .next()
        .ok_or_else(|| PkiError::cert("certificate", "subject has no common name"))?;
    if cns.next().is_some() {
        return Err(PkiError::cert(
            "certificate",
            "subject has more than one common name",
        ));
    }
    first
        .as_str()
        .map(str::to_owned)
        .map_err(|_| PkiError::cert("certificate", "subject common name is not a string"))
}

/// All `ferrofab:identity:` URI SANs of a certificate.
fn identity_uris(cert: &X509Certificate<'_>) -> Result<Vec<String>, PkiError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| PkiError::cert("certificate", format!("bad subjectAltName: {e}")))?;
    let Some(san) = san else {
        return Ok(Vec::new());
    };
    Ok(san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) if u.starts_with(IDENTITY_URI_PREFIX) => Some((*u).to_owned()),
            _ => None,
        })
        .collect())
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Admin => f.write_str("admin"),
            Self::Tenant(n) => write!(f, "tenant:{n}"),
            Self::Node(n) => write!(f, "node:{n}"),
        }
    }
}

impl FromStr for Identity {
    type Err = PkiError;

    /// Parses strictly: no whitespace, no case folding, no extra colons.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "admin" {
            return Ok(Self::Admin);
        }
        let (kind, name) = s
            .split_once(':')
            .ok_or_else(|| PkiError::InvalidIdentity(s.to_owned()))?;
        match kind {
            "tenant" => Self::tenant(name),
            "node" => Self::node(name),
            _ => Err(PkiError::InvalidIdentity(s.to_owned())),
        }
    }
}

impl serde::Serialize for Identity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Identity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Checks a tenant or node name: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most
/// 63 characters.
///
/// Names end up in certificate subjects, NQNs, file names and log lines, so
/// the alphabet is kept to what is safe in all of them.
///
/// The rule is `ferrofab_types::name`'s, shared with the controller's API.
pub fn validate_name(name: &str) -> Result<(), PkiError> {
    ferrofab_types::name::validate_name(name).map_err(|e| PkiError::InvalidName {
        name: e.name,
        reason: e.reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_from_str_round_trip() {
        for s in ["admin", "tenant:neuro", "node:n-1", "node:0"] {
            let id: Identity = s.parse().unwrap();
            assert_eq!(id.to_string(), s);
        }
    }

    #[test]
    fn parses_kinds() {
        assert_eq!("admin".parse::<Identity>().unwrap(), Identity::Admin);
        assert_eq!(
            "tenant:a".parse::<Identity>().unwrap(),
            Identity::Tenant("a".into())
        );
        assert_eq!(
            "node:b".parse::<Identity>().unwrap(),
            Identity::Node("b".into())
        );
    }

    #[test]
    fn rejects_malformed_identities() {
        for s in [
            "",
            "Admin",
            "admin ",
            " admin",
            "admin:x",
            "tenant",
            "tenant:",
            "tenant:Neuro",
            "tenant:a:b",
            "node:-a",
            "node:a-",
            "node:a_b",
            "node:a.b",
            "user:a",
            "node: a",
        ] {
            assert!(s.parse::<Identity>().is_err(), "{s:?} accepted");
        }
    }

    #[test]
    fn name_length_limit() {
        let ok = "a".repeat(63);
        let long = "a".repeat(64);
        assert!(validate_name(&ok).is_ok());
        assert!(validate_name(&long).is_err());
    }

    #[test]
    fn file_stems_and_uris() {
        let n = Identity::node("n1").unwrap();
        assert_eq!(n.file_stem(), "node-n1");
        assert_eq!(n.to_uri(), "ferrofab:identity:node:n1");
        assert_eq!(Identity::Admin.file_stem(), "admin");
    }

    fn self_signed(cns: &[&str], uris: &[&str]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        for cn in cns {
            dn.push(rcgen::DnType::CommonName, *cn);
        }
        params.distinguished_name = dn;
        params.subject_alt_names = uris
            .iter()
            .map(|u| rcgen::SanType::URI((*u).to_owned().try_into().unwrap()))
            .collect();
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn cert_cn_parsed_strictly() {
        let ok = self_signed(&["node:n1"], &["ferrofab:identity:node:n1"]);
        assert_eq!(
            Identity::from_cert_der(&ok).unwrap(),
            Identity::Node("n1".into())
        );
        let no_uri = self_signed(&["tenant:t"], &[]);
        assert!(Identity::from_cert_der(&no_uri).is_ok());
        for bad in [
            self_signed(&["admin"], &["ferrofab:identity:node:n1"]),
            self_signed(&["Admin"], &[]),
            self_signed(&[], &["ferrofab:identity:admin"]),
        ] {
            assert!(Identity::from_cert_der(&bad).is_err());
        }
        assert!(Identity::from_cert_der(b"garbage").is_err());
    }

    #[test]
    fn serde_as_string() {
        let t = Identity::tenant("neuro").unwrap();
        let j = serde_json::to_string(&t).unwrap();
        assert_eq!(j, "\"tenant:neuro\"");
        let back: Identity = serde_json::from_str(&j).unwrap();
        assert_eq!(back, t);
        assert!(serde_json::from_str::<Identity>("\"tenant:BAD\"").is_err());
    }
}
