//! The caller's feed: `feed.get`, routed by the caller's username. Posts of every
//! joined subreddit, merged across shards, in one order, paged by cursor.

use super::post::PostSort;
use super::{check_limit, Validate, MAX_PAGE};
use crate::error::WireError;
use serde::{Deserialize, Serialize};

/// `feed.get` (authenticated). Replies with a [`super::post::PostPage`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FeedRequest {
    /// Order (default `hot`).
    #[serde(default, deserialize_with = "crate::protocol::nil_as_default")]
    pub sort: PostSort,
    /// Page size (default 25, at most 100).
    #[serde(default)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Read every subreddit's shard now (default `false`). Without it, the
    /// first page may draw other shards' subreddits from lists the user's
    /// shard fetched within the last `--feed-cache-ms` (1 s by default), so
    /// a post or vote there can take that long to show; with it, the page
    /// shows every write answered before it, like a later page (`cursor`) does.
    #[serde(default, deserialize_with = "crate::protocol::nil_as_default")]
    pub fresh: bool,
}

impl Validate for FeedRequest {
    fn validate(&self) -> Result<(), WireError> {
        check_limit(self.limit, MAX_PAGE)
    }
}
