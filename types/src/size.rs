//! Human-readable sizes such as `10GiB`, shared by configs, the CLI, the API
//! and the Terraform provider, so that every ferrofab tool agrees on what
//! "4TiB" means.
//!
//! # Accepted syntax
//!
//! `<number> [whitespace] [unit]`, surrounded by optional whitespace.
//!
//! * The number is a non-negative decimal, optionally with a fraction
//!   (`1.5GiB`). A fraction is accepted only when the result is a whole
//!   number of bytes, because a namespace cannot be 1.3 bytes long and
//!   silently rounding a capacity is worse than refusing it.
//! * Units are case-insensitive. Without a unit, or with `B`, the number is
//!   bytes.
//! * `K`, `Ki`, `KiB` (and the `M`, `G`, `T`, `P` equivalents) are binary
//!   powers of 1024. The single-letter forms are binary because that is
//!   what storage tooling (`truncate -s 1G`, `qemu-img`, `losetup`) means by
//!   them, and a disk image that is 7% smaller than intended is a nasty
//!   surprise.
//! * `KB`, `MB`, `GB`, `TB`, `PB` are decimal powers of 1000, matching what
//!   drive vendors print on the label, so that "a 4TB disk" can be written
//!   exactly as it is sold.
//!
//! [`format_size`] only ever emits binary units (`4GiB`, `1536MiB`,
//! `4097B`), so its output is unambiguous and parses back to the same value.

use std::fmt;
use std::str::FromStr;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;
const PIB: u64 = 1 << 50;

/// The units listed in error messages, in the order a user would scan them.
const UNIT_HINT: &str = "B, KiB, MiB, GiB, TiB, PiB, KB, MB, GB, TB, PB";

/// Binary units used by [`format_size`], largest first so the first exact
/// divisor gives the shortest spelling.
const BINARY_UNITS: [(&str, u64); 5] = [
    ("PiB", PIB),
    ("TiB", TIB),
    ("GiB", GIB),
    ("MiB", MIB),
    ("KiB", KIB),
];

/// Why a size string was refused. Every variant keeps the original input so
/// that the message points at the exact config value or flag that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// The input was empty or only whitespace.
    #[error("invalid size {input:?}: empty (expected e.g. \"4096\" or \"10GiB\")")]
    Empty { input: String },
    /// The input starts with a minus sign.
    #[error("invalid size {input:?}: sizes cannot be negative")]
    Negative { input: String },
    /// The numeric part is missing or malformed (`GiB`, `1.2.3`, `.5`).
    #[error("invalid size {input:?}: expected a number like \"4096\" or \"1.5\" before the unit")]
    InvalidNumber { input: String },
    /// The unit is not one we know.
    #[error("invalid size {input:?}: unknown unit {unit:?} (use {UNIT_HINT})")]
    UnknownUnit { input: String, unit: String },
    /// The size does not fit in 64 bits.
    #[error(
        "invalid size {input:?}: too large (the maximum is {} bytes)",
        u64::MAX
    )]
    Overflow { input: String },
    /// A fraction that does not come out to a whole number of bytes.
    #[error("invalid size {input:?}: not a whole number of bytes")]
    Fractional { input: String },
}

impl SizeError {
    /// The input that was refused, exactly as given.
    pub fn input(&self) -> &str {
        match self {
            Self::Empty { input }
            | Self::Negative { input }
            | Self::InvalidNumber { input }
            | Self::UnknownUnit { input, .. }
            | Self::Overflow { input }
            | Self::Fractional { input } => input,
        }
    }
}

/// Parses a human size such as `4096`, `10GiB`, `1.5 TiB` or `4TB` into bytes.
/// See the [module documentation](self) for the exact rules.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let input = || s.to_owned();
    let trimmed = s.trim();
    if trimmed.is_empty() {
        return Err(SizeError::Empty { input: input() });
    }
    if trimmed.starts_with('-') {
        return Err(SizeError::Negative { input: input() });
    }
    let (number, unit) = split_number_and_unit(trimmed);
    let (whole, fraction) =
        split_decimal(number).ok_or_else(|| SizeError::InvalidNumber { input: input() })?;
    let multiplier = unit_multiplier(unit).ok_or_else(|| SizeError::UnknownUnit {
        input: input(),
        unit: unit.to_owned(),
    })?;
    scale_exact(whole, fraction, multiplier).map_err(|e| match e {
        ScaleError::Overflow => SizeError::Overflow { input: input() },
        ScaleError::Fractional => SizeError::Fractional { input: input() },
    })
}

/// Formats `bytes` with the largest binary unit that divides it exactly
/// (`4GiB`, `1536MiB`), or as plain bytes with a `B` suffix (`4097B`).
///
/// Exactness matters more than brevity here: the output ends up in configs
/// and API responses and must parse back to the same byte count.
pub fn format_size(bytes: u64) -> String {
    if bytes != 0 {
        for (name, unit) in BINARY_UNITS {
            if bytes.is_multiple_of(unit) {
                return format!("{}{name}", bytes / unit);
            }
        }
    }
    format!("{bytes}B")
}

/// Splits `"1.5 GiB"` into `("1.5", "GiB")`. The number is the longest
/// prefix of digits and dots; validating it is [`split_decimal`]'s job.
fn split_number_and_unit(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(end);
    (number, unit.trim_start())
}

/// Splits a decimal into its whole and fraction digit strings. Both sides of
/// a dot must have digits: `.5` and `5.` are refused as likely typos.
fn split_decimal(number: &str) -> Option<(&str, &str)> {
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) if !fraction.is_empty() => (whole, fraction),
        Some(_) => return None,
        None => (number, ""),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    (!whole.is_empty() && all_digits(whole) && all_digits(fraction)).then_some((whole, fraction))
}

/// Maps a unit (case-insensitively) to its size in bytes.
fn unit_multiplier(unit: &str) -> Option<u64> {
    let multiplier = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KI" | "KIB" => KIB,
        "M" | "MI" | "MIB" => MIB,
        "G" | "GI" | "GIB" => GIB,
        "T" | "TI" | "TIB" => TIB,
        "P" | "PI" | "PIB" => PIB,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "PB" => 1_000_000_000_000_000,
        _ => return None,
    };
    Some(multiplier)
}

#[derive(Debug, PartialEq, Eq)]
enum ScaleError {
    Overflow,
    Fractional,
}

/// Computes `whole.fraction * multiplier` exactly.
///
/// Floating point cannot represent most decimal fractions, and a fixed-width
/// integer cannot hold an arbitrarily long fraction, so the mantissa is
/// multiplied as a little-endian string of decimal digits. The product
/// is whole exactly when its last `fraction.len()` digits are zero.
fn scale_exact(whole: &str, fraction: &str, multiplier: u64) -> Result<u64, ScaleError> {
    let fraction = fraction.trim_end_matches('0');
    let mut digits: Vec<u8> = whole
        .bytes()
        .chain(fraction.bytes())
        .rev()
        .map(|b| b - b'0')
        .collect();
    let mut carry: u128 = 0;
    for digit in &mut digits {
        let product = u128::from(*digit) * u128::from(multiplier) + carry;
        *digit = (product % 10) as u8;
        carry = product / 10;
    }
    while carry > 0 {
        digits.push((carry % 10) as u8);
        carry /= 10;
    }
    let (fraction_digits, whole_digits) = digits.split_at(fraction.len());
    if fraction_digits.iter().any(|&d| d != 0) {
        return Err(ScaleError::Fractional);
    }
    whole_digits
        .iter()
        .rev()
        .try_fold(0u64, |acc, &d| {
            acc.checked_mul(10)?.checked_add(u64::from(d))
        })
        .ok_or(ScaleError::Overflow)
}

/// A byte count that reads and writes itself as a human size (`nvmeof`
/// calls it `units::Size`).
///
/// With the `serde` feature it serializes as the [`format_size`] string (`"10GiB"`) so generated configs
/// stay readable, and deserializes from either an integer byte count or a
/// size string, so TOML can say `size = "10GiB"` or `size = 1048576`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(pub u64);

impl Bytes {
    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl From<u64> for Bytes {
    fn from(bytes: u64) -> Self {
        Self(bytes)
    }
}

impl From<Bytes> for u64 {
    fn from(size: Bytes) -> Self {
        size.0
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_size(self.0))
    }
}

impl FromStr for Bytes {
    type Err = SizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_size(s).map(Bytes)
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_size(self.0))
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(BytesVisitor)
    }
}

/// Accepts the two spellings a config may use: an integer byte count or a
/// human size string.
#[cfg(feature = "serde")]
struct BytesVisitor;

#[cfg(feature = "serde")]
impl serde::de::Visitor<'_> for BytesVisitor {
    type Value = Bytes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a size in bytes (integer) or a string such as \"10GiB\"")
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Bytes, E> {
        Ok(Bytes(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Bytes, E> {
        u64::try_from(v).map(Bytes).map_err(|_| {
            E::custom(SizeError::Negative {
                input: v.to_string(),
            })
        })
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Bytes, E> {
        parse_size(v).map(Bytes).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_bytes() {
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("4096B").unwrap(), 4096);
        assert_eq!(parse_size("  4096 b ").unwrap(), 4096);
        assert_eq!(parse_size("007").unwrap(), 7);
        assert_eq!(parse_size("18446744073709551615").unwrap(), u64::MAX);
    }

    #[test]
    fn binary_units_in_every_spelling() {
        for (spellings, value) in [
            (["K", "Ki", "KiB", "k", "kib", "KIB"], KIB),
            (["M", "Mi", "MiB", "m", "mib", "MIB"], MIB),
            (["G", "Gi", "GiB", "g", "gib", "GIB"], GIB),
            (["T", "Ti", "TiB", "t", "tib", "TIB"], TIB),
            (["P", "Pi", "PiB", "p", "pib", "PIB"], PIB),
        ] {
            for unit in spellings {
                assert_eq!(
                    parse_size(&format!("3{unit}")).unwrap(),
                    3 * value,
                    "{unit}"
                );
                assert_eq!(
                    parse_size(&format!("3 {unit}")).unwrap(),
                    3 * value,
                    "{unit}"
                );
            }
        }
    }

    #[test]
    fn decimal_units() {
        assert_eq!(parse_size("4KB").unwrap(), 4_000);
        assert_eq!(parse_size("4mb").unwrap(), 4_000_000);
        assert_eq!(parse_size("4 GB").unwrap(), 4_000_000_000);
        assert_eq!(parse_size("4TB").unwrap(), 4_000_000_000_000);
        assert_eq!(parse_size("4PB").unwrap(), 4_000_000_000_000_000);
    }

    #[test]
    fn whole_fractions_are_accepted() {
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 * GIB / 2);
        assert_eq!(parse_size("0.5 KiB").unwrap(), 512);
        assert_eq!(parse_size("2.000").unwrap(), 2);
        assert_eq!(parse_size("1.25KB").unwrap(), 1250);
        assert_eq!(parse_size("0.001KB").unwrap(), 1);
        // 2^-50 PiB is exactly one byte; needs more digits than a u128 holds.
        assert_eq!(
            parse_size("0.00000000000000088817841970012523233890533447265625PiB").unwrap(),
            1
        );
    }

    #[test]
    fn fractions_of_a_byte_are_refused() {
        for input in ["1.5", "0.3KiB", "1.0001KB", "0.1PiB"] {
            let err = parse_size(input).unwrap_err();
            assert!(
                matches!(err, SizeError::Fractional { .. }),
                "{input}: {err}"
            );
        }
    }

    #[test]
    fn each_failure_has_its_own_error() {
        assert!(matches!(parse_size(""), Err(SizeError::Empty { .. })));
        assert!(matches!(parse_size("   "), Err(SizeError::Empty { .. })));
        assert!(matches!(parse_size("-1"), Err(SizeError::Negative { .. })));
        assert!(matches!(
            parse_size(" -1GiB"),
            Err(SizeError::Negative { .. })
        ));
        for input in ["GiB", "1.2.3", ".5", "5.", "+5", "0x10", "1 000"] {
            assert!(
                matches!(
                    parse_size(input),
                    Err(SizeError::InvalidNumber { .. } | SizeError::UnknownUnit { .. })
                ),
                "{input}"
            );
        }
        assert!(matches!(
            parse_size("GiB"),
            Err(SizeError::InvalidNumber { .. })
        ));
        assert!(matches!(
            parse_size("1.2.3"),
            Err(SizeError::InvalidNumber { .. })
        ));
        assert!(matches!(
            parse_size("4XB"),
            Err(SizeError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_size("4 GiBs"),
            Err(SizeError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_size("16384PiB"),
            Err(SizeError::Overflow { .. })
        ));
        assert!(matches!(
            parse_size("18446744073709551616"),
            Err(SizeError::Overflow { .. })
        ));
        assert!(matches!(
            parse_size("99999999999999999999999999999999999999999TB"),
            Err(SizeError::Overflow { .. })
        ));
    }

    #[test]
    fn error_messages_name_the_input() {
        assert_eq!(
            parse_size("4XB").unwrap_err().to_string(),
            r#"invalid size "4XB": unknown unit "XB" (use B, KiB, MiB, GiB, TiB, PiB, KB, MB, GB, TB, PB)"#
        );
        assert_eq!(
            parse_size("-3G").unwrap_err().to_string(),
            r#"invalid size "-3G": sizes cannot be negative"#
        );
        let err = parse_size("20000PiB").unwrap_err();
        assert_eq!(err.input(), "20000PiB");
        assert!(err
            .to_string()
            .starts_with(r#"invalid size "20000PiB": too large"#));
    }

    #[test]
    fn format_uses_largest_exact_binary_unit() {
        assert_eq!(format_size(0), "0B");
        assert_eq!(format_size(1), "1B");
        assert_eq!(format_size(4097), "4097B");
        assert_eq!(format_size(1024), "1KiB");
        assert_eq!(format_size(4 * GIB), "4GiB");
        assert_eq!(format_size(1536 * MIB), "1536MiB");
        assert_eq!(format_size(4_000_000_000_000), "3906250000KiB");
        assert_eq!(format_size(2048 * PIB), "2048PiB");
        assert_eq!(format_size(u64::MAX), "18446744073709551615B");
    }

    #[cfg(feature = "serde")]
    #[test]
    fn size_serde_accepts_integers_and_strings() {
        #[derive(serde::Deserialize, serde::Serialize, Debug, PartialEq)]
        struct Config {
            size: Bytes,
        }
        let from_str: Config = toml::from_str(r#"size = "10GiB""#).unwrap();
        assert_eq!(from_str.size, Bytes(10 * GIB));
        let from_int: Config = toml::from_str("size = 1048576").unwrap();
        assert_eq!(from_int.size, Bytes(MIB));
        assert_eq!(
            toml::to_string(&from_str).unwrap().trim(),
            r#"size = "10GiB""#
        );

        let json: Config = serde_json::from_str(r#"{"size": 18446744073709551615}"#).unwrap();
        assert_eq!(json.size, Bytes(u64::MAX));
        assert_eq!(serde_json::to_string(&Bytes(4097)).unwrap(), r#""4097B""#);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn size_serde_refuses_bad_values() {
        #[derive(serde::Deserialize, Debug)]
        struct Config {
            #[allow(dead_code)]
            size: Bytes,
        }
        let err = toml::from_str::<Config>(r#"size = "4XB""#).unwrap_err();
        assert!(err.to_string().contains(r#"unknown unit "XB""#), "{err}");
        let err = toml::from_str::<Config>("size = -5").unwrap_err();
        assert!(err.to_string().contains("negative"), "{err}");
        let err = toml::from_str::<Config>("size = 1.5").unwrap_err();
        assert!(err.to_string().contains("a size in bytes"), "{err}");
    }

    #[test]
    fn empty_and_whitespace_units_are_bytes() {
        assert_eq!(parse_size("\t12\n").unwrap(), 12);
        assert_eq!(parse_size("12 B").unwrap(), 12);
        assert_eq!(parse_size("0GiB").unwrap(), 0);
        assert_eq!(parse_size("16383PiB").unwrap(), 16383 * PIB);
    }

    #[test]
    fn size_display_and_from_str() {
        assert_eq!(Bytes(3 * TIB).to_string(), "3TiB");
        assert_eq!("3TiB".parse::<Bytes>().unwrap(), Bytes(3 * TIB));
        assert_eq!(u64::from(Bytes::from(7)), 7);
    }

    proptest! {
        #[test]
        fn format_round_trips(bytes in any::<u64>()) {
            prop_assert_eq!(parse_size(&format_size(bytes)).unwrap(), bytes);
        }

        #[test]
        fn round_trips_multiples_of_units(n in 0u64..1 << 20, shift in 0u32..51) {
            let bytes = n << shift;
            prop_assert_eq!(parse_size(&format_size(bytes)).unwrap(), bytes);
        }

        #[test]
        fn unit_suffix_multiplies(n in 0u64..1 << 14, unit in prop::sample::select(vec![
            ("", 1u64), ("KiB", KIB), ("MiB", MIB), ("GiB", GIB), ("TiB", TIB), ("PiB", PIB),
            ("KB", 1_000), ("MB", 1_000_000), ("GB", 1_000_000_000), ("TB", 1_000_000_000_000),
        ])) {
            prop_assert_eq!(parse_size(&format!("{n} {}", unit.0)).unwrap(), n * unit.1);
        }

        #[test]
        fn half_units_parse_exactly(n in 0u64..1 << 20) {
            prop_assert_eq!(parse_size(&format!("{n}.5KiB")).unwrap(), n * KIB + 512);
        }

        #[test]
        fn arbitrary_strings_never_panic(s in "\\PC{0,24}") {
            let _ = parse_size(&s);
        }
    }
}
