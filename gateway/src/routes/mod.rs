//! The REST API: one file per domain, each handler a thin translation of one
//! HTTP call into one typed engine request (`RedditClient::send`), documented
//! for OpenAPI by its `#[utoipa::path]`. [`router`] puts them together with the
//! layers every request passes: rate limits, body size and time limits, CORS,
//! request logs.

mod auth;
mod messages;
mod posts;
pub mod rpc;
mod subreddits;
mod users;

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::{AppState, GatewayError};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use reddit_client::Session;
use std::time::Duration;
use tower_http::cors::CorsLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// A JSON body; a malformed one is `400 malformed`, a wrong shape `400
/// invalid_request` naming the field, a missing content type `415`.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// Query parameters; bad ones are `400 invalid_request`.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// Path parameters; bad ones (a malformed id, an invalid name) are `400`.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonSyntaxError(e) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed",
                format!("the body is not valid JSON: {}", e.body_text()),
            ),
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with `Content-Type: application/json`",
            ),
            JsonRejection::BytesRejection(e) => ApiError::new(
                e.status(),
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    "too_large"
                } else {
                    "invalid_request"
                },
                e.body_text(),
            ),
            other => ApiError::invalid(other.body_text()),
        }
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(r: axum::extract::rejection::BytesRejection) -> Self {
        let status = r.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "too_large"
        } else {
            "invalid_request"
        };
        ApiError::new(status, code, r.body_text())
    }
}

/// A raw body; too large is `413 too_large` in JSON.
pub struct ApiBytes(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBytes {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        axum::body::Bytes::from_request(req, state)
            .await
            .map(ApiBytes)
            .map_err(ApiError::from)
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::invalid(r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::invalid(r.body_text())
    }
}

/// The caller, from `Authorization: Bearer <token>` (the token `POST
/// /api/v1/auth/login` returned). The gateway only reads which user the token
/// names, to route; the user's shard verifies it.
pub struct Bearer(pub Session);

impl<S: Send + Sync> FromRequestParts<S> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let value = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::unauthenticated(
                    "this call needs `Authorization: Bearer <token>`; get a token from POST /api/v1/auth/challenge and /api/v1/auth/login",
                )
            })?;
        let token = value
            .to_str()
            .ok()
            .and_then(reddit_shared::auth::parse_bearer)
            .ok_or_else(|| {
                ApiError::unauthenticated("the Authorization header must be `Bearer <token>`")
            })?;
        let username = reddit_shared::auth::token_username(token)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| ApiError::unauthenticated("the token is not valid; log in again"))?;
        Ok(Bearer(Session {
            username,
            token: token.to_owned(),
            expires_at: reddit_shared::auth::token_expiry(token).unwrap_or(0),
        }))
    }
}

/// The `Idempotency-Key` header, if any: a UUID. A write repeated with the same
/// key gets the first answer (the engine remembers it); without one, a retry is
/// a new write.
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(v) = parts.headers.get("idempotency-key") else {
            return Ok(Self(None));
        };
        let key = v
            .to_str()
            .ok()
            .and_then(|s| uuid::Uuid::parse_str(s.trim()).ok())
            .ok_or_else(|| ApiError::invalid("the Idempotency-Key header must be a UUID"))?;
        Ok(Self(Some(key.hyphenated().to_string())))
    }
}

/// Status 201 with a JSON body.
pub fn created<T: serde::Serialize>(value: T) -> impl IntoResponse {
    (StatusCode::CREATED, Json(value))
}

/// The API's description (paths are added by the routers below).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "reddit-gateway",
        description = "The HTTP front door of the sharded Reddit engine. Every engine operation as JSON; ids are strings; errors are `{code, message}` with the engine's codes. Authenticate with `Authorization: Bearer <token>` from POST /api/v1/auth/login.",
        license(name = "MIT")
    ),
    components(schemas(
        ErrorBody,
        reddit_shared::protocol::post::PostSort,
        reddit_shared::protocol::comment::CommentSort,
        reddit_shared::protocol::dm::DmFolder
    )),
    tags(
        (name = "users", description = "Accounts and login"),
        (name = "subreddits", description = "Subreddits and membership"),
        (name = "posts", description = "Posts, listings, comments, votes and the feed"),
        (name = "messages", description = "Direct messages"),
        (name = "events", description = "Live pushes (Server-Sent Events)"),
        (name = "operators", description = "Health and stats")
    )
)]
pub struct ApiDoc;

/// Everything under `/api/v1`, plus health, readiness and the documents.
pub fn router(state: AppState) -> Result<Router, GatewayError> {
    let (api, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(users::register))
        .routes(routes!(users::get_user))
        .routes(routes!(auth::challenge))
        .routes(routes!(auth::login))
        .routes(routes!(subreddits::list, subreddits::create))
        .routes(routes!(subreddits::get_subreddit))
        .routes(routes!(subreddits::join))
        .routes(routes!(subreddits::leave))
        .routes(routes!(posts::listing))
        .routes(routes!(posts::create))
        .routes(routes!(posts::get_post))
        .routes(routes!(posts::comments, posts::comment))
        .routes(routes!(posts::vote))
        .routes(routes!(posts::feed))
        .routes(routes!(messages::list, messages::send))
        .routes(routes!(messages::reply))
        .routes(routes!(messages::read))
        .routes(routes!(crate::events::events))
        .routes(routes!(stats))
        .routes(routes!(rpc::rpc))
        .routes(routes!(rpc::cluster))
        .split_for_parts();
    let openapi = std::sync::Arc::new(with_common_responses(openapi));
    let docs = crate::docs::router(openapi);
    let config = state.config.clone();
    let limited = api.layer(crate::limits::LimitLayer(state.limits.clone()));
    let mut app = Router::new()
        .merge(limited)
        .merge(docs)
        .merge(crate::web::router())
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .fallback(|method: Method, uri: axum::http::Uri| async move {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no route for {method} {}; see /docs", uri.path()),
            )
        })
        .method_not_allowed_fallback(|method: Method, uri: axum::http::Uri| async move {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{} does not take {method}; see /docs", uri.path()),
            )
        })
        .with_state(state.clone())
        // The extractors enforce it, so a body too large is answered in JSON
        // like every other error (413 `too_large`).
        .layer(axum::extract::DefaultBodyLimit::max(config.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.request_timeout,
        ))
        .layer(TraceLayer::new_for_http());
    if !config.cors_origins.is_empty() {
        let origins = config
            .cors_origins
            .iter()
            .map(|o| HeaderValue::from_str(o))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| GatewayError::Config(format!("--cors-origin: {e}")))?;
        app = app.layer(
            CorsLayer::new()
                .allow_origin(origins)
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([
                    axum::http::header::AUTHORIZATION,
                    axum::http::header::CONTENT_TYPE,
                    axum::http::HeaderName::from_static("idempotency-key"),
                    axum::http::HeaderName::from_static("last-event-id"),
                ])
                .max_age(Duration::from_secs(600)),
        );
    }
    let limits = state.limits.clone();
    if limits.claim_sweep() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                limits.forget_idle();
            }
        });
    }
    Ok(app)
}

/// Adds the answers any operation may give (bad input, limits, the engine
/// unavailable) to every operation that does not list them, so the document
/// describes every status the server sends.
fn with_common_responses(mut api: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let error = |what: &str| {
        ResponseBuilder::new()
            .description(what)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
    };
    let common = [
        (
            "400",
            "Malformed or invalid input (the message names the field)",
        ),
        ("408", "The request took longer than the gateway allows"),
        ("413", "The body is too large"),
        ("415", "The body is not `application/json`"),
        ("429", "Too many requests; see `Retry-After`"),
        ("502", "The engine answered something undecodable"),
        (
            "503",
            "The engine is unavailable or overloaded; see `Retry-After`",
        ),
        ("504", "The engine did not answer in time"),
    ];
    if let Some(components) = api.components.as_mut() {
        components.add_security_scheme(
            "bearer",
            utoipa::openapi::security::SecurityScheme::Http(
                utoipa::openapi::security::HttpBuilder::new()
                    .scheme(utoipa::openapi::security::HttpAuthScheme::Bearer)
                    .description(Some(
                        "the token from POST /api/v1/auth/login (Authorization: Bearer <token>)",
                    ))
                    .build(),
            ),
        );
    }
    for item in api.paths.paths.values_mut() {
        for op in [
            item.get.as_mut(),
            item.post.as_mut(),
            item.put.as_mut(),
            item.delete.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            let needs_auth = op.security.as_ref().is_some_and(|s| !s.is_empty());
            let mut add = |code: &str, what: &str| {
                op.responses
                    .responses
                    .entry(code.to_owned())
                    .or_insert_with(|| error(what).into());
            };
            for (code, what) in common {
                add(code, what);
            }
            if needs_auth {
                add("401", "Missing, malformed, forged or expired token");
                add("403", "Not allowed for this user");
                add("404", "Not found");
            }
        }
    }
    api
}

async fn readyz(axum::extract::State(state): axum::extract::State<AppState>) -> impl IntoResponse {
    if state.ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Every shard's counters.
#[utoipa::path(
    get,
    path = "/api/v1/stats",
    tag = "operators",
    responses(
        (status = 200, description = "One entry per shard", body = Vec<reddit_shared::protocol::admin::ShardStats>),
        (status = 503, description = "A shard did not answer", body = ErrorBody)
    )
)]
async fn stats(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> ApiResult<Json<Vec<reddit_shared::protocol::admin::ShardStats>>> {
    Ok(Json(state.client.all_stats().await?))
}
