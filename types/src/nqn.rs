//! NVMe Qualified Names (NVMe Base Specification 2.0, section 4.5).
//!
//! Two levels of checking, one built on the other, so that every tool
//! shares one definition:
//!
//! * [`check_shape`]: the `nqn.` prefix, at most [`MAX_NQN_BYTES`], and only
//!   printable ASCII without spaces. This is what the controller's API
//!   accepts for a node's host NQN.
//! * [`validate_nqn`]: the shape plus the `yyyy-mm` date and a reverse
//!   domain name (or the `:uuid:` form). This is what the data path (target,
//!   host, their configs) and the Terraform provider's plan-time checks
//!   require.

use std::fmt;

/// The longest NQN the specification allows, in bytes.
pub const MAX_NQN_BYTES: usize = 223;

/// The well-known NQN of a discovery controller; it has no `:` after the
/// domain, which [`validate_nqn`] otherwise requires.
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";

/// Why a string is not an NQN. The messages quote the input, so they can be
/// shown as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NqnError {
    /// The input is empty.
    #[error("an NQN must not be empty")]
    Empty,
    /// Longer than [`MAX_NQN_BYTES`].
    #[error("NQN is {len} bytes, longer than the 223 allowed")]
    TooLong { len: usize },
    /// Spaces, control characters or non-ASCII.
    #[error("NQN {nqn:?} contains spaces, control or non-ASCII characters")]
    BadCharacters { nqn: String },
    /// No `nqn.` prefix.
    #[error("NQN {nqn:?} must start with \"nqn.\"")]
    NoPrefix { nqn: String },
    /// No `yyyy-mm` after the prefix.
    #[error(
        "NQN {nqn:?} must continue with a date as yyyy-mm, as in nqn.2014-08.org.example:name"
    )]
    NoDate { nqn: String },
    /// Neither a reverse domain name nor a `:` after the date.
    #[error("NQN {nqn:?} needs a reverse domain name after the date")]
    NoDomain { nqn: String },
}

/// Checks what every NQN has in common: not empty, at most
/// [`MAX_NQN_BYTES`], printable ASCII without spaces, `nqn.` first.
pub fn check_shape(nqn: &str) -> Result<(), NqnError> {
    if nqn.is_empty() {
        return Err(NqnError::Empty);
    }
    if nqn.len() > MAX_NQN_BYTES {
        return Err(NqnError::TooLong { len: nqn.len() });
    }
    if !nqn.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(NqnError::BadCharacters { nqn: nqn.into() });
    }
    if !nqn.starts_with("nqn.") {
        return Err(NqnError::NoPrefix { nqn: nqn.into() });
    }
    Ok(())
}

/// Validates an NVMe Qualified Name: `nqn.yyyy-mm.reverse.domain:anything`
/// or the UUID form `nqn.2014-08.org.nvmexpress:uuid:<uuid>`, at most 223
/// bytes.
pub fn validate_nqn(nqn: &str) -> Result<(), NqnError> {
    check_shape(nqn)?;
    let rest = &nqn["nqn.".len()..];
    let b = rest.as_bytes();
    let date_ok = b.len() >= 8
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit);
    if !date_ok {
        return Err(NqnError::NoDate { nqn: nqn.into() });
    }
    // `rest` is ASCII (checked by the shape), so byte 7 is a char boundary.
    if nqn != DISCOVERY_NQN && !rest.contains(':') && !rest[7..].starts_with('.') {
        return Err(NqnError::NoDomain { nqn: nqn.into() });
    }
    Ok(())
}

/// An NQN that passed [`validate_nqn`]. Use it where an NQN crosses into
/// code that relies on it being well-formed, so the check happens once.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nqn(String);

impl Nqn {
    /// Validates `s` as an NQN.
    pub fn parse(s: impl Into<String>) -> Result<Self, NqnError> {
        let s = s.into();
        validate_nqn(&s)?;
        Ok(Self(s))
    }

    /// The NQN as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Nqn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Nqn {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<Nqn> for String {
    fn from(n: Nqn) -> Self {
        n.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_nqns() {
        for nqn in [
            DISCOVERY_NQN,
            "nqn.2026-11.io.ferrofab:vol-1",
            "nqn.2014-08.org.nvmexpress:uuid:0c8c5a5e-0000-4000-8000-000000000001",
            "nqn.2014-08.org",
            "nqn.2014-08.org.nvmexpress:uuid:1",
        ] {
            assert_eq!(validate_nqn(nqn), Ok(()), "{nqn}");
            assert_eq!(Nqn::parse(nqn).map(String::from), Ok(nqn.to_owned()));
        }
        let max = format!("nqn.2014-08.org.x:{}", "a".repeat(MAX_NQN_BYTES - 18));
        assert_eq!(max.len(), MAX_NQN_BYTES);
        assert_eq!(validate_nqn(&max), Ok(()));
    }

    #[test]
    fn each_refusal_has_its_reason() {
        assert_eq!(validate_nqn(""), Err(NqnError::Empty));
        let long = format!("nqn.2014-08.org.x:{}", "a".repeat(300));
        assert_eq!(validate_nqn(&long), Err(NqnError::TooLong { len: 318 }));
        // The variant's name is enough to tell the refusals apart.
        let cases = [
            ("nqn.2014-08.org.x:a b", "BadCharacters"),
            ("nqn.2014-08.org.x:é", "BadCharacters"),
            ("nqn.x\n", "BadCharacters"),
            ("iqn.2014-08.x", "NoPrefix"),
            ("nqn.14-08.x:y", "NoDate"),
            ("nqn.2014-8.x:y", "NoDate"),
            ("nqn.", "NoDate"),
            ("nqn.host:ws1", "NoDate"),
            ("nqn.2014-08org", "NoDomain"),
        ];
        for (bad, variant) in cases {
            let err = validate_nqn(bad).unwrap_err();
            assert!(format!("{err:?}").starts_with(variant), "{bad:?}: {err:?}");
        }
    }

    #[test]
    fn shape_is_the_looser_check() {
        // What the controller's API accepts but the data path would not.
        assert_eq!(check_shape("nqn.host:ws1"), Ok(()));
        assert_eq!(check_shape("nqn.x:a"), Ok(()));
        assert!(check_shape("nqn.x y").is_err());
        assert!(check_shape("iqn.x").is_err());
        assert!(check_shape("").is_err());
    }

    #[test]
    fn messages_are_unchanged() {
        // These strings reach users through the target's config errors.
        assert_eq!(
            validate_nqn("iqn.x").unwrap_err().to_string(),
            r#"NQN "iqn.x" must start with "nqn.""#
        );
        assert_eq!(
            validate_nqn("nqn.14-08.x:y").unwrap_err().to_string(),
            r#"NQN "nqn.14-08.x:y" must continue with a date as yyyy-mm, as in nqn.2014-08.org.example:name"#
        );
        assert_eq!(
            validate_nqn("nqn.2014-08org").unwrap_err().to_string(),
            r#"NQN "nqn.2014-08org" needs a reverse domain name after the date"#
        );
    }
}
