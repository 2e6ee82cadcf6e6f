//! Flows that cross shards: karma, feeds merged from several shards, reposts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{eventually, name_on, quiesce, sn, Cluster};
use reddit_shared::protocol::feed::FeedRequest;
use reddit_shared::protocol::post::{CreatePostRequest, PostSort, PostView};
use reddit_shared::protocol::vote::{VoteRequest, VoteTarget};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn karma_reaches_the_authors_shard() {
    let cluster = Cluster::start(3).await;
    let c = &cluster.client;
    let author = cluster.user(&name_on("author", 0, 3)).await;
    let voter = cluster.user(&name_on("voter", 2, 3)).await;
    let sub = sn(&name_on("sub", 1, 3));
    c.create_subreddit(&author, &sub, "").await.unwrap();
    let post = c
        .send(
            Some(&author),
            &CreatePostRequest {
                subreddit: sub.clone(),
                title: "cross".into(),
                body: String::new(),
                repost_of: None,
                signature: None,
            },
        )
        .await
        .unwrap();
    let v = c
        .send(
            Some(&voter),
            &VoteRequest {
                subreddit: sub.clone(),
                target: VoteTarget::Post,
                id: post.id.0,
                value: 1,
            },
        )
        .await
        .unwrap();
    assert_eq!(v.score, 1);
    eventually(
        "karma on the author's shard",
        Duration::from_secs(5),
        || async { c.get_user(&author.username).await.unwrap().post_karma == 1 },
    )
    .await;
    // Changing the vote adjusts by the difference.
    c.send(
        Some(&voter),
        &VoteRequest {
            subreddit: sub.clone(),
            target: VoteTarget::Post,
            id: post.id.0,
            value: -1,
        },
    )
    .await
    .unwrap();
    eventually(
        "karma to follow the changed vote",
        Duration::from_secs(5),
        || async { c.get_user(&author.username).await.unwrap().post_karma == -1 },
    )
    .await;
    quiesce(c).await;
    assert!(c.audit(10).await.unwrap().ok);
    cluster.stop().await;
}

async fn whole_feed(
    c: &reddit_client::RedditClient,
    s: &reddit_client::Session,
    sort: PostSort,
    page: u32,
) -> Vec<PostView> {
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let p = c
            .send(
                Some(s),
                &FeedRequest {
                    sort,
                    limit: Some(page),
                    cursor,
                    fresh: false,
                },
            )
            .await
            .unwrap();
        assert!(p.posts.len() <= page as usize);
        all.extend(p.posts);
        match p.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_merges_subreddits_on_different_shards_in_order() {
    let cluster = Cluster::start(3).await;
    let c = &cluster.client;
    let reader = cluster.user("reader").await;
    let writer = cluster.user("writer").await;
    let voters: Vec<_> = futures::future::join_all((0..6).map(|i| {
        let c = c.clone();
        async move { common::user(&c, &format!("voter{i}")).await }
    }))
    .await;
    let subs: Vec<_> = (0..3).map(|k| sn(&name_on("feedsub", k, 3))).collect();
    for s in &subs {
        c.create_subreddit(&writer, s, "").await.unwrap();
        c.join(&reader, s).await.unwrap();
    }
    // A subreddit the reader did not join must not appear.
    let other = sn("notjoined");
    c.create_subreddit(&writer, &other, "").await.unwrap();
    let mut posts = Vec::new();
    for i in 0..12 {
        let s = if i == 11 {
            other.clone()
        } else {
            subs[i % 3].clone()
        };
        let p = c
            .send(
                Some(&writer),
                &CreatePostRequest {
                    subreddit: s,
                    title: format!("post {i}"),
                    body: String::new(),
                    repost_of: None,
                    signature: None,
                },
            )
            .await
            .unwrap();
        // Scores: varied, with ties, including negatives.
        let score = [3i64, -1, 0, 5, 2, 2, -2, 4, 1, 6, 0, 9][i];
        for v in voters.iter().take(score.unsigned_abs() as usize) {
            c.send(
                Some(v),
                &VoteRequest {
                    subreddit: p.subreddit.clone(),
                    target: VoteTarget::Post,
                    id: p.id.0,
                    value: if score > 0 { 1 } else { -1 },
                },
            )
            .await
            .unwrap();
        }
        posts.push((p.id, score, i));
    }
    let expected_ids = |mut v: Vec<(reddit_shared::ids::PostId, i64, usize)>, by_score: bool| {
        v.retain(|(_, _, i)| *i != 11);
        if by_score {
            v.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
        } else {
            v.sort_by_key(|x| std::cmp::Reverse(x.0));
        }
        v.into_iter().map(|(id, _, _)| id).collect::<Vec<_>>()
    };
    for page in [1, 2, 5, 100] {
        let top: Vec<_> = whole_feed(c, &reader, PostSort::Top, page)
            .await
            .iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(
            top,
            expected_ids(posts.clone(), true),
            "top, page size {page}"
        );
        let new: Vec<_> = whole_feed(c, &reader, PostSort::New, page)
            .await
            .iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(
            new,
            expected_ids(posts.clone(), false),
            "new, page size {page}"
        );
    }
    let hot = whole_feed(c, &reader, PostSort::Hot, 4).await;
    assert_eq!(hot.len(), 11);
    let keys: Vec<f64> = hot
        .iter()
        .map(|p| reddit_engine::state::ranking::hot(p.score, p.created_at))
        .collect();
    assert!(keys.windows(2).all(|w| w[0] >= w[1]), "hot order: {keys:?}");
    // Leaving a subreddit removes its posts from the feed at once.
    c.leave(&reader, &subs[0]).await.unwrap();
    let after = whole_feed(c, &reader, PostSort::New, 100).await;
    assert!(after.iter().all(|p| p.subreddit != subs[0]));
    assert_eq!(after.len(), 7);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dms_cross_shards_and_land_in_both_folders() {
    let cluster = Cluster::start(3).await;
    let c = &cluster.client;
    let a = cluster.user(&name_on("dma", 0, 3)).await;
    let b = cluster.user(&name_on("dmb", 1, 3)).await;
    let mut b_events = c.user_events(&b.username).await.unwrap();
    let dm = c.send_dm(&a, &b.username, "ping").await.unwrap();
    match tokio::time::timeout(Duration::from_secs(5), b_events.next())
        .await
        .unwrap()
    {
        Some(reddit_shared::protocol::push::PushEvent::Dm { dm: d }) => assert_eq!(d.id, dm.id),
        other => panic!("expected a DM push, got {other:?}"),
    }
    let reply = c.reply_dm(&b, dm.id, "pong").await.unwrap();
    assert_eq!(reply.to.to_lowercase(), a.username.key());
    let inbox = c
        .send(
            Some(&a),
            &reddit_shared::protocol::dm::ListDmsRequest::default(),
        )
        .await
        .unwrap();
    assert_eq!(inbox.messages[0].id, reply.id);
    assert_eq!(inbox.messages[0].in_reply_to, Some(dm.id));
    quiesce(c).await;
    let audit = c.audit(10).await.unwrap();
    assert!(audit.ok, "{:?}", audit.violations);
    assert_eq!(audit.checked.dms, 2);
    cluster.stop().await;
}

/// Posts `title` to `subreddit` as `writer`.
async fn post_to(
    c: &reddit_client::RedditClient,
    writer: &reddit_client::Session,
    subreddit: &reddit_shared::names::SubredditName,
    title: &str,
) -> PostView {
    c.send(
        Some(writer),
        &CreatePostRequest {
            subreddit: subreddit.clone(),
            title: title.into(),
            body: String::new(),
            repost_of: None,
            signature: None,
        },
    )
    .await
    .unwrap()
}

/// The ids on `reader`'s first feed page (newest first).
async fn feed_ids(
    c: &reddit_client::RedditClient,
    reader: &reddit_client::Session,
    limit: u32,
    fresh: bool,
) -> Vec<reddit_shared::ids::PostId> {
    let page: reddit_shared::protocol::post::PostPage = c
        .send(
            Some(reader),
            &FeedRequest {
                sort: PostSort::New,
                limit: Some(limit),
                cursor: None,
                fresh,
            },
        )
        .await
        .unwrap();
    page.posts.iter().map(|p| p.id).collect()
}

/// Two shards whose feed cache keeps lists for `ttl`; a reader on shard 0
/// who joined `subs` (`(prefix, shard)`: each a subreddit on that shard,
/// created by the writer). Returns the cluster, the reader, the writer and
/// the subreddits.
async fn feed_cluster(
    ttl: Duration,
    subs: &[(String, u32)],
) -> (
    Cluster,
    reddit_client::Session,
    reddit_client::Session,
    Vec<reddit_shared::names::SubredditName>,
) {
    let cluster = Cluster::start_with(2, |c| c.feed_cache = ttl).await;
    let c = &cluster.client;
    let reader = cluster.user(&name_on("feedreader", 0, 2)).await;
    let writer = cluster.user("feedwriter").await;
    let mut names = Vec::new();
    for (prefix, shard) in subs {
        let s = sn(&name_on(prefix, *shard, 2));
        c.create_subreddit(&writer, &s, "").await.unwrap();
        c.join(&reader, &s).await.unwrap();
        names.push(s);
    }
    (cluster, reader, writer, names)
}

/// With the feed cache on (an hour here, so that nothing expires during the
/// test), a first page takes another shard's subreddit from the list the
/// user's shard fetched for an earlier feed; the user's own shard's
/// subreddits, `fresh` pages and later pages read live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_feed_pages_take_other_shards_subreddits_from_the_feed_cache() {
    let subs = [("cacheremote".to_owned(), 1), ("cachelocal".to_owned(), 0)];
    let (cluster, reader, writer, names) = feed_cluster(Duration::from_secs(3600), &subs).await;
    let c = &cluster.client;
    let (remote, local) = (&names[0], &names[1]);
    let a = post_to(c, &writer, remote, "a").await;
    assert_eq!(feed_ids(c, &reader, 10, false).await, vec![a.id]);
    let b = post_to(c, &writer, remote, "b").await;
    let l = post_to(c, &writer, local, "l").await;
    // The kept list of `remote` predates b; `local` is read now.
    let cached = feed_ids(c, &reader, 10, false).await;
    assert_eq!(cached.len(), 2, "{cached:?}");
    assert!(
        cached.contains(&a.id) && cached.contains(&l.id),
        "{cached:?}"
    );
    assert_eq!(feed_ids(c, &reader, 1, false).await.len(), 1);
    let fresh = feed_ids(c, &reader, 10, true).await;
    assert_eq!(fresh.len(), 3, "{fresh:?}");
    assert!(fresh.contains(&b.id), "{fresh:?}");
    // A later page reads every shard now: the pages together hold b.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page: reddit_shared::protocol::post::PostPage = c
            .send(
                Some(&reader),
                &FeedRequest {
                    sort: PostSort::New,
                    limit: Some(1),
                    cursor: cursor.clone(),
                    fresh: false,
                },
            )
            .await
            .unwrap();
        seen.extend(page.posts.iter().map(|p| p.id));
        match page.next_cursor {
            Some(next) if seen.len() < 10 => cursor = Some(next),
            _ => break,
        }
    }
    assert!(seen.contains(&b.id), "{seen:?}");
    // One list fetched (the first feed), the other first pages took it.
    let stats = c.shard_stats(0).await.unwrap();
    assert_eq!(stats.feed_cache_fills, 1, "{stats:?}");
    assert_eq!(stats.feed_cache_hits, 3, "{stats:?}");
    cluster.stop().await;
}

/// A kept list serves feeds for the TTL only: a new post on another shard
/// reaches the first page that soon, without `fresh`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_post_reaches_cached_feeds_within_the_ttl() {
    let subs = [("ttlremote".to_owned(), 1)];
    let (cluster, reader, writer, names) = feed_cluster(Duration::from_millis(200), &subs).await;
    let c = &cluster.client;
    let a = post_to(c, &writer, &names[0], "a").await;
    assert_eq!(feed_ids(c, &reader, 10, false).await, vec![a.id]);
    let b = post_to(c, &writer, &names[0], "b").await;
    eventually(
        "the new post to reach the feed",
        Duration::from_secs(5),
        || async { feed_ids(c, &reader, 10, false).await.contains(&b.id) },
    )
    .await;
    let stats = c.shard_stats(0).await.unwrap();
    assert!(stats.feed_cache_fills >= 2, "{stats:?}");
    cluster.stop().await;
}

/// The cache fetches per subreddit, so a user who joined more than 64
/// (`MAX_CACHED_FEED_SUBREDDITS`) subreddits on other shards gets live first
/// pages (one request per shard): a long join list cannot make one feed
/// start a request per subreddit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_of_many_other_shards_subreddits_is_read_live() {
    let many: Vec<_> = (0..65).map(|i| (format!("many{i}x"), 1)).collect();
    let (cluster, reader, writer, subs) = feed_cluster(Duration::from_secs(3600), &many).await;
    let c = &cluster.client;
    let a = post_to(c, &writer, &subs[0], "a").await;
    assert_eq!(feed_ids(c, &reader, 10, false).await, vec![a.id]);
    let b = post_to(c, &writer, &subs[64], "b").await;
    let live = feed_ids(c, &reader, 10, false).await;
    assert!(live.contains(&b.id), "{live:?}");
    let stats = c.shard_stats(0).await.unwrap();
    assert_eq!(stats.feed_cache_fills, 0, "{stats:?}");
    // One fewer, and the same feed comes from the cache.
    c.leave(&reader, &subs[64]).await.unwrap();
    feed_ids(c, &reader, 10, false).await;
    let stats = c.shard_stats(0).await.unwrap();
    assert_eq!(stats.feed_cache_fills, 64, "{stats:?}");
    cluster.stop().await;
}
