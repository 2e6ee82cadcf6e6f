//! The write-ahead log in JetStream: shard `k` appends the events of its writes to
//! its log before it answers them, and rebuilds its state on start from its
//! latest snapshot plus the records after it.
//!
//! - **Segments**: the log is a run of streams, each holding a fixed range of
//!   record sequences: `REDDIT_WAL_<k>` (subject `reddit.wal.<k>`) first, then
//!   `REDDIT_WAL_<k>_<n>` (subject `reddit.wal.<k>.<n>`). Segment `n + 1` is
//!   created with `first_seq` one past segment `n`'s last, so sequences run on
//!   across segments as in one stream, and every record's segment follows from
//!   its sequence. A segment holds at most its `max_msgs` records (discard
//!   new; it is never purged), so no writer can put a record past its range.
//!   Once a snapshot covers a whole segment, the segment is deleted whole:
//!   purging the records of one stream held its lock, and the shard's
//!   appends, for up to 200 ms under load; deleting another stream takes
//!   about 2 ms and holds none of the appends' locks (docs/performance.md).
//!   A log of an engine from before segments is one unbounded stream: it is
//!   sealed (it refuses appends from then on) once it holds a segment's worth
//!   of records, and the log goes on in segment 1.
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
//!   [`crate::snapshot`]. Once one is stored, the segments it covers whole are
//!   deleted.

use crate::fields::Fields;
use crate::pace::Pace;
use crate::replies::{Cached, ReplyCache};
use crate::state::{Event, ShardState};
use async_nats::jetstream::{self, message::PublishMessage, object_store, stream};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

/// The stream holding shard `shard`'s log: its first segment.
pub fn stream_name(shard: u32) -> String {
    format!("REDDIT_WAL_{shard}")
}

/// The stream holding segment `n` of shard `shard`'s log (segment 0 is
/// [`stream_name`]).
pub fn segment_name(shard: u32, n: u32) -> String {
    if n == 0 {
        stream_name(shard)
    } else {
        format!("REDDIT_WAL_{shard}_{n}")
    }
}

/// Most records a log segment holds by default: at the 4,600 records a
/// second of durable votes at full speed, a segment lasts 14 s, time enough
/// to make the next one in a cluster that lost a node (7–10 s measured).
pub const DEFAULT_SEGMENT_RECORDS: u64 = 65_536;
/// Bytes a log segment is sized for by default: its number of records is
/// this over the average record of late (at most
/// [`DEFAULT_SEGMENT_RECORDS`], at least [`MIN_SEGMENT_RECORDS`]), so the
/// log a snapshot leaves holds at most about this much more than it needs,
/// whatever the size of the records.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
/// Fewest records a segment is sized for (unless the most is set lower).
const MIN_SEGMENT_RECORDS: u64 = 64;
/// The record size a log's first segment is sized by, before any record
/// was appended: large, so that a first segment of large records (a
/// million users' registrations) stays small.
const FIRST_RECORD_BYTES: u64 = 64 << 10;

/// JetStream's error code for a publish to a sealed stream.
const SEALED: u64 = 10109;
/// JetStream's error code for a publish past a stream's `max_msgs`.
const FULL: u64 = 10077;

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
    store: object_store::ObjectStore,
    shard: u32,
    shards: u32,
    replicas: usize,
    /// Most records a segment this process creates holds.
    segment_records: u64,
    /// Bytes a segment this process creates is sized for.
    segment_bytes: u64,
    /// A moving average of the size of the records this process appended
    /// (0: none yet), which sizes the segments it creates.
    record_bytes: Arc<AtomicU64>,
    /// The segments this process knows of, and whether it is creating the
    /// next one ahead of need.
    segments: Arc<Mutex<Known>>,
    /// Snapshot chunk size: [`SNAPSHOT_CHUNK_BYTES`], or less if the server's
    /// payload limit is smaller.
    chunk: usize,
    /// This writer's name, unique per [`Log::open`] (shared by its clones):
    /// the prefix of the message id of every record it appends through the
    /// journal, `<writer>.<n>`, which tells its records from any other's.
    writer: Arc<str>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("shard", &self.shard)
            .field("segment_records", &self.segment_records)
            .finish()
    }
}

/// One stream of a log, as far as routing an append needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Segment {
    /// Its number: 0 for [`stream_name`], then 1, 2, ...
    n: u32,
    /// The first sequence it holds.
    first: u64,
    /// The last sequence it may hold: the last of its `max_msgs`, or, once it
    /// is sealed, its last record. None: an unbounded stream not sealed yet
    /// (a log of an engine before segments).
    end: Option<u64>,
    /// Whether it refuses appends (sealed).
    sealed: bool,
}

impl Segment {
    /// What `info` says of segment `n`.
    fn of(n: u32, info: &stream::Info) -> Self {
        let first = info.config.first_sequence.unwrap_or(1).max(1);
        let end = if info.config.sealed {
            Some(info.state.last_sequence)
        } else if info.config.max_messages > 0 {
            Some(first + info.config.max_messages as u64 - 1)
        } else {
            None
        };
        Self {
            n,
            first,
            end,
            sealed: info.config.sealed,
        }
    }
}

/// The segments a [`Log`] knows of, oldest first.
#[derive(Debug, Default)]
struct Known {
    list: Vec<Segment>,
    /// A task is creating the segment after the last one.
    creating: bool,
}

impl Known {
    /// Keeps `segment` in order (once).
    fn add(&mut self, segment: Segment) {
        match self.list.binary_search_by_key(&segment.n, |s| s.n) {
            Ok(i) => self.list[i] = segment,
            Err(i) => self.list.insert(i, segment),
        }
        // Routing needs only the last two; the snapshots delete the others.
        let len = self.list.len();
        if len > 2 {
            self.list.drain(..len - 2);
        }
    }
}

/// Where an append goes.
enum Route {
    /// To this segment's subject.
    To(String),
    /// Its sequence is in a sealed segment that already holds it: a record
    /// made by someone, this process's own if its acknowledgement was lost.
    Taken,
}

/// The sequence of the last record of a log of `segments` (oldest first), 0
/// if it never had one. A segment made ahead of need is empty and says its
/// last record is the one before its range: not so while the segment before
/// it is not full.
fn last_of(segments: &[(Segment, stream::Stream)]) -> u64 {
    let mut before_empty = 0;
    for (_, stream) in segments.iter().rev() {
        let state = &stream.cached_info().state;
        if state.messages > 0 {
            return state.last_sequence;
        }
        before_empty = state.first_sequence.saturating_sub(1);
    }
    before_empty
}

/// The stream of `segments` whose range holds sequence `seq`.
fn holding(segments: &[(Segment, stream::Stream)], seq: u64) -> Option<&stream::Stream> {
    segments
        .iter()
        .find(|(s, _)| s.first <= seq && s.end.is_none_or(|end| seq <= end))
        .map(|(_, stream)| stream)
}

/// The `Nats-Msg-Id` of record `seq` of `stream` (`None`: it has none).
async fn msg_id_at(
    stream: &stream::Stream,
    seq: u64,
) -> Result<Option<String>, jetstream::stream::RawMessageError> {
    let message = stream.get_raw_message(seq).await?;
    Ok(message
        .headers
        .get(async_nats::header::NATS_MESSAGE_ID)
        .map(|v| v.as_str().to_owned()))
}

/// The reply of the JetStream API's stream names request.
#[derive(Deserialize)]
struct StreamNames {
    #[serde(default)]
    streams: Option<Vec<String>>,
    #[serde(default)]
    total: usize,
}

impl Log {
    /// Opens shard `shard`'s log (its streams are created as appends need
    /// them, with `replicas` copies each) and the snapshot bucket, and checks
    /// that the log belongs to a cluster of `shards`.
    pub async fn open(
        client: &async_nats::Client,
        shard: u32,
        shards: u32,
        replicas: usize,
    ) -> Result<Self, WalError> {
        let js = jetstream::new(client.clone());
        let mut log = Self {
            store: Self::snapshot_store(&js, shard, replicas).await?,
            js,
            shard,
            shards,
            replicas: replicas.max(1),
            segment_records: DEFAULT_SEGMENT_RECORDS,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            record_bytes: Arc::default(),
            segments: Arc::default(),
            chunk: SNAPSHOT_CHUNK_BYTES,
            writer: uuid::Uuid::now_v7().simple().to_string().into(),
        };
        // Room under the server's payload limit for the chunk's headers.
        let limit = client.server_info().max_payload.saturating_sub(4096);
        log.chunk = SNAPSHOT_CHUNK_BYTES
            .min(limit)
            .max(MIN_SNAPSHOT_CHUNK_BYTES);
        let segments = log.list().await?;
        if let Some((_, stream)) = segments.last() {
            let theirs = stream
                .cached_info()
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
        }
        Ok(log)
    }

    /// The snapshot bucket, created if needed. Also where a JetStream that is
    /// off or unreachable shows first.
    async fn snapshot_store(
        js: &jetstream::Context,
        shard: u32,
        replicas: usize,
    ) -> Result<object_store::ObjectStore, WalError> {
        if let Err(e) = js.query_account().await {
            return Err(WalError::Unavailable(e.to_string()));
        }
        match js.get_object_store(SNAPSHOT_BUCKET).await {
            Ok(store) => Ok(store),
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
                }),
        }
    }

    /// The log with segments of at most `records` records each (at least
    /// 2), for the segments this process creates; existing ones keep their
    /// size.
    pub fn with_segment_records(mut self, records: u64) -> Self {
        self.segment_records = records.max(2);
        self
    }

    /// The log with segments sized for `bytes` each (see
    /// [`DEFAULT_SEGMENT_BYTES`]).
    pub fn with_segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = bytes.max(1);
        self
    }

    /// How many records the next segment this process creates holds: its
    /// bytes over the average record of late, within the bounds.
    fn next_segment_records(&self) -> u64 {
        let average = match self.record_bytes.load(Ordering::Relaxed) {
            0 => FIRST_RECORD_BYTES,
            bytes => bytes,
        };
        (self.segment_bytes / average).clamp(
            MIN_SEGMENT_RECORDS.min(self.segment_records),
            self.segment_records,
        )
    }

    /// Counts an appended record of `bytes` into the average that sizes the
    /// next segment (a moving average over about the last 64 records).
    fn appended(&self, bytes: usize) {
        let bytes = bytes.max(1) as u64;
        let average = self.record_bytes.load(Ordering::Relaxed);
        let next = if average == 0 {
            bytes
        } else {
            (average - average / 64 + bytes / 64).max(1)
        };
        self.record_bytes.store(next, Ordering::Relaxed);
    }

    /// The configuration of segment `n`, starting at sequence `first` and
    /// holding at most `records`.
    fn segment_config(&self, n: u32, first: u64, records: u64) -> stream::Config {
        let shard = self.shard;
        stream::Config {
            name: segment_name(shard, n),
            description: Some(format!(
                "write-ahead log of Reddit engine shard {shard} of {}, segment {n}",
                self.shards
            )),
            subjects: vec![reddit_shared::subject::wal_segment(shard, n)],
            storage: stream::StorageType::File,
            // Nothing is dropped by a limit: a full segment refuses more, and
            // a segment goes whole once a snapshot covers it.
            discard: stream::DiscardPolicy::New,
            max_messages: records as i64,
            first_sequence: (first > 1).then_some(first),
            duplicate_window: Duration::from_secs(120),
            allow_direct: true,
            num_replicas: self.replicas,
            metadata: HashMap::from([
                ("format".to_owned(), FORMAT.to_owned()),
                ("shard".to_owned(), shard.to_string()),
                ("shards".to_owned(), self.shards.to_string()),
                ("segment".to_owned(), n.to_string()),
            ]),
            ..Default::default()
        }
    }

    /// The log's segments as the server has them now, oldest first, each
    /// with its stream (whose cached info is this moment's). Also what this
    /// process knows from then on.
    async fn list(&self) -> Result<Vec<(Segment, stream::Stream)>, WalError> {
        let mut names = Vec::new();
        let filter = reddit_shared::subject::wal_segments(self.shard);
        loop {
            let page: StreamNames = self
                .js
                .request(
                    "STREAM.NAMES",
                    &serde_json::json!({ "subject": filter, "offset": names.len() }),
                )
                .await
                .map_err(|e| match e.kind() {
                    jetstream::context::RequestErrorKind::NoResponders
                    | jetstream::context::RequestErrorKind::TimedOut => {
                        WalError::Unavailable(e.to_string())
                    }
                    _ => self.failed("cannot list the log's segments", e),
                })?;
            let got = page.streams.unwrap_or_default();
            let done = got.is_empty() || names.len() + got.len() >= page.total;
            names.extend(got);
            if done {
                break;
            }
        }
        let prefix = format!("{}_", stream_name(self.shard));
        let mut numbered: Vec<u32> = names
            .iter()
            .filter_map(|name| name.strip_prefix(&prefix)?.parse().ok())
            .collect();
        numbered.push(0);
        numbered.sort_unstable();
        numbered.dedup();
        let mut out = Vec::with_capacity(numbered.len());
        for n in numbered {
            match self.js.get_stream(segment_name(self.shard, n)).await {
                Ok(stream) => {
                    let segment = Segment::of(n, stream.cached_info());
                    out.push((segment, stream));
                }
                // Deleted (covered by a snapshot) since it was listed, or no
                // segment 0 in a log that has moved past it.
                Err(e)
                    if matches!(
                        e.kind(),
                        jetstream::context::GetStreamErrorKind::JetStream(ref j)
                            if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                    ) => {}
                Err(e) => return Err(self.failed("cannot read a log segment's info", e)),
            }
        }
        let mut known = self.known();
        known.list.clear();
        for (segment, _) in &out {
            known.add(segment.clone());
        }
        Ok(out)
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        // A panic elsewhere while the lock was held leaves a consistent list.
        self.segments.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates segment `n` starting at `first`, or takes it as it is if
    /// another process created it (any two processes agree on where it
    /// starts: one past the end of segment `n - 1`).
    async fn create_segment(&self, n: u32, first: u64, records: u64) -> Result<Segment, WalError> {
        let config = self.segment_config(n, first, records);
        let info = match self.js.create_stream(config).await {
            Ok(mut stream) => stream.info().await.cloned(),
            Err(_) => match self.js.get_stream(segment_name(self.shard, n)).await {
                Ok(stream) => Ok(stream.cached_info().clone()),
                Err(e) => return Err(self.failed("cannot create a log segment", e)),
            },
        }
        .map_err(|e| self.failed("cannot read a new log segment's info", e))?;
        let segment = Segment::of(n, &info);
        if n > 0 && segment.first != first {
            return Err(self.corrupt(
                format!("log segment {n}"),
                format!("it starts at record {}, not {first}", segment.first),
            ));
        }
        self.known().add(segment.clone());
        Ok(segment)
    }

    /// Seals segment `n` (an unbounded one: of a log from before segments)
    /// and returns it as it ended. Harmless if this process is not the log's
    /// writer: the writer's next append is refused as sealed and goes on in
    /// the next segment, where its expected sequence still decides.
    async fn seal(&self, n: u32) -> Result<Segment, WalError> {
        let name = segment_name(self.shard, n);
        let stream = self
            .js
            .get_stream(&name)
            .await
            .map_err(|e| self.failed("cannot read a log segment to seal it", e))?;
        let mut config = stream.cached_info().config.clone();
        let info = if config.sealed {
            stream.cached_info().clone()
        } else {
            config.sealed = true;
            self.js
                .update_stream(config)
                .await
                .map_err(|e| self.failed("cannot seal a full log segment", e))?
        };
        let segment = Segment::of(n, &info);
        tracing::info!(
            shard = self.shard,
            segment = n,
            last = info.state.last_sequence,
            "log segment sealed; the log goes on in the next"
        );
        self.known().add(segment.clone());
        Ok(segment)
    }

    /// The subject for the record after `expected_last`: the segment whose
    /// range holds it, creating it if no one has yet. From the first append
    /// into a segment on, the next is created in the background, so a
    /// segment's change costs the appends nothing: creating a replicated
    /// stream took 7–10 s in a cluster that had just lost a node, and an
    /// append that found no successor made then waited as long.
    async fn route(&self, expected_last: u64) -> Result<Route, WalError> {
        let seq = expected_last + 1;
        loop {
            let (holding, any) = {
                let known = self.known();
                let holding = known.list.iter().rev().find(|s| s.first <= seq).cloned();
                (holding, !known.list.is_empty())
            };
            let current = match holding {
                Some(segment) => segment,
                // Before every segment there is: its record is gone, or was
                // never this process's to write.
                None if any => return Ok(Route::Taken),
                None => {
                    if !self.list().await?.is_empty() {
                        continue;
                    }
                    if expected_last > 0 {
                        return Err(self.nats(format!(
                            "the log has no streams left, but this process expected record {expected_last} to be its last; was it deleted?"
                        )));
                    }
                    self.create_segment(0, 1, self.next_segment_records())
                        .await?;
                    continue;
                }
            };
            let subject = reddit_shared::subject::wal_segment(self.shard, current.n);
            match current.end {
                // An unbounded segment that holds a segment's worth: seal it
                // and go on after it.
                None if seq - current.first >= self.segment_records => {
                    self.seal(current.n).await?;
                }
                None => return Ok(Route::To(subject)),
                Some(end) if seq <= end => {
                    if current.sealed {
                        return Ok(Route::Taken);
                    }
                    self.prepare_next(&current, end);
                    return Ok(Route::To(subject));
                }
                // Past this segment's range: on in the next (made ahead of
                // need, unless this append caught up with its making).
                Some(end) => {
                    let next = self.known().list.iter().any(|s| s.n == current.n + 1);
                    if !next {
                        self.create_segment(current.n + 1, end + 1, self.next_segment_records())
                            .await?;
                    }
                }
            }
        }
    }

    /// Creates the segment after `current` in the background, once (again
    /// after a failure, at a later append).
    fn prepare_next(&self, current: &Segment, end: u64) {
        {
            let mut known = self.known();
            if known.creating || known.list.last().is_some_and(|s| s.n > current.n) {
                return;
            }
            known.creating = true;
        }
        // Sized now, by the records appended before this one.
        let (log, n, records) = (self.clone(), current.n + 1, self.next_segment_records());
        tokio::spawn(async move {
            if let Err(e) = log.create_segment(n, end + 1, records).await {
                // The append that needs it creates it then.
                tracing::warn!(shard = log.shard, segment = n, error = %e, "cannot create the next log segment ahead of need");
            }
            log.known().creating = false;
        });
    }

    /// The segment holding sequence `seq`, as the server has it now.
    async fn stream_holding(&self, seq: u64) -> Result<Option<stream::Stream>, WalError> {
        Ok(holding(&self.list().await?, seq).cloned())
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
        Ok(last_of(&self.list().await?))
    }

    /// This writer's name: the prefix of its records' message ids
    /// (`<writer>.<n>`, see [`Log::is_own_id`]).
    pub fn writer(&self) -> &str {
        &self.writer
    }

    /// Whether `msg_id` is of a record this writer appended.
    pub fn is_own_id(&self, msg_id: &str) -> bool {
        msg_id
            .strip_prefix(&*self.writer)
            .is_some_and(|rest| rest.starts_with('.'))
    }

    /// Whether every record after `confirmed()` is this writer's own: `true`
    /// when the log ends there, or when the records after it (at most
    /// `at_most` of them) all carry this writer's message ids.
    ///
    /// What a process that took its lease again after an expiry asks with
    /// the last record it has confirmed: its own appends that landed but
    /// whose acknowledgements it has not processed yet (in flight, or being
    /// retried) also follow that record, and do not mean that another
    /// process wrote the log meanwhile. A record of anyone else (a standby's
    /// fence), more records than `at_most` (more than this writer has in
    /// flight), or a log that ends before `confirmed()` all say `false`.
    ///
    /// `confirmed` is read once the log's end is known: the process keeps
    /// confirming and appending while the end is asked for, and a position
    /// read before could trail the end by more than its own in flight.
    pub async fn holds_only_own_records_after(
        &self,
        confirmed: impl FnOnce() -> u64,
        at_most: u64,
    ) -> Result<bool, WalError> {
        let segments = self.list().await?;
        let last = last_of(&segments);
        let seq = confirmed();
        if last < seq || last - seq > at_most {
            return Ok(false);
        }
        for next in seq + 1..=last {
            let Some(stream) = holding(&segments, next) else {
                return Ok(false);
            };
            let id = msg_id_at(stream, next)
                .await
                .map_err(|e| self.failed("cannot read a record of the log", e))?;
            if !id.is_some_and(|id| self.is_own_id(&id)) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Applies every record after `recovered.last_seq` that the log holds now
    /// (a standby keeping its state warm; recovery's second half), segment
    /// after segment. A [`WalError::Gap`] means a snapshot deleted records it
    /// has not applied: [`recover`](Self::recover) again.
    ///
    /// Of the records' replies only the newest the reply cache can hold are
    /// inserted, at the end: the others would be forgotten by then anyway (a
    /// key is logged again only once the cache has forgotten it, so none of
    /// them hides a newer one), and inserting them cost a quarter of a replay.
    pub async fn catch_up(&self, recovered: &mut Recovered) -> Result<(), WalError> {
        let segments = self.list().await?;
        let last = last_of(&segments);
        if last <= recovered.last_seq {
            return Ok(());
        }
        let keep = recovered.replies.capacity();
        let mut newest: VecDeque<Cached> = VecDeque::new();
        // A long replay rebuilds the post indexes once at the end; a standby's
        // catch-up of a few records keeps them up to date as it goes.
        let defer = last - recovered.last_seq >= DEFER_INDEXES_RECORDS;
        recovered.state.defer_indexes(defer);
        let from = recovered.last_seq;
        let mut applied = self
            .apply_segments(segments, recovered, &mut newest, keep)
            .await;
        // Records were there, but none of them follows ours: a snapshot
        // removed them.
        if applied.is_ok() && recovered.last_seq < last {
            applied = Err(WalError::Gap {
                shard: self.shard,
                first: last + 1,
                covered: from,
            });
        }
        recovered.state.defer_indexes(false);
        for reply in newest {
            recovered.replies.insert(reply);
        }
        applied
    }

    /// Applies the records of `segments` after `recovered.last_seq`.
    async fn apply_segments(
        &self,
        segments: Vec<(Segment, stream::Stream)>,
        recovered: &mut Recovered,
        newest: &mut VecDeque<Cached>,
        keep: usize,
    ) -> Result<(), WalError> {
        let from = recovered.last_seq;
        for (_, stream) in segments {
            let next = recovered.last_seq + 1;
            let state = &stream.cached_info().state;
            let (first, last, messages) =
                (state.first_sequence, state.last_sequence, state.messages);
            // An empty segment (made ahead of need) says its last is the
            // one before its range: it holds nothing to read.
            if last < next || messages == 0 {
                continue;
            }
            if first > next {
                return Err(WalError::Gap {
                    shard: self.shard,
                    first,
                    covered: from,
                });
            }
            let consumer = stream
                .create_consumer(jetstream::consumer::pull::OrderedConfig {
                    deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: next,
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
            let mut records = consumer
                .messages()
                .await
                .map_err(|e| self.failed("cannot read the log", e))?;
            // Records are decoded ahead on the blocking pool while the events of
            // earlier ones are applied here, in log order.
            self.apply_decoded(&mut records, recovered, last, newest, keep)
                .await?;
        }
        Ok(())
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

    /// Appends `record` expecting record `expected_last` to be the log's last, and
    /// returns the new record's sequence. Transient failures (NATS restarting, no
    /// acknowledgement in time, the segment sealed by another process) are
    /// retried with backoff for as long as it takes, with the same message id,
    /// so the record is stored once.
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
            let (e, subject) = match self.route(expected_last).await {
                Ok(Route::Taken) => return self.confirm(expected_last, msg_id).await,
                Ok(Route::To(subject)) => {
                    let publish = PublishMessage::build()
                        .payload(record.clone())
                        .message_id(msg_id)
                        .expected_last_sequence(expected_last);
                    let result = match self.js.send_publish(subject.clone(), publish).await {
                        Ok(ack) => ack.await,
                        Err(e) => Err(e),
                    };
                    match result {
                        Ok(ack) => {
                            self.appended(record.len());
                            return Ok(ack.sequence);
                        }
                        Err(e) => (e, subject),
                    }
                }
                Err(e) => {
                    attempts += 1;
                    tracing::warn!(shard = self.shard, error = %e, attempts, "cannot find the log segment to append to; retrying (replies wait)");
                    tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(1))).await;
                    continue;
                }
            };
            match e.kind() {
                K::WrongLastSequence => return self.confirm(expected_last, msg_id).await,
                // A clustered JetStream may report the conflict with this code;
                // a full segment means someone else appended in its range.
                K::Other if matches!(jetstream_code(&e), Some(10164 | FULL)) => {
                    return self.confirm(expected_last, msg_id).await
                }
                // Another process sealed the segment: find where the log goes on.
                K::Other if jetstream_code(&e) == Some(SEALED) => {
                    self.list().await.ok();
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
                        "shard {}'s log has not answered for {STREAM_MISSING_LIMIT:?}; was it deleted?",
                        self.shard
                    )));
                }
                _ => {
                    attempts += 1;
                    if attempts == 1 || attempts.is_multiple_of(20) {
                        // Where it went, and what this process knows of the
                        // segments: an append that finds no stream is a
                        // puzzle without them.
                        let segments: Vec<String> = self
                            .known()
                            .list
                            .iter()
                            .map(|s| {
                                format!(
                                    "{}:{}..{:?}{}",
                                    s.n,
                                    s.first,
                                    s.end,
                                    if s.sealed { " sealed" } else { "" }
                                )
                            })
                            .collect();
                        tracing::warn!(shard = self.shard, error = %e, attempts, %subject, expected_last, ?segments, "log append failed; retrying (replies wait)");
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
        let Route::To(subject) = self.route(expected_last).await? else {
            return Err(self.nats("a pipelined append's place is taken"));
        };
        let bytes = record.len();
        let publish = PublishMessage::build()
            .payload(record)
            .message_id(msg_id)
            .expected_last_sequence(expected_last);
        let result = match self.js.send_publish(subject, publish).await {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        let ack = result.map_err(|e| self.failed("a pipelined append was not stored", e))?;
        self.appended(bytes);
        Ok(ack.sequence)
    }

    /// After a wrong-last-sequence refusal: the record after `expected_last` is ours
    /// if it carries our message id (a retry of an append whose ack was lost).
    async fn confirm(&self, expected_last: u64, msg_id: &str) -> Result<u64, WalError> {
        let next = expected_last + 1;
        let fenced = WalError::Fenced {
            shard: self.shard,
            expected: expected_last,
        };
        let Ok(Some(stream)) = self.stream_holding(next).await else {
            return Err(fenced);
        };
        match msg_id_at(&stream, next).await {
            Ok(Some(id)) if id == msg_id => Ok(next),
            _ => Err(fenced),
        }
    }

    /// Stores a snapshot covering records up to `seq`, then deletes the
    /// segments it covers whole.
    /// Refuses ([`WalError::StaleSnapshot`]) if the log was deleted past `seq`
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
            .list()
            .await?
            .first()
            .map_or(1, |(_, stream)| stream.cached_info().state.first_sequence);
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
        let deleted = self.delete_through(seq).await?;
        tracing::info!(
            shard = self.shard,
            seq,
            bytes = size,
            put_ms = put.as_millis() as u64,
            segments_deleted = deleted,
            delete_ms = (started.elapsed() - put).as_millis() as u64,
            "snapshot stored; the log segments it covers deleted"
        );
        Ok(())
    }

    /// Deletes the segments that hold no record after `seq` (never the last:
    /// the log goes on there), and returns how many. Deleting a stream whole
    /// holds none of the locks the appends to another need: about 2 ms
    /// against 30–60 ms for purging the same records from the stream the
    /// appends go to, which stalled them meanwhile (up to 200 ms under a
    /// million-user load; `cargo bench --bench purge`).
    pub async fn delete_through(&self, seq: u64) -> Result<usize, WalError> {
        let segments = self.list().await?;
        let keep_from = segments.len().saturating_sub(1);
        let mut deleted = 0;
        for (segment, _) in &segments[..keep_from] {
            if segment.end.is_none_or(|end| end > seq) {
                break;
            }
            self.js
                .delete_stream(segment_name(self.shard, segment.n))
                .await
                .map_err(|e| self.failed("cannot delete a log segment a snapshot covers", e))?;
            deleted += 1;
        }
        if deleted > 0 {
            self.list().await?;
        }
        Ok(deleted)
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
