//! The request side of a shard. A reader task ([`read_requests`]) takes requests
//! from the service endpoint `reddit.shard.<k>.>` and queues them (bounded; a full
//! queue answers `503`) for the [`Actor`], the one task that owns the
//! [`ShardState`] and handles requests in order. Work that waits on other shards
//! runs in spawned tasks (bounded by a semaphore); when it needs the state again it
//! sends a continuation back to the actor.
//!
//! - [`actor`]: the loop, idempotency, authentication, and carrying out outcomes;
//! - [`handlers`]: one file per domain, one function per operation;
//! - [`journal`]: group commit, replies held until durable;
//! - [`snapshots`]: a follower of the log that takes snapshots off the actor;
//! - [`metrics`]: the counters.
//!
//! Everything goes out through a [`Bus`](crate::bus::Bus), so the actor runs in
//! unit tests without NATS (`tests`).

mod actor;
pub mod feed_cache;
mod handlers;
pub mod journal;
pub mod metrics;
pub mod snapshots;
#[cfg(test)]
mod tests;

pub use actor::Actor;
pub use journal::{Journal, LogStore};
pub use metrics::Metrics;

use crate::auth::TokenSigner;
use crate::bus::{Bus, SharedBus};
use crate::cross_shard::{Peers, SyncEnvelope};
use crate::state::{Effects, ShardState};
use async_nats::{HeaderMap, Message};
use reddit_shared::codec::encode;
use reddit_shared::error::{WireError, ERROR_CODE_HEADER, ERROR_HEADER};
use reddit_shared::protocol::Op;
use reddit_shared::subject::{self, ReplyTo};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// A closure the actor runs against its state on behalf of a spawned task; its
/// result is the encoded reply.
pub type StateFn =
    Box<dyn FnOnce(&mut ShardState, &mut Effects) -> Result<Vec<u8>, WireError> + Send>;

/// A continuation: the closure, the reply-cache key of the request it finishes, and
/// where its result goes (once its events are durable).
pub struct RunJob {
    f: StateFn,
    cache: Option<(crate::replies::ReplyKey, u64)>,
    /// The operation it continues (what its log entry counts as).
    op: Option<reddit_shared::protocol::Op>,
    done: oneshot::Sender<Result<Vec<u8>, WireError>>,
}

impl RunJob {
    /// The operation it continues.
    pub fn op(&self) -> Option<reddit_shared::protocol::Op> {
        self.op
    }
}

/// Work for the actor. Requests travel unboxed: they are nearly every job, and
/// boxing would allocate once per request.
#[allow(clippy::large_enum_variant)]
pub enum Job {
    /// A request (the NATS message: subject, reply subject, headers, payload).
    Request(Message),
    /// A continuation from a spawned task: runs against the state; its effects are
    /// carried out by the actor.
    Run(RunJob),
    /// A spawned write with this idempotency key finished (its continuation, if
    /// any, has run): a retry may now be answered from the cache or handled anew.
    Finished(crate::replies::ReplyKey),
}

/// What the actor shares with spawned tasks.
#[derive(Clone)]
pub struct Ctx {
    /// Where replies, pushes and requests to other shards go: in a running engine
    /// the shard's outgoing NATS connection (NATS user `engine-work`), which never
    /// receives requests and cannot reach the log or the JetStream API.
    pub bus: SharedBus,
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
    /// Outbox for other shards: live writes' items
    /// ([`Lane::Live`](crate::cross_shard::Lane::Live)). Writes that would add
    /// to it are refused while it is full.
    pub sync_tx: mpsc::Sender<SyncEnvelope>,
    /// The resync's own outbox
    /// ([`Lane::Resync`](crate::cross_shard::Lane::Resync)): a restart's
    /// resync goes out beside live items, never ahead of them.
    pub resync_tx: mpsc::Sender<SyncEnvelope>,
    /// Sync items other shards acknowledged before logging them, kept by
    /// this shard's syncers until durable there (`internal.resync`).
    pub unlogged: Arc<crate::cross_shard::Unlogged>,
    /// Bounds spawned cross-shard tasks.
    pub permits: Arc<Semaphore>,
    /// How long a join waits for the user's shard.
    pub peer_timeout: Duration,
    /// Durable mode: the shard's lease, which must be confirmed for a request
    /// to be served (a process cut off from the JetStream majority answers
    /// `unavailable` instead of possibly stale data). `None`: in memory.
    pub tenure: Option<Arc<crate::lease::Tenure>>,
}

/// Whether `request` may be answered: its reply subject is an inbox of one of the
/// roles' shapes ([`ReplyTo`]). Anything else (the log's subject, the JetStream
/// API, another shard's internal subjects, someone's push subject) is refused and
/// counted: the engine never publishes where a request chose unchecked.
pub fn reply_allowed(metrics: &Metrics, request: &Message) -> bool {
    let ok = request
        .reply
        .as_ref()
        .is_some_and(|r| ReplyTo::classify(r.as_str()).is_some());
    if !ok {
        let n = metrics.replies_refused.fetch_add(1, Ordering::Relaxed);
        if (n + 1).is_power_of_two() {
            tracing::warn!(
                subject = %request.subject,
                reply = ?request.reply.as_ref().map(|r| r.chars().take(80).collect::<String>()),
                refused = n + 1,
                "dropped a request whose reply subject is not an inbox"
            );
        }
    }
    ok
}

/// Answers `request` with `result` over `bus` (the shard's outgoing connection,
/// not the one requests arrive on): the body, or the error headers and body. A
/// reply subject that is not an inbox is never published to.
pub async fn respond(
    bus: &dyn Bus,
    metrics: &Metrics,
    request: &Message,
    result: Result<Vec<u8>, WireError>,
) {
    if !reply_allowed(metrics, request) {
        return;
    }
    let Some(reply) = request.reply.clone() else {
        return;
    };
    match result {
        Ok(body) => bus.publish(reply, None, body.into()).await,
        Err(e) => {
            metrics.error(e.code);
            let mut headers = HeaderMap::new();
            headers.insert(ERROR_CODE_HEADER, e.code.status().to_string().as_str());
            headers.insert(ERROR_HEADER, e.message.as_str());
            let body = encode(&e).unwrap_or_default();
            bus.publish(reply, Some(headers), body.into()).await
        }
    }
}

/// Reads requests from `endpoint` into the actor's queue until it ends; answers
/// `503` itself when the queue is full.
pub async fn read_requests(
    mut endpoint: async_nats::service::endpoint::Endpoint,
    out: SharedBus,
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
        match jobs.try_send(Job::Request(request.message)) {
            Ok(()) => {
                metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Full(Job::Request(request))) => {
                metrics.count(subject::op_of(&request.subject, shard).and_then(Op::parse));
                respond(
                    out.as_ref(),
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
