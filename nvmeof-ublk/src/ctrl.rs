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

/// The buffers control commands point the kernel at. They live on the
/// heap, owned by [`Control`], so an address in a command never points
/// into a caller's stack frame that may be gone when the kernel looks.
#[derive(Default)]
struct Payload {
    info: DevInfo,
    params: Params,
}

/// An open `/dev/ublk-control` and its ring.
///
/// After a failure to submit or wait, a command may still be in flight
/// (holding the address of [`Payload`]) and its completion may arrive
/// later: the ring is then poisoned, later commands fail at once, and the
/// payload is leaked on drop rather than freed under the kernel.
pub struct Control {
    // Declared first: dropped (closed) before the payload is freed.
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    file: File,
    payload: Box<Payload>,
    /// user_data of the last command sent: a completion with another one is
    /// a stale answer to an earlier command, never taken for this one's.
    seq: u64,
    /// Why the ring may not be used any more.
    poisoned: Option<String>,
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
        Control::with_file(file)
    }

    /// A control ring on `file` (the control device; tests use another).
    fn with_file(file: File) -> Result<Control, UblkError> {
        let ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder()
            .build(CONTROL_RING_ENTRIES)
            .map_err(|source| UblkError::Io {
                what: "creating the control io_uring (SQE128)".into(),
                source,
            })?;
        Ok(Control {
            ring,
            file,
            payload: Box::default(),
            seq: 0,
            poisoned: None,
        })
    }

    /// Send one control command and wait for its result (>= 0).
    fn command(&mut self, name: &'static str, op: u32, cmd: CtrlCmd) -> Result<i32, UblkError> {
        let fail = |source| UblkError::Command {
            cmd: name,
            dev_id: cmd.dev_id,
            source,
        };
        if let Some(why) = &self.poisoned {
            return Err(fail(io::Error::other(format!(
                "the control ring is unusable after an earlier failure ({why})"
            ))));
        }
        self.seq += 1;
        let ud = self.seq;
        let sqe = opcode::UringCmd80::new(types::Fd(self.file.as_raw_fd()), op)
            .cmd(sys::cmd_bytes(&cmd))
            .build()
            .user_data(ud);
        // SAFETY: the buffer `cmd.addr` points at (if any) is in
        // `self.payload`, which lives as long as the ring (and is leaked,
        // not freed, if the ring is poisoned with the command in flight).
        if unsafe { self.ring.submission().push(&sqe) }.is_err() {
            // Only a command left in the queue by an earlier failure can
            // fill it: poisoned already, but say it here too.
            self.poisoned = Some(format!("{name}: control ring full"));
            return Err(fail(io::Error::other("control ring full")));
        }
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // The command may be in flight or still queued: its
                    // completion could be taken for the next command's.
                    self.poisoned = Some(format!("{name}: {e}"));
                    return Err(fail(e));
                }
            }
            let mut mine = None;
            for cqe in self.ring.completion() {
                if cqe.user_data() == ud {
                    mine = Some(cqe.result());
                } else {
                    tracing::debug!(
                        user_data = cqe.user_data(),
                        result = cqe.result(),
                        "stale control completion ignored"
                    );
                }
            }
            if let Some(res) = mine {
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
        self.payload.info = *info;
        let cmd = CtrlCmd {
            dev_id: info.dev_id,
            queue_id: u16::MAX,
            len: size_of::<DevInfo>() as u16,
            addr: (&mut self.payload.info as *mut DevInfo) as u64,
            ..CtrlCmd::default()
        };
        self.command("ADD_DEV", sys::UBLK_U_CMD_ADD_DEV, cmd)
            .map_err(add_dev_error)?;
        *info = self.payload.info;
        Ok(())
    }

    pub fn set_params(&mut self, dev_id: u32, params: &Params) -> Result<(), UblkError> {
        self.payload.params = *params;
        let cmd = CtrlCmd {
            dev_id,
            queue_id: u16::MAX,
            len: size_of::<Params>() as u16,
            addr: (&self.payload.params as *const Params) as u64,
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

impl Drop for Control {
    fn drop(&mut self) {
        if self.poisoned.is_some() {
            // A command may still hold the payload's address: leak it (a
            // few hundred bytes, once) rather than free memory the kernel
            // may write.
            Box::leak(std::mem::take(&mut self.payload));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A control ring on /dev/null: the uring_cmds get whatever answer
    /// that file gives, the same each time, which is enough to see how
    /// answers are matched.
    fn null_control() -> Control {
        Control::with_file(File::open("/dev/null").unwrap()).unwrap()
    }

    fn outcome(r: Result<(), UblkError>) -> Option<i32> {
        match r {
            Ok(()) => None,
            Err(UblkError::Command { source, .. }) => source.raw_os_error(),
            Err(e) => panic!("unexpected {e}"),
        }
    }

    #[test]
    fn a_stale_completion_is_not_taken_for_the_next_command() {
        let baseline = outcome(null_control().stop_dev(7));
        assert_ne!(baseline, Some(libc::EBADF));
        let mut c = null_control();
        // A completion left over from an earlier command (-EBADF), with a
        // user_data the next command does not use.
        let stale = squeue::Entry128::from(
            opcode::Read::new(types::Fd(-1), std::ptr::null_mut(), 0)
                .build()
                .user_data(u64::MAX),
        );
        // SAFETY: a read of 0 bytes from an invalid fd touches no memory.
        unsafe { c.ring.submission().push(&stale) }.unwrap();
        c.ring.submit_and_wait(1).unwrap();
        assert_eq!(outcome(c.stop_dev(7)), baseline);
        assert!(c.poisoned.is_none(), "a command's own answer is no poison");
    }

    #[test]
    fn a_poisoned_ring_refuses_later_commands() {
        let mut c = null_control();
        c.poisoned = Some("START_DEV: Bad address".into());
        let e = c.del_dev(3).unwrap_err().to_string();
        assert!(e.contains("unusable after an earlier failure"), "{e}");
        assert!(e.contains("START_DEV"), "{e}");
        // Dropping it leaks the payload instead of freeing it (no crash).
        drop(c);
    }

    #[test]
    fn payloads_live_in_the_control_object() {
        let mut c = null_control();
        let before = &c.payload.info as *const DevInfo as usize;
        let mut info = DevInfo::default();
        let _ = c.add_dev(&mut info);
        let _ = c.set_params(0, &Params::default());
        assert_eq!(&c.payload.info as *const DevInfo as usize, before);
    }
}
