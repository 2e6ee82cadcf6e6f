//! The client's second transport: the CLI and the simulator through HTTP
//! gateways (`reddit-gateway` processes) instead of NATS, including losing a
//! gateway in the middle of a simulation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{eventually, Cluster, GatewayProcess};
use reddit_client::sim::launcher;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

struct Cli<'a> {
    http: String,
    dir: &'a Path,
}

impl Cli<'_> {
    fn run(&self, user: Option<&str>, args: &[&str]) -> (bool, String, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_reddit-client"));
        cmd.arg("--http")
            .arg(&self.http)
            .arg("--config-dir")
            .arg(self.dir)
            // Nothing listens here: every request must go through the gateway.
            .args(["--nats-url", "nats://127.0.0.1:1"]);
        if let Some(u) = user {
            cmd.args(["--user", u]);
        }
        let out = cmd.args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn json(&self, user: Option<&str>, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let (ok, out, err) = self.run(user, &all);
        assert!(ok, "reddit-client --http {args:?} failed: {err}");
        serde_json::from_str(&out).unwrap()
    }
}

/// A gateway process with `extra` arguments in front of `cluster`.
fn gateway_on(cluster: &Cluster, extra: &[&str]) -> GatewayProcess {
    GatewayProcess::start(
        &common::workspace_bin("reddit-gateway"),
        &cluster.nats.url(),
        extra,
    )
}

/// `reddit-client --http URL bench`'s three ways: over NATS, the REST
/// routes over bare HTTP connections, and the client library through the
/// gateway. Each counts requests, decodes every reply, and finds no errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_benchmark_reads_and_votes_every_way_without_errors() {
    let cluster = Cluster::start(2).await;
    let gw = gateway_on(&cluster, &common::NO_RATE_LIMITS);
    let direct = cluster.new_client().await;
    let library = reddit_client::RedditClient::connect_http(&gw.base, Default::default())
        .await
        .unwrap();
    let ms = reddit_client::bench::gateway(&direct, &library, &gw.base, &[1, 4], 0.3)
        .await
        .unwrap();
    let mut seen: Vec<(String, String, usize)> = ms
        .iter()
        .map(|m| (m.target.clone(), m.op.clone(), m.in_flight))
        .collect();
    seen.sort();
    assert_eq!(seen.len(), 12, "3 ways x 2 ops x 2 levels: {seen:?}");
    for m in &ms {
        assert!(m.count > 0, "{m:?}");
        assert_eq!(m.errors, 0, "{m:?}");
    }
    let table = reddit_client::bench::gateway_table(&ms);
    assert!(table.contains("REST ops/s"), "{table}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_works_through_a_gateway() {
    let cluster = Cluster::start(2).await;
    let gw = gateway_on(&cluster, &[]);
    let dir = std::env::temp_dir().join(format!("reddit-cli-http-{}", uuid::Uuid::now_v7()));
    let http = gw.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        let cli = Cli { http, dir: &dir };
        for u in ["alice", "bob"] {
            let v = cli.json(None, &["register", u]);
            assert_eq!(v["username"], u);
        }
        cli.json(Some("alice"), &["sub", "create", "httpsub"]);
        for u in ["alice", "bob"] {
            assert_eq!(
                cli.json(Some(u), &["sub", "join", "httpsub"])["member"],
                true
            );
        }
        let post = cli.json(
            Some("alice"),
            &["post", "create", "httpsub", "Over HTTP", "-b", "hi"],
        );
        assert!(post["signature"].is_string(), "the CLI signs: {post}");
        let id = post["id"].as_str().unwrap().to_owned();
        let c = cli.json(Some("bob"), &["comment", "httpsub", &id, "nice"]);
        assert_eq!(c["depth"], 0);
        let (ok, _, err) = cli.run(Some("bob"), &["comments", "httpsub", &id, "--verify"]);
        assert!(ok && err.contains("signatures: 1 verified"), "{err}");
        let v = cli.json(Some("bob"), &["vote", "httpsub", "post", &id, "up"]);
        assert_eq!(v["score"], 1);
        let feed = cli.json(Some("bob"), &["feed", "--sort", "new"]);
        assert_eq!(feed["posts"][0]["title"], "Over HTTP");
        let dm = cli.json(Some("bob"), &["dm", "send", "alice", "via http"]);
        let inbox = cli.json(Some("alice"), &["dm", "list"]);
        assert_eq!(inbox["messages"][0]["id"], dm["id"]);
        let r = cli.json(
            Some("alice"),
            &["dm", "reply", dm["id"].as_str().unwrap(), "back"],
        );
        assert_eq!(r["to"], "bob");
        let stats = cli.json(None, &["stats"]);
        assert_eq!(stats.as_array().unwrap().len(), 2);
        let subs = cli.json(None, &["sub", "list"]);
        assert!(subs.to_string().contains("httpsub"), "{subs}");
        // What a gateway does not carry says so.
        let (ok, _, err) = cli.run(Some("alice"), &["watch"]);
        assert!(!ok && err.contains("NATS"), "{err}");
        let (ok, _, err) = cli.run(None, &["audit"]);
        assert!(!ok && err.contains("service role"), "{err}");
        drop(cli);
        dir
    })
    .await
    .unwrap();
    let _ = std::fs::remove_dir_all(out);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulation_through_two_gateways_survives_losing_one() {
    let cluster = Cluster::start(2).await;
    let bin = common::workspace_bin("reddit-gateway");
    let url = cluster.nats.url();
    // All simulated users come from one address: lift the per-IP limit (the
    // per-token limit still applies, per simulated user).
    let open = ["--rate-per-ip", "1000000", "--burst-per-ip", "1000000"];
    let mut first = GatewayProcess::start(&bin, &url, &open);
    let second = GatewayProcess::start(&bin, &url, &open);
    let out = std::env::temp_dir().join(format!("reddit-sim-http-{}", uuid::Uuid::now_v7()));
    let mut cfg = common::small_sim(&url, &out);
    cfg.http = Some(format!("{},{}", first.base, second.base));
    cfg.duration_s = 8.0;
    cfg.request_timeout_ms = 2_000;
    // Debug builds of a gateway, two shards and the workers share two cores
    // here: a lighter load than the NATS-only runs, so that what is measured is
    // the failover, not a saturated machine.
    cfg.load = reddit_client::sim::Load::Open {
        rate: None,
        think_ms: 500.0,
    };
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_reddit-client"));
    let sim = tokio::time::timeout(Duration::from_secs(240), launcher::run(cfg, &exe));
    let client = cluster.client.clone();
    let kill = async {
        // Mid-run: once posts are being written, the first gateway dies.
        eventually("the run phase", Duration::from_secs(60), || {
            let c = client.clone();
            async move {
                c.all_stats()
                    .await
                    .is_ok_and(|s| s.iter().map(|s| s.posts).sum::<u64>() >= 20)
            }
        })
        .await;
        first.kill();
    };
    let (report, ()) = tokio::join!(sim, kill);
    let report = report.expect("the simulation ends").unwrap();
    assert!(report.audit.ok, "audit: {:?}", report.audit.violations);
    for line in &report.ledger {
        assert_eq!(line.lost, 0, "acknowledged writes lost: {line:?}");
        assert_eq!(line.double_applied, 0, "writes applied twice: {line:?}");
    }
    assert!(report.ledger_ok, "{:#?}", report.ledger);
    let acknowledged: u64 = report.ledger.iter().map(|l| l.acknowledged).sum();
    assert!(
        acknowledged > 300,
        "too little happened: {:#?}",
        report.ledger
    );
    let errors: u64 = report.total.errors.values().sum();
    assert_eq!(
        errors, 0,
        "the survivor took over: {:?}",
        report.total.errors
    );
    drop(second);
    let _ = std::fs::remove_dir_all(out);
    cluster.stop().await;
}
