//! `canon serve --database postgres://…`: the binary on PostgreSQL, end to
//! end, and what it answers while the database cannot be had. Runs when
//! `CANON_TEST_POSTGRES_URL` names a server (CI sets it), on a database of
//! its own; prints a note and passes without it.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::database::Database;
use common::{Process, free_port, wait_ready};
use serde_json::{Value, json};

const TOKEN: &str = "postgres-test-operator";

/// Whether `db` accepts connections; refusing also ends the open ones, as
/// a database going away would.
async fn accept_connections(db: &Database, allow: bool) {
    db.admin
        .batch_execute(&format!("ALTER DATABASE {} ALLOW_CONNECTIONS {allow}", db.name))
        .await
        .unwrap();
    if !allow {
        db.admin
            .batch_execute(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
                db.name
            ))
            .await
            .unwrap();
    }
}

fn spawn(url: &str, port: u16) -> Process {
    let child = Command::new(env!("CARGO_BIN_EXE_canon"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--database", url])
        .env("CANON_BOOTSTRAP_TOKEN", TOKEN)
        .env("CANON_LOG", "warn")
        .env("CANON_DB_TIMEOUT_MS", "1000")
        .env("CANON_DB_POOL_SIZE", "4")
        .env("CANON_RATE_LIMIT_PER_SECOND", "0")
        .env("CANON_DAILY_QUOTA", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn canon");
    Process::new(child)
}

async fn status(client: &reqwest::Client, method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut request = client.request(method, url).bearer_auth(TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let r = request.send().await.expect("send");
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_from_postgres_answers_503_without_it_and_recovers() {
    let Some(db) = Database::make("canon_serve").await else {
        return;
    };
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = canon_server::http_client::client();
    let node = spawn(&db.url, port);
    wait_ready(&client, &base).await;

    use reqwest::Method;
    let post = |path: &str, body: Value| status(&client, Method::POST, format!("{base}{path}"), Some(body));
    assert_eq!(post("/v1/tenants", json!({"name": "acme"})).await.0, 201);
    assert_eq!(post("/v1/tenants/acme/collections", json!({"name": "c"})).await.0, 201);
    let (code, record) = post("/v1/tenants/acme/collections/c/records", json!({"z": 1, "a": 2})).await;
    assert_eq!(code, 201, "{record}");
    let id = record["id"].as_str().expect("an id").to_owned();
    let record_url = format!("{base}/v1/tenants/acme/collections/c/records/{id}");
    let r = client.get(&record_url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.find("\"z\"") < text.find("\"a\""),
        "the record's fields keep their order: {text}"
    );

    // The database goes away: readiness and every call that needs it answer 503.
    accept_connections(&db, false).await;
    let started = Instant::now();
    let mut ready = 200;
    while ready != 503 && started.elapsed() < Duration::from_secs(10) {
        ready = client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
    }
    assert_eq!(ready, 503, "/readyz");
    let (code, problem) = status(&client, Method::GET, format!("{base}/v1/tenants"), None).await;
    assert_eq!(code, 503, "{problem}");
    let (code, _) = status(&client, Method::GET, record_url.clone(), None).await;
    assert_eq!(code, 503);

    // It comes back: the server serves again by itself.
    accept_connections(&db, true).await;
    wait_ready(&client, &base).await;
    let (code, again) = status(&client, Method::GET, record_url.clone(), None).await;
    assert_eq!((code, again["id"].as_str()), (200, Some(id.as_str())));

    drop(node);
    db.drop_it().await;
}
