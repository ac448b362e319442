//! The conformance suite on the PostgreSQL backend, plus PostgreSQL-specific
//! checks. Runs when `CANON_TEST_POSTGRES_URL` names a server (CI sets it);
//! each test makes its own database there and drops it at the end, so the
//! tests run in parallel. Without the variable every test prints a note and
//! passes without running.

mod conformance;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use canon_store::Lookup;
use canon_store::postgres::{PostgresOptions, PostgresStore};
use canon_store::prelude::*;
use tokio_postgres::NoTls;

/// A database made for one test, dropped (with its connections) when the
/// test ends.
struct TestDatabase {
    /// The server's URL, to the maintenance database.
    admin_url: String,
    /// The made database's name.
    name: String,
    /// Its URL.
    url: String,
}

impl TestDatabase {
    /// Makes a database, or `None` (with a note) when no server is named.
    async fn make() -> Option<TestDatabase> {
        let Ok(admin_url) = std::env::var("CANON_TEST_POSTGRES_URL") else {
            eprintln!("CANON_TEST_POSTGRES_URL is not set: skipping a PostgreSQL test");
            return None;
        };
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "canon_test_{}_{}_{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            canon_store::now_millis()
        );
        let (client, conn) = tokio_postgres::connect(&admin_url, NoTls)
            .await
            .expect("connect to CANON_TEST_POSTGRES_URL");
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create a test database");
        let url = with_database(&admin_url, &name);
        Some(TestDatabase { admin_url, name, url })
    }

    async fn open(&self) -> PostgresStore {
        PostgresStore::connect(&self.url, options()).await.expect("open")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime: the drop gets its own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(&admin_url, NoTls).await?;
                tokio::spawn(conn);
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
            })
            .map_err(std::io::Error::other)
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the test database {}", self.name);
        }
    }
}

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

fn options() -> PostgresOptions {
    PostgresOptions {
        pool_size: 8,
        timeout: Duration::from_secs(10),
    }
}

async fn fresh() -> Option<(Arc<dyn Store>, TestDatabase)> {
    let db = TestDatabase::make().await?;
    let store = db.open().await;
    Some((Arc::new(store), db))
}

conformance_tests!(match fresh().await {
    Some(made) => made,
    None => return,
});

#[test]
fn a_database_url_gets_another_database() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgres://u:p@h/test?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_reopen_and_migrations_are_idempotent() {
    let Some(db) = TestDatabase::make().await else {
        return;
    };
    {
        let store = db.open().await;
        store.create_tenant("acme").await.unwrap();
        store.close().await.unwrap();
    }
    let store = db.open().await;
    assert!(matches!(store.tenant("acme").await.unwrap(), Lookup::Found(_)));
    store.close().await.unwrap();
}

/// Nodes starting at once on an empty database: the advisory lock lets one
/// migrate; the others wait, then find nothing left to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_at_once_migrate_once() {
    let Some(db) = TestDatabase::make().await else {
        return;
    };
    let opened = futures_util::future::join_all((0..4).map(|_| PostgresStore::connect(&db.url, options()))).await;
    for store in opened {
        let store = store.expect("every node opens");
        store.ping().await.expect("ping");
        store.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_survive_reopen() {
    let Some(db) = TestDatabase::make().await else {
        return;
    };
    let open = || {
        let store = tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(db.open()));
        Arc::new(store) as Arc<dyn Store>
    };
    conformance::jobs_survive_reopen(open).await;
}

/// Two stores on one database stand for two canon nodes: `FOR UPDATE SKIP
/// LOCKED` gives each job to one claimer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_the_job_queue() {
    use canon_store::{JobKind, NewJob, now_millis};
    let Some(db) = TestDatabase::make().await else {
        return;
    };
    let a: Arc<dyn Store> = Arc::new(db.open().await);
    let b: Arc<dyn Store> = Arc::new(db.open().await);
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
    let lease = Duration::from_secs(60);
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
    assert_eq!(ids.len(), n as usize, "no job claimed by both nodes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_node_s_changes_move_the_generation_within_its_bound() {
    let Some(db) = TestDatabase::make().await else {
        return;
    };
    let a = db.open().await;
    let b = db.open().await;
    let before = b.generation();
    a.create_tenant("acme").await.unwrap();
    let started = std::time::Instant::now();
    while b.generation() == before {
        assert!(
            started.elapsed() < canon_store::postgres::GENERATION_POLL * 4,
            "b never saw a's change within twice its bound"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!("seen after {:?}", started.elapsed());
}

/// A server that is not there: the store cannot be opened, and says the
/// database is unavailable (503), within its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_unavailable() {
    // A port nothing listens on (bound, then freed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = std::time::Instant::now();
    let opened = PostgresStore::connect(
        &format!("postgres://postgres@127.0.0.1:{port}/canon"),
        PostgresOptions {
            pool_size: 2,
            timeout: Duration::from_secs(2),
        },
    )
    .await;
    assert!(
        matches!(opened, Err(canon_store::StoreError::Unavailable(_))),
        "{:?}",
        opened.err()
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// A store whose connections the server ends (as when PostgreSQL restarts)
/// answers Unavailable while they are gone, and serves again by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_connections_are_unavailable_then_replaced() {
    let Some(db) = TestDatabase::make().await else {
        return;
    };
    let store = db.open().await;
    store.create_tenant("acme").await.unwrap();
    let (admin, conn) = tokio_postgres::connect(&db.admin_url, NoTls).await.unwrap();
    tokio::spawn(conn);
    admin
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
            db.name
        ))
        .await
        .unwrap();
    // The pool may hand out a connection that died before it noticed: the
    // call fails as unavailable, never as anything else, and the dead
    // connection is not given out again.
    let mut unavailable = 0;
    let mut served = false;
    for _ in 0..20 {
        match store.tenant("acme").await {
            Ok(Lookup::Found(_)) => {
                served = true;
                break;
            }
            Err(canon_store::StoreError::Unavailable(_)) => unavailable += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(served, "served again after {unavailable} refusals");
}

/// A lock held elsewhere (another client's open transaction) makes a write
/// that needs it unavailable within the store's wait bound, not whenever
/// the lock goes; reads, which take no lock, are still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_elsewhere_bounds_the_write_waiting_for_it() {
    let Some(db) = TestDatabase::make().await else {
        return;
    };
    let bound = Duration::from_millis(500);
    let store = PostgresStore::connect(
        &db.url,
        PostgresOptions {
            pool_size: 4,
            timeout: bound,
        },
    )
    .await
    .unwrap();
    let (mut other, conn) = tokio_postgres::connect(&db.url, NoTls).await.unwrap();
    tokio::spawn(conn);
    let held = other.transaction().await.unwrap();
    held.batch_execute("SELECT * FROM maintenance FOR UPDATE")
        .await
        .unwrap();

    let setting = canon_store::MaintenanceSetting {
        enabled: true,
        retry_after_seconds: 5,
        message: String::new(),
    };
    let started = std::time::Instant::now();
    let refused = store
        .set_maintenance(setting.clone(), canon_store::Expect::Anything, 1)
        .await;
    let took = started.elapsed();
    assert!(
        matches!(refused, Err(canon_store::StoreError::Unavailable(_))),
        "{refused:?}"
    );
    assert!(took >= bound && took < bound * 4, "took {took:?}");
    assert!(!store.maintenance().await.unwrap().enabled, "reads go on");

    held.rollback().await.unwrap();
    let set = store
        .set_maintenance(setting, canon_store::Expect::Anything, 2)
        .await
        .unwrap();
    assert!(set.enabled, "the write goes through once the lock is gone");
}

/// Backends of the test's database waiting for a lock.
async fn waiting_for_locks(client: &tokio_postgres::Client, db: &str) -> i64 {
    client
        .query_one(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
            &[&db],
        )
        .await
        .unwrap()
        .get(0)
}

/// Polls `condition` every 10 ms for up to 10 s.
async fn eventually(what: &str, condition: impl AsyncFn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A DELETE restarting a tenant's deletion whose job was purged (it counts
/// as stopped) races the release of the tenant's name: the release must not
/// remove the tenant the restart just pointed at its new job. A single
/// release statement read the row before the restart committed, waited for
/// its lock, re-checked the row but not the job (its subquery kept the old
/// snapshot) and removed the tenant, orphaning the job the 202 handed out.
/// The interleaving is forced: another client holds the tenant's tombstone,
/// which the restart writes last, so the restart holds the tenant's row
/// while the purge runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_tenant_deletion_is_not_released_under_it() {
    use canon_store::{Expect, JobOutcome, JobStatus, now_millis};
    let Some(db) = TestDatabase::make().await else {
        return;
    };
    let store = Arc::new(db.open().await);
    let keep = Duration::from_secs(3600);
    let t = store.create_tenant("acme").await.unwrap();
    let first = store
        .delete_tenant("acme", Expect::Anything, keep, now_millis())
        .await
        .unwrap();
    let claimed = store
        .claim_job("w", Duration::from_secs(30), now_millis())
        .await
        .unwrap();
    assert_eq!(claimed.map(|j| j.id), Some(first.id.clone()));
    while !store
        .delete_tenant_step(&t.id, &first.id, "w", "acme/", 100, now_millis())
        .await
        .unwrap()
        .finished
    {}
    let outcome = JobOutcome::Succeeded { result: None };
    let done = store
        .finish_job(&t.id, &first.id, "w", outcome, now_millis(), Duration::ZERO)
        .await
        .unwrap();
    store
        .purge_expired_jobs(done.result_expires_at.unwrap(), keep)
        .await
        .unwrap();
    let stopped = store.tenant_deletion("acme").await.unwrap().unwrap();
    assert!(stopped.emptied_at.is_some() && stopped.stopped(), "{stopped:?}");

    let (mut other, conn) = tokio_postgres::connect(&db.url, NoTls).await.unwrap();
    tokio::spawn(conn);
    let (watcher, conn) = tokio_postgres::connect(&db.url, NoTls).await.unwrap();
    tokio::spawn(conn);
    let held = other.transaction().await.unwrap();
    held.batch_execute("SELECT 1 FROM tombstones WHERE kind = 'tenant' AND scope = '' AND key = 'acme' FOR UPDATE")
        .await
        .unwrap();
    let restart = tokio::spawn({
        let store = store.clone();
        async move { store.delete_tenant("acme", Expect::Anything, keep, now_millis()).await }
    });
    eventually("the restart waits for the tombstone", async || {
        waiting_for_locks(&watcher, &db.name).await == 1
    })
    .await;
    let purge = tokio::spawn({
        let store = store.clone();
        async move { store.purge_expired().await }
    });
    // The purge either waits for the tenant's row or passes it by.
    eventually("the purge waits or ends", async || {
        purge.is_finished() || waiting_for_locks(&watcher, &db.name).await == 2
    })
    .await;
    held.commit().await.unwrap();
    let second = restart.await.unwrap().expect("the restart's 202");
    purge.await.unwrap().unwrap();

    let deletion = store.tenant_deletion("acme").await.unwrap();
    let deletion = deletion.unwrap_or_else(|| panic!("the tenant was released under its new job {}", second.id));
    assert_eq!(
        (deletion.job_id.as_str(), deletion.job_status),
        (second.id.as_str(), Some(JobStatus::Queued))
    );
    // The new job is there to run, and is the one claimed.
    let claimed = store
        .claim_job("w", Duration::from_secs(30), now_millis())
        .await
        .unwrap();
    assert_eq!(claimed.map(|j| j.id), Some(second.id.clone()));
}
