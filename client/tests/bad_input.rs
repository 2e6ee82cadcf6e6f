//! Bad input gets a clear error with the right code, and the engine keeps serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{sn, un, Cluster, SECRET};
use reddit_client::{ClientError, ErrorKind, Identity, RedditClient};
use reddit_shared::codec::encode;
use reddit_shared::error::{ErrorCode, WireError, ERROR_CODE_HEADER, ERROR_HEADER};
use reddit_shared::protocol::post::CreatePostRequest;
use reddit_shared::protocol::user::UserView;
use reddit_shared::protocol::Op;
use serde::Serialize;
use std::collections::BTreeMap;

/// Decodes (and ignores) any reply.
type Any = serde::de::IgnoredAny;

async fn raw(
    c: &RedditClient,
    key: &str,
    op: &str,
    token: Option<&str>,
    payload: Vec<u8>,
) -> ClientError {
    let shard = c.shard_of(key);
    c.call_raw::<Any>(shard, op, token, payload)
        .await
        .unwrap_err()
}

fn map<T: Serialize>(v: &T) -> Vec<u8> {
    encode(v).unwrap()
}

async fn assert_serving(c: &RedditClient) {
    let u: UserView = c.get_user(&un("alice")).await.unwrap();
    assert_eq!(u.username, "alice");
}

fn expect(e: &ClientError, code: ErrorCode, mentions: &str) {
    assert_eq!(e.code(), Some(code), "{e}");
    assert!(
        e.message()
            .to_lowercase()
            .contains(&mentions.to_lowercase()),
        "{e} should mention {mentions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_the_engine_keeps_serving() {
    let cluster = Cluster::start(3).await;
    let c = &cluster.client;
    let alice = cluster.user("alice").await;
    let bob = cluster.user("bob").await;
    c.create_subreddit(&alice, &sn("rust"), "").await.unwrap();

    // Malformed MessagePack.
    let e = raw(c, "alice", "user.get", None, vec![0xc1, 0x00, 0xff]).await;
    expect(&e, ErrorCode::Malformed, "MessagePack");
    let e = raw(c, "alice", "user.get", None, vec![0x81, 0xa8, b'u']).await;
    expect(&e, ErrorCode::Malformed, "MessagePack");
    assert_serving(c).await;

    // Unknown operation.
    let e = raw(
        c,
        "alice",
        "user.explode",
        None,
        map(&BTreeMap::<String, String>::new()),
    )
    .await;
    expect(&e, ErrorCode::UnknownOperation, "user.explode");
    assert_eq!(e.kind(), ErrorKind::Invalid);

    // Wrong field types, missing fields, not a map.
    #[derive(Serialize)]
    struct WrongType {
        username: u32,
    }
    let e = raw(
        c,
        "alice",
        "user.get",
        None,
        map(&WrongType { username: 5 }),
    )
    .await;
    expect(&e, ErrorCode::InvalidRequest, "invalid type");
    let e = raw(
        c,
        "alice",
        "user.get",
        None,
        map(&BTreeMap::<String, String>::new()),
    )
    .await;
    expect(&e, ErrorCode::InvalidRequest, "username");
    let e = raw(c, "alice", "user.get", None, map(&vec![1, 2, 3])).await;
    expect(&e, ErrorCode::InvalidRequest, "map");
    assert_serving(c).await;

    // Oversize payload.
    let big = BTreeMap::from([("username", "x".repeat(300 * 1024))]);
    let e = raw(c, "alice", "user.get", None, map(&big)).await;
    expect(&e, ErrorCode::TooLarge, "bytes");
    assert_eq!(e.kind(), ErrorKind::TooLarge);
    assert_serving(c).await;

    // Invalid names.
    for bad in [
        "ab",
        "a_very_long_subreddit_n",
        "no-dashes",
        "spa ce",
        "émoji",
    ] {
        let body = BTreeMap::from([("name", bad)]);
        let e = raw(c, "x", "sub.get", None, map(&body)).await;
        expect(&e, ErrorCode::InvalidRequest, "subreddit name");
    }
    for bad in ["ab", "twenty_one_chars_long", "dot.ted", "new\nline", ""] {
        let body = BTreeMap::from([("username", bad)]);
        let e = raw(c, "x", "user.get", None, map(&body)).await;
        expect(&e, ErrorCode::InvalidRequest, "username");
    }
    let e = raw(
        c,
        "x",
        "user.register",
        None,
        map(&BTreeMap::from([
            ("username", "okname"),
            ("public_key", "zz"),
        ])),
    )
    .await;
    expect(&e, ErrorCode::InvalidRequest, "public_key");
    // The client library refuses invalid names before sending anything.
    assert!("x".parse::<reddit_shared::names::Username>().is_err());

    // Title and body limits (bypassing the client's own validation).
    let post = |title: String, body: String| CreatePostRequest {
        subreddit: sn("rust"),
        title,
        body,
        repost_of: None,
        signature: None,
    };
    let e = raw(
        c,
        "rust",
        "post.create",
        Some(&alice.token),
        map(&post("t".repeat(301), String::new())),
    )
    .await;
    expect(&e, ErrorCode::InvalidRequest, "title");
    let e = raw(
        c,
        "rust",
        "post.create",
        Some(&alice.token),
        map(&post(String::new(), String::new())),
    )
    .await;
    expect(&e, ErrorCode::InvalidRequest, "title");
    let e = raw(
        c,
        "rust",
        "post.create",
        Some(&alice.token),
        map(&post("ok".into(), "b".repeat(40_001))),
    )
    .await;
    expect(&e, ErrorCode::InvalidRequest, "body");
    let ok = c
        .send(Some(&alice), &post("t".repeat(300), "é".repeat(40_000)))
        .await
        .unwrap();
    assert_eq!(ok.title.chars().count(), 300);
    assert!(
        c.send(Some(&alice), &post("t".repeat(301), String::new()))
            .await
            .unwrap_err()
            .kind()
            == ErrorKind::Invalid
    );

    // Tokens: missing, malformed header, forged, other secret, expired.
    let body = map(&BTreeMap::from([("name", "rust")]));
    let e = raw(c, "rust", "sub.join", None, body.clone()).await;
    expect(&e, ErrorCode::Unauthenticated, "Authorization");
    let forged = alice.token.replacen("alice", "bob", 1);
    let e = raw(c, "rust", "sub.join", Some(&forged), body.clone()).await;
    expect(&e, ErrorCode::Unauthenticated, "not valid");
    let other = reddit_engine::auth::TokenSigner::new(b"another-secret", 3_600_000);
    let (foreign, _) = other.issue(&un("alice"), &[7u8; 32], reddit_shared::now_millis());
    let e = raw(c, "rust", "sub.join", Some(&foreign), body.clone()).await;
    expect(&e, ErrorCode::Unauthenticated, "not valid");
    let ours = reddit_engine::auth::TokenSigner::new(SECRET.as_bytes(), 1_000);
    let (expired, _) = ours.issue(
        &un("alice"),
        &[7u8; 32],
        reddit_shared::now_millis() - 60_000,
    );
    let e = raw(c, "rust", "sub.join", Some(&expired), body.clone()).await;
    expect(&e, ErrorCode::Unauthenticated, "expired");
    let e = raw(c, "rust", "sub.join", Some("garbage"), body.clone()).await;
    assert_eq!(e.kind(), ErrorKind::Unauthorized);
    assert_serving(c).await;

    // Logins: replayed, wrong key, unknown user.
    let id = Identity::generate();
    c.register(&un("carol"), &id).await.unwrap();
    let ch: reddit_shared::protocol::user::ChallengeReply = c
        .call_raw(
            c.shard_of("carol"),
            "auth.challenge",
            None,
            map(&BTreeMap::from([("username", "carol")])),
        )
        .await
        .unwrap();
    let login = BTreeMap::from([
        ("username", "carol".to_owned()),
        ("challenge", ch.challenge.clone()),
        ("signature", id.sign_login(&un("carol"), &ch.challenge)),
    ]);
    let _: reddit_shared::protocol::user::LoginReply = c
        .call_raw(c.shard_of("carol"), "auth.login", None, map(&login))
        .await
        .unwrap();
    let e = raw(c, "carol", "auth.login", None, map(&login)).await;
    expect(&e, ErrorCode::Unauthenticated, "challenge");
    let e = c
        .login(&un("carol"), &Identity::generate())
        .await
        .unwrap_err();
    expect(&e, ErrorCode::Unauthenticated, "signature");
    let e = c.login(&un("nobody"), &id).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);

    // Acting on what does not exist; replying to a DM that is not yours.
    let ghost = reddit_shared::ids::PostId::new();
    let vote = reddit_shared::protocol::vote::VoteRequest {
        subreddit: sn("rust"),
        target: reddit_shared::protocol::vote::VoteTarget::Post,
        id: ghost.0,
        value: 1,
    };
    expect(
        &c.send(Some(&bob), &vote).await.unwrap_err(),
        ErrorCode::NotFound,
        "no post",
    );
    let mut bad_value = vote.clone();
    bad_value.value = 2;
    let e = raw(c, "rust", "vote.cast", Some(&bob.token), map(&bad_value)).await;
    expect(&e, ErrorCode::InvalidRequest, "value");
    let comment = reddit_shared::protocol::comment::CreateCommentRequest {
        subreddit: sn("rust"),
        post_id: ghost,
        parent_id: None,
        body: "hello?".into(),
        signature: None,
    };
    expect(
        &c.send(Some(&bob), &comment).await.unwrap_err(),
        ErrorCode::NotFound,
        "no post",
    );
    let mut in_missing_sub = comment.clone();
    in_missing_sub.subreddit = sn("nowhere");
    expect(
        &c.send(Some(&bob), &in_missing_sub).await.unwrap_err(),
        ErrorCode::NotFound,
        "no subreddit",
    );
    let dm = c.send_dm(&alice, &un("bob"), "for bob only").await.unwrap();
    let e = c
        .reply_dm(&cluster.user("mallory").await, dm.id, "hijack")
        .await
        .unwrap_err();
    expect(&e, ErrorCode::Forbidden, "inbox");
    let e = c.reply_dm(&alice, dm.id, "to myself?").await.unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::Forbidden,
        "the sender cannot reply to their own DM"
    );

    // Misrouted requests, bad cursors and page sizes.
    let wrong = (c.shard_of("alice") + 1) % c.shards();
    let e = c
        .call_raw::<Any>(
            wrong,
            "user.get",
            None,
            map(&BTreeMap::from([("username", "alice")])),
        )
        .await
        .unwrap_err();
    expect(&e, ErrorCode::WrongShard, "shard");
    let list = BTreeMap::from([("subreddit", "rust"), ("cursor", "not-a-cursor")]);
    expect(
        &raw(c, "rust", "post.list", None, map(&list)).await,
        ErrorCode::InvalidRequest,
        "cursor",
    );
    #[derive(Serialize)]
    struct Limit {
        subreddit: &'static str,
        limit: u32,
    }
    let e = raw(
        c,
        "rust",
        "post.list",
        None,
        map(&Limit {
            subreddit: "rust",
            limit: 0,
        }),
    )
    .await;
    expect(&e, ErrorCode::InvalidRequest, "limit");
    let e = raw(
        c,
        "rust",
        "post.list",
        None,
        map(&Limit {
            subreddit: "rust",
            limit: 5_000,
        }),
    )
    .await;
    expect(&e, ErrorCode::InvalidRequest, "limit");

    // The error reply carries the micro-service headers and a MessagePack body.
    let msg = c
        .nats()
        .unwrap()
        .request(
            reddit_shared::subject::request(c.shard_of("alice"), Op::UserGet),
            vec![0xc1].into(),
        )
        .await
        .unwrap();
    let headers = msg.headers.unwrap();
    assert_eq!(headers.get(ERROR_CODE_HEADER).unwrap().as_str(), "400");
    assert!(headers
        .get(ERROR_HEADER)
        .unwrap()
        .as_str()
        .contains("MessagePack"));
    let body: WireError = rmp_serde::from_slice(&msg.payload).unwrap();
    assert_eq!(body.code, ErrorCode::Malformed);

    // Still serving, and errors are counted.
    assert_serving(c).await;
    let errors: u64 = c.all_stats().await.unwrap().iter().map(|s| s.errors).sum();
    assert!(errors >= 30, "{errors}");
    cluster.stop().await;
}
