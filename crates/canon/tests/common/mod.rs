//! Helpers for tests that run the `canon` binary as its own process.

#![allow(dead_code)]

pub mod database;

use std::ops::{Deref, DerefMut};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `canon` process that is killed and reaped when dropped: when a test
/// fails (an assertion panics) or returns early, no server outlives it.
/// A test that stops the process itself (SIGTERM, `kill`) may; the drop
/// then finds it gone.
pub struct Process(Child);

impl Process {
    /// Guards `child`.
    pub fn new(child: Child) -> Self {
        Process(child)
    }
}

impl Deref for Process {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for Process {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Already exited (and reaped): nothing to do. Otherwise SIGKILL and
        // wait, so it is not left running nor as a zombie.
        if matches!(self.0.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `canon serve` on `port` over the SQLite file `db`, with the
/// operator token `token` and the extra environment `env`. The rate limits
/// and the daily quota are off unless `env` sets them: these tests load the
/// server as fast as they can on purpose (tests/limits.rs in canon-server
/// tests the limits).
pub fn spawn(db: &std::path::Path, port: u16, token: &str, env: &[(&str, &str)]) -> Process {
    spawn_on(&format!("sqlite://{}", db.display()), port, token, env)
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
    /// The process (killed when dropped).
    pub child: Process,
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
        let client = canon_server::http_client::client();
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

/// Starts `canon serve` on `port` over the database URL `url` (SQLite or
/// PostgreSQL), with the operator token `token`, limits off (as [`spawn`]),
/// and `env`.
pub fn spawn_on(url: &str, port: u16, token: &str, env: &[(&str, &str)]) -> Process {
    let mut command = Command::new(env!("CARGO_BIN_EXE_canon"));
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--database", url])
        .env("CANON_BOOTSTRAP_TOKEN", token)
        .env("CANON_LOG", "warn")
        .env("CANON_RATE_LIMIT_PER_SECOND", "0")
        .env("CANON_DAILY_QUOTA", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    Process::new(command.spawn().expect("spawn canon"))
}
