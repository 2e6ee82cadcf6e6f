//! What the engine's benchmarks share: the repository root, a nats-server
//! binary (`NATS_SERVER_BIN`, else `scripts/install-nats.sh`), and free ports.
#![allow(dead_code, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
