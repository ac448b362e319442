//! Every status of the foundation, produced over HTTP, with the headers it
//! implies and its problem body.

mod common;

use std::time::Duration;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RECORDS: &str = "/v1/tenants/acme/collections/devices/records";

#[tokio::test]
async fn success_statuses_201_200_204_and_headers() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;

    let r = s
        .call(Method::POST, RECORDS, &w.editor, Some(json!({"port": 22})))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = header(&r, "location").to_owned();
    assert!(location.starts_with(&format!("{RECORDS}/")));
    let etag = header(&r, "etag").to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "strong etag: {etag}");
    assert!(httpdate::parse_http_date(header(&r, "last-modified")).is_ok());
    assert_eq!(header(&r, "cache-control"), "private, no-cache");
    let created: Value = r.json().await.unwrap();
    let keys: Vec<&str> = created.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["id", "data", "version", "created_at", "updated_at"]);
    assert_eq!(created["version"], 1);

    let r = s.call(Method::GET, &location, &w.viewer, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "etag"), etag);
    let got: Value = r.json().await.unwrap();
    assert_eq!(got, created);

    let r = s
        .call(Method::PUT, &location, &w.editor, Some(json!({"port": 23})))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-location"), location);
    assert_ne!(header(&r, "etag"), etag, "every write changes the etag");
    let replaced: Value = r.json().await.unwrap();
    assert_eq!(replaced["version"], 2);
    assert_eq!(replaced["data"], json!({"port": 23}));

    let put_new = format!("{RECORDS}/client-chosen-1");
    let r = s.call(Method::PUT, &put_new, &w.editor, Some(json!({"port": 1}))).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "location"), put_new);

    let r = s.call(Method::DELETE, &location, &w.editor, None).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(!header(&r, "x-request-id").is_empty());
    assert!(r.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn head_is_get_without_body_and_options_lists_allow() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let rec = s
        .ok_json(Method::POST, RECORDS, &w.editor, Some(json!({"port": 22})))
        .await;
    let path = format!("{RECORDS}/{}", rec["id"].as_str().unwrap());
    let get = s.call(Method::GET, &path, &w.viewer, None).await;
    let head = s.call(Method::HEAD, &path, &w.viewer, None).await;
    assert_eq!(head.status(), StatusCode::OK);
    for h in [
        "etag",
        "last-modified",
        "content-type",
        "content-length",
        "cache-control",
    ] {
        assert_eq!(header(&head, h), header(&get, h), "{h}");
    }
    assert!(head.bytes().await.unwrap().is_empty());

    let r = s.call(Method::OPTIONS, &path, &w.viewer, None).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "allow"), "GET, HEAD, PUT, PATCH, DELETE, OPTIONS");
}

#[tokio::test]
async fn status_401_missing_and_invalid_tokens() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let r = s.req(Method::GET, RECORDS, None).send().await.unwrap();
    assert_eq!(header(&r, "www-authenticate"), "Bearer realm=\"canon\"");
    assert_problem(r, 401, "credentials-required").await;

    let r = s.req(Method::GET, RECORDS, Some("canon_nope")).send().await.unwrap();
    assert_eq!(
        header(&r, "www-authenticate"),
        "Bearer realm=\"canon\", error=\"invalid_token\""
    );
    assert_problem(r, 401, "invalid-token").await;

    // Unknown /v1 paths do not reveal they are unknown to anonymous callers.
    let r = s.req(Method::GET, "/v1/no/such/thing", None).send().await.unwrap();
    assert_problem(r, 401, "credentials-required").await;

    // A revoked key stops working at once.
    let keys = format!("/v1/tenants/acme/users/{}/api-keys", w.editor_id);
    let list = s.ok_json(Method::GET, &keys, &w.admin, None).await;
    let key_id = list["items"][0]["id"].as_str().unwrap().to_owned();
    let r = s
        .call(Method::DELETE, &format!("{keys}/{key_id}"), &w.admin, None)
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = s.call(Method::GET, RECORDS, &w.editor, None).await;
    assert_problem(r, 401, "invalid-token").await;
    let r = s.call(Method::GET, &format!("{keys}/{key_id}"), &w.admin, None).await;
    assert_problem(r, 410, "gone").await;
}

#[tokio::test]
async fn status_403_404_405_and_410() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let r = s.call(Method::POST, RECORDS, &w.viewer, Some(json!({"port": 1}))).await;
    let body = assert_problem(r, 403, "forbidden").await;
    assert_eq!(body["required_role"], "editor");

    let r = s
        .call(
            Method::GET,
            "/v1/tenants/acme/collections/nope/records",
            &w.viewer,
            None,
        )
        .await;
    assert_problem(r, 404, "not-found").await;
    let r = s
        .call(Method::GET, "/v1/tenants/acme/nothing-here", &w.viewer, None)
        .await;
    assert_problem(r, 404, "not-found").await;

    let r = s.call(Method::PATCH, RECORDS, &w.editor, None).await;
    assert_eq!(header(&r, "allow"), "GET, HEAD, POST, OPTIONS");
    assert_problem(r, 405, "method-not-allowed").await;

    let rec = s
        .ok_json(Method::POST, RECORDS, &w.editor, Some(json!({"port": 22})))
        .await;
    let path = format!("{RECORDS}/{}", rec["id"].as_str().unwrap());
    s.call(Method::DELETE, &path, &w.editor, None).await;
    assert_problem(s.call(Method::GET, &path, &w.viewer, None).await, 410, "gone").await;
    assert_problem(s.call(Method::DELETE, &path, &w.editor, None).await, 410, "gone").await;

    // Deleted users and collections are gone too.
    let users = format!("/v1/tenants/acme/users/{}", w.editor_id);
    assert_eq!(
        s.call(Method::DELETE, &users, &w.admin, None).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_problem(s.call(Method::GET, &users, &w.admin, None).await, 410, "gone").await;
    let c = "/v1/tenants/acme/collections/empty";
    s.ok_json(
        Method::POST,
        "/v1/tenants/acme/collections",
        &w.admin,
        Some(json!({"name": "empty"})),
    )
    .await;
    assert_eq!(
        s.call(Method::DELETE, c, &w.admin, None).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_problem(s.call(Method::GET, c, &w.viewer, None).await, 410, "gone").await;
    assert_problem(
        s.call(Method::GET, &format!("{c}/records"), &w.viewer, None).await,
        410,
        "gone",
    )
    .await;
}

#[tokio::test]
async fn status_410_becomes_404_after_retention() {
    let mut config = config();
    config.tombstone_retention = Duration::ZERO;
    let s = Server::start_with(config, |r| r).await;
    let w = world(&s, "acme").await;
    let rec = s
        .ok_json(Method::POST, RECORDS, &w.editor, Some(json!({"port": 22})))
        .await;
    let path = format!("{RECORDS}/{}", rec["id"].as_str().unwrap());
    s.call(Method::DELETE, &path, &w.editor, None).await;
    assert_problem(s.call(Method::GET, &path, &w.viewer, None).await, 404, "not-found").await;
}

#[tokio::test]
async fn status_406_names_what_can_be_served() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let r = s
        .req(Method::GET, RECORDS, Some(&w.viewer))
        .header("accept", "application/xml")
        .send()
        .await
        .unwrap();
    let body = assert_problem(r, 406, "not-acceptable").await;
    assert_eq!(
        body["acceptable"],
        json!(["application/json", "text/csv", "application/x-ndjson"])
    );
}

#[tokio::test]
async fn status_409_unique_fields_names_and_non_empty_collections() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    s.ok_json(
        Method::POST,
        RECORDS,
        &w.editor,
        Some(json!({"port": 1, "serial": "S1"})),
    )
    .await;
    let body = assert_problem(
        s.call(
            Method::POST,
            RECORDS,
            &w.editor,
            Some(json!({"port": 2, "serial": "S1"})),
        )
        .await,
        409,
        "unique-conflict",
    )
    .await;
    assert_eq!(body["errors"][0]["pointer"], "/data/serial");

    let body = assert_problem(
        s.call(Method::POST, "/v1/tenants", OPERATOR, Some(json!({"name": "acme"})))
            .await,
        409,
        "unique-conflict",
    )
    .await;
    assert_eq!(body["errors"][0]["pointer"], "/name");
    let body = assert_problem(
        s.call(
            Method::POST,
            "/v1/tenants/acme/users",
            &w.admin,
            Some(json!({"email": "EDITOR@acme.example", "role": "viewer"})),
        )
        .await,
        409,
        "unique-conflict",
    )
    .await;
    assert_eq!(body["errors"][0]["pointer"], "/email");

    let r = s
        .call(Method::DELETE, "/v1/tenants/acme/collections/devices", &w.admin, None)
        .await;
    assert_problem(r, 409, "state-conflict").await;
}

#[tokio::test]
async fn status_413_414_415_431() {
    let mut config = config();
    config.max_body_bytes = 1000;
    let s = Server::start_with(config, |r| r).await;
    let w = world(&s, "acme").await;

    let big = json!({"port": 1, "serial": "x".repeat(2000)});
    let body = assert_problem(
        s.call(Method::POST, RECORDS, &w.editor, Some(big)).await,
        413,
        "content-too-large",
    )
    .await;
    assert_eq!(body["max_bytes"], 1000);

    let long = format!("{RECORDS}?limit={}", "1".repeat(9000));
    assert_problem(s.call(Method::GET, &long, &w.viewer, None).await, 414, "uri-too-long").await;

    let r = s
        .req(Method::POST, RECORDS, Some(&w.editor))
        .header("content-type", "text/plain")
        .body("port=1")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "accept-post"), "application/json");
    assert_problem(r, 415, "unsupported-media-type").await;
    let user = format!("/v1/tenants/acme/users/{}", w.editor_id);
    let r = s
        .req(Method::PATCH, &user, Some(&w.admin))
        .header("content-type", "application/xml")
        .body("<a/>")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&r, "accept-patch"),
        "application/merge-patch+json, application/json"
    );
    assert_problem(r, 415, "unsupported-media-type").await;

    let r = s
        .req(Method::GET, RECORDS, Some(&w.viewer))
        .header("x-padding", "p".repeat(20_000))
        .send()
        .await
        .unwrap();
    assert_problem(r, 431, "headers-too-large").await;
}

#[tokio::test]
async fn status_501_unknown_methods() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let r = s
        .call(Method::from_bytes(b"FOO").unwrap(), RECORDS, &w.viewer, None)
        .await;
    assert_problem(r, 501, "not-implemented").await;
    let r = s
        .call(
            Method::from_bytes(b"PROPFIND").unwrap(),
            "/v1/anything",
            &w.viewer,
            None,
        )
        .await;
    assert_problem(r, 501, "not-implemented").await;
    // No method of the contract is left unbuilt: the devices, the last of
    // them (501 and out of `Allow` until then), answer like any resource.
    // The planned-method rule itself is proved on a table of its own
    // (canon-http's flow and operation tests).
    let r = s
        .call(Method::POST, "/v1/tenants/acme/devices", &w.admin, Some(json!({})))
        .await;
    assert_problem(r, 400, "malformed-body").await;
    let r = s
        .call(Method::OPTIONS, "/v1/tenants/acme/devices", &w.editor, None)
        .await;
    assert_eq!(header(&r, "allow"), "GET, HEAD, POST, OPTIONS");
}

#[tokio::test]
async fn status_500_on_panic_and_the_server_keeps_serving() {
    // A flow that panics on one path, inside the real envelope.
    let s = Server::start_with(config(), |flow| {
        tower::service_fn(move |req: axum::extract::Request| {
            let mut flow = flow.clone();
            async move {
                if req.uri().path() == "/boom" {
                    panic!("boom: /secret/path SELECT * FROM x");
                }
                tower::Service::call(&mut flow, req).await
            }
        })
    })
    .await;
    let r = s
        .req(Method::GET, "/boom", None)
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "x-request-id"), "trace-me-123");
    let text = {
        let body = assert_problem(r, 500, "internal").await;
        body.to_string()
    };
    assert!(
        !text.contains("secret") && !text.contains("SELECT"),
        "no internals leak: {text}"
    );
    let r = s.req(Method::GET, "/healthz", None).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn request_ids_are_echoed_when_sane_and_replaced_otherwise() {
    let s = Server::start().await;
    let r = s
        .req(Method::GET, "/healthz", None)
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "x-request-id"), "abc-123");
    let r = s
        .req(Method::GET, "/healthz", None)
        .header("x-request-id", "bad id <script>")
        .send()
        .await
        .unwrap();
    let id = header(&r, "x-request-id");
    assert!(!id.is_empty() && id != "bad id <script>");
    // Up to 128 characters of the safe set are kept as they are.
    let longest = format!("{}:._-", "a".repeat(124));
    let r = s
        .req(Method::GET, "/healthz", None)
        .header("x-request-id", longest.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "x-request-id"), longest);
    // Anything else is replaced by an id of Canon's own (a UUID): too long,
    // empty, other bytes (quotes, `=`, spaces, tabs, non-ASCII) that could
    // forge a field of a log line.
    let refused: [&[u8]; 7] = [
        &[b'a'; 129],
        b"",
        b"a\tb",
        b"x\" status=200",
        b"id=forged",
        b"caf\xc3\xa9",
        b"\xff\xfe",
    ];
    for value in refused {
        let r = s
            .req(Method::GET, "/healthz", None)
            .header("x-request-id", reqwest::header::HeaderValue::from_bytes(value).unwrap())
            .send()
            .await
            .unwrap();
        let id = header(&r, "x-request-id");
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{value:?} → {id}");
    }
}

/// Sends a request head announcing a body, then stalls.
async fn stalled_upload(s: &Server, token: &str) -> tokio::net::TcpStream {
    let mut sock = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST {RECORDS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"port\":"
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock
}

#[tokio::test]
async fn status_408_stalled_body_closes_the_connection() {
    let mut config = config();
    config.body_timeout = Duration::from_millis(300);
    let s = Server::start_with(config, |r| r).await;
    let w = world(&s, "acme").await;
    let mut sock = stalled_upload(&s, &w.editor).await;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut out))
        .await
        .expect("answered and closed")
        .unwrap();
    let text = String::from_utf8_lossy(&out).to_lowercase();
    assert!(text.starts_with("http/1.1 408"), "{text}");
    assert!(text.contains("connection: close"));
    assert!(text.contains("application/problem+json"));
    assert!(text.contains("/problems/request-timeout"));
    let list = s.ok_json(Method::GET, RECORDS, &w.viewer, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "nothing was written");
}

#[tokio::test]
async fn status_503_when_in_flight_limit_is_reached() {
    let mut config = config();
    config.max_in_flight = 1;
    config.body_timeout = Duration::from_secs(3);
    let s = Server::start_with(config, |r| r).await;
    let w = world(&s, "acme").await;
    let _held = stalled_upload(&s, &w.editor).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = s
        .req(Method::GET, "/v1/tenants/acme", Some(&w.viewer))
        .send()
        .await
        .unwrap();
    assert!(header(&r, "retry-after").parse::<u64>().is_ok());
    assert_problem(r, 503, "service-unavailable").await;
    // Probes are never shed: busy is not dead.
    for probe in ["/healthz", "/readyz"] {
        let r = s.req(Method::GET, probe, None).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{probe}");
    }
}

#[tokio::test]
async fn health_ready_and_docs() {
    let s = Server::start().await;
    let r = s.req(Method::GET, "/readyz", None).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = s.req(Method::GET, "/docs/status-codes", None).send().await.unwrap();
    assert_eq!(header(&r, "content-type"), "text/html; charset=utf-8");
    let html = r.text().await.unwrap();
    for code in ["200", "201", "409", "410", "415", "431", "501", "503"] {
        assert!(html.contains(&format!("id=\"s{code}\"")), "{code} documented");
    }
    let r = s
        .req(Method::GET, "/docs/status-codes", None)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    let doc: Value = r.json().await.unwrap();
    let slugs: Vec<&str> = doc["problem_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["slug"].as_str().unwrap())
        .collect();
    assert!(slugs.contains(&"unique-conflict") && slugs.contains(&"schema-violation"));
    // Every problem type URL Canon sends is a page Canon serves.
    for slug in slugs {
        let r = s
            .req(Method::GET, &format!("/problems/{slug}"), None)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{slug}");
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["type"], format!("/problems/{slug}"));
    }
    assert_problem(
        s.req(Method::GET, "/problems/no-such-problem", None)
            .send()
            .await
            .unwrap(),
        404,
        "not-found",
    )
    .await;
}
