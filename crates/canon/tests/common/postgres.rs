//! A PostgreSQL database made for one test on `CANON_TEST_POSTGRES_URL`'s
//! server, and `canon serve` on it.

use std::process::{Command, Stdio};

use tokio_postgres::NoTls;

use super::Process;

/// A database of its own for one test; [`TestDatabase::drop_it`] removes it.
pub struct TestDatabase {
    admin: tokio_postgres::Client,
    /// Its name.
    pub name: String,
    /// Its URL.
    pub url: String,
}

impl TestDatabase {
    /// Makes a database named after `prefix`, or None (with a note) when
    /// `CANON_TEST_POSTGRES_URL` is not set.
    pub async fn make(prefix: &str) -> Option<TestDatabase> {
        let Ok(admin_url) = std::env::var("CANON_TEST_POSTGRES_URL") else {
            eprintln!("CANON_TEST_POSTGRES_URL is not set: skipping a PostgreSQL test");
            return None;
        };
        let (admin, conn) = tokio_postgres::connect(&admin_url, NoTls).await.expect("connect");
        tokio::spawn(conn);
        let name = format!("{prefix}_{}_{}", std::process::id(), canon_store::now_millis());
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create a test database");
        let base = admin_url.split('?').next().unwrap_or(&admin_url);
        let scheme_end = base.find("://").map_or(0, |i| i + 3);
        let server = match base[scheme_end..].find('/') {
            Some(slash) => &base[..scheme_end + slash],
            None => base,
        };
        let url = format!("{server}/{name}");
        Some(TestDatabase { admin, name, url })
    }

    /// Drops the database (and any connection left to it).
    pub async fn drop_it(self) {
        let _ = self
            .admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
            .await;
    }
}

/// Starts `canon serve` on `port` over the database URL `url` (SQLite or
/// PostgreSQL), with the operator token `token`, limits off, and `env`.
pub fn spawn_on(url: &str, port: u16, token: &str, env: &[(&str, &str)]) -> Process {
    let mut command = Command::new(env!("CARGO_BIN_EXE_canon"));
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--database", url])
        .env("CANON_BOOTSTRAP_TOKEN", token)
        .env("CANON_LOG", "warn")
        .env("CANON_DB_POOL_SIZE", "4")
        .env("CANON_RATE_LIMIT_PER_SECOND", "0")
        .env("CANON_DAILY_QUOTA", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    Process::new(command.spawn().expect("spawn canon"))
}
