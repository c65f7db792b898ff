//! DebugService: test-only manual clock. Registered only with
//! `clock = "manual"` and `--enable-debug-service`; admin only.

use std::sync::Arc;

use ferrofab_proto::v1::{
    debug_service_server::DebugService, AdvanceClockRequest, AdvanceClockResponse,
};
use tonic::{Request, Response, Status};

use super::{identity, Shared};
use crate::action::Action;
use crate::authz;
use crate::loops::expiry;

pub struct Debug {
    pub s: Arc<Shared>,
}

#[tonic::async_trait]
impl DebugService for Debug {
    async fn advance_clock(
        &self,
        req: Request<AdvanceClockRequest>,
    ) -> Result<Response<AdvanceClockResponse>, Status> {
        let id = identity(&req)?;
        authz::admin_only(&id, Action::AdvanceClock)?;
        let secs = i64::try_from(req.get_ref().seconds)
            .map_err(|_| Status::invalid_argument("seconds is too large"))?;
        if !self.s.clock.advance(secs) {
            return Err(Status::failed_precondition(
                "the controller runs on the system clock",
            ));
        }
        expiry::reconcile(&self.s).await?;
        Ok(Response::new(AdvanceClockResponse {
            now: Some(self.s.clock.now_ts()),
        }))
    }
}
