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
    /// Serving threads, each a single-threaded runtime with a NATS connection
    /// and a listening socket of its own on the same port (`SO_REUSEPORT`:
    /// the kernel spreads the connections), so a request never crosses
    /// threads. 0: one per core.
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
    let threads = match args.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    serve(config, threads)
}

/// Runs `threads` serving threads until SIGINT or SIGTERM, then lets each
/// finish its requests in flight. A thread that cannot start (NATS
/// unreachable) or stops serving stops them all, with its error.
fn serve(config: Config, threads: usize) -> anyhow::Result<()> {
    let first = reddit_gateway::listen(config.listen, threads > 1).map_err(fail)?;
    let addr = first
        .local_addr()
        .context("the listening socket has no address")?;
    let mut listeners = vec![first];
    for _ in 1..threads {
        listeners.push(reddit_gateway::listen(addr, true).map_err(fail)?);
    }
    let common = reddit_gateway::Common::new(&config);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // Each thread reports at most twice: that it serves, then that it ended.
    let (report, mut reports) = tokio::sync::mpsc::channel(2 * threads);
    let mut handles = Vec::with_capacity(threads);
    for (k, listener) in listeners.into_iter().enumerate() {
        let (config, common, report, mut stopped) = (
            config.clone(),
            common.clone(),
            report.clone(),
            stopped.clone(),
        );
        let handle = std::thread::Builder::new()
            .name(format!("gateway-{k}"))
            .spawn(move || {
                let outcome = one_thread(config, common, listener, &report, async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                });
                let _ = report.blocking_send(match outcome {
                    Ok(()) => Report::Ended,
                    Err(e) => Report::Failed(e),
                });
            })
            .context("cannot start a serving thread")?;
        handles.push(handle);
    }
    drop(report);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let outcome = runtime.block_on(async {
        let mut serving = 0;
        while serving < threads {
            match reports.recv().await {
                Some(Report::Serving) => serving += 1,
                Some(Report::Failed(e)) => return Err(e),
                Some(Report::Ended) | None => {
                    anyhow::bail!("a serving thread ended before serving")
                }
            }
        }
        // The first line on stdout says where to go (scripts and tests read it).
        println!("listening on http://{addr}");
        tokio::select! {
            () = shutdown_signal() => Ok(()),
            ended = reports.recv() => match ended {
                Some(Report::Failed(e)) => Err(e),
                _ => anyhow::bail!("a serving thread stopped"),
            },
        }
    });
    let _ = stop.send(true);
    for handle in handles {
        let _ = handle.join();
    }
    outcome
}

/// What a serving thread tells the main thread.
enum Report {
    /// It is connected and listening.
    Serving,
    /// It stopped, or could not start, with this error.
    Failed(anyhow::Error),
    /// It stopped without an error (after the shutdown signal).
    Ended,
}

/// One serving thread: its own single-threaded runtime, NATS connection and
/// socket; says on `report` when it serves, then serves until `shutdown`.
fn one_thread(
    config: Config,
    common: reddit_gateway::Common,
    listener: std::net::TcpListener,
    report: &tokio::sync::mpsc::Sender<Report>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        let bound = reddit_gateway::bind(config, common, listener)
            .await
            .map_err(fail)?;
        let _ = report.send(Report::Serving).await;
        bound.serve(shutdown).await.map_err(fail)
    })
}

/// A gateway error with its causes, for the exit message.
fn fail(e: reddit_gateway::GatewayError) -> anyhow::Error {
    anyhow::anyhow!("{}", reddit_shared::error::Chain(&e))
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
