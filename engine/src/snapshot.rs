//! The snapshot format: a shard's state and reply cache as of a log record, in
//! parts that decode in parallel.
//!
//! Format 3 (`reddit-snapshot-3`), byte by byte:
//!
//! ```text
//! MAGIC (8 bytes) | part 0 | part 1 | ... | header | header length (u32, little-endian)
//! ```
//!
//! - Each **part** is one MessagePack value: some of the users (an array of
//!   `[name key, user]` pairs), some of the subreddits (likewise), the reply
//!   cache (an array of cached replies), the ids minted for idempotency keys,
//!   or the DMs delivered but not yet confirmed durable by their recipients'
//!   shards (absent from older snapshots: none).
//!   Users are spread over [`USER_PARTS`] parts, subreddits over
//!   [`SUBREDDIT_PARTS`] parts of about equal weight. Structs inside a part are
//!   arrays of their fields in declaration order (`serde(skip)` fields left
//!   out), not maps of field names: at a million users the names were over
//!   40% of the bytes. [`crate::fields`] says what that demands of every
//!   snapshotted struct.
//! - The **header** is a MessagePack map `{format, shard, shards, seq, totals,
//!   parts: [{kind, start, len}]}`; `start` and `len` locate each part in the
//!   snapshot.
//!
//! Loading decodes the parts on as many threads as the machine has cores (and
//! rebuilds each subreddit's rank indexes on the thread that decoded it), then
//! puts the maps together. Older snapshots still load: format 2
//! (`reddit-snapshot-2`, the same layout with structs as maps of field names)
//! and format 1 (`reddit-wal-1`: one MessagePack map with the whole state in
//! it, which only one thread can decode).

use crate::fields::Fields;
use crate::pace::{Pace, PacedVec};
use crate::replies::{Cached, ReplyCache};
use crate::state::{Deliveries, MintedIds, ShardState, Subreddit, Totals, User};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// First bytes of a format-3 snapshot. A format-1 snapshot starts with a
/// MessagePack map marker, never with these.
const MAGIC: &[u8; 8] = b"RSNAP\x00\x03\x00";
/// The header's format tag.
const FORMAT: &str = "reddit-snapshot-3";
/// First bytes of a format-2 snapshot (format 3's layout, structs as maps).
const MAGIC_2: &[u8; 8] = b"RSNAP\x00\x02\x00";
/// Format 2's header tag.
const FORMAT_2: &str = "reddit-snapshot-2";
/// The format tag of the older, single-value snapshots.
const FORMAT_1: &str = crate::wal::FORMAT;
/// Parts the users are spread over.
pub const USER_PARTS: usize = 4;
/// Parts the subreddits are spread over (more than this box's cores, so that
/// threads that finish early take the rest).
pub const SUBREDDIT_PARTS: usize = 8;

/// Why a snapshot could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// MessagePack encoding failed.
    #[error("cannot encode the snapshot: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// A part or the header is not valid MessagePack of the expected shape.
    #[error("cannot decode the snapshot's {what}: {source}")]
    Decode {
        /// Which part (or the header).
        what: String,
        /// Why.
        #[source]
        source: rmp_serde::decode::Error,
    },
    /// The layout is broken: truncated, parts out of bounds, an unknown format.
    #[error("the snapshot is malformed: {0}")]
    Layout(String),
}

/// What a part holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Users,
    Subreddits,
    Replies,
    Minted,
    Deliveries,
}

/// Where a part is.
#[derive(Debug, Serialize, Deserialize)]
struct Part {
    kind: Kind,
    start: u64,
    len: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    format: String,
    shard: u32,
    shards: u32,
    seq: u64,
    totals: Totals,
    parts: Vec<Part>,
}

/// A format-1 snapshot.
#[derive(Deserialize)]
struct SnapshotV1 {
    format: String,
    shard: u32,
    shards: u32,
    seq: u64,
    state: ShardState,
    #[serde(default)]
    replies: Vec<Cached>,
}

/// Some entries of a map, serialized as an array of pairs.
struct Pairs<'a, V>(Vec<(&'a String, &'a V)>);

impl<V: Serialize> Serialize for Pairs<'_, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

/// The reply cache's entries, oldest first.
struct Replies<'a>(&'a ReplyCache);

impl Serialize for Replies<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.entries())
    }
}

/// Appends `value` to `out` as the next part.
fn put<T: Serialize>(
    out: &mut PacedVec<'_>,
    parts: &mut Vec<Part>,
    kind: Kind,
    value: &T,
    fields: Fields,
) -> Result<(), SnapshotError> {
    let start = out.len();
    fields.write(out, value)?;
    parts.push(Part {
        kind,
        start: start as u64,
        len: (out.len() - start) as u64,
    });
    Ok(())
}

/// Encodes a snapshot of `state` and `replies` as of record `seq` (format 3).
pub fn encode(
    state: &ShardState,
    replies: &ReplyCache,
    seq: u64,
) -> Result<Vec<u8>, SnapshotError> {
    encode_with_capacity(state, replies, seq, 0)
}

/// [`encode`] into a buffer of `capacity` bytes to begin with (e.g. a little
/// more than the last snapshot took): a snapshot of 180 MiB grown by doubling
/// is reallocated and copied about 28 times.
pub fn encode_with_capacity(
    state: &ShardState,
    replies: &ReplyCache,
    seq: u64,
    capacity: usize,
) -> Result<Vec<u8>, SnapshotError> {
    encode_as(state, replies, seq, capacity, Fields::Positional)
}

/// [`encode_with_capacity`] at `pace`: the calling thread sleeps as the
/// rate demands (a thread of its own, never a runtime's).
pub fn encode_paced(
    state: &ShardState,
    replies: &ReplyCache,
    seq: u64,
    capacity: usize,
    pace: &Pace,
) -> Result<Vec<u8>, SnapshotError> {
    encode_inner(state, replies, seq, capacity, Fields::Positional, pace)
}

/// [`encode_with_capacity`] in the format `fields` says.
pub fn encode_as(
    state: &ShardState,
    replies: &ReplyCache,
    seq: u64,
    capacity: usize,
    fields: Fields,
) -> Result<Vec<u8>, SnapshotError> {
    encode_inner(state, replies, seq, capacity, fields, &Pace::unpaced())
}

fn encode_inner(
    state: &ShardState,
    replies: &ReplyCache,
    seq: u64,
    capacity: usize,
    fields: Fields,
    pace: &Pace,
) -> Result<Vec<u8>, SnapshotError> {
    let (users, subs, totals, minted, deliveries) = state.snapshot_pieces();
    let (magic, format) = match fields {
        Fields::Named => (MAGIC_2, FORMAT_2),
        Fields::Positional => (MAGIC, FORMAT),
    };
    let mut bytes = Vec::with_capacity(capacity);
    bytes.extend_from_slice(magic);
    let mut out = pace.writer(&mut bytes);
    let mut parts = Vec::new();

    let mut user_parts: Vec<Pairs<'_, User>> = (0..USER_PARTS).map(|_| Pairs(Vec::new())).collect();
    for (i, pair) in users.iter().enumerate() {
        user_parts[i % USER_PARTS].0.push(pair);
    }
    // Heaviest first, each into the lightest part so far.
    let mut by_weight: Vec<(&String, &Subreddit)> = subs.iter().collect();
    by_weight.sort_by_cached_key(|(_, s)| std::cmp::Reverse(s.snapshot_weight()));
    let mut sub_parts: Vec<(usize, Pairs<'_, Subreddit>)> = (0..SUBREDDIT_PARTS)
        .map(|_| (0, Pairs(Vec::new())))
        .collect();
    for (name, sub) in by_weight {
        if let Some(lightest) = sub_parts.iter_mut().min_by_key(|(w, _)| *w) {
            lightest.0 += sub.snapshot_weight();
            lightest.1 .0.push((name, sub));
        }
    }

    for p in &user_parts {
        put(&mut out, &mut parts, Kind::Users, p, fields)?;
    }
    for (_, p) in &sub_parts {
        put(&mut out, &mut parts, Kind::Subreddits, p, fields)?;
    }
    put(
        &mut out,
        &mut parts,
        Kind::Replies,
        &Replies(replies),
        fields,
    )?;
    put(&mut out, &mut parts, Kind::Minted, minted, fields)?;
    if !deliveries.is_empty() {
        put(&mut out, &mut parts, Kind::Deliveries, deliveries, fields)?;
    }

    let header_start = out.len();
    out.finish();
    rmp_serde::encode::write_named(
        &mut bytes,
        &Header {
            format: format.to_owned(),
            shard: state.shard(),
            shards: state.shards(),
            seq,
            totals,
            parts,
        },
    )?;
    let header_len = u32::try_from(bytes.len() - header_start)
        .map_err(|_| SnapshotError::Layout("the header is over 4 GiB".into()))?;
    bytes.extend_from_slice(&header_len.to_le_bytes());
    Ok(bytes)
}

/// A decoded snapshot.
#[derive(Debug)]
pub struct Loaded {
    /// Shard it is of.
    pub shard: u32,
    /// Shard count it was made with.
    pub shards: u32,
    /// The last record it covers.
    pub seq: u64,
    /// The state, ready to serve (indexes rebuilt).
    pub state: ShardState,
    /// The reply cache's entries, oldest first.
    pub replies: Vec<Cached>,
    /// Wall time decoding (formats 2 and 3: all parts, in parallel, including
    /// each subreddit's indexes).
    pub decode: Duration,
    /// Wall time after decoding: putting the parts' maps together (formats 2
    /// and 3), or rebuilding the indexes (format 1).
    pub index: Duration,
}

/// One decoded part.
enum Decoded {
    Users(Vec<(String, User)>),
    Subreddits(Vec<(String, Subreddit)>),
    Replies(Vec<Cached>),
    Minted(MintedIds),
    Deliveries(Deliveries),
}

/// `bytes` as MessagePack, `what` naming it in the error.
fn from_msgpack<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: impl FnOnce() -> String,
) -> Result<T, SnapshotError> {
    rmp_serde::from_slice(bytes).map_err(|source| SnapshotError::Decode {
        what: what(),
        source,
    })
}

/// Refuses a snapshot whose format is not `expected`.
fn check_format(found: &str, expected: &str) -> Result<(), SnapshotError> {
    if found == expected {
        Ok(())
    } else {
        Err(SnapshotError::Layout(format!("unknown format {found:?}")))
    }
}

fn decode_part(bytes: &[u8], kind: Kind, index: usize) -> Result<Decoded, SnapshotError> {
    let what = || format!("part {index} ({kind:?})");
    Ok(match kind {
        Kind::Users => Decoded::Users(from_msgpack(bytes, what)?),
        Kind::Subreddits => {
            let mut subs: Vec<(String, Subreddit)> = from_msgpack(bytes, what)?;
            for (_, sub) in &mut subs {
                sub.after_load();
            }
            Decoded::Subreddits(subs)
        }
        Kind::Replies => Decoded::Replies(from_msgpack(bytes, what)?),
        Kind::Minted => Decoded::Minted(from_msgpack(bytes, what)?),
        Kind::Deliveries => Decoded::Deliveries(from_msgpack(bytes, what)?),
    })
}

/// Decodes a snapshot of any format, on up to `threads` threads (formats 2
/// and 3).
pub fn decode(bytes: &[u8], threads: usize) -> Result<Loaded, SnapshotError> {
    let started = Instant::now();
    // Formats 2 and 3 differ only inside the parts, and a struct decodes
    // from a map of its fields as well as from an array of them.
    let format = if bytes.starts_with(MAGIC) {
        FORMAT
    } else if bytes.starts_with(MAGIC_2) {
        FORMAT_2
    } else {
        let s: SnapshotV1 = from_msgpack(bytes, || "whole (format 1)".into())?;
        check_format(&s.format, FORMAT_1)?;
        let decode = started.elapsed();
        let indexing = Instant::now();
        let mut state = s.state;
        state.after_load();
        return Ok(Loaded {
            shard: s.shard,
            shards: s.shards,
            seq: s.seq,
            state,
            replies: s.replies,
            decode,
            index: indexing.elapsed(),
        });
    };

    let truncated = || SnapshotError::Layout("truncated".into());
    let body_end = bytes
        .len()
        .checked_sub(4)
        .filter(|&e| e >= MAGIC.len())
        .ok_or_else(truncated)?;
    let mut len = [0u8; 4];
    len.copy_from_slice(&bytes[body_end..]);
    let header_start = body_end
        .checked_sub(u32::from_le_bytes(len) as usize)
        .filter(|&s| s >= MAGIC.len())
        .ok_or_else(truncated)?;
    let header: Header = from_msgpack(&bytes[header_start..body_end], || "header".into())?;
    check_format(&header.format, format)?;
    let mut slices = Vec::with_capacity(header.parts.len());
    for (i, p) in header.parts.iter().enumerate() {
        let start = usize::try_from(p.start).ok().filter(|&s| s >= MAGIC.len());
        let end = start.and_then(|s| s.checked_add(usize::try_from(p.len).ok()?));
        match (start, end) {
            (Some(start), Some(end)) if end <= header_start => {
                slices.push((i, p.kind, &bytes[start..end]));
            }
            _ => {
                return Err(SnapshotError::Layout(format!(
                    "part {i} lies outside the snapshot"
                )))
            }
        }
    }
    // Largest first, so that the last parts taken are small.
    slices.sort_by_key(|(_, _, b)| std::cmp::Reverse(b.len()));

    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let k = next.fetch_add(1, Ordering::Relaxed);
            let Some(&(i, kind, part)) = slices.get(k) else {
                return done;
            };
            done.push(decode_part(part, kind, i));
        }
    };
    let threads = threads.clamp(1, slices.len().max(1));
    let results: Vec<Result<Decoded, SnapshotError>> = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads)
            .map(|_| {
                std::thread::Builder::new()
                    .name("snapshot-load".into())
                    .spawn_scoped(scope, work)
            })
            .collect();
        let mut all = work();
        for helper in helpers {
            match helper.map(|h| h.join()) {
                Ok(Ok(done)) => all.extend(done),
                // Could not start (the caller's thread then did its share) or
                // panicked (its parts are missing: reported below).
                Ok(Err(_)) => all.push(Err(SnapshotError::Layout(
                    "a decoding thread failed".into(),
                ))),
                Err(_) => {}
            }
        }
        all
    });
    let decode = started.elapsed();

    let assembling = Instant::now();
    let mut users_parts = Vec::new();
    let mut subs_parts = Vec::new();
    let mut replies = Vec::new();
    let mut minted = MintedIds::default();
    let mut deliveries = Deliveries::default();
    let mut seen = 0;
    for result in results {
        seen += 1;
        match result? {
            Decoded::Users(u) => users_parts.push(u),
            Decoded::Subreddits(s) => subs_parts.push(s),
            Decoded::Replies(r) => replies = r,
            Decoded::Minted(m) => minted = m,
            Decoded::Deliveries(d) => deliveries = d,
        }
    }
    if seen != slices.len() {
        return Err(SnapshotError::Layout(format!(
            "{} of {} parts were decoded",
            seen,
            slices.len()
        )));
    }
    let mut users = crate::state::GrowMap::with_capacity_and_hasher(
        users_parts.iter().map(Vec::len).sum(),
        Default::default(),
    );
    users.extend(users_parts.into_iter().flatten());
    let mut subs = HashMap::with_capacity(subs_parts.iter().map(Vec::len).sum());
    subs.extend(subs_parts.into_iter().flatten());
    let state = ShardState::from_snapshot_pieces(
        header.shard,
        header.shards,
        users,
        subs,
        header.totals,
        minted,
        deliveries,
    );
    Ok(Loaded {
        shard: header.shard,
        shards: header.shards,
        seq: header.seq,
        state,
        replies,
        decode,
        index: assembling.elapsed(),
    })
}

/// Threads to decode a snapshot on: the machine's cores.
pub fn load_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replies::ReplyKey;
    use crate::state::tests::{busy_state, fingerprint};

    fn cache(n: usize) -> ReplyCache {
        let mut c = ReplyCache::new(n + 1);
        for i in 0..n {
            c.insert(Cached {
                key: ReplyKey::of_text(&format!("key-{i}")),
                hash: i as u64,
                reply: vec![i as u8; 3],
            });
        }
        c
    }

    fn keys(replies: &[Cached]) -> Vec<ReplyKey> {
        replies.iter().map(|c| c.key).collect()
    }

    #[test]
    fn a_snapshot_in_parts_loads_the_same_state_on_any_number_of_threads() {
        let state = busy_state();
        let replies = cache(5);
        let bytes = encode(&state, &replies, 42).unwrap();
        assert!(bytes.starts_with(MAGIC));
        for threads in [1, 2, 16] {
            let loaded = decode(&bytes, threads).unwrap();
            assert_eq!((loaded.shard, loaded.shards, loaded.seq), (0, 1, 42));
            assert_eq!(fingerprint(&loaded.state), fingerprint(&state));
            assert_eq!(loaded.state.totals().posts, state.totals().posts);
            assert_eq!(
                keys(&loaded.replies),
                ["key-0", "key-1", "key-2", "key-3", "key-4"].map(ReplyKey::of_text),
                "oldest first"
            );
        }
    }

    /// Pacing changes when the bytes are written, never which: a paced
    /// snapshot is the unpaced one, and every byte of its parts went
    /// through the rate.
    #[test]
    fn a_paced_snapshot_is_the_same_bytes() {
        let state = busy_state();
        let replies = cache(5);
        let plain = encode(&state, &replies, 42).unwrap();
        let pace = Pace::new(1 << 30);
        let paced = encode_paced(&state, &replies, 42, 0, &pace).unwrap();
        assert_eq!(paced, plain);
        let header = u32::from_le_bytes(plain[plain.len() - 4..].try_into().unwrap()) as usize;
        assert_eq!(pace.bytes(), plain.len() - MAGIC.len() - header - 4);
    }

    /// Format 3 relies on every field being written: a field that skips
    /// itself when empty (`skip_serializing_if`) would shift the ones after
    /// it. Optional fields set and unset both come back.
    #[test]
    fn optional_fields_set_and_unset_survive_format_3() {
        use reddit_shared::protocol::PostRef;
        let mut state = busy_state();
        let mut fx = crate::state::Effects::default();
        let (alice, rust) = ("alice".parse().unwrap(), "rust".parse().unwrap());
        let plain = state
            .create_post(
                &alice,
                &rust,
                "t".into(),
                "b".into(),
                None,
                None,
                9,
                &mut fx,
            )
            .unwrap();
        let signed = state
            .create_post(
                &alice,
                &rust,
                "t2".into(),
                "b2".into(),
                Some(PostRef {
                    subreddit: rust.clone(),
                    id: plain.id,
                }),
                Some("ab".repeat(64)),
                10,
                &mut fx,
            )
            .unwrap();
        let bytes = encode(&state, &cache(0), 3).unwrap();
        let loaded = decode(&bytes, 2).unwrap().state;
        for id in [plain.id, signed.id] {
            assert_eq!(
                format!("{:?}", loaded.get_post(&rust, id).unwrap()),
                format!("{:?}", state.get_post(&rust, id).unwrap())
            );
        }
        assert_eq!(fingerprint(&loaded), fingerprint(&state));
    }

    #[test]
    fn a_snapshot_of_format_2_still_loads_and_format_3_is_smaller() {
        let state = busy_state();
        let replies = cache(3);
        let named = encode_as(&state, &replies, 9, 0, Fields::Named).unwrap();
        assert!(named.starts_with(MAGIC_2));
        let loaded = decode(&named, 2).unwrap();
        assert_eq!(loaded.seq, 9);
        assert_eq!(fingerprint(&loaded.state), fingerprint(&state));
        assert_eq!(
            keys(&loaded.replies),
            ["key-0", "key-1", "key-2"].map(ReplyKey::of_text)
        );
        let positional = encode(&state, &replies, 9).unwrap();
        assert!(
            positional.len() * 3 < named.len() * 2,
            "format 3 takes {} bytes, format 2 {}",
            positional.len(),
            named.len()
        );
        // Each magic goes with its own format tag.
        let mut mislabelled = positional.clone();
        mislabelled[..MAGIC.len()].copy_from_slice(MAGIC_2);
        assert!(matches!(
            decode(&mislabelled, 2).unwrap_err(),
            SnapshotError::Layout(m) if m.contains("reddit-snapshot-3")
        ));
    }

    #[test]
    fn a_snapshot_of_the_older_single_part_format_still_loads() {
        #[derive(Serialize)]
        struct V1<'a> {
            format: &'static str,
            shard: u32,
            shards: u32,
            seq: u64,
            state: &'a ShardState,
            replies: Replies<'a>,
        }
        let state = busy_state();
        let replies = cache(2);
        let bytes = rmp_serde::to_vec_named(&V1 {
            format: FORMAT_1,
            shard: 0,
            shards: 1,
            seq: 7,
            state: &state,
            replies: Replies(&replies),
        })
        .unwrap();
        let loaded = decode(&bytes, 2).unwrap();
        assert_eq!(loaded.seq, 7);
        assert_eq!(fingerprint(&loaded.state), fingerprint(&state));
        assert_eq!(
            keys(&loaded.replies),
            ["key-0", "key-1"].map(ReplyKey::of_text)
        );
    }

    #[test]
    fn subreddits_spread_over_parts_of_about_equal_weight() {
        let mut state = ShardState::new(0, 1);
        let mut fx = crate::state::Effects::default();
        let alice: reddit_shared::names::Username = "alice".parse().unwrap();
        state.register(&alice, [1; 32], 1).unwrap();
        for i in 0..32 {
            let name: reddit_shared::names::SubredditName = format!("sub{i}").parse().unwrap();
            state
                .create_subreddit(&alice, &name, String::new(), 2)
                .unwrap();
            // Zipf-like: sub0 has 32 posts, sub31 one.
            for p in 0..(32 / (i + 1)).max(1) {
                state
                    .create_post(
                        &alice,
                        &name,
                        format!("p{p}"),
                        "x".repeat(200),
                        None,
                        None,
                        3,
                        &mut fx,
                    )
                    .unwrap();
            }
        }
        let bytes = encode(&state, &cache(0), 1).unwrap();
        let end = bytes.len() - 4;
        let len = u32::from_le_bytes(bytes[end..].try_into().unwrap()) as usize;
        let header: Header = rmp_serde::from_slice(&bytes[end - len..end]).unwrap();
        let kinds = |k| header.parts.iter().filter(|p| p.kind == k).count();
        assert_eq!(kinds(Kind::Users), USER_PARTS);
        assert_eq!(kinds(Kind::Subreddits), SUBREDDIT_PARTS);
        assert_eq!((kinds(Kind::Replies), kinds(Kind::Minted)), (1, 1));
        let sizes: Vec<u64> = header
            .parts
            .iter()
            .filter(|p| p.kind == Kind::Subreddits)
            .map(|p| p.len)
            .collect();
        let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        // The heaviest subreddit alone is about a quarter of all the posts:
        // no part holds much more than that.
        assert!(max <= &(min * 4), "uneven parts: {sizes:?}");
        assert_eq!(
            fingerprint(&decode(&bytes, 2).unwrap().state),
            fingerprint(&state)
        );
    }

    #[test]
    fn a_broken_snapshot_is_an_error_not_a_panic() {
        let state = busy_state();
        let bytes = encode(&state, &cache(3), 1).unwrap();
        let broken = |b: &[u8]| decode(b, 2).unwrap_err();
        // Cut anywhere.
        for cut in [
            0,
            4,
            8,
            9,
            bytes.len() / 2,
            bytes.len() - 5,
            bytes.len() - 1,
        ] {
            broken(&bytes[..cut]);
        }
        // A header length pointing before the parts, or past the start.
        for len in [0u32, 3, u32::MAX] {
            let mut b = bytes.clone();
            let end = b.len() - 4;
            b[end..].copy_from_slice(&len.to_le_bytes());
            broken(&b);
        }
        // A part pointing outside the snapshot.
        let end = bytes.len() - 4;
        let len = u32::from_le_bytes(bytes[end..].try_into().unwrap()) as usize;
        let mut header: Header = rmp_serde::from_slice(&bytes[end - len..end]).unwrap();
        for (start, plen) in [(0, 1), (u64::MAX, 1), (8, u64::MAX), (8, end as u64)] {
            header.parts[0].start = start;
            header.parts[0].len = plen;
            let mut b = bytes[..end - len].to_vec();
            let h = rmp_serde::to_vec_named(&header).unwrap();
            b.extend_from_slice(&h);
            b.extend_from_slice(&(h.len() as u32).to_le_bytes());
            assert!(
                matches!(broken(&b), SnapshotError::Layout(_)),
                "{start} {plen}"
            );
        }
        // A part that is not what the header says it is (a user part read as
        // subreddits).
        let mut header: Header = rmp_serde::from_slice(&bytes[end - len..end]).unwrap();
        let (a, b) = (header.parts[0].kind, header.parts[USER_PARTS].kind);
        header.parts[0].kind = b;
        header.parts[USER_PARTS].kind = a;
        let mut b = bytes[..end - len].to_vec();
        let h = rmp_serde::to_vec_named(&header).unwrap();
        b.extend_from_slice(&h);
        b.extend_from_slice(&(h.len() as u32).to_le_bytes());
        assert!(matches!(broken(&b), SnapshotError::Decode { .. }));
    }
}
