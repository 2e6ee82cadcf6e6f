//! The audit passes after a concurrent mixed workload and reports corruption.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{quiesce, sn, un, Cluster};
use rand::prelude::*;
use reddit_client::{RedditClient, Session};
use reddit_shared::codec::encode;
use reddit_shared::ids::{CommentId, DmId, PostId};
use reddit_shared::names::SubredditName;
use reddit_shared::protocol::comment::CreateCommentRequest;
use reddit_shared::protocol::dm::ListDmsRequest;
use reddit_shared::protocol::internal::{SyncBatch, SyncItem};
use reddit_shared::protocol::post::CreatePostRequest;
use reddit_shared::protocol::vote::{VoteRequest, VoteTarget};
use reddit_shared::protocol::Op;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Seen {
    posts: Vec<(SubredditName, PostId)>,
    comments: Vec<(SubredditName, PostId, CommentId)>,
    dms: Vec<(usize, DmId)>,
}

async fn actor(
    c: RedditClient,
    me: usize,
    users: Arc<Vec<Session>>,
    subs: Arc<Vec<SubredditName>>,
    seen: Arc<Mutex<Seen>>,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let s = &users[me];
    for _ in 0..60 {
        let sub = subs[rng.gen_range(0..subs.len())].clone();
        match rng.gen_range(0..8) {
            0 => {
                c.join(s, &sub).await.unwrap();
            }
            1 => {
                c.leave(s, &sub).await.unwrap();
            }
            2 => {
                let p = c
                    .send(
                        Some(s),
                        &CreatePostRequest {
                            subreddit: sub.clone(),
                            title: "t".into(),
                            body: "b".into(),
                            repost_of: None,
                            signature: None,
                        },
                    )
                    .await
                    .unwrap();
                seen.lock().unwrap().posts.push((sub, p.id));
            }
            3 => {
                let target = seen.lock().unwrap().posts.choose(&mut rng).cloned();
                if let Some((sub, post)) = target {
                    let parent = seen
                        .lock()
                        .unwrap()
                        .comments
                        .iter()
                        .filter(|(_, p, _)| *p == post)
                        .map(|(_, _, c)| *c)
                        .collect::<Vec<_>>()
                        .choose(&mut rng)
                        .copied();
                    let cm = c
                        .send(
                            Some(s),
                            &CreateCommentRequest {
                                subreddit: sub.clone(),
                                post_id: post,
                                parent_id: parent,
                                body: "c".into(),
                                signature: None,
                            },
                        )
                        .await
                        .unwrap();
                    seen.lock().unwrap().comments.push((sub, post, cm.id));
                }
            }
            4 | 5 => {
                let value = [-1i8, 0, 1][rng.gen_range(0..3)];
                let target = if rng.gen_bool(0.5) {
                    seen.lock()
                        .unwrap()
                        .posts
                        .choose(&mut rng)
                        .map(|(s, p)| (s.clone(), VoteTarget::Post, p.0))
                } else {
                    seen.lock()
                        .unwrap()
                        .comments
                        .choose(&mut rng)
                        .map(|(s, _, c)| (s.clone(), VoteTarget::Comment, c.0))
                };
                if let Some((subreddit, target, id)) = target {
                    c.send(
                        Some(s),
                        &VoteRequest {
                            subreddit,
                            target,
                            id,
                            value,
                        },
                    )
                    .await
                    .unwrap();
                }
            }
            6 => {
                let to = rng.gen_range(0..users.len());
                let dm = c.send_dm(s, &users[to].username, "hi").await.unwrap();
                seen.lock().unwrap().dms.push((to, dm.id));
            }
            _ => {
                let mine: Vec<DmId> = seen
                    .lock()
                    .unwrap()
                    .dms
                    .iter()
                    .filter(|(to, _)| *to == me)
                    .map(|(_, id)| *id)
                    .collect();
                if let Some(id) = mine.choose(&mut rng) {
                    c.reply_dm(s, *id, "re").await.unwrap();
                } else {
                    c.send(Some(s), &ListDmsRequest::default()).await.unwrap();
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_passes_after_a_concurrent_mixed_workload_and_reports_corruption() {
    let cluster = Cluster::start(3).await;
    let c = &cluster.client;
    let users: Vec<Session> = futures::future::join_all((0..40).map(|i| {
        let c = c.clone();
        async move { common::user(&c, &format!("mixed{i}")).await }
    }))
    .await;
    let subs: Vec<SubredditName> = (0..6).map(|i| sn(&format!("mixsub{i}"))).collect();
    for s in &subs {
        c.create_subreddit(&users[0], s, "").await.unwrap();
    }
    let users = Arc::new(users);
    let subs = Arc::new(subs);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let tasks: Vec<_> = (0..users.len())
        .map(|i| {
            tokio::spawn(actor(
                c.clone(),
                i,
                users.clone(),
                subs.clone(),
                seen.clone(),
                i as u64,
            ))
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    quiesce(c).await;
    let report = c.audit(20).await.unwrap();
    assert!(report.ok, "{:#?}", report.violations);
    assert_eq!(report.checked.users, 40);
    assert!(report.checked.posts > 0 && report.checked.comments > 0 && report.checked.votes > 0);
    assert!(report.checked.dms > 0 && report.checked.memberships > 0);

    // Corrupt: forge engine-to-engine updates (as a misbehaving shard would) that
    // credit karma nobody earned and a membership the subreddit does not have.
    let victim = un("mixed1");
    let shard = c.shard_of(victim.key());
    let batch = SyncBatch {
        items: vec![
            SyncItem::Karma {
                user: victim.clone(),
                subreddit: sn("mixsub0"),
                post_karma: 1_000,
                comment_karma: 0,
                version: u64::MAX,
            },
            SyncItem::Membership {
                user: victim.clone(),
                subreddit: sn("ghosttown"),
                member: true,
                version: 1,
            },
        ],
        bulk: false,
    };
    let engine = common::engine_client(&cluster.nats.url(), c.shards()).await;
    let _: reddit_shared::protocol::internal::SyncAck = engine
        .call_raw(
            shard,
            Op::InternalSync.as_str(),
            None,
            encode(&batch).unwrap(),
        )
        .await
        .unwrap();
    let report = c.audit(20).await.unwrap();
    assert!(!report.ok);
    assert_eq!(report.violation_count, 2, "{:#?}", report.violations);
    let kinds: Vec<&str> = report.violations.iter().map(|v| v.kind.as_str()).collect();
    assert!(
        kinds.contains(&"karma") && kinds.contains(&"membership"),
        "{kinds:?}"
    );
    assert!(report
        .violations
        .iter()
        .any(|v| v.detail.contains("mixed1") && v.detail.contains("ghosttown")));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_pages_through_a_shard_with_many_facts() {
    // One shard; 2,100 members of one subreddit give over 4,200 membership facts
    // (a member record and a joined record each): more than one 4,000-record page.
    let cluster = Cluster::start(1).await;
    let c = &cluster.client;
    let owner = common::user(c, "bigowner").await;
    c.create_subreddit(&owner, &sn("crowded"), "")
        .await
        .unwrap();
    let n = 2_100;
    // Bounded concurrency: one debug-build shard verifies the logins.
    let joined: Vec<_> = futures::StreamExt::collect(futures::StreamExt::buffer_unordered(
        futures::stream::iter((0..n).map(|i| {
            let c = c.clone();
            async move {
                let s = common::user(&c, &format!("crowd{i}")).await;
                c.join(&s, &sn("crowded")).await.map(|r| r.changed)
            }
        })),
        64,
    ))
    .await;
    assert!(joined.iter().all(|r| matches!(r, Ok(true))));
    let report = c.audit(10).await.unwrap();
    assert!(report.ok, "{:?}", report.violations);
    assert_eq!(report.checked.memberships, n);
    assert_eq!(report.checked.users, n + 1);
    // Forge one membership on the user side: it must be found though it sits on a
    // later page than the subreddit's member records.
    let victim = un("crowd2099");
    let batch = SyncBatch {
        items: vec![SyncItem::Membership {
            user: victim,
            subreddit: sn("elsewhere"),
            member: true,
            version: 1,
        }],
        bulk: false,
    };
    let engine = common::engine_client(&cluster.nats.url(), c.shards()).await;
    let _: reddit_shared::protocol::internal::SyncAck = engine
        .call_raw(0, Op::InternalSync.as_str(), None, encode(&batch).unwrap())
        .await
        .unwrap();
    let report = c.audit(10).await.unwrap();
    assert_eq!(report.violation_count, 1, "{:?}", report.violations);
    cluster.stop().await;
}
