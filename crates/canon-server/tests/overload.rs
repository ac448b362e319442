//! Overload under real concurrency: with every in-flight slot held by slow
//! uploads, excess requests are answered 503 at once (never queued), the
//! probes are never shed, and service resumes as soon as the load drops.
//! The throughput side (10× the limit in connections) is a benchmark:
//! `scripts/bench-overload`, figures in docs/performance.md.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const RECORDS: &str = "/v1/tenants/acme/collections/devices/records";
const MAX_IN_FLIGHT: usize = 4;
const BODY: &[u8] = br#"{"port": 7}"#;

/// Opens a POST whose body is still to come and returns its socket once
/// the server holds it (no answer within a moment: it waits for the body).
async fn held_upload(addr: std::net::SocketAddr, token: &str) -> TcpStream {
    let mut sock = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {RECORDS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        BODY.len()
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&BODY[..1]).await.unwrap();
    let mut byte = [0u8; 1];
    let answered = tokio::time::timeout(Duration::from_millis(100), sock.read(&mut byte)).await;
    assert!(answered.is_err(), "the upload was answered before its body");
    sock
}

/// Trickles the rest of the body in, a byte every 50 ms, holding back the
/// last byte until `finish`; returns the server's answer.
async fn trickle(mut sock: TcpStream, mut finish: tokio::sync::watch::Receiver<bool>) -> String {
    let (middle, last) = BODY[1..].split_at(BODY.len() - 2);
    for byte in middle {
        sock.write_all(&[*byte]).await.unwrap();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = finish.wait_for(|f| *f) => {}
        }
    }
    let _ = finish.wait_for(|f| *f).await;
    sock.write_all(last).await.unwrap();
    let mut answer = String::new();
    sock.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_sheds_excess_at_once_never_the_probes_and_recovers() {
    let mut config = config();
    config.max_in_flight = MAX_IN_FLIGHT;
    config.body_timeout = Duration::from_secs(20);
    let s = Server::start_with(config, |r| r).await;
    let w = world(&s, "acme").await;
    let created = s
        .ok_json(Method::POST, RECORDS, &w.editor, Some(json!({"port": 1})))
        .await;
    let record = format!("{RECORDS}/{}", created["id"].as_str().unwrap());

    // Every slot held by an upload whose body trickles in.
    let (finish, finishing) = tokio::sync::watch::channel(false);
    let mut uploads = Vec::new();
    for _ in 0..MAX_IN_FLIGHT {
        let sock = held_upload(s.addr, &w.editor).await;
        uploads.push(tokio::spawn(trickle(sock, finishing.clone())));
    }

    // Excess load, all at once: every request is answered 503 immediately
    // (a server that queued them would never answer: the slots are held).
    let excess = futures_util::future::join_all((0..64).map(|i| {
        let (s, w, record) = (&s, &w, &record);
        async move {
            let started = Instant::now();
            let r = if i % 2 == 0 {
                s.call(Method::GET, record, &w.viewer, None).await
            } else {
                s.call(Method::POST, RECORDS, &w.editor, Some(json!({"port": i}))).await
            };
            let took = started.elapsed();
            assert_eq!(header(&r, "retry-after"), "1");
            let body = assert_problem(r, 503, "service-unavailable").await;
            assert!(body["detail"].as_str().unwrap().contains("as many requests"), "{body}");
            took
        }
    }));
    let excess = tokio::time::timeout(Duration::from_secs(5), excess)
        .await
        .expect("excess requests were queued, not shed");
    let slowest = excess.iter().max().unwrap();
    assert!(
        *slowest < Duration::from_millis(500),
        "a shed request waited {slowest:?}"
    );

    // Probes are never shed, however busy.
    for _ in 0..10 {
        for probe in ["/healthz", "/readyz"] {
            let r = s.req(Method::GET, probe, None).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{probe}");
        }
    }

    // The uploads were only slow: they finish, and were served.
    finish.send(true).unwrap();
    for upload in uploads {
        let answer = upload.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    }
    // Load gone: everything is served again, concurrency up to the limit.
    let again =
        futures_util::future::join_all((0..MAX_IN_FLIGHT).map(|_| s.call(Method::GET, &record, &w.viewer, None))).await;
    for r in again {
        assert_eq!(r.status(), StatusCode::OK);
    }
    // Nothing shed was written: one record, plus the four uploads.
    let list: Value = s.ok_json(Method::GET, RECORDS, &w.viewer, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1 + MAX_IN_FLIGHT);
}
