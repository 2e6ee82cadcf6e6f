//! `reddit-chat`: the telnet/netcat chat gateway (`reddit-chat serve`, the
//! default) and its load generator (`reddit-chat bench`).

/// mimalloc, like every binary of the project.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use reddit_chat::bus::Storage;
use reddit_chat::who::Room;
use reddit_chat::wire::Clock;
use reddit_chat::Config;
use std::net::SocketAddr;
use std::time::Duration;

/// Line chat over telnet and netcat; rooms, names and history live on NATS,
/// so any number of gateways serve the same rooms.
#[derive(Parser, Debug)]
#[command(name = "reddit-chat", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve chat connections (the default).
    Serve,
    /// Drive many TCP connections through running gateways and report
    /// delivered lines per second and send-to-receive latency.
    Bench(reddit_chat::bench::BenchArgs),
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// NATS URL(s), comma-separated, with the `chat` user's credentials
    /// (nats://chat:PASSWORD@host:4222; see nats-auth.conf).
    #[arg(long, env = "NATS_URL", global = true)]
    nats_url: Option<String>,
    /// Where to listen.
    #[arg(long, env = "REDDIT_CHAT_LISTEN", default_value = "127.0.0.1:4000")]
    listen: SocketAddr,
    /// The room everyone lands in.
    #[arg(long, default_value = "lobby")]
    default_room: String,
    /// How timestamps are shown, UTC: a `time` format description
    /// (`[hour]:[minute]:[second]`, `[year]-[month]-[day] [hour]:[minute]`); empty: none.
    #[arg(long, default_value = "[hour]:[minute]")]
    time_format: String,
    /// Longest line in bytes (longer ones are dropped with a message).
    #[arg(long, default_value_t = 1024)]
    max_line: usize,
    /// Lines queued per connection; a reader that falls this far behind is
    /// disconnected (the room never waits for it).
    #[arg(long, default_value_t = 256)]
    out_queue: usize,
    /// Lines per second per connection (flood control).
    #[arg(long, default_value_t = 5)]
    rate: u32,
    /// Burst of lines per connection.
    #[arg(long, default_value_t = 10)]
    burst: u32,
    /// Seconds without input before a connection is closed.
    #[arg(long, default_value_t = 600)]
    idle_timeout: u64,
    /// Most connections at once on this gateway.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// History lines shown on joining a room.
    #[arg(long, default_value_t = 20)]
    history_on_join: usize,
    /// Lines kept per room (when this gateway creates the history stream), and
    /// the most `/history N` shows.
    #[arg(long, default_value_t = 100)]
    history_per_room: i64,
    /// Days a line is kept (when this gateway creates the history stream).
    #[arg(long, default_value_t = 7)]
    history_days: u64,
    /// Most rooms in the whole chat.
    #[arg(long, default_value_t = 10_000)]
    max_rooms: usize,
    /// Seconds a name outlives a crashed gateway (renewed every third of it;
    /// when this gateway creates the names bucket).
    #[arg(long, default_value_t = 30)]
    name_ttl: u64,
    /// Replicas of the stream and buckets it creates (3 on a 3-node cluster).
    #[arg(long, env = "REDDIT_REPLICAS", default_value_t = 1)]
    replicas: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    match cli.command {
        Some(Command::Bench(args)) => runtime.block_on(reddit_chat::bench::run(args)),
        Some(Command::Serve) | None => runtime.block_on(serve(cli.serve)),
    }
}

async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let nats_url = a
        .nats_url
        .context("--nats-url (or NATS_URL) is needed: nats://chat:PASSWORD@host:4222")?;
    let default_room: Room = a
        .default_room
        .parse()
        .with_context(|| format!("--default-room {:?}", a.default_room))?;
    let mut config = Config::new(nats_url, a.listen, default_room);
    config.clock = Clock::new(&a.time_format)
        .map_err(|e| anyhow::anyhow!("--time-format {:?}: {e}", a.time_format))?;
    config.max_line = a.max_line.max(16);
    config.out_queue = a.out_queue.max(1);
    config.rate = (a.rate.max(1), a.burst.max(1));
    config.idle_timeout = Duration::from_secs(a.idle_timeout.max(1));
    config.max_connections = a.max_connections.max(1);
    config.history_on_join = a.history_on_join;
    config.max_rooms = a.max_rooms.max(1);
    config.storage = Storage {
        history_per_room: a.history_per_room.max(1),
        history_age: Duration::from_secs(a.history_days.max(1) * 24 * 3600),
        name_ttl: Duration::from_secs(a.name_ttl.max(1)),
        replicas: a.replicas.max(1),
    };
    let bound = reddit_chat::bind(config)
        .await
        .map_err(|e| anyhow::anyhow!("{}", reddit_shared::error::Chain(&e)))?;
    // The first line on stdout says where to connect (scripts and tests read it).
    println!("listening on {}", bound.local_addr());
    tracing::info!(
        "chat gateway {} listening on {}",
        bound.id(),
        bound.local_addr()
    );
    bound
        .serve(shutdown_signal())
        .await
        .map_err(|e| anyhow::anyhow!("{}", reddit_shared::error::Chain(&e)))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        let _ = ctrl_c.await;
        return;
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
