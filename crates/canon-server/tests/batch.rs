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
    // An atomic batch is refused the same way, before anything is applied.
    let r = s
        .call(
            Method::POST,
            &batch(""),
            &w.viewer,
            Some(json!({"atomic": true, "operations": [{"op": "delete", "id": "r1"}]})),
        )
        .await;
    assert_problem(r, 403, "forbidden").await;
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

#[tokio::test]
async fn batch_operations_on_one_record_apply_in_order_among_independent_ones() {
    // A collection without unique fields: independent operations run side by
    // side (their writes share commits), operations on one id in turn.
    let (s, w) = setup().await;
    let notes = "/v1/tenants/acme/collections/notes/records";
    s.ok_json(
        Method::POST,
        "/v1/tenants/acme/collections",
        &w.admin,
        Some(json!({"name": "notes", "schema": {"type": "object"}})),
    )
    .await;
    let chain = [
        json!({"op": "create", "id": "x", "data": {"n": 1}}),
        json!({"op": "patch", "id": "x", "data": {"n": 2}}),
        json!({"op": "delete", "id": "x"}),
        json!({"op": "create", "id": "x", "data": {"n": 3}}),
        json!({"op": "patch", "id": "x", "data": {"n": 4}}),
    ];
    let mut operations = Vec::new();
    for (i, op) in chain.iter().enumerate() {
        for j in 0..12 {
            operations.push(json!({"op": "create", "data": {"i": i * 12 + j}}));
        }
        operations.push(op.clone());
    }
    let r = s
        .call(
            Method::POST,
            &format!("{notes}/batch"),
            &w.editor,
            Some(json!({"operations": operations})),
        )
        .await;
    assert_eq!(r.status(), 207);
    let body: Value = r.json().await.unwrap();
    let statuses: Vec<u64> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    let chain_statuses: Vec<u64> = (0..chain.len()).map(|k| statuses[k * 13 + 12]).collect();
    assert_eq!(chain_statuses, [201, 200, 204, 201, 200], "{body}");
    assert_eq!(statuses.iter().filter(|&&s| s == 201).count(), 60 + 2);
    // Each result is its own operation's, in request order.
    for (k, result) in body["results"].as_array().unwrap().iter().enumerate() {
        if k % 13 != 12 {
            assert_eq!(result["body"]["data"]["i"], json!(k - k / 13), "{k}");
        }
    }
    let x = s.ok_json(Method::GET, &format!("{notes}/x"), &w.viewer, None).await;
    assert_eq!(x["data"], json!({"n": 4}));
    let list = s
        .ok_json(Method::GET, &format!("{notes}?limit=100"), &w.viewer, None)
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 61);
}

#[tokio::test]
async fn batch_on_unique_fields_decides_in_request_order() {
    // Two creates with one unique value: the first wins, every time.
    let (s, w) = setup().await;
    let operations: Vec<Value> = (0..20)
        .flat_map(|i| {
            [
                json!({"op": "create", "data": {"port": i, "serial": format!("S{i}")}}),
                json!({"op": "create", "data": {"port": i + 100, "serial": format!("S{i}")}}),
            ]
        })
        .collect();
    let r = s
        .call(
            Method::POST,
            &batch(""),
            &w.editor,
            Some(json!({"operations": operations})),
        )
        .await;
    assert_eq!(r.status(), 207);
    let body: Value = r.json().await.unwrap();
    for (k, result) in body["results"].as_array().unwrap().iter().enumerate() {
        let expected = if k % 2 == 0 { 201 } else { 409 };
        assert_eq!(result["status"], expected, "{k}: {result}");
    }
}

/// The record at `id`: its representation and its `ETag`.
async fn record(s: &Server, w: &World, id: &str) -> (Value, String) {
    let r = s.call(Method::GET, &format!("{RECORDS}/{id}"), &w.viewer, None).await;
    assert_eq!(r.status(), 200, "{id}");
    let tag = header(&r, "etag").to_owned();
    (r.json().await.unwrap(), tag)
}

/// How many records the collection holds.
async fn count(s: &Server, w: &World) -> usize {
    let list = s.ok_json(Method::GET, RECORDS, &w.viewer, None).await;
    list["items"].as_array().unwrap().len()
}

/// Posts an atomic batch of `operations` as the editor.
async fn atomic(s: &Server, w: &World, query: &str, operations: Value) -> reqwest::Response {
    s.call(
        Method::POST,
        &batch(query),
        &w.editor,
        Some(json!({"atomic": true, "operations": operations})),
    )
    .await
}

#[tokio::test]
async fn atomic_batch_applies_every_operation_and_answers_200() {
    let (s, w) = setup().await;
    s.ok_json(
        Method::PUT,
        &format!("{RECORDS}/r3"),
        &w.editor,
        Some(json!({"port": 3})),
    )
    .await;
    let (_, r1_tag) = record(&s, &w, "r1").await;
    let r = atomic(
        &s,
        &w,
        "",
        json!([
            {"op": "create", "data": {"port": 50}},
            {"op": "create", "id": "a1", "data": {"port": 51, "serial": "A1"}},
            {"op": "patch", "id": "a1", "data": {"port": 52}},
            {"op": "replace", "id": "r1", "data": {"port": 53, "serial": "B"}, "if_match": r1_tag},
            {"op": "create", "data": {"port": 54, "serial": "A"}},
            {"op": "delete", "id": "r3", "if_match": "*"},
        ]),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "application/json");
    let body: Value = r.json().await.unwrap();
    let results = body["results"].as_array().unwrap();
    let statuses: Vec<u64> = results.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [201, 201, 200, 200, 201, 204]);
    // Each result is what its own request would have answered.
    let new = results[0]["location"].as_str().unwrap();
    assert!(new.starts_with(&format!("{RECORDS}/")), "{body}");
    assert_eq!(results[1]["location"], format!("{RECORDS}/a1"));
    assert!(
        results[2].get("location").is_none() && results[5].get("body").is_none(),
        "{body}"
    );
    // The patch saw the create before it; its result is the record as stored.
    let (a1, a1_tag) = record(&s, &w, "a1").await;
    assert_eq!(a1["data"], json!({"port": 52, "serial": "A1"}));
    assert_eq!(a1["version"], 2);
    assert_eq!(results[2]["body"], a1);
    assert_eq!(results[2]["etag"], a1_tag);
    let (created, created_tag) = s
        .call(Method::GET, new, &w.viewer, None)
        .await
        .json::<Value>()
        .await
        .map(|v| (v, results[0]["etag"].clone()))
        .unwrap();
    assert_eq!(created["data"]["port"], 50);
    assert_eq!(results[0]["body"], created);
    assert!(created_tag.as_str().unwrap().starts_with('"'));
    // r1 gave serial A up and the later create took it; r3 is deleted.
    let (r1, _) = record(&s, &w, "r1").await;
    assert_eq!(r1["data"], json!({"port": 53, "serial": "B"}));
    let r = s.call(Method::GET, &format!("{RECORDS}/r3"), &w.viewer, None).await;
    assert_problem(r, 410, "gone").await;
    assert_eq!(count(&s, &w).await, 5);
}

#[tokio::test]
async fn atomic_batch_failing_late_answers_that_status_and_applies_nothing() {
    let (s, w) = setup().await;
    let (r1_before, r1_tag) = record(&s, &w, "r1").await;
    let before = count(&s, &w).await;
    // Operation 2 patches r1, so operation 3's tag (read before the batch) is stale.
    let r = atomic(
        &s,
        &w,
        "",
        json!([
            {"op": "create", "data": {"port": 60, "serial": "Z"}},
            {"op": "create", "id": "a2", "data": {"port": 61}},
            {"op": "patch", "id": "r1", "data": {"port": 62}},
            {"op": "replace", "id": "r1", "data": {"port": 63}, "if_match": r1_tag},
            {"op": "create", "data": {"port": 64}},
        ]),
    )
    .await;
    let p = assert_problem(r, 412, "precondition-failed").await;
    assert_eq!(p["errors"][0]["pointer"], "/operations/3", "{p}");
    assert!(p["detail"].as_str().unwrap().starts_with("Operation 3 failed"), "{p}");
    // Nothing was applied: r1 as it was, no a2, Z free, as many records.
    assert_eq!(record(&s, &w, "r1").await, (r1_before, r1_tag));
    let r = s.call(Method::GET, &format!("{RECORDS}/a2"), &w.viewer, None).await;
    assert_problem(r, 404, "not-found").await;
    assert_eq!(count(&s, &w).await, before);
    s.ok_json(
        Method::POST,
        RECORDS,
        &w.editor,
        Some(json!({"port": 65, "serial": "Z"})),
    )
    .await;
}

#[tokio::test]
async fn atomic_batch_answers_each_failure_as_its_own_request_would() {
    let (s, w) = setup().await;
    s.ok_json(
        Method::POST,
        "/v1/tenants/acme/collections",
        OPERATOR,
        Some(json!({"name": "strict", "schema": {"type": "object"}, "require_if_match": true})),
    )
    .await;
    let before = count(&s, &w).await;
    let cases = [
        // r2 is locked by the admin (423, with who holds it).
        (
            "",
            json!([{"op": "create", "data": {"port": 70}}, {"op": "patch", "id": "r2", "data": {"port": 71}}]),
            423,
            "locked",
            "/operations/1",
        ),
        // Two operations taking one unique value: the second conflicts.
        (
            "",
            json!([{"op": "create", "data": {"port": 72, "serial": "Q"}}, {"op": "create", "id": "q2", "data": {"port": 73, "serial": "Q"}}]),
            409,
            "unique-conflict",
            "/operations/1/data/serial",
        ),
        // Data that fails the schema.
        (
            "",
            json!([{"op": "create", "id": "ok", "data": {"port": 74}}, {"op": "replace", "id": "r1", "data": {"port": "x"}}]),
            400,
            "schema-violation",
            "/operations/1/data/port",
        ),
        // A merge patch whose result fails the schema.
        (
            "",
            json!([{"op": "patch", "id": "r1", "data": {"port": null}}]),
            400,
            "schema-violation",
            "/operations/0/data",
        ),
        // No such record; a record deleted earlier in the batch.
        (
            "",
            json!([{"op": "delete", "id": "nosuch"}]),
            404,
            "not-found",
            "/operations/0",
        ),
        (
            "",
            json!([{"op": "delete", "id": "r1"}, {"op": "patch", "id": "r1", "data": {"port": 75}}]),
            410,
            "gone",
            "/operations/1",
        ),
        // A create at a taken id is 412, as PUT with If-None-Match: * is.
        (
            "",
            json!([{"op": "create", "id": "r1", "data": {"port": 76}}]),
            412,
            "precondition-failed",
            "/operations/0",
        ),
        // Malformed operations: the batch is refused before anything is read.
        (
            "",
            json!([{"op": "delete", "id": "nosuch"}, {"op": "delete", "id": "no such"}]),
            400,
            "invalid-field",
            "/operations/1/id",
        ),
        (
            "",
            json!([{"op": "delete", "id": "r1", "if_match": "not-a-tag"}]),
            400,
            "invalid-field",
            "/operations/0/if_match",
        ),
    ];
    for (query, operations, status, slug, pointer) in cases {
        let r = atomic(&s, &w, query, operations.clone()).await;
        let p = assert_problem(r, status, slug).await;
        assert_eq!(p["errors"][0]["pointer"], pointer, "{operations}: {p}");
        if status == 423 {
            assert!(p["lock"]["holder"].is_string(), "{p}");
        }
        assert!(p.get("partialSuccessResponses").is_none(), "{p}");
    }
    assert_eq!(count(&s, &w).await, before, "no failed batch left a record");
    let (r1, _) = record(&s, &w, "r1").await;
    assert_eq!(r1["version"], 1);

    // A collection that requires If-Match: a record the batch created is
    // existing for its later operations, which must name its tag (428).
    let strict = "/v1/tenants/acme/collections/strict/records";
    let r = s
        .call(
            Method::POST,
            &format!("{strict}/batch"),
            &w.editor,
            Some(json!({"atomic": true, "operations": [
                {"op": "create", "id": "s1", "data": {}},
                {"op": "replace", "id": "s1", "data": {"n": 1}, "if_match": "*"},
            ]})),
        )
        .await;
    let p = assert_problem(r, 428, "precondition-required").await;
    assert_eq!(p["errors"][0]["pointer"], "/operations/1");
    let r = s.call(Method::GET, &format!("{strict}/s1"), &w.viewer, None).await;
    assert_problem(r, 404, "not-found").await;

    // most-critical: the same answer, with no partial success to list.
    let r = atomic(
        &s,
        &w,
        "?report=most-critical",
        json!([{"op": "create", "data": {"port": 77}}, {"op": "patch", "id": "r2", "data": {"port": 78}}]),
    )
    .await;
    let p = assert_problem(r, 423, "locked").await;
    assert_eq!(p["errors"][0]["pointer"], "/operations/1");
    assert_eq!(p["partialSuccessResponses"], json!([]));
    let r = atomic(
        &s,
        &w,
        "?report=most-critical",
        json!([{"op": "create", "data": {"port": 79}}]),
    )
    .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["results"][0]["status"], 201);
    assert_eq!(count(&s, &w).await, before + 1);
}

#[tokio::test]
async fn atomic_batch_replays_for_its_idempotency_key() {
    let (s, w) = setup().await;
    let body = json!({"atomic": true, "operations": [
        {"op": "create", "data": {"port": 80}},
        {"op": "patch", "id": "r1", "data": {"port": 81}},
    ]});
    let key = [("idempotency-key", "\"atomic-1\"")];
    let first = s
        .send(Method::POST, &batch(""), &w.editor, &key, Some(body.clone()))
        .await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    let again = s.send(Method::POST, &batch(""), &w.editor, &key, Some(body)).await;
    assert_eq!(again.status(), 200);
    assert_eq!(header(&again, "idempotent-replayed"), "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    assert_eq!(count(&s, &w).await, 3);
    let (r1, _) = record(&s, &w, "r1").await;
    assert_eq!(r1["version"], 2, "applied once");
}
