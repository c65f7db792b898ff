//! Level-triggered reconcilers: each pass compares the desired state with
//! what the data path really has and fixes the difference. Every step is
//! safe to repeat, including after a crash half-way through a pass.
//!
//! * [`storage`]: exports over a [`crate::driver::TargetDriver`].
//! * [`workstation`]: connections over a [`crate::driver::WorkstationDriver`]
//!   (one reconciler for every workstation driver).

pub mod storage;
pub mod workstation;
