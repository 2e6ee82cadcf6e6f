//! One way to connect to NATS for every program of the project (feature `nats`).
//!
//! A URL may carry credentials (`nats://engine:secret@host:4222`); async-nats does
//! not send those by itself, so they are moved into the connect options here.
//! Several servers may be given, comma-separated.

use crate::codec::reply_error;
use crate::error::{WireError, ERROR_CODE_HEADER, ERROR_HEADER};
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Decodes a reply message: the body as `T`, or the [`WireError`] its micro-service
/// error headers and body carry.
pub fn decode_message<T: DeserializeOwned>(msg: &async_nats::Message) -> Result<T, WireError> {
    decode_message_with(msg, |body| crate::codec::decode_reply_body(body))
}

/// [`decode_message`] with the body decoded by `body`, which gets the payload
/// itself (to keep slices of it rather than copies).
pub fn decode_message_with<T>(
    msg: &async_nats::Message,
    body: impl FnOnce(&bytes::Bytes) -> Result<T, WireError>,
) -> Result<T, WireError> {
    let header = |name: &str| msg.headers.as_ref().and_then(|h| h.get(name));
    let status = header(ERROR_CODE_HEADER).map(|v| v.as_str());
    let text = header(ERROR_HEADER).map(|v| v.as_str());
    match reply_error(status, text, &msg.payload) {
        Some(e) => Err(e),
        None => body(&msg.payload),
    }
}

/// How [`no_responders`] ends its message, for [`is_no_responders`].
const NO_RESPONDERS: &str = "(no responders)";

/// `503 unavailable` for a request to `what` that no process subscribes to:
/// the shard is not running.
pub fn no_responders(what: &str) -> WireError {
    WireError::unavailable(format!("{what}: the shard is not running {NO_RESPONDERS}"))
}

/// Whether `e` is [`no_responders`]'s (nobody was there to ask), not a
/// timeout or a refusal (somebody was, and may have acted).
pub fn is_no_responders(e: &WireError) -> bool {
    e.code == crate::error::ErrorCode::Unavailable && e.message.ends_with(NO_RESPONDERS)
}

/// Why a NATS request got no reply (one mapping for the engine and the client):
/// `503 unavailable` for no responders, a timeout or a lost connection, `413` for
/// a request over the server's max payload. `what` names the request, e.g.
/// `"post.get to shard 2"`; the second value says whether it timed out (a client
/// may report that apart).
pub fn request_failure(what: &str, e: &async_nats::RequestError) -> (WireError, bool) {
    use crate::error::ErrorCode;
    use async_nats::RequestErrorKind as K;
    match e.kind() {
        K::NoResponders => (no_responders(what), false),
        K::TimedOut => (
            WireError::unavailable(format!("{what}: no answer in time")),
            true,
        ),
        K::MaxPayloadExceeded => (
            WireError::new(
                ErrorCode::TooLarge,
                format!("{what}: the request exceeds the NATS max payload"),
            ),
            false,
        ),
        _ => (WireError::unavailable(format!("{what} failed: {e}")), false),
    }
}

/// Why a connection failed; the cause (async-nats's error, or why a URL does not
/// parse) is its [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to NATS at {url}{}", user.as_ref().map(|u| format!(" as user {u:?}")).unwrap_or_default())]
pub struct ConnectError {
    /// The URL(s), credentials removed.
    pub url: String,
    /// The NATS user it connected as, when not the URL's.
    pub user: Option<String>,
    /// What failed.
    #[source]
    pub source: crate::error::BoxError,
}

/// Connects to `urls` (comma-separated) as connection `name`.
pub async fn connect(urls: &str, name: &str) -> Result<async_nats::Client, ConnectError> {
    connect_with(urls, name, async_nats::ConnectOptions::new(), None).await
}

/// Connects to `urls` with `options` (inbox prefix, capacities, callbacks, or a
/// user key's signature), adding the connection `name` and the credentials in the
/// URLs; `user` replaces the URLs' username (the password stays).
pub async fn connect_with(
    urls: &str,
    name: &str,
    options: async_nats::ConnectOptions,
    user: Option<&str>,
) -> Result<async_nats::Client, ConnectError> {
    let fail = |source: crate::error::BoxError| ConnectError {
        url: redact(urls),
        user: user.map(str::to_owned),
        source,
    };
    let mut servers: Vec<async_nats::ServerAddr> = Vec::new();
    let mut options = options
        .name(name)
        .connection_timeout(Duration::from_secs(5));
    for raw in urls.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let addr: async_nats::ServerAddr = raw
            .parse()
            .map_err(|e| fail(format!("{raw:?} is not a NATS URL: {e}").into()))?;
        if addr.has_user_pass() {
            let url_user = addr.username().unwrap_or_default().to_owned();
            let pass = addr.password().unwrap_or_default().to_owned();
            options = options.user_and_password(user.map_or(url_user, str::to_owned), pass);
        }
        servers.push(addr);
    }
    if servers.is_empty() {
        return Err(fail("no server URL given".into()));
    }
    options
        .connect(servers)
        .await
        .map_err(|e| fail(Box::new(e)))
}

/// Whether any of `urls` carries credentials.
pub fn has_credentials(urls: &str) -> bool {
    urls.split(',')
        .filter_map(|u| u.trim().parse::<async_nats::ServerAddr>().ok())
        .any(|a| a.has_user_pass())
}

/// `urls` without credentials (what an anonymous or key-authenticated connection
/// uses).
pub fn strip_credentials(urls: &str) -> String {
    urls.split(',')
        .map(|u| match (u.find("://"), u.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}{}", &u[..scheme + 3], &u[at + 1..])
            }
            _ => u.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `urls` with any password replaced by `***`, for messages.
pub fn redact(urls: &str) -> String {
    urls.split(',')
        .map(|u| match (u.find("://"), u.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let creds = &u[scheme + 3..at];
                match creds.split_once(':') {
                    Some((user, _)) => format!("{}{user}:***{}", &u[..scheme + 3], &u[at..]),
                    None => u.to_owned(),
                }
            }
            _ => u.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redact("nats://engine:pw@h:4222,nats://h2:4222"),
            "nats://engine:***@h:4222,nats://h2:4222"
        );
        assert_eq!(
            super::redact("nats://127.0.0.1:4222"),
            "nats://127.0.0.1:4222"
        );
        assert_eq!(
            super::strip_credentials("nats://service:pw@h:4222,nats://h2:1"),
            "nats://h:4222,nats://h2:1"
        );
    }
}
