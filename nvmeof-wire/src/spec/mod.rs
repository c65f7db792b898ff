//! Constants and data structures from the NVMe Base and NVMe-oF
//! specifications that both the target and the initiator need.
//!
//! Only what ferrofab uses is here. Names follow the specification's field
//! names so they can be looked up there.

pub mod identify;
pub mod status;

/// The well-known NQN of discovery controllers.
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";

/// Default TCP port of I/O controllers.
pub const DEFAULT_IO_PORT: u16 = 4420;
/// Default TCP port of discovery controllers.
pub const DEFAULT_DISCOVERY_PORT: u16 = 8009;

/// The cntlid a host sends in an admin Connect to ask for any controller
/// (the dynamic controller model).
pub const CNTLID_DYNAMIC: u16 = 0xFFFF;

/// Admin command opcodes.
pub mod admin {
    pub const GET_LOG_PAGE: u8 = 0x02;
    pub const IDENTIFY: u8 = 0x06;
    pub const ABORT: u8 = 0x08;
    pub const SET_FEATURES: u8 = 0x09;
    pub const GET_FEATURES: u8 = 0x0A;
    pub const ASYNC_EVENT_REQUEST: u8 = 0x0C;
    pub const KEEP_ALIVE: u8 = 0x18;
    /// Shared with the NVM command set: all fabrics commands use it.
    pub const FABRICS: u8 = 0x7F;
}

/// NVM command set opcodes.
pub mod nvm {
    pub const FLUSH: u8 = 0x00;
    pub const WRITE: u8 = 0x01;
    pub const READ: u8 = 0x02;
    pub const WRITE_ZEROES: u8 = 0x08;
    pub const DATASET_MANAGEMENT: u8 = 0x09;
}

/// Fabrics command types (byte 4 of a fabrics command).
pub mod fctype {
    pub const PROPERTY_SET: u8 = 0x00;
    pub const CONNECT: u8 = 0x01;
    pub const PROPERTY_GET: u8 = 0x04;
    pub const AUTH_SEND: u8 = 0x05;
    pub const AUTH_RECV: u8 = 0x06;
    pub const DISCONNECT: u8 = 0x08;
}

/// Controller property offsets.
pub mod prop {
    pub const CAP: u32 = 0x00;
    pub const VS: u32 = 0x08;
    pub const INTMS: u32 = 0x0C;
    pub const INTMC: u32 = 0x10;
    pub const CC: u32 = 0x14;
    pub const CSTS: u32 = 0x1C;
    pub const NSSR: u32 = 0x20;
}

/// Bits of the Controller Configuration property.
pub mod cc {
    pub const EN: u32 = 1;
    pub const SHN_SHIFT: u32 = 14;
    pub const SHN_MASK: u32 = 0b11 << SHN_SHIFT;
    pub const IOSQES_SHIFT: u32 = 16;
    pub const IOCQES_SHIFT: u32 = 20;

    pub fn shn(cc: u32) -> u32 {
        (cc & SHN_MASK) >> SHN_SHIFT
    }
}

/// Bits of the Controller Status property.
pub mod csts {
    pub const RDY: u32 = 1;
    pub const CFS: u32 = 1 << 1;
    pub const SHST_SHIFT: u32 = 2;
    pub const SHST_MASK: u32 = 0b11 << SHST_SHIFT;
    pub const SHST_OCCURRING: u32 = 0b01 << SHST_SHIFT;
    pub const SHST_COMPLETE: u32 = 0b10 << SHST_SHIFT;
}

/// Feature identifiers.
pub mod feature {
    pub const ARBITRATION: u8 = 0x01;
    pub const POWER_MANAGEMENT: u8 = 0x02;
    pub const TEMPERATURE_THRESHOLD: u8 = 0x04;
    pub const ERROR_RECOVERY: u8 = 0x05;
    pub const VOLATILE_WRITE_CACHE: u8 = 0x06;
    pub const NUMBER_OF_QUEUES: u8 = 0x07;
    pub const ASYNC_EVENT_CONFIG: u8 = 0x0B;
    pub const KEEP_ALIVE_TIMER: u8 = 0x0F;
    pub const HOST_IDENTIFIER: u8 = 0x81;

    /// Host Identifier: cdw11 bit 0 (EXHID) asks for the 128-bit form,
    /// the only one a fabrics controller has.
    pub const HOST_ID_EXHID: u32 = 1;
    /// Size of the extended (128-bit) Host Identifier.
    pub const HOST_ID_LEN: usize = 16;
}

/// Log page identifiers.
pub mod log {
    pub const ERROR_INFORMATION: u8 = 0x01;
    pub const SMART_HEALTH: u8 = 0x02;
    pub const FIRMWARE_SLOT: u8 = 0x03;
    pub const CHANGED_NS_LIST: u8 = 0x04;
    pub const DISCOVERY: u8 = 0x70;

    /// Size of the Changed Namespace List: 1024 namespace IDs.
    pub const CHANGED_NS_LIST_LEN: usize = 4096;
    /// An error information entry.
    pub const ERROR_ENTRY_LEN: usize = 64;
    pub const SMART_LEN: usize = 512;
    pub const FIRMWARE_SLOT_LEN: usize = 512;
}

/// Identify CNS values.
pub mod cns {
    pub const NAMESPACE: u8 = 0x00;
    pub const CONTROLLER: u8 = 0x01;
    pub const ACTIVE_NS_LIST: u8 = 0x02;
    pub const NS_ID_DESCRIPTORS: u8 = 0x03;
}

/// Asynchronous event completion values (DW0).
pub mod aen {
    /// Notice / namespace attribute changed / log page 04h.
    pub const NS_ATTR_CHANGED: u32 = 0x0004_0002;
    /// Notice / discovery log page change / log page 70h.
    pub const DISCOVERY_CHANGED: u32 = 0x0070_F002;
    /// Async Event Configuration bit enabling namespace attribute notices.
    pub const CFG_NS_ATTR: u32 = 1 << 8;
    /// Async Event Configuration bit enabling discovery log change notices.
    pub const CFG_DISCOVERY: u32 = 1 << 31;
}

/// Page size the controller uses (CC.MPS = 0 means 4 KiB).
pub const PAGE_SIZE: usize = 4096;

/// Copy `s` into a fixed-width ASCII field padded with spaces, as Identify
/// uses for serial number, model and firmware revision.
pub fn put_ascii_padded(dst: &mut [u8], s: &str) {
    dst.fill(b' ');
    for (d, c) in dst
        .iter_mut()
        .zip(s.bytes().filter(|c| c.is_ascii_graphic() || *c == b' '))
    {
        *d = c;
    }
}

/// Copy `s` into a NUL-padded field, as used for NQNs and addresses.
pub fn put_str_nul(dst: &mut [u8], s: &str) {
    dst.fill(0);
    let n = s.len().min(dst.len().saturating_sub(1));
    dst[..n].copy_from_slice(&s.as_bytes()[..n]);
}

/// Read a NUL-terminated (or full-width) string field. Invalid UTF-8 is
/// replaced rather than rejected so that error messages can still quote it.
pub fn get_str_nul(src: &[u8]) -> String {
    let end = src.iter().position(|&b| b == 0).unwrap_or(src.len());
    String::from_utf8_lossy(&src[..end]).into_owned()
}

/// Read a space-padded ASCII field.
pub fn get_ascii_padded(src: &[u8]) -> String {
    get_str_nul(src).trim_end().to_string()
}

/// Validate an NVMe Qualified Name: `nqn.yyyy-mm.reverse.domain:anything`
/// or the UUID form `nqn.2014-08.org.nvmexpress:uuid:<uuid>`, at most 223
/// bytes. The rules live in `ferrofab_types::nqn`, shared with the
/// controller and the Terraform provider.
pub fn validate_nqn(nqn: &str) -> Result<(), String> {
    ferrofab_types::nqn::validate_nqn(nqn).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nqn_validation() {
        assert!(validate_nqn("nqn.2014-08.org.nvmexpress.discovery").is_ok());
        assert!(validate_nqn("nqn.2026-11.io.ferrofab:vol-1").is_ok());
        assert!(validate_nqn(
            "nqn.2014-08.org.nvmexpress:uuid:0c8c5a5e-0000-4000-8000-000000000001"
        )
        .is_ok());
        assert!(validate_nqn("").is_err());
        assert!(validate_nqn("iqn.2014-08.x").is_err());
        assert!(validate_nqn("nqn.14-08.x:y").is_err());
        assert!(validate_nqn(&format!("nqn.2014-08.org.x:{}", "a".repeat(300))).is_err());
        assert!(validate_nqn("nqn.2014-08.org.x:a b").is_err());
    }

    #[test]
    fn string_fields() {
        let mut f = [0u8; 8];
        put_ascii_padded(&mut f, "abc");
        assert_eq!(&f, b"abc     ");
        assert_eq!(get_ascii_padded(&f), "abc");
        let mut n = [0xFFu8; 6];
        put_str_nul(&mut n, "abcdefgh");
        assert_eq!(&n, b"abcde\0");
        assert_eq!(get_str_nul(&n), "abcde");
    }
}
