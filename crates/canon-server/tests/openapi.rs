//! The API description: generated from the route table, its statuses
//! derived from the flow, committed for review, served as written.

mod common;

use std::collections::BTreeSet;

use canon_http::operation;
use canon_server::openapi::{self, listed_statuses, openapi_path};
use canon_server::routes::ROUTES;
use common::{Server, header};
use reqwest::{Method, StatusCode};
use serde_json::Value;

fn http_method(m: &http::Method) -> Method {
    Method::from_bytes(m.as_str().as_bytes()).unwrap()
}

#[test]
fn openapi_every_route_and_method_is_documented_and_nothing_else() {
    let doc = openapi::document();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let expected: BTreeSet<String> = ROUTES.iter().map(|r| openapi_path(r.pattern)).collect();
    let documented: BTreeSet<String> = paths.keys().cloned().collect();
    assert_eq!(documented, expected);
    for route in ROUTES {
        let item = &paths[&openapi_path(route.pattern)];
        let mut methods: BTreeSet<String> = route
            .methods
            .iter()
            .map(|m| m.method.as_str().to_ascii_lowercase())
            .collect();
        methods.extend(route.planned.iter().map(|m| m.as_str().to_ascii_lowercase()));
        let listed: BTreeSet<String> = item
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "parameters")
            .cloned()
            .collect();
        assert_eq!(listed, methods, "{}", route.pattern);
        for m in route.planned {
            let op = &item[m.as_str().to_ascii_lowercase()];
            assert_eq!(op["x-canon-planned"], true, "{m} {}", route.pattern);
            let codes = listed_statuses(&doc, route.pattern, m);
            assert!(
                codes.contains(&501) && codes.iter().all(|c| *c >= 400),
                "{m} {}: {codes:?}",
                route.pattern
            );
        }
    }
}

#[tokio::test]
async fn openapi_each_operation_lists_exactly_what_its_nodes_can_produce() {
    let doc = openapi::document();
    for route in ROUTES {
        for spec in route.methods {
            let derived = operation::statuses(route, spec);
            assert_eq!(
                listed_statuses(&doc, route.pattern, &spec.method),
                derived,
                "{} {}",
                spec.method,
                route.pattern
            );
            // The derivation agrees with the real flow driven through every
            // fact the route table declares.
            assert_eq!(
                operation::explore(route, spec).await,
                derived,
                "{} {}",
                spec.method,
                route.pattern
            );
        }
        for m in route.planned {
            assert_eq!(
                operation::explore_planned(route, m).await,
                listed_statuses(&doc, route.pattern, m),
                "{m} {}",
                route.pattern
            );
        }
    }
}

/// Every `$ref` in `value` names something in `doc`.
fn check_refs(doc: &Value, value: &Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("external ref {r}"));
                assert!(doc.pointer(pointer).is_some(), "dangling {r}");
            }
            map.values().for_each(|v| check_refs(doc, v));
        }
        Value::Array(items) => items.iter().for_each(|v| check_refs(doc, v)),
        _ => {}
    }
}

#[test]
fn openapi_every_reference_resolves_and_every_error_is_a_problem() {
    let doc = openapi::document();
    check_refs(&doc, &doc);
    for (name, response) in doc["components"]["responses"].as_object().unwrap() {
        assert!(
            response["content"]["application/problem+json"]["example"]["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("/problems/")),
            "{name}"
        );
        assert!(response["headers"]["X-Request-Id"].is_object(), "{name}");
    }
    let unauthorized = &doc["components"]["responses"]["Problem401"];
    assert!(unauthorized["headers"]["WWW-Authenticate"].is_object());
    // Creates link to what they created.
    let links =
        &doc["paths"]["/v1/tenants/{tenant}/collections/{collection}/records"]["post"]["responses"]["201"]["links"];
    assert_eq!(links["get-record"]["parameters"]["id"], "$response.body#/id");
}

#[test]
fn openapi_the_committed_description_is_the_generated_one() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    let generated = serde_json::to_string_pretty(&openapi::document()).unwrap() + "\n";
    assert!(
        committed == generated,
        "docs/openapi.json differs from what the code generates: run `cargo run -- openapi > docs/openapi.json` and review the diff"
    );
}

#[tokio::test]
async fn openapi_is_served_public_cached_and_conditional() {
    let s = Server::start().await;
    let r = s.req(Method::GET, "/openapi.json", None).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), "application/json");
    assert_eq!(header(&r, "cache-control"), "public, max-age=3600");
    let etag = header(&r, "etag").to_owned();
    assert!(etag.starts_with('"'), "a strong tag: {etag}");
    let served: Value = r.json().await.unwrap();
    assert_eq!(served, openapi::document());

    let r = s
        .req(Method::GET, "/openapi.json", None)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    // A 304 carries the caching a 200 would have (RFC 9110 §15.4.5).
    assert_eq!(header(&r, "cache-control"), "public, max-age=3600");
    let r = s
        .req(http_method(&http::Method::POST), "/openapi.json", None)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&r, "allow"), "GET, HEAD, OPTIONS");
}

#[tokio::test]
async fn index_links_the_reference_status_codes_probes_and_version() {
    let s = Server::start().await;
    let r = s
        .req(Method::GET, "/", None)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "cache-control"), "public, max-age=3600");
    assert!(header(&r, "vary").contains("Accept"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["links"]["reference"], "/docs");
    assert_eq!(body["links"]["openapi"], "/openapi.json");
    assert_eq!(body["links"]["status-codes"], "/docs/status-codes");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    // Every link works without credentials.
    for (_, href) in body["links"].as_object().unwrap() {
        let r = s.req(Method::GET, href.as_str().unwrap(), None).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{href}");
    }
    let r = s
        .req(Method::GET, "/", None)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(header(&r, "content-type").starts_with("text/html"));
    let html = r.text().await.unwrap();
    assert!(html.contains("href=\"/openapi.json\""));
    assert!(html.contains("href=\"/docs\""));
}
