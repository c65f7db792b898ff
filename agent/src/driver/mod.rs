//! Data-path drivers: what actually serves and consumes namespaces.
//!
//! Only the built-in driver (the `ferrofab-nvmeof` target and initiator in
//! this process) exists today. `kernel` (nvmet / nvme-tcp) is accepted in
//! the config so files can be written ahead of it, and refused at start
//! with a clear message.

pub mod builtin;

use crate::config::DriverKind;
use crate::error::AgentError;

/// Fails for drivers that are not implemented.
pub fn check(kind: DriverKind) -> Result<(), AgentError> {
    match kind {
        DriverKind::Builtin => Ok(()),
        DriverKind::Kernel => Err(AgentError::DriverNotImplemented("kernel")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_is_refused_clearly() {
        assert!(check(DriverKind::Builtin).is_ok());
        let e = check(DriverKind::Kernel).unwrap_err().to_string();
        assert!(e.contains("not implemented"), "{e}");
    }
}
