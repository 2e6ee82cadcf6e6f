//! `reddit-echo`: the do-nothing responder the benchmark compares the engine with.
//!
//! It is a NATS micro service (`reddit-echo`, the same service framework as the
//! engine) serving `reddit.echo.<size>`: every request is answered at once with
//! `size` zero bytes, so a benchmark can send the engine's own request bytes and get
//! a reply of the engine's reply size, with none of the engine's work in between.

/// glibc malloc spent ~14% of a shard's CPU in the mixed workload (allocation
/// churn, `malloc_consolidate`); mimalloc is the allocator of every binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use async_nats::service::ServiceExt;
use bytes::Bytes;
use clap::Parser;
use futures::StreamExt;
use std::collections::HashMap;

/// Do-nothing responder for benchmarks.
#[derive(Parser, Debug)]
#[command(name = "reddit-echo", version, about)]
struct Args {
    /// NATS server URL.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
}

/// Largest reply size served.
const MAX_SIZE: usize = 1 << 20;

/// Same runtime as `reddit-engine`, for a like-for-like comparison.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = reddit_engine::connect(&args.nats_url, "reddit-echo").await?;
    let service = client
        .service_builder()
        .description("do-nothing responder for benchmarks")
        .start("reddit-echo", env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("starting the service")?;
    let mut endpoint = service
        .endpoint_builder()
        .name("echo")
        .add(reddit_shared::subject::echo_wildcard())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    client.flush().await?;
    eprintln!("reddit-echo serving reddit.echo.<size>");
    let mut replies: HashMap<usize, Bytes> = HashMap::new();
    let mut stop = std::pin::pin!(tokio::signal::ctrl_c());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            req = endpoint.next() => {
                let Some(req) = req else { break };
                let size = req
                    .message
                    .subject
                    .rsplit('.')
                    .next()
                    .and_then(|s| s.parse::<usize>().ok())
                    .unwrap_or(0)
                    .min(MAX_SIZE);
                let body = replies
                    .entry(size)
                    .or_insert_with(|| Bytes::from(vec![0u8; size]))
                    .clone();
                let _ = req.respond(Ok(body)).await;
            }
            _ = &mut stop => break,
            _ = term.recv() => break,
        }
    }
    client.flush().await?;
    Ok(())
}
