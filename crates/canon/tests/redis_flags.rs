//! `canon serve`'s Redis settings reach the limiter: with Redis unreachable
//! the default (`open`) serves, `CANON_REDIS_FAILURE=closed` (or the config
//! file's `redis_failure`) answers 503, and a value that is neither is
//! refused at start. Needs no Redis: the URL names a closed port.

mod common;

use std::process::{Command, Stdio};

use common::{Node, free_port};

const TOKEN: &str = "redis-flags-operator";

async fn status_of_a_limited_request(env: &[(&str, &str)]) -> (u16, Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let unreachable = format!("redis://127.0.0.1:{}", free_port());
    let mut all = vec![
        ("CANON_REDIS_URL", unreachable.as_str()),
        ("CANON_RATE_LIMIT_PER_SECOND", "100"),
    ];
    all.extend_from_slice(env);
    let node = Node::start(&dir.path().join("canon.db"), TOKEN, &all).await;
    let r = node
        .client
        .get(format!("{}/v1/tenants", node.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (r.status().as_u16(), retry_after)
}

#[tokio::test]
async fn an_unreachable_redis_is_open_by_default_and_closed_when_told() {
    assert_eq!(status_of_a_limited_request(&[]).await.0, 200);
    assert_eq!(
        status_of_a_limited_request(&[("CANON_REDIS_FAILURE", "closed")]).await,
        (503, Some("1".into()))
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("canon.toml");
    std::fs::write(&file, "redis_failure = \"closed\"\n").unwrap();
    let file = file.display().to_string();
    // The file's value, when neither flag nor environment sets it.
    let unreachable = format!("redis://127.0.0.1:{}", free_port());
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _child = common::Process::new(
        Command::new(env!("CARGO_BIN_EXE_canon"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--config", &file])
            .arg("--database")
            .arg(format!("sqlite://{}", dir.path().join("canon.db").display()))
            .args(["--redis", &unreachable, "--rate-limit-per-second", "100"])
            .env("CANON_BOOTSTRAP_TOKEN", TOKEN)
            .env_remove("CANON_REDIS_FAILURE")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn canon"),
    );
    let client = canon_server::http_client::client();
    common::wait_ready(&client, &base).await;
    let r = client
        .get(format!("{base}/v1/tenants"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
}

#[test]
fn a_failure_policy_that_is_neither_open_nor_closed_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_canon"))
        .args(["serve", "--redis-failure", "sometimes"])
        .output()
        .expect("run canon");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("neither `open` nor `closed`"), "{stderr}");
}
