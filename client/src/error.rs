//! The client's one error type. Match on [`ClientError::kind`], not on text.

use reddit_shared::error::{ErrorCode, WireError};
use std::fmt;

/// What kind of failure a [`ClientError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// 400: the request was refused as invalid (malformed, wrong field, bad name,
    /// unknown operation, wrong shard).
    Invalid,
    /// 401: missing, expired or forged token, or a failed login.
    Unauthorized,
    /// 403: not allowed.
    Forbidden,
    /// 404: no such user, subreddit, post, comment or message.
    NotFound,
    /// 409: the name is taken.
    Conflict,
    /// 413: the request is too large.
    TooLarge,
    /// 429: asked too often (login challenges); wait and retry.
    TooManyRequests,
    /// 503: a shard is not running, overloaded, or could not reach another shard.
    Unavailable,
    /// No reply within the request timeout.
    TimedOut,
    /// The engine reported a bug (500), or replied with something undecodable.
    Internal,
    /// NATS could not be reached.
    Connect,
    /// The shards could not be discovered, or disagree.
    Discovery,
}

/// A failed client operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientError {
    kind: ErrorKind,
    code: Option<ErrorCode>,
    message: String,
}

impl ClientError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            code: None,
            message: message.into(),
        }
    }

    /// What kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The engine's wire code, if the engine answered.
    pub fn code(&self) -> Option<ErrorCode> {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether repeating the request (with the same idempotency key) may succeed:
    /// timeouts, no responders, `503`s, lost connections and `429`s.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::TimedOut | ErrorKind::Unavailable | ErrorKind::TooManyRequests
        )
    }
}

impl From<WireError> for ClientError {
    fn from(e: WireError) -> Self {
        let kind = match e.code {
            ErrorCode::Malformed
            | ErrorCode::InvalidRequest
            | ErrorCode::UnknownOperation
            | ErrorCode::WrongShard => ErrorKind::Invalid,
            ErrorCode::Unauthenticated => ErrorKind::Unauthorized,
            ErrorCode::Forbidden => ErrorKind::Forbidden,
            ErrorCode::NotFound => ErrorKind::NotFound,
            ErrorCode::Conflict => ErrorKind::Conflict,
            ErrorCode::TooLarge => ErrorKind::TooLarge,
            ErrorCode::TooManyRequests => ErrorKind::TooManyRequests,
            ErrorCode::Unavailable => ErrorKind::Unavailable,
            ErrorCode::Internal => ErrorKind::Internal,
        };
        Self {
            kind,
            code: Some(e.code),
            message: e.message,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(code) => write!(f, "{} ({code}): {}", self.kind_name(), self.message),
            None => write!(f, "{}: {}", self.kind_name(), self.message),
        }
    }
}

impl ClientError {
    fn kind_name(&self) -> &'static str {
        match self.kind {
            ErrorKind::Invalid => "invalid request",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::TooLarge => "too large",
            ErrorKind::TooManyRequests => "too many requests",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::TimedOut => "timed out",
            ErrorKind::Internal => "internal error",
            ErrorKind::Connect => "cannot connect",
            ErrorKind::Discovery => "discovery failed",
        }
    }
}

impl std::error::Error for ClientError {}
