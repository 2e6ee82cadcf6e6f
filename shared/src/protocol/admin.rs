//! Operations for operators: `shard.stats` (one shard's counters) and `audit.run`
//! (a cross-shard consistency check coordinated by the shard that receives it).

use super::Validate;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Reply to `shard.stats`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ShardStats {
    /// This shard's number.
    pub shard: u32,
    /// Number of shards in the cluster.
    pub shards: u32,
    /// Accounts owned.
    pub users: u64,
    /// Subreddits owned.
    pub subreddits: u64,
    /// Posts in owned subreddits.
    pub posts: u64,
    /// Comments in owned subreddits.
    pub comments: u64,
    /// Votes held (one per user per item).
    pub votes: u64,
    /// DMs in owned inboxes.
    pub dms: u64,
    /// Requests received since start.
    pub requests: u64,
    /// Requests answered with an error since start.
    pub errors: u64,
    /// Requests waiting for the shard now.
    pub queue_depth: u64,
    /// Most requests that may wait before new ones get `503 unavailable`.
    pub queue_capacity: u64,
    /// Updates for other shards (memberships, karma) not yet acknowledged by them.
    pub pending_sync: u64,
    /// Updates other shards acknowledged before they logged them, kept here
    /// until they say those records are durable (sent again if they restart
    /// before; `internal.resync`).
    #[serde(default)]
    pub unlogged_sync: u64,
    /// DMs this shard delivered to other shards that acknowledged them before
    /// their records were durable and have not shown those records durable
    /// since: delivered again if those shards restart (`internal.resync`).
    #[serde(default)]
    pub unconfirmed_dms: u64,
    /// Other shards' subreddit lists this shard's feeds took from its feed
    /// cache (kept, or already being fetched for another feed).
    #[serde(default)]
    pub feed_cache_hits: u64,
    /// Lists its feeds fetched from other shards for the feed cache (one
    /// `internal.feed.candidates` each).
    #[serde(default)]
    pub feed_cache_fills: u64,
    /// Milliseconds since the shard started.
    pub uptime_ms: u64,
    /// Storage: `jetstream` or `memory`.
    #[serde(default)]
    pub storage: String,
    /// Log records appended since start (each a group commit of several writes).
    #[serde(default)]
    pub wal_records: u64,
    /// Microseconds those appends took, each from its start to its
    /// acknowledgement (the append and the broker's fsync, plus any wait for
    /// a core on a busy machine), summed: over `wal_records`, the mean
    /// commit time.
    #[serde(default)]
    pub wal_append_us: u64,
    /// Writes in those records.
    #[serde(default)]
    pub wal_entries: u64,
    /// Bytes of those records' payloads (over `wal_entries`: the bytes a
    /// write costs the log).
    #[serde(default)]
    pub wal_bytes: u64,
    /// Sequence of the last log record appended.
    #[serde(default)]
    pub wal_seq: u64,
    /// Log appends whose first attempt failed (refused behind a predecessor
    /// that had not landed, with `--log-pipeline` above 1, or NATS away) and
    /// that the retrying append sent again once their predecessor was confirmed.
    #[serde(default)]
    pub wal_resent: u64,
    /// Snapshots stored since start (durable mode). A follower of the log
    /// takes them off the request path.
    #[serde(default)]
    pub snapshots: u64,
    /// The log record the last of those snapshots covers (0: none yet).
    #[serde(default)]
    pub snapshot_seq: u64,
    /// Retried writes answered with their original reply since start.
    #[serde(default)]
    pub retries_answered: u64,
    /// Requests dropped unanswered since start because their reply subject was not
    /// an inbox of a known shape (`_INBOX.`, `_INBOX_USER.<user>.`,
    /// `_INBOX_SERVICE.`, `_INBOX_ENGINE.`): the engine never publishes where a
    /// request chose unchecked.
    #[serde(default)]
    pub replies_refused: u64,
    /// Times NATS reported this shard's request subscription as a slow consumer
    /// (requests dropped before the shard saw them) since start.
    #[serde(default)]
    pub slow_consumer_events: u64,
    /// Processes standing by for this shard's lease (durable mode; they
    /// replay the log when they take over).
    #[serde(default)]
    pub standbys: u64,
    /// The shard's lease as its owner sees it (durable mode; absent in
    /// memory mode).
    #[serde(default)]
    pub lease: Option<LeaseStats>,
    /// What each operation has written to the log since start (durable mode):
    /// by operation name (`vote.cast`, `internal.sync`, ...), plus `resync` for
    /// a restart's resync of memberships and karma. An operation's second
    /// write after another shard answered (a DM's sent copy, a remote repost)
    /// counts under its own name. Empty in memory mode.
    #[serde(default)]
    pub wal_by_op: BTreeMap<String, LogShare>,
}

/// One operation's share of a shard's log (`ShardStats::wal_by_op`).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogShare {
    /// Log entries it wrote (one per write that changed something).
    pub entries: u64,
    /// Their encoded bytes (each entry's events and, for a keyed write, its
    /// cached reply), without the records' framing.
    pub bytes: u64,
}

/// A shard's lease, in `shard.stats` (see docs/architecture.md, "Shard
/// ownership").
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaseStats {
    /// The owning process's random instance id (the lease's value).
    pub instance: String,
    /// How long the lease outlives its last renewal, in milliseconds.
    pub ttl_ms: u64,
    /// Milliseconds since the owner sent its last confirmed renewal (it is
    /// renewed every quarter of the TTL; the owner stops serving at four
    /// fifths of it).
    pub renewed_ms_ago: u64,
    /// Whether the owner serves: `false` while it cannot confirm its lease
    /// (cut off from the JetStream majority); it then answers only
    /// `shard.stats` and `internal.hello`, everything else with
    /// `unavailable`.
    #[serde(default)]
    pub serving: bool,
    /// The processes standing by to take the shard over.
    #[serde(default)]
    pub standbys: Vec<StandbyStats>,
}

/// A standby of a shard, in [`LeaseStats`].
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StandbyStats {
    /// Its random instance id.
    pub instance: String,
    /// Its process id.
    pub pid: u32,
    /// Its host name.
    pub host: String,
    /// The last log record it has applied (it follows the log every quarter
    /// of the lease's TTL).
    pub seq: u64,
    /// Records it is behind the owner's last append (`wal_seq - seq`): what a
    /// takeover would read before serving.
    pub lag: u64,
}

/// `audit.run`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AuditRequest {
    /// Most violations to list (default 100); all are counted.
    #[serde(default)]
    pub max_violations: Option<u32>,
}
impl Validate for AuditRequest {}

/// What the audit looked at.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditCounts {
    /// Accounts.
    pub users: u64,
    /// Subreddits.
    pub subreddits: u64,
    /// Posts.
    pub posts: u64,
    /// Comments.
    pub comments: u64,
    /// Votes.
    pub votes: u64,
    /// (subreddit, member) pairs.
    pub memberships: u64,
    /// DMs.
    pub dms: u64,
}

/// One broken invariant.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant: `score`, `member_count`, `membership`, `karma`, `dm`.
    pub kind: String,
    /// What was found, naming the entities.
    pub detail: String,
}

/// Reply to `audit.run`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditReport {
    /// True when no invariant is broken.
    pub ok: bool,
    /// Shards that took part.
    pub shards: u32,
    /// What was checked.
    pub checked: AuditCounts,
    /// All violations found.
    pub violation_count: u64,
    /// The first `max_violations` of them.
    pub violations: Vec<Violation>,
    /// Cross-shard updates still in flight when the audit ran; a nonzero value means
    /// the system was not quiescent and violations may be transient.
    pub pending_sync: u64,
}
