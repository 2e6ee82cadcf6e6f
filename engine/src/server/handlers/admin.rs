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
    Ok(audit::check(shards, records, pending, max))
}
