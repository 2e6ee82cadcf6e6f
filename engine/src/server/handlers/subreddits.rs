//! Subreddits: `sub.create`, `sub.get`, `sub.list`, `sub.join`, `sub.leave`.

use super::{answer, parse, reply, Actor, Handled};
use crate::cross_shard::SyncEnvelope;
use crate::state::Effects;
use async_nats::Message;
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
    pub(super) fn sub_create(&mut self, request: &Message, now: i64) -> Result<Handled, WireError> {
        let who = self.caller(request, now)?;
        answer(&request.payload, |r: CreateSubredditRequest| {
            self.state
                .create_subreddit(&who, &r.name, r.description, now)
        })
    }

    /// `sub.get`.
    pub(super) fn sub_get(&mut self, p: &[u8]) -> Result<Handled, WireError> {
        answer(p, |r: GetSubredditRequest| {
            self.state.get_subreddit(&r.name)
        })
    }

    /// `sub.list`: this shard's subreddits, most members first.
    pub(super) fn sub_list(&mut self, p: &[u8]) -> Result<Handled, WireError> {
        answer(p, |r: ListSubredditsRequest| {
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
        request: &Message,
        now: i64,
        join: bool,
        fx: &mut Effects,
    ) -> Result<Handled, WireError> {
        let who = self.caller(request, now)?;
        let r: MembershipRequest = parse(&request.payload)?;
        self.need_sync_room()?;
        let result = self.state.set_membership(&who, &r.name, join, fx)?;
        let Some((dest, item)) = fx.sync.pop() else {
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
