//! The controller's background loops, beside the API adapters: each runs
//! on a timer and writes through the same operations ([`crate::ops`]) as
//! the API, so a loop's write passes the same checks as a user's.
//!
//! * [`expiry`]: detaches and deletes burst volumes past their expiry, and
//!   collects expired bootstrap tokens;
//! * [`heartbeat`]: marks nodes whose agents went silent NotReady;
//! * [`events`]: records events from the objects' changes.
//!
//! Expiry and heartbeat are singletons: with several replicas on one etcd
//! store only the leader runs a pass, and every write of the pass is
//! conditional on its leadership (see [`crate::leader`]).

pub mod events;
pub mod expiry;
pub mod heartbeat;

use crate::ops::Shared;

/// Runs one singleton pass if this replica leads now, with its writes
/// fenced by the leadership; `None` when another replica leads.
pub async fn as_leader<F, Fut>(s: &Shared, pass: F) -> Option<Fut::Output>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future,
{
    let guard = s.leadership.acting()?;
    Some(crate::leader::fenced(guard, pass()).await)
}
