//! Who may open the SQLite file while `canon serve` runs
//! (docs/decisions.md, "Who may open the SQLite file"): by default this
//! process alone, so another process can neither read the file nor serve it;
//! with `CANON_SQLITE_LOCKING=shared`, anyone.
//!
//! Each test runs the binary as its own process: POSIX locks never stop the
//! process that holds them, so only another process can tell.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

const TOKEN: &str = "sqlite-locking-operator-token-0123456789";

/// Counts the tenants by a connection of this (the test's) process.
fn tenants_seen_from_outside(db: &std::path::Path) -> rusqlite::Result<i64> {
    let conn = rusqlite::Connection::open(db)?;
    conn.busy_timeout(Duration::from_millis(200))?;
    conn.query_row("SELECT count(*) FROM tenants", [], |r| r.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_no_other_process_can_open_the_file_while_canon_runs() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("canon.db");
    let node = common::Node::start(&db, TOKEN, &[]).await;
    node.post_ok("/v1/tenants", json!({"name": "acme"})).await;

    let refused = tenants_seen_from_outside(&db).expect_err("another process read the file");
    assert_eq!(
        refused.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy),
        "{refused}"
    );

    // A second server on the same file stops at once and says why.
    let started = Instant::now();
    let second = Command::new(env!("CARGO_BIN_EXE_canon"))
        .args(["serve", "--listen", &format!("127.0.0.1:{}", common::free_port())])
        .args(["--database", &format!("sqlite://{}", db.display())])
        .env("CANON_BOOTSTRAP_TOKEN", TOKEN)
        .env("CANON_DB_TIMEOUT_MS", "200")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!second.status.success(), "a second canon served the same file");
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(said.contains("in use by another process"), "{said}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());

    // The first server never noticed, and once it is gone the file is free.
    node.post_ok("/v1/tenants", json!({"name": "beta"})).await;
    drop(node);
    assert_eq!(tenants_seen_from_outside(&db).unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_locking_lets_another_process_read_while_canon_runs() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("canon.db");
    let node = common::Node::start(&db, TOKEN, &[("CANON_SQLITE_LOCKING", "shared")]).await;
    node.post_ok("/v1/tenants", json!({"name": "acme"})).await;
    assert_eq!(tenants_seen_from_outside(&db).unwrap(), 1);
    // And Canon goes on writing beside the other reader.
    node.post_ok("/v1/tenants", json!({"name": "beta"})).await;
    assert_eq!(tenants_seen_from_outside(&db).unwrap(), 2);
}

#[test]
fn an_unknown_locking_mode_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_canon"))
        .args(["serve", "--listen", "127.0.0.1:0", "--sqlite-locking", "loose"])
        .args(["--database", &format!("sqlite://{}", dir.path().join("c.db").display())])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("expected exclusive or shared"), "{said}");
}
