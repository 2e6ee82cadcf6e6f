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

use bytes::Bytes;
use reddit_engine::wal::Log;
use std::time::{Duration, Instant};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let env = support::env_u64;
    let seconds = env("APPEND_SECONDS", 3);
    let size = env("APPEND_BYTES", 4096) as usize;
    let server = support::JetStreamServer::start("append");
    let client = server.connect().await;
    let record = Bytes::from(vec![0xa5u8; size]);
    for (shard, depth) in [1usize, 2, 4, 8, 16].into_iter().enumerate() {
        let log = Log::open(&client, shard as u32, 16, 1).await.unwrap();
        let started = Instant::now();
        let until = started + Duration::from_secs(seconds);
        let last =
            support::append_pipelined(&log, &record, depth, |_| Instant::now() < until).await;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{depth:>2} in flight: {:>7.0} records/s ({size} B each, {last} records in {secs:.1} s)",
            last as f64 / secs
        );
    }
    drop(server);
}
