//! Newtype ids. Every id is a UUID v7 (time-ordered), carried in MessagePack as
//! bin (its 16 bytes) and in JSON as its hyphenated lowercase string form
//! (serde's own choice for formats that are, or are not, human-readable).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                        utoipa::openapi::KnownFormat::Uuid,
                    )))
                    .description(Some("a UUID v7, hyphenated lowercase"))
                    .into()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// Id of a post, unique within the whole system.
    PostId
);
uuid_id!(
    /// Id of a comment, unique within the whole system.
    CommentId
);
uuid_id!(
    /// Id of a direct message, unique within the whole system.
    DmId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_creation() {
        let a = PostId::new();
        let b = PostId::new();
        assert!(a < b);
    }

    #[test]
    fn ids_round_trip_as_strings() {
        let a = DmId::new();
        let s = a.to_string();
        assert_eq!(s.len(), 36);
        assert_eq!(s.parse::<DmId>().ok(), Some(a));
        let packed = rmp_serde::to_vec_named(&a).unwrap_or_default();
        let back: DmId = rmp_serde::from_slice(&packed).unwrap_or_default();
        assert_eq!(back, a);
    }
}
