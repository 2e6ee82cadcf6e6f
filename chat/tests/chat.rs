//! The chat end to end: a real nats-server, `reddit-chat` gateways as
//! processes, and TCP clients that type lines as `nc` would. Names unique
//! across gateways, messages and `/msg` across gateways, history on join,
//! announcements, every command, Reddit logins and `r/` rooms, bad input, slow
//! readers, limits, graceful shutdown, and a gateway killed with -9.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../client/tests/common/mod.rs"]
mod common;

use common::{chat_url, GatewayProcess, NatsServer};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long any one expected line may take.
const WAIT: Duration = Duration::from_secs(15);

/// Starts a chat gateway; unless `extra` sets flood control, a generous one
/// (tests type faster than people).
fn gateway(nats: &NatsServer, extra: &[&str]) -> GatewayProcess {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_reddit-chat"));
    let mut args = extra.to_vec();
    if !args.contains(&"--rate") {
        args.extend(["--rate", "200", "--burst", "200"]);
    }
    GatewayProcess::start_as(bin, &chat_url(&nats.url()), &args)
}

/// A person at a terminal: sends lines, reads lines.
struct Tty {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
    seen: Vec<String>,
}

impl Tty {
    async fn connect(gw: &GatewayProcess) -> Self {
        let stream = TcpStream::connect(&gw.base).await.unwrap();
        let (rd, wr) = stream.into_split();
        Self {
            rd: BufReader::new(rd),
            wr,
            seen: Vec::new(),
        }
    }

    /// Connects and takes guest name `name`.
    async fn named(gw: &GatewayProcess, name: &str) -> Self {
        let mut t = Self::connect(gw).await;
        t.expect("the name prompt", |l| l.contains("Choose a name"))
            .await;
        t.send(name).await;
        t.expect("the greeting", |l| l.starts_with("-- Hello"))
            .await;
        // Its own join announcement: it is in the room now.
        let joined = format!("~{name} joined");
        t.expect("its own join", |l| l.contains(&joined)).await;
        t
    }

    async fn send(&mut self, line: &str) {
        self.wr.write_all(line.as_bytes()).await.unwrap();
        self.wr.write_all(b"\r\n").await.unwrap();
    }

    async fn next_line(&mut self, deadline: Instant) -> Option<String> {
        let mut line = String::new();
        match tokio::time::timeout_at(deadline, self.rd.read_line(&mut line)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => None,
            Ok(Ok(_)) => {
                let l = line.trim_end_matches(['\r', '\n']).to_owned();
                self.seen.push(l.clone());
                Some(l)
            }
        }
    }

    /// Reads until a line matches; panics with what it saw if none does in time.
    async fn expect(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        while let Some(l) = self.next_line(deadline).await {
            if pred(&l) {
                return l;
            }
        }
        panic!("no line for {what}; saw:\n{}", self.seen.join("\n"));
    }

    /// Reads until the server closes the connection; returns the lines read.
    async fn until_closed(&mut self) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            match tokio::time::timeout_at(deadline, self.rd.read_line(&mut line)).await {
                Ok(Ok(0)) => return lines,
                Ok(Ok(_)) => lines.push(line.trim_end().to_owned()),
                Ok(Err(_)) => return lines,
                Err(_) => panic!("the connection stayed open; saw {lines:?}"),
            }
        }
    }

    /// Sends `cmd` and reads the `-- ...` answer that `pred` picks, retrying
    /// while the directory catches up (it is milliseconds behind the buckets).
    async fn ask_until(&mut self, cmd: &str, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            self.send(cmd).await;
            let marker = format!("marker-{}", rand::random::<u32>());
            self.send(&format!("/msg nobody-{marker} x")).await;
            let mut found = None;
            loop {
                let l = self
                    .next_line(Instant::now() + WAIT)
                    .await
                    .unwrap_or_else(|| panic!("closed while asking {cmd}; saw {:?}", self.seen));
                if l.contains(&marker) {
                    break;
                }
                if pred(&l) {
                    found = Some(l);
                }
            }
            if let Some(l) = found {
                return l;
            }
            assert!(
                start.elapsed() < WAIT,
                "no good answer to {cmd}; saw {:?}",
                self.seen
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn two_gateways_share_names_rooms_messages_and_history() {
    let nats = NatsServer::start();
    let gw1 = gateway(&nats, &[]);
    let gw2 = gateway(&nats, &[]);

    let mut alice = Tty::named(&gw1, "alice").await;
    // The same name on the other gateway is refused, case-insensitively, and
    // the prompt repeats.
    let mut bob = Tty::connect(&gw2).await;
    bob.expect("prompt", |l| l.contains("Choose a name")).await;
    bob.send("Alice").await;
    bob.expect("taken", |l| l == "!! ~Alice is taken; choose another name")
        .await;
    bob.send("b").await;
    bob.expect("invalid", |l| l.starts_with("!! invalid username"))
        .await;
    bob.send("/join x").await;
    bob.expect("name first", |l| l.contains("choose a name first"))
        .await;
    bob.send("bob").await;
    bob.expect("greeting", |l| l.starts_with("-- Hello ~bob"))
        .await;

    // A line crosses gateways, with a timestamp; the speaker sees it too.
    alice
        .expect("bob's arrival", |l| l.ends_with("-- ~bob joined #lobby"))
        .await;
    alice.send("hello from gateway one").await;
    let line = bob
        .expect("alice's line", |l| {
            l.ends_with("<~alice> hello from gateway one")
        })
        .await;
    assert!(
        line.starts_with('[') && line.as_bytes()[3] == b':',
        "timestamped: {line}"
    );
    alice
        .expect("own line", |l| {
            l.ends_with("<~alice> hello from gateway one")
        })
        .await;

    // Private messages cross gateways, and only the recipient sees them.
    bob.send("/msg alice psst").await;
    bob.expect("echo", |l| l.ends_with("-> *~alice* psst"))
        .await;
    alice
        .expect("private", |l| l.ends_with("*~bob* psst"))
        .await;
    bob.send("/msg ~nobody hi").await;
    bob.expect("no such", |l| l == "!! no one called ~nobody is connected")
        .await;

    // /who and /rooms count members on every gateway.
    let who = alice
        .ask_until("/who", |l| l.starts_with("-- 2 in #lobby"))
        .await;
    assert!(who.contains("~alice") && who.contains("~bob"), "{who}");

    // A room made on demand on one gateway; history shows on join elsewhere.
    alice.send("/join Rust-Talk").await;
    alice
        .expect("created", |l| l == "-- created #Rust-Talk")
        .await;
    bob.expect("alice left", |l| l.ends_with("-- ~alice left #lobby"))
        .await;
    alice
        .expect("joined", |l| l.ends_with("~alice joined #Rust-Talk"))
        .await;
    for i in 0..3 {
        alice.send(&format!("line {i}")).await;
        alice
            .expect("own line", |l| l.ends_with(&format!("line {i}")))
            .await;
    }
    let rooms = bob
        .ask_until("/rooms", |l| l.contains("#Rust-Talk (1)"))
        .await;
    assert!(rooms.contains("#Rust-Talk (1)"), "{rooms}");
    bob.ask_until("/rooms", |l| l.contains("#lobby (1)")).await;
    bob.send("/join #rust-talk").await;
    bob.expect("history header", |l| l.starts_with("-- the last"))
        .await;
    bob.expect("history", |l| l.ends_with("<~alice> line 0"))
        .await;
    bob.expect("history", |l| l.ends_with("<~alice> line 2"))
        .await;
    alice
        .expect("bob joins", |l| l.ends_with("~bob joined #Rust-Talk"))
        .await;

    // A third gateway, started later, serves the same rooms and history.
    let gw3 = gateway(&nats, &[]);
    let mut carol = Tty::named(&gw3, "carol").await;
    carol.send("/join rust-talk").await;
    carol
        .expect("history", |l| l.ends_with("<~alice> line 2"))
        .await;
    carol.send("/history 50").await;
    carol
        .expect("history", |l| l.ends_with("<~alice> line 0"))
        .await;

    // Nick changes and quits are announced.
    bob.send("/nick robert").await;
    bob.expect("renamed", |l| l == "-- you are now ~robert")
        .await;
    alice
        .expect("nick", |l| l.ends_with("-- ~bob is now known as ~robert"))
        .await;
    // The old name is free again, the new one taken.
    let mut bob2 = Tty::named(&gw1, "bob").await;
    bob2.send("/nick robert").await;
    bob2.expect("taken", |l| l == "!! ~robert is taken; choose another name")
        .await;
    carol.send("/quit see you").await;
    assert!(carol.until_closed().await.iter().any(|l| l == "-- bye"));
    alice
        .expect("quit", |l| l.ends_with("-- ~carol quit (quit: see you)"))
        .await;
    // A dropped connection is announced too.
    drop(bob2);
    drop(bob);
    alice
        .expect("disconnect", |l| {
            l.ends_with("-- ~robert quit (disconnected)")
        })
        .await;
}

#[tokio::test]
async fn every_command_answers() {
    let nats = NatsServer::start();
    let gw = gateway(&nats, &[]);
    let mut a = Tty::named(&gw, "dora").await;
    a.send("/help").await;
    a.expect("help", |l| l == "-- Commands:").await;
    a.expect("help end", |l| l.starts_with("-- Anything else"))
        .await;
    a.send("/frobnicate").await;
    a.expect("unknown", |l| l == "!! unknown command /frobnicate")
        .await;
    a.expect("help after unknown", |l| l == "-- Commands:")
        .await;
    for (cmd, usage) in [
        ("/join", "/join ROOM"),
        ("/msg dora", "/msg USER text"),
        ("/me", "/me text"),
        ("/nick", "/nick NAME"),
        ("/login", "/login TOKEN"),
    ] {
        a.send(cmd).await;
        a.expect(cmd, |l| l == format!("!! usage: {usage}")).await;
    }
    a.send("/me waves").await;
    a.expect("action", |l| l.ends_with("* ~dora waves")).await;
    a.send("//not a command").await;
    a.expect("escaped", |l| l.ends_with("<~dora> /not a command"))
        .await;
    a.send("/join no.dots").await;
    a.expect("bad room", |l| l.starts_with("!! invalid room name"))
        .await;
    a.send("/join r/nothing_here").await;
    // No engine is running: r/ rooms need it.
    a.expect("engine", |l| l.contains("r/ rooms need it")).await;
    a.send("/join lobby").await;
    a.expect("already", |l| l == "-- you are already in #lobby")
        .await;
    a.send("/leave").await;
    a.expect("default", |l| l.contains("the default room"))
        .await;
    a.send("/join side").await;
    a.expect("joined", |l| l.ends_with("~dora joined #side"))
        .await;
    a.send("/leave").await;
    a.expect("back", |l| l.ends_with("~dora joined #lobby"))
        .await;
    a.send("/history 2").await;
    a.expect("history", |l| l == "-- the last 2 lines of #lobby:")
        .await;
    a.send("/history 0").await;
    a.expect("bad n", |l| l.starts_with("!! usage: /history [N]"))
        .await;
    a.ask_until("/who side", |l| l.starts_with("-- 0 in #side"))
        .await;
    a.send("/stats").await;
    a.expect("stats", |l| l.starts_with("-- this gateway (gw-"))
        .await;
    a.expect("stats", |l| l.starts_with("-- the whole chat:"))
        .await;
    a.send("/login not-a-token").await;
    a.expect("login", |l| l.starts_with("!! that is not a token"))
        .await;
    a.send("/msg dora me").await;
    a.expect("self", |l| l.ends_with("*~dora* me")).await;
    a.send("/quit").await;
    let rest = a.until_closed().await;
    assert_eq!(rest.last().map(String::as_str), Some("-- bye"), "{rest:?}");
}

#[tokio::test]
async fn reddit_users_log_in_with_a_token_and_subreddit_rooms_show_posts() {
    use reddit_shared::protocol::post::CreatePostRequest;
    use reddit_shared::protocol::subreddit::CreateSubredditRequest;
    let cluster = common::Cluster::start(2).await;
    let erin = cluster.user("Erin").await;
    cluster
        .client
        .send(
            Some(&erin),
            &CreateSubredditRequest {
                name: common::sn("rustlang"),
                description: String::new(),
            },
        )
        .await
        .unwrap();
    let gw = gateway(&cluster.nats, &[]);

    // A guest cannot take a registered user's name.
    let mut t = Tty::connect(&gw).await;
    t.expect("prompt", |l| l.contains("Choose a name")).await;
    t.send("erin").await;
    t.expect("registered", |l| {
        l.starts_with("!! erin is a registered Reddit user")
    })
    .await;
    // A forged token is refused by the engine.
    let (head, last) = erin.token.split_at(erin.token.len() - 1);
    let forged = format!("{head}{}", if last == "0" { "1" } else { "0" });
    t.send(&format!("/login {forged}")).await;
    t.expect("refused", |l| l.starts_with("!! login refused"))
        .await;
    // The real token proves the name: shown without the guest mark.
    t.send(&format!("/login {}", erin.token)).await;
    t.expect("hello", |l| l.starts_with("-- Hello Erin.")).await;
    t.expect("joined", |l| l.ends_with("-- Erin joined #lobby"))
        .await;
    // One connection per user name.
    let mut t2 = Tty::named(&gw, "frank").await;
    t2.send(&format!("/login {}", erin.token)).await;
    t2.expect("in use", |l| l.contains("Erin is already connected"))
        .await;

    // r/ rooms: only for subreddits that exist; they show new posts.
    t.send("/join r/nosuchsub").await;
    t.expect("no sub", |l| l == "!! there is no subreddit r/nosuchsub")
        .await;
    t.send("/join r/rustlang").await;
    t.expect("joined", |l| l.ends_with("-- Erin joined r/rustlang"))
        .await;
    cluster
        .client
        .send(
            Some(&erin),
            &CreatePostRequest {
                subreddit: common::sn("rustlang"),
                title: "Chat meets posts".into(),
                body: String::new(),
                repost_of: None,
                signature: None,
            },
        )
        .await
        .unwrap();
    t.expect("post", |l| {
        l.contains("-- new post in r/rustlang by Erin: Chat meets posts")
    })
    .await;
    t2.send("/msg Erin hi erin").await;
    t.expect("private", |l| l.ends_with("*~frank* hi erin"))
        .await;
    cluster.stop().await;
}

#[tokio::test]
async fn bad_input_never_stops_the_gateway() {
    let nats = NatsServer::start();
    let gw = gateway(
        &nats,
        &["--max-line", "1000", "--rate", "1000", "--burst", "1000"],
    );
    let mut watcher = Tty::named(&gw, "watcher").await;

    // Binary junk: cleaned, never shown raw.
    let mut junk = Tty::named(&gw, "junk").await;
    let bytes: Vec<u8> = (0u8..=254).filter(|b| *b != b'\n' && *b != b'\r').collect();
    junk.wr.write_all(&bytes).await.unwrap();
    junk.wr.write_all(b"\n").await.unwrap();
    let l = watcher.expect("junk", |l| l.contains("<~junk>")).await;
    assert!(!l.chars().any(|c| c.is_control()), "{l:?}");

    // A 1 MB line is dropped with a message; the next line works.
    let big = vec![b'x'; 1 << 20];
    junk.wr.write_all(&big).await.unwrap();
    junk.send("").await;
    junk.expect("too long", |l| l.contains("longer than 1000 bytes"))
        .await;
    junk.send("still here").await;
    watcher
        .expect("after big", |l| l.ends_with("<~junk> still here"))
        .await;

    // A storm of telnet negotiation: ignored.
    let mut storm = Vec::new();
    for i in 0..50_000u32 {
        storm.extend([255, 251 + (i % 4) as u8, (i % 40) as u8]);
        storm.extend([255, 250, 31, 0, 80, 255, 240]);
    }
    storm.extend(b"after the storm\r\n");
    junk.wr.write_all(&storm).await.unwrap();
    watcher
        .expect("after storm", |l| l.ends_with("<~junk> after the storm"))
        .await;

    // A half-closed socket (nc -N): the line before the close still counts.
    let mut half = Tty::named(&gw, "half").await;
    half.send("last words").await;
    half.wr.shutdown().await.unwrap();
    watcher
        .expect("last words", |l| l.ends_with("<~half> last words"))
        .await;
    watcher
        .expect("half quit", |l| l.ends_with("~half quit (disconnected)"))
        .await;

    // Junk before any name, then a close without a newline.
    let mut raw = TcpStream::connect(&gw.base).await.unwrap();
    raw.write_all(&[0xff, 0xfd, 0x03, 0x00, 0x1b, 0x5b])
        .await
        .unwrap();
    raw.write_all(&vec![0x80u8; 4096]).await.unwrap();
    drop(raw);

    // Still serving.
    let mut late = Tty::named(&gw, "late").await;
    late.send("fine").await;
    watcher
        .expect("late", |l| l.ends_with("<~late> fine"))
        .await;
}

#[tokio::test]
async fn flood_control_drops_lines_over_the_rate() {
    let nats = NatsServer::start();
    let gw = gateway(&nats, &["--rate", "1", "--burst", "3"]);
    let mut a = Tty::named(&gw, "flood").await;
    for i in 0..20 {
        a.send(&format!("spam {i}")).await;
    }
    a.expect("slow down", |l| {
        l.starts_with("!! slow down: at most 1 lines a second")
    })
    .await;
    // What was said got through in order; the rest was dropped, not queued.
    // (/history is a line too: it goes through once the bucket refills.)
    let start = Instant::now();
    'ask: loop {
        a.send("/history 50").await;
        let until = Instant::now() + Duration::from_millis(1200);
        while let Some(l) = a.next_line(until).await {
            if l.starts_with("-- the last") {
                break 'ask;
            }
        }
        assert!(start.elapsed() < WAIT, "no history; saw {:?}", a.seen);
    }
    let mut said = Vec::new();
    while let Some(l) = a
        .next_line(Instant::now() + Duration::from_millis(500))
        .await
    {
        if let Some(rest) = l.split("<~flood> spam ").nth(1) {
            said.push(rest.parse::<u32>().unwrap());
        }
    }
    assert!(!said.is_empty() && said.len() < 20, "{said:?}");
    assert!(said.windows(2).all(|w| w[0] < w[1]), "{said:?}");
}

#[tokio::test]
async fn a_slow_reader_is_disconnected_and_the_room_goes_on() {
    let nats = NatsServer::start();
    let gw = gateway(
        &nats,
        &[
            "--out-queue",
            "32",
            "--rate",
            "100000",
            "--burst",
            "100000",
            "--max-line",
            "4096",
        ],
    );
    let mut watcher = Tty::named(&gw, "watcher").await;
    // Never reads after joining.
    let sloth = Tty::named(&gw, "sloth").await;
    let talker = Tty::named(&gw, "talker").await;
    // The talker reads everything, in a task of its own, so it is never slow.
    let Tty {
        rd, wr: mut talk, ..
    } = talker;
    let drain = tokio::spawn(async move {
        let mut rd = rd;
        let mut sink = vec![0u8; 65536];
        while let Ok(n) = rd.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    });
    let line = "y".repeat(4000);
    let reader = tokio::spawn(async move {
        let kicked = watcher
            .expect("the sloth kicked", |l| {
                l.ends_with("-- ~sloth quit (too slow)")
            })
            .await;
        (watcher, kicked)
    });
    // Enough to fill the kernel's socket buffers and then the queue.
    let mut sent = 0;
    while !reader.is_finished() && sent < 20_000 {
        talk.write_all(line.as_bytes()).await.unwrap();
        talk.write_all(b"\n").await.unwrap();
        sent += 1;
    }
    let (mut watcher, _) = reader.await.unwrap();
    drop(sloth);
    // The room still works for the others.
    talk.write_all(b"after\n").await.unwrap();
    watcher
        .expect("after", |l| l.ends_with("<~talker> after"))
        .await;
    drain.abort();
}

#[tokio::test]
async fn limits_idle_timeout_and_graceful_shutdown() {
    let nats = NatsServer::start();
    let mut gw = gateway(&nats, &["--max-connections", "2", "--idle-timeout", "2"]);
    let mut a = Tty::named(&gw, "anna").await;
    let mut b = Tty::connect(&gw).await;
    b.expect("prompt", |l| l.contains("Choose a name")).await;
    let mut b = b;
    // A third connection is told the gateway is full.
    let mut c = Tty::connect(&gw).await;
    let lines = c.until_closed().await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("this gateway is full (2 connections)")),
        "{lines:?}"
    );
    // b says nothing: idle timeout (a keeps talking meanwhile, and stays).
    let idle = tokio::spawn(async move { b.until_closed().await });
    let mut i = 0;
    while !idle.is_finished() {
        i += 1;
        a.send(&format!("tick {i}")).await;
        a.expect("own tick", |l| l.ends_with(&format!("<~anna> tick {i}")))
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let lines = idle.await.unwrap();
    assert!(
        lines.iter().any(|l| l.contains("idle for 2 s")),
        "{lines:?}"
    );
    // SIGTERM: the users are told, and the gateway exits cleanly.
    a.send("still talking").await;
    a.expect("own", |l| l.ends_with("<~anna> still talking"))
        .await;
    assert!(gw.terminate(), "clean exit on SIGTERM");
    let lines = a.until_closed().await;
    assert!(
        lines.iter().any(|l| l.contains("shutting down")),
        "{lines:?}"
    );
    // Its name was released: another gateway can give it out at once.
    let gw2 = gateway(&nats, &[]);
    Tty::named(&gw2, "anna").await;
}

#[tokio::test]
async fn a_killed_gateway_loses_nothing_and_its_names_come_back() {
    let nats = NatsServer::start();
    let mut gw1 = gateway(&nats, &["--name-ttl", "2"]);
    let gw2 = gateway(&nats, &["--name-ttl", "2"]);
    let mut alice = Tty::named(&gw1, "alice").await;
    let mut bob = Tty::named(&gw2, "bob").await;
    let mut carol = Tty::named(&gw2, "carol").await;
    for i in 0..5 {
        alice.send(&format!("before the crash {i}")).await;
        bob.expect("alice", |l| l.ends_with(&format!("before the crash {i}")))
            .await;
    }
    gw1.kill();
    // The survivors keep chatting.
    bob.send("are you there").await;
    carol
        .expect("bob", |l| l.ends_with("<~bob> are you there"))
        .await;
    // Alice reconnects to the survivor: her name is hers again once the
    // crashed gateway's claim has expired (2 s), not before.
    let mut again = Tty::connect(&gw2).await;
    again
        .expect("prompt", |l| l.contains("Choose a name"))
        .await;
    let start = Instant::now();
    loop {
        again.send("alice").await;
        let l = again
            .expect("an answer", |l| {
                l.starts_with("!!") || l.starts_with("-- Hello")
            })
            .await;
        if l.starts_with("-- Hello") {
            break;
        }
        assert!(l.contains("taken"), "{l}");
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "alice never came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Nothing said before the crash was lost.
    again.send("/history 100").await;
    again
        .expect("history", |l| l.ends_with("<~alice> before the crash 0"))
        .await;
    again
        .expect("history", |l| l.ends_with("<~alice> before the crash 4"))
        .await;
    again.send("back").await;
    bob.expect("back", |l| l.ends_with("<~alice> back")).await;
}

#[tokio::test]
async fn stats_over_nats_micro() {
    let nats = NatsServer::start();
    let gw = gateway(&nats, &[]);
    let _a = Tty::named(&gw, "stat").await;
    let client = reddit_shared::connect::connect_with(
        &chat_url(&nats.url()),
        "test-chat",
        async_nats::ConnectOptions::new().custom_inbox_prefix(reddit_shared::subject::chat::INBOX),
        None,
    )
    .await
    .unwrap();
    let reply = client
        .request(reddit_shared::subject::chat::service_stats(), "".into())
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(v["name"], "reddit-chat", "{v}");
    let data = &v["endpoints"][0]["data"];
    assert_eq!(data["connections"], 1, "{v}");
    assert!(data["accepted"].as_u64().unwrap() >= 1, "{v}");
    assert!(data["delivered_per_second"].is_number(), "{v}");
}
