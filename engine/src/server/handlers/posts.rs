//! Posts: `post.create` (text posts and reposts), `post.get`, `post.list`.

use super::{answer, parse, reply, Actor, Call, Handled};
use futures::FutureExt;
use reddit_shared::auth::post_message;
use reddit_shared::error::{ErrorCode, WireError};
use reddit_shared::names::SubredditName;
use reddit_shared::now_millis;
use reddit_shared::protocol::post::{CreatePostRequest, GetPostRequest, ListPostsRequest};

impl Actor {
    /// `post.create`. A repost of a post on another shard first checks that the
    /// original exists there, then creates the repost in a continuation.
    pub(super) fn post_create(&mut self, c: &mut Call<'_>) -> Result<Handled, WireError> {
        let bearer = self.bearer(c.request, c.now)?;
        let r: CreatePostRequest = parse(c.payload())?;
        if let Some(sig) = &r.signature {
            let signed = post_message(
                bearer.user.key(),
                r.subreddit.key(),
                r.repost_of.as_ref(),
                &r.title,
                &r.body,
            );
            bearer.check_signature("post", &signed, sig)?;
        }
        let who = bearer.user.clone();
        self.state.get_subreddit(&r.subreddit)?;
        match r.repost_of.clone() {
            Some(orig) if self.state.owner(orig.subreddit.key()) != self.ctx.shard => {
                let peers = self.ctx.peers.clone();
                let dest = self.state.owner(orig.subreddit.key());
                let cont = self.continuation()?;
                Ok(Handled::Later(
                    async move {
                        let get = GetPostRequest {
                            subreddit: orig.subreddit.clone(),
                            id: orig.id,
                        };
                        peers
                            .call(dest, &get)
                            .await
                            .map_err(|e| original_missing(e, &orig.subreddit))?;
                        cont.run(move |state, fx| {
                            state.create_post(
                                &who,
                                &r.subreddit,
                                r.title,
                                r.body,
                                r.repost_of,
                                r.signature,
                                now_millis(),
                                fx,
                            )
                        })
                        .await
                    }
                    .boxed(),
                ))
            }
            repost_of => {
                if let Some(orig) = &repost_of {
                    self.state
                        .post_exists(orig)
                        .map_err(|e| original_missing(e, &orig.subreddit))?;
                }
                reply(&self.state.create_post(
                    &who,
                    &r.subreddit,
                    r.title,
                    r.body,
                    repost_of,
                    r.signature,
                    c.now,
                    c.fx,
                )?)
            }
        }
    }

    /// `post.get`.
    pub(super) fn post_get(&mut self, c: &mut Call<'_>) -> Result<Handled, WireError> {
        answer(c.payload(), |r: GetPostRequest| {
            self.state.get_post(&r.subreddit, r.id)
        })
    }

    /// `post.list`: one page of a subreddit, by hot/new/top/controversial.
    pub(super) fn post_list(&mut self, c: &mut Call<'_>) -> Result<Handled, WireError> {
        answer(c.payload(), |r: ListPostsRequest| {
            self.state
                .list_posts(&r.subreddit, r.sort, r.limit, r.cursor.as_ref())
        })
    }
}

/// A missing original of a repost says which.
fn original_missing(e: WireError, sub: &SubredditName) -> WireError {
    if e.code == ErrorCode::NotFound {
        WireError::not_found(format!(
            "the original post does not exist in r/{sub}: {}",
            e.message
        ))
    } else {
        e
    }
}
