//! Operations about the cluster itself: `shard.stats` and `audit.run` (which pulls
//! every shard's facts page by page and checks the cross-shard invariants).

use super::{answer, parse, Actor, Call, Handled};
use crate::cross_shard::Peers;
use crate::state::audit;
use futures::FutureExt;
use reddit_shared::codec::encode;
use reddit_shared::error::WireError;
use reddit_shared::protocol::admin::{AuditReport, AuditRequest};
use reddit_shared::protocol::internal::{AuditExportRequest, AuditRecord};
use reddit_shared::protocol::rpc::StatsRequest;

/// Records (and keys taken or walked) per `internal.audit.export` page.
pub(super) const AUDIT_PAGE: u32 = 4_000;

/// How long the audit waits for one page. A page's work is bounded, but
/// right after a run a shard still works through its snapshot follower and
/// outbox, and a retried page walks from the start: the peer timeout of the
/// request path (2 s) failed a million-user audit when the first page
/// collected every record.
pub(super) const AUDIT_PAGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl Actor {
    /// `shard.stats`.
    pub(super) fn shard_stats(&mut self, c: &mut Call<'_>) -> Result<Handled, WireError> {
        answer(c.payload(), |_: StatsRequest| Ok(self.stats()))
    }

    /// `audit.run`: in a spawned task (it waits on every shard, this one too).
    pub(super) fn audit_run(&mut self, c: &mut Call<'_>) -> Result<Handled, WireError> {
        let r: AuditRequest = parse(c.payload())?;
        let peers = self.ctx.peers.with_timeout(AUDIT_PAGE_TIMEOUT);
        let shards = self.ctx.shards;
        let max = r.max_violations.unwrap_or(100) as usize;
        Ok(Handled::Later(
            async move { encode(&run_audit(peers, shards, max).await?) }.boxed(),
        ))
    }
}

/// Pulls every shard's audit records page by page and checks them together.
async fn run_audit(peers: Peers, shards: u32, max: usize) -> Result<AuditReport, WireError> {
    let began = std::time::Instant::now();
    let mut check = Check::start(shards, max);
    let mut count = 0;
    let mut pending = 0;
    let audit = rand::random::<u64>();
    for shard in 0..shards {
        let mut offset = 0u64;
        loop {
            let page = peers
                .call(
                    shard,
                    &AuditExportRequest {
                        audit,
                        offset,
                        limit: AUDIT_PAGE,
                    },
                )
                .await?;
            offset += page.records.len() as u64;
            count += page.records.len();
            pending += page.pending_sync;
            let done = page.done;
            check.add(page.records).await?;
            if done {
                break;
            }
        }
    }
    let mut report = check.finish().await?;
    report.pending_sync = pending;
    tracing::info!(
        records = count,
        audit_ms = began.elapsed().as_millis() as u64,
        ok = report.ok,
        "audit checked"
    );
    Ok(report)
}

/// The audit's check, fed page by page as the pages arrive, each page on
/// tokio's blocking pool while the next one is being fetched: the shard's
/// thread (which the collecting task shares with the actor) stays free, and
/// no shard's export is held whole (at a million users the export is about
/// 8 million records, and checking them takes seconds).
struct Check {
    /// The checker, between pages.
    idle: Option<audit::Checker>,
    /// The checker, checking a page.
    busy: Option<tokio::task::JoinHandle<audit::Checker>>,
}

impl Check {
    /// Starts the check of `shards` shards' records, describing at most
    /// `max` violations.
    fn start(shards: u32, max: usize) -> Self {
        Self {
            idle: Some(audit::Checker::new(shards, max)),
            busy: None,
        }
    }

    /// The checker once it is done with the page before.
    async fn checker(&mut self) -> Result<audit::Checker, WireError> {
        match (self.idle.take(), self.busy.take()) {
            (Some(checker), _) => Ok(checker),
            (None, Some(busy)) => busy
                .await
                .map_err(|e| WireError::internal(format!("the audit's check failed: {e}"))),
            (None, None) => Err(WireError::internal("the audit's check failed before")),
        }
    }

    /// Starts checking `page` once the page before is checked.
    async fn add(&mut self, page: Vec<AuditRecord>) -> Result<(), WireError> {
        let mut checker = self.checker().await?;
        self.busy = Some(tokio::task::spawn_blocking(move || {
            for record in page {
                checker.add(record);
            }
            checker
        }));
        Ok(())
    }

    /// The report, once every page is checked.
    async fn finish(mut self) -> Result<AuditReport, WireError> {
        let checker = self.checker().await?;
        tokio::task::spawn_blocking(move || checker.finish())
            .await
            .map_err(|e| WireError::internal(format!("the audit's check failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Page after page from a single-threaded runtime like a shard's, each
    /// checked in turn: facts of one page meet their counterparts in later
    /// pages, and every record counts.
    #[tokio::test]
    async fn the_check_matches_records_across_pages() {
        // Ten users of one subreddit, as members or as joined.
        let page = |sub: usize, members: bool| -> Vec<AuditRecord> {
            (0..10)
                .map(|i| {
                    let (user, subreddit) = (format!("user{i}"), format!("sub{sub}"));
                    if members {
                        AuditRecord::Member { subreddit, user }
                    } else {
                        AuditRecord::Joined { user, subreddit }
                    }
                })
                .collect()
        };
        let mut check = Check::start(2, 3);
        let pages = 12;
        for sub in 0..pages {
            check.add(page(sub, true)).await.unwrap();
        }
        // Every membership but those of sub0 on the other side, in pages of
        // their own.
        for sub in 1..pages {
            check.add(page(sub, false)).await.unwrap();
        }
        let report = check.finish().await.unwrap();
        assert_eq!(report.shards, 2);
        assert_eq!(report.violation_count, 10, "{:#?}", report.violations);
        assert_eq!(report.violations.len(), 3);
        for (i, v) in report.violations.iter().enumerate() {
            assert_eq!(v.kind, "membership");
            assert!(
                v.detail
                    .starts_with(&format!("user{i} is a member of r/sub0 ")),
                "{}",
                v.detail
            );
        }
    }
}
