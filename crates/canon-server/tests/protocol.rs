//! HTTP to the letter (issue 7): the protocol classes a black-box review
//! found wrong, each tested over a real socket. Test names say the class.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RECORDS: &str = "/v1/tenants/acme/collections/devices/records";

/// A parsed raw response: status, lower-cased header lines, body.
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// Sends `request` as written on a fresh connection and reads until the
/// server closes it (requests say `Connection: close`).
async fn raw(s: &Server, request: &[u8]) -> Raw {
    let mut sock = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    sock.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut out))
        .await
        .expect("the server answered and closed")
        .unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").expect("a header section");
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Raw {
        status,
        headers,
        body: out[split + 4..].to_vec(),
    }
}

fn get_request(path: &str, token: &str, extra: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: canon.test\r\nAuthorization: Bearer {token}\r\n{extra}Connection: close\r\n\r\n"
    )
    .into_bytes()
}

async fn create(s: &Server, token: &str, data: Value) -> Value {
    s.ok_json(Method::POST, RECORDS, token, Some(data)).await
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
    out
}

// --- Defect 1: a caller who may not write cannot starve anyone ---------------

#[tokio::test]
async fn starvation_callers_who_may_not_write_never_hold_a_slot_for_a_body() {
    let mut config = config();
    config.max_in_flight = 4;
    config.body_timeout = Duration::from_secs(20);
    let s = Server::start_with(config, |r| r).await;
    let w = world(&s, "acme").await;
    let other = world(&s, "other").await;
    // 16 connections that announce a body and never send it: a viewer of
    // this tenant (403) and an editor of another tenant (404). Each must be
    // answered at once, from the route, method and caller alone.
    // Before the fix each of them held an in-flight slot for the whole body
    // timeout, so the fifth locked everyone out.
    let started = Instant::now();
    let mut held = Vec::new();
    for i in 0..16 {
        let token = if i % 2 == 0 { &w.viewer } else { &other.editor };
        let head = format!(
            "POST {RECORDS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        );
        let mut sock = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        sock.write_all(head.as_bytes()).await.unwrap();
        let mut line = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(2), sock.read_exact(&mut line))
            .await
            .expect("answered without waiting for the body")
            .unwrap();
        let expected = if i % 2 == 0 { "403" } else { "404" };
        assert!(String::from_utf8_lossy(&line).ends_with(expected), "{i}");
        held.push(sock);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered without waiting for bodies"
    );
    // Every slot is free: the editor writes, the probes answer.
    let r = s.call(Method::POST, RECORDS, &w.editor, Some(json!({"port": 1}))).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = s.req(Method::GET, "/healthz", None).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

// --- Defect 7: framing and fields -------------------------------------------

#[tokio::test]
async fn host_is_required_once_and_valid_on_http_1_1() {
    let s = Server::start().await;
    let cases: [(&[u8], u16); 5] = [
        (b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n", 400),
        (
            b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
            400,
        ),
        (b"GET /healthz HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n", 400),
        (
            b"GET /healthz HTTP/1.1\r\nHost: canon.test:8080\r\nConnection: close\r\n\r\n",
            200,
        ),
        (b"GET /healthz HTTP/1.0\r\n\r\n", 200),
    ];
    for (request, status) in cases {
        let r = raw(&s, request).await;
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(request));
        assert!(r.header("x-request-id").is_some());
        if status == 400 {
            assert_eq!(r.header("content-type"), Some("application/problem+json"));
            assert_eq!(r.json()["type"], "/problems/invalid-header");
        }
    }
}

#[tokio::test]
async fn dot_segments_are_400_in_every_path_position() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    for path in [
        format!("{RECORDS}/.."),
        format!("{RECORDS}/."),
        format!("{RECORDS}/%2e%2e"),
        format!("{RECORDS}/%2E"),
        "/v1/tenants/acme/collections/../records".to_owned(),
        "/v1/tenants/%2e%2e/users".to_owned(),
    ] {
        let request = format!(
            "PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 11\r\nConnection: close\r\n\r\n{{\"port\":1}}",
            w.editor
        );
        let r = raw(&s, request.as_bytes()).await;
        assert_eq!(r.status, 400, "{path}");
        assert_eq!(r.json()["type"], "/problems/invalid-header", "{path}");
    }
    let list = s.ok_json(Method::GET, RECORDS, &w.viewer, None).await;
    assert_eq!(list["items"], json!([]), "nothing was created");
}

#[tokio::test]
async fn head_answers_like_get_including_304_and_problems() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let rec = create(&s, &w.editor, json!({"port": 22})).await;
    let path = format!("{RECORDS}/{}", rec["id"].as_str().unwrap());

    let get = raw(&s, &get_request(&path, &w.viewer, "")).await;
    let head = raw(
        &s,
        format!(
            "HEAD {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            w.viewer
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), Some(get.body.len().to_string().as_str()));
    for h in ["etag", "last-modified", "cache-control", "vary", "content-type"] {
        assert_eq!(head.header(h), get.header(h), "{h}");
    }

    // A 304 to HEAD carries no Content-Length: 0 (it would contradict the 200's).
    let etag = get.header("etag").unwrap();
    let head304 = raw(
        &s,
        format!(
            "HEAD {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nIf-None-Match: {etag}\r\nConnection: close\r\n\r\n",
            w.viewer
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(head304.status, 304);
    assert_eq!(head304.header("content-length"), None);
    assert_eq!(head304.header("transfer-encoding"), None);
    assert_eq!(head304.header("etag"), Some(etag));

    // A problem: HEAD is 404 like GET, with the same headers (the same
    // Content-Length too). (This was a route not built yet, 501, until the
    // last of them, the devices, were.)
    let mut lengths = Vec::new();
    for method in [Method::GET, Method::HEAD] {
        let r = s
            .req(method.clone(), "/v1/tenants/acme/devices/missing", Some(&w.viewer))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{method}");
        lengths.push(r.headers().get("content-length").cloned());
    }
    assert!(lengths[0].is_some());
    assert_eq!(lengths[0], lengths[1]);
}

#[tokio::test]
async fn options_asterisk_and_accept_post_and_patch() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let r = raw(&s, b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("allow"), Some("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"));

    let r = s.req(Method::OPTIONS, RECORDS, Some(&w.viewer)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "accept-post"), "application/json");
    let r = s
        .req(Method::OPTIONS, &format!("{RECORDS}/x"), Some(&w.viewer))
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&r, "accept-patch"),
        "application/merge-patch+json, application/json-patch+json, application/json"
    );
}

#[tokio::test]
async fn conditional_headers_empty_list_elements_and_future_dates() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let rec = create(&s, &w.editor, json!({"port": 22})).await;
    let path = format!("{RECORDS}/{}", rec["id"].as_str().unwrap());
    let get = s.call(Method::GET, &path, &w.viewer, None).await;
    let etag = header(&get, "etag").to_owned();

    let r = s
        .req(Method::GET, &path, Some(&w.viewer))
        .header("if-none-match", format!(",\"zzz\",, {etag} ,"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

    // A future If-Modified-Since says nothing about the client's copy.
    let future = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(86_400));
    let r = s
        .req(Method::GET, &path, Some(&w.viewer))
        .header("if-modified-since", future)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn challenges_follow_rfc_6750() {
    let s = Server::start().await;
    let cases = [
        ("Basic Zm9vOmJhcg==", "Bearer realm=\"canon\"", "credentials-required"),
        (
            "Bearer",
            "Bearer realm=\"canon\", error=\"invalid_request\"",
            "credentials-required",
        ),
        (
            "Bearer nope",
            "Bearer realm=\"canon\", error=\"invalid_token\"",
            "invalid-token",
        ),
    ];
    for (auth, challenge, slug) in cases {
        let r = s
            .req(Method::GET, "/v1/tenants", None)
            .header("authorization", auth)
            .send()
            .await
            .unwrap();
        assert_eq!(header(&r, "www-authenticate"), challenge, "{auth}");
        assert_problem(r, 401, slug).await;
    }
}

#[tokio::test]
async fn vary_accept_on_every_negotiated_response_and_docs_cache_control() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let rec = create(&s, &w.editor, json!({"port": 22})).await;
    let record = format!("{RECORDS}/{}", rec["id"].as_str().unwrap());
    for path in ["/docs/status-codes", "/problems/not-found", "/healthz"] {
        let r = s.req(Method::GET, path, None).send().await.unwrap();
        assert_eq!(header(&r, "vary"), "Accept, Accept-Encoding", "{path}");
        if path != "/healthz" {
            assert_eq!(header(&r, "cache-control"), "public, max-age=3600", "{path}");
        }
    }
    let r = s.call(Method::GET, &record, &w.viewer, None).await;
    assert_eq!(header(&r, "vary"), "Accept, Accept-Encoding");
    let r = s
        .req(Method::GET, &record, Some(&w.viewer))
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "vary"), "Accept");
    assert_problem(r, 406, "not-acceptable").await;
}

#[tokio::test]
async fn hyper_level_limits_leave_ordinary_requests_to_the_flow() {
    let s = Server::start().await;
    // Up to hyper's 100 header fields: served by the flow. One more: hyper's
    // own bare 431 (docs/http.md), before any request exists.
    let with_fields = |n: usize| {
        let mut request = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
        for i in 2..n {
            request.push_str(&format!("X-Field-{i}: {i}\r\n"));
        }
        request + "\r\n"
    };
    assert_eq!(raw(&s, with_fields(100).as_bytes()).await.status, 200);
    let r = raw(&s, with_fields(101).as_bytes()).await;
    assert_eq!(r.status, 431);
    assert!(r.body.is_empty());
    // Over the flow's 16 KiB: a 431 problem from the flow, not a bare one.
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(20_000)
    );
    let r = raw(&s, big.as_bytes()).await;
    assert_eq!(r.status, 431);
    assert_eq!(r.json()["type"], "/problems/headers-too-large");
    // Broken framing is answered by hyper itself (documented in
    // docs/http.md, "What hyper answers before the flow runs"): a bare 400,
    // no problem body, no request id. A list, or two fields that disagree.
    for lengths in ["Content-Length: 1, 2\r\n", "Content-Length: 1\r\nContent-Length: 2\r\n"] {
        let request = format!("POST /healthz HTTP/1.1\r\nHost: x\r\n{lengths}Connection: close\r\n\r\nab");
        let r = raw(&s, request.as_bytes()).await;
        assert_eq!(r.status, 400, "{lengths}");
        assert!(r.body.is_empty(), "{lengths}");
        assert!(!r.headers.iter().any(|(k, _)| k == "x-request-id"), "{lengths}");
    }
    // Two that agree are one (RFC 9112 §6.3): the request reaches the flow.
    let r = raw(
        &s,
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\nConnection: close\r\n\r\nab",
    )
    .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["type"], "/problems/method-not-allowed");
}

// --- Defect 8: content codings ----------------------------------------------

#[tokio::test]
async fn codings_gzip_request_bodies_are_decoded_under_the_limit() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let r = s
        .req(Method::POST, RECORDS, Some(&w.editor))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzip(br#"{"port": 8443}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["data"], json!({"port": 8443}));

    // 2 MiB of spaces gzip to a few KiB: the limit counts decoded bytes.
    let mut bomb = b"{\"port\": 1".to_vec();
    bomb.extend(std::iter::repeat_n(b' ', 2 * 1024 * 1024));
    bomb.push(b'}');
    let r = s
        .req(Method::POST, RECORDS, Some(&w.editor))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzip(&bomb))
        .send()
        .await
        .unwrap();
    assert_problem(r, 413, "content-too-large").await;

    let r = s
        .req(Method::POST, RECORDS, Some(&w.editor))
        .header("content-type", "application/json")
        .header("content-encoding", "br")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "accept-encoding"), "gzip, identity");
    assert_problem(r, 415, "unsupported-media-type").await;

    let r = s
        .req(Method::POST, RECORDS, Some(&w.editor))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(r#"{"port": 2}"#)
        .send()
        .await
        .unwrap();
    assert_problem(r, 400, "malformed-body").await;
    let list = s.ok_json(Method::GET, RECORDS, &w.viewer, None).await;
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        1,
        "only the good body was stored"
    );
}

#[tokio::test]
async fn codings_gzip_responses_have_their_own_tags_and_validate_both_ways() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let rec = create(&s, &w.editor, json!({"port": 22, "serial": "a"})).await;
    let path = format!("{RECORDS}/{}", rec["id"].as_str().unwrap());

    let plain = raw(&s, &get_request(&path, &w.viewer, "")).await;
    let coded = raw(&s, &get_request(&path, &w.viewer, "Accept-Encoding: gzip\r\n")).await;
    assert_eq!(coded.status, 200);
    assert_eq!(coded.header("content-encoding"), Some("gzip"));
    assert_eq!(coded.header("vary"), Some("Accept, Accept-Encoding"));
    assert_eq!(gunzip(&coded.body), plain.body);
    let plain_tag = plain.header("etag").unwrap();
    let coded_tag = coded.header("etag").unwrap();
    assert_ne!(plain_tag, coded_tag, "a strong tag names one representation");

    // Revalidating the coded copy: 304 with the coded tag.
    let r = raw(
        &s,
        &get_request(
            &path,
            &w.viewer,
            &format!("Accept-Encoding: gzip\r\nIf-None-Match: {coded_tag}\r\n"),
        ),
    )
    .await;
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag"), Some(coded_tag));

    // A write guarded by the tag of the coded copy succeeds; a stale one fails.
    let r = s
        .req(Method::PUT, &path, Some(&w.editor))
        .header("if-match", coded_tag)
        .json(&json!({"port": 23}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = s
        .req(Method::PUT, &path, Some(&w.editor))
        .header("if-match", coded_tag)
        .json(&json!({"port": 24}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 412, "precondition-failed").await;
}

// --- Defect 9 (flow part): If-Match: * does not satisfy require_if_match -----

#[tokio::test]
async fn require_if_match_wants_an_entity_tag_not_a_star() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    s.ok_json(
        Method::POST,
        "/v1/tenants/acme/collections",
        &w.admin,
        Some(json!({"name": "strict", "schema": {"type": "object"}, "require_if_match": true})),
    )
    .await;
    let strict = "/v1/tenants/acme/collections/strict/records";
    let rec = s.ok_json(Method::POST, strict, &w.editor, Some(json!({"a": 1}))).await;
    let path = format!("{strict}/{}", rec["id"].as_str().unwrap());
    let r = s
        .req(Method::PUT, &path, Some(&w.editor))
        .header("if-match", "*")
        .json(&json!({"a": 2}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 428, "precondition-required").await;
}
