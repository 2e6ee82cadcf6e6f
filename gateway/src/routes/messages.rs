//! Direct messages: list (inbox or sent), send, reply, mark read.

use super::{created, ApiJson, ApiPath, ApiQuery, Bearer, IdempotencyKey};
use crate::error::{ApiResult, ErrorBody};
use crate::AppState;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use reddit_shared::ids::DmId;
use reddit_shared::protocol::dm::{
    DmFolder, DmPage, DmView, ListDmsRequest, MarkReadReply, MarkReadRequest, ReplyDmRequest,
    SendDmRequest,
};
use serde::Deserialize;

/// `?folder=&unread_only=&after=&limit=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct DmQuery {
    /// inbox (default) or sent.
    #[param(nullable = false)]
    pub folder: Option<DmFolder>,
    /// Only unread messages (inbox).
    #[param(nullable = false)]
    pub unread_only: Option<bool>,
    /// The `next_cursor` of the previous page.
    #[param(nullable = false)]
    pub after: Option<String>,
    /// Page size, 1–100 (default 25).
    #[param(nullable = false, minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// The caller's messages, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/messages",
    tag = "messages",
    params(DmQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "One page, with the unread count", body = DmPage))
)]
pub async fn list(
    State(state): State<AppState>,
    Bearer(s): Bearer,
    ApiQuery(q): ApiQuery<DmQuery>,
) -> ApiResult<Json<DmPage>> {
    let req = ListDmsRequest {
        folder: q.folder.unwrap_or_default(),
        unread_only: q.unread_only.unwrap_or(false),
        limit: q.limit,
        cursor: q.after,
    };
    Ok(Json(state.client.send(Some(&s), &req).await?))
}

/// Sends a message.
#[utoipa::path(
    post,
    path = "/api/v1/messages",
    tag = "messages",
    request_body = SendDmRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Sent (and in the recipient's inbox)", body = DmView),
        (status = 404, description = "No such recipient", body = ErrorBody)
    )
)]
pub async fn send(
    State(state): State<AppState>,
    Bearer(s): Bearer,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(req): ApiJson<SendDmRequest>,
) -> ApiResult<impl IntoResponse> {
    Ok(created(state.write(&s, &req, key).await?))
}

/// The body of a reply.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ReplyBody {
    /// 1–40,000 characters.
    #[schema(min_length = 1, max_length = 40000)]
    pub body: String,
}

/// Replies to a message in the caller's inbox.
#[utoipa::path(
    post,
    path = "/api/v1/messages/{id}/reply",
    tag = "messages",
    params(("id" = DmId, Path, description = "A message in the caller's inbox")),
    request_body = ReplyBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Sent to the message's sender", body = DmView),
        (status = 403, description = "Not in the caller's inbox", body = ErrorBody)
    )
)]
pub async fn reply(
    State(state): State<AppState>,
    Bearer(s): Bearer,
    IdempotencyKey(key): IdempotencyKey,
    ApiPath(dm_id): ApiPath<DmId>,
    ApiJson(r): ApiJson<ReplyBody>,
) -> ApiResult<impl IntoResponse> {
    let req = ReplyDmRequest {
        dm_id,
        body: r.body,
    };
    Ok(created(state.write(&s, &req, key).await?))
}

/// Marks messages of the caller's inbox read.
#[utoipa::path(
    post,
    path = "/api/v1/messages/read",
    tag = "messages",
    request_body = MarkReadRequest,
    security(("bearer" = [])),
    responses((status = 200, description = "How many changed, and the unread count", body = MarkReadReply))
)]
pub async fn read(
    State(state): State<AppState>,
    Bearer(s): Bearer,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(req): ApiJson<MarkReadRequest>,
) -> ApiResult<Json<MarkReadReply>> {
    Ok(Json(state.write(&s, &req, key).await?))
}
