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
use reddit_shared::names::Username;
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

/// One request being handled: what arrived, the time it is handled at, and where
/// its pushes and sync items go.
pub(super) struct Call<'a> {
    /// The message (payload, reply subject, headers).
    pub request: &'a Message,
    /// Milliseconds since the epoch.
    pub now: i64,
    /// Pushes and sync items the request causes.
    pub fx: &'a mut Effects,
}

impl Call<'_> {
    /// The request body.
    fn payload(&self) -> &[u8] {
        &self.request.payload
    }
}

/// Decodes and validates a request.
fn parse<T: DeserializeOwned + Validate>(payload: &[u8]) -> Result<T, WireError> {
    let value: T = decode(payload)?;
    value.validate()?;
    Ok(value)
}

impl Actor {
    /// Reads request `R` and lets `f` answer it as the user the request's token
    /// speaks for (`401`/`403` first if it speaks for nobody, or the reply would
    /// go elsewhere).
    fn as_user<R: Rpc>(
        &mut self,
        c: &mut Call<'_>,
        f: impl FnOnce(&mut Self, Username, R, &mut Effects) -> Result<R::Reply, WireError>,
    ) -> Result<Handled, WireError> {
        let who = self.caller(c.request, c.now)?;
        let r = parse::<R>(c.payload())?;
        reply(&f(self, who, r, c.fx)?)
    }

    /// Handles `request` as `op`; `fx` collects the pushes and sync items it causes.
    pub(super) fn dispatch(
        &mut self,
        op: Op,
        request: &Message,
        fx: &mut Effects,
    ) -> Result<Handled, WireError> {
        let c = &mut Call {
            request,
            now: now_millis(),
            fx,
        };
        match op {
            Op::UserRegister => self.user_register(c),
            Op::AuthChallenge => self.auth_challenge(c),
            Op::AuthLogin => self.auth_login(c),
            Op::AuthWhoami => self.auth_whoami(c),
            Op::UserGet => self.user_get(c),
            Op::SubCreate => self.sub_create(c),
            Op::SubGet => self.sub_get(c),
            Op::SubList => self.sub_list(c),
            Op::SubJoin => self.sub_membership(c, true),
            Op::SubLeave => self.sub_membership(c, false),
            Op::PostCreate => self.post_create(c),
            Op::PostGet => self.post_get(c),
            Op::PostList => self.post_list(c),
            Op::CommentCreate => self.comment_create(c),
            Op::CommentTree => self.comment_tree(c),
            Op::VoteCast => self.vote_cast(c),
            Op::FeedGet => self.feed_get(c),
            Op::DmSend => self.dm_send(c),
            Op::DmReply => self.dm_reply(c),
            Op::DmList => self.dm_list(c),
            Op::DmRead => self.dm_read(c),
            Op::ShardStats => self.shard_stats(c),
            Op::AuditRun => self.audit_run(c),
            Op::InternalSync => self.internal_sync(c),
            Op::InternalDmDeliver => self.internal_dm_deliver(c),
            Op::InternalFeedCandidates => self.internal_feed_candidates(c),
            Op::InternalAuditExport => self.internal_audit_export(c),
            Op::InternalHello => self.internal_hello(c),
            Op::InternalResync => self.internal_resync(c),
        }
    }
}
