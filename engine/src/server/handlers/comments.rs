//! Comments: `comment.create` (on a post or a comment, any depth) and
//! `comment.tree`.

use super::{answer, Actor, Handled};
use crate::state::Effects;
use async_nats::Message;
use reddit_shared::error::WireError;
use reddit_shared::protocol::comment::{CommentTreeRequest, CreateCommentRequest};

impl Actor {
    /// `comment.create`.
    pub(super) fn comment_create(
        &mut self,
        request: &Message,
        now: i64,
        fx: &mut Effects,
    ) -> Result<Handled, WireError> {
        let who = self.caller(request, now)?;
        answer(&request.payload, |r: CreateCommentRequest| {
            self.state.create_comment(&who, r, now, fx)
        })
    }

    /// `comment.tree`: a post's comments, nested, sorted per level.
    pub(super) fn comment_tree(&mut self, p: &[u8]) -> Result<Handled, WireError> {
        answer(p, |r: CommentTreeRequest| self.state.comment_tree(&r))
    }
}
