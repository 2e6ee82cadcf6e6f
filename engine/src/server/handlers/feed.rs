//! `feed.get`: the caller's joined subreddits, merged across the shards that own
//! them. Each shard returns encoded candidate views with their ranks; the merge
//! sorts by key and splices the views into the reply without decoding them.
//! First pages draw other shards' subreddits from the feed cache
//! ([`crate::server::feed_cache`]) when it is on.

use super::{parse, Actor, Call, Handled};
use crate::server::feed_cache::Found;
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
use std::time::Instant;

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
        if self.feed_cache.enabled() && r.cursor.is_none() && !r.fresh {
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
                let fetch = || {
                    let peers = self.ctx.peers.clone();
                    let req = FeedCandidatesRequest {
                        subreddits: vec![name.clone()],
                        sort,
                        limit: u32::try_from(depth).unwrap_or(u32::MAX),
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
                    Found::Ready(list) => {
                        let (posts, truncated) = list.best(depth);
                        merge.add(posts, truncated);
                    }
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
                    let (posts, truncated) = list?.best(depth);
                    merge.add(posts, truncated);
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
    posts: Vec<FeedCandidate>,
    /// The highest last key among shards that stopped early (byte budget): below
    /// it, some of their posts are missing, so the page must stop there.
    floor: Option<(Rank, uuid::Uuid)>,
}

impl FeedMerge {
    fn add(&mut self, posts: Vec<FeedCandidate>, truncated: bool) {
        if truncated {
            if let Some(last) = posts.last() {
                let key = (Rank(last.rank), last.id.0);
                self.floor = Some(self.floor.map_or(key, |f| f.max(key)));
            }
        }
        self.posts.extend(posts);
    }

    /// The `PostPage` reply (`{posts: [...], next_cursor}`) around the winners'
    /// encoded views: at most `limit` posts and [`MAX_PAGE_BYTES`] of views, never
    /// past the floor; `next_cursor` whenever anything was left out.
    fn finish(self, limit: usize) -> Result<Vec<u8>, WireError> {
        let FeedMerge { mut posts, floor } = self;
        let key = |c: &FeedCandidate| (Rank(c.rank), c.id.0);
        posts.sort_unstable_by_key(|c| std::cmp::Reverse(key(c)));
        let mut more = floor.is_some();
        let mut bytes = 0;
        let mut fit = 0;
        for c in &posts {
            let below_floor = floor.is_some_and(|f| key(c) < f);
            if fit == limit || below_floor || (fit > 0 && bytes + c.view.len() > MAX_PAGE_BYTES) {
                more = true;
                break;
            }
            bytes += c.view.len();
            fit += 1;
        }
        posts.truncate(fit);
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
