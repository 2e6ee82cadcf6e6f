//! The actor: the one task that owns a shard's state. It takes jobs in order,
//! checks reply subjects, idempotency keys and tokens, hands each request to its
//! handler ([`super::handlers`]), and carries out the outcome (sync items, pushes,
//! the reply) once the [`Journal`] says its writes are durable.

use super::feed_cache::FeedCache;
use super::journal::{Ack, Batching, Journal, LogStore};
use super::snapshots::{Follower, SnapshotIo, SnapshotPolicy, Snapshots};
use super::{reply_allowed, respond, Ctx, Job, RunJob};
use crate::auth::{Bearer, Challenges, VerifiedTokens};
use crate::cross_shard::SyncEnvelope;
use crate::replies::{payload_hash, Cached, Lookup, ReplyCache, ReplyKey};
use crate::state::{Effects, Event, PushTarget, ShardState};
use crate::wal::{Entry, WalError};
use async_nats::Message;
use futures::future::BoxFuture;
use futures::FutureExt;
use reddit_shared::auth::{parse_bearer, AUTH_HEADER};
use reddit_shared::codec::encode;
use reddit_shared::error::{ErrorCode, WireError};
use reddit_shared::ids::DmId;
use reddit_shared::names::Username;
use reddit_shared::protocol::admin::{LeaseStats, ShardStats, StandbyStats};
use reddit_shared::protocol::Op;
use reddit_shared::subject::{self, ReplyTo};
use reddit_shared::{now_millis, IDEMPOTENCY_HEADER, MAX_REQUEST_BYTES};
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// How a handler answers.
pub(super) enum Handled {
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
pub(super) enum Pending {
    Respond(Message, Result<Vec<u8>, WireError>),
    /// Work in a spawned task; the key is removed from `running` when it ends.
    Spawn(
        Message,
        BoxFuture<'static, Result<Vec<u8>, WireError>>,
        Option<ReplyKey>,
    ),
    Wake(
        oneshot::Sender<Result<Vec<u8>, WireError>>,
        Result<Vec<u8>, WireError>,
    ),
}

/// Everything a handled job sends out; held until the job's writes are durable.
pub(super) struct Outcome {
    fx: Effects,
    envelope: Option<SyncEnvelope>,
    reply: Option<Pending>,
    /// The sync items are a restart's resync: they go to the resync lane
    /// ([`Actor::resync_backlog`]), not ahead of live traffic.
    bulk: bool,
}

/// What the idempotency check decided.
enum Idem {
    /// No key (or not a client write): handle normally.
    None,
    /// Handle, and remember the reply under this key and payload hash.
    Key(ReplyKey, u64, uuid::Uuid),
    /// A retry: answer with this reply.
    Hit(Vec<u8>),
}

/// Sync items per log entry in a restart's resync: a few hundred KiB of
/// events at most, well under a record's [`crate::wal::MAX_RECORD_BYTES`].
const RESYNC_ENTRY_ITEMS: usize = 1_000;

/// Most items the resync backlog holds before an `internal.resync` is refused
/// (`503`, the asking shard retries): a restart's own resync of a shard of a
/// million-user system is about a million.
const MAX_RESYNC_BACKLOG: usize = 2_000_000;

/// A turn of the actor's loop (one job, or one append's outcomes carried
/// out) that takes this long is logged: every request of the shard waited.
const SLOW_TURN: std::time::Duration = std::time::Duration::from_millis(50);

/// What woke the actor.
enum Turn {
    /// An append finished.
    Appended(Ack),
    /// A job arrived.
    Job(Job),
    /// A linger ended or an outbox has room: the turn's end does the work.
    Other,
    /// Time to look for DMs left unconfirmed ([`Actor::with_dm_recheck`]).
    DmRecheck,
}

/// What a turn did, for the slow-turn log line.
enum TurnKind {
    /// Carried out the outcomes of a finished append.
    Appended,
    /// Handled a request to this subject.
    Request(async_nats::Subject),
    /// Ran a continuation of this operation.
    Continuation(Option<Op>),
    /// Forgot a finished write's key.
    Finished,
    /// Started an append or fed an outbox.
    Other,
    /// Looked for DMs left unconfirmed.
    DmRecheck,
}

impl std::fmt::Display for TurnKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Appended => f.write_str("append outcomes"),
            Self::Request(subject) => write!(f, "request {subject}"),
            Self::Continuation(Some(op)) => write!(f, "continuation of {}", op.as_str()),
            Self::Continuation(None) => f.write_str("continuation"),
            Self::Finished => f.write_str("finished write"),
            Self::Other => f.write_str("append start or outbox"),
            Self::DmRecheck => f.write_str("recheck of unconfirmed DMs"),
        }
    }
}

impl TurnKind {
    fn of(job: &Job) -> Self {
        match job {
            Job::Request(m) => Self::Request(m.subject.clone()),
            Job::Run(run) => Self::Continuation(run.op()),
            Job::Finished(_) => Self::Finished,
        }
    }
}

/// An append that takes this long is logged: at most a few milliseconds is
/// usual, so one this slow is a stall worth lining up with the shard's other
/// log lines.
const SLOW_APPEND: std::time::Duration = std::time::Duration::from_millis(100);

/// Longest wait between two `internal.resync` requests to a shard that did
/// not answer.
pub(super) const RESYNC_ASK_MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(5);

/// The actor: owns the state and handles jobs in order until every sender is gone.
pub struct Actor {
    pub(super) state: ShardState,
    pub(super) challenges: Challenges,
    pub(super) verified: VerifiedTokens,
    /// What the token of the request being handled says, once checked: a
    /// write looks at it twice (its idempotency key is per user, then its
    /// handler), and this spares the second lookup. Reset for every request.
    checked_bearer: Option<Arc<Bearer>>,
    /// How far the audit in progress (one at a time, by audit id) has
    /// walked this shard's facts.
    pub(super) audit_cache: Option<(u64, crate::state::audit::AuditCursor)>,
    pub(super) ctx: Ctx,
    pub(super) jobs: mpsc::WeakSender<Job>,
    pub(super) replies: ReplyCache,
    /// The log (or none, with memory storage) and the outcomes held for it.
    pub(super) journal: Journal<Outcome>,
    /// The snapshot follower (durable mode).
    snapshots: Option<Snapshots>,
    /// Where the follower stores snapshots from, once [`Actor::with_log`]
    /// starts it (set by [`Actor::with_snapshot_io`]).
    snapshot_io: Option<SnapshotIo>,
    /// Reads wait until every write before them is durable (set by
    /// [`Actor::with_read_barrier`]).
    read_barrier: bool,
    /// The idempotency key of the request being dispatched (for continuations).
    pub(super) current: Option<(ReplyKey, u64, uuid::Uuid)>,
    /// The operation being dispatched: its continuations' log entries count
    /// as its own in `shard.stats`.
    pub(super) current_op: Option<Op>,
    /// Keys of writes whose work runs in spawned tasks: a retry meanwhile is told
    /// to come back, not handled twice.
    pub(super) running: std::collections::HashSet<ReplyKey>,
    /// Sync items the outbox had no room for, in order: fed to it as it drains
    /// (a restart's resync of a large state is far more than the outbox holds).
    /// Never more than what one resync produces: writes that would add to it
    /// are refused while the outbox is full ([`Actor::need_sync_room`]).
    sync_backlog: std::collections::VecDeque<SyncEnvelope>,
    /// A restart's resync, waiting for room in its own outbox
    /// ([`Ctx::resync_tx`]): it never takes room from live writes (refused
    /// when their outbox is full), and their items (a join waits for its own)
    /// never queue behind hundreds of thousands of resync items. Items carry
    /// versions, so the two lanes may overtake each other.
    resync_backlog: std::collections::VecDeque<SyncEnvelope>,
    /// Set once every other shard was asked what this shard's predecessor
    /// may have lost ([`Actor::ask_for_resync`]; at once without a log):
    /// from then on `internal.sync` is answered before it is durable.
    early_sync_acks: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// [`Actor::early_sync_acks`] as read for the request being handled.
    pub(super) acks_early: bool,
    /// The last record the previous owner of the shard wrote (set by
    /// [`Actor::with_predecessor_end`]; else the log's last at start).
    predecessor_end: Option<u64>,
    /// The first record this process writes (the one after
    /// `predecessor_end`), told with early acknowledgements of DMs so that
    /// their senders tell this process's records from an earlier one's
    /// (0: no log).
    pub(super) fence: u64,
    /// Other shards' feed candidates, kept for a moment (off unless
    /// [`Actor::with_feed_cache`]).
    pub(super) feed_cache: FeedCache,
    /// How long a DM another shard acknowledged before it was durable may
    /// stay unconfirmed before it is delivered again (zero: only at
    /// restarts; [`Actor::with_dm_recheck`]).
    dm_recheck: std::time::Duration,
    /// When the next recheck is due (none: no log, or rechecks are off).
    next_dm_recheck: Option<tokio::time::Instant>,
    /// The unconfirmed DMs the last recheck saw, per recipient shard.
    pub(super) dms_at_recheck: std::collections::HashMap<u32, std::collections::HashSet<DmId>>,
    /// Deliveries again in progress, per recipient shard: alive while their
    /// task is, so that a shard gets one at a time.
    pub(super) redeliveries: std::collections::HashMap<u32, std::sync::Weak<()>>,
    /// Whether a slow turn's log line gives its thread CPU time
    /// ([`Actor::with_turn_cpu`]).
    turn_cpu: bool,
}

impl Actor {
    /// An actor for `state`; `jobs` is its own queue (held weakly, so the actor ends
    /// when the reader and all spawned tasks are done).
    pub fn new(state: ShardState, ctx: Ctx, jobs: mpsc::WeakSender<Job>) -> Self {
        let mut state = state;
        state.set_recording(true);
        let feed_cache = FeedCache::new(std::time::Duration::ZERO, ctx.peer_timeout * 2);
        Self {
            state,
            challenges: Challenges::new(&ctx.tokens),
            verified: VerifiedTokens::default(),
            checked_bearer: None,
            audit_cache: None,
            ctx,
            jobs,
            replies: ReplyCache::new(crate::replies::DEFAULT_CAPACITY),
            journal: Journal::memory(),
            snapshots: None,
            snapshot_io: None,
            read_barrier: false,
            current: None,
            current_op: None,
            running: std::collections::HashSet::new(),
            sync_backlog: std::collections::VecDeque::new(),
            resync_backlog: std::collections::VecDeque::new(),
            early_sync_acks: Default::default(),
            acks_early: false,
            predecessor_end: None,
            fence: 0,
            feed_cache,
            dm_recheck: std::time::Duration::ZERO,
            next_dm_recheck: None,
            dms_at_recheck: std::collections::HashMap::new(),
            redeliveries: std::collections::HashMap::new(),
            turn_cpu: false,
        }
    }

    /// With `on`, the log line of a slow turn also gives the CPU time the
    /// actor's thread spent in it, read before and after every turn (two
    /// system calls per turn: a diagnosis, off by default). Exact on a
    /// runtime of one thread; on more, a turn can move between threads.
    pub fn with_turn_cpu(mut self, on: bool) -> Self {
        self.turn_cpu = on;
        self
    }

    /// Delivers again a DM that another shard acknowledged before its record
    /// was durable and that has stayed unconfirmed for `every` to `2 ×
    /// every` (zero: only when either shard restarts). Its answer, from a
    /// shard with nothing left to append, confirms it. A later delivery to
    /// that shard confirms it as well, so under load this does nothing; on a
    /// quiet system no later delivery comes, and without it the last DMs
    /// would stay kept, and be delivered again at every restart.
    pub fn with_dm_recheck(mut self, every: std::time::Duration) -> Self {
        self.dm_recheck = every;
        self
    }

    /// Keeps other shards' feed candidates for `ttl` (zero: not at all):
    /// feeds then ask other shards only for lists not fetched within it.
    pub fn with_feed_cache(mut self, ttl: std::time::Duration) -> Self {
        self.feed_cache = FeedCache::new(ttl, self.ctx.peer_timeout * 2);
        self
    }

    /// Uses `replies` (restored by recovery) as the reply cache.
    pub fn with_replies(mut self, replies: ReplyCache) -> Self {
        self.replies = replies;
        self
    }

    /// Has the snapshot follower that [`Actor::with_log`] starts store its
    /// snapshots through `io` (a thread and connection of their own) instead of
    /// from the shard's runtime. Call it before `with_log`.
    pub fn with_snapshot_io(mut self, io: SnapshotIo) -> Self {
        self.snapshot_io = Some(io);
        self
    }

    /// With `on`, a read is answered only once every write the shard handled
    /// before it is durable, like a write: no reply ever shows a write that a
    /// crash could still lose. Without, reads are answered at once (durable
    /// mode; in memory mode nothing waits either way).
    pub fn with_read_barrier(mut self, on: bool) -> Self {
        self.read_barrier = on;
        self
    }

    /// Makes every write durable in `store` (after record `last_seq`) before it
    /// is answered, with up to `pipeline` appends in flight. A follower with a
    /// copy of the state (and of the reply cache: call
    /// [`Actor::with_replies`] first) stores a snapshot every `snapshot_every`
    /// events and at shutdown (0: only at shutdown); `replayed` events came
    /// after the last snapshot already.
    pub fn with_log(
        mut self,
        store: std::sync::Arc<dyn LogStore>,
        last_seq: u64,
        replayed: u64,
        snapshots: SnapshotPolicy,
        batching: Batching,
    ) -> Self {
        let follower = Follower::new(&self.state, &self.replies, last_seq, replayed);
        self.snapshots = Some(Snapshots::start(
            follower,
            store.clone(),
            self.snapshot_io.take(),
            snapshots,
            self.ctx.metrics.clone(),
        ));
        self.journal = Journal::durable(store, last_seq, batching.depth)
            .with_linger(batching.linger)
            .with_unwaited_linger(batching.unwaited_linger);
        self
    }

    /// Says which record was the previous owner's last: the one before this
    /// process's fence (an empty record it appends before serving, so the
    /// fence takes the sequence the previous owner's next record would have
    /// had). The previous owner's acknowledgements for later records are
    /// what it may have lost ([`Actor::ask_for_resync`]).
    pub fn with_predecessor_end(mut self, seq: u64) -> Self {
        self.predecessor_end = Some(seq);
        self
    }

    /// Handles jobs until the queue closes, then makes everything durable and, with
    /// a log, stores a snapshot. Fails only if the log refuses this process (another
    /// writer) or breaks for good.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Job>) -> Result<(), WalError> {
        if self.journal.is_logged() {
            let recovered = self.predecessor_end.unwrap_or(self.journal.last_seq());
            self.fence = recovered + 1;
            self.resync_at_start().await?;
            self.ask_for_resync(recovered);
            self.redeliver_at_start();
            if !self.dm_recheck.is_zero() {
                self.next_dm_recheck = Some(tokio::time::Instant::now() + self.dm_recheck);
            }
        } else {
            self.early_sync_acks.store(true, Ordering::Relaxed);
        }
        loop {
            let can_take = self.journal.can_take();
            let linger = self.journal.linger_deadline();
            let outbox = (!self.sync_backlog.is_empty()).then(|| self.ctx.sync_tx.clone());
            let resync_outbox =
                (!self.resync_backlog.is_empty()).then(|| self.ctx.resync_tx.clone());
            let dm_recheck = self.next_dm_recheck;
            let turn = tokio::select! {
                biased;
                ack = self.journal.next_ack() => Turn::Appended(ack?),
                () = sleep_until(linger), if linger.is_some() => Turn::Other,
                () = sleep_until(dm_recheck), if dm_recheck.is_some() => Turn::DmRecheck,
                // An outbox has room again: the turn's end feeds it.
                () = room_in(outbox) => Turn::Other,
                () = room_in(resync_outbox) => Turn::Other,
                job = rx.recv(), if can_take => match job {
                    Some(job) => Turn::Job(job),
                    None => break,
                },
            };
            let began = std::time::Instant::now();
            let cpu_began = if self.turn_cpu {
                crate::memory::thread_cpu_time()
            } else {
                None
            };
            let what = match turn {
                Turn::Appended(ack) => {
                    self.appended(ack).await;
                    TurnKind::Appended
                }
                Turn::Job(job) => {
                    let what = TurnKind::of(&job);
                    self.job(job).await;
                    what
                }
                Turn::Other => TurnKind::Other,
                Turn::DmRecheck => {
                    self.recheck_dms();
                    self.next_dm_recheck = Some(tokio::time::Instant::now() + self.dm_recheck);
                    TurnKind::DmRecheck
                }
            };
            self.kick();
            self.feed_outbox();
            let took = began.elapsed();
            let cpu =
                cpu_began.and_then(|b| Some(crate::memory::thread_cpu_time()?.saturating_sub(b)));
            if took >= SLOW_TURN {
                // Every request of the shard waited meanwhile.
                let took_ms = took.as_millis() as u64;
                match cpu {
                    Some(cpu) => {
                        let cpu_ms = cpu.as_millis() as u64;
                        tracing::info!(%what, took_ms, cpu_ms, "slow actor turn");
                    }
                    None => tracing::info!(%what, took_ms, "slow actor turn"),
                }
            }
        }
        // Drain: append what is open, wait for it, answer everything held.
        while self.journal.busy() {
            let entries = self.journal.flush();
            self.count_entries(entries);
            let ack = self.journal.next_ack().await?;
            self.appended(ack).await;
        }
        self.release().await;
        // What the outboxes could not take yet goes before the senders close
        // (the syncers take items as fast as they can hold them).
        for (backlog, outbox) in [
            (&mut self.sync_backlog, &self.ctx.sync_tx),
            (&mut self.resync_backlog, &self.ctx.resync_tx),
        ] {
            while let Some(env) = backlog.pop_front() {
                if outbox.send(env).await.is_err() {
                    tracing::warn!(
                        items = backlog.len() + 1,
                        "the outbox is closed; sync items are dropped at shutdown"
                    );
                    backlog.clear();
                }
            }
        }
        match self.snapshots.take() {
            Some(snapshots) => snapshots.finish().await,
            None => Ok(()),
        }
    }

    /// A restart lost whatever the outbox still owed: sends it all again
    /// (applying what is for users owned here). In entries of
    /// [`RESYNC_ENTRY_ITEMS`] items, each record appended before the next
    /// would overfill it: as one entry, a shard of 250,000 users logged a
    /// 25 MiB record, over NATS's payload limit, and could not restart.
    async fn resync_at_start(&mut self) -> Result<(), WalError> {
        let items = self.state.resync_items();
        tracing::info!(
            shard = self.ctx.shard,
            items = items.len(),
            "resync: repeating every membership and karma total held here (in the background)"
        );
        let mut items = items.into_iter();
        loop {
            let part: Vec<_> = items.by_ref().take(RESYNC_ENTRY_ITEMS).collect();
            if part.is_empty() {
                break;
            }
            let mut fx = Effects::default();
            self.state.resync(part, &mut fx);
            self.commit_as(None, None, fx, None, true).await;
            while !self.journal.can_take() {
                let entries = self.journal.flush();
                self.count_entries(entries);
                let ack = self.journal.next_ack().await?;
                self.appended(ack).await;
            }
        }
        self.kick();
        Ok(())
    }

    /// Asks every other shard, in a task of its own, to send again what the
    /// process before this one acknowledged for records after `recovered`
    /// (the last one in the log) and may have lost (`internal.resync`). Each
    /// shard is asked until it answers, or until it is found not running (it
    /// then sends everything when it starts). Until all are done this shard
    /// answers `internal.sync` only once durable, as its predecessor's items
    /// are still kept for it only as long as it says nothing of its own
    /// records. Counted in `pending_sync` meanwhile, so an audit waits.
    fn ask_for_resync(&self, recovered: u64) {
        let me = self.ctx.shard;
        let early = self.early_sync_acks.clone();
        let others: Vec<u32> = (0..self.ctx.shards).filter(|&s| s != me).collect();
        if others.is_empty() {
            self.early_sync_acks.store(true, Ordering::Relaxed);
            return;
        }
        let pending = self.ctx.metrics.pending_sync.clone();
        pending.fetch_add(others.len() as u64, Ordering::Relaxed);
        let asks = others.into_iter().map(|peer| {
            let peers = self.ctx.peers.clone();
            let alive = self.jobs.clone();
            let pending = pending.clone();
            async move {
                let mut backoff = std::time::Duration::from_millis(100);
                loop {
                    let req = reddit_shared::protocol::internal::ResyncRequest {
                        shard: me,
                        after: Some(recovered),
                    };
                    match peers.call(peer, &req).await {
                        Ok(ack) => {
                            tracing::info!(
                                shard = me,
                                peer,
                                items = ack.items,
                                all = ack.all,
                                dms = ack.dms,
                                "resync: a shard sends again what this shard may have lost"
                            );
                            break;
                        }
                        Err(e) if reddit_shared::connect::is_no_responders(&e) => {
                            tracing::info!(
                                shard = me,
                                peer,
                                "resync: the shard is not running; it sends everything when it starts"
                            );
                            break;
                        }
                        Err(e) => {
                            if alive.upgrade().is_none() {
                                break;
                            }
                            tracing::warn!(shard = me, peer, error = %e, "resync: asking again");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(RESYNC_ASK_MAX_BACKOFF);
                        }
                    }
                }
                pending.fetch_sub(1, Ordering::Relaxed);
            }
        });
        let asks = futures::future::join_all(asks);
        tokio::spawn(async move {
            asks.await;
            early.store(true, Ordering::Relaxed);
        });
    }

    /// Queues, in the resync lane, what shard `dest`, started again with its
    /// log ending at record `after`, may have lost: the items it acknowledged
    /// for later records, or, without `after` or when they were too many to
    /// keep, every membership and karma total held here for its users
    /// (`internal.resync`). Answers how many, and whether that was all.
    pub(super) fn queue_resync_for(
        &mut self,
        dest: u32,
        after: Option<u64>,
    ) -> Result<(u64, bool), WireError> {
        if dest >= self.ctx.shards || dest == self.ctx.shard {
            return Err(WireError::invalid(format!(
                "shard {dest} cannot ask shard {} of {} for a resync",
                self.ctx.shard, self.ctx.shards
            )));
        }
        if self.resync_backlog.len() >= MAX_RESYNC_BACKLOG {
            return Err(WireError::unavailable(format!(
                "shard {} has {} resync items waiting already; retry later",
                self.ctx.shard,
                self.resync_backlog.len()
            )));
        }
        let lost = after.and_then(|after| self.ctx.unlogged.lost_by(dest, after));
        let all = lost.is_none();
        let items = lost.unwrap_or_else(|| self.state.resync_items_for(dest));
        let n = items.len() as u64;
        self.resync_backlog
            .extend(items.into_iter().map(|item| SyncEnvelope {
                dest,
                item,
                waiter: None,
            }));
        Ok((n, all))
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
            Job::Run(RunJob { f, cache, op, done }) => {
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
                self.commit(op, cached, fx, Some(Pending::Wake(done, result)))
                    .await;
            }
        }
    }

    /// Starts an append of the open record if the journal will.
    fn kick(&mut self) {
        let entries = self.journal.kick();
        self.count_entries(entries);
    }

    fn count_entries(&mut self, entries: u64) {
        if entries > 0 {
            self.ctx
                .metrics
                .wal_entries
                .fetch_add(entries, Ordering::Relaxed);
        }
    }

    /// An append finished: entries up to `ack.upto` are durable as record
    /// `ack.seq`, which goes on to the snapshot follower.
    async fn appended(&mut self, ack: Ack) {
        let Ack {
            upto,
            seq,
            record,
            took,
        } = ack;
        self.ctx.metrics.wal_records.fetch_add(1, Ordering::Relaxed);
        self.ctx
            .metrics
            .wal_bytes
            .fetch_add(record.len() as u64, Ordering::Relaxed);
        self.ctx.metrics.wal_append_us.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if took >= SLOW_APPEND {
            // Rare enough to log each: it lines a stall up with what else the
            // shard logged then (a snapshot's store, a segment deleted).
            tracing::info!(
                seq,
                bytes = record.len(),
                append_ms = took.as_millis() as u64,
                "slow log append"
            );
        }
        self.ctx.metrics.wal_seq.store(seq, Ordering::Relaxed);
        self.ctx
            .metrics
            .wal_resent
            .store(self.journal.resent(), Ordering::Relaxed);
        self.journal.appended(upto, seq);
        self.release().await;
        if let Some(snapshots) = &mut self.snapshots {
            snapshots.confirmed(seq, record).await;
        }
    }

    /// Carries out the held outcomes whose entries are durable.
    async fn release(&mut self) {
        while let Some(outcome) = self.journal.pop_ready() {
            self.carry_out(outcome).await;
        }
    }

    /// Logs the events the state recorded since the last call (with `cached`, the
    /// reply to remember, if they are not empty) as written by `op`, then sends
    /// `fx` and `reply` once they are durable.
    async fn commit(
        &mut self,
        op: Option<Op>,
        cached: Option<Cached>,
        fx: Effects,
        reply: Option<Pending>,
    ) {
        self.commit_as(op, cached, fx, reply, false).await;
    }

    /// [`commit`](Self::commit); with `bulk`, the sync items are a restart's
    /// resync and take the resync lane.
    async fn commit_as(
        &mut self,
        op: Option<Op>,
        cached: Option<Cached>,
        fx: Effects,
        reply: Option<Pending>,
        bulk: bool,
    ) {
        let events = self.state.take_events();
        self.record(op, events, cached);
        let tag = self.journal.last_tag();
        self.finish(
            tag,
            Outcome {
                fx,
                envelope: None,
                reply,
                bulk,
            },
        )
        .await;
    }

    /// Appends a write's events (and the reply to remember) to the open record,
    /// counted as written by `op` (`None`: a restart's resync).
    fn record(&mut self, op: Option<Op>, events: Vec<Event>, cached: Option<Cached>) {
        if events.is_empty() {
            return;
        }
        if !self.journal.is_logged() {
            if let Some(c) = cached {
                self.replies.insert(c);
            }
            return;
        }
        if let Some(c) = &cached {
            self.replies.insert(c.clone());
        }
        self.journal.record(&Entry {
            reply: cached,
            events,
        });
        self.ctx.metrics.logged(op, self.journal.last_entry_bytes());
    }

    /// Sends `outcome` now if its entries (up to `tag`) are durable, else holds it.
    async fn finish(&mut self, tag: u64, outcome: Outcome) {
        if let Some(outcome) = self.journal.hold(tag, outcome) {
            self.carry_out(outcome).await;
        }
    }

    /// Checks the request's idempotency key: a retry of a remembered write is
    /// answered from the cache.
    fn idempotency(&mut self, op: Op, request: &Message, now: i64) -> Result<Idem, WireError> {
        let Some(value) = request
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
        let key = if op == Op::UserRegister {
            ReplyKey::new(op.as_str(), "", id)
        } else {
            let bearer = self.bearer(request, now)?;
            ReplyKey::new(op.as_str(), bearer.user.key(), id)
        };
        let hash = payload_hash(&request.payload);
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

    async fn handle(&mut self, request: Message) {
        let op = subject::op_of(&request.subject, self.ctx.shard).and_then(Op::parse);
        self.ctx.metrics.count(op);
        if !reply_allowed(&self.ctx.metrics, &request) {
            // Not handled at all: a write nobody may be told about is not applied.
            return;
        }
        let mut fx = Effects::default();
        let now = now_millis();
        self.acks_early = self.early_sync_acks.load(Ordering::Relaxed);
        self.current = None;
        self.current_op = op;
        self.checked_bearer = None;
        let result = match op {
            None => Err(WireError::new(
                ErrorCode::UnknownOperation,
                format!(
                    "{:?} names no operation of this engine",
                    request.subject.as_str()
                ),
            )),
            Some(_) if request.payload.len() > MAX_REQUEST_BYTES => Err(WireError::new(
                ErrorCode::TooLarge,
                format!(
                    "the payload is {} bytes; at most {MAX_REQUEST_BYTES} are accepted",
                    request.payload.len()
                ),
            )),
            // Not sure the lease is still this process's: another may serve
            // the shard by now, so no data is answered, not even a read (the
            // counters and the handshake hold none, and say why it waits).
            Some(op)
                if !matches!(op, Op::ShardStats | Op::InternalHello)
                    && self.ctx.tenure.as_ref().is_some_and(|t| !t.holds()) =>
            {
                Err(WireError::unavailable(format!(
                    "shard {} cannot confirm that it still owns the shard (its lease was last renewed {} ms ago; is it cut off from NATS?); retry",
                    self.ctx.shard,
                    self.ctx.tenure.as_ref().map_or(0, |t| t.renewed_ms_ago())
                )))
            }
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
                    key: *key,
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
                self.running.insert(key);
                Some(key)
            }
            _ => None,
        };
        // A write that goes on in a spawned task and logged nothing yet (a DM
        // on its way to another shard, a repost fetching its original) starts
        // that task at once: what it will log comes from its continuation,
        // whose reply waits for everything logged before it.
        let spawns_quietly = events.is_empty() && matches!(result, Ok(Handled::Later(_)));
        self.record(op, events, cached);
        // `internal.sync` is acknowledged once applied (saying which record
        // will hold it): the items' durable copy is the subreddit's shard's,
        // which keeps them until that record is durable here, and a restart
        // here asks for them again ([`Actor::ask_for_resync`]). A join waits for that
        // acknowledgement, so it waits for one append (its subreddit's shard's),
        // not two in turn.
        // A DM's delivery likewise: its sender's shard keeps its id until
        // told its record is durable here ([`crate::state::Deliveries`]).
        let durable_first = op.is_some_and(|op| {
            op.is_write()
                && !(matches!(op, Op::InternalSync | Op::InternalDmDeliver) && self.acks_early)
        });
        let tag = if self.read_barrier || (durable_first && !spawns_quietly) {
            self.journal.last_tag()
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
                bulk: false,
            },
        )
        .await;
    }

    /// Sends what a handled job produced: sync items, pushes, then the reply.
    async fn carry_out(&mut self, outcome: Outcome) {
        let Outcome {
            mut fx,
            envelope,
            reply,
            bulk,
        } = outcome;
        if let Some(env) = envelope {
            self.queue_sync(env);
        }
        if bulk {
            let items = std::mem::take(&mut fx.sync);
            self.resync_backlog
                .extend(items.into_iter().map(|(dest, item)| SyncEnvelope {
                    dest,
                    item,
                    waiter: None,
                }));
            self.feed_outbox();
        }
        self.send_effects(fx).await;
        match reply {
            None => {}
            Some(Pending::Respond(request, result)) => {
                respond(self.ctx.bus.as_ref(), &self.ctx.metrics, &request, result).await
            }
            Some(Pending::Wake(tx, result)) => {
                let _ = tx.send(result);
            }
            Some(Pending::Spawn(request, work, running)) => {
                match self.ctx.permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let metrics = self.ctx.metrics.clone();
                        let bus = self.ctx.bus.clone();
                        let jobs = self.jobs.clone();
                        tokio::spawn(async move {
                            let result = work.await;
                            if let (Some(key), Some(jobs)) = (running, jobs.upgrade()) {
                                let _ = jobs.send(Job::Finished(key)).await;
                            }
                            respond(bus.as_ref(), &metrics, &request, result).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        if let Some(key) = running {
                            self.running.remove(&key);
                        }
                        respond(
                            self.ctx.bus.as_ref(),
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
            self.queue_sync(SyncEnvelope {
                dest,
                item,
                waiter: None,
            });
        }
        for (target, event) in fx.push {
            let subject = match &target {
                PushTarget::User(key) => subject::user_events(key),
                PushTarget::Subreddit(key) => subject::subreddit_events(key),
            };
            match encode(&event) {
                Ok(body) => {
                    self.ctx
                        .bus
                        .publish(subject.into(), None, body.into())
                        .await
                }
                Err(e) => tracing::error!(error = %e, "could not encode a push event"),
            }
        }
    }

    pub(super) fn caller(&mut self, request: &Message, now: i64) -> Result<Username, WireError> {
        self.bearer(request, now).map(|b| b.user.clone())
    }

    /// What the request's token says (the user and their registered key), after
    /// the same checks as [`caller`](Self::caller).
    pub(super) fn bearer(&mut self, request: &Message, now: i64) -> Result<Arc<Bearer>, WireError> {
        if let Some(bearer) = &self.checked_bearer {
            return Ok(bearer.clone());
        }
        let value = request
            .headers
            .as_ref()
            .and_then(|h| h.get(AUTH_HEADER))
            .map(|v| v.as_str())
            .ok_or_else(|| {
                WireError::unauthenticated(
                    "this operation needs the header `Authorization: Bearer <token>`; log in with auth.challenge and auth.login",
                )
            })?;
        let token = parse_bearer(value).ok_or_else(|| {
            WireError::unauthenticated("the Authorization header must be `Bearer <token>`")
        })?;
        let bearer = self.verified.verify(&self.ctx.tokens, token, now)?;
        let user = &bearer.user;
        // What a request does as a user is answered only where that user (or a
        // trusted role) reads: never to the anonymous inbox or another user's.
        let reply = request.reply.as_ref().map(|r| r.as_str());
        match reply.and_then(ReplyTo::classify) {
            Some(ReplyTo::User(k)) if k == user.key() => {}
            Some(ReplyTo::Service | ReplyTo::Engine) => {}
            _ => return Err(WireError::forbidden(format!(
                "a request acting as {user} must take its reply in {}.> (that user's own connection) or a service inbox",
                subject::user_inbox_prefix(user.key())
            ))),
        }
        self.checked_bearer = Some(bearer.clone());
        Ok(bearer)
    }

    /// Hands `env` to the outbox, or, if it is full (or items wait before this
    /// one), to the backlog that feeds it in order.
    fn queue_sync(&mut self, env: SyncEnvelope) {
        if !self.sync_backlog.is_empty() {
            self.sync_backlog.push_back(env);
            return;
        }
        match self.ctx.sync_tx.try_send(env) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(env)) => self.sync_backlog.push_back(env),
            Err(mpsc::error::TrySendError::Closed(env)) => {
                tracing::error!(
                    dest = env.dest,
                    "the outbox is closed; a sync item is dropped"
                );
            }
        }
    }

    /// Moves each backlog's items into its outbox while it has room, in order.
    fn feed_outbox(&mut self) {
        for (backlog, outbox) in [
            (&mut self.sync_backlog, &self.ctx.sync_tx),
            (&mut self.resync_backlog, &self.ctx.resync_tx),
        ] {
            while let Some(env) = backlog.pop_front() {
                match outbox.try_send(env) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(env)) => {
                        backlog.push_front(env);
                        break;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        tracing::error!(
                            items = backlog.len() + 1,
                            "the outbox is closed; sync items are dropped"
                        );
                        backlog.clear();
                    }
                }
            }
        }
    }

    /// Sync items waiting for room in the outbox (live and resync).
    pub(super) fn sync_backlog(&self) -> usize {
        self.sync_backlog.len() + self.resync_backlog.len()
    }

    /// Refuses writes that would produce sync items when the outbox is full.
    pub(super) fn need_sync_room(&self) -> Result<(), WireError> {
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
    pub(super) fn continuation(&self) -> Result<Continuation, WireError> {
        let cache = self.current.as_ref().map(|(k, h, _)| (*k, *h));
        let op = self.current_op;
        self.jobs
            .upgrade()
            .map(|jobs| Continuation { jobs, cache, op })
            .ok_or_else(|| WireError::unavailable("the shard is shutting down"))
    }

    /// The id of a DM being sent, the same for every retry of one keyed write
    /// so that the recipient's shard stores the message once. A UUID v7 key is
    /// itself the id; a key of another UUID version gets an id minted once per
    /// (operation, caller, key) and recorded in the log. Without a key, a fresh
    /// id.
    pub(super) fn dm_id(&mut self) -> DmId {
        match &self.current {
            // A UUID v7 key is the id itself: every retry derives the same id,
            // so there is nothing to log (older versions logged it anyway, as
            // the same id).
            Some((_, _, id)) if id.get_version_num() == 7 => DmId(*id),
            Some((key, _, _)) => {
                // The reply key's bytes: the SHA-256 of the key's text, as
                // ids minted by older versions were keyed.
                self.state.mint_dm_id(key.bytes(), DmId::new())
            }
            None => DmId::new(),
        }
    }

    /// This shard's counters and totals (`shard.stats`).
    pub(super) fn stats(&self) -> ShardStats {
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
            pending_sync: m.pending_sync.load(Ordering::Relaxed) + self.sync_backlog() as u64,
            unlogged_sync: self.ctx.unlogged.len() as u64,
            unconfirmed_dms: self.state.unconfirmed_dm_count(),
            feed_cache_hits: self.feed_cache.hits(),
            feed_cache_fills: self.feed_cache.fills(),
            uptime_ms: u64::try_from(m.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            storage: if self.journal.is_logged() {
                "jetstream"
            } else {
                "memory"
            }
            .to_owned(),
            wal_records: m.wal_records.load(Ordering::Relaxed),
            wal_append_us: m.wal_append_us.load(Ordering::Relaxed),
            wal_entries: m.wal_entries.load(Ordering::Relaxed),
            wal_bytes: m.wal_bytes.load(Ordering::Relaxed),
            wal_seq: m.wal_seq.load(Ordering::Relaxed),
            wal_resent: m.wal_resent.load(Ordering::Relaxed),
            snapshots: m.snapshots.load(Ordering::Relaxed),
            snapshot_seq: m.snapshot_seq.load(Ordering::Relaxed),
            retries_answered: m.retries_answered.load(Ordering::Relaxed),
            replies_refused: m.replies_refused.load(Ordering::Relaxed),
            slow_consumer_events: m.slow_consumer_events.load(Ordering::Relaxed),
            standbys: self
                .ctx
                .tenure
                .as_ref()
                .map_or(0, |t| t.standbys().len() as u64),
            lease: self.ctx.tenure.as_ref().map(|t| {
                let wal_seq = m.wal_seq.load(Ordering::Relaxed);
                LeaseStats {
                    instance: t.holder().instance.clone(),
                    ttl_ms: u64::try_from(t.ttl().as_millis()).unwrap_or(u64::MAX),
                    renewed_ms_ago: t.renewed_ms_ago(),
                    serving: t.holds(),
                    standbys: t
                        .standbys()
                        .into_iter()
                        .map(|h| StandbyStats {
                            lag: wal_seq.saturating_sub(h.seq),
                            instance: h.instance,
                            pid: h.pid,
                            host: h.host,
                            seq: h.seq,
                        })
                        .collect(),
                }
            }),
            wal_by_op: m.log_by_op(),
        }
    }
}

/// A handle for running a closure on the actor from a spawned task.
pub(super) struct Continuation {
    jobs: mpsc::Sender<Job>,
    cache: Option<(ReplyKey, u64)>,
    /// The operation it continues (what its log entry counts as).
    op: Option<Op>,
}

impl Continuation {
    pub(super) async fn run<T: Serialize + Send + 'static>(
        self,
        f: impl FnOnce(&mut ShardState, &mut Effects) -> Result<T, WireError> + Send + 'static,
    ) -> Result<Vec<u8>, WireError> {
        let (tx, rx) = oneshot::channel();
        let job = Job::Run(RunJob {
            f: Box::new(move |state, fx| f(state, fx).and_then(|v| encode(&v))),
            cache: self.cache,
            op: self.op,
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

/// Waits until `at`, or forever without one.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Waits until `outbox` has room for an item, or forever without one.
async fn room_in<T>(outbox: Option<mpsc::Sender<T>>) {
    match outbox {
        Some(tx) => {
            let _ = tx.reserve_owned().await;
        }
        None => std::future::pending().await,
    }
}
