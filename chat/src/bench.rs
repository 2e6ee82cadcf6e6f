//! `reddit-chat bench`: opens N TCP connections spread over running chat
//! gateways (members of each room alternate between gateways, so every line
//! crosses NATS), puts them in rooms of M, has them talk at a fixed total rate,
//! and reports lines delivered per second, the latency from a line's send to
//! each receiver (p50/p99/max), lines lost, and the gateways' memory per
//! connection (from `/proc`, when given their pids).

use anyhow::{bail, Context};
use futures::StreamExt;
use hdrhistogram::Histogram;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Flags of `reddit-chat bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Chat gateways, comma-separated HOST:PORT.
    #[arg(long, value_delimiter = ',', required = true)]
    pub gateways: Vec<String>,
    /// Connections in all.
    #[arg(long, default_value_t = 2000)]
    pub connections: usize,
    /// Members per room.
    #[arg(long, default_value_t = 10)]
    pub room_size: usize,
    /// Lines per second sent in all, spread evenly over the connections (keep
    /// each connection under the gateways' flood limit, 5 lines/s by default).
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Seconds of talking measured.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// The gateways' pids, to report their memory per connection.
    #[arg(long, value_delimiter = ',')]
    pub pids: Vec<u32>,
    /// Connections being set up at once.
    #[arg(long, default_value_t = 100)]
    pub parallel: usize,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// What one run measured.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    /// Connections.
    pub connections: usize,
    /// Members per room.
    pub room_size: usize,
    /// Rooms.
    pub rooms: usize,
    /// Gateways.
    pub gateways: usize,
    /// Seconds to connect, name and join everyone.
    pub setup_seconds: f64,
    /// Lines sent during the measured time.
    pub sent: u64,
    /// Lines received for those (each counted once per receiver).
    pub delivered: u64,
    /// Deliveries expected for those (sent × room size).
    pub expected: u64,
    /// Delivered per second.
    pub delivered_per_second: f64,
    /// Send-to-receive latency, microseconds.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest.
    pub max_us: u64,
    /// The gateways' resident memory growth per connection, bytes (when pids
    /// were given).
    pub bytes_per_connection: Option<f64>,
}

/// Runs the benchmark and prints its table.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let report = measure(&args).await?;
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header([
        "connections",
        "room size",
        "rooms",
        "sent/s",
        "delivered/s",
        "lost",
        "p50 ms",
        "p99 ms",
        "max ms",
        "bytes/conn",
    ]);
    let ms = |us: u64| format!("{:.2}", us as f64 / 1000.0);
    table.add_row([
        report.connections.to_string(),
        report.room_size.to_string(),
        report.rooms.to_string(),
        format!("{:.0}", report.sent as f64 / args.seconds as f64),
        format!("{:.0}", report.delivered_per_second),
        report.expected.saturating_sub(report.delivered).to_string(),
        ms(report.p50_us),
        ms(report.p99_us),
        ms(report.max_us),
        report
            .bytes_per_connection
            .map_or("-".to_owned(), |b| format!("{b:.0}")),
    ]);
    println!("{table}");
    eprintln!("setup took {:.1} s", report.setup_seconds);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Resident memory of `pids` in bytes, summed.
fn rss(pids: &[u32]) -> Option<u64> {
    let mut total = 0;
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        total += kb * 1024;
    }
    Some(total)
}

/// One connected, named member of a room.
struct Member {
    rd: BufReader<tokio::net::tcp::OwnedReadHalf>,
    wr: tokio::net::tcp::OwnedWriteHalf,
}

async fn read_until(
    rd: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> anyhow::Result<()> {
    let mut line = String::new();
    loop {
        line.clear();
        let n = tokio::time::timeout(Duration::from_secs(30), rd.read_line(&mut line))
            .await
            .with_context(|| format!("no {what} within 30 s"))??;
        if n == 0 {
            bail!("the gateway closed the connection while waiting for {what}");
        }
        if line.starts_with("!!") {
            bail!(
                "the gateway refused while waiting for {what}: {}",
                line.trim()
            );
        }
        if pred(&line) {
            return Ok(());
        }
    }
}

async fn join(gateway: &str, name: &str, room: &str) -> anyhow::Result<Member> {
    let stream = TcpStream::connect(gateway)
        .await
        .with_context(|| format!("cannot connect to {gateway}"))?;
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    read_until(&mut rd, "the name prompt", |l| l.contains("Choose a name")).await?;
    wr.write_all(format!("{name}\r\n/join {room}\r\n").as_bytes())
        .await?;
    let joined = format!("~{name} joined #{room}");
    read_until(&mut rd, "the join", |l| l.contains(&joined)).await?;
    Ok(Member { rd, wr })
}

/// Runs the benchmark.
pub async fn measure(args: &BenchArgs) -> anyhow::Result<Report> {
    if args.gateways.is_empty() || args.connections == 0 || args.room_size == 0 {
        bail!("need --gateways, and --connections and --room-size above 0");
    }
    let per_connection = args.rate / args.connections as f64;
    if per_connection > 5.0 {
        eprintln!(
            "warning: {per_connection:.1} lines/s per connection is over the gateways' default flood limit (5/s)"
        );
    }
    let tag = format!("{:08x}", rand::random::<u32>());
    let rooms = args.connections.div_ceil(args.room_size);
    let before = rss(&args.pids);
    let started = Instant::now();
    let mut members = Vec::with_capacity(args.connections);
    let mut setups = futures::stream::iter(0..args.connections)
        .map(|i| {
            let gateway = args.gateways[i % args.gateways.len()].clone();
            let name = format!("b{tag}{i}");
            let room = i / args.room_size;
            let room_name = format!("bench{tag}r{room}");
            async move {
                let m = join(&gateway, &name, &room_name).await;
                (i, room, m)
            }
        })
        .buffer_unordered(args.parallel.max(1));
    while let Some((i, room, m)) = setups.next().await {
        members.push((room, m.with_context(|| format!("connection {i}"))?));
        if members.len() % 500 == 0 {
            eprintln!("{} of {} connected", members.len(), args.connections);
        }
    }
    drop(setups);
    let setup_seconds = started.elapsed().as_secs_f64();
    let after = rss(&args.pids);
    let mut room_sizes = vec![0u64; rooms];
    for (room, _) in &members {
        room_sizes[*room] += 1;
    }

    // Talk: every member sends `t=<µs since epoch>` at its share of the rate.
    let epoch = Instant::now();
    let measure_from = Duration::from_secs(1);
    let talk_until = measure_from + Duration::from_secs(args.seconds);
    let stop = CancellationToken::new();
    let interval = Duration::from_secs_f64(1.0 / per_connection.max(1e-6));
    let mut readers = Vec::new();
    let mut senders = Vec::new();
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let expected = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let template = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for (room, Member { mut rd, mut wr }) in members {
        let stop_r = stop.clone();
        let template = template.clone();
        readers.push(tokio::spawn(async move {
            let mut hist = template.clone();
            let mut got = 0u64;
            let mut line = String::new();
            loop {
                line.clear();
                let n = tokio::select! {
                    _ = stop_r.cancelled() => break,
                    n = rd.read_line(&mut line) => n,
                };
                match n {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let Some(t) = line.split("> t=").nth(1) else {
                    continue;
                };
                let Ok(at) = t.trim().parse::<u64>() else {
                    continue;
                };
                let sent_at = Duration::from_micros(at);
                if sent_at < measure_from || sent_at >= talk_until {
                    continue;
                }
                let now = epoch.elapsed().as_micros() as u64;
                let _ = hist.record(now.saturating_sub(at).max(1));
                got += 1;
            }
            (hist, got)
        }));
        let size = room_sizes[room];
        let (sent, expected) = (sent.clone(), expected.clone());
        let phase = interval.mul_f64(rand::random::<f64>());
        senders.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(epoch + phase, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                let at = epoch.elapsed();
                if at >= talk_until {
                    return wr;
                }
                let line = format!("t={}\r\n", at.as_micros());
                if wr.write_all(line.as_bytes()).await.is_err() {
                    return wr;
                }
                if at >= measure_from {
                    sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    expected.fetch_add(size, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    let mut writers = Vec::new();
    for s in senders {
        writers.push(s.await?);
    }
    // Give the last lines time to arrive, then stop reading.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let mut hist = template;
    let mut delivered = 0;
    for r in readers {
        let (h, got) = r.await?;
        hist.add(&h)?;
        delivered += got;
    }
    drop(writers);
    let bytes_per_connection = match (before, after) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / args.connections as f64),
        _ => None,
    };
    Ok(Report {
        connections: args.connections,
        room_size: args.room_size,
        rooms,
        gateways: args.gateways.len(),
        setup_seconds,
        sent: sent.load(std::sync::atomic::Ordering::Relaxed),
        delivered,
        expected: expected.load(std::sync::atomic::Ordering::Relaxed),
        delivered_per_second: delivered as f64 / args.seconds as f64,
        p50_us: hist.value_at_quantile(0.5),
        p99_us: hist.value_at_quantile(0.99),
        max_us: hist.max(),
        bytes_per_connection,
    })
}
