//! Helpers for tests that run the `canon` binary as its own process.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `canon serve` on `port` over the SQLite file `db`, with the
/// operator token `token` and the extra environment `env`. The rate limits
/// and the daily quota are off unless `env` sets them: these tests load the
/// server as fast as they can on purpose (tests/limits.rs in canon-server
/// tests the limits).
pub fn spawn(db: &std::path::Path, port: u16, token: &str, env: &[(&str, &str)]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_canon"));
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--database"])
        .arg(format!("sqlite://{}", db.display()))
        .env("CANON_BOOTSTRAP_TOKEN", token)
        .env("CANON_LOG", "warn")
        .env("CANON_RATE_LIMIT_PER_SECOND", "0")
        .env("CANON_DAILY_QUOTA", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    command.spawn().expect("spawn canon")
}

/// Waits until `/readyz` answers 2xx (at most 20 s).
pub async fn wait_ready(client: &reqwest::Client, base: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("canon did not become ready");
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `canon` process on a free port, and a client for it.
pub struct Node {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The port.
    pub port: u16,
    /// A client.
    pub client: reqwest::Client,
    token: String,
}

impl Node {
    /// Starts `canon serve` over `db` (see [`spawn`]) and waits until it is ready.
    pub async fn start(db: &std::path::Path, token: &str, env: &[(&str, &str)]) -> Node {
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let child = spawn(db, port, token, env);
        wait_ready(&client, &base).await;
        Node {
            child,
            base,
            port,
            client,
            token: token.to_owned(),
        }
    }

    /// POSTs `body` as JSON to `path` with the operator token; panics unless 2xx.
    pub async fn post_ok(&self, path: &str, body: serde_json::Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "POST {path}: {}", r.status());
    }
}
