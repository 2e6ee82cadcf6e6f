//! Comments: `comment.create` (on a post or a comment, any depth) and
//! `comment.tree`.

use super::{answer, parse, reply, Actor, Call, Handled};
use reddit_shared::auth::comment_message;
use reddit_shared::error::WireError;
use reddit_shared::protocol::comment::{CommentTreeRequest, CreateCommentRequest};

impl Actor {
    /// `comment.create`.
    pub(super) fn comment_create(&mut self, c: &mut Call<'_>) -> Result<Handled, WireError> {
        let bearer = self.bearer(c.request, c.now)?;
        let r: CreateCommentRequest = parse(c.payload())?;
        if let Some(sig) = &r.signature {
            let signed = comment_message(
                bearer.user.key(),
                r.subreddit.key(),
                &r.post_id,
                r.parent_id.as_ref(),
                &r.body,
            );
            bearer.check_signature("comment", &signed, sig)?;
        }
        reply(&self.state.create_comment(&bearer.user, r, c.now, c.fx)?)
    }

    /// `comment.tree`: a post's comments, nested, sorted per level.
    pub(super) fn comment_tree(&mut self, c: &mut Call<'_>) -> Result<Handled, WireError> {
        answer(c.payload(), |r: CommentTreeRequest| {
            self.state.comment_tree(&r)
        })
    }
}
