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
use reddit_shared::protocol::post::{CreatePostRequest, GetPostRequest, PostView};
use reddit_shared::protocol::vote::{VoteReply, VoteRequest, VoteTarget};
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

/// The same typed reads (`post.get`) and votes (`vote.cast`) over NATS through
/// the client library (`nats`), and through the HTTP gateway at `base` two
/// ways: the REST routes a person would call (`GET /api/v1/r/{sub}/posts/{id}`,
/// `POST /api/v1/vote`) over bare HTTP/1.1 connections, one per request in
/// flight, like wrk or oha ([`rest_loop`]; `gateway`), and the client library's
/// HTTP transport (`POST /api/v1/rpc/{op}` through `reqwest`, as `reddit-client
/// --http` sends everything; `client-http`). Replies are decoded on every path,
/// at each of `levels` requests in flight.
pub async fn gateway(
    direct: &RedditClient,
    library: &RedditClient,
    base: &str,
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
    let rest = Rest::new(base, &session, &read, [vote(0), vote(1)])?;
    let duration = Duration::from_secs_f64(seconds);
    let mut out = Vec::new();
    let warm_up = Duration::from_millis(500);
    for c in [direct, library] {
        // Warm up: connections, pools, caches.
        typed_loop(
            |_| async { c.send(None, &read).await.is_err() },
            16,
            warm_up,
        )
        .await;
    }
    rest_loop(&rest, RestOp::Read, 16, warm_up).await;
    for &level in levels {
        for (op, rest_op) in [("read", RestOp::Read), ("vote", RestOp::Vote)] {
            for (target, c) in [
                ("nats", Some(direct)),
                ("gateway", None),
                ("client-http", Some(library)),
            ] {
                let measured = match (c, op) {
                    (None, _) => rest_loop(&rest, rest_op, level, duration).await,
                    (Some(c), "read") => {
                        typed_loop(
                            |_| async { c.send(None, &read).await.is_err() },
                            level,
                            duration,
                        )
                        .await
                    }
                    (Some(c), _) => {
                        let (s, vote) = (&session, &vote);
                        typed_loop(
                            |i| async move { c.send(Some(s), &vote(i)).await.is_err() },
                            level,
                            duration,
                        )
                        .await
                    }
                };
                out.push(Measurement::of(target, op, level, measured));
            }
        }
    }
    Ok(out)
}

/// What [`rest_loop`] sends: where, and each request's bytes, made once.
struct Rest {
    /// `host:port` to connect to.
    addr: String,
    /// `GET` of the post, whole.
    read: Bytes,
    /// A vote up and a vote down, whole (`POST` with a bearer token and a
    /// JSON body), taken in turn.
    votes: [Bytes; 2],
}

/// A read or a vote, for [`rest_loop`].
#[derive(Clone, Copy)]
enum RestOp {
    Read,
    Vote,
}

impl Rest {
    fn new(
        base: &str,
        session: &crate::Session,
        read: &GetPostRequest,
        votes: [VoteRequest; 2],
    ) -> Result<Self, ClientError> {
        let bad = |what: String| ClientError::new(ErrorKind::Invalid, what);
        let url = reqwest::Url::parse(base).map_err(|e| bad(format!("gateway URL {base}: {e}")))?;
        if url.scheme() != "http" {
            return Err(bad(format!(
                "gateway URL {base}: the benchmark speaks plain http"
            )));
        }
        let host = url
            .host_str()
            .ok_or_else(|| bad(format!("gateway URL {base} has no host")))?;
        let port = url.port_or_known_default().unwrap_or(80);
        let authority = format!("{host}:{port}");
        let vote = |v: &VoteRequest| {
            let body = serde_json::to_string(v).map_err(|e| bad(e.to_string()))?;
            Ok::<_, ClientError>(Bytes::from(format!(
                "POST /api/v1/vote HTTP/1.1\r\nHost: {authority}\r\n\
                 Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                session.token,
                body.len()
            )))
        };
        Ok(Self {
            addr: authority.clone(),
            read: Bytes::from(format!(
                "GET /api/v1/r/{}/posts/{} HTTP/1.1\r\nHost: {authority}\r\n\r\n",
                read.subreddit, read.id
            )),
            votes: [vote(&votes[0])?, vote(&votes[1])?],
        })
    }

    /// Request number `i` of `op`.
    fn request(&self, op: RestOp, i: usize) -> &[u8] {
        match op {
            RestOp::Read => &self.read,
            RestOp::Vote => &self.votes[i % 2],
        }
    }
}

/// How long after the end of a measurement a reply may still come before
/// its connection gives up on it (an error).
const REST_GRACE: Duration = Duration::from_secs(5);

/// A closed loop through the gateway's REST routes: `in_flight` HTTP/1.1
/// connections, each sending its next request as soon as the reply is in
/// and decoded (a post, or a vote's new score); a status other than 200, a
/// body that does not decode, a reply that is not whole HTTP or a lost
/// connection counts as an error (after the last two, the connection is
/// made again). All on the calling task, each request's bytes made once and
/// each reply read straight off its socket, like wrk: on a box where the
/// load generator shares the cores with what it measures, the cores it does
/// not use go to what is measured.
async fn rest_loop(
    rest: &Rest,
    op: RestOp,
    in_flight: usize,
    duration: Duration,
) -> (u64, u64, hdrhistogram::Histogram<u64>, f64) {
    let start = Instant::now();
    let end = start + duration;
    let workers = (0..in_flight).map(|w| rest_connection(rest, op, w, end));
    let mut hist = new_histogram();
    let (mut count, mut errors) = (0u64, 0u64);
    for (c, e, h) in futures::future::join_all(workers).await {
        count += c;
        errors += e;
        let _ = hist.add(h);
    }
    (count, errors, hist, start.elapsed().as_secs_f64())
}

/// One connection of [`rest_loop`] until `end`: (requests, errors,
/// latencies). A reply still missing [`REST_GRACE`] after `end` is an error.
async fn rest_connection(
    rest: &Rest,
    op: RestOp,
    worker: usize,
    end: Instant,
) -> (u64, u64, hdrhistogram::Histogram<u64>) {
    use tokio::io::AsyncWriteExt;
    let mut hist = new_histogram();
    let (mut count, mut errors) = (0u64, 0u64);
    let mut next = worker;
    let mut buf = Vec::with_capacity(4096);
    let deadline = tokio::time::Instant::from_std(end + REST_GRACE);
    let work = async {
        while Instant::now() < end {
            // Connect (again, after a failure), then send on the connection
            // until it fails or the time is up.
            let Ok(mut stream) = rest_connect(&rest.addr).await else {
                errors += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            while Instant::now() < end {
                let request = rest.request(op, next);
                next += 1;
                let sent = Instant::now();
                count += 1;
                let reply = match stream.write_all(request).await {
                    Ok(()) => read_reply(&mut stream, &mut buf).await,
                    Err(e) => Err(e),
                };
                let _ = hist.record((sent.elapsed().as_micros() as u64).max(1));
                match reply {
                    // A whole reply, even a refusal, leaves the connection
                    // ready for the next request.
                    Ok((status, body)) => {
                        if status != 200 || !rest_reply_ok(op, &buf[body]) {
                            errors += 1;
                        }
                    }
                    // Anything else leaves it out of step: a fresh one.
                    Err(_) => {
                        errors += 1;
                        break;
                    }
                }
            }
        }
    };
    if tokio::time::timeout_at(deadline, work).await.is_err() {
        errors += 1;
    }
    (count, errors, hist)
}

/// A connection to the gateway, without Nagle's delay.
async fn rest_connect(addr: &str) -> std::io::Result<tokio::net::TcpStream> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The largest reply [`read_reply`] takes, head and body: a post or a vote's
/// score is a few hundred bytes; a peer claiming more is refused, not
/// allocated for.
const MAX_REPLY_BYTES: usize = 4 << 20;

/// Reads one HTTP/1.1 reply off `stream` into `buf`: its status and where
/// its body is in `buf`. The body must come with a `Content-Length` (the
/// gateway's JSON replies do), nothing may follow it (one request is in
/// flight per connection), and the whole must fit in [`MAX_REPLY_BYTES`].
async fn read_reply(
    stream: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<(u16, std::ops::Range<usize>)> {
    use tokio::io::AsyncReadExt;
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    buf.clear();
    loop {
        if buf.len() > MAX_REPLY_BYTES {
            return Err(bad("a reply head larger than the benchmark takes"));
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut reply = httparse::Response::new(&mut headers);
        let head = match reply.parse(buf) {
            Ok(httparse::Status::Complete(head)) => head,
            Ok(httparse::Status::Partial) => continue,
            Err(e) => return Err(bad(&format!("not an HTTP reply: {e}"))),
        };
        let status = reply.code.unwrap_or(0);
        let length = reply
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| {
                std::str::from_utf8(h.value)
                    .ok()?
                    .trim()
                    .parse::<usize>()
                    .ok()
            })
            .ok_or_else(|| bad("a reply without Content-Length"))?;
        if length > MAX_REPLY_BYTES.saturating_sub(head) {
            return Err(bad("a reply larger than the benchmark takes"));
        }
        let whole = head + length;
        while buf.len() < whole {
            buf.reserve(whole - buf.len());
            if stream.read_buf(buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        if buf.len() > whole {
            return Err(bad("more bytes than one reply"));
        }
        return Ok((status, head..whole));
    }
}

/// Whether a reply body of [`rest_loop`] decodes to what `op` answers.
fn rest_reply_ok(op: RestOp, body: &[u8]) -> bool {
    match op {
        RestOp::Read => serde_json::from_slice::<PostView>(body).is_ok(),
        RestOp::Vote => serde_json::from_slice::<VoteReply>(body).is_ok(),
    }
}

/// The gateway comparison table: one row per (in flight, op), each way
/// through the gateway against NATS.
pub fn gateway_table(ms: &[Measurement]) -> String {
    let find = |target: &str, d: &Measurement| {
        ms.iter()
            .find(|m| m.target == target && m.op == d.op && m.in_flight == d.in_flight)
    };
    let rows = ms.iter().filter(|m| m.target == "nats").filter_map(|d| {
        let g = find("gateway", d)?;
        let l = find("client-http", d)?;
        let ratio = |m: &Measurement| format!("{:.2}", m.throughput / d.throughput.max(1e-9));
        Some(vec![
            d.in_flight.to_string(),
            d.op.clone(),
            format!("{:.0}", d.throughput),
            format!("{:.0}", g.throughput),
            ratio(g),
            format!("{:.0}", l.throughput),
            ratio(l),
            format!("{:.2}ms", d.p99_ms),
            format!("{:.2}ms", g.p99_ms),
            format!("{:.2}ms", l.p99_ms),
            format!("{}", d.errors + g.errors + l.errors),
        ])
    });
    crate::table::render(
        &[
            "in-flight",
            "op",
            "NATS ops/s",
            "REST ops/s",
            "ratio",
            "client --http ops/s",
            "ratio",
            "NATS p99",
            "REST p99",
            "client --http p99",
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

#[cfg(test)]
mod tests {
    use super::read_reply;
    use std::io::ErrorKind;
    use tokio::io::AsyncWriteExt;

    /// What [`read_reply`] makes of `pieces`, written one at a time by a
    /// peer (each flushed on its own, so a reply arrives split), after which
    /// the peer closes: the status and the body, or the error's kind.
    async fn read_pieces(pieces: &[&[u8]]) -> Result<(u16, Vec<u8>), ErrorKind> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.kind())?;
        let addr = listener.local_addr().map_err(|e| e.kind())?;
        let pieces: Vec<Vec<u8>> = pieces.iter().map(|p| p.to_vec()).collect();
        let peer = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await?;
            socket.set_nodelay(true)?;
            for piece in pieces {
                socket.write_all(&piece).await?;
                socket.flush().await?;
                tokio::task::yield_now().await;
            }
            socket.shutdown().await
        });
        let mut stream = super::rest_connect(&addr.to_string())
            .await
            .map_err(|e| e.kind())?;
        let mut buf = Vec::with_capacity(8);
        let read = read_reply(&mut stream, &mut buf).await;
        drop(stream);
        let _ = peer.await;
        read.map(|(status, body)| (status, buf[body].to_vec()))
            .map_err(|e| e.kind())
    }

    #[tokio::test]
    async fn a_reply_is_read_whole_however_it_is_split() {
        let reply: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
            content-length: 13\r\n\r\n{\"score\": 42}";
        for split in [1, 10, 17, reply.len() - 13, reply.len() - 1] {
            let (head, tail) = reply.split_at(split);
            assert_eq!(
                read_pieces(&[head, tail]).await,
                Ok((200, b"{\"score\": 42}".to_vec())),
                "split at {split}"
            );
        }
        // An error status is read like any other, body and all.
        assert_eq!(
            read_pieces(&[b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 2\r\n\r\n{}"]).await,
            Ok((429, b"{}".to_vec()))
        );
        // A buffer far smaller than the reply grows to hold it.
        let body = vec![b'x'; 100_000];
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
        assert_eq!(
            read_pieces(&[head.as_bytes(), &body]).await,
            Ok((200, body.clone()))
        );
    }

    /// A gateway stand-in: answers every request on every connection it
    /// takes with the next of `replies`, in turn; counts the connections.
    async fn answering(
        replies: Vec<Vec<u8>>,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let connections = std::sync::Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        let replies = std::sync::Arc::new(replies);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let replies = replies.clone();
                tokio::spawn(async move {
                    let (mut buf, mut next) = (Vec::new(), 0);
                    loop {
                        // Requests here are GETs: a head and no body.
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            let reply = &replies[next % replies.len()];
                            next += 1;
                            if socket.write_all(reply).await.is_err() {
                                return;
                            }
                        }
                        if matches!(socket.read_buf(&mut buf).await, Ok(0) | Err(_)) {
                            return;
                        }
                    }
                });
            }
        });
        (addr, connections)
    }

    #[tokio::test]
    async fn a_refusal_counts_as_an_error_and_keeps_its_connection() {
        use std::sync::atomic::Ordering;
        let post = serde_json::to_vec(&crate::fixtures::post()).unwrap();
        let ok = [
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", post.len()).into_bytes(),
            post,
        ]
        .concat();
        let refused = b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 2\r\n\r\n{}".to_vec();
        let (addr, connections) = answering(vec![ok, refused]).await;
        let rest = super::Rest {
            addr,
            read: bytes::Bytes::from_static(b"GET /p HTTP/1.1\r\nHost: x\r\n\r\n"),
            votes: [bytes::Bytes::new(), bytes::Bytes::new()],
        };
        let end = std::time::Instant::now() + std::time::Duration::from_millis(300);
        let (count, errors, hist) =
            super::rest_connection(&rest, super::RestOp::Read, 0, end).await;
        assert!(count >= 4, "{count} requests");
        // Every other reply is a refusal, and the connection stays.
        assert_eq!(errors, count / 2, "{errors} errors of {count}");
        assert_eq!(hist.len(), count);
        assert_eq!(connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_reply_that_is_not_one_whole_http_reply_is_an_error() {
        // The connection closes before the head is complete, or mid-body.
        assert_eq!(
            read_pieces(&[b"HTTP/1.1 200 OK\r\nContent-Le"]).await,
            Err(ErrorKind::UnexpectedEof)
        );
        assert_eq!(
            read_pieces(&[b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}"]).await,
            Err(ErrorKind::UnexpectedEof)
        );
        assert_eq!(read_pieces(&[]).await, Err(ErrorKind::UnexpectedEof));
        // Not HTTP; no length to know where the body ends; more than one reply.
        assert_eq!(
            read_pieces(&[b"SSH-2.0-OpenSSH_9.6\r\n\r\n"]).await,
            Err(ErrorKind::InvalidData)
        );
        assert_eq!(
            read_pieces(&[
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
            ])
            .await,
            Err(ErrorKind::InvalidData)
        );
        assert_eq!(
            read_pieces(&[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1 200 OK\r\n"])
                .await,
            Err(ErrorKind::InvalidData)
        );
        assert_eq!(
            read_pieces(&[b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n{}"]).await,
            Err(ErrorKind::InvalidData)
        );
        // A claimed length or a head past the bound is refused, not
        // allocated for (a length near usize::MAX would abort the process).
        assert_eq!(
            read_pieces(&[b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\n{}"])
                .await,
            Err(ErrorKind::InvalidData)
        );
        let endless = [
            b"HTTP/1.1 200 OK\r\nX-Pad: ".as_slice(),
            &[b'a'; super::MAX_REPLY_BYTES],
        ]
        .concat();
        assert_eq!(read_pieces(&[&endless]).await, Err(ErrorKind::InvalidData));
    }
}
