//! Imports: an NDJSON upload, streamed into the store, run as a job (202);
//! each line succeeds or fails on its own, in the report.

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const IMPORTS: &str = "/v1/tenants/acme/collections/devices/imports";
const RECORDS: &str = "/v1/tenants/acme/collections/devices/records";

async fn upload(s: &Server, token: &str, body: &'static str) -> reqwest::Response {
    s.req(Method::POST, IMPORTS, Some(token))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Follows a job's monitor to its result.
async fn result_of(s: &Server, token: &str, location: &str) -> Value {
    for _ in 0..400 {
        let r = s.call(Method::GET, location, token, None).await;
        if r.status() == 303 {
            let result = header(&r, "location").to_owned();
            return s.ok_json(Method::GET, &result, token, None).await;
        }
        assert_eq!(r.status(), 200);
        let job: Value = r.json().await.unwrap();
        assert!(job["status"] == "queued" || job["status"] == "running", "{job}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the import did not finish");
}

#[tokio::test]
async fn imports_run_as_a_job_and_report_each_failed_line() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    // devices: {"port": integer} required, "serial" unique.
    let body = "{\"port\":1,\"serial\":\"A\"}\n\
                {\"port\":2}\n\
                not json\n\
                \n\
                {\"port\":\"three\"}\n\
                {\"port\":4,\"serial\":\"A\"}\n\
                [1,2]\n\
                {\"port\":5}";
    let r = upload(&s, &w.editor, body).await;
    assert_eq!(r.status(), 202);
    let location = header(&r, "location").to_owned();
    assert!(header(&r, "retry-after").parse::<u64>().is_ok());
    let job: Value = r.json().await.unwrap();
    assert_eq!(job["kind"], "import");
    let report = result_of(&s, &w.viewer, &location).await;
    assert_eq!(report["created"], 3, "{report}");
    assert_eq!(report["failed"], 4, "{report}");
    assert_eq!(report["lines"], 8, "{report}");
    let failures = report["failures"].as_array().unwrap();
    let lines: Vec<u64> = failures.iter().map(|f| f["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [3, 5, 6, 7]);
    assert_eq!(failures[0]["problem"]["type"], "/problems/malformed-body");
    assert_eq!(failures[1]["problem"]["type"], "/problems/schema-violation");
    assert_eq!(failures[1]["pointer"], "/data/port");
    assert_eq!(failures[2]["problem"]["type"], "/problems/unique-conflict");
    assert_eq!(failures[3]["problem"]["type"], "/problems/schema-violation");
    // Every good line is a record, exactly once.
    let list = s.ok_json(Method::GET, RECORDS, &w.viewer, None).await;
    let mut ports: Vec<i64> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["data"]["port"].as_i64().unwrap())
        .collect();
    ports.sort();
    assert_eq!(ports, [1, 2, 5]);
}

#[tokio::test]
async fn imports_a_keyed_upload_sent_again_replays_the_first_202_whole() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let send = || {
        s.req(Method::POST, IMPORTS, Some(&w.editor))
            .header("content-type", "application/x-ndjson")
            .header("idempotency-key", "import-once")
            .body("{\"port\":7}\n")
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), 202);
    let location = header(&first, "location").to_owned();
    let first_body = first.bytes().await.unwrap();
    let again = send().await.unwrap();
    assert_eq!(again.status(), 202);
    assert_eq!(header(&again, "idempotent-replayed"), "true");
    assert_eq!(header(&again, "location"), location);
    // A job's 202 is `no-store` (it changes by itself), which is not a
    // secret: the replay is the first answer, body and all.
    assert_eq!(header(&again, "cache-control"), "no-store");
    assert_eq!(header(&again, "content-type"), "application/json");
    assert!(header(&again, "retry-after").parse::<u64>().is_ok());
    assert_eq!(again.bytes().await.unwrap(), first_body);
    let job: Value = serde_json::from_slice(&first_body).unwrap();
    assert_eq!(job["kind"], "import");
    // One upload, one job, one record.
    let report = result_of(&s, &w.editor, &location).await;
    assert_eq!(report["created"], 1, "{report}");
    let list = s.ok_json(Method::GET, RECORDS, &w.viewer, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test]
async fn imports_an_empty_upload_is_a_job_of_nothing() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let r = upload(&s, &w.editor, "").await;
    assert_eq!(r.status(), 202);
    let location = header(&r, "location").to_owned();
    let report = result_of(&s, &w.editor, &location).await;
    assert_eq!(report["created"], 0);
    assert_eq!(report["failed"], 0);
}

#[tokio::test]
async fn imports_refuse_at_once_what_can_be_refused_at_once() {
    let mut config = config();
    config.max_import_bytes = 16;
    let s = Server::start_with(config, |r| r).await;
    let w = world(&s, "acme").await;
    // Too large (declared): 413 before any job exists.
    let r = upload(&s, &w.editor, "{\"port\":1}\n{\"port\":2}\n").await;
    assert_problem(r, 413, "content-too-large").await;
    // Not NDJSON: 415. A viewer: 403. Unknown collection: 404.
    let r = s
        .req(Method::POST, IMPORTS, Some(&w.editor))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_problem(r, 415, "unsupported-media-type").await;
    let r = upload(&s, &w.viewer, "{}").await;
    assert_problem(r, 403, "forbidden").await;
    let r = s
        .req(
            Method::POST,
            "/v1/tenants/acme/collections/nosuch/imports",
            Some(&w.editor),
        )
        .header("content-type", "application/x-ndjson")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_problem(r, 404, "not-found").await;
    // No job was created by any of them.
    let list = s.ok_json(Method::GET, "/v1/tenants/acme/jobs", &w.viewer, None).await;
    assert_eq!(list["items"], json!([]));
}

#[tokio::test]
async fn imports_a_canceled_job_stops_and_keeps_what_it_did() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let body: String = (0..3000).map(|n| format!("{{\"port\":{n}}}\n")).collect();
    let r = s
        .req(Method::POST, IMPORTS, Some(&w.editor))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = header(&r, "location").to_owned();
    // Cancel it once it has started writing.
    let mut canceled = None;
    for _ in 0..400 {
        let list = s
            .ok_json(Method::GET, &format!("{RECORDS}?limit=1"), &w.viewer, None)
            .await;
        if !list["items"].as_array().unwrap().is_empty() {
            let r = s.call(Method::DELETE, &location, &w.editor, None).await;
            if r.status() == 200 {
                canceled = Some(r.json::<Value>().await.unwrap());
            } else {
                // Finished first: a clear 409, and nothing to test here.
                assert_problem(r, 409, "state-conflict").await;
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let Some(job) = canceled else { return };
    assert_eq!(job["status"], "canceled");
    assert!(job["finished_at"].is_string());
    // The monitor keeps answering 200 (canceled is not success: no 303).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = s.call(Method::GET, &location, &w.viewer, None).await;
    assert_eq!(r.status(), 200);
    let later: Value = r.json().await.unwrap();
    assert_eq!(later["status"], "canceled");
    // What was imported stays; nothing more arrives.
    let count = |list: Value| list["items"].as_array().unwrap().len();
    let first = count(
        s.ok_json(Method::GET, &format!("{RECORDS}?limit=1000"), &w.viewer, None)
            .await,
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = count(
        s.ok_json(Method::GET, &format!("{RECORDS}?limit=1000"), &w.viewer, None)
            .await,
    );
    assert_eq!(first, second);
    assert!(first > 0);
    // Canceling again is a conflict.
    let r = s.call(Method::DELETE, &location, &w.editor, None).await;
    assert_problem(r, 409, "state-conflict").await;
}

#[tokio::test]
async fn imports_fail_a_line_longer_than_a_record_without_holding_it() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    // Line 2 is 5 MiB long (a record may have 1 MiB): it spans several
    // stored chunks, fails alone, and the lines around it are imported.
    let long = format!("{{\"port\":2,\"serial\":\"{}\"}}", "y".repeat(5 << 20));
    let body = format!("{{\"port\":1}}\n{long}\n{{\"port\":3}}\n{{\"port\":4}}");
    let r = s
        .req(Method::POST, IMPORTS, Some(&w.editor))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = header(&r, "location").to_owned();
    let report = result_of(&s, &w.viewer, &location).await;
    assert_eq!(report["lines"], 4, "{report}");
    assert_eq!(report["created"], 3, "{report}");
    assert_eq!(report["failed"], 1, "{report}");
    assert_eq!(report["failures"][0]["line"], 2, "{report}");
    assert_eq!(report["failures"][0]["problem"]["status"], 413, "{report}");
}

/// Trickles an import: a chunked upload of one line every 150 ms, until the
/// server answers or `for_at_most` passes. Returns what the server sent
/// (empty if it never answered) and how long the upload lasted.
async fn trickle(s: &Server, token: &str, for_at_most: Duration) -> (String, Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST {IMPORTS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let mut out = vec![0u8; 4096];
    while started.elapsed() < for_at_most {
        // Each pause is well under the idle timeout.
        if sock.write_all(b"b\r\n{\"port\":1}\n\r\n").await.is_err() {
            break;
        }
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(150), sock.read(&mut out)).await {
            return (String::from_utf8_lossy(&out[..n]).into_owned(), started.elapsed());
        }
    }
    (String::new(), started.elapsed())
}

#[tokio::test]
async fn a_trickled_upload_is_408_once_below_the_minimum_rate() {
    // Grace 1 s, then 1,000 bytes a second on average; the trickle sends
    // 11 bytes every 150 ms (about 73 a second).
    let mut config = config();
    config.body_timeout = Duration::from_secs(1);
    config.min_upload_rate = 1000;
    let s = Server::start_with(config.clone(), |r| r).await;
    let w = world(&s, "acme").await;
    let (answer, took) = trickle(&s, &w.editor, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("/problems/request-timeout"), "{answer}");
    assert!(took < Duration::from_secs(3), "cut soon after the grace: {took:?}");
    let jobs = s.ok_json(Method::GET, "/v1/tenants/acme/jobs", &w.viewer, None).await;
    assert_eq!(jobs["items"], json!([]), "no job for a cut upload");
    // Without a minimum rate the same trickle goes on (each pause is under
    // the idle timeout): it is the rate that cut it.
    config.min_upload_rate = 0;
    let s = Server::start_with(config, |r| r).await;
    let w = world(&s, "acme").await;
    let (answer, took) = trickle(&s, &w.editor, Duration::from_secs(3)).await;
    assert_eq!(answer, "", "still uploading after {took:?}");
}
