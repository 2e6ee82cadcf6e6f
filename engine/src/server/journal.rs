//! Durability policy of a shard: a write is answered only once its log entry is
//! durable. The [`Journal`] fills one record (group commit) while the previous one
//! is being appended, holds every outcome until the record holding its entry is
//! acknowledged, and asks for a snapshot at a record boundary every so many
//! events. It knows nothing of NATS: the log is any [`LogStore`] (JetStream's
//! [`Log`] in a running engine, memory in the tests below), and with no store
//! (memory storage) everything is durable at once.

use crate::wal::{Entry, Log, RecordBuilder, WalError};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
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

    /// Stores a snapshot covering records up to `seq`.
    fn save_snapshot(&self, bytes: Vec<u8>, seq: u64) -> BoxFuture<'static, Result<(), WalError>>;
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

    fn save_snapshot(&self, bytes: Vec<u8>, seq: u64) -> BoxFuture<'static, Result<(), WalError>> {
        let log = self.clone();
        async move { log.save_snapshot(bytes, seq).await }.boxed()
    }
}

/// The log side of a shard, holding outcomes of type `T` until they are durable.
pub struct Journal<T> {
    /// None: memory storage.
    store: Option<Arc<dyn LogStore>>,
    open: RecordBuilder,
    /// The append in flight: the last entry number it holds, and its future.
    inflight: Option<(u64, BoxFuture<'static, Result<u64, WalError>>)>,
    last_seq: u64,
    msg_prefix: String,
    appends: u64,
    snapshot_every: u64,
    since_snapshot: u64,
    want_snapshot: bool,
    snapshot_task: Option<tokio::task::JoinHandle<()>>,
    /// Entries recorded (writes handled).
    written: u64,
    /// Entries known durable.
    durable: u64,
    /// Outcomes waiting for their entries: (entry number, outcome).
    held: VecDeque<(u64, T)>,
}

impl<T> Journal<T> {
    /// Memory storage: nothing is logged, every outcome goes out at once.
    pub fn memory() -> Self {
        Self::with_store(None, 0, 0)
    }

    /// A journal appending to `store` after record `last_seq`; a snapshot every
    /// `snapshot_every` events (0: never, except at shutdown).
    pub fn durable(store: Arc<dyn LogStore>, last_seq: u64, snapshot_every: u64) -> Self {
        Self::with_store(Some(store), last_seq, snapshot_every)
    }

    fn with_store(store: Option<Arc<dyn LogStore>>, last_seq: u64, snapshot_every: u64) -> Self {
        Self {
            store,
            open: RecordBuilder::default(),
            inflight: None,
            last_seq,
            msg_prefix: uuid::Uuid::now_v7().simple().to_string(),
            appends: 0,
            snapshot_every,
            since_snapshot: 0,
            want_snapshot: false,
            snapshot_task: None,
            written: 0,
            durable: 0,
            held: VecDeque::new(),
        }
    }

    /// Whether writes go to a log (else memory storage).
    pub fn is_logged(&self) -> bool {
        self.store.is_some()
    }

    /// Whether the actor may take another job: not while the open record is full
    /// or a snapshot waits for the record boundary.
    pub fn can_take(&self) -> bool {
        !self.open.is_full() && !self.want_snapshot
    }

    /// Whether anything is still to be appended or acknowledged.
    pub fn busy(&self) -> bool {
        self.inflight.is_some() || !self.open.is_empty()
    }

    /// Adds a write's entry to the open record; returns its entry number, the tag
    /// its outcome waits for (0 with memory storage: durable at once).
    pub fn record(&mut self, entry: &Entry) -> u64 {
        if self.store.is_none() {
            return 0;
        }
        if let Err(e) = self.open.push(entry) {
            tracing::error!(error = %e, "could not encode a log entry");
        }
        self.written += 1;
        self.written
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

    /// Starts appending the open record if no append is in flight; returns how
    /// many entries it holds (0: nothing started).
    pub fn kick(&mut self) -> u64 {
        let Some(store) = &self.store else {
            return 0;
        };
        if self.inflight.is_some() || self.open.is_empty() {
            return 0;
        }
        let entries = u64::from(self.open.entries());
        self.since_snapshot += self.open.events();
        let record = self.open.seal();
        self.appends += 1;
        let msg_id = format!("{}.{}", self.msg_prefix, self.appends);
        self.inflight = Some((self.written, store.append(record, msg_id, self.last_seq)));
        entries
    }

    /// Waits for the append in flight (forever if none): entries up to the first
    /// number are durable as the record with the second.
    pub async fn next_ack(&mut self) -> Result<(u64, u64), WalError> {
        match self.inflight.as_mut() {
            Some((upto, fut)) => {
                let seq = fut.await?;
                Ok((*upto, seq))
            }
            None => std::future::pending().await,
        }
    }

    /// Marks an append finished. Returns the record sequence a snapshot should be
    /// taken at now, if one is due and the open record is empty (a boundary); if
    /// one is due but the record is not empty, stops taking jobs until it is.
    pub fn appended(&mut self, upto: u64, seq: u64) -> Option<u64> {
        self.inflight = None;
        self.last_seq = seq;
        self.durable = upto;
        let due = self.snapshot_every > 0
            && self.since_snapshot >= self.snapshot_every
            && self.snapshot_task.as_ref().is_none_or(|t| t.is_finished());
        if due && self.open.is_empty() {
            self.want_snapshot = false;
            self.since_snapshot = 0;
            Some(seq)
        } else {
            if due {
                self.want_snapshot = true;
            }
            None
        }
    }

    /// Stores `bytes` (the state at record `seq`) in the background.
    pub fn start_snapshot(&mut self, bytes: Vec<u8>, seq: u64) {
        if let Some(store) = &self.store {
            let save = store.save_snapshot(bytes, seq);
            self.snapshot_task = Some(tokio::spawn(async move {
                if let Err(e) = save.await {
                    tracing::warn!(error = %e, "snapshot failed; the log keeps every record until the next one");
                }
            }));
        }
    }

    /// At shutdown, after the last append: waits for a snapshot in progress and
    /// returns the record a final snapshot should cover, if anything was logged
    /// since the last one.
    pub async fn final_snapshot_seq(&mut self) -> Option<u64> {
        if let Some(task) = self.snapshot_task.take() {
            let _ = task.await;
        }
        (self.store.is_some() && self.since_snapshot > 0).then_some(self.last_seq)
    }

    /// Stores the final snapshot and waits for it.
    pub async fn save_snapshot(&mut self, bytes: Vec<u8>, seq: u64) -> Result<(), WalError> {
        match &self.store {
            Some(store) => {
                store.save_snapshot(bytes, seq).await?;
                self.since_snapshot = 0;
                Ok(())
            }
            None => Ok(()),
        }
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
        pub snapshots: Mutex<Vec<u64>>,
        pub gate: Arc<Semaphore>,
        pub fail: std::sync::atomic::AtomicBool,
    }

    impl MemStore {
        /// A store whose appends wait for `open()`.
        pub fn gated() -> Arc<Self> {
            Arc::new(Self {
                records: Mutex::default(),
                snapshots: Mutex::default(),
                gate: Arc::new(Semaphore::new(0)),
                fail: std::sync::atomic::AtomicBool::new(false),
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
    }

    impl LogStore for Arc<MemStore> {
        fn append(
            &self,
            record: Bytes,
            _msg_id: String,
            expected_last: u64,
        ) -> BoxFuture<'static, Result<u64, WalError>> {
            let me = self.clone();
            async move {
                let permit = me.gate.acquire().await;
                if let Ok(p) = permit {
                    p.forget();
                }
                if me.fail.load(std::sync::atomic::Ordering::Relaxed) {
                    return Err(WalError::Fenced {
                        shard: 0,
                        expected: expected_last,
                    });
                }
                let mut records = me.records.lock().unwrap();
                assert_eq!(records.len() as u64, expected_last, "appends out of order");
                records.push(record);
                Ok(records.len() as u64)
            }
            .boxed()
        }

        fn save_snapshot(
            &self,
            _bytes: Vec<u8>,
            seq: u64,
        ) -> BoxFuture<'static, Result<(), WalError>> {
            let me = self.clone();
            async move {
                me.snapshots.lock().unwrap().push(seq);
                Ok(())
            }
            .boxed()
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

    fn journal(store: &Arc<MemStore>, every: u64) -> Journal<&'static str> {
        Journal::durable(Arc::new(store.clone()), 0, every)
    }

    async fn ack(j: &mut Journal<&'static str>) -> (u64, u64) {
        tokio::time::timeout(std::time::Duration::from_secs(5), j.next_ack())
            .await
            .expect("the append finishes")
            .expect("the append succeeds")
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
        let mut j = journal(&store, 0);
        let tag = j.record(&entry(1));
        assert_eq!(j.hold(tag, "write"), None, "held before the append");
        assert_eq!(j.hold(0, "read"), Some("read"), "reads are not held");
        assert_eq!(j.kick(), 1);
        assert_eq!(j.pop_ready(), None, "held while the append is in flight");
        store.release(1);
        let (upto, seq) = ack(&mut j).await;
        assert_eq!((upto, seq), (1, 1));
        assert_eq!(j.appended(upto, seq), None);
        assert_eq!(j.pop_ready(), Some("write"));
        assert_eq!(j.pop_ready(), None);
        assert!(!j.busy());
    }

    #[tokio::test]
    async fn writes_during_an_append_share_the_next_record_and_keep_their_order() {
        let store = MemStore::gated();
        let mut j = journal(&store, 0);
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

    #[tokio::test]
    async fn a_snapshot_waits_for_a_record_boundary() {
        let store = MemStore::gated();
        let mut j = journal(&store, 1);
        j.record(&entry(1));
        j.kick();
        j.record(&entry(1));
        store.release(1);
        let (upto, seq) = ack(&mut j).await;
        assert_eq!(j.appended(upto, seq), None, "the open record is not empty");
        assert!(!j.can_take(), "no new jobs until the boundary");
        j.kick();
        store.release(1);
        let (upto, seq) = ack(&mut j).await;
        assert_eq!(j.appended(upto, seq), Some(2), "a snapshot at record 2");
        assert!(j.can_take());
        j.start_snapshot(vec![1, 2, 3], 2);
        assert_eq!(j.final_snapshot_seq().await, None, "nothing logged since");
        assert_eq!(*store.snapshots.lock().unwrap(), [2]);
    }

    #[tokio::test]
    async fn a_failed_append_is_reported() {
        let store = MemStore::open();
        store.fail.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut j = journal(&store, 0);
        let tag = j.record(&entry(1));
        j.hold(tag, "never sent");
        j.kick();
        let result = j.next_ack().await;
        assert!(matches!(result, Err(WalError::Fenced { .. })), "{result:?}");
        assert_eq!(j.pop_ready(), None, "an outcome is never released unlogged");
    }
}
