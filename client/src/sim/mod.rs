//! The load simulator: many simulated users in many client processes.
//!
//! - [`launcher`]: `reddit-client simulate`: creates the subreddits, spawns the worker
//!   processes, releases them together, shows progress, merges their reports, runs
//!   the audit, checks the ledger, writes `report.json` and the plots.
//! - [`worker`]: `reddit-client sim-worker`: one process simulating a disjoint range
//!   of users: setup (register, log in, Zipf joins), then the run loop.
//! - [`planner`]: the pure, seeded source of intended actions and sessions.
//! - [`metrics`], [`report`], [`plot`]: HDR histograms and series, the merged report,
//!   SVG plots. [`zipf`], [`rng`]: sampling.

pub mod launcher;
pub mod light;
pub mod metrics;
pub mod planner;
pub mod plot;
pub mod report;
pub mod rng;
pub mod worker;
pub mod zipf;

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Relative weights of the actions an online user takes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Mix {
    /// Create a post (a share of them reposts).
    pub post: f64,
    /// Comment on a post or a comment.
    pub comment: f64,
    /// Vote on a post or a comment.
    pub vote: f64,
    /// Send a DM, or reply to one received.
    pub dm: f64,
    /// Read the feed.
    pub feed: f64,
    /// Join a subreddit (Zipf-drawn).
    pub join: f64,
    /// Leave a subreddit.
    pub leave: f64,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            post: 5.0,
            comment: 15.0,
            vote: 40.0,
            dm: 5.0,
            feed: 30.0,
            join: 3.0,
            leave: 2.0,
        }
    }
}

impl Mix {
    /// The weights in [`planner::ActionKind`] order.
    pub fn weights(&self) -> [f64; 7] {
        [
            self.post,
            self.comment,
            self.vote,
            self.dm,
            self.feed,
            self.join,
            self.leave,
        ]
    }

    /// Parses `post=5,comment=15,...`: the whole mix, so an action not named has
    /// weight 0 (`--mix post=30,vote=70` runs posts and votes only). A key given
    /// twice is an error.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut mix = Self {
            post: 0.0,
            comment: 0.0,
            vote: 0.0,
            dm: 0.0,
            feed: 0.0,
            join: 0.0,
            leave: 0.0,
        };
        let mut seen = std::collections::HashSet::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("mix entry {part:?} is not key=weight"))?;
            let v: f64 = v
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| format!("mix weight {v:?} is not a non-negative number"))?;
            if !seen.insert(k.to_owned()) {
                return Err(format!("mix key {k:?} is given twice"));
            }
            match k {
                "post" => mix.post = v,
                "comment" => mix.comment = v,
                "vote" => mix.vote = v,
                "dm" => mix.dm = v,
                "feed" => mix.feed = v,
                "join" => mix.join = v,
                "leave" => mix.leave = v,
                other => {
                    return Err(format!(
                        "unknown mix key {other:?} (post, comment, vote, dm, feed, join, leave)"
                    ))
                }
            }
        }
        if mix.weights().iter().sum::<f64>() <= 0.0 {
            return Err("the mix weights sum to zero".into());
        }
        Ok(mix)
    }
}

/// How load is generated.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Load {
    /// Open loop: arrivals at a target rate regardless of replies; latency is
    /// measured from each arrival's intended time, so queueing is not hidden.
    Open {
        /// Arrivals per second for the whole run (split across processes); when
        /// absent, each online user acts every `think_ms` on average.
        rate: Option<f64>,
        /// Mean think time of an online user, in milliseconds.
        think_ms: f64,
    },
    /// Closed loop: this many requests in flight per process, each sent as soon as
    /// one completes; latency measured from the send.
    Closed {
        /// Requests in flight per process.
        in_flight: usize,
    },
}

/// Everything that defines a run. The launcher writes it to `config.json` in the
/// output directory for its workers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SimConfig {
    /// NATS URL(s): the launcher's (setup of subreddits, stats, the audit) and,
    /// without `http`, the workers'.
    pub nats_url: String,
    /// Gateway URL(s), comma-separated: the workers send every request through
    /// them over HTTP (round-robin, failing over), not over NATS.
    #[serde(default)]
    pub http: Option<String>,
    /// Prefix that makes this run's names unique (`u<tag><n>`, `r<tag>_<rank>`).
    pub tag: String,
    /// Simulated users in all processes.
    pub users: u32,
    /// Subreddits.
    pub subreddits: u32,
    /// Zipf exponent of subreddit popularity.
    pub zipf: f64,
    /// Mean number of subreddits a user joins at setup.
    pub joins_per_user: f64,
    /// Action weights.
    pub mix: Mix,
    /// Share of posts that are reposts.
    pub repost_share: f64,
    /// Mean online session, in seconds.
    pub online_mean_s: f64,
    /// Mean offline session, in seconds.
    pub offline_mean_s: f64,
    /// Open or closed loop.
    pub load: Load,
    /// Most requests in flight per process in open loop.
    pub max_in_flight: usize,
    /// Length of the run, in seconds (setup not included).
    pub duration_s: f64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Client processes.
    pub processes: u32,
    /// Where reports and plots go.
    pub out_dir: PathBuf,
    /// Timeout of each request attempt, in milliseconds.
    pub request_timeout_ms: u64,
    /// How long one operation keeps retrying (timeouts, no responders, 503), in
    /// milliseconds; the same idempotency key is used on every attempt.
    #[serde(default = "default_retry_ms")]
    pub retry_budget_ms: u64,
    /// Requests in flight per process during setup.
    pub setup_in_flight: usize,
    /// Posts made in every subreddit during setup, so the run acts on content
    /// from its first second (each process seeds its share of the subreddits).
    #[serde(default)]
    pub seed_posts: u32,
    /// Comments made on every seeded post during setup (every other one a reply
    /// to the comment before it, so threads nest).
    #[serde(default)]
    pub seed_comments: u32,
}

fn default_retry_ms() -> u64 {
    crate::api::DEFAULT_RETRY_BUDGET.as_millis() as u64
}

impl SimConfig {
    /// The global user indices part `part` of `processes` simulates.
    pub fn user_range(&self, part: u32) -> std::ops::Range<u32> {
        let p = u64::from(self.processes.max(1));
        let n = u64::from(self.users);
        let lo = n * u64::from(part) / p;
        let hi = n * (u64::from(part) + 1) / p;
        (lo as u32)..(hi as u32)
    }

    /// Name of global user `i`.
    pub fn username(&self, i: u32) -> String {
        format!("u{}{i}", self.tag)
    }

    /// The global user index in a name made by [`username`](Self::username).
    pub fn user_index(&self, name: &str) -> Option<u32> {
        name.strip_prefix('u')?
            .strip_prefix(self.tag.as_str())?
            .parse()
            .ok()
    }

    /// Name of the subreddit at 0-based popularity rank `r`.
    pub fn subreddit(&self, r: u32) -> String {
        format!("r{}_{r}", self.tag)
    }

    /// The rank in a name made by [`subreddit`](Self::subreddit), in any
    /// case (the engine answers with the spelling given at creation). Runs
    /// for every post of every feed page, so it allocates nothing.
    pub fn subreddit_rank(&self, name: &str) -> Option<u32> {
        let rest = name.strip_prefix(['r', 'R'])?;
        let tag = rest.get(..self.tag.len())?;
        if !tag.eq_ignore_ascii_case(&self.tag) {
            return None;
        }
        rest[self.tag.len()..].strip_prefix('_')?.parse().ok()
    }

    /// Checks values a run cannot work with.
    pub fn validate(&self) -> Result<(), String> {
        if self.users < 2 {
            return Err("--users must be at least 2".into());
        }
        if self.subreddits < 1 {
            return Err("--subreddits must be at least 1".into());
        }
        if self.processes < 1 || self.processes > self.users {
            return Err("--processes must be between 1 and --users".into());
        }
        if !(0.0..=1.0).contains(&self.repost_share) {
            return Err("--repost-share must be between 0 and 1".into());
        }
        if !(self.zipf >= 0.0 && self.zipf.is_finite()) {
            return Err("--zipf must be a non-negative number".into());
        }
        if self.online_mean_s <= 0.0 || self.offline_mean_s < 0.0 {
            return Err("session means must be positive".into());
        }
        if self.duration_s <= 0.0 {
            return Err("--duration must be positive".into());
        }
        match &self.load {
            Load::Open { rate, think_ms } => {
                if rate.is_some_and(|r| r <= 0.0) || *think_ms <= 0.0 {
                    return Err("--rate and --think-ms must be positive".into());
                }
            }
            Load::Closed { in_flight } => {
                if *in_flight == 0 {
                    return Err("--in-flight must be at least 1".into());
                }
            }
        }
        let longest = format!("u{}{}", self.tag, self.users);
        reddit_shared::names::Username::parse(&longest).map_err(|e| e.to_string())?;
        reddit_shared::names::SubredditName::parse(&self.subreddit(self.subreddits))
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Mix;

    #[test]
    fn a_mix_replaces_the_default_instead_of_merging() {
        let m = Mix::parse("post=30,vote=70").unwrap();
        assert_eq!((m.post, m.vote), (30.0, 70.0));
        assert_eq!(
            (m.comment, m.dm, m.feed, m.join, m.leave),
            (0.0, 0.0, 0.0, 0.0, 0.0)
        );
        let d = Mix::parse("post=5,comment=15,vote=40,dm=5,feed=30,join=3,leave=2").unwrap();
        assert_eq!(d.weights(), Mix::default().weights());
        assert!(Mix::parse("post=1,post=2").is_err());
        assert!(Mix::parse("join=0").is_err(), "all zero");
        assert!(Mix::parse("bogus=1").is_err());
        assert!(Mix::parse("post=-1").is_err());
    }
}
