//! Who is calling, from the client certificate's Subject CN: `admin`,
//! `tenant:NAME` or `node:NAME`. (Temporary local parser until
//! `ferrofab_pki::Identity` lands on main; same spelling.)

use std::fmt;

use x509_parser::prelude::{FromDer, X509Certificate};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    Admin,
    Tenant(String),
    Node(String),
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Admin => write!(f, "admin"),
            Self::Tenant(n) => write!(f, "tenant:{n}"),
            Self::Node(n) => write!(f, "node:{n}"),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("client certificate is not valid DER X.509")]
    BadCertificate,
    #[error("client certificate has no Subject CN")]
    NoCommonName,
    #[error("client certificate CN {0:?} is not admin, tenant:NAME or node:NAME")]
    Unrecognised(String),
}

impl Identity {
    /// Parses the identity spelled in a CN.
    pub fn from_cn(cn: &str) -> Result<Self, IdentityError> {
        match cn.split_once(':') {
            None if cn == "admin" => Ok(Self::Admin),
            Some(("tenant", n)) if !n.is_empty() => Ok(Self::Tenant(n.to_string())),
            Some(("node", n)) if !n.is_empty() => Ok(Self::Node(n.to_string())),
            _ => Err(IdentityError::Unrecognised(cn.to_string())),
        }
    }

    /// Reads the identity of a (TLS-verified) leaf certificate.
    pub fn from_cert_der(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|_| IdentityError::BadCertificate)?;
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .ok_or(IdentityError::NoCommonName)?;
        Self::from_cn(cn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_spellings() {
        assert_eq!(Identity::from_cn("admin"), Ok(Identity::Admin));
        assert_eq!(
            Identity::from_cn("tenant:neuro"),
            Ok(Identity::Tenant("neuro".into()))
        );
        assert_eq!(
            Identity::from_cn("node:ws1"),
            Ok(Identity::Node("ws1".into()))
        );
        assert!(Identity::from_cn("node:").is_err());
        assert!(Identity::from_cn("root").is_err());
    }
}
