//! The benchmark's ceiling: what this machine does for an HTTP exchange when
//! nothing stands behind the handler.
//!
//! `bench/run` loads this server and Canon with the same requests at the same
//! concurrency and reports every Canon figure as a ratio of this one's
//! (docs/performance.md). Each handler does the least an honest API server
//! must: routing by axum, a path parameter, an entity tag compared with
//! `If-None-Match`/`If-Match`, a JSON request body parsed into a value, a
//! fixed JSON response. No store, no authentication, no logging: anything
//! Canon spends beyond this is Canon's own cost.

use std::sync::LazyLock;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::header::{CONTENT_LOCATION, CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

/// The one record every read answers with (87 bytes, the size of a small
/// Canon record's data with its id and version).
pub const RECORD: &str = r#"{"id":"r-0001","data":{"serial":"SN-0000000001","port":8080,"active":true},"version":1}"#;

/// The record's strong entity tag, the same for every request.
pub const TAG: &str = "\"c0ffee\"";

/// A page of 50 records, the ceiling of Canon's list of 50 (built once).
static LIST: LazyLock<Bytes> = LazyLock::new(|| {
    let items = vec![RECORD; 50].join(",");
    Bytes::from(format!(r#"{{"items":[{items}],"next":null}}"#))
});

/// The ceiling's routes; `bench/run` sends each scenario's requests to the
/// path that plays Canon's part:
///
/// - `GET /records/{id}`: the record with its `ETag`; 304 when `If-None-Match` names the tag.
/// - `GET /records`: a page of 50 records.
/// - `POST /records` and `POST /records/batch`: parse the JSON body, 201 with the record.
/// - `PATCH /records/{id}`: `If-Match` must name the tag (428 without, 412 otherwise); parse
///   the body, 200 with the record, its tag and `Content-Location`.
/// - `GET /healthz`: 200, the harness's readiness probe.
pub fn router() -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/records", get(list).post(create))
        .route("/records/batch", post(create))
        .route("/records/{id}", get(read).patch(patch))
}

/// Whether an `If-None-Match` or `If-Match` value names the record's tag.
fn names_tag(value: Option<&HeaderValue>) -> bool {
    value
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "*" || v.split(',').any(|t| t.trim() == TAG))
}

/// A JSON response with the record's tag.
fn json(status: StatusCode, body: Bytes) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(ETAG, HeaderValue::from_static(TAG));
    response
}

/// Parses a request body as a JSON object, as any write must before acting on
/// it; `None` when it is not one (400).
fn parse(body: &[u8]) -> Option<serde_json::Value> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .filter(serde_json::Value::is_object)
}

async fn read(Path(_id): Path<String>, headers: HeaderMap) -> Response {
    if names_tag(headers.get(IF_NONE_MATCH)) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        response.headers_mut().insert(ETAG, HeaderValue::from_static(TAG));
        return response;
    }
    json(StatusCode::OK, Bytes::from_static(RECORD.as_bytes()))
}

async fn list() -> Response {
    json(StatusCode::OK, LIST.clone())
}

async fn create(body: Bytes) -> Response {
    if parse(&body).is_none() {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let mut response = json(StatusCode::CREATED, Bytes::from_static(RECORD.as_bytes()));
    response
        .headers_mut()
        .insert(LOCATION, HeaderValue::from_static("/records/r-0001"));
    response
}

async fn patch(Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    if headers.get(IF_MATCH).is_none() {
        return StatusCode::PRECONDITION_REQUIRED.into_response();
    }
    if !names_tag(headers.get(IF_MATCH)) {
        return StatusCode::PRECONDITION_FAILED.into_response();
    }
    if parse(&body).is_none() {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let location = HeaderValue::from_str(&format!("/records/{id}"));
    let mut response = json(StatusCode::OK, Bytes::from_static(RECORD.as_bytes()));
    if let Ok(location) = location {
        response.headers_mut().insert(CONTENT_LOCATION, location);
    }
    response
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use super::*;

    /// Starts the ceiling on an ephemeral loopback port in a thread of its own.
    fn start() -> std::net::SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        listener.set_nonblocking(true).expect("non-blocking");
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                axum::serve(listener, router()).await.expect("serve");
            });
        });
        addr
    }

    /// Sends one request on its own connection and returns the whole response.
    fn exchange(addr: std::net::SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.write_all(request.as_bytes()).expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        response
    }

    fn request(method: &str, path: &str, headers: &str, body: &str) -> String {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    #[test]
    fn answers_each_scenario_as_the_harness_expects() {
        let addr = start();

        let got = exchange(addr, &request("GET", "/records/r-0001", "", ""));
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        assert!(got.contains(&format!("etag: {TAG}")), "{got}");
        assert!(got.ends_with(RECORD), "{got}");

        let got = exchange(
            addr,
            &request("GET", "/records/r-0001", &format!("If-None-Match: {TAG}\r\n"), ""),
        );
        assert!(got.starts_with("HTTP/1.1 304"), "{got}");
        let got = exchange(
            addr,
            &request("GET", "/records/r-0001", "If-None-Match: \"other\"\r\n", ""),
        );
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");

        let got = exchange(addr, &request("GET", "/records?limit=50", "", ""));
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        assert_eq!(got.matches("\"serial\"").count(), 50, "{got}");

        for path in ["/records", "/records/batch"] {
            let got = exchange(addr, &request("POST", path, "", r#"{"port":1}"#));
            assert!(got.starts_with("HTTP/1.1 201"), "{got}");
            let got = exchange(addr, &request("POST", path, "", "{not json"));
            assert!(got.starts_with("HTTP/1.1 400"), "{got}");
        }

        let tag = format!("If-Match: {TAG}\r\n");
        let got = exchange(addr, &request("PATCH", "/records/r-7", &tag, r#"{"port":2}"#));
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        assert!(got.contains("content-location: /records/r-7"), "{got}");
        let got = exchange(addr, &request("PATCH", "/records/r-7", "If-Match: \"old\"\r\n", "{}"));
        assert!(got.starts_with("HTTP/1.1 412"), "{got}");
        let got = exchange(addr, &request("PATCH", "/records/r-7", "", "{}"));
        assert!(got.starts_with("HTTP/1.1 428"), "{got}");
    }
}
