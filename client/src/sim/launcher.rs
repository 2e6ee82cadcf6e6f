//! `reddit-client simulate`: runs a simulation with `processes` worker processes.
//!
//! 1. Creates the subreddits and notes the engine's totals and per-shard request
//!    counts.
//! 2. Starts the workers (`reddit-client sim-worker`, separate OS processes, their
//!    stderr in `worker-<i>.log`), waits until each has finished its setup, then
//!    tells them all to go at once.
//! 3. Shows progress, collects their part reports, waits for the engine to go
//!    quiet, runs the audit, compares the ledger with the engine's totals, and
//!    writes `report.json` and the plots.

use super::metrics::PartReport;
use super::report::{check_ledger, merge, summary, write_plots, Report, ShardLoad, ZipfReport};
use super::SimConfig;
use crate::{ClientOptions, Identity, RedditClient};
use anyhow::{anyhow, bail, Context};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use reddit_shared::names::{SubredditName, Username};
use reddit_shared::protocol::admin::AuditReport;
use std::io::IsTerminal;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

struct WorkerProc {
    child: Child,
    stdin: tokio::process::ChildStdin,
}

/// Waits until no shard has queued requests or unsent cross-shard updates.
async fn quiesce(client: &RedditClient, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(stats) = client.all_stats().await {
            if stats
                .iter()
                .all(|s| s.pending_sync == 0 && s.queue_depth == 0)
            {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Runs the simulation described by `cfg`, with workers started from `exe`.
pub async fn run(cfg: SimConfig, exe: &Path) -> anyhow::Result<Report> {
    cfg.validate().map_err(|e| anyhow!(e))?;
    std::fs::create_dir_all(&cfg.out_dir)
        .with_context(|| format!("creating {}", cfg.out_dir.display()))?;
    // The URL may carry the service role's password: the config file and the
    // report get it redacted, and workers get the real one in their environment.
    let nats_url = cfg.nats_url.clone();
    let mut cfg = cfg;
    cfg.nats_url = reddit_shared::connect::redact(&nats_url);
    let config_path = cfg.out_dir.join("config.json");
    std::fs::write(&config_path, serde_json::to_vec_pretty(&cfg)?)?;
    let tty = std::io::stderr().is_terminal();
    let options = ClientOptions {
        request_timeout: Duration::from_millis(cfg.request_timeout_ms),
        retry_budget: Duration::from_millis(cfg.retry_budget_ms),
        name: "reddit-sim-launcher".into(),
        ..ClientOptions::default()
    };
    let client = RedditClient::connect(&nats_url, options).await?;
    eprintln!(
        "simulating {} users in {} process(es) against {} shard(s); output in {}",
        cfg.users,
        cfg.processes,
        client.shards(),
        cfg.out_dir.display()
    );

    // Subreddits, created by an admin user of this run.
    let admin: Username = format!("u{}admin", cfg.tag).parse()?;
    let id = Identity::generate();
    client
        .register(&admin, &id)
        .await
        .context("registering the simulation's admin user")?;
    let session = client.login(&admin, &id).await?;
    let names: Vec<SubredditName> = (0..cfg.subreddits)
        .map(|r| cfg.subreddit(r).parse())
        .collect::<Result<_, _>>()?;
    let created = futures::stream::iter(names.iter().map(|n| {
        let (c, s) = (client.clone(), session.clone());
        async move { c.create_subreddit(&s, n, "simulated").await }
    }))
    .buffer_unordered(64)
    .collect::<Vec<_>>()
    .await;
    if let Some(Err(e)) = created.into_iter().find(|r| r.is_err()) {
        bail!("creating subreddits: {e}");
    }
    if !quiesce(&client, Duration::from_secs(30)).await {
        eprintln!("warning: the engine is busy before the run; the ledger check may be off");
    }
    let before = client.audit(0).await.context("audit before the run")?;
    let load_before = client.shard_requests(Duration::from_secs(3)).await?;

    // Workers.
    let (tx, mut rx) = mpsc::channel::<(u32, serde_json::Value)>(1024);
    let mut procs = Vec::new();
    for part in 0..cfg.processes {
        let log = std::fs::File::create(cfg.out_dir.join(format!("worker-{part}.log")))?;
        let mut child = Command::new(exe)
            .env("NATS_URL", &nats_url)
            .arg("sim-worker")
            .arg("--config")
            .arg(&config_path)
            .arg("--part")
            .arg(part.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting worker {part} ({})", exe.display()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if tx.send((part, v)).await.is_err() {
                        break;
                    }
                }
            }
            let _ = tx.send((part, serde_json::json!({"type": "eof"}))).await;
        });
        procs.push(WorkerProc { child, stdin });
    }
    drop(tx);

    let setup = ProgressBar::new(u64::from(cfg.processes));
    if tty {
        setup.set_style(
            ProgressStyle::with_template("setup {spinner} {pos}/{len} processes ready {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        setup.enable_steady_tick(Duration::from_millis(200));
    } else {
        setup.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        eprintln!("setup: registering, logging in and joining ...");
    }
    let mut ready = 0;
    while ready < cfg.processes {
        let Some((part, msg)) = rx.recv().await else {
            bail!("the workers exited during setup");
        };
        match msg["type"].as_str() {
            Some("ready") => {
                ready += 1;
                setup.inc(1);
            }
            Some("eof") => bail!(
                "worker {part} exited during setup; see {}",
                cfg.out_dir.join(format!("worker-{part}.log")).display()
            ),
            _ => {}
        }
    }
    setup.finish_and_clear();
    eprintln!("setup done; running for {:.0}s", cfg.duration_s);
    for p in &mut procs {
        p.stdin.write_all(b"go\n").await?;
        p.stdin.flush().await?;
    }

    let bar = ProgressBar::new(cfg.duration_s.ceil() as u64);
    if tty {
        bar.set_style(
            ProgressStyle::with_template("run [{bar:40}] {pos}/{len}s {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let run_start = Instant::now();
    let mut last: Vec<(u64, u64, u64)> = vec![(0, 0, 0); cfg.processes as usize];
    let mut done = 0;
    let mut finished = vec![false; cfg.processes as usize];
    let mut last_line = Instant::now();
    while done < cfg.processes {
        let Some((part, msg)) = rx.recv().await else {
            break;
        };
        match msg["type"].as_str() {
            Some("progress") => {
                last[part as usize] = (
                    msg["ops"].as_u64().unwrap_or(0),
                    msg["errors"].as_u64().unwrap_or(0),
                    msg["online"].as_u64().unwrap_or(0),
                );
                let secs = run_start.elapsed().as_secs_f64().max(0.001);
                let ops: u64 = last.iter().map(|l| l.0).sum();
                let errors: u64 = last.iter().map(|l| l.1).sum();
                let online: u64 = last.iter().map(|l| l.2).sum();
                let text = format!(
                    "{:.0} ops/s, {ops} ops, {errors} errors, {online} online",
                    ops as f64 / secs
                );
                bar.set_position((secs as u64).min(cfg.duration_s.ceil() as u64));
                bar.set_message(text.clone());
                if !tty && last_line.elapsed() >= Duration::from_secs(10) {
                    eprintln!("  {:.0}s: {text}", secs);
                    last_line = Instant::now();
                }
            }
            Some("done") => {
                done += 1;
                finished[part as usize] = true;
            }
            Some("eof") if finished[part as usize] => {}
            Some("eof") => bail!(
                "worker {part} exited before finishing; see {}",
                cfg.out_dir.join(format!("worker-{part}.log")).display()
            ),
            _ => {}
        }
    }
    bar.finish_and_clear();
    for (i, p) in procs.iter_mut().enumerate() {
        let status = p.child.wait().await?;
        if !status.success() {
            bail!("worker {i} failed ({status})");
        }
    }

    // Engine side.
    eprintln!("run done; waiting for the engine to settle, then auditing ...");
    let quiet = quiesce(&client, Duration::from_secs(60)).await;
    // A failed audit (a shard too slow to answer, say) leaves the run's
    // measurements standing: the report is written, saying so, and
    // `--check` fails.
    let (audit, audit_error) = match client.audit(50).await {
        Ok(audit) => (audit, None),
        Err(e) => {
            eprintln!(
                "warning: the audit after the run could not be made ({e}); the report says so"
            );
            (AuditReport::default(), Some(e.to_string()))
        }
    };
    let load_after = client.shard_requests(Duration::from_secs(3)).await?;
    let members = futures::stream::iter(names.iter().map(|n| {
        let c = client.clone();
        async move { c.get_subreddit(n).await.map(|s| s.members).unwrap_or(0) }
    }))
    .buffered(64)
    .collect::<Vec<u64>>()
    .await;

    let mut parts = Vec::new();
    for part in 0..cfg.processes {
        let path = cfg.out_dir.join(format!("part-{part}.json"));
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        parts.push(serde_json::from_slice::<PartReport>(&bytes)?);
    }
    let mut report = merge(&cfg, &parts);
    report.shards = client.shards();
    report.shard_load = load_after
        .iter()
        .map(|(k, v)| ShardLoad {
            shard: *k,
            requests: v.saturating_sub(load_before.get(k).copied().unwrap_or(0)),
        })
        .collect();
    let loads: Vec<f64> = report
        .shard_load
        .iter()
        .map(|s| s.requests as f64)
        .collect();
    let mean = loads.iter().sum::<f64>() / loads.len().max(1) as f64;
    report.shard_skew = if mean > 0.0 {
        loads.iter().copied().fold(0.0, f64::max) / mean
    } else {
        0.0
    };
    let mut by_rank = members.clone();
    by_rank.sort_unstable_by(|a, b| b.cmp(a));
    report.zipf = ZipfReport {
        configured: cfg.zipf,
        fitted: super::zipf::fit(&members).map(|(s, _)| s),
        members_by_rank: by_rank,
    };
    // The admin user registered before the "before" totals were taken.
    let ledger = report_ledger(&parts);
    if audit_error.is_none() {
        report.ledger = check_ledger(&ledger, &before.checked, &audit.checked);
        report.ledger_ok = report.ledger.iter().all(|l| l.ok) && quiet;
    }
    report.audit = audit;
    report.audit_error = audit_error;
    report.plots = write_plots(&report, &cfg.out_dir)?;
    let path = cfg.out_dir.join("report.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
    print!("{}", summary(&report));
    println!("report: {}", path.display());
    for p in &report.plots {
        println!("plot:   {}", p.display());
    }
    Ok(report)
}

fn report_ledger(parts: &[PartReport]) -> super::metrics::Ledger {
    let mut l = super::metrics::Ledger::default();
    for p in parts {
        l.add(&p.ledger);
    }
    l
}
