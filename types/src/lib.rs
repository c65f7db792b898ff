//! ferrofab's shared vocabulary: the few words every component must spell
//! the same way, in a crate with no heavy dependencies.
//!
//! The controller, the CLI and the Terraform provider used to link the whole
//! data path (`ferrofab-nvmeof`: FUSE, HDR histograms, file watching) just to
//! parse "4TiB" and check an NQN. They depend on this crate instead; the data
//! path depends on it too, so a size or an NQN means the same everywhere.
//!
//! # Layout
//!
//! * [`size`]: human sizes (`parse_size`, `format_size`) and [`Bytes`], a
//!   byte count that prints and (with the `serde` feature) serializes as one.
//! * [`nqn`]: NVMe Qualified Names: the shape check the API applies and the
//!   full check the data path applies, and the validated [`Nqn`].
//! * [`name`]: object names (DNS labels) and the validated [`NodeName`] and
//!   [`VolumeName`].
//! * [`condition`]: condition types and reasons as enums whose `as_str()` is
//!   the string on the wire.
//!
//! Nothing here knows the protobuf messages: the builders that fill a
//! `Condition` and the kinds of API objects live in `ferrofab-proto`, which
//! depends on this crate, so that neither crate pulls in the other's
//! dependencies for nothing.
//!
//! # Features
//!
//! * `serde`: `Serialize`/`Deserialize` for [`Bytes`] (configs write
//!   `size = "10GiB"` or `size = 1048576`).
#![forbid(unsafe_code)]

pub mod condition;
pub mod name;
pub mod nqn;
pub mod size;

pub use condition::{ConditionType, EventReason, Reason};
pub use name::{validate_name, NameError, NodeName, VolumeName};
pub use nqn::{validate_nqn, Nqn, NqnError};
pub use size::{format_size, parse_size, Bytes, SizeError};
