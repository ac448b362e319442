//! Class A: a 2xx stores exactly what was sent. Numbers Canon cannot keep
//! exactly are 400 naming their pointer; numbers are canonical, so equality
//! is one rule for unique fields, filters and JSON Patch `test`.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const RECORDS: &str = "/v1/tenants/acme/collections/things/records";

async fn setup() -> (Server, World) {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    s.ok_json(
        Method::POST,
        "/v1/tenants/acme/collections",
        OPERATOR,
        Some(json!({"name": "things", "unique": ["k"]})),
    )
    .await;
    (s, w)
}

/// Sends `body` verbatim as JSON.
async fn raw(s: &Server, method: Method, path: &str, token: &str, ctype: &str, body: &str) -> reqwest::Response {
    s.req(method, path, Some(token))
        .header("content-type", ctype)
        .body(body.to_owned())
        .send()
        .await
        .expect("send")
}

async fn create_raw(s: &Server, w: &World, body: &str) -> reqwest::Response {
    raw(s, Method::POST, RECORDS, &w.editor, "application/json", body).await
}

/// The `data` of a record as the server returns it, as text.
async fn stored_text(s: &Server, w: &World, id: &str) -> String {
    let r = s.call(Method::GET, &format!("{RECORDS}/{id}"), &w.viewer, None).await;
    assert_eq!(r.status(), 200);
    r.text().await.expect("body")
}

#[tokio::test]
async fn numbers_2_pow_53_plus_1_round_trips_exactly() {
    let (s, w) = setup().await;
    let r = create_raw(
        &s,
        &w,
        r#"{"k":9007199254740993,"u":18446744073709551615,"n":-9223372036854775808}"#,
    )
    .await;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let text = stored_text(&s, &w, &id).await;
    assert!(text.contains(r#""k":9007199254740993"#), "{text}");
    assert!(text.contains(r#""u":18446744073709551615"#), "{text}");
    assert!(text.contains(r#""n":-9223372036854775808"#), "{text}");
    // And the filter finds it by its exact value, not its neighbour.
    assert_eq!(matches(&s, &w, "filter%5Bk%5D=9007199254740993").await, 1);
    assert_eq!(matches(&s, &w, "filter%5Bk%5D=9007199254740992").await, 0);
    assert_eq!(matches(&s, &w, "filter%5Bu%5D=18446744073709551615").await, 1);
}

/// How many records the list with `query` holds.
async fn matches(s: &Server, w: &World, query: &str) -> usize {
    let list = s
        .ok_json(Method::GET, &format!("{RECORDS}?{query}"), &w.viewer, None)
        .await;
    list["items"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn numbers_too_big_or_too_precise_are_400_naming_the_pointer() {
    let (s, w) = setup().await;
    let cases = [
        (r#"{"k":12345678901234567890123}"#, "/k", "cannot be stored exactly"),
        (r#"{"a":{"b":[1,1e400]}}"#, "/a/b/1", "number out of range"),
        (r#"{"x":0.1000000000000000000001}"#, "/x", "cannot be stored exactly"),
        (r#"{"x":-1e400}"#, "/x", "number out of range"),
    ];
    for (body, pointer, words) in cases {
        let r = create_raw(&s, &w, body).await;
        let p = assert_problem(r, 400, "invalid-field").await;
        assert_eq!(p["errors"][0]["pointer"], pointer, "{body}: {p}");
        assert!(p["detail"].as_str().unwrap().contains(words), "{body}: {p}");
    }
    // The same rule on every JSON body: a replace, a merge patch, a JSON
    // Patch, a collection.
    let r = raw(
        &s,
        Method::PUT,
        &format!("{RECORDS}/r1"),
        &w.editor,
        "application/json",
        r#"{"k":1e400}"#,
    )
    .await;
    assert_problem(r, 400, "invalid-field").await;
    s.ok_json(Method::PUT, &format!("{RECORDS}/r1"), &w.editor, Some(json!({"k": 1})))
        .await;
    let r = raw(
        &s,
        Method::PATCH,
        &format!("{RECORDS}/r1"),
        &w.editor,
        "application/merge-patch+json",
        r#"{"k":12345678901234567890123}"#,
    )
    .await;
    assert_problem(r, 400, "invalid-field").await;
    let r = raw(
        &s,
        Method::PATCH,
        &format!("{RECORDS}/r1"),
        &w.editor,
        "application/json-patch+json",
        r#"[{"op":"replace","path":"/k","value":1e400}]"#,
    )
    .await;
    let p = assert_problem(r, 400, "invalid-field").await;
    assert_eq!(p["errors"][0]["pointer"], "/0/value");
    let r = raw(
        &s,
        Method::POST,
        "/v1/tenants/acme/collections",
        &w.admin,
        "application/json",
        r#"{"name":"other","schema":{"type":"object","properties":{"p":{"maximum":1e400}}}}"#,
    )
    .await;
    let p = assert_problem(r, 400, "invalid-field").await;
    assert_eq!(p["errors"][0]["pointer"], "/schema/properties/p/maximum");
    // Nothing was stored by any of them.
    let list = s.ok_json(Method::GET, RECORDS, &w.viewer, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["data"], json!({"k": 1}));
}

#[tokio::test]
async fn numbers_are_canonical_minus_zero_is_zero_and_integral_values_are_integers() {
    let (s, w) = setup().await;
    let r = create_raw(
        &s,
        &w,
        r#"{"z":-0,"zf":-0.0,"one":1.0,"h":1e2,"big":1.5e10,"tenth":0.1,"e":1.5e300}"#,
    )
    .await;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let text = stored_text(&s, &w, &id).await;
    for part in [
        r#""z":0,"#,
        r#""zf":0,"#,
        r#""one":1,"#,
        r#""h":100,"#,
        r#""big":15000000000,"#,
        r#""tenth":0.1,"#,
        r#""e":1.5e+300"#,
    ] {
        assert!(text.contains(part), "{part} in {text}");
    }
}

#[tokio::test]
async fn numbers_one_rule_for_unique_fields_and_filters() {
    let (s, w) = setup().await;
    let r = create_raw(&s, &w, r#"{"k":1.0}"#).await;
    assert_eq!(r.status(), 201);
    // 1 and 1.0 are the same value: the unique field collides.
    let r = create_raw(&s, &w, r#"{"k":1}"#).await;
    let p = assert_problem(r, 409, "unique-conflict").await;
    assert_eq!(p["errors"][0]["pointer"], "/data/k");
    let r = create_raw(&s, &w, r#"{"k":10e-1}"#).await;
    assert_problem(r, 409, "unique-conflict").await;
    // A filter for 1 (or 1.0, or 1e0) finds the record sent as 1.0.
    for f in ["1", "1.0", "1e0"] {
        let list = s
            .ok_json(Method::GET, &format!("{RECORDS}?filter%5Bk%5D={f}"), &w.viewer, None)
            .await;
        assert_eq!(list["items"].as_array().unwrap().len(), 1, "filter {f}");
        assert_eq!(list["items"][0]["data"]["k"], json!(1));
    }
}

#[tokio::test]
async fn numbers_patch_test_compares_by_value() {
    let (s, w) = setup().await;
    s.ok_json(
        Method::PUT,
        &format!("{RECORDS}/r1"),
        &w.editor,
        Some(json!({"k": 1, "f": 2.5})),
    )
    .await;
    let r = raw(
        &s,
        Method::PATCH,
        &format!("{RECORDS}/r1"),
        &w.editor,
        "application/json-patch+json",
        r#"[{"op":"test","path":"/k","value":1.0},{"op":"test","path":"/f","value":25e-1},{"op":"add","path":"/ok","value":true}]"#,
    )
    .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["data"], json!({"k": 1, "f": 2.5, "ok": true}));
    // A different value still fails the test.
    let r = raw(
        &s,
        Method::PATCH,
        &format!("{RECORDS}/r1"),
        &w.editor,
        "application/json-patch+json",
        r#"[{"op":"test","path":"/k","value":1.5}]"#,
    )
    .await;
    assert_problem(r, 409, "patch-test-failed").await;
}

#[tokio::test]
async fn json_nesting_deeper_than_64_is_400_saying_so() {
    let (s, w) = setup().await;
    let deep = |n: usize| format!("{{\"k\":{}{}}}", "[".repeat(n), "]".repeat(n));
    // The object counts as one level: 63 arrays inside it make 64.
    let r = create_raw(&s, &w, &deep(63)).await;
    assert_eq!(r.status(), 201);
    let r = create_raw(&s, &w, &deep(64)).await;
    let p = assert_problem(r, 400, "malformed-body").await;
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains("nested deeper than 64"), "{p}");
    assert!(!detail.contains("recursion limit"), "{p}");
    assert!(p["errors"][0]["pointer"].as_str().unwrap().starts_with("/k/0/0"), "{p}");
    // Far deeper does not hurt the server either.
    let r = create_raw(&s, &w, &deep(100_000)).await;
    assert_problem(r, 400, "malformed-body").await;
}

#[tokio::test]
async fn json_duplicate_member_names_are_400() {
    let (s, w) = setup().await;
    let r = create_raw(&s, &w, r#"{"k":1,"a":{"x":1,"x":2}}"#).await;
    let p = assert_problem(r, 400, "malformed-body").await;
    assert_eq!(p["errors"][0]["pointer"], "/a/x");
    assert!(p["detail"].as_str().unwrap().contains("more than once"), "{p}");
    // Escapes do not hide a duplicate.
    let r = create_raw(&s, &w, r#"{"k":1,"\u006b":2}"#).await;
    assert_problem(r, 400, "malformed-body").await;
    // Also on the bodies of other endpoints.
    let r = raw(
        &s,
        Method::POST,
        "/v1/tenants",
        OPERATOR,
        "application/json",
        r#"{"name":"a","name":"b"}"#,
    )
    .await;
    assert_problem(r, 400, "malformed-body").await;
}
