//! Subreddits: `sub.create`, `sub.get`, `sub.list`, `sub.join`, `sub.leave`.

use super::{answer, parse, reply, Actor, Call, Handled};
use crate::cross_shard::SyncEnvelope;
use futures::FutureExt;
use reddit_shared::codec::encode;
use reddit_shared::error::WireError;
use reddit_shared::protocol::subreddit::{
    CreateSubredditRequest, GetSubredditRequest, ListSubredditsRequest, MembershipRequest,
    SubredditList,
};
use reddit_shared::protocol::DEFAULT_PAGE;
use tokio::sync::oneshot;

impl Actor {
    /// `sub.create`: the caller creates (and does not join) a subreddit.
    pub(super) fn sub_create(&mut self, c: &mut Call<'_>) -> Result<Handled, WireError> {
        let now = c.now;
        self.as_user(c, |s, who, r: CreateSubredditRequest, _| {
            s.state.create_subreddit(&who, &r.name, r.description, now)
        })
    }

    /// `sub.get`.
    pub(super) fn sub_get(&mut self, c: &mut Call<'_>) -> Result<Handled, WireError> {
        answer(c.payload(), |r: GetSubredditRequest| {
            self.state.get_subreddit(&r.name)
        })
    }

    /// `sub.list`: this shard's subreddits, most members first.
    pub(super) fn sub_list(&mut self, c: &mut Call<'_>) -> Result<Handled, WireError> {
        answer(c.payload(), |r: ListSubredditsRequest| {
            let limit = r.limit.unwrap_or(DEFAULT_PAGE) as usize;
            Ok(SubredditList {
                subreddits: self.state.list_subreddits(limit),
            })
        })
    }

    /// `sub.join` / `sub.leave`: applied here (the subreddit's shard), answered
    /// once the user's shard has the membership too (or `503` if it does not
    /// confirm in time; the outbox keeps retrying).
    pub(super) fn sub_membership(
        &mut self,
        c: &mut Call<'_>,
        join: bool,
    ) -> Result<Handled, WireError> {
        let who = self.caller(c.request, c.now)?;
        let r: MembershipRequest = parse(c.payload())?;
        self.need_sync_room()?;
        let result = self.state.set_membership(&who, &r.name, join, c.fx)?;
        let Some((dest, item)) = c.fx.sync.pop() else {
            return reply(&result);
        };
        let (tx, rx) = oneshot::channel();
        let body = encode(&result)?;
        let wait = self.ctx.peer_timeout * 2;
        Ok(Handled::Confirm {
            body,
            envelope: SyncEnvelope {
                dest,
                item,
                waiter: Some(tx),
            },
            wait: async move {
                match tokio::time::timeout(wait, rx).await {
                    Ok(Ok(())) => Ok(()),
                    _ => Err(WireError::unavailable(format!(
                        "the membership is recorded, but shard {dest} (the user's) has not confirmed it yet; it will be retried, and repeating the request is safe"
                    ))),
                }
            }
            .boxed(),
        })
    }
}
