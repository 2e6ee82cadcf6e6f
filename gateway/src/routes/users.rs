//! Accounts: `POST /api/v1/users` (register) and `GET /api/v1/users/{name}`.

use super::{created, ApiJson, ApiPath};
use crate::error::{ApiResult, ErrorBody};
use crate::AppState;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use reddit_shared::names::Username;
use reddit_shared::protocol::user::{GetUserRequest, RegisterRequest, UserView};

/// Registers a user with their Ed25519 public key (64 hex digits). The private
/// key never leaves the user: make one with `openssl genpkey -algorithm ed25519`
/// or `reddit-client register`.
#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "users",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered", body = UserView),
        (status = 400, description = "Invalid name or key", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody)
    )
)]
pub async fn register(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> ApiResult<impl IntoResponse> {
    Ok(created(state.client.send(None, &req).await?))
}

/// A user's public profile: public key (to verify their signed posts), karma and
/// joined subreddits.
#[utoipa::path(
    get,
    path = "/api/v1/users/{name}",
    tag = "users",
    params(("name" = Username, Path, description = "The username")),
    responses(
        (status = 200, description = "The user", body = UserView),
        (status = 404, description = "No such user", body = ErrorBody)
    )
)]
pub async fn get_user(
    State(state): State<AppState>,
    ApiPath(username): ApiPath<Username>,
) -> ApiResult<Json<UserView>> {
    Ok(Json(
        state
            .client
            .send(None, &GetUserRequest { username })
            .await?,
    ))
}
