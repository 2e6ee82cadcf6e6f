//! `vote.cast`: up, down or none on a post or comment; the author's karma moves
//! on their own shard through the sync outbox.

use super::{answer, Actor, Handled};
use crate::state::Effects;
use async_nats::Message;
use reddit_shared::error::WireError;
use reddit_shared::protocol::vote::VoteRequest;

impl Actor {
    /// `vote.cast`.
    pub(super) fn vote_cast(
        &mut self,
        request: &Message,
        now: i64,
        fx: &mut Effects,
    ) -> Result<Handled, WireError> {
        let who = self.caller(request, now)?;
        answer(&request.payload, |r: VoteRequest| {
            self.need_sync_room()?;
            self.state
                .vote(&who, &r.subreddit, r.target, r.id, r.value, fx)
        })
    }
}
