//! The reply cache that makes retries safe: the reply of every write that carried an
//! idempotency key, by key, bounded (oldest first out). It is rebuilt by replaying
//! the write-ahead log (each log entry carries its key and reply) and saved in
//! snapshots, so a retry after a crash still finds the original answer.

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

/// Default number of replies remembered per shard.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// One remembered reply.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Cached {
    /// The cache key (operation, caller and idempotency key).
    pub key: String,
    /// Hash of the request payload, to catch a key reused for another request.
    pub hash: u64,
    /// The encoded reply body.
    #[serde(with = "serde_bytes")]
    pub reply: Vec<u8>,
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

/// Bounded map from key to reply.
#[derive(Clone, Debug)]
pub struct ReplyCache {
    map: HashMap<String, (u64, Vec<u8>)>,
    order: VecDeque<String>,
    capacity: usize,
}

impl ReplyCache {
    /// An empty cache holding at most `capacity` replies.
    pub fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Looks `key` up for a request whose payload hashes to `hash`.
    pub fn lookup(&self, key: &str, hash: u64) -> Lookup<'_> {
        match self.map.get(key) {
            None => Lookup::Miss,
            Some((h, reply)) if *h == hash => Lookup::Hit(reply),
            Some(_) => Lookup::Mismatch,
        }
    }

    /// Remembers a reply, forgetting the oldest beyond capacity.
    pub fn insert(&mut self, entry: Cached) {
        if self
            .map
            .insert(entry.key.clone(), (entry.hash, entry.reply))
            .is_none()
        {
            self.order.push_back(entry.key);
        }
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }

    /// Most replies held (the oldest go first beyond it).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Replies held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every reply, oldest first (for a snapshot).
    pub fn entries(&self) -> impl Iterator<Item = Cached> + '_ {
        self.order.iter().filter_map(|key| {
            self.map.get(key).map(|(hash, reply)| Cached {
                key: key.clone(),
                hash: *hash,
                reply: reply.clone(),
            })
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
            key: key.into(),
            hash,
            reply: key.as_bytes().to_vec(),
        }
    }

    #[test]
    fn hits_misses_mismatches_and_eviction() {
        let mut c = ReplyCache::new(2);
        c.insert(entry("a", 1));
        assert_eq!(c.lookup("a", 1), Lookup::Hit(b"a"));
        assert_eq!(c.lookup("a", 2), Lookup::Mismatch);
        assert_eq!(c.lookup("b", 1), Lookup::Miss);
        c.insert(entry("b", 1));
        c.insert(entry("c", 1));
        assert_eq!(c.lookup("a", 1), Lookup::Miss, "the oldest is forgotten");
        assert_eq!(c.len(), 2);
        let keys: Vec<String> = c.entries().map(|e| e.key).collect();
        assert_eq!(keys, ["b", "c"]);
    }
}
