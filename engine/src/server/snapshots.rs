//! Snapshots that never pause the shard. A [`Follower`] holds a second copy of
//! the shard's state (without the post indexes, which snapshots leave out) and
//! applies every record once the log has confirmed it, decoded from the
//! record's bytes exactly as recovery decodes them, on the blocking pool. Every
//! so many events it encodes its copy as of the record it has reached, also on
//! the blocking pool, and stores it. The actor only hands records over: it
//! waits only if the follower falls more than [`FOLLOWER_BUDGET_BYTES`] of
//! records behind.
//!
//! The price is memory: the follower's copy is about as large as the state
//! (docs/performance.md measures it), plus the CPU of applying each event a
//! second time, off the actor.

use super::journal::LogStore;
use super::metrics::Metrics;
use crate::replies::ReplyCache;
use crate::state::ShardState;
use crate::wal::{decode_record, encode_snapshot, WalError};
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

/// Bytes of confirmed records the follower may have waiting before the actor
/// waits to hand it more.
pub const FOLLOWER_BUDGET_BYTES: usize = 256 << 20;

/// How long the follower lets records gather before a trip to the blocking
/// pool: one thread hand-off per interval rather than per record (no
/// difference showed through the noise of the 2-core box, but it bounds the
/// wake-ups). It only delays snapshots, which nothing waits for.
const GATHER: std::time::Duration = std::time::Duration::from_millis(50);

/// Bookkeeping bytes counted per record on top of its payload (an empty record
/// still takes room).
const RECORD_OVERHEAD: usize = 64;

/// A record the log confirmed, holding its share of the budget.
struct Confirmed {
    seq: u64,
    bytes: Bytes,
    _permit: OwnedSemaphorePermit,
}

/// The state a snapshot is taken from, kept one confirmed record at a time.
pub struct Follower {
    state: ShardState,
    replies: ReplyCache,
    seq: u64,
    /// Events applied since the last snapshot.
    since: u64,
}

impl Follower {
    /// A follower starting from a copy of `state` and `replies` as of record
    /// `seq`, `since` events after the snapshot that record's state came from
    /// (what recovery replayed: they count towards the next snapshot).
    pub fn new(state: &ShardState, replies: &ReplyCache, seq: u64, since: u64) -> Self {
        Self {
            state: state.copy_for_snapshots(),
            replies: replies.clone(),
            seq,
            since,
        }
    }

    /// Applies record `seq`, as recovery would.
    fn apply(&mut self, seq: u64, bytes: &[u8]) -> Result<(), WalError> {
        let entries = decode_record(bytes).map_err(|e| WalError::Corrupt {
            shard: self.state.shard(),
            what: format!("record {seq}"),
            reason: e.to_string(),
        })?;
        for entry in entries {
            self.since += entry.events.len() as u64;
            for event in entry.events {
                self.state.apply_owned(event);
            }
            if let Some(reply) = entry.reply {
                self.replies.insert(reply);
            }
        }
        self.seq = seq;
        Ok(())
    }

    /// The snapshot of the state as of the record reached.
    pub fn encode(&self) -> Result<Vec<u8>, WalError> {
        encode_snapshot(&self.state, &self.replies, self.seq).map_err(|e| WalError::Follower {
            shard: self.state.shard(),
            reason: format!("cannot encode a snapshot: {e}"),
        })
    }

    /// The record reached.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

/// The actor's handle on its follower.
pub struct Snapshots {
    tx: Option<mpsc::UnboundedSender<Confirmed>>,
    budget: Arc<Semaphore>,
    task: Option<JoinHandle<Result<(), WalError>>>,
    shard: u32,
}

impl Snapshots {
    /// Starts `follower`, storing a snapshot in `store` every `every` events
    /// (0: only when [`Snapshots::finish`]ed).
    pub fn start(
        follower: Follower,
        store: Arc<dyn LogStore>,
        every: u64,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let shard = follower.state.shard();
        let task = tokio::spawn(follow(follower, rx, store, every, metrics));
        Self {
            tx: Some(tx),
            budget: Arc::new(Semaphore::new(FOLLOWER_BUDGET_BYTES)),
            task: Some(task),
            shard,
        }
    }

    /// Hands over record `seq`, confirmed stored. Waits only while the follower
    /// is more than the budget behind (an unbounded channel, bounded in bytes
    /// by the permits the records carry).
    pub async fn confirmed(&mut self, seq: u64, bytes: Bytes) {
        let Some(tx) = &self.tx else {
            return;
        };
        let cost = (bytes.len() + RECORD_OVERHEAD).min(FOLLOWER_BUDGET_BYTES);
        let Ok(permit) = self
            .budget
            .clone()
            .acquire_many_owned(u32::try_from(cost).unwrap_or(u32::MAX))
            .await
        else {
            return;
        };
        let record = Confirmed {
            seq,
            bytes,
            _permit: permit,
        };
        if tx.send(record).is_err() {
            tracing::error!(
                seq,
                "the snapshot follower stopped; no snapshot is taken until a restart"
            );
            self.tx = None;
        }
    }

    /// At shutdown, after the last record was handed over: the follower applies
    /// it all, waits for a snapshot being stored, and stores a last one if any
    /// event came since the one before.
    pub async fn finish(mut self) -> Result<(), WalError> {
        self.tx = None;
        match self.task.take() {
            Some(task) => task.await.unwrap_or_else(|e| {
                Err(WalError::Follower {
                    shard: self.shard,
                    reason: format!("the follower's task failed: {e}"),
                })
            }),
            None => Ok(()),
        }
    }
}

impl Drop for Snapshots {
    /// Not finished (the actor failed, say it lost the log to another
    /// process): no snapshot must be stored from here any more.
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The follower's loop: apply what comes, snapshot when due.
async fn follow(
    mut f: Follower,
    mut rx: mpsc::UnboundedReceiver<Confirmed>,
    store: Arc<dyn LogStore>,
    every: u64,
    metrics: Arc<Metrics>,
) -> Result<(), WalError> {
    let mut saving: Option<JoinHandle<()>> = None;
    while let Some(first) = rx.recv().await {
        tokio::time::sleep(GATHER).await;
        let mut batch = vec![first];
        while let Ok(record) = rx.try_recv() {
            batch.push(record);
        }
        let shard = f.state.shard();
        f = tokio::task::spawn_blocking(move || {
            for record in &batch {
                f.apply(record.seq, &record.bytes)?;
            }
            Ok::<_, WalError>(f)
        })
        .await
        .map_err(|e| WalError::Follower {
            shard,
            reason: format!("applying records: {e}"),
        })??;
        let idle = saving.as_ref().is_none_or(JoinHandle::is_finished);
        if every > 0 && f.since >= every && idle {
            let (back, bytes) = encode_off(f).await?;
            f = back;
            f.since = 0;
            match bytes {
                Ok(bytes) => {
                    let (seq, save, metrics) =
                        (f.seq, store.save_snapshot(bytes, f.seq), metrics.clone());
                    saving = Some(tokio::spawn(async move {
                        match save.await {
                            Ok(()) => stored(&metrics, seq),
                            Err(e) => {
                                tracing::warn!(error = %e, "snapshot failed; the log keeps every record until the next one")
                            }
                        }
                    }));
                }
                Err(e) => tracing::error!(error = %e, "could not encode a snapshot"),
            }
        }
    }
    if let Some(task) = saving.take() {
        let _ = task.await;
    }
    if f.since > 0 {
        let (f, bytes) = encode_off(f).await?;
        store.save_snapshot(bytes?, f.seq).await?;
        stored(&metrics, f.seq);
    }
    Ok(())
}

/// Encodes `f`'s snapshot on the blocking pool, giving `f` back.
async fn encode_off(f: Follower) -> Result<(Follower, Result<Vec<u8>, WalError>), WalError> {
    let shard = f.state.shard();
    tokio::task::spawn_blocking(move || {
        let bytes = f.encode();
        (f, bytes)
    })
    .await
    .map_err(|e| WalError::Follower {
        shard,
        reason: format!("encoding a snapshot: {e}"),
    })
}

fn stored(metrics: &Metrics, seq: u64) {
    metrics.snapshots.fetch_add(1, Ordering::Relaxed);
    metrics.snapshot_seq.store(seq, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replies::Cached;
    use crate::server::journal::tests::MemStore;
    use crate::state::Event;
    use crate::wal::{decode_snapshot, Entry, RecordBuilder};

    /// A record registering `user_<n>`, remembering a reply under `key-<n>`.
    fn record(n: u64) -> Bytes {
        let mut b = RecordBuilder::default();
        b.push(&Entry {
            reply: Some(Cached {
                key: format!("key-{n}"),
                hash: n,
                reply: vec![n as u8],
            }),
            events: vec![Event::UserRegistered {
                username: format!("user_{n}").parse().unwrap(),
                public_key: [n as u8; 32],
                at: n as i64,
            }],
        })
        .unwrap();
        b.seal()
    }

    fn start(store: &Arc<MemStore>, since: u64, every: u64) -> (Snapshots, Arc<Metrics>) {
        let state = ShardState::new(0, 1);
        let follower = Follower::new(&state, &ReplyCache::new(100), 0, since);
        let metrics = Arc::new(Metrics::new(1));
        let store: Arc<dyn LogStore> = Arc::new(store.clone());
        (
            Snapshots::start(follower, store, every, metrics.clone()),
            metrics,
        )
    }

    #[tokio::test]
    async fn snapshots_hold_the_state_as_of_the_record_they_cover() {
        let store = MemStore::open();
        let (mut snapshots, metrics) = start(&store, 0, 3);
        for seq in 1..=3 {
            snapshots.confirmed(seq, record(seq)).await;
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while metrics.snapshots.load(Ordering::Relaxed) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no snapshot after 3 events"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        for seq in 4..=10 {
            snapshots.confirmed(seq, record(seq)).await;
        }
        snapshots.finish().await.unwrap();
        let stored = store.snapshots.lock().unwrap().clone();
        let seqs: Vec<u64> = stored.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs.first(), Some(&3), "due after 3 events: {seqs:?}");
        assert_eq!(
            seqs.last(),
            Some(&10),
            "the last covers every record: {seqs:?}"
        );
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
        for (seq, bytes) in &stored {
            let (state, replies, covered) = decode_snapshot(bytes).unwrap();
            assert_eq!(covered, *seq);
            assert_eq!(
                state.user_count(),
                *seq,
                "every record up to {seq}, no more"
            );
            assert_eq!(replies.len() as u64, *seq);
            assert_eq!(replies.last().unwrap().key, format!("key-{seq}"));
        }
        assert_eq!(
            metrics.snapshots.load(Ordering::Relaxed),
            stored.len() as u64
        );
        assert_eq!(metrics.snapshot_seq.load(Ordering::Relaxed), 10);
    }

    #[tokio::test]
    async fn with_nothing_new_no_snapshot_is_stored_at_the_end() {
        let store = MemStore::open();
        let (snapshots, metrics) = start(&store, 0, 3);
        snapshots.finish().await.unwrap();
        assert!(store.snapshots.lock().unwrap().is_empty());
        assert_eq!(metrics.snapshots.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn events_replayed_at_start_are_covered_by_the_next_snapshot() {
        let store = MemStore::open();
        // Recovery replayed 5 events after the last snapshot; nothing since.
        let (snapshots, _) = start(&store, 5, 0);
        snapshots.finish().await.unwrap();
        let seqs: Vec<u64> = store
            .snapshots
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.0)
            .collect();
        assert_eq!(
            seqs,
            [0],
            "the replayed records are snapshotted at shutdown"
        );
    }

    #[tokio::test]
    async fn a_record_that_does_not_decode_stops_the_follower_with_an_error() {
        let store = MemStore::open();
        let (mut snapshots, _) = start(&store, 0, 1);
        snapshots.confirmed(1, Bytes::from_static(b"\xc1")).await;
        let err = snapshots.finish().await.unwrap_err();
        assert!(matches!(err, WalError::Corrupt { .. }), "{err:?}");
        assert!(store.snapshots.lock().unwrap().is_empty());
    }
}
