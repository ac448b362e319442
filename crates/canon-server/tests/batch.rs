//! `POST …/records/batch`: each operation decided like its own request
//! (207), or one most-critical status with the successes listed.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const RECORDS: &str = "/v1/tenants/acme/collections/devices/records";

fn batch(path_query: &str) -> String {
    format!("{RECORDS}/batch{path_query}")
}

async fn setup() -> (Server, World) {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    // r1 exists; r2 is locked by the admin; serial A is taken.
    s.ok_json(
        Method::PUT,
        &format!("{RECORDS}/r1"),
        &w.editor,
        Some(json!({"port": 1, "serial": "A"})),
    )
    .await;
    s.ok_json(
        Method::PUT,
        &format!("{RECORDS}/r2"),
        &w.editor,
        Some(json!({"port": 2})),
    )
    .await;
    s.ok_json(
        Method::PUT,
        &format!("{RECORDS}/r2/lock"),
        &w.admin,
        Some(json!({"ttl_seconds": 300})),
    )
    .await;
    (s, w)
}

#[tokio::test]
async fn batch_answers_207_with_each_operation_decided_like_its_own_request() {
    let (s, w) = setup().await;
    let r = s
        .call(
            Method::POST,
            &batch(""),
            &w.editor,
            Some(json!({"operations": [
                {"op": "create", "data": {"port": 10}},
                {"op": "create", "data": {"port": "not a number"}},
                {"op": "create", "data": {"port": 11, "serial": "A"}},
                {"op": "replace", "id": "r1", "data": {"port": 12}, "if_match": "\"stale\""},
                {"op": "patch", "id": "r2", "data": {"port": 13}},
                {"op": "create", "id": "mine", "data": {"port": 14}},
                {"op": "delete", "id": "nosuch"},
            ]})),
        )
        .await;
    assert_eq!(r.status(), 207);
    assert_eq!(header(&r, "content-type"), "application/json");
    let body: Value = r.json().await.unwrap();
    let results = body["results"].as_array().unwrap();
    let statuses: Vec<u64> = results.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [201, 400, 409, 412, 423, 201, 404]);
    // Successes carry what their own response would: Location, ETag, body.
    let created = &results[0];
    let location = created["location"].as_str().unwrap();
    assert!(location.starts_with(&format!("{RECORDS}/")), "{created}");
    assert!(created["etag"].as_str().unwrap().starts_with('"'));
    assert_eq!(created["body"]["data"]["port"], 10);
    assert_eq!(results[5]["location"], format!("{RECORDS}/mine"));
    // Failures carry a full problem body.
    for (i, slug) in [
        (1, "schema-violation"),
        (2, "unique-conflict"),
        (3, "precondition-failed"),
        (4, "locked"),
        (6, "not-found"),
    ] {
        let p = &results[i]["body"];
        assert_eq!(p["type"], format!("/problems/{slug}"), "{p}");
        assert_eq!(p["status"], results[i]["status"]);
        assert!(p["title"].is_string() && p["detail"].is_string(), "{p}");
    }
    // What succeeded is there; what failed left nothing.
    s.ok_json(Method::GET, location, &w.viewer, None).await;
    let list = s.ok_json(Method::GET, RECORDS, &w.viewer, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 4, "{list}");
    let r1 = s.ok_json(Method::GET, &format!("{RECORDS}/r1"), &w.viewer, None).await;
    assert_eq!(r1["data"]["port"], 1);
}

#[tokio::test]
async fn batch_most_critical_reports_one_status_and_the_partial_successes() {
    let (s, w) = setup().await;
    let r = s
        .call(
            Method::POST,
            &batch("?report=most-critical"),
            &w.editor,
            Some(json!({"operations": [
                {"op": "create", "data": {"port": 20}},
                {"op": "patch", "id": "r2", "data": {"port": 21}},
                {"op": "create", "data": {"port": "x"}},
                {"op": "delete", "id": "r1"},
            ]})),
        )
        .await;
    // 400 (the request itself is wrong) outranks 423 (wait and retry).
    let p = assert_problem(r, 400, "schema-violation").await;
    assert_eq!(p["errors"][0]["pointer"], "/operations/2");
    let partial = p["partialSuccessResponses"].as_array().unwrap();
    assert_eq!(partial.len(), 2, "{p}");
    assert_eq!(partial[0]["operation"], 0);
    assert_eq!(partial[0]["status"], 201);
    assert!(partial[0]["location"].as_str().unwrap().starts_with(RECORDS));
    assert_eq!(partial[1]["operation"], 3);
    assert_eq!(partial[1]["status"], 204);
    // All succeeded: 200 with the results.
    let r = s
        .call(
            Method::POST,
            &batch("?report=most-critical"),
            &w.editor,
            Some(json!({"operations": [{"op": "create", "data": {"port": 22}}]})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["results"][0]["status"], 201);
}

#[tokio::test]
async fn batch_limits_access_and_the_reserved_put() {
    let (s, w) = setup().await;
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({"op": "delete", "id": format!("x{i}")}))
        .collect();
    let r = s
        .call(Method::POST, &batch(""), &w.editor, Some(json!({"operations": many})))
        .await;
    let p = assert_problem(r, 400, "invalid-field").await;
    assert_eq!(p["errors"][0]["pointer"], "/operations");
    let r = s
        .call(Method::POST, &batch(""), &w.editor, Some(json!({"operations": []})))
        .await;
    assert_problem(r, 400, "invalid-field").await;
    let r = s
        .call(
            Method::POST,
            &batch("?report=all"),
            &w.editor,
            Some(json!({"operations": []})),
        )
        .await;
    assert_problem(r, 400, "invalid-query").await;
    // A viewer may not write, batch or not; another tenant sees nothing.
    let r = s
        .call(
            Method::POST,
            &batch(""),
            &w.viewer,
            Some(json!({"operations": [{"op": "delete", "id": "r1"}]})),
        )
        .await;
    assert_problem(r, 403, "forbidden").await;
    let other = world(&s, "other").await;
    let r = s
        .call(
            Method::POST,
            &batch(""),
            &other.editor,
            Some(json!({"operations": [{"op": "delete", "id": "r1"}]})),
        )
        .await;
    assert_problem(r, 404, "not-found").await;
    // Atomic batches are not built yet, and say so.
    let r = s
        .call(
            Method::POST,
            &batch(""),
            &w.editor,
            Some(json!({"atomic": true, "operations": [{"op": "delete", "id": "r1"}]})),
        )
        .await;
    assert_problem(r, 501, "not-implemented").await;
    s.ok_json(Method::GET, &format!("{RECORDS}/r1"), &w.viewer, None).await;
    // Allow lists POST now.
    let r = s.call(Method::OPTIONS, &batch(""), &w.editor, None).await;
    assert_eq!(header(&r, "allow"), "POST, PUT, OPTIONS");
}

#[tokio::test]
async fn batch_replays_for_its_idempotency_key() {
    let (s, w) = setup().await;
    let body = json!({"operations": [{"op": "create", "data": {"port": 30}}]});
    let first = s
        .send(
            Method::POST,
            &batch(""),
            &w.editor,
            &[("idempotency-key", "\"b-1\"")],
            Some(body.clone()),
        )
        .await;
    assert_eq!(first.status(), 207);
    let first: Value = first.json().await.unwrap();
    let again = s
        .send(
            Method::POST,
            &batch(""),
            &w.editor,
            &[("idempotency-key", "\"b-1\"")],
            Some(body),
        )
        .await;
    assert_eq!(again.status(), 207);
    assert_eq!(header(&again, "idempotent-replayed"), "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, first);
    let list = s.ok_json(Method::GET, RECORDS, &w.viewer, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 3);
}
