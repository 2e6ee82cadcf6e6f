//! NATS subjects (contract). This module is the only place that builds them.
//!
//! - requests: `reddit.shard.<k>.<op>`; shard `k` subscribes to `reddit.shard.<k>.>`;
//! - engine-to-engine: `reddit.shard.<k>.internal.<op>` (clients may not publish there);
//! - push: `reddit.events.user.<username>` and `reddit.events.sub.<name>` (lowercase keys);
//! - discovery: `$SRV.PING|INFO|STATS.reddit-engine`;
//! - write-ahead log: `reddit.wal.<k>`, shard `k`'s JetStream stream (engines only);
//! - reply inboxes, one shape per NATS role (see [`ReplyTo`]): `_INBOX.>` (anonymous),
//!   `_INBOX_USER.<username>.>` (a user's own connection), `_INBOX_SERVICE.>` (trusted
//!   services: simulator, gateways, benchmark), `_INBOX_ENGINE.>` (shards). A shard
//!   answers only reply subjects of these shapes.

use crate::protocol::Op;

/// Prefix of every request subject.
pub const REQUEST_PREFIX: &str = "reddit.shard";
/// Token between the shard number and an engine-to-engine operation.
pub const INTERNAL_TOKEN: &str = "internal";

/// `reddit.shard.<shard>.<op>`.
pub fn request(shard: u32, op: Op) -> String {
    request_raw(shard, op.as_str())
}

/// `reddit.shard.<shard>.<op>` for an operation name that may not exist (tests of
/// bad input, raw calls).
pub fn request_raw(shard: u32, op: &str) -> String {
    format!("{REQUEST_PREFIX}.{shard}.{op}")
}

/// `reddit.events.user.*`: every user's pushes (the service role's simulator
/// hands them to its users).
pub fn all_user_events() -> String {
    user_events("*")
}

/// `reddit.echo.<size>`: the benchmark's echo responder, answering `size` bytes.
pub fn echo(size: usize) -> String {
    format!("{ECHO_PREFIX}.{size}")
}

/// `reddit.echo.>`: what the echo responder serves.
pub fn echo_wildcard() -> String {
    format!("{ECHO_PREFIX}.>")
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

/// `reddit.wal.<shard>`: the subject of shard `shard`'s write-ahead log
/// stream, its first segment (segment 0).
pub fn wal(shard: u32) -> String {
    format!("reddit.wal.{shard}")
}

/// The subject of segment `n` of shard `shard`'s write-ahead log, each
/// segment a stream of its own: [`wal`] for segment 0 (the log's first
/// stream, as engines before segments named it), `reddit.wal.<shard>.<n>`
/// after it.
pub fn wal_segment(shard: u32, n: u32) -> String {
    if n == 0 {
        wal(shard)
    } else {
        format!("reddit.wal.{shard}.{n}")
    }
}

/// `reddit.wal.<shard>.*`: every segment of shard `shard`'s log after the first.
pub fn wal_segments(shard: u32) -> String {
    format!("reddit.wal.{shard}.*")
}

/// Inbox prefix of anonymous connections: every NATS client library's default.
pub const ANON_INBOX: &str = "_INBOX";
/// Inbox prefix root of user connections: user `u` uses `_INBOX_USER.<u>`.
pub const USER_INBOX: &str = "_INBOX_USER";
/// Inbox prefix of the trusted `service` role (simulator, gateways, benchmark).
pub const SERVICE_INBOX: &str = "_INBOX_SERVICE";
/// Inbox prefix of engine shards (requests to other shards).
pub const ENGINE_INBOX: &str = "_INBOX_ENGINE";
/// The subject nats-server sends auth callout requests to (NATS contract).
pub const AUTH_CALLOUT: &str = "$SYS.REQ.USER.AUTH";
/// Queue group of the auth callout responders (every shard is one).
pub const AUTH_CALLOUT_QUEUE: &str = "reddit-auth";
/// Subjects of the benchmark's do-nothing responder: `reddit.echo.<reply size>`.
pub const ECHO_PREFIX: &str = "reddit.echo";

/// `_INBOX_USER.<username key>`: the inbox prefix a connection of that user must use
/// (the only inbox it may subscribe to).
pub fn user_inbox_prefix(username_key: &str) -> String {
    format!("{USER_INBOX}.{username_key}")
}

/// Whose inbox a reply subject is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyTo<'a> {
    /// `_INBOX.<...>`: readable by every anonymous connection.
    Anonymous,
    /// `_INBOX_USER.<user>.<...>`: readable only by that user's connections.
    User(&'a str),
    /// `_INBOX_SERVICE.<...>`: readable only by the service role.
    Service,
    /// `_INBOX_ENGINE.<...>`: readable only by engine shards.
    Engine,
}

impl<'a> ReplyTo<'a> {
    /// Classifies `reply`; `None` unless it is an inbox of one of the shapes above
    /// with at least one token after the prefix, and no empty or wildcard tokens.
    pub fn classify(reply: &'a str) -> Option<Self> {
        if reply.len() > 256
            || reply
                .split('.')
                .any(|t| t.is_empty() || t == "*" || t == ">" || t.contains(char::is_whitespace))
        {
            return None;
        }
        let (root, rest) = reply.split_once('.')?;
        match root {
            ANON_INBOX => Some(Self::Anonymous),
            SERVICE_INBOX => Some(Self::Service),
            ENGINE_INBOX => Some(Self::Engine),
            USER_INBOX => {
                let (user, _) = rest.split_once('.')?;
                let valid = (3..=20).contains(&user.len())
                    && user.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                    });
                valid.then_some(Self::User(user))
            }
            _ => None,
        }
    }

    /// The part of `reply` that names the connection it came from: the prefix plus
    /// the connection's random inbox token (async-nats and nats.py put one per
    /// connection there), e.g. `_INBOX_USER.alice.Xy12`. Used for per-connection
    /// rate limits.
    pub fn connection(reply: &str) -> &str {
        let tokens = if reply.starts_with(USER_INBOX) { 3 } else { 2 };
        match reply.match_indices('.').nth(tokens - 1) {
            Some((i, _)) => &reply[..i],
            None => reply,
        }
    }
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

/// The chat gateways' subjects (`reddit-chat`; only the `chat` role may use
/// them). A room is named by its key `c.<name>` (a chat room) or `r.<name>` (the
/// room of subreddit `name`); a connected name by `g.<name>` (a guest) or
/// `u.<name>` (a logged-in user); names and room names are lowercase here.
pub mod chat {
    /// The JetStream stream that keeps every room's history (subjects
    /// [`all_rooms`]), bounded per room by count and by age.
    pub const HISTORY_STREAM: &str = "CHAT_ROOMS";
    /// KV bucket of connected names (a TTL renewed while connected).
    pub const NAMES_BUCKET: &str = "chat-names";
    /// KV bucket of the rooms that exist (they persist).
    pub const ROOMS_BUCKET: &str = "chat-rooms";
    /// The micro-service name of chat gateways (`$SRV.*.reddit-chat`).
    pub const SERVICE: &str = "reddit-chat";
    /// Inbox prefix of chat gateways (inside the service shape).
    pub const INBOX: &str = "_INBOX_SERVICE.chat";

    /// `chat.room.<room key>`: what is said and announced in a room.
    pub fn room(room_key: &str) -> String {
        format!("chat.room.{room_key}")
    }

    /// `chat.room.>`: every room (the history stream's subjects).
    pub fn all_rooms() -> String {
        "chat.room.>".to_owned()
    }

    /// `chat.user.<name key>`: private messages to a connected name (a request:
    /// the gateway holding it answers once it has queued the line).
    pub fn user(name_key: &str) -> String {
        format!("chat.user.{name_key}")
    }

    /// `$SRV.STATS.reddit-chat`: every chat gateway's counters.
    pub fn service_stats() -> String {
        format!("$SRV.STATS.{SERVICE}")
    }
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
        assert_eq!(
            wal_segment(2, 0),
            wal(2),
            "segment 0 is the log's first stream"
        );
        assert_eq!(wal_segment(2, 5), "reddit.wal.2.5");
        assert_eq!(wal_segments(2), "reddit.wal.2.*");
    }

    #[test]
    fn reply_shapes() {
        use ReplyTo as R;
        assert_eq!(R::classify("_INBOX.abc.1"), Some(R::Anonymous));
        assert_eq!(R::classify("_INBOX_SERVICE.abc.1"), Some(R::Service));
        assert_eq!(R::classify("_INBOX_ENGINE.abc"), Some(R::Engine));
        assert_eq!(R::classify("_INBOX_USER.alice.x.1"), Some(R::User("alice")));
        for bad in [
            "reddit.wal.0",
            "$JS.API.STREAM.PURGE.REDDIT_WAL_0",
            "reddit.shard.0.internal.sync",
            "reddit.events.user.alice",
            "_INBOX",
            "_INBOX.",
            "_INBOX..x",
            "_INBOX.*",
            "_INBOX.>",
            "_INBOX_USER.alice",
            "_INBOX_USER.Alice.x",
            "_INBOX_USER.a.x",
            "_INBOXX.a",
            "",
        ] {
            assert_eq!(R::classify(bad), None, "{bad}");
        }
        assert_eq!(
            R::connection("_INBOX_USER.alice.nuid.7"),
            "_INBOX_USER.alice.nuid"
        );
        assert_eq!(R::connection("_INBOX.nuid.7"), "_INBOX.nuid");
        assert_eq!(R::connection("_INBOX.nuid"), "_INBOX.nuid");
        assert_eq!(user_inbox_prefix("bob"), "_INBOX_USER.bob");
    }
}
