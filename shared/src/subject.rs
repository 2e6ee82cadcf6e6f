//! NATS subjects (contract). This module is the only place that builds them.
//!
//! - requests: `reddit.shard.<k>.<op>`; shard `k` subscribes to `reddit.shard.<k>.>`;
//! - engine-to-engine: `reddit.shard.<k>.internal.<op>` (clients may not publish there);
//! - push: `reddit.events.user.<username>` and `reddit.events.sub.<name>` (lowercase keys);
//! - discovery: `$SRV.PING|INFO|STATS.reddit-engine`;
//! - write-ahead log: `reddit.wal.<k>`, shard `k`'s JetStream stream (engines only).

use crate::protocol::Op;

/// Prefix of every request subject.
pub const REQUEST_PREFIX: &str = "reddit.shard";
/// Token between the shard number and an engine-to-engine operation.
pub const INTERNAL_TOKEN: &str = "internal";

/// `reddit.shard.<shard>.<op>`.
pub fn request(shard: u32, op: Op) -> String {
    format!("{REQUEST_PREFIX}.{shard}.{}", op.as_str())
}

/// `reddit.shard.<shard>.>`: everything shard `shard` serves.
pub fn shard_wildcard(shard: u32) -> String {
    format!("{REQUEST_PREFIX}.{shard}.>")
}

/// `reddit.shard.*.internal.>`: every engine-to-engine subject (for permissions).
pub fn all_internal() -> String {
    format!("{REQUEST_PREFIX}.*.{INTERNAL_TOKEN}.>")
}

/// The operation named by `subject` if it is addressed to `shard`: for
/// `reddit.shard.2.post.create` and shard 2, `Some("post.create")`.
pub fn op_of(subject: &str, shard: u32) -> Option<&str> {
    let rest = subject.strip_prefix(REQUEST_PREFIX)?.strip_prefix('.')?;
    let (k, op) = rest.split_once('.')?;
    (k.parse::<u32>().ok()? == shard).then_some(op)
}

/// `reddit.events.user.<username key>`: pushes for one user.
pub fn user_events(username_key: &str) -> String {
    format!("reddit.events.user.{username_key}")
}

/// `reddit.events.sub.<subreddit key>`: new posts in one subreddit.
pub fn subreddit_events(subreddit_key: &str) -> String {
    format!("reddit.events.sub.{subreddit_key}")
}

/// `reddit.wal.<shard>`: the subject of shard `shard`'s write-ahead log stream.
pub fn wal(shard: u32) -> String {
    format!("reddit.wal.{shard}")
}

/// `$SRV.PING.reddit-engine`.
pub fn service_ping() -> String {
    format!("$SRV.PING.{}", crate::SERVICE_NAME)
}

/// `$SRV.INFO.reddit-engine`.
pub fn service_info() -> String {
    format!("$SRV.INFO.{}", crate::SERVICE_NAME)
}

/// `$SRV.STATS.reddit-engine`.
pub fn service_stats() -> String {
    format!("$SRV.STATS.{}", crate::SERVICE_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_parses() {
        assert_eq!(request(3, Op::PostCreate), "reddit.shard.3.post.create");
        assert_eq!(request(0, Op::InternalSync), "reddit.shard.0.internal.sync");
        assert_eq!(op_of("reddit.shard.3.post.create", 3), Some("post.create"));
        assert_eq!(op_of("reddit.shard.3.post.create", 4), None);
        assert_eq!(op_of("reddit.shard.x.post.create", 3), None);
        assert_eq!(op_of("other.shard.3.post.create", 3), None);
        assert_eq!(shard_wildcard(7), "reddit.shard.7.>");
        assert_eq!(user_events("alice"), "reddit.events.user.alice");
        assert_eq!(service_info(), "$SRV.INFO.reddit-engine");
        assert_eq!(wal(2), "reddit.wal.2");
    }
}
