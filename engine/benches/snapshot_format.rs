//! Snapshot format benchmark (`cargo bench -p reddit-engine --bench
//! snapshot_format`): one shard of a 1,000,000-user system (250,000 users who
//! joined 4 subreddits each, 50 subreddits with their 1,000,000 members, a full
//! reply cache), snapshotted in format 2 (structs as maps of field names) and
//! format 3 (structs as arrays of fields), alternately; prints the size,
//! encoding and decoding times of each and their ratios, measured in one run.
//!
//! `SNAPSHOT_USERS` changes the user count; `SNAPSHOT_ROUNDS` the rounds (3).
//! No NATS: storing a snapshot costs in proportion to its bytes (`--bench
//! replay` times a store).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

/// The engine binary's allocator, so the encoding measured is the engine's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use reddit_engine::fields::Fields;
use reddit_engine::replies::{Cached, ReplyCache, ReplyKey, DEFAULT_CAPACITY};
use reddit_engine::snapshot::{decode, encode_as, load_threads};
use reddit_engine::state::{Event, ShardState};
use reddit_shared::names::{SubredditName, Username};
use std::time::Instant;

/// Subreddits in the whole system (the simulator's default) and owned here.
const SUBREDDITS: u64 = 200;
const OWNED: u64 = 50;
/// Subreddits each user joined (the million-user run averaged 3.98).
const JOINED: u64 = 4;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    reddit_engine::memory::set_huge_pages(false).unwrap();
    let users = env("SNAPSHOT_USERS", 250_000);
    let rounds = env("SNAPSHOT_ROUNDS", 3).max(1);
    let name = |i: u64| Username::parse(&format!("user{i}")).unwrap();
    let sub = |j: u64| SubredditName::parse(&format!("sub{j}")).unwrap();

    let started = Instant::now();
    let mut state = ShardState::new(0, 4);
    for i in 0..users {
        state.apply_owned(Event::UserRegistered {
            username: name(i),
            public_key: [(i % 251) as u8; 32],
            at: 1_700_000_000_000 + i as i64,
        });
    }
    for j in 0..OWNED {
        state.apply_owned(Event::SubredditCreated {
            name: sub(j),
            description: "A simulated community.".into(),
            creator: name(j),
            at: 1_700_000_000_000,
        });
    }
    for i in 0..users {
        for k in 0..JOINED {
            // This user's memberships (their subreddits live anywhere) ...
            state.apply_owned(Event::MembershipSynced {
                user: name(i).key().to_owned(),
                subreddit: sub((i * 7 + k * 13) % SUBREDDITS),
                member: true,
                version: k + 1,
            });
            // ... and as many members of the subreddits owned here (users of
            // every shard).
            state.apply_owned(Event::MembershipChanged {
                subreddit: sub((i * 11 + k * 17) % OWNED).key().to_owned(),
                user: name(users * k + i),
                member: true,
            });
        }
    }
    state.after_load();
    let mut replies = ReplyCache::new(DEFAULT_CAPACITY);
    for i in 0..DEFAULT_CAPACITY {
        replies.insert(Cached {
            key: ReplyKey::new(
                "sub.join",
                &format!("user{i}"),
                uuid::Uuid::from_u128(i as u128),
            ),
            hash: i as u64,
            reply: vec![0xa5; 180],
        });
    }
    eprintln!(
        "{users} users, {} member entries, {} cached replies, built in {:.1} s",
        users * JOINED,
        DEFAULT_CAPACITY,
        started.elapsed().as_secs_f64()
    );

    let formats = [
        (Fields::Named, "format 2"),
        (Fields::Positional, "format 3"),
    ];
    let mut sizes = [0usize; 2];
    let mut encode = [Vec::new(), Vec::new()];
    let mut load = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (f, (fields, _)) in formats.iter().enumerate() {
            let t = Instant::now();
            let bytes = encode_as(&state, &replies, 1, sizes[f] + sizes[f] / 8, *fields).unwrap();
            encode[f].push(t.elapsed().as_secs_f64());
            sizes[f] = bytes.len();
            let t = Instant::now();
            let loaded = decode(&bytes, load_threads()).unwrap();
            load[f].push(t.elapsed().as_secs_f64());
            assert_eq!(loaded.state.user_count(), users);
        }
    }
    let (encode, load) = (encode.map(median), load.map(median));
    for (f, (_, label)) in formats.iter().enumerate() {
        println!(
            "{label}: {:.1} MiB ({:.0} bytes per user), encoded in {:.2} s, decoded in {:.2} s (medians of {rounds})",
            sizes[f] as f64 / 1048576.0,
            sizes[f] as f64 / users as f64,
            encode[f],
            load[f],
        );
    }
    println!(
        "format 3 / format 2: size {:.2}x, encoding {:.2}x, decoding {:.2}x",
        sizes[1] as f64 / sizes[0] as f64,
        encode[1] / encode[0],
        load[1] / load[0],
    );
}
