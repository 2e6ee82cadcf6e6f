//! Direct messages: `dm.send`, `dm.reply`, `dm.list`, `dm.read`. A DM is
//! written on the sender's shard (sent folder) and delivered to the recipient's
//! (`internal.dm.deliver`), with one id per idempotency key so a retry is stored
//! once.

use super::{parse, reply, Actor, Call, Handled};
use crate::state::Effects;
use futures::FutureExt;
use reddit_shared::error::WireError;
use reddit_shared::ids::DmId;
use reddit_shared::protocol::dm::{
    DmView, ListDmsRequest, MarkReadRequest, ReplyDmRequest, SendDmRequest,
};
use reddit_shared::protocol::internal::DeliverDm;

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
                cont.run(move |state, _| Ok(state.record_sent(delivered)))
                    .await
            }
            .boxed(),
        ))
    }
}
