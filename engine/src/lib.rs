//! A shard worker of the Reddit engine: owns shard `k` of `n` and serves it over NATS.
//!
//! - [`run`] connects, checks that no live process owns the shard and that the
//!   running shards agree on the cluster size and secret, registers the NATS micro
//!   service `reddit-engine`, and serves until `shutdown` resolves.
//! - [`state`]: the shard state machine (no I/O).
//! - [`server`]: the request loop and the actor that owns the state.
//! - [`cross_shard`]: requests to other shards and the sync outbox.
//! - [`wal`]: the write-ahead log in JetStream (group commit, replay, snapshots).
//! - [`fields`]: how log records and snapshots write structs (by position).
//! - [`replies`]: the reply cache that answers retried writes.
//! - [`auth`]: tokens and login challenges.
//! - [`callout`]: the NATS auth callout (who a connection is, and what it may do).

pub mod auth;
pub mod bus;
pub mod callout;
pub mod cross_shard;
pub mod fields;
pub mod lease;
pub mod memory;
pub mod pace;
pub mod replies;
pub mod reply_names;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod wal;

use bus::NatsBus;
use cross_shard::Peers;
use reddit_shared::error::{BoxError, Chain};
use reddit_shared::protocol::rpc::HelloRequest;
use reddit_shared::{subject, PROTOCOL_VERSION, SERVICE_NAME};
use server::{Actor, Ctx, Metrics};
use state::ShardState;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};

/// Longest a shard spends answering what it took and flushing its outbox after it
/// is asked to stop.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// Where a shard keeps its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Storage {
    /// In memory, with every write appended to a JetStream stream before it is
    /// answered; a restarted shard replays its snapshot and log.
    Jetstream,
    /// In memory only: a restarted shard starts empty (for pure-speed runs).
    Memory,
}

/// How a shard process is configured.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the state is kept.
    pub storage: Storage,
    /// Events between snapshots (0: only at shutdown).
    pub snapshot_every: u64,
    /// Bytes per second a periodic snapshot is encoded at, then stored at (0:
    /// as fast as possible): spread out, a snapshot does not take the
    /// machine from the requests for seconds at a time.
    pub snapshot_bytes_per_second: u64,
    /// Log appends a shard keeps in flight at once (durable mode; 1: one at a
    /// time). More overlap JetStream's fsyncs and round trips.
    pub log_pipeline: usize,
    /// Most records each new segment (stream) of a shard's log holds
    /// (durable mode). A snapshot deletes the segments it covers whole.
    pub log_segment_records: u64,
    /// Bytes each new segment of a shard's log is sized for (its records
    /// counted from the average record of late).
    pub log_segment_bytes: u64,
    /// How long a shard's next log record may wait to grow to the size of the
    /// one before (durable mode; zero: appended as soon as possible).
    pub log_linger: Duration,
    /// How long a log record holding only writes nobody waits for (those
    /// acknowledged before they are logged: `internal.sync`,
    /// `internal.dm.deliver`) may wait for more (durable mode; zero: as long
    /// as `log_linger`). Their senders keep them until they are durable.
    pub log_unwaited_linger: Duration,
    /// Reads wait until every write before them is durable (durable mode):
    /// no reply shows a write a crash could lose. Off: reads are answered at
    /// once.
    pub read_barrier: bool,
    /// Replies of idempotent writes remembered for retries: at least the
    /// last this many, at most twice as many ([`replies::ReplyCache`]).
    pub reply_cache: usize,
    /// NATS server URL(s), comma-separated; credentials may be in the URL.
    pub nats_url: String,
    /// This shard's number, `0..shards`.
    pub shard: u32,
    /// Number of shards in the cluster.
    pub shards: u32,
    /// The cluster's shared token secret.
    pub secret: String,
    /// Requests that may wait for the shard before new ones get `503`.
    pub queue_capacity: usize,
    /// Sync items that may wait for other shards before writes get `503`.
    pub outbox_capacity: usize,
    /// Cross-shard tasks (feeds, DMs, reposts, joins) in flight at once.
    pub max_cross_shard: usize,
    /// Timeout of each request to another shard.
    pub peer_timeout: Duration,
    /// How long another shard's feed candidates for a subreddit serve this
    /// shard's feeds before they are asked for again (zero: every feed asks;
    /// [`server::feed_cache`]).
    pub feed_cache: Duration,
    /// How long a DM another shard acknowledged before its record there was
    /// durable may stay unconfirmed before this shard delivers it again to
    /// ask (durable mode; zero: only when either shard restarts). Another
    /// delivery to that shard confirms it sooner; on a quiet system none
    /// comes.
    pub dm_recheck: Duration,
    /// Whether the log line of a slow actor turn also gives the CPU time the
    /// actor's thread spent in it (`cpu_ms`: the rest it waited for a core).
    /// Costs two system calls per turn, so it is off unless diagnosing.
    pub turn_cpu: bool,
    /// Lifetime of a login token.
    pub token_ttl: Duration,
    /// Development mode: allows the built-in development secret and other known
    /// or short secrets. Never for a system others can reach.
    pub dev: bool,
    /// The NATS user of the connection that receives requests (its permissions
    /// allow publishing to reply inboxes only). Used when the NATS URL carries
    /// credentials: same password, this username.
    pub serve_user: String,
    /// The NATS user of the connection that publishes replies and pushes and
    /// calls other shards (no access to the log or the JetStream API). Same
    /// password as the URL's user.
    pub work_user: String,
    /// Messages the request subscription may buffer before NATS drops some (a slow
    /// consumer). Far above the queue, so a burst gets `503`s, not silence.
    pub subscription_capacity: usize,
    /// Wait for the shard's lease instead of refusing to start when another
    /// process holds it (durable mode; [`lease`]).
    pub standby: bool,
    /// How long a shard's lease outlives its holder (renewed every quarter).
    pub lease_ttl: Duration,
    /// Copies of the log, the snapshots and the leases that JetStream keeps (1
    /// on a single server, 3 on a 3-node cluster: an append is then
    /// acknowledged once a majority has it).
    pub replicas: usize,
}

/// Secrets that are published (in this repository's history or docs) and so sign
/// nothing outside development: the engine refuses them without `--dev`.
pub const KNOWN_SECRETS: &[&str] = &[
    DEV_SECRET,
    "change-me-in-production",
    "reddit-dev-secret-change-me",
    "test-secret",
    "secret",
    "changeme",
];

/// The development secret used by `--dev` when no secret is given.
pub const DEV_SECRET: &str = "reddit-dev-secret-not-for-production";

/// Shortest secret accepted without `--dev`, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

/// The defaults of [`Config`] and of `reddit-engine`'s flags (one place).
pub mod defaults {
    /// [`Config::snapshot_every`](super::Config::snapshot_every).
    pub const SNAPSHOT_EVERY: u64 = 1_000_000;
    /// [`Config::snapshot_bytes_per_second`](super::Config::snapshot_bytes_per_second),
    /// in MiB per second.
    pub const SNAPSHOT_RATE_MIB: u64 = 8;
    /// [`Config::log_pipeline`](super::Config::log_pipeline).
    pub const LOG_PIPELINE: usize = crate::server::journal::DEFAULT_PIPELINE;
    /// [`Config::log_segment_records`](super::Config::log_segment_records).
    pub const LOG_SEGMENT_RECORDS: u64 = crate::wal::DEFAULT_SEGMENT_RECORDS;
    /// [`Config::log_segment_bytes`](super::Config::log_segment_bytes), in MiB.
    pub const LOG_SEGMENT_MIB: u64 = crate::wal::DEFAULT_SEGMENT_BYTES >> 20;
    /// [`Config::log_linger`](super::Config::log_linger), in microseconds.
    pub const LOG_LINGER_US: u64 = 500;
    /// [`Config::log_unwaited_linger`](super::Config::log_unwaited_linger), in milliseconds.
    pub const LOG_UNWAITED_LINGER_MS: u64 = 20;
    /// [`Config::reply_cache`](super::Config::reply_cache).
    pub const REPLY_CACHE: usize = crate::replies::DEFAULT_CAPACITY;
    /// [`Config::queue_capacity`](super::Config::queue_capacity).
    pub const QUEUE_CAPACITY: usize = 8192;
    /// [`Config::outbox_capacity`](super::Config::outbox_capacity).
    pub const OUTBOX_CAPACITY: usize = 65_536;
    /// [`Config::max_cross_shard`](super::Config::max_cross_shard).
    pub const MAX_CROSS_SHARD: usize = 4096;
    /// [`Config::peer_timeout`](super::Config::peer_timeout), in milliseconds.
    pub const PEER_TIMEOUT_MS: u64 = 2000;
    /// [`Config::feed_cache`](super::Config::feed_cache), in milliseconds.
    pub const FEED_CACHE_MS: u64 = 1000;
    /// [`Config::dm_recheck`](super::Config::dm_recheck), in milliseconds.
    pub const DM_RECHECK_MS: u64 = 1000;
    /// [`Config::token_ttl`](super::Config::token_ttl), in seconds.
    pub const TOKEN_TTL_SECS: u64 = 24 * 3600;
    /// [`Config::subscription_capacity`](super::Config::subscription_capacity).
    pub const SUBSCRIPTION_CAPACITY: usize = 1 << 18;
    /// [`Config::lease_ttl`](super::Config::lease_ttl), in milliseconds.
    pub const LEASE_TTL_MS: u64 = 1000;
}

/// The default [`Config::serve_user`].
pub const SERVE_USER: &str = "engine-serve";

/// The default [`Config::work_user`].
pub const WORK_USER: &str = "engine-work";

impl Config {
    /// A configuration with default limits.
    pub fn new(
        nats_url: impl Into<String>,
        shard: u32,
        shards: u32,
        secret: impl Into<String>,
    ) -> Self {
        Self {
            storage: Storage::Jetstream,
            snapshot_every: defaults::SNAPSHOT_EVERY,
            snapshot_bytes_per_second: defaults::SNAPSHOT_RATE_MIB << 20,
            log_pipeline: defaults::LOG_PIPELINE,
            log_segment_records: defaults::LOG_SEGMENT_RECORDS,
            log_segment_bytes: defaults::LOG_SEGMENT_MIB << 20,
            log_linger: Duration::from_micros(defaults::LOG_LINGER_US),
            log_unwaited_linger: Duration::from_millis(defaults::LOG_UNWAITED_LINGER_MS),
            read_barrier: false,
            reply_cache: defaults::REPLY_CACHE,
            nats_url: nats_url.into(),
            shard,
            shards,
            secret: secret.into(),
            queue_capacity: defaults::QUEUE_CAPACITY,
            outbox_capacity: defaults::OUTBOX_CAPACITY,
            max_cross_shard: defaults::MAX_CROSS_SHARD,
            peer_timeout: Duration::from_millis(defaults::PEER_TIMEOUT_MS),
            feed_cache: Duration::from_millis(defaults::FEED_CACHE_MS),
            dm_recheck: Duration::from_millis(defaults::DM_RECHECK_MS),
            turn_cpu: false,
            token_ttl: Duration::from_secs(defaults::TOKEN_TTL_SECS),
            dev: false,
            serve_user: SERVE_USER.to_owned(),
            work_user: WORK_USER.to_owned(),
            subscription_capacity: defaults::SUBSCRIPTION_CAPACITY,
            standby: false,
            lease_ttl: Duration::from_millis(defaults::LEASE_TTL_MS),
            replicas: 1,
        }
    }
}

/// Why a shard could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// NATS could not be reached.
    #[error(transparent)]
    Connect(#[from] reddit_shared::connect::ConnectError),
    /// Another live process serves this shard.
    #[error("shard {shard} is already served by a live process (service instance {instance}); refusing to start a second owner, which would split the shard's traffic")]
    AlreadyOwned {
        /// The shard.
        shard: u32,
        /// The other process's service instance id.
        instance: String,
    },
    /// The running shards were started with a different cluster size.
    #[error("shard {other_shard} is running with --shards {theirs}, but this process was started with --shards {ours}; all shards must agree")]
    ShardCountMismatch {
        /// The shard that disagrees.
        other_shard: u32,
        /// Its cluster size.
        theirs: u32,
        /// Ours.
        ours: u32,
    },
    /// The running shards use a different token secret.
    #[error("shard {other_shard} uses a different token secret; tokens would not verify across shards (set the same REDDIT_SECRET everywhere)")]
    SecretMismatch {
        /// The shard that disagrees.
        other_shard: u32,
    },
    /// A NATS operation failed.
    #[error("NATS: {what}")]
    Nats {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: Option<BoxError>,
    },
    /// The write-ahead log could not be used.
    #[error(transparent)]
    Wal(#[from] wal::WalError),
    /// The shard's lease could not be taken or was lost.
    #[error(transparent)]
    Lease(#[from] lease::LeaseError),
    /// Another process took the shard's lease: this one stopped serving.
    #[error("{0}; stopped serving")]
    LeaseLost(String),
}

impl EngineError {
    /// Whether restarting the process cannot help (a configuration or data error a
    /// person must fix), as opposed to a condition that may pass (NATS down,
    /// another owner still alive, a second writer).
    pub fn is_permanent(&self) -> bool {
        use wal::WalError as W;
        matches!(
            self,
            EngineError::Config(_)
                | EngineError::ShardCountMismatch { .. }
                | EngineError::SecretMismatch { .. }
                | EngineError::Wal(W::ShardCount { .. } | W::Gap { .. } | W::Corrupt { .. })
        )
    }
}

/// How long the auth callout waits for a user's shard (well inside nats-server's
/// 2 s authorization timeout).
const CALLOUT_PEER_TIMEOUT: Duration = Duration::from_millis(1500);

/// Refuses an empty secret, and without `--dev` a published or short one.
fn check_secret(config: &Config) -> Result<(), EngineError> {
    if config.secret.is_empty() {
        return Err(EngineError::Config(
            "the token secret must not be empty".into(),
        ));
    }
    if config.dev {
        return Ok(());
    }
    if KNOWN_SECRETS.contains(&config.secret.as_str()) {
        return Err(EngineError::Config(
            "REDDIT_SECRET is a published development value that anyone can forge tokens with; set a random one (scripts/gen-env.sh makes one), or pass --dev on a machine only you can reach".into(),
        ));
    }
    if config.secret.len() < MIN_SECRET_BYTES {
        return Err(EngineError::Config(format!(
            "REDDIT_SECRET is {} bytes; use at least {MIN_SECRET_BYTES} random bytes (scripts/gen-env.sh makes one), or pass --dev",
            config.secret.len()
        )));
    }
    Ok(())
}

/// A failed NATS step: `what` was being done, `e` is why.
fn nats_err<E: Into<BoxError>>(what: &'static str) -> impl FnOnce(E) -> EngineError {
    move |e| EngineError::Nats {
        what: what.to_owned(),
        source: Some(e.into()),
    }
}

/// Connects to NATS (credentials may be in the URL).
pub async fn connect(url: &str, name: &str) -> Result<async_nats::Client, EngineError> {
    reddit_shared::connect::connect(url, name)
        .await
        .map_err(EngineError::from)
}

/// Refuses to start next to a live owner of the same shard, or next to shards that
/// disagree about the cluster size or secret. Each probe is a request that either
/// gets an answer or, with nobody subscribed, an immediate no-responders reply.
async fn startup_checks(
    peers: &Peers,
    config: &Config,
    fingerprint: &str,
    leased: bool,
) -> Result<(), EngineError> {
    for other in 0..=config.shards {
        let hello = peers.call(other, &HelloRequest {}).await;
        let Ok(hello) = hello else { continue };
        // With the lease in hand, an old owner still answering is on its way
        // out (it stops serving when it cannot renew); the lease decides.
        if other == config.shard && hello.shards == config.shards && !leased {
            return Err(EngineError::AlreadyOwned {
                shard: other,
                instance: hello.instance,
            });
        }
        if hello.shards != config.shards {
            return Err(EngineError::ShardCountMismatch {
                other_shard: other,
                theirs: hello.shards,
                ours: config.shards,
            });
        }
        if hello.secret_fingerprint != fingerprint {
            return Err(EngineError::SecretMismatch { other_shard: other });
        }
    }
    Ok(())
}

/// Takes shard `config.shard`'s lease ([`lease`]). A standby rebuilds the
/// state first and follows the log while the lease is held elsewhere, and
/// returns that warm state with the lease; any other process refuses to start
/// next to a live owner, and waits out the lease of one that died (a restart
/// after a crash), probing meanwhile. `None`: `shutdown` came first.
async fn take_lease<F: Future<Output = ()>>(
    config: &Config,
    peers: &Peers,
    log_client: &async_nats::Client,
    log: &wal::Log,
    mut shutdown: std::pin::Pin<&mut F>,
) -> Result<Option<(lease::Lease, Option<wal::Recovered>)>, EngineError> {
    let js = async_nats::jetstream::new(log_client.clone());
    let (store, ttl) = lease::bucket(&js, config.lease_ttl, config.replicas).await?;
    let mut holder = lease::Holder::this_process();
    let shard = config.shard;
    let mut warm = if config.standby {
        let r = log.recover(config.reply_cache).await?;
        tracing::info!(
            shard,
            last_seq = r.last_seq,
            "standby: state loaded; waiting for the shard's lease"
        );
        Some(r)
    } else {
        None
    };
    // Watching from before the first attempt, so that a release or an expiry
    // between an attempt and the wait is not missed.
    let mut changes = lease::LeaseWatch::new(&store, shard, ttl).await;
    let mut seen: Option<String> = None;
    let mut failures = 0u64;
    loop {
        if let Some(r) = &warm {
            holder.seq = r.last_seq;
            lease::Lease::announce_standby(&store, shard, &holder).await;
        }
        let held = match lease::Lease::try_acquire(&store, shard, holder.clone(), ttl).await {
            Ok(taken) => {
                if warm.is_some() {
                    lease::Lease::withdraw_standby(&store, shard, &holder).await;
                }
                return Ok(Some((taken, warm)));
            }
            Err(lease::LeaseError::Held { holder: h, .. }) => Some(h),
            // JetStream busy or electing a leader (a node died, a partition):
            // try again.
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!(shard, failures, error = %Chain(&e), "cannot take the shard's lease now; retrying");
                }
                None
            }
        };
        if let Some(held) = held {
            failures = 0;
            if seen.as_deref() != Some(held.instance.as_str()) {
                tracing::info!(shard, holder = %held.instance, pid = held.pid, "the shard's lease is held");
                seen = Some(held.instance.clone());
            }
            if warm.is_none() {
                let owner = peers.call(shard, &HelloRequest {}).await;
                if owner.is_ok_and(|o| o.shards == config.shards) {
                    return Err(EngineError::AlreadyOwned {
                        shard,
                        instance: held.instance,
                    });
                }
            }
        }
        // Try again the moment the lease is freed; meanwhile follow the log
        // and renew the standby entry every quarter of the TTL.
        let seen = tokio::select! {
            seen = changes.wait(ttl / 4) => seen,
            () = &mut shutdown => {
                if warm.is_some() {
                    lease::Lease::withdraw_standby(&store, shard, &holder).await;
                }
                return Ok(None);
            }
        };
        match seen {
            lease::Seen::Freed => continue,
            lease::Seen::Stale(revision) => {
                if changes.remove_stale(revision).await {
                    tracing::info!(
                        shard,
                        "the shard's lease was not renewed for its TTL; removed"
                    );
                }
                continue;
            }
            lease::Seen::Held => {}
        }
        if let Some(r) = &mut warm {
            match log.catch_up(r).await {
                Ok(()) => {}
                // A snapshot deleted what this standby had not read yet.
                Err(wal::WalError::Gap { .. }) => *r = log.recover(config.reply_cache).await?,
                Err(e) => {
                    tracing::warn!(shard, error = %Chain(&e), "standby: cannot follow the log now")
                }
            }
        }
    }
}

/// Runs the lease keeper ([`lease::Lease::keep`]) on a thread of its own with
/// its own NATS connection, so that a pause of the shard's runtime (a large
/// snapshot being encoded) does not hold up the renewals and hand the shard
/// to a standby. Once stopped (or the lease lost), it releases the lease (a
/// no-op if another process holds it) and the returned receiver resolves.
fn spawn_keeper(
    url: &str,
    name: String,
    lease: lease::Lease,
    verify: lease::Verify,
    stop: tokio::sync::watch::Receiver<bool>,
    lost: tokio::sync::oneshot::Sender<String>,
) -> Result<tokio::sync::oneshot::Receiver<()>, EngineError> {
    let (done, finished) = tokio::sync::oneshot::channel();
    let url = url.to_owned();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            EngineError::Config(format!("cannot start the lease keeper's runtime: {e}"))
        })?;
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            runtime.block_on(async move {
                let options = async_nats::ConnectOptions::new()
                    .custom_inbox_prefix(subject::ENGINE_INBOX);
                let mut lease = lease;
                match reddit_shared::connect::connect_with(&url, &name, options, None).await {
                    Ok(own) => lease.rebind(own).await,
                    Err(e) => {
                        tracing::warn!(error = %Chain(&e), "the lease keeper shares the log's connection")
                    }
                }
                let lease = lease.keep(verify, stop, lost).await;
                lease.release().await;
                let _ = done.send(());
            });
        })
        .map_err(|e| EngineError::Config(format!("cannot start the lease keeper: {e}")))?;
    Ok(finished)
}

/// Serves shard `config.shard` until `shutdown` resolves, then stops taking requests,
/// answers those already taken, delivers what it owes other shards (bounded in time)
/// and returns.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), EngineError> {
    if config.shards == 0 || config.shard >= config.shards {
        return Err(EngineError::Config(format!(
            "--shard must be in 0..{} (got {})",
            config.shards, config.shard
        )));
    }
    check_secret(&config)?;
    let name = format!("reddit-engine-{}", config.shard);
    // Three connections with different NATS permissions (nats-auth.conf):
    // - `log` (user `engine`): the write-ahead log, snapshots and the auth callout;
    //   it never answers a request, so no request can steer it;
    // - `serve` (user `engine-serve`): receives requests and discovery; may
    //   publish only to reply inboxes (for the micro-service API's own replies);
    // - `client` (user `engine-work`): replies (checked by `reply_allowed`),
    //   pushes and requests to other shards; it cannot reach the log or the
    //   JetStream API. (Replies and pushes share it: one connection's writes are
    //   batched together; two sending connections measured ~10% slower on the
    //   mixed workload, docs/performance.md.)
    let engine_options =
        || async_nats::ConnectOptions::new().custom_inbox_prefix(subject::ENGINE_INBOX);
    let has_credentials = reddit_shared::connect::has_credentials(&config.nats_url);
    let connect = |suffix: &'static str, user: Option<&str>, options| {
        let name = format!("{name}{suffix}");
        let user = user.filter(|_| has_credentials).map(str::to_owned);
        let url = config.nats_url.clone();
        async move {
            reddit_shared::connect::connect_with(&url, &name, options, user.as_deref())
                .await
                .map_err(EngineError::from)
        }
    };
    let log_client = connect("-log", None, engine_options()).await?;
    let client = connect("", Some(config.work_user.as_str()), engine_options()).await?;
    let metrics = Arc::new(Metrics::new(config.queue_capacity));
    let slow = metrics.clone();
    let serve_options = engine_options()
        .subscription_capacity(config.subscription_capacity.max(1024))
        .event_callback(move |event| {
            let slow = slow.clone();
            async move {
                if let async_nats::Event::SlowConsumer(sid) = event {
                    let n = slow.slow_consumer_events.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    tracing::warn!(sid, events = n, "the request subscription is a slow consumer: NATS dropped requests before the shard saw them");
                }
            }
        });
    let serve = connect("-serve", Some(config.serve_user.as_str()), serve_options).await?;
    let bus = NatsBus::shared(client.clone());
    let peers = Peers::new(bus.clone(), config.peer_timeout);
    let token_ttl_ms = i64::try_from(config.token_ttl.as_millis()).unwrap_or(i64::MAX);
    let tokens = auth::TokenSigner::new(config.secret.as_bytes(), token_ttl_ms);
    let issuer = Arc::new(
        callout::Issuer::from_secret(config.secret.as_bytes())
            .map_err(|e| EngineError::Config(e.to_string()))?,
    );
    let mut shutdown = std::pin::pin!(shutdown);
    // Shards that disagree about the cluster size or the secret are refused
    // before anything else (the owner check comes with the lease, below).
    startup_checks(&peers, &config, &tokens.fingerprint(), true).await?;
    // Durable mode: open the log (it says so if JetStream is missing), then take
    // the shard's lease before reading it (a standby waits for it), so that of
    // two processes exactly one serves.
    let opened = match config.storage {
        Storage::Memory => None,
        Storage::Jetstream => Some(
            wal::Log::open(&log_client, config.shard, config.shards, config.replicas)
                .await?
                .with_segment_records(config.log_segment_records)
                .with_segment_bytes(config.log_segment_bytes),
        ),
    };
    let (lease, mut warm) = match &opened {
        None => (None, None),
        Some(log) => {
            match take_lease(&config, &peers, &log_client, log, shutdown.as_mut()).await? {
                Some((lease, warm)) => (Some(lease), warm),
                // Stopped while standing by.
                None => return Ok(()),
            }
        }
    };
    startup_checks(&peers, &config, &tokens.fingerprint(), lease.is_some()).await?;

    let (state, replies, journal) = match opened {
        None => (
            ShardState::new(config.shard, config.shards),
            replies::ReplyCache::new(config.reply_cache),
            None,
        ),
        Some(log) => {
            // A standby reads only what was logged since its last look.
            let mut r = match warm.take() {
                Some(r) => r,
                None => log.recover(config.reply_cache).await?,
            };
            // Nothing a previous owner still sends lands after this point.
            match log.fence(&mut r).await {
                Ok(()) => {}
                // A snapshot deleted what the standby had not read yet.
                Err(wal::WalError::Gap { .. }) => {
                    r = log.recover(config.reply_cache).await?;
                    log.fence(&mut r).await?;
                }
                Err(e) => return Err(e.into()),
            }
            tracing::info!(
                shard = config.shard,
                snapshot_seq = r.snapshot_seq,
                records = r.records,
                events = r.events,
                last_seq = r.last_seq,
                replies = r.replies.len(),
                elapsed_ms = r.elapsed.as_millis() as u64,
                snapshot_fetch_ms = r.snapshot_load.fetch.as_millis() as u64,
                snapshot_decode_ms = r.snapshot_load.decode.as_millis() as u64,
                snapshot_index_ms = r.snapshot_load.index.as_millis() as u64,
                "state recovered from the log"
            );
            (r.state, r.replies, Some((log, r.last_seq, r.events)))
        }
    };

    if let Some((_, last_seq, _)) = &journal {
        metrics
            .wal_seq
            .store(*last_seq, std::sync::atomic::Ordering::Relaxed);
    }
    let metadata = HashMap::from([
        ("shard".to_owned(), config.shard.to_string()),
        ("shards".to_owned(), config.shards.to_string()),
        ("protocol".to_owned(), PROTOCOL_VERSION.to_owned()),
        // Which process serves (`reddit-client shards`), e.g. to find the
        // owner among standbys.
        ("pid".to_owned(), std::process::id().to_string()),
        ("host".to_owned(), lease::host_name()),
    ]);
    let stats_metrics = metrics.clone();
    use async_nats::service::ServiceExt;
    let service = serve
        .service_builder()
        .description(format!(
            "Reddit engine shard {} of {}",
            config.shard, config.shards
        ))
        .metadata(metadata)
        .stats_handler(move |_, _| stats_metrics.to_json())
        .start(SERVICE_NAME, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(nats_err("cannot start the service"))?;
    let instance = service.info().await.id;
    let endpoint = service
        .endpoint_builder()
        .name("requests")
        .add(subject::shard_wildcard(config.shard))
        .await
        .map_err(nats_err("cannot add the request endpoint"))?;
    serve
        .flush()
        .await
        .map_err(nats_err("cannot flush the subscriptions"))?;

    let (jobs_tx, jobs_rx) = mpsc::channel(config.queue_capacity);
    let (sync_tx, sync_rx) = mpsc::channel(config.outbox_capacity);
    // One round of the resync syncer waits here; the rest in the actor.
    let (resync_tx, resync_rx) = mpsc::channel(cross_shard::MAX_PENDING);
    let unlogged = Arc::new(cross_shard::Unlogged::default());
    let ctx = Ctx {
        bus: bus.clone(),
        peers: peers.clone(),
        tokens,
        metrics: metrics.clone(),
        shard: config.shard,
        shards: config.shards,
        instance: instance.clone(),
        sync_tx,
        resync_tx,
        unlogged: unlogged.clone(),
        permits: Arc::new(Semaphore::new(config.max_cross_shard)),
        peer_timeout: config.peer_timeout,
        tenure: lease.as_ref().map(|l| l.tenure().clone()),
    };
    let syncer = tokio::spawn(cross_shard::run_syncer(
        peers.clone(),
        unlogged.clone(),
        sync_rx,
        metrics.pending_sync.clone(),
        Duration::from_secs(5),
        cross_shard::Lane::Live,
    ));
    let resyncer = tokio::spawn(cross_shard::run_syncer(
        peers,
        unlogged,
        resync_rx,
        metrics.pending_sync.clone(),
        Duration::from_secs(5),
        cross_shard::Lane::Resync,
    ));
    let mut actor = Actor::new(state, ctx, jobs_tx.downgrade())
        .with_replies(replies)
        .with_feed_cache(config.feed_cache)
        .with_dm_recheck(config.dm_recheck)
        .with_turn_cpu(config.turn_cpu);
    // After an expiry, the lease keeper serves on only if nobody else wrote
    // the log: every record after the last one this process confirmed is
    // its own (appends that landed but whose acknowledgement it has not
    // processed yet: at most its pipeline's depth).
    let mut verify: Option<lease::Verify> = None;
    if let Some((log, last_seq, replayed)) = journal {
        let (ours, wal_seq) = (log.clone(), metrics.clone());
        let in_flight = config.log_pipeline.max(1) as u64;
        verify = Some(Box::new(move || {
            let (log, wal_seq) = (ours.clone(), wal_seq.clone());
            Box::pin(async move {
                let confirmed = || wal_seq.wal_seq.load(std::sync::atomic::Ordering::Acquire);
                log.holds_only_own_records_after(confirmed, in_flight)
                    .await
                    .ok()
            })
        }));
        // Snapshots are stored from a thread and a connection of their own,
        // off the actor's thread and out of the log connection's way.
        let (shard, shards, replicas) = (config.shard, config.shards, config.replicas);
        let (segment_records, segment_bytes) =
            (config.log_segment_records, config.log_segment_bytes);
        let connecting = connect("-snapshots", None, engine_options());
        let io = server::snapshots::SnapshotIo::start(shard, move || async move {
            let client = connecting
                .await
                .map_err(|e| wal::WalError::Unavailable(e.to_string()))?;
            let store: Arc<dyn server::LogStore> = Arc::new(
                wal::Log::open(&client, shard, shards, replicas)
                    .await?
                    .with_segment_records(segment_records)
                    .with_segment_bytes(segment_bytes),
            );
            Ok(store)
        })
        .await?;
        actor = actor.with_snapshot_io(io).with_log(
            Arc::new(log),
            last_seq,
            replayed,
            server::snapshots::SnapshotPolicy {
                every: config.snapshot_every,
                bytes_per_second: config.snapshot_bytes_per_second,
            },
            server::journal::Batching {
                depth: config.log_pipeline,
                linger: config.log_linger,
                unwaited_linger: config.log_unwaited_linger,
            },
        );
        // The record before this process's fence is the previous owner's
        // last: its records after that never landed.
        actor = actor.with_predecessor_end(last_seq.saturating_sub(1));
    }
    let actor = actor.with_read_barrier(config.read_barrier);
    let mut actor = tokio::spawn(actor.run(jobs_rx));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let callout = tokio::spawn(callout::serve(
        log_client.clone(),
        issuer.clone(),
        Peers::new(bus.clone(), CALLOUT_PEER_TIMEOUT),
        config.shards,
        stop_rx.clone(),
    ));
    let reader = tokio::spawn(server::read_requests(
        endpoint,
        bus,
        jobs_tx,
        metrics,
        config.shard,
        stop_rx,
    ));
    let (lease_stop, lease_stop_rx) = tokio::sync::watch::channel(false);
    let (lost_tx, mut lost_rx) = tokio::sync::oneshot::channel::<String>();
    if let Some(l) = &lease {
        tokio::spawn(l.tenure().clone().watch_standbys(
            l.store().clone(),
            config.shard,
            lease_stop_rx.clone(),
        ));
    }
    let keeper = match (lease, verify) {
        (Some(l), Some(verify)) => Some(spawn_keeper(
            &config.nats_url,
            format!("{name}-lease"),
            l,
            verify,
            lease_stop_rx,
            lost_tx,
        )?),
        _ => None,
    };
    tracing::info!(shard = config.shard, shards = config.shards, storage = ?config.storage, %instance, callout_issuer = %issuer.public_key(), "serving");

    // The actor ends early only if the log refuses this process (a second writer)
    // or breaks for good: then stop serving at once.
    let mut fatal: Option<EngineError> = None;
    tokio::select! {
        () = &mut shutdown => {}
        Ok(why) = &mut lost_rx => fatal = Some(EngineError::LeaseLost(why)),
        result = &mut actor => {
            fatal = Some(match result {
                Ok(Err(e)) => EngineError::Wal(e),
                Ok(Ok(())) => EngineError::Nats {
                    what: "the request loop ended unexpectedly".into(),
                    source: None,
                },
                Err(e) => EngineError::Nats {
                    what: "the request loop failed".into(),
                    source: Some(Box::new(e)),
                },
            });
        }
    }
    if let Some(e) = fatal {
        tracing::error!(shard = config.shard, error = %Chain(&e), "stopping");
        let _ = lease_stop.send(true);
        let _ = stop_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), service.stop()).await;
        // Still ours (the log failed): the keeper frees it for a standby now.
        // Taken by another process: it releases nothing.
        if let Some(keeper) = keeper {
            let _ = tokio::time::timeout(Duration::from_secs(3), keeper).await;
        }
        return Err(e);
    }
    tracing::info!(
        shard = config.shard,
        "shutting down: no new requests, answering the queued ones"
    );
    let _ = stop_tx.send(true);
    // Every step is bounded: with NATS gone, replies, flushes and the service's
    // unregistering would otherwise wait for a reconnect that may never come.
    let drain = async {
        let _ = reader.await;
        match actor.await {
            Ok(Err(e)) => tracing::error!(error = %Chain(&e), "the log failed while stopping"),
            Err(e) => tracing::error!(error = %Chain(&e), "the request loop failed while stopping"),
            Ok(Ok(())) => {}
        }
        let _ = tokio::join!(syncer, resyncer);
        let _ = callout.await;
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        tracing::warn!(
            shard = config.shard,
            "shutdown did not finish within {SHUTDOWN_GRACE:?} (is NATS reachable?); exiting anyway"
        );
    }
    // The last record is in the log: hand the shard over now, not after the TTL.
    let _ = lease_stop.send(true);
    if let Some(keeper) = keeper {
        let _ = tokio::time::timeout(Duration::from_secs(3), keeper).await;
    }
    match tokio::time::timeout(Duration::from_secs(2), service.stop()).await {
        Ok(Err(e)) => tracing::debug!(error = %e, "service stop"),
        Err(_) => tracing::warn!("could not unregister the service (NATS unreachable?)"),
        Ok(Ok(())) => {}
    }
    for c in [&serve, &client, &log_client] {
        if tokio::time::timeout(Duration::from_secs(2), c.flush())
            .await
            .is_err()
        {
            tracing::warn!("could not flush the last replies (NATS unreachable?)");
        }
    }
    tracing::info!(shard = config.shard, "stopped");
    Ok(())
}
