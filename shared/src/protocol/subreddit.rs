//! Subreddits: `sub.create`, `sub.get`, `sub.list`, `sub.join`, `sub.leave`.
//! Routed by the subreddit name, except `sub.list`, which every shard answers for its
//! own subreddits (a client asks them all and merges).

use super::{check_limit, check_text, Validate, MAX_DESCRIPTION_CHARS, MAX_PAGE};
use crate::error::WireError;
use crate::names::SubredditName;
use serde::{Deserialize, Serialize};

/// `sub.create` (authenticated).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateSubredditRequest {
    /// The new subreddit's name.
    pub name: SubredditName,
    /// What it is about (up to 500 characters).
    #[serde(default, deserialize_with = "crate::protocol::nil_as_default")]
    #[cfg_attr(feature = "openapi", schema(max_length = 500, nullable))]
    pub description: String,
}

impl Validate for CreateSubredditRequest {
    fn validate(&self) -> Result<(), WireError> {
        check_text("description", &self.description, 0, MAX_DESCRIPTION_CHARS)
    }
}

/// `sub.get`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GetSubredditRequest {
    /// Which subreddit.
    pub name: SubredditName,
}
impl Validate for GetSubredditRequest {}

/// `sub.list`: this shard's subreddits, most members first.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ListSubredditsRequest {
    /// At most this many (default 25, at most 100).
    #[serde(default)]
    pub limit: Option<u32>,
}

impl Validate for ListSubredditsRequest {
    fn validate(&self) -> Result<(), WireError> {
        check_limit(self.limit, MAX_PAGE)
    }
}

/// Reply to `sub.list`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubredditList {
    /// Most members first, then by name.
    pub subreddits: Vec<SubredditView>,
}

/// `sub.join` and `sub.leave` (authenticated): the caller joins or leaves.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MembershipRequest {
    /// Which subreddit.
    pub name: SubredditName,
}
impl Validate for MembershipRequest {}

/// Reply to `sub.join` and `sub.leave`. Both are idempotent.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MembershipReply {
    /// The subreddit.
    pub subreddit: SubredditName,
    /// Whether the caller is now a member.
    pub member: bool,
    /// Whether this request changed anything (false for a repeated join or leave).
    pub changed: bool,
    /// Member count after the request.
    pub members: u64,
}

/// A subreddit as the engine shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubredditView {
    /// The name as created.
    pub name: SubredditName,
    /// What it is about.
    pub description: String,
    /// Who created it.
    pub creator: String,
    /// Member count.
    pub members: u64,
    /// Post count.
    pub posts: u64,
    /// Creation time (Unix milliseconds).
    pub created_at: i64,
}
