//! `reddit-gateway`: the HTTP front door. A stateless NATS client like every
//! other (it discovers the shards through the NATS micro-service API and routes
//! each request by the contract's table), so any number of gateways run behind
//! any load balancer.
//!
//! - [`routes`]: the REST API under `/api/v1`, JSON, every public operation;
//! - [`events`]: live pushes as Server-Sent Events;
//! - [`error`]: engine and gateway errors as HTTP statuses with `{code, message}`;
//! - [`limits`]: per-IP and per-user rate limits;
//! - [`docs`]: the OpenAPI document (generated from the code) and a page for it;
//! - [`web`]: the web page at `/` (plain ES module on the API, keys kept in the browser).
//!
//! The gateway holds no keys and no secrets but its NATS password: users log in
//! through the API (challenge, signature) and send the engine's token as
//! `Authorization: Bearer`; the shards verify it.

pub mod docs;
pub mod error;
pub mod events;
pub mod limits;
pub mod routes;
pub mod web;

use reddit_client::{ClientOptions, RedditClient};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// NATS inbox prefix of gateways: inside the service shape (`_INBOX_SERVICE.>`),
/// which the shards answer for any user's token, but a subtree of its own, so the
/// `gateway` NATS user cannot read other services' replies (nats-auth.conf).
pub const GATEWAY_INBOX: &str = "_INBOX_SERVICE.gateway";

/// How a gateway runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// NATS URL(s), with the `gateway` user's credentials.
    pub nats_url: String,
    /// Where to listen for HTTP.
    pub listen: SocketAddr,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Longest time one HTTP request may take.
    pub request_timeout: Duration,
    /// Timeout of each engine request attempt.
    pub engine_timeout: Duration,
    /// How long an engine call keeps retrying (timeouts, `503`s).
    pub retry_budget: Duration,
    /// Requests per second per client IP, and the burst.
    pub per_ip: (u32, u32),
    /// Requests per second per user (bearer), and the burst.
    pub per_user: (u32, u32),
    /// Origins allowed by CORS (none: no CORS headers).
    pub cors_origins: Vec<String>,
    /// Events buffered per SSE connection before a slow reader is dropped.
    pub sse_buffer: usize,
    /// Most SSE connections at once.
    pub max_sse: usize,
}

impl Config {
    /// Defaults for `nats_url`, listening on `listen`.
    pub fn new(nats_url: impl Into<String>, listen: SocketAddr) -> Self {
        Self {
            nats_url: nats_url.into(),
            listen,
            max_body_bytes: reddit_shared::MAX_REQUEST_BYTES,
            request_timeout: Duration::from_secs(30),
            engine_timeout: Duration::from_secs(5),
            retry_budget: Duration::from_secs(10),
            per_ip: (200, 400),
            per_user: (50, 100),
            cors_origins: Vec::new(),
            sse_buffer: 256,
            max_sse: 10_000,
        }
    }
}

/// Why the gateway could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// NATS or the shards could not be reached.
    #[error("cannot reach the engine")]
    Engine(#[source] reddit_client::ClientError),
    /// The listening socket.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A bad setting.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// What every handler shares: one allocation behind an `Arc`, since axum clones
/// the state for every request (and more than once per request through the
/// middleware). Cloning the fields one by one (a NATS handle among them, whose
/// clone and drop touch several reference counts and a channel sender) cost
/// about 5% of the gateway's CPU.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The fields of [`AppState`].
pub struct Shared {
    /// The engine, through NATS.
    pub client: RedditClient,
    /// The raw connection (for push subscriptions).
    pub nats: async_nats::Client,
    /// Rate limits.
    pub limits: Arc<limits::Limits>,
    /// Settings.
    pub config: Arc<Config>,
    /// Live SSE connections.
    pub sse: Arc<tokio::sync::Semaphore>,
    /// False once shutting down (readiness).
    pub accepting: Arc<AtomicBool>,
    /// The NATS connection of every serving thread of this process
    /// (readiness: a request may land on any thread).
    pub connections: Connections,
}

impl AppState {
    /// Sends the write `req` as the user `session` names, with the caller's
    /// `Idempotency-Key` (if any): what every authenticated REST write does.
    pub async fn write<R: reddit_shared::protocol::rpc::Rpc>(
        &self,
        session: &reddit_client::Session,
        req: &R,
        key: Option<String>,
    ) -> Result<R::Reply, reddit_client::ClientError> {
        self.client
            .send_keyed(Some(session), req, key.as_deref())
            .await
    }

    /// Whether the gateway should get traffic: not shutting down, and every
    /// serving thread connected to NATS (each discovered the shards before it
    /// served). Whichever thread answers the probe, it speaks for the whole
    /// process: the load balancer's next request may land on any of them.
    pub fn ready(&self) -> bool {
        self.accepting.load(Ordering::Relaxed) && self.connections.all_connected()
    }
}

/// The NATS connections of a gateway process's serving threads, each added
/// as its thread connects.
#[derive(Clone, Default)]
pub struct Connections(Arc<std::sync::Mutex<Vec<async_nats::Client>>>);

impl Connections {
    fn add(&self, client: async_nats::Client) {
        self.lock().push(client);
    }

    /// Whether every connection is up (and there is one).
    pub fn all_connected(&self) -> bool {
        all_connected(self.lock().iter().map(|c| c.connection_state()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<async_nats::Client>> {
        // A panic elsewhere while the lock was held leaves a whole list.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether `states` are all `Connected`, and there is at least one.
fn all_connected(states: impl IntoIterator<Item = async_nats::connection::State>) -> bool {
    let mut any = false;
    for state in states {
        if !matches!(state, async_nats::connection::State::Connected) {
            return false;
        }
        any = true;
    }
    any
}

/// Connects to NATS as the gateway and discovers the shards.
pub async fn connect(config: &Config) -> Result<(async_nats::Client, RedditClient), GatewayError> {
    let options = ClientOptions {
        request_timeout: config.engine_timeout,
        retry_budget: config.retry_budget,
        name: "reddit-gateway".to_owned(),
        ..ClientOptions::default()
    };
    let nats = reddit_shared::connect::connect_with(
        &config.nats_url,
        "reddit-gateway",
        async_nats::ConnectOptions::new().custom_inbox_prefix(GATEWAY_INBOX),
        None,
    )
    .await
    .map_err(|e| {
        GatewayError::Engine(reddit_client::ClientError::new(
            reddit_client::ErrorKind::Connect,
            reddit_shared::error::Chain(&e).to_string(),
        ))
    })?;
    let client = RedditClient::discover(nats.clone(), options)
        .await
        .map_err(GatewayError::Engine)?;
    Ok((nats, client))
}

/// A gateway connected to the engine and listening, not yet serving.
pub struct Bound {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    state: AppState,
}

impl Bound {
    /// The address it listens on (the port, when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves HTTP until `shutdown` resolves, then stops taking connections and
    /// finishes the requests in flight.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), GatewayError> {
        let Bound {
            listener,
            addr,
            state,
        } = self;
        let accepting = state.accepting.clone();
        let nats = state.nats.clone();
        let app = routes::router(state)?;
        tracing::info!(%addr, "serving HTTP");
        // Replies go out as soon as they are written: with Nagle's algorithm
        // an event stream's second small write could wait for the client's
        // delayed acknowledgement of the first.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            accepting.store(false, Ordering::Relaxed);
            tracing::info!("shutting down: finishing the requests in flight");
        })
        .await
        .map_err(|source| GatewayError::Listen { addr, source })?;
        let _ = tokio::time::timeout(Duration::from_secs(2), nats.flush()).await;
        Ok(())
    }
}

/// What every serving thread of one gateway process shares: the rate limits
/// (a caller's budget is one whichever thread takes its connection), the SSE
/// connection cap and readiness (shutting down, and every thread's NATS
/// connection).
#[derive(Clone)]
pub struct Common {
    limits: Arc<limits::Limits>,
    sse: Arc<tokio::sync::Semaphore>,
    accepting: Arc<AtomicBool>,
    connections: Connections,
}

impl Common {
    /// Fresh limits and counters for `config`.
    pub fn new(config: &Config) -> Self {
        Self {
            limits: Arc::new(limits::Limits::new(config.per_ip, config.per_user)),
            sse: Arc::new(tokio::sync::Semaphore::new(config.max_sse)),
            accepting: Arc::new(AtomicBool::new(true)),
            connections: Connections::default(),
        }
    }
}

/// Most connections waiting to be accepted, per listening socket.
const BACKLOG: i32 = 1024;

/// Opens a listening socket on `addr`. With `reuse_port`, several sockets
/// (one per serving thread) listen on the same port and the kernel spreads
/// the connections over them (`SO_REUSEPORT`); the first may ask for port 0
/// and the others then take the port it got.
pub fn listen(addr: SocketAddr, reuse_port: bool) -> Result<std::net::TcpListener, GatewayError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let fail = |source| GatewayError::Listen { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(fail)?;
    socket.set_reuse_address(true).map_err(fail)?;
    #[cfg(unix)]
    if reuse_port {
        socket.set_reuse_port(true).map_err(fail)?;
    }
    #[cfg(not(unix))]
    let _ = reuse_port;
    socket.set_nonblocking(true).map_err(fail)?;
    socket.bind(&addr.into()).map_err(fail)?;
    socket.listen(BACKLOG).map_err(fail)?;
    Ok(socket.into())
}

/// Connects to the engine (a NATS connection of this thread's own) and serves
/// on `listener` (from [`listen`]), sharing `common` with the other serving
/// threads of the process. Call it on the runtime that will serve.
pub async fn bind(
    config: Config,
    common: Common,
    listener: std::net::TcpListener,
) -> Result<Bound, GatewayError> {
    let (nats, client) = connect(&config).await?;
    let listener =
        tokio::net::TcpListener::from_std(listener).map_err(|source| GatewayError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(config.listen);
    common.connections.add(nats.clone());
    let state = AppState(Arc::new(Shared {
        client,
        nats,
        limits: common.limits,
        sse: common.sse,
        accepting: common.accepting,
        connections: common.connections,
        config: Arc::new(config),
    }));
    Ok(Bound {
        listener,
        addr,
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::all_connected;
    use async_nats::connection::State;

    /// A process whose one serving thread lost NATS is not ready, whichever
    /// thread answers the probe.
    #[test]
    fn ready_only_when_every_serving_threads_connection_is_up() {
        assert!(all_connected([State::Connected]));
        assert!(all_connected([State::Connected, State::Connected]));
        assert!(!all_connected([
            State::Connected,
            State::Disconnected,
            State::Connected
        ]));
        assert!(!all_connected([State::Connected, State::Pending]));
        assert!(!all_connected([]), "no thread connected yet");
    }
}
