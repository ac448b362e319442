//! Class C: every value that becomes a path segment is a valid single
//! segment (never `.` or `..`), and words claimed by sub-routes are refused
//! at creation with a 400 naming the field.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

const RECORDS: &str = "/v1/tenants/acme/collections/devices/records";

#[tokio::test]
async fn ids_batch_is_reserved_for_records() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let r = s
        .call(
            Method::PUT,
            &format!("{RECORDS}/batch"),
            &w.editor,
            Some(json!({"port": 1})),
        )
        .await;
    let p = assert_problem(r, 400, "invalid-field").await;
    assert!(p["detail"].as_str().unwrap().contains("batch is reserved"), "{p}");
    assert_eq!(p["errors"][0]["pointer"], "/id");
    // Who may not write is still told so before the body is looked at.
    let r = s
        .call(
            Method::PUT,
            &format!("{RECORDS}/batch"),
            &w.viewer,
            Some(json!({"port": 1})),
        )
        .await;
    assert_problem(r, 403, "forbidden").await;
    // Nothing was created, and reading it is not a record read.
    let list = s.ok_json(Method::GET, RECORDS, &w.viewer, None).await;
    assert_eq!(list["items"], json!([]));
    // The batch endpoint itself takes POST (tests/batch.rs).
    let r = s
        .call(Method::POST, &format!("{RECORDS}/batch"), &w.editor, Some(json!({})))
        .await;
    assert_problem(r, 400, "malformed-body").await;
}

#[tokio::test]
async fn ids_record_ids_must_be_one_addressable_segment() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    // Decoded ids with characters outside the id alphabet.
    for id in ["a%2Fb", "a%20b", "%C3%A9", &"x".repeat(129)] {
        let r = s
            .call(
                Method::PUT,
                &format!("{RECORDS}/{id}"),
                &w.editor,
                Some(json!({"port": 1})),
            )
            .await;
        let p = assert_problem(r, 400, "invalid-field").await;
        assert_eq!(p["errors"][0]["pointer"], "/id", "{id}");
    }
    // Dot segments (literal or %2E) are refused by the flow's Target node
    // before any resource sees them (flow tests; reqwest would normalize
    // them away here), and `.` / `..` are not client ids either (input.rs).
    // Dots inside an id are fine.
    let r = s
        .call(
            Method::PUT,
            &format!("{RECORDS}/a.b..c"),
            &w.editor,
            Some(json!({"port": 1})),
        )
        .await;
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn ids_collection_and_tenant_names_must_be_addressable() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    for name in [".", "..", "a/b", "a.b", "", "batch/x"] {
        let r = s
            .call(
                Method::POST,
                "/v1/tenants/acme/collections",
                &w.admin,
                Some(json!({"name": name})),
            )
            .await;
        let p = assert_problem(r, 400, "invalid-field").await;
        assert_eq!(p["errors"][0]["pointer"], "/name", "{name}");
        let r = s
            .req(Method::PATCH, "/v1/tenants/acme/collections/devices", Some(&w.admin))
            .header("content-type", "application/merge-patch+json")
            .body(json!({"name": name}).to_string())
            .send()
            .await
            .unwrap();
        let p = assert_problem(r, 400, "invalid-field").await;
        assert_eq!(p["errors"][0]["pointer"], "/name", "{name}");
        let r = s
            .call(Method::POST, "/v1/tenants", OPERATOR, Some(json!({"name": name})))
            .await;
        let p = assert_problem(r, 400, "invalid-field").await;
        assert_eq!(p["errors"][0]["pointer"], "/name", "{name}");
    }
    // `current` stands for the caller's tenant in paths.
    let r = s
        .call(Method::POST, "/v1/tenants", OPERATOR, Some(json!({"name": "current"})))
        .await;
    let p = assert_problem(r, 400, "invalid-field").await;
    assert_eq!(p["errors"][0]["pointer"], "/name");
}

#[tokio::test]
async fn ids_a_put_needs_its_collection_before_any_precondition() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    // A missing collection is 404 for a PUT that would create, whatever its
    // preconditions say (a missing record alone would make `If-Match: *` 412).
    for headers in [&[][..], &[("if-match", "*")][..], &[("if-none-match", "*")][..]] {
        let r = s
            .send(
                Method::PUT,
                "/v1/tenants/acme/collections/nosuch/records/r1",
                &w.editor,
                headers,
                Some(json!({"port": 1})),
            )
            .await;
        assert_problem(r, 404, "not-found").await;
    }
    let r = s
        .send(
            Method::PUT,
            &format!("{RECORDS}/r1"),
            &w.editor,
            &[("if-match", "*")],
            Some(json!({"port": 1})),
        )
        .await;
    assert_problem(r, 412, "precondition-failed").await;
    // A deleted collection is 410 for the PUT too, not a re-creation.
    let r = s
        .call(Method::DELETE, "/v1/tenants/acme/collections/devices", &w.admin, None)
        .await;
    assert_eq!(r.status(), 204);
    let r = s
        .call(
            Method::PUT,
            &format!("{RECORDS}/r1"),
            &w.editor,
            Some(json!({"port": 1})),
        )
        .await;
    assert_problem(r, 410, "gone").await;
}

#[tokio::test]
async fn ids_patch_pointers_and_emails_are_bounded_as_published() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    s.ok_json(
        Method::PUT,
        &format!("{RECORDS}/p1"),
        &w.editor,
        Some(json!({"port": 1})),
    )
    .await;
    let long = format!("/{}", "b".repeat(4096));
    let r = s
        .send(
            Method::PATCH,
            &format!("{RECORDS}/p1"),
            &w.editor,
            &[("content-type", "application/json-patch+json")],
            Some(json!([{"op": "add", "path": long, "value": 1}])),
        )
        .await;
    let p = assert_problem(r, 400, "invalid-field").await;
    assert_eq!(p["errors"][0]["pointer"], "/0/path");
    // Lower-casing keeps an address's length (ASCII only): 254 characters
    // in, 254 out, and the response holds to its published maxLength.
    let email = format!("{}@x.example", "\u{130}".repeat(244));
    let r = s
        .call(
            Method::POST,
            "/v1/tenants/acme/users",
            &w.admin,
            Some(json!({"email": email, "role": "viewer"})),
        )
        .await;
    assert_eq!(r.status(), 201);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["email"].as_str().unwrap().chars().count(), 254);
}
