//! This gateway's side of the rooms: its connections ([`Conn`], each with a
//! bounded outgoing queue) and one task per room that has local members, which
//! subscribes to the room's subject and hands every event, rendered once, to
//! each member without ever waiting for one: a member whose queue is full is
//! disconnected, never slowing the room.

use crate::who::Room;
use crate::wire::{Clock, RoomEvent};
use futures::StreamExt;
use reddit_shared::protocol::push::PushEvent;
use reddit_shared::subject;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// A line of a room, rendered once for every local member.
#[derive(Debug)]
pub struct Rendered {
    /// The event's id (tells it apart from the same event in history).
    pub id: String,
    /// The text.
    pub line: String,
}

/// What a connection's writer gets.
#[derive(Debug)]
pub enum Out {
    /// A line for this user alone.
    Line(String),
    /// A line of the user's room.
    Room(Arc<Rendered>),
    /// Hold room lines until [`Out::History`] (a join in progress).
    Hold,
    /// The room's history, shown before the held lines (those in it are dropped).
    History(Vec<Rendered>),
}

/// One TCP connection as the rest of the gateway sees it.
#[derive(Debug)]
pub struct Conn {
    /// Unique in this gateway.
    pub id: u64,
    tx: mpsc::Sender<Out>,
    /// Cancelled when the connection is to end (see [`Conn::kill`]).
    pub cancel: CancellationToken,
    why: Mutex<Option<String>>,
}

impl Conn {
    /// A connection whose writer reads from the other end of `tx`.
    pub fn new(id: u64, tx: mpsc::Sender<Out>) -> Self {
        Self {
            id,
            tx,
            cancel: CancellationToken::new(),
            why: Mutex::new(None),
        }
    }

    /// Ends the connection, telling the user `why` (the first reason given wins).
    pub fn kill(&self, why: impl Into<String>) {
        if let Ok(mut w) = self.why.lock() {
            if w.is_none() {
                *w = Some(why.into());
            }
        }
        self.cancel.cancel();
    }

    /// Why it was killed, if it was.
    pub fn why(&self) -> Option<String> {
        self.why.lock().ok().and_then(|w| w.clone())
    }

    /// Queues `out` without waiting; a full queue ends the connection (the
    /// reader is too slow) and answers false, as does a closed one.
    pub fn send(&self, out: Out) -> bool {
        match self.tx.try_send(out) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.kill(format!(
                    "you were disconnected: {} lines were waiting for you (your connection is too slow for this room)",
                    self.tx.max_capacity()
                ));
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Queues a line for this user alone.
    pub fn line(&self, line: impl Into<String>) -> bool {
        self.send(Out::Line(line.into()))
    }
}

/// Counters of one gateway (reported by `/stats` and the micro-service stats).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Connections open now.
    pub connections: AtomicU64,
    /// Connections accepted since start.
    pub accepted: AtomicU64,
    /// Connections refused: the gateway was full.
    pub refused: AtomicU64,
    /// Lines said (chat, `/me`, `/msg`) by this gateway's users.
    pub said: AtomicU64,
    /// Lines handed to this gateway's users' queues.
    pub delivered: AtomicU64,
    /// Users disconnected for reading too slowly.
    pub too_slow: AtomicU64,
    /// Rooms with members on this gateway now.
    pub rooms: AtomicU64,
    /// Lines said per second over the last [`Metrics::WINDOW`] (f64 bits).
    said_rate: AtomicU64,
    /// Lines delivered per second over the last window (f64 bits).
    delivered_rate: AtomicU64,
}

impl Metrics {
    /// The window of the per-second rates.
    pub const WINDOW: std::time::Duration = std::time::Duration::from_secs(5);

    /// Lines said and delivered per second over the last window.
    pub fn rates(&self) -> (f64, f64) {
        (
            f64::from_bits(self.said_rate.load(Ordering::Relaxed)),
            f64::from_bits(self.delivered_rate.load(Ordering::Relaxed)),
        )
    }

    /// Updates the rates every [`WINDOW`](Self::WINDOW) until `stop`.
    pub async fn keep_rates(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(Self::WINDOW);
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (mut said, mut delivered) = (g(&self.said), g(&self.delivered));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let (s, d) = (g(&self.said), g(&self.delivered));
            let secs = Self::WINDOW.as_secs_f64();
            let rate = |now: u64, before: u64| (now.saturating_sub(before) as f64 / secs).to_bits();
            self.said_rate.store(rate(s, said), Ordering::Relaxed);
            self.delivered_rate
                .store(rate(d, delivered), Ordering::Relaxed);
            (said, delivered) = (s, d);
        }
    }

    /// The counters as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (said_per_second, delivered_per_second) = self.rates();
        serde_json::json!({
            "said_per_second": said_per_second,
            "delivered_per_second": delivered_per_second,
            "connections": g(&self.connections),
            "accepted": g(&self.accepted),
            "refused": g(&self.refused),
            "said": g(&self.said),
            "delivered": g(&self.delivered),
            "too_slow": g(&self.too_slow),
            "rooms": g(&self.rooms),
        })
    }
}

enum Cmd {
    Add(Arc<Conn>, oneshot::Sender<bool>),
    Remove(u64),
}

/// The rooms with members on this gateway.
pub struct Hub {
    nats: async_nats::Client,
    clock: Clock,
    rooms: Mutex<HashMap<String, mpsc::Sender<Cmd>>>,
    /// This gateway's counters.
    pub metrics: Arc<Metrics>,
}

impl Hub {
    /// A hub publishing nothing itself: it subscribes to rooms on `nats`.
    pub fn new(nats: async_nats::Client, clock: Clock, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            nats,
            clock,
            rooms: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    /// Adds `conn` to `room`: once this returns, every event of the room
    /// reaches the connection's queue. False if the room's subscription failed.
    pub async fn enter(self: &Arc<Self>, room: &Room, conn: &Arc<Conn>) -> bool {
        let key = room.key();
        for _ in 0..3 {
            let tx = {
                let Ok(mut rooms) = self.rooms.lock() else {
                    return false;
                };
                rooms
                    .entry(key.clone())
                    .or_insert_with(|| {
                        let (tx, rx) = mpsc::channel(1024);
                        tokio::spawn(room_task(self.clone(), room.clone(), rx, tx.clone()));
                        self.metrics.rooms.fetch_add(1, Ordering::Relaxed);
                        tx
                    })
                    .clone()
            };
            let (ready, answer) = oneshot::channel();
            if tx.send(Cmd::Add(conn.clone(), ready)).await.is_ok() {
                // Not Ok(true): the task was closing as we came; try a new one.
                if let Ok(true) = answer.await {
                    return true;
                }
            }
            if let Ok(mut rooms) = self.rooms.lock() {
                if rooms.get(&key).is_some_and(|t| t.same_channel(&tx)) {
                    rooms.remove(&key);
                    self.metrics.rooms.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        false
    }

    /// Removes connection `id` from the room `room_key`.
    pub async fn exit(&self, room_key: &str, id: u64) {
        let tx = self
            .rooms
            .lock()
            .ok()
            .and_then(|r| r.get(room_key).cloned());
        if let Some(tx) = tx {
            let _ = tx.send(Cmd::Remove(id)).await;
        }
    }
}

/// One room's fan-out: its subject (and, for `r/` rooms, the subreddit's new
/// posts) to its local members.
async fn room_task(hub: Arc<Hub>, room: Room, mut rx: mpsc::Receiver<Cmd>, me: mpsc::Sender<Cmd>) {
    let key = room.key();
    let sub = hub.nats.subscribe(subject::chat::room(&key)).await;
    let posts = match &room {
        Room::Sub(n) => hub
            .nats
            .subscribe(subject::subreddit_events(n.key()))
            .await
            .ok(),
        Room::Chat(_) => None,
    };
    // Make sure the server has the subscriptions before anyone counts on them.
    let ok = sub.is_ok() && hub.nats.flush().await.is_ok();
    let (mut sub, mut posts) = match (sub, ok) {
        (Ok(s), true) => (s, posts),
        (Err(e), _) => {
            tracing::warn!("cannot subscribe to room {room}: {e}");
            return close(&hub, &key, &me, rx);
        }
        (Ok(_), false) => {
            tracing::warn!("cannot subscribe to room {room}: flush failed");
            return close(&hub, &key, &me, rx);
        }
    };
    let mut members: HashMap<u64, Arc<Conn>> = HashMap::new();
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(Cmd::Add(conn, ready)) => {
                    members.insert(conn.id, conn);
                    let _ = ready.send(true);
                }
                Some(Cmd::Remove(id)) => {
                    members.remove(&id);
                    if members.is_empty() {
                        return close(&hub, &key, &me, rx);
                    }
                }
                None => return,
            },
            msg = sub.next() => {
                let Some(msg) = msg else {
                    for m in members.values() {
                        m.kill(format!("this gateway lost room {room}; reconnect"));
                    }
                    return close(&hub, &key, &me, rx);
                };
                let Ok(ev) = serde_json::from_slice::<RoomEvent>(&msg.payload) else {
                    continue;
                };
                let line = ev.render(&hub.clock);
                fan_out(&hub, &mut members, Rendered { id: ev.id, line });
            }
            Some(msg) = next(&mut posts) => {
                let Ok(PushEvent::Post { post }) = reddit_shared::codec::decode::<PushEvent>(&msg.payload) else {
                    continue;
                };
                let line = format!(
                    "{}-- new post in {room} by {}: {} (post {})",
                    hub.clock.stamp(post.created_at),
                    post.author,
                    crate::line::clean(&post.title),
                    post.id
                );
                fan_out(&hub, &mut members, Rendered { id: post.id.to_string(), line });
            }
        }
    }
}

async fn next(sub: &mut Option<async_nats::Subscriber>) -> Option<async_nats::Message> {
    match sub {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

fn fan_out(hub: &Hub, members: &mut HashMap<u64, Arc<Conn>>, r: Rendered) {
    let r = Arc::new(r);
    let mut delivered = 0;
    members.retain(|_, m| {
        if m.send(Out::Room(r.clone())) {
            delivered += 1;
            true
        } else {
            if m.cancel.is_cancelled() && m.why().is_some_and(|w| w.contains("too slow")) {
                hub.metrics.too_slow.fetch_add(1, Ordering::Relaxed);
            }
            false
        }
    });
    hub.metrics
        .delivered
        .fetch_add(delivered, Ordering::Relaxed);
}

/// Forgets the room (if this task is still its task) and turns away anyone
/// who arrived meanwhile, who then starts a new task.
fn close(hub: &Hub, key: &str, me: &mpsc::Sender<Cmd>, mut rx: mpsc::Receiver<Cmd>) {
    if let Ok(mut rooms) = hub.rooms.lock() {
        if rooms.get(key).is_some_and(|t| t.same_channel(me)) {
            rooms.remove(key);
            hub.metrics.rooms.fetch_sub(1, Ordering::Relaxed);
        }
    }
    rx.close();
    while let Ok(cmd) = rx.try_recv() {
        if let Cmd::Add(_, ready) = cmd {
            let _ = ready.send(false);
        }
    }
}
