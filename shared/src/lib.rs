//! The wire contract of the sharded Reddit engine, shared by the engine, the client
//! library and anything else that speaks the protocol.
//!
//! - [`ids`]: newtype ids (UUID v7, so they sort by creation time).
//! - [`names`]: validated [`Username`](names::Username) and
//!   [`SubredditName`](names::SubredditName), parsed once at the edge.
//! - [`protocol`]: one module per entity with its request and reply structs.
//! - [`codec`]: MessagePack maps with named fields, and the error a decode gives.
//! - [`subject`]: the only place NATS subjects are built.
//! - [`routing`]: the FNV-1a shard hash.
//! - [`error`]: the wire error codes and their NATS micro-service status numbers.
//! - [`auth`]: the login challenge text and the token format.
//! - [`backoff`]: the pauses of every retry loop.

pub mod auth;
pub mod backoff;
pub mod codec;
#[cfg(feature = "nats")]
pub mod connect;
pub mod error;
pub mod ids;
pub mod names;
pub mod protocol;
pub mod routing;
pub mod subject;

/// Protocol version advertised in the service metadata (`protocol`).
pub const PROTOCOL_VERSION: &str = "1";

/// Name of the NATS micro service every shard process registers.
pub const SERVICE_NAME: &str = "reddit-engine";

/// Largest request payload a shard accepts, in bytes; larger ones get `413 too_large`.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

/// Most bytes of items one page of a listing carries (posts, feed, comments, DMs):
/// a page stops early when the next item would pass it, and says so with its
/// cursor (or `truncated` for a comment tree), so every reply fits under NATS's
/// 1 MB `max_payload` whatever the documented limits allow. A page always holds at
/// least one item.
pub const MAX_PAGE_BYTES: usize = 512 * 1024;

/// What one item of `text_bytes` bytes of text counts against [`MAX_PAGE_BYTES`]:
/// the text plus a fixed allowance for ids, names, numbers and field names.
pub fn page_cost(text_bytes: usize) -> usize {
    text_bytes + 256
}

/// Header naming a request's idempotency key: a UUID in canonical text form, the
/// same on every retry of one logical request. A shard answers a retried write with
/// the original reply instead of applying it again.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// Current time as milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}
