//! The ublk user-space ABI (Linux `include/uapi/linux/ublk_cmd.h`), the
//! parts this server uses, written out from the header's documented layout.
//!
//! Every struct is `#[repr(C)]` and its size and field offsets are checked
//! against the header's values in the tests below: the kernel reads these
//! bytes as they are, so a wrong offset would be a silent misconfiguration.

/// `_IOC` direction bits (asm-generic/ioctl.h): write = 1, read = 2.
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;
/// The ioctl "type" byte ublk uses for its commands.
const UBLK_IOC_TYPE: u32 = b'u' as u32;

/// `_IOC(dir, type, nr, size)`: dir in bits 30-31, size in 16-29, type in
/// 8-15, number in 0-7.
const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | (UBLK_IOC_TYPE << 8) | nr
}

const fn iowr(nr: u32, size: usize) -> u32 {
    ioc(IOC_READ | IOC_WRITE, nr, size)
}

/// Control commands, sent as `IORING_OP_URING_CMD` to `/dev/ublk-control`
/// with a [`CtrlCmd`] in the SQE's command area (ioctl-encoded opcodes;
/// they exist since Linux 6.4, and 6.12 has them).
pub const UBLK_U_CMD_ADD_DEV: u32 = iowr(0x04, size_of::<CtrlCmd>());
pub const UBLK_U_CMD_DEL_DEV: u32 = iowr(0x05, size_of::<CtrlCmd>());
pub const UBLK_U_CMD_START_DEV: u32 = iowr(0x06, size_of::<CtrlCmd>());
pub const UBLK_U_CMD_STOP_DEV: u32 = iowr(0x07, size_of::<CtrlCmd>());
pub const UBLK_U_CMD_SET_PARAMS: u32 = iowr(0x08, size_of::<CtrlCmd>());

/// I/O commands, sent as `IORING_OP_URING_CMD` to `/dev/ublkcN` with an
/// [`IoCmd`] in the SQE's command area.
pub const UBLK_U_IO_FETCH_REQ: u32 = iowr(0x20, size_of::<IoCmd>());
pub const UBLK_U_IO_COMMIT_AND_FETCH_REQ: u32 = iowr(0x21, size_of::<IoCmd>());

/// Result of a fetch when the kernel aborts the command (device stopping):
/// the tag must not be fetched again.
pub const UBLK_IO_RES_ABORT: i32 = -libc::ENODEV;
/// Result of a fetch that delivers a request.
pub const UBLK_IO_RES_OK: i32 = 0;

/// The kernel's limit on tags per queue.
pub const UBLK_MAX_QUEUE_DEPTH: usize = 4096;

/// Feature flags of [`DevInfo::flags`] we ask for: ioctl-encoded opcodes.
pub const UBLK_F_CMD_IOCTL_ENCODE: u64 = 1 << 6;

/// Parameter types of [`Params::types`].
pub const UBLK_PARAM_TYPE_BASIC: u32 = 1 << 0;
pub const UBLK_PARAM_TYPE_DISCARD: u32 = 1 << 1;

/// [`ParamBasic::attrs`]: the device has a volatile write cache, so the
/// kernel sends flushes (an `fsync` becomes an NVMe Flush).
pub const UBLK_ATTR_VOLATILE_CACHE: u32 = 1 << 2;

/// Operations in the low 8 bits of [`IoDesc::op_flags`].
pub const UBLK_IO_OP_READ: u8 = 0;
pub const UBLK_IO_OP_WRITE: u8 = 1;
pub const UBLK_IO_OP_FLUSH: u8 = 2;
pub const UBLK_IO_OP_DISCARD: u8 = 3;
pub const UBLK_IO_OP_WRITE_SAME: u8 = 4;
pub const UBLK_IO_OP_WRITE_ZEROES: u8 = 5;

/// Offset of queue 0's descriptor area in `/dev/ublkcN`'s mmap space; queue
/// `q` is at `q * max_cmd_buf_size(page)`.
pub const UBLKSRV_CMD_BUF_OFFSET: u64 = 0;

/// `struct ublksrv_ctrl_cmd` (32 bytes): the payload of a control command.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct CtrlCmd {
    pub dev_id: u32,
    /// `u16::MAX` unless the command is for one queue.
    pub queue_id: u16,
    /// Length of the buffer at `addr`.
    pub len: u16,
    pub addr: u64,
    /// Inline argument (START_DEV: the server's pid).
    pub data: [u64; 1],
    pub dev_path_len: u16,
    pub pad: u16,
    pub reserved: u32,
}

/// `struct ublksrv_ctrl_dev_info` (64 bytes): ADD_DEV's in/out buffer.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct DevInfo {
    pub nr_hw_queues: u16,
    pub queue_depth: u16,
    pub state: u16,
    pub pad0: u16,
    pub max_io_buf_bytes: u32,
    pub dev_id: u32,
    pub ublksrv_pid: i32,
    pub pad1: u32,
    pub flags: u64,
    pub ublksrv_flags: u64,
    pub owner_uid: u32,
    pub owner_gid: u32,
    pub reserved1: u64,
    pub reserved2: u64,
}

/// `struct ublksrv_io_desc` (24 bytes): one request, written by the kernel
/// into the queue's shared descriptor area at index `tag`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoDesc {
    /// Operation in bits 0-7, flags in bits 8-31.
    pub op_flags: u32,
    pub nr_sectors: u32,
    pub start_sector: u64,
    /// The buffer address the server gave with FETCH (unused here: each
    /// tag's buffer is known).
    pub addr: u64,
}

impl IoDesc {
    pub fn op(&self) -> u8 {
        (self.op_flags & 0xff) as u8
    }
}

/// `struct ublksrv_io_cmd` (16 bytes): the payload of an I/O command.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoCmd {
    pub q_id: u16,
    pub tag: u16,
    /// COMMIT: bytes transferred, or a negative errno.
    pub result: i32,
    /// FETCH/COMMIT: the tag's data buffer in this process.
    pub addr: u64,
}

/// `struct ublk_param_basic` (32 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ParamBasic {
    pub attrs: u32,
    pub logical_bs_shift: u8,
    pub physical_bs_shift: u8,
    pub io_opt_shift: u8,
    pub io_min_shift: u8,
    /// Largest request, in 512-byte sectors.
    pub max_sectors: u32,
    pub chunk_sectors: u32,
    /// Device size in 512-byte sectors.
    pub dev_sectors: u64,
    pub virt_boundary_mask: u64,
}

/// `struct ublk_param_discard` (20 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ParamDiscard {
    pub discard_alignment: u32,
    pub discard_granularity: u32,
    pub max_discard_sectors: u32,
    pub max_write_zeroes_sectors: u32,
    /// The kernel takes only 1.
    pub max_discard_segments: u16,
    pub reserved0: u16,
}

/// `struct ublk_params`, cut after the discard parameters: the header's
/// `len` says how much is given, and the kernel zeroes the rest.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Params {
    pub len: u32,
    pub types: u32,
    pub basic: ParamBasic,
    pub discard: ParamDiscard,
}

/// Bytes of the descriptor area of a queue with `depth` tags, as the kernel
/// maps it (rounded up to whole pages).
pub fn queue_cmd_buf_size(depth: usize, page: usize) -> usize {
    (depth * size_of::<IoDesc>()).div_ceil(page) * page
}

/// The mmap offset of queue `q`'s descriptor area: each queue has a slot
/// sized for the kernel's maximum depth.
pub fn queue_cmd_buf_offset(q: u16, page: usize) -> u64 {
    UBLKSRV_CMD_BUF_OFFSET + u64::from(q) * queue_cmd_buf_size(UBLK_MAX_QUEUE_DEPTH, page) as u64
}

mod sealed {
    /// Implemented only for the command payloads below, whose layouts are
    /// all integer fields laid end to end with no padding (the size and
    /// offset tests check this): private, so no other type can reach
    /// [`super::cmd_bytes`].
    pub trait Payload: Copy {}
    impl Payload for super::CtrlCmd {}
    impl Payload for super::IoCmd {}
}

/// The bytes of a command payload, placed at the start of the SQE's
/// 80-byte command area.
pub(crate) fn cmd_bytes<T: sealed::Payload>(v: &T) -> [u8; 80] {
    const { assert!(size_of::<T>() <= 80) };
    let mut out = [0u8; 80];
    // SAFETY: `T` is `CtrlCmd` or `IoCmd` (the sealed trait admits no
    // other type): `#[repr(C)]` structs of integers with no padding bytes
    // (32 = 4+2+2+8+8+2+2+4 and 16 = 2+2+4+8, checked by the size and
    // offset tests), so all `size_of::<T>()` bytes are initialised; at
    // most 80 bytes (checked above), so the destination has room.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (v as *const T).cast::<u8>(),
            out.as_mut_ptr(),
            size_of::<T>(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn sizes_match_the_uapi_header() {
        assert_eq!(size_of::<CtrlCmd>(), 32);
        assert_eq!(size_of::<DevInfo>(), 64);
        assert_eq!(size_of::<IoDesc>(), 24);
        assert_eq!(size_of::<IoCmd>(), 16);
        assert_eq!(size_of::<ParamBasic>(), 32);
        assert_eq!(size_of::<ParamDiscard>(), 20);
        // 8-byte header, basic at 8, discard at 40, padded to 8.
        assert_eq!(size_of::<Params>(), 64);
    }

    #[test]
    fn command_payloads_have_no_padding() {
        // The sum of the field sizes equals the struct size: no padding
        // byte that cmd_bytes could read uninitialised.
        assert_eq!(4 + 2 + 2 + 8 + 8 + 2 + 2 + 4, size_of::<CtrlCmd>());
        assert_eq!(2 + 2 + 4 + 8, size_of::<IoCmd>());
        assert_eq!(offset_of!(CtrlCmd, pad), 26);
        assert_eq!(offset_of!(CtrlCmd, reserved), 28);
    }

    #[test]
    fn offsets_match_the_uapi_header() {
        assert_eq!(offset_of!(CtrlCmd, queue_id), 4);
        assert_eq!(offset_of!(CtrlCmd, len), 6);
        assert_eq!(offset_of!(CtrlCmd, addr), 8);
        assert_eq!(offset_of!(CtrlCmd, data), 16);
        assert_eq!(offset_of!(CtrlCmd, dev_path_len), 24);
        assert_eq!(offset_of!(DevInfo, max_io_buf_bytes), 8);
        assert_eq!(offset_of!(DevInfo, dev_id), 12);
        assert_eq!(offset_of!(DevInfo, ublksrv_pid), 16);
        assert_eq!(offset_of!(DevInfo, flags), 24);
        assert_eq!(offset_of!(DevInfo, owner_uid), 40);
        assert_eq!(offset_of!(IoDesc, nr_sectors), 4);
        assert_eq!(offset_of!(IoDesc, start_sector), 8);
        assert_eq!(offset_of!(IoDesc, addr), 16);
        assert_eq!(offset_of!(IoCmd, tag), 2);
        assert_eq!(offset_of!(IoCmd, result), 4);
        assert_eq!(offset_of!(IoCmd, addr), 8);
        assert_eq!(offset_of!(ParamBasic, logical_bs_shift), 4);
        assert_eq!(offset_of!(ParamBasic, max_sectors), 8);
        assert_eq!(offset_of!(ParamBasic, dev_sectors), 16);
        assert_eq!(offset_of!(ParamDiscard, max_discard_segments), 16);
        assert_eq!(offset_of!(Params, basic), 8);
        assert_eq!(offset_of!(Params, discard), 40);
    }

    #[test]
    fn ioctl_encoded_opcodes() {
        // _IOWR('u', 0x04, 32-byte struct) and _IOWR('u', 0x20, 16-byte).
        assert_eq!(UBLK_U_CMD_ADD_DEV, 0xc020_7504);
        assert_eq!(UBLK_U_CMD_DEL_DEV, 0xc020_7505);
        assert_eq!(UBLK_U_CMD_START_DEV, 0xc020_7506);
        assert_eq!(UBLK_U_CMD_STOP_DEV, 0xc020_7507);
        assert_eq!(UBLK_U_CMD_SET_PARAMS, 0xc020_7508);
        assert_eq!(UBLK_U_IO_FETCH_REQ, 0xc010_7520);
        assert_eq!(UBLK_U_IO_COMMIT_AND_FETCH_REQ, 0xc010_7521);
    }

    #[test]
    fn descriptor_area_geometry() {
        // 64 tags * 24 bytes = 1536 -> one page; queue slots are 4096 * 24
        // bytes = 24 pages apart.
        assert_eq!(queue_cmd_buf_size(64, 4096), 4096);
        assert_eq!(queue_cmd_buf_size(200, 4096), 8192);
        assert_eq!(queue_cmd_buf_offset(0, 4096), 0);
        assert_eq!(queue_cmd_buf_offset(2, 4096), 2 * 24 * 4096);
    }

    #[test]
    fn command_payload_bytes_are_little_endian_fields() {
        let c = IoCmd {
            q_id: 1,
            tag: 0x0203,
            result: -5,
            addr: 0x1122_3344_5566_7788,
        };
        let b = cmd_bytes(&c);
        assert_eq!(&b[0..2], &[1, 0]);
        assert_eq!(&b[2..4], &[3, 2]);
        assert_eq!(i32::from_le_bytes(b[4..8].try_into().unwrap()), -5);
        assert_eq!(u64::from_le_bytes(b[8..16].try_into().unwrap()), c.addr);
        assert!(b[16..].iter().all(|&x| x == 0));
    }
}
