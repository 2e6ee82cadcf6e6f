//! The gateway end to end: a real nats-server, engine shards, and the
//! `reddit-gateway` binary as a process, driven over HTTP as a person with curl
//! (or a browser) would: register with their own key, log in, post (signed),
//! comment, vote, read, message, watch events; and every kind of bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../client/tests/common/mod.rs"]
mod common;

use common::Cluster;
use ed25519_dalek::{Signer, SigningKey};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

/// The gateway under test, as a process.
struct Gateway(common::GatewayProcess);

impl Gateway {
    fn start(nats_url: &str, extra: &[&str]) -> Self {
        let bin = std::path::Path::new(env!("CARGO_BIN_EXE_reddit-gateway"));
        Self(common::GatewayProcess::start(bin, nats_url, extra))
    }

    fn url(&self, path: &str) -> String {
        self.0.url(path)
    }
}

/// A person with a key pair, talking to a gateway.
struct Person {
    name: String,
    key: SigningKey,
    token: String,
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn json_of(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    let body = r.text().await.unwrap();
    let v = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, v)
}

async fn post(
    h: &reqwest::Client,
    url: String,
    token: Option<&str>,
    body: Value,
) -> (StatusCode, Value) {
    let mut r = h.post(url).json(&body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    json_of(r.send().await.unwrap()).await
}

async fn get(h: &reqwest::Client, url: String, token: Option<&str>) -> (StatusCode, Value) {
    let mut r = h.get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    json_of(r.send().await.unwrap()).await
}

/// Registers `name` with a fresh key and logs in, all over HTTP.
async fn person(h: &reqwest::Client, g: &Gateway, name: &str) -> Person {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let public = hex::encode(key.verifying_key().to_bytes());
    let (s, v) = post(
        h,
        g.url("/api/v1/users"),
        None,
        json!({"username": name, "public_key": public}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["public_key"], public);
    let (s, ch) = post(
        h,
        g.url("/api/v1/auth/challenge"),
        None,
        json!({"username": name}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{ch}");
    let challenge = ch["challenge"].as_str().unwrap();
    let signed = format!("reddit-login-v1\n{}\n{challenge}", name.to_lowercase());
    let signature = hex::encode(key.sign(signed.as_bytes()).to_bytes());
    let (s, login) = post(
        h,
        g.url("/api/v1/auth/login"),
        None,
        json!({"username": name, "challenge": challenge, "signature": signature}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{login}");
    Person {
        name: name.to_owned(),
        key,
        token: login["token"].as_str().unwrap().to_owned(),
    }
}

impl Person {
    fn sign(&self, text: &str) -> String {
        hex::encode(self.key.sign(text.as_bytes()).to_bytes())
    }

    fn t(&self) -> Option<&str> {
        Some(&self.token)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_end_to_end() {
    let cluster = Cluster::start(2).await;
    let g = Gateway::start(&cluster.nats.url(), &[]);
    let h = http();
    let ann = person(&h, &g, "Ann_http").await;
    let bob = person(&h, &g, "bob_http").await;

    // Subreddits
    let (s, v) = post(
        &h,
        g.url("/api/v1/subreddits"),
        ann.t(),
        json!({"name": "webdev"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = post(
        &h,
        g.url("/api/v1/subreddits"),
        ann.t(),
        json!({"name": "WebDev"}),
    )
    .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::CONFLICT, Some("conflict")),
        "{v}"
    );
    for p in [&ann, &bob] {
        let (s, v) = post(&h, g.url("/api/v1/r/webdev/join"), p.t(), json!(null)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["member"], true);
    }
    let (_, v) = get(&h, g.url("/api/v1/r/webdev"), None).await;
    assert_eq!(v["members"], 2);
    let (_, v) = get(&h, g.url("/api/v1/subreddits?limit=10"), None).await;
    assert!(
        v["subreddits"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "webdev"),
        "{v}"
    );

    // A signed post; the same bytes with another title are refused.
    let text = "reddit-post-v1\nann_http\nwebdev\n-\nHello HTTP\nsigned";
    let sig = ann.sign(text);
    let (s, p1) = post(
        &h,
        g.url("/api/v1/r/webdev/posts"),
        ann.t(),
        json!({"title": "Hello HTTP", "body": "signed", "signature": sig}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{p1}");
    assert_eq!(p1["signature"], sig);
    let (s, v) = post(
        &h,
        g.url("/api/v1/r/webdev/posts"),
        ann.t(),
        json!({"title": "Hello HTTP!", "body": "signed", "signature": sig}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["message"].as_str().unwrap().starts_with("signature:"),
        "{v}"
    );
    let id = p1["id"].as_str().unwrap().to_owned();
    let (s, v) = get(&h, g.url(&format!("/api/v1/r/webdev/posts/{id}")), None).await;
    assert_eq!(
        (s, v["title"].as_str()),
        (StatusCode::OK, Some("Hello HTTP"))
    );
    // Anyone verifies it with the author's public key.
    let (_, user) = get(&h, g.url("/api/v1/users/ann_http"), None).await;
    let public: [u8; 32] = hex::decode(user["public_key"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let sig_bytes: [u8; 64] = hex::decode(v["signature"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    ed25519_dalek::VerifyingKey::from_bytes(&public)
        .unwrap()
        .verify_strict(
            text.as_bytes(),
            &ed25519_dalek::Signature::from_bytes(&sig_bytes),
        )
        .expect("the stored post verifies");

    // Idempotency-Key: the same key gets the same post.
    let key = uuid::Uuid::now_v7().to_string();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = h
            .post(g.url("/api/v1/r/webdev/posts"))
            .bearer_auth(&bob.token)
            .header("Idempotency-Key", &key)
            .json(&json!({"title": "once"}))
            .send()
            .await
            .unwrap();
        let (s, v) = json_of(r).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        ids.push(v["id"].clone());
    }
    assert_eq!(
        ids[0], ids[1],
        "a repeated Idempotency-Key is the same post"
    );

    // Listings, every sort, with `after` paging.
    for sort in ["hot", "new", "top", "controversial"] {
        let (s, page) = get(&h, g.url(&format!("/api/v1/r/webdev/{sort}?limit=1")), None).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        assert_eq!(page["posts"].as_array().unwrap().len(), 1);
        let after = page["next_cursor"].as_str().unwrap();
        let (_, rest) = get(
            &h,
            g.url(&format!("/api/v1/r/webdev/{sort}?after={after}")),
            None,
        )
        .await;
        assert_eq!(rest["posts"].as_array().unwrap().len(), 1, "{rest}");
        assert!(rest["next_cursor"].is_null(), "{rest}");
    }

    // Comments three levels deep, the second signed.
    let comments = g.url(&format!("/api/v1/r/webdev/posts/{id}/comments"));
    let (s, c1) = post(&h, comments.clone(), bob.t(), json!({"body": "one"})).await;
    assert_eq!(s, StatusCode::CREATED, "{c1}");
    let c1_id = c1["id"].as_str().unwrap();
    let ctext = format!("reddit-comment-v1\nann_http\nwebdev\n{id}\n{c1_id}\ntwo");
    let (s, c2) = post(
        &h,
        comments.clone(),
        ann.t(),
        json!({"body": "two", "parent_id": c1_id, "signature": ann.sign(&ctext)}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{c2}");
    let (s, c3) = post(
        &h,
        comments.clone(),
        bob.t(),
        json!({"body": "three", "parent_id": c2["id"]}),
    )
    .await;
    assert_eq!(
        (s, c3["depth"].as_u64()),
        (StatusCode::CREATED, Some(2)),
        "{c3}"
    );
    let (_, tree) = get(&h, format!("{comments}?sort=new"), None).await;
    assert_eq!(tree["total"], 3);
    assert_eq!(
        tree["comments"][0]["replies"][0]["replies"][0]["body"],
        "three"
    );

    // Votes and karma.
    let (s, v) = post(
        &h,
        g.url("/api/v1/vote"),
        bob.t(),
        json!({"subreddit": "webdev", "target": "post", "id": id, "value": 1}),
    )
    .await;
    assert_eq!((s, v["score"].as_i64()), (StatusCode::OK, Some(1)), "{v}");
    common::eventually("ann's karma", Duration::from_secs(10), || {
        let (h, url) = (h.clone(), g.url("/api/v1/users/ann_http"));
        async move { get(&h, url, None).await.1["post_karma"] == 1 }
    })
    .await;

    // Feed.
    let (s, feed) = get(&h, g.url("/api/v1/feed?sort=new"), bob.t()).await;
    assert_eq!(s, StatusCode::OK, "{feed}");
    assert_eq!(feed["posts"].as_array().unwrap().len(), 2);
    let (s, feed) = get(&h, g.url("/api/v1/feed?sort=new&fresh=true"), bob.t()).await;
    assert_eq!(s, StatusCode::OK, "{feed}");
    assert_eq!(feed["posts"].as_array().unwrap().len(), 2);

    // Messages.
    let (s, dm) = post(
        &h,
        g.url("/api/v1/messages"),
        bob.t(),
        json!({"to": "Ann_http", "body": "hi"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{dm}");
    let (_, inbox) = get(&h, g.url("/api/v1/messages?unread_only=true"), ann.t()).await;
    assert_eq!(inbox["unread"], 1, "{inbox}");
    let dm_id = dm["id"].as_str().unwrap();
    let (s, r) = post(
        &h,
        g.url(&format!("/api/v1/messages/{dm_id}/reply")),
        ann.t(),
        json!({"body": "hello"}),
    )
    .await;
    assert_eq!(
        (s, r["to"].as_str()),
        (StatusCode::CREATED, Some("bob_http")),
        "{r}"
    );
    let (_, marked) = post(
        &h,
        g.url("/api/v1/messages/read"),
        ann.t(),
        json!({"ids": [dm_id]}),
    )
    .await;
    assert_eq!(marked, json!({"marked": 1, "unread": 0}));
    let (_, sent) = get(&h, g.url("/api/v1/messages?folder=sent"), ann.t()).await;
    assert_eq!(sent["messages"][0]["body"], "hello");
    let (s, v) = post(
        &h,
        g.url(&format!(
            "/api/v1/messages/{}/reply",
            r["id"].as_str().unwrap()
        )),
        ann.t(),
        json!({"body": "x"}),
    )
    .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden")),
        "{v}"
    );

    // Leave, stats.
    let (s, v) = post(&h, g.url("/api/v1/r/webdev/leave"), bob.t(), json!(null)).await;
    assert_eq!((s, v["member"].as_bool()), (StatusCode::OK, Some(false)));
    let (s, stats) = get(&h, g.url("/api/v1/stats"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(stats.as_array().unwrap().len(), 2);
    let _ = bob.name;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_4xx_and_everything_keeps_serving() {
    let cluster = Cluster::start(1).await;
    let g = Gateway::start(&cluster.nats.url(), &[]);
    let h = http();
    let ann = person(&h, &g, "ann_bad").await;
    let posts = g.url("/api/v1/r/nosuchsub/posts");
    let send = |body: &'static str, ctype: Option<&'static str>| {
        let mut r = h.post(posts.clone()).bearer_auth(&ann.token).body(body);
        if let Some(c) = ctype {
            r = r.header("content-type", c);
        }
        async move { json_of(r.send().await.unwrap()).await }
    };
    let cases: Vec<(StatusCode, &str, (StatusCode, Value))> = vec![
        (
            StatusCode::BAD_REQUEST,
            "malformed",
            send("{\"title\":", Some("application/json")).await,
        ),
        (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            send("{\"title\":5}", Some("application/json")).await,
        ),
        (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            send("{}", Some("application/json")).await,
        ),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            send("{\"title\":\"x\"}", None).await,
        ),
        (
            StatusCode::NOT_FOUND,
            "not_found",
            send("{\"title\":\"x\"}", Some("application/json")).await,
        ),
        (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            send("{\"title\":\"two\\nlines\"}", Some("application/json")).await,
        ),
        (
            StatusCode::NOT_FOUND,
            "not_found",
            get(&h, g.url("/api/v1/nope"), None).await,
        ),
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            json_of(
                h.delete(g.url("/api/v1/users/ann_bad"))
                    .send()
                    .await
                    .unwrap(),
            )
            .await,
        ),
        (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            get(&h, g.url("/api/v1/r/webdev/sideways"), None).await,
        ),
        (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            get(&h, g.url("/api/v1/r/a b/new"), None).await,
        ),
        (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            get(&h, g.url("/api/v1/r/webdev/posts/not-an-id"), None).await,
        ),
        (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            get(&h, g.url("/api/v1/feed?after=garbage"), ann.t()).await,
        ),
        (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            get(&h, g.url("/api/v1/feed?limit=1000"), ann.t()).await,
        ),
        (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            get(&h, g.url("/api/v1/feed?limit=ten"), ann.t()).await,
        ),
        (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            get(&h, g.url("/api/v1/feed?fresh=maybe"), ann.t()).await,
        ),
        (
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            get(&h, g.url("/api/v1/feed"), None).await,
        ),
        (
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            get(
                &h,
                g.url("/api/v1/feed"),
                Some("v2.ann_bad.99999999999999.00.00"),
            )
            .await,
        ),
        (
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            get(&h, g.url("/api/v1/feed"), Some("garbage")).await,
        ),
        (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            post(
                &h,
                g.url("/api/v1/users"),
                None,
                json!({"username": "x y", "public_key": "00"}),
            )
            .await,
        ),
        (
            StatusCode::NOT_FOUND,
            "not_found",
            post(
                &h,
                g.url("/api/v1/auth/challenge"),
                None,
                json!({"username": "nobody_here"}),
            )
            .await,
        ),
        (
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            post(
                &h,
                g.url("/api/v1/auth/login"),
                None,
                json!({"username": "ann_bad", "challenge": "00", "signature": "00"}),
            )
            .await,
        ),
    ];
    for (i, (status, code, (got, body))) in cases.into_iter().enumerate() {
        assert_eq!(got, status, "case {i}: {body}");
        assert_eq!(body["code"].as_str(), Some(code), "case {i}: {body}");
        assert!(
            !body["message"].as_str().unwrap_or_default().is_empty(),
            "case {i}: {body}"
        );
    }
    // A bad Idempotency-Key, an oversized body.
    let r = h
        .post(g.url("/api/v1/subreddits"))
        .bearer_auth(&ann.token)
        .header("Idempotency-Key", "not-a-uuid")
        .json(&json!({"name": "fine_name"}))
        .send()
        .await
        .unwrap();
    let (s, v) = json_of(r).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request")),
        "{v}"
    );
    let big = format!("{{\"title\":\"{}\"}}", "a".repeat(400_000));
    let r = h
        .post(g.url("/api/v1/r/webdev/posts"))
        .bearer_auth(&ann.token)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    let (s, v) = json_of(r).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("too_large")),
        "{v}"
    );
    // Still serving, both the gateway and the engine behind it.
    assert_eq!(get(&h, g.url("/healthz"), None).await.0, StatusCode::OK);
    assert_eq!(get(&h, g.url("/readyz"), None).await.0, StatusCode::OK);
    let (s, _) = post(
        &h,
        g.url("/api/v1/subreddits"),
        ann.t(),
        json!({"name": "still_ok"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    cluster.stop().await;
}

/// Reads SSE events from `resp` until `want` of them (not counting keep-alives)
/// have arrived, or the deadline.
async fn read_events(resp: reqwest::Response, want: usize) -> Vec<(String, Value)> {
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while out.len() < want {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("events within 15 s")
            .expect("the stream stays open")
            .unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut kind = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(k) = line.strip_prefix("event: ") {
                    kind = k.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            if !kind.is_empty() {
                out.push((kind, serde_json::from_str(&data).unwrap_or(Value::Null)));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_deliver_dms_replies_and_posts() {
    let cluster = Cluster::start(2).await;
    let g = Gateway::start(&cluster.nats.url(), &[]);
    let h = http();
    let ann = person(&h, &g, "ann_sse").await;
    let bob = person(&h, &g, "bob_sse").await;
    post(
        &h,
        g.url("/api/v1/subreddits"),
        ann.t(),
        json!({"name": "live_sub"}),
    )
    .await;

    // A forged token gets nothing streamed.
    let forged = h
        .get(g.url("/api/v1/events"))
        .bearer_auth("v2.ann_sse.99999999999999.00.00")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);

    let resp = h
        .get(g.url("/api/v1/events?sub=live_sub"))
        .bearer_auth(&ann.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let reader = tokio::spawn(read_events(resp, 4));
    // `ready` is the first event; wait for the subscriptions before acting. The
    // reader is already consuming, so poll the engine for a signal instead: post
    // once the stream is open (the gateway flushed before answering headers).
    let (_, p) = post(
        &h,
        g.url("/api/v1/r/live_sub/posts"),
        ann.t(),
        json!({"title": "news"}),
    )
    .await;
    post(
        &h,
        g.url("/api/v1/messages"),
        bob.t(),
        json!({"to": "ann_sse", "body": "psst"}),
    )
    .await;
    let pid = p["id"].as_str().unwrap();
    post(
        &h,
        g.url(&format!("/api/v1/r/live_sub/posts/{pid}/comments")),
        bob.t(),
        json!({"body": "first!"}),
    )
    .await;
    let events = reader.await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds[0], "ready");
    let mut rest = kinds[1..].to_vec();
    rest.sort_unstable();
    assert_eq!(rest, ["dm", "post", "reply"], "{events:?}");
    let find = |k: &str| &events.iter().find(|(kind, _)| kind == k).unwrap().1;
    assert_eq!(find("post")["post"]["title"], "news");
    assert_eq!(find("dm")["dm"]["body"], "psst");
    assert_eq!(find("reply")["comment"]["body"], "first!");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_with_retry_after() {
    let cluster = Cluster::start(1).await;
    let g = Gateway::start(
        &cluster.nats.url(),
        &["--rate-per-ip", "1", "--burst-per-ip", "5"],
    );
    let h = http();
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..8 {
        let r = h.get(g.url("/api/v1/users/nobody")).send().await.unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let (_, v) = json_of(r).await;
            assert_eq!(v["code"], "too_many_requests");
            statuses.push(StatusCode::TOO_MANY_REQUESTS);
        } else {
            statuses.push(r.status());
        }
    }
    assert!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
            .count()
            >= 2,
        "{statuses:?}"
    );
    assert!(retry_after.unwrap().parse::<u64>().unwrap() >= 1);
    // Health is not rate-limited: a load balancer can always ask.
    assert_eq!(
        h.get(g.url("/healthz")).send().await.unwrap().status(),
        StatusCode::OK
    );
    cluster.stop().await;
}

/// `--threads 3`: three serving threads on one port (each its own runtime,
/// socket and NATS connection). A caller's rate budget is one budget across
/// them, and SIGTERM stops them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_threads_share_the_port_and_the_rate_limits() {
    let cluster = Cluster::start(1).await;
    let mut g = Gateway::start(
        &cluster.nats.url(),
        &[
            "--threads",
            "3",
            "--rate-per-ip",
            "1",
            "--burst-per-ip",
            "6",
        ],
    );
    let started = std::time::Instant::now();
    let (mut served, mut limited) = (0u64, 0u64);
    for _ in 0..24 {
        // A client (so a connection) of its own each time: the kernel spreads
        // the connections over the threads' sockets.
        let r = http()
            .get(g.url("/api/v1/users/nobody"))
            .send()
            .await
            .unwrap();
        match r.status() {
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            StatusCode::NOT_FOUND => served += 1,
            other => panic!("unexpected {other}"),
        }
    }
    // One budget: the burst of 6, plus what 1/s refilled meanwhile. With a
    // budget per thread, up to 18 would have passed.
    let refilled = started.elapsed().as_secs() + 1;
    assert!(
        (6..=6 + refilled).contains(&served),
        "{served} served, {limited} limited in {:?}",
        started.elapsed()
    );
    assert!(g.0.terminate(), "SIGTERM stops every serving thread");
    cluster.stop().await;
}

/// Readiness speaks for the whole process, whichever serving thread answers
/// the probe: with NATS gone, `/readyz` says 503 on every connection (the
/// load balancer's next request may land on any thread), `/healthz` still
/// 200; once NATS is back, ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_nats_on_every_serving_thread() {
    let mut cluster = Cluster::start(1).await;
    let g = Gateway::start(&cluster.nats.url(), &["--threads", "3"]);
    // Probes on fresh connections, so spread over the threads' sockets.
    let probes = |path: &'static str, want: StatusCode| {
        let url = g.url(path);
        async move {
            for _ in 0..9 {
                let status = http().get(url.clone()).send().await.map(|r| r.status());
                if status.ok() != Some(want) {
                    return false;
                }
            }
            true
        }
    };
    common::eventually("ready", Duration::from_secs(10), || {
        probes("/readyz", StatusCode::OK)
    })
    .await;
    cluster.nats.kill();
    common::eventually("not ready on any thread", Duration::from_secs(10), || {
        probes("/readyz", StatusCode::SERVICE_UNAVAILABLE)
    })
    .await;
    assert!(probes("/healthz", StatusCode::OK).await, "alive all along");
    cluster.nats.restart();
    common::eventually("ready again", Duration::from_secs(30), || {
        probes("/readyz", StatusCode::OK)
    })
    .await;
    cluster.stop().await;
}

/// A gateway whose serving threads cannot reach NATS does not half-start: it
/// exits with an error that says why, whatever its number of threads.
#[test]
fn a_gateway_that_cannot_reach_nats_exits_saying_why() {
    // Nothing listens on a port just taken and let go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for threads in ["1", "3"] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_reddit-gateway"))
            .args(["--nats-url", &format!("nats://gateway:pw@127.0.0.1:{port}")])
            .args(["--listen", "127.0.0.1:0", "--threads", threads])
            .env("RUST_BACKTRACE", "0")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("a gateway without NATS still runs after 20 s ({threads} threads)");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(!status.success(), "{threads} threads: {stderr}");
        assert!(
            stderr.contains("cannot reach the engine"),
            "{threads} threads: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_route() {
    let cluster = Cluster::start(1).await;
    let g = Gateway::start(&cluster.nats.url(), &[]);
    let h = http();
    let (s, doc) = get(&h, g.url("/openapi.json"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/v1/users",
        "/api/v1/users/{name}",
        "/api/v1/auth/challenge",
        "/api/v1/auth/login",
        "/api/v1/subreddits",
        "/api/v1/r/{sub}",
        "/api/v1/r/{sub}/join",
        "/api/v1/r/{sub}/leave",
        "/api/v1/r/{sub}/{sort}",
        "/api/v1/r/{sub}/posts",
        "/api/v1/r/{sub}/posts/{id}",
        "/api/v1/r/{sub}/posts/{id}/comments",
        "/api/v1/vote",
        "/api/v1/feed",
        "/api/v1/messages",
        "/api/v1/messages/{id}/reply",
        "/api/v1/messages/read",
        "/api/v1/events",
        "/api/v1/stats",
    ] {
        assert!(paths.contains_key(p), "{p} is not in the OpenAPI document");
    }
    for schema in [
        "PostView",
        "CommentView",
        "DmView",
        "UserView",
        "ErrorBody",
        "NewPost",
    ] {
        assert!(
            doc["components"]["schemas"].get(schema).is_some(),
            "schema {schema}"
        );
    }
    let page = h
        .get(g.url("/docs"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("/api/v1/r/{sub}/posts/{id}/comments") && page.contains("PostView"));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_are_bounded_per_gateway() {
    let cluster = Cluster::start(1).await;
    let g = Gateway::start(&cluster.nats.url(), &["--max-sse", "1"]);
    let h = http();
    let ann = person(&h, &g, "ann_bounded").await;
    let first = h
        .get(g.url("/api/v1/events"))
        .bearer_auth(&ann.token)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let second = h
        .get(g.url("/api/v1/events"))
        .bearer_auth(&ann.token)
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(second.headers().contains_key("retry-after"));
    let (_, v) = json_of(second).await;
    assert_eq!(v["code"], "unavailable");
    // Closing the first frees its place.
    drop(first);
    common::eventually("a freed stream slot", Duration::from_secs(10), || {
        let (h, url, token) = (h.clone(), g.url("/api/v1/events"), ann.token.clone());
        async move {
            h.get(url)
                .bearer_auth(token)
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK)
        }
    })
    .await;
    cluster.stop().await;
}
