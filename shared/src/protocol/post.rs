//! Posts: `post.create`, `post.get`, `post.list`. Routed by the subreddit name.

use super::{
    check_limit, check_signature, check_text, PostRef, Validate, MAX_BODY_CHARS, MAX_PAGE,
    MAX_TITLE_CHARS,
};
use crate::error::WireError;
use crate::ids::PostId;
use crate::names::SubredditName;
use serde::{Deserialize, Serialize};

/// `post.create` (authenticated): a text post, optionally a repost of another post.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatePostRequest {
    /// Where to post.
    pub subreddit: SubredditName,
    /// 1–300 characters.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 300, pattern = "^[^\\r\\n]+$")
    )]
    pub title: String,
    /// Up to 40,000 characters; may be empty.
    #[serde(default, deserialize_with = "crate::protocol::nil_as_default")]
    #[cfg_attr(feature = "openapi", schema(max_length = 40000))]
    pub body: String,
    /// The original post, for a repost. It must exist, in any subreddit.
    #[serde(default)]
    pub repost_of: Option<PostRef>,
    /// The author's Ed25519 signature of [`crate::auth::post_message`], 128 hex
    /// digits; checked against the author's registered key before the post is
    /// stored, and returned with it.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-fA-F]{128}$"))]
    pub signature: Option<String>,
}

impl Validate for CreatePostRequest {
    fn validate(&self) -> Result<(), WireError> {
        check_text("title", &self.title, 1, MAX_TITLE_CHARS)?;
        if self.title.contains(['\n', '\r']) {
            return Err(WireError::invalid("title must be one line"));
        }
        check_text("body", &self.body, 0, MAX_BODY_CHARS)?;
        check_signature(self.signature.as_deref())
    }
}

/// `post.get`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GetPostRequest {
    /// The subreddit holding the post.
    pub subreddit: SubredditName,
    /// The post.
    pub id: PostId,
}
impl Validate for GetPostRequest {}

/// How to order posts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum PostSort {
    /// Reddit's hot: `sign(s)·log10(max(|s|,1)) + (t − 1134028003)/45000`.
    #[default]
    Hot,
    /// Newest first.
    New,
    /// Highest score first.
    Top,
    /// `(ups+downs)^(min/max)`, highest first.
    Controversial,
}

/// `post.list`: a subreddit's posts, one page.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ListPostsRequest {
    /// Which subreddit.
    pub subreddit: SubredditName,
    /// Order (default `hot`).
    #[serde(default, deserialize_with = "crate::protocol::nil_as_default")]
    pub sort: PostSort,
    /// Page size (default 25, at most 100).
    #[serde(default)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page, to continue after it.
    #[serde(default)]
    pub cursor: Option<String>,
}

impl Validate for ListPostsRequest {
    fn validate(&self) -> Result<(), WireError> {
        check_limit(self.limit, MAX_PAGE)
    }
}

/// One page of posts (`post.list`, `feed.get`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PostPage {
    /// The posts, in the requested order.
    pub posts: Vec<PostView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// A post as the engine shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PostView {
    /// Where it lives.
    pub subreddit: SubredditName,
    /// Its id.
    pub id: PostId,
    /// Who wrote it.
    pub author: String,
    /// Title.
    pub title: String,
    /// Body text.
    pub body: String,
    /// The original, if this is a repost.
    #[serde(default)]
    pub repost_of: Option<PostRef>,
    /// Upvotes minus downvotes.
    pub score: i64,
    /// Upvotes.
    pub ups: u32,
    /// Downvotes.
    pub downs: u32,
    /// Number of comments at any depth.
    pub comments: u32,
    /// Creation time (Unix milliseconds).
    pub created_at: i64,
    /// The author's signature of [`crate::auth::post_message`] (hex), if the
    /// post was signed; verify it with the author's public key (`user.get`).
    #[serde(default)]
    pub signature: Option<String>,
}
