//! DMs this shard delivered to other shards that acknowledged them before
//! their log records were durable (`internal.dm.deliver` answers once the DM
//! is stored, saying which record holds it): a `dm.send` then waits for one
//! append (the sent copy's, here), not two in turn.
//!
//! Until an answer from the same shard shows that record durable, the DM's id
//! is kept here, in the state, so in this shard's log and snapshots beside the
//! sent copy: if the recipient's shard restarts first, the DM is delivered
//! again (it asks with `internal.resync`; a sender that was not running then
//! delivers everything kept when it starts). A DM kept for a whole recheck
//! period is delivered again too (`Actor::with_dm_recheck`): on a quiet
//! system no later answer would come. Delivery is idempotent by id.
//!
//! Which entries an answer confirms is decided from the answer alone (so
//! replaying the log gives the same entries): one from the same process (the
//! same `fence`, the first record it wrote) confirms records up to its
//! `durable`. One from another process confirms none: a record number lost
//! in a crash is taken by the next process's records, so "below my fence"
//! would not say whose record it was. Those entries go only once delivered
//! again.

use reddit_shared::ids::DmId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a recipient's shard said of its log when it acknowledged a DM
/// (`internal.dm.deliver`'s answer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPosition {
    /// The record holding the DM if it was not durable yet, else 0.
    pub record: u64,
    /// The last durable record then (0: not said).
    pub durable: u64,
    /// The first record the answering process wrote (0: not said).
    pub fence: u64,
}

/// One DM whose record at the recipient's shard is not known durable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unconfirmed {
    /// The sender's key (owned here): the DM is in their sent folder.
    pub sender: String,
    /// The recipient shard's record that holds it.
    pub record: u64,
    /// The fence of the process that acknowledged it.
    pub fence: u64,
}

impl Unconfirmed {
    /// Whether an answer saying `at` shows this DM's record durable.
    fn confirmed_by(&self, at: LogPosition) -> bool {
        at.fence == self.fence && self.record <= at.durable
    }
}

/// The unconfirmed DMs, per recipient shard.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deliveries {
    by_shard: BTreeMap<u32, BTreeMap<DmId, Unconfirmed>>,
}

impl Deliveries {
    /// Shard `shard` acknowledged DM `id` of `sender` at `at`: drops what
    /// `at` confirms, then keeps `id` if its own record is not durable.
    pub fn acked(&mut self, shard: u32, id: DmId, sender: &str, at: LogPosition) {
        let kept = self.by_shard.entry(shard).or_default();
        kept.retain(|_, u| !u.confirmed_by(at));
        if at.record > at.durable {
            kept.insert(
                id,
                Unconfirmed {
                    sender: sender.to_owned(),
                    record: at.record,
                    fence: at.fence,
                },
            );
        } else {
            kept.remove(&id);
        }
        if kept.is_empty() {
            self.by_shard.remove(&shard);
        }
    }

    /// Whether anything is kept for `shard`.
    pub fn has(&self, shard: u32) -> bool {
        self.by_shard.contains_key(&shard)
    }

    /// The DMs kept for `shard` (ids and senders' keys).
    pub fn for_shard(&self, shard: u32) -> impl Iterator<Item = (DmId, &str)> {
        self.by_shard
            .get(&shard)
            .into_iter()
            .flatten()
            .map(|(id, u)| (*id, u.sender.as_str()))
    }

    /// The shards something is kept for.
    pub fn shards(&self) -> Vec<u32> {
        self.by_shard.keys().copied().collect()
    }

    /// DMs kept, over all shards.
    pub fn len(&self) -> usize {
        self.by_shard.values().map(BTreeMap::len).sum()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.by_shard.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(record: u64, durable: u64, fence: u64) -> LogPosition {
        LogPosition {
            record,
            durable,
            fence,
        }
    }

    #[test]
    fn a_dm_is_kept_until_its_record_is_durable() {
        let mut d = Deliveries::default();
        let (a, b) = (DmId::new(), DmId::new());
        d.acked(1, a, "ann", at(10, 8, 5));
        d.acked(1, b, "bob", at(11, 9, 5));
        assert_eq!(d.len(), 2, "record 10 is not durable yet at 9");
        d.acked(1, DmId::new(), "cy", at(12, 10, 5));
        let kept: Vec<_> = d.for_shard(1).map(|(id, _)| id).collect();
        assert!(!kept.contains(&a), "record 10 is durable now");
        assert!(kept.contains(&b));
        assert_eq!(d.len(), 2);
        // A DM stored durably before its answer is not kept, and its answer
        // confirms the rest.
        d.acked(1, DmId::new(), "dee", at(0, 12, 5));
        assert!(d.is_empty(), "{d:?}");
        assert!(!d.has(1));
    }

    #[test]
    fn another_process_confirms_nothing_until_delivered_again() {
        let mut d = Deliveries::default();
        let (logged, lost) = (DmId::new(), DmId::new());
        d.acked(2, logged, "ann", at(20, 18, 5));
        d.acked(2, lost, "bob", at(21, 18, 5));
        // The shard restarted with record 20 its last: its fence took number
        // 21, so "record 21 is durable" would be about the fence, not the DM.
        d.acked(2, DmId::new(), "cy", at(0, 400, 21));
        assert_eq!(d.len(), 2, "{d:?}");
        // A late answer of the earlier process confirms its own records only.
        d.acked(2, DmId::new(), "dee", at(402, 401, 21));
        d.acked(2, DmId::new(), "eve", at(0, 20, 5));
        let kept: Vec<_> = d.for_shard(2).map(|(_, s)| s).collect();
        assert_eq!(kept.len(), 2, "{d:?}");
        assert!(kept.contains(&"bob") && kept.contains(&"dee"), "{d:?}");
        // Delivered again, durably: no longer kept.
        d.acked(2, lost, "bob", at(0, 401, 21));
        assert!(d.for_shard(2).all(|(id, _)| id != lost));
    }

    #[test]
    fn shards_are_kept_apart() {
        let mut d = Deliveries::default();
        d.acked(1, DmId::new(), "ann", at(10, 8, 5));
        d.acked(3, DmId::new(), "bob", at(10, 12, 5));
        assert_eq!(d.shards(), vec![1]);
        assert!(d.has(1) && !d.has(3));
    }
}
