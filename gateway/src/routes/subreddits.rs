//! Subreddits: list, create, get, join, leave.

use super::{created, ApiJson, ApiPath, ApiQuery, Bearer, IdempotencyKey};
use crate::error::{ApiResult, ErrorBody};
use crate::AppState;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use reddit_shared::names::SubredditName;
use reddit_shared::protocol::rpc::{JoinRequest, LeaveRequest};
use reddit_shared::protocol::subreddit::{
    CreateSubredditRequest, GetSubredditRequest, MembershipReply, MembershipRequest, SubredditList,
    SubredditView,
};
use reddit_shared::protocol::DEFAULT_PAGE;
use serde::Deserialize;

/// `?limit=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct LimitQuery {
    /// At most this many (1–100, default 25).
    #[param(nullable = false, minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// Subreddits of every shard, most members first.
#[utoipa::path(
    get,
    path = "/api/v1/subreddits",
    tag = "subreddits",
    params(LimitQuery),
    responses((status = 200, description = "Most members first", body = SubredditList))
)]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> ApiResult<Json<SubredditList>> {
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    reddit_shared::protocol::check_limit(Some(limit), reddit_shared::protocol::MAX_PAGE)
        .map_err(reddit_client::ClientError::from)?;
    Ok(Json(SubredditList {
        subreddits: state.client.list_subreddits(limit).await?,
    }))
}

/// Creates a subreddit (the creator does not join it by that).
#[utoipa::path(
    post,
    path = "/api/v1/subreddits",
    tag = "subreddits",
    request_body = CreateSubredditRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = SubredditView),
        (status = 409, description = "The name is taken", body = ErrorBody)
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Bearer(s): Bearer,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(req): ApiJson<CreateSubredditRequest>,
) -> ApiResult<impl IntoResponse> {
    Ok(created(state.write(&s, &req, key).await?))
}

/// One subreddit.
#[utoipa::path(
    get,
    path = "/api/v1/r/{sub}",
    tag = "subreddits",
    params(("sub" = SubredditName, Path, description = "Subreddit name")),
    responses(
        (status = 200, description = "The subreddit", body = SubredditView),
        (status = 404, description = "No such subreddit", body = ErrorBody)
    )
)]
pub async fn get_subreddit(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<SubredditName>,
) -> ApiResult<Json<SubredditView>> {
    Ok(Json(
        state
            .client
            .send(None, &GetSubredditRequest { name })
            .await?,
    ))
}

/// Joins a subreddit (answered once the membership is on the user's shard too).
#[utoipa::path(
    post,
    path = "/api/v1/r/{sub}/join",
    tag = "subreddits",
    params(("sub" = SubredditName, Path, description = "Subreddit name")),
    security(("bearer" = [])),
    responses((status = 200, description = "Member", body = MembershipReply))
)]
pub async fn join(
    State(state): State<AppState>,
    Bearer(s): Bearer,
    IdempotencyKey(key): IdempotencyKey,
    ApiPath(name): ApiPath<SubredditName>,
) -> ApiResult<Json<MembershipReply>> {
    let req = JoinRequest(MembershipRequest { name });
    Ok(Json(state.write(&s, &req, key).await?))
}

/// Leaves a subreddit.
#[utoipa::path(
    post,
    path = "/api/v1/r/{sub}/leave",
    tag = "subreddits",
    params(("sub" = SubredditName, Path, description = "Subreddit name")),
    security(("bearer" = [])),
    responses((status = 200, description = "Not a member", body = MembershipReply))
)]
pub async fn leave(
    State(state): State<AppState>,
    Bearer(s): Bearer,
    IdempotencyKey(key): IdempotencyKey,
    ApiPath(name): ApiPath<SubredditName>,
) -> ApiResult<Json<MembershipReply>> {
    let req = LeaveRequest(MembershipRequest { name });
    Ok(Json(state.write(&s, &req, key).await?))
}
