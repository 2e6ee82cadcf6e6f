//! `reddit-chat`: a line chat for telnet and netcat whose rooms, names and
//! history live on NATS ([`bus`]), so any number of these gateways serve the
//! same rooms and none holds shared state. Each TCP connection is a
//! [`session`]; this gateway's rooms fan out through the [`hub`]. The
//! protocol between gateways is in `docs/chat.md`.

pub mod bench;
pub mod bus;
pub mod commands;
pub mod hub;
pub mod line;
mod session;
pub mod who;
pub mod wire;

use bus::{Bus, Directory, Storage};
use hub::{Hub, Metrics};
use reddit_client::{ClientOptions, RedditClient};
use reddit_shared::subject::chat as subjects;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use who::Room;
use wire::Clock;

/// Why the gateway could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// A NATS or JetStream call failed.
    #[error("{what}")]
    Nats {
        /// What was being done.
        what: &'static str,
        /// The NATS error.
        #[source]
        source: reddit_shared::error::BoxError,
    },
    /// The TCP listener failed.
    #[error("cannot listen on {addr}")]
    Listen {
        /// Where.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A message could not be encoded.
    #[error("cannot encode a chat message")]
    Encode(#[source] serde_json::Error),
}

/// How a gateway runs (every field has a flag in `reddit-chat --help`).
#[derive(Clone, Debug)]
pub struct Config {
    /// NATS URL(s) with the `chat` role's credentials.
    pub nats_url: String,
    /// Where to listen.
    pub listen: SocketAddr,
    /// Where users land.
    pub default_room: Room,
    /// How timestamps are shown.
    pub clock: Clock,
    /// Longest line in bytes.
    pub max_line: usize,
    /// Lines queued per connection before a slow reader is disconnected.
    pub out_queue: usize,
    /// Lines per second per connection, and the burst.
    pub rate: (u32, u32),
    /// Disconnect after this long without input.
    pub idle_timeout: Duration,
    /// Most connections at once.
    pub max_connections: usize,
    /// History lines shown on joining a room.
    pub history_on_join: usize,
    /// Most rooms in the whole chat.
    pub max_rooms: usize,
    /// The stream and buckets.
    pub storage: Storage,
    /// Longest wait for the Reddit engine (login, name checks).
    pub engine_timeout: Duration,
}

impl Config {
    /// Defaults for everything but where to connect and listen.
    pub fn new(nats_url: String, listen: SocketAddr, default_room: Room) -> Self {
        Self {
            nats_url,
            listen,
            default_room,
            clock: Clock::new("[hour]:[minute]").unwrap_or_else(|_| Clock::none()),
            max_line: 1024,
            out_queue: 256,
            rate: (5, 10),
            idle_timeout: Duration::from_secs(600),
            max_connections: 10_000,
            history_on_join: 20,
            max_rooms: 10_000,
            storage: Storage {
                history_per_room: 100,
                history_age: Duration::from_secs(7 * 24 * 3600),
                name_ttl: Duration::from_secs(30),
                replicas: 1,
            },
            engine_timeout: Duration::from_secs(3),
        }
    }
}

/// What every session of one gateway shares.
pub(crate) struct Gateway {
    config: Config,
    /// This gateway's instance id (in the names bucket and its stats).
    id: String,
    bus: Bus,
    hub: Arc<Hub>,
    dir: Arc<RwLock<Directory>>,
    /// Cancelled on shutdown.
    shutdown: CancellationToken,
    reddit: tokio::sync::OnceCell<RedditClient>,
    /// When discovering the engine last failed (tried again 10 s later).
    reddit_failed: std::sync::Mutex<Option<tokio::time::Instant>>,
    metrics: Arc<Metrics>,
    next_conn: std::sync::atomic::AtomicU64,
}

impl Gateway {
    /// The engine's client, discovering the shards on first use (the chat works
    /// without the engine; only `/login`, name checks and `r/` rooms need it).
    async fn reddit(&self) -> Option<&RedditClient> {
        if let Some(c) = self.reddit.get() {
            return Some(c);
        }
        let recent = |t: &Option<tokio::time::Instant>| {
            t.is_some_and(|t| t.elapsed() < Duration::from_secs(10))
        };
        if self.reddit_failed.lock().is_ok_and(|t| recent(&t)) {
            return None;
        }
        let options = ClientOptions {
            request_timeout: self.config.engine_timeout,
            retry_budget: self.config.engine_timeout,
            discovery_timeout: Duration::from_secs(2),
            name: "reddit-chat".to_owned(),
            ..ClientOptions::default()
        };
        let nats = self.bus.nats.clone();
        self.reddit
            .get_or_try_init(|| RedditClient::discover(nats, options))
            .await
            .map_err(|e| {
                tracing::warn!("the Reddit engine is not reachable: {e}");
                if let Ok(mut t) = self.reddit_failed.lock() {
                    *t = Some(tokio::time::Instant::now());
                }
            })
            .ok()
    }
}

/// A gateway connected to NATS and listening, not yet serving.
pub struct Bound {
    listener: TcpListener,
    gw: Arc<Gateway>,
    service: async_nats::service::Service,
}

/// Connects to NATS as the chat role, opens the stream and buckets, and
/// listens.
pub async fn bind(config: Config) -> Result<Bound, ChatError> {
    let nats = reddit_shared::connect::connect_with(
        &config.nats_url,
        "reddit-chat",
        async_nats::ConnectOptions::new()
            .custom_inbox_prefix(subjects::INBOX)
            .retry_on_initial_connect(),
        None,
    )
    .await
    .map_err(|e| ChatError::Nats {
        what: "cannot connect to NATS",
        source: Box::new(e),
    })?;
    let bus = Bus::open(nats.clone(), &config.storage).await?;
    let shutdown = CancellationToken::new();
    let dir = bus::watch(&bus, shutdown.clone());
    let metrics = Arc::new(Metrics::default());
    tokio::spawn(metrics.clone().keep_rates(shutdown.clone()));
    let hub = Hub::new(nats.clone(), config.clock.clone(), metrics.clone());
    let id = format!("gw-{:08x}", rand::random::<u32>());
    let default_entry = wire::RoomEntry {
        name: config.default_room.to_string(),
        created_by: id.clone(),
        created_at: reddit_shared::now_millis(),
    };
    if let Ok(body) = serde_json::to_vec(&default_entry) {
        // Exists already (another gateway made it) is fine.
        let _ = bus
            .rooms
            .create(config.default_room.key(), body.into())
            .await;
    }
    let stats = metrics.clone();
    let service = {
        use async_nats::service::ServiceExt;
        nats.service_builder()
            .description(format!("reddit-chat gateway {id} on {}", config.listen))
            .stats_handler(move |_, _| stats.to_json())
            .start(subjects::SERVICE, env!("CARGO_PKG_VERSION"))
            .await
            .map_err(|e| ChatError::Nats {
                what: "cannot start the micro service",
                source: e,
            })?
    };
    let _stats_endpoint = service
        .endpoint_builder()
        .name("stats")
        .add(format!("chat.stats.{id}"))
        .await
        .map_err(|e| ChatError::Nats {
            what: "cannot add the stats endpoint",
            source: e,
        })?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ChatError::Listen {
            addr: config.listen,
            source,
        })?;
    let gw = Arc::new(Gateway {
        config,
        id,
        bus,
        hub,
        dir,
        shutdown,
        reddit: tokio::sync::OnceCell::new(),
        reddit_failed: std::sync::Mutex::new(None),
        metrics,
        next_conn: std::sync::atomic::AtomicU64::new(1),
    });
    // Find the engine now, so that the first login does not wait for it.
    let early = gw.clone();
    tokio::spawn(async move {
        early.reddit().await;
    });
    Ok(Bound {
        listener,
        gw,
        service,
    })
}

impl Bound {
    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.gw.config.listen)
    }

    /// This gateway's instance id.
    pub fn id(&self) -> &str {
        &self.gw.id
    }

    /// Serves until `shutdown` resolves; then tells every user, lets each
    /// session announce its departure and free its name (up to 5 s), and stops.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), ChatError> {
        let Bound {
            listener,
            gw,
            service,
        } = self;
        let slots = Arc::new(Semaphore::new(gw.config.max_connections));
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            match slots.clone().try_acquire_owned() {
                Ok(permit) => {
                    gw.metrics.accepted.fetch_add(1, Ordering::Relaxed);
                    let gw = gw.clone();
                    tokio::spawn(async move {
                        session::run(gw, stream, peer).await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    gw.metrics.refused.fetch_add(1, Ordering::Relaxed);
                    let max = gw.config.max_connections;
                    tokio::spawn(session::refuse(stream, max));
                }
            }
        }
        drop(listener);
        gw.shutdown.cancel();
        let all = u32::try_from(gw.config.max_connections).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(Duration::from_secs(5), slots.acquire_many(all)).await;
        let _ = service.stop().await;
        let _ = gw.bus.nats.flush().await;
        Ok(())
    }
}
