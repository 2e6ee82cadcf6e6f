//! Replay benchmark (`cargo bench -p reddit-engine --bench replay`): writes a shard
//! log of 1,000,000 events to a throwaway JetStream server (group-committed records
//! of 500 writes, each with an idempotency reply, as the engine writes them), then
//! times a shard's recovery from it, and from a snapshot of the same state.
//! The log is written twice, with fields by position (as shards write it) and
//! by name (as older versions did), and the two are replayed alternately.
//!
//! `REPLAY_EVENTS` changes the event count, `REPLAY_ROUNDS` the replays of
//! each log (2); `REPLAY_HUGE_PAGES=1` runs with
//! transparent huge pages, as a shard started with `--huge-pages` does. The nats-server binary comes from
//! `scripts/install-nats.sh` (or `NATS_SERVER_BIN`).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

/// The engine binary's allocator, so the replay measured is the engine's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "support.rs"]
mod support;

use reddit_engine::fields::Fields;
use reddit_engine::replies::{Cached, ReplyKey};
use reddit_engine::state::Event;
use reddit_engine::wal::{encode_snapshot, Entry, Log, RecordBuilder};
use reddit_shared::ids::{CommentId, PostId};
use reddit_shared::names::{SubredditName, Username};
use reddit_shared::protocol::vote::VoteTarget;
use std::time::Instant;

const PER_RECORD: usize = 500;

/// The i-th event of a synthetic but realistic shard history: users, subreddits,
/// then posts, comments and votes in the proportions of the simulator's mix.
fn event(i: u64, users: u64, subs: u64, posts: &mut Vec<(u64, PostId)>) -> Event {
    let user = |n: u64| Username::parse(&format!("user{}", n % users)).unwrap();
    let sub = |n: u64| SubredditName::parse(&format!("sub{}", n % subs)).unwrap();
    if i < users {
        return Event::UserRegistered {
            username: user(i),
            public_key: [7; 32],
            at: 1_700_000_000_000 + i as i64,
        };
    }
    if i < users + subs {
        return Event::SubredditCreated {
            name: sub(i),
            description: "A simulated community.".into(),
            creator: user(i),
            at: 1_700_000_000_000,
        };
    }
    let at = 1_700_000_000_000 + i as i64;
    match i % 10 {
        0..=2 => {
            let id = PostId::new();
            let s = i % subs;
            posts.push((s, id));
            Event::PostCreated {
                subreddit: sub(s).key().to_owned(),
                id,
                author: user(i * 7),
                title: format!("Post number {i}"),
                body: "Simulated post body with a few words in it.".into(),
                repost_of: None,
                at,
                signature: None,
            }
        }
        3..=5 if !posts.is_empty() => {
            let (s, post) = posts[(i as usize * 31) % posts.len()];
            Event::CommentCreated {
                subreddit: sub(s).key().to_owned(),
                post_id: post,
                id: CommentId::new(),
                parent_id: None,
                author: user(i * 13),
                body: "Simulated comment.".into(),
                at,
                signature: None,
            }
        }
        _ if !posts.is_empty() => {
            let (s, post) = posts[(i as usize * 17) % posts.len()];
            Event::VoteCast {
                subreddit: sub(s).key().to_owned(),
                target: VoteTarget::Post,
                id: post.0,
                voter: user(i * 3).key().to_owned(),
                value: if i.is_multiple_of(4) { -1 } else { 1 },
            }
        }
        _ => Event::UserRegistered {
            username: user(i),
            public_key: [7; 32],
            at,
        },
    }
}

/// Writes `total` events to `log` in records of [`PER_RECORD`] writes, their
/// fields written as `fields` says; returns the log's bytes.
async fn write_log(log: &Log, total: u64, fields: Fields) -> usize {
    eprintln!("writing {total} events in records of {PER_RECORD} writes, fields {fields:?} ...");
    let started = Instant::now();
    let (users, subs) = (10_000.min(total / 10).max(1), 100);
    let mut posts = Vec::new();
    let mut builder = RecordBuilder::with_fields(fields);
    let mut seq = 0;
    let mut bytes = 0usize;
    for i in 0..total {
        let e = event(i, users, subs, &mut posts);
        builder
            .push(&Entry {
                reply: Some(Cached {
                    key: ReplyKey::new(
                        "vote.cast",
                        &format!("user{}", i % users),
                        uuid::Uuid::now_v7(),
                    ),
                    hash: i,
                    reply: vec![0xa5; 180],
                }),
                events: vec![e],
            })
            .unwrap();
        if builder.entries() as usize == PER_RECORD || i + 1 == total {
            let record = builder.seal();
            bytes += record.len();
            seq = log
                .append(record, &format!("bench.{seq}"), seq)
                .await
                .unwrap();
        }
    }
    eprintln!(
        "  {seq} records, {:.0} MiB, written in {:.1} s",
        bytes as f64 / 1048576.0,
        started.elapsed().as_secs_f64()
    );
    bytes
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let total: u64 = std::env::var("REPLAY_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rounds: usize = std::env::var("REPLAY_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    // As a shard runs (`--huge-pages` off); REPLAY_HUGE_PAGES=1 measures it on.
    let huge_pages = std::env::var("REPLAY_HUGE_PAGES").is_ok_and(|v| v == "1");
    reddit_engine::memory::set_huge_pages(huge_pages).unwrap();

    // The same history twice, once with fields by name (as older versions
    // wrote it) and once by position (as shards write it), each on its own
    // server.
    let mut logs = Vec::new();
    for (fields, name) in [
        (Fields::Named, "replay-named"),
        (Fields::Positional, "replay-positional"),
    ] {
        let server = support::JetStreamServer::start(name);
        let client = server.connect().await;
        let log = Log::open(&client, 0, 1, 1).await.unwrap();
        let bytes = write_log(&log, total, fields).await;
        logs.push((fields, server, log, bytes));
    }

    // Alternately, so that both see the same machine.
    let mut times: Vec<(Fields, Vec<f64>)> = logs.iter().map(|l| (l.0, Vec::new())).collect();
    let mut last = None;
    for _ in 0..rounds {
        for (i, (fields, _, log, bytes)) in logs.iter().enumerate() {
            drop(last.take());
            let r = log
                .recover(reddit_engine::replies::DEFAULT_CAPACITY)
                .await
                .unwrap();
            assert_eq!(r.events, total);
            let log_secs = r.elapsed.as_secs_f64();
            println!(
                "replay of {} events ({} records, {:.0} MiB, fields {fields:?}) from the log: {:.2} s ({:.0} events/s); state: {} users, {} posts, {} comments, {} votes",
                r.events,
                r.records,
                *bytes as f64 / 1048576.0,
                log_secs,
                r.events as f64 / log_secs,
                r.state.user_count(),
                r.state.totals().posts,
                r.state.totals().comments,
                r.state.totals().votes,
            );
            times[i].1.push(log_secs);
            last = Some(r);
        }
    }
    for (fields, t) in &times {
        let runs: Vec<String> = t.iter().map(|s| format!("{s:.2}")).collect();
        println!(
            "replay with fields {fields:?}: mean {:.2} s (runs: {} s)",
            t.iter().sum::<f64>() / t.len() as f64,
            runs.join(", ")
        );
    }
    // The snapshot half, on the state of the positional log (replayed last).
    let r = last.unwrap();
    let log = &logs[1].2;

    let t = Instant::now();
    let snapshot = encode_snapshot(&r.state, &r.replies, r.last_seq).unwrap();
    let encode_secs = t.elapsed().as_secs_f64();
    let size = snapshot.len();
    // As the follower encodes its later snapshots: the size of the last known.
    let t = Instant::now();
    let again = reddit_engine::snapshot::encode_with_capacity(
        &r.state,
        &r.replies,
        r.last_seq,
        size + size / 8,
    )
    .unwrap();
    let again_secs = t.elapsed().as_secs_f64();
    assert_eq!(again, snapshot);
    drop(again);
    // And once more without it, memory as warm as for the one above.
    let t = Instant::now();
    drop(encode_snapshot(&r.state, &r.replies, r.last_seq).unwrap());
    let plain_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    log.save_snapshot(snapshot, r.last_seq).await.unwrap();
    let store_secs = t.elapsed().as_secs_f64();
    let s = log
        .recover(reddit_engine::replies::DEFAULT_CAPACITY)
        .await
        .unwrap();
    assert_eq!(
        (s.records, s.state.totals().votes),
        (0, r.state.totals().votes)
    );
    println!(
        "snapshot of that state: {:.0} MiB, encoded in {:.2} s (again: {:.2} s into a buffer of the known size, {:.2} s grown from empty), stored in {:.2} s; recovery from it: {:.2} s (fetch {:.2} s, decode {:.2} s, indexes {:.2} s)",
        size as f64 / 1048576.0,
        encode_secs,
        again_secs,
        plain_secs,
        store_secs,
        s.elapsed.as_secs_f64(),
        s.snapshot_load.fetch.as_secs_f64(),
        s.snapshot_load.decode.as_secs_f64(),
        s.snapshot_load.index.as_secs_f64(),
    );
    drop(logs);
}
