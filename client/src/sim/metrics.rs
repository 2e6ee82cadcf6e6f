//! What a worker measures: per operation an HDR latency histogram (microseconds),
//! counts, errors by code and timeouts; per second the completions, errors and
//! online users; and the ledger of acknowledged writes. A worker writes it all as
//! a [`PartReport`] the launcher merges.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Highest latency recorded, in microseconds (larger values are clamped).
pub const MAX_LATENCY_US: u64 = 120_000_000;

/// Latencies and outcomes of one operation.
#[derive(Clone, Debug)]
pub struct OpStats {
    /// Latency of every completed request (µs), errors included.
    pub hist: Histogram<u64>,
    /// Successful replies.
    pub ok: u64,
    /// Error replies by wire code (`timed_out` for no reply in time).
    pub errors: BTreeMap<String, u64>,
}

impl Default for OpStats {
    fn default() -> Self {
        Self {
            hist: new_histogram(),
            ok: 0,
            errors: BTreeMap::new(),
        }
    }
}

/// A histogram of 1 µs to [`MAX_LATENCY_US`] with 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        .or_else(|_| Histogram::new(3))
        .unwrap_or_else(|_| unreachable_histogram())
}

#[allow(clippy::unwrap_used)] // 3 significant figures is always a valid configuration
fn unreachable_histogram() -> Histogram<u64> {
    Histogram::new(2).unwrap()
}

impl OpStats {
    /// Records one completion.
    pub fn record(&mut self, latency_us: u64, error: Option<&str>) {
        let _ = self.hist.record(latency_us.clamp(1, MAX_LATENCY_US));
        match error {
            None => self.ok += 1,
            Some(code) => *self.errors.entry(code.to_owned()).or_default() += 1,
        }
    }

    /// Total completions.
    pub fn count(&self) -> u64 {
        self.ok + self.errors.values().sum::<u64>()
    }

    /// Serializable form.
    pub fn export(&self) -> OpExport {
        OpExport {
            ok: self.ok,
            errors: self.errors.clone(),
            histogram: self
                .hist
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        }
    }

    /// Adds an exported part.
    pub fn merge(&mut self, e: &OpExport) {
        self.ok += e.ok;
        for (k, v) in &e.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        for (value, count) in &e.histogram {
            let _ = self
                .hist
                .record_n((*value).clamp(1, MAX_LATENCY_US), *count);
        }
    }
}

/// [`OpStats`] as JSON: the histogram as (value µs, count) pairs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct OpExport {
    /// Successes.
    pub ok: u64,
    /// Errors by code.
    pub errors: BTreeMap<String, u64>,
    /// (latency µs, count).
    pub histogram: Vec<(u64, u64)>,
}

/// One second of the run.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Second {
    /// Requests completed.
    pub ops: u64,
    /// Of which errors.
    pub errors: u64,
    /// Users online at the end of the second.
    pub online: u64,
    /// Sum of the latencies of the requests completed in this second, in µs
    /// (over `ops`: the second's mean latency; sums merge across processes).
    #[serde(default)]
    pub latency_us_sum: u64,
    /// Largest latency completed in this second, in µs.
    #[serde(default)]
    pub max_us: u64,
}

impl Second {
    /// Mean latency of the requests completed in this second, in ms.
    pub fn mean_ms(&self) -> f64 {
        if self.ops == 0 {
            0.0
        } else {
            self.latency_us_sum as f64 / self.ops as f64 / 1000.0
        }
    }
}

/// Acknowledged writes, to compare with the engine's totals. A request without a
/// definite answer (timed out or unavailable) may or may not have been applied: it
/// is counted under `unknown_*`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Ledger {
    /// Users registered.
    pub users: u64,
    /// Posts created (reposts included).
    pub posts: u64,
    /// Comments created.
    pub comments: u64,
    /// DMs delivered (sends and replies).
    pub dms: u64,
    /// Nonzero votes standing at the end, per (user, item), as acknowledged.
    pub votes: u64,
    /// Memberships standing at the end, as acknowledged (setup joins included).
    pub memberships: u64,
    /// Creates with no definite answer.
    pub unknown_creates: u64,
    /// Votes with no definite answer.
    pub unknown_votes: u64,
    /// Joins/leaves with no definite answer.
    pub unknown_memberships: u64,
}

impl Ledger {
    /// Adds a part.
    pub fn add(&mut self, o: &Ledger) {
        self.users += o.users;
        self.posts += o.posts;
        self.comments += o.comments;
        self.dms += o.dms;
        self.votes += o.votes;
        self.memberships += o.memberships;
        self.unknown_creates += o.unknown_creates;
        self.unknown_votes += o.unknown_votes;
        self.unknown_memberships += o.unknown_memberships;
    }
}

/// What offline users found when they came back, and what pushes did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Sessions {
    /// Times a user came online.
    pub logins: u64,
    /// Times a user went offline.
    pub logouts: u64,
    /// Unread DMs found on return.
    pub catchup_unread_dms: u64,
    /// Feed posts newer than the user's last session found on return.
    pub catchup_new_posts: u64,
    /// Pushes delivered to online users, by kind.
    pub pushes: BTreeMap<String, u64>,
    /// Pushes for this process's users while they were offline (not received).
    pub pushes_while_offline: u64,
}

impl Sessions {
    /// Adds a part.
    pub fn add(&mut self, o: &Sessions) {
        self.logins += o.logins;
        self.logouts += o.logouts;
        self.catchup_unread_dms += o.catchup_unread_dms;
        self.catchup_new_posts += o.catchup_new_posts;
        for (k, v) in &o.pushes {
            *self.pushes.entry(k.clone()).or_default() += v;
        }
        self.pushes_while_offline += o.pushes_while_offline;
    }
}

/// Everything one worker reports.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PartReport {
    /// Which part.
    pub part: u32,
    /// Users simulated.
    pub users: u64,
    /// Setup: seconds, requests, errors.
    pub setup_seconds: f64,
    /// Setup requests by operation.
    pub setup_ops: BTreeMap<String, OpExport>,
    /// Run requests by operation.
    pub ops: BTreeMap<String, OpExport>,
    /// Per second of the run.
    pub seconds: Vec<Second>,
    /// Seconds the run lasted (until the last reply).
    pub run_seconds: f64,
    /// When the run started (second 0 of `seconds`), Unix milliseconds: lines
    /// up the timeline with the shards' logs.
    #[serde(default)]
    pub run_started_ms: i64,
    /// Acknowledged writes.
    pub ledger: Ledger,
    /// Sessions and pushes.
    pub sessions: Sessions,
    /// Resident memory before setup, after setup, at the end (bytes).
    pub rss_start: u64,
    /// After setup.
    pub rss_after_setup: u64,
    /// At the end.
    pub rss_end: u64,
    /// Open loop: how far behind schedule the worker fell at most (ms).
    pub max_lag_ms: f64,
    /// Most requests the worker had in flight at once during the run.
    #[serde(default)]
    pub max_in_flight: usize,
}

/// Resident set size of this process, in bytes (0 where /proc is unavailable).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_survive_export_and_merge() {
        let mut a = OpStats::default();
        for v in 1..=1000 {
            a.record(v * 10, None);
        }
        a.record(5, Some("not_found"));
        let mut merged = OpStats::default();
        merged.merge(&a.export());
        merged.merge(&a.export());
        assert_eq!(merged.count(), 2002);
        assert_eq!(merged.errors["not_found"], 2);
        let p50 = merged.hist.value_at_quantile(0.5);
        assert!((4990..=5010).contains(&p50), "{p50}");
        assert_eq!(merged.hist.max(), a.hist.max());
    }
}
