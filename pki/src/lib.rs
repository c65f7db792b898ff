//! The ferrofab PKI: a small built-in certificate authority, the identities
//! client certificates carry, node enrollment (CSRs and one-time bootstrap
//! tokens) and loading TLS material for the controller, CLI and agents.
//!
//! Everything here is synchronous and free of network or storage concerns:
//! the controller owns persistence (token records) and transport (tonic).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ca;
pub mod cert;
pub mod csr;
mod error;
pub mod identity;
pub mod keys;
pub mod layout;
pub mod tls;
pub mod token;
pub mod validity;

pub use ca::{Ca, IssuedCert, DEFAULT_SERVER_SANS};
pub use cert::{cert_der_to_pem, certs_from_pem, first_cert_from_pem, CertInfo};
pub use csr::{check_csr, csr_for_key, generate_key_and_csr, KeyAndCsr, MAX_CSR_PEM_BYTES};
pub use error::PkiError;
pub use identity::{validate_name, Identity};
pub use layout::{init, issue_to_dir, InitOptions, PkiDir};
pub use tls::{load_client_tls, load_server_tls, ClientTlsPem, ServerTlsPem};
pub use token::{CaPin, Token, TokenError, TokenRecord};
pub use validity::{format_duration, parse_duration, Validity};
