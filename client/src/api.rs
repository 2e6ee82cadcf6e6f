//! [`RedditClient`]: the typed async API over NATS. It discovers the shards through
//! `$SRV.INFO.reddit-engine`, routes each request with the protocol's hash, bounds
//! every request with a timeout, and turns error replies into [`ClientError`]s.

use crate::error::{ClientError, ErrorKind};
use crate::identity::Identity;
use futures::StreamExt;
use reddit_shared::auth::{bearer, AUTH_HEADER};
use reddit_shared::codec::{decode, encode};
use reddit_shared::error::WireError;
use reddit_shared::ids::{DmId, PostId};
use reddit_shared::names::{SubredditName, Username};
use reddit_shared::protocol::admin::{AuditReport, AuditRequest, ShardStats};
use reddit_shared::protocol::dm::{
    DmView, MarkReadReply, MarkReadRequest, ReplyDmRequest, SendDmRequest,
};
use reddit_shared::protocol::post::{GetPostRequest, PostView};
use reddit_shared::protocol::push::PushEvent;
use reddit_shared::protocol::rpc::{JoinRequest, LeaveRequest, Route, Rpc, StatsRequest};
use reddit_shared::protocol::subreddit::{
    CreateSubredditRequest, GetSubredditRequest, ListSubredditsRequest, MembershipReply,
    MembershipRequest, SubredditView,
};
use reddit_shared::protocol::user::{
    ChallengeRequest, GetUserRequest, LoginReply, LoginRequest, RegisterRequest, UserView,
};
use reddit_shared::protocol::{Op, Validate};
use reddit_shared::routing::shard_for;
use reddit_shared::{subject, IDEMPOTENCY_HEADER, PROTOCOL_VERSION, SERVICE_NAME};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Tunables of a [`RedditClient`].
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Timeout of each request attempt.
    pub request_timeout: Duration,
    /// How long one call keeps retrying after timeouts, no-responders and `503`s
    /// (with backoff and jitter, the same idempotency key on every attempt).
    /// Zero: no retries.
    pub retry_budget: Duration,
    /// How long discovery waits for every shard to answer.
    pub discovery_timeout: Duration,
    /// NATS connection name.
    pub name: String,
    /// Connect as this user, proving the registered key to NATS (the auth
    /// callout): the connection may then read only this user's inbox and pushes.
    /// Without it, a URL with credentials connects as the service role and one
    /// without as anonymous (register only).
    pub as_user: Option<(Username, Identity)>,
}

/// Which NATS role a [`RedditClient`]'s connection has (docs/security.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// No credentials: may discover the shards and register, nothing else.
    Anonymous,
    /// Connected as this user with its key: public operations; its own inbox
    /// (`_INBOX_USER.<user>.>`) and pushes.
    User(Username),
    /// The trusted `service` role (credentials in the URL): acts for many users.
    Service,
    /// The engine role (engine-to-engine subjects too): for tools and tests that
    /// connect with the engine's credentials.
    Engine,
    /// Through HTTP gateways: they decide what the caller may do.
    Gateway,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(5),
            retry_budget: DEFAULT_RETRY_BUDGET,
            discovery_timeout: Duration::from_secs(3),
            name: "reddit-client".to_owned(),
            as_user: None,
        }
    }
}

/// Default of [`ClientOptions::retry_budget`]: long enough to ride out a shard
/// restart or a NATS server restart.
pub const DEFAULT_RETRY_BUDGET: Duration = Duration::from_secs(30);

/// First pause between retries (about; with jitter); it doubles up to
/// [`MAX_BACKOFF`] ([`reddit_shared::backoff`]).
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest backoff between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A logged-in user: the name requests are routed by and the bearer token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// Who.
    pub username: Username,
    /// The bearer token.
    pub token: String,
    /// When it expires (Unix ms).
    pub expires_at: i64,
}

/// What one shard said about itself in `$SRV.INFO`.
#[derive(Clone, Debug, Serialize)]
pub struct ShardInfo {
    /// Shard number.
    pub shard: u32,
    /// Service instance id.
    pub instance: String,
    /// Engine version.
    pub version: String,
    /// The serving process's id and host name (metadata `pid`, `host`), when
    /// the engine says.
    pub pid: Option<u32>,
    /// The serving process's host name.
    pub host: Option<String>,
    /// The shard's lease and the processes standing by to take it over (from
    /// `shard.stats`; not known at discovery; `None` in memory mode).
    pub lease: Option<reddit_shared::protocol::admin::LeaseStats>,
}

#[derive(Deserialize)]
struct InfoReply {
    #[serde(default)]
    id: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    metadata: HashMap<String, String>,
}

/// The typed client. Cheap to clone; clones share the NATS connection.
#[derive(Clone, Debug)]
pub struct RedditClient {
    /// None over HTTP ([`RedditClient::connect_http`]).
    nats: Option<async_nats::Client>,
    /// Set: every request goes through gateways instead of NATS.
    http: Option<std::sync::Arc<crate::http::HttpTransport>>,
    shards: u32,
    timeout: Duration,
    retry_budget: Duration,
    /// Shared: a clone (one per simulated operation, or per gateway request)
    /// copies a pointer, not every shard's strings.
    info: std::sync::Arc<[ShardInfo]>,
    role: Role,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::Anonymous => f.write_str("anonymous"),
            Role::User(u) => write!(f, "user {u}"),
            Role::Service => f.write_str("service"),
            Role::Engine => f.write_str("engine"),
            Role::Gateway => f.write_str("gateway (HTTP)"),
        }
    }
}

/// Connects to NATS at `urls` in the role `options` and the URL imply (see
/// [`ClientOptions::as_user`]), with that role's inbox prefix.
pub async fn connect_nats(
    urls: &str,
    options: &ClientOptions,
) -> Result<(async_nats::Client, Role), ClientError> {
    use reddit_shared::connect::{connect_with, has_credentials, strip_credentials};
    use reddit_shared::error::Chain;
    let fail = |e: reddit_shared::connect::ConnectError| {
        ClientError::new(ErrorKind::Connect, Chain(&e).to_string())
    };
    if let Some((user, id)) = &options.as_user {
        let (name, nkey, id) = (user.as_str().to_owned(), id.nkey_public(), id.clone());
        let nats_options = async_nats::ConnectOptions::with_auth_callback(move |nonce| {
            let mut auth = async_nats::Auth::new();
            auth.username = Some(name.clone());
            auth.nkey = Some(nkey.clone());
            auth.signature = Some(id.sign_raw(&nonce));
            async move { Ok(auth) }
        })
        .custom_inbox_prefix(subject::user_inbox_prefix(user.key()));
        let nats = connect_with(&strip_credentials(urls), &options.name, nats_options, None)
            .await
            .map_err(|e| {
                ClientError::new(
                    ErrorKind::Connect,
                    format!(
                        "{} (connecting as {user} by key: NATS refuses a name that is not registered or another key, and cannot check while {user}'s shard is down)",
                        Chain(&e)
                    ),
                )
            })?;
        return Ok((nats, Role::User(user.clone())));
    }
    let (prefix, role) = if has_credentials(urls) {
        (subject::SERVICE_INBOX, Role::Service)
    } else {
        (subject::ANON_INBOX, Role::Anonymous)
    };
    let nats = connect_with(
        urls,
        &options.name,
        async_nats::ConnectOptions::new().custom_inbox_prefix(prefix),
        None,
    )
    .await
    .map_err(fail)?;
    Ok((nats, role))
}

impl RedditClient {
    /// Connects to NATS at `url` (in the role [`ClientOptions::as_user`] and the
    /// URL imply) and discovers the shards.
    pub async fn connect(url: &str, options: ClientOptions) -> Result<Self, ClientError> {
        let (nats, role) = connect_nats(url, &options).await?;
        let mut client = Self::discover(nats, options).await?;
        client.role = role;
        Ok(client)
    }

    /// A client that sends every request through the gateways at `urls`
    /// (comma-separated `http://host:port`; [`crate::http`]) instead of NATS. The
    /// gateways decide what the caller may do; pushes are not available (a
    /// gateway serves them as Server-Sent Events).
    pub async fn connect_http(urls: &str, options: ClientOptions) -> Result<Self, ClientError> {
        let http = crate::http::HttpTransport::connect(urls, &options).await?;
        Ok(Self {
            nats: None,
            shards: http.shards(),
            http: Some(std::sync::Arc::new(http)),
            timeout: options.request_timeout,
            retry_budget: options.retry_budget,
            info: std::sync::Arc::default(),
            role: Role::Gateway,
        })
    }

    /// Whether requests go through gateways ([`connect_http`](Self::connect_http)).
    pub fn is_http(&self) -> bool {
        self.http.is_some()
    }

    /// The NATS role of this client's connection.
    pub fn role(&self) -> &Role {
        &self.role
    }

    /// The same client, told which role its connection has (for connections
    /// made elsewhere).
    pub fn with_role(mut self, role: Role) -> Self {
        self.role = role;
        self
    }

    /// Discovers the shards over an existing connection: asks `$SRV.INFO.reddit-engine`
    /// and waits until every shard `0..shards` has answered, or fails naming the
    /// missing ones.
    pub async fn discover(
        nats: async_nats::Client,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        let inbox = nats.new_inbox();
        let mut replies = nats
            .subscribe(inbox.clone())
            .await
            .map_err(|e| ClientError::new(ErrorKind::Connect, e.to_string()))?;
        nats.publish_with_reply(subject::service_info(), inbox, Vec::new().into())
            .await
            .map_err(|e| ClientError::new(ErrorKind::Connect, e.to_string()))?;
        nats.flush()
            .await
            .map_err(|e| ClientError::new(ErrorKind::Connect, e.to_string()))?;
        let deadline = tokio::time::Instant::now() + options.discovery_timeout;
        let mut shards: Option<u32> = None;
        let mut seen: BTreeMap<u32, ShardInfo> = BTreeMap::new();
        loop {
            if let Some(n) = shards {
                if seen.len() as u32 >= n {
                    break;
                }
            }
            let msg = match tokio::time::timeout_at(deadline, replies.next()).await {
                Ok(Some(msg)) => msg,
                _ => break,
            };
            let Ok(info) = serde_json::from_slice::<InfoReply>(&msg.payload) else {
                continue;
            };
            let meta = |k: &str| info.metadata.get(k).and_then(|v| v.parse::<u32>().ok());
            let (Some(shard), Some(n)) = (meta("shard"), meta("shards")) else {
                continue;
            };
            if info.metadata.get("protocol").map(String::as_str) != Some(PROTOCOL_VERSION) {
                return Err(ClientError::new(
                    ErrorKind::Discovery,
                    format!(
                        "shard {shard} speaks protocol {:?}; this client speaks {PROTOCOL_VERSION}",
                        info.metadata.get("protocol")
                    ),
                ));
            }
            match shards {
                None => shards = Some(n),
                Some(m) if m != n => {
                    return Err(ClientError::new(
                        ErrorKind::Discovery,
                        format!("the shards disagree about the cluster size ({m} and {n})"),
                    ))
                }
                _ => {}
            }
            if let Some(prev) = seen.get(&shard) {
                if prev.instance != info.id {
                    return Err(ClientError::new(
                        ErrorKind::Discovery,
                        format!(
                            "shard {shard} is served by two processes ({} and {})",
                            prev.instance, info.id
                        ),
                    ));
                }
            }
            seen.insert(
                shard,
                ShardInfo {
                    shard,
                    pid: meta("pid"),
                    host: info.metadata.get("host").cloned(),
                    lease: None,
                    instance: info.id,
                    version: info.version,
                },
            );
        }
        let _ = replies.unsubscribe().await;
        let Some(n) = shards else {
            return Err(ClientError::new(
                ErrorKind::Unavailable,
                format!(
                    "no {SERVICE_NAME} shard answered within {:?}; is the engine running?",
                    options.discovery_timeout
                ),
            ));
        };
        let missing: Vec<String> = (0..n)
            .filter(|k| !seen.contains_key(k))
            .map(|k| k.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(ClientError::new(
                ErrorKind::Unavailable,
                format!(
                    "shard(s) {} of {n} did not answer discovery within {:?}",
                    missing.join(", "),
                    options.discovery_timeout
                ),
            ));
        }
        Ok(Self {
            nats: Some(nats),
            http: None,
            shards: n,
            timeout: options.request_timeout,
            retry_budget: options.retry_budget,
            info: seen.into_values().collect::<Vec<_>>().into(),
            role: Role::Service,
        })
    }

    /// A client for a known cluster size, without discovery (and without retries;
    /// see [`with_retry_budget`](Self::with_retry_budget)).
    pub fn with_shards(nats: async_nats::Client, shards: u32, request_timeout: Duration) -> Self {
        Self {
            nats: Some(nats),
            http: None,
            shards: shards.max(1),
            timeout: request_timeout,
            retry_budget: Duration::ZERO,
            info: std::sync::Arc::default(),
            role: Role::Service,
        }
    }

    /// The same client with another retry budget (zero: no retries).
    pub fn with_retry_budget(mut self, budget: Duration) -> Self {
        self.retry_budget = budget;
        self
    }

    /// Refuses at once what NATS would not let this connection's role publish (it
    /// would otherwise only time out).
    fn allowed(&self, op: &str) -> Result<(), ClientError> {
        let internal = op.starts_with(subject::INTERNAL_TOKEN);
        let refused = match &self.role {
            Role::Anonymous => op != Op::UserRegister.as_str(),
            Role::User(_) => internal || op == Op::AuditRun.as_str(),
            Role::Service | Role::Gateway => internal,
            Role::Engine => false,
        };
        if refused {
            return Err(ClientError::new(
                ErrorKind::Forbidden,
                match &self.role {
                    Role::Anonymous => format!(
                        "{op} needs a user connection (--user NAME, with the key registered) or the service role's credentials in the NATS URL; anonymous connections may only register"
                    ),
                    Role::User(_) => format!(
                        "{op} is not open to user connections (it needs the service role's credentials in the NATS URL)"
                    ),
                    _ => format!("{op} is not open to the {} role", self.role),
                },
            ));
        }
        Ok(())
    }

    /// Number of shards.
    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// What discovery found.
    pub fn shard_info(&self) -> &[ShardInfo] {
        &self.info
    }

    /// The NATS connection (none over HTTP).
    pub fn nats(&self) -> Option<&async_nats::Client> {
        self.nats.as_ref()
    }

    fn need_nats(&self, what: &str) -> Result<&async_nats::Client, ClientError> {
        self.nats.as_ref().ok_or_else(|| {
            ClientError::new(
                ErrorKind::Unavailable,
                format!("{what} needs a NATS connection; over HTTP use the gateway's API (/api/v1/events for pushes)"),
            )
        })
    }

    /// The shard owning `key`.
    pub fn shard_of(&self, key: &str) -> u32 {
        shard_for(key, self.shards)
    }

    /// Sends `req` to `op` on `shard`, with `token` if given, and decodes the reply.
    pub async fn call_shard<Req: Serialize + Validate, Resp: DeserializeOwned>(
        &self,
        shard: u32,
        op: Op,
        token: Option<&str>,
        req: &Req,
    ) -> Result<Resp, ClientError> {
        req.validate()?;
        let payload = encode(req)?;
        self.call_raw(shard, op.as_str(), token, payload).await
    }

    /// Sends raw bytes to `reddit.shard.<shard>.<op>` (also for tests of bad input).
    /// A write gets a fresh idempotency key; timeouts, no-responders and `503`s are
    /// retried with the same key within the retry budget.
    pub async fn call_raw<Resp: DeserializeOwned>(
        &self,
        shard: u32,
        op: &str,
        token: Option<&str>,
        payload: Vec<u8>,
    ) -> Result<Resp, ClientError> {
        let key = Op::parse(op)
            .is_some_and(Op::is_write)
            .then(|| uuid::Uuid::now_v7().hyphenated().to_string());
        self.call_with_key(shard, op, token, payload, key.as_deref())
            .await
    }

    /// Like [`call_raw`](Self::call_raw) with an explicit idempotency key (`None`:
    /// none sent).
    pub async fn call_with_key<Resp: DeserializeOwned>(
        &self,
        shard: u32,
        op: &str,
        token: Option<&str>,
        payload: Vec<u8>,
        idempotency_key: Option<&str>,
    ) -> Result<Resp, ClientError> {
        self.call_decoding(
            shard,
            op,
            token,
            payload,
            idempotency_key,
            reddit_shared::codec::decode_reply_body::<Resp>,
        )
        .await
    }

    /// [`call_with_key`](Self::call_with_key) with the reply's body (once it
    /// is known not to be an error) decoded by `decode`.
    async fn call_decoding<Resp>(
        &self,
        shard: u32,
        op: &str,
        token: Option<&str>,
        payload: Vec<u8>,
        idempotency_key: Option<&str>,
        decode: fn(&[u8]) -> Result<Resp, WireError>,
    ) -> Result<Resp, ClientError> {
        self.allowed(op)?;
        let payload = bytes::Bytes::from(payload);
        let deadline = tokio::time::Instant::now() + self.retry_budget;
        let mut delays = reddit_shared::backoff::delays(FIRST_BACKOFF, MAX_BACKOFF);
        loop {
            let result = self
                .attempt(shard, op, token, payload.clone(), idempotency_key, decode)
                .await;
            match result {
                Err(e) if e.is_retryable() => {
                    let pause = delays.next().unwrap_or(MAX_BACKOFF);
                    if tokio::time::Instant::now() + pause >= deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(pause).await;
                }
                other => return other,
            }
        }
    }

    async fn attempt<Resp>(
        &self,
        shard: u32,
        op: &str,
        token: Option<&str>,
        payload: bytes::Bytes,
        idempotency_key: Option<&str>,
        decode: fn(&[u8]) -> Result<Resp, WireError>,
    ) -> Result<Resp, ClientError> {
        let mut request = async_nats::Request::new()
            .payload(payload)
            .timeout(Some(self.timeout));
        if token.is_some() || idempotency_key.is_some() {
            let mut headers = async_nats::HeaderMap::new();
            if let Some(token) = token {
                headers.insert(AUTH_HEADER, bearer(token));
            }
            if let Some(key) = idempotency_key {
                headers.insert(IDEMPOTENCY_HEADER, key);
            }
            request = request.headers(headers);
        }
        let subject = subject::request_raw(shard, op);
        let msg = self
            .need_nats("a raw request")?
            .send_request(subject, request)
            .await
            .map_err(|e| {
                let what = format!("{op} to shard {shard}");
                match reddit_shared::connect::request_failure(&what, &e) {
                    (_, true) => ClientError::new(
                        ErrorKind::TimedOut,
                        format!("{what}: no answer within {:?}", self.timeout),
                    ),
                    (wire, false) => ClientError::from(wire),
                }
            })?;
        reddit_shared::connect::decode_message_with(&msg, |body| decode(body))
            .map_err(ClientError::from)
    }

    /// Sends any request of the contract ([`Rpc`]) to the shard its
    /// [`route`](Rpc::route) names (the caller's own for [`Route::Caller`], shard 0
    /// for [`Route::AnyShard`]; see [`send_to`](Self::send_to)), with `session`'s
    /// token if given, and decodes its reply type.
    pub async fn send<R: Rpc>(
        &self,
        session: Option<&Session>,
        req: &R,
    ) -> Result<R::Reply, ClientError> {
        let shard = self.route(session, req)?;
        self.send_to(shard, session, req).await
    }

    /// [`send`](Self::send) with the caller's idempotency key (a UUID) on a write
    /// instead of a fresh one, so that a repetition of the whole call (an HTTP
    /// client retrying) gets the first answer. `None`: like `send`.
    pub async fn send_keyed<R: Rpc>(
        &self,
        session: Option<&Session>,
        req: &R,
        key: Option<&str>,
    ) -> Result<R::Reply, ClientError> {
        let Some(key) = key.filter(|_| R::is_write()) else {
            return self.send(session, req).await;
        };
        if let Some(http) = &self.http {
            req.validate()?;
            let token = session.map(|s| s.token.as_str());
            return http.call(R::OP, None, token, req, Some(key)).await;
        }
        let shard = self.route(session, req)?;
        req.validate()?;
        let token = session.map(|s| s.token.as_str());
        self.call_with_key(shard, R::OP.as_str(), token, encode(req)?, Some(key))
            .await
    }

    /// The shard `req` goes to ([`Rpc::route`]).
    fn route<R: Rpc>(&self, session: Option<&Session>, req: &R) -> Result<u32, ClientError> {
        Ok(match req.route() {
            Route::Key(key) => self.shard_of(key),
            Route::AnyShard => 0,
            Route::Caller => {
                let s = session.ok_or_else(|| {
                    ClientError::new(
                        ErrorKind::Unauthorized,
                        format!("{} acts as a user: it needs a session", R::OP.as_str()),
                    )
                })?;
                self.shard_of(s.username.key())
            }
        })
    }

    /// [`send`](Self::send) to shard `shard`.
    pub async fn send_to<R: Rpc>(
        &self,
        shard: u32,
        session: Option<&Session>,
        req: &R,
    ) -> Result<R::Reply, ClientError> {
        self.send_to_as(shard, session, req, reddit_shared::codec::decode_reply_body)
            .await
    }

    /// [`send`](Self::send), the reply read as `T` instead of `R::Reply`: over
    /// NATS the MessagePack body by `decode` (a reader that scans the bytes
    /// for the fields it needs, as the simulator does with feed pages), over
    /// HTTP the JSON body with serde.
    pub async fn send_decoding<R: Rpc, T: DeserializeOwned>(
        &self,
        session: Option<&Session>,
        req: &R,
        decode: fn(&[u8]) -> Result<T, WireError>,
    ) -> Result<T, ClientError> {
        let shard = self.route(session, req)?;
        self.send_to_as(shard, session, req, decode).await
    }

    /// Sends `req` to `shard` over HTTP (the JSON reply read as `T`) or NATS
    /// (the MessagePack reply's body read by `decode`).
    async fn send_to_as<R: Rpc, T: DeserializeOwned>(
        &self,
        shard: u32,
        session: Option<&Session>,
        req: &R,
        decode: fn(&[u8]) -> Result<T, WireError>,
    ) -> Result<T, ClientError> {
        req.validate()?;
        let token = session.map(|s| s.token.as_str());
        let key = R::is_write().then(|| uuid::Uuid::now_v7().hyphenated().to_string());
        if let Some(http) = &self.http {
            let shard = matches!(req.route(), Route::AnyShard).then_some(shard);
            return http.call(R::OP, shard, token, req, key.as_deref()).await;
        }
        let payload = encode(req)?;
        self.call_decoding(
            shard,
            R::OP.as_str(),
            token,
            payload,
            key.as_deref(),
            decode,
        )
        .await
    }

    /// `user.register`.
    pub async fn register(
        &self,
        username: &Username,
        identity: &Identity,
    ) -> Result<UserView, ClientError> {
        let req = RegisterRequest {
            username: username.clone(),
            public_key: identity.public_key_hex(),
        };
        self.send(None, &req).await
    }

    /// Logs in by key: `auth.challenge`, sign, `auth.login`.
    pub async fn login(
        &self,
        username: &Username,
        identity: &Identity,
    ) -> Result<Session, ClientError> {
        // A challenge is single-use: a login attempt whose reply was lost cannot be
        // repeated as is, so a retry starts over with a new challenge.
        let deadline = tokio::time::Instant::now() + self.retry_budget;
        let shard = self.shard_of(username.key());
        let mut delays = reddit_shared::backoff::delays(FIRST_BACKOFF, MAX_BACKOFF);
        let reply: LoginReply = loop {
            let username_owned = username.clone();
            let challenge = self
                .send(
                    None,
                    &ChallengeRequest {
                        username: username_owned,
                    },
                )
                .await?;
            let req = LoginRequest {
                username: username.clone(),
                signature: identity.sign_login(username, &challenge.challenge),
                challenge: challenge.challenge,
            };
            req.validate()?;
            let attempt = match &self.http {
                Some(http) => http.call_once(Op::AuthLogin, &req).await,
                None => {
                    let payload = encode(&req)?.into();
                    self.attempt(
                        shard,
                        Op::AuthLogin.as_str(),
                        None,
                        payload,
                        None,
                        reddit_shared::codec::decode_reply_body,
                    )
                    .await
                }
            };
            match attempt {
                Err(e) if e.is_retryable() => {
                    let pause = delays.next().unwrap_or(MAX_BACKOFF);
                    if tokio::time::Instant::now() + pause >= deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(pause).await;
                }
                other => break other?,
            }
        };
        let username = reply
            .username
            .parse::<Username>()
            .unwrap_or_else(|_| username.clone());
        Ok(Session {
            username,
            token: reply.token,
            expires_at: reply.expires_at,
        })
    }

    /// `user.get`.
    pub async fn get_user(&self, username: &Username) -> Result<UserView, ClientError> {
        let username = username.clone();
        self.send(None, &GetUserRequest { username }).await
    }

    /// `sub.create`.
    pub async fn create_subreddit(
        &self,
        session: &Session,
        name: &SubredditName,
        description: &str,
    ) -> Result<SubredditView, ClientError> {
        let (name, description) = (name.clone(), description.to_owned());
        let req = CreateSubredditRequest { name, description };
        self.send(Some(session), &req).await
    }

    /// `sub.get`.
    pub async fn get_subreddit(&self, name: &SubredditName) -> Result<SubredditView, ClientError> {
        let name = name.clone();
        self.send(None, &GetSubredditRequest { name }).await
    }

    /// `sub.list` on every shard, merged: most members first.
    pub async fn list_subreddits(&self, limit: u32) -> Result<Vec<SubredditView>, ClientError> {
        let req = ListSubredditsRequest { limit: Some(limit) };
        let calls = (0..self.shards).map(|k| self.send_to(k, None, &req));
        let mut all = Vec::new();
        for r in futures::future::join_all(calls).await {
            all.extend(r?.subreddits);
        }
        all.sort_by(|a, b| {
            b.members
                .cmp(&a.members)
                .then_with(|| a.name.key().cmp(b.name.key()))
        });
        all.truncate(limit as usize);
        Ok(all)
    }

    /// `sub.join`.
    pub async fn join(
        &self,
        session: &Session,
        name: &SubredditName,
    ) -> Result<MembershipReply, ClientError> {
        let name = name.clone();
        let req = JoinRequest(MembershipRequest { name });
        self.send(Some(session), &req).await
    }

    /// `sub.leave`.
    pub async fn leave(
        &self,
        session: &Session,
        name: &SubredditName,
    ) -> Result<MembershipReply, ClientError> {
        let name = name.clone();
        let req = LeaveRequest(MembershipRequest { name });
        self.send(Some(session), &req).await
    }

    /// `post.get`.
    pub async fn get_post(
        &self,
        subreddit: &SubredditName,
        id: PostId,
    ) -> Result<PostView, ClientError> {
        let subreddit = subreddit.clone();
        self.send(None, &GetPostRequest { subreddit, id }).await
    }

    /// `dm.send`.
    pub async fn send_dm(
        &self,
        session: &Session,
        to: &Username,
        body: &str,
    ) -> Result<DmView, ClientError> {
        let (to, body) = (to.clone(), body.to_owned());
        self.send(Some(session), &SendDmRequest { to, body }).await
    }

    /// `dm.reply`.
    pub async fn reply_dm(
        &self,
        session: &Session,
        dm_id: DmId,
        body: &str,
    ) -> Result<DmView, ClientError> {
        let body = body.to_owned();
        self.send(Some(session), &ReplyDmRequest { dm_id, body })
            .await
    }

    /// `dm.read`.
    pub async fn mark_read(
        &self,
        session: &Session,
        ids: Vec<DmId>,
    ) -> Result<MarkReadReply, ClientError> {
        self.send(Some(session), &MarkReadRequest { ids }).await
    }

    /// `shard.stats` of one shard.
    pub async fn shard_stats(&self, shard: u32) -> Result<ShardStats, ClientError> {
        self.send_to(shard, None, &StatsRequest {}).await
    }

    /// `shard.stats` of every shard.
    pub async fn all_stats(&self) -> Result<Vec<ShardStats>, ClientError> {
        let calls = (0..self.shards).map(|k| self.shard_stats(k));
        futures::future::join_all(calls).await.into_iter().collect()
    }

    /// Requests each shard has taken since it started, from `$SRV.STATS`
    /// (answered by each shard's service task, not queued behind its requests).
    /// Waits until every shard answered, or `timeout`.
    pub async fn shard_requests(
        &self,
        timeout: Duration,
    ) -> Result<BTreeMap<u32, u64>, ClientError> {
        let err = |e: String| ClientError::new(ErrorKind::Connect, e);
        let nats = self.need_nats("$SRV.STATS")?;
        let inbox = nats.new_inbox();
        let mut replies = nats
            .subscribe(inbox.clone())
            .await
            .map_err(|e| err(e.to_string()))?;
        nats.publish_with_reply(subject::service_stats(), inbox, Vec::new().into())
            .await
            .map_err(|e| err(e.to_string()))?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = BTreeMap::new();
        while (out.len() as u32) < self.shards {
            let Ok(Some(msg)) = tokio::time::timeout_at(deadline, replies.next()).await else {
                break;
            };
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&msg.payload) else {
                continue;
            };
            // STATS replies carry no metadata: match the instance id from discovery.
            let id = v["id"].as_str().unwrap_or_default();
            let shard = v["metadata"]["shard"]
                .as_str()
                .and_then(|s| s.parse::<u32>().ok())
                .or_else(|| self.info.iter().find(|i| i.instance == id).map(|i| i.shard));
            let received = v["endpoints"][0]["data"]["received"].as_u64();
            if let (Some(shard), Some(received)) = (shard, received) {
                out.insert(shard, received);
            }
        }
        Ok(out)
    }

    /// `audit.run`, coordinated by shard 0. An audit reads every shard's state, so it
    /// may take longer than other requests: it waits at least 120 s (a missing shard
    /// still fails at once).
    pub async fn audit(&self, max_violations: u32) -> Result<AuditReport, ClientError> {
        let req = AuditRequest {
            max_violations: Some(max_violations),
        };
        let patient = Self {
            timeout: self.timeout.max(Duration::from_secs(120)),
            ..self.clone()
        };
        patient.send_to(0, None, &req).await
    }

    /// Push events for `user` (`reddit.events.user.<username>`).
    pub async fn user_events(&self, user: &Username) -> Result<EventStream, ClientError> {
        self.events(subject::user_events(user.key())).await
    }

    /// Push events for a subreddit (`reddit.events.sub.<name>`).
    pub async fn subreddit_events(&self, name: &SubredditName) -> Result<EventStream, ClientError> {
        self.events(subject::subreddit_events(name.key())).await
    }

    async fn events(&self, subject: String) -> Result<EventStream, ClientError> {
        let nats = self.need_nats("push events")?;
        let sub = nats
            .subscribe(subject)
            .await
            .map_err(|e| ClientError::new(ErrorKind::Connect, e.to_string()))?;
        nats.flush()
            .await
            .map_err(|e| ClientError::new(ErrorKind::Connect, e.to_string()))?;
        Ok(EventStream { sub })
    }
}

/// A live subscription to push events. Dropping it unsubscribes.
#[derive(Debug)]
pub struct EventStream {
    sub: async_nats::Subscriber,
}

impl EventStream {
    /// The next event; `None` when the connection closed. Undecodable messages are
    /// skipped.
    pub async fn next(&mut self) -> Option<PushEvent> {
        while let Some(msg) = self.sub.next().await {
            if let Ok(event) = decode::<PushEvent>(&msg.payload) {
                return Some(event);
            }
        }
        None
    }
}
