//! NVMe completion status codes.

use std::fmt;

/// Status code types.
pub mod sct {
    pub const GENERIC: u8 = 0;
    pub const COMMAND_SPECIFIC: u8 = 1;
    pub const MEDIA: u8 = 2;
}

/// A completion status: type, code and the Do Not Retry bit.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status {
    pub sct: u8,
    pub sc: u8,
    pub dnr: bool,
}

impl Status {
    const fn new(sct: u8, sc: u8, dnr: bool) -> Status {
        Status { sct, sc, dnr }
    }

    pub const SUCCESS: Status = Status::new(sct::GENERIC, 0x00, false);
    pub const INVALID_OPCODE: Status = Status::new(sct::GENERIC, 0x01, true);
    pub const INVALID_FIELD: Status = Status::new(sct::GENERIC, 0x02, true);
    pub const DATA_TRANSFER_ERROR: Status = Status::new(sct::GENERIC, 0x04, false);
    pub const INTERNAL_ERROR: Status = Status::new(sct::GENERIC, 0x06, false);
    pub const ABORT_REQUESTED: Status = Status::new(sct::GENERIC, 0x07, false);
    pub const INVALID_NAMESPACE: Status = Status::new(sct::GENERIC, 0x0B, true);
    pub const COMMAND_SEQUENCE_ERROR: Status = Status::new(sct::GENERIC, 0x0C, true);
    /// Generic 0Fh. (Until issue 12 this was sent as 0Dh, which is
    /// "Invalid SGL Segment Descriptor", and hosts reported it as such.)
    pub const DATA_SGL_LENGTH_INVALID: Status = Status::new(sct::GENERIC, 0x0F, true);
    pub const SGL_OFFSET_INVALID: Status = Status::new(sct::GENERIC, 0x16, true);
    pub const SGL_TYPE_INVALID: Status = Status::new(sct::GENERIC, 0x11, true);
    /// A data digest error or a lost connection: the host may retry.
    pub const NAMESPACE_WRITE_PROTECTED: Status = Status::new(sct::GENERIC, 0x20, true);
    pub const TRANSIENT_TRANSPORT_ERROR: Status = Status::new(sct::GENERIC, 0x22, false);
    pub const LBA_OUT_OF_RANGE: Status = Status::new(sct::GENERIC, 0x80, true);
    pub const CAPACITY_EXCEEDED: Status = Status::new(sct::GENERIC, 0x81, true);
    pub const NAMESPACE_NOT_READY: Status = Status::new(sct::GENERIC, 0x82, false);

    pub const INVALID_QUEUE_ID: Status = Status::new(sct::COMMAND_SPECIFIC, 0x01, true);
    pub const INVALID_QUEUE_SIZE: Status = Status::new(sct::COMMAND_SPECIFIC, 0x02, true);
    pub const AER_LIMIT_EXCEEDED: Status = Status::new(sct::COMMAND_SPECIFIC, 0x05, true);
    pub const INVALID_LOG_PAGE: Status = Status::new(sct::COMMAND_SPECIFIC, 0x09, true);
    pub const FEATURE_NOT_SAVEABLE: Status = Status::new(sct::COMMAND_SPECIFIC, 0x0D, true);
    pub const CONNECT_INCOMPATIBLE_FORMAT: Status = Status::new(sct::COMMAND_SPECIFIC, 0x80, true);
    pub const CONNECT_CONTROLLER_BUSY: Status = Status::new(sct::COMMAND_SPECIFIC, 0x81, false);
    pub const CONNECT_INVALID_PARAMETERS: Status = Status::new(sct::COMMAND_SPECIFIC, 0x82, true);
    pub const CONNECT_INVALID_HOST: Status = Status::new(sct::COMMAND_SPECIFIC, 0x84, true);
    /// "Authentication Required" (Linux: NVME_SC_AUTH_REQUIRED, 0x191):
    /// the queue has not authenticated, or (at Connect) the subsystem
    /// requires authentication and the host has no key.
    pub const AUTH_REQUIRED: Status = Status::new(sct::COMMAND_SPECIFIC, 0x91, true);
    pub const INVALID_PROPERTY: Status = Status::new(sct::COMMAND_SPECIFIC, 0x82, true);

    pub const WRITE_FAULT: Status = Status::new(sct::MEDIA, 0x80, false);
    pub const UNRECOVERED_READ_ERROR: Status = Status::new(sct::MEDIA, 0x81, false);

    /// The 15-bit status field as placed in bits 15:1 of CQE DW3's upper
    /// half (the phase bit is left 0).
    pub fn to_field(self) -> u16 {
        (u16::from(self.dnr) << 15) | (u16::from(self.sct & 0x7) << 9) | (u16::from(self.sc) << 1)
    }

    pub fn from_field(field: u16) -> Status {
        Status {
            sct: ((field >> 9) & 0x7) as u8,
            sc: ((field >> 1) & 0xFF) as u8,
            dnr: field & (1 << 15) != 0,
        }
    }

    pub fn is_success(self) -> bool {
        self.sct == 0 && self.sc == 0
    }

    /// A short description for logs and error messages.
    pub fn describe(self) -> &'static str {
        match (self.sct, self.sc) {
            (0, 0x00) => "success",
            (0, 0x01) => "invalid command opcode",
            (0, 0x02) => "invalid field in command",
            (0, 0x04) => "data transfer error",
            (0, 0x06) => "internal error",
            (0, 0x07) => "command abort requested",
            (0, 0x0B) => "invalid namespace or format",
            (0, 0x0C) => "command sequence error",
            (0, 0x0D) => "invalid SGL segment descriptor",
            (0, 0x0F) => "data SGL length invalid",
            (0, 0x16) => "SGL offset invalid",
            (0, 0x11) => "SGL descriptor type invalid",
            (0, 0x20) => "namespace is write protected",
            (0, 0x22) => "transient transport error",
            (0, 0x80) => "LBA out of range",
            (0, 0x81) => "capacity exceeded",
            (0, 0x82) => "namespace not ready",
            (1, 0x01) => "invalid queue identifier",
            (1, 0x02) => "invalid queue size",
            (1, 0x05) => "asynchronous event request limit exceeded",
            (1, 0x09) => "invalid log page",
            (1, 0x0D) => "feature identifier not saveable",
            (1, 0x80) => "connect: incompatible format",
            (1, 0x81) => "connect: controller busy",
            (1, 0x82) => "connect: invalid parameters",
            (1, 0x84) => "connect: host not allowed",
            (1, 0x91) => "authentication required",
            (2, 0x80) => "write fault",
            (2, 0x81) => "unrecovered read error",
            _ => "unknown status",
        }
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Status(sct={:#x}, sc={:#04x}{}, {})",
            self.sct,
            self.sc,
            if self.dnr { ", dnr" } else { "" },
            self.describe()
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (sct {:#x}, sc {:#04x})",
            self.describe(),
            self.sct,
            self.sc
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_roundtrip() {
        for s in [
            Status::SUCCESS,
            Status::CONNECT_INVALID_HOST,
            Status::WRITE_FAULT,
        ] {
            assert_eq!(Status::from_field(s.to_field()), s);
        }
        assert_eq!(Status::LBA_OUT_OF_RANGE.to_field(), 0x8000 | (0x80 << 1));
    }

    /// Codes as the NVMe Base specification numbers them (Linux:
    /// NVME_SC_SGL_INVALID_DATA is 0Fh, NVME_SC_SGL_INVALID_OFFSET 16h).
    #[test]
    fn sgl_status_codes_match_the_specification() {
        assert_eq!(Status::DATA_SGL_LENGTH_INVALID.sc, 0x0F);
        assert_eq!(Status::SGL_OFFSET_INVALID.sc, 0x16);
        assert_eq!(Status::SGL_TYPE_INVALID.sc, 0x11);
    }
}
