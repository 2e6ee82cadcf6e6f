//! Engine-to-engine operations (NATS lets only engine users send them):
//! `internal.sync`, `internal.dm.deliver`, `internal.feed.candidates`,
//! `internal.audit.export`, `internal.hello`, `internal.resync`.

use super::admin::AUDIT_PAGE;
use super::dms::{deliver_again, record_acks};
use super::{parse, reply, Actor, Call, Handled};
use futures::FutureExt;
use reddit_shared::error::WireError;
use reddit_shared::protocol::internal::{
    AuditExport, AuditExportRequest, DeliverDm, DmDelivered, FeedCandidates, FeedCandidatesRequest,
    Hello, ResyncAck, ResyncRequest, SyncAck, SyncBatch,
};
use reddit_shared::protocol::rpc::HelloRequest;
use reddit_shared::PROTOCOL_VERSION;
use std::sync::atomic::Ordering;

impl Actor {
    /// `internal.sync`: memberships and karma from the subreddits' shards.
    pub(super) fn internal_sync(&mut self, c: &mut Call<'_>) -> Result<Handled, WireError> {
        let r: SyncBatch = parse(c.payload())?;
        if r.bulk {
            // A restart's resync: answered once durable, so that its sender,
            // which paces itself by the answers, leaves this shard time.
            self.acks_early = false;
        }
        let mut applied = 0;
        for item in r.items {
            if self.state.apply_sync_checked(item)? {
                applied += 1;
            }
        }
        // Answered before its record is durable (see `Actor::handle`): say
        // which record, so the sender keeps the items until then, and which
        // is durable, so it forgets those of earlier answers (an empty batch
        // asks just that).
        let (record, durable) = self.early_ack_position();
        reply(&SyncAck {
            applied,
            record,
            durable,
        })
    }

    /// What a write acknowledged before it is logged (`internal.sync`,
    /// `internal.dm.deliver`) tells its sender, which keeps what it sent
    /// until the record named is durable: (record, last durable record),
    /// both 0 when the answer waits until durable instead.
    ///
    /// A write that changed something names the open record, which will hold
    /// its events. One that changed nothing (a repeat: items no newer than
    /// what is held, a DM stored already) names the record that makes
    /// everything recorded so far durable, since what it found may still be
    /// on its way to the log; 0 when all of it is durable. Naming the open
    /// record instead would, on a quiet shard, name a record that stays
    /// empty, is never appended, and its sender would keep the items for good.
    fn early_ack_position(&self) -> (u64, u64) {
        if !self.acks_early {
            return (0, 0);
        }
        let record = if self.state.has_new_events() {
            self.journal.open_record_seq()
        } else {
            self.journal.covering_seq()
        };
        (record, self.journal.last_seq())
    }

    /// `internal.resync`: what the asking shard may have lost, queued in the
    /// resync lane (in the background). A shard asks each other shard once it
    /// starts: it acknowledges `internal.sync` before its record is durable,
    /// so its predecessor may have died with acknowledged items unlogged.
    /// The DMs it may have lost (delivered here, acknowledged there before
    /// they were durable, never shown durable since) are delivered to it
    /// again before the answer.
    pub(super) fn internal_resync(&mut self, c: &mut Call<'_>) -> Result<Handled, WireError> {
        let r: ResyncRequest = parse(c.payload())?;
        let (items, all) = self.queue_resync_for(r.shard, r.after)?;
        let dms = self.state.unconfirmed_dms(r.shard);
        if dms.is_empty() {
            return reply(&ResyncAck { items, all, dms: 0 });
        }
        let (peers, cont, dest) = (self.ctx.peers.clone(), self.continuation()?, r.shard);
        Ok(Handled::Later(
            async move {
                let acks = deliver_again(&peers, dest, dms).await?;
                let dms = acks.len() as u64;
                cont.run(move |state, _| {
                    record_acks(state, dest, acks);
                    Ok(ResyncAck { items, all, dms })
                })
                .await
            }
            .boxed(),
        ))
    }

    /// `internal.dm.deliver`: a DM into the recipient's inbox (once per id).
    /// Answered once stored, like `internal.sync`, saying which record holds
    /// it: its sender's shard keeps its id until that record is durable.
    pub(super) fn internal_dm_deliver(&mut self, c: &mut Call<'_>) -> Result<Handled, WireError> {
        let r: DeliverDm = parse(c.payload())?;
        let dm = self.state.deliver_dm(r.dm, c.fx)?;
        let (record, _) = self.early_ack_position();
        reply(&DmDelivered {
            dm,
            record,
            durable: self.journal.last_seq(),
            fence: self.fence,
        })
    }

    /// `internal.feed.candidates`: this shard's part of a feed page.
    pub(super) fn internal_feed_candidates(
        &mut self,
        c: &mut Call<'_>,
    ) -> Result<Handled, WireError> {
        let r: FeedCandidatesRequest = parse(c.payload())?;
        let (posts, truncated) = self.state.feed_candidates(
            &r.subreddits,
            r.sort,
            r.limit as usize,
            r.cursor.as_ref(),
            r.above.as_ref(),
        )?;
        reply(&FeedCandidates { posts, truncated })
    }

    /// `internal.audit.export`: one page of this shard's facts. An audit's
    /// first pages take the shard's keys, `limit` a page; the later ones walk
    /// on from where the last one stopped, at most `limit` records and
    /// `limit` keys a page ([`ShardState::audit_page`]), so no page holds the
    /// shard for long. A page asked out of turn (a retry) walks from the
    /// start again to its offset, in one turn.
    ///
    /// [`ShardState::audit_page`]: crate::state::ShardState::audit_page
    pub(super) fn internal_audit_export(&mut self, c: &mut Call<'_>) -> Result<Handled, WireError> {
        let r: AuditExportRequest = parse(c.payload())?;
        let limit = r.limit.clamp(1, 10 * AUDIT_PAGE) as usize;
        let cursor = match self.audit_cache.take() {
            Some((id, cursor)) if id == r.audit && cursor.served() == r.offset => cursor,
            _ => {
                let mut cursor = self.state.audit_cursor();
                while cursor.served() < r.offset && !cursor.done() {
                    let left = usize::try_from(r.offset - cursor.served()).unwrap_or(usize::MAX);
                    self.state.audit_page(&mut cursor, left, usize::MAX);
                }
                cursor
            }
        };
        let mut cursor = cursor;
        let records = self.state.audit_page(&mut cursor, limit, limit);
        let done = cursor.done();
        if !done {
            self.audit_cache = Some((r.audit, cursor));
        }
        reply(&AuditExport {
            records,
            done,
            pending_sync: self.ctx.metrics.pending_sync.load(Ordering::Relaxed),
        })
    }

    /// `internal.hello`: who owns this shard (start-up checks of other processes).
    pub(super) fn internal_hello(&mut self, c: &mut Call<'_>) -> Result<Handled, WireError> {
        let _: HelloRequest = parse(c.payload())?;
        reply(&Hello {
            shard: self.ctx.shard,
            shards: self.ctx.shards,
            protocol: PROTOCOL_VERSION.to_owned(),
            secret_fingerprint: self.ctx.tokens.fingerprint(),
            instance: self.ctx.instance.clone(),
        })
    }
}
