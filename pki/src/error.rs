//! The one error type of the PKI crate.
//!
//! Every variant that concerns a file names it, because the most common
//! failure an operator hits is "which of the five PEM files is wrong?".

use std::path::PathBuf;

/// Everything that can go wrong while creating, issuing, parsing or loading
/// certificates and keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// A tenant or node name is not DNS-label-like.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A string or certificate subject is not one of the identity forms.
    #[error("invalid identity {0:?}: expected \"admin\", \"tenant:NAME\" or \"node:NAME\"")]
    InvalidIdentity(String),

    /// Reading or writing a file failed.
    ///
    /// The I/O error is part of the message rather than a `source`, so
    /// error chains printed with context do not repeat it.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying I/O error.
        error: std::io::Error,
    },

    /// A file that would be written already exists.
    #[error("{}: already exists; refusing to overwrite it", path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },

    /// A certificate could not be parsed or is unsuitable.
    #[error("{what}: {reason}")]
    BadCertificate {
        /// The file (or "certificate") it came from.
        what: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A private key could not be parsed or is unsuitable.
    #[error("{what}: bad private key: {reason}")]
    BadKey {
        /// The file (or "private key") it came from.
        what: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A certificate signing request could not be parsed or verified.
    #[error("certificate signing request: {0}")]
    BadCsr(String),

    /// A certificate is past its `notAfter`.
    #[error("{what}: certificate expired at {}", crate::validity::describe_time(*.not_after))]
    Expired {
        /// The file (or "certificate") it came from.
        what: String,
        /// Its `notAfter`, in seconds since the Unix epoch.
        not_after: i64,
    },

    /// A certificate and a private key do not belong together.
    #[error("{cert}: does not match the private key in {key}")]
    KeyMismatch {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
    },

    /// A certificate was not signed by the CA it is supposed to chain to.
    #[error("{cert}: not issued by the CA in {ca}")]
    NotIssuedByCa {
        /// The certificate file.
        cert: String,
        /// The CA certificate file.
        ca: String,
    },

    /// A validity period is empty, inverted or out of range.
    #[error("invalid validity: {0}")]
    InvalidValidity(String),

    /// A duration string like `90d` could not be parsed.
    #[error("invalid duration {input:?}: {reason}")]
    InvalidDuration {
        /// The rejected input.
        input: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A subject alternative name is neither an IP address nor a DNS name.
    #[error("invalid subject alternative name {0:?}")]
    InvalidSan(String),

    /// A bootstrap token could not be created or was refused.
    #[error(transparent)]
    Token(#[from] crate::token::TokenError),

    /// Certificate or key generation failed inside the crypto library.
    #[error("certificate generation failed: {0}")]
    Generate(String),
}

impl PkiError {
    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            error,
        }
    }

    /// A certificate problem, attributed to `what` (usually a file name).
    pub(crate) fn cert(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::BadCertificate {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// A key problem, attributed to `what` (usually a file name).
    pub(crate) fn key(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::BadKey {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

impl From<rcgen::Error> for PkiError {
    fn from(e: rcgen::Error) -> Self {
        Self::Generate(e.to_string())
    }
}
