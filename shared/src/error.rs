//! The wire errors (contract). A failed request is answered with the NATS
//! micro-service error headers `Nats-Service-Error-Code` (the [`status`](ErrorCode::status))
//! and `Nats-Service-Error` (a sentence), and a MessagePack body [`WireError`]
//! `{code, message}` whose `code` is the snake_case [`ErrorCode`].

use serde::{Deserialize, Serialize};
use std::fmt;

/// Header carrying the numeric status of a failed request.
pub const ERROR_CODE_HEADER: &str = "Nats-Service-Error-Code";
/// Header carrying the human sentence of a failed request.
pub const ERROR_HEADER: &str = "Nats-Service-Error";

/// What went wrong, as the snake_case string on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the payload is not valid MessagePack.
    Malformed,
    /// 400: a field is missing, has the wrong type or an invalid value.
    InvalidRequest,
    /// 400: the subject names no operation this engine knows.
    UnknownOperation,
    /// 400: the key in the request does not hash to the shard that received it.
    WrongShard,
    /// 401: the token is missing, expired or forged, or a login failed.
    Unauthenticated,
    /// 403: authenticated, but not allowed to do this.
    Forbidden,
    /// 404: the named user, subreddit, post, comment or message does not exist.
    NotFound,
    /// 409: the name is taken, or the state does not allow this.
    Conflict,
    /// 413: the payload is larger than the engine accepts.
    TooLarge,
    /// 429: the caller asked too often (login challenges); wait and retry.
    TooManyRequests,
    /// 503: the shard is overloaded or another shard it needs did not answer.
    Unavailable,
    /// 500: a bug in the engine.
    Internal,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: [ErrorCode; 12] = [
        Self::Malformed,
        Self::InvalidRequest,
        Self::UnknownOperation,
        Self::WrongShard,
        Self::Unauthenticated,
        Self::Forbidden,
        Self::NotFound,
        Self::Conflict,
        Self::TooLarge,
        Self::TooManyRequests,
        Self::Unavailable,
        Self::Internal,
    ];

    /// The numeric status for `Nats-Service-Error-Code`.
    pub fn status(self) -> u16 {
        match self {
            Self::Malformed | Self::InvalidRequest | Self::UnknownOperation | Self::WrongShard => {
                400
            }
            Self::Unauthenticated => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::Conflict => 409,
            Self::TooLarge => 413,
            Self::TooManyRequests => 429,
            Self::Unavailable => 503,
            Self::Internal => 500,
        }
    }

    /// The snake_case name used as `code` in the body.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::InvalidRequest => "invalid_request",
            Self::UnknownOperation => "unknown_operation",
            Self::WrongShard => "wrong_shard",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::TooLarge => "too_large",
            Self::TooManyRequests => "too_many_requests",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    /// The most specific code for a bare status number (for replies without a body).
    pub fn from_status(status: u16) -> Self {
        match status {
            400 => Self::InvalidRequest,
            401 => Self::Unauthenticated,
            403 => Self::Forbidden,
            404 => Self::NotFound,
            409 => Self::Conflict,
            413 => Self::TooLarge,
            429 => Self::TooManyRequests,
            503 => Self::Unavailable,
            _ => Self::Internal,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Any error kept as the source of another.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Displays an error with its sources, `outer: inner: innermost`: for logs and
/// for the last line a binary prints (a library error's own message never
/// repeats its source's).
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = self.0.to_string();
        f.write_str(&last)?;
        let mut next = self.0.source();
        while let Some(e) = next {
            let text = e.to_string();
            // Some errors (async-nats's) repeat their source in their message.
            if !last.ends_with(&text) {
                write!(f, ": {text}")?;
            }
            last = text;
            next = e.source();
        }
        Ok(())
    }
}

/// The body of an error reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct WireError {
    /// What went wrong.
    pub code: ErrorCode,
    /// A sentence for a person.
    pub message: String,
}

impl WireError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// `400 invalid_request`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    /// `404 not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// `409 conflict`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    /// `401 unauthenticated`.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, message)
    }

    /// `403 forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    /// `503 unavailable`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    /// `429 too_many_requests`.
    pub fn too_many(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::TooManyRequests, message)
    }

    /// `500 internal`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

impl From<crate::names::NameError> for WireError {
    fn from(e: crate::names::NameError) -> Self {
        Self::invalid(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_shows_every_source() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(Chain(&e).to_string(), "outer: inner");
    }

    #[test]
    fn codes_serialize_snake_case() {
        let e = WireError::new(ErrorCode::UnknownOperation, "x");
        let bytes = rmp_serde::to_vec_named(&e).unwrap();
        let v: std::collections::BTreeMap<String, String> = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(v["code"], "unknown_operation");
        for code in ErrorCode::ALL {
            let bytes = rmp_serde::to_vec(&code).unwrap();
            let s: String = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(s, code.as_str());
            if code.status() != 400 {
                assert_eq!(ErrorCode::from_status(code.status()), code);
            }
        }
    }
}
