//! The ferrofab PKI: CA, certificates, identities and bootstrap tokens.
