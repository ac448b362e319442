//! Which collection schemas Canon admits (docs/decisions.md, "Collection
//! schemas: admission rules"), over HTTP on create and PATCH.

mod common;

use std::time::{Duration, Instant};

use common::{OPERATOR, Server, assert_problem, world};
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};

/// H1's schema: `d{i}` refers to `d{i+1}` twice, so it expands to 2^depth.
fn doubling(depth: usize) -> Value {
    let mut defs = Map::new();
    for i in 0..depth {
        let next = format!("#/$defs/d{}", i + 1);
        defs.insert(format!("d{i}"), json!({"allOf": [{"$ref": next}, {"$ref": next}]}));
    }
    defs.insert(format!("d{depth}"), json!({"type": "object"}));
    json!({"$defs": defs, "$ref": "#/$defs/d0"})
}

async fn create(s: &Server, token: &str, name: &str, schema: Value) -> reqwest::Response {
    s.call(
        Method::POST,
        "/v1/tenants/acme/collections",
        token,
        Some(json!({"name": name, "schema": schema})),
    )
    .await
}

/// Asserts `r` is 400 `invalid-field` at `pointer`; returns its text.
async fn refused(r: reqwest::Response, pointer: &str) -> String {
    let body = assert_problem(r, 400, "invalid-field").await;
    assert_eq!(body["errors"][0]["pointer"], pointer, "{body}");
    body["errors"][0]["detail"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn schema_admission_refuses_an_exponential_reference_graph_at_once() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let started = Instant::now();
    let r = create(&s, &w.admin, "h1", doubling(30)).await;
    let text = refused(r, "/schema").await;
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert!(text.contains("10000"), "{text}");
    // The collection was not created; on PATCH the same.
    let r = s
        .call(Method::GET, "/v1/tenants/acme/collections/h1", &w.admin, None)
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = s
        .call(
            Method::PATCH,
            "/v1/tenants/acme/collections/devices",
            &w.admin,
            Some(json!({"schema": doubling(30)})),
        )
        .await;
    refused(r, "/schema").await;
}

#[tokio::test]
async fn schema_admission_accepts_the_doubling_graph_when_small() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let r = create(&s, &w.admin, "small", doubling(3)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let records = "/v1/tenants/acme/collections/small/records";
    let r = s.call(Method::POST, records, &w.editor, Some(json!({"a": 1}))).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = s.call(Method::POST, records, &w.editor, Some(json!([1]))).await;
    assert_problem(r, 400, "schema-violation").await;
}

#[tokio::test]
async fn schema_admission_refuses_loops_on_one_value() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    refused(create(&s, &w.admin, "l1", json!({"$ref": "#"})).await, "/schema/$ref").await;
    let ab = json!({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"});
    let text = refused(create(&s, &w.admin, "l1", ab).await, "/schema/$defs/b/$ref").await;
    assert!(text.contains("#/$defs/a → #/$defs/b → #/$defs/a"), "{text}");
    let not = json!({"not": {"$ref": "#"}});
    refused(create(&s, &w.admin, "l1", not).await, "/schema/not/$ref").await;
    // A recursion that would apply itself twice to one child value (the
    // work doubles with every level of nesting).
    let twice =
        json!({"allOf": [{"$ref": "#/$defs/h"}, {"$ref": "#/$defs/h"}], "$defs": {"h": {"items": {"$ref": "#"}}}});
    let text = refused(create(&s, &w.admin, "l1", twice).await, "/schema").await;
    assert!(text.contains("twice"), "{text}");
}

#[tokio::test]
async fn schema_admission_accepts_a_recursive_tree_and_validates_records() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let tree = json!({"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#"}}}});
    assert_eq!(create(&s, &w.admin, "tree", tree).await.status(), StatusCode::CREATED);
    let records = "/v1/tenants/acme/collections/tree/records";
    let ok = json!({"children": [{"children": []}, {"children": [{}]}]});
    let r = s.call(Method::POST, records, &w.editor, Some(ok)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let bad = json!({"children": [{"children": [{"children": 5}]}]});
    let body = assert_problem(
        s.call(Method::POST, records, &w.editor, Some(bad)).await,
        400,
        "schema-violation",
    )
    .await;
    assert_eq!(
        body["errors"][0]["pointer"], "/data/children/0/children/0/children",
        "{body}"
    );
    // The tenant document describes it (the recursion points at the embedded schema).
    let doc = s
        .ok_json(Method::GET, "/v1/tenants/acme/openapi.json", &w.viewer, None)
        .await;
    assert_eq!(
        doc["components"]["schemas"]["RecordData_tree"]["properties"]["children"]["items"]["$ref"],
        "#/components/schemas/RecordData_tree"
    );
}

#[tokio::test]
async fn schema_admission_refuses_references_outside_the_schema_and_nested_ids() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    // Every spelling the tester found, each equivalent to a fragment under
    // some base URI: refused, whatever the root `$id`.
    for r in [
        "https://EX.com/root#/$defs/a",
        "https://ex.com:443/root#/$defs/a",
        "./root#/$defs/a",
        "/root#/$defs/a",
        "//ex.com/root#/$defs/a",
        "../root#/$defs/a",
        "https://ex.com/root",
    ] {
        let schema = json!({"$id": "https://ex.com/root", "$defs": {"a": {}}, "properties": {"x": {"$ref": r}}});
        let text = refused(create(&s, &w.admin, "m1", schema).await, "/schema/properties/x/$ref").await;
        assert!(text.contains("fragment"), "{r}: {text}");
    }
    let dynamic = json!({"$dynamicRef": "https://ex.com/meta#m"});
    refused(create(&s, &w.admin, "m1", dynamic).await, "/schema/$dynamicRef").await;
    let nested = json!({"$defs": {"item": {"$id": "https://ex.com/item", "type": "string"}}});
    let text = refused(create(&s, &w.admin, "m1", nested).await, "/schema/$defs/item/$id").await;
    assert!(text.contains("root"), "{text}");
    // A root `$id` with fragment references is fine (pasted schemas keep working).
    let pasted = json!({"$id": "https://ex.com/root", "$defs": {"a": {"type": "integer"}}, "properties": {"x": {"$ref": "#/$defs/a"}}});
    assert_eq!(
        create(&s, &w.admin, "pasted", pasted).await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn schema_admission_refuses_dangling_references() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    for (schema, pointer) in [
        (json!({"$ref": "#/$defs/nope"}), "/schema/$ref"),
        (
            json!({"properties": {"a": {"$ref": "#nope"}}}),
            "/schema/properties/a/$ref",
        ),
        (json!({"const": {"type": "string"}, "$ref": "#/const"}), "/schema/$ref"),
    ] {
        refused(create(&s, &w.admin, "dangling", schema).await, pointer).await;
    }
    // PATCH is checked the same way, and leaves the schema as it was.
    let before = s
        .ok_json(Method::GET, "/v1/tenants/acme/collections/devices", OPERATOR, None)
        .await;
    let r = s
        .call(
            Method::PATCH,
            "/v1/tenants/acme/collections/devices",
            &w.admin,
            Some(json!({"schema": {"$ref": "#/$defs/nope"}})),
        )
        .await;
    refused(r, "/schema/$ref").await;
    let after = s
        .ok_json(Method::GET, "/v1/tenants/acme/collections/devices", OPERATOR, None)
        .await;
    assert_eq!(before["schema"], after["schema"]);
}
