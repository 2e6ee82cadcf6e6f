//! Log append benchmark (`cargo bench -p reddit-engine --bench append`): how many
//! records per second one shard's JetStream log (file storage, `sync_interval:
//! always`) takes with 1, 2, 4, 8 and 16 appends in flight, each expecting the
//! sequence before it as the engine's journal does with `--log-pipeline N`, on
//! an otherwise idle broker: the most a shard's records per second can gain
//! from pipelining before the requests themselves compete for the cores.
//!
//! `APPEND_SECONDS` (default 3) sets each run's length, `APPEND_BYTES`
//! (default 4096) the record size.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "support.rs"]
mod support;
use support::{free_port, nats_bin};

use bytes::Bytes;
use futures::stream::{FuturesOrdered, StreamExt};
use reddit_engine::wal::Log;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Server(std::process::Child, PathBuf);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let seconds = env("APPEND_SECONDS", 3);
    let size = env("APPEND_BYTES", 4096) as usize;
    let dir = std::env::temp_dir().join(format!("reddit-append-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("js.conf");
    std::fs::write(
        &conf,
        format!(
            "jetstream {{\n  store_dir: {:?}\n  sync_interval: always\n}}\n",
            dir.join("js")
        ),
    )
    .unwrap();
    let port = free_port();
    let server = Server(
        Command::new(nats_bin())
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        dir,
    );
    let url = format!("nats://127.0.0.1:{port}");
    let client = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match async_nats::connect(&url).await {
                Ok(c) => break c,
                Err(e) if Instant::now() > deadline => panic!("nats-server: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    };
    let record = Bytes::from(vec![0xa5u8; size]);
    for (shard, depth) in [1usize, 2, 4, 8, 16].into_iter().enumerate() {
        let log = Log::open(&client, shard as u32, 16, 1).await.unwrap();
        let mut last = 0u64;
        let mut next = 0u64;
        let mut inflight = FuturesOrdered::new();
        let started = Instant::now();
        let until = started + Duration::from_secs(seconds);
        loop {
            while inflight.len() < depth && Instant::now() < until {
                let log = log.clone();
                let record = record.clone();
                let expected = next;
                next += 1;
                inflight.push_back(async move {
                    log.append(record, &format!("b.{expected}"), expected).await
                });
            }
            match inflight.next().await {
                Some(r) => {
                    let seq = r.unwrap();
                    assert_eq!(seq, last + 1, "records land in order");
                    last = seq;
                }
                None => break,
            }
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{depth:>2} in flight: {:>7.0} records/s ({size} B each, {last} records in {secs:.1} s)",
            last as f64 / secs
        );
    }
    drop(server);
}
