//! Engine-to-engine traffic: typed requests to other shards ([`Peers::call`]) and
//! the sync outbox ([`run_syncer`]) that carries memberships and karma totals to the
//! users' shards.
//!
//! The outbox coalesces: it keeps only the newest version of each (user, subreddit)
//! item, sends the items for one destination shard in rounds of batched
//! `internal.sync` requests, and retries failed rounds with backoff until the
//! destination acknowledges. Items carry versions, so a repeat or a reordering is
//! harmless at the receiver: the live syncer keeps several rounds in flight per
//! destination, and each destination's rounds go on their own, so a slow shard
//! holds back only the live items for it.
//!
//! A shard runs two syncers side by side ([`Lane`]): one for live items, one for a
//! restart's resync, which pauses after each round as long as the round took. A
//! live item (a join waits for its own) never queues behind the resync.
//!
//! A destination may acknowledge items before it has logged them
//! ([`SyncAck::record`]); the syncers keep those in [`Unlogged`] until the
//! destination says that record is durable, so that a destination that
//! restarts gets them again (`internal.resync`).

use crate::bus::SharedBus;
use reddit_shared::codec::encode;
use reddit_shared::error::WireError;
use reddit_shared::protocol::internal::{SyncAck, SyncBatch, SyncItem, MAX_SYNC_ITEMS};
use reddit_shared::protocol::rpc::Rpc;
use reddit_shared::subject;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Makes typed requests to shards.
#[derive(Clone)]
pub struct Peers {
    bus: SharedBus,
    timeout: Duration,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Peers {
    /// Requests over `bus`, each bounded by `timeout`.
    pub fn new(bus: SharedBus, timeout: Duration) -> Self {
        Self { bus, timeout }
    }

    /// The same bus with requests bounded by `timeout` instead: for work
    /// nobody waits on interactively (the audit), which may take a loaded
    /// shard longer than a request on the request path may.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            bus: self.bus.clone(),
            timeout,
        }
    }

    /// Sends `req` to `shard` and decodes its reply: the contract's table
    /// ([`Rpc`]) names the operation and the reply type. No responder or no answer
    /// within the timeout is `503 unavailable`.
    pub async fn call<R: Rpc>(&self, shard: u32, req: &R) -> Result<R::Reply, WireError> {
        self.call_with(shard, req, |body| {
            reddit_shared::codec::decode_reply_body(body)
        })
        .await
    }

    /// [`Peers::call`] with the reply's body decoded by `body` (which gets
    /// the payload itself, to keep slices of it rather than copies).
    pub async fn call_with<R: Rpc, T>(
        &self,
        shard: u32,
        req: &R,
        body: impl FnOnce(&bytes::Bytes) -> Result<T, WireError>,
    ) -> Result<T, WireError> {
        let payload = encode(req)?;
        let msg = self
            .bus
            .request(
                format!("request to shard {shard}"),
                subject::request(shard, R::OP).into(),
                payload.into(),
                self.timeout,
            )
            .await?;
        reddit_shared::connect::decode_message_with(&msg, body)
    }
}

/// Most unlogged items kept per destination; past it the oldest are dropped
/// and a restart of that destination gets everything instead.
pub const MAX_UNLOGGED: usize = 65_536;

/// Items each destination acknowledged before logging them, with the record
/// that will hold them, until the destination reports that record durable.
/// A destination that restarts asks for the ones after its last record
/// ([`Unlogged::lost_by`]); in steady state only a round or two of items
/// wait here. Shared by both syncers and the shard's actor.
#[derive(Debug, Default)]
pub struct Unlogged(std::sync::Mutex<HashMap<u32, UnloggedAt>>);

#[derive(Debug, Default)]
struct UnloggedAt {
    /// `(record, item)`, records in acknowledgement order.
    items: std::collections::VecDeque<(u64, SyncItem)>,
    /// Some were dropped past [`MAX_UNLOGGED`].
    overflowed: bool,
}

impl Unlogged {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u32, UnloggedAt>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `dest` acknowledged `items` for its record `record` (0: logged before
    /// it answered, nothing to keep), with its records up to `durable`
    /// durable: forgets what that makes durable, keeps these.
    pub fn acknowledged(
        &self,
        dest: u32,
        record: u64,
        durable: u64,
        items: impl IntoIterator<Item = SyncItem>,
    ) {
        let mut map = self.map();
        let at = map.entry(dest).or_default();
        if durable > 0 {
            at.items.retain(|(r, _)| *r > durable);
        }
        if record > durable {
            at.items
                .extend(items.into_iter().map(|item| (record, item)));
        }
        while at.items.len() > MAX_UNLOGGED {
            at.items.pop_front();
            at.overflowed = true;
        }
    }

    /// What `dest`, started again with its log ending at record `after`, may
    /// have lost: the items it acknowledged for later records. `None` when
    /// some were dropped (send it everything). Forgets them either way.
    pub fn lost_by(&self, dest: u32, after: u64) -> Option<Vec<SyncItem>> {
        let at = std::mem::take(self.map().entry(dest).or_default());
        (!at.overflowed).then(|| {
            at.items
                .into_iter()
                .filter(|(r, _)| *r > after)
                .map(|(_, item)| item)
                .collect()
        })
    }

    /// The destinations for which items are kept.
    fn destinations(&self) -> Vec<u32> {
        self.map()
            .iter()
            .filter(|(_, at)| !at.items.is_empty())
            .map(|(&dest, _)| dest)
            .collect()
    }

    /// Items kept, over all destinations.
    pub fn len(&self) -> usize {
        self.map().values().map(|at| at.items.len()).sum()
    }

    /// Whether none are kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One item for the outbox; `waiter` is told when the destination has it.
#[derive(Debug)]
pub struct SyncEnvelope {
    /// Destination shard.
    pub dest: u32,
    /// The update.
    pub item: SyncItem,
    /// Told once the destination acknowledged this version (or a newer one).
    pub waiter: Option<oneshot::Sender<()>>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct ItemKey {
    dest: u32,
    karma: bool,
    user: String,
    subreddit: String,
}

fn key_and_version(dest: u32, item: &SyncItem) -> (ItemKey, u64) {
    let key = ItemKey {
        dest,
        karma: item.is_karma(),
        user: item.user().key().to_owned(),
        subreddit: item.subreddit().key().to_owned(),
    };
    (key, item.version())
}

/// Most distinct items the syncer holds (and sends in one round, in batches
/// of [`MAX_SYNC_ITEMS`]); the rest wait in the outbox and the actor's backlog.
pub const MAX_PENDING: usize = 8192;

/// Which traffic a syncer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Items of live writes: up to [`LIVE_ROUNDS`] rounds in flight at once, so
    /// an item (a join waits for its own) goes out at once instead of waiting
    /// for the round ahead of it to be acknowledged.
    Live,
    /// A restart's resync (up to a million items): one round at a time, and
    /// after each the syncer pauses as long as the round took, so the resync
    /// takes at most about half of the receiving shards' time and the requests
    /// they serve get the rest.
    Resync,
}

/// Rounds of the live lane in flight at once. Items carry versions, so rounds
/// that overtake each other are harmless at the receiver.
pub const LIVE_ROUNDS: usize = 4;

impl Lane {
    fn rounds(self) -> usize {
        match self {
            Lane::Live => LIVE_ROUNDS,
            Lane::Resync => 1,
        }
    }

    /// The group of destinations an item for `dest` goes out with: live
    /// items per destination, so a slow shard holds back only its own; a
    /// resync in rounds over all destinations at once, one at a time, which
    /// is what its pause after each round paces (per destination, the three
    /// receivers' rounds overlapped and a restart cost the other shards a
    /// larger share of their throughput).
    fn group(self, dest: u32) -> u32 {
        match self {
            Lane::Live => dest,
            Lane::Resync => 0,
        }
    }
}

/// This syncer's share of a gauge that several syncers add to.
struct GaugeShare {
    gauge: Arc<AtomicU64>,
    mine: u64,
}

impl GaugeShare {
    fn set(&mut self, n: u64) {
        if n >= self.mine {
            self.gauge.fetch_add(n - self.mine, Ordering::Relaxed);
        } else {
            self.gauge.fetch_sub(self.mine - n, Ordering::Relaxed);
        }
        self.mine = n;
    }
}

struct Pending {
    item: SyncItem,
    version: u64,
    waiters: Vec<(u64, oneshot::Sender<()>)>,
}

/// Pauses between failed rounds to one destination.
type Delays = Box<dyn Iterator<Item = Duration> + Send>;

/// What a syncer holds for one group of destinations ([`Lane::group`]): each
/// destination shard in the live lane, which thus has its own rounds in
/// flight, backoff and pause, so one that is slow to answer (a long actor
/// turn, a stall of its log, a restart) holds only its own items: with rounds
/// shared by all destinations, a stalled shard took every round slot and the
/// others' items (a join waits for its own) waited for it.
struct Group {
    pending: HashMap<ItemKey, Pending>,
    /// Rounds in flight, and the items in them.
    in_flight: usize,
    in_flight_items: usize,
    /// No new round before this: a backoff after a failed round, or the
    /// resync's pause after a round.
    hold_until: Option<tokio::time::Instant>,
    delays: Delays,
}

/// How long the live lane stays idle (nothing to send, nothing in flight)
/// before it asks each destination that holds items it acknowledged unlogged
/// how far its log is durable now, with an empty `internal.sync`: the answer
/// to a later batch would say, but on a quiet system none comes, and the
/// items were kept (and counted in `unlogged_sync`) for good.
pub const PROBE_AFTER_IDLE: Duration = Duration::from_secs(1);

const FIRST_RETRY: Duration = Duration::from_millis(10);
const MAX_RETRY: Duration = Duration::from_secs(1);

fn fresh_delays() -> Delays {
    Box::new(reddit_shared::backoff::delays(FIRST_RETRY, MAX_RETRY))
}

impl Group {
    fn new() -> Self {
        Self {
            pending: HashMap::new(),
            in_flight: 0,
            in_flight_items: 0,
            hold_until: None,
            delays: fresh_delays(),
        }
    }

    /// Whether a round may take this group's pending items now.
    fn ready(&self, lane: Lane, now: tokio::time::Instant) -> bool {
        !self.pending.is_empty()
            && self.in_flight < lane.rounds()
            && self.hold_until.is_none_or(|t| t <= now)
    }
}

/// Runs the outbox's `lane` until `rx` is closed and everything in it is
/// delivered (or, after close, `drain_deadline` passes). The items it holds are
/// added to `gauge`, which the syncers of both lanes share.
///
/// Items wait in their destination's `pending` (coalesced by key) until a
/// round to that destination takes them all; a round's items that the
/// destination did not acknowledge go back to its `pending` and are sent
/// again after a backoff.
pub async fn run_syncer(
    peers: Peers,
    unlogged: Arc<Unlogged>,
    mut rx: mpsc::Receiver<SyncEnvelope>,
    gauge: Arc<AtomicU64>,
    drain_deadline: Duration,
    lane: Lane,
) {
    let mut gauge = GaugeShare { gauge, mine: 0 };
    let mut groups: HashMap<u32, Group> = HashMap::new();
    // Items waiting in every group's `pending`.
    let mut waiting = 0usize;
    let mut rounds = futures::stream::FuturesUnordered::new();
    let mut closed = false;
    let mut closed_at: Option<tokio::time::Instant> = None;
    // When the lane last had something to do, and the probes of unlogged
    // items' destinations in flight ([`PROBE_AFTER_IDLE`]).
    let mut busy_at = tokio::time::Instant::now();
    let mut probes = futures::stream::FuturesUnordered::new();
    loop {
        // At most MAX_PENDING items waiting: a restart's resync of a large
        // state reaches the other shards in bounded rounds, not all at once.
        while !closed && waiting < MAX_PENDING {
            match rx.try_recv() {
                Ok(env) => waiting += add(&mut groups, lane, env),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => closed = true,
            }
        }
        if closed && closed_at.is_none() {
            closed_at = Some(tokio::time::Instant::now());
        }
        let now = tokio::time::Instant::now();
        for (&group, d) in groups.iter_mut().filter(|(_, d)| d.ready(lane, now)) {
            busy_at = now;
            let batch = std::mem::take(&mut d.pending);
            waiting -= batch.len();
            d.in_flight_items += batch.len();
            d.in_flight += 1;
            d.hold_until = None;
            rounds.push(send_round(
                peers.clone(),
                unlogged.clone(),
                group,
                batch,
                lane == Lane::Resync,
            ));
        }
        let in_flight_items: usize = groups.values().map(|d| d.in_flight_items).sum();
        gauge.set((waiting + in_flight_items + rx.len()) as u64);
        if closed && waiting == 0 && rounds.is_empty() {
            break;
        }
        // The earliest pause that holds back items.
        let wake = groups
            .values()
            .filter(|d| !d.pending.is_empty() && d.in_flight < lane.rounds())
            .filter_map(|d| d.hold_until)
            .min();
        let idle = lane == Lane::Live
            && !closed
            && waiting == 0
            && rounds.is_empty()
            && probes.is_empty()
            && !unlogged.is_empty();
        let probe_at = idle.then(|| busy_at + PROBE_AFTER_IDLE);
        tokio::select! {
            env = rx.recv(), if !closed && waiting < MAX_PENDING => match env {
                Some(env) => {
                    busy_at = tokio::time::Instant::now();
                    waiting += add(&mut groups, lane, env);
                }
                None => closed = true,
            },
            () = sleep_until(probe_at), if probe_at.is_some() => {
                for dest in unlogged.destinations() {
                    probes.push(probe(peers.clone(), unlogged.clone(), dest));
                }
            },
            Some(()) = futures::StreamExt::next(&mut probes), if !probes.is_empty() => {
                busy_at = tokio::time::Instant::now();
            },
            Some((group, sent, unacked, elapsed)) = futures::StreamExt::next(&mut rounds), if !rounds.is_empty() => {
                busy_at = tokio::time::Instant::now();
                let Some(d) = groups.get_mut(&group) else { continue };
                d.in_flight -= 1;
                d.in_flight_items -= sent;
                if unacked.is_empty() {
                    d.delays = fresh_delays();
                    if lane == Lane::Resync && !closed {
                        d.hold_until = Some(tokio::time::Instant::now() + elapsed);
                    }
                } else {
                    if closed_at.is_some_and(|t| t.elapsed() > drain_deadline) {
                        tracing::warn!(
                            items = unacked.len() + waiting,
                            "giving up on undelivered sync items at shutdown"
                        );
                        break;
                    }
                    for (key, p) in unacked {
                        waiting += merge(&mut d.pending, key, p);
                    }
                    d.hold_until = Some(
                        tokio::time::Instant::now() + d.delays.next().unwrap_or(MAX_RETRY),
                    );
                }
            },
            () = sleep_until(wake), if wake.is_some() => {}
            // Not reached (some branch is always enabled before the loop ends);
            // here so that select! has no case to panic on.
            else => tokio::task::yield_now().await,
        }
    }
    gauge.set(0);
}

/// Asks `dest` with an empty `internal.sync` how far its log is durable, and
/// forgets the unlogged items for `dest` that this makes durable. A failure
/// changes nothing: the next idle spell asks again.
async fn probe(peers: Peers, unlogged: Arc<Unlogged>, dest: u32) {
    let request = SyncBatch {
        items: Vec::new(),
        bulk: false,
    };
    match peers.call::<SyncBatch>(dest, &request).await {
        Ok(ack) => unlogged.acknowledged(dest, ack.record, ack.durable, []),
        Err(e) => {
            tracing::debug!(error = %e, dest, "cannot ask a shard how far its log is durable")
        }
    }
}

/// Waits until `at`, or forever without one.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Puts `env` in its group's pending items; 1 if it is a new key there.
fn add(groups: &mut HashMap<u32, Group>, lane: Lane, env: SyncEnvelope) -> usize {
    let (key, version) = key_and_version(env.dest, &env.item);
    let pending = &mut groups
        .entry(lane.group(env.dest))
        .or_insert_with(Group::new)
        .pending;
    let before = pending.len();
    let entry = pending.entry(key).or_insert_with(|| Pending {
        item: env.item.clone(),
        version,
        waiters: Vec::new(),
    });
    if version >= entry.version {
        entry.item = env.item;
        entry.version = version;
    }
    if let Some(w) = env.waiter {
        entry.waiters.push((version, w));
    }
    pending.len() - before
}

/// Merges `p` (the newest version of `key` a failed round held) back into
/// `pending`, which may hold a newer version already; 1 if it is a new key there.
fn merge(pending: &mut HashMap<ItemKey, Pending>, key: ItemKey, p: Pending) -> usize {
    match pending.entry(key) {
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(p);
            1
        }
        std::collections::hash_map::Entry::Occupied(mut o) => {
            let newer = o.get_mut();
            if p.version > newer.version {
                newer.item = p.item;
                newer.version = p.version;
            }
            newer.waiters.extend(p.waiters);
            0
        }
    }
}

/// Sends every item of `batch` (one group's) once, batched per destination
/// in requests of at most [`MAX_SYNC_ITEMS`]. Returns the group, how many
/// items it held, those no destination acknowledged (their waiters still
/// waiting), and how long it took. Each request's waiters are told as soon
/// as its destination answers.
async fn send_round(
    peers: Peers,
    unlogged: Arc<Unlogged>,
    group: u32,
    mut batch: HashMap<ItemKey, Pending>,
    bulk: bool,
) -> (u32, usize, HashMap<ItemKey, Pending>, Duration) {
    let started = tokio::time::Instant::now();
    let sent = batch.len();
    let mut by_dest: HashMap<u32, Vec<(ItemKey, SyncItem)>> = HashMap::new();
    for (key, p) in batch.iter() {
        by_dest
            .entry(key.dest)
            .or_default()
            .push((key.clone(), p.item.clone()));
    }
    let mut calls = futures::stream::FuturesUnordered::new();
    for (dest, items) in by_dest {
        for chunk in items.chunks(MAX_SYNC_ITEMS) {
            let keys: Vec<ItemKey> = chunk.iter().map(|(k, _)| k.clone()).collect();
            let request = SyncBatch {
                items: chunk.iter().map(|(_, i)| i.clone()).collect(),
                bulk,
            };
            let peers = peers.clone();
            let unlogged = unlogged.clone();
            calls.push(async move {
                let result: Result<SyncAck, WireError> = peers.call(dest, &request).await;
                if let Ok(ack) = &result {
                    unlogged.acknowledged(dest, ack.record, ack.durable, request.items);
                }
                (dest, keys, result)
            });
        }
    }
    while let Some((dest, keys, result)) = futures::StreamExt::next(&mut calls).await {
        match result {
            Ok(_) => {
                for key in keys {
                    if let Some(p) = batch.remove(&key) {
                        for (_, waiter) in p.waiters {
                            let _ = waiter.send(());
                        }
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, dest, "sync batch not acknowledged; will retry");
            }
        }
    }
    (group, sent, batch, started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::Bus;
    use async_nats::{HeaderMap, Message, Subject};
    use bytes::Bytes;
    use futures::future::BoxFuture;
    use futures::FutureExt;
    use reddit_shared::names::{SubredditName, Username};
    use std::sync::atomic::AtomicUsize;

    /// A destination shard for the syncer: it may refuse its first request,
    /// holds every request until the test opens the gate (counting how many
    /// it holds at once), and records the versions it acknowledges and the
    /// number of items of each batch.
    struct TestShard {
        gate: tokio::sync::Semaphore,
        now: AtomicUsize,
        most: AtomicUsize,
        /// Set while the first request is still to be refused.
        refuse_first: std::sync::atomic::AtomicBool,
        versions: std::sync::Mutex<Vec<u64>>,
        batches: std::sync::Mutex<Vec<usize>>,
        /// Only requests to this shard wait for the gate (`None`: all do).
        gated_shard: Option<u32>,
        /// What its answers say: the record that holds a batch's items (0:
        /// logged before the answer) and the last durable record.
        record: AtomicU64,
        durable: AtomicU64,
    }

    impl TestShard {
        fn new(gated: bool, refuse_first: bool) -> Arc<Self> {
            let permits = if gated {
                0
            } else {
                tokio::sync::Semaphore::MAX_PERMITS
            };
            Arc::new(Self {
                gate: tokio::sync::Semaphore::new(permits),
                now: AtomicUsize::new(0),
                most: AtomicUsize::new(0),
                refuse_first: std::sync::atomic::AtomicBool::new(refuse_first),
                versions: std::sync::Mutex::new(Vec::new()),
                batches: std::sync::Mutex::new(Vec::new()),
                gated_shard: None,
                record: AtomicU64::new(0),
                durable: AtomicU64::new(0),
            })
        }

        /// Holds requests to `shard` until the gate opens; answers the
        /// others at once.
        fn gating_only(shard: u32) -> Arc<Self> {
            let mut bus = Arc::into_inner(Self::new(true, false)).unwrap();
            bus.gated_shard = Some(shard);
            Arc::new(bus)
        }
    }

    impl Bus for TestShard {
        fn publish(&self, _: Subject, _: Option<HeaderMap>, _: Bytes) -> BoxFuture<'_, ()> {
            async {}.boxed()
        }

        fn request(
            &self,
            _what: String,
            subject: Subject,
            body: Bytes,
            _timeout: Duration,
        ) -> BoxFuture<'_, Result<Message, WireError>> {
            async move {
                if self.refuse_first.swap(false, Ordering::SeqCst) {
                    return Err(WireError::unavailable("refused once"));
                }
                let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
                self.most.fetch_max(now, Ordering::SeqCst);
                if self
                    .gated_shard
                    .is_none_or(|shard| subject::op_of(&subject, shard).is_some())
                {
                    drop(self.gate.acquire().await);
                }
                let batch: SyncBatch = reddit_shared::codec::decode(&body).unwrap();
                self.versions
                    .lock()
                    .unwrap()
                    .extend(batch.items.iter().map(SyncItem::version));
                self.batches.lock().unwrap().push(batch.items.len());
                self.now.fetch_sub(1, Ordering::SeqCst);
                let ack = SyncAck {
                    applied: batch.items.len() as u32,
                    record: match batch.items.len() {
                        0 => 0,
                        _ => self.record.load(Ordering::SeqCst),
                    },
                    durable: self.durable.load(Ordering::SeqCst),
                };
                Ok(acknowledged(subject, &ack))
            }
            .boxed()
        }
    }

    /// A destination's answer `ack` to a sync batch.
    fn acknowledged(subject: Subject, ack: &SyncAck) -> Message {
        Message {
            subject,
            reply: None,
            payload: encode(ack).unwrap().into(),
            headers: None,
            status: None,
            description: None,
            length: 0,
        }
    }

    fn membership(user: &str, version: u64) -> SyncItem {
        SyncItem::Membership {
            user: Username::parse(user).unwrap(),
            subreddit: SubredditName::parse("rust").unwrap(),
            member: true,
            version,
        }
    }

    /// A syncer of `lane` sending to `bus`: its outbox, its backlog gauge and
    /// its task.
    fn syncer_to(
        bus: &Arc<TestShard>,
        lane: Lane,
    ) -> (
        mpsc::Sender<SyncEnvelope>,
        Arc<AtomicU64>,
        tokio::task::JoinHandle<()>,
    ) {
        let peers = Peers::new(bus.clone(), Duration::from_secs(5));
        let (tx, rx) = mpsc::channel(16);
        let gauge = Arc::new(AtomicU64::new(0));
        let syncer = tokio::spawn(run_syncer(
            peers,
            Arc::new(Unlogged::default()),
            rx,
            gauge.clone(),
            Duration::from_secs(5),
            lane,
        ));
        (tx, gauge, syncer)
    }

    /// Hands the syncer `user`'s membership at `version` for shard 1; the
    /// receiver is told once it is delivered.
    async fn send_item(
        tx: &mpsc::Sender<SyncEnvelope>,
        user: &str,
        version: u64,
    ) -> oneshot::Receiver<()> {
        send_to(tx, 1, user, version).await
    }

    /// [`send_item`] for shard `dest`.
    async fn send_to(
        tx: &mpsc::Sender<SyncEnvelope>,
        dest: u32,
        user: &str,
        version: u64,
    ) -> oneshot::Receiver<()> {
        let (waiter, told) = oneshot::channel();
        tx.send(SyncEnvelope {
            dest,
            item: membership(user, version),
            waiter: Some(waiter),
        })
        .await
        .unwrap();
        told
    }

    /// Waits for `told`, failing with `what` after 5 s.
    async fn told_within(told: oneshot::Receiver<()>, what: &str) {
        tokio::time::timeout(Duration::from_secs(5), told)
            .await
            .expect(what)
            .expect("told");
    }

    /// Waits until `done` holds, failing with `what` after 5 s.
    async fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Closes the syncer's outbox: it ends, holding nothing.
    async fn stop_syncer(
        tx: mpsc::Sender<SyncEnvelope>,
        syncer: tokio::task::JoinHandle<()>,
        gauge: &AtomicU64,
    ) {
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), syncer)
            .await
            .expect("the syncer ends once its outbox closes")
            .unwrap();
        assert_eq!(gauge.load(Ordering::SeqCst), 0);
    }

    /// Sends two items one after the other, the shard answering nothing until
    /// both were sent or a deadline passed; returns the most requests it held
    /// at once. Both items are delivered in the end.
    async fn two_items_through(lane: Lane) -> usize {
        let bus = TestShard::new(true, false);
        let (tx, gauge, syncer) = syncer_to(&bus, lane);
        let mut delivered = Vec::new();
        for (user, version) in [("alice", 1), ("bob", 2)] {
            delivered.push(send_item(&tx, user, version).await);
            // The first request reaches the shard before the second item is sent.
            wait_until("no request sent", || bus.now.load(Ordering::SeqCst) > 0).await;
        }
        // Give a second round every chance to start.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
        while bus.now.load(Ordering::SeqCst) < 2 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let most = bus.most.load(Ordering::SeqCst);
        assert_eq!(
            gauge.load(Ordering::SeqCst),
            2,
            "both items counted while held"
        );
        bus.gate.add_permits(1000);
        for told in delivered {
            told_within(told, "delivered").await;
        }
        stop_syncer(tx, syncer, &gauge).await;
        most
    }

    /// A round the destination refused goes back to the queue and is sent
    /// again; a newer version of the same item that came meanwhile is
    /// delivered too (merged into the retry, or in a round of its own), and
    /// both waiters are told.
    #[tokio::test]
    async fn a_refused_round_is_retried_with_the_newest_version() {
        let bus = TestShard::new(false, true);
        let (tx, gauge, syncer) = syncer_to(&bus, Lane::Live);
        let mut told = Vec::new();
        for version in [1, 2] {
            told.push(send_item(&tx, "alice", version).await);
            // The first round is refused before the newer version comes.
            wait_until("no request sent", || {
                !bus.refuse_first.load(Ordering::SeqCst)
            })
            .await;
        }
        for rx in told {
            told_within(rx, "delivered after the retry").await;
        }
        let versions = bus.versions.lock().unwrap().clone();
        assert_eq!(versions.iter().max(), Some(&2), "{versions:?}");
        stop_syncer(tx, syncer, &gauge).await;
    }

    /// A live item goes out while the round ahead of it is unanswered (a join
    /// does not wait for the previous round's acknowledgement)...
    #[tokio::test]
    async fn live_rounds_overlap() {
        assert_eq!(two_items_through(Lane::Live).await, 2);
    }

    /// ...while the resync sends one round at a time.
    #[tokio::test]
    async fn resync_rounds_do_not() {
        assert_eq!(two_items_through(Lane::Resync).await, 1);
    }

    /// In one round to two shards, the waiter of an item for the shard that
    /// answers is told at once, not when the slower shard answers too.
    #[tokio::test]
    async fn a_waiter_is_told_when_its_own_shard_answers() {
        let bus = TestShard::gating_only(2);
        let (tx, gauge, syncer) = syncer_to(&bus, Lane::Live);
        // Both queued before the syncer runs (this runtime has one thread):
        // one round takes them both.
        let mut told = Vec::new();
        for (dest, user) in [(2, "slow_user"), (1, "fast_user")] {
            told.push(send_to(&tx, dest, user, 1).await);
        }
        let (slow, fast) = (told.remove(0), told.remove(0));
        told_within(fast, "told while the other shard still holds its batch").await;
        assert_eq!(bus.now.load(Ordering::SeqCst), 1, "shard 2 holds its batch");
        bus.gate.add_permits(1);
        told_within(slow, "told once its shard answers").await;
        stop_syncer(tx, syncer, &gauge).await;
    }

    /// A destination that holds its rounds holds only its own items: with
    /// every live round to shard 2 unanswered and another item waiting for
    /// it, an item for shard 1 still goes out and its waiter is told.
    #[tokio::test]
    async fn a_slow_destination_does_not_hold_the_others_items() {
        let bus = TestShard::gating_only(2);
        let (tx, gauge, syncer) = syncer_to(&bus, Lane::Live);
        let mut slow = Vec::new();
        for i in 0..=LIVE_ROUNDS {
            slow.push(send_to(&tx, 2, &format!("slow_{i}"), 1).await);
            if i < LIVE_ROUNDS {
                wait_until("a round to shard 2 not sent", || {
                    bus.now.load(Ordering::SeqCst) == i + 1
                })
                .await;
            }
        }
        let fast = send_to(&tx, 1, "fast_user", 1).await;
        told_within(fast, "told while shard 2 holds every round").await;
        assert_eq!(
            bus.now.load(Ordering::SeqCst),
            LIVE_ROUNDS,
            "shard 2 holds its rounds, no more"
        );
        bus.gate.add_permits(1000);
        for told in slow {
            told_within(told, "delivered once shard 2 answers").await;
        }
        stop_syncer(tx, syncer, &gauge).await;
    }

    /// A restart's resync, unlike live items, goes one round at a time over
    /// all destinations: an item for shard 1 waits while a round to shard 2
    /// is unanswered (the resync's pause paces the receivers together).
    #[tokio::test]
    async fn a_resync_goes_one_round_at_a_time_over_all_destinations() {
        let bus = TestShard::new(true, false);
        let (tx, gauge, syncer) = syncer_to(&bus, Lane::Resync);
        let mut told = Vec::new();
        for (dest, user) in [(2, "first_user"), (1, "second_user")] {
            told.push(send_to(&tx, dest, user, 1).await);
            wait_until("no request sent", || bus.now.load(Ordering::SeqCst) > 0).await;
        }
        // Give a second round every chance to start.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
        while bus.now.load(Ordering::SeqCst) < 2 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(bus.most.load(Ordering::SeqCst), 1, "one round at a time");
        bus.gate.add_permits(1000);
        for rx in told {
            told_within(rx, "delivered").await;
        }
        stop_syncer(tx, syncer, &gauge).await;
    }

    /// On a quiet system no later answer says that the record holding
    /// items acknowledged unlogged became durable: once idle for
    /// [`PROBE_AFTER_IDLE`], the live lane asks with an empty batch, forgets
    /// them, and then asks no more.
    #[tokio::test(start_paused = true)]
    async fn an_idle_live_lane_asks_how_far_the_logs_are_durable() {
        let bus = TestShard::new(false, false);
        bus.record.store(5, Ordering::SeqCst);
        bus.durable.store(4, Ordering::SeqCst);
        let unlogged = Arc::new(Unlogged::default());
        let (tx, rx) = mpsc::channel(16);
        let gauge = Arc::new(AtomicU64::new(0));
        let syncer = tokio::spawn(run_syncer(
            Peers::new(bus.clone(), Duration::from_secs(5)),
            unlogged.clone(),
            rx,
            gauge.clone(),
            Duration::from_secs(5),
            Lane::Live,
        ));
        let told = send_item(&tx, "alice", 1).await;
        told_within(told, "delivered").await;
        assert_eq!(unlogged.len(), 1, "kept: record 5 is not durable yet");
        // Record 5 is durable now; nothing else is sent that could say so.
        bus.durable.store(5, Ordering::SeqCst);
        let before = tokio::time::Instant::now();
        wait_until("the idle lane asked", || unlogged.is_empty()).await;
        assert!(before.elapsed() >= PROBE_AFTER_IDLE, "not before idle");
        let asked = bus.batches.lock().unwrap().clone();
        assert_eq!(asked, [1, 0], "the item, then one empty batch");
        tokio::time::sleep(PROBE_AFTER_IDLE * 5).await;
        assert_eq!(
            bus.batches.lock().unwrap().len(),
            2,
            "nothing kept, nothing more to ask"
        );
        stop_syncer(tx, syncer, &gauge).await;
    }

    /// Items acknowledged before they were logged are kept until the
    /// destination reports their record durable; a restart gets those after
    /// its last record, once.
    #[test]
    fn unlogged_items_are_kept_until_durable_and_given_to_a_restart() {
        let u = Unlogged::default();
        u.acknowledged(1, 10, 9, [membership("user_a", 1), membership("user_b", 2)]);
        u.acknowledged(1, 11, 9, [membership("user_c", 3)]);
        u.acknowledged(2, 0, 0, [membership("user_logged", 4)]);
        assert_eq!(
            u.len(),
            3,
            "nothing kept for items logged before the answer"
        );
        // Record 10 is durable now: a and b are forgotten.
        u.acknowledged(1, 12, 10, [membership("user_d", 5)]);
        assert_eq!(u.len(), 2);
        // Shard 1 restarts with its log ending at record 11: d (record 12)
        // may be lost, c (record 11) is not.
        let lost = u.lost_by(1, 11).expect("nothing was dropped");
        assert_eq!(lost, vec![membership("user_d", 5)]);
        assert!(u.is_empty(), "given once");
        assert_eq!(u.lost_by(1, 0), Some(vec![]));
    }

    /// Past [`MAX_UNLOGGED`] items for one destination the oldest are
    /// dropped, and a restart of it is told to take everything.
    #[test]
    fn too_many_unlogged_items_make_a_restart_take_everything() {
        let u = Unlogged::default();
        let items = (0..=MAX_UNLOGGED as u64).map(|v| membership("user_a", v));
        u.acknowledged(1, 5, 4, items);
        assert_eq!(u.len(), MAX_UNLOGGED);
        assert_eq!(u.lost_by(1, 0), None);
        assert!(u.is_empty());
        // Told once: the next restart is back to the items it may have lost.
        u.acknowledged(1, 7, 6, [membership("user_b", 1)]);
        assert_eq!(u.lost_by(1, 6), Some(vec![membership("user_b", 1)]));
    }
}
