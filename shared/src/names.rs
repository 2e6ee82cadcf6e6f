//! Validated names. A [`Username`] is 3–20 characters of `[A-Za-z0-9_-]`, a
//! [`SubredditName`] 3–21 characters of `[A-Za-z0-9_]`, a chat [`RoomName`] 2–32 of
//! `[A-Za-z0-9_-]`. Both keep the spelling they
//! were created with for display, and are unique case-insensitively: their
//! [`key`](Username::key) is the lowercase form, used for routing, lookups and subjects.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: must be {min}–{max} characters of {allowed}")]
pub struct NameError {
    what: &'static str,
    value: String,
    min: usize,
    max: usize,
    allowed: &'static str,
}

fn check(
    value: &str,
    what: &'static str,
    min: usize,
    max: usize,
    allowed: &'static str,
    ok: fn(u8) -> bool,
) -> Result<(), NameError> {
    let len = value.len();
    if (min..=max).contains(&len) && value.bytes().all(ok) {
        Ok(())
    } else {
        let mut shown: String = value.chars().take(40).collect();
        if value.chars().count() > 40 {
            shown.push('…');
        }
        Err(NameError {
            what,
            value: shown,
            min,
            max,
            allowed,
        })
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $min:literal, $max:literal, $allowed:literal, $pattern:literal, $ok:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name {
            display: String,
            key: String,
        }

        impl $name {
            /// Validates `value`.
            pub fn parse(value: &str) -> Result<Self, NameError> {
                check(value, $what, $min, $max, $allowed, $ok)?;
                Ok(Self { display: value.to_owned(), key: value.to_ascii_lowercase() })
            }

            /// The spelling given at creation.
            pub fn as_str(&self) -> &str {
                &self.display
            }

            /// The lowercase form: identity, routing key and subject token.
            pub fn key(&self) -> &str {
                &self.key
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .min_length(Some($min))
                    .max_length(Some($max))
                    .pattern(Some($pattern))
                    .description(Some(concat!($what, ": ", stringify!($min), "–", stringify!($max), " characters of ", $allowed)))
                    .into()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(value: String) -> Result<Self, NameError> {
                check(&value, $what, $min, $max, $allowed, $ok)?;
                let key = value.to_ascii_lowercase();
                Ok(Self { display: value, key })
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.display
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::parse(s)
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.key == other.key
            }
        }
        impl Eq for $name {}
        impl std::hash::Hash for $name {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.key.hash(state)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.display)
            }
        }
    };
}

name_type!(
    /// A user's name: 3–20 characters of `[A-Za-z0-9_-]`, unique case-insensitively.
    Username, "username", 3, 20, "A-Z a-z 0-9 _ -", "^[A-Za-z0-9_-]{3,20}$",
    |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
);
name_type!(
    /// A subreddit's name: 3–21 characters of `[A-Za-z0-9_]`, unique case-insensitively.
    SubredditName, "subreddit name", 3, 21, "A-Z a-z 0-9 _", "^[A-Za-z0-9_]{3,21}$",
    |b: u8| b.is_ascii_alphanumeric() || b == b'_'
);
name_type!(
    /// A chat room's name (`reddit-chat`): 2–32 characters of `[A-Za-z0-9_-]`,
    /// unique case-insensitively.
    RoomName, "room name", 2, 32, "A-Z a-z 0-9 _ -", "^[A-Za-z0-9_-]{2,32}$",
    |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert!(Username::parse("Alice_1-x").is_ok());
        assert!(Username::parse("ab").is_err());
        assert!(Username::parse(&"a".repeat(20)).is_ok());
        assert!(Username::parse(&"a".repeat(21)).is_err());
        assert!(Username::parse("al ice").is_err());
        assert!(Username::parse("alïce").is_err());
        assert!(Username::parse("a.b.c").is_err());
        let a = Username::parse("Alice").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.key(), "alice");
        assert_eq!(a.as_str(), "Alice");
        assert_eq!(
            a,
            Username::parse("ALICE").unwrap_or_else(|e| panic!("{e}"))
        );
    }

    #[test]
    fn subreddit_names() {
        assert!(SubredditName::parse("rust_lang").is_ok());
        assert!(SubredditName::parse("rust-lang").is_err());
        assert!(SubredditName::parse(&"a".repeat(21)).is_ok());
        assert!(SubredditName::parse(&"a".repeat(22)).is_err());
        assert!(SubredditName::parse("ab").is_err());
    }

    #[test]
    fn error_names_the_rule() {
        let e = Username::parse("x")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("username") && e.contains("3–20"), "{e}");
    }

    #[test]
    fn decoding_validates() {
        let bad = rmp_serde::to_vec("no spaces allowed").unwrap_or_default();
        assert!(rmp_serde::from_slice::<Username>(&bad).is_err());
        let good = rmp_serde::to_vec("Bob").unwrap_or_default();
        let bob: Username = rmp_serde::from_slice(&good).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(bob.key(), "bob");
    }
}
