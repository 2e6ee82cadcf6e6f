//! `reddit-client`: a subcommand per engine operation, for a person at a terminal.
//!
//! `reddit-client register alice` creates alice's key pair in the per-user config
//! directory and registers her; later commands with `--user alice` log in by
//! themselves (challenge + signature) and cache the token. Output is readable by
//! default; `--json` prints the replies as JSON for scripts.

mod output;

/// glibc malloc spent ~14% of a shard's CPU in the mixed workload (allocation
/// churn, `malloc_consolidate`); mimalloc is the allocator of every binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use reddit_client::{
    ClientError, ClientOptions, ErrorKind, Identity, KeyStore, RedditClient, Session,
};
use reddit_shared::auth::{comment_message, post_message};
use reddit_shared::ids::{CommentId, DmId, PostId};
use reddit_shared::names::{SubredditName, Username};
use reddit_shared::protocol::comment::CommentView;
use reddit_shared::protocol::comment::{CommentSort, CommentTreeRequest, CreateCommentRequest};
use reddit_shared::protocol::dm::{DmFolder, ListDmsRequest};
use reddit_shared::protocol::feed::FeedRequest;
use reddit_shared::protocol::post::PostView;
use reddit_shared::protocol::post::{CreatePostRequest, ListPostsRequest, PostSort};
use reddit_shared::protocol::push::PushEvent;
use reddit_shared::protocol::vote::{VoteRequest, VoteTarget};
use reddit_shared::protocol::PostRef;
use serde::Serialize;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

/// Command-line client of the sharded Reddit engine.
#[derive(Parser, Debug)]
#[command(name = "reddit-client", version, about, long_about = None, args_override_self = true)]
struct Cli {
    /// NATS server URL (the only address a client needs). Without credentials the
    /// client connects anonymously (register only) or, with --user, as that user
    /// by their key; with the service role's credentials (nats://service:PW@...)
    /// it may act for any logged-in user and run the audit.
    #[arg(
        long,
        global = true,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    nats_url: String,
    /// Send every request through these HTTP gateways (comma-separated
    /// `http://host:port`) instead of NATS. With `simulate`, the simulated users'
    /// requests go through them (round-robin, failing over); setup and the audit
    /// still use --nats-url.
    #[arg(long, global = true, env = "REDDIT_HTTP")]
    http: Option<String>,
    /// Act as this user (their key must be in the config directory).
    #[arg(long, short, global = true, env = "REDDIT_USER")]
    user: Option<String>,
    /// Print replies as JSON.
    #[arg(long, global = true)]
    json: bool,
    /// After reading posts or comments, check their authors' signatures against
    /// the authors' registered keys (`user.get`); the result goes to stderr, and
    /// the exit status is 1 if any signature does not verify.
    #[arg(long, global = true)]
    verify: bool,
    /// Where keys and tokens are kept [default: $REDDIT_CLIENT_DIR or the platform config dir].
    #[arg(long, global = true)]
    config_dir: Option<PathBuf>,
    /// Timeout of each request attempt, in milliseconds.
    #[arg(long, global = true, default_value_t = 5000)]
    timeout_ms: u64,
    /// How long a request keeps retrying after timeouts, no responders and 503s
    /// (backoff with jitter, same idempotency key), in milliseconds; 0: no retries.
    #[arg(long, global = true, env = "REDDIT_RETRY_MS", default_value_t = 30_000)]
    retry_ms: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a key pair for USERNAME, store it, and register the account.
    Register {
        /// The new user's name (3–20 of A-Z a-z 0-9 _ -).
        username: Username,
    },
    /// Log in as --user now (commands log in by themselves when needed).
    Login,
    /// Print a bearer token of --user (logging in if the cached one is about to
    /// expire): for `/login TOKEN` in the chat gateway, or curl.
    Token,
    /// Show a user's profile (default: --user).
    User {
        /// Whose.
        username: Option<Username>,
    },
    /// Subreddits.
    #[command(subcommand)]
    Sub(SubCommand),
    /// Posts.
    #[command(subcommand)]
    Post(PostCommand),
    /// Comment on a post, or reply to a comment with --parent.
    Comment {
        /// Subreddit of the post.
        subreddit: SubredditName,
        /// The post's id.
        post_id: PostId,
        /// Text.
        body: String,
        /// The comment to answer.
        #[arg(long)]
        parent: Option<CommentId>,
    },
    /// Show a post's comments as an indented tree.
    Comments {
        /// Subreddit of the post.
        subreddit: SubredditName,
        /// The post's id.
        post_id: PostId,
        /// Sibling order.
        #[arg(long, value_enum, default_value = "best")]
        sort: CommentSort,
        /// At most this many comments.
        #[arg(long)]
        limit: Option<u32>,
        /// Only the thread under this comment (to read deeper than one reply shows).
        #[arg(long)]
        root: Option<CommentId>,
    },
    /// Vote on a post or comment.
    Vote {
        /// Subreddit of the item.
        subreddit: SubredditName,
        /// What to vote on.
        #[arg(value_enum)]
        target: VoteTarget,
        /// The post's or comment's id.
        id: uuid::Uuid,
        /// up, down or clear.
        #[arg(value_enum)]
        direction: DirectionArg,
    },
    /// Your feed: posts of the subreddits you joined.
    Feed(FeedArgs),
    /// Direct messages.
    #[command(subcommand)]
    Dm(DmCommand),
    /// Per-shard counters.
    Stats,
    /// Check cross-shard consistency; exits 1 if violations are found.
    Audit {
        /// List at most this many violations.
        #[arg(long, default_value_t = 50)]
        max: u32,
    },
    /// The shards discovery found.
    Shards,
    /// Simulate many users from several client processes and report what the
    /// engine did (see docs/simulator.md).
    Simulate(Box<SimulateArgs>),
    /// Benchmark the engine against the do-nothing responder `reddit-echo` (which
    /// must be running) at several numbers of requests in flight. With --http:
    /// the same reads and votes over NATS (--nats-url) and through a gateway,
    /// side by side: its REST routes over bare connections (one per request in
    /// flight, to the first URL) and the client library's HTTP transport.
    Bench {
        /// Requests in flight, comma-separated.
        #[arg(long, default_value = "1,64,512", value_delimiter = ',')]
        levels: Vec<usize>,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Also write the measurements as JSON here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// One simulation process (started by `simulate`).
    #[command(hide = true)]
    SimWorker {
        /// The run's config.json.
        #[arg(long)]
        config: PathBuf,
        /// Which part of the users.
        #[arg(long)]
        part: u32,
    },
    /// Print live push events for --user (and any --sub) until interrupted.
    Watch {
        /// Also watch new posts in this subreddit (repeatable).
        #[arg(long = "sub")]
        subs: Vec<String>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<usize>,
    },
}

#[derive(Args, Debug)]
struct SimulateArgs {
    /// Simulated users in all processes.
    #[arg(long, default_value_t = 10_000)]
    users: u32,
    /// Client processes (separate OS processes), each simulating a share of the users.
    #[arg(long, default_value_t = 4)]
    processes: u32,
    /// Subreddits.
    #[arg(long, default_value_t = 200)]
    subreddits: u32,
    /// Zipf exponent of subreddit popularity (membership).
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// Mean number of subreddits each user joins at setup.
    #[arg(long, default_value_t = 4.0)]
    joins_per_user: f64,
    /// Action weights, the whole mix (an action not named has weight 0), e.g.
    /// post=5,comment=15,vote=40,dm=5,feed=30,join=3,leave=2.
    #[arg(
        long,
        default_value = "post=5,comment=15,vote=40,dm=5,feed=30,join=3,leave=2"
    )]
    mix: String,
    /// Share of posts that are reposts of posts the user has seen.
    #[arg(long, default_value_t = 0.1)]
    repost_share: f64,
    /// Mean online session, in seconds (exponentially distributed).
    #[arg(long, default_value_t = 20.0)]
    online_mean: f64,
    /// Mean offline session, in seconds (0: always online).
    #[arg(long, default_value_t = 20.0)]
    offline_mean: f64,
    /// Open loop: each online user acts every this many ms on average.
    #[arg(long, default_value_t = 1000.0)]
    think_ms: f64,
    /// Open loop at this many requests per second in all (overrides --think-ms).
    #[arg(long, conflicts_with = "in_flight")]
    rate: Option<f64>,
    /// Closed loop: keep this many requests in flight per process instead.
    #[arg(long)]
    in_flight: Option<usize>,
    /// Open loop: most requests in flight per process.
    #[arg(long, default_value_t = 4096)]
    max_in_flight: usize,
    /// Length of the run in seconds (after setup).
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// Seed of every random choice: the same seed and flags give the same intended actions.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output directory [default: run/sim-<tag>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Prefix making this run's user and subreddit names unique [default: random].
    #[arg(long)]
    tag: Option<String>,
    /// Requests in flight per process during setup.
    #[arg(long, default_value_t = 256)]
    setup_in_flight: usize,
    /// Seed a corpus during setup: this many posts in every subreddit (by the
    /// simulated users; counted in the setup's operations and in the ledger).
    #[arg(long, default_value_t = 0)]
    seed_posts: u32,
    /// And this many comments on every seeded post (every other one a reply to
    /// the one before it).
    #[arg(long, default_value_t = 0)]
    seed_comments: u32,
    /// Exit with status 1 unless the audit and the ledger check pass.
    #[arg(long)]
    check: bool,
}

#[derive(Subcommand, Debug)]
enum SubCommand {
    /// Create a subreddit.
    Create {
        /// Name (3–21 of A-Z a-z 0-9 _).
        name: SubredditName,
        /// What it is about.
        #[arg(long, short, default_value = "")]
        description: String,
    },
    /// Show a subreddit.
    Get {
        /// Name.
        name: SubredditName,
    },
    /// List subreddits, most members first.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 25)]
        limit: u32,
    },
    /// Join a subreddit.
    Join {
        /// Name.
        name: SubredditName,
    },
    /// Leave a subreddit.
    Leave {
        /// Name.
        name: SubredditName,
    },
}

#[derive(Subcommand, Debug)]
enum PostCommand {
    /// Create a text post (or a repost with --repost-of SUB/ID).
    Create {
        /// Where.
        subreddit: SubredditName,
        /// Title.
        title: String,
        /// Body text.
        #[arg(long, short, default_value = "")]
        body: String,
        /// The original post, as SUBREDDIT/ID.
        #[arg(long)]
        repost_of: Option<String>,
    },
    /// Show a post.
    Get {
        /// Subreddit.
        subreddit: SubredditName,
        /// Id.
        id: PostId,
    },
    /// List a subreddit's posts.
    List {
        /// Subreddit.
        subreddit: SubredditName,
        #[command(flatten)]
        page: PageArgs,
    },
}

#[derive(Subcommand, Debug)]
enum DmCommand {
    /// Send a DM.
    Send {
        /// Recipient.
        to: Username,
        /// Text.
        body: String,
    },
    /// Reply to a DM in your inbox.
    Reply {
        /// The DM's id.
        dm_id: DmId,
        /// Text.
        body: String,
    },
    /// List your inbox (or --sent).
    List {
        /// The sent folder instead.
        #[arg(long)]
        sent: bool,
        /// Unread only.
        #[arg(long)]
        unread: bool,
        /// Page size.
        #[arg(long)]
        limit: Option<u32>,
        /// Continue after this cursor.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Mark DMs read.
    Read {
        /// The DMs' ids.
        #[arg(required = true)]
        ids: Vec<DmId>,
    },
}

#[derive(Args, Debug)]
struct PageArgs {
    /// Order.
    #[arg(long, value_enum, default_value = "hot")]
    sort: PostSort,
    /// Page size.
    #[arg(long)]
    limit: Option<u32>,
    /// Continue after this cursor (printed with the previous page).
    #[arg(long)]
    cursor: Option<String>,
}

#[derive(Args, Debug)]
struct FeedArgs {
    #[command(flatten)]
    page: PageArgs,
    /// Read every subreddit's shard now: without it, other shards'
    /// subreddits may show as they were up to the engine's --feed-cache-ms ago.
    #[arg(long)]
    fresh: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum DirectionArg {
    Up,
    Down,
    Clear,
}

struct Ctx {
    client: RedditClient,
    store: KeyStore,
    user: Option<String>,
    json: bool,
    verify: bool,
}

/// Something read that its author may have signed: what to call it, who wrote
/// it, the signature, and the bytes signed.
struct Signed {
    what: String,
    author: String,
    signature: Option<String>,
    bytes: Vec<u8>,
}

impl Signed {
    fn post(p: &PostView) -> Self {
        Self {
            what: format!("post {} by {}", p.id, p.author),
            author: p.author.clone(),
            signature: p.signature.clone(),
            bytes: reddit_client::identity::signed_post(p),
        }
    }

    fn comments(all: &[CommentView], out: &mut Vec<Signed>) {
        for c in all {
            out.push(Self {
                what: format!("comment {} by {}", c.id, c.author),
                author: c.author.clone(),
                signature: c.signature.clone(),
                bytes: reddit_client::identity::signed_comment(c),
            });
            Self::comments(&c.replies, out);
        }
    }
}

impl Ctx {
    /// With --verify: checks `items`' signatures with their authors' registered
    /// keys, reports on stderr, and fails if any does not verify.
    async fn check_signatures(&self, items: Vec<Signed>) -> Result<()> {
        if !self.verify {
            return Ok(());
        }
        let mut keys: std::collections::HashMap<String, String> = Default::default();
        let (mut ok, mut unsigned, mut bad) = (0, 0, Vec::new());
        for item in items {
            let Some(sig) = &item.signature else {
                unsigned += 1;
                continue;
            };
            let author = item.author.to_ascii_lowercase();
            if !keys.contains_key(&author) {
                let user = self.client.get_user(&author.parse()?).await?;
                keys.insert(author.clone(), user.public_key);
            }
            let key = keys.get(&author).map(String::as_str).unwrap_or_default();
            if reddit_client::identity::verify_hex(key, &item.bytes, sig) {
                ok += 1;
            } else {
                bad.push(item.what);
            }
        }
        eprintln!(
            "signatures: {ok} verified, {unsigned} unsigned, {} do not verify",
            bad.len()
        );
        for what in &bad {
            eprintln!("  DOES NOT VERIFY: {what}");
        }
        if !bad.is_empty() {
            bail!(
                "{} signature(s) do not verify with their authors' keys",
                bad.len()
            );
        }
        Ok(())
    }

    /// The user's own key, for signing what they write.
    fn identity(&self) -> Result<Identity> {
        let user = self.username()?;
        self.store.load_key(&user)?.ok_or_else(|| {
            anyhow!(
                "no key for {user} in {}; run `reddit-client register {user}` first (or pass --config-dir)",
                self.store.dir().display()
            )
        })
    }

    fn username(&self) -> Result<Username> {
        let name = self.user.as_deref().ok_or_else(|| {
            anyhow!("this command acts as a user: pass --user NAME (or set REDDIT_USER)")
        })?;
        Ok(name.parse::<Username>()?)
    }

    /// A session for --user: the cached token if it is good for another minute,
    /// else a fresh login (`fresh` forces one). Returns whether it was cached.
    async fn session(&self, fresh: bool) -> Result<(Session, bool)> {
        let user = self.username()?;
        if !fresh {
            if let Some(t) = self.store.load_token(&user) {
                if t.expires_at > reddit_shared::now_millis() + 60_000 {
                    let session = Session {
                        username: user,
                        token: t.token,
                        expires_at: t.expires_at,
                    };
                    return Ok((session, true));
                }
            }
        }
        let id = self.identity()?;
        let session = self.client.login(&user, &id).await?;
        self.store.save_token(
            &user,
            &reddit_client::identity::CachedToken {
                token: session.token.clone(),
                expires_at: session.expires_at,
            },
        )?;
        Ok((session, false))
    }

    /// Runs `f` as --user, logging in again once if a cached token is refused.
    async fn authed<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(Session) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let (session, cached) = self.session(false).await?;
        match f(session).await {
            Err(e) if e.kind() == ErrorKind::Unauthorized && cached => {
                let (session, _) = self.session(true).await?;
                Ok(f(session).await?)
            }
            other => Ok(other?),
        }
    }

    fn print<T: Serialize>(&self, value: &T, human: impl FnOnce(&T) -> String) -> Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            println!("{}", human(value));
        }
        Ok(())
    }
}

fn sub_name(s: &str) -> Result<SubredditName> {
    Ok(s.trim_start_matches("r/").parse::<SubredditName>()?)
}

fn user_name(s: &str) -> Result<Username> {
    Ok(s.trim_start_matches("u/").parse::<Username>()?)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn simulate(
    nats_url: String,
    http: Option<String>,
    timeout_ms: u64,
    retry_ms: u64,
    a: SimulateArgs,
) -> Result<()> {
    use reddit_client::sim::{launcher, Load, Mix, SimConfig};
    let tag = match a.tag {
        Some(t) => t,
        None => {
            let n = rand::random::<u32>();
            (0..4)
                .map(|i| {
                    char::from(b"abcdefghijkmnpqrstuvwxyz23456789"[((n >> (5 * i)) & 31) as usize])
                })
                .collect()
        }
    };
    let load = match (a.in_flight, a.rate) {
        (Some(in_flight), _) => Load::Closed { in_flight },
        (None, rate) => Load::Open {
            rate,
            think_ms: a.think_ms,
        },
    };
    let cfg = SimConfig {
        nats_url,
        http,
        out_dir: a
            .out
            .unwrap_or_else(|| PathBuf::from("run").join(format!("sim-{tag}"))),
        tag,
        users: a.users,
        subreddits: a.subreddits,
        zipf: a.zipf,
        joins_per_user: a.joins_per_user,
        mix: Mix::parse(&a.mix).map_err(|e| anyhow!("--mix: {e}"))?,
        repost_share: a.repost_share,
        online_mean_s: a.online_mean,
        offline_mean_s: a.offline_mean,
        load,
        max_in_flight: a.max_in_flight,
        duration_s: a.duration,
        seed: a.seed,
        processes: a.processes,
        request_timeout_ms: timeout_ms,
        retry_budget_ms: retry_ms,
        setup_in_flight: a.setup_in_flight,
        seed_posts: a.seed_posts,
        seed_comments: a.seed_comments,
    };
    let exe = std::env::current_exe().context("locating the reddit-client binary")?;
    let report = launcher::run(cfg, &exe).await?;
    if a.check && !(report.audit.ok && report.ledger_ok) {
        bail!("the audit or the ledger check failed (see the report)");
    }
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Simulate(args) => {
            return simulate(cli.nats_url, cli.http, cli.timeout_ms, cli.retry_ms, *args).await
        }
        Command::SimWorker { config, part } => {
            let text =
                std::fs::read(&config).with_context(|| format!("reading {}", config.display()))?;
            let mut cfg: reddit_client::sim::SimConfig = serde_json::from_slice(&text)?;
            // The config file has the URL redacted; the real one is NATS_URL.
            cfg.nats_url = cli.nats_url;
            return reddit_client::sim::worker::run(cfg, part).await;
        }
        Command::Bench {
            levels,
            seconds,
            out,
        } if cli.http.is_some() => {
            let options = || ClientOptions {
                request_timeout: Duration::from_millis(cli.timeout_ms.max(1)),
                retry_budget: Duration::from_millis(cli.retry_ms),
                name: "reddit-bench".into(),
                ..ClientOptions::default()
            };
            let direct = RedditClient::connect(&cli.nats_url, options()).await?;
            let urls = cli.http.as_deref().unwrap_or_default();
            let gateway = RedditClient::connect_http(urls, options()).await?;
            // The REST leg's bare connections go to the first gateway.
            let first = urls.split(',').next().unwrap_or_default().trim();
            let ms =
                reddit_client::bench::gateway(&direct, &gateway, first, &levels, seconds).await?;
            println!("{}", reddit_client::bench::gateway_table(&ms));
            if let Some(path) = out {
                std::fs::write(&path, serde_json::to_vec_pretty(&ms)?)?;
            }
            return Ok(());
        }
        _ => {}
    }
    let store = KeyStore::new(cli.config_dir.clone().unwrap_or_else(KeyStore::default_dir));
    // Acting as a user whose key is here: connect to NATS as that user (the
    // connection may read only their inbox and pushes). Otherwise the URL decides:
    // with credentials the service role, without them anonymous (register only).
    let as_user = match (&cli.user, &cli.command) {
        (_, Command::Register { .. }) => None,
        (Some(name), _) => {
            let user = user_name(name)?;
            store.load_key(&user)?.map(|id| (user, id))
        }
        (None, _) => None,
    };
    let options = ClientOptions {
        request_timeout: Duration::from_millis(cli.timeout_ms.max(1)),
        retry_budget: Duration::from_millis(cli.retry_ms),
        as_user,
        ..ClientOptions::default()
    };
    let client = match &cli.http {
        Some(urls) => RedditClient::connect_http(urls, options).await?,
        None => RedditClient::connect(&cli.nats_url, options).await?,
    };
    let ctx = Ctx {
        client,
        store,
        user: cli.user.clone(),
        json: cli.json,
        verify: cli.verify,
    };
    let c = &ctx.client;
    match cli.command {
        Command::Register { username: user } => {
            if ctx.store.load_key(&user)?.is_some() {
                bail!(
                    "a key for {user} already exists in {}; refusing to overwrite it",
                    ctx.store.dir().display()
                );
            }
            let id = Identity::generate();
            let view = c.register(&user, &id).await?;
            let path = ctx
                .store
                .save_key(&user, &id)
                .context("could not store the key")?;
            if !ctx.json {
                eprintln!("registered; key stored in {}", path.display());
            }
            ctx.print(&view, output::user)?;
        }
        Command::Login => {
            let (session, _) = ctx.session(true).await?;
            if ctx.json {
                println!(
                    "{}",
                    serde_json::json!({"username": session.username.as_str(), "expires_at": session.expires_at})
                );
            } else {
                println!(
                    "logged in as {} until {}",
                    session.username,
                    output::time(session.expires_at)
                );
            }
        }
        Command::Token => {
            let (session, _) = ctx.session(false).await?;
            if ctx.json {
                println!(
                    "{}",
                    serde_json::json!({"username": session.username.as_str(), "token": session.token, "expires_at": session.expires_at})
                );
            } else {
                println!("{}", session.token);
            }
        }
        Command::User { username } => {
            let user = match username {
                Some(u) => u,
                None => ctx.username()?,
            };
            ctx.print(&c.get_user(&user).await?, output::user)?;
        }
        Command::Sub(cmd) => match cmd {
            SubCommand::Create { name, description } => {
                let name = name.clone();
                let v = ctx
                    .authed(|s| {
                        let (c, name, d) = (c.clone(), name.clone(), description.clone());
                        async move { c.create_subreddit(&s, &name, &d).await }
                    })
                    .await?;
                ctx.print(&v, output::subreddit)?;
            }
            SubCommand::Get { name } => {
                ctx.print(&c.get_subreddit(&name.clone()).await?, output::subreddit)?;
            }
            SubCommand::List { limit } => {
                ctx.print(&c.list_subreddits(limit).await?, |l| output::subreddits(l))?;
            }
            SubCommand::Join { name } => {
                let name = name.clone();
                let r = ctx
                    .authed(|s| {
                        let (c, name) = (c.clone(), name.clone());
                        async move { c.join(&s, &name).await }
                    })
                    .await?;
                ctx.print(&r, |r| {
                    format!("joined r/{} ({})", r.subreddit, output::members(r.members))
                })?;
            }
            SubCommand::Leave { name } => {
                let name = name.clone();
                let r = ctx
                    .authed(|s| {
                        let (c, name) = (c.clone(), name.clone());
                        async move { c.leave(&s, &name).await }
                    })
                    .await?;
                ctx.print(&r, |r| {
                    format!("left r/{} ({})", r.subreddit, output::members(r.members))
                })?;
            }
        },
        Command::Post(cmd) => match cmd {
            PostCommand::Create {
                subreddit,
                title,
                body,
                repost_of,
            } => {
                let repost_of = match repost_of {
                    None => None,
                    Some(r) => {
                        let (s, id) = r
                            .trim_start_matches("r/")
                            .split_once('/')
                            .ok_or_else(|| anyhow!("--repost-of takes SUBREDDIT/POST_ID"))?;
                        Some(PostRef {
                            subreddit: sub_name(s)?,
                            id: id
                                .parse()
                                .context("--repost-of: the post id is not a UUID")?,
                        })
                    }
                };
                let signed = post_message(
                    ctx.username()?.key(),
                    subreddit.key(),
                    repost_of.as_ref(),
                    &title,
                    &body,
                );
                let req = CreatePostRequest {
                    subreddit: subreddit.clone(),
                    title,
                    body,
                    repost_of,
                    signature: Some(ctx.identity()?.sign_hex(&signed)),
                };
                let v = ctx
                    .authed(|s| {
                        let (c, req) = (c.clone(), req.clone());
                        async move { c.send(Some(&s), &req).await }
                    })
                    .await?;
                ctx.print(&v, output::post)?;
            }
            PostCommand::Get { subreddit, id } => {
                let post = c.get_post(&subreddit, id).await?;
                ctx.print(&post, output::post)?;
                ctx.check_signatures(vec![Signed::post(&post)]).await?;
            }
            PostCommand::List { subreddit, page } => {
                let req = ListPostsRequest {
                    subreddit: subreddit.clone(),
                    sort: page.sort,
                    limit: page.limit,
                    cursor: page.cursor,
                };
                let page = c.send(None, &req).await?;
                ctx.print(&page, output::posts)?;
                ctx.check_signatures(page.posts.iter().map(Signed::post).collect())
                    .await?;
            }
        },
        Command::Comment {
            subreddit,
            post_id,
            body,
            parent,
        } => {
            let signed = comment_message(
                ctx.username()?.key(),
                subreddit.key(),
                &post_id,
                parent.as_ref(),
                &body,
            );
            let req = CreateCommentRequest {
                subreddit: subreddit.clone(),
                post_id,
                parent_id: parent,
                body,
                signature: Some(ctx.identity()?.sign_hex(&signed)),
            };
            let v = ctx
                .authed(|s| {
                    let (c, req) = (c.clone(), req.clone());
                    async move { c.send(Some(&s), &req).await }
                })
                .await?;
            ctx.print(&v, output::comment)?;
        }
        Command::Comments {
            subreddit,
            post_id,
            sort,
            limit,
            root,
        } => {
            let req = CommentTreeRequest {
                subreddit: subreddit.clone(),
                post_id,
                sort,
                limit,
                root,
            };
            let tree = c.send(None, &req).await?;
            ctx.print(&tree, output::tree)?;
            let mut signed = Vec::new();
            Signed::comments(&tree.comments, &mut signed);
            ctx.check_signatures(signed).await?;
        }
        Command::Vote {
            subreddit,
            target,
            id,
            direction,
        } => {
            let req = VoteRequest {
                subreddit: subreddit.clone(),
                target,
                id,
                value: match direction {
                    DirectionArg::Up => 1,
                    DirectionArg::Down => -1,
                    DirectionArg::Clear => 0,
                },
            };
            let v = ctx
                .authed(|s| {
                    let (c, req) = (c.clone(), req.clone());
                    async move { c.send(Some(&s), &req).await }
                })
                .await?;
            ctx.print(&v, |v| {
                format!(
                    "score {:+} (↑{} ↓{}), your vote {:+}",
                    v.score, v.ups, v.downs, v.value
                )
            })?;
        }
        Command::Feed(FeedArgs { page, fresh }) => {
            let req = FeedRequest {
                sort: page.sort,
                limit: page.limit,
                cursor: page.cursor,
                fresh,
            };
            let v = ctx
                .authed(|s| {
                    let (c, req) = (c.clone(), req.clone());
                    async move { c.send(Some(&s), &req).await }
                })
                .await?;
            ctx.print(&v, output::posts)?;
            ctx.check_signatures(v.posts.iter().map(Signed::post).collect())
                .await?;
        }
        Command::Dm(cmd) => match cmd {
            DmCommand::Send { to, body } => {
                let to = to.clone();
                let v = ctx
                    .authed(|s| {
                        let (c, to, body) = (c.clone(), to.clone(), body.clone());
                        async move { c.send_dm(&s, &to, &body).await }
                    })
                    .await?;
                ctx.print(&v, output::sent_dm)?;
            }
            DmCommand::Reply { dm_id, body } => {
                let v = ctx
                    .authed(|s| {
                        let (c, body) = (c.clone(), body.clone());
                        async move { c.reply_dm(&s, dm_id, &body).await }
                    })
                    .await?;
                ctx.print(&v, output::sent_dm)?;
            }
            DmCommand::List {
                sent,
                unread,
                limit,
                cursor,
            } => {
                let req = ListDmsRequest {
                    folder: if sent {
                        DmFolder::Sent
                    } else {
                        DmFolder::Inbox
                    },
                    unread_only: unread,
                    limit,
                    cursor,
                };
                let v = ctx
                    .authed(|s| {
                        let (c, req) = (c.clone(), req.clone());
                        async move { c.send(Some(&s), &req).await }
                    })
                    .await?;
                ctx.print(&v, output::dms)?;
            }
            DmCommand::Read { ids } => {
                let v = ctx
                    .authed(|s| {
                        let (c, ids) = (c.clone(), ids.clone());
                        async move { c.mark_read(&s, ids).await }
                    })
                    .await?;
                ctx.print(&v, |v| {
                    format!("marked {} read; {} unread left", v.marked, v.unread)
                })?;
            }
        },
        Command::Stats => {
            ctx.print(&c.all_stats().await?, |s| output::stats(s))?;
        }
        Command::Audit { max } => {
            let report = c.audit(max).await?;
            ctx.print(&report, output::audit)?;
            if !report.ok {
                std::process::exit(1);
            }
        }
        Command::Shards => {
            let mut infos = c.shard_info().to_vec();
            if let Ok(stats) = c.all_stats().await {
                for i in &mut infos {
                    i.lease = stats
                        .iter()
                        .find(|s| s.shard == i.shard)
                        .and_then(|s| s.lease.clone());
                }
            }
            ctx.print(&infos, |info| {
                info.iter()
                    .map(|i| output::shard_info(i, c.shards()))
                    .collect::<Vec<_>>()
                    .join("\n")
            })?;
        }
        Command::Watch { subs, count } => watch(&ctx, subs, count).await?,
        Command::Simulate(_) | Command::SimWorker { .. } => {}
        Command::Bench {
            levels,
            seconds,
            out,
        } => {
            let timeout = Duration::from_millis(cli.timeout_ms.max(1));
            let ms = reddit_client::bench::run(c, &levels, seconds, timeout).await?;
            println!("{}", reddit_client::bench::table(&ms));
            if let Some(path) = out {
                std::fs::write(&path, serde_json::to_vec_pretty(&ms)?)?;
            }
        }
    }
    Ok(())
}

async fn watch(ctx: &Ctx, subs: Vec<String>, count: Option<usize>) -> Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<PushEvent>(256);
    let mut streams = Vec::new();
    if ctx.user.is_some() {
        streams.push(ctx.client.user_events(&ctx.username()?).await?);
    }
    for s in &subs {
        streams.push(ctx.client.subreddit_events(&sub_name(s)?).await?);
    }
    if streams.is_empty() {
        bail!("nothing to watch: pass --user and/or --sub");
    }
    for mut stream in streams {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(e) = stream.next().await {
                if tx.send(e).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    // Subscriptions are live (flushed) from here on; scripts may wait for this line.
    eprintln!("watching; Ctrl-C to stop");
    let mut seen = 0;
    loop {
        tokio::select! {
            e = rx.recv() => {
                let Some(e) = e else { break };
                ctx.print(&e, |e| match e {
                    PushEvent::Dm { dm } => format!("DM {}", output::dm(dm)),
                    PushEvent::Reply { comment } => format!("reply in r/{} on post {}:\n{}", comment.subreddit, comment.post_id, output::comment(comment)),
                    PushEvent::Post { post } => format!("new post:\n{}", output::post(post)),
                })?;
                seen += 1;
                if count.is_some_and(|n| seen >= n) {
                    break;
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    Ok(())
}
