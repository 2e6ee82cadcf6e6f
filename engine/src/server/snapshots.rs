//! Snapshots that never pause the shard. A [`Follower`] holds a second copy of
//! the shard's state (without the post indexes, which snapshots leave out) and
//! applies every record once the log has confirmed it, decoded from the
//! record's bytes exactly as recovery decodes them, on a thread of its own
//! that runs at a lower priority (nice 10) than the request path. Every so
//! many events it encodes its copy as of the record it has reached and stores
//! it. The actor only hands records over: it waits only if the follower falls
//! more than [`FOLLOWER_BUDGET_BYTES`] of records behind. A periodic snapshot
//! is encoded and stored at a steady pace ([`SnapshotPolicy`],
//! [`crate::pace`]), not in one burst.
//!
//! Storing a snapshot (hashing and sending 100+ MiB of object-store chunks)
//! runs on a [`SnapshotIo`] thread of its own, at the follower's priority and
//! over a NATS connection of its own: on the shard's runtime it took the
//! actor's thread for the hashing and copying, and its chunks queued ahead of
//! the log's appends on the log's connection.
//!
//! The price is memory: the follower's copy is about as large as the state
//! (docs/performance.md measures it), plus the CPU of applying each event a
//! second time, off the actor.

use super::journal::LogStore;
use super::metrics::Metrics;
use crate::pace::Pace;
use crate::replies::ReplyCache;
use crate::state::ShardState;
use crate::wal::{decode_record, WalError};
use bytes::Bytes;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

/// Bytes of confirmed records the follower may have waiting before the actor
/// waits to hand it more.
pub const FOLLOWER_BUDGET_BYTES: usize = 256 << 20;

/// How long the follower lets records gather before it applies them: one
/// wake-up per interval rather than per record. It only delays snapshots,
/// which nothing waits for.
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
    /// Bytes the last snapshot took (0: none yet).
    last_size: usize,
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
            last_size: 0,
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

    /// The snapshot of the state as of the record reached, encoded at `pace`
    /// into a buffer an eighth larger than the last one took.
    pub fn encode(&mut self, pace: &Pace) -> Result<Vec<u8>, WalError> {
        let capacity = self.last_size + self.last_size / 8;
        let bytes =
            crate::snapshot::encode_paced(&self.state, &self.replies, self.seq, capacity, pace)
                .map_err(|e| WalError::Follower {
                    shard: self.state.shard(),
                    reason: format!("cannot encode a snapshot: {e}"),
                })?;
        self.last_size = bytes.len();
        Ok(bytes)
    }

    /// The record reached.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

/// When a shard takes its periodic snapshots, and how fast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Events between snapshots (0: only at shutdown).
    pub every: u64,
    /// Bytes per second a periodic snapshot is encoded at, and then stored at
    /// (0: as fast as possible). The last snapshot, at shutdown, is not
    /// paced: a stop is waiting for it.
    pub bytes_per_second: u64,
}

impl SnapshotPolicy {
    /// Every `every` events, as fast as possible.
    pub fn unpaced(every: u64) -> Self {
        Self {
            every,
            bytes_per_second: 0,
        }
    }
}

/// The follower thread's priority, on `thread-priority`'s 0–99 scale, which
/// it maps to nice 10 for normal threads: below the request path (nice 0),
/// so that on a busy machine encoding a snapshot takes what the shard and the
/// broker leave. Not idle scheduling: under full load the follower must
/// still keep up. A test checks the thread's nice value.
const FOLLOWER_NICE_PRIORITY: u8 = 22;

/// A thread with a runtime of its own (at the follower's priority) that
/// stores snapshots, with the store opened on it (a NATS connection runs its
/// I/O on the runtime it was made on). Without one, snapshots are stored from
/// the shard's runtime through the log's own store.
pub struct SnapshotIo {
    /// The thread's runtime.
    handle: tokio::runtime::Handle,
    /// Where snapshots go, opened on that runtime.
    store: Arc<dyn LogStore>,
    /// Dropping it ends the thread and its runtime.
    _stop: oneshot::Sender<()>,
}

impl SnapshotIo {
    /// Starts the thread (`snapshot-io-<shard>`) and runs `open` on it to make
    /// the store: e.g. connect to NATS and open the shard's log there.
    pub async fn start<F, Fut>(shard: u32, open: F) -> Result<Self, WalError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<Arc<dyn LogStore>, WalError>> + Send + 'static,
    {
        let failed = |reason: String| WalError::Follower { shard, reason };
        let (handle_tx, handle_rx) = oneshot::channel();
        let (stop, stop_rx) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("snapshot-io-{shard}"))
            .spawn(move || {
                lower_priority();
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(runtime.handle().clone()));
                // Runs the tasks spawned on it until the owner is dropped.
                let _ = runtime.block_on(stop_rx);
            })
            .map_err(|e| failed(format!("cannot start the snapshot I/O thread: {e}")))?;
        let handle = handle_rx
            .await
            .map_err(|_| failed("the snapshot I/O thread ended at once".into()))?
            .map_err(|e| failed(format!("cannot start the snapshot I/O runtime: {e}")))?;
        let store = handle
            .spawn(open())
            .await
            .map_err(|e| failed(format!("opening the snapshot store failed: {e}")))??;
        Ok(Self {
            handle,
            store,
            _stop: stop,
        })
    }
}

/// The actor's handle on its follower.
pub struct Snapshots {
    tx: Option<mpsc::UnboundedSender<Confirmed>>,
    /// The follower's pace, lifted when the shard stops.
    pace: Pace,
    budget: Arc<Semaphore>,
    /// The thread's outcome, once it ends.
    done: Option<oneshot::Receiver<Result<(), WalError>>>,
    /// Set when dropped unfinished: no snapshot may be stored any more.
    abandoned: Arc<AtomicBool>,
    shard: u32,
}

impl Snapshots {
    /// Starts `follower`, storing snapshots as `policy` says (and a last one
    /// when [`Snapshots::finish`]ed) through `io`, or, without it, in `store`
    /// from the current runtime.
    pub fn start(
        follower: Follower,
        store: Arc<dyn LogStore>,
        io: Option<SnapshotIo>,
        policy: SnapshotPolicy,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let pace = Pace::new(policy.bytes_per_second);
        let shard = follower.state.shard();
        let (done_tx, done) = oneshot::channel();
        let abandoned = Arc::new(AtomicBool::new(false));
        let (runtime, store) = match &io {
            Some(io) => (io.handle.clone(), io.store.clone()),
            None => (tokio::runtime::Handle::current(), store),
        };
        let thread = Thread {
            runtime,
            store,
            _io: io,
            every: policy.every,
            pace: pace.clone(),
            metrics,
            abandoned: abandoned.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name(format!("snapshots-{shard}"))
            .spawn(move || {
                lower_priority();
                let _ = done_tx.send(thread.follow(follower, rx));
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the snapshot follower; no snapshot is taken");
        }
        Self {
            tx: Some(tx),
            pace,
            budget: Arc::new(Semaphore::new(FOLLOWER_BUDGET_BYTES)),
            done: Some(done),
            abandoned,
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
    /// it all, waits for a snapshot being encoded or stored (no longer paced),
    /// and stores a last one if any event came since the one before.
    pub async fn finish(mut self) -> Result<(), WalError> {
        self.tx = None;
        // A periodic snapshot under way goes on as fast as it can.
        self.pace.lift();
        match self.done.take() {
            Some(done) => done.await.unwrap_or_else(|_| {
                Err(WalError::Follower {
                    shard: self.shard,
                    reason: "its thread ended without a result".into(),
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
        if self.done.is_some() {
            self.abandoned.store(true, Ordering::Release);
            self.pace.lift();
        }
    }
}

/// Lowers the calling thread's priority to nice 10 (allowed without
/// privileges); on failure it keeps its priority and says so.
fn lower_priority() {
    use thread_priority::{set_current_thread_priority, ThreadPriority, ThreadPriorityValue};
    let lowered = ThreadPriorityValue::try_from(FOLLOWER_NICE_PRIORITY)
        .map_err(|e| e.to_string())
        .and_then(|v| {
            set_current_thread_priority(ThreadPriority::Crossplatform(v)).map_err(|e| e.to_string())
        });
    if let Err(e) = lowered {
        tracing::warn!(error = %e, "the snapshot follower runs at normal priority");
    }
}

/// What the follower's thread needs besides the follower.
struct Thread {
    /// Stores snapshots (async) from the thread.
    runtime: tokio::runtime::Handle,
    store: Arc<dyn LogStore>,
    /// The runtime's own thread, if it has one: kept until the last snapshot
    /// is stored.
    _io: Option<SnapshotIo>,
    every: u64,
    /// The periodic snapshots' pace.
    pace: Pace,
    metrics: Arc<Metrics>,
    abandoned: Arc<AtomicBool>,
}

impl Thread {
    /// The follower's loop: apply what comes, snapshot when due; at the end
    /// (the actor finished), a last snapshot if anything came since.
    fn follow(
        &self,
        mut f: Follower,
        mut rx: mpsc::UnboundedReceiver<Confirmed>,
    ) -> Result<(), WalError> {
        let mut saving: Option<JoinHandle<()>> = None;
        while let Some(first) = rx.blocking_recv() {
            std::thread::sleep(GATHER);
            f.apply(first.seq, &first.bytes)?;
            drop(first);
            while let Ok(record) = rx.try_recv() {
                f.apply(record.seq, &record.bytes)?;
            }
            let idle = saving.as_ref().is_none_or(JoinHandle::is_finished);
            if self.every > 0 && f.since >= self.every && idle && !self.abandoned() {
                f.since = 0;
                let started = std::time::Instant::now();
                match f.encode(&self.pace) {
                    Ok(bytes) => {
                        tracing::info!(
                            seq = f.seq,
                            bytes = bytes.len(),
                            encode_ms = started.elapsed().as_millis() as u64,
                            "snapshot encoded; storing it"
                        );
                        let save = self.store.save_snapshot(bytes, f.seq, self.pace.clone());
                        let (seq, metrics) = (f.seq, self.metrics.clone());
                        saving = Some(self.runtime.spawn(async move {
                            let started = std::time::Instant::now();
                            match save.await {
                                Ok(()) => {
                                    tracing::info!(
                                        seq,
                                        store_ms = started.elapsed().as_millis() as u64,
                                        "snapshot stored"
                                    );
                                    stored(&metrics, seq)
                                }
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
            let _ = self.runtime.block_on(task);
        }
        if f.since > 0 && !self.abandoned() {
            let bytes = f.encode(&Pace::unpaced())?;
            self.runtime
                .block_on(self.store.save_snapshot(bytes, f.seq, Pace::unpaced()))?;
            stored(&self.metrics, f.seq);
        }
        Ok(())
    }

    fn abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Acquire)
    }
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
                key: crate::replies::ReplyKey::of_text(&format!("key-{n}")),
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
            Snapshots::start(
                follower,
                store,
                None,
                SnapshotPolicy::unpaced(every),
                metrics.clone(),
            ),
            metrics,
        )
    }

    /// Waits (up to 10 s) until the follower stored a snapshot.
    async fn first_snapshot(metrics: &Metrics) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while metrics.snapshots.load(Ordering::Relaxed) == 0 {
            assert!(tokio::time::Instant::now() < deadline, "no snapshot stored");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn snapshots_hold_the_state_as_of_the_record_they_cover() {
        let store = MemStore::open();
        let (mut snapshots, metrics) = start(&store, 0, 3);
        for seq in 1..=3 {
            snapshots.confirmed(seq, record(seq)).await;
        }
        first_snapshot(&metrics).await;
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
            assert_eq!(
                replies.last().unwrap().key,
                crate::replies::ReplyKey::of_text(&format!("key-{seq}"))
            );
        }
        assert_eq!(
            metrics.snapshots.load(Ordering::Relaxed),
            stored.len() as u64
        );
        assert_eq!(metrics.snapshot_seq.load(Ordering::Relaxed), 10);
    }

    /// A stop does not wait for a periodic snapshot's pace: the one being
    /// encoded (3 MiB at 128 KiB/s, over 20 s) finishes at full speed once
    /// the shard stops, well within the deadline.
    #[tokio::test]
    async fn a_stop_lifts_the_pace_of_the_snapshot_under_way() {
        let users = 30_000;
        let mut state = ShardState::new(0, 1);
        for n in 0..users {
            state.apply_owned(Event::UserRegistered {
                username: format!("member_{n}").parse().unwrap(),
                public_key: [7; 32],
                at: 1,
            });
        }
        let store = MemStore::open();
        let backing: Arc<dyn LogStore> = Arc::new(store.clone());
        let follower = Follower::new(&state, &ReplyCache::new(10), 0, 0);
        let policy = SnapshotPolicy {
            every: 1,
            bytes_per_second: 128 << 10,
        };
        let mut snapshots =
            Snapshots::start(follower, backing, None, policy, Arc::new(Metrics::new(1)));
        snapshots.confirmed(1, record(1)).await;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while snapshots.pace.bytes() == 0 {
            assert!(tokio::time::Instant::now() < deadline, "no snapshot began");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        tokio::time::timeout(std::time::Duration::from_secs(10), snapshots.finish())
            .await
            .expect("the stop waited for the snapshot's pace")
            .unwrap();
        let stored = store.snapshots.lock().unwrap().clone();
        assert_eq!(stored.len(), 1, "the periodic one, and nothing after it");
        let (state, _, covered) = decode_snapshot(&stored[0].1).unwrap();
        assert_eq!((covered, state.user_count()), (1, users + 1));
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

    /// The nice values of this process's threads named `name`.
    #[cfg(target_os = "linux")]
    fn nice_of_threads(name: &str) -> Vec<i64> {
        let mut out = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim() != name {
                continue;
            }
            // A thread of another test may end between the listing and here.
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            // Fields after the parenthesised name: state is field 3, nice is 19.
            let rest = &stat[stat.rfind(')').unwrap() + 2..];
            out.push(rest.split(' ').nth(16).unwrap().parse().unwrap());
        }
        out
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_follower_runs_below_the_request_path() {
        let store = MemStore::open();
        let (mut snapshots, metrics) = start(&store, 0, 1);
        snapshots.confirmed(1, record(1)).await;
        first_snapshot(&metrics).await;
        let nice = nice_of_threads("snapshots-0");
        assert!(!nice.is_empty(), "the follower has a thread of its own");
        assert!(nice.iter().all(|n| *n == 10), "{nice:?}");
        snapshots.finish().await.unwrap();
    }

    /// A store that notes the thread each snapshot is stored from.
    struct WhereStored {
        inner: Arc<MemStore>,
        threads: Arc<std::sync::Mutex<Vec<String>>>,
    }

    impl LogStore for WhereStored {
        fn append(
            &self,
            record: Bytes,
            msg_id: String,
            expected_last: u64,
        ) -> futures::future::BoxFuture<'static, Result<u64, WalError>> {
            self.inner.append(record, msg_id, expected_last)
        }

        fn try_append(
            &self,
            record: Bytes,
            msg_id: String,
            expected_last: u64,
        ) -> futures::future::BoxFuture<'static, Result<u64, WalError>> {
            self.inner.try_append(record, msg_id, expected_last)
        }

        fn save_snapshot(
            &self,
            bytes: Vec<u8>,
            seq: u64,
            pace: Pace,
        ) -> futures::future::BoxFuture<'static, Result<(), WalError>> {
            let (inner, threads) = (self.inner.clone(), self.threads.clone());
            Box::pin(async move {
                let name = std::thread::current().name().unwrap_or("").to_owned();
                threads.lock().unwrap().push(name);
                inner.save_snapshot(bytes, seq, pace).await
            })
        }

        fn writer(&self) -> String {
            self.inner.writer()
        }
    }

    /// With a [`SnapshotIo`], snapshots are stored from its thread (at the
    /// follower's priority, not on the shard's runtime) into its store, and
    /// the thread ends with the follower.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn snapshots_are_stored_from_a_thread_of_their_own() {
        let store = MemStore::open();
        let threads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let io_store: Arc<dyn LogStore> = Arc::new(WhereStored {
            inner: store.clone(),
            threads: threads.clone(),
        });
        // Shard 5: thread names no other test uses.
        let io = SnapshotIo::start(5, move || async move { Ok(io_store) })
            .await
            .unwrap();
        let log = MemStore::open();
        let log_store: Arc<dyn LogStore> = Arc::new(log.clone());
        let follower = Follower::new(&ShardState::new(5, 8), &ReplyCache::new(10), 0, 0);
        let metrics = Arc::new(Metrics::new(1));
        let mut snapshots = Snapshots::start(
            follower,
            log_store,
            Some(io),
            SnapshotPolicy::unpaced(1),
            metrics.clone(),
        );
        snapshots.confirmed(1, record(1)).await;
        first_snapshot(&metrics).await;
        let nice = nice_of_threads("snapshot-io-5");
        assert!(!nice.is_empty(), "the I/O thread runs");
        assert!(nice.iter().all(|n| *n == 10), "{nice:?}");
        snapshots.confirmed(2, record(2)).await;
        snapshots.finish().await.unwrap();
        let seen = threads.lock().unwrap().clone();
        assert!(!seen.is_empty());
        assert!(seen.iter().all(|t| t == "snapshot-io-5"), "{seen:?}");
        assert_eq!(store.snapshots.lock().unwrap().len(), seen.len());
        assert!(
            log.snapshots.lock().unwrap().is_empty(),
            "not the log's store"
        );
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !nice_of_threads("snapshot-io-5").is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the I/O thread did not end"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Dropped without `finish` (the actor failed, say it was fenced off):
    /// the follower ends without storing the snapshot it owed.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn an_abandoned_follower_stores_nothing_more() {
        let store = MemStore::open();
        // Shard 7: a thread name no other test uses. 5 replayed events: a
        // finished follower would store a snapshot at the end.
        let state = ShardState::new(7, 8);
        let follower = Follower::new(&state, &ReplyCache::new(10), 0, 5);
        let backing: Arc<dyn LogStore> = Arc::new(store.clone());
        let snapshots = Snapshots::start(
            follower,
            backing,
            None,
            SnapshotPolicy::unpaced(0),
            Arc::new(Metrics::new(1)),
        );
        drop(snapshots);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !nice_of_threads("snapshots-7").is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the follower did not end"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(store.snapshots.lock().unwrap().is_empty());
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
