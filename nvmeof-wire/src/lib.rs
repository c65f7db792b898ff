//! `ferrofab-nvmeof-wire`: what both ends of ferrofab's NVMe/TCP data path
//! agree on, with no I/O and no threads.
//!
//! # Layout
//!
//! * [`wire`] — byte-exact encoding of NVMe/TCP PDUs, submission and
//!   completion queue entries, and the CRC-32C digests.
//! * [`spec`] — constants and data structures from the NVMe Base and
//!   NVMe-oF specifications (opcodes, status codes, Identify pages, NQN
//!   validation); builds on [`wire`] for its little-endian helpers.
//! * [`auth`] — DH-HMAC-CHAP (in-band authentication): the AUTH message
//!   formats, the DHHC-1 secrets and the hash/HMAC/FFDHE helpers, used by
//!   the target's and the initiator's state machines alike.
//! * [`units`] — human sizes such as `4TiB`.
//!
//! The target (`ferrofab-nvmeof-target`) and the initiator
//! (`ferrofab-nvmeof-host`) both build on this crate and on nothing of
//! each other.

pub mod auth;
pub mod spec;
pub mod units;
pub mod wire;
