//! The caches in front of the store (who a key belongs to, tenants and
//! collections by name) never serve a stale decision: each change takes
//! effect on the very next request, and on another node on the same
//! database within its bound (docs/decisions.md, "Caches and their
//! invalidation").

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const RECORDS: &str = "/v1/tenants/acme/collections/devices/records";

async fn create(s: &Server, token: &str, path: &str, body: Value) -> reqwest::Response {
    s.call(Method::POST, path, token, Some(body)).await
}

/// A key of a new editor of acme: (user id, key id, token).
async fn editor_key(s: &Server, email: &str) -> (String, String, String) {
    let u = s
        .ok_json(
            Method::POST,
            "/v1/tenants/acme/users",
            OPERATOR,
            Some(json!({"email": email, "role": "editor"})),
        )
        .await;
    let user = u["id"].as_str().unwrap().to_owned();
    let k = s
        .ok_json(
            Method::POST,
            &format!("/v1/tenants/acme/users/{user}/api-keys"),
            OPERATOR,
            Some(json!({"name": "k"})),
        )
        .await;
    (
        user,
        k["id"].as_str().unwrap().to_owned(),
        k["token"].as_str().unwrap().to_owned(),
    )
}

/// GETs `path` twice as `token`, so every cache on its way is warm.
async fn warm(s: &Server, path: &str, token: &str) {
    for _ in 0..2 {
        assert_eq!(s.call(Method::GET, path, token, None).await.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn a_revoked_key_is_refused_on_the_very_next_request() {
    let s = Server::start().await;
    world(&s, "acme").await;
    let (user, key, token) = editor_key(&s, "e@acme.example").await;
    warm(&s, RECORDS, &token).await;
    let r = s
        .call(
            Method::DELETE,
            &format!("/v1/tenants/acme/users/{user}/api-keys/{key}"),
            OPERATOR,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = s.call(Method::GET, RECORDS, &token, None).await;
    assert_problem(r, 401, "invalid-token").await;
}

#[tokio::test]
async fn a_role_change_applies_to_the_very_next_request() {
    let s = Server::start().await;
    world(&s, "acme").await;
    let (user, _, token) = editor_key(&s, "e@acme.example").await;
    assert_eq!(
        create(&s, &token, RECORDS, json!({"port": 1})).await.status(),
        StatusCode::CREATED
    );
    s.ok_json(
        Method::PATCH,
        &format!("/v1/tenants/acme/users/{user}"),
        OPERATOR,
        Some(json!({"role": "viewer"})),
    )
    .await;
    let r = create(&s, &token, RECORDS, json!({"port": 2})).await;
    assert_problem(r, 403, "forbidden").await;
    warm(&s, RECORDS, &token).await;
}

#[tokio::test]
async fn a_schema_change_and_a_rename_apply_to_the_very_next_request() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    warm(&s, RECORDS, &w.editor).await;
    assert_eq!(
        create(&s, &w.editor, RECORDS, json!({"port": 1})).await.status(),
        StatusCode::CREATED
    );
    let schema = json!({"type": "object", "properties": {"port": {"type": "string"}}, "required": ["port"]});
    s.ok_json(
        Method::PATCH,
        "/v1/tenants/acme/collections/devices",
        OPERATOR,
        Some(json!({"schema": schema})),
    )
    .await;
    let r = create(&s, &w.editor, RECORDS, json!({"port": 2})).await;
    assert_problem(r, 400, "schema-violation").await;
    s.ok_json(
        Method::PATCH,
        "/v1/tenants/acme/collections/devices",
        OPERATOR,
        Some(json!({"name": "things"})),
    )
    .await;
    let r = s.call(Method::GET, RECORDS, &w.editor, None).await;
    assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY, "the old name redirects");
    assert_eq!(header(&r, "location"), "/v1/tenants/acme/collections/things/records");
}

#[tokio::test]
async fn a_deleted_tenant_is_gone_on_the_very_next_request() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    warm(&s, "/v1/tenants/acme", OPERATOR).await;
    warm(&s, RECORDS, &w.viewer).await;
    let r = s.call(Method::DELETE, "/v1/tenants/acme", OPERATOR, None).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = s.call(Method::GET, "/v1/tenants/acme", OPERATOR, None).await;
    assert_eq!(r.status(), StatusCode::GONE);
    let r = s.call(Method::GET, RECORDS, &w.viewer, None).await;
    assert!(
        matches!(r.status().as_u16(), 401 | 410),
        "the tenant's keys serve nothing: {}",
        r.status()
    );
}

#[tokio::test]
async fn another_node_refuses_a_revoked_key_within_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canon.db");
    let a = Server::start_on(&path).await;
    let b = Server::start_on(&path).await;
    world(&a, "acme").await;
    let (user, key, token) = editor_key(&a, "e@acme.example").await;
    warm(&b, RECORDS, &token).await;
    a.call(
        Method::DELETE,
        &format!("/v1/tenants/acme/users/{user}/api-keys/{key}"),
        OPERATOR,
        None,
    )
    .await;
    let revoked = Instant::now();
    loop {
        let r = b.call(Method::GET, RECORDS, &token, None).await;
        if r.status() == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            revoked.elapsed() < Duration::from_millis(1000),
            "b still serves a key revoked on a"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("refused by the other node after {:?}", revoked.elapsed());
}
