//! The write-ahead log in JetStream: shard `k` appends the events of its writes to
//! the stream `REDDIT_WAL_<k>` (subject `reddit.wal.<k>`) before it answers them, and
//! rebuilds its state on start from its latest snapshot plus the records after it.
//!
//! - A **record** (one JetStream message) is a MessagePack array of [`Entry`]s: the
//!   writes the actor handled while earlier appends were in flight (group
//!   commit). Each entry holds one write's events and, if the request carried an
//!   idempotency key, its reply, so replay restores the reply cache too.
//!   Entries and the events in them are written with their fields by position
//!   ([`Fields::Positional`]): field names were about a third of a record's
//!   bytes. Records of older versions, with maps of field names, decode with
//!   the same code, so a log may hold both shapes.
//! - **Pipelining**: a shard may have several appends in flight, each expecting
//!   the sequence its predecessor will get ([`Log::try_append`]). One that is
//!   refused (its predecessor had not landed) or fails is sent again with
//!   [`Log::append`] once the predecessor is confirmed, so records land in the
//!   order the actor made them.
//! - **Fencing**: every append expects the stream's last sequence to be the one this
//!   process last wrote (`Nats-Expected-Last-Sequence`). A second writer makes that
//!   fail, and the loser stops ([`WalError::Fenced`]) instead of interleaving
//!   records. A retried append carries the same `Nats-Msg-Id`, so an append whose
//!   acknowledgement was lost is not stored twice.
//! - **Snapshots** go to the object store `REDDIT_SNAPSHOTS` as `shard-<k>`: the whole
//!   state and the reply cache as of a record sequence, in the format of
//!   [`crate::snapshot`]. Once one is stored, the records it covers are purged.

use crate::fields::Fields;
use crate::pace::Pace;
use crate::replies::{Cached, ReplyCache};
use crate::state::{Event, ShardState};
use async_nats::jetstream::{self, message::PublishMessage, object_store, stream};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// Format tag in the stream metadata (and in snapshots of the first format).
pub const FORMAT: &str = "reddit-wal-1";
/// Largest record (one JetStream message) the actor builds: under NATS's default
/// 1 MiB max payload. The actor stops taking requests while a full record waits.
pub const MAX_RECORD_BYTES: usize = 768 * 1024;
/// Records a replay decodes ahead of the one it applies.
const DECODE_AHEAD: usize = 8;
/// Records per pull when reading the log: at most 24 MiB in flight.
const REPLAY_BATCH: i64 = (24 * 1024 * 1024 / MAX_RECORD_BYTES) as i64;
/// Records from which a replay defers the subreddits' post indexes and
/// rebuilds them at the end ([`ShardState::defer_indexes`]).
const DEFER_INDEXES_RECORDS: u64 = 64;
/// How long [`Log::fence`] retries reading the log before giving up (a
/// JetStream leader election after a node died takes seconds).
const FENCE_PATIENCE: Duration = Duration::from_secs(60);
/// How long appends may find no stream (JetStream restarting) before the log is
/// declared gone.
const STREAM_MISSING_LIMIT: Duration = Duration::from_secs(60);

/// The JetStream API error code behind a publish error, if any.
fn jetstream_code(e: &jetstream::context::PublishError) -> Option<u64> {
    use std::error::Error as _;
    e.source()
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .map(|e| e.error_code().0)
}

/// Object store bucket of the snapshots.
pub const SNAPSHOT_BUCKET: &str = "REDDIT_SNAPSHOTS";

/// The stream holding shard `shard`'s log.
pub fn stream_name(shard: u32) -> String {
    format!("REDDIT_WAL_{shard}")
}

fn snapshot_name(shard: u32) -> String {
    format!("shard-{shard}")
}

/// Why the log could not be used.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// JetStream is off or unreachable.
    #[error("JetStream is not available ({0}); start nats-server with JetStream (-js), or run the engine with --storage memory")]
    Unavailable(String),
    /// The log belongs to a cluster of another size.
    #[error("shard {shard}'s log was written by a cluster of {theirs} shards, but this process runs with --shards {ours}; keys would route elsewhere, so it refuses to start")]
    ShardCount {
        /// The shard.
        shard: u32,
        /// The size recorded in the log.
        theirs: String,
        /// Ours.
        ours: u32,
    },
    /// Another process appended to this shard's log.
    #[error("shard {shard}'s log was appended to by another process (this one expected record {expected} to be the last); a second writer is running for this shard, so this one stops")]
    Fenced {
        /// The shard.
        shard: u32,
        /// The sequence this process expected to be last.
        expected: u64,
    },
    /// Records are missing and no snapshot covers them.
    #[error("shard {shard}'s log starts at record {first}, but the latest snapshot only covers records up to {covered}; refusing to serve a partial state")]
    Gap {
        /// The shard.
        shard: u32,
        /// First record present.
        first: u64,
        /// Last record the snapshot covers.
        covered: u64,
    },
    /// A record or snapshot does not decode.
    #[error("shard {shard}: {what} does not decode: {reason}")]
    Corrupt {
        /// The shard.
        shard: u32,
        /// Which record or snapshot.
        what: String,
        /// The decoder's complaint.
        reason: String,
    },
    /// A snapshot older than the log's start was not stored.
    #[error("shard {shard}: a snapshot covering records up to {seq} was not stored: the log already starts at record {first}, under a newer snapshot (another process owns this shard now)")]
    StaleSnapshot {
        /// The shard.
        shard: u32,
        /// The last record the refused snapshot covers.
        seq: u64,
        /// The first record in the log.
        first: u64,
    },
    /// The snapshot follower stopped: a task of it failed.
    #[error("shard {shard}: the snapshot follower stopped ({reason}); the log keeps every record until a restart snapshots again")]
    Follower {
        /// The shard.
        shard: u32,
        /// Why.
        reason: String,
    },
    /// Any other JetStream failure.
    #[error("JetStream, shard {shard}'s log: {what}")]
    Nats {
        /// The shard.
        shard: u32,
        /// What failed.
        what: String,
        /// Why, if another error says.
        #[source]
        source: Option<reddit_shared::error::BoxError>,
    },
}

/// One handled write: its events and, if its request carried an idempotency key,
/// the reply to repeat on a retry.
#[derive(Debug, Serialize, Deserialize)]
pub struct Entry {
    /// The cached reply, if any. Written as nil when absent, never left out:
    /// a positional entry without it would put the events in its place.
    #[serde(default)]
    pub reply: Option<Cached>,
    /// The events, in the order they were applied.
    pub events: Vec<Event>,
}

/// Builds one record from entries encoded as they are handled, their fields
/// by position ([`RecordBuilder::with_fields`] writes the older shape).
#[derive(Debug, Default)]
pub struct RecordBuilder {
    body: Vec<u8>,
    entries: u32,
    events: u64,
    fields: Fields,
}

impl RecordBuilder {
    /// A builder writing entries' fields as `fields` says: only benchmarks
    /// and compatibility tests write [`Fields::Named`], as older versions did.
    pub fn with_fields(fields: Fields) -> Self {
        Self {
            fields,
            ..Self::default()
        }
    }

    /// Appends an entry.
    pub fn push(&mut self, entry: &Entry) -> Result<(), rmp_serde::encode::Error> {
        self.fields.write(&mut self.body, entry)?;
        self.entries += 1;
        self.events += entry.events.len() as u64;
        Ok(())
    }

    /// Whether no entry was pushed.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Bytes of the entries pushed so far.
    pub fn bytes(&self) -> usize {
        self.body.len()
    }

    /// Whether the record reached its size bound.
    pub fn is_full(&self) -> bool {
        self.body.len() >= MAX_RECORD_BYTES
    }

    /// Entries pushed.
    pub fn entries(&self) -> u32 {
        self.entries
    }

    /// Events pushed.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The record's bytes (the entries as one MessagePack array); empties the builder.
    pub fn seal(&mut self) -> Bytes {
        let mut out = Vec::with_capacity(self.body.len() + 5);
        // Writing to a Vec cannot fail.
        let _ = rmp::encode::write_array_len(&mut out, self.entries);
        out.extend_from_slice(&self.body);
        self.body.clear();
        self.entries = 0;
        self.events = 0;
        out.into()
    }
}

/// Decodes a record, whichever way its fields were written.
pub fn decode_record(bytes: &[u8]) -> Result<Vec<Entry>, rmp_serde::decode::Error> {
    rmp_serde::from_slice(bytes)
}

/// Encodes a snapshot of `state` and `replies` as of record `seq` (the format
/// of [`crate::snapshot`]).
pub fn encode_snapshot(
    state: &ShardState,
    replies: &ReplyCache,
    seq: u64,
) -> Result<Vec<u8>, crate::snapshot::SnapshotError> {
    crate::snapshot::encode(state, replies, seq)
}

/// Decodes a snapshot: the state (indexes rebuilt), its replies, and the
/// record it covers.
#[cfg(test)]
pub(crate) fn decode_snapshot(
    bytes: &[u8],
) -> Result<(ShardState, Vec<Cached>, u64), crate::snapshot::SnapshotError> {
    let s = crate::snapshot::decode(bytes, 2)?;
    Ok((s.state, s.replies, s.seq))
}

/// Size of a snapshot's chunks in the object store (each a JetStream
/// message, synced to disk on its own): under NATS's default 1 MiB payload
/// limit; a server with a smaller limit gets chunks that fit it.
const SNAPSHOT_CHUNK_BYTES: usize = 512 * 1024;

/// Smallest snapshot chunk, should the server report a limit of (nearly) nothing.
const MIN_SNAPSHOT_CHUNK_BYTES: usize = 16 * 1024;

/// What recovery rebuilt.
#[derive(Debug)]
pub struct Recovered {
    /// The state.
    pub state: ShardState,
    /// The reply cache.
    pub replies: ReplyCache,
    /// The last record applied (the next append expects it to be last).
    pub last_seq: u64,
    /// Record the snapshot covered (0 without a snapshot).
    pub snapshot_seq: u64,
    /// Records replayed after the snapshot.
    pub records: u64,
    /// Events replayed after the snapshot.
    pub events: u64,
    /// How long recovery took.
    pub elapsed: Duration,
    /// Where loading the snapshot's time went (zero without a snapshot).
    pub snapshot_load: SnapshotLoad,
}

/// The steps of loading a snapshot, timed.
#[derive(Clone, Copy, Debug, Default)]
pub struct SnapshotLoad {
    /// Reading it from the object store.
    pub fetch: Duration,
    /// Decoding it (state and reply cache; in parallel parts, each
    /// subreddit's post indexes rebuilt on the thread that decoded it).
    pub decode: Duration,
    /// After decoding: putting the parts together (or, for a snapshot of the
    /// older single-part format, rebuilding the post indexes it leaves out).
    pub index: Duration,
}

/// Shard `shard`'s log.
#[derive(Clone)]
pub struct Log {
    js: jetstream::Context,
    stream: stream::Stream,
    store: object_store::ObjectStore,
    subject: String,
    shard: u32,
    shards: u32,
    /// Snapshot chunk size: [`SNAPSHOT_CHUNK_BYTES`], or less if the server's
    /// payload limit is smaller.
    chunk: usize,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("subject", &self.subject)
            .finish()
    }
}

impl Log {
    /// Opens (creating if needed, with `replicas` copies) shard `shard`'s stream
    /// and the snapshot bucket, and checks that the log belongs to a cluster of
    /// `shards`.
    pub async fn open(
        client: &async_nats::Client,
        shard: u32,
        shards: u32,
        replicas: usize,
    ) -> Result<Self, WalError> {
        let js = jetstream::new(client.clone());
        let subject = reddit_shared::subject::wal(shard);
        let config = stream::Config {
            name: stream_name(shard),
            description: Some(format!(
                "write-ahead log of Reddit engine shard {shard} of {shards}"
            )),
            subjects: vec![subject.clone()],
            storage: stream::StorageType::File,
            // Nothing is ever dropped by a limit: records go only when a snapshot covers them.
            discard: stream::DiscardPolicy::New,
            duplicate_window: Duration::from_secs(120),
            allow_direct: true,
            num_replicas: replicas.max(1),
            metadata: HashMap::from([
                ("format".to_owned(), FORMAT.to_owned()),
                ("shard".to_owned(), shard.to_string()),
                ("shards".to_owned(), shards.to_string()),
            ]),
            ..Default::default()
        };
        let mut stream = js
            .get_or_create_stream(config)
            .await
            .map_err(|e| WalError::Unavailable(e.to_string()))?;
        let info = stream.info().await.map_err(|e| WalError::Nats {
            shard,
            what: "cannot read the stream's info".into(),
            source: Some(Box::new(e)),
        })?;
        let theirs = info
            .config
            .metadata
            .get("shards")
            .cloned()
            .unwrap_or_default();
        if theirs != shards.to_string() {
            return Err(WalError::ShardCount {
                shard,
                theirs,
                ours: shards,
            });
        }
        let store = match js.get_object_store(SNAPSHOT_BUCKET).await {
            Ok(store) => store,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: SNAPSHOT_BUCKET.to_owned(),
                    description: Some("snapshots of Reddit engine shards".to_owned()),
                    storage: stream::StorageType::File,
                    num_replicas: replicas.max(1),
                    ..Default::default()
                })
                .await
                .map_err(|e| WalError::Nats {
                    shard,
                    what: "cannot create the snapshot bucket".into(),
                    source: Some(Box::new(e)),
                })?,
        };
        // Room under the server's payload limit for the chunk's headers.
        let limit = client.server_info().max_payload.saturating_sub(4096);
        Ok(Self {
            js,
            stream,
            store,
            subject,
            shard,
            shards,
            chunk: SNAPSHOT_CHUNK_BYTES
                .min(limit)
                .max(MIN_SNAPSHOT_CHUNK_BYTES),
        })
    }

    /// A JetStream step that failed without another error to say why.
    fn nats(&self, what: impl Into<String>) -> WalError {
        WalError::Nats {
            shard: self.shard,
            what: what.into(),
            source: None,
        }
    }

    /// A JetStream step `what` that failed because of `e`.
    fn failed(&self, what: &str, e: impl Into<reddit_shared::error::BoxError>) -> WalError {
        WalError::Nats {
            shard: self.shard,
            what: what.to_owned(),
            source: Some(e.into()),
        }
    }

    fn corrupt(&self, what: impl Into<String>, reason: impl std::fmt::Display) -> WalError {
        WalError::Corrupt {
            shard: self.shard,
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    async fn load_snapshot(
        &self,
        times: &mut SnapshotLoad,
    ) -> Result<Option<crate::snapshot::Loaded>, WalError> {
        let started = Instant::now();
        let mut object = match self.store.get(snapshot_name(self.shard)).await {
            Ok(object) => object,
            Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.failed("cannot read the snapshot", e)),
        };
        // Its size is known: one allocation, not a doubling series of copies.
        let mut bytes = Vec::with_capacity(object.info().size);
        object
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| self.failed("cannot read the snapshot", e))?;
        times.fetch = started.elapsed();
        let snapshot = crate::snapshot::decode(&bytes, crate::snapshot::load_threads())
            .map_err(|e| self.corrupt("the snapshot", e))?;
        drop(bytes);
        times.decode = snapshot.decode;
        times.index = snapshot.index;
        if snapshot.shard != self.shard {
            return Err(self.corrupt("the snapshot", format!("it is shard {}'s", snapshot.shard)));
        }
        if snapshot.shards != self.shards {
            return Err(WalError::ShardCount {
                shard: self.shard,
                theirs: snapshot.shards.to_string(),
                ours: self.shards,
            });
        }
        Ok(Some(snapshot))
    }

    /// Rebuilds the state: the latest snapshot, then every record after it.
    pub async fn recover(&self, reply_capacity: usize) -> Result<Recovered, WalError> {
        let started = Instant::now();
        let mut times = SnapshotLoad::default();
        let (state, replies, snapshot_seq) = match self.load_snapshot(&mut times).await? {
            Some(s) => {
                let mut replies = ReplyCache::new(reply_capacity);
                for r in s.replies {
                    replies.insert(r);
                }
                (s.state, replies, s.seq)
            }
            None => (
                ShardState::new(self.shard, self.shards),
                ReplyCache::new(reply_capacity),
                0,
            ),
        };
        let mut recovered = Recovered {
            state,
            replies,
            last_seq: snapshot_seq,
            snapshot_seq,
            records: 0,
            events: 0,
            elapsed: Duration::ZERO,
            snapshot_load: times,
        };
        self.catch_up(&mut recovered).await?;
        recovered.elapsed = started.elapsed();
        Ok(recovered)
    }

    /// The sequence of the log's last record (0: empty).
    pub async fn last_seq(&self) -> Result<u64, WalError> {
        let info = self
            .stream
            .get_info()
            .await
            .map_err(|e| self.failed("cannot read the stream's info", e))?;
        Ok(info.state.last_sequence)
    }

    /// Applies every record after `recovered.last_seq` that the log holds now
    /// (a standby keeping its state warm; recovery's second half). A
    /// [`WalError::Gap`] means a snapshot purged records it has not applied:
    /// [`recover`](Self::recover) again.
    pub async fn catch_up(&self, recovered: &mut Recovered) -> Result<(), WalError> {
        let from = recovered.last_seq;
        let info = self
            .stream
            .get_info()
            .await
            .map_err(|e| self.failed("cannot read the stream's info", e))?;
        let (first, last, messages) = (
            info.state.first_sequence,
            info.state.last_sequence,
            info.state.messages,
        );
        if last <= from {
            return Ok(());
        }
        if messages == 0 || first > from + 1 {
            return Err(WalError::Gap {
                shard: self.shard,
                first,
                covered: from,
            });
        }
        let consumer = self
            .stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from + 1,
                },
                // Pulls of at most 24 MiB: with the client's default of 500
                // records (up to 375 MiB, far above the 64 MiB nats-server
                // lets wait for one connection) the replay of a log of large
                // records stalled after the first pull.
                max_batch: REPLAY_BATCH,
                ..Default::default()
            })
            .await
            .map_err(|e| self.failed("cannot read the log", e))?;
        let mut stream = consumer
            .messages()
            .await
            .map_err(|e| self.failed("cannot read the log", e))?;
        // Records are decoded ahead on the blocking pool while the events of
        // earlier ones are applied here, in log order.
        self.apply_records(&mut stream, recovered, last).await
    }

    /// Applies the records after `recovered.last_seq` up to `last` from
    /// `stream`, decoded ahead on the blocking pool. Of their replies only the
    /// newest the reply cache can hold are inserted, at the end: the others
    /// would be forgotten by then anyway (a key is logged again only once the
    /// cache has forgotten it, so none of them hides a newer one), and
    /// inserting them cost a quarter of a replay.
    async fn apply_records(
        &self,
        stream: &mut jetstream::consumer::pull::Ordered,
        recovered: &mut Recovered,
        last: u64,
    ) -> Result<(), WalError> {
        let keep = recovered.replies.capacity();
        let mut newest: VecDeque<Cached> = VecDeque::new();
        // A long replay rebuilds the post indexes once at the end; a standby's
        // catch-up of a few records keeps them up to date as it goes.
        let defer = last.saturating_sub(recovered.last_seq) >= DEFER_INDEXES_RECORDS;
        recovered.state.defer_indexes(defer);
        let applied = self
            .apply_decoded(stream, recovered, last, &mut newest, keep)
            .await;
        recovered.state.defer_indexes(false);
        for reply in newest {
            recovered.replies.insert(reply);
        }
        applied
    }

    async fn apply_decoded(
        &self,
        stream: &mut jetstream::consumer::pull::Ordered,
        recovered: &mut Recovered,
        last: u64,
        newest: &mut VecDeque<Cached>,
        keep: usize,
    ) -> Result<(), WalError> {
        type Decoding = tokio::task::JoinHandle<Result<Vec<Entry>, rmp_serde::decode::Error>>;
        let mut decoding: VecDeque<(u64, Decoding)> = VecDeque::new();
        let mut received = recovered.last_seq;
        while recovered.last_seq < last {
            while received < last && decoding.len() < DECODE_AHEAD {
                let msg = match tokio::time::timeout(Duration::from_secs(30), stream.next()).await {
                    Ok(Some(Ok(msg))) => msg,
                    Ok(Some(Err(e))) => return Err(self.failed("reading the log", e)),
                    Ok(None) => return Err(self.nats("the log ended early")),
                    Err(_) => {
                        return Err(self.nats(format!(
                            "no log record arrived within 30 s (after record {received} of {last})"
                        )))
                    }
                };
                received = msg
                    .info()
                    .map_err(|e| self.failed("a log message without metadata", e))?
                    .stream_sequence;
                let payload = msg.payload.clone();
                decoding.push_back((
                    received,
                    tokio::task::spawn_blocking(move || decode_record(&payload)),
                ));
            }
            let Some((seq, decoded)) = decoding.pop_front() else {
                return Err(self.nats("the log ended early"));
            };
            let entries = decoded
                .await
                .map_err(|e| self.nats(format!("decoding record {seq} failed: {e}")))?
                .map_err(|e| self.corrupt(format!("record {seq}"), e))?;
            for entry in entries {
                recovered.events += entry.events.len() as u64;
                for event in entry.events {
                    recovered.state.apply_owned(event);
                }
                if let Some(reply) = entry.reply {
                    if newest.len() == keep {
                        newest.pop_front();
                    }
                    newest.push_back(reply);
                }
            }
            recovered.records += 1;
            recovered.last_seq = seq;
        }
        Ok(())
    }

    /// Catches up and appends an empty record after the last one read: from
    /// then on, an append by a previous owner that is still on its way (sent
    /// before that owner knew it lost the lease, e.g. from across a healed
    /// partition) is refused by its expected sequence, and can never land
    /// after records this process has not read. Called by a new owner before
    /// it serves.
    pub async fn fence(&self, recovered: &mut Recovered) -> Result<(), WalError> {
        let mut attempts = 0;
        let started = Instant::now();
        let mut delays =
            reddit_shared::backoff::delays(Duration::from_millis(20), Duration::from_secs(1));
        loop {
            match self.catch_up(recovered).await {
                Ok(()) => {}
                Err(e @ (WalError::Gap { .. } | WalError::Corrupt { .. })) => return Err(e),
                // JetStream electing a leader after a node died: wait a while.
                Err(e) if started.elapsed() < FENCE_PATIENCE => {
                    tracing::warn!(shard = self.shard, error = %e, "cannot read the log to take the shard over yet; retrying");
                    tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(1))).await;
                    continue;
                }
                Err(e) => return Err(e),
            }
            let id = format!("fence-{}", uuid::Uuid::now_v7().simple());
            let empty = RecordBuilder::default().seal();
            match self.append(empty, &id, recovered.last_seq).await {
                Ok(seq) => {
                    recovered.last_seq = seq;
                    recovered.records += 1;
                    return Ok(());
                }
                // Someone appended after the catch-up: read that too.
                Err(WalError::Fenced { .. }) if attempts < 10 => attempts += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Appends `record` expecting record `expected_last` to be the stream's last, and
    /// returns the new record's sequence. Transient failures (NATS restarting, no
    /// acknowledgement in time) are retried with backoff for as long as it takes,
    /// with the same message id, so the record is stored once.
    pub async fn append(
        &self,
        record: Bytes,
        msg_id: &str,
        expected_last: u64,
    ) -> Result<u64, WalError> {
        use jetstream::context::PublishErrorKind as K;
        let mut delays =
            reddit_shared::backoff::delays(Duration::from_millis(20), Duration::from_secs(1));
        let mut attempts = 0u32;
        let mut missing_since: Option<Instant> = None;
        loop {
            let publish = PublishMessage::build()
                .payload(record.clone())
                .message_id(msg_id)
                .expected_last_sequence(expected_last);
            let result = match self.js.send_publish(self.subject.clone(), publish).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            let e = match result {
                Ok(ack) => return Ok(ack.sequence),
                Err(e) => e,
            };
            match e.kind() {
                K::WrongLastSequence => return self.confirm(expected_last, msg_id).await,
                // A clustered JetStream may report the conflict with this code.
                K::Other if jetstream_code(&e) == Some(10164) => {
                    return self.confirm(expected_last, msg_id).await
                }
                K::MaxPayloadExceeded => {
                    return Err(self.failed("the record is larger than the stream accepts", e))
                }
                // "No responders" for the stream's subject: JetStream is still
                // starting (a restarted server) or the stream was deleted. Wait a
                // while before calling it gone.
                K::StreamNotFound
                    if missing_since.get_or_insert_with(Instant::now).elapsed()
                        > STREAM_MISSING_LIMIT =>
                {
                    return Err(self.nats(format!(
                        "the stream {} has not answered for {STREAM_MISSING_LIMIT:?}; was it deleted?",
                        stream_name(self.shard)
                    )));
                }
                _ => {
                    attempts += 1;
                    if attempts == 1 || attempts.is_multiple_of(20) {
                        tracing::warn!(shard = self.shard, error = %e, attempts, "log append failed; retrying (replies wait)");
                    }
                    let pause = delays.next().unwrap_or(Duration::from_secs(1));
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// One attempt at appending `record` after `expected_last`, with no retry:
    /// what a pipelined append sends while its predecessors are still in flight
    /// (`expected_last` is then a prediction). Any failure, a refusal because a
    /// predecessor has not landed included, is only a reason to [`Log::append`]
    /// once the predecessor is confirmed.
    pub async fn try_append(
        &self,
        record: Bytes,
        msg_id: &str,
        expected_last: u64,
    ) -> Result<u64, WalError> {
        let publish = PublishMessage::build()
            .payload(record)
            .message_id(msg_id)
            .expected_last_sequence(expected_last);
        let result = match self.js.send_publish(self.subject.clone(), publish).await {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        result
            .map(|ack| ack.sequence)
            .map_err(|e| self.failed("a pipelined append was not stored", e))
    }

    /// After a wrong-last-sequence refusal: the record after `expected_last` is ours
    /// if it carries our message id (a retry of an append whose ack was lost).
    async fn confirm(&self, expected_last: u64, msg_id: &str) -> Result<u64, WalError> {
        let next = expected_last + 1;
        match self.stream.get_raw_message(next).await {
            Ok(m)
                if m.headers
                    .get(async_nats::header::NATS_MESSAGE_ID)
                    .map(|v| v.as_str())
                    == Some(msg_id) =>
            {
                Ok(next)
            }
            _ => Err(WalError::Fenced {
                shard: self.shard,
                expected: expected_last,
            }),
        }
    }

    /// Stores a snapshot covering records up to `seq`, then purges those records.
    /// Refuses ([`WalError::StaleSnapshot`]) if the log was purged past `seq`
    /// already: a process that lost the shard to a new owner (who has
    /// snapshotted since) would otherwise put back a snapshot whose following
    /// records are gone, and no process could recover the shard.
    pub async fn save_snapshot(&self, bytes: Vec<u8>, seq: u64) -> Result<(), WalError> {
        self.save_snapshot_paced(bytes, seq, &Pace::unpaced()).await
    }

    /// [`Log::save_snapshot`], its chunks sent at `pace`.
    pub async fn save_snapshot_paced(
        &self,
        bytes: Vec<u8>,
        seq: u64,
        pace: &Pace,
    ) -> Result<(), WalError> {
        let first = self
            .stream
            .get_info()
            .await
            .map_err(|e| self.failed("cannot read the stream's info", e))?
            .state
            .first_sequence;
        if first > seq + 1 {
            return Err(WalError::StaleSnapshot {
                shard: self.shard,
                seq,
                first,
            });
        }
        let size = bytes.len();
        let mut reader = pace.reader(bytes);
        let meta = object_store::ObjectMetadata {
            name: snapshot_name(self.shard),
            chunk_size: Some(self.chunk),
            ..Default::default()
        };
        let started = std::time::Instant::now();
        self.store
            .put(meta, &mut reader)
            .await
            .map_err(|e| self.failed("cannot store a snapshot", e))?;
        let put = started.elapsed();
        self.purge_through(seq).await?;
        tracing::info!(
            shard = self.shard,
            seq,
            bytes = size,
            put_ms = put.as_millis() as u64,
            purge_ms = (started.elapsed() - put).as_millis() as u64,
            "snapshot stored; older records purged"
        );
        Ok(())
    }

    /// Removes the records up to and including `seq`, in one request.
    /// nats-server holds the stream's lock while it purges, so the shard's
    /// appends wait meanwhile: some 50 ms on an idle broker, up to 200 ms
    /// under a million-user load (`cargo bench --bench purge`). Removing them
    /// in smaller steps made that worse: a step that ends inside one of the
    /// stream's 8 MiB blocks costs about as much as a whole purge
    /// (docs/performance.md, "What a purge costs the appends").
    pub async fn purge_through(&self, seq: u64) -> Result<(), WalError> {
        self.stream
            .purge()
            .sequence(seq + 1)
            .await
            .map_err(|e| self.failed("cannot purge the log up to the snapshot", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reddit_shared::names::Username;

    /// A record of an entry with a reply and one without, its fields
    /// written as `fields` says.
    fn record(fields: Fields) -> Bytes {
        let mut b = RecordBuilder::with_fields(fields);
        assert!(b.is_empty());
        let user: Username = "alice".parse().unwrap();
        b.push(&Entry {
            reply: Some(Cached {
                key: crate::replies::ReplyKey::of_text("k"),
                hash: 7,
                reply: vec![1, 2, 3],
            }),
            events: vec![Event::UserRegistered {
                username: user,
                public_key: [3; 32],
                at: 5,
            }],
        })
        .unwrap();
        b.push(&Entry {
            reply: None,
            events: Vec::new(),
        })
        .unwrap();
        assert_eq!((b.entries(), b.events()), (2, 1));
        let bytes = b.seal();
        assert!(b.is_empty());
        bytes
    }

    #[test]
    fn records_round_trip_and_older_named_records_still_decode() {
        let positional = record(Fields::Positional);
        let named = record(Fields::Named);
        assert_eq!(record(Fields::default()), positional);
        assert!(
            positional.len() < named.len() * 3 / 4,
            "{} against {} bytes",
            positional.len(),
            named.len()
        );
        for bytes in [positional, named] {
            let entries = decode_record(&bytes).unwrap();
            assert_eq!(entries.len(), 2);
            assert_eq!(entries[0].reply.as_ref().unwrap().reply, vec![1, 2, 3]);
            assert!(matches!(
                entries[0].events[0],
                Event::UserRegistered { at: 5, .. }
            ));
            assert!(entries[1].reply.is_none());
        }
    }

    proptest::proptest! {
        /// Whatever a log record holds, decoding it fails cleanly or yields entries.
        #[test]
        fn arbitrary_records_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            if let Ok(entries) = decode_record(&bytes) {
                let mut state = ShardState::new(0, 1);
                for e in &entries {
                    for event in &e.events {
                        state.apply(event);
                    }
                }
            }
            let _ = crate::snapshot::decode(&bytes, 2);
            for magic in [b"RSNAP\x00\x02\x00", b"RSNAP\x00\x03\x00"] {
                let mut parted = magic.to_vec();
                parted.extend_from_slice(&bytes);
                let _ = crate::snapshot::decode(&parted, 2);
            }
        }
    }
}
