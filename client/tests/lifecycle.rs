//! Start-up refusals, missing shards, and graceful shutdown of the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    name_on, spawn_shard, start_shard, un, wait_serving, workspace_bin, Cluster, NatsServer, SECRET,
};
use reddit_client::{ClientOptions, ErrorKind, Identity, RedditClient};
use reddit_engine::{Config, EngineError};
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_shard_gives_a_quick_unavailable_error() {
    let mut cluster = Cluster::start(2).await;
    let c = cluster.client.clone();
    let on_one = un(&name_on("gone", 1, 2));
    let on_zero = un(&name_on("here", 0, 2));
    c.register(&on_zero, &Identity::generate()).await.unwrap();
    cluster.stop_shard(1).await;
    // A long client timeout: the error must come from NATS' no-responders reply,
    // not from waiting the timeout out.
    let patient = RedditClient::with_shards(c.nats().unwrap().clone(), 2, Duration::from_secs(600));
    let e = tokio::time::timeout(Duration::from_secs(30), patient.get_user(&on_one))
        .await
        .expect("a request to a missing shard must not hang")
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains("shard 1"), "{e}");
    // The other shard still serves.
    patient.get_user(&on_zero).await.unwrap();
    // Discovery names the missing shard.
    let options = ClientOptions {
        discovery_timeout: Duration::from_millis(500),
        ..ClientOptions::default()
    };
    let e = RedditClient::connect(&cluster.nats.url(), options)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.message().contains("shard(s) 1 of 2"), "{e}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_engine_at_all_is_reported_by_discovery() {
    let nats = NatsServer::start();
    let options = ClientOptions {
        discovery_timeout: Duration::from_millis(300),
        ..ClientOptions::default()
    };
    let e = RedditClient::connect(&nats.url(), options)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.message().contains("is the engine running"), "{e}");
    let e = RedditClient::connect("nats://127.0.0.1:1", ClientOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connect);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_owner_or_a_disagreeing_shard_is_refused() {
    let nats = NatsServer::start();
    let url = nats.url();
    let first = start_shard(&url, 0, 2).await;
    let second = start_shard(&url, 1, 2).await;

    let dup = spawn_shard(Config::new(&url, 0, 2, SECRET)).stop().await;
    assert!(
        matches!(dup, Err(EngineError::AlreadyOwned { shard: 0, .. })),
        "{dup:?}"
    );
    let msg = dup.unwrap_err().to_string();
    assert!(msg.contains("already served"), "{msg}");

    let bigger = spawn_shard(Config::new(&url, 2, 3, SECRET));
    let bigger = bigger.stop().await;
    assert!(
        matches!(
            bigger,
            Err(EngineError::ShardCountMismatch {
                theirs: 2,
                ours: 3,
                ..
            })
        ),
        "{bigger:?}"
    );
    let smaller = spawn_shard(Config::new(&url, 0, 1, SECRET)).stop().await;
    assert!(
        matches!(smaller, Err(EngineError::ShardCountMismatch { .. })),
        "{smaller:?}"
    );

    // Stop shard 1 and restart it with another secret: refused.
    second.stop().await.unwrap();
    let other_secret = spawn_shard(Config::new(&url, 1, 2, "not-the-secret-of-this-cluster"))
        .stop()
        .await;
    assert!(
        matches!(
            other_secret,
            Err(EngineError::SecretMismatch { other_shard: 0 })
        ),
        "{other_secret:?}"
    );

    let bad = spawn_shard(Config::new(&url, 5, 2, SECRET)).stop().await;
    assert!(matches!(bad, Err(EngineError::Config(_))), "{bad:?}");

    // The running shard was not disturbed.
    let again = start_shard(&url, 1, 2).await;
    let client = RedditClient::connect(&url, ClientOptions::default())
        .await
        .unwrap();
    client
        .register(&un("still_fine"), &Identity::generate())
        .await
        .unwrap();
    again.stop().await.unwrap();
    first.stop().await.unwrap();
}

/// Requests shard 0 has taken from NATS, from `$SRV.STATS` (answered by the
/// service framework's own task, not queued behind the requests).
async fn received(nats: &async_nats::Client) -> u64 {
    let msg = nats
        .request(reddit_shared::subject::service_stats(), Vec::new().into())
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
    v["endpoints"][0]["data"]["received"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_binary_exits_cleanly_on_sigterm_answering_what_it_took() {
    let nats = NatsServer::start();
    let url = nats.url();
    let mut child = Command::new(workspace_bin("reddit-engine"))
        .args(common::engine_args(&url, 0, 1))
        .env("REDDIT_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_serving(&url, 0).await;
    let nats_client = common::connect_service(&url).await;
    let client = RedditClient::with_shards(nats_client.clone(), 1, Duration::from_secs(60));
    let before = received(&nats_client).await;
    // A burst of registrations; once the shard has taken all of them (many still
    // queued), SIGTERM. Every one must be answered.
    let n = 2000u64;
    let burst: Vec<_> = (0..n)
        .map(|i| {
            let c = client.clone();
            tokio::spawn(async move {
                c.register(&un(&format!("burst{i}")), &Identity::generate())
                    .await
            })
        })
        .collect();
    common::eventually(
        "the shard to take the burst",
        Duration::from_secs(60),
        || {
            let nc = nats_client.clone();
            async move { received(&nc).await >= before + n }
        },
    )
    .await;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    for t in burst {
        t.await
            .unwrap()
            .expect("a request the shard had taken was not answered");
    }
    // Gone now: refused at once, not after the timeout.
    let e = client.get_user(&un("burst0")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projects_nats_conf_keeps_clients_off_internal_subjects() {
    // The harness runs nats-server with the project's nats-auth.conf.
    let nats = NatsServer::start();
    let shard = start_shard(&nats.url(), 0, 1).await;
    let client = RedditClient::connect(&nats.url(), ClientOptions::default())
        .await
        .unwrap();
    client
        .register(&un("permitted"), &Identity::generate())
        .await
        .unwrap();
    // The service role may not speak engine-to-engine: the client refuses at once,
    // and a client that tries anyway is dropped by the server.
    let e = client
        .call_raw::<serde::de::IgnoredAny>(0, "internal.hello", None, Vec::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Forbidden, "{e}");
    let pretending =
        RedditClient::with_shards(client.nats().unwrap().clone(), 1, Duration::from_secs(1))
            .with_role(reddit_client::Role::Engine);
    let e = pretending
        .call_raw::<serde::de::IgnoredAny>(0, "internal.hello", None, Vec::new())
        .await
        .unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::TimedOut,
        "the server must drop the publish: {e}"
    );
    // Wrong engine credentials are refused outright.
    let bad = format!("nats://engine:wrong@127.0.0.1:{}", nats.port());
    let refused = spawn_shard(Config::new(&bad, 0, 1, SECRET)).stop().await;
    assert!(
        matches!(refused, Err(EngineError::Connect { .. })),
        "{refused:?}"
    );
    assert!(
        !refused.unwrap_err().to_string().contains("wrong"),
        "the password is redacted"
    );
    shard.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_exits_on_sigterm_even_when_nats_is_gone() {
    let nats = NatsServer::start();
    let url = nats.url();
    let mut child = common::ChildGuard::new(
        Command::new(workspace_bin("reddit-engine"))
            .args(common::engine_args(&url, 0, 1))
            .env("REDDIT_SECRET", SECRET)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_serving(&url, 0).await;
    drop(nats);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // Bounded by the shutdown grace period (15 s) plus the final steps (4 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(status) = child.0.as_mut().unwrap().try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the engine did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switches_in_the_environment_take_1_0_yes_no_on_off() {
    let nats = NatsServer::start();
    let url = nats.url();
    let engine = |env: &[(&str, &str)]| {
        let mut cmd = Command::new(workspace_bin("reddit-engine"));
        cmd.args(common::engine_args(&url, 0, 1))
            .env_remove("REDDIT_SECRET")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    };
    // Falsy spellings are false: without a secret and not in development
    // mode, the shard refuses to start and says why (not "invalid value").
    for no in ["0", "no", "off", "false"] {
        let out = engine(&[("REDDIT_DEV", no)]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "REDDIT_DEV={no}: {stderr}");
        assert!(
            stderr.contains("REDDIT_SECRET"),
            "REDDIT_DEV={no}: {stderr}"
        );
    }
    // Anything else is refused at start, naming the switch.
    let out = engine(&[("REDDIT_DEV", "maybe")]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--dev"), "{stderr}");
    // Truthy spellings are true: development mode serves without a secret,
    // with the other switches set the same ways.
    let _child = common::ChildGuard::new(
        engine(&[
            ("REDDIT_DEV", "1"),
            ("REDDIT_TURN_CPU", "yes"),
            ("REDDIT_HUGE_PAGES", "off"),
            ("REDDIT_READ_BARRIER", "on"),
            ("REDDIT_STANDBY", "0"),
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    wait_serving(&url, 0).await;
    let client = RedditClient::connect(&url, ClientOptions::default())
        .await
        .unwrap();
    client
        .register(&un("switched"), &Identity::generate())
        .await
        .unwrap();
}
