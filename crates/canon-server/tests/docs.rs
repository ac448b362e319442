//! The API reference at `/docs` (served from the binary, same-origin only),
//! its vendored renderer, and the status-code page's truth: it lists as
//! answered exactly the statuses the flow can produce.

mod common;

use std::collections::BTreeSet;

use canon_http::catalogue::STATUSES;
use canon_http::operation;
use canon_server::app::ANSWERED_BY_HYPER;
use canon_server::assets::{IMMUTABLE, REDOC_JS, REDOC_LICENSE_PATH, REDOC_PATH};
use canon_server::openapi::{self, listed_statuses};
use canon_server::routes::ROUTES;
use common::{Server, header};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// The values of every `attr="…"` in `html`.
fn attribute_values<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
    let needle = format!(" {attr}=\"");
    html.match_indices(&needle)
        .filter_map(|(i, m)| {
            let rest = &html[i + m.len()..];
            rest.find('"').map(|end| &rest[..end])
        })
        .collect()
}

#[tokio::test]
async fn docs_reference_is_same_origin_html_with_a_policy() {
    let s = Server::start().await;
    let r = s.req(Method::GET, "/docs", None).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&r, "cache-control"), "public, no-cache");
    let etag = header(&r, "etag").to_owned();
    assert!(etag.starts_with('"'), "a strong tag: {etag}");
    let csp = header(&r, "content-security-policy").to_owned();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(!csp.contains("http"), "no other origin is allowed: {csp}");
    let html = r.text().await.unwrap();
    assert!(html.contains("<redoc spec-url=\"/openapi.json\""), "{html}");
    assert!(!html.contains("<script>"), "no inline script: {html}");
    let scripts = attribute_values(&html, "src");
    assert_eq!(scripts, [REDOC_PATH]);
    let links = attribute_values(&html, "href");
    for wanted in ["/docs/status-codes", "/openapi.json", "/", REDOC_LICENSE_PATH] {
        assert!(links.contains(&wanted), "{wanted} in {links:?}");
    }
    for url in scripts.iter().chain(&links) {
        let same_origin = url.starts_with('/') && !url.starts_with("//");
        assert!(same_origin || url.starts_with("data:"), "{url} leaves the server");
    }
    for other_host in ["http://", "https://", "//fonts", "googleapis", "cdn."] {
        assert!(!html.contains(other_host), "{other_host} in the page");
    }
    // Every URL the page names is served, without credentials.
    for url in scripts.iter().chain(&links).filter(|u| u.starts_with('/')) {
        let r = s.req(Method::GET, url, None).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{url}");
    }

    let r = s
        .req(Method::GET, "/docs", None)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&r, "etag"), etag);
    assert_eq!(header(&r, "cache-control"), "public, no-cache");
}

#[tokio::test]
async fn docs_renderer_is_javascript_immutable_and_conditional() {
    let s = Server::start().await;
    assert!(REDOC_PATH.starts_with("/docs/assets/redoc-"));
    let r = s.req(Method::GET, REDOC_PATH, None).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), "text/javascript; charset=utf-8");
    assert_eq!(header(&r, "cache-control"), IMMUTABLE);
    assert_eq!(IMMUTABLE, "public, max-age=31536000, immutable");
    let etag = header(&r, "etag").to_owned();
    assert!(etag.starts_with('"') && etag.len() > 10, "a strong tag: {etag}");
    assert_eq!(r.bytes().await.unwrap().as_ref(), REDOC_JS);

    // A browser's script request (`Accept: */*`) revalidates to 304 with the
    // same tag and the same caching.
    let r = s
        .req(Method::GET, REDOC_PATH, None)
        .header("accept", "*/*")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&r, "etag"), etag);
    assert_eq!(header(&r, "cache-control"), IMMUTABLE);
    assert!(r.bytes().await.unwrap().is_empty());

    // The gzip copy has its own tag, which revalidates too.
    let r = s
        .req(Method::GET, REDOC_PATH, None)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-encoding"), "gzip");
    let coded = header(&r, "etag").to_owned();
    assert_ne!(coded, etag);
    let r = s
        .req(Method::GET, REDOC_PATH, None)
        .header("accept-encoding", "gzip")
        .header("if-none-match", &coded)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

    let r = s.req(Method::HEAD, REDOC_PATH, None).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "etag"), etag);

    let r = s.req(Method::GET, REDOC_LICENSE_PATH, None).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), "text/plain; charset=utf-8");
    assert_eq!(header(&r, "cache-control"), IMMUTABLE);
    let text = r.text().await.unwrap();
    assert!(text.contains("The MIT License"), "{text}");
    assert!(text.contains("DOMPurify"), "{text}");

    // Another version's URL is no route; another media type is 406.
    let r = s
        .req(Method::GET, "/docs/assets/redoc-0.0.1/redoc.standalone.js", None)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = s
        .req(Method::GET, REDOC_PATH, None)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_ACCEPTABLE);
}

fn codes(statuses: &[Value], planned: bool) -> BTreeSet<u16> {
    statuses
        .iter()
        .filter(|s| s["planned"] == planned)
        .map(|s| s["status"].as_u64().unwrap() as u16)
        .collect()
}

#[tokio::test]
async fn docs_status_codes_lists_as_answered_exactly_what_the_flow_can_produce() {
    let s = Server::start().await;
    let r = s
        .req(Method::GET, "/docs/status-codes", None)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let statuses = body["statuses"].as_array().unwrap();

    // What the real flow answers: every operation and planned method driven
    // through its declared facts, plus requests outside any operation
    // (OPTIONS, unknown paths and methods, methods a route does not list).
    let mut flow = operation::explore_all(ROUTES).await;
    assert_eq!(flow, operation::produced(ROUTES), "the derivation is the flow");
    // hyper answers some requests itself before the flow runs; each of
    // those statuses is one the flow answers too, so they add nothing today.
    let hyper: BTreeSet<u16> = ANSWERED_BY_HYPER.iter().copied().collect();
    assert!(hyper.is_subset(&flow), "{hyper:?}");
    flow.extend(hyper);

    let answered = codes(statuses, false);
    assert_eq!(answered, flow, "the page's answered statuses are the flow's");

    // The page lists the whole catalogue, once each; the rest is planned.
    let catalogue: BTreeSet<u16> = STATUSES.iter().map(|s| s.code).collect();
    assert_eq!(statuses.len(), STATUSES.len());
    let planned = codes(statuses, true);
    assert_eq!(&answered | &planned, catalogue);
    assert!(answered.is_disjoint(&planned));
    // Today nothing: the device gateway answered the last ones (502, 504).
    assert_eq!(planned, BTreeSet::new());

    // Problem types of planned statuses are planned too.
    for p in body["problem_types"].as_array().unwrap() {
        let status = p["status"].as_u64().unwrap() as u16;
        assert_eq!(p["planned"], planned.contains(&status), "{p}");
    }

    // The API description promises nothing the page calls planned.
    let doc = openapi::document();
    for route in ROUTES {
        let methods = route.methods.iter().map(|m| &m.method).chain(route.planned);
        for m in methods {
            let listed = listed_statuses(&doc, route.pattern, m);
            assert!(listed.is_subset(&answered), "{m} {}: {listed:?}", route.pattern);
        }
    }

    let html = s
        .req(Method::GET, "/docs/status-codes", None)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for code in &planned {
        let row = html
            .split("<tr id=\"s")
            .find(|r| r.starts_with(&format!("{code}\"")))
            .and_then(|r| r.split("</tr>").next())
            .unwrap_or_else(|| panic!("no row for {code}"));
        assert!(row.contains("(planned)"), "{row}");
    }
    for code in &answered {
        let row = html
            .split("<tr id=\"s")
            .find(|r| r.starts_with(&format!("{code}\"")))
            .and_then(|r| r.split("</tr>").next())
            .unwrap_or_else(|| panic!("no row for {code}"));
        assert!(!row.contains("(planned)"), "{row}");
    }
}
