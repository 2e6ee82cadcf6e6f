//! Attacks from outside, against the project's own `nats-auth.conf` and real shards:
//! sniffing replies and pushes, stolen tokens, reply-subject injection (confused
//! deputy), forged tokens with published secrets, challenge floods, duplicate DMs
//! on retry (with a v4 key, and with a v7 key), replies too large to deliver, and bursts far over
//! the queue. Each of these worked before the fix (issue #8).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    anon_url, connect_engine, connect_service, eventually, name_on, shard_process, sn, un,
    wait_serving, Cluster, NatsServer, SECRET,
};
use futures::StreamExt;
use reddit_client::{ClientOptions, ErrorKind, Identity, RedditClient, Role, Session};
use reddit_shared::codec::encode;
use reddit_shared::error::ErrorCode;
use reddit_shared::names::Username;
use reddit_shared::protocol::comment::{CommentTreeRequest, CreateCommentRequest};
use reddit_shared::protocol::dm::{DmFolder, ListDmsRequest, SendDmRequest};
use reddit_shared::protocol::feed::FeedRequest;
use reddit_shared::protocol::post::{CreatePostRequest, ListPostsRequest, PostSort};
use reddit_shared::protocol::user::ChallengeRequest;
use reddit_shared::protocol::{Empty, Op};
use reddit_shared::subject;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A raw NATS connection that records the server's errors (permission violations).
struct Raw {
    nats: async_nats::Client,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Raw {
    /// Connects to `url` anonymously (its credentials removed), or as `user`
    /// proving `id`.
    async fn connect(url: &str, user: Option<(&Username, &Identity)>) -> Self {
        Self::connect_as(&anon_url(url), user).await
    }

    /// Connects to `url` as given (with its credentials, if any), or as `user`.
    async fn connect_as(url: &str, user: Option<(&Username, &Identity)>) -> Self {
        let errors = Arc::new(Mutex::new(Vec::new()));
        let seen = errors.clone();
        let mut options = match user {
            Some((name, id)) => {
                let (name, nkey, id) = (name.as_str().to_owned(), id.nkey_public(), id.clone());
                async_nats::ConnectOptions::with_auth_callback(move |nonce| {
                    let mut auth = async_nats::Auth::new();
                    auth.username = Some(name.clone());
                    auth.nkey = Some(nkey.clone());
                    auth.signature = Some(id.sign_raw(&nonce));
                    async move { Ok(auth) }
                })
                .custom_inbox_prefix(subject::user_inbox_prefix(user.unwrap().0.key()))
            }
            None => async_nats::ConnectOptions::new(),
        };
        options = options.event_callback(move |event| {
            let seen = seen.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    seen.lock().unwrap().push(e.to_string());
                }
            }
        });
        let nats = reddit_shared::connect::connect_with(url, "raw", options, None)
            .await
            .unwrap();
        Self { nats, errors }
    }

    /// Waits until the server has reported a permissions violation naming `what`.
    async fn refused(&self, what: &str) {
        let errors = self.errors.clone();
        eventually(
            &format!("a permissions violation for {what}"),
            Duration::from_secs(5),
            || {
                let errors = errors.clone();
                let what = what.to_owned();
                async move {
                    errors.lock().unwrap().iter().any(|e| {
                        e.to_lowercase().contains("permissions violation") && e.contains(&what)
                    })
                }
            },
        )
        .await;
    }
}

/// A client connected as `name` with `id` (the user role).
async fn as_user(url: &str, name: &Username, id: &Identity) -> RedditClient {
    RedditClient::connect(
        &anon_url(url),
        ClientOptions {
            as_user: Some((name.clone(), id.clone())),
            ..ClientOptions::default()
        },
    )
    .await
    .unwrap()
}

/// Registers `name` anonymously and logs in over its own user connection.
async fn person(url: &str, name: &str) -> (RedditClient, Session, Identity) {
    let anon = RedditClient::connect(&anon_url(url), ClientOptions::default())
        .await
        .unwrap();
    assert_eq!(anon.role(), &Role::Anonymous);
    let id = Identity::generate();
    let username = un(name);
    anon.register(&username, &id).await.unwrap();
    let client = as_user(url, &username, &id).await;
    assert_eq!(client.role(), &Role::User(username.clone()));
    let session = client.login(&username, &id).await.unwrap();
    (client, session, id)
}

/// Every item of a listing, page by page from the first; each page must hold
/// something (a page that stops early for size still carries an item).
async fn all_pages<T, F, Fut>(mut fetch: F) -> Vec<T>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = (Vec<T>, Option<String>)>,
{
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let (items, next) = fetch(cursor).await;
        assert!(!items.is_empty(), "an empty page");
        all.extend(items);
        cursor = next;
        if cursor.is_none() {
            return all;
        }
    }
}

/// Everything a subscription received so far, as text.
fn drain(sub: &mut async_nats::Subscriber) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(Some(msg)) = sub.next().now_or_never() {
        out.push(format!(
            "{} {}",
            msg.subject,
            String::from_utf8_lossy(&msg.payload)
        ));
    }
    out
}

use futures::FutureExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sniffing_replies_and_pushes_is_refused_and_sees_nothing() {
    let cluster = Cluster::start(2).await;
    let url = cluster.nats.url();
    let (alice_c, alice, _) = person(&url, "alice").await;
    let (mallory_c, _mallory, mallory_id) = person(&url, "mallory").await;
    let bob = cluster.user("bob").await;

    // Two attackers: an anonymous connection and another user's, each
    // subscribing to everything it might read.
    let anon = Raw::connect(&url, None).await;
    let mallory_name = un("mallory");
    let user = Raw::connect(&url, Some((&mallory_name, &mallory_id))).await;
    let wide = [
        ">",
        "_INBOX.>",
        "_INBOX_USER.>",
        "_INBOX_USER.alice.>",
        "_INBOX_SERVICE.>",
        "_INBOX_ENGINE.>",
        "reddit.events.>",
        "reddit.events.user.alice",
        "reddit.events.user.*",
        "$SYS.>",
        "reddit.wal.>",
        "chat.>",
        "chat.user.*",
    ];
    let mut subs = Vec::new();
    for raw in [&anon, &user] {
        for s in wide {
            subs.push(raw.nats.subscribe(s).await.unwrap());
        }
        raw.nats.flush().await.unwrap();
    }
    for raw in [&anon, &user] {
        raw.refused("_INBOX_USER.alice.>").await;
        raw.refused("reddit.events.user.alice").await;
        raw.refused("_INBOX_SERVICE.>").await;
        raw.refused("chat.user.*").await;
    }
    // What mallory may read still works: her own pushes.
    let mut own = mallory_c.user_events(&mallory_name).await.unwrap();

    // The victim logs in again, reads her DMs, and receives a DM with a push.
    let mut pushes = alice_c.user_events(&un("alice")).await.unwrap();
    let again = alice_c.login(&un("alice"), &Identity::generate()).await;
    assert!(again.is_err(), "a login with another key fails");
    let secret_body = "the secret is 42";
    cluster
        .client
        .send_dm(&bob, &un("alice"), secret_body)
        .await
        .unwrap();
    cluster
        .client
        .send_dm(&bob, &mallory_name, "hello mallory")
        .await
        .unwrap();
    let page = alice_c
        .send(Some(&alice), &ListDmsRequest::default())
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 1);
    let pushed = tokio::time::timeout(Duration::from_secs(5), pushes.next())
        .await
        .unwrap();
    assert!(pushed.is_some(), "alice gets her push");
    assert!(
        tokio::time::timeout(Duration::from_secs(5), own.next())
            .await
            .unwrap()
            .is_some(),
        "mallory gets her own push"
    );
    for raw in [&anon, &user] {
        raw.nats.flush().await.unwrap();
    }
    let seen: Vec<String> = subs.iter_mut().flat_map(drain).collect();
    for line in &seen {
        assert!(!line.contains(&alice.token), "token leaked: {line}");
        assert!(!line.contains(secret_body), "DM leaked: {line}");
    }
    // The token itself is useless on mallory's connection: replies to a request
    // acting as alice go only to alice's inbox.
    let stolen = mallory_c
        .send(Some(&alice), &ListDmsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(stolen.code(), Some(ErrorCode::Forbidden), "{stolen}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_prove_the_registered_key_and_anonymous_ones_only_register() {
    let cluster = Cluster::start(1).await;
    let url = cluster.nats.url();
    let (_, _, id) = person(&url, "carol").await;
    // The wrong key, an unregistered user, or a password are refused by NATS.
    for (name, key) in [("carol", Identity::generate()), ("nobody", id.clone())] {
        let e = RedditClient::connect(
            &anon_url(&url),
            ClientOptions {
                as_user: Some((un(name), key)),
                ..ClientOptions::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Connect, "{name}: {e}");
    }
    let port = cluster.nats.port();
    for creds in [
        "engine:wrong",
        "service:wrong",
        "carol:password",
        "root:root",
    ] {
        let e = RedditClient::connect(
            &format!("nats://{creds}@127.0.0.1:{port}"),
            ClientOptions::default(),
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Connect, "{creds}: {e}");
    }
    // Anonymous: discovery and register only; the client says so at once, and the
    // bus refuses the rest.
    let anon = RedditClient::connect(&anon_url(&url), ClientOptions::default())
        .await
        .unwrap();
    let e = anon.get_user(&un("carol")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Forbidden);
    let raw = Raw::connect(&url, None).await;
    raw.nats
        .publish(subject::request(0, Op::AuthChallenge), "x".into())
        .await
        .unwrap();
    raw.nats.flush().await.unwrap();
    raw.refused("auth.challenge").await;
    // A user may not run the audit or speak engine-to-engine.
    let carol = as_user(&url, &un("carol"), &id).await;
    assert_eq!(
        carol.audit(10).await.unwrap_err().kind(),
        ErrorKind::Forbidden
    );
    let raw = Raw::connect(&url, Some((&un("carol"), &id))).await;
    for op in [Op::InternalSync, Op::AuditRun] {
        raw.nats
            .publish(subject::request(0, op), "x".into())
            .await
            .unwrap();
    }
    raw.nats.flush().await.unwrap();
    raw.refused("internal.sync").await;
    raw.refused("audit.run").await;
    cluster.stop().await;
}

/// Requests whose reply subjects point where the engine must never publish.
/// The chat's subjects, stream and buckets belong to chat gateways alone: no
/// other role reads private messages or writes into rooms or the names
/// bucket; and a chat gateway reaches nothing of the engine but discovery,
/// `user.get`, `sub.get` and `auth.whoami`, and nothing of its JetStream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_chat_gateways_use_the_chat_subjects_and_they_nothing_else() {
    let cluster = Cluster::start(1).await;
    let url = cluster.nats.url();
    let (_, _, mallory_id) = person(&url, "mallory").await;
    let outsiders = [
        Raw::connect(&url, None).await,
        Raw::connect(&url, Some((&un("mallory"), &mallory_id))).await,
        Raw::connect_as(&common::gateway_url(&url), None).await,
        Raw::connect_as(&url, None).await,
    ];
    for raw in &outsiders {
        let _sub = raw.nats.subscribe("chat.user.g.alice").await.unwrap();
        for target in [
            "chat.room.c.lobby",
            "$KV.chat-names.g.alice",
            "chat.user.g.alice",
        ] {
            raw.nats.publish(target, "forged".into()).await.unwrap();
        }
        raw.nats.flush().await.unwrap();
        raw.refused("chat.user.g.alice").await;
        raw.refused("chat.room.c.lobby").await;
        raw.refused("$KV.chat-names.g.alice").await;
    }
    let chat = Raw::connect_as(&common::chat_url(&url), None).await;
    for sub in [
        "reddit.events.user.alice",
        "_INBOX_SERVICE.gateway.>",
        "reddit.shard.>",
    ] {
        let _s = chat.nats.subscribe(sub).await.unwrap();
        chat.nats.flush().await.unwrap();
        chat.refused(sub).await;
    }
    for op in [
        Op::PostCreate,
        Op::DmSend,
        Op::DmList,
        Op::AuthLogin,
        Op::InternalSync,
    ] {
        let target = subject::request(0, op);
        chat.nats.publish(target.clone(), "x".into()).await.unwrap();
        chat.nats.flush().await.unwrap();
        chat.refused(&target).await;
    }
    for target in [
        "$JS.API.STREAM.INFO.REDDIT_WAL_0",
        "$JS.API.STREAM.DELETE.CHAT_ROOMS",
        "reddit.wal.0",
    ] {
        chat.nats.publish(target, "x".into()).await.unwrap();
        chat.nats.flush().await.unwrap();
        chat.refused(target).await;
    }
    cluster.stop().await;
}

fn hostile_replies(victim: &str) -> Vec<String> {
    vec![
        subject::wal(0),
        "$JS.API.STREAM.PURGE.REDDIT_WAL_0".into(),
        "$JS.API.STREAM.PURGE.OBJ_REDDIT_SNAPSHOTS".into(),
        "$JS.API.STREAM.DELETE.REDDIT_WAL_0".into(),
        subject::request(0, Op::InternalSync),
        subject::request(0, Op::PostCreate),
        subject::user_events(victim),
        subject::subreddit_events("rust"),
        "_INBOX".into(),
        "_INBOX.*".into(),
        "_INBOX_USER.alice".into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_subject_injection_has_no_effect_and_the_shard_keeps_serving() {
    let mut cluster = Cluster::start(1).await;
    let url = cluster.nats.url();
    let c = cluster.client.clone();
    let victim = cluster.user("victim").await;
    let sub = sn("rust");
    c.create_subreddit(&victim, &sub, "d").await.unwrap();
    let post = c
        .send(
            Some(&victim),
            &CreatePostRequest {
                subreddit: sub.clone(),
                title: "kept".into(),
                body: String::new(),
                repost_of: None,
                signature: None,
            },
        )
        .await
        .unwrap();
    let (_, _, mallory_id) = person(&url, "mallory").await;
    let js = async_nats::jetstream::new(connect_engine(&url).await);
    let mut wal = js.get_stream("REDDIT_WAL_0").await.unwrap();
    let before = wal.info().await.unwrap().state.clone();
    let watcher = connect_service(&url).await;
    let mut pushes = watcher.subscribe("reddit.events.>").await.unwrap();
    watcher.flush().await.unwrap();

    // As every role a hostile client can have, every operation (and the $SRV
    // discovery subjects), with every hostile reply subject.
    let attackers = [
        Raw::connect(&url, None).await,
        Raw::connect(&url, Some((&un("mallory"), &mallory_id))).await,
    ];
    let service = connect_service(&url).await;
    let mut sent = 0u64;
    let mut targets: Vec<String> = Op::ALL.iter().map(|op| subject::request(0, *op)).collect();
    targets.extend([
        subject::service_info(),
        subject::service_ping(),
        subject::service_stats(),
        "$SRV.INFO".into(),
    ]);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        reddit_shared::auth::AUTH_HEADER,
        reddit_shared::auth::bearer(&victim.token).as_str(),
    );
    for target in &targets {
        for reply in hostile_replies("victim") {
            let payload = encode(&Empty {}).unwrap();
            service
                .publish_with_reply_and_headers(
                    target.clone(),
                    reply.clone(),
                    headers.clone(),
                    payload.clone().into(),
                )
                .await
                .unwrap();
            for a in &attackers {
                a.nats
                    .publish_with_reply(target.clone(), reply.clone(), payload.clone().into())
                    .await
                    .unwrap();
            }
            if target.starts_with(subject::REQUEST_PREFIX) {
                sent += 1;
            }
        }
    }
    service.flush().await.unwrap();
    // Every request the service role could deliver was dropped and counted.
    eventually(
        "the shard to count refused replies",
        Duration::from_secs(10),
        || {
            let c = c.clone();
            async move {
                c.shard_stats(0)
                    .await
                    .is_ok_and(|s| s.replies_refused >= sent)
            }
        },
    )
    .await;
    // Nothing reached the log, the JetStream API, pushes or internal subjects.
    let after = wal.info().await.unwrap().state.clone();
    assert_eq!(after.messages, before.messages);
    assert_eq!(after.last_sequence, before.last_sequence);
    assert_eq!(after.first_sequence, before.first_sequence);
    assert!(js.get_stream("REDDIT_WAL_0").await.is_ok());
    watcher.flush().await.unwrap();
    assert!(drain(&mut pushes).is_empty(), "no injected pushes");
    let stats = c.shard_stats(0).await.unwrap();
    assert_eq!(stats.posts, 1, "nothing was created by an injected request");

    // Defense in depth: the connection that publishes replies (engine-work) may
    // not reach the log or the JetStream API at all, whatever the shard's code does.
    let as_work = Raw::connect_as(&url.replacen("://service:", "://engine-work:", 1), None).await;
    for target in [subject::wal(0), "$JS.API.STREAM.PURGE.REDDIT_WAL_0".into()] {
        as_work.nats.publish(target, "x".into()).await.unwrap();
    }
    as_work.nats.flush().await.unwrap();
    as_work.refused("reddit.wal.0").await;
    as_work.refused("$JS.API.STREAM.PURGE.REDDIT_WAL_0").await;
    assert_eq!(wal.info().await.unwrap().state.messages, before.messages);

    // And the shard restarts from its log with everything.
    cluster.stop_shard(0).await;
    cluster.shards[0] = Some(common::start_shard(&url, 0, 1).await);
    let got = c.get_post(&sub, post.id).await.unwrap();
    assert_eq!(got.title, "kept");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tokens_with_published_secrets_fail_and_shards_refuse_them() {
    let cluster = Cluster::start(1).await;
    let url = cluster.nats.url();
    let victim = cluster.user("victim").await;
    let c = &cluster.client;
    let mut secrets: Vec<&str> = reddit_engine::KNOWN_SECRETS.to_vec();
    // The NATS passwords that nats.conf used to ship.
    secrets.extend(["engine-dev-password", "client-dev-password"]);
    for secret in secrets {
        let forger = reddit_engine::auth::TokenSigner::new(secret.as_bytes(), 3_600_000);
        let (token, expires_at) =
            forger.issue(&victim.username, &[7u8; 32], reddit_shared::now_millis());
        let forged = Session {
            username: victim.username.clone(),
            token,
            expires_at,
        };
        let e = c
            .send(Some(&forged), &ListDmsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::Unauthenticated), "{secret}");
        if !reddit_engine::KNOWN_SECRETS.contains(&secret) {
            continue;
        }
        // A shard refuses to start with a published secret (unless --dev).
        let refused = common::spawn_shard(reddit_engine::Config::new(&url, 0, 1, secret))
            .stop()
            .await;
        assert!(
            matches!(refused, Err(reddit_engine::EngineError::Config(_))),
            "{secret}: {refused:?}"
        );
    }
    let short = common::spawn_shard(reddit_engine::Config::new(&url, 0, 1, "short"))
        .stop()
        .await;
    assert!(matches!(short, Err(reddit_engine::EngineError::Config(_))));
    // The binary without a secret exits with status 2 and says why.
    let out = std::process::Command::new(common::workspace_bin("reddit-engine"))
        .args(["--nats-url", &url, "--shard", "0", "--shards", "1"])
        .env_remove("REDDIT_SECRET")
        .env_remove("REDDIT_DEV")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("REDDIT_SECRET"));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenge_flood_does_not_stop_a_real_login() {
    let cluster = Cluster::start(1).await;
    let url = cluster.nats.url();
    let (victim_c, _, victim_id) = person(&url, "victim").await;
    let (_, _, mallory_id) = person(&url, "mallory").await;
    let mallory = Raw::connect(&url, Some((&un("mallory"), &mallory_id))).await;
    let payload = encode(&ChallengeRequest {
        username: un("victim"),
    })
    .unwrap();
    // Mallory floods challenges for the victim, from her own inbox and with
    // spoofed ones (the victim's prefix included), while the victim logs in.
    let flood = {
        let nats = mallory.nats.clone();
        let payload = payload.clone();
        tokio::spawn(async move {
            let mut limited = 0;
            for i in 0..3000u32 {
                let reply = match i % 3 {
                    0 => format!("_INBOX_USER.victim.spoof{i}.1"),
                    1 => format!("_INBOX.spoof{i}.1"),
                    _ => String::new(),
                };
                if reply.is_empty() {
                    let req = async_nats::Request::new()
                        .payload(payload.clone().into())
                        .timeout(Some(Duration::from_secs(5)));
                    if let Ok(msg) = nats
                        .send_request(subject::request(0, Op::AuthChallenge), req)
                        .await
                    {
                        let r: Result<serde_json::Value, _> =
                            reddit_shared::connect::decode_message(&msg);
                        if r.is_err_and(|e| e.code == ErrorCode::TooManyRequests) {
                            limited += 1;
                        }
                    }
                } else {
                    let _ = nats
                        .publish_with_reply(
                            subject::request(0, Op::AuthChallenge),
                            reply,
                            payload.clone().into(),
                        )
                        .await;
                }
            }
            limited
        })
    };
    for _ in 0..40 {
        victim_c.login(&un("victim"), &victim_id).await.unwrap();
    }
    let limited = flood.await.unwrap();
    assert!(
        limited > 0,
        "mallory's own connection is rate-limited with 429"
    );
    for _ in 0..5 {
        victim_c.login(&un("victim"), &victim_id).await.unwrap();
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dm_retried_with_a_v4_or_v7_key_across_a_stalled_recipient_is_stored_once() {
    const SHARDS: u32 = 2;
    let nats = NatsServer::start();
    let url = nats.url();
    let mut procs = Vec::new();
    for k in 0..SHARDS {
        procs.push(shard_process(
            &url,
            k,
            SHARDS,
            &["--peer-timeout-ms", "500"],
        ));
        wait_serving(&url, k).await;
    }
    let c = RedditClient::connect(&url, ClientOptions::default())
        .await
        .unwrap();
    let sender = common::user(&c, &name_on("sender", 0, SHARDS)).await;
    let recipient = common::user(&c, &name_on("recipient", 1, SHARDS)).await;
    let c = c.with_retry_budget(Duration::from_secs(30));
    // Stall the recipient's shard so the first attempts time out inside the
    // sender's shard, and resume it while the client keeps retrying.
    let pid = procs[1].id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    let resume = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &pid])
            .status();
    });
    let mut bodies = Vec::new();
    let mut sends = Vec::new();
    // A v4 key's DM id is minted and logged; a v7 key is the id itself.
    for i in 0..10 {
        let body = format!("retried {i}");
        bodies.push(body.clone());
        let req = SendDmRequest {
            to: recipient.username.clone(),
            body,
        };
        let (c, token, shard) = (
            c.clone(),
            sender.token.clone(),
            c.shard_of(sender.username.key()),
        );
        sends.push(tokio::spawn(async move {
            let key = if i % 2 == 0 {
                let v4 = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
                assert_eq!(v4.get_version_num(), 4);
                v4
            } else {
                uuid::Uuid::now_v7()
            };
            let key = key.hyphenated().to_string();
            c.call_with_key::<reddit_shared::protocol::dm::DmView>(
                shard,
                Op::DmSend.as_str(),
                Some(&token),
                encode(&req).unwrap(),
                Some(&key),
            )
            .await
        }));
    }
    for s in sends {
        s.await.unwrap().unwrap();
    }
    resume.await.unwrap();
    common::quiesce(&c).await;
    let page = c
        .send(
            Some(&recipient),
            &ListDmsRequest {
                limit: Some(100),
                ..ListDmsRequest::default()
            },
        )
        .await
        .unwrap();
    for body in &bodies {
        let n = page.messages.iter().filter(|m| &m.body == body).count();
        assert_eq!(n, 1, "{body} stored {n} times");
    }
    let report = c.audit(10).await.unwrap();
    assert!(report.ok, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_documented_posts_comments_and_dms_list_fine() {
    let cluster = Cluster::start(2).await;
    let c = &cluster.client;
    let author = cluster.user(&name_on("author", 0, 2)).await;
    let reader = cluster.user(&name_on("reader", 1, 2)).await;
    let big = "😀".repeat(reddit_shared::protocol::MAX_BODY_CHARS);
    let mut posts = Vec::new();
    let subs = [sn(&name_on("huge", 0, 2)), sn(&name_on("vast", 1, 2))];
    for sub in &subs {
        c.create_subreddit(&author, sub, "d").await.unwrap();
        c.join(&reader, sub).await.unwrap();
        for i in 0..8 {
            let p = c
                .send(
                    Some(&author),
                    &CreatePostRequest {
                        subreddit: sub.clone(),
                        title: format!("big {i}"),
                        body: big.clone(),
                        repost_of: None,
                        signature: None,
                    },
                )
                .await
                .unwrap();
            posts.push(p);
        }
    }
    for i in 0..8 {
        let body = format!("{i}{}", &big[4..]);
        c.send_dm(&author, &reader.username, &body).await.unwrap();
        c.send(
            Some(&author),
            &CreateCommentRequest {
                subreddit: subs[0].clone(),
                post_id: posts[0].id,
                parent_id: None,
                body: big.clone(),
                signature: None,
            },
        )
        .await
        .unwrap();
    }
    common::quiesce(c).await;
    // Every listing pages through all of it, each page under NATS's max payload.
    let (subs, reader) = (&subs, &reader);
    let posts_seen = all_pages(|cursor| async move {
        let page = c
            .send(
                None,
                &ListPostsRequest {
                    subreddit: subs[0].clone(),
                    sort: PostSort::New,
                    limit: Some(100),
                    cursor,
                },
            )
            .await
            .unwrap();
        (page.posts, page.next_cursor)
    })
    .await;
    assert_eq!(posts_seen.len(), 8);
    for sort in [PostSort::New, PostSort::Top, PostSort::Hot] {
        let feed = all_pages(|cursor| async move {
            let page = c
                .send(
                    Some(reader),
                    &FeedRequest {
                        sort,
                        limit: Some(100),
                        cursor,
                        fresh: false,
                    },
                )
                .await
                .unwrap();
            (page.posts, page.next_cursor)
        })
        .await;
        let ids: std::collections::HashSet<_> = feed.iter().map(|p| p.id).collect();
        assert_eq!(ids.len(), feed.len(), "{sort:?}: a post twice");
        assert_eq!(ids.len(), 16, "{sort:?}: the feed misses posts");
    }
    let dms = all_pages(|cursor| async move {
        let page = c
            .send(
                Some(reader),
                &ListDmsRequest {
                    folder: DmFolder::Inbox,
                    unread_only: false,
                    limit: Some(100),
                    cursor,
                },
            )
            .await
            .unwrap();
        (page.messages, page.next_cursor)
    })
    .await;
    assert_eq!(dms.len(), 8);
    let tree = c
        .send(
            None,
            &CommentTreeRequest {
                subreddit: subs[0].clone(),
                post_id: posts[0].id,
                sort: Default::default(),
                limit: None,
                root: None,
            },
        )
        .await
        .unwrap();
    assert!(tree.truncated, "the tree says it stopped early");
    assert!(!tree.comments.is_empty() && tree.comments.len() < 8);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_far_over_the_queue_gets_only_answers() {
    let nats = NatsServer::start();
    let url = nats.url();
    let mut config = reddit_engine::Config::new(&url, 0, 1, SECRET);
    config.queue_capacity = 64;
    config.storage = reddit_engine::Storage::Memory;
    let shard = common::spawn_shard(config);
    wait_serving(&url, 0).await;
    // Far over the queue (64) and over async-nats's default subscription buffer
    // (65,536 messages), which is where requests used to vanish.
    const BURST: u32 = 100_000;
    let service = reddit_shared::connect::connect_with(
        &url,
        "burst",
        async_nats::ConnectOptions::new()
            .custom_inbox_prefix(subject::SERVICE_INBOX)
            .subscription_capacity(2 * BURST as usize),
        None,
    )
    .await
    .unwrap();
    let mut replies = service.subscribe("_INBOX_SERVICE.burst.>").await.unwrap();
    service.flush().await.unwrap();
    let payload = encode(&Empty {}).unwrap();
    for i in 0..BURST {
        service
            .publish_with_reply(
                subject::request(0, Op::ShardStats),
                format!("_INBOX_SERVICE.burst.{i}"),
                payload.clone().into(),
            )
            .await
            .unwrap();
    }
    service.flush().await.unwrap();
    let (mut ok, mut overloaded) = (0u32, 0u32);
    let mut seen = std::collections::HashSet::new();
    while seen.len() < BURST as usize {
        let msg = tokio::time::timeout(Duration::from_secs(20), replies.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {BURST} requests were answered", seen.len()))
            .unwrap();
        assert!(seen.insert(msg.subject.to_string()), "one answer each");
        match reddit_shared::connect::decode_message::<serde_json::Value>(&msg) {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(e.code, ErrorCode::Unavailable, "{e}");
                overloaded += 1;
            }
        }
    }
    assert!(
        overloaded > 0,
        "the queue overflowed ({ok} answered at once)"
    );
    let c = RedditClient::connect(&url, ClientOptions::default())
        .await
        .unwrap();
    let stats = c.shard_stats(0).await.unwrap();
    assert_eq!(stats.slow_consumer_events, 0);
    shard.stop().await.unwrap();
}
