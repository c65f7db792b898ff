//! Object names: DNS labels (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63
//! bytes).
//!
//! Names end up in NQNs, certificate subjects, file names, store keys and
//! log lines, so the alphabet is kept to what is safe in all of them. The
//! controller checks every object name with [`validate_name`], the PKI every
//! node and tenant name it signs; [`NodeName`] and [`VolumeName`] carry the
//! proof of that check where a name crosses into code that relies on it.

use std::fmt;

/// The longest name, in bytes (a DNS label).
pub const MAX_NAME_BYTES: usize = 63;

/// Why a string is not a valid name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid name {name:?}: {reason}")]
pub struct NameError {
    /// The refused input.
    pub name: String,
    /// Which rule it breaks, e.g. "must be at most 63 characters".
    pub reason: &'static str,
}

/// Which rule `name` breaks, or `None` when it is a valid name.
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > MAX_NAME_BYTES {
        Some("must be at most 63 characters")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Some("may contain only lowercase letters, digits and '-'")
    } else if name.starts_with('-') || name.ends_with('-') {
        Some("must start and end with a letter or digit")
    } else {
        None
    }
}

/// Checks an object name (see the [module documentation](self)).
pub fn validate_name(name: &str) -> Result<(), NameError> {
    name_problem(name).map_or(Ok(()), |reason| {
        Err(NameError {
            name: name.to_owned(),
            reason,
        })
    })
}

/// Whether `name` is a valid name.
pub fn is_valid_name(name: &str) -> bool {
    name_problem(name).is_none()
}

/// Declares a validated name type: constructed only through
/// [`validate_name`], read as `&str`.
macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $ty(String);

        impl $ty {
            /// Validates `s` as a name.
            pub fn parse(s: impl Into<String>) -> Result<Self, NameError> {
                let s = s.into();
                validate_name(&s)?;
                Ok(Self(s))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<$ty> for String {
            fn from(n: $ty) -> Self {
                n.0
            }
        }

        impl std::str::FromStr for $ty {
            type Err = NameError;

            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::parse(s)
            }
        }
    };
}

name_type!(
    /// The name of a node (storage server or workstation): also its
    /// certificate's `node:NAME` identity.
    NodeName
);
name_type!(
    /// The name of a volume: part of its backing file's path and of the
    /// file a workstation shows.
    VolumeName
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names() {
        for n in ["a", "ws-1", "0", "scratch-2026-11", &"a".repeat(63)] {
            assert_eq!(validate_name(n), Ok(()), "{n}");
            assert_eq!(VolumeName::parse(n).unwrap().as_str(), n);
            assert_eq!(n.parse::<NodeName>().unwrap().to_string(), n);
        }
    }

    #[test]
    fn each_rule_has_its_message() {
        let cases = [
            ("", "must not be empty"),
            (&*"a".repeat(64), "must be at most 63 characters"),
            (
                "Scratch",
                "may contain only lowercase letters, digits and '-'",
            ),
            ("a_b", "may contain only lowercase letters, digits and '-'"),
            ("a.b", "may contain only lowercase letters, digits and '-'"),
            ("a/b", "may contain only lowercase letters, digits and '-'"),
            ("é", "may contain only lowercase letters, digits and '-'"),
            ("-a", "must start and end with a letter or digit"),
            ("a-", "must start and end with a letter or digit"),
        ];
        for (name, reason) in cases {
            let err = validate_name(name).unwrap_err();
            assert_eq!(err.reason, reason, "{name:?}");
            assert_eq!(err.name, name);
            assert!(!is_valid_name(name));
            assert!(NodeName::parse(name).is_err());
        }
        assert_eq!(
            validate_name("A").unwrap_err().to_string(),
            "invalid name \"A\": may contain only lowercase letters, digits and '-'"
        );
    }
}
