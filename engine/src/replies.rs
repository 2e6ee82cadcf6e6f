//! The reply cache that makes retries safe: the reply of every write that carried an
//! idempotency key, by key, bounded (oldest first out). It is rebuilt by replaying
//! the write-ahead log (each log entry carries its key and reply) and saved in
//! snapshots, so a retry after a crash still finds the original answer.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;

/// Default number of replies remembered per shard.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// Most replies each half of a [`ReplyCache`] makes room for when it is
/// made (beyond, it grows as it fills).
pub const PREALLOCATED: usize = 1 << 20;

/// What a reply is remembered under: the first 16 bytes of the SHA-256 of
/// `operation ␟ caller ␟ idempotency key` (the key as a lower-case hyphenated
/// UUID, `␟` the unit separator U+001F). Every log entry and snapshot carries
/// one, so it is 16 bytes instead of the 50–60 of the text; a caller cannot
/// make their key collide with another caller's (that would need a second
/// preimage of SHA-256 truncated to 128 bits). Logs and snapshots of older
/// versions hold the text itself, and decode to the same key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplyKey([u8; 16]);

impl ReplyKey {
    /// The key of operation `op` by `caller` (empty for registration) with
    /// idempotency key `id`.
    pub fn new(op: &str, caller: &str, id: uuid::Uuid) -> Self {
        let mut text = uuid::Uuid::encode_buffer();
        let id = id.hyphenated().encode_lower(&mut text);
        Self::digest(&[
            op.as_bytes(),
            b"\x1f",
            caller.as_bytes(),
            b"\x1f",
            id.as_bytes(),
        ])
    }

    /// The key's 16 bytes.
    pub fn bytes(&self) -> [u8; 16] {
        self.0
    }

    /// The key of the text older versions stored (`op ␟ caller ␟ id`).
    pub fn of_text(text: &str) -> Self {
        Self::digest(&[text.as_bytes()])
    }

    fn digest(parts: &[&[u8]]) -> Self {
        let mut h = Sha256::new();
        for part in parts {
            h.update(part);
        }
        let mut key = [0; 16];
        key.copy_from_slice(&h.finalize()[..16]);
        Self(key)
    }
}

impl fmt::Debug for ReplyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReplyKey({})", hex::encode(self.0))
    }
}

impl Serialize for ReplyKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for ReplyKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ReplyKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("16 bytes, or the text of an older version's key")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<ReplyKey, E> {
                <[u8; 16]>::try_from(v)
                    .map(ReplyKey)
                    .map_err(|_| E::invalid_length(v.len(), &self))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ReplyKey, E> {
                Ok(ReplyKey::of_text(v))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// One remembered reply.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Cached {
    /// The cache key.
    pub key: ReplyKey,
    /// Hash of the request payload, to catch a key reused for another request.
    pub hash: u64,
    /// The encoded reply body, as the client got it (persisted with its field
    /// names as small integers: [`crate::reply_names`]).
    #[serde(with = "stored_reply")]
    pub reply: Vec<u8>,
}

/// How [`Cached::reply`] is persisted: compact on the way out, as the client
/// got it on the way in (older versions' plain replies read unchanged).
mod stored_reply {
    use crate::reply_names;
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::borrow::Cow;

    pub fn serialize<S: Serializer>(reply: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&reply_names::compact(reply))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let stored = serde_bytes::ByteBuf::deserialize(d)?;
        let expanded = match reply_names::expand(&stored) {
            Ok(Cow::Owned(reply)) => Some(reply),
            Ok(Cow::Borrowed(_)) => None,
            Err(e) => return Err(D::Error::custom(e)),
        };
        Ok(expanded.unwrap_or_else(|| stored.into_vec()))
    }
}

/// What a lookup found.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// Not seen (or forgotten): handle the request.
    Miss,
    /// Seen with the same payload: answer with this reply.
    Hit(&'a [u8]),
    /// Seen with a different payload: the key was reused.
    Mismatch,
}

/// Bounded map from key to reply: it remembers at least the last `capacity`
/// replies inserted, and at most twice as many.
///
/// Kept in two halves of up to `capacity` replies each: replies go into the
/// current half; when it is full it becomes the previous half and the old
/// previous one is forgotten, dropped on a thread of its own
/// ([`crate::memory::drop_elsewhere`]). One map that forgot its oldest reply
/// at each insert filled with tombstones, and now and then rehashed them away
/// in place, within one insert: 4–44 ms at 100,000 replies (`cargo bench
/// --bench grow`), during which the shard answered nothing.
#[derive(Clone, Debug)]
pub struct ReplyCache {
    current: Half,
    previous: Half,
    capacity: usize,
}

/// One half of a [`ReplyCache`]: replies by key, and their keys in the
/// order they came (for snapshots, oldest first).
#[derive(Clone, Debug, Default)]
struct Half {
    map: HashMap<ReplyKey, (u64, Vec<u8>)>,
    order: Vec<ReplyKey>,
}

impl Half {
    /// An empty half with room for `capacity` replies (up to
    /// [`PREALLOCATED`]): a map that grows moves every entry to a table
    /// twice the size within one insert (35 ms at the 57,345th reply).
    fn with_room(capacity: usize) -> Self {
        let room = capacity.min(PREALLOCATED);
        Self {
            map: HashMap::with_capacity(room),
            order: Vec::with_capacity(room),
        }
    }
}

impl ReplyCache {
    /// An empty cache remembering at least the last `capacity` replies.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            current: Half::with_room(capacity),
            previous: Half::default(),
            capacity,
        }
    }

    /// Looks `key` up for a request whose payload hashes to `hash`.
    pub fn lookup(&self, key: &ReplyKey, hash: u64) -> Lookup<'_> {
        match self
            .current
            .map
            .get(key)
            .or_else(|| self.previous.map.get(key))
        {
            None => Lookup::Miss,
            Some((h, reply)) if *h == hash => Lookup::Hit(reply),
            Some(_) => Lookup::Mismatch,
        }
    }

    /// Remembers a reply, forgetting the older half once the current one is
    /// full.
    pub fn insert(&mut self, entry: Cached) {
        if self.current.order.len() >= self.capacity && !self.current.map.contains_key(&entry.key) {
            let full = std::mem::replace(&mut self.current, Half::with_room(self.capacity));
            crate::memory::drop_elsewhere(std::mem::replace(&mut self.previous, full));
        }
        if self
            .current
            .map
            .insert(entry.key, (entry.hash, entry.reply))
            .is_none()
        {
            self.current.order.push(entry.key);
        }
    }

    /// The replies remembered at least (the last this many inserted).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Replies held (one inserted again while in the older half counts
    /// twice).
    pub fn len(&self) -> usize {
        self.current.map.len() + self.previous.map.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every reply, oldest first (for a snapshot); one in both halves only
    /// as its newer self.
    pub fn entries(&self) -> impl Iterator<Item = Cached> + '_ {
        let older = self
            .previous
            .order
            .iter()
            .filter(|key| !self.current.map.contains_key(*key))
            .filter_map(|key| self.previous.map.get(key).map(|v| (key, v)));
        let newer = self
            .current
            .order
            .iter()
            .filter_map(|key| self.current.map.get(key).map(|v| (key, v)));
        older.chain(newer).map(|(key, (hash, reply))| Cached {
            key: *key,
            hash: *hash,
            reply: reply.clone(),
        })
    }
}

/// FNV-1a 64 of a request payload (not a security boundary: it only tells an
/// honest client that it reused a key for a different request).
pub fn payload_hash(payload: &[u8]) -> u64 {
    reddit_shared::routing::fnv1a_64(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, hash: u64) -> Cached {
        Cached {
            key: ReplyKey::of_text(key),
            hash,
            reply: key.as_bytes().to_vec(),
        }
    }

    #[test]
    fn hits_misses_mismatches_and_eviction() {
        let mut c = ReplyCache::new(2);
        let [a, b] = ["a", "b"].map(ReplyKey::of_text);
        c.insert(entry("a", 1));
        assert_eq!(c.lookup(&a, 1), Lookup::Hit(b"a"));
        assert_eq!(c.lookup(&a, 2), Lookup::Mismatch);
        assert_eq!(c.lookup(&b, 1), Lookup::Miss);
        c.insert(entry("b", 1));
        c.insert(entry("c", 1));
        assert_eq!(
            c.lookup(&a, 1),
            Lookup::Hit(b"a"),
            "the last 2 and up to 2 more are remembered"
        );
        c.insert(entry("d", 1));
        c.insert(entry("e", 1));
        assert_eq!(c.lookup(&a, 1), Lookup::Miss, "the oldest are forgotten");
        assert_eq!(c.lookup(&b, 1), Lookup::Miss);
        assert_eq!(c.len(), 3);
        let keys: Vec<ReplyKey> = c.entries().map(|e| e.key).collect();
        assert_eq!(keys, ["c", "d", "e"].map(ReplyKey::of_text));
    }

    /// However many replies go in, the last `capacity` are remembered and at
    /// most twice as many are held; a key inserted again is listed once, as
    /// its newer reply, in its newer place.
    #[test]
    fn the_last_capacity_replies_are_always_remembered() {
        let capacity = 100;
        let mut c = ReplyCache::new(capacity);
        for i in 0..1000 {
            c.insert(entry(&format!("k{i}"), 1));
            assert!(c.len() <= 2 * capacity);
            for back in 0..capacity.min(i + 1) {
                let key = ReplyKey::of_text(&format!("k{}", i - back));
                assert_ne!(c.lookup(&key, 1), Lookup::Miss, "k{} at {i}", i - back);
            }
        }
        // A new half begins; "k950" is in the older one: inserted again, it
        // is listed once.
        c.insert(entry("fresh", 1));
        let again = Cached {
            reply: b"new".to_vec(),
            ..entry("k950", 1)
        };
        c.insert(again);
        let key = ReplyKey::of_text("k950");
        assert_eq!(c.lookup(&key, 1), Lookup::Hit(b"new"));
        let listed: Vec<Cached> = c.entries().filter(|e| e.key == key).collect();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].reply, b"new");
        let last = c.entries().last().unwrap();
        assert_eq!(last.key, key, "listed where it was inserted last");
    }

    /// A retry after an upgrade finds the reply an older version logged
    /// under the key's text; the key is 16 bytes in what is written now.
    #[test]
    fn keys_are_16_bytes_and_older_text_keys_decode_to_the_same_key() {
        let id = uuid::Uuid::now_v7();
        let key = ReplyKey::new("vote.cast", "alice", id);
        let text = format!("vote.cast\u{1f}alice\u{1f}{id}");
        assert_eq!(key, ReplyKey::of_text(&text));
        assert_ne!(key, ReplyKey::new("vote.cast", "bob", id));
        assert_ne!(key, ReplyKey::new("post.create", "alice", id));

        #[derive(Serialize)]
        struct Older<'a> {
            key: &'a str,
            hash: u64,
            #[serde(with = "serde_bytes")]
            reply: &'a [u8],
        }
        for named in [false, true] {
            let older = Older {
                key: &text,
                hash: 7,
                reply: b"r",
            };
            let bytes = if named {
                rmp_serde::to_vec_named(&older)
            } else {
                rmp_serde::to_vec(&older)
            }
            .unwrap();
            let cached: Cached = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(cached.key, key);
        }
        let now = rmp_serde::to_vec(&entry("x", 1)).unwrap();
        assert_eq!(
            rmp_serde::from_slice::<Cached>(&now).unwrap(),
            entry("x", 1)
        );
        assert!(now.len() < 16 + 2 + 9 + 4, "{} bytes", now.len());
        // A key of the wrong length is refused, not padded.
        let short = rmp_serde::to_vec(&(
            serde_bytes::Bytes::new(&[1; 15]),
            1u64,
            serde_bytes::Bytes::new(b"r"),
        ))
        .unwrap();
        assert!(rmp_serde::from_slice::<Cached>(&short).is_err());
    }
}
