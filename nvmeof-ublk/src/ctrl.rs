//! `/dev/ublk-control`: adding, configuring, starting, stopping and
//! deleting devices, each one a uring_cmd on a small ring of its own.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::sys::{self, CtrlCmd, DevInfo, Params};
use crate::UblkError;

/// The control device's path.
pub const CONTROL_PATH: &str = "/dev/ublk-control";

/// Entries of the control ring: one command at a time is ever in flight.
const CONTROL_RING_ENTRIES: u32 = 4;

/// ADD_DEV is the first command: a ublk older than 6.4 refuses its
/// ioctl-encoded opcode with EOPNOTSUPP (or EINVAL on some versions), which
/// otherwise reads like a bad argument. Say what it means.
pub(crate) fn add_dev_error(e: UblkError) -> UblkError {
    match e {
        UblkError::Command { source, .. }
            if matches!(
                source.raw_os_error(),
                Some(libc::EOPNOTSUPP) | Some(libc::EINVAL)
            ) =>
        {
            UblkError::KernelTooOld { source }
        }
        other => other,
    }
}

/// An open `/dev/ublk-control` and its ring.
pub struct Control {
    file: File,
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
}

impl Control {
    /// Open the control device. Its absence means the kernel has no ublk
    /// (module not loaded, or a kernel without it): say so plainly.
    pub fn open() -> Result<Control, UblkError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(CONTROL_PATH)
            .map_err(|source| match source.kind() {
                io::ErrorKind::NotFound => UblkError::NotAvailable { source },
                _ => UblkError::Io {
                    what: format!("opening {CONTROL_PATH}"),
                    source,
                },
            })?;
        let ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder()
            .build(CONTROL_RING_ENTRIES)
            .map_err(|source| UblkError::Io {
                what: "creating the control io_uring (SQE128)".into(),
                source,
            })?;
        Ok(Control { file, ring })
    }

    /// Send one control command and wait for its result (>= 0).
    fn command(&mut self, name: &'static str, op: u32, cmd: CtrlCmd) -> Result<i32, UblkError> {
        let sqe = opcode::UringCmd80::new(types::Fd(self.file.as_raw_fd()), op)
            .cmd(sys::cmd_bytes(&cmd))
            .build()
            .user_data(u64::from(op));
        let fail = |source| UblkError::Command {
            cmd: name,
            dev_id: cmd.dev_id,
            source,
        };
        // SAFETY: the buffer `cmd.addr` points at (if any) is borrowed by
        // the caller for the whole call, and this function waits for the
        // command's completion before returning, so the kernel never sees
        // a dangling address.
        unsafe { self.ring.submission().push(&sqe) }
            .map_err(|_| fail(io::Error::other("control ring full")))?;
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(fail(e)),
            }
            if let Some(cqe) = self.ring.completion().next() {
                let res = cqe.result();
                return if res < 0 {
                    Err(fail(io::Error::from_raw_os_error(-res)))
                } else {
                    Ok(res)
                };
            }
        }
    }

    /// ADD_DEV: the kernel fills in the device id and may lower the queue
    /// count and buffer size; `info` holds what it granted.
    pub fn add_dev(&mut self, info: &mut DevInfo) -> Result<(), UblkError> {
        let cmd = CtrlCmd {
            dev_id: info.dev_id,
            queue_id: u16::MAX,
            len: size_of::<DevInfo>() as u16,
            addr: (info as *mut DevInfo) as u64,
            ..CtrlCmd::default()
        };
        self.command("ADD_DEV", sys::UBLK_U_CMD_ADD_DEV, cmd)
            .map(|_| ())
            .map_err(add_dev_error)
    }

    pub fn set_params(&mut self, dev_id: u32, params: &Params) -> Result<(), UblkError> {
        let cmd = CtrlCmd {
            dev_id,
            queue_id: u16::MAX,
            len: size_of::<Params>() as u16,
            addr: (params as *const Params) as u64,
            ..CtrlCmd::default()
        };
        self.command("SET_PARAMS", sys::UBLK_U_CMD_SET_PARAMS, cmd)
            .map(|_| ())
    }

    /// START_DEV: the kernel waits until every tag of every queue has a
    /// FETCH_REQ, then adds /dev/ublkbN. `pid` must be this process's.
    pub fn start_dev(&mut self, dev_id: u32, pid: i32) -> Result<(), UblkError> {
        let cmd = CtrlCmd {
            dev_id,
            queue_id: u16::MAX,
            data: [pid as u64],
            ..CtrlCmd::default()
        };
        self.command("START_DEV", sys::UBLK_U_CMD_START_DEV, cmd)
            .map(|_| ())
    }

    /// STOP_DEV: removes /dev/ublkbN (waiting for requests in flight, so
    /// the queues must still be served).
    pub fn stop_dev(&mut self, dev_id: u32) -> Result<(), UblkError> {
        self.device_command("STOP_DEV", sys::UBLK_U_CMD_STOP_DEV, dev_id)
    }

    /// DEL_DEV: removes /dev/ublkcN; waits until nothing holds it, so the
    /// queue rings and the char device must be closed first.
    pub fn del_dev(&mut self, dev_id: u32) -> Result<(), UblkError> {
        self.device_command("DEL_DEV", sys::UBLK_U_CMD_DEL_DEV, dev_id)
    }

    /// A command that names only the device.
    fn device_command(
        &mut self,
        name: &'static str,
        op: u32,
        dev_id: u32,
    ) -> Result<(), UblkError> {
        let cmd = CtrlCmd {
            dev_id,
            queue_id: u16::MAX,
            ..CtrlCmd::default()
        };
        self.command(name, op, cmd).map(|_| ())
    }
}
