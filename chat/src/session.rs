//! One TCP connection, from the name prompt to the goodbye: reads lines
//! ([`crate::line`]), applies flood control and the idle timeout, runs the
//! commands, keeps the user's name claimed (renewing it), and writes to the
//! socket from a bounded queue in a task of its own, so that nothing the room
//! does ever waits for this user.

use crate::commands::{self, Command, HELP};
use crate::hub::{Conn, Out, Rendered};
use crate::line::{Decoded, LineDecoder};
use crate::who::{Room, Who};
use crate::wire::{NameEntry, Private, RoomEntry, What};
use crate::Gateway;
use async_nats::jetstream::kv;
use futures::StreamExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reddit_client::{ErrorKind, Session as Token};
use reddit_shared::names::Username;
use reddit_shared::now_millis;
use reddit_shared::protocol::subreddit::GetSubredditRequest;
use reddit_shared::protocol::user::{GetUserRequest, WhoAmIRequest};
use reddit_shared::subject::chat as subjects;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Longest wait for one write to the socket before the peer counts as gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a `/msg` to be taken by the recipient's gateway.
const MSG_TIMEOUT: Duration = Duration::from_secs(3);

/// Tells a connection over the limit so, and closes it.
pub(crate) async fn refuse(mut stream: TcpStream, max: usize) {
    let msg = format!(
        "!! this gateway is full ({max} connections); try another gateway or come back later\r\n"
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(msg.as_bytes())).await;
    let _ = stream.shutdown().await;
}

/// A name held in the names bucket.
struct Claim {
    who: Who,
    entry: NameEntry,
    revision: u64,
}

/// How a session ended.
enum End {
    Quit(Option<String>),
    Disconnected,
    Idle,
    Killed,
    Shutdown,
}

enum Event {
    Read(std::io::Result<usize>),
    Private(Option<async_nats::Message>),
    Renew,
}

struct Session {
    gw: Arc<Gateway>,
    conn: Arc<Conn>,
    claim: Option<Claim>,
    room: Room,
    in_room: bool,
    private: Option<async_nats::Subscriber>,
    limiter: DefaultDirectRateLimiter,
    warned: Option<Instant>,
}

/// Serves one connection until it ends.
pub(crate) async fn run(gw: Arc<Gateway>, stream: TcpStream, peer: SocketAddr) {
    gw.metrics.connections.fetch_add(1, Ordering::Relaxed);
    let (mut rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel(gw.config.out_queue.max(1));
    let id = gw.next_conn.fetch_add(1, Ordering::Relaxed);
    let conn = Arc::new(Conn::new(id, tx));
    let writer = tokio::spawn(write_loop(wr, rx, conn.clone(), gw.config.out_queue));
    let one = NonZeroU32::MIN;
    let (rate, burst) = gw.config.rate;
    let quota = Quota::per_second(NonZeroU32::new(rate).unwrap_or(one))
        .allow_burst(NonZeroU32::new(burst).unwrap_or(one));
    let mut s = Session {
        room: gw.config.default_room.clone(),
        gw: gw.clone(),
        conn: conn.clone(),
        claim: None,
        in_room: false,
        private: None,
        limiter: RateLimiter::direct(quota),
        warned: None,
    };
    tracing::debug!(%peer, id, "connected");
    let end = s.serve(&mut rd).await;
    s.finish(end).await;
    drop(s);
    let _ = writer.await;
    gw.metrics.connections.fetch_sub(1, Ordering::Relaxed);
    tracing::debug!(%peer, id, "disconnected");
}

async fn next(sub: &mut Option<async_nats::Subscriber>) -> Option<async_nats::Message> {
    match sub {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

impl Session {
    fn notice(&self, text: impl AsRef<str>) {
        self.conn.line(format!("-- {}", text.as_ref()));
    }

    fn error(&self, text: impl AsRef<str>) {
        self.conn.line(format!("!! {}", text.as_ref()));
    }

    fn who(&self) -> Option<&Who> {
        self.claim.as_ref().map(|c| &c.who)
    }

    async fn serve(&mut self, rd: &mut OwnedReadHalf) -> End {
        self.notice(format!("Welcome to reddit chat (gateway {}).", self.gw.id));
        self.notice("Choose a name: 3-20 of A-Z a-z 0-9 _ - (guests are shown as ~name),");
        self.notice(
            "or prove your Reddit account with /login TOKEN (reddit-client --user NAME token).",
        );
        let config = &self.gw.config;
        let mut decoder = LineDecoder::new(config.max_line);
        let mut buf = vec![0u8; 4096];
        let mut lines = Vec::new();
        let every = (config.storage.name_ttl / 3).max(Duration::from_millis(100));
        let mut renew = tokio::time::interval_at(Instant::now() + every, every);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let idle = config.idle_timeout;
        let mut idle_at = Instant::now() + idle;
        let cancel = self.conn.cancel.clone();
        let shutdown = self.gw.shutdown.clone();
        loop {
            let event = tokio::select! {
                biased;
                _ = cancel.cancelled() => return End::Killed,
                _ = shutdown.cancelled() => return End::Shutdown,
                r = rd.read(&mut buf) => Event::Read(r),
                m = next(&mut self.private) => Event::Private(m),
                _ = renew.tick() => Event::Renew,
                _ = tokio::time::sleep_until(idle_at) => return End::Idle,
            };
            match event {
                Event::Read(Ok(0)) | Event::Read(Err(_)) => return End::Disconnected,
                Event::Read(Ok(n)) => {
                    decoder.feed(&buf[..n], &mut lines);
                    for line in std::mem::take(&mut lines) {
                        if let Some(end) = self.handle(line).await {
                            return end;
                        }
                    }
                    // Idle from when the gateway is done with the input.
                    idle_at = Instant::now() + idle;
                }
                Event::Private(Some(msg)) => self.private_in(msg).await,
                Event::Private(None) => self.private = None,
                Event::Renew => self.renew().await,
            }
        }
    }

    /// One line; `Some` ends the session.
    async fn handle(&mut self, line: Decoded) -> Option<End> {
        let text = match line {
            Decoded::TooLong => {
                if self.limiter.check().is_ok() {
                    self.error(format!(
                        "that line was longer than {} bytes and was dropped",
                        self.gw.config.max_line
                    ));
                }
                return None;
            }
            Decoded::Line(t) if t.is_empty() => return None,
            Decoded::Line(t) => t,
        };
        if self.limiter.check().is_err() {
            let now = Instant::now();
            if self
                .warned
                .is_none_or(|w| now.duration_since(w) > Duration::from_secs(1))
            {
                self.warned = Some(now);
                let (rate, burst) = self.gw.config.rate;
                self.error(format!(
                    "slow down: at most {rate} lines a second (bursts of {burst}); lines over that are dropped"
                ));
            }
            return None;
        }
        let cmd = commands::parse(&text);
        if self.claim.is_none() {
            return self.prompt(cmd).await;
        }
        match cmd {
            Command::Empty => {}
            Command::Say(text) => {
                self.say(What::Say {
                    from: self.who()?.clone(),
                    text: text.to_owned(),
                })
                .await
            }
            Command::Me(text) => {
                self.say(What::Me {
                    from: self.who()?.clone(),
                    text: text.to_owned(),
                })
                .await
            }
            Command::Help => {
                for h in HELP {
                    self.conn.line(*h);
                }
            }
            Command::Nick(name) => match name.strip_prefix('~').unwrap_or(name).parse() {
                Ok(n) => self.take_guest_name(n).await,
                Err(e) => self.error(e.to_string()),
            },
            Command::Login(token) => self.login(token).await,
            Command::Join(room) => self.join(room).await,
            Command::Leave => {
                if self.room == self.gw.config.default_room {
                    self.notice(format!("you are in {}, the default room", self.room));
                } else {
                    let room = self.gw.config.default_room.clone();
                    self.move_to(room).await;
                }
            }
            Command::Rooms => self.rooms(),
            Command::Who(room) => self.who_is_in(room),
            Command::Msg(to, text) => self.msg(to, text).await,
            Command::History(n) => self.history(n).await,
            Command::Stats => self.stats(),
            Command::Quit(reason) => return Some(End::Quit(reason.map(str::to_owned))),
            Command::Missing(usage) => self.error(format!("usage: {usage}")),
            Command::Unknown(name) => {
                self.error(format!("unknown command /{name}"));
                for h in HELP {
                    self.conn.line(*h);
                }
            }
        }
        None
    }

    /// Before a name is chosen.
    async fn prompt(&mut self, cmd: Command<'_>) -> Option<End> {
        match cmd {
            Command::Say(name) | Command::Nick(name) => match name.parse::<Username>() {
                Ok(n) => self.take_guest_name(n).await,
                Err(e) => self.error(format!("{e}; choose another name")),
            },
            Command::Login(token) => self.login(token).await,
            Command::Quit(reason) => return Some(End::Quit(reason.map(str::to_owned))),
            Command::Empty => {}
            _ => self
                .error("choose a name first (3-20 of A-Z a-z 0-9 _ -), or /login TOKEN, or /quit"),
        }
        None
    }

    async fn say(&self, what: What) {
        match self.publish(what).await {
            Ok(()) => {
                self.gw.metrics.said.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => self.error(format!("not sent: {}", reddit_shared::error::Chain(&e))),
        }
    }

    async fn publish(&self, what: What) -> Result<(), crate::ChatError> {
        let event = crate::wire::RoomEvent {
            id: uuid::Uuid::now_v7().to_string(),
            at: now_millis(),
            room: self.room.to_string(),
            what,
        };
        self.gw.bus.publish(&self.room.key(), &event).await
    }

    /// Claims `who` in the names bucket.
    async fn claim(&self, who: &Who) -> Result<Claim, String> {
        let entry = NameEntry {
            who: who.clone(),
            room: self.room.key(),
            gateway: self.gw.id.clone(),
            since: now_millis(),
        };
        let body = serde_json::to_vec(&entry).map_err(|e| e.to_string())?;
        match self.gw.bus.names.create(who.key(), body.into()).await {
            Ok(revision) => Ok(Claim {
                who: who.clone(),
                entry,
                revision,
            }),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Err(match who {
                Who::Guest(_) => format!("{who} is taken; choose another name"),
                Who::User(_) => format!(
                    "{who} is already connected (a name is used by one connection at a time)"
                ),
            }),
            Err(e) => Err(format!("cannot claim a name right now ({e}); try again")),
        }
    }

    async fn release(&self, claim: &Claim) {
        let _ = self
            .gw
            .bus
            .names
            .delete_expect_revision(claim.who.key(), Some(claim.revision))
            .await;
    }

    /// Whether a Reddit account has this name (false when the engine cannot
    /// say: guests are marked `~`, so no guest passes for a user anyway).
    async fn registered(&self, name: &Username) -> bool {
        let Some(reddit) = self.gw.reddit().await else {
            return false;
        };
        let req = GetUserRequest {
            username: name.clone(),
        };
        match reddit.send(None, &req).await {
            Ok(_) => true,
            Err(e) if e.kind() == ErrorKind::NotFound => false,
            Err(e) => {
                tracing::warn!("cannot check whether {name} is registered: {e}");
                false
            }
        }
    }

    async fn take_guest_name(&mut self, name: Username) {
        let who = Who::Guest(name.clone());
        if self.who() == Some(&who) {
            return self.notice(format!("you are already {who}"));
        }
        if self.registered(&name).await {
            return self.error(format!(
                "{name} is a registered Reddit user: /login TOKEN to use it (reddit-client --user {name} token), or choose another name"
            ));
        }
        match self.claim(&who).await {
            Ok(claim) => self.became(claim).await,
            Err(e) => self.error(e),
        }
    }

    async fn login(&mut self, token: &str) {
        let name = reddit_shared::auth::token_username(token).and_then(|n| n.parse().ok());
        let Some(username) = name else {
            return self
                .error("that is not a token: make one with `reddit-client --user NAME token`");
        };
        let Some(reddit) = self.gw.reddit().await else {
            return self.error(
                "the Reddit engine is not reachable, so a login cannot be checked now; chat as a guest or try again later",
            );
        };
        let token = Token {
            username,
            token: token.to_owned(),
            expires_at: reddit_shared::auth::token_expiry(token).unwrap_or(0),
        };
        let who = match reddit.send(Some(&token), &WhoAmIRequest {}).await {
            Ok(w) => match w.username.parse() {
                Ok(n) => Who::User(n),
                Err(e) => return self.error(format!("login refused: {e}")),
            },
            Err(e) => return self.error(format!("login refused: {e}")),
        };
        if self.who() == Some(&who) {
            return self.notice(format!("you are already {who}"));
        }
        match self.claim(&who).await {
            Ok(claim) => self.became(claim).await,
            Err(e) => self.error(e),
        }
    }

    /// Takes a newly claimed name: the first one enters the default room, a
    /// later one replaces the old (announced as a nick change).
    async fn became(&mut self, claim: Claim) {
        let who = claim.who.clone();
        let old = self.claim.replace(claim);
        self.private = match self.gw.bus.nats.subscribe(subjects::user(&who.key())).await {
            Ok(s) => Some(s),
            Err(e) => {
                self.error(format!("private messages to you will not arrive: {e}"));
                None
            }
        };
        match old {
            None => {
                self.notice(format!(
                    "Hello {who}. You are in {}; /help lists the commands.",
                    self.room
                ));
                let room = self.room.clone();
                self.enter(room).await;
            }
            Some(old) => {
                self.release(&old).await;
                self.notice(format!("you are now {who}"));
                // A later renewal moves the entry; this one is fresh already.
                if let Err(e) = self
                    .publish(What::Nick {
                        old: old.who,
                        new: who,
                    })
                    .await
                {
                    self.error(format!("{}", reddit_shared::error::Chain(&e)));
                }
            }
        }
    }

    /// Enters `room` (this gateway's fan-out, then history, then the
    /// announcement; live lines that arrive meanwhile wait behind the history).
    async fn enter(&mut self, room: Room) {
        self.conn.send(Out::Hold);
        if !self.gw.hub.enter(&room, &self.conn).await {
            self.conn.send(Out::History(Vec::new()));
            return self.error(format!("cannot enter {room} now; try again"));
        }
        self.room = room.clone();
        self.in_room = true;
        let clock = &self.gw.config.clock;
        let history = match self
            .gw
            .bus
            .history(&room.key(), self.gw.config.history_on_join)
            .await
        {
            Ok(h) => h,
            Err(e) => {
                self.error(format!(
                    "cannot show {room}'s history: {}",
                    reddit_shared::error::Chain(&e)
                ));
                Vec::new()
            }
        };
        let mut lines = Vec::with_capacity(history.len() + 1);
        if !history.is_empty() {
            lines.push(Rendered {
                id: String::new(),
                line: format!("-- the last {} lines of {room}:", history.len()),
            });
        }
        lines.extend(history.into_iter().map(|e| Rendered {
            line: e.render(clock),
            id: e.id,
        }));
        self.conn.send(Out::History(lines));
        if let Some(who) = self.who().cloned() {
            if let Err(e) = self.publish(What::Join { who }).await {
                self.error(format!("{}", reddit_shared::error::Chain(&e)));
            }
        }
    }

    async fn move_to(&mut self, room: Room) {
        if let Some(who) = self.who().cloned() {
            let _ = self.publish(What::Leave { who }).await;
        }
        self.gw.hub.exit(&self.room.key(), self.conn.id).await;
        self.in_room = false;
        self.room = room.clone();
        self.renew().await;
        self.enter(room).await;
    }

    async fn join(&mut self, arg: &str) {
        let room: Room = match arg.parse() {
            Ok(r) => r,
            Err(e) => return self.error(e.to_string()),
        };
        if room == self.room {
            return self.notice(format!("you are already in {room}"));
        }
        if let Room::Sub(name) = &room {
            let Some(reddit) = self.gw.reddit().await else {
                return self.error("the Reddit engine is not reachable; r/ rooms need it");
            };
            let req = GetSubredditRequest { name: name.clone() };
            match reddit.send(None, &req).await {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    return self.error(format!("there is no subreddit r/{name}"));
                }
                Err(e) => return self.error(format!("cannot check r/{name} now: {e}")),
            }
        }
        let key = room.key();
        let (known, count) = match self.gw.dir.read() {
            Ok(d) => (d.rooms.get(&key).map(|e| e.name.clone()), d.rooms.len()),
            Err(_) => (None, 0),
        };
        let exists = known.is_some();
        // Shown as first written (`#Rust-Talk`), however it was typed now.
        let room = known.and_then(|n| n.parse().ok()).unwrap_or(room);
        if !exists {
            if count >= self.gw.config.max_rooms {
                return self.error(format!(
                    "there are {count} rooms already, the most this chat keeps; join one of them (/rooms)"
                ));
            }
            let entry = RoomEntry {
                name: room.to_string(),
                created_by: self.who().map(ToString::to_string).unwrap_or_default(),
                created_at: now_millis(),
            };
            let body = serde_json::to_vec(&entry).unwrap_or_default();
            match self.gw.bus.rooms.create(&key, body.into()).await {
                Ok(_) => self.notice(format!("created {room}")),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(e) => return self.error(format!("cannot create {room} now ({e})")),
            }
        }
        self.move_to(room).await;
    }

    /// Renews the name's entry (and records the current room in it).
    async fn renew(&mut self) {
        let room = self.room.key();
        let Some(claim) = &mut self.claim else {
            return;
        };
        claim.entry.room = room;
        let Ok(body) = serde_json::to_vec(&claim.entry) else {
            return;
        };
        match self
            .gw
            .bus
            .names
            .update(claim.who.key(), body.into(), claim.revision)
            .await
        {
            Ok(revision) => claim.revision = revision,
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                let who = claim.who.clone();
                // Not ours any more: leave it to whoever holds it.
                self.claim = None;
                self.conn.kill(format!(
                    "your name {who} expired while this gateway could not reach NATS, and may be someone else's now; reconnect"
                ));
            }
            Err(e) => tracing::warn!("cannot renew {}: {e}", claim.who),
        }
    }

    fn rooms(&self) {
        let Ok(dir) = self.gw.dir.read() else { return };
        let counts = dir.counts();
        let mut rows: Vec<(&str, usize)> = dir
            .rooms
            .iter()
            .map(|(k, e)| {
                (
                    e.name.as_str(),
                    counts.get(k.as_str()).copied().unwrap_or(0),
                )
            })
            .collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let shown = rows.len().min(50);
        self.notice(format!(
            "{} rooms{}:",
            rows.len(),
            if shown < rows.len() {
                format!(", the {shown} busiest")
            } else {
                String::new()
            }
        ));
        for (name, n) in rows.into_iter().take(shown) {
            self.notice(format!("  {name} ({n})"));
        }
    }

    fn who_is_in(&self, room: Option<&str>) {
        let room = match room.map(str::parse::<Room>) {
            None => self.room.clone(),
            Some(Ok(r)) => r,
            Some(Err(e)) => return self.error(e.to_string()),
        };
        let Ok(dir) = self.gw.dir.read() else { return };
        let names: Vec<String> = dir
            .members(&room.key())
            .iter()
            .map(|e| e.who.to_string())
            .collect();
        self.notice(format!(
            "{} in {room}: {} (~ marks a guest)",
            names.len(),
            names.join(", ")
        ));
    }

    async fn msg(&self, to: &str, text: &str) {
        let Some(me) = self.who().cloned() else {
            return;
        };
        let targets = match Who::targets(to) {
            Ok(t) => t,
            Err(e) => return self.error(e.to_string()),
        };
        let private = Private {
            at: now_millis(),
            from: me.clone(),
            text: text.to_owned(),
        };
        let Ok(body) = serde_json::to_vec(&private) else {
            return;
        };
        let nats = &self.gw.bus.nats;
        for target in targets {
            let request = nats.request(subjects::user(&target.key()), body.clone().into());
            match tokio::time::timeout(MSG_TIMEOUT, request).await {
                Ok(Ok(reply)) if reply.payload.is_empty() => {
                    self.gw.metrics.said.fetch_add(1, Ordering::Relaxed);
                    let stamp = self.gw.config.clock.stamp(private.at);
                    self.conn.line(format!("{stamp}-> *{target}* {text}"));
                    return;
                }
                Ok(Ok(reply)) => {
                    return self.error(format!(
                        "{target} did not get it: {}",
                        String::from_utf8_lossy(&reply.payload)
                    ));
                }
                Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {}
                Ok(Err(e)) => return self.error(format!("could not deliver to {target}: {e}")),
                Err(_) => return self.error(format!("{target}'s gateway did not answer in time")),
            }
        }
        self.error(format!("no one called {to} is connected"));
    }

    async fn private_in(&self, msg: async_nats::Message) {
        let answer: &[u8] = match serde_json::from_slice::<Private>(&msg.payload) {
            Ok(p) if self.conn.line(p.render(&self.gw.config.clock)) => b"",
            Ok(_) => b"the recipient is disconnecting",
            Err(_) => b"not a private message",
        };
        if let Some(reply) = msg.reply {
            let _ = self.gw.bus.nats.publish(reply, answer.into()).await;
        }
    }

    async fn history(&self, n: Option<&str>) {
        let max = usize::try_from(self.gw.config.storage.history_per_room).unwrap_or(usize::MAX);
        let n = match n.map(str::parse::<usize>) {
            None => 20,
            Some(Ok(n)) if (1..=max).contains(&n) => n,
            Some(_) => return self.error(format!("usage: /history [N], N from 1 to {max}")),
        };
        match self.gw.bus.history(&self.room.key(), n).await {
            Ok(events) => {
                self.notice(format!("the last {} lines of {}:", events.len(), self.room));
                for e in events {
                    self.conn.line(e.render(&self.gw.config.clock));
                }
            }
            Err(e) => self.error(format!(
                "cannot read the history now: {}",
                reddit_shared::error::Chain(&e)
            )),
        }
    }

    fn stats(&self) {
        let m = &self.gw.metrics;
        let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let (said, delivered) = m.rates();
        self.notice(format!(
            "this gateway ({}): {} connections, {} rooms with members here, {} lines said ({said:.1}/s), {} delivered ({delivered:.1}/s), {} readers dropped as too slow",
            self.gw.id,
            g(&m.connections),
            g(&m.rooms),
            g(&m.said),
            g(&m.delivered),
            g(&m.too_slow),
        ));
        if let Ok(dir) = self.gw.dir.read() {
            self.notice(format!(
                "the whole chat: {} names connected, {} rooms",
                dir.names.len(),
                dir.rooms.len()
            ));
        }
    }

    /// Announces the departure, frees the name and tells the user why.
    async fn finish(&mut self, end: End) {
        let slow = self.conn.why().is_some_and(|w| w.contains("too slow"));
        let (reason, tell) = match end {
            End::Quit(r) => (
                r.map_or_else(|| "quit".to_owned(), |r| format!("quit: {}", crate::line::clean(&r))),
                Some("bye".to_owned()),
            ),
            End::Disconnected => ("disconnected".to_owned(), None),
            End::Idle => (
                "idle".to_owned(),
                Some(format!(
                    "you were idle for {} s; bye",
                    self.gw.config.idle_timeout.as_secs()
                )),
            ),
            End::Killed if slow => ("too slow".to_owned(), None),
            End::Killed => ("disconnected".to_owned(), None),
            End::Shutdown => (
                "gateway shutting down".to_owned(),
                Some(
                    "this gateway is shutting down; reconnect (every gateway serves the same rooms)"
                        .to_owned(),
                ),
            ),
        };
        if let Some(claim) = self.claim.take() {
            if self.in_room {
                let who = claim.who.clone();
                let _ = self.publish(What::Quit { who, reason }).await;
            }
            self.release(&claim).await;
        }
        if self.in_room {
            self.gw.hub.exit(&self.room.key(), self.conn.id).await;
            self.in_room = false;
        }
        self.private = None;
        match tell {
            Some(t) => self.conn.kill(t),
            None => self.conn.cancel.cancel(),
        }
    }
}

/// Writes the queue to the socket; after the connection is killed, writes
/// what is still queued and the reason (for at most 2 s), then closes.
async fn write_loop(wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Out>, conn: Arc<Conn>, cap: usize) {
    let mut w = BufWriter::new(wr);
    let mut held: Option<Vec<Arc<Rendered>>> = None;
    loop {
        let out = tokio::select! {
            biased;
            _ = conn.cancel.cancelled() => break,
            o = rx.recv() => match o {
                Some(o) => o,
                None => break,
            },
        };
        let wrote = tokio::time::timeout(WRITE_TIMEOUT, async {
            write_out(&mut w, out, &mut held, cap, &conn).await?;
            if rx.is_empty() {
                w.flush().await?;
            }
            Ok::<_, std::io::Error>(())
        })
        .await;
        if !matches!(wrote, Ok(Ok(()))) {
            conn.kill("the connection stopped taking data");
            return;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(out) = rx.try_recv() {
            write_out(&mut w, out, &mut held, cap, &conn).await?;
        }
        if let Some(why) = conn.why() {
            let line = if why == "bye" {
                "-- bye".to_owned()
            } else {
                format!("!! {why}")
            };
            w.write_all(line.as_bytes()).await?;
            w.write_all(b"\r\n").await?;
        }
        w.flush().await?;
        w.shutdown().await
    })
    .await;
}

async fn write_out(
    w: &mut BufWriter<OwnedWriteHalf>,
    out: Out,
    held: &mut Option<Vec<Arc<Rendered>>>,
    cap: usize,
    conn: &Conn,
) -> std::io::Result<()> {
    match out {
        Out::Line(l) => line(w, &l).await,
        Out::Room(r) => match held {
            Some(h) if h.len() >= cap => {
                conn.kill("you were disconnected: the room sent more than your queue holds while you joined");
                Ok(())
            }
            Some(h) => {
                h.push(r);
                Ok(())
            }
            None => line(w, &r.line).await,
        },
        Out::Hold => {
            held.get_or_insert_with(Vec::new);
            Ok(())
        }
        Out::History(lines) => {
            for r in &lines {
                line(w, &r.line).await?;
            }
            for r in held.take().unwrap_or_default() {
                if !lines.iter().any(|h| h.id == r.id) {
                    line(w, &r.line).await?;
                }
            }
            Ok(())
        }
    }
}

async fn line(w: &mut BufWriter<OwnedWriteHalf>, text: &str) -> std::io::Result<()> {
    w.write_all(text.as_bytes()).await?;
    w.write_all(b"\r\n").await
}
