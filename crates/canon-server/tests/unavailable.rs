//! The database unavailable, for real: another connection holding the write
//! lock, and the database's directory moved away under the open server.
//! Each answers 503 with `Retry-After` and a problem, promptly; `/readyz`
//! says 503, `/healthz` 200; and everything recovers without a restart once
//! the database is back (docs/decisions.md, "When the database is
//! unavailable").

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use canon_server::limits::ManualClock;
use common::*;
use reqwest::{Method, Response};
use serde_json::{Value, json};

const RECORDS: &str = "/v1/tenants/acme/collections/devices/records";
/// The store's bound on waiting for the database, short for the tests.
const DB_TIMEOUT: Duration = Duration::from_millis(200);

fn config() -> canon_server::Config {
    canon_server::Config {
        db_timeout: DB_TIMEOUT,
        // Another process on the file (its lock) is what most of these
        // tests are about: only shared locking lets one in.
        sqlite_locking: canon_store::sqlite::FileLocking::Shared,
        ..common::config()
    }
}

/// These tests make SQLite unavailable through its file (a lock, a move):
/// on PostgreSQL (`CANON_TEST_HTTP_POSTGRES`) they do not apply, and
/// crates/canon/tests/postgres.rs takes PostgreSQL away instead.
fn sqlite_only() -> bool {
    let on_postgres = common::on_postgres();
    if on_postgres {
        eprintln!("a SQLite file test: skipped on PostgreSQL");
    }
    on_postgres
}

/// Asserts `r` is the database's 503: `Retry-After`, the problem.
async fn assert_unavailable(r: Response) -> Value {
    let retry = header(&r, "retry-after").to_owned();
    let body = assert_problem(r, 503, "service-unavailable").await;
    assert_eq!(retry, "5", "Retry-After");
    assert_eq!(body["retry_after"], 5, "{body}");
    body
}

/// Sends `method path` and returns the response and how long it took.
async fn timed(s: &Server, method: Method, path: &str, token: &str, body: Option<Value>) -> (Response, Duration) {
    let started = Instant::now();
    let r = s.call(method, path, token, body).await;
    (r, started.elapsed())
}

/// A request that cannot have the database must answer within the timeout
/// and some slack, never hang.
fn prompt(took: Duration) {
    assert!(took < DB_TIMEOUT * 5, "took {took:?}");
}

async fn create(s: &Server, token: &str, port: i64) -> Response {
    s.call(Method::POST, RECORDS, token, Some(json!({"port": port}))).await
}

#[tokio::test]
async fn a_held_write_lock_answers_503_to_writes_and_readyz_and_both_recover() {
    if sqlite_only() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canon.db");
    let s = Server::start_with_on(config(), &path).await;
    let w = world(&s, "acme").await;
    let r = create(&s, &w.editor, 1).await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let record = format!("{RECORDS}/{id}");
    assert_eq!(s.call(Method::GET, "/readyz", OPERATOR, None).await.status(), 200);

    // Another process's connection (the sqlite3 shell, a backup tool) takes
    // the write lock and keeps it.
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();

    let (r, took) = timed(&s, Method::POST, RECORDS, &w.editor, Some(json!({"port": 2}))).await;
    let body = assert_unavailable(r).await;
    assert!(body["detail"].as_str().unwrap().contains("database"), "{body}");
    prompt(took);
    let (r, took) = timed(&s, Method::PUT, &record, &w.editor, Some(json!({"port": 3}))).await;
    assert_unavailable(r).await;
    prompt(took);
    // Many writes at once: all answered within about one timeout, not one
    // timeout each in turn.
    let started = Instant::now();
    let many = futures_util::future::join_all((0..50).map(|i| create(&s, &w.editor, 100 + i))).await;
    for r in many {
        assert_unavailable(r).await;
    }
    prompt(started.elapsed());

    // Reads go on (WAL: no other connection can stop a reader already
    // open), so the record is still served.
    let r = s.call(Method::GET, &record, &w.viewer, None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["data"]["port"], 1);
    // Not ready: the writer cannot take its lock. Alive all the same.
    let (r, took) = timed(&s, Method::GET, "/readyz", OPERATOR, None).await;
    assert_unavailable(r).await;
    prompt(took);
    assert_eq!(s.call(Method::GET, "/healthz", OPERATOR, None).await.status(), 200);

    // The lock goes: everything recovers by itself.
    other.execute_batch("ROLLBACK").unwrap();
    assert_eq!(s.call(Method::GET, "/readyz", OPERATOR, None).await.status(), 200);
    assert_eq!(create(&s, &w.editor, 4).await.status(), 201);
    let r = s.call(Method::PUT, &record, &w.editor, Some(json!({"port": 5}))).await;
    assert_eq!(r.status(), 200);
    // Nothing refused was written.
    let list: Value = s
        .ok_json(Method::GET, &format!("{RECORDS}?limit=1000"), &w.viewer, None)
        .await;
    let ports: Vec<i64> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["data"]["port"].as_i64().unwrap())
        .collect();
    assert_eq!(ports.len(), 2, "{ports:?}");
    assert!(ports.contains(&5) && ports.contains(&4), "{ports:?}");
}

#[tokio::test]
async fn requests_the_database_failed_are_not_charged_to_the_callers_limits() {
    if sqlite_only() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canon.db");
    // Time stands still: nothing refills while the test runs.
    let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_893_456_000)));
    let config = canon_server::Config {
        rate_limit_per_second: 1000,
        rate_limit_burst: 1000,
        daily_quota: 1_000_000,
        ..config()
    };
    let s = Server::start_clocked_on(config, &path, clock).await;
    let w = world(&s, "acme").await;
    let r = s
        .req(Method::PATCH, "/v1/tenants/acme", Some(OPERATOR))
        .header("content-type", "application/merge-patch+json")
        .body(json!({"rate_limit_per_second": 1, "burst": 3, "daily_quota": 3}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    // Twice the burst and the quota, every one the database's 503: none is
    // charged, so none becomes a 429.
    for _ in 0..6 {
        assert_unavailable(create(&s, &w.editor, 1).await).await;
    }
    other.execute_batch("ROLLBACK").unwrap();

    // The whole burst and the whole day's quota are still there. A write
    // refused while the writer was still giving up on the lock (503, not
    // charged either) is sent again.
    let released = Instant::now();
    for left in (0..3).rev() {
        let mut r = create(&s, &w.editor, 2).await;
        while r.status() == 503 && released.elapsed() < Duration::from_secs(3) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            r = create(&s, &w.editor, 2).await;
        }
        assert_eq!(r.status(), 201);
        assert!(header(&r, "ratelimit").contains(&format!(";r={left};")), "{r:?}");
    }
    assert_eq!(create(&s, &w.editor, 3).await.status(), 429);
}

#[tokio::test]
async fn a_database_moved_away_answers_503_to_reads_and_writes_and_recovers_when_back() {
    if sqlite_only() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("data");
    std::fs::create_dir(&home).unwrap();
    let path = home.join("canon.db");
    let s = Server::start_with_on(config(), &path).await;
    let w = world(&s, "acme").await;
    let r = create(&s, &w.editor, 1).await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let record = format!("{RECORDS}/{id}");

    // The directory is moved (an unmounted volume, a mistaken `mv`). SQLite
    // would go on reading and writing the open files, and every write
    // acknowledged then would be missing at the next start under this path.
    let away = dir.path().join("elsewhere");
    std::fs::rename(&home, &away).unwrap();
    let started = Instant::now();
    let mut r = s.call(Method::GET, &record, &w.viewer, None).await;
    while r.status() == 200 && started.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        r = s.call(Method::GET, &record, &w.viewer, None).await;
    }
    assert_unavailable(r).await;
    // Noticed within the checkpointer's period.
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    let (r, took) = timed(&s, Method::POST, RECORDS, &w.editor, Some(json!({"port": 2}))).await;
    assert_unavailable(r).await;
    prompt(took);
    let (r, took) = timed(&s, Method::GET, RECORDS, &w.viewer, None).await;
    assert_unavailable(r).await;
    prompt(took);
    let (r, took) = timed(&s, Method::GET, "/readyz", OPERATOR, None).await;
    assert_unavailable(r).await;
    prompt(took);
    assert_eq!(s.call(Method::GET, "/healthz", OPERATOR, None).await.status(), 200);

    // Back where it was: served again, without a restart.
    std::fs::rename(&away, &home).unwrap();
    let started = Instant::now();
    while s.call(Method::GET, "/readyz", OPERATOR, None).await.status() != 200 {
        assert!(started.elapsed() < Duration::from_secs(2), "not ready again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = s.call(Method::GET, &record, &w.viewer, None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(create(&s, &w.editor, 3).await.status(), 201);
    drop(s);

    // And what was acknowledged is in the file under the path.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM records", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);
}

/// A job whose step meets an unavailable database is not failed: its worker
/// backs off and resumes it from its checkpoint once the database answers,
/// under the same lease (no new attempt). The lease is long here, so only
/// that resumption, not a takeover after the lease, finishes it in time.
#[tokio::test]
async fn a_job_meeting_an_unavailable_database_waits_and_resumes() {
    if sqlite_only() {
        return;
    }
    const RECORDS_N: usize = 1000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canon.db");
    let s = Server::start_with_on(
        canon_server::Config {
            job_lease: Duration::from_secs(120),
            ..config()
        },
        &path,
    )
    .await;
    let w = world(&s, "acme").await;
    for chunk in 0..RECORDS_N / 500 {
        let operations: Vec<Value> = (0..500)
            .map(|i| json!({"op": "create", "data": {"port": chunk * 500 + i}}))
            .collect();
        let r = s
            .call(
                Method::POST,
                &format!("{RECORDS}/batch"),
                &w.editor,
                Some(json!({"operations": operations})),
            )
            .await;
        assert_eq!(r.status(), 207);
    }
    let r = s
        .call(
            Method::DELETE,
            "/v1/tenants/acme/collections/devices?force=true",
            &w.admin,
            None,
        )
        .await;
    assert_eq!(r.status(), 202);
    let monitor = header(&r, "location").to_owned();
    // Once the job has done its first step, another connection takes the
    // write lock for several timeouts: the job's next writes fail.
    loop {
        let job = s.ok_json(Method::GET, &monitor, &w.viewer, None).await;
        assert!(
            job["status"] == "queued" || job["status"] == "running",
            "the job ended before the lock: {job}"
        );
        if job["progress"]["done"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (status, done): (String, i64) = other
        .query_row("SELECT status, progress_done FROM jobs", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(status, "running");
    assert!(done < RECORDS_N as i64, "{done}");
    tokio::time::sleep(DB_TIMEOUT * 3).await;
    other.execute_batch("ROLLBACK").unwrap();

    // It finishes (the monitor's 303), well within its lease, claimed once.
    let started = Instant::now();
    loop {
        let r = s.call(Method::GET, &monitor, &w.viewer, None).await;
        if r.status() == 303 {
            break;
        }
        let job: Value = r.json().await.unwrap();
        assert_eq!(job["status"], "running", "{job}");
        assert!(started.elapsed() < Duration::from_secs(20), "still running: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let result = s
        .ok_json(Method::GET, &format!("{monitor}/result"), &w.viewer, None)
        .await;
    // Deletions committed in the step the outage cut short are not in its
    // checkpoint, so the count may miss a few (as after a crash); every
    // record is gone all the same.
    let counted = result["deleted_records"].as_u64().unwrap();
    assert!(counted > 0 && counted <= RECORDS_N as u64, "{result}");
    let left: i64 = other
        .query_row("SELECT count(*) FROM records", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0);
    let r = s
        .call(Method::GET, "/v1/tenants/acme/collections/devices", &w.viewer, None)
        .await;
    assert_problem(r, 410, "gone").await;
    let attempts: i64 = other.query_row("SELECT attempts FROM jobs", [], |r| r.get(0)).unwrap();
    assert_eq!(attempts, 1);
}
