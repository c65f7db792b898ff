//! The values of the Set/Get Features a controller keeps for its host.
//!
//! They live below both the controller (which stores them) and the admin
//! commands (which read and change them), so neither imports the other.

/// Composite temperature in the SMART log, in Kelvin. Nothing is measured
/// on a software target: a plausible room temperature rather than 0.
pub(crate) const COMPOSITE_TEMP_K: u16 = 300;
/// Warning composite temperature (WCTEMP), which is also the default
/// over-temperature threshold.
pub(crate) const WCTEMP_K: u16 = 343;
/// Arbitration Burst 111b: no limit. Weights stay 0, since only round
/// robin arbitration is offered (CAP.AMS is 0).
const ARBITRATION_DEFAULT: u32 = 0b111;

/// Features with nothing to act on in a software target, kept per
/// controller so that each reads back what the host set, as the
/// specification requires of these mandatory features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FeatureValues {
    pub arbitration: u32,
    pub power_management: u32,
    pub temp_over: u16,
    pub temp_under: u16,
    pub error_recovery: u32,
}

impl Default for FeatureValues {
    fn default() -> Self {
        FeatureValues {
            arbitration: ARBITRATION_DEFAULT,
            power_management: 0,
            temp_over: WCTEMP_K,
            temp_under: 0,
            error_recovery: 0,
        }
    }
}

impl FeatureValues {
    /// SMART critical warning bit 1: the composite temperature is at or
    /// beyond a threshold the host set.
    pub(crate) fn temperature_warning(&self) -> bool {
        COMPOSITE_TEMP_K >= self.temp_over || COMPOSITE_TEMP_K <= self.temp_under
    }
}
