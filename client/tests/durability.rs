//! Durability with `--storage jetstream` (the default): a restarted shard replays
//! its snapshot and log, retried writes are answered from the reply cache, a second
//! writer is fenced off, and a log from a cluster of another size is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    eventually, name_on, sn, spawn_shard, start_shard, start_shard_with, un, user, Cluster, SECRET,
};
use reddit_client::{ClientOptions, ErrorKind, RedditClient};
use reddit_engine::replies::ReplyKey;
use reddit_engine::wal::{self, WalError};
use reddit_engine::{Config, EngineError};
use reddit_shared::codec::encode;
use reddit_shared::protocol::comment::CreateCommentRequest;
use reddit_shared::protocol::dm::{DmFolder, ListDmsRequest, SendDmRequest};
use reddit_shared::protocol::post::{CreatePostRequest, ListPostsRequest, PostView};
use reddit_shared::protocol::vote::{VoteRequest, VoteTarget};
use reddit_shared::protocol::Op;
use std::time::Duration;

fn post_req(sub: &reddit_shared::names::SubredditName, title: &str) -> CreatePostRequest {
    CreatePostRequest {
        subreddit: sub.clone(),
        title: title.into(),
        body: String::new(),
        repost_of: None,
        signature: None,
    }
}

fn config(url: &str, shard: u32, shards: u32) -> Config {
    Config::new(common::engine_url(url), shard, shards, SECRET)
}

/// Records per log segment in the tests that see segments come and go.
const SEGMENT: u64 = 4;

/// A shard whose log goes in segments of [`SEGMENT`] records.
fn segmented(url: &str, shard: u32, shards: u32) -> Config {
    let mut config = Config::new(url, shard, shards, SECRET);
    config.log_segment_records = SEGMENT;
    config
}

/// The log segments of shard `shard` (their numbers, oldest first).
async fn segments(url: &str, shard: u32) -> Vec<u32> {
    use futures::TryStreamExt;
    let js = async_nats::jetstream::new(common::connect_engine(url).await);
    let names: Vec<String> = js.stream_names().try_collect().await.unwrap();
    let first = wal::stream_name(shard);
    let mut out: Vec<u32> = names
        .iter()
        .filter_map(|name| match name.strip_prefix(&first)? {
            "" => Some(0),
            rest => rest.strip_prefix('_')?.parse().ok(),
        })
        .collect();
    out.sort_unstable();
    out
}

/// The whole log of shard `shard`, over its segments: its first and last
/// sequences and how many records it holds.
async fn stream_state(url: &str, shard: u32) -> (u64, u64, u64) {
    let js = async_nats::jetstream::new(common::connect_engine(url).await);
    let (mut first, mut last, mut messages) = (u64::MAX, 0, 0);
    for n in segments(url, shard).await {
        // A segment a snapshot deletes between the listing and the look.
        let Ok(stream) = js.get_stream(wal::segment_name(shard, n)).await else {
            continue;
        };
        let state = &stream.cached_info().state;
        // A segment made ahead of need is empty, and says its last record
        // is the one before its range.
        if state.messages == 0 {
            if messages == 0 {
                first = first.min(state.first_sequence);
                last = last.max(state.first_sequence.saturating_sub(1));
            }
            continue;
        }
        if messages == 0 {
            (first, last) = (u64::MAX, 0);
        }
        first = first.min(state.first_sequence);
        last = last.max(state.last_sequence);
        messages += state.messages;
    }
    (first, last, messages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_restarts_with_and_without_a_snapshot() {
    let mut cluster = Cluster::start_with(2, |c| c.log_segment_records = SEGMENT).await;
    let url = cluster.nats.url();
    let c = cluster.client.clone();
    let alice = cluster.user(&name_on("alice", 0, 2)).await;
    let bob = cluster.user(&name_on("bob", 1, 2)).await;
    let sub = sn(&name_on("rust", 0, 2));
    c.create_subreddit(&alice, &sub, "d").await.unwrap();
    c.join(&bob, &sub).await.unwrap();
    let post = c.send(Some(&bob), &post_req(&sub, "t")).await.unwrap();
    let comment = c
        .send(
            Some(&alice),
            &CreateCommentRequest {
                subreddit: sub.clone(),
                post_id: post.id,
                parent_id: None,
                body: "nice".into(),
                signature: None,
            },
        )
        .await
        .unwrap();
    c.send(
        Some(&alice),
        &VoteRequest {
            subreddit: sub.clone(),
            target: VoteTarget::Post,
            id: post.id.0,
            value: 1,
        },
    )
    .await
    .unwrap();
    c.send_dm(&bob, &alice.username, "hi").await.unwrap();
    common::quiesce(&c).await;
    let before = c.audit(10).await.unwrap();
    assert!(before.ok, "{:?}", before.violations);
    // Each shard logged those writes and says how long its commits took, and
    // which operation wrote each entry (a DM's sent copy, written after the
    // recipient's shard answered, counts as `dm.send`).
    let mut by_op = std::collections::BTreeMap::<String, (u64, u64)>::new();
    for s in c.all_stats().await.unwrap() {
        assert_eq!(s.storage, "jetstream");
        assert!(s.wal_records > 0 && s.wal_entries >= s.wal_records, "{s:?}");
        assert!(s.wal_append_us > 0, "commit time counted: {s:?}");
        assert!(s.wal_bytes > s.wal_entries, "bytes counted: {s:?}");
        let entries: u64 = s.wal_by_op.values().map(|l| l.entries).sum();
        let bytes: u64 = s.wal_by_op.values().map(|l| l.bytes).sum();
        assert_eq!(entries, s.wal_entries, "every entry counted once: {s:?}");
        assert!(bytes > 0 && bytes <= s.wal_bytes, "{s:?}");
        for (op, l) in &s.wal_by_op {
            let e = by_op.entry(op.clone()).or_default();
            e.0 += l.entries;
            e.1 += l.bytes;
        }
    }
    for op in [
        "user.register",
        "sub.create",
        "sub.join",
        "post.create",
        "comment.create",
        "vote.cast",
        "dm.send",
    ] {
        let (entries, bytes) = by_op.get(op).copied().unwrap_or_default();
        assert!(entries >= 1 && bytes > entries, "{op}: {by_op:?}");
    }
    assert!(
        !by_op.contains_key("post.get"),
        "reads log nothing: {by_op:?}"
    );

    // A graceful stop stores a snapshot and deletes the log segments it
    // covers: all but the last, which the log goes on in.
    let (_, logged, _) = stream_state(&url, 0).await;
    assert!(logged > SEGMENT, "shard 0 logged {logged} records");
    cluster.stop_shard(0).await;
    let (first, last, messages) = stream_state(&url, 0).await;
    assert!(
        first > last.saturating_sub(SEGMENT) && messages <= SEGMENT,
        "at most the segment the log goes on in is left: {first}..={last}, {messages} records"
    );
    cluster.shards[0] = Some(common::start_shard_with(segmented(&url, 0, 2)).await);
    let got = c.get_post(&sub, post.id).await.unwrap();
    assert_eq!((got.score, got.comments), (1, 1));
    let inbox = c
        .send(Some(&alice), &ListDmsRequest::default())
        .await
        .unwrap();
    assert_eq!(inbox.messages.len(), 1);
    assert_eq!(inbox.messages[0].body, "hi");

    // Shard 1 restarts too; the user's joined list and karma came back.
    cluster.stop_shard(1).await;
    cluster.shards[1] = Some(common::start_shard_with(segmented(&url, 1, 2)).await);
    let bob_view = c.get_user(&bob.username).await.unwrap();
    assert_eq!(bob_view.post_karma, 1);
    assert_eq!(bob_view.joined, vec![sub.clone()]);
    // Tokens issued before the restart still work, and the thread is intact.
    let tree = common::comment_tree(&c, &sub, post.id).await;
    assert_eq!(tree.comments[0].id, comment.id);
    common::quiesce(&c).await;
    let after = c.audit(10).await.unwrap();
    assert!(after.ok, "{:?}", after.violations);
    assert_eq!(after.checked, before.checked);

    // Records deleted under a snapshot that then went missing: refused, not
    // served half-empty.
    cluster.stop_shard(1).await;
    common::delete_snapshot(&url, 1).await;
    let result = reddit_engine::run(config(&url, 1, 2), std::future::pending()).await;
    assert!(
        matches!(
            result,
            Err(EngineError::Wal(WalError::Gap { shard: 1, .. }))
        ),
        "{result:?}"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_taken_periodically_and_the_log_before_them_deleted() {
    let nats = common::NatsServer::start();
    let url = nats.url();
    let args = ["--snapshot-every", "20", "--log-segment-records", "4"];
    let shard = common::shard_process(&url, 0, 1, &args);
    common::wait_serving(&url, 0).await;
    let c = RedditClient::connect(&url, ClientOptions::default())
        .await
        .unwrap();
    let alice = user(&c, "alice").await;
    let sub = sn("rust");
    c.create_subreddit(&alice, &sub, "d").await.unwrap();
    for i in 0..60 {
        c.send(Some(&alice), &post_req(&sub, &format!("p{i}")))
            .await
            .unwrap();
    }
    eventually(
        "segments deleted after a snapshot",
        Duration::from_secs(10),
        || {
            let url = url.clone();
            async move { stream_state(&url, 0).await.0 > 20 }
        },
    )
    .await;
    // Taken by the follower of the log, as `shard.stats` says (it counts a
    // snapshot once its purge is done).
    eventually(
        "shard.stats counts the snapshot",
        Duration::from_secs(10),
        || {
            let c = c.clone();
            async move {
                let stats = c.all_stats().await.unwrap();
                stats[0].snapshots >= 1 && stats[0].snapshot_seq >= 20
            }
        },
    )
    .await;
    // A crash: no shutdown snapshot; the periodic one plus the records after it.
    drop(shard);
    let _shard = common::shard_process(&url, 0, 1, &args);
    common::wait_serving(&url, 0).await;
    let page = c
        .send(
            None,
            &ListPostsRequest {
                subreddit: sub.clone(),
                sort: Default::default(),
                limit: Some(100),
                cursor: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.posts.len(), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_write_gets_the_original_reply_and_applies_once() {
    let cluster = Cluster::start(2).await;
    let c = cluster.client.clone();
    let alice = cluster.user(&name_on("alice", 0, 2)).await;
    let bob = cluster.user(&name_on("bob", 1, 2)).await;
    let sub = sn(&name_on("rust", 1, 2));
    c.create_subreddit(&alice, &sub, "d").await.unwrap();
    let shard = c.shard_of(sub.key());
    let req = CreatePostRequest {
        subreddit: sub.clone(),
        title: "once".into(),
        body: String::new(),
        repost_of: None,
        signature: None,
    };
    let key = uuid::Uuid::now_v7().to_string();
    let send = |req: &CreatePostRequest, key: &str| {
        let (c, payload, key, token) = (
            c.clone(),
            encode(req).unwrap(),
            key.to_owned(),
            alice.token.clone(),
        );
        async move {
            c.call_with_key::<PostView>(
                shard,
                Op::PostCreate.as_str(),
                Some(&token),
                payload,
                Some(&key),
            )
            .await
        }
    };
    let first = send(&req, &key).await.unwrap();
    let again = send(&req, &key).await.unwrap();
    assert_eq!(first.id, again.id);
    let page = c
        .send(
            None,
            &ListPostsRequest {
                subreddit: sub.clone(),
                sort: Default::default(),
                limit: None,
                cursor: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.posts.len(), 1);

    // The same key for a different request is a conflict, not a silent replay.
    let other = CreatePostRequest {
        title: "other".into(),
        ..req.clone()
    };
    let e = send(&other, &key).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    // A key that is not a UUID is refused.
    let e = send(&req, "not-a-uuid").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
    // Another user's key does not reach alice's reply.
    let stolen = c
        .call_with_key::<PostView>(
            shard,
            Op::PostCreate.as_str(),
            Some(&bob.token),
            encode(&req).unwrap(),
            Some(&key),
        )
        .await
        .unwrap();
    assert_ne!(stolen.id, first.id);
    assert_eq!(stolen.author, bob.username.as_str());

    // A retried DM across shards is one message, with the key as its id.
    let dm_key = uuid::Uuid::now_v7();
    let dm = SendDmRequest {
        to: bob.username.clone(),
        body: "once".into(),
    };
    for _ in 0..2 {
        let view: reddit_shared::protocol::dm::DmView = c
            .call_with_key(
                c.shard_of(alice.username.key()),
                Op::DmSend.as_str(),
                Some(&alice.token),
                encode(&dm).unwrap(),
                Some(&dm_key.to_string()),
            )
            .await
            .unwrap();
        assert_eq!(view.id.0, dm_key);
    }
    let inbox = c
        .send(Some(&bob), &ListDmsRequest::default())
        .await
        .unwrap();
    assert_eq!(inbox.messages.len(), 1);
    let sent = c
        .send(
            Some(&alice),
            &ListDmsRequest {
                folder: DmFolder::Sent,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(sent.messages.len(), 1);
    let stats = c.all_stats().await.unwrap();
    let answered: u64 = stats.iter().map(|s| s.retries_answered).sum();
    assert!(answered >= 2, "{stats:?}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_is_fenced_off() {
    let nats = common::NatsServer::start();
    let url = nats.url();
    let shard = start_shard(&url, 0, 1).await;
    let c = RedditClient::connect(&url, ClientOptions::default())
        .await
        .unwrap()
        .with_retry_budget(Duration::ZERO);
    let alice = user(&c, "alice").await;
    // Another process appends to shard 0's log behind its back.
    let js = async_nats::jetstream::new(common::connect_engine(&url).await);
    js.publish(
        reddit_shared::subject::wal(0),
        rmp_serde::to_vec(&Vec::<u8>::new()).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    // The shard's next append is refused; it stops instead of answering.
    let r = c.create_subreddit(&alice, &sn("rust"), "d").await;
    assert!(r.is_err(), "{r:?}");
    let result = shard.join().await;
    assert!(
        matches!(
            result,
            Err(EngineError::Wal(WalError::Fenced { shard: 0, .. }))
        ),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_of_another_cluster_size_is_refused() {
    let nats = common::NatsServer::start();
    let url = nats.url();
    let shard = start_shard(&url, 0, 1).await;
    let c = RedditClient::connect(&url, ClientOptions::default())
        .await
        .unwrap();
    user(&c, "alice").await;
    shard.stop().await.unwrap();
    let result = reddit_engine::run(config(&url, 0, 2), std::future::pending()).await;
    assert!(
        matches!(
            result,
            Err(EngineError::Wal(WalError::ShardCount { ours: 2, .. }))
        ),
        "{result:?}"
    );
    // Memory storage ignores the log.
    let shard = spawn_shard(Config {
        storage: reddit_engine::Storage::Memory,
        ..config(&url, 0, 2)
    });
    common::wait_serving(&url, 0).await;
    let e = c.get_user(&un("alice")).await;
    assert!(e.is_err());
    shard.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_jetstream_the_durable_mode_refuses_to_start_and_says_why() {
    let nats = common::NatsServer::start_without_jetstream();
    let result = reddit_engine::run(config(&nats.url(), 0, 1), std::future::pending()).await;
    match result {
        Err(e @ EngineError::Wal(WalError::Unavailable(_))) => {
            assert!(e.to_string().contains("--storage memory"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_waits_while_jetstream_is_not_back_yet_and_lands_when_it_is() {
    let mut nats = common::NatsServer::start();
    let url = nats.url();
    let shard = start_shard(&url, 0, 1).await;
    let c = RedditClient::connect(&url, ClientOptions::default())
        .await
        .unwrap();
    let alice = user(&c, "alice").await;
    // NATS comes back, but JetStream does not answer yet: log appends get
    // "no responders", which async-nats reports as a missing stream.
    nats.restart_without_jetstream();
    common::wait_serving(&url, 0).await;
    let before = c.shard_stats(0).await.unwrap().requests;
    let write = {
        let c = c.clone();
        let alice = alice.clone();
        tokio::spawn(async move { c.create_subreddit(&alice, &sn("rust"), "d").await })
    };
    eventually(
        "the write to reach the shard",
        Duration::from_secs(20),
        || {
            let c = c.clone();
            async move {
                c.shard_stats(0)
                    .await
                    .is_ok_and(|s| s.requests > before + 1)
            }
        },
    )
    .await;
    assert!(!write.is_finished(), "answered before it was durable");
    // JetStream is back (same store): the held write is appended and answered.
    nats.restart();
    let view = tokio::time::timeout(Duration::from_secs(60), write)
        .await
        .expect("the write is answered")
        .unwrap()
        .unwrap();
    assert_eq!(view.name, sn("rust"));
    assert_eq!(
        stream_state(&url, 0).await.1,
        3,
        "the new owner's fence record, register, subreddit, nothing twice"
    );
    shard.stop().await.unwrap();
}

/// Shard 0's log (of 1) on `nats`, holding `n` empty records (sequences
/// 1..=n), in segments of `segment` records.
async fn log_of_empty_records(nats: &common::NatsServer, n: u64, segment: u64) -> wal::Log {
    let client = common::connect_engine(&nats.url()).await;
    let log = wal::Log::open(&client, 0, 1, 1)
        .await
        .unwrap()
        .with_segment_records(segment);
    let mut seq = 0;
    for i in 0..n {
        let record = wal::RecordBuilder::default().seal();
        seq = log.append(record, &format!("r.{i}"), seq).await.unwrap();
    }
    assert_eq!(seq, n);
    log
}

/// A snapshot never replaces one that covers more: a process that lost the
/// shard (a new owner snapshotted and deleted the segments it covers since)
/// would otherwise put back a snapshot whose following records are gone, and
/// the shard could not start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_older_than_the_log_is_refused_and_the_newer_one_kept() {
    let nats = common::NatsServer::start();
    // Segments 1..=2, 3..=4, 5: a snapshot at 3 deletes the first.
    let log = log_of_empty_records(&nats, 5, 2).await;
    let snapshot = |at: u64| {
        let state = reddit_engine::state::ShardState::new(0, 1);
        let replies = reddit_engine::replies::ReplyCache::new(10);
        wal::encode_snapshot(&state, &replies, at).unwrap()
    };
    log.save_snapshot(snapshot(3), 3).await.unwrap();
    // The same sequence again is fine (a retry); an older one is refused.
    log.save_snapshot(snapshot(3), 3).await.unwrap();
    let stale = log.save_snapshot(snapshot(1), 1).await;
    assert!(
        matches!(
            stale,
            Err(WalError::StaleSnapshot {
                seq: 1,
                first: 3,
                ..
            })
        ),
        "{stale:?}"
    );
    let recovered = log.recover(10).await.unwrap();
    assert_eq!(
        (
            recovered.snapshot_seq,
            recovered.records,
            recovered.last_seq
        ),
        (3, 2, 5)
    );
}

/// A record of one entry with no events and the reply `reply` under the
/// idempotency key `key`.
fn record_of_reply(key: &str, hash: u64, reply: Vec<u8>) -> bytes::Bytes {
    let mut record = wal::RecordBuilder::default();
    record
        .push(&wal::Entry {
            reply: Some(reddit_engine::replies::Cached {
                key: ReplyKey::of_text(key),
                hash,
                reply,
            }),
            events: Vec::new(),
        })
        .unwrap();
    record.seal()
}

/// A record of one entry whose reply is `i` (so a replay's replies count
/// its records).
fn reply_record(i: u64) -> bytes::Bytes {
    record_of_reply(&format!("k{i}"), i, vec![i as u8])
}

/// Shard 0's log (of 1) on the server at `url`, in segments of 4 records,
/// over a connection of its own.
async fn log_in_fours(url: &str) -> wal::Log {
    wal::Log::open(&common::connect_engine(url).await, 0, 1, 1)
        .await
        .unwrap()
        .with_segment_records(4)
}

/// Appends the records `range` (each a [`reply_record`]) after record
/// `seq`, and returns the last one's sequence.
async fn append_replies(log: &wal::Log, range: std::ops::RangeInclusive<u64>, mut seq: u64) -> u64 {
    for i in range {
        seq = log
            .append(reply_record(i), &format!("r{i}"), seq)
            .await
            .unwrap();
    }
    seq
}

/// An empty snapshot of shard 0 (of 1) covering records up to `at`.
fn empty_snapshot(at: u64) -> Vec<u8> {
    let state = reddit_engine::state::ShardState::new(0, 1);
    let replies = reddit_engine::replies::ReplyCache::new(10);
    wal::encode_snapshot(&state, &replies, at).unwrap()
}

/// The log runs on across segments (streams of a fixed range of records):
/// recovery and a standby's catch-up read through them in order, and a
/// snapshot deletes the segments it covers whole, never the one the log goes
/// on in. A reader behind a deleted segment finds a gap, as after a purge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_runs_across_segments_and_snapshots_delete_those_they_cover() {
    let nats = common::NatsServer::start();
    let url = nats.url();
    let log = log_in_fours(&url).await;
    let seq = append_replies(&log, 1..=2, 0).await;
    let mut standby = log.recover(100).await.unwrap();
    let mut behind = log.recover(100).await.unwrap();
    assert_eq!(standby.last_seq, 2);
    let seq = append_replies(&log, 3..=10, seq).await;
    assert_eq!(seq, 10);
    // 1..=4, 5..=8, 9..=12, and perhaps already 13..=16, made in the
    // background from the first append into 9..=12 on.
    let made = segments(&url, 0).await;
    assert!(made == [0, 1, 2] || made == [0, 1, 2, 3], "{made:?}");
    let all = log.recover(100).await.unwrap();
    assert_eq!((all.last_seq, all.records, all.replies.len()), (10, 10, 10));
    log.catch_up(&mut standby).await.unwrap();
    assert_eq!((standby.last_seq, standby.records), (10, 10));
    assert_eq!(standby.replies.len(), 10);

    log.save_snapshot(empty_snapshot(6), 6).await.unwrap();
    let left = segments(&url, 0).await;
    assert!(
        left == [1, 2] || left == [1, 2, 3],
        "only 1..=4 is covered whole: {left:?}"
    );
    let from_snapshot = log.recover(100).await.unwrap();
    assert_eq!(
        (
            from_snapshot.snapshot_seq,
            from_snapshot.records,
            from_snapshot.last_seq
        ),
        (6, 4, 10)
    );
    let gap = log.catch_up(&mut behind).await;
    assert!(
        matches!(
            gap,
            Err(WalError::Gap {
                first: 5,
                covered: 2,
                ..
            })
        ),
        "{gap:?}"
    );

    // On into segment 3; a snapshot of everything leaves only the last.
    assert_eq!(append_replies(&log, 11..=13, seq).await, 13);
    log.catch_up(&mut standby).await.unwrap();
    assert_eq!(standby.last_seq, 13);
    log.save_snapshot(empty_snapshot(13), 13).await.unwrap();
    let left = segments(&url, 0).await;
    assert!(left == [3] || left == [3, 4], "{left:?}");
    let last = log.recover(100).await.unwrap();
    assert_eq!(
        (last.snapshot_seq, last.records, last.last_seq),
        (13, 0, 13)
    );
    assert_eq!(log.last_seq().await.unwrap(), 13);
    // A process that opens the log now finds where it goes on.
    let reopened = log_in_fours(&url).await;
    assert_eq!(
        reopened.append(reply_record(14), "r14", 13).await.unwrap(),
        14
    );
}

/// A segment is sized by bytes: its number of records is the segment's
/// bytes over the average record of late, so a log of large records does not
/// leave a snapshot gigabytes more than it needs. The first, before any
/// record, counts on large ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_are_sized_by_the_bytes_of_their_records() {
    let nats = common::NatsServer::start();
    let url = nats.url();
    let log = wal::Log::open(&common::connect_engine(&url).await, 0, 1, 1)
        .await
        .unwrap()
        .with_segment_bytes(128 << 10);
    let (small, large) = (
        bytes::Bytes::from(vec![0u8; 512]),
        bytes::Bytes::from(vec![0u8; 8192]),
    );
    let mut seq = 0;
    for i in 0..321u64 {
        let record = if i < 64 { small.clone() } else { large.clone() };
        seq = log.append(record, &format!("r{i}"), seq).await.unwrap();
    }
    let js = async_nats::jetstream::new(common::connect_engine(&url).await);
    let mut sizes = Vec::new();
    for n in segments(&url, 0).await {
        let stream = js.get_stream(wal::segment_name(0, n)).await.unwrap();
        sizes.push(stream.cached_info().config.max_messages);
    }
    // Each segment is sized as the log enters the one before it. Segments 0
    // and 1, before any record: 64 KiB assumed, 2 records, at least 64
    // (1..=64, 65..=128); segment 2, after 64 records of 512 bytes: 256
    // (129..=384); segment 3, after 64 more of 8 KiB: about 24, at least 64.
    assert_eq!(sizes[..4], [64, 64, 256, 64], "{sizes:?}");
}

/// A writer that lost the log to another stays fenced off where segments
/// meet: its append after the end of a segment goes to the next one, where
/// the new writer's record refuses it, and one inside the full segment is
/// refused there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_fenced_off_stays_fenced_where_segments_meet() {
    let nats = common::NatsServer::start();
    let url = nats.url();
    let (old, new) = (log_in_fours(&url).await, log_in_fours(&url).await);
    append_replies(&old, 1..=4, 0).await;
    let mut taken = new.recover(10).await.unwrap();
    new.fence(&mut taken).await.unwrap();
    assert_eq!(taken.last_seq, 5, "the fence record opens segment 1");
    for expected in [4, 3] {
        let late = old.append(reply_record(99), "late", expected).await;
        assert!(
            matches!(late, Err(WalError::Fenced { expected: e, .. }) if e == expected),
            "{late:?}"
        );
    }
    assert_eq!(new.append(reply_record(6), "r6", 5).await.unwrap(), 6);
    let all = new.recover(10).await.unwrap();
    assert_eq!((all.last_seq, all.records), (6, 6));
}

/// What a shard whose lease expired asks before it serves on: are the
/// records after the last one it confirmed all its own? Its own appends that
/// landed but are not confirmed yet (in flight, or retried after a lost
/// acknowledgement) say yes, across a segment boundary too; another
/// writer's fence, or more records than it can have in flight, say no.
/// (Comparing the log's last sequence with the last confirmed one instead
/// stopped a restarted shard for good when its lease lapsed under load with
/// one of its own appends in flight.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_records_of_another_writer_mean_the_log_moved_on() {
    let nats = common::NatsServer::start();
    let url = nats.url();
    let (own, other) = (log_in_fours(&url).await, log_in_fours(&url).await);
    assert_ne!(own.writer(), other.writer());
    let mut seq = 0;
    for i in 1..=6 {
        let id = format!("{}.{i}", own.writer());
        seq = own.append(reply_record(i), &id, seq).await.unwrap();
    }
    assert_eq!(seq, 6, "records 1..=4 in segment 0, 5..=6 in segment 1");
    for (confirmed, own_after) in [(6, true), (5, true), (3, true), (2, false)] {
        assert_eq!(
            own.holds_only_own_records_after(|| confirmed, 3)
                .await
                .unwrap(),
            own_after,
            "confirmed {confirmed}, 3 in flight at most"
        );
    }
    assert!(
        !other.holds_only_own_records_after(|| 5, 3).await.unwrap(),
        "record 6 is not the other writer's"
    );
    // The writer keeps appending while the check asks for the log's end:
    // the position it has confirmed is read after the end, so a record
    // appended meanwhile is not counted against it. (Read before, record 7
    // here was one more than the none in flight allowed: "moved on".)
    let appended_meanwhile = || {
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                let id = format!("{}.7", own.writer());
                assert_eq!(own.append(reply_record(7), &id, 6).await.unwrap(), 7);
            })
        });
        6
    };
    assert!(own
        .holds_only_own_records_after(appended_meanwhile, 0)
        .await
        .unwrap());
    // Another process takes the log over: its fence follows record 7.
    let mut taken = other.recover(10).await.unwrap();
    other.fence(&mut taken).await.unwrap();
    assert_eq!(taken.last_seq, 8);
    for confirmed in [7, 6, 5] {
        assert!(
            !own.holds_only_own_records_after(|| confirmed, 3)
                .await
                .unwrap(),
            "the fence after {confirmed} is another writer's"
        );
    }
    assert!(
        !own.holds_only_own_records_after(|| 9, 3).await.unwrap(),
        "a log that ends before the last confirmed record moved on too"
    );
    // A lookalike id (the writer's name without the separator) is not its.
    let lookalike = format!("{}x.1", own.writer());
    assert!(!own.is_own_id(&lookalike));
    assert!(own.is_own_id(&format!("{}.7", own.writer())));
}

/// A log written before segments (one unbounded stream) is sealed once it
/// holds a segment's worth of records, and the log goes on in segment 1: an
/// engine of the older release still writing to it is refused, recovery
/// reads both, and a snapshot that covers the old stream deletes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_from_before_segments_is_sealed_and_goes_on_in_segment_one() {
    use async_nats::jetstream::{message::PublishMessage, stream};
    let nats = common::NatsServer::start();
    let url = nats.url();
    let client = common::connect_engine(&url).await;
    let js = async_nats::jetstream::new(client.clone());
    js.create_stream(stream::Config {
        name: wal::stream_name(0),
        subjects: vec![reddit_shared::subject::wal(0)],
        storage: stream::StorageType::File,
        metadata: std::collections::HashMap::from([
            ("format".to_owned(), wal::FORMAT.to_owned()),
            ("shards".to_owned(), "1".to_owned()),
        ]),
        ..Default::default()
    })
    .await
    .unwrap();
    let old_append = |expected: u64| {
        let js = js.clone();
        async move {
            let publish = PublishMessage::build()
                .payload(reply_record(expected + 1))
                .expected_last_sequence(expected);
            js.send_publish(reddit_shared::subject::wal(0), publish)
                .await
                .unwrap()
                .await
        }
    };
    for expected in 0..6 {
        old_append(expected).await.unwrap();
    }
    let log = wal::Log::open(&client, 0, 1, 1)
        .await
        .unwrap()
        .with_segment_records(4);
    let mut recovered = log.recover(10).await.unwrap();
    assert_eq!(recovered.last_seq, 6);
    log.fence(&mut recovered).await.unwrap();
    assert_eq!(recovered.last_seq, 7);
    let made = segments(&url, 0).await;
    assert!(made == [0, 1] || made == [0, 1, 2], "{made:?}");
    let refused = old_append(7).await;
    assert!(refused.is_err(), "the old stream is sealed: {refused:?}");
    let all = log.recover(10).await.unwrap();
    assert_eq!((all.last_seq, all.records, all.replies.len()), (7, 7, 6));
    log.save_snapshot(empty_snapshot(7), 7).await.unwrap();
    let left = segments(&url, 0).await;
    assert!(left == [1] || left == [1, 2], "{left:?}");
    assert_eq!(log.append(reply_record(8), "r8", 7).await.unwrap(), 8);
}

/// A snapshot stored by an earlier release (format 1: the whole state as one
/// MessagePack map) still recovers the shard after an upgrade to the format in
/// parts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_the_older_format_still_recovers_the_shard() {
    #[derive(serde::Serialize)]
    struct FormatOne<'a> {
        format: &'static str,
        shard: u32,
        shards: u32,
        seq: u64,
        state: &'a reddit_engine::state::ShardState,
        replies: Vec<reddit_engine::replies::Cached>,
    }
    let nats = common::NatsServer::start();
    let log = log_of_empty_records(&nats, 3, wal::DEFAULT_SEGMENT_RECORDS).await;
    let mut state = reddit_engine::state::ShardState::new(0, 1);
    state.register(&un("ann"), [7; 32], 1).unwrap();
    let old = rmp_serde::to_vec_named(&FormatOne {
        format: wal::FORMAT,
        shard: 0,
        shards: 1,
        seq: 2,
        state: &state,
        replies: vec![reddit_engine::replies::Cached {
            key: ReplyKey::of_text("k"),
            hash: 1,
            reply: vec![1],
        }],
    })
    .unwrap();
    log.save_snapshot(old, 2).await.unwrap();
    let recovered = log.recover(10).await.unwrap();
    assert_eq!(
        (
            recovered.snapshot_seq,
            recovered.records,
            recovered.last_seq
        ),
        (2, 1, 3)
    );
    assert_eq!(recovered.state.user_count(), 1);
    assert!(recovered.state.get_user(&un("ann")).is_ok());
    assert_eq!(recovered.replies.len(), 1);
}

/// Snapshot chunks fit a server whose payload limit is below the engine's
/// chunk size (512 KiB): the snapshot is stored and read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_fit_a_server_with_a_small_payload_limit() {
    let nats = common::NatsServer::start_with_conf("max_payload: 200000\n");
    let client = common::connect_engine(&nats.url()).await;
    assert_eq!(client.server_info().max_payload, 200_000);
    let log = wal::Log::open(&client, 0, 1, 1).await.unwrap();
    let seq = log
        .append(wal::RecordBuilder::default().seal(), "r.0", 0)
        .await
        .unwrap();
    let state = reddit_engine::state::ShardState::new(0, 1);
    let mut replies = reddit_engine::replies::ReplyCache::new(10);
    for i in 0..5 {
        replies.insert(reddit_engine::replies::Cached {
            key: ReplyKey::of_text(&format!("k{i}")),
            hash: i,
            reply: vec![i as u8; 150_000],
        });
    }
    let snapshot = wal::encode_snapshot(&state, &replies, seq).unwrap();
    assert!(snapshot.len() > 700_000);
    log.save_snapshot(snapshot, seq).await.unwrap();
    let recovered = log.recover(10).await.unwrap();
    assert_eq!((recovered.snapshot_seq, recovered.replies.len()), (seq, 5));
}

/// A log of large records (600 of 700 KiB) is read back whole. Pulling the
/// client's default of 500 records at a time (350 MiB, far above the 64 MiB
/// nats-server lets wait for one connection), the replay stalled after the
/// first pull ("no log record arrived within 30 s (after record 517 of 600)"),
/// so a shard with such a log could not restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_of_large_records_is_replayed_whole() {
    let nats = common::NatsServer::start();
    let client = common::connect_engine(&nats.url()).await;
    let log = wal::Log::open(&client, 0, 1, 1).await.unwrap();
    let records = 600u64;
    let blob = vec![7u8; 700 * 1024];
    let mut seq = 0;
    for i in 0..records {
        let record = record_of_reply(&format!("big.{i}"), i, blob.clone());
        seq = log.append(record, &format!("big.{i}"), seq).await.unwrap();
    }
    let recovered = tokio::time::timeout(Duration::from_secs(120), log.recover(1000))
        .await
        .expect("the replay ends")
        .unwrap();
    assert_eq!((recovered.last_seq, recovered.records), (records, records));
    assert_eq!(recovered.replies.len(), records as usize);
    // A smaller reply cache keeps exactly the newest replies.
    let small = log.recover(100).await.unwrap();
    assert_eq!(small.replies.len(), 100);
    use reddit_engine::replies::Lookup;
    let big = |i: u64| ReplyKey::of_text(&format!("big.{i}"));
    let newest = big(records - 1);
    assert!(matches!(
        small.replies.lookup(&newest, records - 1),
        Lookup::Hit(_)
    ));
    assert_eq!(
        small.replies.lookup(&big(records - 100), records - 100),
        Lookup::Hit(&blob[..])
    );
    assert_eq!(
        small.replies.lookup(&big(records - 101), records - 101),
        Lookup::Miss
    );
}

/// A shard that starts asks the others for the sync items its previous owner
/// acknowledged before logging them, and names the previous owner's last
/// record as the point after which they may be lost: the one before its own
/// fence (an empty record it appends before serving, which takes the
/// sequence the previous owner's next record would have had). Naming the
/// fence instead skips exactly the record a `kill -9` loses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_shard_asks_for_what_followed_its_predecessors_last_record() {
    use futures::StreamExt;
    use reddit_shared::protocol::internal::ResyncRequest;
    use reddit_shared::protocol::rpc::Rpc;

    let mut cluster = Cluster::start(2).await;
    let url = cluster.nats.url();
    let c = cluster.client.clone();
    let alice = cluster.user(&name_on("alice", 1, 2)).await;
    let sub = sn(&name_on("rust", 0, 2));
    c.create_subreddit(&alice, &sub, "d").await.unwrap();
    c.join(&alice, &sub).await.unwrap();
    cluster.stop_shard(1).await;
    let (_, last, _) = stream_state(&url, 1).await;
    assert!(last > 0, "shard 1 logged its user and the membership");

    // As the shards' serving role, the one allowed to read their requests.
    let engine = engine_role(&url, "engine-serve").await;
    let mut asks = engine
        .subscribe(reddit_shared::subject::request(0, ResyncRequest::OP))
        .await
        .unwrap();
    engine.flush().await.unwrap();
    cluster.shards[1] = Some(start_shard(&url, 1, 2).await);
    let msg = tokio::time::timeout(Duration::from_secs(10), asks.next())
        .await
        .expect("shard 1 asks shard 0 within 10 s")
        .unwrap();
    let ask: ResyncRequest = reddit_shared::codec::decode(&msg.payload).unwrap();
    assert_eq!(ask.shard, 1);
    assert_eq!(
        ask.after,
        Some(last),
        "after the previous owner's last record"
    );
    let (_, now, _) = stream_state(&url, 1).await;
    assert!(
        now > last,
        "the new owner fenced the log ({now} after {last})"
    );
    // The join is still there, and nothing was lost.
    common::quiesce(&c).await;
    let audit = c.audit(10).await.unwrap();
    assert!(audit.ok, "{:?}", audit.violations);
    cluster.stop().await;
}

/// The users' shard acknowledges memberships before its record holding them
/// is durable, and the subreddit's shard keeps them until an answer says it
/// is (`unlogged_sync`). On a quiet system no later answer comes: the idle
/// syncer asks, and nothing stays kept. (Before, the last items were kept,
/// and counted, for good.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_quiet_system_no_acknowledged_sync_item_stays_kept() {
    let cluster = Cluster::start(2).await;
    let c = cluster.client.clone();
    let owner = cluster.user(&name_on("owner", 0, 2)).await;
    let sub = sn(&name_on("rust", 0, 2));
    c.create_subreddit(&owner, &sub, "d").await.unwrap();
    let join = async |i: usize| {
        let joiner = cluster.user(&name_on(&format!("joiner{i}"), 1, 2)).await;
        c.join(&joiner, &sub).await.unwrap();
    };
    kept_then_released(&c, "a membership", join, |s| s.unlogged_sync).await;
    cluster.stop().await;
}

/// Makes writes `write(0)`, `write(1)`, ... from shard 0 to shard 1 until
/// shard 0 keeps one that shard 1 acknowledged before logging it (`kept`
/// above 0; shard 1 acknowledges early once shard 0 answered its resync
/// ask), then waits until no shard keeps anything: on a quiet system nothing
/// stays kept.
async fn kept_then_released(
    c: &RedditClient,
    what: &str,
    mut write: impl AsyncFnMut(usize),
    kept: fn(&reddit_shared::protocol::admin::ShardStats) -> u64,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    for i in 0.. {
        write(i).await;
        if kept(&c.shard_stats(0).await.unwrap()) > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "shard 1 never acknowledged {what} before logging it"
        );
    }
    eventually("nothing kept", Duration::from_secs(15), || {
        let c = c.clone();
        async move {
            c.all_stats()
                .await
                .is_ok_and(|s| s.iter().all(|s| kept(s) == 0))
        }
    })
    .await;
}

/// The same for DMs: the last DMs a recipient's shard acknowledged before
/// logging them are not left unconfirmed (and counted, and delivered again at
/// every restart) once the system goes quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_quiet_system_no_acknowledged_dm_stays_unconfirmed() {
    let cluster = Cluster::start(2).await;
    let c = cluster.client.clone();
    let alice = cluster.user(&name_on("alice", 0, 2)).await;
    let bob = name_on("bob", 1, 2);
    cluster.user(&bob).await;
    let send = async |i: usize| {
        c.send_dm(&alice, &un(&bob), &format!("hello {i}"))
            .await
            .unwrap();
    };
    kept_then_released(&c, "a DM", send, |s| s.unconfirmed_dms).await;
    cluster.stop().await;
}

/// A DM that the recipient's shard acknowledged before its record was
/// durable stays in the sender's shard's durable state until that record is
/// shown durable: a restart of the sender's shard (from its snapshot and
/// log) delivers it again, and so does the recipient's shard asking for what
/// it may have lost (`internal.resync`). Shard 1 is played by the test,
/// answering deliveries as a shard whose log lags. Shard 0 does not recheck
/// DMs left unconfirmed (`dm_recheck`, tested by
/// `on_a_quiet_system_no_acknowledged_dm_stays_unconfirmed`): its deliveries
/// again would come between the restarts' and confirm the DM before the
/// resync is asked for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dm_acknowledged_before_it_was_durable_is_delivered_again_until_confirmed() {
    use futures::StreamExt;
    use reddit_shared::protocol::internal::{DeliverDm, DmDelivered, ResyncAck, ResyncRequest};
    use reddit_shared::protocol::rpc::Rpc;
    use std::sync::{Arc, Mutex};

    let no_recheck = |config: &mut Config| config.dm_recheck = Duration::ZERO;
    let mut cluster = Cluster::start_with(2, no_recheck).await;
    let url = cluster.nats.url();
    let c = cluster.client.clone();
    let alice = cluster.user(&name_on("alice", 0, 2)).await;
    let bob = un(&name_on("bob", 1, 2));
    cluster.stop_shard(1).await;

    // Shard 1, as the test: every delivery is answered at `position`
    // (record, durable, fence), and its DM's id noted.
    let engine = engine_role(&url, "engine-serve").await;
    let mut deliveries = engine
        .subscribe(reddit_shared::subject::request(1, DeliverDm::OP))
        .await
        .unwrap();
    engine.flush().await.unwrap();
    let position = Arc::new(Mutex::new((50u64, 49u64, 40u64)));
    let (seen_tx, mut seen) = tokio::sync::mpsc::channel(64);
    let answering = {
        let (engine, position) = (engine.clone(), position.clone());
        tokio::spawn(async move {
            while let Some(msg) = deliveries.next().await {
                let DeliverDm { dm } = reddit_shared::codec::decode(&msg.payload).unwrap();
                let (record, durable, fence) = *position.lock().unwrap();
                let _ = seen_tx.send(dm.id).await;
                let reply = encode(&DmDelivered {
                    dm,
                    record,
                    durable,
                    fence,
                })
                .unwrap();
                engine
                    .publish(msg.reply.unwrap(), reply.into())
                    .await
                    .unwrap();
            }
        })
    };
    let unconfirmed = |c: &RedditClient| {
        let c = c.clone();
        async move { c.shard_stats(0).await.unwrap().unconfirmed_dms }
    };

    let dm = c.send_dm(&alice, &bob, "are you there").await.unwrap();
    assert_eq!(next_delivery(&mut seen).await, dm.id);
    assert_eq!(unconfirmed(&c).await, 1, "record 50 is not durable at 49");

    // Shard 0 restarts (its snapshot and log): it delivers the DM again.
    cluster.stop_shard(0).await;
    *position.lock().unwrap() = (0, 60, 40);
    let mut config = Config::new(url.clone(), 0, 2, SECRET);
    no_recheck(&mut config);
    cluster.shards[0] = Some(start_shard_with(config).await);
    assert_eq!(next_delivery(&mut seen).await, dm.id, "delivered again");
    eventually("the DM confirmed", Duration::from_secs(10), || {
        let u = unconfirmed(&c);
        async move { u.await == 0 }
    })
    .await;

    // Shard 1 "restarts" with record 60 its last and asks: the DM it
    // acknowledged for record 61 comes again before the answer.
    *position.lock().unwrap() = (61, 60, 40);
    let second = c.send_dm(&alice, &bob, "still there?").await.unwrap();
    assert_eq!(next_delivery(&mut seen).await, second.id);
    assert_eq!(unconfirmed(&c).await, 1);
    *position.lock().unwrap() = (0, 70, 61);
    let ask = ResyncRequest {
        shard: 1,
        after: Some(60),
    };
    // As the shards' outgoing role, the one allowed to ask another shard.
    let work = engine_role(&url, "engine-work").await;
    let answer = work
        .request(
            reddit_shared::subject::request(0, ResyncRequest::OP),
            encode(&ask).unwrap().into(),
        )
        .await
        .unwrap();
    let ack: ResyncAck = reddit_shared::connect::decode_message(&answer).unwrap();
    assert_eq!(ack.dms, 1);
    assert_eq!(next_delivery(&mut seen).await, second.id);
    assert_eq!(unconfirmed(&c).await, 0);

    answering.abort();
    cluster.stop().await;
}

/// The next DM id the test's shard 1 was asked to deliver, within 10 s.
async fn next_delivery(
    seen: &mut tokio::sync::mpsc::Receiver<reddit_shared::ids::DmId>,
) -> reddit_shared::ids::DmId {
    tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .expect("a delivery within 10 s")
        .unwrap()
}

/// A connection as one of the shards' NATS users (`engine-serve` receives
/// shards' requests; `engine-work` sends them), with the shards' inbox prefix.
async fn engine_role(url: &str, user: &str) -> async_nats::Client {
    reddit_shared::connect::connect_with(
        &common::engine_url(url),
        &format!("test-{user}"),
        async_nats::ConnectOptions::new().custom_inbox_prefix(reddit_shared::subject::ENGINE_INBOX),
        Some(user),
    )
    .await
    .unwrap()
}
