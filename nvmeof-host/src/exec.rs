//! Running one admin command and waiting for it, and the context (who,
//! where, how long) every admin exchange carries.
//!
//! Below both the association setup (`assoc`) and the DH-HMAC-CHAP
//! exchange (`auth`), which `assoc` runs at Connect time: both send
//! commands through here, so neither imports the other for it.

use std::sync::Arc;
use std::time::Duration;

use super::cmd::Cmd;
use super::options::ConnectOptions;
use super::queue::{Queue, ReqKind, Request};
use super::spin::SpinPolicy;
use super::HostError;
use ferrofab_nvmeof_wire::spec::status::Status;
use ferrofab_nvmeof_wire::wire::Cqe;

/// Who and where, for error messages, plus the limits of admin commands.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub addr: String,
    pub subnqn: String,
    pub hostnqn: String,
    pub timeout: Duration,
    pub spin: SpinPolicy,
}

impl Ctx {
    pub fn from_opts(o: &ConnectOptions) -> Ctx {
        Ctx {
            addr: o.addr.clone(),
            subnqn: o.subnqn.clone(),
            hostnqn: o.identity.hostnqn.clone(),
            timeout: o.admin_timeout,
            spin: SpinPolicy::Fixed(o.poll_spin.min(Duration::from_micros(20))),
        }
    }

    pub(crate) fn controller_err(&self, why: String) -> HostError {
        HostError::Controller {
            subnqn: self.subnqn.clone(),
            addr: self.addr.clone(),
            why,
        }
    }
}

/// Send `cmd` and wait; any completion status is returned as is.
pub(crate) fn exec_raw(q: &Arc<Queue>, cmd: Cmd, ctx: &Ctx) -> Result<(Cqe, Vec<u8>), HostError> {
    let req = Request::new(cmd, ReqKind::Admin);
    q.submit(&req)?;
    match req.wait(ctx.spin, Some(ctx.timeout)) {
        Ok(cqe) => Ok((cqe, req.take_data())),
        Err(e @ HostError::Timeout { .. }) => {
            // A lost response means the association can no longer be trusted.
            q.fail(e.clone());
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// Send `cmd` and wait; an error status becomes [`HostError::Command`].
pub(crate) fn exec(q: &Arc<Queue>, cmd: Cmd, ctx: &Ctx) -> Result<(u64, Vec<u8>), HostError> {
    let name = cmd.name;
    let (cqe, data) = exec_raw(q, cmd, ctx)?;
    if cqe.is_success() {
        Ok((cqe.result, data))
    } else {
        Err(HostError::Command {
            cmd: name.to_string(),
            subnqn: ctx.subnqn.clone(),
            addr: ctx.addr.clone(),
            status: Status::from_field(cqe.status),
        })
    }
}
