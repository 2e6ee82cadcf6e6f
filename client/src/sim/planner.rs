//! The intended actions, as a pure function of the seed and the flags.
//!
//! Every user has its own generator (seeded by the run seed and the user's global
//! index) for its sessions and actions; arrivals have one more. Open-loop runs
//! consume [`Planner::next_step`], whose output (times, users, sessions, actions) is
//! identical for the same seed and flags; closed-loop runs pick users as slots free
//! up, and each user's own sequence of actions is still the same. Targets that only
//! exist at run time (which post to comment on) are carried as random "picks" and
//! resolved by the worker.

use super::rng::Rng;
use super::zipf::Zipf;
use super::{Load, SimConfig};
use reddit_shared::protocol::post::PostSort;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// What a user does.
#[derive(Clone, Debug, PartialEq)]
pub enum ActionKind {
    /// Post in a joined subreddit (chosen by `pick`), a repost if `repost`.
    Post {
        /// Which joined subreddit.
        pick: u64,
        /// Repost a known post instead of writing a new one.
        repost: bool,
    },
    /// Comment on a known post, or on one of its known comments.
    Comment {
        /// Which post and parent.
        pick: u64,
        /// Answer a comment rather than the post, if it has any.
        on_comment: bool,
    },
    /// Vote on a known post or comment.
    Vote {
        /// Which item.
        pick: u64,
        /// A comment rather than a post.
        on_comment: bool,
        /// +1, -1 or 0.
        value: i8,
    },
    /// Reply to a received DM if there is one (`pick`), else DM global user `to`.
    Dm {
        /// Recipient of a new DM.
        to: u32,
        /// Which received DM to answer.
        pick: u64,
    },
    /// Read the feed.
    Feed {
        /// Order.
        sort: PostSort,
    },
    /// Join the subreddit at this 0-based rank.
    Join {
        /// Rank.
        rank: u32,
    },
    /// Leave a joined subreddit.
    Leave {
        /// Which one.
        pick: u64,
    },
}

/// One step of the schedule.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// A user goes online or offline at `at_ms`.
    Session {
        /// Milliseconds since the run started.
        at_ms: f64,
        /// Local user index.
        user: u32,
        /// Now online.
        online: bool,
    },
    /// A user acts at `at_ms`.
    Act {
        /// Milliseconds since the run started (the intended send time).
        at_ms: f64,
        /// Local user index.
        user: u32,
        /// What.
        kind: ActionKind,
    },
    /// Nobody is online and no session change is due before the end.
    Idle,
}

struct UserPlan {
    rng: Rng,
    online: bool,
}

/// The schedule of one worker.
pub struct Planner {
    users: Vec<UserPlan>,
    arrivals: Rng,
    online: Vec<u32>,
    slot: Vec<u32>,
    sessions: BinaryHeap<Reverse<(u64, u32)>>,
    now_ms: f64,
    weights: [f64; 7],
    zipf: Zipf,
    total_users: u32,
    subreddits: u32,
    repost_share: f64,
    online_ms: f64,
    offline_ms: f64,
    /// Mean gap between arrivals in open loop with a fixed rate (ms); None: think time.
    fixed_gap_ms: Option<f64>,
    think_ms: f64,
}

const NOT_ONLINE: u32 = u32::MAX;

impl Planner {
    /// The schedule for part `part` of `cfg`.
    pub fn new(cfg: &SimConfig, part: u32) -> Self {
        let range = cfg.user_range(part);
        let online_ms = cfg.online_mean_s * 1000.0;
        let offline_ms = cfg.offline_mean_s * 1000.0;
        let p_online = if offline_ms <= 0.0 {
            1.0
        } else {
            online_ms / (online_ms + offline_ms)
        };
        let (fixed_gap_ms, think_ms) = match &cfg.load {
            Load::Open { rate, think_ms } => (
                rate.map(|r| 1000.0 * f64::from(cfg.processes.max(1)) / r),
                *think_ms,
            ),
            Load::Closed { .. } => (None, 1.0),
        };
        let mut planner = Self {
            users: Vec::with_capacity(range.len()),
            arrivals: Rng::derive(cfg.seed, u64::MAX - u64::from(part)),
            online: Vec::new(),
            slot: Vec::with_capacity(range.len()),
            sessions: BinaryHeap::new(),
            now_ms: 0.0,
            weights: cfg.mix.weights(),
            zipf: Zipf::new(cfg.subreddits as usize, cfg.zipf),
            total_users: cfg.users,
            subreddits: cfg.subreddits,
            repost_share: cfg.repost_share,
            online_ms,
            offline_ms,
            fixed_gap_ms,
            think_ms,
        };
        for (local, global) in range.enumerate() {
            let mut rng = Rng::derive(cfg.seed, u64::from(global));
            let online = rng.chance(p_online);
            let local = local as u32;
            planner.slot.push(NOT_ONLINE);
            planner.users.push(UserPlan { rng, online: false });
            if online {
                planner.set_online(local, true);
            }
            planner.schedule_toggle(local);
        }
        planner
    }

    /// Users online now.
    pub fn online_count(&self) -> usize {
        self.online.len()
    }

    /// Whether local user `u` is online.
    pub fn is_online(&self, u: u32) -> bool {
        self.users.get(u as usize).is_some_and(|p| p.online)
    }

    /// The Zipf distribution of subreddit ranks.
    pub fn zipf(&self) -> &Zipf {
        &self.zipf
    }

    fn set_online(&mut self, u: u32, online: bool) {
        let i = u as usize;
        if self.users[i].online == online {
            return;
        }
        self.users[i].online = online;
        if online {
            self.slot[i] = self.online.len() as u32;
            self.online.push(u);
        } else {
            let at = self.slot[i] as usize;
            self.online.swap_remove(at);
            if let Some(moved) = self.online.get(at) {
                self.slot[*moved as usize] = at as u32;
            }
            self.slot[i] = NOT_ONLINE;
        }
    }

    fn schedule_toggle(&mut self, u: u32) {
        let plan = &mut self.users[u as usize];
        if self.offline_ms <= 0.0 {
            return; // always online
        }
        let mean = if plan.online {
            self.online_ms
        } else {
            self.offline_ms
        };
        let at = self.now_ms + plan.rng.exp(mean);
        self.sessions.push(Reverse(((at * 1000.0) as u64, u)));
    }

    /// When the next session change is due (ms), if any.
    pub fn next_session_ms(&self) -> Option<f64> {
        self.sessions
            .peek()
            .map(|Reverse((at, _))| *at as f64 / 1000.0)
    }

    /// Applies the next session change if it is due by `t_ms`.
    pub fn pop_session(&mut self, t_ms: f64) -> Option<Step> {
        let at = self.next_session_ms()?;
        if at > t_ms {
            return None;
        }
        let Reverse((_, u)) = self.sessions.pop()?;
        self.now_ms = self.now_ms.max(at);
        let online = !self.users[u as usize].online;
        self.set_online(u, online);
        self.schedule_toggle(u);
        Some(Step::Session {
            at_ms: at,
            user: u,
            online,
        })
    }

    /// A random online user's next action at `t_ms` (None if nobody is online).
    pub fn pick(&mut self, t_ms: f64) -> Option<Step> {
        if self.online.is_empty() {
            return None;
        }
        let u = self.online[self.arrivals.below(self.online.len())];
        self.now_ms = self.now_ms.max(t_ms);
        Some(Step::Act {
            at_ms: t_ms,
            user: u,
            kind: self.plan(u),
        })
    }

    fn plan(&mut self, u: u32) -> ActionKind {
        let (weights, repost_share, total, subs) = (
            self.weights,
            self.repost_share,
            self.total_users,
            self.subreddits,
        );
        let zipf = &self.zipf;
        let rng = &mut self.users[u as usize].rng;
        match rng.weighted(&weights) {
            0 => ActionKind::Post {
                pick: rng.next_u64(),
                repost: rng.chance(repost_share),
            },
            1 => ActionKind::Comment {
                pick: rng.next_u64(),
                on_comment: rng.chance(0.6),
            },
            2 => ActionKind::Vote {
                pick: rng.next_u64(),
                on_comment: rng.chance(0.5),
                value: [1, 1, 1, -1, 0][rng.below(5)],
            },
            3 => ActionKind::Dm {
                to: rng.below(total as usize) as u32,
                pick: rng.next_u64(),
            },
            4 => ActionKind::Feed {
                sort: [PostSort::Hot, PostSort::New, PostSort::Top][rng.below(3)],
            },
            5 => ActionKind::Join {
                rank: (zipf.sample(rng) as u32).min(subs.saturating_sub(1)),
            },
            _ => ActionKind::Leave {
                pick: rng.next_u64(),
            },
        }
    }

    /// The next step of an open-loop schedule (virtual time; deterministic).
    pub fn next_step(&mut self) -> Step {
        loop {
            let gap = match self.fixed_gap_ms {
                Some(g) => g,
                None if self.online.is_empty() => f64::INFINITY,
                None => self.think_ms / self.online.len() as f64,
            };
            let t = if gap.is_finite() {
                self.now_ms + self.arrivals.exp(gap)
            } else {
                f64::INFINITY
            };
            if let Some(step) = self.pop_session(t) {
                return step;
            }
            if !t.is_finite() {
                return Step::Idle;
            }
            self.now_ms = t;
            if let Some(step) = self.pick(t) {
                return step;
            }
        }
    }
}

/// Setup joins of a user: `1 + Poisson-like(mean - 1)` distinct Zipf-drawn ranks.
pub fn setup_joins(cfg: &SimConfig, zipf: &Zipf, global_user: u32) -> Vec<u32> {
    let mut rng = Rng::derive(cfg.seed ^ 0x005E_ED0F_1015, u64::from(global_user));
    let want = (1.0 + rng.exp((cfg.joins_per_user - 1.0).max(0.0))).round() as usize;
    let want = want.clamp(1, cfg.subreddits as usize);
    let mut ranks: Vec<u32> = Vec::with_capacity(want);
    let mut tries = 0;
    while ranks.len() < want && tries < want * 20 {
        let r = zipf.sample(&mut rng) as u32;
        if !ranks.contains(&r) {
            ranks.push(r);
        }
        tries += 1;
    }
    ranks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(seed: u64, load: Load) -> SimConfig {
        SimConfig {
            nats_url: String::new(),
            http: None,
            tag: "t".into(),
            users: 500,
            subreddits: 20,
            zipf: 1.0,
            joins_per_user: 3.0,
            mix: Default::default(),
            repost_share: 0.1,
            online_mean_s: 5.0,
            offline_mean_s: 5.0,
            load,
            max_in_flight: 100,
            duration_s: 10.0,
            seed,
            processes: 2,
            out_dir: "/tmp".into(),
            request_timeout_ms: 1000,
            retry_budget_ms: 0,
            setup_in_flight: 8,
            seed_posts: 0,
            seed_comments: 0,
        }
    }

    #[test]
    fn subreddit_names_give_back_their_rank_in_any_case() {
        let mut c = cfg(1, Load::Closed { in_flight: 1 });
        c.tag = "Ab3".into();
        for r in [0, 7, 199] {
            let name = c.subreddit(r);
            assert_eq!(c.subreddit_rank(&name), Some(r));
            assert_eq!(c.subreddit_rank(&name.to_ascii_lowercase()), Some(r));
            assert_eq!(c.subreddit_rank(&name.to_ascii_uppercase()), Some(r));
        }
        for other in [
            "", "r", "rAb3", "rAb3_", "rAb3_x", "rAb4_1", "xAb3_1", "rAb3_1_2", "rAb",
        ] {
            assert_eq!(c.subreddit_rank(other), None, "{other:?}");
        }
    }

    fn schedule(c: &SimConfig, part: u32, n: usize) -> Vec<Step> {
        let mut p = Planner::new(c, part);
        (0..n).map(|_| p.next_step()).collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_intended_actions() {
        let open = Load::Open {
            rate: None,
            think_ms: 1000.0,
        };
        let a = schedule(&cfg(7, open.clone()), 1, 5_000);
        let b = schedule(&cfg(7, open.clone()), 1, 5_000);
        assert_eq!(a, b);
        assert_ne!(a, schedule(&cfg(8, open.clone()), 1, 5_000));
        assert_ne!(a, schedule(&cfg(7, open), 0, 5_000));
        let sessions = a
            .iter()
            .filter(|s| matches!(s, Step::Session { .. }))
            .count();
        let acts = a.iter().filter(|s| matches!(s, Step::Act { .. })).count();
        assert!(sessions > 100 && acts > 1000, "{sessions} {acts}");
        // time moves forward
        let times: Vec<f64> = a
            .iter()
            .filter_map(|s| match s {
                Step::Session { at_ms, .. } | Step::Act { at_ms, .. } => Some(*at_ms),
                Step::Idle => None,
            })
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn every_action_kind_occurs_and_only_online_users_act() {
        let c = cfg(
            3,
            Load::Open {
                rate: Some(1000.0),
                think_ms: 1.0,
            },
        );
        let mut p = Planner::new(&c, 0);
        let mut kinds = std::collections::HashSet::new();
        for _ in 0..20_000 {
            match p.next_step() {
                Step::Act { user, kind, .. } => {
                    assert!(p.is_online(user));
                    kinds.insert(std::mem::discriminant(&kind));
                }
                Step::Session { user, online, .. } => assert_eq!(p.is_online(user), online),
                Step::Idle => {}
            }
        }
        assert_eq!(kinds.len(), 7);
    }

    #[test]
    fn fixed_rate_arrivals_match_the_rate() {
        // 1000/s over 2 processes: 500/s for this part.
        let c = cfg(
            5,
            Load::Open {
                rate: Some(1000.0),
                think_ms: 1.0,
            },
        );
        let mut p = Planner::new(&c, 0);
        let mut last = 0.0;
        let mut acts = 0;
        while last < 20_000.0 {
            if let Step::Act { at_ms, .. } = p.next_step() {
                last = at_ms;
                acts += 1;
            }
        }
        let rate = acts as f64 / 20.0;
        assert!((rate - 500.0).abs() < 25.0, "{rate}");
    }

    #[test]
    fn setup_joins_are_distinct_and_follow_popularity() {
        let c = cfg(1, Load::Closed { in_flight: 1 });
        let z = Zipf::new(20, 1.0);
        let mut members = vec![0u64; 20];
        for u in 0..5_000 {
            let j = setup_joins(&c, &z, u);
            let mut d = j.clone();
            d.sort_unstable();
            d.dedup();
            assert_eq!(d.len(), j.len());
            for r in j {
                members[r as usize] += 1;
            }
        }
        assert!(
            members.windows(2).take(5).all(|w| w[0] > w[1]),
            "{members:?}"
        );
        assert_eq!(setup_joins(&c, &z, 9), setup_joins(&c, &z, 9));
    }
}
