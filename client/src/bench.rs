//! `reddit-client bench`: the engine against a do-nothing responder (`reddit-echo`,
//! the same service framework) through the same broker and the same harness.
//!
//! For each number of requests in flight it runs a closed loop of the engine's own
//! request bytes (same headers) for reads (`post.get`) and votes (`vote.cast`),
//! first to `reddit.echo.<reply size>` and then to the engine, and reports
//! throughput and latency percentiles and the engine/echo ratios. Replies are not
//! decoded in either case; an error header counts as an error.

use crate::sim::metrics::new_histogram;
use crate::{ClientError, ErrorKind, Identity, RedditClient};
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use reddit_shared::auth::{bearer, AUTH_HEADER};
use reddit_shared::codec::encode;
use reddit_shared::error::ERROR_CODE_HEADER;
use reddit_shared::names::{SubredditName, Username};
use reddit_shared::protocol::post::{CreatePostRequest, GetPostRequest};
use reddit_shared::protocol::vote::{VoteRequest, VoteTarget};
use reddit_shared::protocol::Op;
use reddit_shared::subject;
use serde::Serialize;
use std::time::{Duration, Instant};

/// One closed-loop measurement.
#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    /// `echo` or `engine`.
    pub target: String,
    /// `read` or `vote`.
    pub op: String,
    /// Requests in flight.
    pub in_flight: usize,
    /// Completed requests.
    pub count: u64,
    /// Of which errors.
    pub errors: u64,
    /// Completions per second.
    pub throughput: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
}

impl Measurement {
    /// A measurement from a closed loop's (count, errors, histogram, seconds),
    /// printed as it is made.
    fn of(
        target: &str,
        op: &str,
        in_flight: usize,
        (count, errors, hist, secs): (u64, u64, hdrhistogram::Histogram<u64>, f64),
    ) -> Self {
        let m = Measurement {
            target: target.to_owned(),
            op: op.to_owned(),
            in_flight,
            count,
            errors,
            throughput: count as f64 / secs.max(1e-9),
            p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
            p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
        };
        eprintln!(
            "  {:>7} {:<4} in-flight {:>3}: {:>8.0} ops/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}",
            m.target, m.op, m.in_flight, m.throughput, m.p50_ms, m.p99_ms, m.errors
        );
        m
    }
}

/// A user (logged in), a subreddit and a post of it, named with `prefix` and a
/// random tag: what both benchmarks read and vote on.
async fn setup(
    client: &RedditClient,
    prefix: &str,
) -> Result<
    (
        crate::Session,
        SubredditName,
        reddit_shared::protocol::post::PostView,
    ),
    ClientError,
> {
    let tag: String = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let bad =
        |e: reddit_shared::names::NameError| ClientError::new(ErrorKind::Invalid, e.to_string());
    let user: Username = format!("{prefix}{tag}").parse().map_err(bad)?;
    let sub: SubredditName = format!("{prefix}_{tag}").parse().map_err(bad)?;
    let id = Identity::generate();
    client.register(&user, &id).await?;
    let session = client.login(&user, &id).await?;
    client.create_subreddit(&session, &sub, "benchmark").await?;
    let post = client
        .send(
            Some(&session),
            &CreatePostRequest {
                subreddit: sub.clone(),
                title: "benchmark post".into(),
                body: "x".repeat(200),
                repost_of: None,
                signature: None,
            },
        )
        .await?;
    Ok((session, sub, post))
}

struct Workload {
    op: &'static str,
    engine_subject: String,
    echo_subject: String,
    headers: async_nats::HeaderMap,
    payloads: Vec<Bytes>,
}

async fn closed_loop(
    nats: &async_nats::Client,
    subject: &str,
    w: &Workload,
    in_flight: usize,
    duration: Duration,
    timeout: Duration,
) -> (u64, u64, hdrhistogram::Histogram<u64>, f64) {
    let send = |i: usize| {
        let nats = nats.clone();
        let request = async_nats::Request::new()
            .payload(w.payloads[i % w.payloads.len()].clone())
            .headers(w.headers.clone())
            .timeout(Some(timeout));
        let subject = subject.to_owned();
        async move {
            match nats.send_request(subject, request).await {
                Ok(msg) => msg
                    .headers
                    .as_ref()
                    .is_some_and(|h| h.get(ERROR_CODE_HEADER).is_some()),
                Err(_) => true,
            }
        }
    };
    typed_loop(send, in_flight, duration).await
}

/// Runs the comparison at each of `levels` requests in flight, `seconds` each.
pub async fn run(
    client: &RedditClient,
    levels: &[usize],
    seconds: f64,
    timeout: Duration,
) -> Result<Vec<Measurement>, ClientError> {
    let (session, sub, post) = setup(client, "bench").await?;
    let shard = client.shard_of(sub.key());
    let nats = client
        .nats()
        .ok_or_else(|| {
            ClientError::new(
                crate::error::ErrorKind::Unavailable,
                "the benchmark compares the engine with an echo responder over NATS: it needs a NATS URL",
            )
        })?
        .clone();
    let reply_size = |subject: String, payload: Bytes, headers: async_nats::HeaderMap| {
        let nats = nats.clone();
        async move {
            nats.send_request(
                subject,
                async_nats::Request::new().payload(payload).headers(headers),
            )
            .await
            .map(|m| m.payload.len())
            .map_err(|e| ClientError::new(ErrorKind::Unavailable, e.to_string()))
        }
    };
    let mut auth = async_nats::HeaderMap::new();
    auth.insert(AUTH_HEADER, bearer(&session.token).as_str());
    let read = Bytes::from(encode(&GetPostRequest {
        subreddit: sub.clone(),
        id: post.id,
    })?);
    let votes: Vec<Bytes> = [1i8, -1]
        .iter()
        .map(|v| {
            encode(&VoteRequest {
                subreddit: sub.clone(),
                target: VoteTarget::Post,
                id: post.id.0,
                value: *v,
            })
            .map(Bytes::from)
        })
        .collect::<Result<_, _>>()?;
    let read_subject = subject::request(shard, Op::PostGet);
    let vote_subject = subject::request(shard, Op::VoteCast);
    let read_size = reply_size(
        read_subject.clone(),
        read.clone(),
        async_nats::HeaderMap::new(),
    )
    .await?;
    let vote_size = reply_size(vote_subject.clone(), votes[0].clone(), auth.clone()).await?;
    let workloads = [
        Workload {
            op: "read",
            engine_subject: read_subject,
            echo_subject: subject::echo(read_size),
            headers: async_nats::HeaderMap::new(),
            payloads: vec![read],
        },
        Workload {
            op: "vote",
            engine_subject: vote_subject,
            echo_subject: subject::echo(vote_size),
            headers: auth,
            payloads: votes,
        },
    ];
    // Is the echo responder there?
    nats.request(subject::echo(read_size), Bytes::new())
        .await
        .map_err(|e| {
            ClientError::new(
                ErrorKind::Unavailable,
                format!("reddit-echo is not running: {e}"),
            )
        })?;

    let duration = Duration::from_secs_f64(seconds);
    // Warm up both paths.
    for w in &workloads {
        closed_loop(
            &nats,
            &w.engine_subject,
            w,
            16,
            Duration::from_millis(500),
            timeout,
        )
        .await;
        closed_loop(
            &nats,
            &w.echo_subject,
            w,
            16,
            Duration::from_millis(500),
            timeout,
        )
        .await;
    }
    let mut out = Vec::new();
    for &level in levels {
        for w in &workloads {
            for (target, subject) in [("echo", &w.echo_subject), ("engine", &w.engine_subject)] {
                let (count, errors, hist, secs) =
                    closed_loop(&nats, subject, w, level, duration, timeout).await;
                out.push(Measurement::of(
                    target,
                    w.op,
                    level,
                    (count, errors, hist, secs),
                ));
            }
        }
    }
    Ok(out)
}

/// A closed loop of `in_flight` calls made by `call` (given the request number;
/// it answers whether the call failed) for `duration`: counts, errors, the
/// latency histogram and the seconds it took.
async fn typed_loop<F, Fut>(
    call: F,
    in_flight: usize,
    duration: Duration,
) -> (u64, u64, hdrhistogram::Histogram<u64>, f64)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut hist = new_histogram();
    let (mut count, mut errors) = (0u64, 0u64);
    let mut sent = 0usize;
    let mut pending = FuturesUnordered::new();
    let start = Instant::now();
    let end = start + duration;
    let timed = |i: usize| {
        let f = call(i);
        async move {
            let t = Instant::now();
            let failed = f.await;
            (t.elapsed(), failed)
        }
    };
    for _ in 0..in_flight {
        pending.push(timed(sent));
        sent += 1;
    }
    while let Some((latency, failed)) = pending.next().await {
        count += 1;
        errors += u64::from(failed);
        let _ = hist.record((latency.as_micros() as u64).max(1));
        if Instant::now() < end {
            pending.push(timed(sent));
            sent += 1;
        }
    }
    (count, errors, hist, start.elapsed().as_secs_f64())
}

/// The same typed reads (`post.get`) and votes (`vote.cast`) through the client
/// library over NATS (`direct`) and through HTTP gateways (`gateway`, made with
/// [`RedditClient::connect_http`]), at each of `levels` requests in flight.
/// Unlike [`run`], replies are decoded on both paths: this measures what a client
/// of each front door gets.
pub async fn gateway(
    direct: &RedditClient,
    gateway: &RedditClient,
    levels: &[usize],
    seconds: f64,
) -> Result<Vec<Measurement>, ClientError> {
    let (session, sub, post) = setup(direct, "gwbench").await?;
    let read = GetPostRequest {
        subreddit: sub.clone(),
        id: post.id,
    };
    let vote = |i: usize| VoteRequest {
        subreddit: sub.clone(),
        target: VoteTarget::Post,
        id: post.id.0,
        value: if i.is_multiple_of(2) { 1 } else { -1 },
    };
    let duration = Duration::from_secs_f64(seconds);
    let mut out = Vec::new();
    let targets = [("nats", direct), ("gateway", gateway)];
    for (_, c) in targets {
        // Warm up: connections, pools, caches.
        typed_loop(
            |_| async { c.send(None, &read).await.is_err() },
            16,
            Duration::from_millis(500),
        )
        .await;
    }
    for &level in levels {
        for op in ["read", "vote"] {
            for (target, c) in targets {
                let (count, errors, hist, secs) = if op == "read" {
                    typed_loop(
                        |_| async { c.send(None, &read).await.is_err() },
                        level,
                        duration,
                    )
                    .await
                } else {
                    let s = &session;
                    let vote = &vote;
                    typed_loop(
                        |i| async move { c.send(Some(s), &vote(i)).await.is_err() },
                        level,
                        duration,
                    )
                    .await
                };
                out.push(Measurement::of(
                    target,
                    op,
                    level,
                    (count, errors, hist, secs),
                ));
            }
        }
    }
    Ok(out)
}

/// The gateway comparison table: one row per (in flight, op), gateway/NATS ratios.
pub fn gateway_table(ms: &[Measurement]) -> String {
    let rows = ms.iter().filter(|m| m.target == "nats").filter_map(|d| {
        let g = ms
            .iter()
            .find(|m| m.target == "gateway" && m.op == d.op && m.in_flight == d.in_flight)?;
        Some(vec![
            d.in_flight.to_string(),
            d.op.clone(),
            format!("{:.0}", d.throughput),
            format!("{:.0}", g.throughput),
            format!("{:.2}", g.throughput / d.throughput.max(1e-9)),
            format!("{:.2}ms", d.p99_ms),
            format!("{:.2}ms", g.p99_ms),
            format!("{}", d.errors + g.errors),
        ])
    });
    crate::table::render(
        &[
            "in-flight",
            "op",
            "NATS ops/s",
            "gateway ops/s",
            "ratio",
            "NATS p99",
            "gateway p99",
            "errors",
        ],
        rows,
        0,
    )
}

/// The comparison table: one row per (in flight, op) with engine/echo ratios.
pub fn table(ms: &[Measurement]) -> String {
    let rows = ms.iter().filter(|m| m.target == "echo").filter_map(|e| {
        let g = ms
            .iter()
            .find(|m| m.target == "engine" && m.op == e.op && m.in_flight == e.in_flight)?;
        Some(vec![
            e.in_flight.to_string(),
            e.op.clone(),
            format!("{:.0}", e.throughput),
            format!("{:.0}", g.throughput),
            format!("{:.2}", g.throughput / e.throughput.max(1e-9)),
            format!("{:.2}ms", e.p99_ms),
            format!("{:.2}ms", g.p99_ms),
            format!("{:.2}", g.p99_ms / e.p99_ms.max(1e-9)),
        ])
    });
    crate::table::render(
        &[
            "in-flight",
            "op",
            "echo ops/s",
            "engine ops/s",
            "ratio",
            "echo p99",
            "engine p99",
            "ratio",
        ],
        rows,
        0,
    )
}
