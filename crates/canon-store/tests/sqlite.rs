//! The conformance suite on the SQLite backend, plus SQLite-specific checks.

mod conformance;

use std::sync::Arc;

use canon_store::sqlite::SqliteStore;
use canon_store::{Lookup, Store};

fn fresh() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("canon.db")).expect("open");
    (Arc::new(store), dir)
}

conformance_tests!(fresh());

#[tokio::test]
async fn data_survives_reopen_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canon.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        store.create_tenant("acme").await.unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert!(matches!(store.tenant("acme").await.unwrap(), Lookup::Found(_)));
}

#[tokio::test]
async fn pragmas_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canon.db");
    let _store = SqliteStore::open(&path).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn secrets_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canon.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.secret("cursor", "first").await.unwrap(), "first");
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.secret("cursor", "second").await.unwrap(), "first");
}
