//! One function per operation, grouped by domain (one file each), all methods of
//! the [`Actor`]: they read their request, call the [`ShardState`](crate::state::ShardState)
//! and say how the request is answered ([`Handled`]). [`Actor::dispatch`] is the
//! one table from operation to handler. Adding an operation adds its request type
//! to `reddit_shared::protocol::rpc`, a line here and a handler in its domain's
//! file (docs/architecture.md walks through one).

mod admin;
mod comments;
mod dms;
mod feed;
mod internal;
mod posts;
mod subreddits;
mod users;
mod votes;

use super::actor::{Actor, Handled};
use crate::state::Effects;
use async_nats::Message;
use reddit_shared::codec::{decode, encode};
use reddit_shared::error::WireError;
use reddit_shared::now_millis;
use reddit_shared::protocol::rpc::Rpc;
use reddit_shared::protocol::{Op, Validate};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Encodes a reply.
fn reply<T: Serialize>(value: &T) -> Result<Handled, WireError> {
    encode(value).map(Handled::Reply)
}

/// Reads request `R` from `payload`, lets `f` answer it, and encodes the reply:
/// the contract's table ([`Rpc`]) decides that `f` returns `R`'s reply type.
fn answer<R: Rpc>(
    payload: &[u8],
    f: impl FnOnce(R) -> Result<R::Reply, WireError>,
) -> Result<Handled, WireError> {
    reply(&f(parse::<R>(payload)?)?)
}

/// Decodes and validates a request.
fn parse<T: DeserializeOwned + Validate>(payload: &[u8]) -> Result<T, WireError> {
    let value: T = decode(payload)?;
    value.validate()?;
    Ok(value)
}

impl Actor {
    /// Handles `request` as `op`; `fx` collects the pushes and sync items it causes.
    pub(super) fn dispatch(
        &mut self,
        op: Op,
        request: &Message,
        fx: &mut Effects,
    ) -> Result<Handled, WireError> {
        let p: &[u8] = &request.payload;
        let now = now_millis();
        match op {
            Op::UserRegister => self.user_register(p, now),
            Op::AuthChallenge => self.auth_challenge(request, now),
            Op::AuthLogin => self.auth_login(p, now),
            Op::UserGet => self.user_get(p),
            Op::SubCreate => self.sub_create(request, now),
            Op::SubGet => self.sub_get(p),
            Op::SubList => self.sub_list(p),
            Op::SubJoin => self.sub_membership(request, now, true, fx),
            Op::SubLeave => self.sub_membership(request, now, false, fx),
            Op::PostCreate => self.post_create(request, now, fx),
            Op::PostGet => self.post_get(p),
            Op::PostList => self.post_list(p),
            Op::CommentCreate => self.comment_create(request, now, fx),
            Op::CommentTree => self.comment_tree(p),
            Op::VoteCast => self.vote_cast(request, now, fx),
            Op::FeedGet => self.feed_get(request, now),
            Op::DmSend => self.dm_send(request, now, fx),
            Op::DmReply => self.dm_reply(request, now, fx),
            Op::DmList => self.dm_list(request, now),
            Op::DmRead => self.dm_read(request, now),
            Op::ShardStats => self.shard_stats(p),
            Op::AuditRun => self.audit_run(p),
            Op::InternalSync => self.internal_sync(p),
            Op::InternalDmDeliver => self.internal_dm_deliver(p, fx),
            Op::InternalFeedCandidates => self.internal_feed_candidates(p),
            Op::InternalAuditExport => self.internal_audit_export(p),
            Op::InternalHello => self.internal_hello(p),
        }
    }
}
