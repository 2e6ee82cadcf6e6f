//! The gateway checked against its own OpenAPI document by a property-based
//! tester: schemathesis (installed by `scripts/install-schemathesis.sh` into
//! `.tools/`) generates valid and invalid requests for every operation from
//! `/openapi.json` and checks the answers: no server errors, every status and
//! content type documented, every response body matching its schema, valid
//! input accepted and invalid input refused. What a schema cannot say is in
//! `gateway/tests/schemathesis.toml`, with the reasons.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../client/tests/common/mod.rs"]
mod common;

use common::{Cluster, GatewayProcess};
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

async fn login(base: &str, name: &str) -> String {
    let h = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let public = hex::encode(key.verifying_key().to_bytes());
    let r = h
        .post(format!("{base}/api/v1/users"))
        .json(&json!({"username": name, "public_key": public}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "register: {}", r.status());
    let ch: Value = h
        .post(format!("{base}/api/v1/auth/challenge"))
        .json(&json!({"username": name}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let challenge = ch["challenge"].as_str().unwrap();
    let signature = hex::encode(
        key.sign(format!("reddit-login-v1\n{name}\n{challenge}").as_bytes())
            .to_bytes(),
    );
    let login: Value = h
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"username": name, "challenge": challenge, "signature": signature}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    login["token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_against_the_openapi_document() {
    let root = common::root();
    let install = Command::new("bash")
        .arg(root.join("scripts/install-schemathesis.sh"))
        .output()
        .expect("run scripts/install-schemathesis.sh");
    assert!(
        install.status.success(),
        "{}",
        String::from_utf8_lossy(&install.stderr)
    );
    let dir = String::from_utf8(install.stdout).unwrap().trim().to_owned();

    let cluster = Cluster::start(1).await;
    // One tester, one address, one token, many requests: lift the rate limits.
    let open = common::NO_RATE_LIMITS;
    let gw = GatewayProcess::start(
        Path::new(env!("CARGO_BIN_EXE_reddit-gateway")),
        &cluster.nats.url(),
        &open,
    );
    let token = login(&gw.base, "schemathesis").await;
    let config = root.join("gateway/tests/schemathesis.toml");
    let schema = gw.url("/openapi.json");
    let st = Path::new(&dir).join("bin/st");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(st)
            .arg("--config-file")
            .arg(config)
            .arg("run")
            .arg(schema)
            .args(["-H", &format!("Authorization: Bearer {token}")])
            // A stream never ends; the RPC surface takes any JSON by design.
            .args(["--exclude-path", "/api/v1/events"])
            .args(["--exclude-path", "/api/v1/rpc/{op}"])
            .args(["--max-examples", "25", "--request-timeout", "10"])
            .arg("--generation-deterministic")
            .env("PYTHONPATH", dir)
            .env("NO_COLOR", "1")
            // Its example database and crash cache go there, not into the repo.
            .current_dir(std::env::temp_dir())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let tail: String = {
        let chars: Vec<char> = stdout.chars().collect();
        chars[chars.len().saturating_sub(6000)..].iter().collect()
    };
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{tail}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Tested: "),
        "schemathesis did not run:\n{tail}"
    );
    cluster.stop().await;
}
