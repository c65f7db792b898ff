//! Data-path fixtures (feature `nvme`): both ends of NVMe/TCP, each small
//! enough to check the other byte by byte.
//!
//! - [`mini_host`]: a real `ferrofab-nvmeof-target` on loopback and a
//!   one-command-at-a-time host that checks every PDU (the target's suites,
//!   and the host and memory suites that need a real target).
//! - [`fake_target`]: a scripted target with knobs the real one lacks, for
//!   the initiator's suites.

pub mod fake_target;
pub mod mini_host;
