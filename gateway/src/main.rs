//! `reddit-gateway`: serves the REST API, its OpenAPI document and live events
//! over HTTP, as one more NATS client of the engine. Run as many as you like.

/// mimalloc, like every binary of the project.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::Parser;
use reddit_gateway::Config;
use std::net::SocketAddr;
use std::time::Duration;

/// HTTP front door of the sharded Reddit engine.
#[derive(Parser, Debug)]
#[command(name = "reddit-gateway", version, about)]
struct Args {
    /// NATS URL(s), comma-separated, with the `gateway` user's credentials
    /// (nats://gateway:PASSWORD@host:4222; see nats-auth.conf).
    #[arg(long, env = "NATS_URL")]
    nats_url: String,
    /// Where to listen.
    #[arg(long, env = "REDDIT_GATEWAY_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Requests per second per client IP.
    #[arg(long, env = "REDDIT_RATE_PER_IP", default_value_t = 200)]
    rate_per_ip: u32,
    /// Burst per client IP.
    #[arg(long, env = "REDDIT_BURST_PER_IP", default_value_t = 400)]
    burst_per_ip: u32,
    /// Requests per second per bearer token.
    #[arg(long, env = "REDDIT_RATE_PER_USER", default_value_t = 50)]
    rate_per_user: u32,
    /// Burst per bearer token.
    #[arg(long, env = "REDDIT_BURST_PER_USER", default_value_t = 100)]
    burst_per_user: u32,
    /// An origin allowed by CORS (repeat for more; none: no CORS headers).
    #[arg(long = "cors-origin")]
    cors_origins: Vec<String>,
    /// Longest time one HTTP request may take, in seconds.
    #[arg(long, default_value_t = 30)]
    request_timeout_secs: u64,
    /// Events buffered per SSE stream before a slow reader is dropped.
    #[arg(long, default_value_t = 256)]
    sse_buffer: usize,
    /// Most SSE streams at once.
    #[arg(long, default_value_t = 10_000)]
    max_sse: usize,
    /// Runtime worker threads (0: one per core).
    #[arg(long, env = "REDDIT_GATEWAY_THREADS", default_value_t = 0)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_http=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut config = Config::new(args.nats_url, args.listen);
    config.per_ip = (args.rate_per_ip, args.burst_per_ip);
    config.per_user = (args.rate_per_user, args.burst_per_user);
    config.cors_origins = args.cors_origins;
    config.request_timeout = Duration::from_secs(args.request_timeout_secs.max(1));
    config.sse_buffer = args.sse_buffer;
    config.max_sse = args.max_sse;
    let mut builder = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if args.threads > 1 {
        builder.worker_threads(args.threads);
    }
    let runtime = builder
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        let fail = |e: reddit_gateway::GatewayError| {
            anyhow::anyhow!("{}", reddit_shared::error::Chain(&e))
        };
        let bound = reddit_gateway::bind(config).await.map_err(fail)?;
        // The first line on stdout says where to go (scripts and tests read it).
        println!("listening on http://{}", bound.local_addr());
        bound.serve(shutdown_signal()).await.map_err(fail)
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
