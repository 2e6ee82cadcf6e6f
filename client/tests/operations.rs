//! Every operation end to end against real shards, with 1 shard and with 3.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{eventually, sn, un, Cluster};
use reddit_client::ErrorKind;
use reddit_shared::protocol::comment::{CommentSort, CommentTreeRequest, CreateCommentRequest};
use reddit_shared::protocol::dm::{DmFolder, ListDmsRequest};
use reddit_shared::protocol::feed::FeedRequest;
use reddit_shared::protocol::post::{CreatePostRequest, ListPostsRequest, PostSort};
use reddit_shared::protocol::push::PushEvent;
use reddit_shared::protocol::vote::{VoteRequest, VoteTarget};
use reddit_shared::protocol::PostRef;
use std::time::Duration;

async fn every_operation(shards: u32) {
    let cluster = Cluster::start(shards).await;
    let c = &cluster.client;
    let alice = cluster.user("Alice").await;
    let bob = cluster.user("bob").await;
    let carol = cluster.user("carol_3").await;

    // user.get
    let a = c.get_user(&un("alice")).await.unwrap();
    assert_eq!(a.username, "Alice");
    assert_eq!(a.post_karma, 0);
    assert!(a.joined.is_empty());
    assert_eq!(
        c.get_user(&un("nobody")).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );

    // sub.create / get / list
    let rust = c
        .create_subreddit(&alice, &sn("Rust"), "The language")
        .await
        .unwrap();
    assert_eq!(rust.name.as_str(), "Rust");
    assert_eq!(rust.creator, "Alice");
    let err = c
        .create_subreddit(&bob, &sn("rust"), "again")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    c.create_subreddit(&bob, &sn("cooking"), "").await.unwrap();
    c.create_subreddit(&bob, &sn("gardening"), "")
        .await
        .unwrap();
    assert_eq!(
        c.get_subreddit(&sn("RUST")).await.unwrap().description,
        "The language"
    );
    assert_eq!(
        c.get_subreddit(&sn("nope")).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );

    // sub.join / leave (idempotent), reflected in the user's joined list at once
    for s in [&alice, &bob, &carol] {
        let r = c.join(s, &sn("rust")).await.unwrap();
        assert!(r.member && r.changed);
    }
    let again = c.join(&bob, &sn("rust")).await.unwrap();
    assert!(again.member && !again.changed);
    assert_eq!(again.members, 3);
    c.join(&bob, &sn("cooking")).await.unwrap();
    c.join(&bob, &sn("gardening")).await.unwrap();
    let left = c.leave(&bob, &sn("gardening")).await.unwrap();
    assert!(!left.member && left.changed);
    let bob_view = c.get_user(&un("bob")).await.unwrap();
    let joined: Vec<&str> = bob_view.joined.iter().map(|n| n.as_str()).collect();
    assert_eq!(joined, vec!["cooking", "Rust"]);
    let subs = c.list_subreddits(10).await.unwrap();
    assert_eq!(subs.len(), 3);
    assert_eq!(subs[0].name.as_str(), "Rust");
    assert_eq!(subs[0].members, 3);
    assert_eq!(
        c.join(&bob, &sn("missing")).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );

    // push: subscribe before acting
    let mut alice_events = c.user_events(&un("alice")).await.unwrap();
    let mut rust_events = c.subreddit_events(&sn("rust")).await.unwrap();

    // post.create / get / list, repost
    let post = c
        .send(
            Some(&alice),
            &CreatePostRequest {
                subreddit: sn("rust"),
                title: "Hello".into(),
                body: "First post".into(),
                repost_of: None,
                signature: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(post.author, "Alice");
    assert_eq!(post.score, 0);
    match tokio::time::timeout(Duration::from_secs(5), rust_events.next())
        .await
        .unwrap()
    {
        Some(PushEvent::Post { post: p }) => assert_eq!(p.id, post.id),
        other => panic!("expected a post event, got {other:?}"),
    }
    let repost = c
        .send(
            Some(&bob),
            &CreatePostRequest {
                subreddit: sn("cooking"),
                title: "Seen in r/rust".into(),
                body: String::new(),
                repost_of: Some(PostRef {
                    subreddit: sn("rust"),
                    id: post.id,
                }),
                signature: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(repost.repost_of.as_ref().unwrap().id, post.id);
    let missing = c
        .send(
            Some(&bob),
            &CreatePostRequest {
                subreddit: sn("cooking"),
                title: "Ghost".into(),
                body: String::new(),
                repost_of: Some(PostRef {
                    subreddit: sn("gardening"),
                    id: reddit_shared::ids::PostId::new(),
                }),
                signature: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);
    assert_eq!(
        c.get_post(&sn("rust"), post.id).await.unwrap().title,
        "Hello"
    );
    let second = c
        .send(
            Some(&carol),
            &CreatePostRequest {
                subreddit: sn("rust"),
                title: "Second".into(),
                body: String::new(),
                repost_of: None,
                signature: None,
            },
        )
        .await
        .unwrap();
    let page = c
        .send(
            None,
            &ListPostsRequest {
                subreddit: sn("rust"),
                sort: PostSort::New,
                limit: Some(1),
                cursor: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.posts[0].id, second.id);
    let page2 = c
        .send(
            None,
            &ListPostsRequest {
                subreddit: sn("rust"),
                sort: PostSort::New,
                limit: Some(1),
                cursor: page.next_cursor.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(page2.posts[0].id, post.id);
    assert!(page2.next_cursor.is_none());

    // comments at depth, tree, reply push
    let c1 = c
        .send(
            Some(&bob),
            &CreateCommentRequest {
                subreddit: sn("rust"),
                post_id: post.id,
                parent_id: None,
                body: "top".into(),
                signature: None,
            },
        )
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), alice_events.next())
        .await
        .unwrap()
    {
        Some(PushEvent::Reply { comment }) => assert_eq!(comment.id, c1.id),
        other => panic!("expected a reply event, got {other:?}"),
    }
    let mut parent = c1.id;
    for depth in 1..=5 {
        let reply = c
            .send(
                Some(if depth % 2 == 0 { &bob } else { &carol }),
                &CreateCommentRequest {
                    subreddit: sn("rust"),
                    post_id: post.id,
                    parent_id: Some(parent),
                    body: format!("depth {depth}"),
                    signature: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(reply.depth, depth);
        parent = reply.id;
    }
    let tree = c
        .send(
            None,
            &CommentTreeRequest {
                subreddit: sn("rust"),
                post_id: post.id,
                sort: CommentSort::Best,
                limit: None,
                root: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(tree.total, 6);
    let mut node = &tree.comments[0];
    let mut depth = 0;
    while let Some(child) = node.replies.first() {
        node = child;
        depth += 1;
    }
    assert_eq!(depth, 5);
    assert_eq!(node.body, "depth 5");
    let bad_parent = c
        .send(
            Some(&bob),
            &CreateCommentRequest {
                subreddit: sn("rust"),
                post_id: post.id,
                parent_id: Some(reddit_shared::ids::CommentId::new()),
                body: "orphan".into(),
                signature: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(bad_parent.kind(), ErrorKind::NotFound);

    // votes: one per user, change, clear; karma follows
    let vote = |value, target, id| VoteRequest {
        subreddit: sn("rust"),
        target,
        id,
        value,
    };
    assert_eq!(
        c.send(Some(&bob), &vote(1, VoteTarget::Post, post.id.0))
            .await
            .unwrap()
            .score,
        1
    );
    assert_eq!(
        c.send(Some(&bob), &vote(1, VoteTarget::Post, post.id.0))
            .await
            .unwrap()
            .score,
        1
    );
    assert_eq!(
        c.send(Some(&carol), &vote(1, VoteTarget::Post, post.id.0))
            .await
            .unwrap()
            .score,
        2
    );
    assert_eq!(
        c.send(Some(&carol), &vote(-1, VoteTarget::Post, post.id.0))
            .await
            .unwrap()
            .score,
        0
    );
    let v = c
        .send(Some(&carol), &vote(0, VoteTarget::Post, post.id.0))
        .await
        .unwrap();
    assert_eq!((v.score, v.ups, v.downs, v.value), (1, 1, 0, 0));
    assert_eq!(
        c.send(Some(&alice), &vote(-1, VoteTarget::Comment, c1.id.0))
            .await
            .unwrap()
            .score,
        -1
    );
    let nothing = c
        .send(Some(&alice), &vote(1, VoteTarget::Comment, post.id.0))
        .await
        .unwrap_err();
    assert_eq!(nothing.kind(), ErrorKind::NotFound);
    eventually(
        "karma to reach the authors' shards",
        Duration::from_secs(5),
        || async {
            let a = c.get_user(&un("alice")).await.unwrap();
            let b = c.get_user(&un("bob")).await.unwrap();
            a.post_karma == 1 && b.comment_karma == -1
        },
    )
    .await;

    // feed across joined subreddits
    let feed = c
        .send(
            Some(&bob),
            &FeedRequest {
                sort: PostSort::New,
                limit: Some(10),
                cursor: None,
                fresh: false,
            },
        )
        .await
        .unwrap();
    let ids: Vec<_> = feed.posts.iter().map(|p| p.id).collect();
    assert_eq!(ids, vec![second.id, repost.id, post.id]);
    let top = c
        .send(
            Some(&bob),
            &FeedRequest {
                sort: PostSort::Top,
                limit: Some(1),
                cursor: None,
                fresh: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(top.posts[0].id, post.id);
    assert!(top.next_cursor.is_some());

    // DMs: send, push, list, reply, read, sent folder
    let dm = c.send_dm(&bob, &un("ALICE"), "hi alice").await.unwrap();
    assert_eq!(dm.to, "Alice");
    match tokio::time::timeout(Duration::from_secs(5), alice_events.next())
        .await
        .unwrap()
    {
        Some(PushEvent::Dm { dm: d }) => assert_eq!(d.id, dm.id),
        other => panic!("expected a DM event, got {other:?}"),
    }
    let inbox = c
        .send(
            Some(&alice),
            &ListDmsRequest {
                unread_only: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(inbox.unread, 1);
    assert_eq!(inbox.messages[0].body, "hi alice");
    let answer = c.reply_dm(&alice, dm.id, "hi bob").await.unwrap();
    assert_eq!(answer.to, "bob");
    assert_eq!(answer.in_reply_to, Some(dm.id));
    let not_mine = c.reply_dm(&carol, dm.id, "intrude").await.unwrap_err();
    assert_eq!(not_mine.kind(), ErrorKind::Forbidden);
    let marked = c.mark_read(&alice, vec![dm.id]).await.unwrap();
    assert_eq!((marked.marked, marked.unread), (1, 0));
    let sent = c
        .send(
            Some(&bob),
            &ListDmsRequest {
                folder: DmFolder::Sent,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(sent.messages.len(), 1);
    let bob_inbox = c
        .send(Some(&bob), &ListDmsRequest::default())
        .await
        .unwrap();
    assert_eq!(bob_inbox.messages[0].body, "hi bob");
    let nobody = c.send_dm(&bob, &un("nobody"), "?").await.unwrap_err();
    assert_eq!(nobody.kind(), ErrorKind::NotFound);

    // stats and audit
    let stats = c.all_stats().await.unwrap();
    assert_eq!(stats.len() as u32, shards);
    assert_eq!(stats.iter().map(|s| s.users).sum::<u64>(), 3);
    assert_eq!(stats.iter().map(|s| s.posts).sum::<u64>(), 3);
    assert_eq!(stats.iter().map(|s| s.comments).sum::<u64>(), 6);
    eventually("outboxes to drain", Duration::from_secs(5), || async {
        c.all_stats()
            .await
            .unwrap()
            .iter()
            .all(|s| s.pending_sync == 0)
    })
    .await;
    // $SRV.STATS carries the per-operation counters as endpoint data.
    let inbox = c.nats().unwrap().new_inbox();
    let mut replies = c.nats().unwrap().subscribe(inbox.clone()).await.unwrap();
    c.nats()
        .unwrap()
        .publish_with_reply(
            reddit_shared::subject::service_stats(),
            inbox,
            Vec::new().into(),
        )
        .await
        .unwrap();
    let mut posts_created = 0;
    for _ in 0..shards {
        let msg = tokio::time::timeout(
            Duration::from_secs(5),
            futures::StreamExt::next(&mut replies),
        )
        .await
        .unwrap()
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
        let data = &v["endpoints"][0]["data"];
        assert!(data["requests"].as_u64().unwrap() > 0, "{v}");
        posts_created += data["requests_by_op"]["post.create"].as_u64().unwrap_or(0);
    }
    assert_eq!(posts_created, 4, "3 posts and one refused repost");
    let audit = c.audit(10).await.unwrap();
    assert!(audit.ok, "{:?}", audit.violations);
    assert_eq!(audit.checked.users, 3);
    assert_eq!(audit.checked.dms, 2);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_one_shard() {
    every_operation(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_three_shards() {
    every_operation(3).await;
}
