//! The controller's background loops, beside the API adapters: each runs
//! on a timer and writes through the same operations ([`crate::ops`]) as
//! the API, so a loop's write passes the same checks as a user's.
//!
//! * [`expiry`]: detaches and deletes burst volumes past their expiry, and
//!   collects expired bootstrap tokens;
//! * [`heartbeat`]: marks nodes whose agents went silent NotReady;
//! * [`events`]: records events from the objects' changes.

pub mod events;
pub mod expiry;
pub mod heartbeat;
