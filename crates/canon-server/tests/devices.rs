//! The device gateway (issue 12): devices as a resource, and requests
//! relayed to fake devices the test runs on loopback: one that answers, one
//! that sleeps, one that closes the socket, one that writes garbage, one
//! that stops mid-body.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body as AxumBody;
use axum::extract::Request;
use axum::response::Response as AxumResponse;
use canon_server::devices::{DeviceConfig, SecretKey};
use common::{FakeDns, Server, World, assert_problem, header, world};
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SECRET: &str = "TOPSECRET-device-credential-4711";

fn key() -> SecretKey {
    SecretKey::parse(&"ab".repeat(32)).unwrap()
}

fn config_with(devices: DeviceConfig) -> canon_server::Config {
    canon_server::Config {
        devices,
        ..common::config()
    }
}

fn devices_config() -> DeviceConfig {
    DeviceConfig {
        secret_key: Some(key()),
        ..DeviceConfig::default()
    }
}

async fn start() -> (Server, World) {
    start_with(devices_config()).await
}

async fn start_with(devices: DeviceConfig) -> (Server, World) {
    let s = Server::start_with(config_with(devices), |r| r).await;
    let w = world(&s, "acme").await;
    (s, w)
}

/// What a fake device saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    headers: http::HeaderMap,
    body_len: usize,
}

/// A device that answers: it records each request, then answers `201` with
/// a header of its own, a hop-by-hop one, and `body_len` bytes streamed in
/// 64 KiB chunks.
async fn answering_device(body_len: usize) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |req: Request| {
        let log = log.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
            log.lock().unwrap().push(Seen {
                method: parts.method.to_string(),
                uri: parts.uri.to_string(),
                headers: parts.headers.clone(),
                body_len: bytes.len(),
            });
            let chunks = futures_util::stream::iter((0..body_len).step_by(65536).map(move |start| {
                let n = (body_len - start).min(65536);
                Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; n]))
            }));
            AxumResponse::builder()
                .status(201)
                .header("x-device", "fw-9")
                .header("keep-alive", "timeout=5")
                .header("content-type", "application/octet-stream")
                .body(AxumBody::from_stream(chunks))
                .unwrap()
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

/// A device on a raw socket: for each connection, reads the request head,
/// then runs `behave` on the socket.
async fn raw_device<F, Fut>(behave: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let behave = Arc::new(behave);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let behave = behave.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                behave(socket).await;
            });
        }
    });
    addr
}

/// A port nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

async fn register(s: &Server, w: &World, name: &str, endpoint: &str, timeout_ms: u32) -> reqwest::Response {
    s.call(
        Method::POST,
        "/v1/tenants/acme/devices",
        &w.admin,
        Some(json!({"name": name, "endpoint": endpoint, "timeout_ms": timeout_ms, "headers": {"X-Device-Token": SECRET}})),
    )
    .await
}

async fn registered(s: &Server, w: &World, name: &str, addr: SocketAddr, timeout_ms: u32) {
    let r = register(s, w, name, &format!("http://{addr}/mgmt"), timeout_ms).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

#[tokio::test]
async fn devices_are_registered_read_changed_and_deleted_like_every_resource() {
    let (s, w) = start().await;
    let (addr, _) = answering_device(0).await;
    let r = register(&s, &w, "fw-1", &format!("http://{addr}/"), 2000).await;
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "location"), "/v1/tenants/acme/devices/fw-1");
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["headers"], json!(["x-device-token"]), "names only");
    assert_eq!(created["health"]["circuit"], "closed");
    assert!(!created.to_string().contains(SECRET));
    // Admins write; viewers read; editors may not register.
    assert_eq!(
        register(&s, &w, "fw-1", &format!("http://{addr}/"), 2000)
            .await
            .status(),
        409
    );
    let r = s
        .call(
            Method::POST,
            "/v1/tenants/acme/devices",
            &w.editor,
            Some(json!({"name": "x", "endpoint": "http://127.0.0.1:1/", "timeout_ms": 1})),
        )
        .await;
    assert_problem(r, 403, "forbidden").await;
    let list = s
        .ok_json(Method::GET, "/v1/tenants/acme/devices", &w.viewer, None)
        .await;
    assert_eq!(list["items"][0]["name"], "fw-1");
    let r = s
        .call(Method::GET, "/v1/tenants/acme/devices/fw-1", &w.viewer, None)
        .await;
    let etag = header(&r, "etag").to_owned();
    assert!(etag.starts_with('"'));
    // A stale tag is 412; the current one changes it.
    let r = s
        .send(
            Method::PATCH,
            "/v1/tenants/acme/devices/fw-1",
            &w.admin,
            &[("if-match", "\"stale\"")],
            Some(json!({"timeout_ms": 500})),
        )
        .await;
    assert_problem(r, 412, "precondition-failed").await;
    let r = s
        .send(
            Method::PATCH,
            "/v1/tenants/acme/devices/fw-1",
            &w.admin,
            &[("if-match", &etag)],
            Some(json!({"timeout_ms": 500, "headers": {}})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let changed: Value = r.json().await.unwrap();
    assert_eq!(
        (changed["timeout_ms"].clone(), changed["headers"].clone()),
        (json!(500), json!([]))
    );
    // Bad input: a pointer each.
    for (body, pointer) in [
        (json!({"timeout_ms": 0}), "/timeout_ms"),
        (json!({"timeout_ms": 60001}), "/timeout_ms"),
        (json!({"endpoint": "ftp://127.0.0.1/"}), "/endpoint"),
        (json!({"endpoint": "http://user:pass@127.0.0.1/"}), "/endpoint"),
        (json!({"endpoint": "not a url"}), "/endpoint"),
        (json!({"headers": {"Connection": "close"}}), "/headers/Connection"),
    ] {
        let r = s
            .call(
                Method::PATCH,
                "/v1/tenants/acme/devices/fw-1",
                &w.admin,
                Some(body.clone()),
            )
            .await;
        let problem = assert_problem(r, 400, "invalid-field").await;
        assert_eq!(problem["errors"][0]["pointer"], pointer, "{body}");
    }
    let r = s
        .call(Method::DELETE, "/v1/tenants/acme/devices/fw-1", &w.admin, None)
        .await;
    assert_eq!(r.status(), 204);
    let r = s
        .call(Method::GET, "/v1/tenants/acme/devices/fw-1", &w.viewer, None)
        .await;
    assert_problem(r, 410, "gone").await;
    let r = s
        .call(Method::GET, "/v1/tenants/acme/devices/fw-1/api/status", &w.viewer, None)
        .await;
    assert_problem(r, 410, "gone").await;
    let r = s
        .call(
            Method::GET,
            "/v1/tenants/acme/devices/never/api/status",
            &w.viewer,
            None,
        )
        .await;
    assert_problem(r, 404, "not-found").await;
}

#[tokio::test]
async fn a_device_relays_status_headers_and_a_large_body_streamed_both_ways() {
    let (s, w) = start().await;
    let big = 8 << 20;
    let (addr, seen) = answering_device(big).await;
    registered(&s, &w, "fw", addr, 5000).await;
    let upload = vec![b'u'; 3 << 20];
    let r = s
        .req(
            Method::POST,
            "/v1/tenants/acme/devices/fw/api/config/apply?dry=1&x=%20y",
            Some(&w.editor),
        )
        .header("content-type", "application/xml")
        .header("x-caller", "kept")
        .header("connection", "x-hop")
        .header("x-hop", "dropped")
        .body(upload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "x-device"), "fw-9");
    assert_eq!(header(&r, "keep-alive"), "", "hop-by-hop stays behind");
    assert!(header(&r, "via").contains("canon-"), "{:?}", r.headers());
    assert_eq!(header(&r, "content-type"), "application/octet-stream");
    let mut received = 0;
    let mut stream = r.bytes_stream();
    while let Some(chunk) = stream.next().await {
        received += chunk.unwrap().len();
    }
    assert_eq!(received, big);
    let first = seen.lock().unwrap().clone();
    let one = &first[0];
    assert_eq!(one.method, "POST");
    assert_eq!(one.uri, "/mgmt/config/apply?dry=1&x=%20y");
    assert_eq!(one.body_len, upload.len());
    // The caller's credentials never reach the device; the device's own do.
    assert!(one.headers.get("authorization").is_none(), "{:?}", one.headers);
    assert_eq!(one.headers["x-device-token"], SECRET);
    assert_eq!(one.headers["x-caller"], "kept");
    assert_eq!(one.headers["content-type"], "application/xml");
    assert!(one.headers.get("x-hop").is_none());
    assert!(one.headers["via"].to_str().unwrap().contains("canon-"));
    // A device whose own credentials are an Authorization header gets
    // those, never the caller's bearer token.
    let r = s
        .call(
            Method::POST,
            "/v1/tenants/acme/devices",
            &w.admin,
            Some(
                json!({"name": "fw-basic", "endpoint": format!("http://{addr}/"), "timeout_ms": 5000,
                        "headers": {"Authorization": "Basic ZGV2aWNlOnB3"}}),
            ),
        )
        .await;
    assert_eq!(r.status(), 201);
    let r = s
        .call(Method::GET, "/v1/tenants/acme/devices/fw-basic/api/x", &w.viewer, None)
        .await;
    assert_eq!(r.status(), 201);
    let last = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last.headers.get_all("authorization").iter().count(), 1);
    assert_eq!(last.headers["authorization"], "Basic ZGV2aWNlOnB3");
    // Viewers read through the gateway, and may not write.
    let r = s
        .call(Method::GET, "/v1/tenants/acme/devices/fw/api/status", &w.viewer, None)
        .await;
    assert_eq!(r.status(), 201);
    let r = s
        .call(
            Method::DELETE,
            "/v1/tenants/acme/devices/fw/api/status",
            &w.viewer,
            None,
        )
        .await;
    assert_problem(r, 403, "forbidden").await;
}

#[tokio::test]
async fn a_device_that_sends_no_headers_in_time_is_504_within_its_timeout() {
    let (s, w) = start().await;
    let addr = raw_device(|socket| async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(socket);
    })
    .await;
    registered(&s, &w, "slow", addr, 300).await;
    let started = Instant::now();
    let r = s
        .call(Method::GET, "/v1/tenants/acme/devices/slow/api/x", &w.viewer, None)
        .await;
    let elapsed = started.elapsed();
    let problem = assert_problem(r, 504, "gateway-timeout").await;
    assert_eq!(problem["timeout_ms"], 300);
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_millis(1500),
        "{elapsed:?}"
    );
    // A device that stops reading a large body (and never answers) is cut
    // off too: its time restarts with every chunk it takes, not forever.
    let started = Instant::now();
    let r = s
        .req(
            Method::PUT,
            "/v1/tenants/acme/devices/slow/api/firmware",
            Some(&w.editor),
        )
        .body(vec![b'f'; 64 << 20])
        .send()
        .await
        .unwrap();
    assert_problem(r, 504, "gateway-timeout").await;
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // A slow upload is the caller's time, not the device's: the device's
    // 300 ms start once it has the whole body.
    let (addr, seen) = answering_device(0).await;
    registered(&s, &w, "patient", addr, 300).await;
    let chunks = futures_util::stream::iter(0..5u8).then(|i| async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'0' + i; 1000]))
    });
    let r = s
        .req(
            Method::POST,
            "/v1/tenants/acme/devices/patient/api/upload",
            Some(&w.editor),
        )
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(seen.lock().unwrap()[0].body_len, 5000);
}

#[tokio::test]
async fn a_closed_port_a_reset_and_garbage_are_502() {
    let (s, w) = start().await;
    registered(&s, &w, "closed", closed_port().await, 2000).await;
    let hangs_up = raw_device(|socket| async move { drop(socket) }).await;
    registered(&s, &w, "hangs-up", hangs_up, 2000).await;
    let garbage = raw_device(|mut socket| async move {
        let _ = socket
            .write_all(b"SMTP READY \x00\x01\x02 not http at all\r\n\r\n")
            .await;
        let _ = socket.flush().await;
    })
    .await;
    registered(&s, &w, "garbage", garbage, 2000).await;
    for name in ["closed", "hangs-up", "garbage"] {
        let r = s
            .call(
                Method::GET,
                &format!("/v1/tenants/acme/devices/{name}/api/x"),
                &w.viewer,
                None,
            )
            .await;
        assert_problem(r, 502, "bad-gateway").await;
    }
}

#[tokio::test]
async fn a_body_that_stops_mid_way_cuts_the_connection() {
    let (s, w) = start().await;
    let addr = raw_device(|mut socket| async move {
        let _ = socket
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nContent-Type: text/plain\r\n\r\nfirst part")
            .await;
        let _ = socket.flush().await;
        tokio::time::sleep(Duration::from_secs(10)).await;
    })
    .await;
    registered(&s, &w, "stalls", addr, 400).await;
    let r = s
        .call(Method::GET, "/v1/tenants/acme/devices/stalls/api/x", &w.viewer, None)
        .await;
    // The status was sent before the body stalled: it stays 200, and the
    // body ends in an error rather than looking complete.
    assert_eq!(r.status(), 200);
    let started = Instant::now();
    assert!(r.bytes().await.is_err(), "a truncated body must not look complete");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn failures_in_a_row_open_the_circuit_until_a_probe_succeeds() {
    let port = closed_port().await;
    let (s, w) = start_with(DeviceConfig {
        breaker_threshold: 2,
        breaker_open: Duration::from_millis(1500),
        ..devices_config()
    })
    .await;
    registered(&s, &w, "flaky", port, 2000).await;
    let api = "/v1/tenants/acme/devices/flaky/api/x";
    for _ in 0..2 {
        assert_problem(s.call(Method::GET, api, &w.viewer, None).await, 502, "bad-gateway").await;
    }
    let r = s.call(Method::GET, api, &w.viewer, None).await;
    let retry: u64 = header(&r, "retry-after").parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert_problem(r, 503, "device-circuit-open").await;
    let device = s
        .ok_json(Method::GET, "/v1/tenants/acme/devices/flaky", &w.viewer, None)
        .await;
    assert_eq!(device["health"]["circuit"], "open");
    assert_eq!(device["health"]["consecutive_failures"], 2);
    // The device comes back on its port; after the open period one probe
    // passes and closes the circuit.
    let listener = TcpListener::bind(port).await.unwrap();
    let app = axum::Router::new().fallback(|| async { "back" });
    tokio::spawn(async move { axum::serve(listener, app).await });
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let device = s
        .ok_json(Method::GET, "/v1/tenants/acme/devices/flaky", &w.viewer, None)
        .await;
    assert_eq!(device["health"]["circuit"], "half_open");
    let r = s.call(Method::GET, api, &w.viewer, None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "back");
    let device = s
        .ok_json(Method::GET, "/v1/tenants/acme/devices/flaky", &w.viewer, None)
        .await;
    assert_eq!(device["health"]["circuit"], "closed");
    assert_eq!(device["health"]["consecutive_failures"], 0);
}

#[tokio::test]
async fn beyond_the_per_device_limit_is_503_with_retry_after() {
    let (s, w) = start_with(DeviceConfig {
        max_concurrency: 1,
        ..devices_config()
    })
    .await;
    let addr = raw_device(|mut socket| async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let _ = socket
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await;
    })
    .await;
    registered(&s, &w, "single", addr, 5000).await;
    let api = "/v1/tenants/acme/devices/single/api/x";
    let first = s.call(Method::GET, api, &w.viewer, None);
    let second = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.call(Method::GET, api, &w.viewer, None).await
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(first.status(), 200);
    assert_eq!(header(&second, "retry-after"), "1");
    assert_problem(second, 503, "device-busy").await;
    // The slot is free again once the first answer is done.
    assert_eq!(s.call(Method::GET, api, &w.viewer, None).await.status(), 200);
}

#[tokio::test]
async fn metadata_addresses_and_names_resolving_to_them_are_refused() {
    let dns = Arc::new(FakeDns(Mutex::new(vec![
        ("metadata.test".into(), "169.254.169.254".parse().unwrap()),
        ("rebind.test".into(), "127.0.0.1".parse().unwrap()),
    ])));
    let (s, w) = start_with(DeviceConfig {
        lookup: dns.clone(),
        ..devices_config()
    })
    .await;
    for endpoint in [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://[fe80::1]/",
        "http://0.0.0.0:8080/",
        "http://metadata.test/",
        "http://8.8.8.8/",
        "http://unknown.test/",
        &format!("http://{}/", s.addr),
    ] {
        let r = register(&s, &w, "bad", endpoint, 1000).await;
        let problem = assert_problem(r, 400, "invalid-field").await;
        assert_eq!(problem["errors"][0]["pointer"], "/endpoint", "{endpoint}");
    }
    // A name that passed at registration and resolves to metadata later:
    // refused at connect time (502), before any byte is sent.
    let (addr, seen) = answering_device(0).await;
    let endpoint = format!("http://rebind.test:{}/", addr.port());
    assert_eq!(register(&s, &w, "rebind", &endpoint, 1000).await.status(), 201);
    let api = "/v1/tenants/acme/devices/rebind/api/x";
    assert_eq!(s.call(Method::GET, api, &w.viewer, None).await.status(), 201);
    dns.0.lock().unwrap()[1].1 = "169.254.169.254".parse().unwrap();
    let problem = assert_problem(s.call(Method::GET, api, &w.viewer, None).await, 502, "bad-gateway").await;
    assert!(problem["detail"].as_str().unwrap().contains("169.254"), "{problem}");
    assert_eq!(seen.lock().unwrap().len(), 1, "the refused request never left");
}

#[tokio::test]
async fn paths_that_would_escape_the_endpoint_are_400() {
    let (s, w) = start().await;
    let (addr, seen) = answering_device(0).await;
    registered(&s, &w, "fw", addr, 1000).await;
    for (path, slug) in [
        ("/v1/tenants/acme/devices/fw/api/a%2F..%2Fadmin", "invalid-path"),
        ("/v1/tenants/acme/devices/fw/api/a%5cb", "invalid-path"),
    ] {
        let r = s.call(Method::GET, path, &w.viewer, None).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
        assert_problem(r, 400, slug).await;
    }
    // Dot segments, plain or encoded (an HTTP client would resolve them
    // away before sending, so these go over a raw socket).
    for path in [
        "/v1/tenants/acme/devices/fw/api/a/../../admin",
        "/v1/tenants/acme/devices/fw/api/%2e%2e/admin",
    ] {
        let mut socket = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: canon\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            w.viewer
        );
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        socket.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn without_a_secret_key_devices_take_no_headers() {
    let (s, w) = start_with(DeviceConfig::default()).await;
    let (addr, _) = answering_device(0).await;
    let r = register(&s, &w, "fw", &format!("http://{addr}/"), 1000).await;
    let problem = assert_problem(r, 400, "invalid-field").await;
    assert_eq!(problem["errors"][0]["pointer"], "/headers");
    let r = s
        .call(
            Method::POST,
            "/v1/tenants/acme/devices",
            &w.admin,
            Some(json!({"name": "fw", "endpoint": format!("http://{addr}/"), "timeout_ms": 1000})),
        )
        .await;
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn device_secrets_are_encrypted_in_the_store_file() {
    if common::on_postgres() {
        // It reads the SQLite file; the sealing itself is the server's,
        // whatever store keeps the sealed text.
        eprintln!("a SQLite file test: skipped on PostgreSQL");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canon.db");
    let (addr, seen) = answering_device(0).await;
    {
        let s = Server::start_with_on(config_with(devices_config()), &path).await;
        let w = world(&s, "acme").await;
        registered(&s, &w, "fw", addr, 1000).await;
        let r = s
            .call(Method::GET, "/v1/tenants/acme/devices/fw/api/x", &w.viewer, None)
            .await;
        assert_eq!(r.status(), 201);
        let device = s
            .call(Method::GET, "/v1/tenants/acme/devices/fw", &w.viewer, None)
            .await;
        assert!(!device.text().await.unwrap().contains(SECRET));
        // Checkpointed if it can be; a background reader of the running
        // server (the maintenance or quota poll) may hold the WAL at this
        // moment, which matters not: the database and its WAL are both read
        // below.
        let _ = s.store.close().await;
    }
    assert_eq!(seen.lock().unwrap()[0].headers["x-device-token"], SECRET);
    // Neither the database nor its write-ahead log holds it in clear.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()));
    }
    let conn = rusqlite::Connection::open(&path).unwrap();
    let stored: String = conn.query_row("SELECT headers FROM devices", [], |r| r.get(0)).unwrap();
    assert!(stored.contains("\"sealed\":\"v1."), "{stored}");
}

#[tokio::test]
async fn a_long_command_is_a_job_whose_result_is_the_devices_answer() {
    let (s, w) = start().await;
    let addr = raw_device(|mut socket| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let body = br#"{"rebooted":true}"#;
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Device: fw-9\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let _ = socket.write_all(head.as_bytes()).await;
        let _ = socket.write_all(body).await;
    })
    .await;
    registered(&s, &w, "fw", addr, 100).await;
    let r = s
        .call(
            Method::POST,
            "/v1/tenants/acme/devices/fw/commands",
            &w.editor,
            Some(json!({"method": "POST", "path": "system/reboot?force=1", "body": {"delay": 0}})),
        )
        .await;
    assert_eq!(r.status(), 202);
    let monitor = header(&r, "location").to_owned();
    let job: Value = r.json().await.unwrap();
    assert_eq!(job["kind"], "device_command");
    // The command outlives the device's own timeout_ms (100 ms): a long
    // command has up to CANON_DEVICE_MAX_TIMEOUT_MS.
    let r = s
        .send(Method::GET, &monitor, &w.viewer, &[("prefer", "wait=5")], None)
        .await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let result = header(&r, "location").to_owned();
    let answer = s.ok_json(Method::GET, &result, &w.viewer, None).await;
    assert_eq!(answer["status"], 200);
    assert_eq!(answer["body"], json!({"rebooted": true}));
    assert_eq!(answer["headers"]["x-device"], "fw-9");
    // Bad commands are 400 with a pointer; a device that is not there 404.
    for (body, pointer) in [
        (json!({"method": "TRACE", "path": "x"}), "/method"),
        (json!({"method": "GET", "path": "/abs"}), "/path"),
        (json!({"method": "GET", "path": "a/../b"}), "/path"),
    ] {
        let r = s
            .call(
                Method::POST,
                "/v1/tenants/acme/devices/fw/commands",
                &w.editor,
                Some(body),
            )
            .await;
        let problem = assert_problem(r, 400, "invalid-field").await;
        assert_eq!(problem["errors"][0]["pointer"], pointer);
    }
    let r = s
        .call(
            Method::POST,
            "/v1/tenants/acme/devices/nope/commands",
            &w.editor,
            Some(json!({"method": "GET", "path": "x"})),
        )
        .await;
    assert_problem(r, 404, "not-found").await;
}

#[tokio::test]
async fn a_command_to_a_failing_device_fails_with_its_problem() {
    let (s, w) = start().await;
    registered(&s, &w, "gone", closed_port().await, 100).await;
    let r = s
        .call(
            Method::POST,
            "/v1/tenants/acme/devices/gone/commands",
            &w.editor,
            Some(json!({"method": "GET", "path": "status"})),
        )
        .await;
    assert_eq!(r.status(), 202);
    let monitor = header(&r, "location").to_owned();
    let r = s
        .send(Method::GET, &monitor, &w.viewer, &[("prefer", "wait=5")], None)
        .await;
    assert_eq!(r.status(), 200);
    let job: Value = r.json().await.unwrap();
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["problem"]["status"], 502, "{job}");
}

#[tokio::test]
async fn relayed_requests_count_against_the_callers_limits() {
    let s = Server::start_with(
        canon_server::Config {
            daily_quota: 3,
            ..config_with(devices_config())
        },
        |r| r,
    )
    .await;
    let w = world(&s, "acme").await;
    let (addr, seen) = answering_device(0).await;
    // Registered by the operator, whose requests no tenant quota counts.
    let r = s
        .call(
            Method::POST,
            "/v1/tenants/acme/devices",
            common::OPERATOR,
            Some(json!({"name": "fw", "endpoint": format!("http://{addr}/"), "timeout_ms": 1000})),
        )
        .await;
    assert_eq!(r.status(), 201);
    let api = "/v1/tenants/acme/devices/fw/api/x";
    for _ in 0..3 {
        assert_eq!(s.call(Method::GET, api, &w.viewer, None).await.status(), 201);
    }
    let r = s.call(Method::GET, api, &w.viewer, None).await;
    assert!(header(&r, "ratelimit-policy").contains("daily"));
    assert_problem(r, 429, "quota-exhausted").await;
    assert_eq!(
        seen.lock().unwrap().len(),
        3,
        "the refused request never reached the device"
    );
}
