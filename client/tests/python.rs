//! A client in another language, written from `docs/protocol.md` alone
//! (`tests/python/minimal_client.py`, the document's own example), against three
//! shards and the project's NATS roles: register anonymously, connect as the user
//! by key, log in, read, send a DM twice with one idempotency key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{anon_url, Cluster};
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_python_client_works() {
    let cluster = Cluster::start(3).await;
    run_python(&cluster, "minimal_client.py", &["Dave_Py"]).await;
    let user = cluster
        .client
        .get_user(&common::un("dave_py"))
        .await
        .unwrap();
    assert_eq!(user.username, "Dave_Py");
    cluster.stop().await;
}

/// Runs `tests/python/<script>` with `args` against `cluster`, expecting "ok".
async fn run_python(cluster: &Cluster, script: &str, args: &[&str]) {
    let deps = Command::new("bash")
        .arg(common::root().join("scripts/install-python-client.sh"))
        .output()
        .expect("run scripts/install-python-client.sh");
    assert!(
        deps.status.success(),
        "{}",
        String::from_utf8_lossy(&deps.stderr)
    );
    let pythonpath = String::from_utf8(deps.stdout).unwrap().trim().to_owned();
    let script = common::root().join("client/tests/python").join(script);
    let (url, service) = (anon_url(&cluster.nats.url()), cluster.nats.url());
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .args(args)
            .env("PYTHONPATH", pythonpath)
            .env("NATS_URL", url)
            .env("SERVICE_URL", service)
            .env("SHARDS", "3")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ok"),
        "python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_written_from_the_doc_uses_every_operation() {
    let cluster = Cluster::start(3).await;
    run_python(&cluster, "every_operation.py", &["x1"]).await;
    cluster.stop().await;
}
