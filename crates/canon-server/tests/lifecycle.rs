//! Conditional requests, safe concurrent edits and the resource lifecycle
//! over HTTP: 200 201 204 301 304 307 308 409 410 412 422 423 428, each with
//! the headers it implies (CONTRACT.md §3 points 11–14, §4).

mod common;

use std::time::Duration;

use common::*;
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

const DEVICES: &str = "/v1/tenants/acme/collections/devices";
const RECORDS: &str = "/v1/tenants/acme/collections/devices/records";

/// Creates a record and returns its URL path and strong ETag.
async fn create(s: &Server, token: &str, data: Value) -> (String, String) {
    let r = s.call(Method::POST, RECORDS, token, Some(data)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    (header(&r, "location").to_owned(), header(&r, "etag").to_owned())
}

async fn patch(s: &Server, path: &str, token: &str, media: &str, body: &str, headers: &[(&str, &str)]) -> Response {
    let mut b = s
        .req(Method::PATCH, path, Some(token))
        .header("content-type", media)
        .body(body.to_owned());
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.send().await.expect("send")
}

fn is_strong_tag(t: &str) -> bool {
    t.len() > 2 && t.starts_with('"') && t.ends_with('"')
}

#[tokio::test]
async fn status_304_on_reads_with_the_headers_a_200_would_have() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let (url, etag) = create(&s, &w.editor, json!({"port": 1})).await;
    assert!(is_strong_tag(&etag), "{etag}");

    let r = s.call(Method::GET, &url, &w.viewer, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "etag"), etag);
    assert_eq!(header(&r, "cache-control"), "private, no-cache");
    let last_modified = header(&r, "last-modified").to_owned();
    assert!(httpdate::parse_http_date(&last_modified).is_ok(), "{last_modified}");

    // If-None-Match uses weak comparison: the tag and its weak form both match.
    let weak = format!("W/{etag}");
    let listed = format!("\"other\", {etag}");
    for tag in [etag.as_str(), weak.as_str(), listed.as_str(), "*"] {
        for method in [Method::GET, Method::HEAD] {
            let r = s
                .send(method.clone(), &url, &w.viewer, &[("if-none-match", tag)], None)
                .await;
            assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{method} If-None-Match: {tag}");
            assert_eq!(header(&r, "etag"), etag);
            assert_eq!(header(&r, "last-modified"), last_modified);
            assert_eq!(header(&r, "cache-control"), "private, no-cache");
            assert!(r.bytes().await.unwrap().is_empty());
        }
    }
    let r = s
        .send(Method::GET, &url, &w.viewer, &[("if-none-match", "\"other\"")], None)
        .await;
    assert_eq!(r.status(), StatusCode::OK);

    // If-Modified-Since holds at the last modification, not before it...
    let r = s
        .send(
            Method::GET,
            &url,
            &w.viewer,
            &[("if-modified-since", &last_modified)],
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let epoch = "Thu, 01 Jan 1970 00:00:00 GMT";
    let r = s
        .send(Method::GET, &url, &w.viewer, &[("if-modified-since", epoch)], None)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    // ...and is ignored when If-None-Match is present.
    let r = s
        .send(
            Method::GET,
            &url,
            &w.viewer,
            &[("if-none-match", "\"other\""), ("if-modified-since", &last_modified)],
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);

    // Lists carry weak tags; a 304 keeps Vary: Accept.
    let r = s.call(Method::GET, RECORDS, &w.viewer, None).await;
    let list_tag = header(&r, "etag").to_owned();
    assert!(list_tag.starts_with("W/\""), "{list_tag}");
    assert_eq!(header(&r, "vary"), "Accept, Accept-Encoding");
    let r = s
        .send(Method::GET, RECORDS, &w.viewer, &[("if-none-match", &list_tag)], None)
        .await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&r, "etag"), list_tag);
    assert_eq!(header(&r, "vary"), "Accept, Accept-Encoding");
    create(&s, &w.editor, json!({"port": 2})).await;
    let r = s
        .send(Method::GET, RECORDS, &w.viewer, &[("if-none-match", &list_tag)], None)
        .await;
    assert_eq!(r.status(), StatusCode::OK, "a write changes the list's tag");
    assert_ne!(header(&r, "etag"), list_tag);

    let r = s.call(Method::GET, DEVICES, &w.viewer, None).await;
    let collection_tag = header(&r, "etag").to_owned();
    assert!(
        is_strong_tag(&collection_tag),
        "collections carry strong tags: {collection_tag}"
    );
    let r = s
        .send(
            Method::GET,
            DEVICES,
            &w.viewer,
            &[("if-none-match", &collection_tag)],
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn status_412_when_a_precondition_fails_and_404_beats_it() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let (url, etag) = create(&s, &w.editor, json!({"port": 1})).await;

    // If-Match compares strongly: the weak form of the current tag fails.
    let weak = format!("W/{etag}");
    for tag in [weak.as_str(), "\"stale\""] {
        let r = s
            .send(
                Method::PUT,
                &url,
                &w.editor,
                &[("if-match", tag)],
                Some(json!({"port": 2})),
            )
            .await;
        assert_eq!(header(&r, "etag"), etag, "412 names the current tag");
        assert_problem(r, 412, "precondition-failed").await;
    }
    // The same on reads and deletes; nothing changed.
    let r = s
        .send(Method::GET, &url, &w.viewer, &[("if-match", "\"stale\"")], None)
        .await;
    assert_problem(r, 412, "precondition-failed").await;
    let r = s
        .send(Method::DELETE, &url, &w.editor, &[("if-match", "\"stale\"")], None)
        .await;
    assert_problem(r, 412, "precondition-failed").await;
    let body = s.ok_json(Method::GET, &url, &w.viewer, None).await;
    assert_eq!(body["data"]["port"], 1);

    // If-Match: * means "exists".
    let r = s
        .send(
            Method::PUT,
            &url,
            &w.editor,
            &[("if-match", "*")],
            Some(json!({"port": 3})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let fresh = format!("{RECORDS}/fresh-id");
    let r = s
        .send(
            Method::PUT,
            &fresh,
            &w.editor,
            &[("if-match", "*")],
            Some(json!({"port": 3})),
        )
        .await;
    assert_problem(r, 412, "precondition-failed").await;

    // If-None-Match: * makes PUT create-only.
    let r = s
        .send(
            Method::PUT,
            &fresh,
            &w.editor,
            &[("if-none-match", "*")],
            Some(json!({"port": 4})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "location"), fresh);
    let r = s
        .send(
            Method::PUT,
            &fresh,
            &w.editor,
            &[("if-none-match", "*")],
            Some(json!({"port": 5})),
        )
        .await;
    assert_problem(r, 412, "precondition-failed").await;

    // If-Unmodified-Since before the last change fails a write.
    let epoch = "Thu, 01 Jan 1970 00:00:00 GMT";
    let r = s
        .send(
            Method::DELETE,
            &fresh,
            &w.editor,
            &[("if-unmodified-since", epoch)],
            None,
        )
        .await;
    assert_problem(r, 412, "precondition-failed").await;

    // Preconditions are not evaluated when the answer is an error anyway.
    let missing = format!("{RECORDS}/never-existed");
    let r = s
        .send(Method::DELETE, &missing, &w.editor, &[("if-match", "\"x\"")], None)
        .await;
    assert_problem(r, 404, "not-found").await;
    let r = s
        .send(Method::GET, &missing, &w.viewer, &[("if-none-match", "*")], None)
        .await;
    assert_problem(r, 404, "not-found").await;
    let r = s.call(Method::DELETE, &fresh, &w.editor, None).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = s
        .send(Method::DELETE, &fresh, &w.editor, &[("if-match", "\"x\"")], None)
        .await;
    assert_problem(r, 410, "gone").await;
}

#[tokio::test]
async fn status_200_put_and_patch_answer_the_new_representation() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let (url, etag) = create(&s, &w.editor, json!({"port": 1, "serial": "S1"})).await;
    create(&s, &w.editor, json!({"port": 9, "serial": "S9"})).await;

    let r = s
        .send(
            Method::PUT,
            &url,
            &w.editor,
            &[("if-match", &etag)],
            Some(json!({"port": 2})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-location"), url);
    let put_tag = header(&r, "etag").to_owned();
    assert!(is_strong_tag(&put_tag) && put_tag != etag);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["data"].clone(), body["version"].clone()),
        (json!({"port": 2}), json!(2))
    );

    // Merge patch (also as plain JSON), then JSON Patch.
    let r = patch(
        &s,
        &url,
        &w.editor,
        "application/merge-patch+json",
        r#"{"serial":"S2"}"#,
        &[],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-location"), url);
    assert_ne!(header(&r, "etag"), put_tag);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["data"], json!({"port": 2, "serial": "S2"}));
    let r = patch(
        &s,
        &url,
        &w.editor,
        "application/json",
        r#"{"serial":null,"port":3}"#,
        &[],
    )
    .await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["data"], json!({"port": 3}));
    let ops = r#"[{"op":"test","path":"/port","value":3},{"op":"replace","path":"/port","value":4}]"#;
    let r = patch(&s, &url, &w.editor, "application/json-patch+json", ops, &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["data"]["port"].clone(), body["version"].clone()),
        (json!(4), json!(5))
    );

    // A failing test op is 409 and changes nothing; so is an impossible op.
    let r = patch(&s, &url, &w.editor, "application/json-patch+json", ops, &[]).await;
    let problem = assert_problem(r, 409, "patch-test-failed").await;
    assert_eq!(problem["errors"][0]["pointer"], "/0");
    let r = patch(
        &s,
        &url,
        &w.editor,
        "application/json-patch+json",
        r#"[{"op":"remove","path":"/nope"}]"#,
        &[],
    )
    .await;
    assert_problem(r, 409, "state-conflict").await;
    // The schema and unique fields judge the patched result.
    let r = patch(
        &s,
        &url,
        &w.editor,
        "application/merge-patch+json",
        r#"{"port":"x"}"#,
        &[],
    )
    .await;
    let problem = assert_problem(r, 400, "schema-violation").await;
    assert_eq!(problem["errors"][0]["pointer"], "/data/port");
    let r = patch(
        &s,
        &url,
        &w.editor,
        "application/merge-patch+json",
        r#"{"port":null}"#,
        &[],
    )
    .await;
    assert_problem(r, 400, "schema-violation").await;
    let r = patch(
        &s,
        &url,
        &w.editor,
        "application/merge-patch+json",
        r#"{"serial":"S9"}"#,
        &[],
    )
    .await;
    let problem = assert_problem(r, 409, "unique-conflict").await;
    assert_eq!(problem["errors"][0]["pointer"], "/data/serial");
    let body = s.ok_json(Method::GET, &url, &w.viewer, None).await;
    assert_eq!(
        (body["data"].clone(), body["version"].clone()),
        (json!({"port": 4}), json!(5))
    );

    // Malformed patch documents are 400; unsupported media types 415.
    let r = patch(
        &s,
        &url,
        &w.editor,
        "application/json-patch+json",
        r#"{"op":"add"}"#,
        &[],
    )
    .await;
    assert_problem(r, 400, "malformed-body").await;
    let r = patch(&s, &url, &w.editor, "text/plain", "port=5", &[]).await;
    assert_eq!(
        header(&r, "accept-patch"),
        "application/merge-patch+json, application/json-patch+json, application/json"
    );
    assert_problem(r, 415, "unsupported-media-type").await;
    // PATCH does not create.
    let r = patch(
        &s,
        &format!("{RECORDS}/nobody"),
        &w.editor,
        "application/json",
        "{}",
        &[],
    )
    .await;
    assert_problem(r, 404, "not-found").await;
}

#[tokio::test]
async fn prefer_return_minimal_answers_without_a_body() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let r = s
        .send(
            Method::POST,
            RECORDS,
            &w.editor,
            &[("prefer", "return=minimal")],
            Some(json!({"port": 1})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let url = header(&r, "location").to_owned();
    assert!(url.starts_with(RECORDS));
    let etag = header(&r, "etag").to_owned();
    assert!(is_strong_tag(&etag));
    assert_eq!(header(&r, "preference-applied"), "return=minimal");
    assert!(r.bytes().await.unwrap().is_empty());

    let r = s
        .send(
            Method::PUT,
            &url,
            &w.editor,
            &[("prefer", "return=minimal")],
            Some(json!({"port": 2})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "content-location"), url);
    let new_tag = header(&r, "etag").to_owned();
    assert!(is_strong_tag(&new_tag) && new_tag != etag);
    assert!(r.bytes().await.unwrap().is_empty());
    // The tag it gave is the record's tag.
    let r = s
        .send(Method::GET, &url, &w.viewer, &[("if-none-match", &new_tag)], None)
        .await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn status_428_when_the_collection_requires_if_match() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let (url, _) = create(&s, &w.editor, json!({"port": 1})).await;
    let r = patch(
        &s,
        DEVICES,
        &w.admin,
        "application/merge-patch+json",
        r#"{"require_if_match":true}"#,
        &[],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["require_if_match"], true);

    let r = s.call(Method::PUT, &url, &w.editor, Some(json!({"port": 2}))).await;
    let problem = assert_problem(r, 428, "precondition-required").await;
    assert!(problem["detail"].as_str().unwrap().contains("If-Match"));
    let r = patch(
        &s,
        &url,
        &w.editor,
        "application/merge-patch+json",
        r#"{"port":2}"#,
        &[],
    )
    .await;
    assert_problem(r, 428, "precondition-required").await;
    let r = s.call(Method::DELETE, &url, &w.editor, None).await;
    assert_problem(r, 428, "precondition-required").await;

    // Resubmitting with If-Match works; creating needs no If-Match; reads are unaffected.
    let r = s.call(Method::GET, &url, &w.viewer, None).await;
    let etag = header(&r, "etag").to_owned();
    let r = s
        .send(
            Method::PUT,
            &url,
            &w.editor,
            &[("if-match", &etag)],
            Some(json!({"port": 2})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = s
        .call(
            Method::PUT,
            &format!("{RECORDS}/new-one"),
            &w.editor,
            Some(json!({"port": 3})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // 404 beats 428.
    let r = s
        .call(Method::DELETE, &format!("{RECORDS}/nobody"), &w.editor, None)
        .await;
    assert_problem(r, 404, "not-found").await;
}

#[tokio::test]
async fn status_423_while_another_caller_holds_the_lock() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let (bob_id, bob) = add_user(&s, "acme", "bob@acme.example", "editor").await;
    let (url, _) = create(&s, &w.editor, json!({"port": 1})).await;
    let lock = format!("{url}/lock");

    // No lock yet.
    let r = s.call(Method::GET, &lock, &w.editor, None).await;
    assert_problem(r, 404, "not-found").await;

    // The editor takes it (201), renews it (200).
    let r = s
        .call(Method::PUT, &lock, &w.editor, Some(json!({"ttl_seconds": 60})))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "location"), lock);
    let taken: Value = r.json().await.unwrap();
    assert_eq!(taken["holder"], w.editor_id.as_str());
    let r = s
        .call(Method::PUT, &lock, &w.editor, Some(json!({"ttl_seconds": 120})))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-location"), lock);
    let renewed: Value = r.json().await.unwrap();
    assert_eq!(renewed["acquired_at"], taken["acquired_at"]);
    assert!(renewed["expires_at"].as_str() > taken["expires_at"].as_str());
    let shown = s.ok_json(Method::GET, &lock, &bob, None).await;
    assert_eq!(shown, renewed);

    // Every other caller's write is 423 naming the holder and the expiry.
    let writes = [
        s.call(Method::PUT, &url, &bob, Some(json!({"port": 2}))).await,
        patch(&s, &url, &bob, "application/merge-patch+json", r#"{"port":2}"#, &[]).await,
        s.call(Method::DELETE, &url, &bob, None).await,
        s.call(Method::PUT, &lock, &bob, Some(json!({"ttl_seconds": 5}))).await,
        s.call(Method::DELETE, &lock, &bob, None).await,
        s.call(Method::PUT, &url, &w.admin, Some(json!({"port": 2}))).await,
    ];
    for r in writes {
        let problem = assert_problem(r, 423, "locked").await;
        assert_eq!(problem["lock"]["holder"], w.editor_id.as_str());
        assert_eq!(problem["lock"]["expires_at"], renewed["expires_at"]);
    }
    // Reads go on; the holder writes.
    assert_eq!(s.call(Method::GET, &url, &bob, None).await.status(), StatusCode::OK);
    let r = s.call(Method::PUT, &url, &w.editor, Some(json!({"port": 3}))).await;
    assert_eq!(r.status(), StatusCode::OK);

    // The holder releases (204); then bob can lock, and a tenant admin breaks bob's lock.
    let r = s.call(Method::DELETE, &lock, &w.editor, None).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = s.call(Method::PUT, &lock, &bob, Some(json!({"ttl_seconds": 60}))).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = s.call(Method::PUT, &url, &w.editor, Some(json!({"port": 4}))).await;
    let problem = assert_problem(r, 423, "locked").await;
    assert_eq!(problem["lock"]["holder"], bob_id.as_str());
    let r = s.call(Method::DELETE, &lock, &w.admin, None).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = s.call(Method::PUT, &url, &w.editor, Some(json!({"port": 4}))).await;
    assert_eq!(r.status(), StatusCode::OK);

    // A lease expires by itself.
    let r = s.call(Method::PUT, &lock, &bob, Some(json!({"ttl_seconds": 1}))).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = s.call(Method::PUT, &url, &w.editor, Some(json!({"port": 5}))).await;
    assert_problem(r, 423, "locked").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = s.call(Method::PUT, &url, &w.editor, Some(json!({"port": 5}))).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = s.call(Method::GET, &lock, &w.editor, None).await;
    assert_problem(r, 404, "not-found").await;

    // Bad requests: a viewer (403), bad TTLs (400), a missing record (404).
    let r = s
        .call(Method::PUT, &lock, &w.viewer, Some(json!({"ttl_seconds": 5})))
        .await;
    assert_problem(r, 403, "forbidden").await;
    for bad in [json!({"ttl_seconds": 0}), json!({"ttl_seconds": 100000})] {
        let r = s.call(Method::PUT, &lock, &w.editor, Some(bad)).await;
        assert_problem(r, 400, "invalid-field").await;
    }
    let r = s.call(Method::PUT, &lock, &w.editor, Some(json!({}))).await;
    assert_problem(r, 400, "malformed-body").await;
    let r = s
        .call(
            Method::PUT,
            &format!("{RECORDS}/nobody/lock"),
            &w.editor,
            Some(json!({"ttl_seconds": 5})),
        )
        .await;
    assert_problem(r, 404, "not-found").await;
}

#[tokio::test]
async fn status_301_and_308_after_renames() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let (url, _) = create(&s, &w.editor, json!({"port": 1})).await;
    let id = url.rsplit('/').next().unwrap().to_owned();

    let r = patch(
        &s,
        DEVICES,
        &w.admin,
        "application/merge-patch+json",
        r#"{"name":"probes"}"#,
        &[],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-location"), "/v1/tenants/acme/collections/probes");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["name"], "probes");

    // GET/HEAD under the old name: 301 to the same path under the new one, query kept.
    let probes = "/v1/tenants/acme/collections/probes";
    for (path, target) in [
        (DEVICES.to_owned(), probes.to_owned()),
        (url.clone(), format!("{probes}/records/{id}")),
        (format!("{RECORDS}?limit=5"), format!("{probes}/records?limit=5")),
    ] {
        for method in [Method::GET, Method::HEAD] {
            let r = s.call(method.clone(), &path, &w.viewer, None).await;
            assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY, "{method} {path}");
            assert_eq!(header(&r, "location"), target);
        }
    }
    // Other methods: 308, so the method and body are kept.
    let r = s.call(Method::PUT, &url, &w.editor, Some(json!({"port": 2}))).await;
    assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(header(&r, "location"), format!("{probes}/records/{id}"));
    let r = s.call(Method::POST, RECORDS, &w.editor, Some(json!({"port": 2}))).await;
    assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(header(&r, "location"), format!("{probes}/records"));
    // Following the redirect works.
    let r = s
        .call(Method::GET, &format!("{probes}/records/{id}"), &w.viewer, None)
        .await;
    assert_eq!(r.status(), StatusCode::OK);

    // A second rename: both old names lead straight to the newest.
    let r = patch(
        &s,
        probes,
        &w.admin,
        "application/merge-patch+json",
        r#"{"name":"gauges"}"#,
        &[],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    for old in [DEVICES, probes] {
        let r = s.call(Method::GET, old, &w.viewer, None).await;
        assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(header(&r, "location"), "/v1/tenants/acme/collections/gauges");
    }

    // A new collection may take an old name: that redirect ends.
    s.ok_json(
        Method::POST,
        "/v1/tenants/acme/collections",
        &w.admin,
        Some(json!({"name": "devices"})),
    )
    .await;
    let r = s.call(Method::GET, DEVICES, &w.viewer, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = s.call(Method::GET, probes, &w.viewer, None).await;
    assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);

    // Renaming onto a taken name is 409; bad names and settings are 400; non-admins 403.
    let r = patch(
        &s,
        probes,
        &w.admin,
        "application/merge-patch+json",
        r#"{"name":"devices"}"#,
        &[],
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::PERMANENT_REDIRECT,
        "the old name still redirects a PATCH"
    );
    let gauges = "/v1/tenants/acme/collections/gauges";
    let r = patch(
        &s,
        gauges,
        &w.admin,
        "application/merge-patch+json",
        r#"{"name":"devices"}"#,
        &[],
    )
    .await;
    let problem = assert_problem(r, 409, "unique-conflict").await;
    assert_eq!(problem["errors"][0]["pointer"], "/name");
    for bad in [
        r#"{"name":"Bad Name"}"#,
        r#"{"schema":{"type":7}}"#,
        r#"{"unique":null}"#,
        r#"{"id":"x"}"#,
    ] {
        let r = patch(&s, gauges, &w.admin, "application/merge-patch+json", bad, &[]).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    let r = patch(
        &s,
        gauges,
        &w.editor,
        "application/merge-patch+json",
        r#"{"name":"x"}"#,
        &[],
    )
    .await;
    assert_problem(r, 403, "forbidden").await;
}

#[tokio::test]
async fn status_307_from_the_current_tenant_alias() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    for (path, target) in [
        ("/v1/tenants/current", "/v1/tenants/acme"),
        (
            "/v1/tenants/current/collections/devices/records?limit=2",
            "/v1/tenants/acme/collections/devices/records?limit=2",
        ),
    ] {
        let r = s.call(Method::GET, path, &w.viewer, None).await;
        assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT, "{path}");
        assert_eq!(header(&r, "location"), target);
        assert_eq!(header(&r, "vary"), "Authorization");
    }
    // Any method; the role is still checked first.
    let r = s
        .call(
            Method::POST,
            "/v1/tenants/current/collections/devices/records",
            &w.editor,
            Some(json!({"port": 1})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
    let r = s
        .call(
            Method::POST,
            "/v1/tenants/current/collections/devices/records",
            &w.viewer,
            Some(json!({"port": 1})),
        )
        .await;
    assert_problem(r, 403, "forbidden").await;
    // The operator has no tenant of its own; nobody may name a tenant "current".
    let r = s.call(Method::GET, "/v1/tenants/current", OPERATOR, None).await;
    assert_problem(r, 404, "not-found").await;
    let r = s
        .call(Method::POST, "/v1/tenants", OPERATOR, Some(json!({"name": "current"})))
        .await;
    assert_problem(r, 400, "invalid-field").await;
}

#[tokio::test]
async fn status_410_for_deleted_collections_and_users_409_for_non_empty() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let (url, _) = create(&s, &w.editor, json!({"port": 1})).await;

    let r = s.call(Method::DELETE, DEVICES, &w.admin, None).await;
    let problem = assert_problem(r, 409, "state-conflict").await;
    assert!(problem["detail"].as_str().unwrap().contains("force=true"));
    assert_eq!(
        s.call(Method::DELETE, &url, &w.editor, None).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        s.call(Method::DELETE, DEVICES, &w.admin, None).await.status(),
        StatusCode::NO_CONTENT
    );
    for path in [DEVICES, RECORDS, url.as_str()] {
        let r = s.call(Method::GET, path, &w.viewer, None).await;
        assert_problem(r, 410, "gone").await;
    }

    let (id, token) = add_user(&s, "acme", "leaver@acme.example", "viewer").await;
    let user = format!("/v1/tenants/acme/users/{id}");
    assert_eq!(
        s.call(Method::DELETE, &user, &w.admin, None).await.status(),
        StatusCode::NO_CONTENT
    );
    let r = s.call(Method::GET, &user, &w.admin, None).await;
    assert_problem(r, 410, "gone").await;
    let r = s.call(Method::GET, "/v1/tenants/acme", &token, None).await;
    assert_problem(r, 401, "invalid-token").await;
}

#[tokio::test]
async fn idempotency_keys_replay_refuse_reuse_and_refuse_overlap() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let keyed = |token: &str, key: &str, body: Value| {
        s.req(Method::POST, RECORDS, Some(token))
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };

    let first = keyed(&w.editor, "\"order-1\"", json!({"port": 1})).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let (location, etag) = (header(&first, "location").to_owned(), header(&first, "etag").to_owned());
    assert_eq!(header(&first, "idempotent-replayed"), "");
    let first_body = first.bytes().await.unwrap();

    // A retry replays status, headers and body; nothing new is created.
    let again = keyed(&w.editor, "\"order-1\"", json!({"port": 1})).await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(header(&again, "location"), location);
    assert_eq!(header(&again, "etag"), etag);
    assert_eq!(header(&again, "idempotent-replayed"), "true");
    assert!(!header(&again, "x-request-id").is_empty());
    assert_eq!(again.bytes().await.unwrap(), first_body);
    let list = s.ok_json(Method::GET, RECORDS, &w.viewer, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    // The same key with another body is 422; another caller's key is its own.
    let r = keyed(&w.editor, "\"order-1\"", json!({"port": 2})).await.unwrap();
    let problem = assert_problem(r, 422, "idempotency-key-reused").await;
    assert!(problem["detail"].as_str().unwrap().contains("different request"));
    let r = keyed(&w.admin, "\"order-1\"", json!({"port": 1})).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_ne!(header(&r, "location"), location);

    // Outcomes are replayed too, failures a retry may fix are not.
    let r = keyed(&w.editor, "dup", json!({"port": 1, "serial": "S1"}))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = keyed(&w.editor, "dup-2", json!({"port": 2, "serial": "S1"}))
        .await
        .unwrap();
    assert_problem(r, 409, "unique-conflict").await;
    let r = keyed(&w.editor, "dup-2", json!({"port": 2, "serial": "S1"}))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(header(&r, "idempotent-replayed"), "true");
    assert_eq!(header(&r, "content-type"), "application/problem+json");
    // The body is the first response's, byte for byte: its request_id names
    // the request that did the work, X-Request-Id this retry.
    let replayed: Value = r.json().await.unwrap();
    assert_eq!(replayed["type"], "/problems/unique-conflict");

    // A retry while the first request is still running is 409. Hold a claim
    // in the ledger exactly as a running request would.
    let (head, ()) = http::Request::builder()
        .method(http::Method::POST)
        .uri(RECORDS)
        .body(())
        .unwrap()
        .into_parts();
    let body = br#"{"port":7}"#;
    let principal = canon_http::access::Principal::Member {
        key_id: "k".into(),
        tenant: "acme".into(),
        user_id: w.editor_id.as_str().into(),
        role: canon_http::access::TenantRole::Editor,
    };
    let request = canon_server::idempotency::ledger_request(&canon_http::flow::Keyed {
        key: "slow",
        principal: &principal,
        head: &head,
        body,
    });
    let claim = s
        .store
        .claim_idempotency(&request, Duration::from_secs(60), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(claim, canon_store::IdempotencyClaim::Claimed);
    let r = s
        .req(Method::POST, RECORDS, Some(&w.editor))
        .header("idempotency-key", "slow")
        .header("content-type", "application/json")
        .body(&body[..])
        .send()
        .await
        .unwrap();
    assert_problem(r, 409, "idempotency-key-in-flight").await;

    // Malformed keys are 400.
    let r = keyed(&w.editor, "\"unterminated", json!({"port": 1})).await.unwrap();
    assert_problem(r, 400, "invalid-header").await;
}

#[tokio::test]
async fn concurrent_retries_with_one_key_create_one_record() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let req = s
            .req(Method::POST, RECORDS, Some(&w.editor))
            .header("idempotency-key", "\"burst\"")
            .json(&json!({"port": 1}));
        tasks.push(tokio::spawn(req.send()));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap().unwrap().status().as_u16());
    }
    assert!(statuses.iter().all(|s| *s == 201 || *s == 409), "{statuses:?}");
    assert!(statuses.contains(&201));
    let list = s.ok_json(Method::GET, RECORDS, &w.viewer, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{statuses:?}");
}

#[tokio::test]
async fn concurrent_writers_with_one_if_match_have_exactly_one_winner() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let (url, mut etag) = create(&s, &w.editor, json!({"port": 0})).await;
    for round in 1..=5 {
        let mut tasks = Vec::new();
        for writer in 0..24 {
            let mut req = if writer % 2 == 0 {
                s.req(Method::PUT, &url, Some(&w.editor))
                    .json(&json!({"port": round * 100 + writer}))
            } else {
                s.req(Method::PATCH, &url, Some(&w.editor))
                    .header("content-type", "application/merge-patch+json")
                    .body(json!({"port": round * 100 + writer}).to_string())
            };
            req = req.header("if-match", &etag);
            tasks.push(tokio::spawn(req.send()));
        }
        let mut winners = Vec::new();
        for t in tasks {
            let r = t.await.unwrap().unwrap();
            match r.status() {
                StatusCode::OK => winners.push(header(&r, "etag").to_owned()),
                StatusCode::PRECONDITION_FAILED => {}
                other => panic!("round {round}: unexpected {other}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one 200 per version");
        let current = s.call(Method::GET, &url, &w.viewer, None).await;
        assert_eq!(header(&current, "etag"), winners[0]);
        let body: Value = current.json().await.unwrap();
        assert_eq!(body["version"], round + 1);
        etag = winners.remove(0);
    }
}
