//! Class D: filters have an unambiguous form (a quoted JSON string always
//! means the string), are given once per field, and compare numbers by
//! value. Class E: a query that is not UTF-8 once decoded is 400.

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
        Some(json!({"name": "things"})),
    )
    .await;
    let records = [
        ("s-true", json!("true")),
        ("b-true", json!(true)),
        ("s-one", json!("1")),
        ("n-one", json!(1)),
        ("s-null", json!("null")),
        ("j-null", json!(null)),
        ("s-quote", json!("\"q")),
        ("s-abc", json!("abc")),
        ("n-half", json!(2.5)),
    ];
    for (id, x) in records {
        s.ok_json(
            Method::PUT,
            &format!("{RECORDS}/{id}"),
            &w.editor,
            Some(json!({"x": x})),
        )
        .await;
    }
    (s, w)
}

/// The ids a filter `query` (already encoded) finds.
async fn ids(s: &Server, w: &World, query: &str) -> Vec<String> {
    let list: Value = s
        .ok_json(Method::GET, &format!("{RECORDS}?{query}"), &w.viewer, None)
        .await;
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn filters_quoted_values_match_strings_that_look_like_literals() {
    let (s, w) = setup().await;
    assert_eq!(ids(&s, &w, "filter%5Bx%5D=%22true%22").await, ["s-true"]);
    assert_eq!(ids(&s, &w, "filter%5Bx%5D=%221%22").await, ["s-one"]);
    assert_eq!(ids(&s, &w, "filter%5Bx%5D=%22null%22").await, ["s-null"]);
    // JSON escapes inside the quotes: "\"q" is the string `"q`.
    assert_eq!(ids(&s, &w, "filter%5Bx%5D=%22%5C%22q%22").await, ["s-quote"]);
    assert_eq!(ids(&s, &w, "filter%5Bx%5D=%22abc%22").await, ["s-abc"]);
}

#[tokio::test]
async fn filters_unquoted_values_keep_their_meaning() {
    let (s, w) = setup().await;
    assert_eq!(ids(&s, &w, "filter%5Bx%5D=true").await, ["b-true"]);
    assert_eq!(ids(&s, &w, "filter%5Bx%5D=1").await, ["n-one"]);
    assert_eq!(ids(&s, &w, "filter%5Bx%5D=null").await, ["j-null"]);
    assert_eq!(ids(&s, &w, "filter%5Bx%5D=abc").await, ["s-abc"]);
    // Brackets may also be sent unencoded (curl -g).
    assert_eq!(ids(&s, &w, "filter[x]=abc").await, ["s-abc"]);
}

#[tokio::test]
async fn filters_numbers_compare_by_value() {
    let (s, w) = setup().await;
    for f in ["2.5", "2.50", "25e-1", "0.25E1"] {
        assert_eq!(ids(&s, &w, &format!("filter%5Bx%5D={f}")).await, ["n-half"], "{f}");
    }
    for f in ["1.0", "1e0", "100e-2"] {
        assert_eq!(ids(&s, &w, &format!("filter%5Bx%5D={f}")).await, ["n-one"], "{f}");
    }
    // A number Canon could not store is refused rather than compared lossily.
    for f in ["1e400", "12345678901234567890123"] {
        let r = s
            .call(Method::GET, &format!("{RECORDS}?filter%5Bx%5D={f}"), &w.viewer, None)
            .await;
        let p = assert_problem(r, 400, "invalid-query").await;
        assert_eq!(p["parameter"], "filter[x]", "{p}");
    }
}

#[tokio::test]
async fn filters_repeated_or_badly_quoted_are_400() {
    let (s, w) = setup().await;
    for q in [
        "filter%5Bx%5D=1&filter%5Bx%5D=2",
        "filter[x]=1&filter%5Bx%5D=1",
        "filter%5Bx%5D=%22abc",
        "filter%5Bx%5D=%22a%22b%22",
    ] {
        let r = s.call(Method::GET, &format!("{RECORDS}?{q}"), &w.viewer, None).await;
        let p = assert_problem(r, 400, "invalid-query").await;
        assert_eq!(p["parameter"], "filter[x]", "{q}: {p}");
    }
    // Different fields combine.
    s.ok_json(
        Method::PUT,
        &format!("{RECORDS}/both"),
        &w.editor,
        Some(json!({"x": 1, "y": "b"})),
    )
    .await;
    assert_eq!(ids(&s, &w, "filter%5Bx%5D=1&filter%5By%5D=b").await, ["both"]);
}

#[tokio::test]
async fn query_percent_encoded_invalid_utf8_is_400() {
    let (s, w) = setup().await;
    for q in [
        "filter%5Bx%5D=%FF",
        "filter%5Bx%5D=%C3",
        "filter%5B%FF%5D=1",
        "limit=%FF",
    ] {
        let r = s.call(Method::GET, &format!("{RECORDS}?{q}"), &w.viewer, None).await;
        let p = assert_problem(r, 400, "invalid-query").await;
        assert!(p["detail"].as_str().unwrap().contains("UTF-8"), "{q}: {p}");
    }
    // Valid UTF-8, percent-encoded, is fine.
    s.ok_json(
        Method::PUT,
        &format!("{RECORDS}/accent"),
        &w.editor,
        Some(json!({"x": "é"})),
    )
    .await;
    assert_eq!(ids(&s, &w, "filter%5Bx%5D=%C3%A9").await, ["accent"]);
}

#[tokio::test]
async fn query_broken_percent_escapes_and_signed_limits_are_400() {
    let (s, w) = setup().await;
    for q in [
        "filter%5Bx%5D=%",
        "filter%5Bx%5D=%G1",
        "limit=%2B5",
        "limit=+5",
        "limit=05x",
    ] {
        let r = s.call(Method::GET, &format!("{RECORDS}?{q}"), &w.viewer, None).await;
        assert_problem(r, 400, "invalid-query").await;
    }
    // A literal `%` is written %25.
    s.ok_json(
        Method::PUT,
        &format!("{RECORDS}/percent"),
        &w.editor,
        Some(json!({"x": "100%"})),
    )
    .await;
    assert_eq!(ids(&s, &w, "filter%5Bx%5D=100%25").await, ["percent"]);
}

#[tokio::test]
async fn filters_values_are_bounded_as_published() {
    let (s, w) = setup().await;
    let at_limit = "x".repeat(4096);
    let r = s
        .call(
            Method::GET,
            &format!("{RECORDS}?filter%5Bname%5D={at_limit}"),
            &w.viewer,
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    let over = "x".repeat(4097);
    let r = s
        .call(
            Method::GET,
            &format!("{RECORDS}?filter%5Bname%5D={over}"),
            &w.viewer,
            None,
        )
        .await;
    let p = assert_problem(r, 400, "invalid-query").await;
    assert!(p["detail"].as_str().unwrap().contains("4096"), "{p}");
}
