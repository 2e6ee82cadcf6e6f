//! Comments: `comment.create` (on a post or a comment, any depth) and
//! `comment.tree`.

use super::{answer, Actor, Call, Handled};
use reddit_shared::error::WireError;
use reddit_shared::protocol::comment::{CommentTreeRequest, CreateCommentRequest};

impl Actor {
    /// `comment.create`.
    pub(super) fn comment_create(&mut self, c: &mut Call<'_>) -> Result<Handled, WireError> {
        let now = c.now;
        self.as_user(c, |s, who, r: CreateCommentRequest, fx| {
            s.state.create_comment(&who, r, now, fx)
        })
    }

    /// `comment.tree`: a post's comments, nested, sorted per level.
    pub(super) fn comment_tree(&mut self, c: &mut Call<'_>) -> Result<Handled, WireError> {
        answer(c.payload(), |r: CommentTreeRequest| {
            self.state.comment_tree(&r)
        })
    }
}
