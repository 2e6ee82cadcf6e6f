//! Engine-to-engine traffic: typed requests to other shards ([`Peers::call`]) and
//! the sync outbox ([`run_syncer`]) that carries memberships and karma totals to the
//! users' shards.
//!
//! The outbox coalesces: it keeps only the newest version of each (user, subreddit)
//! item, sends one batched `internal.sync` request per destination shard per round,
//! and retries failed rounds with backoff until the destination acknowledges. Items
//! carry versions, so a repeat or a reordering is harmless at the receiver.
//!
//! A shard runs two syncers side by side ([`Lane`]): one for live items, one for a
//! restart's resync, which pauses after each round as long as the round took. A
//! live item (a join waits for its own) never queues behind the resync.

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

    /// Sends `req` to `shard` and decodes its reply: the contract's table
    /// ([`Rpc`]) names the operation and the reply type. No responder or no answer
    /// within the timeout is `503 unavailable`.
    pub async fn call<R: Rpc>(&self, shard: u32, req: &R) -> Result<R::Reply, WireError> {
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
        reddit_shared::connect::decode_message(&msg)
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
    /// Items of live writes: each round goes out as soon as the last one is
    /// acknowledged.
    Live,
    /// A restart's resync (up to a million items): after each round the syncer
    /// pauses as long as the round took, so the resync takes at most about half
    /// of the receiving shards' time and the requests they serve get the rest.
    Resync,
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

/// Runs the outbox's `lane` until `rx` is closed and everything in it is
/// delivered (or, after close, `drain_deadline` passes). The items it holds are
/// added to `gauge`, which the syncers of both lanes share.
pub async fn run_syncer(
    peers: Peers,
    mut rx: mpsc::Receiver<SyncEnvelope>,
    gauge: Arc<AtomicU64>,
    drain_deadline: Duration,
    lane: Lane,
) {
    let mut gauge = GaugeShare { gauge, mine: 0 };
    let mut pending: HashMap<ItemKey, Pending> = HashMap::new();
    let mut closed = false;
    let first = Duration::from_millis(10);
    let max = Duration::from_secs(1);
    let mut delays = reddit_shared::backoff::delays(first, max);
    let mut closed_at: Option<tokio::time::Instant> = None;
    loop {
        if pending.is_empty() {
            if closed {
                break;
            }
            match rx.recv().await {
                Some(env) => add(&mut pending, env),
                None => closed = true,
            }
        }
        // At most MAX_PENDING items per round: a restart's resync of a large
        // state reaches the other shards in bounded rounds, not all at once.
        while pending.len() < MAX_PENDING {
            match rx.try_recv() {
                Ok(env) => add(&mut pending, env),
                Err(_) => break,
            }
        }
        if !closed && rx.is_closed() && rx.is_empty() {
            closed = true;
        }
        if closed && closed_at.is_none() {
            closed_at = Some(tokio::time::Instant::now());
        }
        gauge.set((pending.len() + rx.len()) as u64);
        if pending.is_empty() {
            continue;
        }
        let started = tokio::time::Instant::now();
        let ok = send_round(&peers, &mut pending).await;
        gauge.set((pending.len() + rx.len()) as u64);
        if ok {
            delays = reddit_shared::backoff::delays(first, max);
            if lane == Lane::Resync && !closed {
                tokio::time::sleep(started.elapsed()).await;
            }
        } else {
            if closed_at.is_some_and(|t| t.elapsed() > drain_deadline) {
                tracing::warn!(
                    items = pending.len(),
                    "giving up on undelivered sync items at shutdown"
                );
                break;
            }
            tokio::time::sleep(delays.next().unwrap_or(max)).await;
        }
    }
    gauge.set(0);
}

fn add(pending: &mut HashMap<ItemKey, Pending>, env: SyncEnvelope) {
    let (key, version) = key_and_version(env.dest, &env.item);
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
}

/// Sends every pending item once, batched per destination; returns whether all
/// batches were acknowledged.
async fn send_round(peers: &Peers, pending: &mut HashMap<ItemKey, Pending>) -> bool {
    let mut by_dest: HashMap<u32, Vec<(ItemKey, u64, SyncItem)>> = HashMap::new();
    for (key, p) in pending.iter() {
        by_dest
            .entry(key.dest)
            .or_default()
            .push((key.clone(), p.version, p.item.clone()));
    }
    let mut calls = Vec::new();
    for (dest, items) in by_dest {
        for chunk in items.chunks(MAX_SYNC_ITEMS) {
            let sent: Vec<(ItemKey, u64)> = chunk.iter().map(|(k, v, _)| (k.clone(), *v)).collect();
            let batch = SyncBatch {
                items: chunk.iter().map(|(_, _, i)| i.clone()).collect(),
            };
            let peers = peers.clone();
            calls.push(async move {
                let result: Result<SyncAck, WireError> = peers.call(dest, &batch).await;
                (sent, result)
            });
        }
    }
    let mut all_ok = true;
    for (sent, result) in futures::future::join_all(calls).await {
        match result {
            Ok(_) => {
                for (key, version) in sent {
                    if let Some(p) = pending.get_mut(&key) {
                        let waiters = std::mem::take(&mut p.waiters);
                        for (v, w) in waiters {
                            if v <= version {
                                let _ = w.send(());
                            } else {
                                p.waiters.push((v, w));
                            }
                        }
                        if p.version <= version {
                            pending.remove(&key);
                        }
                    }
                }
            }
            Err(e) => {
                all_ok = false;
                tracing::debug!(error = %e, "sync batch not acknowledged; will retry");
            }
        }
    }
    all_ok
}
