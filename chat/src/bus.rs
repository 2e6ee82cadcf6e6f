//! Everything the chat keeps on NATS, so that no gateway holds shared state:
//! the history stream (`CHAT_ROOMS`, bounded per room by count and age), the
//! names bucket (one entry per connected name, expiring unless renewed), the
//! rooms bucket (rooms persist), and a [`Directory`] that every gateway keeps
//! from watching both buckets, for `/who` and `/rooms`.

use crate::wire::{NameEntry, RoomEntry, RoomEvent};
use crate::ChatError;
use async_nats::jetstream::{self, kv, stream};
use futures::StreamExt;
use reddit_shared::subject::chat as subjects;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How the chat's streams and buckets are made (when a gateway finds them
/// missing; an existing one is used as it is).
#[derive(Clone, Debug)]
pub struct Storage {
    /// Lines kept per room.
    pub history_per_room: i64,
    /// How long a line is kept.
    pub history_age: Duration,
    /// How long a name outlives its gateway (renewed at a third of it).
    pub name_ttl: Duration,
    /// Replicas of each (1 on a single server, 3 on a 3-node cluster).
    pub replicas: usize,
}

/// The chat's handles on JetStream.
#[derive(Clone)]
pub struct Bus {
    /// The core connection (room subjects, private messages).
    pub nats: async_nats::Client,
    js: jetstream::Context,
    /// Lines kept per room.
    keep: i64,
    /// Connected names.
    pub names: kv::Store,
    /// Rooms that exist.
    pub rooms: kv::Store,
}

fn nats_err(what: &'static str) -> impl Fn(async_nats::Error) -> ChatError {
    move |e| ChatError::Nats { what, source: e }
}

impl Bus {
    /// Finds or makes the stream and the buckets.
    pub async fn open(nats: async_nats::Client, storage: &Storage) -> Result<Self, ChatError> {
        let js = jetstream::new(nats.clone());
        js.get_or_create_stream(stream::Config {
            name: subjects::HISTORY_STREAM.to_owned(),
            description: Some("reddit-chat: every room's recent lines".to_owned()),
            subjects: vec![subjects::all_rooms()],
            max_messages_per_subject: storage.history_per_room,
            max_age: storage.history_age,
            discard: stream::DiscardPolicy::Old,
            storage: stream::StorageType::File,
            num_replicas: storage.replicas,
            // History is read with batched direct gets, not consumers.
            allow_direct: true,
            ..Default::default()
        })
        .await
        .map_err(|e| nats_err("cannot open the history stream")(e.into()))?;
        let names = bucket(
            &js,
            kv::Config {
                bucket: subjects::NAMES_BUCKET.to_owned(),
                description: "reddit-chat: connected names (expire unless renewed)".to_owned(),
                history: 1,
                max_age: storage.name_ttl,
                // Expiry leaves a marker, so that every gateway's watch sees it.
                limit_markers: Some(storage.name_ttl.max(Duration::from_secs(1))),
                storage: stream::StorageType::File,
                num_replicas: storage.replicas,
                ..Default::default()
            },
        )
        .await?;
        let rooms = bucket(
            &js,
            kv::Config {
                bucket: subjects::ROOMS_BUCKET.to_owned(),
                description: "reddit-chat: rooms".to_owned(),
                history: 1,
                storage: stream::StorageType::File,
                num_replicas: storage.replicas,
                ..Default::default()
            },
        )
        .await?;
        Ok(Self {
            nats,
            js,
            keep: storage.history_per_room,
            names,
            rooms,
        })
    }

    /// Publishes `event` to its room (every gateway with members there shows
    /// it) and waits until the history stream has stored it.
    pub async fn publish(&self, room_key: &str, event: &RoomEvent) -> Result<(), ChatError> {
        let body = serde_json::to_vec(event).map_err(ChatError::Encode)?;
        let ack = self
            .js
            .publish(subjects::room(room_key), body.into())
            .await
            .map_err(|e| nats_err("cannot send to the room")(e.into()))?;
        ack.await
            .map_err(|e| nats_err("the room's history did not store the line")(e.into()))?;
        Ok(())
    }

    /// The last `n` events of a room, oldest first: one batched direct get of
    /// everything the stream keeps for the room (at most
    /// [`Storage::history_per_room`]), no consumer.
    pub async fn history(&self, room_key: &str, n: usize) -> Result<Vec<RoomEvent>, ChatError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let fail = nats_err("cannot read a room's history");
        let inbox = self.nats.new_inbox();
        let mut replies = self
            .nats
            .subscribe(inbox.clone())
            .await
            .map_err(|e| fail(e.into()))?;
        let request = serde_json::json!({
            "seq": 1,
            "next_by_subj": subjects::room(room_key),
            "batch": self.keep,
        });
        self.nats
            .publish_with_reply(
                format!("$JS.API.DIRECT.GET.{}", subjects::HISTORY_STREAM),
                inbox,
                request.to_string().into(),
            )
            .await
            .map_err(|e| fail(e.into()))?;
        let mut out = std::collections::VecDeque::with_capacity(n.min(1024));
        loop {
            let msg = match tokio::time::timeout(Duration::from_secs(5), replies.next()).await {
                Ok(Some(m)) => m,
                Ok(None) => return Err(fail("the history read ended early".into())),
                Err(_) => return Err(fail("no answer from JetStream in 5 s".into())),
            };
            match msg.status.map(|s| s.as_u16()) {
                // 204 ends a batch; 404: the room has no history.
                Some(204) | Some(404) => break,
                Some(code) => {
                    let why = msg.description.unwrap_or_default();
                    return Err(fail(format!("JetStream answered {code} {why}").into()));
                }
                None => {}
            }
            if let Ok(ev) = serde_json::from_slice::<RoomEvent>(&msg.payload) {
                if out.len() == n {
                    out.pop_front();
                }
                out.push_back(ev);
            }
        }
        Ok(out.into())
    }
}

async fn bucket(js: &jetstream::Context, config: kv::Config) -> Result<kv::Store, ChatError> {
    if let Ok(store) = js.get_key_value(&config.bucket).await {
        return Ok(store);
    }
    match js.create_key_value(config.clone()).await {
        Ok(store) => Ok(store),
        // Another gateway made it in the meantime.
        Err(first) => js
            .get_key_value(&config.bucket)
            .await
            .map_err(|_| nats_err("cannot open a KV bucket")(first.into())),
    }
}

/// Every connected name and every room, on every gateway, as this gateway last
/// heard from the buckets (milliseconds behind).
#[derive(Debug, Default)]
pub struct Directory {
    /// Name key → entry.
    pub names: HashMap<String, NameEntry>,
    /// Room key → entry.
    pub rooms: BTreeMap<String, RoomEntry>,
}

impl Directory {
    /// Who is in the room `room_key`, sorted by name.
    pub fn members(&self, room_key: &str) -> Vec<&NameEntry> {
        let mut v: Vec<_> = self.names.values().filter(|e| e.room == room_key).collect();
        v.sort_by(|a, b| a.who.name().key().cmp(b.who.name().key()));
        v
    }

    /// Members per room key.
    pub fn counts(&self) -> HashMap<&str, usize> {
        let mut counts = HashMap::new();
        for e in self.names.values() {
            *counts.entry(e.room.as_str()).or_insert(0) += 1;
        }
        counts
    }
}

/// A directory kept current by watching the buckets until `stop`.
pub fn watch(bus: &Bus, stop: tokio_util::sync::CancellationToken) -> Arc<RwLock<Directory>> {
    let dir = Arc::new(RwLock::new(Directory::default()));
    tokio::spawn(keep(
        bus.names.clone(),
        dir.clone(),
        stop.clone(),
        |d, key, value| {
            let Some(key) = key else {
                d.names.clear();
                return;
            };
            match value.and_then(|v| serde_json::from_slice::<NameEntry>(v).ok()) {
                Some(e) => d.names.insert(key.to_owned(), e).map(|_| ()),
                None => d.names.remove(key).map(|_| ()),
            };
        },
    ));
    tokio::spawn(keep(
        bus.rooms.clone(),
        dir.clone(),
        stop,
        |d, key, value| {
            let Some(key) = key else {
                d.rooms.clear();
                return;
            };
            match value.and_then(|v| serde_json::from_slice::<RoomEntry>(v).ok()) {
                Some(e) => d.rooms.insert(key.to_owned(), e).map(|_| ()),
                None => d.rooms.remove(key).map(|_| ()),
            };
        },
    ));
    dir
}

/// Applies one entry (key, value; no value: deleted or expired) to a
/// directory; no key: forget the bucket's entries (a new watch resends them).
type Apply = fn(&mut Directory, Option<&str>, Option<&[u8]>);

/// Applies every change of `store` to `dir`; after a lost watch (NATS
/// restarted), watches again from the start.
async fn keep(
    store: kv::Store,
    dir: Arc<RwLock<Directory>>,
    stop: tokio_util::sync::CancellationToken,
    apply: Apply,
) {
    let mut delays =
        reddit_shared::backoff::delays(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        let watch = tokio::select! {
            _ = stop.cancelled() => return,
            w = store.watch_with_history(">") => w,
        };
        match watch {
            Ok(mut watch) => {
                if let Ok(mut d) = dir.write() {
                    apply(&mut d, None, None);
                }
                loop {
                    let next = tokio::select! {
                        _ = stop.cancelled() => return,
                        n = watch.next() => n,
                    };
                    let Some(Ok(entry)) = next else { break };
                    let value =
                        matches!(entry.operation, kv::Operation::Put).then_some(&entry.value);
                    if let Ok(mut d) = dir.write() {
                        apply(&mut d, Some(&entry.key), value.map(|v| &v[..]));
                    }
                }
            }
            Err(e) => tracing::warn!("cannot watch the {} bucket: {e}", store.name),
        }
        let delay = delays.next().unwrap_or(Duration::from_secs(2));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}
