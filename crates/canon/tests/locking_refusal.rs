//! What a `canon serve` that cannot have its SQLite file says (docs/decisions.md,
//! "Who may open the SQLite file"), for each way of asking: the advice must
//! fit the setting the refused server already has.

mod common;

use std::process::{Command, Stdio};

use serde_json::json;

const TOKEN: &str = "locking-refusal-operator-token-0123456789";

/// Starts a second server on `db` with `locking` and returns what it said
/// on stderr as it stopped.
fn second_server_says(db: &std::path::Path, locking: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_canon"))
        .args(["serve", "--listen", &format!("127.0.0.1:{}", common::free_port())])
        .args(["--database", &format!("sqlite://{}", db.display())])
        .env("CANON_BOOTSTRAP_TOKEN", TOKEN)
        .env("CANON_DB_TIMEOUT_MS", "200")
        .env("CANON_SQLITE_LOCKING", locking)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success(), "a second canon ({locking}) served the same file");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_server_refused_by_an_exclusive_one_is_told_what_to_change() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("canon.db");
    let node = common::Node::start(&db, TOKEN, &[]).await;
    node.post_ok("/v1/tenants", json!({"name": "acme"})).await;

    // Asking for exclusive use: the file is in use; sharing is the way out.
    let said = second_server_says(&db, "exclusive");
    assert!(said.contains("in use by another process"), "{said}");
    assert!(said.contains("CANON_SQLITE_LOCKING=shared"), "{said}");

    // Already asking to share: telling it to set what it set is no help;
    // the other process holds the file for itself alone.
    let said = second_server_says(&db, "shared");
    assert!(said.contains("in use by another process"), "{said}");
    assert!(
        !said.contains("unless CANON_SQLITE_LOCKING=shared"),
        "advises the setting it already has: {said}"
    );
    assert!(said.contains("every process"), "{said}");
}
