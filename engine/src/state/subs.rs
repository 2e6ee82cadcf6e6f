//! What a shard owns per subreddit: members, posts with their indexes, comments,
//! votes and each author's score totals; and the commands on them.

use super::ranking::{decode_cursor, encode_cursor, post_rank, view_key, wilson, Rank, SortKey};
use super::{Effects, Event, GrowSet, PushTarget, ShardState, Tally};
use reddit_shared::codec::encode;
use reddit_shared::error::WireError;
use reddit_shared::ids::{CommentId, PostId};
use reddit_shared::names::{SubredditName, Username};
use reddit_shared::protocol::comment::{
    CommentSort, CommentTree, CommentTreeRequest, CommentView, CreateCommentRequest,
    DEFAULT_TREE_COMMENTS,
};
use reddit_shared::protocol::internal::{FeedCandidate, SyncItem};
use reddit_shared::protocol::post::{PostPage, PostSort, PostView};
use reddit_shared::protocol::push::PushEvent;
use reddit_shared::protocol::subreddit::{MembershipReply, SubredditView};
use reddit_shared::protocol::vote::{VoteReply, VoteTarget};
use reddit_shared::protocol::{PostRef, DEFAULT_PAGE};
use reddit_shared::{page_cost, MAX_PAGE_BYTES};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use uuid::Uuid;

/// Levels of nesting `comment.tree` returns in one reply (deeper threads are read by
/// asking for the subtree under a comment).
pub const MAX_TREE_DEPTH: u32 = 100;

/// A post and its tally.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Post {
    id: PostId,
    author: Username,
    title: String,
    body: String,
    repost_of: Option<PostRef>,
    created_at: i64,
    tally: Tally,
    comments: u32,
    children: Vec<CommentId>,
    /// The author's signature (hex), if the post was signed.
    #[serde(default)]
    signature: Option<String>,
    /// Its [`PostView`], encoded when a feed first needs it and forgotten
    /// when a vote or a comment changes it (a feed page of popular posts is
    /// otherwise encoded anew for every reader).
    #[serde(skip)]
    encoded: std::sync::OnceLock<bytes::Bytes>,
}

/// A comment and its tally.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Comment {
    id: CommentId,
    post_id: PostId,
    parent_id: Option<CommentId>,
    author: Username,
    body: String,
    created_at: i64,
    depth: u32,
    tally: Tally,
    children: Vec<CommentId>,
    /// The author's signature (hex), if the comment was signed.
    #[serde(default)]
    signature: Option<String>,
}

/// Score totals of one author's items in one subreddit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct AuthorScore {
    pub post: i64,
    pub comment: i64,
}

/// One subreddit. Serialized whole into snapshots; the post indexes are derived
/// and rebuilt on load ([`Subreddit::rebuild_indexes`]).
#[derive(Debug, Serialize, Deserialize)]
pub struct Subreddit {
    name: SubredditName,
    description: String,
    creator: Username,
    created_at: i64,
    members: GrowSet<String>,
    /// Users who left and have not rejoined (so a resync can repeat the leave).
    #[serde(default)]
    left: HashMap<String, Username>,
    member_count: u64,
    membership_seq: u64,
    posts: HashMap<PostId, Post>,
    comments: HashMap<CommentId, Comment>,
    #[serde(skip)]
    by_hot: BTreeSet<SortKey>,
    #[serde(skip)]
    by_new: BTreeSet<SortKey>,
    #[serde(skip)]
    by_top: BTreeSet<SortKey>,
    #[serde(skip)]
    by_controversial: BTreeSet<SortKey>,
    authors: HashMap<String, (Username, AuthorScore)>,
    vote_seq: u64,
    /// The post indexes are not kept up to date (a long replay defers them)
    /// and must be rebuilt before they are read.
    #[serde(skip)]
    unindexed: bool,
}

const SORTS: [PostSort; 4] = [
    PostSort::Hot,
    PostSort::New,
    PostSort::Top,
    PostSort::Controversial,
];

impl Post {
    fn key(&self, sort: PostSort) -> SortKey {
        (
            post_rank(
                sort,
                self.tally.score(),
                self.tally.ups,
                self.tally.downs,
                self.created_at,
            ),
            self.id,
        )
    }

    /// The encoded view, from the cache if nothing changed the post since.
    /// A clone shares the cached bytes (a feed page's candidates used to copy
    /// them: 8% of a shard's time in the mixed workload).
    fn encoded_view(&self, sub: &SubredditName) -> Result<bytes::Bytes, WireError> {
        if let Some(bytes) = self.encoded.get() {
            return Ok(bytes.clone());
        }
        let bytes = bytes::Bytes::from(encode(&self.view(sub))?);
        // Only the actor reads and writes the state: nobody filled it meanwhile.
        let _ = self.encoded.set(bytes.clone());
        Ok(bytes)
    }

    /// Marks the post changed: its cached view is stale.
    fn changed(&mut self) -> &mut Self {
        self.encoded.take();
        self
    }

    fn view(&self, sub: &SubredditName) -> PostView {
        PostView {
            subreddit: sub.clone(),
            id: self.id,
            author: self.author.to_string(),
            title: self.title.clone(),
            body: self.body.clone(),
            repost_of: self.repost_of.clone(),
            score: self.tally.score(),
            ups: self.tally.ups,
            downs: self.tally.downs,
            comments: self.comments,
            created_at: self.created_at,
            signature: self.signature.clone(),
        }
    }
}

impl Comment {
    fn view(&self, sub: &SubredditName) -> CommentView {
        CommentView {
            subreddit: sub.clone(),
            post_id: self.post_id,
            id: self.id,
            parent_id: self.parent_id,
            author: self.author.to_string(),
            body: self.body.clone(),
            score: self.tally.score(),
            ups: self.tally.ups,
            downs: self.tally.downs,
            depth: self.depth,
            created_at: self.created_at,
            replies: Vec::new(),
            signature: self.signature.clone(),
        }
    }
}

impl Subreddit {
    pub(super) fn new(
        name: SubredditName,
        description: String,
        creator: Username,
        created_at: i64,
    ) -> Self {
        Self {
            name,
            description,
            creator,
            created_at,
            members: GrowSet::default(),
            left: HashMap::new(),
            member_count: 0,
            membership_seq: 0,
            posts: HashMap::new(),
            comments: HashMap::new(),
            by_hot: BTreeSet::new(),
            by_new: BTreeSet::new(),
            by_top: BTreeSet::new(),
            by_controversial: BTreeSet::new(),
            authors: HashMap::new(),
            vote_seq: 0,
            unindexed: false,
        }
    }

    /// The public view.
    pub fn view(&self) -> SubredditView {
        SubredditView {
            name: self.name.clone(),
            description: self.description.clone(),
            creator: self.creator.to_string(),
            members: self.member_count,
            posts: self.posts.len() as u64,
            created_at: self.created_at,
        }
    }

    fn index_mut(&mut self, sort: PostSort) -> &mut BTreeSet<SortKey> {
        match sort {
            PostSort::Hot => &mut self.by_hot,
            PostSort::New => &mut self.by_new,
            PostSort::Top => &mut self.by_top,
            PostSort::Controversial => &mut self.by_controversial,
        }
    }

    fn index(&self, sort: PostSort) -> &BTreeSet<SortKey> {
        match sort {
            PostSort::Hot => &self.by_hot,
            PostSort::New => &self.by_new,
            PostSort::Top => &self.by_top,
            PostSort::Controversial => &self.by_controversial,
        }
    }

    pub(super) fn set_member(&mut self, user: &Username, member: bool) {
        let changed = if member {
            self.members.insert(user.key().to_owned())
        } else {
            self.members.remove(user.key())
        };
        if changed {
            if member {
                self.member_count += 1;
                self.left.remove(user.key());
            } else {
                self.member_count = self.member_count.saturating_sub(1);
                self.left.insert(user.key().to_owned(), user.clone());
            }
        }
        self.membership_seq += 1;
    }

    /// Rebuilds the post indexes from the posts (after loading a snapshot, or
    /// after a replay that deferred them).
    pub(super) fn rebuild_indexes(&mut self) {
        for sort in SORTS {
            let keys: BTreeSet<SortKey> = self.posts.values().map(|p| p.key(sort)).collect();
            *self.index_mut(sort) = keys;
        }
        self.unindexed = false;
    }

    /// Makes a subreddit decoded from a snapshot ready to serve: rebuilds the
    /// post indexes a snapshot leaves out.
    pub(crate) fn after_load(&mut self) {
        self.rebuild_indexes();
    }

    /// A rough measure of this subreddit's share of a snapshot (posts,
    /// comments, members), to spread subreddits evenly over a snapshot's parts.
    pub(crate) fn snapshot_weight(&self) -> usize {
        1 + 4 * self.posts.len() + 2 * self.comments.len() + self.members.len() / 8
    }

    /// Stops keeping the post indexes up to date until
    /// [`Subreddit::rebuild_indexes`]: one sort at the end costs less than
    /// four B-tree updates per post and per vote along a long replay.
    pub(super) fn defer_indexes(&mut self) {
        self.unindexed = true;
    }

    /// A copy of everything a snapshot holds, with the post indexes left
    /// empty and deferred (for a follower that only ever snapshots).
    pub(super) fn copy_unindexed(&self) -> Self {
        Self {
            name: self.name.clone(),
            description: self.description.clone(),
            creator: self.creator.clone(),
            created_at: self.created_at,
            members: self.members.clone(),
            left: self.left.clone(),
            member_count: self.member_count,
            membership_seq: self.membership_seq,
            posts: self.posts.clone(),
            comments: self.comments.clone(),
            by_hot: BTreeSet::new(),
            by_new: BTreeSet::new(),
            by_top: BTreeSet::new(),
            by_controversial: BTreeSet::new(),
            authors: self.authors.clone(),
            vote_seq: self.vote_seq,
            unindexed: true,
        }
    }

    /// Whether the indexes wait for a rebuild.
    pub(super) fn indexes_deferred(&self) -> bool {
        self.unindexed
    }

    /// Every membership and karma total this subreddit holds, as sync items at the
    /// current versions: what the users' shards must have.
    pub(super) fn all_sync_items(&self) -> impl Iterator<Item = SyncItem> + '_ {
        let members = self.members.iter().filter_map(|key| {
            Some(SyncItem::Membership {
                user: Username::parse(key).ok()?,
                subreddit: self.name.clone(),
                member: true,
                version: self.membership_seq,
            })
        });
        let left = self.left.values().map(|user| SyncItem::Membership {
            user: user.clone(),
            subreddit: self.name.clone(),
            member: false,
            version: self.membership_seq,
        });
        let karma = self.authors.keys().filter_map(|a| self.karma_item(a));
        members.chain(left).chain(karma)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn add_post(
        &mut self,
        id: PostId,
        author: Username,
        title: String,
        body: String,
        repost_of: Option<PostRef>,
        signature: Option<String>,
        at: i64,
    ) -> bool {
        if self.posts.contains_key(&id) {
            return false;
        }
        self.note_author(&author);
        let post = Post {
            id,
            author,
            title,
            body,
            repost_of,
            created_at: at,
            tally: Tally::default(),
            comments: 0,
            children: Vec::new(),
            signature,
            encoded: std::sync::OnceLock::new(),
        };
        if !self.unindexed {
            for sort in SORTS {
                let key = post.key(sort);
                self.index_mut(sort).insert(key);
            }
        }
        self.posts.insert(id, post);
        true
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn add_comment(
        &mut self,
        post_id: PostId,
        id: CommentId,
        parent_id: Option<CommentId>,
        author: Username,
        body: String,
        signature: Option<String>,
        at: i64,
    ) -> bool {
        if self.comments.contains_key(&id) || !self.posts.contains_key(&post_id) {
            return false;
        }
        let depth = match parent_id {
            None => 0,
            Some(pid) => match self.comments.get_mut(&pid) {
                Some(parent) if parent.post_id == post_id => {
                    parent.children.push(id);
                    parent.depth + 1
                }
                _ => return false,
            },
        };
        if let Some(post) = self.posts.get_mut(&post_id) {
            let post = post.changed();
            post.comments += 1;
            if parent_id.is_none() {
                post.children.push(id);
            }
        }
        self.note_author(&author);
        self.comments.insert(
            id,
            Comment {
                id,
                post_id,
                parent_id,
                author,
                body,
                created_at: at,
                depth,
                tally: Tally::default(),
                children: Vec::new(),
                signature,
            },
        );
        true
    }

    /// Remembers `author` as someone with karma here (no allocation when
    /// known: this runs for every post and comment, also in a replay).
    fn note_author(&mut self, author: &Username) {
        if !self.authors.contains_key(author.key()) {
            self.authors.insert(
                author.key().to_owned(),
                (author.clone(), AuthorScore::default()),
            );
        }
    }

    /// Sets a vote; returns the old vote, or None if the item does not exist.
    /// (The hottest write: no allocation beyond a first vote's voter name.)
    pub(super) fn set_vote(
        &mut self,
        target: VoteTarget,
        id: Uuid,
        voter: &str,
        value: i8,
    ) -> Option<i8> {
        let old = match target {
            VoteTarget::Post => {
                let id = PostId(id);
                let post = self.posts.get_mut(&id)?.changed();
                if self.unindexed {
                    let old = post.tally.set(voter, value);
                    if let Some((_, score)) = self.authors.get_mut(post.author.key()) {
                        score.post += i64::from(value) - i64::from(old);
                    }
                    self.vote_seq += 1;
                    return Some(old);
                }
                let before = SORTS.map(|s| post.key(s));
                let old = post.tally.set(voter, value);
                let after = SORTS.map(|s| post.key(s));
                if let Some((_, score)) = self.authors.get_mut(post.author.key()) {
                    score.post += i64::from(value) - i64::from(old);
                }
                for ((sort, b), a) in SORTS.iter().zip(before).zip(after) {
                    if b != a {
                        let index = self.index_mut(*sort);
                        index.remove(&b);
                        index.insert(a);
                    }
                }
                old
            }
            VoteTarget::Comment => {
                let comment = self.comments.get_mut(&CommentId(id))?;
                let old = comment.tally.set(voter, value);
                if let Some((_, score)) = self.authors.get_mut(comment.author.key()) {
                    score.comment += i64::from(value) - i64::from(old);
                }
                old
            }
        };
        self.vote_seq += 1;
        Some(old)
    }

    fn karma_item(&self, author_key: &str) -> Option<SyncItem> {
        let (author, score) = self.authors.get(author_key)?;
        Some(SyncItem::Karma {
            user: author.clone(),
            subreddit: self.name.clone(),
            post_karma: score.post,
            comment_karma: score.comment,
            version: self.vote_seq,
        })
    }

    /// Up to `limit` posts strictly after `after` in `sort` order.
    fn page(&self, sort: PostSort, after: Option<&SortKey>, limit: usize) -> Vec<&Post> {
        let index = self.index(sort);
        let keys: Box<dyn Iterator<Item = &SortKey>> = match after {
            Some(k) => Box::new(index.range(..*k).rev()),
            None => Box::new(index.iter().rev()),
        };
        keys.filter_map(|(_, id)| self.posts.get(id))
            .take(limit)
            .collect()
    }

    fn comment_key(&self, c: &Comment, sort: CommentSort) -> (Rank, CommentId) {
        let rank = match sort {
            CommentSort::Best => wilson(c.tally.ups, c.tally.downs),
            CommentSort::Top => c.tally.score() as f64,
            CommentSort::New => c.created_at as f64,
        };
        (Rank(rank), c.id)
    }

    fn sorted_children<'a>(&'a self, ids: &[CommentId], sort: CommentSort) -> Vec<&'a Comment> {
        let mut children: Vec<&Comment> =
            ids.iter().filter_map(|id| self.comments.get(id)).collect();
        children.sort_by_cached_key(|c| std::cmp::Reverse(self.comment_key(c, sort)));
        children
    }

    fn build_tree(
        &self,
        ids: &[CommentId],
        sort: CommentSort,
        depth_left: u32,
        budget: &mut u32,
        bytes: &mut usize,
        truncated: &mut bool,
    ) -> Vec<CommentView> {
        let mut out = Vec::new();
        for c in self.sorted_children(ids, sort) {
            let cost = page_cost(c.body.len());
            if *budget == 0 || (*bytes > 0 && *bytes + cost > MAX_PAGE_BYTES) {
                *truncated = true;
                break;
            }
            *budget -= 1;
            *bytes += cost;
            let mut view = c.view(&self.name);
            if !c.children.is_empty() {
                if depth_left == 0 {
                    *truncated = true;
                } else {
                    view.replies = self.build_tree(
                        &c.children,
                        sort,
                        depth_left - 1,
                        budget,
                        bytes,
                        truncated,
                    );
                }
            }
            out.push(view);
        }
        out
    }

    /// (user key) members, for the audit.
    pub(super) fn member_keys(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(String::as_str)
    }

    /// Name.
    pub fn name(&self) -> &SubredditName {
        &self.name
    }

    /// Member set size.
    pub(super) fn member_set_len(&self) -> u64 {
        self.members.len() as u64
    }

    /// Author score totals, for the audit.
    pub(super) fn author_scores(&self) -> impl Iterator<Item = (&str, AuthorScore)> {
        self.authors.iter().map(|(k, (_, s))| (k.as_str(), *s))
    }

    /// Violations of the local invariants: tallies equal votes, author totals equal
    /// item scores, comment counts equal comments.
    pub(super) fn local_violations(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        // `what` names the item only for a violation.
        let check_tally =
            |what: &dyn Fn() -> String, t: &Tally, out: &mut Vec<(String, String)>| {
                let (mut ups, mut downs) = (0u64, 0u64);
                for v in t.votes.values() {
                    match *v {
                        1 => ups += 1,
                        -1 => downs += 1,
                        _ => {}
                    }
                }
                if ups != u64::from(t.ups) || downs != u64::from(t.downs) {
                    out.push((
                        "score".to_owned(),
                        format!(
                            "{}: tally says {}↑ {}↓ but the votes are {ups}↑ {downs}↓",
                            what(),
                            t.ups,
                            t.downs
                        ),
                    ));
                }
            };
        // Made with room for all they will hold: rehashing as they grew
        // was most of a large subreddit's time here.
        let mut sums: HashMap<&str, AuthorScore> = HashMap::with_capacity(self.authors.len());
        let mut comment_counts: HashMap<PostId, u32> = HashMap::with_capacity(self.posts.len());
        for post in self.posts.values() {
            check_tally(
                &|| format!("post {} in r/{}", post.id, self.name),
                &post.tally,
                &mut out,
            );
            sums.entry(post.author.key()).or_default().post += post.tally.score();
        }
        for c in self.comments.values() {
            check_tally(
                &|| format!("comment {} in r/{}", c.id, self.name),
                &c.tally,
                &mut out,
            );
            sums.entry(c.author.key()).or_default().comment += c.tally.score();
            *comment_counts.entry(c.post_id).or_default() += 1;
        }
        for post in self.posts.values() {
            let actual = comment_counts.get(&post.id).copied().unwrap_or(0);
            if actual != post.comments {
                out.push((
                    "comment_count".to_owned(),
                    format!(
                        "post {} in r/{} counts {} comments but has {actual}",
                        post.id, self.name, post.comments
                    ),
                ));
            }
        }
        for (key, (_, kept)) in &self.authors {
            let actual = sums.get(key.as_str()).copied().unwrap_or_default();
            if actual != *kept {
                out.push((
                    "karma".to_owned(),
                    format!(
                        "r/{} keeps {key}'s scores as {}/{} (post/comment) but the items sum to {}/{}",
                        self.name, kept.post, kept.comment, actual.post, actual.comment
                    ),
                ));
            }
        }
        if self.member_count != self.members.len() as u64 {
            out.push((
                "member_count".to_owned(),
                format!(
                    "r/{} counts {} members but its member set has {}",
                    self.name,
                    self.member_count,
                    self.members.len()
                ),
            ));
        }
        out
    }

    /// Votes held on posts and comments.
    pub(super) fn vote_count(&self) -> u64 {
        let p: usize = self.posts.values().map(|p| p.tally.votes.len()).sum();
        let c: usize = self.comments.values().map(|c| c.tally.votes.len()).sum();
        (p + c) as u64
    }
}

fn parse_cursor(cursor: Option<&String>) -> Result<Option<SortKey>, WireError> {
    match cursor {
        None => Ok(None),
        Some(c) => decode_cursor(c).map(Some).ok_or_else(|| {
            WireError::invalid(format!("cursor {c:?} is not a cursor this engine returned"))
        }),
    }
}

impl ShardState {
    fn sub(&self, name: &SubredditName) -> Result<&Subreddit, WireError> {
        self.check_owner("subreddit", name.key())?;
        self.subs
            .get(name.key())
            .ok_or_else(|| WireError::not_found(format!("there is no subreddit r/{name}")))
    }

    /// `sub.create`.
    pub fn create_subreddit(
        &mut self,
        creator: &Username,
        name: &SubredditName,
        description: String,
        now: i64,
    ) -> Result<SubredditView, WireError> {
        self.check_owner("subreddit", name.key())?;
        self.check_actor(creator)?;
        if let Some(existing) = self.subs.get(name.key()) {
            return Err(WireError::conflict(format!(
                "r/{} already exists",
                existing.name
            )));
        }
        self.emit(Event::SubredditCreated {
            name: name.clone(),
            description,
            creator: creator.clone(),
            at: now,
        });
        self.sub(name).map(Subreddit::view)
    }

    /// `sub.get`.
    pub fn get_subreddit(&self, name: &SubredditName) -> Result<SubredditView, WireError> {
        self.sub(name).map(Subreddit::view)
    }

    /// `sub.list`: this shard's subreddits, most members first.
    pub fn list_subreddits(&self, limit: usize) -> Vec<SubredditView> {
        let mut subs: Vec<&Subreddit> = self.subs.values().collect();
        subs.sort_by(|a, b| {
            b.member_count
                .cmp(&a.member_count)
                .then_with(|| a.name.key().cmp(b.name.key()))
        });
        subs.into_iter().take(limit).map(Subreddit::view).collect()
    }

    /// `sub.join` / `sub.leave`. Idempotent: a repeated request changes nothing but
    /// sends the membership to the user's shard again, which repairs a lost update.
    /// The returned item (if any) must reach the user's shard before replying.
    pub fn set_membership(
        &mut self,
        user: &Username,
        name: &SubredditName,
        member: bool,
        fx: &mut Effects,
    ) -> Result<MembershipReply, WireError> {
        self.check_actor(user)?;
        let sub = self.sub(name)?;
        let changed = sub.members.contains(user.key()) != member;
        if changed {
            self.emit(Event::MembershipChanged {
                subreddit: name.key().to_owned(),
                user: user.clone(),
                member,
            });
        }
        let sub = self.sub(name)?;
        let reply = MembershipReply {
            subreddit: sub.name.clone(),
            member,
            changed,
            members: sub.member_count,
        };
        let item = SyncItem::Membership {
            user: user.clone(),
            subreddit: sub.name.clone(),
            member,
            version: sub.membership_seq,
        };
        self.sync(item, fx);
        Ok(reply)
    }

    /// Whether a post exists (for reposts of posts owned here).
    pub fn post_exists(&self, post: &PostRef) -> Result<(), WireError> {
        let sub = self.sub(&post.subreddit)?;
        if sub.posts.contains_key(&post.id) {
            Ok(())
        } else {
            Err(WireError::not_found(format!(
                "there is no post {} in r/{}",
                post.id, post.subreddit
            )))
        }
    }

    /// `post.create`; a repost's original must have been checked already.
    #[allow(clippy::too_many_arguments)]
    pub fn create_post(
        &mut self,
        author: &Username,
        name: &SubredditName,
        title: String,
        body: String,
        repost_of: Option<PostRef>,
        signature: Option<String>,
        now: i64,
        fx: &mut Effects,
    ) -> Result<PostView, WireError> {
        self.check_actor(author)?;
        let sub = self.sub(name)?;
        let key = sub.name.key().to_owned();
        let id = PostId::new();
        self.emit(Event::PostCreated {
            subreddit: key.clone(),
            id,
            author: author.clone(),
            title,
            body,
            repost_of,
            signature,
            at: now,
        });
        let view = self.get_post(name, id)?;
        fx.push.push((
            PushTarget::Subreddit(key),
            PushEvent::Post { post: view.clone() },
        ));
        Ok(view)
    }

    /// `post.get`.
    pub fn get_post(&self, name: &SubredditName, id: PostId) -> Result<PostView, WireError> {
        let sub = self.sub(name)?;
        sub.posts
            .get(&id)
            .map(|p| p.view(&sub.name))
            .ok_or_else(|| WireError::not_found(format!("there is no post {id} in r/{name}")))
    }

    /// `post.list`.
    pub fn list_posts(
        &self,
        name: &SubredditName,
        sort: PostSort,
        limit: Option<u32>,
        cursor: Option<&String>,
    ) -> Result<PostPage, WireError> {
        let sub = self.sub(name)?;
        let after = parse_cursor(cursor)?;
        let limit = limit.unwrap_or(DEFAULT_PAGE) as usize;
        let mut posts: Vec<PostView> = sub
            .page(sort, after.as_ref(), limit + 1)
            .into_iter()
            .map(|p| p.view(&sub.name))
            .collect();
        Ok(finish_page(&mut posts, sort, limit))
    }

    /// `internal.feed.candidates`: up to `limit` posts from these subreddits (those
    /// owned here and existing) strictly after `cursor` and strictly before
    /// `above` (both cursors), best first, each with its sort key and its encoded
    /// view; fewer, and `true`, if their views reach [`MAX_PAGE_BYTES`].
    pub fn feed_candidates(
        &self,
        names: &[SubredditName],
        sort: PostSort,
        limit: usize,
        cursor: Option<&String>,
        above: Option<&String>,
    ) -> Result<(Vec<FeedCandidate>, bool), WireError> {
        use std::ops::Bound::{Excluded, Unbounded};
        let after = parse_cursor(cursor)?;
        let above = parse_cursor(above)?;
        // Best first means the largest keys first: the range is (above, after).
        if let (Some(low), Some(high)) = (&above, &after) {
            if low >= high {
                // Nothing lies between (and BTreeSet::range would panic).
                return Ok((Vec::new(), false));
            }
        }
        let bounds = (
            above.map_or(Unbounded, Excluded),
            after.map_or(Unbounded, Excluded),
        );
        // Pick the winners by key first; build and encode views only for them.
        let mut keys: Vec<(SortKey, &Subreddit)> = Vec::new();
        for name in names {
            let Ok(sub) = self.sub(name) else { continue };
            let range = sub.index(sort).range(bounds).rev();
            keys.extend(range.take(limit).map(|k| (*k, sub)));
        }
        keys.sort_unstable_by_key(|(key, _)| std::cmp::Reverse(*key));
        keys.truncate(limit);
        let mut out = Vec::with_capacity(keys.len());
        let mut bytes = 0;
        for ((rank, id), sub) in keys {
            let Some(post) = sub.posts.get(&id) else {
                continue;
            };
            let view = post.encoded_view(&sub.name)?;
            if !out.is_empty() && bytes + view.len() > MAX_PAGE_BYTES {
                return Ok((out, true));
            }
            bytes += view.len();
            out.push(FeedCandidate {
                rank: rank.0,
                id,
                view,
            });
        }
        Ok((out, false))
    }

    /// `comment.create`.
    pub fn create_comment(
        &mut self,
        author: &Username,
        req: CreateCommentRequest,
        now: i64,
        fx: &mut Effects,
    ) -> Result<CommentView, WireError> {
        self.check_actor(author)?;
        let sub = self.sub(&req.subreddit)?;
        let post = sub.posts.get(&req.post_id).ok_or_else(|| {
            WireError::not_found(format!(
                "there is no post {} in r/{}",
                req.post_id, req.subreddit
            ))
        })?;
        let parent_author = match req.parent_id {
            None => post.author.clone(),
            Some(pid) => match sub.comments.get(&pid) {
                Some(parent) if parent.post_id == req.post_id => parent.author.clone(),
                _ => {
                    return Err(WireError::not_found(format!(
                        "there is no comment {pid} on post {} in r/{}",
                        req.post_id, req.subreddit
                    )))
                }
            },
        };
        let key = sub.name.key().to_owned();
        let id = CommentId::new();
        self.emit(Event::CommentCreated {
            subreddit: key.clone(),
            post_id: req.post_id,
            id,
            parent_id: req.parent_id,
            author: author.clone(),
            body: req.body,
            signature: req.signature,
            at: now,
        });
        let sub = self.sub(&req.subreddit)?;
        let view = sub
            .comments
            .get(&id)
            .map(|c| c.view(&sub.name))
            .ok_or_else(|| WireError::internal("a created comment was not stored"))?;
        if parent_author.key() != author.key() {
            fx.push.push((
                PushTarget::User(parent_author.key().to_owned()),
                PushEvent::Reply {
                    comment: view.clone(),
                },
            ));
        }
        Ok(view)
    }

    /// `comment.tree`.
    pub fn comment_tree(&self, req: &CommentTreeRequest) -> Result<CommentTree, WireError> {
        let sub = self.sub(&req.subreddit)?;
        let post = sub.posts.get(&req.post_id).ok_or_else(|| {
            WireError::not_found(format!(
                "there is no post {} in r/{}",
                req.post_id, req.subreddit
            ))
        })?;
        let mut budget = req.limit.unwrap_or(DEFAULT_TREE_COMMENTS);
        let mut truncated = false;
        let roots = match req.root {
            None => post.children.clone(),
            Some(root) => match sub.comments.get(&root) {
                Some(c) if c.post_id == req.post_id => vec![root],
                _ => {
                    return Err(WireError::not_found(format!(
                        "there is no comment {root} on post {} in r/{}",
                        req.post_id, req.subreddit
                    )))
                }
            },
        };
        let comments = sub.build_tree(
            &roots,
            req.sort,
            MAX_TREE_DEPTH - 1,
            &mut budget,
            &mut 0,
            &mut truncated,
        );
        Ok(CommentTree {
            comments,
            total: post.comments,
            truncated,
        })
    }

    /// `vote.cast`. The author's new score total goes to the author's shard.
    pub fn vote(
        &mut self,
        voter: &Username,
        name: &SubredditName,
        target: VoteTarget,
        id: Uuid,
        value: i8,
        fx: &mut Effects,
    ) -> Result<VoteReply, WireError> {
        self.check_actor(voter)?;
        let sub = self.sub(name)?;
        let (old, author) = match target {
            VoteTarget::Post => sub
                .posts
                .get(&PostId(id))
                .map(|p| (p.tally.vote_of(voter.key()), p.author.key().to_owned())),
            VoteTarget::Comment => sub
                .comments
                .get(&CommentId(id))
                .map(|c| (c.tally.vote_of(voter.key()), c.author.key().to_owned())),
        }
        .ok_or_else(|| {
            let what = match target {
                VoteTarget::Post => "post",
                VoteTarget::Comment => "comment",
            };
            WireError::not_found(format!("there is no {what} {id} in r/{name}"))
        })?;
        let key = sub.name.key().to_owned();
        if old != value {
            self.emit(Event::VoteCast {
                subreddit: key.clone(),
                target,
                id,
                voter: voter.key().to_owned(),
                value,
            });
            let item = self.subs.get(&key).and_then(|s| s.karma_item(&author));
            if let Some(item) = item {
                self.sync(item, fx);
            }
        }
        let sub = self.sub(name)?;
        let tally = match target {
            VoteTarget::Post => sub.posts.get(&PostId(id)).map(|p| &p.tally),
            VoteTarget::Comment => sub.comments.get(&CommentId(id)).map(|c| &c.tally),
        }
        .ok_or_else(|| WireError::internal("a voted item vanished"))?;
        Ok(VoteReply {
            score: tally.score(),
            ups: tally.ups,
            downs: tally.downs,
            value,
        })
    }
}

/// Cuts a list fetched with one extra item to `limit` and sets the cursor.
pub fn finish_page(posts: &mut Vec<PostView>, sort: PostSort, limit: usize) -> PostPage {
    let mut bytes = 0;
    let mut fit = 0;
    for p in posts.iter().take(limit) {
        let cost = page_cost(p.title.len() + p.body.len());
        if fit > 0 && bytes + cost > MAX_PAGE_BYTES {
            break;
        }
        bytes += cost;
        fit += 1;
    }
    let next_cursor = if posts.len() > fit {
        posts.truncate(fit);
        posts.last().map(|p| encode_cursor(&view_key(sort, p)))
    } else {
        None
    };
    PostPage {
        posts: std::mem::take(posts),
        next_cursor,
    }
}

#[cfg(test)]
mod tests {
    use crate::state::tests::busy_state;

    /// A tally that disagrees with its votes, up or down, on a post or a
    /// comment, is reported with the item it is on (and nothing else is,
    /// in a consistent subreddit).
    #[test]
    fn a_tally_that_disagrees_with_its_votes_is_a_violation() {
        let mut s = busy_state();
        let sub = s.subs.get("rust").unwrap();
        assert!(sub.local_violations().is_empty());
        let post = sub
            .posts
            .values()
            .find(|p| !p.tally.votes.is_empty())
            .unwrap();
        let comment = sub
            .comments
            .values()
            .find(|c| !c.tally.votes.is_empty())
            .unwrap();
        let (post_id, comment_id) = (post.id, comment.id);
        let sub = s.subs.get_mut("rust").unwrap();
        sub.posts.get_mut(&post_id).unwrap().tally.ups += 1;
        sub.comments.get_mut(&comment_id).unwrap().tally.downs += 1;
        // The items' scores changed too, so their authors' totals disagree.
        let found: Vec<_> = sub
            .local_violations()
            .into_iter()
            .filter(|(kind, _)| kind == "score")
            .collect();
        assert_eq!(found.len(), 2, "{found:?}");
        let details: Vec<&str> = found.iter().map(|(_, d)| d.as_str()).collect();
        assert!(
            details
                .iter()
                .any(|d| d.starts_with(&format!("post {post_id} in r/rust: tally says"))),
            "{details:?}"
        );
        assert!(
            details
                .iter()
                .any(|d| d.starts_with(&format!("comment {comment_id} in r/rust: tally says"))),
            "{details:?}"
        );
    }
}
