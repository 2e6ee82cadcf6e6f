//! Growth benchmark (`cargo bench -p reddit-engine --bench grow`): the slowest
//! single registrations while one shard's state grows to `GROW_USERS`
//! (default 600,000) users, against a standard `HashMap` of 232-byte values
//! (about a user's size), in the same run, and a lookup in each once grown.
//! A standard map moves every entry to a table twice the size when it fills,
//! all in one insert, and the shard answers nothing meanwhile; the shard's
//! users map ([`reddit_engine::state::GrowMap`]) moves a few entries per
//! insert instead.
//!
//! Then the shard's cache of verified tokens ([`VerifiedTokens`]), which
//! every user's first request to a shard fills (at a million users, a
//! million tokens per shard during setup): the slowest token checks as it
//! fills and forgets; a standard map of the used login challenges' 24-byte
//! entries as it grows, against the shard's (a `GrowMap`); and the reply
//! cache ([`ReplyCache`]), which every keyed write goes through, filling
//! and then forgetting its oldest reply at each insert. Also the audit's
//! export of the grown shard, its users members of 50 subreddits, the
//! first with 10,000 posts, 20,000 comments and 30,000 votes: the
//! cursor's start, then each page (`AUDIT_PAGES=1` prints every page's time,
//! in ms, in order), and the check of the records exported, fed page by
//! page as `audit.run` does, with the process's peak resident memory from
//! the export's start.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use reddit_engine::auth::{TokenSigner, VerifiedTokens};
use reddit_engine::replies::{Cached, ReplyCache, ReplyKey};

use reddit_engine::state::ShardState;
use reddit_shared::names::{SubredditName, Username};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The engine binary's allocator, so what is measured is what a shard pays.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The `n` slowest of `took` (index, time), slowest first.
fn slowest(took: &[Duration], n: usize) -> Vec<(usize, Duration)> {
    let mut v: Vec<_> = took.iter().copied().enumerate().collect();
    v.sort_by_key(|(_, d)| std::cmp::Reverse(*d));
    v.truncate(n);
    v
}

fn report(what: &str, took: &[Duration]) {
    let total: Duration = took.iter().sum();
    let worst = slowest(took, 6)
        .into_iter()
        .map(|(i, d)| format!("{:.1} ms at #{}", d.as_secs_f64() * 1e3, i + 1))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "{what:>28}: {:.2} s in all; slowest {worst}",
        total.as_secs_f64()
    );
}

/// This process's resident memory, in MiB: (now, peak since the last
/// [`reset_peak`]).
fn resident_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
}

/// Starts the peak of [`resident_mib`] again from now (Linux: `clear_refs` 5).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn main() {
    // As a shard runs (`--huge-pages` off); GROW_HUGE_PAGES=1 measures it on
    // (the bench ran with the machine's setting, on here, before 2026-11-30).
    let huge_pages = std::env::var("GROW_HUGE_PAGES").is_ok_and(|v| v == "1");
    reddit_engine::memory::set_huge_pages(huge_pages).unwrap();
    let users: usize = std::env::var("GROW_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600_000);
    let names: Vec<Username> = (0..users)
        .map(|i| format!("user{i:07}").parse().unwrap())
        .collect();

    let mut std_map: HashMap<String, [u8; 232]> = HashMap::new();
    let took: Vec<Duration> = names
        .iter()
        .map(|n| {
            let t = Instant::now();
            std_map.insert(n.as_str().to_owned(), [7; 232]);
            t.elapsed()
        })
        .collect();
    report("std HashMap, 232 B values", &took);
    let lookups = |get: &dyn Fn(&str) -> bool| {
        let t = Instant::now();
        let mut found = 0usize;
        for _ in 0..4 {
            for n in names.iter().rev() {
                found += usize::from(get(n.as_str()));
            }
        }
        assert_eq!(found, 4 * names.len());
        t.elapsed().as_nanos() as f64 / found as f64
    };
    let std_ns = lookups(&|k| std_map.contains_key(k));
    drop(std_map);
    let mut grow: reddit_engine::state::GrowMap<String, [u8; 232]> = Default::default();
    for n in &names {
        grow.insert(n.as_str().to_owned(), [7; 232]);
    }
    let grow_ns = lookups(&|k| grow.contains_key(k));
    drop(grow);
    println!("lookups after growth: std HashMap {std_ns:.0} ns, GrowMap {grow_ns:.0} ns");

    let mut state = ShardState::new(0, 1);
    let took: Vec<Duration> = names
        .iter()
        .map(|n| {
            let t = Instant::now();
            state.register(n, [7; 32], 1).unwrap();
            t.elapsed()
        })
        .collect();
    report("shard registrations", &took);

    // An audit's export of the grown shard, page by page as
    // `internal.audit.export` serves it (4,000 records a page). Every user
    // joins one of 50 subreddits and the first, which so has them all as
    // members (a Zipf head).
    let mut fx = reddit_engine::state::Effects::default();
    let subs: Vec<SubredditName> = (0..50)
        .map(|i| format!("sub{i:02}").parse().unwrap())
        .collect();
    for sub in &subs {
        state
            .create_subreddit(&names[0], sub, String::new(), 2)
            .unwrap();
    }
    for (i, n) in names.iter().enumerate() {
        state.set_membership(n, &subs[0], true, &mut fx).unwrap();
        state
            .set_membership(n, &subs[i % subs.len()], true, &mut fx)
            .unwrap();
    }
    // The head subreddit's content: 10,000 posts, each with 2 comments and
    // 3 votes (a million-user run's largest subreddit holds about that).
    for i in 0..10_000 {
        let author = &names[i % names.len()];
        let post = state
            .create_post(
                author,
                &subs[0],
                format!("t{i}"),
                "b".into(),
                None,
                None,
                3,
                &mut fx,
            )
            .unwrap();
        for j in 0..2 {
            let commenter = &names[(i + j + 1) % names.len()];
            let request = reddit_shared::protocol::comment::CreateCommentRequest {
                subreddit: subs[0].clone(),
                post_id: post.id,
                parent_id: None,
                body: format!("c{j}"),
                signature: None,
            };
            state
                .create_comment(commenter, request, 4, &mut fx)
                .unwrap();
        }
        for j in 0..3 {
            let voter = &names[(i + j + 7) % names.len()];
            let target = reddit_shared::protocol::vote::VoteTarget::Post;
            state
                .vote(voter, &subs[0], target, post.id.0, 1, &mut fx)
                .unwrap();
        }
    }
    reset_peak();
    let (before, _) = resident_mib();
    let started = Instant::now();
    let mut cursor = state.audit_cursor();
    let mut took = vec![started.elapsed()];
    // Each page into the check as it is made, as `audit.run` does.
    let mut checker = reddit_engine::state::audit::Checker::new(1, 100);
    let mut count = 0;
    let mut checking = Duration::ZERO;
    while !cursor.done() {
        let started = Instant::now();
        let page = state.audit_page(&mut cursor, 4_000, 4_000);
        took.push(started.elapsed());
        count += page.len();
        let started = Instant::now();
        for record in page {
            checker.add(record);
        }
        checking += started.elapsed();
    }
    report("audit export, pages", &took);
    let started = Instant::now();
    let checked = checker.finish();
    checking += started.elapsed();
    println!(
        "{:>28}: {count} records in {:.2} s, {} violations",
        "audit check",
        checking.as_secs_f64(),
        checked.violation_count
    );
    let (_, peak) = resident_mib();
    println!(
        "{:>28}: {:.0} MiB above the {before:.0} MiB before the export",
        "audit's peak memory",
        peak - before
    );
    if std::env::var("AUDIT_PAGES").is_ok() {
        println!(
            "{:?}",
            took.iter()
                .map(|d| (d.as_secs_f64() * 1e4).round() / 10.0)
                .collect::<Vec<_>>()
        );
    }

    let signer = TokenSigner::new(b"grow-bench-secret-0123456789abcdef", 3_600_000);
    let tokens: Vec<String> = names
        .iter()
        .map(|n| signer.issue(n, &[7; 32], 1).0)
        .collect();
    let mut verified = VerifiedTokens::default();
    let took: Vec<Duration> = tokens
        .iter()
        .map(|t| {
            let started = Instant::now();
            verified.verify(&signer, t, 2).unwrap();
            started.elapsed()
        })
        .collect();
    report("token checks, each new", &took);

    // Each insert of `users` challenges, timed.
    let fill = |insert: &mut dyn FnMut([u8; 16])| -> Vec<Duration> {
        (0..users as u128)
            .map(|i| {
                let started = Instant::now();
                insert(i.to_le_bytes());
                started.elapsed()
            })
            .collect()
    };
    let mut used: HashMap<[u8; 16], i64> = HashMap::new();
    report(
        "used challenges (std map)",
        &fill(&mut |k| {
            used.insert(k, 1);
        }),
    );
    drop(used);
    let mut used: reddit_engine::state::GrowMap<[u8; 16], i64> = Default::default();
    report(
        "used challenges (GrowMap)",
        &fill(&mut |k| {
            used.insert(k, 1);
        }),
    );

    // The reply cache at its capacity, as every keyed write goes through it:
    // each insert forgets the oldest reply.
    let mut replies = ReplyCache::new(reddit_engine::replies::DEFAULT_CAPACITY);
    let took: Vec<Duration> = (0..users as u128)
        .map(|i| {
            let key = ReplyKey::new("sub.join", "someone", uuid::Uuid::from_u128(i));
            let started = Instant::now();
            replies.insert(Cached {
                key,
                hash: 1,
                reply: vec![7; 60],
            });
            started.elapsed()
        })
        .collect();
    report("reply cache, full", &took);
}
