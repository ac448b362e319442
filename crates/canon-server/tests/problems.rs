//! Problem bodies never amplify the request: at most 50 field errors (the
//! rest counted in `errors_omitted`), echoed texts cut short, and library
//! messages in the API's terms (no Rust types, crate features or paths).

mod common;

use common::{OPERATOR, Server, assert_problem, world};
use reqwest::Method;
use serde_json::{Value, json};

async fn loose_collection(s: &Server, schema: Value) {
    s.ok_json(
        Method::POST,
        "/v1/tenants/acme/collections",
        OPERATOR,
        Some(json!({"name": "loose", "schema": schema})),
    )
    .await;
}

const LOOSE: &str = "/v1/tenants/acme/collections/loose/records";

/// The response body as sent, and as JSON.
async fn problem_bytes(r: reqwest::Response, status: u16, slug: &str) -> (usize, Value) {
    assert_eq!(r.status().as_u16(), status);
    let bytes = r.bytes().await.unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["type"], format!("/problems/{slug}"), "{body}");
    (bytes.len(), body)
}

#[tokio::test]
async fn a_300_kb_body_with_thousands_of_violations_gets_a_small_problem() {
    let s = Server::start().await;
    world(&s, "acme").await;
    loose_collection(
        &s,
        json!({"type": "object", "additionalProperties": {"type": "integer"}}),
    )
    .await;
    let mut data = serde_json::Map::new();
    for i in 0..3000 {
        data.insert(
            format!("field_{i:05}"),
            Value::String(format!("{i}-{}", "v".repeat(95))),
        );
    }
    let body = serde_json::to_vec(&Value::Object(data)).unwrap();
    assert!(body.len() > 300_000, "{}", body.len());
    let r = s
        .req(Method::POST, LOOSE, Some(OPERATOR))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let (len, problem) = problem_bytes(r, 400, "schema-violation").await;
    assert!(len < 20_000, "a problem of {len} bytes");
    let errors = problem["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 50);
    assert_eq!(problem["errors_omitted"], 2950);
    assert!(problem["detail"].as_str().unwrap().contains("3000"), "{problem}");
    for e in errors {
        assert!(e["detail"].as_str().unwrap().chars().count() <= 201, "{e}");
    }
}

#[tokio::test]
async fn one_huge_value_is_not_echoed_in_full() {
    let s = Server::start().await;
    world(&s, "acme").await;
    loose_collection(
        &s,
        json!({"type": "object", "properties": {"text": {"type": "integer"}}}),
    )
    .await;
    let r = s
        .call(
            Method::POST,
            LOOSE,
            OPERATOR,
            Some(json!({"text": "x".repeat(300_000)})),
        )
        .await;
    let (len, problem) = problem_bytes(r, 400, "schema-violation").await;
    assert!(len < 2_000, "a problem of {len} bytes: {problem}");
    assert_eq!(problem["errors"][0]["pointer"], "/data/text");

    // A huge unknown query parameter name is not echoed in full either.
    let name = "q".repeat(6000);
    let r = s.call(Method::GET, &format!("{LOOSE}?{name}=1"), OPERATOR, None).await;
    let body = assert_problem(r, 400, "invalid-query").await;
    assert!(body.to_string().len() < 2_000, "{}", body.to_string().len());

    // Nor a huge malformed body.
    let r = s
        .req(Method::POST, LOOSE, Some(OPERATOR))
        .header("content-type", "application/json")
        .body(format!("{{\"a\": \"{}\" x", "y".repeat(300_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.bytes().await.unwrap().len() < 2_000);
}

#[tokio::test]
async fn library_messages_name_no_internals() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    s.call(
        Method::PUT,
        "/v1/tenants/acme/collections/devices/records/r1",
        &w.editor,
        Some(json!({"port": 1})),
    )
    .await;
    let probes = [
        (Method::POST, "/v1/tenants".to_owned(), json!("acme")),
        (Method::POST, "/v1/tenants".to_owned(), json!({"name": 5})),
        (Method::POST, "/v1/tenants".to_owned(), json!([1, 2])),
        (
            Method::POST,
            "/v1/tenants/acme/users".to_owned(),
            json!({"email": "a@b.c", "role": ["admin"]}),
        ),
        (
            Method::PUT,
            "/v1/tenants/acme/collections/devices/records/r1/lock".to_owned(),
            json!({"ttl_seconds": "soon"}),
        ),
        (
            Method::PUT,
            "/v1/tenants/acme/collections/devices/records/r1/lock".to_owned(),
            json!({"ttl_seconds": -1}),
        ),
        (
            Method::POST,
            "/v1/tenants/acme/collections".to_owned(),
            json!({"name": "remote", "schema": {"$ref": "https://example.com/schema.json"}}),
        ),
    ];
    for (method, path, body) in probes {
        let r = s.call(method.clone(), &path, OPERATOR, Some(body.clone())).await;
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(status.is_client_error(), "{method} {path} {body}: {status} {text}");
        for internal in [
            "u64",
            "u32",
            "usize",
            "i64",
            "struct ",
            "enum ",
            "::",
            ".rs",
            "arbitrary_precision",
            "feature",
            "resolver",
            "registry",
            "NewTenant",
            "NewUser",
        ] {
            assert!(
                !text.contains(internal),
                "{method} {path} {body}: `{internal}` in {text}"
            );
        }
    }
}
