//! Maintenance mode: 503 with the operator's message and `Retry-After` for
//! every /v1 request but the operator's admin calls; kept across restarts
//! and seen by every node on the database.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const MAINTENANCE: &str = "/v1/admin/maintenance";

async fn set(s: &Server, body: Value) -> Value {
    s.ok_json(Method::PUT, MAINTENANCE, OPERATOR, Some(body)).await
}

/// The pointers a problem's `errors` name, in order.
fn pointers(problem: &Value) -> Vec<&str> {
    problem["errors"]
        .as_array()
        .map(|e| e.iter().filter_map(|e| e["pointer"].as_str()).collect())
        .unwrap_or_default()
}

/// Asserts `r` is the maintenance 503: the operator's words, when to come back.
async fn assert_maintenance(r: reqwest::Response, retry_after: &str, message: &str) {
    assert_eq!(header(&r, "retry-after"), retry_after);
    let body = assert_problem(r, 503, "service-unavailable").await;
    assert_eq!(body["detail"], message);
    assert_eq!(
        body["retry_after"].to_string(),
        retry_after,
        "the body says when, as the header does"
    );
}

#[tokio::test]
async fn maintenance_refuses_the_api_with_the_operators_words_until_turned_off() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let records = "/v1/tenants/acme/collections/devices/records";

    // Off at first, versioned like any entity.
    let r = s.call(Method::GET, MAINTENANCE, OPERATOR, None).await;
    assert_eq!(r.status(), 200);
    let first_tag = header(&r, "etag").to_owned();
    assert!(first_tag.starts_with('"'), "{first_tag}");
    let m: Value = r.json().await.unwrap();
    assert_eq!(
        (m["enabled"].as_bool(), m["retry_after_seconds"].as_u64()),
        (Some(false), Some(300))
    );

    // Only the operator administers it.
    let r = s
        .call(Method::PUT, MAINTENANCE, &w.admin, Some(json!({"enabled": true})))
        .await;
    assert_problem(r, 403, "forbidden").await;

    let on = set(
        &s,
        json!({"enabled": true, "retry_after_seconds": 120, "message": "Upgrading storage until 14:00 UTC."}),
    )
    .await;
    assert_eq!(on["enabled"], true);
    assert_eq!(on["message"], "Upgrading storage until 14:00 UTC.");

    // Every /v1 request is refused, the operator's own included, reads and writes alike…
    let r = s.call(Method::GET, records, &w.viewer, None).await;
    assert_maintenance(r, "120", "Upgrading storage until 14:00 UTC.").await;
    let r = s.call(Method::POST, records, &w.editor, Some(json!({"port": 1}))).await;
    assert_maintenance(r, "120", "Upgrading storage until 14:00 UTC.").await;
    let r = s.call(Method::GET, "/v1/tenants", OPERATOR, None).await;
    assert_maintenance(r, "120", "Upgrading storage until 14:00 UTC.").await;
    // … before credentials are even looked at.
    let r = s.req(Method::GET, records, None).send().await.unwrap();
    assert_maintenance(r, "120", "Upgrading storage until 14:00 UTC.").await;

    // The admin route, the probes and the documentation keep answering.
    let r = s.call(Method::GET, MAINTENANCE, OPERATOR, None).await;
    assert_eq!(r.status(), 200);
    for path in ["/healthz", "/readyz", "/openapi.json", "/docs/status-codes"] {
        let r = s.req(Method::GET, path, None).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }

    // A change against an older version is refused (412) and changes nothing.
    let r = s
        .req(Method::PUT, MAINTENANCE, Some(OPERATOR))
        .header("if-match", &first_tag)
        .json(&json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 412, "precondition-failed").await;
    let r = s.call(Method::GET, records, &w.viewer, None).await;
    assert_eq!(r.status(), 503);

    // Off again: the API answers at once, without the operator's words.
    let off = set(&s, json!({"enabled": false})).await;
    assert_eq!(
        (off["enabled"].as_bool(), off["message"].as_str()),
        (Some(false), Some(""))
    );
    let r = s.call(Method::GET, records, &w.viewer, None).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("retry-after").is_none());
}

#[tokio::test]
async fn maintenance_without_words_says_so_in_a_standard_text() {
    let s = Server::start().await;
    set(&s, json!({"enabled": true})).await;
    let r = s.call(Method::GET, "/v1/tenants", OPERATOR, None).await;
    assert_eq!(header(&r, "retry-after"), "300");
    let body = assert_problem(r, 503, "service-unavailable").await;
    assert!(body["detail"].as_str().unwrap().contains("maintenance"), "{body}");
}

#[tokio::test]
async fn maintenance_survives_a_restart_and_reaches_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canon.db");
    let a = Server::start_on(&path).await;
    let b = Server::start_on(&path).await;
    set(
        &a,
        json!({"enabled": true, "retry_after_seconds": 30, "message": "Moving racks."}),
    )
    .await;
    // The node that took the change applies it at once…
    let r = a.call(Method::GET, "/v1/tenants", OPERATOR, None).await;
    assert_maintenance(r, "30", "Moving racks.").await;
    // … the other within its refresh interval (one second).
    let started = Instant::now();
    loop {
        let r = b.call(Method::GET, "/v1/tenants", OPERATOR, None).await;
        if r.status() == 503 {
            assert_maintenance(r, "30", "Moving racks.").await;
            break;
        }
        assert_eq!(r.status(), 200);
        assert!(started.elapsed() < Duration::from_secs(3), "node b never saw it");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop((a, b));
    // A restarted node refuses from its first request.
    let c = Server::start_on(&path).await;
    let r = c.call(Method::GET, "/v1/tenants", OPERATOR, None).await;
    assert_maintenance(r, "30", "Moving racks.").await;
}

#[tokio::test]
async fn maintenance_settings_are_checked_field_by_field() {
    let s = Server::start().await;
    for (body, pointer) in [
        (
            json!({"enabled": true, "retry_after_seconds": 0}),
            "/retry_after_seconds",
        ),
        (
            json!({"enabled": true, "retry_after_seconds": 86401}),
            "/retry_after_seconds",
        ),
        (
            json!({"enabled": true, "retry_after_seconds": -5}),
            "/retry_after_seconds",
        ),
        (
            json!({"enabled": true, "retry_after_seconds": 1.5}),
            "/retry_after_seconds",
        ),
        (
            json!({"enabled": true, "retry_after_seconds": "60"}),
            "/retry_after_seconds",
        ),
        (
            json!({"enabled": true, "retry_after_seconds": 4_294_967_296_u64}),
            "/retry_after_seconds",
        ),
        (json!({"enabled": "yes"}), "/enabled"),
        (json!({"enabled": 1}), "/enabled"),
        (json!({"enabled": null}), "/enabled"),
        (json!({}), "/enabled"),
        (json!({"enabled": true, "message": "x".repeat(1001)}), "/message"),
        (json!({"enabled": true, "message": "line\nbreak"}), "/message"),
        (json!({"enabled": true, "message": 42}), "/message"),
        (json!({"enabled": true, "message": null}), "/message"),
    ] {
        let r = s.call(Method::PUT, MAINTENANCE, OPERATOR, Some(body.clone())).await;
        assert_eq!(header(&r, "content-type"), "application/problem+json");
        // Wrong types are refused as wrong values are: `invalid-field`, by
        // pointer, in the server's words (not the JSON library's).
        let problem = assert_problem(r, 400, "invalid-field").await;
        assert_eq!(pointers(&problem), [pointer], "{body} → {problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.starts_with(pointer), "{detail}");
        assert!(
            !detail.contains("invalid type") && !detail.contains("expected"),
            "{detail}"
        );
    }
    // Every field at once.
    let body = json!({"enabled": "yes", "retry_after_seconds": 0, "message": 1});
    let r = s.call(Method::PUT, MAINTENANCE, OPERATOR, Some(body)).await;
    let problem = assert_problem(r, 400, "invalid-field").await;
    assert_eq!(pointers(&problem), ["/enabled", "/retry_after_seconds", "/message"]);
    // An unknown member or a body that is not an object is the wrong shape,
    // as for every resource.
    for (body, pointer) in [
        (json!({"enabled": true, "until": "later"}), "/until"),
        (json!([true]), ""),
    ] {
        let r = s.call(Method::PUT, MAINTENANCE, OPERATOR, Some(body.clone())).await;
        let problem = assert_problem(r, 400, "malformed-body").await;
        assert_eq!(pointers(&problem), [pointer], "{body} → {problem}");
    }
    // The bounds themselves are taken.
    for (retry, message) in [(1, "x".repeat(1000)), (86_400, "é".repeat(1000))] {
        let body = json!({"enabled": false, "retry_after_seconds": retry, "message": message});
        let m = set(&s, body).await;
        assert_eq!(m["retry_after_seconds"], retry);
    }
    // Nothing of it was applied.
    let m = s.ok_json(Method::GET, MAINTENANCE, OPERATOR, None).await;
    assert_eq!(m["enabled"], false);
}
