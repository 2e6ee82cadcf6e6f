//! Signed posts and comments, end to end on 2 shards: the author signs the
//! canonical bytes (docs/protocol.md), the engine checks them with the key the
//! token carries before storing, returns the signature with the item, and anyone
//! verifies it with the author's public key from `user.get`. A tampered or
//! borrowed signature is refused with a clear error and nothing is stored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{sn, un, Cluster};
use reddit_client::identity::{signed_comment, signed_post, verify_hex};
use reddit_client::{ErrorKind, Identity, RedditClient, Session};
use reddit_shared::auth::{comment_message, post_message};
use reddit_shared::error::ErrorCode;
use reddit_shared::protocol::comment::{CommentTreeRequest, CreateCommentRequest};
use reddit_shared::protocol::post::{CreatePostRequest, ListPostsRequest};

async fn user(c: &RedditClient, name: &str) -> (Session, Identity) {
    let id = Identity::generate();
    c.register(&un(name), &id).await.unwrap();
    (c.login(&un(name), &id).await.unwrap(), id)
}

fn post(sub: &str, title: &str, body: &str) -> CreatePostRequest {
    CreatePostRequest {
        subreddit: sn(sub),
        title: title.into(),
        body: body.into(),
        repost_of: None,
        signature: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_posts_and_comments_are_checked_stored_and_verifiable() {
    let cluster = Cluster::start(2).await;
    let c = &cluster.client;
    let (ann, ann_key) = user(c, "ann_signs").await;
    let (bob, bob_key) = user(c, "bob_signs").await;
    c.create_subreddit(&ann, &sn("signed"), "").await.unwrap();

    // A signed post is stored with its signature, and verifies with the key
    // anyone can read from user.get.
    let mut req = post("signed", "Mine", "I wrote this");
    let bytes = post_message("ann_signs", "signed", None, "Mine", "I wrote this");
    req.signature = Some(ann_key.sign_hex(&bytes));
    let stored = c.send(Some(&ann), &req).await.unwrap();
    assert_eq!(stored.signature, req.signature);
    let read = c.get_post(&sn("signed"), stored.id).await.unwrap();
    let public = c.get_user(&un("ann_signs")).await.unwrap().public_key;
    assert!(verify_hex(
        &public,
        &signed_post(&read),
        read.signature.as_deref().unwrap()
    ));

    // Tampered: signed one title, sent another. Refused, naming the field.
    let mut tampered = post("signed", "Changed", "I wrote this");
    tampered.signature = req.signature.clone();
    let e = c.send(Some(&ann), &tampered).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidRequest), "{e}");
    assert!(e.message().starts_with("signature:"), "{}", e.message());

    // Borrowed: bob sends ann's signed post as his own; his key does not verify it.
    let e = c.send(Some(&bob), &req).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidRequest), "{e}");

    // Signed with the wrong key: bob signs ann's bytes.
    let mut wrong = req.clone();
    wrong.signature = Some(bob_key.sign_hex(&bytes));
    assert_eq!(
        c.send(Some(&ann), &wrong).await.unwrap_err().code(),
        Some(ErrorCode::InvalidRequest)
    );

    // Not a signature at all.
    let mut junk = post("signed", "x", "");
    junk.signature = Some("not hex".into());
    let e = c.send(Some(&ann), &junk).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert!(e.message().contains("signature"), "{}", e.message());

    // Nothing refused was stored: the subreddit holds the one signed post.
    let page = c
        .send(
            None,
            &ListPostsRequest {
                subreddit: sn("signed"),
                sort: Default::default(),
                limit: None,
                cursor: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.posts.len(), 1);

    // Unsigned posts are still accepted, and say so.
    let plain = c
        .send(Some(&bob), &post("signed", "plain", ""))
        .await
        .unwrap();
    assert_eq!(plain.signature, None);

    // Comments: signed at any depth, tampering refused.
    let top_bytes = comment_message("bob_signs", "signed", &stored.id, None, "nice");
    let top = c
        .send(
            Some(&bob),
            &CreateCommentRequest {
                subreddit: sn("signed"),
                post_id: stored.id,
                parent_id: None,
                body: "nice".into(),
                signature: Some(bob_key.sign_hex(&top_bytes)),
            },
        )
        .await
        .unwrap();
    let reply_bytes = comment_message("ann_signs", "signed", &stored.id, Some(&top.id), "thanks");
    let mut reply = CreateCommentRequest {
        subreddit: sn("signed"),
        post_id: stored.id,
        parent_id: Some(top.id),
        body: "thanks!".into(),
        signature: Some(ann_key.sign_hex(&reply_bytes)),
    };
    let e = c.send(Some(&ann), &reply).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidRequest), "{e}");
    reply.body = "thanks".into();
    c.send(Some(&ann), &reply).await.unwrap();
    let tree = c
        .send(
            None,
            &CommentTreeRequest {
                subreddit: sn("signed"),
                post_id: stored.id,
                sort: Default::default(),
                limit: None,
                root: None,
            },
        )
        .await
        .unwrap();
    let bob_public = c.get_user(&un("bob_signs")).await.unwrap().public_key;
    let first = &tree.comments[0];
    assert!(verify_hex(
        &bob_public,
        &signed_comment(first),
        first.signature.as_deref().unwrap()
    ));
    let second = &first.replies[0];
    assert!(verify_hex(
        &public,
        &signed_comment(second),
        second.signature.as_deref().unwrap()
    ));
    cluster.stop().await;
}
