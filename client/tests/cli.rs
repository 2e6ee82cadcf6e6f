//! The CLI, as a person would use it, against 3 shards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Cluster;
use std::path::Path;
use std::process::Command;

struct Cli<'a> {
    url: String,
    dir: &'a Path,
}

impl Cli<'_> {
    fn run(&self, user: Option<&str>, args: &[&str]) -> (bool, String, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_reddit-client"));
        cmd.arg("--nats-url")
            .arg(&self.url)
            .arg("--config-dir")
            .arg(self.dir);
        if let Some(u) = user {
            cmd.args(["--user", u]);
        }
        let out = cmd.args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, user: Option<&str>, args: &[&str]) -> String {
        let (ok, out, err) = self.run(user, args);
        assert!(ok, "reddit-client {args:?} failed: {err}");
        out
    }

    fn json(&self, user: Option<&str>, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(user, &all)).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_uses_the_cli_against_three_shards() {
    let cluster = Cluster::start(3).await;
    let dir = std::env::temp_dir().join(format!("reddit-cli-test-{}", uuid::Uuid::now_v7()));
    let cli = Cli {
        url: common::anon_url(&cluster.nats.url()),
        dir: &dir,
    };
    let service_url = cluster.nats.url();
    let out = tokio::task::spawn_blocking({
        let url = cli.url.clone();
        let dir = dir.clone();
        move || {
            let cli = Cli { url, dir: &dir };
            for u in ["alice", "bob", "carol"] {
                let out = cli.ok(None, &["register", u]);
                assert!(out.contains(&format!("u/{u}")), "{out}");
            }
            assert!(dir.join("users/alice.key").exists());
            let (ok, _, err) = cli.run(None, &["register", "alice"]);
            assert!(!ok && err.contains("already exists"), "{err}");

            cli.ok(Some("alice"), &["sub", "create", "rust", "-d", "Rust talk"]);
            cli.ok(Some("bob"), &["sub", "create", "cooking"]);
            for (u, s) in [
                ("alice", "rust"),
                ("bob", "rust"),
                ("bob", "cooking"),
                ("carol", "rust"),
            ] {
                let out = cli.ok(Some(u), &["sub", "join", s]);
                assert!(out.contains("joined"), "{out}");
            }
            let post = cli.json(
                Some("alice"),
                &["post", "create", "rust", "Hello shards", "-b", "first"],
            );
            let post_id = post["id"].as_str().unwrap().to_owned();
            cli.json(Some("bob"), &["post", "create", "cooking", "Bread"]);
            let c1 = cli.json(Some("bob"), &["comment", "rust", &post_id, "top level"]);
            let c1 = c1["id"].as_str().unwrap().to_owned();
            let c2 = cli.json(
                Some("carol"),
                &["comment", "rust", &post_id, "a reply", "--parent", &c1],
            );
            let c2 = c2["id"].as_str().unwrap().to_owned();
            let c3 = cli.json(
                Some("alice"),
                &[
                    "comment",
                    "rust",
                    &post_id,
                    "a reply to the reply",
                    "--parent",
                    &c2,
                ],
            );
            assert_eq!(c3["depth"], 2);
            // Anonymous connections may only register: reading needs a user.
            let (ok, _, err) = cli.run(None, &["comments", "rust", &post_id]);
            assert!(!ok && err.contains("--user"), "{err}");
            let tree = cli.ok(Some("carol"), &["comments", "rust", &post_id]);
            let lines: Vec<&str> = tree.lines().collect();
            assert!(lines.iter().any(|l| l.starts_with("[+0] u/bob")), "{tree}");
            assert!(
                lines.iter().any(|l| l.starts_with("  [+0] u/carol")),
                "{tree}"
            );
            assert!(
                lines.iter().any(|l| l.starts_with("    [+0] u/alice")),
                "{tree}"
            );

            // The CLI signed what it wrote; --verify checks it with the authors' keys.
            let (ok, _, err) = cli.run(Some("carol"), &["comments", "rust", &post_id, "--verify"]);
            assert!(ok, "{err}");
            assert!(
                err.contains("signatures: 3 verified, 0 unsigned, 0 do not verify"),
                "{err}"
            );
            let (ok, _, err) = cli.run(Some("bob"), &["post", "get", "rust", &post_id, "--verify"]);
            assert!(ok && err.contains("signatures: 1 verified"), "{err}");

            let v = cli.json(Some("bob"), &["vote", "rust", "post", &post_id, "up"]);
            assert_eq!(v["score"], 1);
            cli.ok(Some("carol"), &["vote", "rust", "post", &post_id, "up"]);
            cli.ok(Some("alice"), &["vote", "rust", "comment", &c1, "down"]);

            let feed = cli.json(Some("bob"), &["feed", "--sort", "new"]);
            let titles: Vec<&str> = feed["posts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["title"].as_str().unwrap())
                .collect();
            assert_eq!(titles, vec!["Bread", "Hello shards"]);
            let feed_text = cli.ok(Some("bob"), &["feed", "--sort", "top"]);
            assert!(feed_text.contains("Hello shards"), "{feed_text}");

            let dm = cli.json(Some("bob"), &["dm", "send", "alice", "lunch?"]);
            let dm_id = dm["id"].as_str().unwrap().to_owned();
            let inbox = cli.ok(Some("alice"), &["dm", "list", "--unread"]);
            assert!(
                inbox.contains("lunch?") && inbox.contains("1 unread"),
                "{inbox}"
            );
            cli.ok(Some("alice"), &["dm", "reply", &dm_id, "sure"]);
            cli.ok(Some("alice"), &["dm", "read", &dm_id]);
            let bob_inbox = cli.json(Some("bob"), &["dm", "list"]);
            assert_eq!(bob_inbox["messages"][0]["body"], "sure");
            let (ok, _, err) = cli.run(Some("carol"), &["dm", "reply", &dm_id, "me too"]);
            assert!(!ok && err.contains("forbidden"), "{err}");

            // The cached token is used, and a refused one is replaced by a new login.
            assert!(dir.join("users/alice.token").exists());
            std::fs::write(
                dir.join("users/alice.token"),
                r#"{"token":"v1.alice.99999999999999.bad","expires_at":99999999999999}"#,
            )
            .unwrap();
            let me = cli.json(Some("alice"), &["user"]);
            assert_eq!(me["username"], "alice");
            cli.ok(Some("alice"), &["feed"]);

            // The audit is the service role's (credentials in the URL).
            let (ok, _, err) = cli.run(Some("alice"), &["audit"]);
            assert!(!ok && err.contains("forbidden"), "{err}");
            let service = Cli {
                url: service_url.clone(),
                dir: &dir,
            };
            service.ok(None, &["audit"])
        }
    })
    .await
    .unwrap();
    assert!(out.contains("audit over 3 shard(s)"), "{out}");
    let alice = cluster.client.get_user(&common::un("alice")).await.unwrap();
    assert_eq!(alice.post_karma, 2);
    let (ok, _, err) = cli.run(Some("nobody"), &["feed"]);
    assert!(!ok && err.contains("register nobody"), "{err}");
    let (ok, _, err) = cli.run(None, &["sub", "get", "x"]);
    assert!(!ok && err.contains("subreddit name"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_live_pushes() {
    use std::io::BufRead;
    let cluster = Cluster::start(2).await;
    let dir = std::env::temp_dir().join(format!("reddit-cli-watch-{}", uuid::Uuid::now_v7()));
    let cli = Cli {
        url: common::anon_url(&cluster.nats.url()),
        dir: &dir,
    };
    cli.ok(None, &["register", "watcher"]);
    cli.ok(None, &["register", "sender"]);
    cli.ok(Some("sender"), &["sub", "create", "news"]);
    let mut child = common::ChildGuard::new(
        Command::new(env!("CARGO_BIN_EXE_reddit-client"))
            .args(["--nats-url", &cli.url, "--config-dir"])
            .arg(&dir)
            .args([
                "--user", "watcher", "--json", "watch", "--sub", "news", "--count", "2",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.as_mut().unwrap().stderr.take().unwrap();
    let ready = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains("watching"))
    });
    assert!(
        tokio::time::timeout(std::time::Duration::from_secs(30), ready)
            .await
            .unwrap()
            .unwrap()
    );
    let url = cli.url.clone();
    let d = dir.clone();
    tokio::task::spawn_blocking(move || {
        let cli = Cli { url, dir: &d };
        cli.ok(Some("sender"), &["dm", "send", "watcher", "psst"]);
        cli.ok(Some("sender"), &["post", "create", "news", "Breaking"]);
    })
    .await
    .unwrap();
    let out = tokio::task::spawn_blocking(move || child.into_inner().wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\"kind\": \"dm\"") && text.contains("psst"),
        "{text}"
    );
    assert!(
        text.contains("\"kind\": \"post\"") && text.contains("Breaking"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    cluster.stop().await;
}
