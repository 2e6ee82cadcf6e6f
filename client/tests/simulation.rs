//! A small simulation with real worker processes: the audit passes, the ledger
//! matches, every operation type occurs, and report.json has its fields.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Cluster;
use reddit_client::sim::launcher;
use std::path::PathBuf;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_simulation_passes_its_checks() {
    let cluster = Cluster::start(3).await;
    let out = std::env::temp_dir().join(format!("reddit-sim-test-{}", uuid::Uuid::now_v7()));
    let cfg = common::small_sim(&cluster.nats.url(), &out);
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_reddit-client"));
    let report = launcher::run(cfg, &exe).await.unwrap();
    assert!(report.audit.ok, "{:?}", report.audit.violations);
    assert!(report.ledger_ok, "{:#?}", report.ledger);
    assert_eq!(report.users, 300);
    for op in [
        "post.create",
        "post.repost",
        "comment.create",
        "vote.cast",
        "dm.send",
        "dm.reply",
        "feed.get",
        "sub.join",
        "sub.leave",
        "dm.list",
    ] {
        let s = report
            .ops
            .get(op)
            .unwrap_or_else(|| panic!("no {op} in {:?}", report.ops.keys()));
        assert!(s.ok > 0, "{op} never succeeded: {s:?}");
    }
    assert!(report.sessions.logins > 0 && report.sessions.logouts > 0);
    assert!(report.shard_load.len() == 3 && report.shard_load.iter().all(|s| s.requests > 0));
    assert!(report.zipf.fitted.is_some());
    assert!(report.total.count > 1000, "{}", report.total.count);

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    for field in [
        "config",
        "shards",
        "users",
        "setup_seconds",
        "run_seconds",
        "total",
        "ops",
        "timeline",
        "shard_load",
        "shard_skew",
        "zipf",
        "sessions",
        "memory",
        "ledger",
        "ledger_ok",
        "audit",
        "plots",
    ] {
        assert!(json.get(field).is_some(), "report.json lacks {field}");
    }
    for field in [
        "count",
        "errors",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "p999_ms",
        "max_ms",
        "throughput",
    ] {
        assert!(
            json["ops"]["vote.cast"].get(field).is_some(),
            "op summary lacks {field}"
        );
    }
    // Per second: the merged latency sum and maximum (mean latency per second).
    let seconds: Vec<reddit_client::sim::metrics::Second> =
        serde_json::from_value(json["timeline"].clone()).unwrap();
    assert!(!seconds.is_empty());
    for s in &seconds {
        assert!(
            s.ops == 0 || (s.latency_us_sum > 0 && s.max_us > 0),
            "{s:?}"
        );
        assert!(s.max_us as f64 / 1000.0 >= s.mean_ms(), "{s:?}");
    }
    let busiest = seconds.iter().map(|s| s.ops).max().unwrap();
    assert!(busiest > 0);
    for plot in [
        "throughput.svg",
        "latency.svg",
        "zipf.svg",
        "shards.svg",
        "online.svg",
    ] {
        let svg = std::fs::read_to_string(out.join(plot)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("</svg>"), "{plot}");
    }
    let _ = std::fs::remove_dir_all(out);
    cluster.stop().await;
}

/// `--seed-posts` and `--seed-comments`: the corpus is made during setup (every
/// subreddit gets its posts, every post its comments, one thread of them nested),
/// counted in the setup's operations and in the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_corpus_is_there_before_the_run() {
    use reddit_shared::protocol::comment::CommentView;
    use reddit_shared::protocol::post::{ListPostsRequest, PostSort};

    let cluster = Cluster::start(2).await;
    let out = std::env::temp_dir().join(format!("reddit-seed-test-{}", uuid::Uuid::now_v7()));
    let cfg = reddit_client::sim::SimConfig {
        seed_posts: 2,
        seed_comments: 5,
        duration_s: 1.0,
        ..common::small_sim(&cluster.nats.url(), &out)
    };
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_reddit-client"));
    let report = launcher::run(cfg.clone(), &exe).await.unwrap();
    assert!(report.audit.ok, "{:?}", report.audit.violations);
    assert!(report.ledger_ok, "{:#?}", report.ledger);
    let posts = cfg.subreddits as u64 * 2;
    assert_eq!(report.setup_ops["post.create"].ok, posts);
    assert_eq!(report.setup_ops["comment.create"].ok, posts * 5);

    // Every subreddit has its two seeded posts, each with its five comments:
    // three top-level, and a thread two deep under the first.
    // (The run may have added comments of its own: only seeded ones count.)
    fn seeded_comment(c: &CommentView) -> bool {
        c.body.starts_with("A comment seeded")
    }
    fn depth(c: &CommentView) -> u32 {
        c.replies
            .iter()
            .filter(|r| seeded_comment(r))
            .map(depth)
            .max()
            .map_or(c.depth, |d| d.max(c.depth))
    }
    let c = &cluster.client;
    for rank in [0, cfg.subreddits - 1] {
        let sub: reddit_shared::names::SubredditName = cfg.subreddit(rank).parse().unwrap();
        let page = c
            .send(
                None,
                &ListPostsRequest {
                    subreddit: sub.clone(),
                    sort: PostSort::New,
                    limit: Some(100),
                    cursor: None,
                },
            )
            .await
            .unwrap();
        let seeded: Vec<_> = page
            .posts
            .iter()
            .filter(|p| p.title.starts_with("seeded post"))
            .collect();
        assert_eq!(seeded.len(), 2, "{sub}: {:?}", page.posts);
        for post in seeded {
            let tree = common::comment_tree(c, &sub, post.id).await;
            let top: Vec<_> = tree.comments.iter().filter(|c| seeded_comment(c)).collect();
            assert_eq!(top.len(), 3, "{tree:#?}");
            assert_eq!(
                top.into_iter().map(depth).max(),
                Some(2),
                "comments 1 and 3 form a thread under comment 0: {tree:#?}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(out);
}

/// In closed loop, returns (each a feed and an inbox catch-up) wait for room
/// like every other request: with sessions changing far faster than 4 requests
/// in flight can serve, a worker still never has more than its cap and one
/// return's catch-up in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_closed_loop_fast_session_churn_stays_within_the_in_flight_cap() {
    let cluster = Cluster::start(2).await;
    let out = std::env::temp_dir().join(format!("reddit-churn-test-{}", uuid::Uuid::now_v7()));
    let cfg = reddit_client::sim::SimConfig {
        load: reddit_client::sim::Load::Closed { in_flight: 4 },
        // 300 users returning every 20 ms on average: 15,000 returns/s.
        online_mean_s: 0.01,
        offline_mean_s: 0.01,
        duration_s: 2.0,
        ..common::small_sim(&cluster.nats.url(), &out)
    };
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_reddit-client"));
    let report = launcher::run(cfg, &exe).await.unwrap();
    assert!(report.ledger_ok, "{:#?}", report.ledger);
    assert!(report.sessions.logins > 100, "{:?}", report.sessions);
    assert!(
        (1..=4 + 2).contains(&report.max_in_flight),
        "in flight at most: {}",
        report.max_in_flight
    );
    let _ = std::fs::remove_dir_all(out);
}
