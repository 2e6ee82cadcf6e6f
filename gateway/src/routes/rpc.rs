//! The RPC surface, for tools rather than people: `POST /api/v1/rpc/{op}` takes
//! any public operation of docs/protocol.md by name, its request as JSON (ids as
//! strings), and answers its reply as JSON. The CLI (`reddit-client --http`) and
//! the simulator (`simulate --http`) use it, so every operation works through a
//! gateway without a route of its own; `GET /api/v1/cluster` says how many
//! shards there are (for per-shard operations, `?shard=k`).

use super::{ApiBytes, ApiPath, ApiQuery, Bearer, IdempotencyKey};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::future::BoxFuture;
use futures::FutureExt;
use reddit_client::Session;
use reddit_shared::protocol::rpc::{with_public, Route, Rpc, RpcCall};
use reddit_shared::protocol::Op;
use serde::{Deserialize, Serialize};

/// `?shard=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ShardQuery {
    /// For operations that go to any one shard (`sub.list`, `shard.stats`): which.
    #[param(nullable = false)]
    pub shard: Option<u32>,
}

/// What `GET /api/v1/cluster` says.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClusterInfo {
    /// Number of shards.
    pub shards: u32,
    /// The wire protocol version the shards speak.
    pub protocol: String,
}

/// The cluster behind this gateway.
#[utoipa::path(
    get,
    path = "/api/v1/cluster",
    tag = "operators",
    responses((status = 200, description = "Shard count and protocol", body = ClusterInfo))
)]
pub async fn cluster(State(state): State<AppState>) -> Json<ClusterInfo> {
    Json(ClusterInfo {
        shards: state.client.shards(),
        protocol: reddit_shared::PROTOCOL_VERSION.to_owned(),
    })
}

/// An optional bearer (for operations that need none, like `user.register`).
pub struct MaybeBearer(pub Option<Session>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeBearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if parts
            .headers
            .contains_key(axum::http::header::AUTHORIZATION)
        {
            Ok(Self(Some(
                Bearer::from_request_parts(parts, state).await?.0,
            )))
        } else {
            Ok(Self(None))
        }
    }
}

/// Any public operation by name, its request and reply as JSON.
#[utoipa::path(
    post,
    path = "/api/v1/rpc/{op}",
    tag = "operators",
    params(
        ("op" = String, Path, description = "An operation of docs/protocol.md, e.g. `post.create`"),
        ShardQuery
    ),
    request_body(content = Object, description = "The operation's request as JSON (docs/protocol.md, section 9; ids as strings)"),
    responses(
        (status = 200, description = "The operation's reply as JSON", body = Object),
        (status = 400, description = "Malformed or invalid request (the message names the field)", body = ErrorBody),
        (status = 404, description = "No such operation, or not found", body = ErrorBody)
    )
)]
pub async fn rpc(
    State(state): State<AppState>,
    ApiPath(op): ApiPath<String>,
    ApiQuery(q): ApiQuery<ShardQuery>,
    MaybeBearer(session): MaybeBearer,
    IdempotencyKey(key): IdempotencyKey,
    ApiBytes(body): ApiBytes,
) -> ApiResult<Response> {
    let op = Op::parse(&op).filter(|o| !o.is_internal()).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_operation",
            format!("{op:?} names no public operation (docs/protocol.md, section 9)"),
        )
    })?;
    if op == Op::AuditRun {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "audit.run is for the service role, not through a gateway",
        ));
    }
    let call = Call {
        state,
        session,
        key,
        shard: q.shard,
        body,
    };
    match with_public(op, call) {
        Some(f) => f.await,
        None => Err(ApiError::invalid("not a public operation")),
    }
}

struct Call {
    state: AppState,
    session: Option<Session>,
    key: Option<String>,
    shard: Option<u32>,
    body: Bytes,
}

impl RpcCall for Call {
    type Output = BoxFuture<'static, ApiResult<Response>>;

    fn call<R: Rpc>(self) -> Self::Output {
        async move {
            let body: &[u8] = if self.body.is_empty() {
                b"{}"
            } else {
                &self.body
            };
            let de = &mut serde_json::Deserializer::from_slice(body);
            let req: R = serde_path_to_error::deserialize(de).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                if inner.is_syntax() || inner.is_eof() {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "malformed",
                        format!("the body is not valid JSON: {inner}"),
                    )
                } else if path == "." {
                    ApiError::invalid(inner.to_string())
                } else {
                    ApiError::invalid(format!("field `{path}`: {inner}"))
                }
            })?;
            let client = &self.state.client;
            let session = self.session.as_ref();
            let reply = match (req.route(), self.shard) {
                (Route::AnyShard, Some(k)) if k < client.shards() => {
                    client.send_to(k, session, &req).await?
                }
                (Route::AnyShard, Some(k)) => {
                    return Err(ApiError::invalid(format!(
                        "shard {k} does not exist (the cluster has {})",
                        client.shards()
                    )))
                }
                _ => {
                    client
                        .send_keyed(session, &req, self.key.as_deref())
                        .await?
                }
            };
            Ok(Json(reply).into_response())
        }
        .boxed()
    }
}
