//! Push events (contract), published with core NATS (at most once) on
//! `reddit.events.user.<username>` and `reddit.events.sub.<name>`. A user who was
//! offline catches up by reading the inbox and the feed.

use super::comment::CommentView;
use super::dm::DmView;
use super::post::PostView;
use serde::{Deserialize, Serialize};

/// One push event: a map whose `kind` field says which.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PushEvent {
    /// On the recipient's user subject: a DM arrived.
    Dm {
        /// The message.
        dm: DmView,
    },
    /// On the parent's author's user subject: someone answered your post or comment.
    Reply {
        /// The new comment (its `parent_id` is absent for a comment on your post).
        comment: CommentView,
    },
    /// On the subreddit's subject: a new post.
    Post {
        /// The post.
        post: PostView,
    },
}
