//! Direct messages: `dm.send`, `dm.reply`, `dm.list`, `dm.read`. A DM is
//! delivered to the recipient's shard (`internal.dm.deliver`), then written on
//! the sender's (sent folder), with one id per idempotency key so a retry is
//! stored once. The recipient's shard answers once it has stored the DM,
//! before its record is durable; the sender's keeps the DM's id until told
//! that record is durable, and delivers it again if that shard restarts
//! before, or if no answer has shown it durable for a recheck period
//! ([`crate::state::Deliveries`]).

use super::super::actor::RESYNC_ASK_MAX_BACKOFF;
use super::{parse, reply, Actor, Call, Handled};
use crate::cross_shard::Peers;
use crate::state::{Effects, LogPosition};
use futures::{FutureExt, StreamExt, TryStreamExt};
use reddit_shared::error::{ErrorCode, WireError};
use reddit_shared::ids::DmId;
use reddit_shared::protocol::dm::{
    DmView, ListDmsRequest, MarkReadRequest, ReplyDmRequest, SendDmRequest,
};
use reddit_shared::protocol::internal::{DeliverDm, DmDelivered};

/// DMs delivered again at once, to one shard.
const REDELIVERIES_IN_FLIGHT: usize = 32;
/// Times a starting shard tries to deliver its unconfirmed DMs to a shard
/// that answers with errors (one that is not running asks for them when it
/// starts); after that they wait for the next restart of either shard.
const REDELIVERY_ATTEMPTS: u32 = 10;
/// DMs a recheck delivers again to one shard at most (the rest wait for the
/// next): on a quiet system only the last few are left unconfirmed.
const RECHECKED_PER_SHARD: usize = 256;

impl Actor {
    /// `dm.send`.
    pub(super) fn dm_send(&mut self, c: &mut Call<'_>) -> Result<Handled, WireError> {
        let who = self.caller(c.request, c.now)?;
        let r: SendDmRequest = parse(c.payload())?;
        let mut dm = self
            .state
            .prepare_dm(DmId::new(), &who, &r.to, r.body, None, c.now)?;
        dm.id = self.dm_id();
        self.send_dm(dm, c.fx)
    }

    /// `dm.reply`: to the other party of a DM in the caller's folders.
    pub(super) fn dm_reply(&mut self, c: &mut Call<'_>) -> Result<Handled, WireError> {
        let who = self.caller(c.request, c.now)?;
        let r: ReplyDmRequest = parse(c.payload())?;
        let to = self.state.reply_target(&who, r.dm_id)?;
        let mut dm = self
            .state
            .prepare_dm(DmId::new(), &who, &to, r.body, Some(r.dm_id), c.now)?;
        dm.id = self.dm_id();
        self.send_dm(dm, c.fx)
    }

    /// `dm.list`: the caller's inbox or sent folder.
    pub(super) fn dm_list(&mut self, c: &mut Call<'_>) -> Result<Handled, WireError> {
        self.as_user(c, |s, who, r: ListDmsRequest, _| s.state.list_dms(&who, &r))
    }

    /// `dm.read`: marks DMs of the caller's inbox read.
    pub(super) fn dm_read(&mut self, c: &mut Call<'_>) -> Result<Handled, WireError> {
        self.as_user(c, |s, who, r: MarkReadRequest, _| {
            s.state.mark_read(&who, r.ids)
        })
    }

    /// Delivers `dm` (here, or on the recipient's shard in a spawned task), then
    /// records it as sent.
    fn send_dm(&mut self, dm: DmView, fx: &mut Effects) -> Result<Handled, WireError> {
        let dest = self.state.owner(&dm.to.to_ascii_lowercase());
        if dest == self.ctx.shard {
            let delivered = self.state.deliver_dm(dm, fx)?;
            return reply(&self.state.record_sent(delivered));
        }
        let peers = self.ctx.peers.clone();
        let cont = self.continuation()?;
        Ok(Handled::Later(
            async move {
                let delivered = peers.call(dest, &DeliverDm { dm }).await?;
                let at = position(&delivered);
                cont.run(move |state, _| Ok(state.record_sent_to(dest, delivered.dm, at)))
                    .await
            }
            .boxed(),
        ))
    }

    /// At start: delivers again, in the background, every DM this shard's log
    /// says another shard has not shown durable. That shard asks for them
    /// when it restarts (`internal.resync`), but not if this one was not
    /// running then.
    pub(in crate::server) fn redeliver_at_start(&mut self) {
        for dest in self.state.shards_with_unconfirmed_dms() {
            let dms = self.state.unconfirmed_dms(dest);
            self.redeliver(dest, dms, Redelivery::AtStart);
        }
    }

    /// Delivers again the DMs that have stayed unconfirmed since the last
    /// recheck ([`Actor::with_dm_recheck`]): at most
    /// [`RECHECKED_PER_SHARD`] per shard, and none to a shard that a delivery
    /// again is still in progress to.
    pub(in crate::server) fn recheck_dms(&mut self) {
        // Not a request's continuation: its log entry counts as no operation's.
        self.current_op = None;
        let mut seen = std::collections::HashMap::new();
        for dest in self.state.shards_with_unconfirmed_dms() {
            let kept: std::collections::HashSet<DmId> =
                self.state.unconfirmed_dm_ids(dest).collect();
            let before = self.dms_at_recheck.remove(&dest).unwrap_or_default();
            let stuck: std::collections::HashSet<DmId> = kept
                .intersection(&before)
                .take(RECHECKED_PER_SHARD)
                .copied()
                .collect();
            seen.insert(dest, kept);
            let busy = self
                .redeliveries
                .get(&dest)
                .is_some_and(|r| r.strong_count() > 0);
            if stuck.is_empty() || busy {
                continue;
            }
            let dms = self
                .state
                .unconfirmed_dms_among(dest, |id| stuck.contains(&id));
            self.redeliver(dest, dms, Redelivery::Recheck);
        }
        self.dms_at_recheck = seen;
    }

    /// Delivers `dms` to shard `dest` again in a spawned task, and records its
    /// answers.
    fn redeliver(&mut self, dest: u32, dms: Vec<DmView>, why: Redelivery) {
        let Ok(cont) = self.continuation() else {
            return;
        };
        let in_progress = std::sync::Arc::new(());
        self.redeliveries
            .insert(dest, std::sync::Arc::downgrade(&in_progress));
        let peers = self.ctx.peers.clone();
        let me = self.ctx.shard;
        let attempts = match why {
            Redelivery::AtStart => REDELIVERY_ATTEMPTS,
            // The next recheck tries again.
            Redelivery::Recheck => 1,
        };
        tokio::spawn(async move {
            let _in_progress = in_progress;
            let mut backoff = std::time::Duration::from_millis(100);
            for attempt in 1..=attempts {
                match deliver_again(&peers, dest, dms.clone()).await {
                    Ok(acks) => {
                        match why {
                            Redelivery::AtStart => tracing::info!(
                                shard = me,
                                peer = dest,
                                dms = acks.len(),
                                "DMs whose delivery was not confirmed durable delivered again"
                            ),
                            Redelivery::Recheck => tracing::debug!(
                                shard = me,
                                peer = dest,
                                dms = acks.len(),
                                "DMs unconfirmed since the last recheck delivered again"
                            ),
                        }
                        let _ = cont
                            .run(move |state, _| {
                                record_acks(state, dest, acks);
                                Ok(())
                            })
                            .await;
                        return;
                    }
                    Err(e) if reddit_shared::connect::is_no_responders(&e) => return,
                    Err(e) => {
                        tracing::warn!(shard = me, peer = dest, error = %e, attempt, "delivering DMs again failed");
                        if attempt < attempts {
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(RESYNC_ASK_MAX_BACKOFF);
                        }
                    }
                }
            }
        });
    }
}

/// Why DMs are delivered again.
#[derive(Clone, Copy)]
enum Redelivery {
    /// This shard has just started.
    AtStart,
    /// They stayed unconfirmed since the last recheck.
    Recheck,
}

/// What the recipient's shard said of its log.
pub(super) fn position(d: &DmDelivered) -> LogPosition {
    LogPosition {
        record: d.record,
        durable: d.durable,
        fence: d.fence,
    }
}

/// One answer of [`deliver_again`]: the DM, its sender's key, and what the
/// recipient's shard said.
pub(super) type Redelivered = (DmId, String, LogPosition);

/// Delivers `dms` to shard `dest` again (idempotent by id), a few at once.
/// A DM whose recipient no longer exists is answered as durable: nothing is
/// left to deliver.
pub(super) async fn deliver_again(
    peers: &Peers,
    dest: u32,
    dms: Vec<DmView>,
) -> Result<Vec<Redelivered>, WireError> {
    futures::stream::iter(dms)
        .map(|dm| async move {
            let (id, sender) = (dm.id, dm.from.to_ascii_lowercase());
            match peers.call(dest, &DeliverDm { dm }).await {
                Ok(d) => Ok((id, sender, position(&d))),
                Err(e) if e.code == ErrorCode::NotFound => Ok((id, sender, LogPosition::default())),
                Err(e) => Err(e),
            }
        })
        .buffer_unordered(REDELIVERIES_IN_FLIGHT)
        .try_collect()
        .await
}

/// Records the answers of [`deliver_again`] (which of the DMs are still
/// unconfirmed).
pub(super) fn record_acks(state: &mut crate::state::ShardState, dest: u32, acks: Vec<Redelivered>) {
    for (id, sender, at) in acks {
        state.dm_delivery_acked(dest, id, sender, at);
    }
}
