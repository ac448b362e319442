//! SIGTERM under write load: the process stops accepting, finishes the
//! requests in flight, closes the store and exits 0 within its grace; every
//! write it acknowledged is there after a restart.

mod common;

use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const TOKEN: &str = "shutdown-operator";
const WRITERS: usize = 24;
const GRACE_MS: u64 = 5000;

/// Sends `signal` (`TERM`, `INT`) to `child`.
fn signal(child: &Child, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// Waits for `child` to exit, at most `limit`.
fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("canon did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends SIGTERM to `child` and waits (off the async workers) for it to
/// exit, at most `limit`.
async fn terminate(mut child: common::Process, limit: Duration) -> std::process::ExitStatus {
    signal(&child, "TERM");
    tokio::task::spawn_blocking(move || wait_exit(&mut child, limit))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_write_load_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("canon.db");
    let grace = GRACE_MS.to_string();
    let env = [("CANON_SHUTDOWN_GRACE_MS", grace.as_str())];
    let node = common::Node::start(&db, TOKEN, &env).await;
    node.post_ok("/v1/tenants", json!({"name": "acme"})).await;
    let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}}});
    node.post_ok("/v1/tenants/acme/collections", json!({"name": "c", "schema": schema}))
        .await;
    let records = format!("{}/v1/tenants/acme/collections/c/records", node.base);

    // Writers create records as fast as they can, each remembering the ids
    // it was answered 201 for, until the server stops answering.
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let refused = Arc::new(Mutex::new(Vec::<u16>::new()));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (client, url) = (node.client.clone(), records.clone());
        let (acknowledged, refused) = (acknowledged.clone(), refused.clone());
        writers.push(tokio::spawn(async move {
            for n in 0.. {
                let sent = client
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .json(&json!({"n": w * 1_000_000 + n}))
                    .send()
                    .await;
                let Ok(r) = sent else { return };
                let status = r.status().as_u16();
                if status == 201 {
                    let Ok(body) = r.json::<Value>().await else { return };
                    acknowledged
                        .lock()
                        .unwrap()
                        .push(body["id"].as_str().unwrap().to_owned());
                } else {
                    refused.lock().unwrap().push(status);
                    return;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut child = node.child;
    let before = acknowledged.lock().unwrap().len();
    assert!(before > 0, "writes were acknowledged before the signal");
    let signalled = Instant::now();
    signal(&child, "TERM");
    let status = tokio::task::spawn_blocking(move || {
        let status = wait_exit(&mut child, Duration::from_millis(GRACE_MS + 5000));
        (status, child)
    })
    .await
    .unwrap();
    let (status, _child) = status;
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        took < Duration::from_millis(GRACE_MS),
        "exited within the grace: {took:?}"
    );
    for writer in writers {
        writer.await.unwrap();
    }
    let refused = refused.lock().unwrap().clone();
    assert!(refused.iter().all(|s| *s == 503), "only 503s besides 201s: {refused:?}");
    let acknowledged = acknowledged.lock().unwrap().clone();

    // The WAL was copied into the database file: nothing waits in it.
    let wal = dir.path().join("canon.db-wal");
    let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(wal_len, 0, "the WAL is empty after a clean shutdown");

    // Restart: every acknowledged record is there.
    let node = common::Node::start(&db, TOKEN, &[]).await;
    let mut missing = Vec::new();
    for id in &acknowledged {
        let r = node
            .client
            .get(format!("{}/v1/tenants/acme/collections/c/records/{id}", node.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        if r.status() != 200 {
            missing.push(id.clone());
        }
    }
    let mut child = node.child;
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged records missing",
        missing.len(),
        acknowledged.len()
    );
    eprintln!(
        "{} records acknowledged ({before} before SIGTERM); exit 0 after {took:?}",
        acknowledged.len()
    );
}

/// `CANON_SHUTDOWN_DELAY_MS`: after SIGTERM `/readyz` answers 503 at once
/// while the API, `/healthz` and keep-alive connections go on being served
/// for the delay (a load balancer takes the node out meanwhile); then the
/// listener closes and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_delay_answers_readyz_503_and_serves_on_until_it_ends() {
    const DELAY: Duration = Duration::from_millis(1500);
    let dir = tempfile::tempdir().unwrap();
    let delay = DELAY.as_millis().to_string();
    let env = [("CANON_SHUTDOWN_DELAY_MS", delay.as_str())];
    let node = common::Node::start(&dir.path().join("canon.db"), TOKEN, &env).await;
    let get = |path: &str| {
        node.client
            .get(format!("{}{path}", node.base))
            .bearer_auth(TOKEN)
            .send()
    };
    assert_eq!(get("/v1/tenants").await.unwrap().status(), 200);
    let mut child = node.child;
    let signalled = Instant::now();
    signal(&child, "TERM");
    // Until the delay ends: not ready, and everything else served as before
    // (on this client's kept-alive connection and on new ones).
    let mut served = 0;
    while signalled.elapsed() < DELAY - Duration::from_millis(300) {
        let ready = get("/readyz").await.unwrap();
        if ready.status() == 200 {
            // The signal may not have been handled yet.
            assert!(signalled.elapsed() < Duration::from_millis(200), "ready after SIGTERM");
            continue;
        }
        assert_eq!(ready.status(), 503);
        assert!(ready.headers().contains_key("retry-after"));
        assert_eq!(get("/healthz").await.unwrap().status(), 200);
        let fresh = canon_server::http_client::client();
        let r = fresh
            .get(format!("{}/v1/tenants", node.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "served during the delay");
        served += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served > 5, "{served} rounds served during the delay");
    let status = tokio::task::spawn_blocking(move || wait_exit(&mut child, DELAY + Duration::from_secs(10)))
        .await
        .unwrap();
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(took >= DELAY, "exited {took:?} after SIGTERM, before the delay ended");
    assert!(get("/healthz").await.is_err(), "the listener is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_an_idle_server_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::Node::start(&dir.path().join("canon.db"), TOKEN, &[]).await;
    let mut child = node.child;
    let signalled = Instant::now();
    signal(&child, "INT");
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert!(status.success(), "exit status {status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "{:?}",
        signalled.elapsed()
    );
}

/// An idle keep-alive connection (its request answered, nothing unread,
/// a client that neither sends nor closes) is closed as soon as shutdown
/// begins: no lingering read keeps the process waiting (the lingering read
/// is for an answer that left a request body unread; docs/http.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_does_not_hold_up_shutdown() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let node = common::Node::start(&dir.path().join("canon.db"), TOKEN, &[]).await;
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut response = Vec::new();
    let mut buffer = [0u8; 4096];
    // The whole response: its head, then as many bytes as it declares.
    let complete = |r: &[u8]| {
        let Some(end) = r.windows(4).position(|w| w == b"\r\n\r\n") else {
            return false;
        };
        let head = String::from_utf8_lossy(&r[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("a content-length");
        r.len() >= end + 4 + length
    };
    while !complete(&response) {
        let n = idle.read(&mut buffer).unwrap();
        assert!(n > 0, "closed before the response ended");
        response.extend_from_slice(&buffer[..n]);
    }
    assert!(
        response.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&response)
    );

    let mut child = node.child;
    let signalled = Instant::now();
    signal(&child, "TERM");
    let status = tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(10)))
        .await
        .unwrap();
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status:?}");
    // The lingering read would hold it for connections::LINGER_TIME (2 s).
    assert!(took < Duration::from_secs(1), "exited {took:?} after SIGTERM");
    assert_eq!(idle.read(&mut buffer).unwrap(), 0, "the server closed it");
}

/// SIGTERM while another process holds the database's write lock (the
/// sqlite3 shell in a transaction, a backup): the final checkpoint cannot
/// run, but every acknowledged write is already committed in the WAL, so
/// the process still exits 0 (and says why in a warning), and a restart
/// finds every record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_another_process_holds_the_write_lock_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("canon.db");
    // Another process can take the lock only when the file is shared.
    let env = [("CANON_DB_TIMEOUT_MS", "300"), ("CANON_SQLITE_LOCKING", "shared")];
    let node = common::Node::start(&db, TOKEN, &env).await;
    node.post_ok("/v1/tenants", json!({"name": "acme"})).await;
    node.post_ok("/v1/tenants/acme/collections", json!({"name": "c"})).await;
    for n in 0..5 {
        node.post_ok("/v1/tenants/acme/collections/c/records", json!({"n": n}))
            .await;
    }
    let other = rusqlite::Connection::open(&db).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let child = node.child;
    let status = terminate(child, Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status:?}");
    other.execute_batch("ROLLBACK").unwrap();
    drop(other);

    let node = common::Node::start(&db, TOKEN, &[]).await;
    let list: Value = node
        .client
        .get(format!("{}/v1/tenants/acme/collections/c/records", node.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().map(Vec::len), Some(5), "{list}");
}

/// A test that fails while its server runs leaves no server running: the
/// process is a `common::Process`, killed and reaped when dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_test_leaves_no_server_running() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("canon.db");
    let pid = Arc::new(Mutex::new(None));
    let seen = pid.clone();
    let failed = tokio::spawn(async move {
        let node = common::Node::start(&db, TOKEN, &[]).await;
        *seen.lock().unwrap() = Some(node.child.id());
        panic!("an assertion fails while the server runs");
    })
    .await;
    assert!(failed.is_err_and(|e| e.is_panic()));
    let pid = pid.lock().unwrap().expect("the server started");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "canon serve (pid {pid}) outlived the test that started it"
    );
}

/// The day's quota count is saved at shutdown and read back at start: a
/// restart does not hand the tenant a fresh day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_days_quota_count_survives_a_graceful_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("canon.db");
    let env = [("CANON_DAILY_QUOTA", "1000")];
    let node = common::Node::start(&db, TOKEN, &env).await;
    node.post_ok("/v1/tenants", json!({"name": "acme"})).await;
    let user: Value = node
        .client
        .post(format!("{}/v1/tenants/acme/users", node.base))
        .bearer_auth(TOKEN)
        .json(&json!({"email": "v@acme.example", "role": "viewer"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key: Value = node
        .client
        .post(format!(
            "{}/v1/tenants/acme/users/{}/api-keys",
            node.base,
            user["id"].as_str().unwrap()
        ))
        .bearer_auth(TOKEN)
        .json(&json!({"name": "k"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = key["token"].as_str().unwrap().to_owned();
    let remaining = |node: &common::Node| {
        let (client, url, token) = (
            node.client.clone(),
            format!("{}/v1/tenants/acme", node.base),
            token.clone(),
        );
        async move {
            let r = client.get(url).bearer_auth(token).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.headers()["ratelimit"].to_str().unwrap().to_owned()
        }
    };
    for _ in 0..6 {
        remaining(&node).await;
    }
    assert!(remaining(&node).await.starts_with("\"daily\";r=993;"));
    let child = node.child;
    let status = terminate(child, Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status:?}");

    let node = common::Node::start(&db, TOKEN, &env).await;
    let field = remaining(&node).await;
    assert!(field.starts_with("\"daily\";r=992;"), "the count went on: {field}");
}
