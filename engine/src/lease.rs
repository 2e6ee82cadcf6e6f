//! Shard ownership by lease (durable mode): before a process replays a shard's
//! log and serves it, it takes the shard's lease, an entry `shard-<k>` of the
//! KV bucket `reddit-leases` created only if absent (compare and set), so of
//! two processes started in the same instant exactly one gets it. The holder
//! renews it every quarter of its TTL; the bucket's entries expire after the
//! TTL, so the lease of a process that died frees itself.
//!
//! The holder fences itself ([`Tenure`]): it answers requests only until
//! `sent + TTL - TTL/5`, where `sent` is when it sent its last renewal that
//! JetStream confirmed. The entry was stored after `sent`, so it expires
//! after that instant, and nobody else can take the lease before it. A holder
//! cut off from the JetStream majority (a partitioned NATS node) therefore
//! stops serving before a standby on the other side may start; it resumes
//! only if its own lease is still there, or if it takes the lease again and
//! the log shows that nobody wrote meanwhile. A holder that finds its lease
//! taken stops for good. The log's expected-last-sequence check stays the
//! final fence against a second writer.
//!
//! A standby (`--standby`) waits for the lease instead of refusing to start,
//! keeping its state warm meanwhile (the engine follows the log between
//! attempts) and publishing how far it has read (`standby.<k>.<instance>`), so
//! the owner can report each standby's lag.

use async_nats::jetstream::{self, kv};
use futures::future::BoxFuture;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// The KV bucket of shard leases.
pub const BUCKET: &str = "reddit-leases";

/// Who holds a lease, or stands by for it (the entries' value, JSON).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Holder {
    /// A random id of the process.
    pub instance: String,
    /// Its process id.
    pub pid: u32,
    /// Since when it holds the lease or stands by (Unix ms).
    pub since: i64,
    /// Its host name.
    #[serde(default)]
    pub host: String,
    /// A standby's last applied log record (0 in a lease).
    #[serde(default)]
    pub seq: u64,
    /// The TTL its holder stops serving within (a standby judges the lease
    /// stale by it, not by its own setting).
    #[serde(default)]
    pub ttl_ms: u64,
}

impl Holder {
    /// This process, with a fresh instance id.
    pub fn this_process() -> Self {
        Holder {
            instance: uuid::Uuid::now_v7().simple().to_string(),
            pid: std::process::id(),
            since: reddit_shared::now_millis(),
            host: host_name(),
            seq: 0,
            ttl_ms: 0,
        }
    }

    fn body(&self) -> bytes::Bytes {
        serde_json::to_vec(self).unwrap_or_default().into()
    }

    fn parse(value: &[u8]) -> Option<Holder> {
        serde_json::from_slice(value).ok()
    }
}

/// This machine's host name (empty if unknown), as leases, standby entries
/// and the service metadata report it.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
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
/// live `ttl`, and returns it with the TTL to hold leases under: `ttl`, or
/// the bucket's own if an earlier process made it shorter (JetStream expires
/// entries by the bucket's, so a holder must stop serving within it).
pub async fn bucket(
    js: &jetstream::Context,
    ttl: Duration,
    replicas: usize,
) -> Result<(kv::Store, Duration), LeaseError> {
    let store = open_bucket(js, ttl, replicas).await?;
    let max_age = store
        .status()
        .await
        .map_err(|e| nats("cannot read the lease bucket's settings")(e.into()))?
        .max_age();
    if !max_age.is_zero() && max_age < ttl {
        tracing::warn!(
            requested_ms = ttl.as_millis() as u64,
            bucket_ms = max_age.as_millis() as u64,
            "the lease bucket expires entries sooner than --lease-ttl-ms; holding leases under the bucket's TTL"
        );
        return Ok((store, max_age));
    }
    Ok((store, ttl))
}

async fn open_bucket(
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

/// How long this process may still act as a shard's owner, and what it knows
/// of its lease and standbys (for `shard.stats`). Shared by the lease keeper,
/// which extends it, and the request loop, which checks it per request.
#[derive(Debug)]
pub struct Tenure {
    epoch: Instant,
    /// Milliseconds after `epoch` until which requests are served.
    until_ms: AtomicU64,
    /// Milliseconds after `epoch` of the last confirmed renewal.
    renewed_ms: AtomicU64,
    ttl: Duration,
    holder: Holder,
    standbys: Mutex<BTreeMap<String, Holder>>,
}

impl Tenure {
    /// A tenure of `holder` under leases of `ttl`, not yet valid.
    pub fn new(holder: Holder, ttl: Duration) -> Self {
        Self {
            epoch: Instant::now(),
            until_ms: AtomicU64::new(0),
            renewed_ms: AtomicU64::new(0),
            ttl,
            holder,
            standbys: Mutex::new(BTreeMap::new()),
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// How much of the TTL the holder keeps in hand: it stops serving this
    /// long before the lease could expire (slack for the NATS nodes' clocks
    /// and for a request already being answered).
    pub fn margin(&self) -> Duration {
        self.ttl / 5
    }

    /// A renewal sent at `sent` was confirmed: serve until `sent + TTL -
    /// margin`.
    pub fn confirmed(&self, sent: Instant) {
        let until = self.ms(sent + self.ttl - self.margin());
        self.until_ms.fetch_max(until, Ordering::AcqRel);
        self.renewed_ms.fetch_max(self.ms(sent), Ordering::AcqRel);
    }

    /// Whether the lease is surely still this process's.
    pub fn holds(&self) -> bool {
        self.ms(Instant::now()) < self.until_ms.load(Ordering::Acquire)
    }

    /// Milliseconds since the last confirmed renewal was sent.
    pub fn renewed_ms_ago(&self) -> u64 {
        self.ms(Instant::now())
            .saturating_sub(self.renewed_ms.load(Ordering::Acquire))
    }

    /// The lease's TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Who holds it (this process).
    pub fn holder(&self) -> &Holder {
        &self.holder
    }

    /// The standbys waiting for this shard, by instance, with the last log
    /// record each has applied.
    pub fn standbys(&self) -> Vec<Holder> {
        self.standbys
            .lock()
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Follows shard `shard`'s standby entries (each expires within a TTL of
    /// its standby's death) until `stop`.
    pub async fn watch_standbys(
        self: Arc<Self>,
        store: kv::Store,
        shard: u32,
        mut stop: watch::Receiver<bool>,
    ) {
        let Ok(mut watch) = store.watch_with_history(format!("standby.{shard}.*")).await else {
            return;
        };
        loop {
            let next = tokio::select! {
                _ = stop.changed() => return,
                n = watch.next() => n,
            };
            let Some(Ok(entry)) = next else { return };
            let Ok(mut standbys) = self.standbys.lock() else {
                return;
            };
            match Holder::parse(&entry.value) {
                Some(h) if matches!(entry.operation, kv::Operation::Put) => {
                    standbys.insert(entry.key, h);
                }
                _ => {
                    standbys.remove(&entry.key);
                }
            }
        }
    }
}

/// Checks, after this process took its lease again following an expiry,
/// that nobody wrote the shard's log meanwhile: `Some(true)` safe to serve
/// on, `Some(false)` someone did, `None` cannot tell now (the log did not
/// answer): asked again at the next renewal, not serving meanwhile.
pub type Verify = Box<dyn Fn() -> BoxFuture<'static, Option<bool>> + Send + Sync>;

/// What a waiting standby saw of the lease.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// Released, or expired (JetStream's marker): take it now.
    Freed,
    /// Not renewed for a whole TTL by the clock (JetStream removes expired
    /// entries up to a few hundred milliseconds late): its holder stopped
    /// serving long ago; remove exactly this revision, then take it.
    Stale(u64),
    /// Held and renewed.
    Held,
}

/// Follows a shard's lease entry for a waiting standby.
pub struct LeaseWatch {
    store: kv::Store,
    shard: u32,
    ttl: Duration,
    watch: Option<kv::Watch>,
    /// The last renewal seen: its revision, when JetStream stored it (Unix
    /// ns), and its holder's TTL.
    last: Option<(u64, i128, Duration)>,
}

fn unix_nanos() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

impl LeaseWatch {
    /// Starts watching shard `shard`'s lease (before the first attempt to take
    /// it, so that no release or expiry is missed).
    pub async fn new(store: &kv::Store, shard: u32, ttl: Duration) -> Self {
        let mut w = Self {
            store: store.clone(),
            shard,
            ttl,
            watch: None,
            last: None,
        };
        w.rewatch().await;
        w
    }

    async fn rewatch(&mut self) {
        // With the current entry first, so that its age is known at once.
        self.watch = self.store.watch_with_history(key(self.shard)).await.ok();
    }

    /// Waits at most `max` for the lease to be freed or to go stale.
    pub async fn wait(&mut self, max: Duration) -> Seen {
        let deadline = tokio::time::Instant::now() + max;
        loop {
            if self.watch.is_none() {
                self.rewatch().await;
            }
            // When the last renewal seen runs out by the clock.
            let stale_at = self.last.map(|(_, created, ttl)| {
                let left = created + ttl.as_nanos() as i128 - unix_nanos();
                tokio::time::Instant::now()
                    + Duration::from_nanos(u64::try_from(left.max(0)).unwrap_or(u64::MAX))
            });
            let wake = stale_at.map_or(deadline, |s| s.min(deadline));
            let Some(watch) = &mut self.watch else {
                tokio::time::sleep_until(wake).await;
                return self.timed_out(stale_at);
            };
            match tokio::time::timeout_at(wake, watch.next()).await {
                Err(_) => return self.timed_out(stale_at),
                Ok(Some(Ok(e))) if matches!(e.operation, kv::Operation::Put) => {
                    let ttl = Holder::parse(&e.value)
                        .map(|h| h.ttl_ms)
                        .filter(|ms| *ms > 0)
                        .map_or(self.ttl, Duration::from_millis);
                    self.last = Some((e.revision, e.created.unix_timestamp_nanos(), ttl));
                }
                Ok(Some(Ok(_))) => {
                    self.last = None;
                    return Seen::Freed;
                }
                // The watch broke (NATS reconnecting): make a new one.
                Ok(_) => {
                    self.watch = None;
                    if tokio::time::Instant::now() >= deadline {
                        return Seen::Held;
                    }
                }
            }
        }
    }

    fn timed_out(&mut self, stale_at: Option<tokio::time::Instant>) -> Seen {
        match (self.last, stale_at) {
            (Some((revision, ..)), Some(at)) if tokio::time::Instant::now() >= at => {
                self.last = None;
                Seen::Stale(revision)
            }
            _ => Seen::Held,
        }
    }

    /// Removes the stale lease entry of `revision` (only that one: a renewal
    /// since then makes this a no-op), so that it can be taken.
    pub async fn remove_stale(&mut self, revision: u64) -> bool {
        self.store
            .delete_expect_revision(key(self.shard), Some(revision))
            .await
            .is_ok()
    }
}

/// A lease held by this process.
pub struct Lease {
    store: kv::Store,
    shard: u32,
    revision: u64,
    tenure: Arc<Tenure>,
    /// Taken again after an expiry, and not yet found safe to serve on
    /// ([`Verify`]).
    unverified: bool,
}

impl Lease {
    /// Takes shard `shard`'s lease if it is free.
    pub async fn try_acquire(
        store: &kv::Store,
        shard: u32,
        holder: Holder,
        ttl: Duration,
    ) -> Result<Lease, LeaseError> {
        let sent = Instant::now();
        let lease = Holder {
            seq: 0,
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            ..holder
        };
        match store.create(key(shard), lease.body()).await {
            Ok(revision) => {
                let tenure = Arc::new(Tenure::new(lease, ttl));
                tenure.confirmed(sent);
                Ok(Lease {
                    store: store.clone(),
                    shard,
                    revision,
                    tenure,
                    unverified: false,
                })
            }
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                let current = store
                    .get(key(shard))
                    .await
                    .ok()
                    .flatten()
                    .and_then(|v| Holder::parse(&v))
                    .unwrap_or(Holder {
                        instance: "unknown".into(),
                        pid: 0,
                        since: 0,
                        host: String::new(),
                        seq: 0,
                        ttl_ms: 0,
                    });
                Err(LeaseError::Held {
                    shard,
                    holder: current,
                })
            }
            Err(e) => Err(nats("cannot take the lease")(e.into())),
        }
    }

    /// Says that `holder` stands by for shard `shard`, having applied the log
    /// up to `holder.seq` (an entry next to the lease, expiring like it: call
    /// again within the TTL).
    pub async fn announce_standby(store: &kv::Store, shard: u32, holder: &Holder) {
        let _ = store
            .put(standby_key(shard, &holder.instance), holder.body())
            .await;
    }

    /// Takes the standby entry of `holder` away (it took the lease, or stops).
    pub async fn withdraw_standby(store: &kv::Store, shard: u32, holder: &Holder) {
        let _ = store.delete(standby_key(shard, &holder.instance)).await;
    }

    /// Renews through `client` from now on (a connection of the keeper's
    /// own); keeps the current one if the bucket cannot be opened there.
    pub async fn rebind(&mut self, client: async_nats::Client) {
        match jetstream::new(client).get_key_value(BUCKET).await {
            Ok(store) => self.store = store,
            Err(e) => tracing::warn!(error = %e, "the lease keeper shares the log's connection"),
        }
    }

    /// What the request loop checks, and `shard.stats` reports.
    pub fn tenure(&self) -> &Arc<Tenure> {
        &self.tenure
    }

    /// Renews the lease every quarter of its TTL until `stop`, extending the
    /// [`Tenure`] with each confirmed renewal. Sends on `lost` (and returns
    /// the lease for [`release`](Self::release)) if someone else took it, or
    /// if it had expired and `verify` finds that the log moved on meanwhile.
    pub async fn keep(
        mut self,
        verify: Verify,
        mut stop: watch::Receiver<bool>,
        lost: oneshot::Sender<String>,
    ) -> Lease {
        let every = (self.tenure.ttl / 4).max(Duration::from_millis(50));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut fenced = false;
        loop {
            tokio::select! {
                _ = stop.changed() => return self,
                _ = tick.tick() => {}
            }
            let sent = Instant::now();
            // Within the tick: a renewal stuck behind a partition must not
            // hold up the next one.
            match tokio::time::timeout(every, self.renew(&verify)).await {
                Ok(Ok(())) => {
                    self.tenure.confirmed(sent);
                    if fenced {
                        fenced = false;
                        tracing::warn!(
                            shard = self.shard,
                            "the shard's lease is confirmed again; serving"
                        );
                    }
                }
                Ok(Err(Some(why))) => {
                    let _ = lost.send(why);
                    return self;
                }
                // NATS unreachable or slow: try again at the next tick.
                Ok(Err(None)) | Err(_) => {
                    if !fenced && !self.tenure.holds() {
                        fenced = true;
                        tracing::warn!(
                            shard = self.shard,
                            last_renewed_ms_ago = self.tenure.renewed_ms_ago(),
                            "cannot renew the shard's lease: not serving until it is confirmed (is this process cut off from the JetStream majority?)"
                        );
                    }
                }
            }
        }
    }

    /// `Err(Some(why))`: the lease is someone else's; `Err(None)`: try again.
    async fn renew(&mut self, verify: &Verify) -> Result<(), Option<String>> {
        let body = self.tenure.holder.body();
        let shard = self.shard;
        match self
            .store
            .update(key(shard), body.clone(), self.revision)
            .await
        {
            Ok(revision) => {
                self.revision = revision;
                return self.verified(verify).await;
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {}
            Err(e) => {
                tracing::debug!(shard, error = %e, "cannot renew the lease");
                return Err(None);
            }
        }
        // Not the revision this process last wrote: a renewal that timed out
        // here but was stored, an expiry, or another holder.
        let current = match self.store.entry(key(shard)).await {
            Ok(current) => current,
            Err(e) => {
                tracing::debug!(shard, error = %e, "cannot read the lease");
                return Err(None);
            }
        };
        let seen = current.as_ref().map(|e| {
            (
                e.revision,
                matches!(e.operation, kv::Operation::Put),
                &e.value[..],
            )
        });
        match judge(seen, &self.tenure.holder.instance, self.revision) {
            Found::Mine(revision) => {
                self.revision = revision;
                match self.store.update(key(shard), body, self.revision).await {
                    Ok(revision) => {
                        self.revision = revision;
                        self.verified(verify).await
                    }
                    Err(_) => Err(None),
                }
            }
            Found::Taken(by) => Err(Some(format!(
                "shard {shard}'s lease was taken by {by} (this process could not renew it within {:?})",
                self.tenure.ttl
            ))),
            Found::Stale(revision) => {
                tracing::debug!(
                    shard,
                    seen = revision,
                    mine = self.revision,
                    "read the lease from a replica behind this process's last renewal; asking again"
                );
                Err(None)
            }
            // Expired (or released) while NATS was out of reach.
            Found::Gone => match self.store.create(key(shard), body).await {
                Ok(revision) => {
                    self.revision = revision;
                    // The lease is this process's again; serve only if the
                    // state it holds is still the log's.
                    self.unverified = true;
                    self.verified(verify).await
                }
                // The entry exists after all: taken by another process, or
                // the read came from a replica that had not caught up (it
                // showed nothing). The next round reads it again and tells.
                Err(c) if c.kind() == kv::CreateErrorKind::AlreadyExists => Err(None),
                Err(c) => {
                    tracing::debug!(shard, error = %c, "cannot take the lease again");
                    Err(None)
                }
            },
        }
    }

    /// `Ok` unless the lease was taken again after an expiry and `verify`
    /// has not yet found the log unmoved: `Err(None)` while it cannot tell
    /// (asked again at the next renewal, which keeps the lease meanwhile),
    /// `Err(Some(why))` once it finds that someone wrote the log.
    async fn verified(&mut self, verify: &Verify) -> Result<(), Option<String>> {
        if !self.unverified {
            return Ok(());
        }
        let shard = self.shard;
        match verify().await {
            Some(true) => {
                self.unverified = false;
                tracing::warn!(
                    shard,
                    "the shard's lease had expired; taken again (the log did not move meanwhile)"
                );
                Ok(())
            }
            Some(false) => Err(Some(format!(
                "shard {shard}'s lease expired while this process could not renew it, and the log moved on meanwhile"
            ))),
            None => {
                tracing::debug!(
                    shard,
                    "cannot read the log to check it did not move while the lease had expired; asking again"
                );
                Err(None)
            }
        }
    }

    /// The bucket it lives in.
    pub fn store(&self) -> &kv::Store {
        &self.store
    }

    /// Gives the lease up (at shutdown, after the last log record; or when
    /// this process stops serving), so that a standby takes over at once
    /// instead of after the TTL.
    pub async fn release(self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.store
                .delete_expect_revision(key(self.shard), Some(self.revision)),
        )
        .await;
    }
}

/// What a renewal refused for its revision makes of the lease entry it read
/// next.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// This process's own entry, at this revision: a renewal that timed out
    /// here but was stored.
    Mine(u64),
    /// Another process's entry, newer than this process's last renewal: the
    /// lease is theirs (the text names them).
    Taken(String),
    /// An entry older than this process's last renewal (its revision): the
    /// read was answered by a replica that has not caught up. Reads of the
    /// bucket are direct gets, which any replica answers, e.g. one just back
    /// from a partition. Nothing follows from it; ask again.
    Stale(u64),
    /// No entry, or the marker of its expiry or removal.
    Gone,
}

/// Judges `seen` (revision, whether a put, value) against this process's
/// `instance` and the revision of its last renewal. Revisions are the
/// stream's sequence numbers, so an entry written after this process's last
/// renewal has a higher one.
fn judge(seen: Option<(u64, bool, &[u8])>, instance: &str, last_revision: u64) -> Found {
    match seen {
        Some((revision, _, _)) if revision < last_revision => Found::Stale(revision),
        Some((revision, true, value)) => match Holder::parse(value) {
            Some(h) if h.instance == instance => Found::Mine(revision),
            Some(h) => Found::Taken(format!("instance {} (pid {})", h.instance, h.pid)),
            None => Found::Taken("another process".to_owned()),
        },
        _ => Found::Gone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(instance: &str, pid: u32) -> Vec<u8> {
        serde_json::to_vec(&Holder {
            instance: instance.to_owned(),
            pid,
            since: 1,
            host: String::new(),
            seq: 0,
            ttl_ms: 1000,
        })
        .unwrap()
    }

    /// The failure CI met: after a partition healed, the new owner's renewal
    /// was refused and its read of the lease came from the replica that had
    /// been cut off, which still held the old owner's entry. Older than the
    /// new owner's own renewal, it proves nothing: the owner asks again
    /// instead of stopping (it had stopped, and so had the old owner: no
    /// shard served).
    #[test]
    fn an_entry_older_than_the_last_renewal_is_a_stale_read_not_a_takeover() {
        let old_owner = holder("old", 1);
        assert_eq!(
            judge(Some((7, true, &old_owner)), "new", 9),
            Found::Stale(7)
        );
        assert_eq!(judge(Some((7, false, b"")), "new", 9), Found::Stale(7));
    }

    #[test]
    fn a_newer_entry_of_another_process_is_a_takeover() {
        let other = holder("other", 42);
        assert_eq!(
            judge(Some((10, true, &other)), "mine", 9),
            Found::Taken("instance other (pid 42)".to_owned())
        );
        assert_eq!(
            judge(Some((10, true, b"not json")), "mine", 9),
            Found::Taken("another process".to_owned())
        );
    }

    #[test]
    fn this_processs_own_newer_entry_is_a_renewal_that_was_stored() {
        let mine = holder("mine", 3);
        assert_eq!(judge(Some((10, true, &mine)), "mine", 9), Found::Mine(10));
    }

    #[test]
    fn no_entry_or_a_newer_marker_means_the_lease_is_gone() {
        assert_eq!(judge(None, "mine", 9), Found::Gone);
        assert_eq!(judge(Some((10, false, b"")), "mine", 9), Found::Gone);
    }
}
