//! Failover benchmark (`cargo bench -p reddit-engine --bench failover`): one
//! durable shard with a standby (`--standby`) on a throwaway nats-server with the
//! project's roles; the serving process is killed with SIGKILL `FAILOVER_KILLS`
//! times (default 20), and each time the benchmark measures how long the shard
//! answers nobody: from the kill until `$SRV.INFO` is answered by another
//! process (polled every 2 ms). A new standby replaces each killed process.
//! `FAILOVER_TTL_MS` sets the lease TTL (default the engine's). Each kill lands at
//! a random point between two renewals; the benchmark also watches the lease
//! and reports when JetStream's expiry marker came, for comparison.
//!
//! The nats-server binary comes from `scripts/install-nats.sh` (or
//! `NATS_SERVER_BIN`).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "support.rs"]
mod support;
use support::{free_port, nats_bin, root};

use futures::StreamExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "reddit-failover-bench-7f3c2a9d81e4";

/// Kills every process it holds when dropped.
struct Procs(Vec<Child>, PathBuf);
impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn engine(url: &str, ttl_ms: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_reddit-engine"))
        .args([
            "--standby",
            "--shard",
            "0",
            "--shards",
            "1",
            "--lease-ttl-ms",
            ttl_ms,
        ])
        .env("NATS_URL", url)
        .env("REDDIT_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The pid of the process serving shard 0, if one answers.
async fn serving(nats: &async_nats::Client) -> Option<u32> {
    let reply = tokio::time::timeout(
        Duration::from_millis(500),
        nats.request("$SRV.INFO.reddit-engine", "".into()),
    )
    .await
    .ok()?
    .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&reply.payload).ok()?;
    v["metadata"]["pid"].as_str()?.parse().ok()
}

#[tokio::main]
async fn main() {
    let kills: usize = std::env::var("FAILOVER_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let ttl_ms = std::env::var("FAILOVER_TTL_MS")
        .unwrap_or_else(|_| reddit_engine::defaults::LEASE_TTL_MS.to_string());
    let dir = std::env::temp_dir().join(format!("reddit-failover-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(root().join("nats-auth.conf"), dir.join("nats-auth.conf")).unwrap();
    std::fs::write(
        dir.join("nats.conf"),
        format!(
            "jetstream {{\n  store_dir: {:?}\n  sync_interval: always\n}}\ninclude ./nats-auth.conf\n",
            dir.join("js")
        ),
    )
    .unwrap();
    let password = format!("{:032x}", rand::random::<u128>());
    let issuer = reddit_engine::callout::Issuer::from_secret(SECRET.as_bytes())
        .unwrap()
        .public_key();
    let port = free_port();
    let mut procs = Procs(Vec::new(), dir.clone());
    let mut server = Command::new(nats_bin());
    server
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-c"])
        .arg(dir.join("nats.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for role in ["ENGINE", "SERVICE", "GATEWAY", "CHAT"] {
        server.env(format!("REDDIT_{role}_PASSWORD"), &password);
    }
    procs
        .0
        .push(server.env("REDDIT_CALLOUT_ISSUER", issuer).spawn().unwrap());
    let engine_url = format!("nats://engine:{password}@127.0.0.1:{port}");
    let service_url = format!("nats://service:{password}@127.0.0.1:{port}");
    let start = Instant::now();
    let nats = loop {
        let options = async_nats::ConnectOptions::new()
            .custom_inbox_prefix(reddit_shared::subject::SERVICE_INBOX);
        match reddit_shared::connect::connect_with(&service_url, "failover-bench", options, None)
            .await
        {
            Ok(n) => break n,
            Err(_) if start.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("nats-server did not start: {e}"),
        }
    };
    procs.0.push(engine(&engine_url, &ttl_ms));
    procs.0.push(engine(&engine_url, &ttl_ms));
    // The lease's history as the bucket sees it: when it was last written
    // before each kill, and when JetStream expired it (its marker).
    let events: Arc<Mutex<Vec<(Instant, bool)>>> = Arc::default();
    {
        let options = async_nats::ConnectOptions::new()
            .custom_inbox_prefix(reddit_shared::subject::ENGINE_INBOX);
        let log = reddit_shared::connect::connect_with(
            &engine_url,
            "failover-bench-watch",
            options,
            None,
        )
        .await
        .unwrap();
        let js = async_nats::jetstream::new(log);
        let store = loop {
            if let Ok(s) = js.get_key_value(reddit_engine::lease::BUCKET).await {
                break s;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "no lease bucket");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let mut watch = store.watch("shard-0").await.unwrap();
        let events = events.clone();
        tokio::spawn(async move {
            while let Some(Ok(e)) = watch.next().await {
                let put = matches!(e.operation, async_nats::jetstream::kv::Operation::Put);
                events.lock().unwrap().push((Instant::now(), put));
            }
        });
    }
    let mut expiries = Vec::with_capacity(kills);
    let ttl = Duration::from_millis(
        ttl_ms
            .parse()
            .unwrap_or(reddit_engine::defaults::LEASE_TTL_MS),
    );
    let mut times = Vec::with_capacity(kills);
    for round in 0..kills {
        // The owner serves, and the standby has had time to start waiting.
        let deadline = Instant::now() + Duration::from_secs(30);
        let owner = loop {
            if let Some(pid) = serving(&nats).await {
                break pid;
            }
            assert!(Instant::now() < deadline, "no process serves shard 0");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        // Killed at a random point between two renewals (every TTL/4), as a
        // crash would be.
        let phase =
            Duration::from_micros(rand::random::<u64>() % (ttl.as_micros() as u64 / 4).max(1));
        tokio::time::sleep(ttl.max(Duration::from_millis(500)) + phase).await;
        let i = procs.0.iter().position(|c| c.id() == owner).unwrap();
        let mut victim = procs.0.remove(i);
        victim.kill().unwrap();
        let killed = Instant::now();
        let _ = victim.wait();
        let deadline = killed + Duration::from_secs(60);
        loop {
            if serving(&nats).await.is_some_and(|p| p != owner) {
                break;
            }
            assert!(Instant::now() < deadline, "no standby took over");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let took = killed.elapsed();
        let (written, expired) = {
            let events = events.lock().unwrap();
            let written = events
                .iter()
                .rev()
                .find(|(t, put)| *put && *t <= killed)
                .map(|(t, _)| killed - *t);
            let expired = events
                .iter()
                .find(|(t, put)| !*put && *t > killed)
                .map(|(t, _)| *t - killed);
            (written, expired)
        };
        let ms_or = |d: Option<Duration>| {
            d.map_or("?".to_owned(), |d| {
                format!("{:.0}", d.as_secs_f64() * 1000.0)
            })
        };
        eprintln!(
            "kill {}: lease last renewed {} ms before, expired {} ms after; served again after {:.0} ms",
            round + 1,
            ms_or(written),
            ms_or(expired),
            took.as_secs_f64() * 1000.0
        );
        if let Some(e) = expired {
            expiries.push(e);
        }
        times.push(took);
        procs.0.push(engine(&engine_url, &ttl_ms));
    }
    times.sort();
    expiries.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    if !expiries.is_empty() {
        println!(
            "the lease was removed (by the standby, at the TTL by the clock, or by JetStream's expiry) a median {:.0} ms after the kill; the rest is the takeover",
            ms(expiries[expiries.len() / 2])
        );
    }
    let q = |p: f64| times[((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1];
    println!(
        "failover over {} kills (lease TTL {} ms): median {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, min {:.0} ms, max {:.0} ms",
        times.len(),
        ttl_ms,
        ms(q(0.5)),
        ms(q(0.9)),
        ms(q(0.99)),
        ms(times[0]),
        ms(times[times.len() - 1]),
    );
}
