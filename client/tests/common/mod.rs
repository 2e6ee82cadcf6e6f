//! Test harness: a real `nats-server` on a free loopback port (killed on drop) and
//! in-process engine shards served over it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use reddit_client::{ClientOptions, Identity, RedditClient, Session};
use reddit_shared::names::Username;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Test secret shared by the shards of a test (long enough to be accepted without
/// `--dev`).
pub const SECRET: &str = "reddit-engine-tests-0b6f3c9a71d24e58";

/// The URL `url` (a role URL of a [`NatsServer`]) for the engine role.
pub fn engine_url(url: &str) -> String {
    url.replace("://service:", "://engine:")
}

/// The URL `url` (a role URL of a [`NatsServer`]) for the HTTP gateway role.
pub fn gateway_url(url: &str) -> String {
    url.replace("://service:", "://gateway:")
}

/// The URL `url` (the service role's) as the chat gateways' role.
pub fn chat_url(url: &str) -> String {
    url.replace("://service:", "://chat:")
}

/// The URL `url` without credentials: an anonymous connection (or one that
/// authenticates with a user key).
pub fn anon_url(url: &str) -> String {
    reddit_shared::connect::strip_credentials(url)
}

/// A raw NATS connection to `url` as the service role (its inbox prefix).
pub async fn connect_service(url: &str) -> async_nats::Client {
    reddit_shared::connect::connect_with(
        url,
        "test-service",
        async_nats::ConnectOptions::new()
            .custom_inbox_prefix(reddit_shared::subject::SERVICE_INBOX),
        None,
    )
    .await
    .unwrap()
}

/// A client with the engine role's connection (to inject engine-to-engine
/// requests, as a test of corruption or of the audit).
pub async fn engine_client(url: &str, shards: u32) -> RedditClient {
    let nats = reddit_shared::connect::connect_with(
        &url.replace("://service:", "://engine-work:"),
        "test-engine-work",
        async_nats::ConnectOptions::new().custom_inbox_prefix(reddit_shared::subject::ENGINE_INBOX),
        None,
    )
    .await
    .unwrap();
    RedditClient::with_shards(nats, shards, Duration::from_secs(5))
        .with_role(reddit_client::Role::Engine)
}

/// A raw NATS connection to `url` as the engine's log role (for JetStream checks).
pub async fn connect_engine(url: &str) -> async_nats::Client {
    reddit_shared::connect::connect_with(
        &engine_url(url),
        "test-engine",
        async_nats::ConnectOptions::new().custom_inbox_prefix(reddit_shared::subject::ENGINE_INBOX),
        None,
    )
    .await
    .unwrap()
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A nats-server binary: $NATS_SERVER_BIN, the project's install step's, or PATH.
pub fn nats_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        return PathBuf::from(p);
    }
    let out = Command::new("bash")
        .arg(root().join("scripts/install-nats.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/install-nats.sh");
    assert!(out.status.success(), "scripts/install-nats.sh failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Waits for `cond` up to `deadline`, polling.
pub async fn eventually<F, Fut>(what: &str, deadline: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if cond().await {
            return;
        }
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A nats-server child process with JetStream on a random loopback port.
pub struct NatsServer {
    child: Child,
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
    password: String,
    /// Lines added to its configuration (a cluster node's name and routes).
    extra_conf: String,
}

impl NatsServer {
    /// Starts one with extra `args`.
    pub fn start_with(args: &[&str]) -> Self {
        let password = format!("{:032x}", rand::random::<u128>());
        Self::start_configured(args, &password, String::new())
    }

    /// Starts one with `extra_conf` in its configuration file (after the
    /// defaults, so it overrides them).
    pub fn start_with_conf(extra_conf: &str) -> Self {
        let password = format!("{:032x}", rand::random::<u128>());
        Self::start_configured(&[], &password, extra_conf.to_owned())
    }

    /// Starts one with `password` for every role and `extra_conf` in its
    /// configuration file.
    fn start_configured(args: &[&str], password: &str, extra_conf: String) -> Self {
        Self::try_start_configured(args, password, extra_conf).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`start_configured`](Self::start_configured), or why the server did
    /// not start (it exited: a port in its configuration was taken).
    fn try_start_configured(
        args: &[&str],
        password: &str,
        extra_conf: String,
    ) -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!(
            "reddit-test-nats-{}-{}",
            std::process::id(),
            uuid::Uuid::now_v7()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let started = Self::try_spawn(&dir, "-1", &args, password, &extra_conf);
        let (child, port) = match started {
            Ok(started) => started,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        Ok(Self {
            child,
            port,
            dir,
            args,
            password: password.to_owned(),
            extra_conf,
        })
    }

    /// Kills it (SIGKILL) and starts it again on the same port with the same
    /// JetStream directory, as a crashed and restarted server.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for entry in std::fs::read_dir(&self.dir).unwrap().flatten() {
            if entry.file_name().to_string_lossy().ends_with(".ports") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let (child, port) = Self::spawn(
            &self.dir,
            &self.port.to_string(),
            &self.args,
            &self.password,
            &self.extra_conf,
        );
        assert_eq!(port, self.port);
        self.child = child;
    }

    /// Kills it and starts it again on the same port without JetStream (its
    /// JetStream directory is kept for a later [`restart`](Self::restart)): what
    /// engines see while a restarted server has not loaded its streams yet.
    pub fn restart_without_jetstream(&mut self) {
        self.args.push("--no-jetstream".into());
        self.restart();
        self.args.retain(|a| a != "--no-jetstream");
    }

    /// Replaces the extra lines of its configuration and has it reload
    /// (SIGHUP), without a restart.
    pub fn reconfigure(&mut self, extra_conf: String) {
        Self::write_conf(&self.dir, &self.args, &extra_conf);
        self.extra_conf = extra_conf;
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "cannot signal nats-server");
    }

    /// Kills it (SIGKILL) without restarting.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Writes `nats.conf` in `dir` and returns its path.
    fn write_conf(dir: &Path, args: &[String], extra_conf: &str) -> PathBuf {
        let jetstream = if args.iter().any(|a| a == "--no-jetstream") {
            String::new()
        } else {
            format!(
                "jetstream {{\n  store_dir: {:?}\n  sync_interval: always\n}}\n",
                dir.join("jetstream")
            )
        };
        let conf = dir.join("nats.conf");
        std::fs::write(
            &conf,
            format!("max_payload: 1MB\n{extra_conf}{jetstream}include ./nats-auth.conf\n"),
        )
        .unwrap();
        conf
    }

    /// Starts nats-server with the project's own roles (`nats-auth.conf`, copied
    /// next to a generated config) and JetStream unless `--no-jetstream`.
    fn spawn(
        dir: &Path,
        port: &str,
        args: &[String],
        password: &str,
        extra_conf: &str,
    ) -> (Child, u16) {
        Self::try_spawn(dir, port, args, password, extra_conf).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`spawn`](Self::spawn), or why nats-server did not start: it exited
    /// (a port it was told to listen on was taken), or it wrote no ports file
    /// within 10 s (then it is killed).
    fn try_spawn(
        dir: &Path,
        port: &str,
        args: &[String],
        password: &str,
        extra_conf: &str,
    ) -> Result<(Child, u16), String> {
        // As in nats.conf: every JetStream write is synced before it is
        // acknowledged, so a killed server keeps what it acknowledged.
        std::fs::copy(root().join("nats-auth.conf"), dir.join("nats-auth.conf")).unwrap();
        let conf = Self::write_conf(dir, args, extra_conf);
        let issuer = reddit_engine::callout::Issuer::from_secret(SECRET.as_bytes())
            .unwrap()
            .public_key();
        let args: Vec<&String> = args.iter().filter(|a| *a != "--no-jetstream").collect();
        let mut child = Command::new(nats_server_bin())
            .args(["-a", "127.0.0.1", "-p", port, "--ports_file_dir"])
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .args(args)
            .env("REDDIT_ENGINE_PASSWORD", password)
            .env("REDDIT_SERVICE_PASSWORD", password)
            .env("REDDIT_GATEWAY_PASSWORD", password)
            .env("REDDIT_CHAT_PASSWORD", password)
            .env("REDDIT_CALLOUT_ISSUER", issuer)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        let pid = child.id();
        let start = Instant::now();
        let port = loop {
            let found = std::fs::read_dir(dir)
                .unwrap()
                .filter_map(Result::ok)
                .find(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .ends_with(&format!("_{pid}.ports"))
                });
            if let Some(entry) = found {
                if let Ok(text) = std::fs::read_to_string(entry.path()) {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                        let url = v["nats"][0].as_str().unwrap_or_default().to_owned();
                        if let Some(port) = url.rsplit(':').next().and_then(|p| p.parse().ok()) {
                            break port;
                        }
                    }
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("nats-server exited at start ({status})"));
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                return Err("nats-server did not start within 10 s".to_owned());
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        Ok((child, port))
    }

    /// Starts a plain one (with JetStream).
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts one without JetStream.
    pub fn start_without_jetstream() -> Self {
        Self::start_with(&["--no-jetstream"])
    }

    /// `nats://service:<password>@127.0.0.1:<port>`: the service role, which tests
    /// use to act for many users (like the simulator); [`engine_url`] and
    /// [`anon_url`] give the other roles.
    pub fn url(&self) -> String {
        format!("nats://service:{}@127.0.0.1:{}", self.password, self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// The route user of [`NatsCluster`] nodes.
const ROUTE_USER: &str = "route";
/// Its password (loopback-only test clusters).
const ROUTE_PASSWORD: &str = "route-test-password";

/// A 3-node (or `n`-node) NATS cluster on loopback, JetStream on every node,
/// the project's roles on each; URLs list every node.
pub struct NatsCluster {
    /// The nodes.
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `n` nodes routed to each other and waits until JetStream answers.
    pub async fn start(n: usize) -> Self {
        let password = format!("{:032x}", rand::random::<u128>());
        // Route ports must be known up front: take free ones from the OS. One
        // may be taken again before its node listens on it (another test's
        // server asking the OS for a port); that node then exits, and the
        // cluster starts again on other ports.
        let mut attempts = 0;
        let nodes = loop {
            attempts += 1;
            let ports: Vec<u16> = (0..n)
                .map(|_| {
                    std::net::TcpListener::bind("127.0.0.1:0")
                        .unwrap()
                        .local_addr()
                        .unwrap()
                        .port()
                })
                .collect();
            let started: Result<Vec<NatsServer>, String> = (0..n)
                .map(|i| {
                    let conf = Self::node_conf(i, &ports, ROUTE_USER);
                    NatsServer::try_start_configured(&[], &password, conf)
                })
                .collect();
            match started {
                Ok(nodes) => break nodes,
                Err(e) if attempts < 3 => eprintln!("a cluster node did not start ({e}); again"),
                Err(e) => panic!("a cluster node did not start, {attempts} times: {e}"),
            }
        };
        let cluster = Self { nodes };
        let url = cluster.url();
        eventually(
            "the JetStream cluster to elect a leader",
            Duration::from_secs(30),
            || {
                let url = url.clone();
                async move {
                    let nats = connect_engine(&url).await;
                    async_nats::jetstream::new(nats)
                        .query_account()
                        .await
                        .is_ok()
                }
            },
        )
        .await;
        cluster
    }

    /// Node `i`'s cluster block: it accepts routes from `user` and connects
    /// to the others as `user` (see [`partition`](Self::partition)).
    fn node_conf(i: usize, ports: &[u16], user: &str) -> String {
        let routes: Vec<String> = ports
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, p)| format!("\"nats-route://{user}:{ROUTE_PASSWORD}@127.0.0.1:{p}\""))
            .collect();
        format!(
            "server_name: \"n{i}\"\ncluster {{\n  name: \"reddit\"\n  listen: \"127.0.0.1:{}\"\n  authorization {{ user: {user}, password: {ROUTE_PASSWORD} }}\n  routes: [{}]\n}}\n",
            ports[i],
            routes.join(", ")
        )
    }

    /// Cuts node `i` off from the others (a network partition, as its
    /// clients see it: they stay connected to it, but nothing crosses to the
    /// rest): it reloads its configuration with route credentials nobody
    /// else shares, which closes its routes and refuses theirs.
    pub fn partition(&mut self, i: usize) {
        let ports = self.route_ports();
        self.nodes[i].reconfigure(Self::node_conf(i, &ports, "partitioned"));
    }

    /// Undoes [`partition`](Self::partition): the routes come back.
    pub fn heal(&mut self, i: usize) {
        let ports = self.route_ports();
        self.nodes[i].reconfigure(Self::node_conf(i, &ports, ROUTE_USER));
    }

    fn route_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .map(|n| {
                let listen = n.extra_conf.split("listen: \"127.0.0.1:").nth(1).unwrap();
                listen[..listen.find('"').unwrap()].parse().unwrap()
            })
            .collect()
    }

    /// Every node's service-role URL, comma-separated.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running shard in this process.
pub struct ShardHandle {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), reddit_engine::EngineError>>,
}

impl ShardHandle {
    /// Whether it has ended (by itself, or stopped).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits for it to end by itself and returns its result.
    pub async fn join(mut self) -> Result<(), reddit_engine::EngineError> {
        self.stop.take();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the shard ends")
            .unwrap()
    }

    /// Stops it gracefully and returns its result.
    pub async fn stop(mut self) -> Result<(), reddit_engine::EngineError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await.unwrap()
    }
}

/// Starts shard `shard` of `shards` in this process. Returns once it serves.
pub async fn start_shard(url: &str, shard: u32, shards: u32) -> ShardHandle {
    start_shard_with(reddit_engine::Config::new(url, shard, shards, SECRET)).await
}

/// Starts the shard `config` describes in this process. Returns once it serves.
pub async fn start_shard_with(config: reddit_engine::Config) -> ShardHandle {
    let (url, shard) = (config.nats_url.clone(), config.shard);
    let handle = spawn_shard(config);
    wait_serving(&url, shard).await;
    handle
}

/// Spawns a shard with `config` without waiting (its URL turned into the engine
/// role's).
pub fn spawn_shard(mut config: reddit_engine::Config) -> ShardHandle {
    config.nats_url = engine_url(&config.nats_url);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(reddit_engine::run(config, async move {
        let _ = rx.await;
    }));
    ShardHandle {
        stop: Some(tx),
        task,
    }
}

/// Waits until shard `shard` answers `shard.stats`.
pub async fn wait_serving(url: &str, shard: u32) {
    let nats = connect_service(url).await;
    let client = RedditClient::with_shards(nats, shard + 1, Duration::from_secs(2));
    eventually("a shard to serve", Duration::from_secs(10), || {
        let c = client.clone();
        async move { c.shard_stats(shard).await.is_ok() }
    })
    .await;
}

/// NATS plus `n` shards and a discovered client.
pub struct Cluster {
    pub nats: NatsServer,
    pub shards: Vec<Option<ShardHandle>>,
    pub client: RedditClient,
}

impl Cluster {
    /// Starts NATS and `n` shards.
    pub async fn start(n: u32) -> Self {
        Self::start_with(n, |_| {}).await
    }

    /// Starts NATS and `n` shards, each configured by `configure` after the
    /// defaults.
    pub async fn start_with(n: u32, configure: impl Fn(&mut reddit_engine::Config)) -> Self {
        let nats = NatsServer::start();
        let mut shards = Vec::new();
        for k in 0..n {
            let mut config = reddit_engine::Config::new(nats.url(), k, n, SECRET);
            configure(&mut config);
            shards.push(Some(start_shard_with(config).await));
        }
        let client = RedditClient::connect(&nats.url(), ClientOptions::default())
            .await
            .unwrap();
        assert_eq!(client.shards(), n);
        Self {
            nats,
            shards,
            client,
        }
    }

    /// A fresh client connection to this cluster.
    pub async fn new_client(&self) -> RedditClient {
        RedditClient::connect(&self.nats.url(), ClientOptions::default())
            .await
            .unwrap()
    }

    /// Stops shard `k` gracefully.
    pub async fn stop_shard(&mut self, k: usize) {
        if let Some(h) = self.shards[k].take() {
            h.stop().await.unwrap();
        }
    }

    /// Stops every shard gracefully, asserting each exits cleanly.
    pub async fn stop(mut self) {
        for k in 0..self.shards.len() {
            self.stop_shard(k).await;
        }
    }

    /// Registers and logs in `name`.
    pub async fn user(&self, name: &str) -> Session {
        user(&self.client, name).await
    }
}

/// Registers and logs in `name` with a fresh key.
pub async fn user(client: &RedditClient, name: &str) -> Session {
    let username: Username = name.parse().unwrap();
    let id = Identity::generate();
    client.register(&username, &id).await.unwrap();
    client.login(&username, &id).await.unwrap()
}

/// Parses a name.
pub fn un(name: &str) -> Username {
    name.parse().unwrap()
}

/// Parses a subreddit name.
pub fn sn(name: &str) -> reddit_shared::names::SubredditName {
    name.parse().unwrap()
}

/// A name starting with `prefix` that hashes to `shard` of `shards`.
pub fn name_on(prefix: &str, shard: u32, shards: u32) -> String {
    (0..10_000)
        .map(|i| format!("{prefix}{i}"))
        .find(|n| reddit_shared::routing::shard_for(n, shards) == shard)
        .expect("some name hashes to every shard")
}

/// A post's whole comment tree in the default order, read anonymously.
pub async fn comment_tree(
    client: &RedditClient,
    sub: &reddit_shared::names::SubredditName,
    post: reddit_shared::ids::PostId,
) -> reddit_shared::protocol::comment::CommentTree {
    client
        .send(
            None,
            &reddit_shared::protocol::comment::CommentTreeRequest {
                subreddit: sub.clone(),
                post_id: post,
                sort: Default::default(),
                limit: None,
                root: None,
            },
        )
        .await
        .unwrap()
}

/// Waits until no shard has cross-shard updates in flight.
pub async fn quiesce(client: &RedditClient) {
    eventually(
        "cross-shard updates to drain",
        Duration::from_secs(10),
        || async {
            client
                .all_stats()
                .await
                .map(|s| {
                    s.iter().all(|s| {
                        // Every entry recorded is in a record started: none
                        // waits for company (`--log-unwaited-linger-ms`).
                        let recorded: u64 = s.wal_by_op.values().map(|l| l.entries).sum();
                        s.pending_sync == 0 && s.queue_depth == 0 && recorded == s.wal_entries
                    })
                })
                .unwrap_or(false)
        },
    )
    .await;
}

/// A small simulation (300 users, 20 subreddits, 2 worker processes, open loop,
/// DM-heavy mix, reposts, short sessions) against `url`, writing to `out`; tests
/// adjust what they care about.
pub fn small_sim(url: &str, out: &Path) -> reddit_client::sim::SimConfig {
    use reddit_client::sim::{Load, Mix, SimConfig};
    SimConfig {
        nats_url: url.to_owned(),
        http: None,
        tag: "ci".into(),
        users: 300,
        subreddits: 20,
        zipf: 1.0,
        joins_per_user: 3.0,
        mix: Mix {
            dm: 10.0,
            ..Mix::default()
        },
        repost_share: 0.2,
        online_mean_s: 1.0,
        offline_mean_s: 1.0,
        load: Load::Open {
            rate: None,
            think_ms: 150.0,
        },
        max_in_flight: 1024,
        duration_s: 4.0,
        seed: 7,
        processes: 2,
        out_dir: out.to_owned(),
        request_timeout_ms: 10_000,
        retry_budget_ms: 30_000,
        setup_in_flight: 64,
        seed_posts: 0,
        seed_comments: 0,
    }
}

/// Builds a binary of the workspace (a no-op when it is fresh) and returns its path.
/// `cargo test -p reddit-client` would not rebuild another package's binary.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--bin", name])
        .current_dir(root())
        .status()
        .unwrap();
    assert!(status.success(), "cargo build --bin {name} failed");
    dir.join(name)
}

/// The `reddit-engine` arguments for shard `shard` of `shards` on the NATS server
/// of `url` (as the engine role).
pub fn engine_args(url: &str, shard: u32, shards: u32) -> Vec<String> {
    vec![
        "--nats-url".into(),
        engine_url(url),
        "--shard".into(),
        shard.to_string(),
        "--shards".into(),
        shards.to_string(),
    ]
}

/// Starts shard `shard` of `shards` as a `reddit-engine` process with `args`
/// (killed with SIGKILL when the guard drops: a crash).
pub fn shard_process(url: &str, shard: u32, shards: u32, args: &[&str]) -> ChildGuard {
    let child = Command::new(workspace_bin("reddit-engine"))
        .args(engine_args(url, shard, shards))
        .args(args)
        .env("REDDIT_SECRET", SECRET)
        .env(
            "RUST_LOG",
            std::env::var("REDDIT_TEST_ENGINE_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start reddit-engine");
    ChildGuard::new(child)
}

/// Deletes shard `shard`'s snapshot, if any (so a restart replays the whole log).
pub async fn delete_snapshot(url: &str, shard: u32) {
    let js = async_nats::jetstream::new(connect_engine(url).await);
    if let Ok(store) = js
        .get_object_store(reddit_engine::wal::SNAPSHOT_BUCKET)
        .await
    {
        let _ = store.delete(format!("shard-{shard}")).await;
    }
}

/// A child process that is killed when dropped, so a failing test leaves nothing
/// running.
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    /// Takes ownership of `child`.
    pub fn new(child: Child) -> Self {
        Self(Some(child))
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }

    /// Kills it now (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether it has exited (reaping it if so).
    pub fn has_exited(&mut self) -> bool {
        self.0
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    /// Hands the child back (the guard no longer kills it).
    pub fn into_inner(mut self) -> Child {
        self.0.take().expect("child present")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A `reddit-gateway` process on a free port (killed on drop).
pub struct GatewayProcess {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

/// Gateway flags that lift both rate limits: for tests of one address and
/// one token making many requests.
pub const NO_RATE_LIMITS: [&str; 8] = [
    "--rate-per-ip",
    "1000000",
    "--burst-per-ip",
    "1000000",
    "--rate-per-user",
    "1000000",
    "--burst-per-user",
    "1000000",
];

impl GatewayProcess {
    /// Starts the gateway binary `bin` against the NATS server whose service URL
    /// is `nats_url` (it connects as the gateway role), with `extra` flags.
    pub fn start(bin: &Path, nats_url: &str, extra: &[&str]) -> Self {
        Self::start_as(bin, &gateway_url(nats_url), extra)
    }

    /// Starts a front-door binary `bin` (HTTP or chat gateway) that connects
    /// with `role_url` and says `listening on ADDR` first on stdout.
    pub fn start_as(bin: &Path, role_url: &str, extra: &[&str]) -> Self {
        use std::io::BufRead;
        assert!(
            bin.exists(),
            "{} is missing: build the workspace (cargo build --workspace, as scripts/test.sh does)",
            bin.display()
        );
        let mut child = Command::new(bin)
            .args(["--nats-url", role_url])
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the gateway says where it listens within 20 s");
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from the gateway: {line:?}"))
            .to_owned();
        Self { child, base }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Kills it with SIGKILL, as a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops it with SIGTERM (a graceful shutdown) and waits up to 20 s for
    /// it to exit; true if it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
