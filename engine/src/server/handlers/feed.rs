//! `feed.get`: the caller's joined subreddits, merged across the shards that own
//! them. Each shard returns encoded candidate views with their ranks, best
//! first; the merge walks their heads by key and splices the winners' views
//! into the reply without decoding them.
//! First pages draw other shards' subreddits from the feed cache
//! ([`crate::server::feed_cache`]) when it is on.

use super::{parse, Actor, Call, Handled};
use crate::server::feed_cache::{Candidates, Found};
use crate::state::ranking::{encode_cursor, Rank};
use futures::FutureExt;
use reddit_shared::error::WireError;
use reddit_shared::names::SubredditName;
use reddit_shared::protocol::feed::FeedRequest;
use reddit_shared::protocol::internal::{FeedCandidate, FeedCandidates, FeedCandidatesRequest};
use reddit_shared::protocol::post::PostSort;
use reddit_shared::protocol::DEFAULT_PAGE;
use reddit_shared::MAX_PAGE_BYTES;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// Most other shards' subreddits a first page takes from the feed cache. The
/// cache fetches per subreddit, so past this a feed is read live instead (one
/// request per shard): nobody's join list makes one feed start more requests.
pub const MAX_CACHED_FEED_SUBREDDITS: usize = 64;

impl Actor {
    /// `feed.get`: local candidates at once; other shards' in a spawned task.
    pub(super) fn feed_get(&mut self, c: &mut Call<'_>) -> Result<Handled, WireError> {
        let who = self.caller(c.request, c.now)?;
        let r: FeedRequest = parse(c.payload())?;
        let joined = self.state.joined(&who)?;
        let limit = r.limit.unwrap_or(DEFAULT_PAGE) as usize;
        let mut by_shard: BTreeMap<u32, Vec<SubredditName>> = BTreeMap::new();
        for name in joined {
            by_shard
                .entry(self.state.owner(name.key()))
                .or_default()
                .push(name);
        }
        let local = by_shard.remove(&self.ctx.shard).unwrap_or_default();
        let remote_subreddits: usize = by_shard.values().map(Vec::len).sum();
        if self.feed_cache.enabled()
            && r.cursor.is_none()
            && !r.fresh
            && remote_subreddits <= MAX_CACHED_FEED_SUBREDDITS
        {
            return self.feed_from_lists(&local, by_shard, r.sort, limit);
        }
        let (posts, truncated) =
            self.state
                .feed_candidates(&local, r.sort, limit + 1, r.cursor.as_ref(), None)?;
        // With `limit + 1` local candidates, the page has a next one whatever the
        // other shards hold, and none of their posts ranking below the `limit`-th
        // local one can make this page: they send only what ranks above it.
        let above = match (truncated, posts.get(limit.saturating_sub(1))) {
            (false, Some(c)) if limit > 0 && posts.len() > limit => {
                Some(encode_cursor(&(Rank(c.rank), c.id)))
            }
            _ => None,
        };
        let mut merge = FeedMerge::default();
        merge.add(posts, truncated);
        if by_shard.is_empty() {
            return merge.finish(limit).map(Handled::Reply);
        }
        let peers = self.ctx.peers.clone();
        Ok(Handled::Later(
            async move {
                let calls = by_shard.into_iter().map(|(shard, subreddits)| {
                    let req = FeedCandidatesRequest {
                        subreddits,
                        sort: r.sort,
                        limit: u32::try_from(limit + 1).unwrap_or(u32::MAX),
                        cursor: r.cursor.clone(),
                        above: above.clone(),
                    };
                    let peers = peers.clone();
                    async move {
                        peers
                            .call_with(shard, &req, FeedCandidates::decode_shared)
                            .await
                    }
                });
                for result in futures::future::join_all(calls).await {
                    let page = result?;
                    merge.add(page.posts, page.truncated);
                }
                merge.finish(limit)
            }
            .boxed(),
        ))
    }

    /// A first page from the local subreddits read now and every other
    /// shard's subreddit's list under `sort` from the [`FeedCache`]: fetched
    /// (one `internal.feed.candidates` per subreddit, `limit + 1` deep) only
    /// when none was within its TTL. The lists are per subreddit, not per
    /// shard, so that each serves every user whose feed holds it.
    ///
    /// [`FeedCache`]: crate::server::feed_cache::FeedCache
    fn feed_from_lists(
        &mut self,
        local: &[SubredditName],
        remote: BTreeMap<u32, Vec<SubredditName>>,
        sort: PostSort,
        limit: usize,
    ) -> Result<Handled, WireError> {
        let depth = limit + 1;
        let (posts, truncated) = self.state.feed_candidates(local, sort, depth, None, None)?;
        let mut merge = FeedMerge::default();
        merge.add(posts, truncated);
        let now = Instant::now();
        let mut waits = Vec::new();
        for (shard, subreddits) in remote {
            for name in subreddits {
                let fetch = |asked: usize| {
                    let peers = self.ctx.peers.clone();
                    let req = FeedCandidatesRequest {
                        subreddits: vec![name.clone()],
                        sort,
                        limit: u32::try_from(asked).unwrap_or(u32::MAX),
                        cursor: None,
                        above: None,
                    };
                    async move {
                        peers
                            .call_with(shard, &req, FeedCandidates::decode_shared)
                            .await
                    }
                    .boxed()
                };
                match self.feed_cache.get(name.key(), sort, depth, now, fetch) {
                    Found::Ready(list) => merge.add_kept(list, depth),
                    Found::Wait(fill) => waits.push(fill),
                }
            }
        }
        if waits.is_empty() {
            return merge.finish(limit).map(Handled::Reply);
        }
        Ok(Handled::Later(
            async move {
                for list in futures::future::join_all(waits).await {
                    merge.add_kept(list?, depth);
                }
                merge.finish(limit)
            }
            .boxed(),
        ))
    }
}

/// Feed candidates gathered from several shards, merged by key into one page.
#[derive(Default)]
struct FeedMerge {
    /// Each best first: the local candidates, each shard's answer, each kept
    /// list (shared with the feed cache, not copied).
    sources: Vec<Source>,
    /// The highest last key among sources that stopped early (byte budget):
    /// below it, some of their posts are missing, so the page must stop there.
    floor: Option<(Rank, uuid::Uuid)>,
}

/// One best-first run of candidates.
enum Source {
    Owned(Vec<FeedCandidate>),
    /// The first `len` of a kept list.
    Kept(Arc<Candidates>, usize),
}

impl Source {
    fn posts(&self) -> &[FeedCandidate] {
        match self {
            Source::Owned(v) => v,
            Source::Kept(list, len) => list.posts().get(..*len).unwrap_or_default(),
        }
    }
}

/// The merge order's key (larger first).
fn key(c: &FeedCandidate) -> (Rank, uuid::Uuid) {
    (Rank(c.rank), c.id.0)
}

impl FeedMerge {
    fn add(&mut self, posts: Vec<FeedCandidate>, truncated: bool) {
        self.add_source(Source::Owned(posts), truncated);
    }

    /// Adds the best `want` of a kept list.
    fn add_kept(&mut self, list: Arc<Candidates>, want: usize) {
        let (len, truncated) = list.prefix(want);
        self.add_source(Source::Kept(list, len), truncated);
    }

    fn add_source(&mut self, source: Source, truncated: bool) {
        if truncated {
            if let Some(last) = source.posts().last() {
                let k = key(last);
                self.floor = Some(self.floor.map_or(k, |f| f.max(k)));
            }
        }
        self.sources.push(source);
    }

    /// The `PostPage` reply (`{posts: [...], next_cursor}`) around the winners'
    /// encoded views: at most `limit` posts and [`MAX_PAGE_BYTES`] of views, never
    /// past the floor; `next_cursor` whenever anything was left out. The
    /// sources are merged by walking their heads: nothing is copied or sorted
    /// but the winners' bytes.
    fn finish(self, limit: usize) -> Result<Vec<u8>, WireError> {
        let FeedMerge { sources, floor } = self;
        let runs: Vec<&[FeedCandidate]> = sources.iter().map(Source::posts).collect();
        let mut heads = vec![0usize; runs.len()];
        let mut posts: Vec<&FeedCandidate> = Vec::with_capacity(limit);
        let mut more = floor.is_some();
        let mut bytes = 0;
        loop {
            let best = runs
                .iter()
                .zip(&heads)
                .enumerate()
                .filter_map(|(i, (run, &h))| run.get(h).map(|c| (i, c)))
                .max_by_key(|(_, c)| key(c));
            let Some((i, c)) = best else { break };
            let below_floor = floor.is_some_and(|f| key(c) < f);
            if posts.len() == limit
                || below_floor
                || (!posts.is_empty() && bytes + c.view.len() > MAX_PAGE_BYTES)
            {
                more = true;
                break;
            }
            bytes += c.view.len();
            posts.push(c);
            heads[i] += 1;
        }
        let next_cursor = more
            .then(|| posts.last().map(|c| encode_cursor(&(Rank(c.rank), c.id))))
            .flatten();
        let mut out = Vec::with_capacity(bytes + 64);
        let io = |e: rmp::encode::ValueWriteError| {
            WireError::internal(format!("could not encode a feed page: {e}"))
        };
        rmp::encode::write_map_len(&mut out, 2).map_err(io)?;
        rmp::encode::write_str(&mut out, "posts").map_err(io)?;
        rmp::encode::write_array_len(&mut out, posts.len() as u32).map_err(io)?;
        for c in &posts {
            out.extend_from_slice(&c.view);
        }
        rmp::encode::write_str(&mut out, "next_cursor").map_err(io)?;
        match next_cursor {
            Some(c) => rmp::encode::write_str(&mut out, &c).map_err(io)?,
            None => {
                rmp::encode::write_nil(&mut out).map_err(|e| WireError::internal(e.to_string()))?
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reddit_shared::ids::PostId;
    use reddit_shared::protocol::internal::FeedCandidates;

    /// A candidate ranked `rank` whose view is the MessagePack number `n`.
    fn cand(rank: f64, n: u32) -> FeedCandidate {
        FeedCandidate {
            rank,
            id: PostId::new(),
            view: bytes::Bytes::from(rmp_serde::to_vec(&n).unwrap()),
        }
    }

    #[derive(serde::Deserialize)]
    struct Page {
        posts: Vec<u32>,
        next_cursor: Option<String>,
    }

    fn page(merge: FeedMerge, limit: usize) -> Page {
        rmp_serde::from_slice(&merge.finish(limit).unwrap()).unwrap()
    }

    #[test]
    fn sources_merge_by_rank_into_one_page() {
        let kept = |ranks: &[(f64, u32)], truncated| {
            let page = FeedCandidates {
                posts: ranks.iter().map(|&(r, n)| cand(r, n)).collect(),
                truncated,
            };
            Arc::new(Candidates::new(page, 10))
        };
        let mut merge = FeedMerge::default();
        merge.add(vec![cand(9.0, 1), cand(5.0, 4), cand(1.0, 7)], false);
        merge.add_kept(kept(&[(8.0, 2), (6.0, 3), (2.0, 6)], false), 10);
        merge.add_kept(kept(&[(4.0, 5), (0.5, 8)], false), 10);
        merge.add(Vec::new(), false);
        let p = page(merge, 10);
        assert_eq!(p.posts, vec![1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(p.next_cursor, None);

        // A limit cuts the page and leaves a cursor; only a kept list's
        // asked-for prefix takes part.
        let mut merge = FeedMerge::default();
        merge.add(vec![cand(9.0, 1), cand(5.0, 4), cand(4.5, 9)], false);
        merge.add_kept(kept(&[(8.0, 2), (6.0, 3), (2.0, 6)], false), 1);
        let p = page(merge, 3);
        assert_eq!(p.posts, vec![1, 2, 4]);
        assert!(p.next_cursor.is_some());

        // A source cut at the byte budget is a floor: nothing below its last
        // post makes the page, since some of its posts are missing there.
        let mut merge = FeedMerge::default();
        merge.add(vec![cand(9.0, 1), cand(3.0, 5)], false);
        merge.add_kept(kept(&[(8.0, 2), (4.0, 4)], true), 10);
        let p = page(merge, 10);
        assert_eq!(p.posts, vec![1, 2, 4]);
        assert!(p.next_cursor.is_some());
    }
}
