//! Login by key through the API: `POST /api/v1/auth/challenge`, sign the bytes
//! `reddit-login-v1\n<lowercase username>\n<challenge>` with the registered key,
//! then `POST /api/v1/auth/login`. The gateway never sees a private key.

use super::ApiJson;
use crate::error::{ApiResult, ErrorBody};
use crate::AppState;
use axum::extract::State;
use axum::Json;
use reddit_shared::protocol::user::{ChallengeReply, ChallengeRequest, LoginReply, LoginRequest};

/// A one-time login challenge (valid one minute).
#[utoipa::path(
    post,
    path = "/api/v1/auth/challenge",
    tag = "users",
    request_body = ChallengeRequest,
    responses(
        (status = 200, description = "Sign it to log in", body = ChallengeReply),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 429, description = "Too many challenges", body = ErrorBody)
    )
)]
pub async fn challenge(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ChallengeRequest>,
) -> ApiResult<Json<ChallengeReply>> {
    Ok(Json(state.client.send(None, &req).await?))
}

/// Exchanges a signed challenge for a bearer token.
#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "users",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "The token: send it as `Authorization: Bearer <token>`", body = LoginReply),
        (status = 401, description = "Bad, used or expired challenge or signature", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody)
    )
)]
pub async fn login(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Json<LoginReply>> {
    Ok(Json(state.client.send(None, &req).await?))
}
