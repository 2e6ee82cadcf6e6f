//! Durability policy of a shard: a write is answered only once its log entry is
//! durable. The [`Journal`] fills one record (group commit) while earlier ones
//! are being appended, up to a pipeline depth of appends in flight at once,
//! and holds every outcome until the record holding its entry is acknowledged.
//! Each confirmed record goes on to the snapshot follower
//! ([`super::snapshots`]), so snapshots never stop the journal.
//!
//! Pipelining: a record is sent as soon as a slot is free, expecting the sequence
//! its predecessor will get ([`LogStore::try_append`]). Acknowledgements are
//! taken in order; a record whose first attempt failed (say its predecessor had
//! not landed yet) is sent again with [`LogStore::append`] once every record
//! before it is confirmed, so the log holds the records in the order they were
//! made and an outcome never goes out before everything it follows is durable. It knows nothing of NATS: the log is any [`LogStore`] (JetStream's
//! [`Log`] in a running engine, memory in the tests below), and with no store
//! (memory storage) everything is durable at once.

use crate::pace::Pace;
use crate::wal::{Entry, Log, RecordBuilder, WalError};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use std::collections::VecDeque;
use std::sync::Arc;

/// Where records and snapshots are stored.
pub trait LogStore: Send + Sync + 'static {
    /// Appends `record` as the record after `expected_last` and returns its
    /// sequence; a retry with the same `msg_id` is stored once.
    fn append(
        &self,
        record: Bytes,
        msg_id: String,
        expected_last: u64,
    ) -> BoxFuture<'static, Result<u64, WalError>>;

    /// One attempt at appending `record` after `expected_last` (a prediction
    /// while earlier appends are in flight), without retrying; on any failure
    /// the journal calls [`LogStore::append`] once the predecessor is confirmed.
    fn try_append(
        &self,
        record: Bytes,
        msg_id: String,
        expected_last: u64,
    ) -> BoxFuture<'static, Result<u64, WalError>>;

    /// Stores a snapshot covering records up to `seq`, sending its bytes at
    /// `pace`.
    fn save_snapshot(
        &self,
        bytes: Vec<u8>,
        seq: u64,
        pace: Pace,
    ) -> BoxFuture<'static, Result<(), WalError>>;

    /// The prefix of the message ids the journal gives this store's records
    /// (`<writer>.<n>`): by it, [`Log::holds_only_own_records_after`] tells
    /// this process's records from another's.
    fn writer(&self) -> String;
}

impl LogStore for Log {
    fn append(
        &self,
        record: Bytes,
        msg_id: String,
        expected_last: u64,
    ) -> BoxFuture<'static, Result<u64, WalError>> {
        let log = self.clone();
        async move { log.append(record, &msg_id, expected_last).await }.boxed()
    }

    fn try_append(
        &self,
        record: Bytes,
        msg_id: String,
        expected_last: u64,
    ) -> BoxFuture<'static, Result<u64, WalError>> {
        let log = self.clone();
        async move { log.try_append(record, &msg_id, expected_last).await }.boxed()
    }

    fn save_snapshot(
        &self,
        bytes: Vec<u8>,
        seq: u64,
        pace: Pace,
    ) -> BoxFuture<'static, Result<(), WalError>> {
        let log = self.clone();
        async move { log.save_snapshot_paced(bytes, seq, &pace).await }.boxed()
    }

    fn writer(&self) -> String {
        Log::writer(self).to_owned()
    }
}

/// Appends a shard keeps in flight by default. One: on the 2-core benchmark box
/// more split the group-commit batches, and JetStream's per-record fsync cost
/// made every depth above one slower (docs/performance.md).
pub const DEFAULT_PIPELINE: usize = 1;

/// An append confirmed by the log.
#[derive(Debug)]
pub struct Ack {
    /// Entries up to this number are durable.
    pub upto: u64,
    /// The record's sequence in the log.
    pub seq: u64,
    /// The record (for the snapshot follower).
    pub record: Bytes,
    /// From the start of its append to its acknowledgement (retries
    /// included).
    pub took: std::time::Duration,
}

/// A record being appended.
struct Inflight {
    /// The last entry number it holds.
    upto: u64,
    /// Its bytes and message id, kept to send it again.
    record: Bytes,
    msg_id: String,
    /// After its first attempt failed: the append that retries it.
    retry: Option<BoxFuture<'static, Result<u64, WalError>>>,
    /// When its first attempt started.
    started: tokio::time::Instant,
}

/// How a shard groups its writes into log records (durable mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Most appends in flight at once (at least 1).
    pub depth: usize,
    /// How long the open record may wait to grow to the size of the last one
    /// sent (zero: never waits). See [`Journal::with_linger`].
    pub linger: std::time::Duration,
    /// How long an open record nobody waits for may wait for more entries
    /// (zero: as long as `linger`). See [`Journal::with_unwaited_linger`].
    pub unwaited_linger: std::time::Duration,
}

impl Batching {
    /// One append at a time, appended as soon as possible: what tests use.
    pub fn eager() -> Self {
        Self {
            depth: 1,
            linger: std::time::Duration::ZERO,
            unwaited_linger: std::time::Duration::ZERO,
        }
    }
}

/// The log side of a shard, holding outcomes of type `T` until they are durable.
pub struct Journal<T> {
    /// None: memory storage.
    store: Option<Arc<dyn LogStore>>,
    open: RecordBuilder,
    /// Appends in flight, oldest first.
    inflight: VecDeque<Inflight>,
    /// The first attempts of those whose first attempt has not finished, in
    /// the same order (polled together, yielded in order).
    attempts: FuturesOrdered<BoxFuture<'static, Result<u64, WalError>>>,
    /// Most appends in flight at once.
    depth: usize,
    /// First attempts that failed and were sent again.
    resent: u64,
    /// How long the open record may wait to grow to the size of the last one
    /// sent (zero: never waits).
    linger: std::time::Duration,
    /// How long an open record that nobody waits for may wait to grow
    /// (zero: as long as [`Journal::linger`] says). See
    /// [`Journal::with_unwaited_linger`].
    unwaited_linger: std::time::Duration,
    /// Whether an outcome is held for an entry of the open record.
    open_waited: bool,
    /// When the open record got its first entry.
    opened_at: Option<tokio::time::Instant>,
    /// Entries of the last record sent.
    last_entries: u32,
    /// The last record confirmed stored.
    last_seq: u64,
    msg_prefix: String,
    appends: u64,
    /// Entries recorded (writes handled).
    written: u64,
    /// The encoded size of the last entry recorded.
    last_entry_bytes: usize,
    /// Entries known durable.
    durable: u64,
    /// Outcomes waiting for their entries: (entry number, outcome).
    held: VecDeque<(u64, T)>,
}

impl<T> Journal<T> {
    /// Memory storage: nothing is logged, every outcome goes out at once.
    pub fn memory() -> Self {
        Self::with_store(None, 0, 1)
    }

    /// A journal appending to `store` after record `last_seq`, with up to
    /// `depth` appends in flight (at least 1).
    pub fn durable(store: Arc<dyn LogStore>, last_seq: u64, depth: usize) -> Self {
        Self::with_store(Some(store), last_seq, depth)
    }

    fn with_store(store: Option<Arc<dyn LogStore>>, last_seq: u64, depth: usize) -> Self {
        Self {
            msg_prefix: store.as_ref().map(|s| s.writer()).unwrap_or_default(),
            store,
            open: RecordBuilder::default(),
            inflight: VecDeque::new(),
            attempts: FuturesOrdered::new(),
            depth: depth.max(1),
            resent: 0,
            linger: std::time::Duration::ZERO,
            unwaited_linger: std::time::Duration::ZERO,
            open_waited: false,
            opened_at: None,
            last_entries: 0,
            last_seq,
            appends: 0,
            written: 0,
            last_entry_bytes: 0,
            durable: 0,
            held: VecDeque::new(),
        }
    }

    /// Lets the open record wait up to `linger` to grow to the size of the
    /// last record sent before it is appended (fewer, larger appends under
    /// load; no wait when load is light, as the last record was then small).
    pub fn with_linger(mut self, linger: std::time::Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Lets an open record whose entries nobody waits for (no outcome is
    /// held for them: writes acknowledged before they are logged, such as
    /// `internal.sync`) wait up to `linger` for more entries. Such records
    /// otherwise cost a shard that only receives them an append (an fsync)
    /// each; their senders keep the items until told they are durable. An
    /// outcome held for one of its entries ends the wait.
    pub fn with_unwaited_linger(mut self, linger: std::time::Duration) -> Self {
        self.unwaited_linger = linger;
        self
    }

    /// How long the open record may wait to grow.
    fn open_linger(&self) -> std::time::Duration {
        if self.open_waited || self.unwaited_linger.is_zero() {
            self.linger
        } else {
            self.unwaited_linger.max(self.linger)
        }
    }

    /// When a record that [`Journal::kick`] is holding back to grow must go
    /// anyway: the actor calls `kick` again then.
    pub fn linger_deadline(&self) -> Option<tokio::time::Instant> {
        let opened = self.opened_at?;
        (self.inflight.len() < self.depth && !self.open.is_empty())
            .then(|| opened + self.open_linger())
    }

    /// The log sequence the open record will get (every record started
    /// lands right after the one before it); 0 without a log.
    pub fn open_record_seq(&self) -> u64 {
        match self.store {
            Some(_) => self.last_seq + self.inflight.len() as u64 + 1,
            None => 0,
        }
    }

    /// The log sequence of the record whose append makes every entry recorded
    /// so far durable: the open record's if it holds entries, else the last
    /// one in flight's; 0 when all of them are durable already (or without a
    /// log). What a write acknowledged before it is logged names when it
    /// changed nothing itself: what it found may still be on its way to the
    /// log, and a record it named that stays empty would never be appended.
    pub fn covering_seq(&self) -> u64 {
        match self.store {
            Some(_) if !self.open.is_empty() => self.open_record_seq(),
            Some(_) if !self.inflight.is_empty() => self.last_seq + self.inflight.len() as u64,
            _ => 0,
        }
    }

    /// The last durable record's log sequence (0: none, or no log).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Whether writes go to a log (else memory storage).
    pub fn is_logged(&self) -> bool {
        self.store.is_some()
    }

    /// Whether the actor may take another job: not while the open record is full.
    pub fn can_take(&self) -> bool {
        !self.open.is_full()
    }

    /// Whether anything is still to be appended or acknowledged.
    pub fn busy(&self) -> bool {
        !self.inflight.is_empty() || !self.open.is_empty()
    }

    /// Pipelined appends whose first attempt failed and that were sent again.
    pub fn resent(&self) -> u64 {
        self.resent
    }

    /// Adds a write's entry to the open record; returns its entry number, the tag
    /// its outcome waits for (0 with memory storage: durable at once).
    pub fn record(&mut self, entry: &Entry) -> u64 {
        if self.store.is_none() {
            return 0;
        }
        if self.open.is_empty() {
            self.opened_at = Some(tokio::time::Instant::now());
        }
        let before = self.open.bytes();
        if let Err(e) = self.open.push(entry) {
            tracing::error!(error = %e, "could not encode a log entry");
        }
        self.last_entry_bytes = self.open.bytes().saturating_sub(before);
        self.written += 1;
        self.written
    }

    /// The encoded size of the entry [`record`](Self::record) took last (0
    /// without a log).
    pub fn last_entry_bytes(&self) -> usize {
        self.last_entry_bytes
    }

    /// The tag of the latest write: an outcome that must follow every write so
    /// far waits for it.
    pub fn last_tag(&self) -> u64 {
        self.written
    }

    /// Gives `outcome` back if entries up to `tag` are durable (it goes out now),
    /// else holds it. Tag 0 (a read) is never held; writes keep their order.
    pub fn hold(&mut self, tag: u64, outcome: T) -> Option<T> {
        if tag <= self.durable {
            Some(outcome)
        } else {
            // Entries past those of the records in flight are the open record's.
            if tag > self.written - u64::from(self.open.entries()) {
                self.open_waited = true;
            }
            self.held.push_back((tag, outcome));
            None
        }
    }

    /// The next held outcome whose entries are durable.
    pub fn pop_ready(&mut self) -> Option<T> {
        if self
            .held
            .front()
            .is_some_and(|(tag, _)| *tag <= self.durable)
        {
            self.held.pop_front().map(|(_, o)| o)
        } else {
            None
        }
    }

    /// Starts appending the open record if a pipeline slot is free and it need
    /// not linger (see [`Journal::with_linger`]); returns how many entries it
    /// holds (0: nothing started).
    pub fn kick(&mut self) -> u64 {
        let Some(store) = &self.store else {
            return 0;
        };
        if self.inflight.len() >= self.depth || self.open.is_empty() {
            return 0;
        }
        let lingers = self
            .opened_at
            .is_some_and(|t| t.elapsed() < self.open_linger());
        if lingers && !self.open.is_full() {
            // Nobody waits: grow until the deadline. Else: until as large as
            // the last record (a light load sends at once).
            if !self.open_waited && !self.unwaited_linger.is_zero() {
                return 0;
            }
            if !self.linger.is_zero() && self.open.entries() < self.last_entries {
                return 0;
            }
        }
        self.start_append(store.clone())
    }

    /// Starts appending the open record now, lingering or not (draining at
    /// shutdown); see [`Journal::kick`].
    pub fn flush(&mut self) -> u64 {
        match &self.store {
            Some(store) if self.inflight.len() < self.depth && !self.open.is_empty() => {
                self.start_append(store.clone())
            }
            _ => 0,
        }
    }

    fn start_append(&mut self, store: Arc<dyn LogStore>) -> u64 {
        self.last_entries = self.open.entries();
        self.opened_at = None;
        self.open_waited = false;
        let entries = u64::from(self.open.entries());
        let record = self.open.seal();
        self.appends += 1;
        let msg_id = format!("{}.{}", self.msg_prefix, self.appends);
        // Every record in flight lands right after the one before it.
        let expected = self.last_seq + self.inflight.len() as u64;
        self.attempts
            .push_back(store.try_append(record.clone(), msg_id.clone(), expected));
        self.inflight.push_back(Inflight {
            upto: self.written,
            record,
            msg_id,
            retry: None,
            started: tokio::time::Instant::now(),
        });
        entries
    }

    /// Waits for the oldest append in flight (forever if none): entries up to
    /// `upto` are durable as the record `seq` holding `record`. Cancel-safe:
    /// dropped, it loses nothing, and a retry goes on where it was.
    pub async fn next_ack(&mut self) -> Result<Ack, WalError> {
        let Some(store) = self.store.clone() else {
            return std::future::pending().await;
        };
        loop {
            let Some(front) = self.inflight.front_mut() else {
                return std::future::pending().await;
            };
            let seq = match front.retry.as_mut() {
                Some(retry) => retry.await?,
                None => match self.attempts.next().await {
                    Some(Ok(seq)) => seq,
                    Some(Err(e)) => {
                        // Every record before this one is confirmed: send it
                        // again after the last of them, retrying until stored.
                        tracing::debug!(error = %e, "a pipelined append failed; sending it again");
                        self.resent += 1;
                        front.retry = Some(store.append(
                            front.record.clone(),
                            front.msg_id.clone(),
                            self.last_seq,
                        ));
                        continue;
                    }
                    None => return std::future::pending().await,
                },
            };
            let Some(done) = self.inflight.pop_front() else {
                continue;
            };
            self.last_seq = seq;
            return Ok(Ack {
                upto: done.upto,
                seq,
                record: done.record,
                took: done.started.elapsed(),
            });
        }
    }

    /// Marks an append finished: entries up to `upto` are durable as record `seq`.
    pub fn appended(&mut self, upto: u64, seq: u64) {
        self.last_seq = seq;
        self.durable = upto;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::state::Event;
    use crate::wal::decode_record;
    use std::sync::Mutex;
    use tokio::sync::Semaphore;

    /// A log in memory; appends complete only as permits are added to `gate`.
    pub(crate) struct MemStore {
        pub records: Mutex<Vec<Bytes>>,
        /// Snapshots stored: (record covered, bytes).
        pub snapshots: Mutex<Vec<(u64, Vec<u8>)>>,
        pub gate: Arc<Semaphore>,
        pub fail: std::sync::atomic::AtomicBool,
        /// First attempts (`try_append`) still to refuse, as a lost
        /// acknowledgement or a refused prediction would.
        pub refuse_tries: std::sync::atomic::AtomicU64,
        /// First attempts seen.
        pub tries: std::sync::atomic::AtomicU64,
    }

    impl MemStore {
        /// A store whose appends wait for `open()`.
        pub fn gated() -> Arc<Self> {
            Arc::new(Self {
                records: Mutex::default(),
                snapshots: Mutex::default(),
                gate: Arc::new(Semaphore::new(0)),
                fail: std::sync::atomic::AtomicBool::new(false),
                refuse_tries: std::sync::atomic::AtomicU64::new(0),
                tries: std::sync::atomic::AtomicU64::new(0),
            })
        }

        /// A store whose appends complete at once.
        pub fn open() -> Arc<Self> {
            let s = Self::gated();
            s.gate.add_permits(Semaphore::MAX_PERMITS / 2);
            s
        }

        /// Lets `n` appends complete.
        pub fn release(&self, n: usize) {
            self.gate.add_permits(n);
        }

        /// Refuses the next `n` first attempts (`try_append`).
        pub fn refuse_first(&self, n: u64) {
            self.refuse_tries
                .store(n, std::sync::atomic::Ordering::Relaxed);
        }
    }

    impl MemStore {
        /// Stores `record` after `expected_last` once the gate lets it; `first`
        /// marks a pipelined first attempt, which may be refused
        /// (`refuse_tries`) and is refused when out of order, where a retrying
        /// append out of order is a bug in the journal.
        async fn store(
            self: Arc<Self>,
            record: Bytes,
            expected_last: u64,
            first: bool,
        ) -> Result<u64, WalError> {
            use std::sync::atomic::Ordering::Relaxed;
            if let Ok(p) = self.gate.acquire().await {
                p.forget();
            }
            let refused = first && {
                self.tries.fetch_add(1, Relaxed);
                self.refuse_tries
                    .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
                    .is_ok()
            };
            let mut records = self.records.lock().unwrap();
            let in_order = records.len() as u64 == expected_last;
            assert!(first || in_order, "appends out of order");
            if refused || !in_order || self.fail.load(Relaxed) {
                return Err(WalError::Fenced {
                    shard: 0,
                    expected: expected_last,
                });
            }
            records.push(record);
            Ok(records.len() as u64)
        }
    }

    impl LogStore for Arc<MemStore> {
        fn append(
            &self,
            record: Bytes,
            _msg_id: String,
            expected_last: u64,
        ) -> BoxFuture<'static, Result<u64, WalError>> {
            self.clone().store(record, expected_last, false).boxed()
        }

        fn try_append(
            &self,
            record: Bytes,
            _msg_id: String,
            expected_last: u64,
        ) -> BoxFuture<'static, Result<u64, WalError>> {
            self.clone().store(record, expected_last, true).boxed()
        }

        fn save_snapshot(
            &self,
            bytes: Vec<u8>,
            seq: u64,
            _pace: Pace,
        ) -> BoxFuture<'static, Result<(), WalError>> {
            let me = self.clone();
            async move {
                me.snapshots.lock().unwrap().push((seq, bytes));
                Ok(())
            }
            .boxed()
        }

        fn writer(&self) -> String {
            "memory".to_owned()
        }
    }

    fn entry(n: usize) -> Entry {
        Entry {
            reply: None,
            events: (0..n)
                .map(|i| Event::DmIdMinted {
                    origin: [i as u8; 16],
                    id: reddit_shared::ids::DmId::new(),
                })
                .collect(),
        }
    }

    fn journal(store: &Arc<MemStore>) -> Journal<&'static str> {
        Journal::durable(Arc::new(store.clone()), 0, 1)
    }

    /// The next acknowledgement as (entries up to, record).
    async fn ack(j: &mut Journal<&'static str>) -> (u64, u64) {
        let ack = tokio::time::timeout(std::time::Duration::from_secs(5), j.next_ack())
            .await
            .expect("the append finishes")
            .expect("the append succeeds");
        (ack.upto, ack.seq)
    }

    #[tokio::test]
    async fn memory_storage_holds_nothing() {
        let mut j: Journal<&str> = Journal::memory();
        let tag = j.record(&entry(1));
        assert_eq!(tag, 0);
        assert_eq!(j.hold(tag, "reply"), Some("reply"));
        assert_eq!(j.kick(), 0);
        assert!(!j.busy() && j.can_take() && !j.is_logged());
    }

    #[tokio::test]
    async fn a_write_is_answered_only_once_its_record_is_acknowledged() {
        let store = MemStore::gated();
        let mut j = journal(&store);
        let tag = j.record(&entry(1));
        assert_eq!(j.hold(tag, "write"), None, "held before the append");
        assert_eq!(j.hold(0, "read"), Some("read"), "reads are not held");
        assert_eq!(j.kick(), 1);
        assert_eq!(j.pop_ready(), None, "held while the append is in flight");
        store.release(1);
        let ack = j.next_ack().await.unwrap();
        assert_eq!((ack.upto, ack.seq), (1, 1));
        assert_eq!(
            ack.record,
            store.records.lock().unwrap()[0],
            "the acknowledgement carries the record as stored (for the snapshot follower)"
        );
        j.appended(ack.upto, ack.seq);
        assert_eq!(j.pop_ready(), Some("write"));
        assert_eq!(j.pop_ready(), None);
        assert!(!j.busy());
    }

    #[tokio::test]
    async fn writes_during_an_append_share_the_next_record_and_keep_their_order() {
        let store = MemStore::gated();
        let mut j = journal(&store);
        let first = j.record(&entry(1));
        j.hold(first, "a");
        j.kick();
        for name in ["b", "c", "d"] {
            let tag = j.record(&entry(2));
            j.hold(tag, name);
            assert_eq!(j.kick(), 0, "one append in flight at a time");
        }
        store.release(1);
        let (upto, seq) = ack(&mut j).await;
        j.appended(upto, seq);
        assert_eq!(j.pop_ready(), Some("a"));
        assert_eq!(j.pop_ready(), None, "b..d wait for their own record");
        assert_eq!(j.kick(), 3, "the three writes form one record");
        store.release(1);
        let (upto, seq) = ack(&mut j).await;
        assert_eq!((upto, seq), (4, 2));
        j.appended(upto, seq);
        let released: Vec<_> = std::iter::from_fn(|| j.pop_ready()).collect();
        assert_eq!(released, ["b", "c", "d"]);
        let records = store.records.lock().unwrap();
        assert_eq!(records.len(), 2);
        let second = decode_record(&records[1]).unwrap();
        assert_eq!(second.len(), 3);
        assert!(second.iter().all(|e| e.events.len() == 2));
    }

    /// `covering_seq` names the record that makes everything recorded so
    /// far durable, whether it is open or in flight, and 0 once nothing is
    /// left to append.
    #[tokio::test]
    async fn the_covering_record_is_the_open_one_then_the_last_in_flight_then_none() {
        let store = MemStore::gated();
        let mut j = pipelined(&store, 2);
        assert_eq!(j.covering_seq(), 0, "nothing recorded");
        j.record(&entry(1));
        assert_eq!(j.covering_seq(), 1, "the open record");
        j.kick();
        assert_eq!(j.covering_seq(), 1, "in flight");
        j.record(&entry(1));
        j.kick();
        assert_eq!(j.covering_seq(), 2, "the last of two in flight");
        j.record(&entry(1));
        assert_eq!(j.covering_seq(), 3, "open behind two in flight");
        assert_eq!(j.open_record_seq(), 3);
        store.release(2);
        for _ in 0..2 {
            let (upto, seq) = ack(&mut j).await;
            j.appended(upto, seq);
        }
        assert_eq!(j.covering_seq(), 3, "still open");
        j.kick();
        store.release(1);
        let (upto, seq) = ack(&mut j).await;
        j.appended(upto, seq);
        assert_eq!(j.covering_seq(), 0, "everything durable");
        assert_eq!(j.open_record_seq(), 4, "the next record still has a number");
        assert_eq!(Journal::<&str>::memory().covering_seq(), 0, "no log");
    }

    fn pipelined(store: &Arc<MemStore>, depth: usize) -> Journal<&'static str> {
        Journal::durable(Arc::new(store.clone()), 0, depth)
    }

    /// The first event's origin byte of each stored record: which write it was.
    fn stored_order(store: &MemStore) -> Vec<u8> {
        store
            .records
            .lock()
            .unwrap()
            .iter()
            .map(|r| match &decode_record(r).unwrap()[0].events[0] {
                Event::DmIdMinted { origin, .. } => origin[0],
                other => panic!("unexpected event {other:?}"),
            })
            .collect()
    }

    fn tagged(n: u8) -> Entry {
        Entry {
            reply: None,
            events: vec![Event::DmIdMinted {
                origin: [n; 16],
                id: reddit_shared::ids::DmId::new(),
            }],
        }
    }

    /// Records a write tagged `n`, holds its outcome `name` and kicks the
    /// journal (one append per write while a slot is free).
    fn write(j: &mut Journal<&'static str>, n: u8, name: &'static str) -> u64 {
        let tag = j.record(&tagged(n));
        assert_eq!(j.hold(tag, name), None, "a write is held until durable");
        j.kick()
    }

    /// Takes one acknowledgement per `expected` (entries up to, record),
    /// checking each comes in that order, and returns the outcomes released.
    async fn acks_in_order(
        j: &mut Journal<&'static str>,
        expected: &[(u64, u64)],
    ) -> Vec<&'static str> {
        let mut released = Vec::new();
        for &want in expected {
            let (upto, seq) = ack(j).await;
            assert_eq!((upto, seq), want, "acknowledgements come in order");
            j.appended(upto, seq);
            released.extend(std::iter::from_fn(|| j.pop_ready()));
        }
        released
    }

    #[tokio::test]
    async fn appends_pipeline_up_to_the_depth_and_release_outcomes_in_order() {
        let store = MemStore::gated();
        let mut j = pipelined(&store, 3);
        for (n, name) in [(1, "a"), (2, "b"), (3, "c")] {
            assert_eq!(
                write(&mut j, n, name),
                1,
                "a free slot takes the record at once"
            );
        }
        assert_eq!(
            write(&mut j, 4, "d"),
            0,
            "three in flight: the fourth waits"
        );
        store.release(3);
        let released = acks_in_order(&mut j, &[(1, 1), (2, 2), (3, 3)]).await;
        assert_eq!(released, ["a", "b", "c"]);
        assert_eq!(j.kick(), 1, "a slot is free again");
        store.release(1);
        let (upto, seq) = ack(&mut j).await;
        assert_eq!((upto, seq), (4, 4));
        j.appended(upto, seq);
        assert_eq!(j.pop_ready(), Some("d"));
        assert_eq!(stored_order(&store), [1, 2, 3, 4]);
        assert_eq!(j.resent(), 0, "no prediction failed");
        assert!(!j.busy());
    }

    #[tokio::test]
    async fn a_failed_pipelined_append_and_those_after_it_are_sent_again_in_order() {
        let store = MemStore::gated();
        // The first record's first attempt fails (a lost acknowledgement, say),
        // and the two after it are refused, their predecessor not being there.
        store.refuse_first(3);
        let mut j = pipelined(&store, 3);
        for (n, name) in [(1, "a"), (2, "b"), (3, "c")] {
            write(&mut j, n, name);
        }
        store.release(100);
        let released = acks_in_order(&mut j, &[(1, 1), (2, 2), (3, 3)]).await;
        assert_eq!(released, ["a", "b", "c"]);
        assert_eq!(stored_order(&store), [1, 2, 3], "the log keeps the order");
        assert_eq!(j.resent(), 3, "each was sent again after its predecessor");
    }

    #[tokio::test]
    async fn an_ack_wait_dropped_midway_loses_nothing() {
        let store = MemStore::gated();
        store.refuse_first(1);
        let mut j = pipelined(&store, 2);
        for n in [1, 2] {
            write(&mut j, n, "w");
        }
        // Let the first attempt fail, then give up waiting while its retry waits
        // for the gate (as the actor's select! does when a request comes in).
        store.release(1);
        let waited = tokio::time::timeout(std::time::Duration::from_millis(50), j.next_ack()).await;
        assert!(waited.is_err(), "the retry cannot finish yet");
        store.release(100);
        acks_in_order(&mut j, &[(1, 1), (2, 2)]).await;
        assert_eq!(stored_order(&store), [1, 2]);
    }

    #[tokio::test]
    async fn under_load_a_record_lingers_to_grow_to_the_last_ones_size() {
        let store = MemStore::open();
        let mut j = journal(&store).with_linger(std::time::Duration::from_secs(3600));
        for _ in 0..3 {
            j.record(&entry(1));
        }
        assert_eq!(j.kick(), 3, "the first record does not wait");
        let (upto, seq) = ack(&mut j).await;
        j.appended(upto, seq);
        j.record(&entry(1));
        assert_eq!(j.kick(), 0, "one entry after a record of three: it waits");
        assert!(j.linger_deadline().is_some(), "until a deadline");
        j.record(&entry(1));
        j.record(&entry(1));
        assert_eq!(j.kick(), 3, "grown to the last record's size: it goes");
        assert_eq!(j.linger_deadline(), None, "nothing open");
        let (upto, seq) = ack(&mut j).await;
        j.appended(upto, seq);
        j.record(&entry(1));
        assert_eq!(j.kick(), 0);
        assert_eq!(j.flush(), 1, "a flush (shutdown) sends it anyway");
    }

    #[tokio::test]
    async fn a_lingering_record_goes_at_its_deadline_and_light_load_never_waits() {
        let store = MemStore::open();
        let mut j = journal(&store).with_linger(std::time::Duration::from_millis(5));
        j.record(&entry(1));
        j.record(&entry(1));
        assert_eq!(j.kick(), 2);
        let (upto, seq) = ack(&mut j).await;
        j.appended(upto, seq);
        j.record(&entry(1));
        assert_eq!(j.kick(), 0, "smaller than the last record: it waits");
        let deadline = j.linger_deadline().expect("a deadline");
        tokio::time::sleep_until(deadline).await;
        assert_eq!(j.kick(), 1, "at the deadline it goes as it is");
        let (upto, seq) = ack(&mut j).await;
        j.appended(upto, seq);
        j.record(&entry(1));
        assert_eq!(
            j.kick(),
            1,
            "after a record of one, one entry waits for nothing"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_record_nobody_waits_for_waits_for_company_until_an_outcome_is_held() {
        let store = MemStore::open();
        let mut j = journal(&store).with_unwaited_linger(std::time::Duration::from_millis(20));
        // Writes acknowledged before they are logged (no outcome held).
        j.record(&entry(1));
        j.record(&entry(1));
        assert_eq!(j.kick(), 0, "nobody waits: the record waits for more");
        let deadline = j.linger_deadline().expect("a deadline");
        assert_eq!(
            deadline - tokio::time::Instant::now(),
            std::time::Duration::from_millis(20)
        );
        tokio::time::sleep_until(deadline).await;
        assert_eq!(j.kick(), 2, "at the deadline it goes");
        let (upto, seq) = ack(&mut j).await;
        j.appended(upto, seq);

        // An outcome held for an entry of the open record ends the wait.
        j.record(&entry(1));
        assert_eq!(j.kick(), 0);
        let tag = j.record(&entry(1));
        assert_eq!(j.hold(tag, "write"), None, "held until durable");
        assert_eq!(j.kick(), 2, "someone waits: it goes at once");
        let (upto, seq) = ack(&mut j).await;
        j.appended(upto, seq);
        assert_eq!(j.pop_ready(), Some("write"));

        // An outcome held for a record already in flight does not hurry the
        // open one.
        let tag = j.record(&entry(1));
        j.hold(tag, "in flight");
        assert_eq!(j.kick(), 1);
        j.record(&entry(1));
        assert_eq!(j.kick(), 0, "one append at a time");
        let (upto, seq) = ack(&mut j).await;
        j.appended(upto, seq);
        assert_eq!(j.pop_ready(), Some("in flight"));
        assert_eq!(
            j.kick(),
            0,
            "the open record's entry is waited for by nobody"
        );
        assert_eq!(j.flush(), 1, "a flush (shutdown) sends it anyway");
    }

    #[tokio::test]
    async fn a_failed_append_is_reported() {
        let store = MemStore::open();
        store.fail.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut j = journal(&store);
        let tag = j.record(&entry(1));
        j.hold(tag, "never sent");
        j.kick();
        let result = j.next_ack().await;
        assert!(matches!(result, Err(WalError::Fenced { .. })), "{result:?}");
        assert_eq!(j.pop_ready(), None, "an outcome is never released unlogged");
    }
}
