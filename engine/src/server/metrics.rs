//! Counters of a shard, shown by `shard.stats` and in `$SRV.STATS`: updated by the
//! reader and the actor with relaxed atomics (no locks on the request path).

use reddit_shared::error::ErrorCode;
use reddit_shared::protocol::admin::LogShare;
use reddit_shared::protocol::Op;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

const OPS: usize = Op::ALL.len();
const CODES: [ErrorCode; 12] = ErrorCode::ALL;

/// Counters shown by `shard.stats` and in `$SRV.STATS` (custom data).
#[derive(Debug)]
pub struct Metrics {
    pub(crate) started: Instant,
    /// Requests taken from NATS by the reader (answered or queued).
    pub received: AtomicU64,
    requests: [AtomicU64; OPS],
    unknown: AtomicU64,
    errors: [AtomicU64; CODES.len()],
    /// Sync items waiting in the outbox.
    pub pending_sync: Arc<AtomicU64>,
    /// Requests queued for the actor.
    pub queue_depth: AtomicU64,
    /// Capacity of that queue.
    pub queue_capacity: u64,
    /// Log records appended (group commits).
    pub wal_records: AtomicU64,
    /// Microseconds those appends took, each from its start to its
    /// acknowledgement, summed (over `wal_records`: the mean commit time).
    pub wal_append_us: AtomicU64,
    /// Writes (log entries) in those records.
    pub wal_entries: AtomicU64,
    /// Payload bytes of those records.
    pub wal_bytes: AtomicU64,
    /// Sequence of the last record appended.
    pub wal_seq: AtomicU64,
    /// Pipelined appends sent again.
    pub wal_resent: AtomicU64,
    /// Snapshots stored since start.
    pub snapshots: AtomicU64,
    /// The record the last of them covers.
    pub snapshot_seq: AtomicU64,
    /// Retries answered from the reply cache.
    pub retries_answered: AtomicU64,
    /// Requests dropped because of their reply subject.
    pub replies_refused: AtomicU64,
    /// Slow-consumer reports for the request subscription.
    pub slow_consumer_events: AtomicU64,
    /// Log entries and their bytes by the operation that wrote them
    /// ([`Op::ALL`] order; the last slot is a restart's resync).
    logged: [(AtomicU64, AtomicU64); OPS + 1],
}

impl Metrics {
    /// Fresh counters for a queue of `queue_capacity`.
    pub fn new(queue_capacity: usize) -> Self {
        Self {
            started: Instant::now(),
            received: AtomicU64::new(0),
            requests: std::array::from_fn(|_| AtomicU64::new(0)),
            unknown: AtomicU64::new(0),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
            pending_sync: Arc::new(AtomicU64::new(0)),
            queue_depth: AtomicU64::new(0),
            queue_capacity: queue_capacity as u64,
            wal_records: AtomicU64::new(0),
            wal_append_us: AtomicU64::new(0),
            wal_entries: AtomicU64::new(0),
            wal_bytes: AtomicU64::new(0),
            wal_seq: AtomicU64::new(0),
            wal_resent: AtomicU64::new(0),
            snapshots: AtomicU64::new(0),
            snapshot_seq: AtomicU64::new(0),
            retries_answered: AtomicU64::new(0),
            replies_refused: AtomicU64::new(0),
            slow_consumer_events: AtomicU64::new(0),
            logged: std::array::from_fn(|_| (AtomicU64::new(0), AtomicU64::new(0))),
        }
    }

    /// Counts a log entry of `bytes` written by `op` (`None`: a restart's
    /// resync).
    pub(crate) fn logged(&self, op: Option<Op>, bytes: usize) {
        let i = Self::slot(op).unwrap_or(OPS);
        let (entries, total) = &self.logged[i];
        entries.fetch_add(1, Ordering::Relaxed);
        total.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// What each operation has written to the log (`shard.stats`'s
    /// `wal_by_op`), operations that wrote nothing left out.
    pub fn log_by_op(&self) -> BTreeMap<String, LogShare> {
        Op::ALL
            .iter()
            .map(|op| op.as_str())
            .chain(["resync"])
            .zip(&self.logged)
            .map(|(name, (entries, bytes))| {
                let share = LogShare {
                    entries: entries.load(Ordering::Relaxed),
                    bytes: bytes.load(Ordering::Relaxed),
                };
                (name.to_owned(), share)
            })
            .filter(|(_, share)| share.entries > 0)
            .collect()
    }

    /// `op`'s slot in the per-operation counters ([`Op::ALL`] order).
    fn slot(op: Option<Op>) -> Option<usize> {
        op.and_then(|op| Op::ALL.iter().position(|o| *o == op))
    }

    pub(crate) fn count(&self, op: Option<Op>) {
        match Self::slot(op) {
            Some(i) => self.requests[i].fetch_add(1, Ordering::Relaxed),
            None => self.unknown.fetch_add(1, Ordering::Relaxed),
        };
    }

    pub(crate) fn error(&self, code: ErrorCode) {
        if let Some(i) = CODES.iter().position(|c| *c == code) {
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Total requests received.
    pub fn total_requests(&self) -> u64 {
        self.requests
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<u64>()
            + self.unknown.load(Ordering::Relaxed)
    }

    /// Total error replies.
    pub fn total_errors(&self) -> u64 {
        self.errors.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Per-operation and per-error counts as JSON (for `$SRV.STATS`).
    pub fn to_json(&self) -> serde_json::Value {
        let ops: BTreeMap<&str, u64> = Op::ALL
            .iter()
            .zip(&self.requests)
            .map(|(op, c)| (op.as_str(), c.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let errors: BTreeMap<&str, u64> = CODES
            .iter()
            .zip(&self.errors)
            .map(|(code, c)| (code.as_str(), c.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        serde_json::json!({
            "received": self.received.load(Ordering::Relaxed),
            "requests": self.total_requests(),
            "errors": self.total_errors(),
            "requests_by_op": ops,
            "errors_by_code": errors,
            "queue_depth": self.queue_depth.load(Ordering::Relaxed),
            "queue_capacity": self.queue_capacity,
            "pending_sync": self.pending_sync.load(Ordering::Relaxed),
            "wal_records": self.wal_records.load(Ordering::Relaxed),
            "wal_append_us": self.wal_append_us.load(Ordering::Relaxed),
            "wal_entries": self.wal_entries.load(Ordering::Relaxed),
            "wal_bytes": self.wal_bytes.load(Ordering::Relaxed),
            "wal_seq": self.wal_seq.load(Ordering::Relaxed),
            "wal_resent": self.wal_resent.load(Ordering::Relaxed),
            "snapshots": self.snapshots.load(Ordering::Relaxed),
            "snapshot_seq": self.snapshot_seq.load(Ordering::Relaxed),
            "retries_answered": self.retries_answered.load(Ordering::Relaxed),
            "replies_refused": self.replies_refused.load(Ordering::Relaxed),
            "slow_consumer_events": self.slow_consumer_events.load(Ordering::Relaxed),
            "wal_by_op": self.log_by_op(),
            "uptime_ms": self.started.elapsed().as_millis() as u64,
        })
    }
}
