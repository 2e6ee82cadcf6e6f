//! Many requests at once: registrations, a contended name, votes on one post.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{eventually, quiesce, sn, un, Cluster};
use reddit_client::{ErrorKind, Identity};
use reddit_shared::protocol::post::CreatePostRequest;
use reddit_shared::protocol::vote::{VoteRequest, VoteTarget};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_registrations_all_succeed() {
    let cluster = Cluster::start(3).await;
    let c = &cluster.client;
    let results = futures::future::join_all((0..1000).map(|i| {
        let c = c.clone();
        async move {
            c.register(&un(&format!("user{i:04}")), &Identity::generate())
                .await
        }
    }))
    .await;
    let failures: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{} failed, first: {:?}",
        failures.len(),
        failures.first()
    );
    let stats = c.all_stats().await.unwrap();
    assert_eq!(stats.iter().map(|s| s.users).sum::<u64>(), 1000);
    assert!(
        stats.iter().all(|s| s.users > 200),
        "hash spreads users: {stats:?}"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_registrations_of_one_name_give_one_success() {
    let cluster = Cluster::start(3).await;
    let c = &cluster.client;
    let results = futures::future::join_all((0..100).map(|i| {
        let c = c.clone();
        // Different spellings of the same name: uniqueness is case-insensitive.
        let name = if i % 2 == 0 { "Contested" } else { "contested" };
        async move { c.register(&un(name), &Identity::generate()).await }
    }))
    .await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let conflicts = results
        .iter()
        .filter(|r| matches!(r, Err(e) if e.kind() == ErrorKind::Conflict))
        .count();
    assert_eq!((ok, conflicts), (1, 99));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_votes_give_the_exact_score() {
    let cluster = Cluster::start(3).await;
    let c = &cluster.client;
    let author = cluster.user("author").await;
    c.create_subreddit(&author, &sn("votes"), "").await.unwrap();
    let post = c
        .send(
            Some(&author),
            &CreatePostRequest {
                subreddit: sn("votes"),
                title: "vote on me".into(),
                body: String::new(),
                repost_of: None,
                signature: None,
            },
        )
        .await
        .unwrap();
    let voters = futures::future::join_all((0..200).map(|i| {
        let c = c.clone();
        async move { common::user(&c, &format!("v{i:03}")).await }
    }))
    .await;
    // 150 up, 50 down, all at once; then the first 10 up-voters change to down.
    let results = futures::future::join_all(voters.iter().enumerate().map(|(i, v)| {
        let c = c.clone();
        let req = VoteRequest {
            subreddit: sn("votes"),
            target: VoteTarget::Post,
            id: post.id.0,
            value: if i < 150 { 1 } else { -1 },
        };
        async move { c.send(Some(v), &req).await }
    }))
    .await;
    assert!(results.iter().all(|r| r.is_ok()));
    let flips = futures::future::join_all(voters.iter().take(10).map(|v| {
        let c = c.clone();
        let req = VoteRequest {
            subreddit: sn("votes"),
            target: VoteTarget::Post,
            id: post.id.0,
            value: -1,
        };
        async move { c.send(Some(v), &req).await }
    }))
    .await;
    assert!(flips.iter().all(|r| r.is_ok()));
    let p = c.get_post(&sn("votes"), post.id).await.unwrap();
    assert_eq!((p.score, p.ups, p.downs), (80, 140, 60));
    eventually(
        "the author's karma to equal the score",
        Duration::from_secs(5),
        || async { c.get_user(&un("author")).await.unwrap().post_karma == 80 },
    )
    .await;
    quiesce(c).await;
    let audit = c.audit(10).await.unwrap();
    assert!(audit.ok, "{:?}", audit.violations);
    assert_eq!(audit.checked.votes, 200);
    cluster.stop().await;
}
