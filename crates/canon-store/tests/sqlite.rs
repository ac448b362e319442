//! The conformance suite on the SQLite backend, plus SQLite-specific checks.

mod conformance;

use std::sync::Arc;

use canon_store::Lookup;
use canon_store::prelude::*;
use canon_store::sqlite::SqliteStore;

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
async fn maintenance_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canon.db");
    let set = {
        let store = SqliteStore::open(&path).unwrap();
        let setting = canon_store::MaintenanceSetting {
            enabled: true,
            retry_after_seconds: 60,
            message: "back soon".into(),
        };
        store
            .set_maintenance(setting, canon_store::Expect::Anything, 5)
            .await
            .unwrap()
    };
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.maintenance().await.unwrap(), set);
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
async fn schema_v3_upgrades_a_v2_database_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canon.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(include_str!("../src/sqlite/schema.sql")).unwrap();
        conn.execute_batch(include_str!("../src/sqlite/schema_v2.sql")).unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        conn.execute_batch(
            "INSERT INTO tenants (id, name, created_at, updated_at) VALUES ('t1', 'acme', 5, 6);
             INSERT INTO users (id, tenant_id, email, role, created_at, updated_at)
               VALUES ('u1', 't1', 'a@example.com', 'admin', 5, 7);
             INSERT INTO api_keys (id, tenant_id, user_id, name, token_hash, created_at)
               VALUES ('k1', 't1', 'u1', 'ci', 'h', 8);",
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let t = store.tenant("acme").await.unwrap().found().unwrap();
    assert_eq!((t.version, t.updated_at), (1, 6));
    let u = store.user("t1", "u1").await.unwrap().found().unwrap();
    assert_eq!((u.version, u.updated_at), (1, 7));
    let k = store.api_key("u1", "k1").await.unwrap().found().unwrap();
    assert_eq!((k.version, k.created_at, k.updated_at), (1, 8, 8));
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    // One migration per schema file (schema.sql is v1).
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/src/sqlite"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("schema") && name.ends_with(".sql")
        })
        .count();
    assert_eq!(version, files as i64, "every later migration ran too");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canon.db");
    conformance::jobs_survive_reopen(|| Arc::new(SqliteStore::open(&path).expect("open")) as Arc<dyn Store>).await;
}

/// Two stores on one file stand for two canon processes: they share the
/// queue, and SQLite's write lock makes each claim atomic across them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_the_job_queue() {
    use canon_store::{JobKind, NewJob, now_millis};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canon.db");
    let a: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
    let b: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
    let t = a.create_tenant("acme").await.unwrap();
    let now = now_millis();
    let n = 30;
    for i in 0..n {
        let new = NewJob {
            tenant_id: t.id.clone(),
            kind: JobKind::Export,
            params: serde_json::json!({}),
            total: None,
            with_input: false,
        };
        a.create_job(new, now + i).await.unwrap();
    }
    let lease = std::time::Duration::from_secs(60);
    let mut tasks = Vec::new();
    for w in 0..(2 * n) {
        let store = if w % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            store.claim_job(&format!("w{w}"), lease, now + 100).await.unwrap()
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.extend(task.await.unwrap().map(|j| j.id));
    }
    assert_eq!(ids.len(), n as usize);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n as usize, "no job claimed by both processes");
}

#[tokio::test]
async fn another_process_s_changes_move_the_generation_within_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canon.db");
    let a = SqliteStore::open(&path).unwrap();
    let b = SqliteStore::open(&path).unwrap();
    let before = b.generation();
    a.create_tenant("acme").await.unwrap();
    let started = std::time::Instant::now();
    while b.generation() == before {
        assert!(
            started.elapsed() < std::time::Duration::from_millis(500),
            "b never saw a's change"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    eprintln!("seen after {:?}", started.elapsed());
}

#[tokio::test]
async fn schema_v11_keeps_every_job_when_it_rebuilds_the_jobs_table() {
    use canon_store::{JobKind, NewJob};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canon.db");
    let (tenant, job) = {
        let store = SqliteStore::open(&path).unwrap();
        let t = store.create_tenant("acme").await.unwrap();
        let new = NewJob {
            tenant_id: t.id.clone(),
            kind: JobKind::Export,
            params: serde_json::json!({"format": "ndjson"}),
            total: None,
            with_input: false,
        };
        let job = store.create_job(new, 1_000).await.unwrap();
        store.close().await.unwrap();
        (t, job)
    };
    // Back to a database at v10 (without the devices table), as before the
    // migration; opening it runs v11 again.
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("DROP TABLE devices; PRAGMA user_version = 10;")
            .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(
        store.job(&tenant.id, &job.id).await.unwrap(),
        Lookup::Found(job.clone())
    );
    let claimed = store
        .claim_job("w", std::time::Duration::from_secs(30), 2_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, job.id, "the claim index was rebuilt with the table");
    let command = NewJob {
        tenant_id: tenant.id.clone(),
        kind: JobKind::DeviceCommand,
        params: serde_json::json!({}),
        total: Some(1),
        with_input: false,
    };
    store.create_job(command, 3_000).await.unwrap();
}

#[tokio::test]
async fn schema_v12_gives_existing_devices_the_system_roots() {
    use canon_store::{DeviceStore, DeviceTls, NewDevice};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canon.db");
    let tenant = {
        let store = SqliteStore::open(&path).unwrap();
        let t = store.create_tenant("acme").await.unwrap();
        store.close().await.unwrap();
        t
    };
    // Back to v11: a device row as v11 wrote it, without the TLS columns.
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "ALTER TABLE devices DROP COLUMN tls_ca_certificate;
             ALTER TABLE devices DROP COLUMN tls_certificate_sha256;
             PRAGMA user_version = 11;",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO devices (id, tenant_id, name, endpoint, timeout_ms, headers, version, created_at, updated_at)
             VALUES ('d1', ?1, 'fw', 'https://10.0.0.1/', 1000, '[]', 1, 5, 5)",
            [&tenant.id],
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let Lookup::Found(old) = store.device(&tenant.id, "fw").await.unwrap() else {
        panic!("the v11 device is gone");
    };
    assert_eq!(
        (old.endpoint.as_str(), old.tls.clone()),
        ("https://10.0.0.1/", DeviceTls::default())
    );
    let new = NewDevice {
        name: "fw2".into(),
        endpoint: "https://10.0.0.2/".into(),
        timeout_ms: 1000,
        headers: Vec::new(),
        tls: DeviceTls {
            ca_certificate: None,
            certificate_sha256: Some("00".repeat(32)),
        },
    };
    let created = store.create_device(&tenant.id, new).await.unwrap();
    assert_eq!(created.tls.certificate_sha256, Some("00".repeat(32)));
}

/// The record cache (exclusive locking, the default): a record read once is
/// served from memory until a write changes it, and every kind of write,
/// through this store or another one of the process on the same file, is
/// seen by the very next read.
#[tokio::test]
async fn a_cached_record_is_never_served_after_a_write_through_any_store_of_the_file() {
    use canon_store::{Expect, NewCollection, RecordWrite};
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canon.db");
    let a = SqliteStore::open(&path).unwrap();
    let b = SqliteStore::open(&path).unwrap();
    let t = a.create_tenant("acme").await.unwrap();
    let new = NewCollection {
        name: "devices".into(),
        schema: json!({"type": "object"}),
        unique: vec![],
        require_if_match: false,
    };
    let c = a.create_collection(&t.id, new).await.unwrap();
    let data = |r: Lookup<std::sync::Arc<canon_store::RawRecord>>| r.found().map(|r| r.data.clone());
    let r = a.create_record(&c, json!({"n": 1})).await.unwrap();
    let mut expected = r#"{"n":1}"#.to_owned();
    for (n, write) in ["put through a", "put through b", "batch through a"]
        .into_iter()
        .enumerate()
    {
        // Read twice through both stores: the second read of each is a hit.
        for store in [&a, &b, &a, &b] {
            assert_eq!(
                data(store.raw_record(&c.id, &r.id).await.unwrap()).as_deref(),
                Some(expected.as_str()),
                "{write}"
            );
        }
        let next = json!({"n": n + 2});
        match write {
            "put through a" => drop(
                a.put_record(&c, &r.id, next.clone(), Expect::Anything, "u")
                    .await
                    .unwrap(),
            ),
            "put through b" => drop(
                b.put_record(&c, &r.id, next.clone(), Expect::Anything, "u")
                    .await
                    .unwrap(),
            ),
            _ => {
                let writes = vec![RecordWrite::Put {
                    id: r.id.clone(),
                    data: Ok(next.clone()),
                    expect: Expect::Anything,
                }];
                a.apply_atomically(&c, writes, "u", std::time::Duration::from_secs(60))
                    .await
                    .unwrap();
            }
        }
        expected = next.to_string();
        for store in [&a, &b] {
            assert_eq!(
                data(store.raw_record(&c.id, &r.id).await.unwrap()).as_deref(),
                Some(expected.as_str()),
                "after {write}"
            );
        }
    }
    b.delete_record(&c.id, &r.id, Expect::Anything, "u", std::time::Duration::from_secs(60))
        .await
        .unwrap();
    for store in [&a, &b] {
        assert!(
            matches!(store.raw_record(&c.id, &r.id).await.unwrap(), Lookup::Gone),
            "a deleted record is gone at once"
        );
    }
}
