//! Request and reply messages, one module per entity, and the [`Op`] enum naming
//! every operation. `docs/protocol.md` is the prose form of this module.

pub mod admin;
pub mod comment;
pub mod dm;
pub mod feed;
pub mod internal;
pub mod post;
pub mod push;
pub mod rpc;
pub mod subreddit;
pub mod user;
pub mod vote;

use crate::error::WireError;
use serde::{Deserialize, Serialize};

/// Longest post title, in characters.
pub const MAX_TITLE_CHARS: usize = 300;
/// Longest post, comment or DM body, in characters.
pub const MAX_BODY_CHARS: usize = 40_000;
/// Longest subreddit description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 500;
/// Page size when a request gives none.
pub const DEFAULT_PAGE: u32 = 25;
/// Largest page size accepted.
pub const MAX_PAGE: u32 = 100;

/// Reads an optional field (`T?` in docs/protocol.md) that has a default: the key
/// absent and an explicit nil both mean the default.
pub fn nil_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Checks a request's values beyond what its types enforce.
pub trait Validate {
    /// `Ok` if the request may be acted on, else `400 invalid_request` naming the field.
    fn validate(&self) -> Result<(), WireError> {
        Ok(())
    }
}

/// Checks a text field's length in characters.
pub fn check_text(field: &str, value: &str, min: usize, max: usize) -> Result<(), WireError> {
    let n = value.chars().count();
    if n < min {
        Err(WireError::invalid(format!("{field} must not be empty")))
    } else if n > max {
        Err(WireError::invalid(format!(
            "{field} is {n} characters long; at most {max} are allowed"
        )))
    } else {
        Ok(())
    }
}

/// Checks an optional content signature's form: 128 hex digits (64 bytes).
pub fn check_signature(signature: Option<&str>) -> Result<(), WireError> {
    match signature {
        Some(s) if s.len() != 128 || !s.bytes().all(|b| b.is_ascii_hexdigit()) => Err(
            WireError::invalid("signature must be 128 hex digits (an Ed25519 signature)"),
        ),
        _ => Ok(()),
    }
}

/// Checks a page size.
pub fn check_limit(limit: Option<u32>, max: u32) -> Result<(), WireError> {
    match limit {
        Some(0) => Err(WireError::invalid("limit must be at least 1")),
        Some(n) if n > max => Err(WireError::invalid(format!(
            "limit is {n}; at most {max} are allowed"
        ))),
        _ => Ok(()),
    }
}

macro_rules! ops {
    ($($(#[$doc:meta])* $variant:ident => $name:literal),* $(,)?) => {
        /// Every operation, by its subject suffix.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Op {
            $($(#[$doc])* $variant,)*
        }

        impl Op {
            /// All operations.
            pub const ALL: &'static [Op] = &[$(Op::$variant,)*];

            /// The subject suffix, e.g. `post.create`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Op::$variant => $name,)*
                }
            }

            /// The operation for a subject suffix.
            pub fn parse(name: &str) -> Option<Op> {
                match name {
                    $($name => Some(Op::$variant),)*
                    _ => None,
                }
            }
        }

        impl Op {
            /// Whether the operation changes state: a write is answered only once
            /// it is durable, and a retry with the same idempotency key gets the
            /// original reply.
            pub fn is_write(self) -> bool {
                matches!(
                    self,
                    Op::UserRegister
                        | Op::SubCreate
                        | Op::SubJoin
                        | Op::SubLeave
                        | Op::PostCreate
                        | Op::CommentCreate
                        | Op::VoteCast
                        | Op::DmSend
                        | Op::DmReply
                        | Op::DmRead
                        | Op::InternalSync
                        | Op::InternalDmDeliver
                )
            }
        }
    };
}

ops! {
    /// [`user::RegisterRequest`] → [`user::UserView`].
    UserRegister => "user.register",
    /// [`user::ChallengeRequest`] → [`user::ChallengeReply`].
    AuthChallenge => "auth.challenge",
    /// [`user::LoginRequest`] → [`user::LoginReply`].
    AuthLogin => "auth.login",
    /// [`user::WhoAmIRequest`] → [`user::WhoAmIReply`].
    AuthWhoami => "auth.whoami",
    /// [`user::GetUserRequest`] → [`user::UserView`].
    UserGet => "user.get",
    /// [`subreddit::CreateSubredditRequest`] → [`subreddit::SubredditView`].
    SubCreate => "sub.create",
    /// [`subreddit::GetSubredditRequest`] → [`subreddit::SubredditView`].
    SubGet => "sub.get",
    /// [`subreddit::ListSubredditsRequest`] → [`subreddit::SubredditList`].
    SubList => "sub.list",
    /// [`subreddit::MembershipRequest`] → [`subreddit::MembershipReply`].
    SubJoin => "sub.join",
    /// [`subreddit::MembershipRequest`] → [`subreddit::MembershipReply`].
    SubLeave => "sub.leave",
    /// [`post::CreatePostRequest`] → [`post::PostView`].
    PostCreate => "post.create",
    /// [`post::GetPostRequest`] → [`post::PostView`].
    PostGet => "post.get",
    /// [`post::ListPostsRequest`] → [`post::PostPage`].
    PostList => "post.list",
    /// [`comment::CreateCommentRequest`] → [`comment::CommentView`].
    CommentCreate => "comment.create",
    /// [`comment::CommentTreeRequest`] → [`comment::CommentTree`].
    CommentTree => "comment.tree",
    /// [`vote::VoteRequest`] → [`vote::VoteReply`].
    VoteCast => "vote.cast",
    /// [`feed::FeedRequest`] → [`post::PostPage`].
    FeedGet => "feed.get",
    /// [`dm::SendDmRequest`] → [`dm::DmView`].
    DmSend => "dm.send",
    /// [`dm::ReplyDmRequest`] → [`dm::DmView`].
    DmReply => "dm.reply",
    /// [`dm::ListDmsRequest`] → [`dm::DmPage`].
    DmList => "dm.list",
    /// [`dm::MarkReadRequest`] → [`dm::MarkReadReply`].
    DmRead => "dm.read",
    /// empty → [`admin::ShardStats`].
    ShardStats => "shard.stats",
    /// [`admin::AuditRequest`] → [`admin::AuditReport`].
    AuditRun => "audit.run",
    /// Engine-to-engine: [`internal::SyncBatch`] → [`internal::SyncAck`].
    InternalSync => "internal.sync",
    /// Engine-to-engine: [`internal::DeliverDm`] → [`dm::DmView`].
    InternalDmDeliver => "internal.dm.deliver",
    /// Engine-to-engine: [`internal::FeedCandidatesRequest`] → [`internal::FeedCandidates`].
    InternalFeedCandidates => "internal.feed.candidates",
    /// Engine-to-engine: [`internal::AuditExportRequest`] → [`internal::AuditExport`].
    InternalAuditExport => "internal.audit.export",
    /// Engine-to-engine: empty → [`internal::Hello`].
    InternalHello => "internal.hello",
    /// Engine-to-engine: [`internal::ResyncRequest`] → [`internal::ResyncAck`].
    InternalResync => "internal.resync",
}

impl Op {
    /// True for engine-to-engine operations, which clients may not call.
    pub fn is_internal(self) -> bool {
        self.as_str().starts_with("internal.")
    }
}

/// A reference to a post from anywhere: its subreddit (the routing key) and id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PostRef {
    /// The subreddit holding the post.
    pub subreddit: crate::names::SubredditName,
    /// The post.
    pub id: crate::ids::PostId,
}

/// An empty message, for operations that take or return nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

impl Validate for Empty {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for op in Op::ALL {
            assert_eq!(Op::parse(op.as_str()), Some(*op));
            assert!(seen.insert(op.as_str()));
            assert!(op
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'.'));
        }
        assert_eq!(Op::parse("nope"), None);
        assert!(Op::InternalSync.is_internal());
        assert!(!Op::PostCreate.is_internal());
    }

    #[test]
    fn text_limits() {
        assert!(check_text("title", "", 1, 3).is_err());
        assert!(check_text("title", "abc", 1, 3).is_ok());
        assert!(check_text("title", "ééé", 1, 3).is_ok());
        assert!(check_text("title", "abcd", 1, 3).is_err());
        assert!(check_limit(Some(0), 10).is_err());
        assert!(check_limit(Some(11), 10).is_err());
        assert!(check_limit(None, 10).is_ok());
    }
}

#[cfg(test)]
mod nil_tests {
    use super::dm::{DmFolder, ListDmsRequest};
    use super::feed::FeedRequest;
    use super::post::{CreatePostRequest, ListPostsRequest, PostSort};
    use super::subreddit::CreateSubredditRequest;
    use crate::codec::decode;

    /// A map whose values are strings, or nil where `None`.
    fn map(pairs: &[(&str, Option<&str>)]) -> Vec<u8> {
        let mut out = Vec::new();
        rmp::encode::write_map_len(&mut out, pairs.len() as u32).unwrap();
        for (k, v) in pairs {
            rmp::encode::write_str(&mut out, k).unwrap();
            match v {
                Some(v) => rmp::encode::write_str(&mut out, v).unwrap(),
                None => rmp::encode::write_nil(&mut out).unwrap(),
            }
        }
        out
    }

    #[test]
    fn nil_means_the_default_wherever_the_doc_says_optional() {
        let r: CreateSubredditRequest =
            decode(&map(&[("name", Some("rust")), ("description", None)])).unwrap();
        assert_eq!(r.description, "");
        let r: CreatePostRequest = decode(&map(&[
            ("subreddit", Some("rust")),
            ("title", Some("t")),
            ("body", None),
            ("repost_of", None),
        ]))
        .unwrap();
        assert_eq!(r.body, "");
        let r: ListPostsRequest = decode(&map(&[
            ("subreddit", Some("rust")),
            ("sort", None),
            ("limit", None),
            ("cursor", None),
        ]))
        .unwrap();
        assert_eq!(r.sort, PostSort::default());
        let r: FeedRequest = decode(&map(&[("sort", None), ("limit", None)])).unwrap();
        assert_eq!(r.sort, PostSort::default());
        let r: ListDmsRequest = decode(&map(&[("folder", None), ("unread_only", None)])).unwrap();
        assert_eq!(r.folder, DmFolder::Inbox);
        assert!(!r.unread_only);
        let e = decode::<crate::protocol::comment::CommentTreeRequest>(&map(&[
            ("subreddit", Some("rust")),
            ("sort", None),
        ]))
        .unwrap_err();
        assert!(
            e.message.contains("post_id"),
            "a required field stays required: {e}"
        );
    }
}
