//! `vote.cast`: up, down or none on a post or comment; the author's karma moves
//! on their own shard through the sync outbox.

use super::{Actor, Call, Handled};
use reddit_shared::error::WireError;
use reddit_shared::protocol::vote::VoteRequest;

impl Actor {
    /// `vote.cast`.
    pub(super) fn vote_cast(&mut self, c: &mut Call<'_>) -> Result<Handled, WireError> {
        self.as_user(c, |s, who, r: VoteRequest, fx| {
            s.need_sync_room()?;
            s.state
                .vote(&who, &r.subreddit, r.target, r.id, r.value, fx)
        })
    }
}
