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
