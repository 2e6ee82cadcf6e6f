//! Shard ownership by lease (durable mode): before a process replays a shard's
//! log and serves it, it takes the shard's lease, an entry `shard-<k>` of the
//! KV bucket `reddit-leases` created only if absent (compare and set), so of
//! two processes started in the same instant exactly one gets it. The holder
//! renews it every quarter of its TTL; the bucket's entries expire after the
//! TTL, so the lease of a process that died frees itself. A holder that finds
//! its lease taken stops serving at once; the log's expected-last-sequence
//! check stays the final fence against a second writer. A standby
//! (`--standby`) waits for the lease instead of refusing to start, keeping its
//! state warm meanwhile (the engine follows the log between attempts).

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// The KV bucket of shard leases.
pub const BUCKET: &str = "reddit-leases";

/// Who holds a lease (its value, JSON).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Holder {
    /// A random id of the holding process.
    pub instance: String,
    /// Its process id.
    pub pid: u32,
    /// Since when it holds the lease (Unix ms).
    pub since: i64,
}

/// Why a lease could not be taken or kept.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Someone else holds it.
    #[error("shard {shard}'s lease is held by instance {} (pid {})", holder.instance, holder.pid)]
    Held {
        /// The shard.
        shard: u32,
        /// Who holds it.
        holder: Holder,
    },
    /// JetStream failed.
    #[error("shard lease: {what}")]
    Nats {
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: reddit_shared::error::BoxError,
    },
}

fn nats(what: &'static str) -> impl Fn(async_nats::Error) -> LeaseError {
    move |source| LeaseError::Nats { what, source }
}

fn key(shard: u32) -> String {
    format!("shard-{shard}")
}

/// `standby.<shard>.<instance>`: a waiting standby, renewed like a lease.
fn standby_key(shard: u32, instance: &str) -> String {
    format!("standby.{shard}.{instance}")
}

/// Opens (or makes, with `replicas` copies) the lease bucket, whose entries
/// live `ttl`.
pub async fn bucket(
    js: &jetstream::Context,
    ttl: Duration,
    replicas: usize,
) -> Result<kv::Store, LeaseError> {
    if let Ok(store) = js.get_key_value(BUCKET).await {
        return Ok(store);
    }
    let config = kv::Config {
        bucket: BUCKET.to_owned(),
        description: "reddit-engine: who serves each shard (renewed, expiring)".to_owned(),
        history: 1,
        max_age: ttl,
        // Expiry leaves a marker, so that a waiting standby's watch sees it.
        limit_markers: Some(ttl.max(Duration::from_secs(1))),
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas.max(1),
        ..Default::default()
    };
    match js.create_key_value(config).await {
        Ok(store) => Ok(store),
        // Made by another process meanwhile.
        Err(e) => js
            .get_key_value(BUCKET)
            .await
            .map_err(|_| nats("cannot open the lease bucket")(e.into())),
    }
}

/// A lease held by this process.
pub struct Lease {
    store: kv::Store,
    shard: u32,
    holder: Holder,
    revision: u64,
    ttl: Duration,
}

impl Lease {
    /// Takes shard `shard`'s lease if it is free.
    pub async fn try_acquire(
        store: &kv::Store,
        shard: u32,
        holder: Holder,
        ttl: Duration,
    ) -> Result<Lease, LeaseError> {
        let body = serde_json::to_vec(&holder).unwrap_or_default();
        match store.create(key(shard), body.into()).await {
            Ok(revision) => Ok(Lease {
                store: store.clone(),
                shard,
                holder,
                revision,
                ttl,
            }),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                let current = store
                    .get(key(shard))
                    .await
                    .ok()
                    .flatten()
                    .and_then(|v| serde_json::from_slice(&v).ok())
                    .unwrap_or(Holder {
                        instance: "unknown".into(),
                        pid: 0,
                        since: 0,
                    });
                Err(LeaseError::Held {
                    shard,
                    holder: current,
                })
            }
            Err(e) => Err(nats("cannot take the lease")(e.into())),
        }
    }

    /// Says that `holder` stands by for shard `shard` (an entry next to the
    /// lease, expiring like it: call again within the TTL).
    pub async fn announce_standby(store: &kv::Store, shard: u32, holder: &Holder) {
        let body = serde_json::to_vec(holder).unwrap_or_default();
        let _ = store
            .put(standby_key(shard, &holder.instance), body.into())
            .await;
    }

    /// Takes the standby entry of `holder` away (it took the lease, or stops).
    pub async fn withdraw_standby(store: &kv::Store, shard: u32, holder: &Holder) {
        let _ = store.delete(standby_key(shard, &holder.instance)).await;
    }

    /// Returns when shard `shard`'s lease changes (released, expired, taken),
    /// or after a quarter of the TTL, whichever is first.
    pub async fn wait_for_change(store: &kv::Store, shard: u32, ttl: Duration) {
        let Ok(mut watch) = store.watch(key(shard)).await else {
            tokio::time::sleep(ttl / 4).await;
            return;
        };
        tokio::select! {
            _ = watch.next() => {}
            _ = tokio::time::sleep(ttl / 4) => {}
        }
    }

    /// Who holds it.
    pub fn holder(&self) -> &Holder {
        &self.holder
    }

    /// Renews the lease every quarter of its TTL until `stop`; sends on `lost`
    /// (and returns the lease for [`release`](Self::release)) if someone else
    /// took it.
    pub async fn keep(
        mut self,
        mut stop: watch::Receiver<bool>,
        lost: oneshot::Sender<String>,
    ) -> Lease {
        let every = (self.ttl / 4).max(Duration::from_millis(50));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => return self,
                _ = tick.tick() => {}
            }
            match self.renew().await {
                Ok(()) => {}
                Err(Some(why)) => {
                    let _ = lost.send(why);
                    return self;
                }
                // NATS unreachable: try again at the next tick.
                Err(None) => {}
            }
        }
    }

    /// `Err(Some(why))`: the lease is someone else's; `Err(None)`: try again.
    async fn renew(&mut self) -> Result<(), Option<String>> {
        let body = serde_json::to_vec(&self.holder).unwrap_or_default();
        match self
            .store
            .update(key(self.shard), body.clone().into(), self.revision)
            .await
        {
            Ok(revision) => {
                self.revision = revision;
                Ok(())
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                // Expired while NATS was unreachable, or taken. Free: take it
                // again (the log's sequence check still fences a second writer).
                match self.store.create(key(self.shard), body.into()).await {
                    Ok(revision) => {
                        tracing::warn!(shard = self.shard, "the shard's lease had expired; taken again");
                        self.revision = revision;
                        Ok(())
                    }
                    Err(c) if c.kind() == kv::CreateErrorKind::AlreadyExists => Err(Some(format!(
                        "shard {}'s lease was taken by another process (this one could not renew it within {:?})",
                        self.shard, self.ttl
                    ))),
                    Err(c) => {
                        tracing::warn!(shard = self.shard, error = %c, "cannot renew the lease");
                        Err(None)
                    }
                }
            }
            Err(e) => {
                tracing::warn!(shard = self.shard, error = %e, "cannot renew the lease");
                Err(None)
            }
        }
    }

    /// Counts shard `shard`'s waiting standbys into `count` (their entries
    /// expire within a TTL of their death) until `stop`.
    pub async fn count_standbys(
        store: kv::Store,
        shard: u32,
        count: std::sync::Arc<std::sync::atomic::AtomicU64>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut live = std::collections::HashSet::new();
        let Ok(mut watch) = store.watch_with_history(format!("standby.{shard}.*")).await else {
            return;
        };
        loop {
            let next = tokio::select! {
                _ = stop.changed() => return,
                n = watch.next() => n,
            };
            let Some(Ok(entry)) = next else { return };
            if matches!(entry.operation, kv::Operation::Put) {
                live.insert(entry.key);
            } else {
                live.remove(&entry.key);
            }
            count.store(live.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The bucket it lives in.
    pub fn store(&self) -> &kv::Store {
        &self.store
    }

    /// Gives the lease up (at shutdown, after the last log record), so that a
    /// standby takes over at once instead of after the TTL.
    pub async fn release(self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.store
                .delete_expect_revision(key(self.shard), Some(self.revision)),
        )
        .await;
    }
}
