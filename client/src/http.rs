//! The HTTP transport: the same typed calls through one or more gateways
//! (`reddit-gateway`'s RPC surface, `POST /api/v1/rpc/{op}` with JSON). A
//! [`RedditClient`](crate::RedditClient) made with
//! [`connect_http`](crate::RedditClient::connect_http) sends every request this
//! way instead of over NATS: the CLI's `--http` and the simulator's `--http`.
//!
//! Requests go round-robin over the gateways; a gateway that refuses a
//! connection is skipped for two seconds, then tried again. A failed attempt
//! (connection refused, timeout, `503`) is retried with backoff on the next one
//! within the retry budget, with the same `Idempotency-Key` on every attempt of a write, so
//! losing a gateway mid-run loses nothing and doubles nothing.

use crate::api::ClientOptions;
use crate::error::{ClientError, ErrorKind};
use reddit_shared::error::{ErrorCode, WireError};
use reddit_shared::protocol::Op;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// First pause between retries; it doubles (with jitter) up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest pause between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a gateway that refused a connection is skipped (then tried again).
const DOWN_FOR: Duration = Duration::from_secs(2);

/// One or more gateways.
#[derive(Debug)]
pub struct HttpTransport {
    bases: Vec<String>,
    next: AtomicUsize,
    /// Per gateway: until when (ms since `epoch`) it is skipped after a
    /// connection failure.
    down_until: Vec<AtomicU64>,
    epoch: std::time::Instant,
    http: reqwest::Client,
    shards: u32,
    retry_budget: Duration,
}

#[derive(Deserialize)]
struct ClusterInfo {
    shards: u32,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
}

impl HttpTransport {
    /// Gateways at `urls` (comma-separated `http://host:port`); asks one of them
    /// how many shards there are.
    pub async fn connect(urls: &str, options: &ClientOptions) -> Result<Self, ClientError> {
        let bases: Vec<String> = urls
            .split(',')
            .map(|u| u.trim().trim_end_matches('/').to_owned())
            .filter(|u| !u.is_empty())
            .collect();
        if bases.is_empty() {
            return Err(ClientError::new(ErrorKind::Connect, "no gateway URL given"));
        }
        let http = reqwest::Client::builder()
            .timeout(options.request_timeout)
            .connect_timeout(Duration::from_secs(3))
            .pool_max_idle_per_host(1024)
            .build()
            .map_err(|e| ClientError::new(ErrorKind::Connect, e.to_string()))?;
        let mut last = String::new();
        for base in &bases {
            match http.get(format!("{base}/api/v1/cluster")).send().await {
                Ok(r) if r.status().is_success() => {
                    let info: ClusterInfo = r.json().await.map_err(|e| {
                        ClientError::new(
                            ErrorKind::Discovery,
                            format!("{base}/api/v1/cluster is not a gateway's answer: {e}"),
                        )
                    })?;
                    return Ok(Self::with(bases, http, info.shards, options.retry_budget));
                }
                Ok(r) => last = format!("{base}: HTTP {}", r.status()),
                Err(e) => last = format!("{base}: {e}"),
            }
        }
        Err(ClientError::new(
            ErrorKind::Connect,
            format!("no gateway answered ({last})"),
        ))
    }

    fn with(
        bases: Vec<String>,
        http: reqwest::Client,
        shards: u32,
        retry_budget: Duration,
    ) -> Self {
        Self {
            down_until: bases.iter().map(|_| AtomicU64::new(0)).collect(),
            epoch: std::time::Instant::now(),
            bases,
            next: AtomicUsize::new(0),
            http,
            shards: shards.max(1),
            retry_budget,
        }
    }

    /// Shards behind the gateways.
    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// The gateways.
    pub fn urls(&self) -> &[String] {
        &self.bases
    }

    /// Sends `req` as operation `op` (to `shard`, for per-shard operations) with
    /// `token` and `key`, retrying within the budget; decodes the reply.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        op: Op,
        shard: Option<u32>,
        token: Option<&str>,
        req: &Req,
        key: Option<&str>,
    ) -> Result<Resp, ClientError> {
        let body = serde_json::to_vec(req)
            .map_err(|e| ClientError::new(ErrorKind::Invalid, e.to_string()))?;
        let deadline = tokio::time::Instant::now() + self.retry_budget;
        let mut delays = reddit_shared::backoff::delays(FIRST_BACKOFF, MAX_BACKOFF);
        loop {
            match self.attempt(op, shard, token, &body, key).await {
                Err(e) if e.is_retryable() => {
                    let pause = delays.next().unwrap_or(MAX_BACKOFF);
                    if tokio::time::Instant::now() + pause >= deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(pause).await;
                }
                other => return other,
            }
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The next gateway in turn that is not marked down (or the next in turn, if
    /// all are).
    fn pick(&self) -> usize {
        let n = self.bases.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| self.down_until[i].load(Ordering::Relaxed) <= now)
            .unwrap_or(start % n)
    }

    /// Skips gateway `i` for the next [`DOWN_FOR`].
    fn mark_down(&self, i: usize) {
        let until = self.now_ms() + DOWN_FOR.as_millis() as u64;
        self.down_until[i].store(until, Ordering::Relaxed);
    }

    /// One attempt, no retries (a login: its challenge is single-use).
    pub async fn call_once<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        op: Op,
        req: &Req,
    ) -> Result<Resp, ClientError> {
        let body = serde_json::to_vec(req)
            .map_err(|e| ClientError::new(ErrorKind::Invalid, e.to_string()))?;
        self.attempt(op, None, None, &body, None).await
    }

    async fn attempt<Resp: DeserializeOwned>(
        &self,
        op: Op,
        shard: Option<u32>,
        token: Option<&str>,
        body: &[u8],
        key: Option<&str>,
    ) -> Result<Resp, ClientError> {
        let i = self.pick();
        let base = &self.bases[i];
        let mut url = format!("{base}/api/v1/rpc/{}", op.as_str());
        if let Some(k) = shard {
            url.push_str(&format!("?shard={k}"));
        }
        let mut request = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        if let Some(k) = key {
            request = request.header("Idempotency-Key", k);
        }
        let response = request.send().await.map_err(|e| {
            let kind = if e.is_timeout() {
                ErrorKind::TimedOut
            } else {
                // Refused, reset, or a gateway gone: another may answer, and
                // this one is skipped for a while.
                self.mark_down(i);
                ErrorKind::Unavailable
            };
            ClientError::new(kind, format!("{} via {base}: {e}", op.as_str()))
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| {
            ClientError::new(
                ErrorKind::Unavailable,
                format!("{} via {base}: the reply was cut off: {e}", op.as_str()),
            )
        })?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                ClientError::new(
                    ErrorKind::Internal,
                    format!("{} via {base}: an undecodable reply: {e}", op.as_str()),
                )
            });
        }
        let parsed: Option<ErrorBody> = serde_json::from_slice(&bytes).ok();
        let (code, message) = match parsed {
            Some(b) => (b.code, b.message),
            None => (String::new(), String::from_utf8_lossy(&bytes).into_owned()),
        };
        if let Ok(code) =
            serde_json::from_value::<ErrorCode>(serde_json::Value::String(code.clone()))
        {
            return Err(ClientError::from(WireError::new(code, message)));
        }
        let kind = match status.as_u16() {
            401 => ErrorKind::Unauthorized,
            403 => ErrorKind::Forbidden,
            404 => ErrorKind::NotFound,
            409 => ErrorKind::Conflict,
            413 => ErrorKind::TooLarge,
            429 => ErrorKind::TooManyRequests,
            502 | 503 => ErrorKind::Unavailable,
            408 | 504 => ErrorKind::TimedOut,
            s if s >= 500 => ErrorKind::Internal,
            _ => ErrorKind::Invalid,
        };
        Err(ClientError::new(
            kind,
            format!(
                "{} via {base}: HTTP {status} {code}: {message}",
                op.as_str()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_that_refused_is_skipped_until_its_time_is_up() {
        let t = HttpTransport::with(
            vec!["http://a".into(), "http://b".into(), "http://c".into()],
            reqwest::Client::new(),
            1,
            Duration::ZERO,
        );
        let picks: Vec<usize> = (0..6).map(|_| t.pick()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2], "round-robin");
        t.mark_down(1);
        let picks: Vec<usize> = (0..6).map(|_| t.pick()).collect();
        assert!(!picks.contains(&1), "skipped while down: {picks:?}");
        assert!(picks.contains(&0) && picks.contains(&2));
        t.down_until[1].store(0, Ordering::Relaxed);
        assert!(
            (0..6).map(|_| t.pick()).any(|i| i == 1),
            "back once its time is up"
        );
        for i in 0..3 {
            t.mark_down(i);
        }
        let _ = t.pick(); // all down: still answers some gateway
    }
}
