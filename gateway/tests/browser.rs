//! The web page in a real browser: Debian's chromium and chromium-driver
//! (installed by `scripts/install-browser.sh` when missing), driven by selenium
//! from `gateway/tests/browser/web_test.py`, against a real nats-server, shards
//! and the gateway process. The key the page exports is then used by the CLI,
//! through the same gateway: one account, two clients.
//!
//! `REDDIT_SCREENSHOTS=docs/screenshots cargo test -p reddit-gateway --test
//! browser` refreshes the README's screenshots.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../client/tests/common/mod.rs"]
mod common;

use common::{Cluster, GatewayProcess};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_page_works_in_a_real_browser() {
    let root = common::root();
    let install = Command::new("bash")
        .arg(root.join("scripts/install-browser.sh"))
        .output()
        .expect("run scripts/install-browser.sh");
    assert!(
        install.status.success(),
        "{}",
        String::from_utf8_lossy(&install.stderr)
    );
    let selenium = String::from_utf8(install.stdout).unwrap().trim().to_owned();

    let cluster = Cluster::start(2).await;
    let gw = GatewayProcess::start(
        Path::new(env!("CARGO_BIN_EXE_reddit-gateway")),
        &cluster.nats.url(),
        &[],
    );
    let shots = std::env::var("REDDIT_SCREENSHOTS")
        .map(|d| root.join(d))
        .unwrap_or_else(|_| std::env::temp_dir().join(format!("screens-{}", std::process::id())));
    let script = root.join("gateway/tests/browser/web_test.py");
    let base = gw.base.clone();
    let shots_env = shots.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .arg("170")
            .arg("python3")
            .arg(script)
            .env("PYTHONPATH", selenium)
            .env("GATEWAY_URL", base)
            .env("SCREENSHOTS", shots_env)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "the browser test failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for name in [
        "front",
        "subreddit",
        "post",
        "messages",
        "user",
        "stats",
        "post-phone",
    ] {
        assert!(
            shots.join(format!("{name}.png")).exists(),
            "screenshot {name}"
        );
    }

    // The key exported by the page works in the CLI, through the same gateway.
    let (user, key) = stdout
        .lines()
        .find_map(|l| l.strip_prefix("KEY "))
        .and_then(|l| l.split_once(' '))
        .expect("the exported key");
    let dir = std::env::temp_dir().join(format!("browser-cli-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("users")).unwrap();
    std::fs::write(dir.join("users").join(format!("{user}.key")), key).unwrap();
    let cli = Command::new(common::workspace_bin("reddit-client"))
        .args(["--http", &gw.base, "--user", user, "--json", "login"])
        .env("REDDIT_CLIENT_DIR", &dir)
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "the CLI with the browser's key: {}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert!(String::from_utf8_lossy(&cli.stdout).contains(user));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = Duration::from_secs(0);
    cluster.stop().await;
}
