//! What a shard owns per user: the account, the joined list and karma copied from
//! subreddits' shards, and the DM folders; and the commands on them.

use super::{Effects, Event, LogPosition, PushTarget, ShardState};
use reddit_shared::error::WireError;
use reddit_shared::ids::DmId;
use reddit_shared::names::{SubredditName, Username};
use reddit_shared::protocol::dm::{DmFolder, DmPage, DmView, ListDmsRequest, MarkReadReply};
use reddit_shared::protocol::push::PushEvent;
use reddit_shared::protocol::user::UserView;
use reddit_shared::protocol::DEFAULT_PAGE;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// A membership as the user's shard last heard it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Membership {
    subreddit: SubredditName,
    member: bool,
    version: u64,
}

/// Karma from one subreddit as the user's shard last heard it.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct KarmaEntry {
    post: i64,
    comment: i64,
    version: u64,
}

/// One account.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct User {
    name: Username,
    /// As MessagePack bin (34 bytes), not an array of 32 integers (up to
    /// 65); an array still decodes.
    #[serde(with = "serde_bytes")]
    public_key: [u8; 32],
    created_at: i64,
    memberships: HashMap<String, Membership>,
    karma: HashMap<String, KarmaEntry>,
    post_karma: i64,
    comment_karma: i64,
    inbox: BTreeMap<DmId, DmView>,
    unread: u64,
    sent: BTreeMap<DmId, DmView>,
}

impl User {
    pub(super) fn new(name: Username, public_key: [u8; 32], created_at: i64) -> Self {
        Self {
            name,
            public_key,
            created_at,
            memberships: HashMap::new(),
            karma: HashMap::new(),
            post_karma: 0,
            comment_karma: 0,
            inbox: BTreeMap::new(),
            unread: 0,
            sent: BTreeMap::new(),
        }
    }

    /// The user's name.
    pub fn name(&self) -> &Username {
        &self.name
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public_key
    }

    /// The public view.
    pub fn view(&self) -> UserView {
        UserView {
            username: self.name.to_string(),
            public_key: hex::encode(self.public_key),
            post_karma: self.post_karma,
            comment_karma: self.comment_karma,
            joined: self.joined(),
            created_at: self.created_at,
        }
    }

    /// Subreddits joined, sorted by name (each once: the memberships are by
    /// key). Sorted by reference, so that only the names returned are copied.
    pub fn joined(&self) -> Vec<SubredditName> {
        let mut joined: Vec<&SubredditName> = self
            .memberships
            .values()
            .filter(|m| m.member)
            .map(|m| &m.subreddit)
            .collect();
        joined.sort_unstable_by(|a, b| a.key().cmp(b.key()));
        joined.into_iter().cloned().collect()
    }

    pub(super) fn membership_is_newer(&self, sub_key: &str, version: u64) -> bool {
        self.memberships
            .get(sub_key)
            .is_none_or(|m| version > m.version)
    }

    pub(super) fn karma_is_newer(&self, sub_key: &str, version: u64) -> bool {
        self.karma.get(sub_key).is_none_or(|k| version > k.version)
    }

    pub(super) fn sync_membership(&mut self, sub: &SubredditName, member: bool, version: u64) {
        use std::collections::hash_map::Entry;
        match self.memberships.entry(sub.key().to_owned()) {
            Entry::Vacant(v) => {
                v.insert(Membership {
                    subreddit: sub.clone(),
                    member,
                    version,
                });
            }
            Entry::Occupied(mut o) => {
                let m = o.get_mut();
                if version > m.version {
                    m.member = member;
                    m.version = version;
                }
            }
        }
    }

    pub(super) fn sync_karma(
        &mut self,
        sub: &SubredditName,
        post: i64,
        comment: i64,
        version: u64,
    ) {
        let entry = self.karma.entry(sub.key().to_owned()).or_default();
        if version < entry.version {
            return;
        }
        self.post_karma += post - entry.post;
        self.comment_karma += comment - entry.comment;
        *entry = KarmaEntry {
            post,
            comment,
            version,
        };
    }

    /// Stores a DM; returns false if it was already there.
    pub(super) fn store_dm(&mut self, folder: DmFolder, dm: DmView) -> bool {
        let map = match folder {
            DmFolder::Inbox => &mut self.inbox,
            DmFolder::Sent => &mut self.sent,
        };
        let unread = folder == DmFolder::Inbox && !dm.read;
        match map.entry(dm.id) {
            std::collections::btree_map::Entry::Occupied(_) => false,
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(dm);
                if unread {
                    self.unread += 1;
                }
                true
            }
        }
    }

    pub(super) fn mark_read(&mut self, ids: &[DmId]) -> u32 {
        let mut marked = 0;
        for id in ids {
            if let Some(dm) = self.inbox.get_mut(id) {
                if !dm.read {
                    dm.read = true;
                    self.unread = self.unread.saturating_sub(1);
                    marked += 1;
                }
            }
        }
        marked
    }

    /// (subreddit key, member) pairs of the joined list, for the audit.
    pub(super) fn joined_keys(&self) -> impl Iterator<Item = &str> {
        self.memberships
            .iter()
            .filter(|(_, m)| m.member)
            .map(|(k, _)| k.as_str())
    }

    /// (subreddit key, post, comment) karma entries, for the audit.
    pub(super) fn karma_entries(&self) -> impl Iterator<Item = (&str, i64, i64)> {
        self.karma
            .iter()
            .map(|(k, e)| (k.as_str(), e.post, e.comment))
    }

    /// The karma totals, for the audit.
    pub(super) fn karma_totals(&self) -> (i64, i64) {
        (self.post_karma, self.comment_karma)
    }

    pub(super) fn folder(&self, folder: DmFolder) -> &BTreeMap<DmId, DmView> {
        match folder {
            DmFolder::Inbox => &self.inbox,
            DmFolder::Sent => &self.sent,
        }
    }
}

impl ShardState {
    fn user(&self, key: &str) -> Result<&User, WireError> {
        self.users
            .get(key)
            .ok_or_else(|| WireError::not_found(format!("no user named {key:?}")))
    }

    /// The account acting on a request: must be owned here and exist, else 401
    /// (a valid token for an account this shard does not hold).
    fn caller(&self, who: &Username) -> Result<&User, WireError> {
        self.check_owner("user", who.key())?;
        self.users.get(who.key()).ok_or_else(|| {
            WireError::unauthenticated(format!("user {who} does not exist; register again"))
        })
    }

    /// `user.register`.
    pub fn register(
        &mut self,
        username: &Username,
        public_key: [u8; 32],
        now: i64,
    ) -> Result<UserView, WireError> {
        self.check_owner("username", username.key())?;
        if let Some(existing) = self.users.get(username.key()) {
            return Err(WireError::conflict(format!(
                "the username {:?} is taken",
                existing.name().as_str()
            )));
        }
        self.emit(Event::UserRegistered {
            username: username.clone(),
            public_key,
            at: now,
        });
        self.user(username.key()).map(User::view)
    }

    /// The registered public key of `username` (for login).
    pub fn public_key(&self, username: &Username) -> Result<([u8; 32], Username), WireError> {
        self.check_owner("username", username.key())?;
        let user = self.user(username.key())?;
        Ok((*user.public_key(), user.name().clone()))
    }

    /// `user.get`.
    pub fn get_user(&self, username: &Username) -> Result<UserView, WireError> {
        self.check_owner("username", username.key())?;
        self.user(username.key()).map(User::view)
    }

    /// The caller's joined subreddits (for the feed).
    pub fn joined(&self, who: &Username) -> Result<Vec<SubredditName>, WireError> {
        self.caller(who).map(User::joined)
    }

    /// Builds a DM from `from` to `to`, answering `in_reply_to` (checked by
    /// [`reply_target`](Self::reply_target)). Nothing is stored yet.
    pub fn prepare_dm(
        &self,
        id: DmId,
        from: &Username,
        to: &Username,
        body: String,
        in_reply_to: Option<DmId>,
        now: i64,
    ) -> Result<DmView, WireError> {
        let sender = self.caller(from)?;
        Ok(DmView {
            id,
            from: sender.name().to_string(),
            to: to.to_string(),
            body,
            in_reply_to,
            created_at: now,
            read: false,
        })
    }

    /// The sender of `dm_id`, which must be in `who`'s inbox (else 403: whether it
    /// exists elsewhere is not disclosed).
    pub fn reply_target(&self, who: &Username, dm_id: DmId) -> Result<Username, WireError> {
        let user = self.caller(who)?;
        let dm = user.inbox.get(&dm_id).ok_or_else(|| {
            WireError::forbidden(format!(
                "DM {dm_id} is not in your inbox; you can only reply to messages you received"
            ))
        })?;
        dm.from
            .parse::<Username>()
            .map_err(|e| WireError::internal(format!("stored sender name is invalid: {e}")))
    }

    /// Puts `dm` in its recipient's inbox (owned here) and pushes it. 404 if the
    /// recipient does not exist. Delivering the same DM twice stores it once.
    pub fn deliver_dm(&mut self, dm: DmView, fx: &mut Effects) -> Result<DmView, WireError> {
        let to_key = dm.to.to_ascii_lowercase();
        self.check_owner("user", &to_key)?;
        let recipient = self
            .users
            .get(&to_key)
            .ok_or_else(|| WireError::not_found(format!("no user named {:?}", dm.to)))?;
        if let Some(stored) = recipient.inbox.get(&dm.id) {
            // A retried delivery: the message is there already.
            let mut stored = stored.clone();
            stored.read = false;
            return Ok(stored);
        }
        let mut dm = dm;
        dm.to = recipient.name().to_string();
        dm.read = false;
        self.emit(Event::DmStored {
            folder: DmFolder::Inbox,
            dm: dm.clone(),
        });
        fx.push
            .push((PushTarget::User(to_key), PushEvent::Dm { dm: dm.clone() }));
        Ok(dm)
    }

    /// Puts a delivered `dm` in its sender's sent folder (sender owned here).
    pub fn record_sent(&mut self, dm: DmView) -> DmView {
        let mut dm = dm;
        dm.read = false;
        self.emit(Event::DmStored {
            folder: DmFolder::Sent,
            dm: dm.clone(),
        });
        dm
    }

    /// Puts `dm`, delivered by shard `shard` which said `at` of its log, in
    /// its sender's sent folder (sender owned here), and keeps its id until
    /// that shard shows it durable ([`crate::state::Deliveries`]).
    pub fn record_sent_to(&mut self, shard: u32, dm: DmView, at: LogPosition) -> DmView {
        let id = dm.id;
        let sender = dm.from.to_ascii_lowercase();
        let dm = self.record_sent(dm);
        if at.record > at.durable || self.deliveries.has(shard) {
            self.dm_delivery_acked(shard, id, sender, at);
        }
        dm
    }

    /// Shard `shard` acknowledged DM `id` of `sender` (again), saying `at`
    /// of its log.
    pub fn dm_delivery_acked(&mut self, shard: u32, id: DmId, sender: String, at: LogPosition) {
        self.emit(Event::DmDeliveryAcked {
            shard,
            id,
            sender,
            at,
        });
    }

    /// The DMs delivered to shard `shard` that it has not shown durable yet
    /// (from their senders' sent folders), to deliver again.
    pub fn unconfirmed_dms(&self, shard: u32) -> Vec<DmView> {
        self.unconfirmed_dms_among(shard, |_| true)
    }

    /// The ids of the DMs delivered to shard `shard` that it has not shown
    /// durable yet.
    pub fn unconfirmed_dm_ids(&self, shard: u32) -> impl Iterator<Item = DmId> + '_ {
        self.deliveries.for_shard(shard).map(|(id, _)| id)
    }

    /// [`unconfirmed_dms`](Self::unconfirmed_dms) whose ids `pick` picks.
    pub fn unconfirmed_dms_among(&self, shard: u32, pick: impl Fn(DmId) -> bool) -> Vec<DmView> {
        self.deliveries
            .for_shard(shard)
            .filter(|(id, _)| pick(*id))
            .filter_map(|(id, sender)| {
                self.users
                    .get(sender)
                    .and_then(|u| u.folder(DmFolder::Sent).get(&id))
                    .cloned()
            })
            .collect()
    }

    /// The shards some DM delivered to is unconfirmed at.
    pub fn shards_with_unconfirmed_dms(&self) -> Vec<u32> {
        self.deliveries.shards()
    }

    /// DMs delivered and not shown durable yet, over all shards.
    pub fn unconfirmed_dm_count(&self) -> u64 {
        self.deliveries.len() as u64
    }

    /// `dm.list`.
    pub fn list_dms(&self, who: &Username, req: &ListDmsRequest) -> Result<DmPage, WireError> {
        let user = self.caller(who)?;
        let limit = req.limit.unwrap_or(DEFAULT_PAGE) as usize;
        let before = match &req.cursor {
            None => None,
            Some(c) => Some(c.parse::<DmId>().map_err(|_| {
                WireError::invalid(format!("cursor {c:?} is not a cursor dm.list returned"))
            })?),
        };
        let folder = user.folder(req.folder);
        let unread_only = req.unread_only && req.folder == DmFolder::Inbox;
        let range: Box<dyn Iterator<Item = &DmView>> = match before {
            Some(id) => Box::new(folder.range(..id).rev().map(|(_, d)| d)),
            None => Box::new(folder.values().rev()),
        };
        let mut messages: Vec<DmView> = range
            .filter(|d| !unread_only || !d.read)
            .take(limit + 1)
            .cloned()
            .collect();
        let mut bytes = 0;
        let mut fit = 0;
        for d in messages.iter().take(limit) {
            let cost = reddit_shared::page_cost(d.body.len());
            if fit > 0 && bytes + cost > reddit_shared::MAX_PAGE_BYTES {
                break;
            }
            bytes += cost;
            fit += 1;
        }
        let next_cursor = if messages.len() > fit {
            messages.truncate(fit);
            messages.last().map(|d| d.id.to_string())
        } else {
            None
        };
        Ok(DmPage {
            messages,
            unread: user.unread,
            next_cursor,
        })
    }

    /// `dm.read`.
    pub fn mark_read(
        &mut self,
        who: &Username,
        ids: Vec<DmId>,
    ) -> Result<MarkReadReply, WireError> {
        let user = self.caller(who)?;
        let unread_ids: Vec<DmId> = ids
            .into_iter()
            .filter(|id| user.inbox.get(id).is_some_and(|d| !d.read))
            .collect();
        let marked = u32::try_from(unread_ids.len()).unwrap_or(u32::MAX);
        if !unread_ids.is_empty() {
            self.emit(Event::DmsRead {
                user: who.key().to_owned(),
                ids: unread_ids,
            });
        }
        let unread = self.caller(who)?.unread;
        Ok(MarkReadReply { marked, unread })
    }
}
