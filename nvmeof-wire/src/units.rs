//! Human-readable sizes such as `10GiB`: defined in `ferrofab-types` (so
//! that tools which do not run the data path can parse sizes without
//! linking it) and re-exported here under their historical names.

pub use ferrofab_types::size::{format_size, parse_size, Bytes as Size, SizeError};
