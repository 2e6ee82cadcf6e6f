//! The audit: each shard exports the facts it holds ([`ShardState::audit_records`]),
//! and [`check`] cross-checks the facts of all shards. In quiescence every derived
//! number converges, so any difference is a violation:
//! - tallies equal the votes, author totals equal item scores, member counts equal
//!   member sets (checked locally, exported as violations);
//! - every member of a subreddit has it in their joined list, and vice versa;
//! - the karma a user's shard holds from each subreddit equals that subreddit's
//!   author totals, and the user's karma is the sum;
//! - every DM is in both the recipient's inbox and the sender's sent folder.

use super::ShardState;
use reddit_shared::ids::DmId;
use reddit_shared::protocol::admin::{AuditCounts, AuditReport, Violation};
use reddit_shared::protocol::dm::DmFolder;
use reddit_shared::protocol::internal::AuditRecord;
use std::collections::{BTreeMap, BTreeSet, HashMap};

impl ShardState {
    /// Every fact this shard holds for the audit, in a stable order (subreddits and
    /// users by key), so pages taken with `skip`/`take` in quiescence fit together.
    pub fn audit_records(&self) -> impl Iterator<Item = AuditRecord> + '_ {
        let mut sub_keys: Vec<&String> = self.subs.keys().collect();
        sub_keys.sort();
        let mut user_keys: Vec<&String> = self.users.keys().collect();
        user_keys.sort();
        let t = self.totals();
        let counts = AuditCounts {
            users: self.user_count(),
            subreddits: self.subreddit_count(),
            posts: t.posts,
            comments: t.comments,
            votes: self.subs.values().map(|s| s.vote_count()).sum(),
            memberships: self.subs.values().map(|s| s.member_set_len()).sum(),
            dms: t.dms,
        };
        let head = std::iter::once(AuditRecord::Counts { counts });
        let subs = sub_keys
            .into_iter()
            .filter_map(|k| self.subs.get(k))
            .flat_map(|sub| {
                let key = sub.name().key().to_owned();
                let violations = sub.local_violations().into_iter().map(|(kind, detail)| {
                    AuditRecord::Violation {
                        violation: Violation { kind, detail },
                    }
                });
                let k1 = key.clone();
                let members = sub.member_keys().map(move |u| AuditRecord::Member {
                    subreddit: k1.clone(),
                    user: u.to_owned(),
                });
                let scores = sub
                    .author_scores()
                    .map(move |(a, s)| AuditRecord::AuthorScore {
                        subreddit: key.clone(),
                        author: a.to_owned(),
                        post: s.post,
                        comment: s.comment,
                    });
                violations.chain(members).chain(scores)
            });
        let users = user_keys.into_iter().filter_map(|k| self.users.get(k)).flat_map(|u| {
            let key = u.name().key().to_owned();
            let (k1, k2) = (key.clone(), key.clone());
            let (entries_post, entries_comment) = u
                .karma_entries()
                .fold((0, 0), |(p, c), (_, ep, ec)| (p + ep, c + ec));
            let (post, comment) = u.karma_totals();
            let total = (post != entries_post || comment != entries_comment).then(|| {
                AuditRecord::Violation {
                    violation: Violation {
                        kind: "karma".to_owned(),
                        detail: format!(
                            "{key} has karma {post}/{comment} (post/comment) but the subreddits' totals sum to {entries_post}/{entries_comment}"
                        ),
                    },
                }
            });
            let joined = u.joined_keys().map(move |s| AuditRecord::Joined {
                user: k1.clone(),
                subreddit: s.to_owned(),
            });
            let karma = u
                .karma_entries()
                .map(move |(s, p, c)| AuditRecord::Karma {
                    user: k2.clone(),
                    subreddit: s.to_owned(),
                    post: p,
                    comment: c,
                });
            let inbox = u.folder(DmFolder::Inbox).values().map(|d| AuditRecord::Inbox {
                id: d.id,
                from: d.from.to_ascii_lowercase(),
                to: d.to.to_ascii_lowercase(),
            });
            let sent = u.folder(DmFolder::Sent).values().map(|d| AuditRecord::Sent {
                id: d.id,
                from: d.from.to_ascii_lowercase(),
                to: d.to.to_ascii_lowercase(),
            });
            total.into_iter().chain(joined).chain(karma).chain(inbox).chain(sent)
        });
        head.chain(subs).chain(users)
    }
}

/// Cross-checks the records of all shards.
pub fn check(
    shards: u32,
    records: impl IntoIterator<Item = AuditRecord>,
    pending_sync: u64,
    max_violations: usize,
) -> AuditReport {
    let mut report = AuditReport {
        shards,
        pending_sync,
        ..AuditReport::default()
    };
    let mut violations: Vec<Violation> = Vec::new();
    let mut members: BTreeSet<(String, String)> = BTreeSet::new();
    let mut joined: BTreeSet<(String, String)> = BTreeSet::new();
    let mut author_scores: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    let mut karma: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    let mut inbox: HashMap<DmId, (String, String)> = HashMap::new();
    let mut sent: HashMap<DmId, (String, String)> = HashMap::new();
    for record in records {
        match record {
            AuditRecord::Counts { counts } => {
                let c = &mut report.checked;
                c.users += counts.users;
                c.subreddits += counts.subreddits;
                c.posts += counts.posts;
                c.comments += counts.comments;
                c.votes += counts.votes;
                c.memberships += counts.memberships;
                c.dms += counts.dms;
            }
            AuditRecord::Violation { violation } => violations.push(violation),
            AuditRecord::Member { subreddit, user } => {
                members.insert((user, subreddit));
            }
            AuditRecord::Joined { user, subreddit } => {
                joined.insert((user, subreddit));
            }
            AuditRecord::AuthorScore {
                subreddit,
                author,
                post,
                comment,
            } => {
                author_scores.insert((author, subreddit), (post, comment));
            }
            AuditRecord::Karma {
                user,
                subreddit,
                post,
                comment,
            } => {
                karma.insert((user, subreddit), (post, comment));
            }
            AuditRecord::Inbox { id, from, to } => {
                inbox.insert(id, (from, to));
            }
            AuditRecord::Sent { id, from, to } => {
                sent.insert(id, (from, to));
            }
        }
    }
    for (user, sub) in members.difference(&joined) {
        violations.push(Violation {
            kind: "membership".to_owned(),
            detail: format!(
                "{user} is a member of r/{sub} but r/{sub} is not in their joined list"
            ),
        });
    }
    for (user, sub) in joined.difference(&members) {
        violations.push(Violation {
            kind: "membership".to_owned(),
            detail: format!("{user}'s joined list has r/{sub} but r/{sub} has no such member"),
        });
    }
    let keys: BTreeSet<&(String, String)> = author_scores.keys().chain(karma.keys()).collect();
    for key in keys {
        let scores = author_scores.get(key).copied().unwrap_or((0, 0));
        let held = karma.get(key).copied().unwrap_or((0, 0));
        if scores != held {
            let (user, sub) = key;
            violations.push(Violation {
                kind: "karma".to_owned(),
                detail: format!(
                    "{user}'s items in r/{sub} score {}/{} (post/comment) but their shard credits {}/{}",
                    scores.0, scores.1, held.0, held.1
                ),
            });
        }
    }
    for (id, (from, to)) in &inbox {
        match sent.get(id) {
            None => violations.push(Violation {
                kind: "dm".to_owned(),
                detail: format!(
                    "DM {id} from {from} is in {to}'s inbox but not in {from}'s sent folder"
                ),
            }),
            Some(s) if s != &(from.clone(), to.clone()) => violations.push(Violation {
                kind: "dm".to_owned(),
                detail: format!(
                    "DM {id} is {from}→{to} in the inbox but {}→{} in the sent folder",
                    s.0, s.1
                ),
            }),
            Some(_) => {}
        }
    }
    for (id, (from, to)) in &sent {
        if !inbox.contains_key(id) {
            violations.push(Violation {
                kind: "dm".to_owned(),
                detail: format!(
                    "DM {id} to {to} is in {from}'s sent folder but not in {to}'s inbox"
                ),
            });
        }
    }
    report.violation_count = violations.len() as u64;
    report.ok = violations.is_empty();
    violations.truncate(max_violations);
    report.violations = violations;
    report
}
