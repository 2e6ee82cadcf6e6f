//! What the engine's benchmarks share: the repository root, a nats-server
//! binary (`NATS_SERVER_BIN`, else `scripts/install-nats.sh`), and free ports.
#![allow(dead_code, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The number in environment variable `key`, else `default`.
pub fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Appends `record` to `log` with up to `depth` appends in flight, each
/// expecting the sequence before it (as the journal does with `--log-pipeline`),
/// as long as `more(appends started)` says so; checks that the records land in
/// order and returns the last sequence.
pub async fn append_pipelined(
    log: &reddit_engine::wal::Log,
    record: &bytes::Bytes,
    depth: usize,
    mut more: impl FnMut(u64) -> bool,
) -> u64 {
    use futures::stream::{FuturesOrdered, StreamExt};
    let mut inflight = FuturesOrdered::new();
    let mut next = 0u64;
    let mut last = 0u64;
    loop {
        // The first append alone: it creates the log's first segment, which
        // the appends behind it would otherwise race to find.
        let room = if last == 0 { 1 } else { depth };
        while inflight.len() < room && more(next) {
            let log = log.clone();
            let record = record.clone();
            let expected = next;
            next += 1;
            inflight.push_back(async move {
                log.append(record, &format!("b.{expected}"), expected).await
            });
        }
        match inflight.next().await {
            Some(r) => {
                let seq = r.expect("an append");
                assert_eq!(seq, last + 1, "records land in order");
                last = seq;
            }
            None => return last,
        }
    }
}

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A nats-server binary new enough for the engine.
pub fn nats_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        return PathBuf::from(p);
    }
    let out = Command::new("bash")
        .arg(root().join("scripts/install-nats.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/install-nats.sh");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A loopback port nobody listens on (now).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A throwaway nats-server with file-stored JetStream synced on every write
/// (as `nats.conf` runs it), on a free port; killed and its store removed
/// when dropped.
pub struct JetStreamServer {
    child: std::process::Child,
    dir: PathBuf,
    /// Its URL.
    pub url: String,
}

impl JetStreamServer {
    /// Starts one, its store in a temporary directory named after `name`.
    pub fn start(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("reddit-{name}-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let conf = dir.join("js.conf");
        std::fs::write(
            &conf,
            format!(
                "jetstream {{\n  store_dir: {:?}\n  sync_interval: always\n}}\n",
                dir.join("js")
            ),
        )
        .expect("write the server's configuration");
        let port = free_port();
        let child = Command::new(nats_bin())
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        Self {
            child,
            dir,
            url: format!("nats://127.0.0.1:{port}"),
        }
    }

    /// A client, once the server accepts connections (within 10 s).
    pub async fn connect(&self) -> async_nats::Client {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match async_nats::connect(&self.url).await {
                Ok(c) => return c,
                Err(e) if std::time::Instant::now() > deadline => panic!("nats-server: {e}"),
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
    }
}

impl Drop for JetStreamServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
