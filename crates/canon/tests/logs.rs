//! Logs carry colour only when stderr is a terminal.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn logs_to_a_pipe_have_no_escape_codes() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = common::Process::new(
        Command::new(env!("CARGO_BIN_EXE_canon"))
            .args(["serve", "--listen", "127.0.0.1:0", "--database"])
            .arg(format!("sqlite://{}", dir.path().join("canon.db").display()))
            .env("CANON_BOOTSTRAP_TOKEN", "logs-test-operator")
            .env("CANON_LOG", "info")
            .env_remove("NO_COLOR")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn canon"),
    );
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) {
        let done = line.contains("canon listening on");
        lines.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let all = lines.join("\n");
    assert!(all.contains("canon is serving"), "no log line seen: {all}");
    assert!(!all.contains('\u{1b}'), "escape codes in piped logs: {all:?}");
}

/// Runs `canon serve` with `args` and `env`, waits until it listens, and
/// returns the process, its port and a channel of its stderr lines.
fn serve_logged(
    dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (common::Process, u16, mpsc::Receiver<String>) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_canon"));
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--database"])
        .arg(format!("sqlite://{}", dir.join("canon.db").display()))
        .args(args)
        .env("CANON_BOOTSTRAP_TOKEN", OPERATOR)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = common::Process::new(command.spawn().expect("spawn canon"));
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) {
        if line.contains("canon listening on") {
            return (child, port, rx);
        }
    }
    panic!("canon did not start");
}

const OPERATOR: &str = "op-secret-token-that-must-never-be-logged";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_json_line_per_request_without_tokens_or_bodies() {
    let dir = tempfile::tempdir().unwrap();
    // Debug level: even the most talkative logs must not carry a secret.
    let (mut child, port, rx) = serve_logged(dir.path(), &["--log-format", "json"], &[("CANON_LOG", "debug")]);
    let base = format!("http://127.0.0.1:{port}");
    let client = canon_server::http_client::client();
    let body_secret = "body-secret-value-never-logged";
    let r = client
        .post(format!("{base}/v1/tenants"))
        .bearer_auth(OPERATOR)
        .header("x-request-id", "log-test-1")
        .json(&serde_json::json!({"name": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = client
        .post(format!("{base}/v1/tenants/acme/collections"))
        .bearer_auth(OPERATOR)
        .header("x-request-id", "log-test-2")
        .json(&serde_json::json!({"name": "c", "schema": {"type": "object", "description": body_secret}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let wrong = "wrong-secret-token-never-logged";
    let r = client
        .get(format!("{base}/v1/tenants/acme?secret=query-secret-never-logged"))
        .bearer_auth(wrong)
        .header("x-request-id", "log-test-3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A request id that could forge a field of the line is not taken: the
    // line (and the response) carry an id of Canon's own.
    let forged = "x\",\"status\":200,\"forged\":\"yes";
    let r = client
        .get(format!("{base}/healthz"))
        .header("x-request-id", forged)
        .send()
        .await
        .unwrap();
    let own = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(own, forged);
    // SIGTERM: the process ends cleanly and its stderr closes.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) {
        lines.push(line);
    }
    assert!(child.wait().unwrap().success());
    let all = lines.join("\n");
    for secret in [OPERATOR, wrong, body_secret, "query-secret-never-logged", "forged"] {
        assert!(!all.contains(secret), "{secret} was logged:\n{all}");
    }
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let request = |id: &str| {
        events
            .iter()
            .find(|e| e["request_id"] == id && e["message"] == "request")
            .unwrap_or_else(|| panic!("no request line for {id}:\n{all}"))
            .clone()
    };
    let created = request("log-test-2");
    assert_eq!(created["target"], "canon::request");
    assert_eq!(created["level"], "INFO");
    assert_eq!(created["method"], "POST");
    assert_eq!(created["route"], "/v1/tenants/{tenant}/collections");
    assert_eq!(created["status"], 201);
    assert_eq!(created["tenant"], "acme");
    assert!(created["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{created}");
    let refused = request("log-test-3");
    assert_eq!(refused["status"], 401);
    assert_eq!(refused["route"], "/v1/tenants/{tenant}");
    assert!(
        refused.get("tenant").is_none() || refused["tenant"].is_null(),
        "{refused}"
    );
    assert_eq!(request(&own)["route"], "/healthz");
    assert!(all.contains("store closed"), "the shutdown is logged:\n{all}");
}
