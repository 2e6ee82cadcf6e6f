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
/// valid MessagePack of the wrong shape (missing field, wrong type, invalid name)
/// gives `invalid_request` naming the problem.
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
        0x80..=0x8f | 0xde | 0xdf => rmp_serde::from_slice(bytes).map_err(decode_error),
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

/// Decodes a reply. `error_status` is the `Nats-Service-Error-Code` header and
/// `error_text` the `Nats-Service-Error` header, if present: then the body is a
/// [`WireError`] (or, if it is not, one is made from the headers).
pub fn decode_reply<T: DeserializeOwned>(
    error_status: Option<&str>,
    error_text: Option<&str>,
    body: &[u8],
) -> Result<T, WireError> {
    if let Some(status) = error_status {
        if let Ok(e) = rmp_serde::from_slice::<WireError>(body) {
            return Err(e);
        }
        let code = status
            .trim()
            .parse::<u16>()
            .map(ErrorCode::from_status)
            .unwrap_or(ErrorCode::Internal);
        return Err(WireError::new(
            code,
            error_text
                .unwrap_or("the service answered with an error")
                .to_owned(),
        ));
    }
    rmp_serde::from_slice(body)
        .map_err(|e| WireError::internal(format!("could not decode the reply: {e}")))
}

fn decode_error(e: rmp_serde::decode::Error) -> WireError {
    use rmp_serde::decode::Error as E;
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
        E::TypeMismatch(marker) => WireError::invalid(format!(
            "the payload must be a MessagePack map of named fields (found {marker:?})"
        )),
        other => WireError::invalid(format!("invalid request: {other}")),
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
}
