//! `canon migrate-store`: a store filled through the HTTP API of a running
//! `canon serve` on SQLite, moved to PostgreSQL, answers the same over HTTP
//! from `canon serve` on PostgreSQL (keys, ETags, Last-Modified, 410s,
//! renames, jobs, devices' sealed headers); and what the command refuses.
//! The move itself runs when `CANON_TEST_POSTGRES_URL` is set (on a database
//! of its own); the refusals of the source run always.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::database::Database;
use common::spawn_on;
use common::{Process, free_port, wait_ready};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "migrate-test-operator";
/// 32 bytes in hex: devices' headers are sealed under it, on both servers.
const SECRET_KEY: &str = "5f0c9b1e2d3a4f5e6d7c8b9a0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c";
const DEVICE_SECRET: &str = "meter-secret-4711";

/// Runs `canon migrate-store` from the SQLite file `db` to `to`.
fn migrate(db: &Path, to: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_canon"))
        .args(["migrate-store", "--progress", "plain", "--to", to, "--from"])
        .arg(format!("sqlite://{}", db.display()))
        .env("CANON_LOG", "warn")
        .output()
        .expect("run canon migrate-store")
}

/// Runs `canon migrate-store --progress none` as a script would: with no
/// `CANON_LOG` (the command's own default level).
fn migrate_quietly(db: &Path, to: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_canon"))
        .args(["migrate-store", "--progress", "none", "--to", to, "--from"])
        .arg(format!("sqlite://{}", db.display()))
        .env_remove("CANON_LOG")
        .env_remove("CANON_PROGRESS")
        .output()
        .expect("run canon migrate-store")
}

/// The number before ` rows/s` in `line` (`12,345 rows/s` or `(12345 rows/s)`).
fn rate_in(line: &str) -> u64 {
    let before = line.split(" rows/s").next().unwrap_or_default();
    let number = before.rsplit([' ', '(']).next().unwrap_or_default();
    number
        .replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("no rate in {line:?}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Sends SIGTERM to `child` and waits for it to exit (the SQLite file is
/// closed cleanly, as an operator stopping the server would).
async fn stop(mut child: Process) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        while child.try_wait().expect("wait").is_none() {
            assert!(start.elapsed() < Duration::from_secs(20), "canon did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .expect("join");
}

/// A device that answers every request with the `x-api-key` it was sent.
async fn fake_device() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&request).to_lowercase();
                let key = head
                    .lines()
                    .find_map(|l| l.strip_prefix("x-api-key:"))
                    .map(str::trim)
                    .unwrap_or("")
                    .to_owned();
                let body = json!({"key": key}).to_string();
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    (port, task)
}

/// What one GET answered: the parts a client relies on.
#[derive(Debug, PartialEq)]
struct Seen {
    status: u16,
    etag: Option<String>,
    last_modified: Option<String>,
    location: Option<String>,
    body: Value,
}

/// A client of one server, following no redirect (the answers are compared).
struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(port: u16) -> Client {
        Client {
            http: canon_server::http_client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn send(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            let kind = if method == Method::PATCH {
                "application/merge-patch+json"
            } else {
                "application/json"
            };
            request = request.header("content-type", kind).body(body.to_string());
        }
        let r = request.send().await.expect("send");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn ok(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Value {
        let (status, body) = self.send(method.clone(), path, token, body).await;
        assert!((200..300).contains(&status), "{method} {path}: {status} {body}");
        body
    }

    async fn get(&self, path: &str, token: &str) -> Seen {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("send");
        let header = |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (etag, last_modified, location) = (header("etag"), header("last-modified"), header("location"));
        let status = r.status().as_u16();
        let mut body = r.json().await.unwrap_or(Value::Null);
        // A problem's request id is the one thing that differs by design.
        if let Some(problem) = body.as_object_mut() {
            problem.remove("request_id");
        }
        Seen {
            status,
            etag,
            last_modified,
            location,
            body,
        }
    }
}

/// What the test made, to look at again after the move.
struct Made {
    user_token: String,
    paths: Vec<String>,
    record: String,
    deleted: String,
    job: String,
}

/// Fills the store through the API of the server at `c`.
async fn populate(c: &Client, device_port: u16) -> Made {
    c.ok(Method::POST, "/v1/tenants", TOKEN, Some(json!({"name": "acme"})))
        .await;
    c.ok(
        Method::PATCH,
        "/v1/tenants/acme",
        TOKEN,
        Some(json!({"daily_quota": 5000, "burst": 7})),
    )
    .await;
    let user = c
        .ok(
            Method::POST,
            "/v1/tenants/acme/users",
            TOKEN,
            Some(json!({"email": "ada@example.com", "role": "admin"})),
        )
        .await;
    let user_id = user["id"].as_str().expect("user id").to_owned();
    let key = c
        .ok(
            Method::POST,
            &format!("/v1/tenants/acme/users/{user_id}/api-keys"),
            TOKEN,
            Some(json!({"name": "laptop"})),
        )
        .await;
    let user_token = key["token"].as_str().expect("token").to_owned();
    let key_id = key["id"].as_str().expect("key id").to_owned();
    let t = user_token.as_str();
    let schema = json!({"type": "object", "properties": {"sku": {"type": "string"}, "n": {"type": "integer"}}});
    c.ok(
        Method::POST,
        "/v1/tenants/acme/collections",
        t,
        Some(json!({"name": "parts", "schema": schema, "unique": ["sku"]})),
    )
    .await;
    c.ok(
        Method::PATCH,
        "/v1/tenants/acme/collections/parts",
        t,
        Some(json!({"name": "things"})),
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let r = c
            .ok(
                Method::POST,
                "/v1/tenants/acme/collections/things/records",
                t,
                Some(json!({"sku": format!("s-{n}"), "n": n})),
            )
            .await;
        ids.push(r["id"].as_str().expect("record id").to_owned());
    }
    let records = "/v1/tenants/acme/collections/things/records";
    let deleted = format!("{records}/{}", ids[4]);
    let (status, _) = c.send(Method::DELETE, &deleted, t, None).await;
    assert_eq!(status, 204);
    let job = c
        .ok(
            Method::POST,
            "/v1/tenants/acme/collections/things/exports",
            t,
            Some(json!({"format": "ndjson"})),
        )
        .await;
    let job = format!("/v1/tenants/acme/jobs/{}", job["id"].as_str().expect("job id"));
    let start = Instant::now();
    while c.get(&job, t).await.status != 303 {
        assert!(start.elapsed() < Duration::from_secs(20), "the export did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.ok(
        Method::POST,
        "/v1/tenants/acme/devices",
        t,
        Some(json!({
            "name": "meter",
            "endpoint": format!("http://127.0.0.1:{device_port}"),
            "timeout_ms": 2000,
            "headers": {"x-api-key": DEVICE_SECRET},
            // Kept and shown, unused on an http endpoint: shows it is copied.
            "tls": {"certificate_sha256": "ab".repeat(32)},
        })),
    )
    .await;
    // A list cursor handed out before the move (signed with the store's secret).
    let page = c.ok(Method::GET, &format!("{records}?limit=2"), t, None).await;
    let cursor = page["next_cursor"].as_str().expect("a next page").to_owned();
    let paths = vec![
        format!("{records}?limit=2&cursor={cursor}"),
        "/v1/tenants/acme".to_owned(),
        format!("/v1/tenants/acme/users/{user_id}"),
        format!("/v1/tenants/acme/users/{user_id}/api-keys/{key_id}"),
        "/v1/tenants/acme/collections/things".to_owned(),
        "/v1/tenants/acme/collections/parts".to_owned(),
        format!("{records}?limit=10"),
        format!("{records}/{}", ids[0]),
        format!("{records}/{}", ids[3]),
        deleted.clone(),
        job.clone(),
        format!("{job}/result"),
        "/v1/tenants/acme/devices/meter".to_owned(),
        "/v1/admin/maintenance".to_owned(),
    ];
    Made {
        user_token,
        paths,
        record: format!("{records}/{}", ids[0]),
        deleted,
        job,
    }
}

/// Every path of `made`, as the server at `c` answers it (the operator's
/// paths with the operator token, the rest with the user's key).
/// The device's sealed header opens: the fake device sees the secret.
async fn assert_device_opens(c: &Client, made: &Made) {
    let relayed = c
        .ok(
            Method::GET,
            "/v1/tenants/acme/devices/meter/api/ping",
            &made.user_token,
            None,
        )
        .await;
    assert_eq!(relayed["key"], DEVICE_SECRET, "{relayed}");
}

async fn look(c: &Client, made: &Made) -> Vec<(String, Seen)> {
    let mut seen = Vec::new();
    for path in &made.paths {
        let token = if path == "/v1/tenants/acme" || path.starts_with("/v1/admin") {
            TOKEN
        } else {
            &made.user_token
        };
        seen.push((path.clone(), c.get(path, token).await));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_moved_to_postgres_answers_as_before() {
    let Some(db) = Database::make("canon_migrate").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("canon.db");
    let sqlite_url = format!("sqlite://{}", file.display());
    let env = [("CANON_SECRET_KEY", SECRET_KEY), ("CANON_DB_POOL_SIZE", "4")];
    let (device_port, device) = fake_device().await;

    let port = free_port();
    let node = spawn_on(&sqlite_url, port, TOKEN, &env);
    let c = Client::new(port);
    wait_ready(&c.http, &c.base).await;
    let made = populate(&c, device_port).await;
    let before = look(&c, &made).await;
    assert_device_opens(&c, &made).await;

    // While the server runs, the file is in use: refused, nothing copied.
    let refused = migrate(&file, &db.url);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stderr));
    assert!(text(&refused.stderr).contains("in use"), "{}", text(&refused.stderr));

    stop(node).await;
    let moved = migrate(&file, &db.url);
    let out = text(&moved.stdout);
    assert_eq!(moved.status.code(), Some(0), "{out}\n{}", text(&moved.stderr));
    assert!(out.contains("verified"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["records", "4", "4"]),
        "{out}"
    );
    assert!(
        text(&moved.stderr).contains("copy: "),
        "progress is shown: {}",
        text(&moved.stderr)
    );
    // The progress's last line and the summary give one rate: over the
    // copy alone (the verification after it is in neither).
    let stderr = text(&moved.stderr);
    let progress = stderr
        .lines()
        .find(|l| l.starts_with("copy: ") && l.contains("done in"))
        .unwrap_or_else(|| panic!("a last progress line: {stderr}"));
    let summary = out
        .lines()
        .find(|l| l.starts_with("copied "))
        .unwrap_or_else(|| panic!("a summary line: {out}"));
    assert_eq!(rate_in(progress), rate_in(summary), "{progress}\n{summary}");
    assert!(summary.contains("in all"), "{summary}");

    let port = free_port();
    let node = spawn_on(&db.url, port, TOKEN, &env);
    let p = Client::new(port);
    wait_ready(&p.http, &p.base).await;
    let after = look(&p, &made).await;
    assert_eq!(
        before[0].1.status, 200,
        "the second page, by its cursor: {:?}",
        before[0]
    );
    for ((path, b), (_, a)) in before.iter().zip(&after) {
        assert_eq!(a, b, "{path} answers as before the move");
    }
    // The parts a client relies on, named.
    let record = p.get(&made.record, &made.user_token).await;
    assert_eq!(record.status, 200);
    assert!(record.etag.is_some() && record.last_modified.is_some());
    assert_eq!(p.get(&made.deleted, &made.user_token).await.status, 410);
    let (status, _) = p
        .send(
            Method::POST,
            "/v1/tenants/acme/collections/parts/records",
            &made.user_token,
            Some(json!({"sku": "x"})),
        )
        .await;
    assert_eq!(status, 308, "the old name of the renamed collection redirects");
    assert_eq!(
        p.get(&made.job, &made.user_token).await.status,
        303,
        "the finished job's monitor"
    );
    // The same key authenticates, and it writes: the unique values came along.
    let (status, _) = p
        .send(
            Method::POST,
            "/v1/tenants/acme/collections/things/records",
            &made.user_token,
            Some(json!({"sku": "s-1"})),
        )
        .await;
    assert_eq!(status, 409, "sku s-1 is still taken");
    p.ok(
        Method::POST,
        "/v1/tenants/acme/collections/things/records",
        &made.user_token,
        Some(json!({"sku": "s-9"})),
    )
    .await;
    // The device's sealed header opens under the same key.
    assert_device_opens(&p, &made).await;

    // The target holds data now: a second move is refused.
    let again = migrate(&file, &db.url);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("not empty"), "{}", text(&again.stderr));

    drop(node);
    device.abort();
    db.drop_it().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_in_use_or_of_another_schema_version_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("canon.db");
    // Nothing listens here: the source is refused before the target is reached.
    let nowhere = "postgres://postgres@127.0.0.1:1/none";
    let node = common::Node::start(&file, TOKEN, &[]).await;
    let refused = migrate(&file, nowhere);
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused.stderr).contains("is in use"), "{}", text(&refused.stderr));
    stop(node.child).await;

    let stopped = migrate(&file, nowhere);
    assert_eq!(stopped.status.code(), Some(1));
    assert!(
        !text(&stopped.stderr).contains("in use"),
        "a stopped server's file is free: {}",
        text(&stopped.stderr)
    );
    // The target cannot be reached: the cause is named, and nothing was
    // written there, so no advice to drop it.
    assert!(
        text(&stopped.stderr).contains("cannot use the target: error connecting to server: Connection refused"),
        "{}",
        text(&stopped.stderr)
    );
    assert!(
        !text(&stopped.stderr).contains("may hold part"),
        "{}",
        text(&stopped.stderr)
    );

    let conn = rusqlite::Connection::open(&file).expect("open");
    conn.pragma_update(None, "user_version", 10).expect("set the version");
    drop(conn);
    let old = migrate(&file, nowhere);
    assert_eq!(old.status.code(), Some(1));
    assert!(text(&old.stderr).contains("schema is v10"), "{}", text(&old.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_that_differs_after_the_copy_fails_the_move() {
    let Some(db) = Database::make("canon_migrate_mismatch").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("canon.db");
    let node = common::Node::start(&file, TOKEN, &[]).await;
    node.post_ok("/v1/tenants", json!({"name": "acme"})).await;
    stop(node.child).await;
    // A unique value whose collection is gone: the copy (which finds each
    // row's tenant through its collection) cannot carry it, and the counts
    // must say so.
    let conn = rusqlite::Connection::open(&file).expect("open");
    conn.execute(
        "INSERT INTO unique_values (collection_id, field, value, record_id) VALUES ('gone', 'sku', '\"x\"', 'r')",
        [],
    )
    .expect("insert an orphan");
    drop(conn);
    // `--progress none`, as a script runs it: stderr holds the error alone,
    // no progress, no log line of the steps (the target's migrations).
    let moved = migrate_quietly(&file, &db.url);
    let out = text(&moved.stdout);
    assert_eq!(moved.status.code(), Some(2), "{out}\n{}", text(&moved.stderr));
    assert_eq!(
        text(&moved.stderr),
        "canon: the counts differ (marked above): do not switch to the target\n",
        "nothing on stderr but the error"
    );
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["unique_values", "1", "0", "MISMATCH"]),
        "{out}"
    );
    assert!(!out.contains("verified"), "{out}");
    db.drop_it().await;
}
