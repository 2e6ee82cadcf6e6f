//! Fault tests with real processes: a simulation runs against shard processes with
//! `--storage jetstream`, and in the middle of it a shard is killed with SIGKILL and
//! restarted, or the NATS server is killed and restarted on the same port and store,
//! or one node of a 3-node NATS cluster (logs replicated R3) is killed for good.
//! Either way the audit passes and the simulator's ledger shows no acknowledged
//! write lost and none applied twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{eventually, shard_process, wait_serving, ChildGuard, NatsServer};
use reddit_client::sim::{launcher, report::Report, Load, SimConfig};
use reddit_client::RedditClient;
use std::path::PathBuf;
use std::time::Duration;

const SHARDS: u32 = 3;

fn sim_config(url: &str, out: &std::path::Path) -> SimConfig {
    // Longer than the small one, with short attempts and a long retry budget, so
    // the fault lands mid-run and every operation outlives it.
    SimConfig {
        tag: "fault".into(),
        online_mean_s: 2.0,
        load: Load::Open {
            rate: None,
            think_ms: 100.0,
        },
        duration_s: 12.0,
        seed: 11,
        request_timeout_ms: 2_000,
        retry_budget_ms: 40_000,
        ..common::small_sim(url, out)
    }
}

struct Procs {
    nats: NatsServer,
    shards: Vec<ChildGuard>,
}

async fn start() -> Procs {
    start_with(&[]).await
}

/// Shards started with `args`.
async fn start_with(args: &[&str]) -> Procs {
    let nats = NatsServer::start();
    let mut shards = Vec::new();
    for k in 0..SHARDS {
        shards.push(shard_process(&nats.url(), k, SHARDS, args));
        wait_serving(&nats.url(), k).await;
    }
    Procs { nats, shards }
}

/// Waits until the simulation's run phase is writing posts on every shard.
async fn wait_for_run_phase(url: &str) {
    let nats = common::connect_service(url).await;
    let client = RedditClient::with_shards(nats, SHARDS, Duration::from_secs(2));
    eventually("the run phase", Duration::from_secs(60), || {
        let c = client.clone();
        async move {
            c.all_stats()
                .await
                .is_ok_and(|s| s.iter().all(|s| s.posts >= 5))
        }
    })
    .await;
}

fn check(report: &Report) {
    assert!(report.audit.ok, "audit: {:?}", report.audit.violations);
    for line in &report.ledger {
        assert_eq!(line.lost, 0, "acknowledged writes lost: {line:?}");
        assert_eq!(line.double_applied, 0, "writes applied twice: {line:?}");
    }
    assert!(report.ledger_ok, "{:#?}", report.ledger);
    let acknowledged: u64 = report.ledger.iter().map(|l| l.acknowledged).sum();
    assert!(
        acknowledged > 500,
        "too little happened: {:#?}",
        report.ledger
    );
}

/// Runs the simulation against `url` and, once its run phase writes on every
/// shard, `fault`.
async fn simulate_with(url: &str, fault: impl FnOnce()) -> Report {
    simulate_beside(url, async {
        wait_for_run_phase(url).await;
        fault();
    })
    .await
}

/// Runs the simulation against `url` with `faults` beside it.
async fn simulate_beside(url: &str, faults: impl std::future::Future<Output = ()>) -> Report {
    let out = std::env::temp_dir().join(format!("reddit-fault-{}", uuid::Uuid::now_v7()));
    let cfg = sim_config(url, &out);
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_reddit-client"));
    let sim = tokio::time::timeout(Duration::from_secs(240), launcher::run(cfg, &exe));
    let (report, ()) = tokio::join!(sim, faults);
    let report = report.expect("the simulation ends").unwrap();
    let _ = std::fs::remove_dir_all(out);
    report
}

async fn run_with_fault(fault: impl FnOnce(&mut Procs)) -> Report {
    let mut procs = start().await;
    let url = procs.nats.url();
    let report = simulate_with(&url, || fault(&mut procs)).await;
    drop(procs);
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_killed_mid_simulation_loses_nothing_acknowledged() {
    let report = run_with_fault(|procs| {
        let url = procs.nats.url();
        // SIGKILL, then a new process replays the log.
        procs.shards[1].kill();
        procs.shards[1] = shard_process(&url, 1, SHARDS, &[]);
    })
    .await;
    check(&report);
}

/// On a 3-node NATS cluster with the logs replicated on every node (R3), one
/// node killed for good mid-run: the engines, the simulator's workers and the
/// log move to the other two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_node_killed_mid_simulation_on_a_3_node_cluster_loses_nothing_acknowledged() {
    let mut cluster = common::NatsCluster::start(3).await;
    let url = cluster.url();
    let mut shards = Vec::new();
    for k in 0..SHARDS {
        shards.push(shard_process(&url, k, SHARDS, &["--replicas", "3"]));
        wait_serving(&url, k).await;
    }
    let report = simulate_with(&url, || cluster.nodes[1].kill()).await;
    check(&report);
    drop(shards);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_restarted_mid_simulation_loses_nothing_acknowledged() {
    let report = run_with_fault(|procs| procs.nats.restart()).await;
    check(&report);
}

/// With eight appends in flight per shard (`--log-pipeline 8`), appends sent
/// ahead of a predecessor that NATS's restart lost are refused and sent again in
/// order: still nothing acknowledged is lost and nothing is applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_pipelined_appends_a_nats_server_restart_loses_nothing_acknowledged() {
    // Whether an append was in flight when the server died is a matter of
    // timing: the server is killed again (up to this many times) until one
    // was, while the simulation runs.
    const RESTARTS: usize = 4;
    let mut procs = start_with(&["--log-pipeline", "8", "--log-linger-us", "0"]).await;
    let url = procs.nats.url();
    let nats = common::connect_service(&url).await;
    let client = RedditClient::with_shards(nats, SHARDS, Duration::from_secs(2));
    let resent = || async {
        client
            .all_stats()
            .await
            .ok()
            .map(|s| s.iter().map(|s| s.wal_resent).sum::<u64>())
    };
    let mut restarts = 0;
    let report = simulate_beside(&url, async {
        wait_for_run_phase(&url).await;
        while restarts < RESTARTS {
            procs.nats.restart();
            restarts += 1;
            eventually("every shard answers again", Duration::from_secs(30), || {
                let r = resent();
                async move { r.await.is_some() }
            })
            .await;
            if resent().await.is_some_and(|n| n > 0) {
                break;
            }
        }
    })
    .await;
    check(&report);
    // The scenario did what it is here for: appends were refused and resent.
    let stats = client.all_stats().await.unwrap();
    let resent: u64 = stats.iter().map(|s| s.wal_resent).sum();
    assert!(
        resent > 0,
        "no pipelined append was sent again in {restarts} restarts: {stats:#?}"
    );
    drop(procs);
}

/// The supervisor and its children run in their own process group; dropping
/// this kills the whole group, so a failing test leaves nothing behind.
struct Group(std::process::Child);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

fn children_of(pid: u32) -> Vec<u32> {
    let out = std::process::Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_supervisor_restarts_a_killed_shard_and_stops_it_on_sigterm() {
    use std::os::unix::process::CommandExt;
    let nats = NatsServer::start();
    let url = nats.url();
    let engine = common::workspace_bin("reddit-engine");
    let mut group = Group(
        std::process::Command::new("bash")
            .arg(common::root().join("scripts/supervise.sh"))
            .args(["shard-0", "--"])
            .arg(&engine)
            .args(common::engine_args(&url, 0, 1))
            .env("REDDIT_SECRET", common::SECRET)
            .env("RUST_LOG", "warn")
            .process_group(0)
            .spawn()
            .unwrap(),
    );
    let supervisor = group.0.id();
    wait_serving(&url, 0).await;
    let c = RedditClient::connect(&url, reddit_client::ClientOptions::default())
        .await
        .unwrap();
    common::user(&c, "alice").await;
    let first = children_of(supervisor);
    assert_eq!(first.len(), 1, "{first:?}");
    std::process::Command::new("kill")
        .args(["-KILL", &first[0].to_string()])
        .status()
        .unwrap();
    eventually("a restarted shard", Duration::from_secs(20), || {
        let c = c.clone();
        let first = first.clone();
        async move {
            let now = children_of(supervisor);
            now.len() == 1 && now != first && c.get_user(&common::un("alice")).await.is_ok()
        }
    })
    .await;
    std::process::Command::new("kill")
        .args(["-TERM", &supervisor.to_string()])
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = group.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the supervisor did not stop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
    assert!(children_of(supervisor).is_empty());
}
