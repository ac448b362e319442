//! Class B, as a property: any JSON value accepted with a 2xx reads back
//! equal (under the one equality rule: canonical numbers) through create,
//! replace, merge patch, GET, the JSON list and the NDJSON list.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use canon_server::json::canonicalize;
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::Method;
use serde_json::{Map, Number, Value, json};

fn string() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..6).prop_map(String::from_iter)
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1000i64..1000).prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        // Integral floats and small decimals, the values most often written
        // two ways (1.0 and 1).
        (-1000i32..1000).prop_map(|i| json!(f64::from(i))),
        (-1000i32..1000).prop_map(|i| json!(f64::from(i) / 8.0)),
        Just(json!(-0.0)),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        number(),
        string().prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((string(), inner), 0..4)
                .prop_map(|members| Value::Object(members.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Record data: always an object.
fn data() -> impl Strategy<Value = Value> {
    prop::collection::vec((string(), value()), 0..5).prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn canonical(v: &Value) -> Value {
    let mut v = v.clone();
    canonicalize(&mut v);
    v
}

fn check(what: &str, got: &Value, expected: &Value) -> Result<(), TestCaseError> {
    if got == expected {
        Ok(())
    } else {
        Err(TestCaseError::fail(format!("{what}: got {got}, expected {expected}")))
    }
}

async fn send(s: &Server, w: &World, method: Method, path: &str, ctype: &str, body: &Value) -> (u16, Value) {
    let r = s
        .req(method, path, Some(&w.editor))
        .header("content-type", ctype)
        .body(serde_json::to_vec(body).expect("serialize"))
        .send()
        .await
        .expect("send");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn round_trip(s: &Server, w: &World, n: usize, a: Value, b: Value, patch: Value) -> Result<(), TestCaseError> {
    let collection = format!("c{n}");
    s.ok_json(
        Method::POST,
        "/v1/tenants/acme/collections",
        OPERATOR,
        Some(json!({"name": collection})),
    )
    .await;
    let records = format!("/v1/tenants/acme/collections/{collection}/records");

    let (status, created) = send(s, w, Method::POST, &records, "application/json", &a).await;
    prop_assert_eq!(status, 201, "create {} -> {}", a, created);
    check("create", &created["data"], &canonical(&a))?;
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    let one = format!("{records}/{id}");
    let got = s.ok_json(Method::GET, &one, &w.viewer, None).await;
    check("get after create", &got["data"], &canonical(&a))?;

    let (status, replaced) = send(s, w, Method::PUT, &one, "application/json", &b).await;
    prop_assert_eq!(status, 200, "replace {} -> {}", b, replaced);
    check("replace", &replaced["data"], &canonical(&b))?;

    let mut expected = canonical(&b);
    json_patch::merge(&mut expected, &canonical(&patch));
    let (status, patched) = send(s, w, Method::PATCH, &one, "application/merge-patch+json", &patch).await;
    prop_assert_eq!(status, 200, "patch {} -> {}", patch, patched);
    check("merge patch", &patched["data"], &expected)?;

    let got = s.ok_json(Method::GET, &one, &w.viewer, None).await;
    check("get", &got["data"], &expected)?;
    let list = s.ok_json(Method::GET, &records, &w.viewer, None).await;
    check("list", &list["items"][0]["data"], &expected)?;
    let r = s
        .req(Method::GET, &records, Some(&w.viewer))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .expect("send");
    prop_assert_eq!(r.status().as_u16(), 200);
    let text = r.text().await.unwrap_or_default();
    let line: Value = serde_json::from_str(text.lines().next().unwrap_or("")).unwrap_or(Value::Null);
    check("ndjson list", &line["data"], &expected)
}

#[test]
fn json_roundtrip_accepted_values_read_back_equal_everywhere() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (s, w) = rt.block_on(async {
        let s = Server::start().await;
        let w = world(&s, "acme").await;
        (s, w)
    });
    let cases = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases: 64,
        max_shrink_iters: 256,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&(data(), data(), data()), |(a, b, patch)| {
        let n = cases.fetch_add(1, Ordering::Relaxed);
        rt.block_on(round_trip(&s, &w, n, a, b, patch))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
