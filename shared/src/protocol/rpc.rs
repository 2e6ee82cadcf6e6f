//! The typed contract: every public request type names its operation, its reply
//! type, whether it writes, and how it routes ([`Rpc`]), in one table (the
//! `rpcs!` invocation below). A client sends any of them with one generic call;
//! adding an operation adds a line here.

use super::admin::{AuditReport, AuditRequest, ShardStats};
use super::comment::{CommentTree, CommentTreeRequest, CommentView, CreateCommentRequest};
use super::dm::{
    DmPage, DmView, ListDmsRequest, MarkReadReply, MarkReadRequest, ReplyDmRequest, SendDmRequest,
};
use super::feed::FeedRequest;
use super::internal::{
    AuditExport, AuditExportRequest, DeliverDm, DmDelivered, FeedCandidates, FeedCandidatesRequest,
    Hello, ResyncAck, ResyncRequest, SyncAck, SyncBatch,
};
use super::post::{CreatePostRequest, GetPostRequest, ListPostsRequest, PostPage, PostView};
use super::subreddit::{
    CreateSubredditRequest, GetSubredditRequest, ListSubredditsRequest, MembershipReply,
    MembershipRequest, SubredditList, SubredditView,
};
use super::user::{
    ChallengeReply, ChallengeRequest, GetUserRequest, LoginReply, LoginRequest, RegisterRequest,
    UserView, WhoAmIReply, WhoAmIRequest,
};
use super::{Op, Validate};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Which shard a request goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// The shard owning this key (a username or subreddit name).
    Key(&'a str),
    /// The caller's own shard (the user the token speaks for): feeds and DMs.
    Caller,
    /// Any one shard, named by the caller (per-shard operations).
    AnyShard,
}

/// A request of the wire contract.
pub trait Rpc: Serialize + DeserializeOwned + Validate + Send + Sync + 'static {
    /// Its operation (the subject suffix).
    const OP: Op;
    /// What a success answers with.
    type Reply: Serialize + DeserializeOwned + Send + 'static;
    /// Which shard it goes to.
    fn route(&self) -> Route<'_>;
    /// Whether it changes state (answered once durable; retried with one
    /// idempotency key).
    fn is_write() -> bool {
        Self::OP.is_write()
    }
}

/// `sub.join`: the same fields as [`MembershipRequest`], its own type so that it
/// names its operation.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JoinRequest(pub MembershipRequest);
impl Validate for JoinRequest {}

/// `sub.leave`: the same fields as [`MembershipRequest`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LeaveRequest(pub MembershipRequest);
impl Validate for LeaveRequest {}

/// `internal.hello`: no fields.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HelloRequest {}
impl Validate for HelloRequest {}

/// `shard.stats`: no fields.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StatsRequest {}
impl Validate for StatsRequest {}

macro_rules! rpcs {
    ($($req:ty => $op:ident, $reply:ty, |$r:ident| $route:expr;)*) => {
        $(
            impl Rpc for $req {
                const OP: Op = Op::$op;
                type Reply = $reply;
                fn route(&self) -> Route<'_> {
                    let $r = self;
                    $route
                }
            }
        )*

        /// Every operation a client may send (for tests that go through all).
        pub const PUBLIC_OPS: &[Op] = &[$(Op::$op,)*];

        /// Calls `v` with every public request type, in the table's order.
        pub fn visit_public(v: &mut impl RpcVisitor) {
            $(v.visit::<$req>();)*
        }

        /// Calls `c` with the request type of public operation `op` (none for an
        /// engine-to-engine operation): how a front end turns an operation named
        /// at run time into a typed call.
        pub fn with_public<C: RpcCall>(op: Op, c: C) -> Option<C::Output> {
            match op {
                $(Op::$op => Some(c.call::<$req>()),)*
                _ => None,
            }
        }
    };
}

/// Something done for each request type of the table (checking the protocol
/// document against the types, describing them in another schema language).
pub trait RpcVisitor {
    /// Called once per request type.
    fn visit<R: Rpc>(&mut self);
}

/// Something done with one request type chosen at run time ([`with_public`]).
pub trait RpcCall {
    /// What it produces.
    type Output;
    /// Does it with request type `R`.
    fn call<R: Rpc>(self) -> Self::Output;
}

/// Calls `v` with every request type, public and engine-to-engine.
pub fn visit_all(v: &mut impl RpcVisitor) {
    visit_public(v);
    visit_internal(v);
}

/// Engine-to-engine requests: addressed to a shard by number, never sent by clients.
macro_rules! internal_rpcs {
    ($($req:ty => $op:ident, $reply:ty;)*) => {
        $(
            impl Rpc for $req {
                const OP: Op = Op::$op;
                type Reply = $reply;
                fn route(&self) -> Route<'_> {
                    Route::AnyShard
                }
            }
        )*

        /// Calls `v` with every engine-to-engine request type.
        pub fn visit_internal(v: &mut impl RpcVisitor) {
            $(v.visit::<$req>();)*
        }
    };
}

internal_rpcs! {
    SyncBatch => InternalSync, SyncAck;
    DeliverDm => InternalDmDeliver, DmDelivered;
    FeedCandidatesRequest => InternalFeedCandidates, FeedCandidates;
    AuditExportRequest => InternalAuditExport, AuditExport;
    HelloRequest => InternalHello, Hello;
    ResyncRequest => InternalResync, ResyncAck;
}

rpcs! {
    RegisterRequest => UserRegister, UserView, |r| Route::Key(r.username.key());
    ChallengeRequest => AuthChallenge, ChallengeReply, |r| Route::Key(r.username.key());
    LoginRequest => AuthLogin, LoginReply, |r| Route::Key(r.username.key());
    WhoAmIRequest => AuthWhoami, WhoAmIReply, |_r| Route::Caller;
    GetUserRequest => UserGet, UserView, |r| Route::Key(r.username.key());
    CreateSubredditRequest => SubCreate, SubredditView, |r| Route::Key(r.name.key());
    GetSubredditRequest => SubGet, SubredditView, |r| Route::Key(r.name.key());
    ListSubredditsRequest => SubList, SubredditList, |_r| Route::AnyShard;
    JoinRequest => SubJoin, MembershipReply, |r| Route::Key(r.0.name.key());
    LeaveRequest => SubLeave, MembershipReply, |r| Route::Key(r.0.name.key());
    CreatePostRequest => PostCreate, PostView, |r| Route::Key(r.subreddit.key());
    GetPostRequest => PostGet, PostView, |r| Route::Key(r.subreddit.key());
    ListPostsRequest => PostList, PostPage, |r| Route::Key(r.subreddit.key());
    CreateCommentRequest => CommentCreate, CommentView, |r| Route::Key(r.subreddit.key());
    CommentTreeRequest => CommentTree, CommentTree, |r| Route::Key(r.subreddit.key());
    super::vote::VoteRequest => VoteCast, super::vote::VoteReply, |r| Route::Key(r.subreddit.key());
    FeedRequest => FeedGet, PostPage, |_r| Route::Caller;
    SendDmRequest => DmSend, DmView, |_r| Route::Caller;
    ReplyDmRequest => DmReply, DmView, |_r| Route::Caller;
    ListDmsRequest => DmList, DmPage, |_r| Route::Caller;
    MarkReadRequest => DmRead, MarkReadReply, |_r| Route::Caller;
    StatsRequest => ShardStats, ShardStats, |_r| Route::AnyShard;
    AuditRequest => AuditRun, AuditReport, |_r| Route::AnyShard;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_public_operation_has_exactly_one_request_type() {
        let public: Vec<Op> = Op::ALL
            .iter()
            .copied()
            .filter(|o| !o.is_internal())
            .collect();
        for op in &public {
            let n = PUBLIC_OPS.iter().filter(|o| *o == op).count();
            assert_eq!(n, 1, "{} has {n} request types", op.as_str());
        }
        assert_eq!(PUBLIC_OPS.len(), public.len());
    }

    #[test]
    fn with_public_picks_the_operations_request_type() {
        struct Name;
        impl RpcCall for Name {
            type Output = &'static str;
            fn call<R: Rpc>(self) -> &'static str {
                R::OP.as_str()
            }
        }
        for op in PUBLIC_OPS {
            assert_eq!(with_public(*op, Name), Some(op.as_str()));
        }
        assert_eq!(with_public(Op::InternalSync, Name), None);
    }

    #[test]
    fn join_and_leave_keep_the_membership_wire_shape() {
        let name: crate::names::SubredditName = "rust".parse().unwrap();
        let join = JoinRequest(MembershipRequest { name: name.clone() });
        let bytes = crate::codec::encode(&join).unwrap();
        assert_eq!(
            bytes,
            crate::codec::encode(&MembershipRequest { name }).unwrap()
        );
        let back: MembershipRequest = crate::codec::decode(&bytes).unwrap();
        assert_eq!(back.name.key(), "rust");
        assert_eq!(join.route(), Route::Key("rust"));
        assert!(JoinRequest::is_write() && !StatsRequest::is_write());
    }
}
