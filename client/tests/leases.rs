//! Shard ownership by lease (durable mode): of two processes started in the
//! same instant exactly one serves, every time; a standby (`--standby`) takes
//! over when the owner is killed, and writes in flight at the kill land once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{eventually, shard_process, sn, spawn_shard, user, wait_serving, NatsServer, SECRET};
use reddit_client::{ClientOptions, RedditClient};
use reddit_engine::{Config, EngineError};
use reddit_shared::error::ErrorCode;
use reddit_shared::protocol::post::{CreatePostRequest, ListPostsRequest};
use reddit_shared::protocol::subreddit::CreateSubredditRequest;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twins_started_together_exactly_one_serves_a_hundred_times() {
    let nats = NatsServer::start();
    let url = nats.url();
    let config = || {
        let mut c = Config::new(&url, 0, 1, SECRET);
        // Short, so that the twin that lost notices the winner quickly.
        c.lease_ttl = Duration::from_millis(400);
        c
    };
    for round in 0..100 {
        let a = spawn_shard(config());
        let b = spawn_shard(config());
        eventually(
            &format!("a twin to give way (round {round})"),
            Duration::from_secs(20),
            || {
                let done = a.is_finished() || b.is_finished();
                async move { done }
            },
        )
        .await;
        let (loser, winner) = if a.is_finished() { (a, b) } else { (b, a) };
        let lost = loser.join().await;
        assert!(
            matches!(lost, Err(EngineError::AlreadyOwned { shard: 0, .. })),
            "round {round}: {lost:?}"
        );
        assert!(
            !winner.is_finished(),
            "round {round}: the winner stopped too"
        );
        wait_serving(&url, 0).await;
        // A clean stop hands the lease back at once.
        winner.stop().await.unwrap();
    }
}

fn post(sub: &str, title: String) -> CreatePostRequest {
    CreatePostRequest {
        subreddit: sn(sub),
        title,
        body: String::new(),
        repost_of: None,
        signature: None,
    }
}

/// Registers alice, who creates r/rust and posts "before" in it.
async fn alice_posts_in_rust(
    c: &RedditClient,
) -> (
    reddit_client::Session,
    reddit_shared::protocol::post::PostView,
) {
    let alice = user(c, "alice").await;
    c.send(
        Some(&alice),
        &CreateSubredditRequest {
            name: sn("rust"),
            description: String::new(),
        },
    )
    .await
    .unwrap();
    let before = c
        .send(Some(&alice), &post("rust", "before".into()))
        .await
        .unwrap();
    (alice, before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_from_a_killed_owner_and_nothing_acknowledged_is_lost() {
    let nats = NatsServer::start();
    let url = nats.url();
    let ttl = ["--lease-ttl-ms", "1000"];
    let mut owner = shard_process(&url, 0, 1, &ttl);
    wait_serving(&url, 0).await;
    let standby = shard_process(&url, 0, 1, &["--standby", ttl[0], ttl[1]]);
    let c = RedditClient::connect(&url, ClientOptions::default())
        .await
        .unwrap();
    let (alice, before) = alice_posts_in_rust(&c).await;
    // The owner counts the standby waiting for its lease.
    eventually(
        "the owner to see its standby",
        Duration::from_secs(20),
        || {
            let c = c.clone();
            async move { c.shard_stats(0).await.is_ok_and(|s| s.standbys == 1) }
        },
    )
    .await;
    // As a person sees it: the owner, its lease, the standby and its lag.
    let shards = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_reddit-client"))
                .args(["--nats-url", &url, "shards"])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&shards.stdout);
    assert!(shards.status.success(), "{text}");
    assert!(
        text.contains(&format!("pid {}", owner.id()))
            && text.contains("(TTL 1000 ms)")
            && text.contains(&format!("1 standby: pid {}", standby.id()))
            && text.contains("records behind"),
        "{text}"
    );

    // Writes in flight when the owner dies: the client retries each with its
    // idempotency key until the standby answers.
    let writes: Vec<_> = (0..40)
        .map(|i| {
            let (c, alice) = (c.clone(), alice.clone());
            tokio::spawn(async move {
                c.send(Some(&alice), &post("rust", format!("in flight {i}")))
                    .await
            })
        })
        .collect();
    owner.kill();
    let killed = Instant::now();
    let fast = RedditClient::with_shards(
        common::connect_service(&url).await,
        1,
        Duration::from_millis(200),
    );
    eventually("the standby to serve", Duration::from_secs(20), || {
        let fast = fast.clone();
        async move { fast.shard_stats(0).await.is_ok() }
    })
    .await;
    eprintln!("the standby served {:?} after the kill", killed.elapsed());
    let mut ids = vec![before.id];
    for w in writes {
        ids.push(
            w.await
                .unwrap()
                .expect("every write lands, through the standby")
                .id,
        );
    }
    eprintln!(
        "the standby answered every write within {:?} of the kill",
        killed.elapsed()
    );

    // Every acknowledged post is there once.
    let page = c
        .send(
            None,
            &ListPostsRequest {
                subreddit: sn("rust"),
                sort: Default::default(),
                limit: Some(100),
                cursor: None,
            },
        )
        .await
        .unwrap();
    let mut listed: Vec<_> = page.posts.iter().map(|p| p.id).collect();
    listed.sort();
    ids.sort();
    assert_eq!(listed, ids, "each acknowledged post once, nothing else");
}

fn list(sub: &str) -> ListPostsRequest {
    ListPostsRequest {
        subreddit: sn(sub),
        sort: Default::default(),
        limit: Some(100),
        cursor: None,
    }
}

/// A network partition on a 3-node cluster (logs and leases R3): the owner's
/// node is cut off from the other two. The owner, unable to renew its lease,
/// stops serving before the lease can expire (reads too: `unavailable`); the
/// standby on the majority side takes over and serves; no write sent to the
/// cut-off owner is acknowledged; after the partition heals, the old owner
/// finds its lease taken and exits, and the log holds exactly what was
/// acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_owner_stops_serving_and_the_majority_side_takes_over() {
    let mut cluster = common::NatsCluster::start(3).await;
    let minority = cluster.nodes[2].url();
    let majority = format!("{},{}", cluster.nodes[0].url(), cluster.nodes[1].url());
    let args = ["--replicas", "3", "--lease-ttl-ms", "1000"];
    let mut owner = shard_process(&minority, 0, 1, &args);
    wait_serving(&minority, 0).await;
    let standby_args: Vec<&str> = args.iter().copied().chain(["--standby"]).collect();
    let standby = shard_process(&majority, 0, 1, &standby_args);
    let standby_pid = standby.id();

    // Long retries: where the partition took a stream's leader away, the
    // majority elects a new one first (NATS's election timeout, seconds).
    let major = RedditClient::connect(
        &majority,
        ClientOptions {
            retry_budget: Duration::from_secs(60),
            ..ClientOptions::default()
        },
    )
    .await
    .unwrap();
    // On the cut-off side: one attempt each, so that a refusal shows.
    let minor = RedditClient::with_shards(
        common::connect_service(&minority).await,
        1,
        Duration::from_millis(1500),
    );
    let (alice, before) = alice_posts_in_rust(&major).await;
    // The owner reports its standby, caught up with the log.
    eventually(
        "the owner to report its standby with its lag",
        Duration::from_secs(20),
        || {
            let major = major.clone();
            async move {
                major.shard_stats(0).await.is_ok_and(|s| {
                    s.lease.is_some_and(|l| {
                        l.serving
                            && l.standbys.len() == 1
                            && l.standbys[0].pid == standby_pid
                            && l.standbys[0].lag == 0
                    })
                })
            }
        },
    )
    .await;

    cluster.partition(2);
    let cut = Instant::now();
    // The cut-off owner refuses reads (it cannot know whether it still owns
    // the shard) and says so in its stats.
    eventually(
        "the cut-off owner to stop serving",
        Duration::from_secs(20),
        || {
            let minor = minor.clone();
            async move {
                let read = minor.send(None, &list("rust")).await;
                read.is_err_and(|e| e.code() == Some(ErrorCode::Unavailable))
            }
        },
    )
    .await;
    eprintln!(
        "the cut-off owner stopped serving {:?} after the cut",
        cut.elapsed()
    );
    let stats = minor.shard_stats(0).await.unwrap();
    assert!(
        !stats.lease.unwrap().serving,
        "its stats say it does not serve"
    );
    // Writes sent to it are never acknowledged.
    for i in 0..5 {
        let w = minor
            .send(Some(&alice), &post("rust", format!("cut off {i}")))
            .await;
        assert!(
            w.is_err(),
            "a write acknowledged across the partition: {w:?}"
        );
    }
    // The majority side: the standby takes over and serves writes.
    let after = major
        .send(Some(&alice), &post("rust", "after".into()))
        .await
        .expect("the majority side serves");
    let stats = major.shard_stats(0).await.unwrap();
    assert_eq!(
        stats.lease.as_ref().map(|l| l.serving),
        Some(true),
        "{stats:?}"
    );
    eprintln!(
        "the majority side served a write {:?} after the cut",
        cut.elapsed()
    );

    // Healed: the old owner finds its lease taken and stops for good.
    cluster.heal(2);
    eventually("the old owner to exit", Duration::from_secs(30), || {
        let exited = owner.has_exited();
        async move { exited }
    })
    .await;
    // One process serves, everywhere, with exactly the acknowledged posts.
    let healed = RedditClient::with_shards(
        common::connect_service(&minority).await,
        1,
        Duration::from_secs(5),
    )
    .with_retry_budget(Duration::from_secs(20));
    let page = healed.send(None, &list("rust")).await.unwrap();
    let mut listed: Vec<_> = page.posts.iter().map(|p| p.id).collect();
    listed.sort();
    let mut acknowledged = vec![before.id, after.id];
    acknowledged.sort();
    assert_eq!(listed, acknowledged, "the acknowledged posts, nothing else");
    let info = healed.shard_stats(0).await.unwrap();
    assert!(info.lease.is_some_and(|l| l.serving));
}

/// The lease bucket expires entries by the TTL it was made with. A process
/// asking for a longer TTL holds its lease under the bucket's instead: it
/// must stop serving before JetStream could let a standby in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_longer_ttl_than_the_buckets_is_held_under_the_buckets() {
    let nats = NatsServer::start();
    let url = nats.url();
    let with_ttl = |ms| {
        let mut c = Config::new(&url, 0, 1, SECRET);
        c.lease_ttl = Duration::from_millis(ms);
        c
    };
    let c = RedditClient::with_shards(
        common::connect_service(&url).await,
        1,
        Duration::from_secs(2),
    );
    let ttl_ms = || {
        let c = c.clone();
        async move { c.shard_stats(0).await.ok()?.lease.map(|l| l.ttl_ms) }
    };
    // The first process makes the bucket, with entries living 600 ms.
    let first = spawn_shard(with_ttl(600));
    wait_serving(&url, 0).await;
    assert_eq!(ttl_ms().await, Some(600));
    first.stop().await.unwrap();
    // The next asks for 5 s: it gets the bucket's 600 ms.
    let second = spawn_shard(with_ttl(5_000));
    wait_serving(&url, 0).await;
    assert_eq!(ttl_ms().await, Some(600));
    second.stop().await.unwrap();
}

/// A lease taken again after an expiry serves again only once the check that
/// nobody wrote the log meanwhile can tell. While it cannot (the log does
/// not answer in time: the load that let the lease lapse slows that read
/// too), the process keeps the lease without serving and asks again at each
/// renewal; before, such a failed read counted as "the log moved on" and
/// stopped the shard for good. When the check finds that the log moved on,
/// it gives up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_taken_again_serves_only_once_the_log_is_found_unmoved() {
    use reddit_engine::lease;
    use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
    use std::sync::Arc;

    let nats = NatsServer::start();
    let js = async_nats::jetstream::new(common::connect_engine(&nats.url()).await);
    let (store, ttl) = lease::bucket(&js, Duration::from_secs(1), 1).await.unwrap();
    let lease = lease::Lease::try_acquire(&store, 0, lease::Holder::this_process(), ttl)
        .await
        .unwrap();
    let tenure = lease.tenure().clone();
    // What the check answers: 0 cannot tell, 1 unmoved, 2 moved on.
    let answer = Arc::new(AtomicU8::new(0));
    let asked = Arc::new(AtomicUsize::new(0));
    let verify: lease::Verify = {
        let (answer, asked) = (answer.clone(), asked.clone());
        Box::new(move || {
            let (answer, asked) = (answer.clone(), asked.clone());
            Box::pin(async move {
                asked.fetch_add(1, Ordering::SeqCst);
                match answer.load(Ordering::SeqCst) {
                    0 => None,
                    1 => Some(true),
                    _ => Some(false),
                }
            })
        })
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (lost, mut lost_rx) = tokio::sync::oneshot::channel();
    let keeper = tokio::spawn(lease.keep(verify, stopped, lost));
    assert!(tenure.holds());
    let serving = |want: bool| {
        let tenure = tenure.clone();
        move || {
            let tenure = tenure.clone();
            async move { tenure.holds() == want }
        }
    };

    // The entry goes, as an expiry takes it; the keeper takes the lease
    // again and cannot tell whether the log moved.
    store.delete("shard-0").await.unwrap();
    eventually("asked twice", Duration::from_secs(10), || {
        let asked = asked.clone();
        async move { asked.load(Ordering::SeqCst) >= 2 }
    })
    .await;
    eventually("not serving", Duration::from_secs(10), serving(false)).await;
    assert!(
        lost_rx.try_recv().is_err(),
        "not given up while it cannot tell"
    );
    let entry = store.entry("shard-0").await.unwrap().unwrap();
    assert!(
        matches!(entry.operation, async_nats::jetstream::kv::Operation::Put),
        "the lease is kept meanwhile"
    );

    answer.store(1, Ordering::SeqCst);
    eventually("serving again", Duration::from_secs(10), serving(true)).await;

    // Another expiry, and this time someone wrote the log meanwhile.
    answer.store(2, Ordering::SeqCst);
    store.delete("shard-0").await.unwrap();
    let why = tokio::time::timeout(Duration::from_secs(10), lost_rx)
        .await
        .expect("gives up within 10 s")
        .unwrap();
    assert!(why.contains("moved on"), "{why}");
    let lease = keeper.await.unwrap();
    lease.release().await;
    drop(stop);
}
