//! Engine-to-engine messages on `reddit.shard.<k>.internal.<op>`. Clients are not
//! permitted to publish there (`nats.conf`); they are documented for operators.

use super::admin::Violation;
use super::dm::DmView;
use super::post::PostSort;
use super::Validate;
use crate::ids::{DmId, PostId};
use crate::names::{SubredditName, Username};
use serde::{Deserialize, Serialize};

/// Most items in one [`SyncBatch`].
pub const MAX_SYNC_ITEMS: usize = 512;

/// `internal.sync`: state the sender owns, copied to the shard of the user it is about.
/// Every item carries a version; the receiver keeps the highest, so repeats and
/// reordering are harmless.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SyncBatch {
    /// The updates.
    pub items: Vec<SyncItem>,
    /// A restart's resync, not a live write's: answered only once durable
    /// (nobody waits for it, and its sender paces itself by how long each
    /// batch takes to be answered).
    #[serde(default, deserialize_with = "crate::protocol::nil_as_default")]
    pub bulk: bool,
}
impl Validate for SyncBatch {}

/// One update in a [`SyncBatch`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SyncItem {
    /// `user`'s membership of `subreddit` (the subreddit's shard is authoritative).
    Membership {
        /// The member.
        user: Username,
        /// The subreddit.
        subreddit: SubredditName,
        /// Member now or not.
        member: bool,
        /// The subreddit's membership sequence number at this change.
        version: u64,
    },
    /// The total scores of `user`'s posts and comments in `subreddit`.
    Karma {
        /// The author.
        user: Username,
        /// The subreddit.
        subreddit: SubredditName,
        /// Sum of the author's post scores there.
        post_karma: i64,
        /// Sum of the author's comment scores there.
        comment_karma: i64,
        /// The subreddit's vote sequence number at this total.
        version: u64,
    },
}

impl SyncItem {
    /// The user the item is about (its routing key).
    pub fn user(&self) -> &Username {
        match self {
            Self::Membership { user, .. } | Self::Karma { user, .. } => user,
        }
    }

    /// The subreddit the item comes from.
    pub fn subreddit(&self) -> &SubredditName {
        match self {
            Self::Membership { subreddit, .. } | Self::Karma { subreddit, .. } => subreddit,
        }
    }

    /// The item's version.
    pub fn version(&self) -> u64 {
        match self {
            Self::Membership { version, .. } | Self::Karma { version, .. } => *version,
        }
    }

    /// True for karma, false for membership.
    pub fn is_karma(&self) -> bool {
        matches!(self, Self::Karma { .. })
    }
}

/// Reply to `internal.sync`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SyncAck {
    /// Items that changed something (the rest were older than what is held).
    pub applied: u32,
    /// The record of the receiver's log that will hold these items, when it
    /// acknowledged them before that record was durable; when they changed
    /// nothing, the last record the receiver has open or being appended
    /// (what they found may not be durable yet); 0 when they were durable
    /// first, changed nothing and every record is durable, or the receiver
    /// keeps no log. The
    /// sender keeps such items until `durable` reaches this record, and
    /// sends them again if the receiver restarts before (`internal.resync`).
    #[serde(default)]
    pub record: u64,
    /// The receiver's last durable record when it answered (0: not said).
    /// A batch of no items asks only for this.
    #[serde(default)]
    pub durable: u64,
}

/// `internal.resync`: a shard that has just started (a restart, or a standby
/// taking over) asks each other shard to send again what it may have lost: it
/// acknowledges `internal.sync` once applied, before its record is durable
/// ([`SyncAck::record`]), so its predecessor may have died with acknowledged
/// items unlogged. The items go out through the answering shard's resync lane,
/// in the background.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResyncRequest {
    /// The asking shard: the items sent are those of the users it owns.
    pub shard: u32,
    /// The last record in the asking shard's log: only the items it
    /// acknowledged for later records (which it may have lost) are sent
    /// again. Absent: everything held for its users.
    #[serde(default)]
    pub after: Option<u64>,
}
impl Validate for ResyncRequest {}

/// Reply to `internal.resync`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResyncAck {
    /// Items queued for the asking shard.
    pub items: u64,
    /// Whether they are everything held for its users (the answering shard
    /// could not tell which ones it may have lost), not only those.
    #[serde(default)]
    pub all: bool,
    /// DMs the answering shard delivered again to the asking shard's users
    /// before answering: those the asking shard acknowledged before they
    /// were durable ([`DmDelivered::record`]) and never confirmed since.
    #[serde(default)]
    pub dms: u64,
}

/// `internal.dm.deliver`: put a DM in the recipient's inbox. Replies with the stored
/// DM ([`DmDelivered`]), or `404 not_found` if the recipient does not exist.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeliverDm {
    /// The message, id assigned by the sender's shard.
    pub dm: DmView,
}
impl Validate for DeliverDm {}

/// Reply to `internal.dm.deliver`: the stored [`DmView`] (its fields at the
/// top level, as older engines answered) and what the recipient's shard said
/// of its log. Like [`SyncAck`], a durable shard answers once it has stored
/// the DM, before its record is durable: the sender's shard keeps the DM's id
/// (in its own log, beside the sent copy) until an answer shows that record
/// durable, and delivers it again if the recipient's shard restarts before.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DmDelivered {
    /// The DM as stored in the recipient's inbox.
    #[serde(flatten)]
    pub dm: DmView,
    /// The record of the recipient shard's log that holds the DM, when it
    /// answered before that record was durable (for a DM stored already: the
    /// last record it has open or being appended); 0 when it was durable
    /// first (or the shard keeps no log).
    #[serde(default)]
    pub record: u64,
    /// The recipient shard's last durable record when it answered (0: not said).
    #[serde(default)]
    pub durable: u64,
    /// The first record the answering process wrote (its fence): a record
    /// below it was durable when that process started, one at or above it
    /// and acknowledged by an earlier process may have been lost (0: not said).
    #[serde(default)]
    pub fence: u64,
}

/// `internal.feed.candidates`: the best posts of some of this shard's subreddits.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FeedCandidatesRequest {
    /// Subreddits (owned by the receiving shard) to draw from.
    pub subreddits: Vec<SubredditName>,
    /// Order.
    pub sort: PostSort,
    /// At most this many posts.
    pub limit: u32,
    /// Only posts strictly after this cursor in `sort` order.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Only posts strictly before this key (a cursor string) in `sort` order: the
    /// asking shard already holds `limit` candidates at or before it, so nothing
    /// after it can make the page. Absent: no such bound.
    #[serde(default)]
    pub above: Option<String>,
}
impl Validate for FeedCandidatesRequest {}

/// Reply to `internal.feed.candidates`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FeedCandidates {
    /// Best first.
    pub posts: Vec<FeedCandidate>,
    /// Whether the shard stopped before `limit` because the posts reached
    /// [`MAX_PAGE_BYTES`](crate::MAX_PAGE_BYTES): it has more posts after the last.
    #[serde(default)]
    pub truncated: bool,
}

impl FeedCandidates {
    /// Decodes a `FeedCandidates` reply body without copying the candidates'
    /// views: each is a slice of `payload` (decoding them as copies was 5% of
    /// a shard's time in the mixed workload).
    pub fn decode_shared(payload: &bytes::Bytes) -> Result<Self, crate::error::WireError> {
        /// [`FeedCandidates`], its views borrowed from the payload.
        #[derive(Deserialize)]
        struct Borrowed<'a> {
            #[serde(borrow)]
            posts: Vec<CandidateRef<'a>>,
            #[serde(default)]
            truncated: bool,
        }
        /// [`FeedCandidate`], its view borrowed from the payload.
        #[derive(Deserialize)]
        struct CandidateRef<'a> {
            rank: f64,
            id: PostId,
            #[serde(borrow, with = "serde_bytes")]
            view: &'a [u8],
        }
        let b: Borrowed<'_> =
            rmp_serde::from_slice(payload).map_err(crate::codec::reply_undecodable)?;
        Ok(Self {
            posts: b
                .posts
                .into_iter()
                .map(|c| FeedCandidate {
                    rank: c.rank,
                    id: c.id,
                    view: payload.slice_ref(c.view),
                })
                .collect(),
            truncated: b.truncated,
        })
    }
}

/// One feed candidate: its sort key, and its [`PostView`](super::post::PostView) already encoded, so the
/// user's shard merges by key and splices the winners' bytes into its reply
/// without decoding and re-encoding every candidate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedCandidate {
    /// The post's rank under the requested sort (larger first).
    pub rank: f64,
    /// The post (ties on rank go to the larger id).
    pub id: PostId,
    /// The MessagePack encoding of the post's [`PostView`](super::post::PostView)
    /// (a MessagePack bin): shared, not copied, with the post's cached encoding.
    pub view: bytes::Bytes,
}

/// `internal.audit.export`: one page of the facts the audit cross-checks.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditExportRequest {
    /// Identifies one audit: a shard takes its snapshot of facts at offset 0 (or a new
    /// id) and serves the following pages from it. Absent or nil: 0.
    #[serde(default, deserialize_with = "crate::protocol::nil_as_default")]
    pub audit: u64,
    /// Records to skip.
    pub offset: u64,
    /// Most records to return.
    pub limit: u32,
}
impl Validate for AuditExportRequest {}

/// Reply to `internal.audit.export`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AuditExport {
    /// The records of this page.
    pub records: Vec<AuditRecord>,
    /// True if there are no more records after these.
    pub done: bool,
    /// Sync items not yet acknowledged by their shard.
    pub pending_sync: u64,
}

/// One fact, in lowercase keys.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AuditRecord {
    /// Totals of what one shard holds.
    Counts {
        /// Subreddits, users, posts, comments, votes, DMs owned.
        counts: super::admin::AuditCounts,
    },
    /// A local invariant the shard found broken.
    Violation {
        /// What.
        violation: Violation,
    },
    /// On the subreddit's shard: `user` is a member of `subreddit`.
    Member {
        /// Subreddit key.
        subreddit: String,
        /// User key.
        user: String,
    },
    /// On the user's shard: `user`'s joined list holds `subreddit`.
    Joined {
        /// User key.
        user: String,
        /// Subreddit key.
        subreddit: String,
    },
    /// On the subreddit's shard: the scores of `author`'s items there.
    AuthorScore {
        /// Subreddit key.
        subreddit: String,
        /// Author key.
        author: String,
        /// Sum of post scores.
        post: i64,
        /// Sum of comment scores.
        comment: i64,
    },
    /// On the user's shard: the karma `user` holds from `subreddit`.
    Karma {
        /// User key.
        user: String,
        /// Subreddit key.
        subreddit: String,
        /// Post karma from there.
        post: i64,
        /// Comment karma from there.
        comment: i64,
    },
    /// On the recipient's shard: a DM in an inbox.
    Inbox {
        /// The DM.
        id: DmId,
        /// Sender key.
        from: String,
        /// Recipient key.
        to: String,
    },
    /// On the sender's shard: a DM in a sent folder.
    Sent {
        /// The DM.
        id: DmId,
        /// Sender key.
        from: String,
        /// Recipient key.
        to: String,
    },
}

/// Reply to `internal.hello`: who owns a shard, for start-up checks.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Hello {
    /// The shard number.
    pub shard: u32,
    /// The cluster size it was started with.
    pub shards: u32,
    /// Protocol version.
    pub protocol: String,
    /// A fingerprint of the token secret, so shards can tell they share it.
    pub secret_fingerprint: String,
    /// The service instance id.
    pub instance: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn feed_candidates_decode_as_slices_of_the_payload() {
        let page = FeedCandidates {
            posts: (0..3)
                .map(|i| FeedCandidate {
                    rank: f64::from(i) * 1.5,
                    id: PostId::new(),
                    view: bytes::Bytes::from(vec![0x80 + i as u8; 40]),
                })
                .collect(),
            truncated: true,
        };
        let payload = bytes::Bytes::from(crate::codec::encode(&page).unwrap());
        let decoded = FeedCandidates::decode_shared(&payload).unwrap();
        assert_eq!(decoded, page);
        let range = payload.as_ptr() as usize..payload.as_ptr() as usize + payload.len();
        for c in &decoded.posts {
            assert!(range.contains(&(c.view.as_ptr() as usize)), "not a copy");
        }
        // The same bytes decode the usual way too.
        let owned: FeedCandidates = rmp_serde::from_slice(&payload).unwrap();
        assert_eq!(owned, page);
        let e = FeedCandidates::decode_shared(&payload.slice(..payload.len() / 2)).unwrap_err();
        assert_eq!(e.code, crate::error::ErrorCode::Internal, "{e:?}");
    }
}
