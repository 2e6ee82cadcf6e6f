//! The NATS side of a shard: a reader task takes requests from the service endpoint
//! `reddit.shard.<k>.>` and queues them (bounded; a full queue answers `503`) for the
//! actor, the one task that owns the [`ShardState`] and handles requests in order.
//! Work that waits on other shards runs in spawned tasks (bounded by a semaphore);
//! when it needs the state again it sends a continuation back to the actor.

use crate::auth::{Challenges, Requester, TokenSigner, VerifiedTokens};
use crate::cross_shard::{Peers, SyncEnvelope};
use crate::replies::{payload_hash, Cached, Lookup, ReplyCache};
use crate::state::ranking::{encode_cursor, Rank};
use crate::state::{audit, Effects, Event, PushTarget, ShardState};
use crate::wal::{Entry, Log, RecordBuilder, WalError};
use async_nats::service::Request;
use async_nats::HeaderMap;
use futures::future::BoxFuture;
use futures::FutureExt;
use reddit_shared::auth::{parse_bearer, AUTH_HEADER};
use reddit_shared::codec::{decode, encode};
use reddit_shared::error::{ErrorCode, WireError, ERROR_CODE_HEADER, ERROR_HEADER};
use reddit_shared::ids::DmId;
use reddit_shared::names::{SubredditName, Username};
use reddit_shared::protocol::admin::{AuditReport, AuditRequest, ShardStats};
use reddit_shared::protocol::comment::{CommentTreeRequest, CreateCommentRequest};
use reddit_shared::protocol::dm::{
    DmView, ListDmsRequest, MarkReadRequest, ReplyDmRequest, SendDmRequest,
};
use reddit_shared::protocol::feed::FeedRequest;
use reddit_shared::protocol::internal::{
    AuditExport, AuditExportRequest, DeliverDm, FeedCandidate, FeedCandidates,
    FeedCandidatesRequest, Hello, SyncAck, SyncBatch,
};
use reddit_shared::protocol::post::{
    CreatePostRequest, GetPostRequest, ListPostsRequest, PostView,
};
use reddit_shared::protocol::rpc::{Rpc, StatsRequest};
use reddit_shared::protocol::subreddit::{
    CreateSubredditRequest, GetSubredditRequest, ListSubredditsRequest, MembershipRequest,
    SubredditList,
};
use reddit_shared::protocol::user::{
    parse_public_key, ChallengeReply, ChallengeRequest, GetUserRequest, LoginReply, LoginRequest,
    RegisterRequest,
};
use reddit_shared::protocol::vote::VoteRequest;
use reddit_shared::protocol::{Op, Validate, DEFAULT_PAGE};
use reddit_shared::subject::ReplyTo;
use reddit_shared::{
    now_millis, subject, IDEMPOTENCY_HEADER, MAX_PAGE_BYTES, MAX_REQUEST_BYTES, PROTOCOL_VERSION,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::Digest;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Semaphore};

const OPS: usize = Op::ALL.len();
const CODES: [ErrorCode; 12] = ErrorCode::ALL;
/// Records per `internal.audit.export` page.
const AUDIT_PAGE: u32 = 4_000;

/// Counters shown by `shard.stats` and in `$SRV.STATS` (custom data).
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
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
    /// Writes (log entries) in those records.
    pub wal_entries: AtomicU64,
    /// Sequence of the last record appended.
    pub wal_seq: AtomicU64,
    /// Retries answered from the reply cache.
    pub retries_answered: AtomicU64,
    /// Requests dropped because of their reply subject.
    pub replies_refused: AtomicU64,
    /// Slow-consumer reports for the request subscription.
    pub slow_consumer_events: AtomicU64,
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
            wal_entries: AtomicU64::new(0),
            wal_seq: AtomicU64::new(0),
            retries_answered: AtomicU64::new(0),
            replies_refused: AtomicU64::new(0),
            slow_consumer_events: AtomicU64::new(0),
        }
    }

    fn count(&self, op: Option<Op>) {
        match op.and_then(|op| Op::ALL.iter().position(|o| *o == op)) {
            Some(i) => self.requests[i].fetch_add(1, Ordering::Relaxed),
            None => self.unknown.fetch_add(1, Ordering::Relaxed),
        };
    }

    fn error(&self, code: ErrorCode) {
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
            "wal_entries": self.wal_entries.load(Ordering::Relaxed),
            "wal_seq": self.wal_seq.load(Ordering::Relaxed),
            "retries_answered": self.retries_answered.load(Ordering::Relaxed),
            "replies_refused": self.replies_refused.load(Ordering::Relaxed),
            "slow_consumer_events": self.slow_consumer_events.load(Ordering::Relaxed),
            "uptime_ms": self.started.elapsed().as_millis() as u64,
        })
    }
}

/// A closure the actor runs against its state on behalf of a spawned task; its
/// result is the encoded reply.
pub type StateFn =
    Box<dyn FnOnce(&mut ShardState, &mut Effects) -> Result<Vec<u8>, WireError> + Send>;

/// A continuation: the closure, the reply-cache key of the request it finishes, and
/// where its result goes (once its events are durable).
pub struct RunJob {
    f: StateFn,
    cache: Option<(String, u64)>,
    done: oneshot::Sender<Result<Vec<u8>, WireError>>,
}

/// Work for the actor. Requests travel unboxed: they are nearly every job, and
/// boxing would allocate once per request.
#[allow(clippy::large_enum_variant)]
pub enum Job {
    /// A request from NATS.
    Request(Request),
    /// A continuation from a spawned task: runs against the state; its effects are
    /// carried out by the actor.
    Run(RunJob),
    /// A spawned write with this idempotency key finished (its continuation, if
    /// any, has run): a retry may now be answered from the cache or handled anew.
    Finished(String),
}

/// What the actor shares with spawned tasks.
#[derive(Clone)]
pub struct Ctx {
    /// The shard's outgoing NATS connection (NATS user `engine-work`): replies,
    /// pushes and requests to other shards. It never receives requests, and
    /// cannot reach the log or the JetStream API.
    pub client: async_nats::Client,
    /// Requests to other shards.
    pub peers: Peers,
    /// Token signer.
    pub tokens: TokenSigner,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// This shard.
    pub shard: u32,
    /// Cluster size.
    pub shards: u32,
    /// The service instance id.
    pub instance: String,
    /// Outbox for other shards.
    pub sync_tx: mpsc::Sender<SyncEnvelope>,
    /// Bounds spawned cross-shard tasks.
    pub permits: Arc<Semaphore>,
    /// How long a join waits for the user's shard.
    pub peer_timeout: Duration,
}

enum Handled {
    /// The reply.
    Reply(Vec<u8>),
    /// The reply comes from work in a spawned task.
    Later(BoxFuture<'static, Result<Vec<u8>, WireError>>),
    /// The write is applied and `body` is its reply, sent once the user's shard
    /// confirms `envelope` (or an error if `wait` fails).
    Confirm {
        body: Vec<u8>,
        envelope: SyncEnvelope,
        wait: BoxFuture<'static, Result<(), WireError>>,
    },
}

/// How a handled job is answered.
enum Pending {
    Respond(Request, Result<Vec<u8>, WireError>),
    /// Work in a spawned task; the key is removed from `running` when it ends.
    Spawn(
        Request,
        BoxFuture<'static, Result<Vec<u8>, WireError>>,
        Option<String>,
    ),
    Wake(
        oneshot::Sender<Result<Vec<u8>, WireError>>,
        Result<Vec<u8>, WireError>,
    ),
}

/// Everything a handled job sends out; held until the job's writes are durable.
struct Outcome {
    fx: Effects,
    envelope: Option<SyncEnvelope>,
    reply: Option<Pending>,
}

/// The log side of the actor (jetstream storage): the record being filled, the
/// append in flight, and the snapshot schedule.
pub struct Journal {
    log: Log,
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
}

impl Journal {
    /// A journal appending to `log` after record `last_seq`; a snapshot every
    /// `snapshot_every` events (0: never, except at shutdown).
    pub fn new(log: Log, last_seq: u64, snapshot_every: u64) -> Self {
        Self {
            log,
            open: RecordBuilder::default(),
            inflight: None,
            last_seq,
            msg_prefix: uuid::Uuid::now_v7().simple().to_string(),
            appends: 0,
            snapshot_every,
            since_snapshot: 0,
            want_snapshot: false,
            snapshot_task: None,
        }
    }
}

/// Waits for the journal's append in flight (forever if none).
async fn next_ack(journal: &mut Option<Journal>) -> Result<(u64, u64), WalError> {
    match journal.as_mut().and_then(|j| j.inflight.as_mut()) {
        Some((upto, fut)) => {
            let seq = fut.await?;
            Ok((*upto, seq))
        }
        None => std::future::pending().await,
    }
}

/// What the idempotency check decided.
enum Idem {
    /// No key (or not a client write): handle normally.
    None,
    /// Handle, and remember the reply under this key and payload hash.
    Key(String, u64, uuid::Uuid),
    /// A retry: answer with this reply.
    Hit(Vec<u8>),
}

fn reply<T: Serialize>(value: &T) -> Result<Handled, WireError> {
    encode(value).map(Handled::Reply)
}

/// Reads request `R` from `payload`, lets `f` answer it, and encodes the reply:
/// the contract's table ([`Rpc`]) decides that `f` returns `R`'s reply type.
fn answer<R: Rpc>(
    payload: &[u8],
    f: impl FnOnce(R) -> Result<R::Reply, WireError>,
) -> Result<Handled, WireError> {
    reply(&f(parse::<R>(payload)?)?)
}

fn parse<T: DeserializeOwned + Validate>(payload: &[u8]) -> Result<T, WireError> {
    let value: T = decode(payload)?;
    value.validate()?;
    Ok(value)
}

/// Whether `request` may be answered: its reply subject is an inbox of one of the
/// roles' shapes ([`ReplyTo`]). Anything else (the log's subject, the JetStream
/// API, another shard's internal subjects, someone's push subject) is refused and
/// counted: the engine never publishes where a request chose unchecked.
pub fn reply_allowed(metrics: &Metrics, request: &Request) -> bool {
    let ok = request
        .message
        .reply
        .as_ref()
        .is_some_and(|r| ReplyTo::classify(r.as_str()).is_some());
    if !ok {
        let n = metrics.replies_refused.fetch_add(1, Ordering::Relaxed);
        if (n + 1).is_power_of_two() {
            tracing::warn!(
                subject = %request.message.subject,
                reply = ?request.message.reply.as_ref().map(|r| r.chars().take(80).collect::<String>()),
                refused = n + 1,
                "dropped a request whose reply subject is not an inbox"
            );
        }
    }
    ok
}

/// Answers `request` with `result` over `client` (the shard's outgoing
/// connection, not the one requests arrive on): the body, or the error headers and
/// body. A reply subject that is not an inbox is never published to.
pub async fn respond(
    client: &async_nats::Client,
    metrics: &Metrics,
    request: &Request,
    result: Result<Vec<u8>, WireError>,
) {
    if !reply_allowed(metrics, request) {
        return;
    }
    let Some(reply) = request.message.reply.clone() else {
        return;
    };
    let outcome = match result {
        Ok(body) => client.publish(reply, body.into()).await,
        Err(e) => {
            metrics.error(e.code);
            let mut headers = HeaderMap::new();
            headers.insert(ERROR_CODE_HEADER, e.code.status().to_string().as_str());
            headers.insert(ERROR_HEADER, e.message.as_str());
            let body = encode(&e).unwrap_or_default();
            client
                .publish_with_headers(reply, headers, body.into())
                .await
        }
    };
    if let Err(e) = outcome {
        tracing::debug!(error = %e, "could not send a reply");
    }
}

/// Reads requests from `endpoint` into the actor's queue until it ends.
pub async fn read_requests(
    mut endpoint: async_nats::service::endpoint::Endpoint,
    out: async_nats::Client,
    jobs: mpsc::Sender<Job>,
    metrics: Arc<Metrics>,
    shard: u32,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use futures::StreamExt;
    let mut stopping = false;
    loop {
        let next = if stopping {
            // Unsubscribed: the stream yields what the connection already delivered
            // and ends once the unsubscribe is processed. The cap only guards
            // against a connection that never processes it.
            match tokio::time::timeout(Duration::from_secs(10), endpoint.next()).await {
                Ok(next) => next,
                Err(_) => {
                    tracing::warn!(
                        "the request subscription did not end within 10 s of unsubscribing"
                    );
                    None
                }
            }
        } else {
            tokio::select! {
                next = endpoint.next() => next,
                _ = stop.changed() => {
                    stopping = true;
                    if let Err(e) = endpoint.stop().await {
                        tracing::warn!(error = %e, "could not unsubscribe");
                    }
                    continue;
                }
            }
        };
        let Some(request) = next else { break };
        metrics.received.fetch_add(1, Ordering::Relaxed);
        match jobs.try_send(Job::Request(request)) {
            Ok(()) => {
                metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Full(Job::Request(request))) => {
                metrics.count(subject::op_of(&request.message.subject, shard).and_then(Op::parse));
                respond(
                    &out,
                    &metrics,
                    &request,
                    Err(WireError::unavailable(
                        "the shard is overloaded (request queue full); retry later",
                    )),
                )
                .await;
            }
            Err(_) => break,
        }
    }
}

/// The actor: owns the state and handles jobs in order until every sender is gone.
pub struct Actor {
    state: ShardState,
    challenges: Challenges,
    verified: VerifiedTokens,
    /// The facts of the audit in progress (one at a time), by audit id.
    audit_cache: Option<(u64, Vec<reddit_shared::protocol::internal::AuditRecord>)>,
    ctx: Ctx,
    jobs: mpsc::WeakSender<Job>,
    replies: ReplyCache,
    journal: Option<Journal>,
    /// Log entries produced (writes handled).
    written: u64,
    /// Log entries known durable.
    durable: u64,
    /// Outcomes waiting for their entries to be durable: (entry number, outcome).
    held: VecDeque<(u64, Outcome)>,
    /// The idempotency key of the request being dispatched (for continuations).
    current: Option<(String, u64, uuid::Uuid)>,
    /// Keys of writes whose work runs in spawned tasks: a retry meanwhile is told
    /// to come back, not handled twice.
    running: std::collections::HashSet<String>,
}

impl Actor {
    /// An actor for `state`; `jobs` is its own queue (held weakly, so the actor ends
    /// when the reader and all spawned tasks are done).
    pub fn new(state: ShardState, ctx: Ctx, jobs: mpsc::WeakSender<Job>) -> Self {
        let mut state = state;
        state.set_recording(true);
        Self {
            state,
            challenges: Challenges::new(&ctx.tokens),
            verified: VerifiedTokens::default(),
            audit_cache: None,
            ctx,
            jobs,
            replies: ReplyCache::new(crate::replies::DEFAULT_CAPACITY),
            journal: None,
            written: 0,
            durable: 0,
            held: VecDeque::new(),
            current: None,
            running: std::collections::HashSet::new(),
        }
    }

    /// Uses `replies` (restored by recovery) as the reply cache.
    pub fn with_replies(mut self, replies: ReplyCache) -> Self {
        self.replies = replies;
        self
    }

    /// Makes every write durable in `journal` before it is answered.
    pub fn with_journal(mut self, journal: Journal) -> Self {
        self.journal = Some(journal);
        self
    }

    /// Handles jobs until the queue closes, then makes everything durable and, with
    /// a log, stores a snapshot. Fails only if the log refuses this process (another
    /// writer) or breaks for good.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Job>) -> Result<(), WalError> {
        if self.journal.is_some() {
            // A restart lost whatever the outbox still owed: send it all again.
            let mut fx = Effects::default();
            self.state.resync_all(&mut fx);
            self.commit(None, fx, None).await;
            self.kick();
        }
        loop {
            let can_take = self
                .journal
                .as_ref()
                .is_none_or(|j| !j.open.is_full() && !j.want_snapshot);
            tokio::select! {
                biased;
                ack = next_ack(&mut self.journal) => {
                    let (upto, seq) = ack?;
                    self.appended(upto, seq).await;
                }
                job = rx.recv(), if can_take => match job {
                    Some(job) => self.job(job).await,
                    None => break,
                },
            }
            self.kick();
        }
        // Drain: append what is open, wait for it, answer everything held.
        while self
            .journal
            .as_ref()
            .is_some_and(|j| j.inflight.is_some() || !j.open.is_empty())
        {
            self.kick();
            let (upto, seq) = next_ack(&mut self.journal).await?;
            self.appended(upto, seq).await;
        }
        self.release().await;
        if let Some(j) = self.journal.as_mut() {
            if let Some(task) = j.snapshot_task.take() {
                let _ = task.await;
            }
            if j.since_snapshot > 0 {
                match crate::wal::encode_snapshot(&self.state, &self.replies, j.last_seq) {
                    Ok(bytes) => j.log.save_snapshot(bytes, j.last_seq).await?,
                    Err(e) => tracing::error!(error = %e, "could not encode a snapshot"),
                }
            }
        }
        Ok(())
    }

    async fn job(&mut self, job: Job) {
        match job {
            Job::Request(request) => {
                self.ctx.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
                self.handle(request).await;
            }
            Job::Finished(key) => {
                self.running.remove(&key);
            }
            Job::Run(RunJob { f, cache, done }) => {
                let mut fx = Effects::default();
                let result = f(&mut self.state, &mut fx);
                let cached = match (&result, cache) {
                    (Ok(body), Some((key, hash))) => Some(Cached {
                        key,
                        hash,
                        reply: body.clone(),
                    }),
                    _ => None,
                };
                self.commit(cached, fx, Some(Pending::Wake(done, result)))
                    .await;
            }
        }
    }

    /// Starts an append of the open record if none is in flight.
    fn kick(&mut self) {
        let upto = self.written;
        let Some(j) = self.journal.as_mut() else {
            // Memory storage: everything is as durable as it gets at once.
            self.durable = self.written;
            return;
        };
        if j.inflight.is_some() || j.open.is_empty() {
            return;
        }
        let entries = u64::from(j.open.entries());
        j.since_snapshot += j.open.events();
        let record = j.open.seal();
        j.appends += 1;
        let msg_id = format!("{}.{}", j.msg_prefix, j.appends);
        let expected = j.last_seq;
        let log = j.log.clone();
        self.ctx
            .metrics
            .wal_entries
            .fetch_add(entries, Ordering::Relaxed);
        j.inflight = Some((
            upto,
            async move { log.append(record, &msg_id, expected).await }.boxed(),
        ));
    }

    /// An append finished: entries up to `upto` are durable as record `seq`.
    async fn appended(&mut self, upto: u64, seq: u64) {
        if let Some(j) = self.journal.as_mut() {
            j.inflight = None;
            j.last_seq = seq;
            self.ctx.metrics.wal_records.fetch_add(1, Ordering::Relaxed);
            self.ctx.metrics.wal_seq.store(seq, Ordering::Relaxed);
            let due = j.snapshot_every > 0
                && j.since_snapshot >= j.snapshot_every
                && j.snapshot_task.as_ref().is_none_or(|t| t.is_finished());
            if due && j.open.is_empty() {
                j.want_snapshot = false;
                j.since_snapshot = 0;
                match crate::wal::encode_snapshot(&self.state, &self.replies, seq) {
                    Ok(bytes) => {
                        let log = j.log.clone();
                        j.snapshot_task = Some(tokio::spawn(async move {
                            if let Err(e) = log.save_snapshot(bytes, seq).await {
                                tracing::warn!(error = %e, "snapshot failed; the log keeps every record until the next one");
                            }
                        }));
                    }
                    Err(e) => tracing::error!(error = %e, "could not encode a snapshot"),
                }
            } else if due {
                // Stop taking jobs until the open record is appended: the snapshot
                // must match a record boundary.
                j.want_snapshot = true;
            }
        }
        self.durable = upto;
        self.release().await;
    }

    /// Carries out the held outcomes whose entries are durable.
    async fn release(&mut self) {
        while self
            .held
            .front()
            .is_some_and(|(tag, _)| *tag <= self.durable)
        {
            if let Some((_, outcome)) = self.held.pop_front() {
                self.carry_out(outcome).await;
            }
        }
    }

    /// Logs the events the state recorded since the last call (with `cached`, the
    /// reply to remember, if they are not empty), then sends `fx` and `reply` once
    /// they are durable.
    async fn commit(&mut self, cached: Option<Cached>, fx: Effects, reply: Option<Pending>) {
        let events = self.state.take_events();
        self.record(events, cached);
        let tag = self.written;
        self.finish(
            tag,
            Outcome {
                fx,
                envelope: None,
                reply,
            },
        )
        .await;
    }

    /// Appends a write's events (and the reply to remember) to the open record.
    fn record(&mut self, events: Vec<Event>, cached: Option<Cached>) {
        if events.is_empty() {
            return;
        }
        if let Some(c) = &cached {
            self.replies.insert(c.clone());
        }
        if let Some(j) = self.journal.as_mut() {
            let entry = Entry {
                reply: cached,
                events,
            };
            if let Err(e) = j.open.push(&entry) {
                tracing::error!(error = %e, "could not encode a log entry");
            }
            self.written += 1;
        }
    }

    /// Sends `outcome` now if its entries (up to `tag`) are durable, else holds it.
    async fn finish(&mut self, tag: u64, outcome: Outcome) {
        if tag <= self.durable {
            // Reads (tag 0) may overtake held writes; writes keep their order.
            self.carry_out(outcome).await;
        } else {
            self.held.push_back((tag, outcome));
        }
    }

    /// Checks the request's idempotency key: a retry of a remembered write is
    /// answered from the cache.
    fn idempotency(&mut self, op: Op, request: &Request, now: i64) -> Result<Idem, WireError> {
        let Some(value) = request
            .message
            .headers
            .as_ref()
            .and_then(|h| h.get(IDEMPOTENCY_HEADER))
        else {
            return Ok(Idem::None);
        };
        // Engine-to-engine writes are idempotent by design (versions, message ids).
        if !op.is_write() || matches!(op, Op::InternalSync | Op::InternalDmDeliver) {
            return Ok(Idem::None);
        }
        let text = value.as_str();
        let id = (text.len() <= 64)
            .then(|| uuid::Uuid::parse_str(text).ok())
            .flatten()
            .ok_or_else(|| {
                WireError::invalid(format!(
                    "the {IDEMPOTENCY_HEADER} header must be a UUID (got {:?})",
                    text.chars().take(64).collect::<String>()
                ))
            })?;
        let caller = if op == Op::UserRegister {
            String::new()
        } else {
            self.caller(request, now)?.key().to_owned()
        };
        let key = format!("{}\u{1f}{caller}\u{1f}{id}", op.as_str());
        let hash = payload_hash(&request.message.payload);
        match self.replies.lookup(&key, hash) {
            Lookup::Miss => Ok(Idem::Key(key, hash, id)),
            Lookup::Hit(reply) => {
                self.ctx
                    .metrics
                    .retries_answered
                    .fetch_add(1, Ordering::Relaxed);
                Ok(Idem::Hit(reply.to_vec()))
            }
            Lookup::Mismatch => Err(WireError::conflict(format!(
                "{IDEMPOTENCY_HEADER} {id} was already used for a different {} request; use a new key for a new request",
                op.as_str()
            ))),
        }
    }

    async fn handle(&mut self, request: Request) {
        let op = subject::op_of(&request.message.subject, self.ctx.shard).and_then(Op::parse);
        self.ctx.metrics.count(op);
        if !reply_allowed(&self.ctx.metrics, &request) {
            // Not handled at all: a write nobody may be told about is not applied.
            return;
        }
        let mut fx = Effects::default();
        let now = now_millis();
        self.current = None;
        let result = match op {
            None => Err(WireError::new(
                ErrorCode::UnknownOperation,
                format!(
                    "{:?} names no operation of this engine",
                    request.message.subject.as_str()
                ),
            )),
            Some(_) if request.message.payload.len() > MAX_REQUEST_BYTES => Err(WireError::new(
                ErrorCode::TooLarge,
                format!(
                    "the payload is {} bytes; at most {MAX_REQUEST_BYTES} are accepted",
                    request.message.payload.len()
                ),
            )),
            Some(op) => match self.idempotency(op, &request, now) {
                Err(e) => Err(e),
                Ok(Idem::Hit(body)) => Ok(Handled::Reply(body)),
                Ok(Idem::None) => self.dispatch(op, &request, &mut fx),
                Ok(Idem::Key(key, ..)) if self.running.contains(&key) => {
                    Err(WireError::unavailable(format!(
                        "the request with this {IDEMPOTENCY_HEADER} is still in progress; retry shortly"
                    )))
                }
                Ok(Idem::Key(key, hash, id)) => {
                    self.current = Some((key, hash, id));
                    self.dispatch(op, &request, &mut fx)
                }
            },
        };
        let events = self.state.take_events();
        let current = self.current.take();
        let cached = match (&result, &current) {
            (Ok(Handled::Reply(body) | Handled::Confirm { body, .. }), Some((key, hash, _)))
                if !events.is_empty() =>
            {
                Some(Cached {
                    key: key.clone(),
                    hash: *hash,
                    reply: body.clone(),
                })
            }
            _ => None,
        };
        // A keyed write finishing in a spawned task is "running" until that task
        // reports back (after its continuation stored the reply).
        let running = match (&result, current) {
            (Ok(Handled::Later(_)), Some((key, _, _))) => {
                self.running.insert(key.clone());
                Some(key)
            }
            _ => None,
        };
        self.record(events, cached);
        let tag = if op.is_some_and(Op::is_write) {
            self.written
        } else {
            0
        };
        let (reply, envelope) = match result {
            Ok(Handled::Reply(body)) => (Pending::Respond(request, Ok(body)), None),
            Err(e) => (Pending::Respond(request, Err(e)), None),
            Ok(Handled::Later(work)) => (Pending::Spawn(request, work, running), None),
            Ok(Handled::Confirm {
                body,
                envelope,
                wait,
            }) => (
                Pending::Spawn(
                    request,
                    async move { wait.await.map(|()| body) }.boxed(),
                    None,
                ),
                Some(envelope),
            ),
        };
        self.finish(
            tag,
            Outcome {
                fx,
                envelope,
                reply: Some(reply),
            },
        )
        .await;
    }

    /// Sends what a handled job produced: sync items, pushes, then the reply.
    async fn carry_out(&mut self, outcome: Outcome) {
        let Outcome {
            fx,
            envelope,
            reply,
        } = outcome;
        if let Some(env) = envelope {
            if let Err(e) = self.ctx.sync_tx.try_send(env) {
                tracing::error!(error = %e, "sync outbox full; a membership update is dropped");
            }
        }
        self.send_effects(fx).await;
        match reply {
            None => {}
            Some(Pending::Respond(request, result)) => {
                respond(&self.ctx.client, &self.ctx.metrics, &request, result).await
            }
            Some(Pending::Wake(tx, result)) => {
                let _ = tx.send(result);
            }
            Some(Pending::Spawn(request, work, running)) => {
                match self.ctx.permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let metrics = self.ctx.metrics.clone();
                        let client = self.ctx.client.clone();
                        let jobs = self.jobs.clone();
                        tokio::spawn(async move {
                            let result = work.await;
                            if let (Some(key), Some(jobs)) = (running, jobs.upgrade()) {
                                let _ = jobs.send(Job::Finished(key)).await;
                            }
                            respond(&client, &metrics, &request, result).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        if let Some(key) = running {
                            self.running.remove(&key);
                        }
                        respond(
                            &self.ctx.client,
                            &self.ctx.metrics,
                            &request,
                            Err(WireError::unavailable(
                                "too many cross-shard requests in flight; retry later",
                            )),
                        )
                        .await
                    }
                }
            }
        }
    }

    /// Publishes pushes and queues sync items.
    async fn send_effects(&mut self, fx: Effects) {
        for (dest, item) in fx.sync {
            if let Err(e) = self.ctx.sync_tx.try_send(SyncEnvelope {
                dest,
                item,
                waiter: None,
            }) {
                tracing::error!(error = %e, "sync outbox full; an update for shard {dest} is dropped");
            }
        }
        for (target, event) in fx.push {
            let subject = match &target {
                PushTarget::User(key) => subject::user_events(key),
                PushTarget::Subreddit(key) => subject::subreddit_events(key),
            };
            match encode(&event) {
                Ok(body) => {
                    if let Err(e) = self.ctx.client.publish(subject, body.into()).await {
                        tracing::debug!(error = %e, "could not publish a push event");
                    }
                }
                Err(e) => tracing::error!(error = %e, "could not encode a push event"),
            }
        }
    }

    fn caller(&mut self, request: &Request, now: i64) -> Result<Username, WireError> {
        let value = request
            .message
            .headers
            .as_ref()
            .and_then(|h| h.get(AUTH_HEADER))
            .map(|v| v.as_str().to_owned())
            .ok_or_else(|| {
                WireError::unauthenticated(
                    "this operation needs the header `Authorization: Bearer <token>`; log in with auth.challenge and auth.login",
                )
            })?;
        let token = parse_bearer(&value).ok_or_else(|| {
            WireError::unauthenticated("the Authorization header must be `Bearer <token>`")
        })?;
        let user = self.verified.verify(&self.ctx.tokens, token, now)?;
        // What a request does as a user is answered only where that user (or a
        // trusted role) reads: never to the anonymous inbox or another user's.
        let reply = request.message.reply.as_ref().map(|r| r.as_str());
        match reply.and_then(ReplyTo::classify) {
            Some(ReplyTo::User(k)) if k == user.key() => Ok(user),
            Some(ReplyTo::Service | ReplyTo::Engine) => Ok(user),
            _ => Err(WireError::forbidden(format!(
                "a request acting as {user} must take its reply in {}.> (that user's own connection) or a service inbox",
                subject::user_inbox_prefix(user.key())
            ))),
        }
    }

    /// Refuses writes that would produce sync items when the outbox is full.
    fn need_sync_room(&self) -> Result<(), WireError> {
        if self.ctx.sync_tx.capacity() > 0 {
            Ok(())
        } else {
            Err(WireError::unavailable(
                "the shard's outbox to other shards is full; retry later",
            ))
        }
    }

    /// Runs `f` on the actor later, from a spawned task (remembering its reply
    /// under the current request's idempotency key).
    fn continuation(&self) -> Result<Continuation, WireError> {
        let cache = self.current.as_ref().map(|(k, h, _)| (k.clone(), *h));
        self.jobs
            .upgrade()
            .map(|jobs| Continuation { jobs, cache })
            .ok_or_else(|| WireError::unavailable("the shard is shutting down"))
    }

    /// The id of a DM being sent. With an idempotency key of any form, it is
    /// minted once per (operation, caller, key) and recorded in the log, so every
    /// retry sends the same message (which the recipient's shard stores once); a
    /// UUID v7 key is itself the id. Without a key, a fresh id.
    fn dm_id(&mut self) -> DmId {
        match &self.current {
            Some((key, _, id)) => {
                let digest = sha2::Sha256::digest(key.as_bytes());
                let mut origin = [0u8; 16];
                origin.copy_from_slice(&digest[..16]);
                let fresh = if id.get_version_num() == 7 {
                    DmId(*id)
                } else {
                    DmId::new()
                };
                self.state.mint_dm_id(origin, fresh)
            }
            None => DmId::new(),
        }
    }

    fn dispatch(
        &mut self,
        op: Op,
        request: &Request,
        fx: &mut Effects,
    ) -> Result<Handled, WireError> {
        let p: &[u8] = &request.message.payload;
        let now = now_millis();
        match op {
            Op::UserRegister => answer(p, |r: RegisterRequest| {
                let key = parse_public_key(&r.public_key)?;
                self.state.register(&r.username, key, now)
            }),
            Op::AuthChallenge => {
                let r: ChallengeRequest = parse(p)?;
                let (_, name) = self.state.public_key(&r.username)?;
                let inbox = request.message.reply.as_ref().map_or("", |r| r.as_str());
                let who = match ReplyTo::classify(inbox) {
                    Some(ReplyTo::Service | ReplyTo::Engine) => Requester::Trusted,
                    Some(ReplyTo::User(k)) if k == name.key() => {
                        Requester::Own(ReplyTo::connection(inbox))
                    }
                    _ => Requester::Foreign(ReplyTo::connection(inbox)),
                };
                let (challenge, expires_at) = self.challenges.issue(name.key(), who, now)?;
                reply(&ChallengeReply {
                    challenge,
                    expires_at,
                })
            }
            Op::AuthLogin => {
                let r: LoginRequest = parse(p)?;
                let (key, name) = self.state.public_key(&r.username)?;
                self.challenges
                    .verify(&name, &r.challenge, &r.signature, &key, now)?;
                let (token, expires_at) = self.ctx.tokens.issue(&name, now);
                reply(&LoginReply {
                    username: name.to_string(),
                    token,
                    expires_at,
                })
            }
            Op::UserGet => answer(p, |r: GetUserRequest| self.state.get_user(&r.username)),
            Op::SubCreate => {
                let who = self.caller(request, now)?;
                answer(p, |r: CreateSubredditRequest| {
                    self.state
                        .create_subreddit(&who, &r.name, r.description, now)
                })
            }
            Op::SubGet => answer(p, |r: GetSubredditRequest| {
                self.state.get_subreddit(&r.name)
            }),
            Op::SubList => answer(p, |r: ListSubredditsRequest| {
                let limit = r.limit.unwrap_or(DEFAULT_PAGE) as usize;
                Ok(SubredditList {
                    subreddits: self.state.list_subreddits(limit),
                })
            }),
            Op::SubJoin | Op::SubLeave => {
                let who = self.caller(request, now)?;
                let r: MembershipRequest = parse(p)?;
                self.need_sync_room()?;
                let result = self
                    .state
                    .set_membership(&who, &r.name, op == Op::SubJoin, fx)?;
                let Some((dest, item)) = fx.sync.pop() else {
                    return reply(&result);
                };
                let (tx, rx) = oneshot::channel();
                let body = encode(&result)?;
                let wait = self.ctx.peer_timeout * 2;
                Ok(Handled::Confirm {
                    body,
                    envelope: SyncEnvelope {
                        dest,
                        item,
                        waiter: Some(tx),
                    },
                    wait: async move {
                        match tokio::time::timeout(wait, rx).await {
                            Ok(Ok(())) => Ok(()),
                            _ => Err(WireError::unavailable(format!(
                                "the membership is recorded, but shard {dest} (the user's) has not confirmed it yet; it will be retried, and repeating the request is safe"
                            ))),
                        }
                    }
                    .boxed(),
                })
            }
            Op::PostCreate => {
                let who = self.caller(request, now)?;
                let r: CreatePostRequest = parse(p)?;
                self.state.get_subreddit(&r.subreddit)?;
                match r.repost_of.clone() {
                    Some(orig) if self.state.owner(orig.subreddit.key()) != self.ctx.shard => {
                        let peers = self.ctx.peers.clone();
                        let dest = self.state.owner(orig.subreddit.key());
                        let cont = self.continuation()?;
                        Ok(Handled::Later(
                            async move {
                                let get = GetPostRequest {
                                    subreddit: orig.subreddit.clone(),
                                    id: orig.id,
                                };
                                let _: PostView = peers
                                    .call(dest, Op::PostGet, &get)
                                    .await
                                    .map_err(|e| original_missing(e, &orig.subreddit))?;
                                cont.run(move |state, fx| {
                                    state.create_post(
                                        &who,
                                        &r.subreddit,
                                        r.title,
                                        r.body,
                                        r.repost_of,
                                        now_millis(),
                                        fx,
                                    )
                                })
                                .await
                            }
                            .boxed(),
                        ))
                    }
                    repost_of => {
                        if let Some(orig) = &repost_of {
                            self.state
                                .post_exists(orig)
                                .map_err(|e| original_missing(e, &orig.subreddit))?;
                        }
                        reply(&self.state.create_post(
                            &who,
                            &r.subreddit,
                            r.title,
                            r.body,
                            repost_of,
                            now,
                            fx,
                        )?)
                    }
                }
            }
            Op::PostGet => answer(p, |r: GetPostRequest| {
                self.state.get_post(&r.subreddit, r.id)
            }),
            Op::PostList => answer(p, |r: ListPostsRequest| {
                self.state
                    .list_posts(&r.subreddit, r.sort, r.limit, r.cursor.as_ref())
            }),
            Op::CommentCreate => {
                let who = self.caller(request, now)?;
                answer(p, |r: CreateCommentRequest| {
                    self.state.create_comment(&who, r, now, fx)
                })
            }
            Op::CommentTree => answer(p, |r: CommentTreeRequest| self.state.comment_tree(&r)),
            Op::VoteCast => {
                let who = self.caller(request, now)?;
                answer(p, |r: VoteRequest| {
                    self.need_sync_room()?;
                    self.state
                        .vote(&who, &r.subreddit, r.target, r.id, r.value, fx)
                })
            }
            Op::FeedGet => {
                let who = self.caller(request, now)?;
                let r: FeedRequest = parse(p)?;
                self.feed(&who, r)
            }
            Op::DmSend => {
                let who = self.caller(request, now)?;
                let r: SendDmRequest = parse(p)?;
                let mut dm = self
                    .state
                    .prepare_dm(DmId::new(), &who, &r.to, r.body, None, now)?;
                dm.id = self.dm_id();
                self.send_dm(dm, fx)
            }
            Op::DmReply => {
                let who = self.caller(request, now)?;
                let r: ReplyDmRequest = parse(p)?;
                let to = self.state.reply_target(&who, r.dm_id)?;
                let mut dm =
                    self.state
                        .prepare_dm(DmId::new(), &who, &to, r.body, Some(r.dm_id), now)?;
                dm.id = self.dm_id();
                self.send_dm(dm, fx)
            }
            Op::DmList => {
                let who = self.caller(request, now)?;
                answer(p, |r: ListDmsRequest| self.state.list_dms(&who, &r))
            }
            Op::DmRead => {
                let who = self.caller(request, now)?;
                answer(p, |r: MarkReadRequest| self.state.mark_read(&who, r.ids))
            }
            Op::ShardStats => answer(p, |_: StatsRequest| Ok(self.stats())),
            Op::AuditRun => {
                let r: AuditRequest = parse(p)?;
                let peers = self.ctx.peers.clone();
                let shards = self.ctx.shards;
                let max = r.max_violations.unwrap_or(100) as usize;
                Ok(Handled::Later(
                    async move { encode(&run_audit(peers, shards, max).await?) }.boxed(),
                ))
            }
            Op::InternalSync => {
                let r: SyncBatch = parse(p)?;
                let mut applied = 0;
                for item in r.items {
                    if self.state.apply_sync_checked(item)? {
                        applied += 1;
                    }
                }
                reply(&SyncAck { applied })
            }
            Op::InternalDmDeliver => {
                let r: DeliverDm = parse(p)?;
                reply(&self.state.deliver_dm(r.dm, fx)?)
            }
            Op::InternalFeedCandidates => {
                let r: FeedCandidatesRequest = parse(p)?;
                let (posts, truncated) = self.state.feed_candidates(
                    &r.subreddits,
                    r.sort,
                    r.limit as usize,
                    r.cursor.as_ref(),
                )?;
                reply(&FeedCandidates { posts, truncated })
            }
            Op::InternalAuditExport => {
                let r: AuditExportRequest = parse(p)?;
                let limit = r.limit.clamp(1, 10 * AUDIT_PAGE) as usize;
                let offset = usize::try_from(r.offset).unwrap_or(usize::MAX);
                // One snapshot per audit, served page by page: linear, not quadratic.
                if r.offset == 0
                    || self
                        .audit_cache
                        .as_ref()
                        .is_none_or(|(id, _)| *id != r.audit)
                {
                    self.audit_cache = Some((r.audit, self.state.audit_records().collect()));
                }
                let all = self
                    .audit_cache
                    .as_ref()
                    .map_or(&[][..], |(_, v)| v.as_slice());
                let end = offset.saturating_add(limit).min(all.len());
                let records = all.get(offset..end).unwrap_or_default().to_vec();
                let done = end >= all.len();
                if done {
                    self.audit_cache = None;
                }
                reply(&AuditExport {
                    records,
                    done,
                    pending_sync: self.ctx.metrics.pending_sync.load(Ordering::Relaxed),
                })
            }
            Op::InternalHello => reply(&Hello {
                shard: self.ctx.shard,
                shards: self.ctx.shards,
                protocol: PROTOCOL_VERSION.to_owned(),
                secret_fingerprint: self.ctx.tokens.fingerprint(),
                instance: self.ctx.instance.clone(),
            }),
        }
    }

    fn stats(&self) -> ShardStats {
        let t = self.state.totals();
        let m = &self.ctx.metrics;
        ShardStats {
            shard: self.ctx.shard,
            shards: self.ctx.shards,
            users: self.state.user_count(),
            subreddits: self.state.subreddit_count(),
            posts: t.posts,
            comments: t.comments,
            votes: t.votes,
            dms: t.dms,
            requests: m.total_requests(),
            errors: m.total_errors(),
            queue_depth: m.queue_depth.load(Ordering::Relaxed),
            queue_capacity: m.queue_capacity,
            pending_sync: m.pending_sync.load(Ordering::Relaxed),
            uptime_ms: u64::try_from(m.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            storage: if self.journal.is_some() {
                "jetstream"
            } else {
                "memory"
            }
            .to_owned(),
            wal_records: m.wal_records.load(Ordering::Relaxed),
            wal_entries: m.wal_entries.load(Ordering::Relaxed),
            wal_seq: m.wal_seq.load(Ordering::Relaxed),
            retries_answered: m.retries_answered.load(Ordering::Relaxed),
            replies_refused: m.replies_refused.load(Ordering::Relaxed),
            slow_consumer_events: m.slow_consumer_events.load(Ordering::Relaxed),
        }
    }

    fn feed(&mut self, who: &Username, r: FeedRequest) -> Result<Handled, WireError> {
        let joined = self.state.joined(who)?;
        let limit = r.limit.unwrap_or(DEFAULT_PAGE) as usize;
        let mut by_shard: BTreeMap<u32, Vec<SubredditName>> = BTreeMap::new();
        for name in joined {
            by_shard
                .entry(self.state.owner(name.key()))
                .or_default()
                .push(name);
        }
        let local = by_shard.remove(&self.ctx.shard).unwrap_or_default();
        let (posts, truncated) =
            self.state
                .feed_candidates(&local, r.sort, limit + 1, r.cursor.as_ref())?;
        let mut merge = FeedMerge::default();
        merge.add(posts, truncated);
        if by_shard.is_empty() {
            return merge.finish(limit).map(Handled::Reply);
        }
        let peers = self.ctx.peers.clone();
        Ok(Handled::Later(
            async move {
                let calls = by_shard.into_iter().map(|(shard, subreddits)| {
                    let req = FeedCandidatesRequest {
                        subreddits,
                        sort: r.sort,
                        limit: u32::try_from(limit + 1).unwrap_or(u32::MAX),
                        cursor: r.cursor.clone(),
                    };
                    let peers = peers.clone();
                    async move {
                        peers
                            .call::<_, FeedCandidates>(shard, Op::InternalFeedCandidates, &req)
                            .await
                    }
                });
                for result in futures::future::join_all(calls).await {
                    let page = result?;
                    merge.add(page.posts, page.truncated);
                }
                merge.finish(limit)
            }
            .boxed(),
        ))
    }

    fn send_dm(&mut self, dm: DmView, fx: &mut Effects) -> Result<Handled, WireError> {
        let dest = self.state.owner(&dm.to.to_ascii_lowercase());
        if dest == self.ctx.shard {
            let delivered = self.state.deliver_dm(dm, fx)?;
            return reply(&self.state.record_sent(delivered));
        }
        let peers = self.ctx.peers.clone();
        let cont = self.continuation()?;
        Ok(Handled::Later(
            async move {
                let delivered: DmView = peers
                    .call(dest, Op::InternalDmDeliver, &DeliverDm { dm })
                    .await?;
                cont.run(move |state, _| Ok(state.record_sent(delivered)))
                    .await
            }
            .boxed(),
        ))
    }
}

/// A handle for running a closure on the actor from a spawned task.
struct Continuation {
    jobs: mpsc::Sender<Job>,
    cache: Option<(String, u64)>,
}

impl Continuation {
    async fn run<T: Serialize + Send + 'static>(
        self,
        f: impl FnOnce(&mut ShardState, &mut Effects) -> Result<T, WireError> + Send + 'static,
    ) -> Result<Vec<u8>, WireError> {
        let (tx, rx) = oneshot::channel();
        let job = Job::Run(RunJob {
            f: Box::new(move |state, fx| f(state, fx).and_then(|v| encode(&v))),
            cache: self.cache,
            done: tx,
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| WireError::unavailable("the shard is shutting down"))?;
        rx.await
            .map_err(|_| WireError::internal("the shard dropped a continuation"))?
    }
}

fn original_missing(e: WireError, sub: &SubredditName) -> WireError {
    if e.code == ErrorCode::NotFound {
        WireError::not_found(format!(
            "the original post does not exist in r/{sub}: {}",
            e.message
        ))
    } else {
        e
    }
}

/// Feed candidates gathered from several shards, merged by key into one page.
#[derive(Default)]
struct FeedMerge {
    posts: Vec<FeedCandidate>,
    /// The highest last key among shards that stopped early (byte budget): below
    /// it, some of their posts are missing, so the page must stop there.
    floor: Option<(Rank, uuid::Uuid)>,
}

impl FeedMerge {
    fn add(&mut self, posts: Vec<FeedCandidate>, truncated: bool) {
        if truncated {
            if let Some(last) = posts.last() {
                let key = (Rank(last.rank), last.id.0);
                self.floor = Some(self.floor.map_or(key, |f| f.max(key)));
            }
        }
        self.posts.extend(posts);
    }

    /// The `PostPage` reply (`{posts: [...], next_cursor}`) around the winners'
    /// encoded views: at most `limit` posts and [`MAX_PAGE_BYTES`] of views, never
    /// past the floor; `next_cursor` whenever anything was left out.
    fn finish(self, limit: usize) -> Result<Vec<u8>, WireError> {
        let FeedMerge { mut posts, floor } = self;
        let key = |c: &FeedCandidate| (Rank(c.rank), c.id.0);
        posts.sort_unstable_by_key(|c| std::cmp::Reverse(key(c)));
        let mut more = floor.is_some();
        let mut bytes = 0;
        let mut fit = 0;
        for c in &posts {
            let below_floor = floor.is_some_and(|f| key(c) < f);
            if fit == limit || below_floor || (fit > 0 && bytes + c.view.len() > MAX_PAGE_BYTES) {
                more = true;
                break;
            }
            bytes += c.view.len();
            fit += 1;
        }
        posts.truncate(fit);
        let next_cursor = more
            .then(|| posts.last().map(|c| encode_cursor(&(Rank(c.rank), c.id))))
            .flatten();
        let mut out = Vec::with_capacity(bytes + 64);
        let io = |e: rmp::encode::ValueWriteError| {
            WireError::internal(format!("could not encode a feed page: {e}"))
        };
        rmp::encode::write_map_len(&mut out, 2).map_err(io)?;
        rmp::encode::write_str(&mut out, "posts").map_err(io)?;
        rmp::encode::write_array_len(&mut out, posts.len() as u32).map_err(io)?;
        for c in &posts {
            out.extend_from_slice(&c.view);
        }
        rmp::encode::write_str(&mut out, "next_cursor").map_err(io)?;
        match next_cursor {
            Some(c) => rmp::encode::write_str(&mut out, &c).map_err(io)?,
            None => {
                rmp::encode::write_nil(&mut out).map_err(|e| WireError::internal(e.to_string()))?
            }
        }
        Ok(out)
    }
}

/// Pulls every shard's audit records page by page and checks them together.
async fn run_audit(peers: Peers, shards: u32, max: usize) -> Result<AuditReport, WireError> {
    let mut records = Vec::new();
    let mut pending = 0;
    let audit = rand::random::<u64>();
    for shard in 0..shards {
        let mut offset = 0u64;
        loop {
            let page: AuditExport = peers
                .call(
                    shard,
                    Op::InternalAuditExport,
                    &AuditExportRequest {
                        audit,
                        offset,
                        limit: AUDIT_PAGE,
                    },
                )
                .await?;
            offset += page.records.len() as u64;
            pending += page.pending_sync;
            records.extend(page.records);
            if page.done {
                break;
            }
        }
    }
    Ok(audit::check(shards, records, pending, max))
}
