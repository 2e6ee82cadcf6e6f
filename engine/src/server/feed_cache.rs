//! Other shards' feed candidates, kept for a moment by the shard that merges a
//! feed (`--feed-cache-ms`).
//!
//! A `feed.get` needs the best posts of every subreddit the user joined, and
//! most of those live on other shards: without this cache each feed is one
//! `internal.feed.candidates` request per such shard, about half of all the
//! requests the engine handles in the mixed workload. Popular subreddits are
//! in most users' feeds, so their lists are asked for again and again. Each
//! list here is one subreddit under one order, as deep as the request that
//! fetched it asked, and serves every feed of every user on this shard until
//! it is [`FeedCache::ttl`] old; one past half of that is served while a
//! fetch of its successor runs, so a list in steady use is never waited for.
//!
//! What it trades: a feed's posts from other shards may be up to the TTL old
//! (a new post appears, a score changes, that much later). The user's own
//! shard's subreddits, later pages (`cursor`), subreddit listings
//! (`post.list`) and single posts are always read live, and a `feed.get` with
//! `fresh` skips the cache. Only the latest fetch of a list is kept, and a
//! fetch under way is shared by every feed that needs the list meanwhile
//! instead of being asked again.

use futures::future::{BoxFuture, FutureExt, Shared};
use reddit_shared::error::WireError;
use reddit_shared::protocol::internal::{FeedCandidate, FeedCandidates};
use reddit_shared::protocol::post::PostSort;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One subreddit's best posts under one order, as its shard sent them.
#[derive(Debug)]
pub struct Candidates {
    posts: Vec<FeedCandidate>,
    /// The shard stopped before `depth` at the byte budget: posts are missing
    /// right after the last one.
    truncated: bool,
    /// How many were asked for.
    depth: usize,
    /// Bytes of the views.
    bytes: usize,
}

impl Candidates {
    /// A list as fetched with `depth` asked for.
    pub fn new(page: FeedCandidates, depth: usize) -> Self {
        let bytes = page.posts.iter().map(|c| c.view.len()).sum();
        Self {
            posts: page.posts,
            truncated: page.truncated,
            depth,
            bytes,
        }
    }

    /// The posts, best first.
    pub fn posts(&self) -> &[FeedCandidate] {
        &self.posts
    }

    /// How many of the best `want` there are (at most `want`), and whether
    /// posts are missing right after them (the shard stopped at the byte
    /// budget before reaching them).
    pub fn prefix(&self, want: usize) -> (usize, bool) {
        if self.posts.len() > want {
            (want, false)
        } else {
            (self.posts.len(), self.truncated)
        }
    }
}

/// A fetch of one list, shared by every feed waiting for it.
pub type Fill = Shared<BoxFuture<'static, Result<Arc<Candidates>, WireError>>>;

/// What [`FeedCache::get`] found.
pub enum Found {
    /// A list fresh enough.
    Ready(Arc<Candidates>),
    /// A fetch to wait for (started by this call or an earlier one).
    Wait(Fill),
}

/// What a lookup does.
enum Plan {
    Serve(Arc<Candidates>),
    /// Serve, and start a refresh: the list is past half its TTL.
    ServeAndRefresh(Arc<Candidates>),
    Join(Fill),
    Fetch,
}

/// A fetch under way: when it started (the list it brings is at least that
/// fresh), how deep it asks, and its shared result.
struct Fetch {
    since: Instant,
    depth: usize,
    fill: Fill,
}

enum Slot {
    /// A list, and maybe its refresh under way.
    Ready {
        at: Instant,
        list: Arc<Candidates>,
        refresh: Option<Fetch>,
    },
    /// Nothing usable yet.
    Filling(Fetch),
}

impl Slot {
    fn bytes(&self) -> usize {
        match self {
            Slot::Ready { list, .. } => list.bytes,
            Slot::Filling(_) => 0,
        }
    }
}

/// Most lists kept (subreddits × orders).
pub const MAX_LISTS: usize = 16_384;

/// Most bytes of views kept. Past it, expired lists are dropped, then all.
pub const MAX_BYTES: usize = 64 << 20;

/// The cache. Owned by the actor; the fetches run as tasks of their own.
pub struct FeedCache {
    ttl: Duration,
    /// A fetch older than this is presumed lost and started again (fetches
    /// end by the peer timeout, so this is a safety net).
    abandoned: Duration,
    slots: HashMap<(String, PostSort), Slot>,
    bytes: usize,
    hits: u64,
    fills: u64,
}

impl FeedCache {
    /// A cache keeping lists for `ttl` (zero: off); a fetch running longer
    /// than `abandoned` is replaced.
    pub fn new(ttl: Duration, abandoned: Duration) -> Self {
        Self {
            ttl,
            abandoned,
            slots: HashMap::new(),
            bytes: 0,
            hits: 0,
            fills: 0,
        }
    }

    /// How long a list serves feeds.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether lists are kept at all.
    pub fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    /// Lookups answered by a list already there or already being fetched.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// Fetches started (requests to other shards).
    pub fn fills(&self) -> u64 {
        self.fills
    }

    /// The list of `subreddit` (its key) under `sort`, at least `depth` deep
    /// and fetched less than the TTL before `now`: kept, being fetched, or
    /// fetched by `fetch` (given the depth to ask for) from now on. A kept
    /// list past half its TTL is served and refreshed behind it, as deep as
    /// it was, so a list in steady use is never waited for.
    pub fn get(
        &mut self,
        subreddit: &str,
        sort: PostSort,
        depth: usize,
        now: Instant,
        fetch: impl FnOnce(usize) -> BoxFuture<'static, Result<FeedCandidates, WireError>>,
    ) -> Found {
        let key = (subreddit.to_owned(), sort);
        let plan = self.plan(&key, depth, now);
        match plan {
            Plan::Serve(list) => {
                self.hits += 1;
                Found::Ready(list)
            }
            Plan::Join(fill) => {
                self.hits += 1;
                Found::Wait(fill)
            }
            Plan::ServeAndRefresh(list) => {
                self.hits += 1;
                self.fills += 1;
                if let Some(Slot::Ready { refresh, .. }) = self.slots.get_mut(&key) {
                    // As deep as the list it replaces, whatever this feed asked.
                    *refresh = Some(start(fetch, now, list.depth.max(depth)));
                }
                Found::Ready(list)
            }
            Plan::Fetch => {
                self.fills += 1;
                let started = start(fetch, now, depth);
                let fill = started.fill.clone();
                self.make_room(now);
                if let Some(old) = self.slots.insert(key, Slot::Filling(started)) {
                    self.bytes -= old.bytes();
                }
                Found::Wait(fill)
            }
        }
    }

    /// What the slot under `key` offers for `depth` at `now`, once what its
    /// ended fetches brought is taken in.
    fn plan(&mut self, key: &(String, PostSort), depth: usize, now: Instant) -> Plan {
        let Some(slot) = self.slots.get_mut(key) else {
            return Plan::Fetch;
        };
        self.bytes -= slot.bytes();
        settle(slot);
        self.bytes += slot.bytes();
        let abandoned = self.abandoned;
        let usable = |f: &Fetch| {
            f.depth >= depth
                && now.duration_since(f.since) < abandoned
                && !matches!(f.fill.peek(), Some(Err(_)))
        };
        match slot {
            Slot::Ready { at, list, refresh } if list.depth >= depth => {
                let age = now.duration_since(*at);
                let refreshing = refresh.as_ref().filter(|r| usable(r));
                match refreshing {
                    _ if age < self.ttl / 2 => Plan::Serve(list.clone()),
                    Some(_) if age < self.ttl => Plan::Serve(list.clone()),
                    None if age < self.ttl => Plan::ServeAndRefresh(list.clone()),
                    Some(r) => Plan::Join(r.fill.clone()),
                    None => Plan::Fetch,
                }
            }
            Slot::Filling(f) if usable(f) => Plan::Join(f.fill.clone()),
            _ => Plan::Fetch,
        }
    }

    /// Keeps the cache within [`MAX_LISTS`] and [`MAX_BYTES`] before a list is
    /// added: expired lists and lost fetches go first, everything if that is
    /// not enough.
    fn make_room(&mut self, now: Instant) {
        if self.slots.len() < MAX_LISTS && self.bytes < MAX_BYTES {
            return;
        }
        let (ttl, abandoned) = (self.ttl, self.abandoned);
        self.slots.retain(|_, slot| match slot {
            Slot::Ready { at, .. } => now.duration_since(*at) < ttl,
            Slot::Filling(f) => now.duration_since(f.since) < abandoned,
        });
        self.bytes = self.slots.values().map(Slot::bytes).sum();
        if self.slots.len() >= MAX_LISTS || self.bytes >= MAX_BYTES {
            self.slots.clear();
            self.bytes = 0;
        }
    }
}

/// Starts `fetch` as a task of its own (so that it ends, and fills the
/// cache, even if no feed waits for it) and returns it.
fn start(
    fetch: impl FnOnce(usize) -> BoxFuture<'static, Result<FeedCandidates, WireError>>,
    now: Instant,
    depth: usize,
) -> Fetch {
    let fill: Fill = fetch(depth)
        .map(move |r| r.map(|page| Arc::new(Candidates::new(page, depth))))
        .boxed()
        .shared();
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(fill.clone());
    }
    Fetch {
        since: now,
        depth,
        fill,
    }
}

/// Takes in what ended fetches brought: a list replaces the one kept, a
/// failure is forgotten (the next feed fetches again).
fn settle(slot: &mut Slot) {
    match slot {
        Slot::Ready { at, list, refresh } => {
            let Some(r) = refresh else { return };
            match r.fill.peek() {
                Some(Ok(new)) => {
                    *at = r.since;
                    *list = new.clone();
                    *refresh = None;
                }
                Some(Err(_)) => *refresh = None,
                None => {}
            }
        }
        // A failure stays until the lookup replaces it.
        Slot::Filling(f) => {
            if let Some(Ok(list)) = f.fill.peek() {
                *slot = Slot::Ready {
                    at: f.since,
                    list: list.clone(),
                    refresh: None,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reddit_shared::error::ErrorCode;
    use reddit_shared::ids::PostId;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn page(n: usize, truncated: bool) -> FeedCandidates {
        FeedCandidates {
            posts: (0..n)
                .map(|i| FeedCandidate {
                    rank: (n - i) as f64,
                    id: PostId::new(),
                    view: bytes::Bytes::from(vec![0x90; 10]),
                })
                .collect(),
            truncated,
        }
    }

    /// A fetch that counts its calls and answers `n` candidates.
    fn fetcher(
        calls: &Arc<AtomicUsize>,
        n: usize,
    ) -> impl FnOnce(usize) -> BoxFuture<'static, Result<FeedCandidates, WireError>> {
        let calls = calls.clone();
        move |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move { Ok(page(n, false)) }.boxed()
        }
    }

    async fn list(found: Found) -> Arc<Candidates> {
        match found {
            Found::Ready(l) => l,
            Found::Wait(f) => f.await.unwrap(),
        }
    }

    /// Lets spawned fetches run until the refresh of `key` ended.
    async fn refreshed(cache: &FeedCache, key: (&str, PostSort)) {
        for _ in 0..1000 {
            match cache.slots.get(&(key.0.to_owned(), key.1)) {
                Some(Slot::Ready {
                    refresh: Some(r), ..
                }) if r.fill.peek().is_some() => return,
                _ => tokio::task::yield_now().await,
            }
        }
        panic!("the refresh did not end");
    }

    #[tokio::test]
    async fn a_list_serves_until_its_ttl_and_is_refreshed_behind_it() {
        let mut cache = FeedCache::new(Duration::from_millis(250), Duration::from_secs(2));
        let calls = Arc::new(AtomicUsize::new(0));
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let first = list(cache.get("a", PostSort::Hot, 26, t0, fetcher(&calls, 26))).await;
        assert_eq!(first.posts.len(), 26);
        // Kept: served for this depth or less.
        for (depth, at) in [(26, 1), (11, 100), (2, 124)] {
            match cache.get("a", PostSort::Hot, depth, ms(at), fetcher(&calls, 26)) {
                Found::Ready(l) => assert!(Arc::ptr_eq(&l, &first)),
                Found::Wait(_) => panic!("expected the kept list at +{at} ms"),
            }
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Past half the TTL it is still served, and fetched again behind it, once.
        for at in [125, 140] {
            match cache.get("a", PostSort::Hot, 26, ms(at), fetcher(&calls, 26)) {
                Found::Ready(l) => assert!(Arc::ptr_eq(&l, &first)),
                Found::Wait(_) => panic!("expected the kept list at +{at} ms"),
            }
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        refreshed(&cache, ("a", PostSort::Hot)).await;
        let second = match cache.get("a", PostSort::Hot, 26, ms(200), fetcher(&calls, 26)) {
            Found::Ready(l) => l,
            Found::Wait(_) => panic!("expected the refreshed list"),
        };
        assert!(!Arc::ptr_eq(&second, &first));
        assert_eq!((cache.hits(), cache.fills()), (6, 2));
        // The refreshed list counts from its own fetch (+125): at +375 it is
        // expired, and with no refresh under way the feed waits for a fetch.
        assert!(matches!(
            cache.get("a", PostSort::Hot, 26, ms(375), fetcher(&calls, 26)),
            Found::Wait(_)
        ));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Another order or a deeper page: fetched.
        list(cache.get("a", PostSort::New, 26, ms(376), fetcher(&calls, 26))).await;
        list(cache.get("a", PostSort::Hot, 51, ms(376), fetcher(&calls, 51))).await;
        assert_eq!(calls.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn a_refresh_is_as_deep_as_the_list_it_replaces() {
        let mut cache = FeedCache::new(Duration::from_millis(250), Duration::from_secs(2));
        let calls = Arc::new(AtomicUsize::new(0));
        let t0 = Instant::now();
        list(cache.get("a", PostSort::Hot, 26, t0, fetcher(&calls, 26))).await;
        // A shallow feed past half the TTL starts the refresh...
        let asked = Arc::new(AtomicUsize::new(0));
        let shallow = {
            let asked = asked.clone();
            move |depth: usize| {
                asked.store(depth, Ordering::SeqCst);
                async move { Ok(page(depth, false)) }.boxed()
            }
        };
        let at = t0 + Duration::from_millis(200);
        assert!(matches!(
            cache.get("a", PostSort::Hot, 2, at, shallow),
            Found::Ready(_)
        ));
        // ...for the whole list, so deep feeds keep being served from it.
        assert_eq!(asked.load(Ordering::SeqCst), 26);
        refreshed(&cache, ("a", PostSort::Hot)).await;
        let later = t0 + Duration::from_millis(260);
        match cache.get("a", PostSort::Hot, 26, later, fetcher(&calls, 26)) {
            Found::Ready(l) => assert_eq!(l.posts().len(), 26),
            Found::Wait(_) => panic!("the refreshed list should serve a deep feed"),
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn feeds_needing_a_list_meanwhile_share_its_fetch() {
        let mut cache = FeedCache::new(Duration::from_millis(250), Duration::from_secs(2));
        let calls = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let t0 = Instant::now();
        let slow = {
            let calls = calls.clone();
            move |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    rx.await.ok();
                    Ok(page(3, true))
                }
                .boxed()
            }
        };
        let Found::Wait(a) = cache.get("a", PostSort::Top, 26, t0, slow) else {
            panic!("nothing was kept yet");
        };
        let Found::Wait(b) = cache.get("a", PostSort::Top, 10, t0, fetcher(&calls, 26)) else {
            panic!("the fetch under way should be shared");
        };
        tx.send(()).unwrap();
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // A short list cut at the byte budget says so; a prefix of a longer one does not.
        assert_eq!(a.prefix(26), (3, true));
        assert_eq!(a.prefix(2), (2, false));
        // The finished fetch is now the kept list.
        assert!(matches!(
            cache.get("a", PostSort::Top, 26, t0, fetcher(&calls, 26)),
            Found::Ready(_)
        ));
    }

    #[tokio::test]
    async fn a_failed_or_abandoned_fetch_is_started_again() {
        let mut cache = FeedCache::new(Duration::from_millis(250), Duration::from_secs(2));
        let calls = Arc::new(AtomicUsize::new(0));
        let t0 = Instant::now();
        let failing = |_| async { Err(WireError::unavailable("shard 2 is down")) }.boxed();
        let Found::Wait(f) = cache.get("a", PostSort::Hot, 26, t0, failing) else {
            panic!("nothing was kept yet");
        };
        assert_eq!(f.await.unwrap_err().code, ErrorCode::Unavailable);
        list(cache.get("a", PostSort::Hot, 26, t0, fetcher(&calls, 26))).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1, "a failure is not kept");
        // A fetch nobody awaits never ends; past `abandoned` it is replaced.
        let never = |_| futures::future::pending().boxed();
        let _ = cache.get("b", PostSort::Hot, 26, t0, never);
        let soon = t0 + Duration::from_millis(10);
        assert!(matches!(
            cache.get("b", PostSort::Hot, 26, soon, fetcher(&calls, 26)),
            Found::Wait(_)
        ));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let late = t0 + Duration::from_secs(2);
        list(cache.get("b", PostSort::Hot, 26, late, fetcher(&calls, 26))).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn the_cache_stays_within_its_bounds() {
        let mut cache = FeedCache::new(Duration::from_millis(250), Duration::from_secs(2));
        let calls = Arc::new(AtomicUsize::new(0));
        let t0 = Instant::now();
        for i in 0..MAX_LISTS + 10 {
            let at = t0 + Duration::from_millis(if i < 100 { 0 } else { 300 });
            let l = list(cache.get(&format!("s{i}"), PostSort::New, 2, at, fetcher(&calls, 1)));
            l.await;
            // Lookups turn finished fetches into kept lists.
            let _ = cache.get(&format!("s{i}"), PostSort::New, 2, at, fetcher(&calls, 1));
            assert!(cache.slots.len() <= MAX_LISTS);
        }
        // The first hundred expired first and were dropped when room was needed.
        assert!(!cache.slots.contains_key(&("s0".to_owned(), PostSort::New)));
        assert_eq!(
            cache.bytes,
            cache.slots.values().map(Slot::bytes).sum::<usize>()
        );
    }
}
