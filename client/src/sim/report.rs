//! The merged report: per-operation latency percentiles and errors, throughput and
//! online users over time, per-shard load and skew, the Zipf fit, sessions and
//! pushes, memory per user, the audit, and the ledger check. Written as
//! `report.json`, plotted as SVG, summarised on stdout.

use super::metrics::{Ledger, OpStats, PartReport, Second, Sessions};
use super::plot::{bar_chart, line_chart, Axis, Series};
use super::SimConfig;
use reddit_shared::protocol::admin::{AuditCounts, AuditReport};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Latency and outcomes of one operation over the whole run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct OpSummary {
    /// Completions.
    pub count: u64,
    /// Successes.
    pub ok: u64,
    /// Errors by code (`timed_out` included).
    pub errors: BTreeMap<String, u64>,
    /// Completions per second of run time.
    pub throughput: f64,
    /// Latency percentiles in milliseconds.
    pub p50_ms: f64,
    /// 90th.
    pub p90_ms: f64,
    /// 99th.
    pub p99_ms: f64,
    /// 99.9th.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
    /// (percentile, ms) for plotting the distribution.
    pub distribution: Vec<(f64, f64)>,
}

fn summarize(s: &OpStats, seconds: f64) -> OpSummary {
    let h = &s.hist;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let qs = [
        0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999, 1.0,
    ];
    OpSummary {
        count: s.count(),
        ok: s.ok,
        errors: s.errors.clone(),
        throughput: if seconds > 0.0 {
            s.count() as f64 / seconds
        } else {
            0.0
        },
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: h.max() as f64 / 1000.0,
        mean_ms: h.mean() / 1000.0,
        distribution: if h.is_empty() {
            Vec::new()
        } else {
            qs.iter().map(|q| (q * 100.0, ms(*q))).collect()
        },
    }
}

/// Requests one shard served during the run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ShardLoad {
    /// Shard.
    pub shard: u32,
    /// Requests taken during the run (setup included).
    pub requests: u64,
}

/// The Zipf part of the report.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ZipfReport {
    /// The exponent asked for.
    pub configured: f64,
    /// The exponent fitted to the memberships that resulted (None: too few data).
    pub fitted: Option<f64>,
    /// Members of each subreddit, by popularity rank (largest first).
    pub members_by_rank: Vec<u64>,
}

/// One line of the ledger check.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LedgerCheck {
    /// What is counted.
    pub what: String,
    /// Acknowledged by the engine, per the simulator's ledger.
    pub acknowledged: u64,
    /// Requests whose outcome is unknown (no reply in time).
    pub unknown: u64,
    /// The change the engine reports.
    pub engine: i64,
    /// engine ∈ [acknowledged, acknowledged + unknown] (votes and memberships can
    /// also be lower by `unknown`, as a lost clear or leave counts down).
    pub ok: bool,
    /// Acknowledged writes the engine does not have (below the lower bound).
    #[serde(default)]
    pub lost: u64,
    /// Writes the engine has beyond every acknowledged and unknown one (applied
    /// twice).
    #[serde(default)]
    pub double_applied: u64,
}

/// Memory use.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Memory {
    /// Largest resident set of a worker at the end, MiB.
    pub max_rss_mib: f64,
    /// Resident memory added by setup per simulated user (bytes), averaged over workers.
    pub bytes_per_user: f64,
}

/// Everything the launcher reports.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// The run's configuration.
    pub config: Option<SimConfig>,
    /// Engine shards.
    pub shards: u32,
    /// Simulated users (all processes).
    pub users: u64,
    /// Setup wall time (slowest process), seconds.
    pub setup_seconds: f64,
    /// Setup requests by operation.
    pub setup_ops: BTreeMap<String, OpSummary>,
    /// Run wall time, seconds.
    pub run_seconds: f64,
    /// When the run started (the earliest process), Unix milliseconds: second
    /// `i` of `timeline` begins `i` seconds after it.
    #[serde(default)]
    pub run_started_ms: i64,
    /// All run requests.
    pub total: OpSummary,
    /// Run requests by operation.
    pub ops: BTreeMap<String, OpSummary>,
    /// Per second: completions, errors, online users.
    pub timeline: Vec<Second>,
    /// Requests per shard during setup and run.
    pub shard_load: Vec<ShardLoad>,
    /// Busiest shard's requests over the mean.
    pub shard_skew: f64,
    /// Popularity.
    pub zipf: ZipfReport,
    /// Sessions and pushes.
    pub sessions: Sessions,
    /// Open loop: worst lag behind the schedule, ms.
    pub max_lag_ms: f64,
    /// Most requests one worker process had in flight at once (bounded by
    /// `--in-flight` or `--max-in-flight`, plus a return's catch-up).
    #[serde(default)]
    pub max_in_flight: usize,
    /// Memory.
    pub memory: Memory,
    /// The ledger and the engine's totals.
    pub ledger: Vec<LedgerCheck>,
    /// All ledger lines hold.
    pub ledger_ok: bool,
    /// The engine's audit after the run.
    pub audit: AuditReport,
    /// Why the audit after the run could not be made, if it could not: the
    /// run's measurements stand, and the ledger is not checked (`audit` is
    /// empty and not ok).
    #[serde(default)]
    pub audit_error: Option<String>,
    /// Plot files.
    pub plots: Vec<PathBuf>,
}

/// Merges the parts.
pub fn merge(cfg: &SimConfig, parts: &[PartReport]) -> Report {
    let run_seconds = parts.iter().map(|p| p.run_seconds).fold(0.0, f64::max);
    let run_started_ms = parts.iter().map(|p| p.run_started_ms).min().unwrap_or(0);
    let mut ops: BTreeMap<String, OpStats> = BTreeMap::new();
    let mut setup: BTreeMap<String, OpStats> = BTreeMap::new();
    let mut total = OpStats::default();
    let mut timeline: Vec<Second> = Vec::new();
    let mut sessions = Sessions::default();
    for p in parts {
        for (k, e) in &p.ops {
            ops.entry(k.clone()).or_default().merge(e);
            total.merge(e);
        }
        for (k, e) in &p.setup_ops {
            setup.entry(k.clone()).or_default().merge(e);
        }
        if timeline.len() < p.seconds.len() {
            timeline.resize(p.seconds.len(), Second::default());
        }
        for (i, s) in p.seconds.iter().enumerate() {
            timeline[i].ops += s.ops;
            timeline[i].errors += s.errors;
            timeline[i].online += s.online;
            timeline[i].latency_us_sum =
                timeline[i].latency_us_sum.saturating_add(s.latency_us_sum);
            timeline[i].max_us = timeline[i].max_us.max(s.max_us);
        }
        sessions.add(&p.sessions);
    }
    // Whole seconds only: the last, partial one (the drain) would look like a dip.
    timeline.truncate((run_seconds.floor() as usize).max(1));
    let setup_seconds = parts.iter().map(|p| p.setup_seconds).fold(0.0, f64::max);
    let users: u64 = parts.iter().map(|p| p.users).sum();
    let max_rss = parts.iter().map(|p| p.rss_end).max().unwrap_or(0);
    let per_user: Vec<f64> = parts
        .iter()
        .filter(|p| p.users > 0)
        .map(|p| p.rss_after_setup.saturating_sub(p.rss_start) as f64 / p.users as f64)
        .collect();
    Report {
        config: Some(cfg.clone()),
        users,
        setup_seconds,
        setup_ops: setup
            .iter()
            .map(|(k, v)| (k.clone(), summarize(v, setup_seconds)))
            .collect(),
        run_seconds,
        run_started_ms,
        total: summarize(&total, run_seconds),
        ops: ops
            .iter()
            .map(|(k, v)| (k.clone(), summarize(v, run_seconds)))
            .collect(),
        timeline,
        sessions,
        max_lag_ms: parts.iter().map(|p| p.max_lag_ms).fold(0.0, f64::max),
        max_in_flight: parts.iter().map(|p| p.max_in_flight).max().unwrap_or(0),
        memory: Memory {
            max_rss_mib: max_rss as f64 / (1024.0 * 1024.0),
            bytes_per_user: if per_user.is_empty() {
                0.0
            } else {
                per_user.iter().sum::<f64>() / per_user.len() as f64
            },
        },
        ..Report::default()
    }
}

/// Compares the ledger with the engine's change in totals.
pub fn check_ledger(
    ledger: &Ledger,
    before: &AuditCounts,
    after: &AuditCounts,
) -> Vec<LedgerCheck> {
    let d = |a: u64, b: u64| a as i64 - b as i64;
    let line = |what: &str, ack: u64, unknown: u64, engine: i64, can_be_lower: bool| {
        let lo = if can_be_lower {
            ack as i64 - unknown as i64
        } else {
            ack as i64
        };
        let hi = (ack + unknown) as i64;
        LedgerCheck {
            what: what.to_owned(),
            acknowledged: ack,
            unknown,
            engine,
            ok: engine >= lo && engine <= hi,
            lost: u64::try_from(lo - engine).unwrap_or(0),
            double_applied: u64::try_from(engine - hi).unwrap_or(0),
        }
    };
    vec![
        line(
            "users",
            ledger.users,
            0,
            d(after.users, before.users),
            false,
        ),
        line(
            "posts",
            ledger.posts,
            ledger.unknown_creates,
            d(after.posts, before.posts),
            false,
        ),
        line(
            "comments",
            ledger.comments,
            ledger.unknown_creates,
            d(after.comments, before.comments),
            false,
        ),
        line(
            "dms",
            ledger.dms,
            ledger.unknown_creates,
            d(after.dms, before.dms),
            false,
        ),
        line(
            "votes",
            ledger.votes,
            ledger.unknown_votes,
            d(after.votes, before.votes),
            true,
        ),
        line(
            "memberships",
            ledger.memberships,
            ledger.unknown_memberships,
            d(after.memberships, before.memberships),
            true,
        ),
    ]
}

/// Writes the SVG plots into `dir`; returns their paths.
pub fn write_plots(report: &Report, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut save = |name: &str, svg: String| -> std::io::Result<()> {
        let p = dir.join(name);
        std::fs::write(&p, svg)?;
        out.push(p);
        Ok(())
    };
    let t = |i: usize| i as f64 + 1.0;
    save(
        "throughput.svg",
        line_chart(
            "Throughput over time",
            &Axis {
                label: "seconds".into(),
                log: false,
            },
            &Axis {
                label: "per second".into(),
                log: false,
            },
            &[
                Series {
                    name: "completed".into(),
                    points: report
                        .timeline
                        .iter()
                        .enumerate()
                        .map(|(i, s)| (t(i), s.ops as f64))
                        .collect(),
                    dots: false,
                },
                Series {
                    name: "errors".into(),
                    points: report
                        .timeline
                        .iter()
                        .enumerate()
                        .map(|(i, s)| (t(i), s.errors as f64))
                        .collect(),
                    dots: false,
                },
            ],
        ),
    )?;
    save(
        "online.svg",
        line_chart(
            "Users online over time",
            &Axis {
                label: "seconds".into(),
                log: false,
            },
            &Axis {
                label: "users".into(),
                log: false,
            },
            &[Series {
                name: "online".into(),
                points: report
                    .timeline
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (t(i), s.online as f64))
                    .collect(),
                dots: false,
            }],
        ),
    )?;
    let latency: Vec<Series> = report
        .ops
        .iter()
        .filter(|(_, s)| !s.distribution.is_empty())
        .map(|(name, s)| Series {
            name: name.clone(),
            // x: 1/(1-p) so that 90%, 99%, 99.9% are evenly spaced on a log axis.
            points: s
                .distribution
                .iter()
                .filter(|(p, _)| *p < 100.0)
                .map(|(p, ms)| (1.0 / (1.0 - p / 100.0), *ms))
                .collect(),
            dots: false,
        })
        .collect();
    save(
        "latency.svg",
        line_chart(
            "Latency by percentile (x: 1/(1-p): 10 = p90, 100 = p99, 1000 = p99.9)",
            &Axis {
                label: "1/(1 - percentile)".into(),
                log: true,
            },
            &Axis {
                label: "milliseconds".into(),
                log: true,
            },
            &latency,
        ),
    )?;
    let members = &report.zipf.members_by_rank;
    let mut zipf_series = vec![Series {
        name: "members".into(),
        points: members
            .iter()
            .enumerate()
            .map(|(i, m)| ((i + 1) as f64, *m as f64))
            .collect(),
        dots: true,
    }];
    if let Some((s, c)) = super::zipf::fit(members) {
        zipf_series.push(Series {
            name: format!("fit s={s:.2}"),
            points: (1..=members.len().max(1))
                .map(|k| (k as f64, c / (k as f64).powf(s)))
                .collect(),
            dots: false,
        });
    }
    save(
        "zipf.svg",
        line_chart(
            "Members by subreddit rank",
            &Axis {
                label: "rank".into(),
                log: true,
            },
            &Axis {
                label: "members".into(),
                log: true,
            },
            &zipf_series,
        ),
    )?;
    save(
        "shards.svg",
        bar_chart(
            "Requests per shard",
            "shard",
            "requests",
            &report
                .shard_load
                .iter()
                .map(|s| (s.shard.to_string(), s.requests as f64))
                .collect::<Vec<_>>(),
        ),
    )?;
    Ok(out)
}

/// The summary table for stdout.
pub fn summary(r: &Report) -> String {
    let mut out = String::new();
    let push = |out: &mut String, s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    push(
        &mut out,
        format!(
            "\n{} users in {} process(es) against {} shard(s); setup {:.1}s, run {:.1}s",
            r.users,
            r.config.as_ref().map_or(0, |c| c.processes),
            r.shards,
            r.setup_seconds,
            r.run_seconds
        ),
    );
    let row = |name: &str, s: &OpSummary| {
        vec![
            name.to_owned(),
            s.count.to_string(),
            s.errors.values().sum::<u64>().to_string(),
            format!("{:.0}", s.throughput),
            format!("{:.2}", s.p50_ms),
            format!("{:.2}", s.p90_ms),
            format!("{:.2}", s.p99_ms),
            format!("{:.2}", s.p999_ms),
            format!("{:.1}", s.max_ms),
        ]
    };
    let rows = r
        .ops
        .iter()
        .map(|(name, s)| row(name, s))
        .chain(std::iter::once(row("ALL", &r.total)));
    push(
        &mut out,
        crate::table::render(
            &[
                "operation",
                "count",
                "errors",
                "ops/s",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "p99.9 ms",
                "max ms",
            ],
            rows,
            1,
        ),
    );
    let errors: BTreeMap<&String, u64> =
        r.ops
            .values()
            .flat_map(|s| s.errors.iter())
            .fold(BTreeMap::new(), |mut m, (k, v)| {
                *m.entry(k).or_default() += v;
                m
            });
    if !errors.is_empty() {
        push(&mut out, format!("errors by code: {errors:?}"));
    }
    let loads: Vec<String> = r
        .shard_load
        .iter()
        .map(|s| format!("{}:{}", s.shard, s.requests))
        .collect();
    push(
        &mut out,
        format!(
            "shard load (requests): {}  skew (max/mean) {:.2}",
            loads.join(" "),
            r.shard_skew
        ),
    );
    push(
        &mut out,
        format!(
            "zipf: configured s={:.2}, fitted s={} over {} subreddits",
            r.zipf.configured,
            r.zipf
                .fitted
                .map_or("n/a".to_owned(), |s| format!("{s:.2}")),
            r.zipf.members_by_rank.len()
        ),
    );
    push(
        &mut out,
        format!(
            "sessions: {} logins, {} logouts; on return {} unread DMs and {} new feed posts; pushes {:?} (+{} while offline)",
            r.sessions.logins,
            r.sessions.logouts,
            r.sessions.catchup_unread_dms,
            r.sessions.catchup_new_posts,
            r.sessions.pushes,
            r.sessions.pushes_while_offline
        ),
    );
    push(
        &mut out,
        format!(
            "client memory: {:.0} bytes per simulated user, max RSS {:.1} MiB per process",
            r.memory.bytes_per_user, r.memory.max_rss_mib
        ),
    );
    let ledger: Vec<String> = r
        .ledger
        .iter()
        .map(|l| {
            format!(
                "{} {}/{}{}",
                l.what,
                l.engine,
                l.acknowledged,
                if l.ok { "" } else { " MISMATCH" }
            )
        })
        .collect();
    if let Some(e) = &r.audit_error {
        push(
            &mut out,
            "ledger (engine/acknowledged): not checked (no audit)".to_owned(),
        );
        push(&mut out, format!("audit: could not be made: {e}"));
        return out;
    }
    push(
        &mut out,
        format!(
            "ledger (engine/acknowledged): {} -> {}",
            ledger.join(", "),
            if r.ledger_ok { "OK" } else { "MISMATCH" }
        ),
    );
    push(
        &mut out,
        format!(
            "audit: {} ({} violations; {} users, {} posts, {} comments, {} votes checked)",
            if r.audit.ok { "OK" } else { "FAILED" },
            r.audit.violation_count,
            r.audit.checked.users,
            r.audit.checked.posts,
            r.audit.checked.comments,
            r.audit.checked.votes
        ),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_without_its_audit_says_so_instead_of_a_ledger_mismatch() {
        let mut r = Report {
            audit_error: Some("unavailable: request to shard 0: no answer in time".into()),
            ..Report::default()
        };
        let text = summary(&r);
        assert!(
            text.contains("audit: could not be made: unavailable"),
            "{text}"
        );
        assert!(
            text.contains("ledger (engine/acknowledged): not checked"),
            "{text}"
        );
        assert!(!text.contains("MISMATCH"), "{text}");
        r.audit_error = None;
        r.audit.ok = true;
        r.ledger_ok = true;
        let text = summary(&r);
        assert!(text.contains("audit: OK"), "{text}");
        assert!(text.contains("-> OK"), "{text}");
    }
}
