//! The audit: each shard exports the facts it holds ([`ShardState::audit_records`]),
//! and a [`Checker`] cross-checks the facts of all shards, page by page. In
//! quiescence every derived number converges, so any difference is a
//! violation:
//! - tallies equal the votes, author totals equal item scores, member counts equal
//!   member sets (checked locally, exported as violations);
//! - every member of a subreddit has it in their joined list, and vice versa;
//! - the karma a user's shard holds from each subreddit equals that subreddit's
//!   author totals, and the user's karma is the sum;
//! - every DM is in both the recipient's inbox and the sender's sent folder.

use super::ShardState;
use foldhash::{HashMap, HashSet};
use reddit_shared::ids::DmId;
use reddit_shared::protocol::admin::{AuditCounts, AuditReport, Violation};
use reddit_shared::protocol::dm::DmFolder;
use reddit_shared::protocol::internal::AuditRecord;

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

/// Cross-checks the records of all shards, in one go (tests, tools; the
/// audit itself feeds a [`Checker`] page by page).
pub fn check(
    shards: u32,
    records: impl IntoIterator<Item = AuditRecord>,
    pending_sync: u64,
    max_violations: usize,
) -> AuditReport {
    let mut checker = Checker::new(shards, max_violations);
    for record in records {
        checker.add(record);
    }
    let mut report = checker.finish();
    report.pending_sync = pending_sync;
    report
}

/// Two names by their indexes in a [`Checker`]'s table: (user, subreddit)
/// for memberships and karma, (from, to) for a DM.
type Pair = (u32, u32);

/// The cross-shard check, fed the shards' records as their pages arrive
/// ([`Checker::add`]), so that no export is held whole: it keeps each name
/// once, and each fact as a [`Pair`] of indexes in hash sets. Collecting
/// the records and then checking them in ordered sets of two strings took
/// three times the memory (730 against 236 MiB for 4 million records in
/// the grow bench; a million-user audit has 8 million). Names come back
/// only for the violations reported, which are in the same order whatever
/// the records' order.
#[derive(Debug, Default)]
pub struct Checker {
    shards: u32,
    /// Violations described in the report, at most.
    max: usize,
    checked: AuditCounts,
    /// Violations the shards found locally, the first `max` of them kept.
    local: Vec<Violation>,
    local_count: u64,
    names: HashMap<String, u32>,
    members: HashSet<Pair>,
    joined: HashSet<Pair>,
    author_scores: HashMap<Pair, (i64, i64)>,
    karma: HashMap<Pair, (i64, i64)>,
    inbox: HashMap<DmId, Pair>,
    sent: HashMap<DmId, Pair>,
}

impl Checker {
    /// A check of `shards` shards' records that describes at most
    /// `max_violations` of the violations it counts.
    pub fn new(shards: u32, max_violations: usize) -> Self {
        Self {
            shards,
            max: max_violations,
            ..Self::default()
        }
    }

    /// The index of `name` (a new one for a name not seen yet). Names are
    /// fewer than the indexes a `u32` holds: each costs tens of bytes.
    fn name(&mut self, name: String) -> u32 {
        let next = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        *self.names.entry(name).or_insert(next)
    }

    fn pair(&mut self, a: String, b: String) -> Pair {
        (self.name(a), self.name(b))
    }

    /// Takes one record of a shard's export into the check.
    pub fn add(&mut self, record: AuditRecord) {
        match record {
            AuditRecord::Counts { counts } => {
                let c = &mut self.checked;
                c.users += counts.users;
                c.subreddits += counts.subreddits;
                c.posts += counts.posts;
                c.comments += counts.comments;
                c.votes += counts.votes;
                c.memberships += counts.memberships;
                c.dms += counts.dms;
            }
            AuditRecord::Violation { violation } => {
                self.local_count += 1;
                if self.local.len() < self.max {
                    self.local.push(violation);
                }
            }
            AuditRecord::Member { subreddit, user } => {
                let pair = self.pair(user, subreddit);
                self.members.insert(pair);
            }
            AuditRecord::Joined { user, subreddit } => {
                let pair = self.pair(user, subreddit);
                self.joined.insert(pair);
            }
            AuditRecord::AuthorScore {
                subreddit,
                author,
                post,
                comment,
            } => {
                let pair = self.pair(author, subreddit);
                self.author_scores.insert(pair, (post, comment));
            }
            AuditRecord::Karma {
                user,
                subreddit,
                post,
                comment,
            } => {
                let pair = self.pair(user, subreddit);
                self.karma.insert(pair, (post, comment));
            }
            AuditRecord::Inbox { id, from, to } => {
                let pair = self.pair(from, to);
                self.inbox.insert(id, pair);
            }
            AuditRecord::Sent { id, from, to } => {
                let pair = self.pair(from, to);
                self.sent.insert(id, pair);
            }
        }
    }

    /// The report: every violation counted, the first ones described (the
    /// shards' own, then memberships, karma and DMs, each kind in the order
    /// of its names or ids). Its `pending_sync` is the caller's to set.
    pub fn finish(self) -> AuditReport {
        let mut names = vec![""; self.names.len()];
        for (name, &i) in &self.names {
            if let Some(slot) = names.get_mut(i as usize) {
                *slot = name.as_str();
            }
        }
        let name = |i: u32| names.get(i as usize).copied().unwrap_or("?");
        let by_names = |mut pairs: Vec<Pair>| {
            pairs.sort_unstable_by_key(|&(a, b)| (name(a), name(b)));
            pairs
        };
        let mut out = Found {
            max: self.max,
            count: self.local_count,
            violations: self.local,
        };
        let not_joined = self.members.difference(&self.joined).copied().collect();
        for (user, sub) in by_names(not_joined) {
            let (user, sub) = (name(user), name(sub));
            out.push("membership", || {
                format!("{user} is a member of r/{sub} but r/{sub} is not in their joined list")
            });
        }
        let not_member = self.joined.difference(&self.members).copied().collect();
        for (user, sub) in by_names(not_member) {
            let (user, sub) = (name(user), name(sub));
            out.push("membership", || {
                format!("{user}'s joined list has r/{sub} but r/{sub} has no such member")
            });
        }
        let scores = |pair: &Pair| self.author_scores.get(pair).copied().unwrap_or((0, 0));
        let held = |pair: &Pair| self.karma.get(pair).copied().unwrap_or((0, 0));
        let keys: HashSet<&Pair> = self.author_scores.keys().chain(self.karma.keys()).collect();
        let differ = keys
            .into_iter()
            .filter(|pair| scores(pair) != held(pair))
            .copied()
            .collect();
        for pair in by_names(differ) {
            let (s, h) = (scores(&pair), held(&pair));
            let (user, sub) = (name(pair.0), name(pair.1));
            out.push("karma", || {
                format!(
                    "{user}'s items in r/{sub} score {}/{} (post/comment) but their shard credits {}/{}",
                    s.0, s.1, h.0, h.1
                )
            });
        }
        let mut inbox: Vec<(&DmId, &Pair)> = self.inbox.iter().collect();
        inbox.sort_unstable_by_key(|(id, _)| **id);
        for (id, &(from, to)) in inbox {
            let (sender, recipient) = (name(from), name(to));
            match self.sent.get(id) {
                None => out.push("dm", || {
                    format!("DM {id} from {sender} is in {recipient}'s inbox but not in {sender}'s sent folder")
                }),
                Some(&(f, t)) if (f, t) != (from, to) => out.push("dm", || {
                    format!(
                        "DM {id} is {sender}→{recipient} in the inbox but {}→{} in the sent folder",
                        name(f),
                        name(t)
                    )
                }),
                Some(_) => {}
            }
        }
        let mut sent: Vec<(&DmId, &Pair)> = self
            .sent
            .iter()
            .filter(|(id, _)| !self.inbox.contains_key(id))
            .collect();
        sent.sort_unstable_by_key(|(id, _)| **id);
        for (id, &(from, to)) in sent {
            let (sender, recipient) = (name(from), name(to));
            out.push("dm", || {
                format!("DM {id} to {recipient} is in {sender}'s sent folder but not in {recipient}'s inbox")
            });
        }
        AuditReport {
            ok: out.count == 0,
            shards: self.shards,
            checked: self.checked,
            violation_count: out.count,
            violations: out.violations,
            pending_sync: 0,
        }
    }
}

/// Violations as a check finds them: all counted, the first `max` described
/// (the rest are not formatted at all).
struct Found {
    max: usize,
    count: u64,
    violations: Vec<Violation>,
}

impl Found {
    fn push(&mut self, kind: &str, detail: impl FnOnce() -> String) {
        self.count += 1;
        if self.violations.len() < self.max {
            self.violations.push(Violation {
                kind: kind.to_owned(),
                detail: detail(),
            });
        }
    }
}
