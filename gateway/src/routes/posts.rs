//! Posts and what hangs off them: listings with Reddit's `after` cursors, a
//! post, creating (signed or not), comments at any depth, votes, the feed.

use super::{created, ApiJson, ApiPath, ApiQuery, Bearer, IdempotencyKey};
use crate::error::{ApiResult, ErrorBody};
use crate::AppState;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use reddit_shared::ids::{CommentId, PostId};
use reddit_shared::names::SubredditName;
use reddit_shared::protocol::comment::{
    CommentSort, CommentTree, CommentTreeRequest, CommentView, CreateCommentRequest,
};
use reddit_shared::protocol::feed::FeedRequest;
use reddit_shared::protocol::post::{
    CreatePostRequest, GetPostRequest, ListPostsRequest, PostPage, PostSort, PostView,
};
use reddit_shared::protocol::vote::{VoteReply, VoteRequest};
use reddit_shared::protocol::PostRef;
use serde::Deserialize;

/// `?after=&limit=` of a listing.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct PageQuery {
    /// The `next_cursor` of the previous page.
    #[param(nullable = false)]
    pub after: Option<String>,
    /// Page size, 1–100 (default 25).
    #[param(nullable = false, minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// A listing of a subreddit: `hot`, `new`, `top` or `controversial`.
#[utoipa::path(
    get,
    path = "/api/v1/r/{sub}/{sort}",
    tag = "posts",
    params(
        ("sub" = SubredditName, Path, description = "Subreddit name"),
        ("sort" = PostSort, Path, description = "hot, new, top or controversial"),
        PageQuery
    ),
    responses(
        (status = 200, description = "One page; `next_cursor` goes in `after` for the next", body = PostPage),
        (status = 400, description = "Bad sort, cursor or limit", body = ErrorBody),
        (status = 404, description = "No such subreddit", body = ErrorBody)
    )
)]
pub async fn listing(
    State(state): State<AppState>,
    ApiPath((subreddit, sort)): ApiPath<(SubredditName, PostSort)>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<PostPage>> {
    let req = ListPostsRequest {
        subreddit,
        sort,
        limit: q.limit,
        cursor: q.after,
    };
    Ok(Json(state.client.send(None, &req).await?))
}

/// A new post (`POST /api/v1/r/{sub}/posts`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NewPost {
    /// 1–300 characters, one line.
    #[schema(min_length = 1, max_length = 300, pattern = "^[^\\r\\n]+$")]
    pub title: String,
    /// Up to 40,000 characters.
    #[serde(default)]
    #[schema(max_length = 40000)]
    pub body: Option<String>,
    /// The original, for a repost.
    #[serde(default)]
    pub repost_of: Option<PostRef>,
    /// The author's Ed25519 signature (128 hex digits) of
    /// `reddit-post-v1\n<author>\n<subreddit>\n<repost>\n<title>\n<body>`
    /// (docs/protocol.md, "Signed posts and comments").
    #[serde(default)]
    #[schema(pattern = "^[0-9a-fA-F]{128}$")]
    pub signature: Option<String>,
}

/// Posts to a subreddit, signed or not.
#[utoipa::path(
    post,
    path = "/api/v1/r/{sub}/posts",
    tag = "posts",
    params(("sub" = SubredditName, Path, description = "Subreddit name")),
    request_body = NewPost,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = PostView),
        (status = 400, description = "Invalid, or the signature does not verify", body = ErrorBody),
        (status = 404, description = "No such subreddit (or original of a repost)", body = ErrorBody)
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Bearer(s): Bearer,
    IdempotencyKey(key): IdempotencyKey,
    ApiPath(subreddit): ApiPath<SubredditName>,
    ApiJson(p): ApiJson<NewPost>,
) -> ApiResult<impl IntoResponse> {
    let req = CreatePostRequest {
        subreddit,
        title: p.title,
        body: p.body.unwrap_or_default(),
        repost_of: p.repost_of,
        signature: p.signature,
    };
    Ok(created(state.write(&s, &req, key).await?))
}

/// One post.
#[utoipa::path(
    get,
    path = "/api/v1/r/{sub}/posts/{id}",
    tag = "posts",
    params(
        ("sub" = SubredditName, Path, description = "Subreddit name"),
        ("id" = PostId, Path, description = "Post id")
    ),
    responses(
        (status = 200, description = "The post", body = PostView),
        (status = 404, description = "No such post", body = ErrorBody)
    )
)]
pub async fn get_post(
    State(state): State<AppState>,
    ApiPath((subreddit, id)): ApiPath<(SubredditName, PostId)>,
) -> ApiResult<Json<PostView>> {
    Ok(Json(
        state
            .client
            .send(None, &GetPostRequest { subreddit, id })
            .await?,
    ))
}

/// `?sort=&limit=&root=` of a comment tree.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct TreeQuery {
    /// best (default), top or new.
    #[param(nullable = false)]
    pub sort: Option<CommentSort>,
    /// At most this many comments (1–2,000).
    #[param(nullable = false, minimum = 1, maximum = 2000)]
    pub limit: Option<u32>,
    /// Only the thread under this comment.
    #[param(nullable = false)]
    pub root: Option<CommentId>,
}

/// A post's comments as a tree.
#[utoipa::path(
    get,
    path = "/api/v1/r/{sub}/posts/{id}/comments",
    tag = "posts",
    params(
        ("sub" = SubredditName, Path, description = "Subreddit name"),
        ("id" = PostId, Path, description = "Post id"),
        TreeQuery
    ),
    responses(
        (status = 200, description = "Nested comments", body = CommentTree),
        (status = 404, description = "No such post (or root comment)", body = ErrorBody)
    )
)]
pub async fn comments(
    State(state): State<AppState>,
    ApiPath((subreddit, post_id)): ApiPath<(SubredditName, PostId)>,
    ApiQuery(q): ApiQuery<TreeQuery>,
) -> ApiResult<Json<CommentTree>> {
    let req = CommentTreeRequest {
        subreddit,
        post_id,
        sort: q.sort.unwrap_or_default(),
        limit: q.limit,
        root: q.root,
    };
    Ok(Json(state.client.send(None, &req).await?))
}

/// A new comment (`POST .../comments`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NewComment {
    /// 1–40,000 characters.
    #[schema(min_length = 1, max_length = 40000)]
    pub body: String,
    /// The comment answered; absent for a comment on the post.
    #[serde(default)]
    pub parent_id: Option<CommentId>,
    /// The author's signature of
    /// `reddit-comment-v1\n<author>\n<subreddit>\n<post_id>\n<parent_id or ->\n<body>`.
    #[serde(default)]
    #[schema(pattern = "^[0-9a-fA-F]{128}$")]
    pub signature: Option<String>,
}

/// Comments on a post, or replies to a comment at any depth.
#[utoipa::path(
    post,
    path = "/api/v1/r/{sub}/posts/{id}/comments",
    tag = "posts",
    params(
        ("sub" = SubredditName, Path, description = "Subreddit name"),
        ("id" = PostId, Path, description = "Post id")
    ),
    request_body = NewComment,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = CommentView),
        (status = 400, description = "Invalid, or the signature does not verify", body = ErrorBody),
        (status = 404, description = "No such post or parent", body = ErrorBody)
    )
)]
pub async fn comment(
    State(state): State<AppState>,
    Bearer(s): Bearer,
    IdempotencyKey(key): IdempotencyKey,
    ApiPath((subreddit, post_id)): ApiPath<(SubredditName, PostId)>,
    ApiJson(c): ApiJson<NewComment>,
) -> ApiResult<impl IntoResponse> {
    let req = CreateCommentRequest {
        subreddit,
        post_id,
        parent_id: c.parent_id,
        body: c.body,
        signature: c.signature,
    };
    Ok(created(state.write(&s, &req, key).await?))
}

/// Votes on a post or comment: `value` 1, -1 or 0 (clear).
#[utoipa::path(
    post,
    path = "/api/v1/vote",
    tag = "posts",
    request_body = VoteRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The item's new score", body = VoteReply),
        (status = 404, description = "No such item", body = ErrorBody)
    )
)]
pub async fn vote(
    State(state): State<AppState>,
    Bearer(s): Bearer,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(req): ApiJson<VoteRequest>,
) -> ApiResult<Json<VoteReply>> {
    Ok(Json(state.write(&s, &req, key).await?))
}

/// `?sort=&after=&limit=&fresh=` of the feed.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct FeedQuery {
    /// hot (default), new, top or controversial.
    #[param(nullable = false)]
    pub sort: Option<PostSort>,
    /// The `next_cursor` of the previous page.
    #[param(nullable = false)]
    pub after: Option<String>,
    /// Page size, 1–100 (default 25).
    #[param(nullable = false, minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// true: read every subreddit's shard now. Without it, the first page may
    /// show other shards' subreddits as they were up to the engine's feed
    /// cache time (1 s by default) ago.
    #[param(nullable = false)]
    pub fresh: Option<bool>,
}

/// The caller's feed: posts of the subreddits they joined.
#[utoipa::path(
    get,
    path = "/api/v1/feed",
    tag = "posts",
    params(FeedQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "One page", body = PostPage))
)]
pub async fn feed(
    State(state): State<AppState>,
    Bearer(s): Bearer,
    ApiQuery(q): ApiQuery<FeedQuery>,
) -> ApiResult<Json<PostPage>> {
    let req = FeedRequest {
        sort: q.sort.unwrap_or_default(),
        limit: q.limit,
        cursor: q.after,
        fresh: q.fresh.unwrap_or(false),
    };
    Ok(Json(state.client.send(Some(&s), &req).await?))
}
