//! Live pushes as Server-Sent Events: `GET /api/v1/events` streams the caller's
//! own events (a DM arrived, a reply to their post or comment) and, with
//! `?sub=rust,golang`, new posts in those subreddits. Fed from the NATS push
//! subjects, one subscription per subject per stream.
//!
//! Each stream has a bounded buffer (`--sse-buffer`); a reader too slow to keep
//! up is dropped (the stream ends; it may reconnect), never waited for, so it
//! cannot slow the gateway or other readers. Keep-alive comments every 15 s keep
//! proxies from closing an idle stream. Pushes are not stored, so `Last-Event-ID`
//! cannot be honoured: after a reconnect, read what was missed through the API
//! (the inbox, the feed).

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::routes::{ApiQuery, Bearer};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use reddit_shared::names::SubredditName;
use reddit_shared::protocol::dm::ListDmsRequest;
use reddit_shared::protocol::push::PushEvent;
use reddit_shared::subject;
use serde::Deserialize;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::mpsc;

/// Most subreddits one stream may follow.
pub const MAX_SUBS_PER_STREAM: usize = 50;

/// `?sub=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct EventsQuery {
    /// Subreddits whose new posts to stream, comma-separated (at most 50).
    #[param(nullable = false)]
    pub sub: Option<String>,
}

/// The caller's live events, and new posts of `?sub=` subreddits.
///
/// Each event's `event` field is its kind (`dm`, `reply`, `post`) and its `data`
/// the JSON of the push (docs/protocol.md, section 10), e.g.
/// `event: dm` / `data: {"kind":"dm","dm":{...}}`. The first event, `ready`, says
/// the subscriptions are in place.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "events",
    params(EventsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "text/event-stream of push events", content_type = "text/event-stream", body = PushEvent),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 503, description = "Too many streams on this gateway", body = ErrorBody)
    )
)]
pub async fn events(
    State(state): State<AppState>,
    Bearer(session): Bearer,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let subs: Vec<SubredditName> = q
        .sub
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<SubredditName>()
                .map_err(|e| ApiError::invalid(format!("sub: {e}")))
        })
        .collect::<Result<_, _>>()?;
    if subs.len() > MAX_SUBS_PER_STREAM {
        return Err(ApiError::invalid(format!(
            "sub: at most {MAX_SUBS_PER_STREAM} subreddits per stream"
        )));
    }
    // The gateway cannot check tokens itself: a cheap authenticated call on the
    // user's shard does, before anything of theirs is streamed.
    let probe = ListDmsRequest {
        limit: Some(1),
        ..ListDmsRequest::default()
    };
    state.client.send(Some(&session), &probe).await?;
    let permit = state.sse.clone().try_acquire_owned().map_err(|_| {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this gateway serves its maximum of event streams; try another or later",
        );
        e.retry_after = Some(5);
        e
    })?;
    let mut subjects = vec![subject::user_events(session.username.key())];
    subjects.extend(subs.iter().map(|s| subject::subreddit_events(s.key())));
    let mut streams = Vec::with_capacity(subjects.len());
    for s in subjects {
        let sub = state.nats.subscribe(s).await.map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("cannot subscribe to events: {e}"),
            )
        })?;
        streams.push(sub);
    }
    // Make sure NATS has the subscriptions before saying `ready`.
    let _ = tokio::time::timeout(Duration::from_secs(2), state.nats.flush()).await;
    let (tx, rx) = mpsc::channel::<Event>(state.config.sse_buffer.max(1));
    let user = session.username.to_string();
    tokio::spawn(async move {
        let _permit = permit;
        let mut merged = futures::stream::select_all(streams);
        let mut n: u64 = 0;
        if tx
            .try_send(Event::default().event("ready").data("{}"))
            .is_err()
        {
            return;
        }
        loop {
            let msg = tokio::select! {
                () = tx.closed() => break,
                msg = merged.next() => match msg {
                    Some(m) => m,
                    None => break,
                },
            };
            let Ok(push) = reddit_shared::codec::decode::<PushEvent>(&msg.payload) else {
                continue;
            };
            let kind = match &push {
                PushEvent::Dm { .. } => "dm",
                PushEvent::Reply { .. } => "reply",
                PushEvent::Post { .. } => "post",
            };
            let Ok(json) = serde_json::to_string(&push) else {
                continue;
            };
            n += 1;
            let event = Event::default().event(kind).id(n.to_string()).data(json);
            match tx.try_send(event) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::info!(%user, "dropped an event stream: the reader is too slow");
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => break,
            }
        }
    });
    let stream = tokio_stream_from(rx);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn tokio_stream_from(rx: mpsc::Receiver<Event>) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
    )
}
