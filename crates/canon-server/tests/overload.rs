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

/// Sends `request` on a new connection and reads the whole answer, without
/// its `date` line (the only part two servers may not agree on).
async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut sock = TcpStream::connect(addr).await.unwrap();
    sock.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut answer))
        .await
        .expect("answered at once")
        .unwrap();
    String::from_utf8(answer)
        .unwrap()
        .split("\r\n")
        .filter(|line| !line.to_ascii_lowercase().starts_with("date:"))
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// The count of requests answered 503 with `method` and no route.
async fn shed_count(s: &Server, method: &str) -> f64 {
    let text = s
        .req(Method::GET, "/metrics", Some(OPERATOR))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("canon_http_requests_total{")
                && l.contains("route=\"unmatched\"")
                && l.contains(&format!("method=\"{method}\""))
                && l.contains("status=\"503\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shed_answer_is_byte_for_byte_what_the_flow_answers() {
    // The gate answers shed requests before the envelope and the flow, from
    // a response rendered once; a server without the gate sheds in the
    // flow's first node. Both, overloaded, must say exactly the same.
    let mut servers = Vec::new();
    let mut held = Vec::new();
    for gated in [true, false] {
        let mut config = config();
        config.max_in_flight = 1;
        config.body_timeout = Duration::from_secs(20);
        let s = if gated {
            Server::start_with(config, |r| r).await
        } else {
            Server::start_ungated(config).await
        };
        let w = world(&s, "acme").await;
        held.push(held_upload(s.addr, &w.editor).await);
        servers.push((s, w));
    }
    let record = format!("{RECORDS}/0196a0b2-0000-7000-8000-000000000000");
    let before = shed_count(&servers[0].0, "GET").await;
    for (method, target, id, body) in [
        ("GET", record.as_str(), "same-id-1", ""),
        ("HEAD", record.as_str(), "same-id-2", ""),
        ("POST", RECORDS, "same.id:3", r#"{"port": 1}"#),
        ("DELETE", "/v1/tenants/acme/a%22b", "same-id-4", ""),
        ("GET", "/docs/status-codes", "bad id with spaces", ""),
    ] {
        let mut answers = Vec::new();
        for (s, w) in &servers {
            let request = format!(
                "{method} {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nX-Request-Id: {id}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                w.viewer,
                body.len()
            );
            answers.push(exchange(s.addr, request.as_bytes()).await);
        }
        let (gated, flow) = (&answers[0], &answers[1]);
        assert!(gated.starts_with("HTTP/1.1 503"), "{gated}");
        assert!(gated.contains("retry-after: 1\r\n"), "{gated}");
        assert!(gated.contains("content-type: application/problem+json\r\n"), "{gated}");
        if id.contains(' ') {
            // Not a sane id: each server makes its own, in the body too.
            assert!(!gated.contains(id) && gated.contains("x-request-id: "), "{gated}");
            continue;
        }
        assert!(gated.contains(&format!("x-request-id: {id}\r\n")), "{gated}");
        assert_eq!(gated, flow, "{method} {target}");
        if method != "HEAD" {
            let problem: Value = serde_json::from_str(gated.split("\r\n\r\n").nth(1).unwrap()).unwrap();
            assert_eq!(problem["instance"], target, "{gated}");
            assert_eq!(problem["request_id"], id);
            assert_eq!(problem["retry_after"], 1);
        }
    }
    // Shed requests are counted like any other (route "unmatched").
    let after = shed_count(&servers[0].0, "GET").await;
    assert!(after >= before + 2.0, "{before} -> {after}");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_still_answers_before_overload() {
    // The flow answers maintenance's 503 before overload's; the gate, which
    // sheds before the flow, must keep that order.
    let mut config = config();
    config.max_in_flight = 1;
    config.body_timeout = Duration::from_secs(20);
    let s = Server::start_with(config, |r| r).await;
    let w = world(&s, "acme").await;
    let on = json!({"enabled": true, "retry_after_seconds": 120, "message": "Upgrading"});
    let r = s
        .call(Method::PUT, "/v1/admin/maintenance", OPERATOR, Some(on.clone()))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    // The one slot held by the operator's own admin call (maintenance lets
    // it through), its body still to come.
    let body = on.to_string();
    let mut sock = TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "PUT /v1/admin/maintenance HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {OPERATOR}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&body.as_bytes()[..1]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    // An API request: maintenance's answer, though no slot is free.
    let r = s.call(Method::GET, RECORDS, &w.viewer, None).await;
    assert_eq!(header(&r, "retry-after"), "120");
    let problem = assert_problem(r, 503, "service-unavailable").await;
    assert_eq!(problem["detail"], "Upgrading");
    // An admin call, which maintenance lets through: shed.
    let r = s.call(Method::GET, "/v1/admin/maintenance", OPERATOR, None).await;
    assert_eq!(header(&r, "retry-after"), "1");
    let problem = assert_problem(r, 503, "service-unavailable").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("as many requests"),
        "{problem}"
    );

    sock.write_all(&body.as_bytes()[1..]).await.unwrap();
    let mut answer = String::new();
    sock.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
