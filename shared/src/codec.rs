//! MessagePack encoding (contract): every message is a map with named fields
//! (`rmp_serde::to_vec_named`), so fields can be added without breaking readers.
//! An empty payload decodes as an empty map.

use crate::error::{ErrorCode, WireError};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// An empty MessagePack map, used where an empty payload is given.
const EMPTY_MAP: [u8; 1] = [0x80];

/// Encodes `value` as a MessagePack map with field names.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, WireError> {
    rmp_serde::to_vec_named(value)
        .map_err(|e| WireError::internal(format!("could not encode a reply: {e}")))
}

/// Decodes a request or reply. Bytes that are not MessagePack give `malformed`;
/// valid MessagePack of the wrong shape (missing field, wrong type, invalid name,
/// unknown enum value) gives `invalid_request` naming the field (its path, such
/// as `limit` or `repost_of.id`), as do bytes left over after the map.
///
/// The top level must be a map: rmp_serde would also read a struct from an array
/// by position, which is not part of the protocol.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    let bytes = if bytes.is_empty() {
        &EMPTY_MAP[..]
    } else {
        bytes
    };
    match bytes[0] {
        0x80..=0x8f | 0xde | 0xdf => decode_map(bytes),
        0xc1 => Err(WireError::new(
            ErrorCode::Malformed,
            "the payload is not valid MessagePack (reserved marker 0xc1)",
        )),
        first => Err(WireError::invalid(format!(
            "the payload must be a MessagePack map of named fields (found {:?})",
            rmp::Marker::from_u8(first)
        ))),
    }
}

/// Decodes a reply's body, once [`reply_error`] found it is not an error.
pub fn decode_reply_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, WireError> {
    rmp_serde::from_slice(body).map_err(reply_undecodable)
}

/// The error a reply carries, if `error_status` (the
/// `Nats-Service-Error-Code` header) is present: the body as a [`WireError`],
/// or, if it is not one, an error made from the status and `error_text` (the
/// `Nats-Service-Error` header).
pub fn reply_error(
    error_status: Option<&str>,
    error_text: Option<&str>,
    body: &[u8],
) -> Option<WireError> {
    let status = error_status?;
    if let Ok(e) = rmp_serde::from_slice::<WireError>(body) {
        return Some(e);
    }
    let code = status
        .trim()
        .parse::<u16>()
        .map(ErrorCode::from_status)
        .unwrap_or(ErrorCode::Internal);
    Some(WireError::new(
        code,
        error_text
            .unwrap_or("the service answered with an error")
            .to_owned(),
    ))
}

/// The error for a reply body that is not what was expected.
pub fn reply_undecodable(e: rmp_serde::decode::Error) -> WireError {
    WireError::internal(format!("could not decode the reply: {e}"))
}

fn decode_map<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    let mut de = rmp_serde::Deserializer::new(bytes);
    // The fast path decodes without tracking where it is; only a failure is
    // decoded again, with the field path for the message.
    let value = T::deserialize(&mut de).map_err(|_| {
        let mut again = rmp_serde::Deserializer::new(bytes);
        match serde_path_to_error::deserialize::<_, T>(&mut again) {
            Err(e) => {
                let path = e.path().to_string();
                decode_error(e.into_inner(), &path)
            }
            Ok(_) => WireError::invalid("the payload could not be decoded"),
        }
    })?;
    let rest = de.get_ref().len();
    if rest > 0 {
        return Err(WireError::invalid(format!(
            "the payload has {rest} byte(s) after its map; send exactly one MessagePack map"
        )));
    }
    Ok(value)
}

/// The wire error for a failed decode at field `path` (`.` for the top level).
fn decode_error(e: rmp_serde::decode::Error, path: &str) -> WireError {
    use rmp_serde::decode::Error as E;
    let field = (!path.is_empty() && path != ".").then_some(path);
    match e {
        E::InvalidMarkerRead(_)
        | E::InvalidDataRead(_)
        | E::Utf8Error(_)
        | E::LengthMismatch(_)
        | E::DepthLimitExceeded
        | E::TypeMismatch(rmp::Marker::Reserved) => WireError::new(
            ErrorCode::Malformed,
            format!("the payload is not valid MessagePack: {e}"),
        ),
        E::TypeMismatch(marker) => match field {
            Some(f) => WireError::invalid(format!(
                "field `{f}` has the wrong type (found MessagePack {marker:?})"
            )),
            None => WireError::invalid(format!(
                "the payload must be a MessagePack map of named fields (found {marker:?})"
            )),
        },
        other => match field {
            Some(f) => WireError::invalid(format!("field `{f}`: {other}")),
            None => WireError::invalid(format!("invalid request: {other}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Probe {
        name: crate::names::Username,
        #[serde(default)]
        n: u32,
    }

    #[test]
    fn round_trip_uses_named_fields() {
        let p = Probe {
            name: "bob".parse().unwrap(),
            n: 3,
        };
        let bytes = encode(&p).unwrap();
        // fixmap with 2 entries, first key "name"
        assert_eq!(bytes[0], 0x82);
        assert_eq!(&bytes[1..6], b"\xa4name");
        assert_eq!(decode::<Probe>(&bytes).unwrap(), p);
    }

    #[test]
    fn garbage_is_malformed() {
        let e = decode::<Probe>(&[0xc1, 0xff, 0x00]).unwrap_err();
        assert_eq!(e.code, ErrorCode::Malformed);
        let e = decode::<Probe>(&[0x82, 0xa4]).unwrap_err();
        assert_eq!(e.code, ErrorCode::Malformed);
    }

    #[test]
    fn arrays_are_not_structs() {
        let e = decode::<Probe>(&encode(&("bob", 3u32)).unwrap()).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(e.message.contains("map"), "{}", e.message);
    }

    #[test]
    fn wrong_shapes_are_invalid() {
        let e = decode::<Probe>(&encode(&5u8).unwrap()).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        let e = decode::<Probe>(&[]).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(e.message.contains("name"), "{}", e.message);
        #[derive(Serialize)]
        struct Wrong {
            name: u64,
        }
        let e = decode::<Probe>(&encode(&Wrong { name: 7 }).unwrap()).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        #[derive(Serialize)]
        struct BadName {
            name: &'static str,
        }
        let e = decode::<Probe>(&encode(&BadName { name: "x y" }).unwrap()).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(e.message.contains("username"), "{}", e.message);
    }

    #[test]
    fn invalid_requests_name_the_field() {
        #[derive(Serialize)]
        struct Wrong {
            name: u64,
        }
        let e = decode::<Probe>(&encode(&Wrong { name: 7 }).unwrap()).unwrap_err();
        assert!(e.message.contains("`name`"), "{}", e.message);
        #[derive(Serialize)]
        struct StringCount {
            name: &'static str,
            n: &'static str,
        }
        let e = decode::<Probe>(
            &encode(&StringCount {
                name: "bob",
                n: "7",
            })
            .unwrap(),
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(e.message.contains("`n`"), "{}", e.message);
        assert!(
            !e.message.contains("must be a MessagePack map"),
            "{}",
            e.message
        );
        #[derive(Serialize)]
        struct BadName {
            name: &'static str,
        }
        let e = decode::<Probe>(&encode(&BadName { name: "x y" }).unwrap()).unwrap_err();
        assert!(e.message.contains("`name`"), "{}", e.message);
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Nested {
            inner: Probe,
        }
        #[derive(Serialize)]
        struct NestedWrong {
            inner: Wrong,
        }
        let e = decode::<Nested>(
            &encode(&NestedWrong {
                inner: Wrong { name: 1 },
            })
            .unwrap(),
        )
        .unwrap_err();
        assert!(e.message.contains("`inner.name`"), "{}", e.message);
    }

    #[test]
    fn bytes_after_the_map_are_refused() {
        let mut bytes = encode(&Probe {
            name: "bob".parse().unwrap(),
            n: 1,
        })
        .unwrap();
        bytes.push(0xc0);
        let e = decode::<Probe>(&bytes).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(e.message.contains("after its map"), "{}", e.message);
    }
}
