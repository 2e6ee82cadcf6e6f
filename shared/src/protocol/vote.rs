//! Votes: `vote.cast`. Routed by the subreddit name. One vote per user per item;
//! casting again replaces the earlier vote, `0` clears it.

use super::Validate;
use crate::error::WireError;
use crate::names::SubredditName;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What is voted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum VoteTarget {
    /// A post; `id` is a post id.
    Post,
    /// A comment; `id` is a comment id.
    Comment,
}

/// `vote.cast` (authenticated).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VoteRequest {
    /// The subreddit holding the item.
    pub subreddit: SubredditName,
    /// Post or comment.
    pub target: VoteTarget,
    /// The post's or comment's id.
    pub id: Uuid,
    /// 1 up, -1 down, 0 clear.
    #[cfg_attr(feature = "openapi", schema(minimum = -1, maximum = 1))]
    pub value: i8,
}

impl Validate for VoteRequest {
    fn validate(&self) -> Result<(), WireError> {
        if (-1..=1).contains(&self.value) {
            Ok(())
        } else {
            Err(WireError::invalid(format!(
                "value is {}; it must be 1 (up), -1 (down) or 0 (clear)",
                self.value
            )))
        }
    }
}

/// Reply to `vote.cast`: the item's tally after the vote.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VoteReply {
    /// Upvotes minus downvotes.
    pub score: i64,
    /// Upvotes.
    pub ups: u32,
    /// Downvotes.
    pub downs: u32,
    /// The caller's vote now.
    pub value: i8,
}
