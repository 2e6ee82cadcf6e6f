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

/// Where one audit's export stands on a shard: the keys of its subreddits
/// and users, and how far the pages have walked them. Each page does a
/// bounded amount of work, so no single request holds the shard for the
/// whole of its facts (at a million users collecting them at once took each
/// shard 1.2–1.9 s, and then taking the keys alone 50–90 ms): the first
/// pages take the keys, up to `limit` per page, and the later ones walk
/// them, up to `limit` records and `limit` keys per page (a key can have
/// no records).
#[derive(Debug)]
pub struct AuditCursor {
    subs: Vec<String>,
    users: Vec<String>,
    /// While keys are being taken: the maps' sizes when the taking began.
    /// The maps only grow, and a map's order changes only when it grows, so
    /// the same sizes mean the keys taken so far are where they were.
    taking: Option<(usize, usize)>,
    /// Whether the [`AuditRecord::Counts`] record was served.
    counted: bool,
    /// Index into `subs`, then `users` (`subs.len() + i`).
    key: usize,
    /// Where in that key's records.
    at: Within,
    /// Records served by this cursor: the offset of its next page.
    served: u64,
}

/// A place among one subreddit's or user's audit records.
#[derive(Debug, Default)]
struct Within {
    /// The part of the key's records (violations, members, ...).
    part: usize,
    /// Records of that part already served.
    served: usize,
}

impl AuditCursor {
    /// Records served so far (the `offset` a request continuing this cursor asks for).
    pub fn served(&self) -> u64 {
        self.served
    }

    /// Whether every key was walked.
    pub fn done(&self) -> bool {
        self.counted && self.taking.is_none() && self.key >= self.subs.len() + self.users.len()
    }
}

/// One part of a key's records being moved into a page: how many of them
/// earlier pages took, and the page with its size.
struct Part<'a> {
    served: &'a mut usize,
    limit: usize,
    out: &'a mut Vec<AuditRecord>,
}

impl Part<'_> {
    /// Moves the part's records, from those already served on, into the page
    /// until it holds `limit`; true if the part is finished. Skips before
    /// mapping, so the records of earlier pages are not built again.
    fn take<T>(self, raw: impl Iterator<Item = T>, map: impl Fn(T) -> AuditRecord) -> bool {
        let mut items = raw.skip(*self.served);
        while self.out.len() < self.limit {
            match items.next() {
                Some(item) => {
                    self.out.push(map(item));
                    *self.served += 1;
                }
                None => return true,
            }
        }
        false
    }
}

/// Walks the `parts` parts of one key's records from `at`, each moved by
/// `take(part, ..)` (true once that part is finished), until `out` holds
/// `limit`; true once every part is out.
fn walk_parts(
    at: &mut Within,
    parts: usize,
    limit: usize,
    out: &mut Vec<AuditRecord>,
    mut take: impl FnMut(usize, Part<'_>) -> bool,
) -> bool {
    while out.len() < limit && at.part < parts {
        let part = Part {
            served: &mut at.served,
            limit,
            out: &mut *out,
        };
        if !take(at.part, part) {
            return false;
        }
        at.part += 1;
        at.served = 0;
    }
    at.part >= parts
}

impl ShardState {
    /// Starts an export of this shard's facts for the audit. Takes nothing
    /// yet: the pages take the keys of its subreddits and users (in the
    /// maps' order, not sorted: only the cursor needs it stable).
    pub fn audit_cursor(&self) -> AuditCursor {
        AuditCursor {
            subs: Vec::new(),
            users: Vec::new(),
            taking: Some((self.subs.len(), self.users.len())),
            counted: false,
            key: 0,
            at: Within::default(),
            served: 0,
        }
    }

    /// The next page of the export `cursor` walks: up to `limit` records (at
    /// least one), after taking up to `keys` more keys while keys are being
    /// taken, and walking at most `keys` keys. A page can hold no records
    /// and still not be the last. In quiescence the pages of one cursor fit
    /// together into [`ShardState::audit_records`]. A subreddit or user
    /// added while the keys are taken makes the page take them all again,
    /// at once (the maps' order changed); one added after is not in the
    /// export.
    pub fn audit_page(
        &self,
        cursor: &mut AuditCursor,
        limit: usize,
        keys: usize,
    ) -> Vec<AuditRecord> {
        let limit = limit.max(1);
        let keys = keys.max(1);
        let mut out = Vec::with_capacity(limit.min(4_096));
        if !cursor.counted {
            out.push(AuditRecord::Counts {
                counts: self.audit_counts(),
            });
            cursor.counted = true;
        }
        if let Some(sizes) = cursor.taking {
            if !self.take_keys(cursor, sizes, keys) {
                cursor.served += out.len() as u64;
                return out;
            }
        }
        let mut walked = 0;
        while out.len() < limit
            && walked < keys
            && cursor.key < cursor.subs.len() + cursor.users.len()
        {
            walked += 1;
            let finished = match cursor.subs.get(cursor.key) {
                Some(key) => self.audit_sub(key, &mut cursor.at, limit, &mut out),
                None => {
                    let i = cursor.key - cursor.subs.len();
                    let key = cursor.users.get(i).map_or("", String::as_str);
                    self.audit_user(key, &mut cursor.at, limit, &mut out)
                }
            };
            if finished {
                cursor.key += 1;
                cursor.at = Within::default();
            }
        }
        cursor.served += out.len() as u64;
        out
    }

    /// Takes up to `limit` more keys into `cursor` (subreddits', then
    /// users'), or all of them afresh if a map grew since the taking began
    /// at `sizes`; true once every key is taken.
    fn take_keys(&self, cursor: &mut AuditCursor, sizes: (usize, usize), limit: usize) -> bool {
        let now = (self.subs.len(), self.users.len());
        let limit = if now == sizes {
            limit
        } else {
            cursor.subs.clear();
            cursor.users.clear();
            usize::MAX
        };
        // All the room at once: a vector doubling as it fills touches its
        // new memory in one page (7 ms at a quarter of a million keys).
        cursor
            .subs
            .reserve_exact(now.0.saturating_sub(cursor.subs.len()));
        cursor
            .users
            .reserve_exact(now.1.saturating_sub(cursor.users.len()));
        let had = cursor.subs.len();
        let subs = self.subs.keys().skip(had).take(limit);
        cursor.subs.extend(subs.cloned());
        let left = limit - (cursor.subs.len() - had);
        let users = self.users.keys().skip(cursor.users.len()).take(left);
        cursor.users.extend(users.cloned());
        let done = cursor.subs.len() == now.0 && cursor.users.len() == now.1;
        if done {
            cursor.taking = None;
        }
        done
    }

    /// Every fact this shard holds for the audit, in one go (tests, tools).
    pub fn audit_records(&self) -> Vec<AuditRecord> {
        let mut cursor = self.audit_cursor();
        let mut out = Vec::new();
        while !cursor.done() {
            out.extend(self.audit_page(&mut cursor, usize::MAX, usize::MAX));
        }
        out
    }

    fn audit_counts(&self) -> AuditCounts {
        let t = self.totals();
        AuditCounts {
            users: self.user_count(),
            subreddits: self.subreddit_count(),
            posts: t.posts,
            comments: t.comments,
            votes: self.subs.values().map(|s| s.vote_count()).sum(),
            memberships: self.subs.values().map(|s| s.member_set_len()).sum(),
            dms: t.dms,
        }
    }

    /// One subreddit's records from where `cursor` stands: its local
    /// violations, members, author totals. True once all are out.
    fn audit_sub(
        &self,
        key: &str,
        at: &mut Within,
        limit: usize,
        out: &mut Vec<AuditRecord>,
    ) -> bool {
        let Some(sub) = self.subs.get(key) else {
            return true;
        };
        let name = sub.name().key();
        walk_parts(at, 3, limit, out, |part, p| match part {
            0 => p.take(sub.local_violations().into_iter(), |(kind, detail)| {
                AuditRecord::Violation {
                    violation: Violation { kind, detail },
                }
            }),
            1 => p.take(sub.member_keys(), |u| AuditRecord::Member {
                subreddit: name.to_owned(),
                user: u.to_owned(),
            }),
            _ => p.take(sub.author_scores(), |(a, s)| AuditRecord::AuthorScore {
                subreddit: name.to_owned(),
                author: a.to_owned(),
                post: s.post,
                comment: s.comment,
            }),
        })
    }

    /// One user's records from where `cursor` stands: a karma violation if
    /// their total is not the sum of their entries, joined subreddits, karma
    /// per subreddit, inbox, sent folder. True once all are out.
    fn audit_user(
        &self,
        key: &str,
        at: &mut Within,
        limit: usize,
        out: &mut Vec<AuditRecord>,
    ) -> bool {
        let Some(u) = self.users.get(key) else {
            return true;
        };
        let name = u.name().key();
        walk_parts(at, 5, limit, out, |part, p| match part {
            0 => p.take(karma_violation(u).into_iter(), |violation| {
                AuditRecord::Violation { violation }
            }),
            1 => p.take(u.joined_keys(), |s| AuditRecord::Joined {
                user: name.to_owned(),
                subreddit: s.to_owned(),
            }),
            2 => p.take(u.karma_entries(), |(s, post, comment)| AuditRecord::Karma {
                user: name.to_owned(),
                subreddit: s.to_owned(),
                post,
                comment,
            }),
            3 => p.take(u.folder(DmFolder::Inbox).values(), |d| AuditRecord::Inbox {
                id: d.id,
                from: d.from.to_ascii_lowercase(),
                to: d.to.to_ascii_lowercase(),
            }),
            _ => p.take(u.folder(DmFolder::Sent).values(), |d| AuditRecord::Sent {
                id: d.id,
                from: d.from.to_ascii_lowercase(),
                to: d.to.to_ascii_lowercase(),
            }),
        })
    }
}

/// A violation if `u`'s karma totals are not the sum of their per-subreddit entries.
fn karma_violation(u: &super::users::User) -> Option<Violation> {
    let key = u.name().key();
    let (entries_post, entries_comment) = u
        .karma_entries()
        .fold((0, 0), |(p, c), (_, ep, ec)| (p + ep, c + ec));
    let (post, comment) = u.karma_totals();
    (post != entries_post || comment != entries_comment).then(|| Violation {
        kind: "karma".to_owned(),
        detail: format!(
            "{key} has karma {post}/{comment} (post/comment) but the subreddits' totals sum to {entries_post}/{entries_comment}"
        ),
    })
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
