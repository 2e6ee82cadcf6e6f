//! Operations about the cluster itself: `shard.stats` and `audit.run` (which pulls
//! every shard's facts page by page and checks the cross-shard invariants).

use super::{answer, parse, Actor, Call, Handled};
use crate::cross_shard::Peers;
use crate::state::audit;
use futures::FutureExt;
use reddit_shared::codec::encode;
use reddit_shared::error::WireError;
use reddit_shared::protocol::admin::{AuditReport, AuditRequest};
use reddit_shared::protocol::internal::AuditExportRequest;
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
    let mut records = Vec::new();
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
            pending += page.pending_sync;
            records.extend(page.records);
            if page.done {
                break;
            }
        }
    }
    let count = records.len();
    let began = std::time::Instant::now();
    let report = off_the_shard(move || audit::check(shards, records, pending, max)).await?;
    tracing::info!(
        records = count,
        check_ms = began.elapsed().as_millis() as u64,
        ok = report.ok,
        "audit checked"
    );
    Ok(report)
}

/// Runs `work` on tokio's blocking pool and waits for it without holding the
/// shard's thread: the task that waits shares that thread with the actor, so
/// work done inline stops every request of the shard. The audit's check of a
/// million users' records takes seconds.
async fn off_the_shard<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, WireError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| WireError::internal(format!("the audit's check failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shard's thread stays free while the work runs: here the work
    /// waits for a task on that thread, and would wait forever (its 10 s)
    /// if it ran there.
    #[tokio::test]
    async fn work_off_the_shard_leaves_its_thread_free() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let work =
            off_the_shard(move || rx.recv_timeout(std::time::Duration::from_secs(10)).is_ok());
        let other_task = async move {
            tokio::task::yield_now().await;
            tx.send(()).unwrap();
        };
        let (freed, ()) = tokio::join!(work, other_task);
        assert!(freed.unwrap(), "the work held the thread its waker needed");
    }
}
