//! Comments: `comment.create`, `comment.tree`. Routed by the subreddit name.

use super::{check_limit, check_text, Validate, MAX_BODY_CHARS};
use crate::error::WireError;
use crate::ids::{CommentId, PostId};
use crate::names::SubredditName;
use serde::{Deserialize, Serialize};

/// Largest `limit` of `comment.tree`.
pub const MAX_TREE_COMMENTS: u32 = 2_000;
/// `limit` of `comment.tree` when none is given.
pub const DEFAULT_TREE_COMMENTS: u32 = 500;

/// `comment.create` (authenticated): a comment on a post, or a reply to a comment.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateCommentRequest {
    /// The subreddit holding the post.
    pub subreddit: SubredditName,
    /// The post.
    pub post_id: PostId,
    /// The comment being answered; absent for a top-level comment.
    #[serde(default)]
    pub parent_id: Option<CommentId>,
    /// 1–40,000 characters.
    pub body: String,
    /// The author's Ed25519 signature of [`crate::auth::comment_message`], 128
    /// hex digits; checked before the comment is stored, and returned with it.
    #[serde(default)]
    pub signature: Option<String>,
}

impl Validate for CreateCommentRequest {
    fn validate(&self) -> Result<(), WireError> {
        check_text("body", &self.body, 1, MAX_BODY_CHARS)?;
        super::check_signature(self.signature.as_deref())
    }
}

/// How to order comments among their siblings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum CommentSort {
    /// Wilson score lower bound of the upvote share (z = 1.281551565545).
    #[default]
    Best,
    /// Highest score first.
    Top,
    /// Newest first.
    New,
}

/// `comment.tree`: a post's comments as a tree.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CommentTreeRequest {
    /// The subreddit holding the post.
    pub subreddit: SubredditName,
    /// The post.
    pub post_id: PostId,
    /// Sibling order (default `best`).
    #[serde(default, deserialize_with = "crate::protocol::nil_as_default")]
    pub sort: CommentSort,
    /// At most this many comments, taken depth-first in order (default 500, at most 2,000).
    #[serde(default)]
    pub limit: Option<u32>,
    /// Only the subtree under this comment (it is the one top-level entry): how to
    /// read threads deeper than one reply shows.
    #[serde(default)]
    pub root: Option<CommentId>,
}

impl Validate for CommentTreeRequest {
    fn validate(&self) -> Result<(), WireError> {
        check_limit(self.limit, MAX_TREE_COMMENTS)
    }
}

/// Reply to `comment.tree`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommentTree {
    /// Top-level comments, each with its `replies`.
    pub comments: Vec<CommentView>,
    /// Comments on the post at any depth.
    pub total: u32,
    /// True if `limit` cut the tree short.
    pub truncated: bool,
}

/// A comment as the engine shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommentView {
    /// The subreddit holding the post.
    pub subreddit: SubredditName,
    /// The post.
    pub post_id: PostId,
    /// This comment.
    pub id: CommentId,
    /// The comment it answers; absent for a top-level comment.
    #[serde(default)]
    pub parent_id: Option<CommentId>,
    /// Who wrote it.
    pub author: String,
    /// Text.
    pub body: String,
    /// Upvotes minus downvotes.
    pub score: i64,
    /// Upvotes.
    pub ups: u32,
    /// Downvotes.
    pub downs: u32,
    /// 0 for a top-level comment, 1 for a reply to it, and so on.
    pub depth: u32,
    /// Creation time (Unix milliseconds).
    pub created_at: i64,
    /// Answers, in the requested order (only in `comment.tree`).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(no_recursion))]
    pub replies: Vec<CommentView>,
    /// The author's signature of [`crate::auth::comment_message`] (hex), if
    /// signed.
    #[serde(default)]
    pub signature: Option<String>,
}
