//! `reddit-engine`: runs one shard of the Reddit engine.

/// glibc malloc spent ~14% of a shard's CPU in the mixed workload (allocation
/// churn, `malloc_consolidate`); mimalloc is the allocator of every binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::builder::BoolishValueParser;
use clap::Parser;
use std::time::Duration;

/// One shard worker of the Reddit engine.
#[derive(Parser, Debug)]
#[command(name = "reddit-engine", version, about)]
struct Args {
    /// NATS server URL(s), comma-separated (credentials may be in the URL).
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// This process's shard, in 0..shards.
    #[arg(
        long,
        env = "REDDIT_SHARD",
        required_unless_present = "print_callout_issuer"
    )]
    shard: Option<u32>,
    /// Number of shards in the cluster; every shard must be started with the same.
    #[arg(
        long,
        env = "REDDIT_SHARDS",
        required_unless_present = "print_callout_issuer"
    )]
    shards: Option<u32>,
    /// Shared secret that signs login tokens and the NATS auth callout's answers;
    /// every shard must use the same (at least 16 random bytes). Required unless
    /// --dev.
    #[arg(long, env = "REDDIT_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Development mode: without REDDIT_SECRET, use a built-in development secret,
    /// and accept short or published secrets. Only on a machine nobody else reaches.
    #[arg(long, env = "REDDIT_DEV", value_parser = BoolishValueParser::new())]
    dev: bool,
    /// NATS user of the connection that receives requests and publishes replies
    /// (when the NATS URL carries credentials; same password as the URL's user).
    #[arg(long, env = "REDDIT_SERVE_USER", default_value = reddit_engine::SERVE_USER)]
    serve_user: String,
    /// NATS user of the connection that publishes replies and pushes and calls
    /// other shards (when the NATS URL carries credentials; same password).
    #[arg(long, env = "REDDIT_WORK_USER", default_value = reddit_engine::WORK_USER)]
    work_user: String,
    /// Print the public NATS account key (A...) that signs the auth callout's
    /// answers for REDDIT_SECRET (what nats.conf's auth_callout.issuer must be),
    /// and exit.
    #[arg(long)]
    print_callout_issuer: bool,
    /// Requests that may queue for the shard before new ones get 503.
    #[arg(long, env = "REDDIT_QUEUE_CAPACITY", default_value_t = reddit_engine::defaults::QUEUE_CAPACITY)]
    queue_capacity: usize,
    /// Timeout of each request to another shard, in milliseconds.
    #[arg(long, env = "REDDIT_PEER_TIMEOUT_MS", default_value_t = reddit_engine::defaults::PEER_TIMEOUT_MS)]
    peer_timeout_ms: u64,
    /// Milliseconds another shard's list of a subreddit's best posts serves
    /// this shard's feeds before it is asked for again (0: every feed asks
    /// every shard). A feed's first page may show other shards' subreddits
    /// this much out of date, unless it asks for `fresh`.
    #[arg(long, env = "REDDIT_FEED_CACHE_MS", default_value_t = reddit_engine::defaults::FEED_CACHE_MS)]
    feed_cache_ms: u64,
    /// Milliseconds a DM that another shard acknowledged before logging it
    /// may stay unconfirmed before it is delivered again, to learn that it is
    /// durable there (0: only when a shard restarts). Until then this shard
    /// keeps it, and counts it in `unconfirmed_dms`.
    #[arg(long, env = "REDDIT_DM_RECHECK_MS", default_value_t = reddit_engine::defaults::DM_RECHECK_MS)]
    dm_recheck_ms: u64,
    /// Runtime threads: 1 (default) runs the shard on one thread, best when shards
    /// share the cores; more lets one busy shard overlap network I/O and work.
    #[arg(long, env = "REDDIT_THREADS", default_value_t = 1)]
    threads: usize,
    /// Where the state is kept: `jetstream` logs every write to a JetStream stream
    /// before answering it and replays the log on start (needs nats-server with
    /// JetStream); `memory` keeps nothing across restarts.
    #[arg(long, env = "REDDIT_STORAGE", value_enum, default_value = "jetstream")]
    storage: reddit_engine::Storage,
    /// Events logged between snapshots (0: snapshot only at shutdown). A restart
    /// replays at most about this many events after the latest snapshot.
    #[arg(long, env = "REDDIT_SNAPSHOT_EVERY", default_value_t = reddit_engine::defaults::SNAPSHOT_EVERY)]
    snapshot_every: u64,
    /// MiB per second a periodic snapshot is encoded at, and then stored at
    /// (0: as fast as possible). A snapshot of S MiB then takes about 2 × S /
    /// rate seconds, but leaves the requests meanwhile most of the machine.
    /// The last snapshot, at shutdown, is not paced.
    #[arg(long, env = "REDDIT_SNAPSHOT_RATE_MIB", default_value_t = reddit_engine::defaults::SNAPSHOT_RATE_MIB)]
    snapshot_rate_mib: u64,
    /// Log appends in flight at once per shard (durable mode): each expects the
    /// sequence its predecessor will get, and one refused is sent again once
    /// the predecessor is confirmed. 1 appends one record at a time.
    #[arg(long, env = "REDDIT_LOG_PIPELINE", default_value_t = reddit_engine::defaults::LOG_PIPELINE)]
    log_pipeline: usize,
    /// Most records each new segment of a shard's log holds (durable mode;
    /// at least 2). The log is a run of JetStream streams; a snapshot
    /// deletes the segments it covers whole, which, unlike purging the
    /// records from the stream being appended to, does not hold the appends.
    #[arg(long, env = "REDDIT_LOG_SEGMENT_RECORDS", default_value_t = reddit_engine::defaults::LOG_SEGMENT_RECORDS)]
    log_segment_records: u64,
    /// MiB each new segment of a shard's log is sized for (durable mode):
    /// its records are this over the average record of late, within
    /// --log-segment-records, so the log a snapshot leaves behind holds at
    /// most about this much more than recovery needs.
    #[arg(long, env = "REDDIT_LOG_SEGMENT_MIB", default_value_t = reddit_engine::defaults::LOG_SEGMENT_MIB)]
    log_segment_mib: u64,
    /// Microseconds a shard's next log record may wait to grow to the size of
    /// the one before it (durable mode). Under load this trades a little
    /// latency for fewer, larger appends (fsyncs); under light load records
    /// are small and nothing waits. 0: append as soon as possible.
    #[arg(long, env = "REDDIT_LOG_LINGER_US", default_value_t = reddit_engine::defaults::LOG_LINGER_US)]
    log_linger_us: u64,
    /// Milliseconds a shard's next log record may wait for more entries when
    /// nobody waits for the ones it holds (durable mode): memberships, karma
    /// and DMs from other shards, which are acknowledged before they are
    /// logged and kept by their senders until they are durable. A shard that
    /// mostly receives these then appends a few records a second instead of
    /// one per arrival. 0: only --log-linger-us applies.
    #[arg(long, env = "REDDIT_LOG_UNWAITED_LINGER_MS", default_value_t = reddit_engine::defaults::LOG_UNWAITED_LINGER_MS)]
    log_unwaited_linger_ms: u64,
    /// Answer a read only once every write before it is durable (durable
    /// mode), so that no reply shows a write a crash could still lose. Costs
    /// reads up to one log append of latency.
    #[arg(long, env = "REDDIT_READ_BARRIER", value_parser = BoolishValueParser::new())]
    read_barrier: bool,
    /// Replies of writes remembered for retries (by idempotency key): at
    /// least the last this many, at most twice as many.
    #[arg(long, env = "REDDIT_REPLY_CACHE", default_value_t = reddit_engine::defaults::REPLY_CACHE)]
    reply_cache: usize,
    /// Lifetime of login tokens, in seconds.
    #[arg(long, env = "REDDIT_TOKEN_TTL_SECS", default_value_t = reddit_engine::defaults::TOKEN_TTL_SECS)]
    token_ttl_secs: u64,
    /// Stand by: wait for the shard's lease (held by its serving process) and
    /// take over when it lapses, instead of refusing to start (durable mode).
    #[arg(long, env = "REDDIT_STANDBY", value_parser = BoolishValueParser::new())]
    standby: bool,
    /// How long a shard's lease outlives a process that died, in milliseconds
    /// (renewed every quarter of it): about the time a standby waits.
    #[arg(long, env = "REDDIT_LEASE_TTL_MS", default_value_t = reddit_engine::defaults::LEASE_TTL_MS)]
    lease_ttl_ms: u64,
    /// Copies JetStream keeps of the log, snapshots and leases when this shard
    /// creates them: 1 on a single nats-server, 3 on a 3-node cluster (an
    /// append is acknowledged once a majority has it on disk).
    #[arg(long, env = "REDDIT_REPLICAS", default_value_t = 1)]
    replicas: usize,
    /// Let the kernel back the shard's heap with transparent huge pages. Off by
    /// default: zeroing a 2 MiB page at each first touch made replaying a log
    /// and encoding a snapshot 10-40% slower on the benchmark box.
    #[arg(long, env = "REDDIT_HUGE_PAGES", value_parser = BoolishValueParser::new())]
    huge_pages: bool,
    /// Give each slow actor turn's (50 ms or more) thread CPU time in its log
    /// line (`cpu_ms`), to tell the shard's own work from waiting for a core.
    /// A diagnosis: two system calls per turn. Exact with one runtime thread
    /// (the default); with more, a turn can move between threads.
    #[arg(long, env = "REDDIT_TURN_CPU", value_parser = BoolishValueParser::new())]
    turn_cpu: bool,
}

/// Exit status for an error a restart cannot fix (the supervisor stops trying).
const EXIT_PERMANENT: i32 = 2;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.print_callout_issuer {
        let secret = args
            .secret
            .filter(|s| !s.is_empty())
            .context("--print-callout-issuer needs REDDIT_SECRET")?;
        let issuer = reddit_engine::callout::Issuer::from_secret(secret.as_bytes())?;
        println!("{}", issuer.public_key());
        return Ok(());
    }
    // One thread by default: a shard's state is one actor, and when several shard
    // processes share a few cores a multi-threaded runtime mostly adds cross-thread
    // wake-ups between the connection, reader and actor tasks (docs/performance.md).
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .context("starting the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = reddit_engine::memory::set_huge_pages(args.huge_pages) {
        tracing::warn!(error = %e, "cannot change the use of transparent huge pages");
    }
    let secret = match args.secret {
        Some(s) if !s.is_empty() => s,
        _ if args.dev => {
            tracing::warn!("--dev without REDDIT_SECRET: using the published development secret; anyone can forge tokens");
            reddit_engine::DEV_SECRET.to_owned()
        }
        _ => {
            tracing::error!("reddit-engine cannot run: REDDIT_SECRET is not set (scripts/gen-env.sh makes one; --dev uses a development secret)");
            std::process::exit(EXIT_PERMANENT);
        }
    };
    let (Some(shard), Some(shards)) = (args.shard, args.shards) else {
        anyhow::bail!("--shard and --shards are required");
    };
    let mut config = reddit_engine::Config::new(args.nats_url, shard, shards, secret);
    config.dev = args.dev;
    config.serve_user = args.serve_user;
    config.work_user = args.work_user;
    config.queue_capacity = args.queue_capacity.max(1);
    config.peer_timeout = Duration::from_millis(args.peer_timeout_ms.max(1));
    config.feed_cache = Duration::from_millis(args.feed_cache_ms);
    config.dm_recheck = Duration::from_millis(args.dm_recheck_ms);
    config.turn_cpu = args.turn_cpu;
    config.token_ttl = Duration::from_secs(args.token_ttl_secs.max(1));
    config.standby = args.standby;
    config.lease_ttl = Duration::from_millis(args.lease_ttl_ms.max(200));
    config.replicas = args.replicas.clamp(1, 5);
    config.storage = args.storage;
    config.snapshot_every = args.snapshot_every;
    config.snapshot_bytes_per_second = args.snapshot_rate_mib.saturating_mul(1 << 20);
    config.log_pipeline = args.log_pipeline.clamp(1, 64);
    config.log_segment_records = args.log_segment_records.max(2);
    config.log_segment_bytes = args.log_segment_mib.max(1) << 20;
    config.log_linger = Duration::from_micros(args.log_linger_us.min(100_000));
    config.log_unwaited_linger = Duration::from_millis(args.log_unwaited_linger_ms.min(1_000));
    config.reply_cache = args.reply_cache.max(1);
    config.read_barrier = args.read_barrier;
    match reddit_engine::run(config, shutdown_signal()).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_permanent() => {
            tracing::error!(
                "reddit-engine cannot run: {}",
                reddit_shared::error::Chain(&e)
            );
            std::process::exit(EXIT_PERMANENT);
        }
        Err(e) => Err(e).context("reddit-engine stopped with an error"),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
