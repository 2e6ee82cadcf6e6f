//! `reddit-client sim-worker`: one client process simulating users
//! `cfg.user_range(part)` over one NATS connection.
//!
//! It talks to the launcher in JSON lines on stdout (`ready`, `progress`, `done`)
//! and waits for `go` on stdin between setup and run, so that all processes start
//! the run together.
//!
//! Setup: register and log in every user (keys derived from the seed), then the
//! Zipf joins. Run: the [`Planner`] says when which user does what; the worker
//! resolves targets it has seen (posts, comments, received DMs), sends the request,
//! and on the reply updates what it knows, the metrics and the ledger. One
//! subscription `reddit.events.user.*` takes pushes for this process's online users;
//! pushes for users who are offline are not received. A user who comes back online
//! catches up: unread DMs (then marks them read) and new feed posts.

use super::light::FeedPostRefs;
use super::metrics::{rss_bytes, Ledger, OpStats, PartReport, Second, Sessions};
use super::planner::{setup_joins, ActionKind, Planner, Step};
use super::rng::Rng;
use super::{Load, SimConfig};
use crate::{ClientError, ClientOptions, ErrorKind, Identity, RedditClient, Session};
use anyhow::Context;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use reddit_shared::ids::{CommentId, DmId, PostId};
use reddit_shared::names::{SubredditName, Username};
use reddit_shared::protocol::comment::CreateCommentRequest;
use reddit_shared::protocol::dm::ListDmsRequest;
use reddit_shared::protocol::feed::FeedRequest;
use reddit_shared::protocol::post::{CreatePostRequest, PostSort};
use reddit_shared::protocol::push::PushEvent;
use reddit_shared::protocol::vote::{VoteRequest, VoteTarget};
use reddit_shared::protocol::PostRef;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Posts a worker remembers as targets.
const KNOWN_POSTS: usize = 4096;
/// Comments remembered per post.
const KNOWN_COMMENTS: usize = 16;
/// Received DMs a user remembers to answer.
const INBOX_KEEP: usize = 4;

struct User {
    /// Shared, so that each request's future holds a reference, not a copy of
    /// the name and token.
    session: Option<Arc<Session>>,
    joined: Vec<u32>,
    inbox: Vec<DmId>,
    offline_since_ms: i64,
}

struct KnownPost {
    rank: u32,
    id: PostId,
    comments: Vec<CommentId>,
}

/// What a reply tells the worker.
enum Effect {
    Posted {
        rank: u32,
        id: PostId,
    },
    Commented {
        post: PostId,
        id: CommentId,
    },
    Voted {
        item: Uuid,
        value: i8,
    },
    DmSent,
    Fed {
        posts: Vec<(String, PostId, i64)>,
        catchup: bool,
    },
    Joined {
        rank: u32,
    },
    Left {
        rank: u32,
    },
    Unread {
        ids: Vec<DmId>,
    },
    Nothing,
}

/// The `busy` key of subreddit `rank` (ranks and item ids share the set).
fn rank_key(rank: u32) -> Uuid {
    Uuid::from_u128(u128::from(rank))
}

/// What kind of write a request was, for the ledger when its outcome is unknown.
#[derive(Clone, Copy, PartialEq, Eq)]
enum WriteKind {
    Read,
    Create,
    Vote(Uuid),
    Membership(u32),
}

struct Done {
    user: u32,
    op: &'static str,
    write: WriteKind,
    started: Instant,
    result: Result<Effect, ClientError>,
}

type Pending = BoxFuture<'static, Done>;

fn uncertain(e: &ClientError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::TimedOut | ErrorKind::Unavailable | ErrorKind::Internal | ErrorKind::Connect
    )
}

fn error_code(e: &ClientError) -> String {
    match e.code() {
        Some(code) => code.as_str().to_owned(),
        None => match e.kind() {
            ErrorKind::TimedOut => "timed_out".to_owned(),
            ErrorKind::Unavailable => "unavailable".to_owned(),
            _ => "client_error".to_owned(),
        },
    }
}

fn emit(line: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The worker state.
struct Worker {
    cfg: SimConfig,
    lo: u32,
    client: RedditClient,
    subs: Vec<SubredditName>,
    users: Vec<User>,
    known: VecDeque<KnownPost>,
    known_ids: HashSet<PostId>,
    votes: HashMap<(u32, Uuid), i8>,
    /// Votes and memberships in flight, by (user, item or subreddit rank): a user
    /// never has two on the same thing at once, so the order the engine applied
    /// them in is the order they were acknowledged in (retries can reorder
    /// overlapping requests, and the ledger could not tell the final value).
    busy: HashSet<(u32, Uuid)>,
    ops: BTreeMap<&'static str, OpStats>,
    ledger: Ledger,
    sessions: Sessions,
    seconds: Vec<Second>,
    start: Instant,
}

impl Worker {
    fn record(&mut self, done: &Done, now: Instant) {
        let latency = now.saturating_duration_since(done.started);
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let err = done.result.as_ref().err().map(error_code);
        self.ops
            .entry(done.op)
            .or_default()
            .record(us, err.as_deref());
        let sec = now.saturating_duration_since(self.start).as_secs() as usize;
        if self.seconds.len() <= sec {
            self.seconds.resize(sec + 1, Second::default());
        }
        let second = &mut self.seconds[sec];
        second.ops += 1;
        second.latency_us_sum = second.latency_us_sum.saturating_add(us);
        second.max_us = second.max_us.max(us);
        if err.is_some() {
            self.seconds[sec].errors += 1;
        }
    }

    /// Applies a reply: knowledge, ledger.
    fn apply(&mut self, done: Done) -> Option<(u32, Vec<DmId>)> {
        let u = done.user;
        match done.write {
            WriteKind::Vote(item) => {
                self.busy.remove(&(u, item));
            }
            WriteKind::Membership(rank) => {
                self.busy.remove(&(u, rank_key(rank)));
            }
            WriteKind::Read | WriteKind::Create => {}
        }
        let result = match done.result {
            Ok(effect) => effect,
            Err(e) => {
                if uncertain(&e) {
                    match done.write {
                        WriteKind::Read => {}
                        WriteKind::Create => self.ledger.unknown_creates += 1,
                        WriteKind::Vote(_) => self.ledger.unknown_votes += 1,
                        WriteKind::Membership(_) => self.ledger.unknown_memberships += 1,
                    }
                }
                return None;
            }
        };
        match result {
            Effect::Posted { rank, id } => {
                self.ledger.posts += 1;
                self.remember(rank, id);
            }
            Effect::Commented { post, id } => {
                self.ledger.comments += 1;
                if let Some(p) = self.known.iter_mut().find(|p| p.id == post) {
                    if p.comments.len() >= KNOWN_COMMENTS {
                        p.comments.remove(0);
                    }
                    p.comments.push(id);
                }
            }
            Effect::Voted { item, value } => {
                if value == 0 {
                    self.votes.remove(&(u, item));
                } else {
                    self.votes.insert((u, item), value);
                }
            }
            Effect::DmSent => self.ledger.dms += 1,
            Effect::Fed { posts, catchup } => {
                let since = self.users[u as usize].offline_since_ms;
                for (name, id, created) in posts {
                    if catchup && created > since {
                        self.sessions.catchup_new_posts += 1;
                    }
                    if let Some(rank) = self.cfg.subreddit_rank(&name) {
                        self.remember(rank, id);
                    }
                }
            }
            Effect::Joined { rank } => {
                let joined = &mut self.users[u as usize].joined;
                if !joined.contains(&rank) {
                    joined.push(rank);
                }
            }
            Effect::Left { rank } => self.users[u as usize].joined.retain(|r| *r != rank),
            Effect::Unread { ids } => {
                self.sessions.catchup_unread_dms += ids.len() as u64;
                let inbox = &mut self.users[u as usize].inbox;
                for id in ids.iter().take(INBOX_KEEP) {
                    if inbox.len() < INBOX_KEEP {
                        inbox.push(*id);
                    }
                }
                if !ids.is_empty() {
                    return Some((u, ids));
                }
            }
            Effect::Nothing => {}
        }
        None
    }

    fn remember(&mut self, rank: u32, id: PostId) {
        if !self.known_ids.insert(id) {
            return;
        }
        if self.known.len() >= KNOWN_POSTS {
            if let Some(old) = self.known.pop_front() {
                self.known_ids.remove(&old.id);
            }
        }
        self.known.push_back(KnownPost {
            rank,
            id,
            comments: Vec::new(),
        });
    }

    fn session(&self, u: u32) -> Option<Arc<Session>> {
        self.users.get(u as usize).and_then(|x| x.session.clone())
    }

    fn feed(
        &self,
        u: u32,
        s: Arc<Session>,
        sort: PostSort,
        catchup: bool,
        started: Instant,
    ) -> Pending {
        let c = self.client.clone();
        async move {
            let req = FeedRequest {
                sort,
                limit: Some(25),
                cursor: None,
                fresh: false,
            };
            let result = c
                .send_decoding(Some(&s), &req, FeedPostRefs::from_msgpack)
                .await
                .map(|page| Effect::Fed {
                    posts: page
                        .posts
                        .into_iter()
                        .map(|p| (p.subreddit, p.id, p.created_at))
                        .collect(),
                    catchup,
                });
            Done {
                user: u,
                op: "feed.get",
                write: WriteKind::Read,
                started,
                result,
            }
        }
        .boxed()
    }

    /// Turns a planned action into a request.
    fn dispatch(&mut self, u: u32, kind: ActionKind, started: Instant) -> Option<Pending> {
        let s = self.session(u)?;
        let c = self.client.clone();
        let user = &self.users[u as usize];
        let known_len = self.known.len();
        match kind {
            ActionKind::Post { pick, repost } => {
                let rank = if user.joined.is_empty() {
                    0
                } else {
                    user.joined[(pick % user.joined.len() as u64) as usize]
                };
                let repost_of = if repost && known_len > 0 {
                    let k = &self.known[(pick >> 17) as usize % known_len];
                    Some(PostRef {
                        subreddit: self.subs[k.rank as usize].clone(),
                        id: k.id,
                    })
                } else {
                    None
                };
                let req = CreatePostRequest {
                    subreddit: self.subs[rank as usize].clone(),
                    title: format!("post {pick:x}"),
                    body: "Simulated post body.".to_owned(),
                    repost_of,
                    signature: None,
                };
                Some(
                    async move {
                        let result = c
                            .send(Some(&s), &req)
                            .await
                            .map(|p| Effect::Posted { rank, id: p.id });
                        Done {
                            user: u,
                            op: if req.repost_of.is_some() {
                                "post.repost"
                            } else {
                                "post.create"
                            },
                            write: WriteKind::Create,
                            started,
                            result,
                        }
                    }
                    .boxed(),
                )
            }
            ActionKind::Comment { pick, on_comment } => {
                if known_len == 0 {
                    return Some(self.feed(u, s, PostSort::New, false, started));
                }
                let k = &self.known[(pick % known_len as u64) as usize];
                let parent_id = (on_comment && !k.comments.is_empty())
                    .then(|| k.comments[((pick >> 32) % k.comments.len() as u64) as usize]);
                let req = CreateCommentRequest {
                    subreddit: self.subs[k.rank as usize].clone(),
                    post_id: k.id,
                    parent_id,
                    body: "Simulated comment.".to_owned(),
                    signature: None,
                };
                Some(
                    async move {
                        let result = c.send(Some(&s), &req).await.map(|cm| Effect::Commented {
                            post: req.post_id,
                            id: cm.id,
                        });
                        Done {
                            user: u,
                            op: "comment.create",
                            write: WriteKind::Create,
                            started,
                            result,
                        }
                    }
                    .boxed(),
                )
            }
            ActionKind::Vote {
                pick,
                on_comment,
                value,
            } => {
                if known_len == 0 {
                    return Some(self.feed(u, s, PostSort::Hot, false, started));
                }
                let k = &self.known[(pick % known_len as u64) as usize];
                let (target, id) = if on_comment && !k.comments.is_empty() {
                    (
                        VoteTarget::Comment,
                        k.comments[((pick >> 32) % k.comments.len() as u64) as usize].0,
                    )
                } else {
                    (VoteTarget::Post, k.id.0)
                };
                if !self.busy.insert((u, id)) {
                    return Some(self.feed(u, s, PostSort::Hot, false, started));
                }
                let req = VoteRequest {
                    subreddit: self.subs[k.rank as usize].clone(),
                    target,
                    id,
                    value,
                };
                Some(
                    async move {
                        let result = c
                            .send(Some(&s), &req)
                            .await
                            .map(|_| Effect::Voted { item: id, value });
                        Done {
                            user: u,
                            op: "vote.cast",
                            write: WriteKind::Vote(id),
                            started,
                            result,
                        }
                    }
                    .boxed(),
                )
            }
            ActionKind::Dm { to, pick } => {
                let user = &mut self.users[u as usize];
                if !user.inbox.is_empty() {
                    let i = (pick % user.inbox.len() as u64) as usize;
                    let dm_id = user.inbox.swap_remove(i);
                    return Some(
                        async move {
                            let result = c
                                .reply_dm(&s, dm_id, "Simulated reply.")
                                .await
                                .map(|_| Effect::DmSent);
                            Done {
                                user: u,
                                op: "dm.reply",
                                write: WriteKind::Create,
                                started,
                                result,
                            }
                        }
                        .boxed(),
                    );
                }
                let me = self.lo + u;
                let to = if to == me {
                    (to + 1) % self.cfg.users
                } else {
                    to
                };
                let to: Username = self.cfg.username(to).parse().ok()?;
                Some(
                    async move {
                        let result = c
                            .send_dm(&s, &to, "Simulated message.")
                            .await
                            .map(|_| Effect::DmSent);
                        Done {
                            user: u,
                            op: "dm.send",
                            write: WriteKind::Create,
                            started,
                            result,
                        }
                    }
                    .boxed(),
                )
            }
            ActionKind::Feed { sort } => Some(self.feed(u, s, sort, false, started)),
            ActionKind::Join { rank } => {
                if !self.busy.insert((u, rank_key(rank))) {
                    return Some(self.feed(u, s, PostSort::New, false, started));
                }
                let name = self.subs[rank as usize].clone();
                Some(
                    async move {
                        let result = c.join(&s, &name).await.map(|_| Effect::Joined { rank });
                        Done {
                            user: u,
                            op: "sub.join",
                            write: WriteKind::Membership(rank),
                            started,
                            result,
                        }
                    }
                    .boxed(),
                )
            }
            ActionKind::Leave { pick } => {
                if user.joined.len() <= 1 {
                    return Some(self.feed(u, s, PostSort::New, false, started));
                }
                let rank = user.joined[(pick % user.joined.len() as u64) as usize];
                if !self.busy.insert((u, rank_key(rank))) {
                    return Some(self.feed(u, s, PostSort::New, false, started));
                }
                let name = self.subs[rank as usize].clone();
                Some(
                    async move {
                        let result = c.leave(&s, &name).await.map(|_| Effect::Left { rank });
                        Done {
                            user: u,
                            op: "sub.leave",
                            write: WriteKind::Membership(rank),
                            started,
                            result,
                        }
                    }
                    .boxed(),
                )
            }
        }
    }

    /// A user came back: unread DMs and new feed posts.
    fn catch_up(&mut self, u: u32, started: Instant) -> Vec<Pending> {
        let Some(s) = self.session(u) else {
            return Vec::new();
        };
        let c = self.client.clone();
        let s2 = s.clone();
        let dms = async move {
            let req = ListDmsRequest {
                unread_only: true,
                limit: Some(100),
                ..Default::default()
            };
            let result = c.send(Some(&s2), &req).await.map(|page| Effect::Unread {
                ids: page.messages.into_iter().map(|m| m.id).collect(),
            });
            Done {
                user: u,
                op: "dm.list",
                write: WriteKind::Read,
                started,
                result,
            }
        }
        .boxed();
        vec![dms, self.feed(u, s, PostSort::New, true, started)]
    }

    fn mark_read(&self, u: u32, ids: Vec<DmId>, started: Instant) -> Option<Pending> {
        let s = self.session(u)?;
        let c = self.client.clone();
        Some(
            async move {
                let result = c.mark_read(&s, ids).await.map(|_| Effect::Nothing);
                Done {
                    user: u,
                    op: "dm.read",
                    write: WriteKind::Read,
                    started,
                    result,
                }
            }
            .boxed(),
        )
    }

    fn on_push(&mut self, planner: &Planner, subject: &str, payload: &[u8]) {
        let Some(name) = subject.rsplit('.').next() else {
            return;
        };
        let Some(global) = self.cfg.user_index(name) else {
            return;
        };
        let Some(u) = global
            .checked_sub(self.lo)
            .filter(|u| (*u as usize) < self.users.len())
        else {
            return;
        };
        if !planner.is_online(u) {
            self.sessions.pushes_while_offline += 1;
            return;
        }
        let Ok(event) = reddit_shared::codec::decode::<PushEvent>(payload) else {
            return;
        };
        let kind = match event {
            PushEvent::Dm { dm } => {
                let inbox = &mut self.users[u as usize].inbox;
                if inbox.len() < INBOX_KEEP {
                    inbox.push(dm.id);
                }
                "dm"
            }
            PushEvent::Reply { .. } => "reply",
            PushEvent::Post { .. } => "post",
        };
        *self.sessions.pushes.entry(kind.to_owned()).or_default() += 1;
    }
}

/// Runs part `part` of `cfg` (the `sim-worker` subcommand).
pub async fn run(cfg: SimConfig, part: u32) -> anyhow::Result<()> {
    let rss_start = rss_bytes();
    let options = ClientOptions {
        request_timeout: Duration::from_millis(cfg.request_timeout_ms),
        retry_budget: Duration::from_millis(cfg.retry_budget_ms),
        name: format!("reddit-sim-{part}"),
        ..ClientOptions::default()
    };
    let client = match &cfg.http {
        Some(urls) => RedditClient::connect_http(urls, options).await?,
        None => RedditClient::connect(&cfg.nats_url, options).await?,
    };
    let range = cfg.user_range(part);
    let subs: Vec<SubredditName> = (0..cfg.subreddits)
        .map(|r| cfg.subreddit(r).parse::<SubredditName>())
        .collect::<Result<_, _>>()?;
    let mut w = Worker {
        lo: range.start,
        client: client.clone(),
        subs,
        users: Vec::with_capacity(range.len()),
        known: VecDeque::new(),
        known_ids: HashSet::new(),
        votes: HashMap::new(),
        busy: HashSet::new(),
        ops: BTreeMap::new(),
        ledger: Ledger::default(),
        sessions: Sessions::default(),
        seconds: Vec::new(),
        start: Instant::now(),
        cfg,
    };
    let setup_started = Instant::now();
    let mut setup_ops: BTreeMap<&'static str, OpStats> = BTreeMap::new();

    // Setup 1: register and log in.
    let cfg = w.cfg.clone();
    let logins = futures::stream::iter(range.clone().map(|g| {
        let c = client.clone();
        let name = cfg.username(g);
        let mut rng = Rng::derive(cfg.seed ^ 0x6B65_7973, u64::from(g));
        let mut secret = [0u8; 32];
        for chunk in secret.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        async move {
            let id = Identity::from_secret(secret);
            let user: Username = match name.parse() {
                Ok(u) => u,
                Err(e) => {
                    return (
                        g,
                        Vec::new(),
                        Err(ClientError::new(ErrorKind::Invalid, e.to_string())),
                    )
                }
            };
            let t = Instant::now();
            let reg = c.register(&user, &id).await;
            let mut timings = vec![(
                "user.register",
                t.elapsed(),
                reg.as_ref().err().map(error_code),
            )];
            if let Err(e) = &reg {
                if e.kind() != ErrorKind::Conflict {
                    return (g, timings, Err(e.clone()));
                }
            }
            let t = Instant::now();
            let login = c.login(&user, &id).await;
            timings.push((
                "auth.login",
                t.elapsed(),
                login.as_ref().err().map(error_code),
            ));
            (g, timings, login.map(|s| (s, reg.is_ok())))
        }
    }))
    .buffer_unordered(cfg.setup_in_flight.max(1));
    let mut sessions: Vec<Option<Session>> = vec![None; range.len()];
    let mut logins = std::pin::pin!(logins);
    while let Some((g, timings, result)) = logins.next().await {
        for (op, d, err) in timings {
            setup_ops.entry(op).or_default().record(
                u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
                err.as_deref(),
            );
        }
        if let Ok((s, registered)) = result {
            if registered {
                w.ledger.users += 1;
            }
            sessions[(g - range.start) as usize] = Some(s);
        }
    }
    let start_ms = reddit_shared::now_millis();
    for s in sessions {
        w.users.push(User {
            session: s.map(Arc::new),
            joined: Vec::new(),
            inbox: Vec::new(),
            offline_since_ms: start_ms,
        });
    }

    // Setup 2: Zipf joins.
    let zipf = super::zipf::Zipf::new(w.cfg.subreddits as usize, w.cfg.zipf);
    let mut joins = Vec::new();
    for (i, g) in range.clone().enumerate() {
        if let Some(s) = &w.users[i].session {
            for rank in setup_joins(&w.cfg, &zipf, g) {
                joins.push((i as u32, s.clone(), rank));
            }
        }
    }
    let subs = w.subs.clone();
    let joined = futures::stream::iter(joins.into_iter().map(|(i, s, rank)| {
        let c = client.clone();
        let name = subs[rank as usize].clone();
        async move {
            let t = Instant::now();
            let r = c.join(&s, &name).await;
            (i, rank, t.elapsed(), r)
        }
    }))
    .buffer_unordered(w.cfg.setup_in_flight.max(1));
    let mut joined = std::pin::pin!(joined);
    while let Some((i, rank, d, r)) = joined.next().await {
        let err = r.as_ref().err().map(error_code);
        setup_ops.entry("sub.join").or_default().record(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            err.as_deref(),
        );
        match r {
            Ok(_) => w.users[i as usize].joined.push(rank),
            Err(e) if uncertain(&e) => w.ledger.unknown_memberships += 1,
            Err(_) => {}
        }
    }
    // Setup 3: a seeded corpus in this process's share of the subreddits.
    seed_corpus(&mut w, part, &mut setup_ops).await;
    let setup_seconds = setup_started.elapsed().as_secs_f64();
    let rss_after_setup = rss_bytes();

    // Pushes for this process's users.
    // Over HTTP (gateways) pushes are not taken: the report says none arrived.
    let mut pushes: futures::stream::BoxStream<'static, async_nats::Message> = match client.nats() {
        Some(nats) => {
            let sub = nats
                .subscribe(reddit_shared::subject::all_user_events())
                .await
                .context("subscribing to push events")?;
            nats.flush().await.context("flushing")?;
            sub.boxed()
        }
        None => futures::stream::pending().boxed(),
    };

    emit(
        serde_json::json!({"type": "ready", "part": part, "users": range.len(), "setup_seconds": setup_seconds}),
    );
    let mut line = String::new();
    tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line).map(|_| line))
        .await
        .context("waiting for go")?
        .context("reading go from stdin")?;

    // Run.
    let mut planner = Planner::new(&w.cfg, part);
    let start = Instant::now();
    let run_started_ms = reddit_shared::now_millis();
    w.start = start;
    let end = start + Duration::from_secs_f64(w.cfg.duration_s);
    let mut in_flight: FuturesUnordered<Pending> = FuturesUnordered::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut completed: u64 = 0;
    let mut errors: u64 = 0;
    let mut max_lag_ms: f64 = 0.0;
    let mut max_in_flight = 0usize;
    let closed = match &w.cfg.load {
        Load::Closed { in_flight } => Some(*in_flight),
        Load::Open { .. } => None,
    };
    let cap = closed.unwrap_or(w.cfg.max_in_flight.max(1));
    let mut next: Option<Step> = None;
    let at = |ms: f64| start + Duration::from_secs_f64(ms.max(0.0) / 1000.0);
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let now_ms = now.duration_since(start).as_secs_f64() * 1000.0;
        let mut wake: Option<Instant> = None;
        if closed.is_some() {
            // A return starts catch-ups (a feed and an inbox read): in a closed
            // loop they wait for room like every other request, so what is in
            // flight stays bounded however fast sessions change.
            while in_flight.len() < cap {
                match planner.pop_session(now_ms) {
                    Some(step) => handle_session(&mut w, &mut in_flight, step, now),
                    None => break,
                }
            }
            while in_flight.len() < cap {
                match planner.pick(now_ms) {
                    Some(Step::Act { user, kind, .. }) => {
                        if let Some(f) = w.dispatch(user, kind, Instant::now()) {
                            in_flight.push(f);
                        }
                    }
                    _ => break,
                }
            }
            // Full: the next completion wakes the loop (an overdue session
            // must not spin it).
            wake = if in_flight.len() < cap {
                planner.next_session_ms().map(at)
            } else {
                None
            };
            if in_flight.is_empty() && wake.is_none() {
                wake = Some(end);
            }
        } else {
            while in_flight.len() < cap {
                let step = next.take().unwrap_or_else(|| planner.next_step());
                let due = match &step {
                    Step::Session { at_ms, .. } | Step::Act { at_ms, .. } => *at_ms,
                    Step::Idle => f64::INFINITY,
                };
                if due > now_ms {
                    wake = due.is_finite().then(|| at(due));
                    next = Some(step);
                    break;
                }
                max_lag_ms = max_lag_ms.max(now_ms - due);
                match step {
                    Step::Act { user, kind, at_ms } => {
                        if let Some(f) = w.dispatch(user, kind, at(at_ms)) {
                            in_flight.push(f);
                        }
                    }
                    other => handle_session(&mut w, &mut in_flight, other, at(due)),
                }
            }
        }
        max_in_flight = max_in_flight.max(in_flight.len());
        let wake = wake.unwrap_or(end).min(end);
        tokio::select! {
            biased;
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                let now = Instant::now();
                completed += 1;
                if done.result.is_err() {
                    errors += 1;
                }
                w.record(&done, now);
                if let Some((u, ids)) = w.apply(done) {
                    if let Some(f) = w.mark_read(u, ids, now) {
                        in_flight.push(f);
                    }
                }
            }
            Some(msg) = pushes.next() => {
                w.on_push(&planner, &msg.subject, &msg.payload);
            }
            _ = tick.tick() => {
                let sec = start.elapsed().as_secs().saturating_sub(1) as usize;
                if w.seconds.len() <= sec {
                    w.seconds.resize(sec + 1, Second::default());
                }
                w.seconds[sec].online = planner.online_count() as u64;
                emit(serde_json::json!({"type": "progress", "part": part, "ops": completed, "errors": errors, "online": planner.online_count()}));
            }
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
    // Let what is in flight finish (each request is bounded by its timeout).
    let drain_until = Instant::now()
        + Duration::from_millis(w.cfg.request_timeout_ms + w.cfg.retry_budget_ms + 1000);
    while !in_flight.is_empty() {
        match tokio::time::timeout_at(drain_until.into(), in_flight.next()).await {
            Ok(Some(done)) => {
                let now = Instant::now();
                w.record(&done, now);
                let _ = w.apply(done);
            }
            _ => break,
        }
    }
    let run_seconds = start.elapsed().as_secs_f64();
    let last = (run_seconds.ceil() as usize).max(1);
    w.seconds.truncate(last);
    if let Some(s) = w.seconds.last_mut() {
        s.online = planner.online_count() as u64;
    }

    w.ledger.votes = w.votes.len() as u64;
    w.ledger.memberships = w.users.iter().map(|u| u.joined.len() as u64).sum();
    let report = PartReport {
        part,
        users: w.users.len() as u64,
        setup_seconds,
        setup_ops: setup_ops
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.export()))
            .collect(),
        ops: w
            .ops
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.export()))
            .collect(),
        seconds: w.seconds.clone(),
        run_seconds,
        run_started_ms,
        ledger: w.ledger.clone(),
        sessions: w.sessions.clone(),
        rss_start,
        rss_after_setup,
        rss_end: rss_bytes(),
        max_lag_ms,
        max_in_flight,
    };
    let path = w.cfg.out_dir.join(format!("part-{part}.json"));
    std::fs::write(&path, serde_json::to_vec(&report)?)
        .with_context(|| format!("writing {}", path.display()))?;
    emit(serde_json::json!({"type": "done", "part": part, "file": path}));
    Ok(())
}

/// Seeds `seed_posts` posts in every subreddit whose rank is `part` modulo the
/// process count, by this process's users in turn, then `seed_comments` comments
/// on each: the even ones top-level, the odd ones a thread, each replying to the
/// odd one before it (the first to the first comment). Outcomes go through
/// [`Worker::apply`], so the ledger counts them and the run starts knowing the
/// posts and comments.
async fn seed_corpus(w: &mut Worker, part: u32, setup_ops: &mut BTreeMap<&'static str, OpStats>) {
    let (posts_each, comments_each) = (w.cfg.seed_posts, w.cfg.seed_comments);
    let authors: Vec<(u32, Arc<Session>)> = (0u32..)
        .zip(&w.users)
        .filter_map(|(u, user)| user.session.clone().map(|s| (u, s)))
        .collect();
    if posts_each == 0 || authors.is_empty() {
        return;
    }
    let processes = w.cfg.processes.max(1);
    let in_flight = w.cfg.setup_in_flight.max(1);
    let author = |n: usize| authors[n % authors.len()].clone();
    let mut posts = Vec::new();
    for rank in (0..w.cfg.subreddits).filter(|r| r % processes == part) {
        for i in 0..posts_each {
            let (u, s) = author(posts.len());
            let req = CreatePostRequest {
                subreddit: w.subs[rank as usize].clone(),
                title: format!("seeded post {i}"),
                body: "A post seeded before the run.".to_owned(),
                repost_of: None,
                signature: None,
            };
            posts.push((u, s, rank, req));
        }
    }
    let client = w.client.clone();
    let made = futures::stream::iter(posts.into_iter().map(|(u, s, rank, req)| {
        let c = client.clone();
        async move {
            let started = Instant::now();
            let result = c
                .send(Some(&s), &req)
                .await
                .map(|p| Effect::Posted { rank, id: p.id });
            let done = Done {
                user: u,
                op: "post.create",
                write: WriteKind::Create,
                started,
                result,
            };
            (started.elapsed(), done)
        }
    }))
    .buffer_unordered(in_flight);
    let mut made = std::pin::pin!(made);
    let mut seeded = Vec::new();
    while let Some((latency, done)) = made.next().await {
        record_setup(setup_ops, latency, &done);
        if let Ok(Effect::Posted { rank, id }) = &done.result {
            seeded.push((*rank, *id));
        }
        w.apply(done);
    }
    if comments_each == 0 {
        return;
    }
    let subs = w.subs.clone();
    let threads = futures::stream::iter(seeded.into_iter().enumerate().map(|(n, (rank, post))| {
        let c = client.clone();
        let commenters: Vec<(u32, Arc<Session>)> = (0..comments_each as usize)
            .map(|j| author(n * 7 + j + 1))
            .collect();
        let sub = subs[rank as usize].clone();
        async move {
            let mut out = Vec::new();
            let mut thread: Option<CommentId> = None;
            for (j, (u, s)) in commenters.into_iter().enumerate() {
                let parent_id = if j % 2 == 1 { thread } else { None };
                let req = CreateCommentRequest {
                    subreddit: sub.clone(),
                    post_id: post,
                    parent_id,
                    body: "A comment seeded before the run.".to_owned(),
                    signature: None,
                };
                let started = Instant::now();
                let result = c.send(Some(&s), &req).await;
                if let Ok(cm) = &result {
                    if j == 0 || j % 2 == 1 {
                        thread = Some(cm.id);
                    }
                }
                let done = Done {
                    user: u,
                    op: "comment.create",
                    write: WriteKind::Create,
                    started,
                    result: result.map(|cm| Effect::Commented { post, id: cm.id }),
                };
                out.push((started.elapsed(), done));
            }
            out
        }
    }))
    .buffer_unordered(in_flight);
    let mut threads = std::pin::pin!(threads);
    while let Some(dones) = threads.next().await {
        for (latency, done) in dones {
            record_setup(setup_ops, latency, &done);
            w.apply(done);
        }
    }
}

/// Adds a setup request's latency and outcome to the setup's operation stats.
fn record_setup(setup_ops: &mut BTreeMap<&'static str, OpStats>, latency: Duration, done: &Done) {
    let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    let err = done.result.as_ref().err().map(error_code);
    setup_ops
        .entry(done.op)
        .or_default()
        .record(us, err.as_deref());
}

fn handle_session(
    w: &mut Worker,
    in_flight: &mut FuturesUnordered<Pending>,
    step: Step,
    started: Instant,
) {
    if let Step::Session { user, online, .. } = step {
        if online {
            w.sessions.logins += 1;
            for f in w.catch_up(user, started) {
                in_flight.push(f);
            }
        } else {
            w.sessions.logouts += 1;
            if let Some(u) = w.users.get_mut(user as usize) {
                u.offline_since_ms = reddit_shared::now_millis();
            }
        }
    }
}
