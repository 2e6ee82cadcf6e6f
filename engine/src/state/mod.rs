//! The shard state machine: everything one shard owns, changed only by applying
//! [`Event`]s. A command (a method such as [`ShardState::vote`]) validates a request
//! against the state, turns it into events and applies them; [`ShardState::apply`] is
//! deterministic and does no I/O, so a log of events can rebuild the state.
//!
//! This module knows nothing about NATS. What a command needs done elsewhere comes
//! back as [`Effects`]: updates for other shards and push events.

pub mod audit;
pub mod deliveries;
pub mod ranking;
mod subs;
mod users;

use reddit_shared::error::WireError;
use reddit_shared::ids::{CommentId, DmId, PostId};
use reddit_shared::names::{SubredditName, Username};
use reddit_shared::protocol::dm::{DmFolder, DmView};
use reddit_shared::protocol::internal::SyncItem;
use reddit_shared::protocol::push::PushEvent;
use reddit_shared::protocol::vote::VoteTarget;
use reddit_shared::protocol::PostRef;
use reddit_shared::routing::shard_for;
use serde::{Deserialize, Serialize};
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use uuid::Uuid;

/// A hash map for what grows largest with the shard (its users; a
/// subreddit's members: each 100,000s at a million users): it moves its
/// entries to a grown table a few at each insert rather than all at once. An
/// all-at-once resize of a shard's users map at its 229,377th user took 147
/// ms, and every request of the shard waited (docs/performance.md, "Maps
/// that grow without a stall"). It costs more per insert in all, so the
/// maps that stay smaller (posts, comments, votes) keep the standard one.
/// Keyed by SipHash with random keys, as the standard map is: usernames are
/// chosen by clients.
pub type GrowMap<K, V> = griddle::HashMap<K, V, RandomState>;

/// The set counterpart of [`GrowMap`].
pub type GrowSet<T> = griddle::HashSet<T, RandomState>;

pub use deliveries::{Deliveries, LogPosition};
pub use subs::{finish_page, Post, Subreddit};
pub use users::User;

/// A change to the state. Events are facts: applying one never fails.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A user registered.
    UserRegistered {
        /// Name.
        username: Username,
        /// Ed25519 public key.
        public_key: [u8; 32],
        /// Unix ms.
        at: i64,
    },
    /// A subreddit was created.
    SubredditCreated {
        /// Name.
        name: SubredditName,
        /// Description.
        description: String,
        /// Creator.
        creator: Username,
        /// Unix ms.
        at: i64,
    },
    /// A user joined or left a subreddit owned here.
    MembershipChanged {
        /// Subreddit key.
        subreddit: String,
        /// The member.
        user: Username,
        /// Joined (true) or left.
        member: bool,
    },
    /// A post was created in a subreddit owned here.
    PostCreated {
        /// Subreddit key.
        subreddit: String,
        /// Id.
        id: PostId,
        /// Author.
        author: Username,
        /// Title.
        title: String,
        /// Body.
        body: String,
        /// Original, for a repost.
        repost_of: Option<PostRef>,
        /// The author's signature, if signed (absent in logs of older versions).
        #[serde(default)]
        signature: Option<String>,
        /// Unix ms.
        at: i64,
    },
    /// A comment was created in a subreddit owned here.
    CommentCreated {
        /// Subreddit key.
        subreddit: String,
        /// Post.
        post_id: PostId,
        /// Id.
        id: CommentId,
        /// Parent comment.
        parent_id: Option<CommentId>,
        /// Author.
        author: Username,
        /// Body.
        body: String,
        /// The author's signature, if signed (absent in logs of older versions).
        #[serde(default)]
        signature: Option<String>,
        /// Unix ms.
        at: i64,
    },
    /// A user's vote on an item in a subreddit owned here became `value`.
    VoteCast {
        /// Subreddit key.
        subreddit: String,
        /// Post or comment.
        target: VoteTarget,
        /// Item id.
        id: Uuid,
        /// Voter key.
        voter: String,
        /// -1, 0 or 1.
        value: i8,
    },
    /// The subreddit's shard reported a membership of a user owned here.
    MembershipSynced {
        /// User key.
        user: String,
        /// Subreddit.
        subreddit: SubredditName,
        /// Member or not.
        member: bool,
        /// Version at the subreddit's shard.
        version: u64,
    },
    /// The subreddit's shard reported the karma a user owned here earned there.
    KarmaSynced {
        /// User key.
        user: String,
        /// Subreddit.
        subreddit: SubredditName,
        /// Post karma from there.
        post_karma: i64,
        /// Comment karma from there.
        comment_karma: i64,
        /// Version at the subreddit's shard.
        version: u64,
    },
    /// A DM was stored in a folder of a user owned here (inbox of `to`, sent of `from`).
    DmStored {
        /// Which folder.
        folder: DmFolder,
        /// The message.
        dm: DmView,
    },
    /// Inbox messages were marked read.
    DmsRead {
        /// User key.
        user: String,
        /// The messages.
        ids: Vec<DmId>,
    },
    /// A write minted the id of a DM for an idempotency key (`origin` is a hash of
    /// operation, caller and key), so a retry reuses it whatever the key's form.
    DmIdMinted {
        /// Hash of the write's reply-cache key.
        origin: [u8; 16],
        /// The id.
        id: DmId,
    },
    /// Shard `shard` acknowledged DM `id` of `sender` (owned here), saying
    /// `at` of its log ([`Deliveries::acked`]).
    DmDeliveryAcked {
        /// The recipient's shard.
        shard: u32,
        /// The DM.
        id: DmId,
        /// The sender's key.
        sender: String,
        /// What that shard said of its log.
        at: LogPosition,
    },
}

/// Ids minted for idempotency keys, oldest first, at most [`MINTED_IDS`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(from = "Vec<([u8; 16], DmId)>", into = "Vec<([u8; 16], DmId)>")]
pub struct MintedIds {
    order: std::collections::VecDeque<[u8; 16]>,
    ids: HashMap<[u8; 16], DmId>,
}

/// Most minted ids a shard remembers (like the reply cache, oldest forgotten).
pub const MINTED_IDS: usize = 100_000;

impl MintedIds {
    fn insert(&mut self, origin: [u8; 16], id: DmId) {
        if self.ids.insert(origin, id).is_none() {
            self.order.push_back(origin);
        }
        while self.order.len() > MINTED_IDS {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }
}

impl From<Vec<([u8; 16], DmId)>> for MintedIds {
    fn from(v: Vec<([u8; 16], DmId)>) -> Self {
        let mut m = Self::default();
        for (origin, id) in v {
            m.insert(origin, id);
        }
        m
    }
}

impl From<MintedIds> for Vec<([u8; 16], DmId)> {
    fn from(m: MintedIds) -> Self {
        let MintedIds { order, ids } = m;
        order
            .into_iter()
            .filter_map(|o| ids.get(&o).map(|id| (o, *id)))
            .collect()
    }
}

/// Whom a push event is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushTarget {
    /// A user, by key.
    User(String),
    /// A subreddit's followers, by key.
    Subreddit(String),
}

/// What a command needs done outside the state.
#[derive(Debug, Default)]
pub struct Effects {
    /// Updates for other shards: (shard, item).
    pub sync: Vec<(u32, SyncItem)>,
    /// Push events to publish.
    pub push: Vec<(PushTarget, PushEvent)>,
}

/// Totals kept for stats.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Totals {
    /// Posts.
    pub posts: u64,
    /// Comments.
    pub comments: u64,
    /// Votes (nonzero).
    pub votes: u64,
    /// DMs in inboxes.
    pub dms: u64,
}

/// Everything one shard owns. It serializes whole (for snapshots); derived indexes
/// are rebuilt by [`ShardState::after_load`].
#[derive(Debug, Serialize, Deserialize)]
pub struct ShardState {
    shard: u32,
    shards: u32,
    users: GrowMap<String, User>,
    subs: HashMap<String, Subreddit>,
    totals: Totals,
    #[serde(default)]
    minted: MintedIds,
    #[serde(default)]
    deliveries: Deliveries,
    #[serde(skip)]
    record: bool,
    #[serde(skip)]
    recorded: Vec<Event>,
    /// Subreddits touched by posts and votes defer their post indexes
    /// ([`ShardState::defer_indexes`]).
    #[serde(skip)]
    defer_indexes: bool,
}

impl ShardState {
    /// An empty shard `shard` of `shards`.
    pub fn new(shard: u32, shards: u32) -> Self {
        Self {
            shard,
            shards: shards.max(1),
            users: GrowMap::default(),
            subs: HashMap::new(),
            totals: Totals::default(),
            minted: MintedIds::default(),
            deliveries: Deliveries::default(),
            record: false,
            recorded: Vec::new(),
            defer_indexes: false,
        }
    }

    /// With `on`, posts and votes applied from now on leave their subreddits'
    /// post indexes (hot, new, top, controversial) stale; with `off`, those
    /// subreddits' indexes are rebuilt. For a long replay, where one sort per
    /// subreddit at the end is cheaper than B-tree updates per post and vote.
    /// Nothing may read listings in between.
    pub fn defer_indexes(&mut self, on: bool) {
        self.defer_indexes = on;
        if !on {
            for sub in self.subs.values_mut() {
                if sub.indexes_deferred() {
                    sub.rebuild_indexes();
                }
            }
        }
    }

    /// A copy of everything a snapshot holds, for a follower that applies the
    /// same log and only ever snapshots: its post indexes are left empty and
    /// stay deferred ([`ShardState::defer_indexes`]), and it records nothing.
    pub fn copy_for_snapshots(&self) -> Self {
        Self {
            shard: self.shard,
            shards: self.shards,
            users: self.users.clone(),
            subs: self
                .subs
                .iter()
                .map(|(k, s)| (k.clone(), s.copy_unindexed()))
                .collect(),
            totals: self.totals,
            minted: self.minted.clone(),
            deliveries: self.deliveries.clone(),
            record: false,
            recorded: Vec::new(),
            defer_indexes: true,
        }
    }

    /// Keep every applied event for [`take_events`](Self::take_events) (for a log).
    pub fn set_recording(&mut self, on: bool) {
        self.record = on;
        if !on {
            self.recorded.clear();
        }
    }

    /// Events applied since the last call (only while recording).
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.recorded)
    }

    /// Whether events were applied since [`take_events`](Self::take_events)
    /// was last called (only while recording): whether the request being
    /// handled changed anything so far.
    pub fn has_new_events(&self) -> bool {
        !self.recorded.is_empty()
    }

    /// Rebuilds what snapshots leave out (the post indexes); call after deserializing.
    pub fn after_load(&mut self) {
        for sub in self.subs.values_mut() {
            sub.rebuild_indexes();
        }
    }

    /// What a snapshot stores, as separate pieces (the snapshot format spreads
    /// them over parts that load in parallel): users, subreddits, totals, the
    /// ids minted for idempotency keys, and the DMs delivered unconfirmed.
    pub(crate) fn snapshot_pieces(
        &self,
    ) -> (
        &GrowMap<String, User>,
        &HashMap<String, Subreddit>,
        Totals,
        &MintedIds,
        &Deliveries,
    ) {
        (
            &self.users,
            &self.subs,
            self.totals,
            &self.minted,
            &self.deliveries,
        )
    }

    /// A state from a snapshot's pieces; the subreddits must be ready to serve
    /// ([`Subreddit::after_load`]).
    pub(crate) fn from_snapshot_pieces(
        shard: u32,
        shards: u32,
        users: GrowMap<String, User>,
        subs: HashMap<String, Subreddit>,
        totals: Totals,
        minted: MintedIds,
        deliveries: Deliveries,
    ) -> Self {
        Self {
            users,
            subs,
            totals,
            minted,
            deliveries,
            ..Self::new(shard, shards)
        }
    }

    /// Queues every membership and karma total held here for the users' shards (or
    /// applies it, for users owned here). After a restart this repeats whatever the
    /// lost outbox still owed; receivers ignore versions they already hold.
    pub fn resync_all(&mut self, fx: &mut Effects) {
        let items = self.resync_items();
        self.resync(items, fx);
    }

    /// What [`ShardState::resync_all`] repeats: every membership and karma
    /// total held here, at the current versions (to apply in parts with
    /// [`ShardState::resync`]).
    pub fn resync_items(&self) -> Vec<SyncItem> {
        self.subs
            .values()
            .flat_map(Subreddit::all_sync_items)
            .collect()
    }

    /// The part of [`ShardState::resync_items`] about users of shard `dest`:
    /// what `dest` asks for when it starts (`internal.resync`).
    pub fn resync_items_for(&self, dest: u32) -> Vec<SyncItem> {
        self.subs
            .values()
            .flat_map(Subreddit::all_sync_items)
            .filter(|item| self.owner(item.user().key()) == dest)
            .collect()
    }

    /// Queues `items` for the users' shards, or applies those of users owned
    /// here (recording their events).
    pub fn resync(&mut self, items: impl IntoIterator<Item = SyncItem>, fx: &mut Effects) {
        for item in items {
            self.sync(item, fx);
        }
    }

    /// This shard's number.
    pub fn shard(&self) -> u32 {
        self.shard
    }

    /// Number of shards.
    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// Accounts owned.
    pub fn user_count(&self) -> u64 {
        self.users.len() as u64
    }

    /// Subreddits owned.
    pub fn subreddit_count(&self) -> u64 {
        self.subs.len() as u64
    }

    /// Post, comment, vote and DM totals.
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// The shard that owns `key`.
    pub fn owner(&self, key: &str) -> u32 {
        shard_for(key, self.shards)
    }

    /// `Ok` if this shard owns `key`, else `400 wrong_shard`.
    pub fn check_owner(&self, what: &str, key: &str) -> Result<(), WireError> {
        let owner = self.owner(key);
        if owner == self.shard {
            Ok(())
        } else {
            Err(WireError::new(
                reddit_shared::error::ErrorCode::WrongShard,
                format!(
                    "{what} {key:?} belongs to shard {owner} of {}, not shard {}",
                    self.shards, self.shard
                ),
            ))
        }
    }

    /// Refuses a command by a user this shard owns but does not hold (a token can
    /// outlive an account that a restarted in-memory shard lost): acting for them
    /// would record facts their own shard cannot mirror. Users of other shards are
    /// vouched for by their token.
    pub fn check_actor(&self, who: &Username) -> Result<(), WireError> {
        if self.owner(who.key()) == self.shard && !self.users.contains_key(who.key()) {
            return Err(WireError::unauthenticated(format!(
                "user {who} does not exist; register again"
            )));
        }
        Ok(())
    }

    fn emit(&mut self, event: Event) {
        if self.record {
            self.apply(&event);
            self.recorded.push(event);
        } else {
            self.apply_owned(event);
        }
    }

    /// Applies one event by reference: a vote (the most frequent write) as is,
    /// any other from a copy (see [`apply_owned`](Self::apply_owned)).
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::VoteCast {
                subreddit,
                target,
                id,
                voter,
                value,
            } => self.apply_vote(subreddit, *target, *id, voter, *value),
            _ => self.apply_owned(event.clone()),
        }
    }

    fn apply_vote(
        &mut self,
        subreddit: &str,
        target: VoteTarget,
        id: Uuid,
        voter: &str,
        value: i8,
    ) {
        if let Some(sub) = self.subs.get_mut(subreddit) {
            if self.defer_indexes && target == VoteTarget::Post {
                sub.defer_indexes();
            }
            if let Some(old) = sub.set_vote(target, id, voter, value) {
                let was = u64::from(old != 0);
                let now = u64::from(value != 0);
                self.totals.votes = self.totals.votes + now - was;
            }
        }
    }

    /// Applies one event, moving its names and texts into the state (a replay
    /// owns its decoded events: nothing is copied). Deterministic, no I/O; an
    /// event naming something that does not exist changes nothing.
    pub fn apply_owned(&mut self, event: Event) {
        match event {
            Event::UserRegistered {
                username,
                public_key,
                at,
            } => {
                if !self.users.contains_key(username.key()) {
                    self.users.insert(
                        username.key().to_owned(),
                        User::new(username, public_key, at),
                    );
                }
            }
            Event::SubredditCreated {
                name,
                description,
                creator,
                at,
            } => {
                if !self.subs.contains_key(name.key()) {
                    self.subs.insert(
                        name.key().to_owned(),
                        Subreddit::new(name, description, creator, at),
                    );
                }
            }
            Event::MembershipChanged {
                subreddit,
                user,
                member,
            } => {
                if let Some(sub) = self.subs.get_mut(&subreddit) {
                    sub.set_member(&user, member);
                }
            }
            Event::PostCreated {
                subreddit,
                id,
                author,
                title,
                body,
                repost_of,
                signature,
                at,
            } => {
                if let Some(sub) = self.subs.get_mut(&subreddit) {
                    if self.defer_indexes {
                        sub.defer_indexes();
                    }
                    if sub.add_post(id, author, title, body, repost_of, signature, at) {
                        self.totals.posts += 1;
                    }
                }
            }
            Event::CommentCreated {
                subreddit,
                post_id,
                id,
                parent_id,
                author,
                body,
                signature,
                at,
            } => {
                if let Some(sub) = self.subs.get_mut(&subreddit) {
                    if sub.add_comment(post_id, id, parent_id, author, body, signature, at) {
                        self.totals.comments += 1;
                    }
                }
            }
            Event::VoteCast {
                subreddit,
                target,
                id,
                voter,
                value,
            } => {
                self.apply_vote(&subreddit, target, id, &voter, value);
            }
            Event::MembershipSynced {
                user,
                subreddit,
                member,
                version,
            } => {
                if let Some(u) = self.users.get_mut(&user) {
                    u.sync_membership(&subreddit, member, version);
                }
            }
            Event::KarmaSynced {
                user,
                subreddit,
                post_karma,
                comment_karma,
                version,
            } => {
                if let Some(u) = self.users.get_mut(&user) {
                    u.sync_karma(&subreddit, post_karma, comment_karma, version);
                }
            }
            Event::DmStored { folder, dm } => {
                let owner = match folder {
                    DmFolder::Inbox => &dm.to,
                    DmFolder::Sent => &dm.from,
                };
                if let Some(u) = self.users.get_mut(&owner.to_ascii_lowercase()) {
                    if u.store_dm(folder, dm) && folder == DmFolder::Inbox {
                        self.totals.dms += 1;
                    }
                }
            }
            Event::DmsRead { user, ids } => {
                if let Some(u) = self.users.get_mut(&user) {
                    u.mark_read(&ids);
                }
            }
            Event::DmIdMinted { origin, id } => self.minted.insert(origin, id),
            Event::DmDeliveryAcked {
                shard,
                id,
                sender,
                at,
            } => self.deliveries.acked(shard, id, &sender, at),
        }
    }

    /// The DM id for the write with reply-cache key hash `origin`: the one minted
    /// before for it, else `fresh` (recorded, so every retry of the write gets it).
    pub fn mint_dm_id(&mut self, origin: [u8; 16], fresh: DmId) -> DmId {
        if let Some(id) = self.minted.ids.get(&origin) {
            return *id;
        }
        self.emit(Event::DmIdMinted { origin, id: fresh });
        fresh
    }

    /// Routes a sync item: applied here if this shard owns the user, else queued for
    /// the owner in `fx`.
    fn sync(&mut self, item: SyncItem, fx: &mut Effects) {
        let owner = self.owner(item.user().key());
        if owner == self.shard {
            self.apply_sync(item);
        } else {
            fx.sync.push((owner, item));
        }
    }

    /// Applies an update from another shard (`internal.sync`). Returns whether it
    /// changed anything; `wrong_shard` if the user is not owned here.
    pub fn apply_sync_checked(&mut self, item: SyncItem) -> Result<bool, WireError> {
        self.check_owner("user", item.user().key())?;
        Ok(self.apply_sync(item))
    }

    /// Applies an update if its user exists here and it is newer than what is held.
    fn apply_sync(&mut self, item: SyncItem) -> bool {
        let Some(u) = self.users.get(item.user().key()) else {
            return false;
        };
        let (sub, version) = (item.subreddit().key(), item.version());
        let newer = if item.is_karma() {
            u.karma_is_newer(sub, version)
        } else {
            u.membership_is_newer(sub, version)
        };
        if !newer {
            return false;
        }
        let event = match item {
            SyncItem::Membership {
                user,
                subreddit,
                member,
                version,
            } => Event::MembershipSynced {
                user: user.key().to_owned(),
                subreddit,
                member,
                version,
            },
            SyncItem::Karma {
                user,
                subreddit,
                post_karma,
                comment_karma,
                version,
            } => Event::KarmaSynced {
                user: user.key().to_owned(),
                subreddit,
                post_karma,
                comment_karma,
                version,
            },
        };
        self.emit(event);
        true
    }
}

/// One user's vote tally on an item.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Tally {
    /// Upvotes (kept in step with `votes`).
    pub ups: u32,
    /// Downvotes (kept in step with `votes`).
    pub downs: u32,
    /// Each voter's current nonzero vote, by user key.
    pub votes: HashMap<String, i8>,
}

impl Tally {
    /// Upvotes minus downvotes.
    pub fn score(&self) -> i64 {
        i64::from(self.ups) - i64::from(self.downs)
    }

    /// Records `voter`'s vote as `value`; returns the old vote.
    fn set(&mut self, voter: &str, value: i8) -> i8 {
        let old = if value == 0 {
            self.votes.remove(voter).unwrap_or(0)
        } else if let Some(v) = self.votes.get_mut(voter) {
            std::mem::replace(v, value)
        } else {
            self.votes.insert(voter.to_owned(), value);
            0
        };
        match old {
            1 => self.ups = self.ups.saturating_sub(1),
            -1 => self.downs = self.downs.saturating_sub(1),
            _ => {}
        }
        match value {
            1 => self.ups += 1,
            -1 => self.downs += 1,
            _ => {}
        }
        old
    }

    /// The vote of `voter` (0 if none).
    pub fn vote_of(&self, voter: &str) -> i8 {
        self.votes.get(voter).copied().unwrap_or(0)
    }
}

#[cfg(test)]
pub(crate) mod tests;
