//! Every single resource (tenant, user, API key, collection, record) has
//! strong validators: `ETag` and `Last-Modified` on GET and on 2xx writes,
//! 304 on a matching `If-None-Match`, and `If-Match` /
//! `If-Unmodified-Since` guarding its writes (412 when stale).

mod common;

use common::*;
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

const TENANT: &str = "/v1/tenants/acme";
const DEVICES: &str = "/v1/tenants/acme/collections/devices";

fn is_strong_tag(t: &str) -> bool {
    t.len() > 2 && t.starts_with('"') && t.ends_with('"')
}

/// Asserts `r` carries a strong `ETag`, a `Last-Modified` and the
/// `Cache-Control` of private, revalidated representations; returns the tag.
fn validators_of(r: &Response, what: &str) -> String {
    let etag = header(r, "etag").to_owned();
    assert!(is_strong_tag(&etag), "{what}: strong ETag, got {etag:?}");
    assert!(
        httpdate::parse_http_date(header(r, "last-modified")).is_ok(),
        "{what}: Last-Modified {:?}",
        header(r, "last-modified")
    );
    assert_eq!(header(r, "cache-control"), "private, no-cache", "{what}");
    etag
}

/// GET `path` answers 200 with strong validators, and 304 with the same tag
/// to `If-None-Match` carrying it. Returns the tag.
async fn get_and_revalidate(s: &Server, path: &str, token: &str) -> String {
    let r = s.send(Method::GET, path, token, &[], None).await;
    assert_eq!(r.status(), StatusCode::OK, "GET {path}");
    let etag = validators_of(&r, path);
    let r = s
        .send(Method::GET, path, token, &[("if-none-match", &etag)], None)
        .await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "If-None-Match on {path}");
    assert_eq!(header(&r, "etag"), etag);
    let r = s
        .send(Method::HEAD, path, token, &[("if-none-match", &etag)], None)
        .await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "If-None-Match on HEAD {path}");
    etag
}

/// The user id and a token of a new user with `role`.
async fn user(s: &Server, email: &str, role: &str) -> (String, String) {
    add_user(s, "acme", email, role).await
}

#[tokio::test]
async fn tenants_have_strong_validators() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let etag = get_and_revalidate(&s, TENANT, OPERATOR).await;
    // The tenant's own members read it with the same validators.
    assert_eq!(get_and_revalidate(&s, TENANT, &w.viewer).await, etag);

    // A new tenant's 201 carries the validators its GET will have.
    let r = s
        .call(Method::POST, "/v1/tenants", OPERATOR, Some(json!({"name": "beta"})))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let created = validators_of(&r, "201 tenant");
    assert_eq!(get_and_revalidate(&s, "/v1/tenants/beta", OPERATOR).await, created);
    assert_ne!(created, etag, "each tenant has its own tag");
}

#[tokio::test]
async fn users_have_strong_validators_and_guarded_writes() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let r = s
        .call(
            Method::POST,
            &format!("{TENANT}/users"),
            &w.admin,
            Some(json!({"email": "u@acme.example", "role": "viewer"})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let created = validators_of(&r, "201 user");
    let path = header(&r, "location").to_owned();
    let etag = get_and_revalidate(&s, &path, &w.admin).await;
    assert_eq!(etag, created);

    // A stale tag, the weak form of the tag, and a date before the last
    // change all fail; nothing changes.
    let weak = format!("W/{etag}");
    let before = "Mon, 01 Jan 2001 00:00:00 GMT";
    for h in [
        ("if-match", "\"stale\""),
        ("if-match", weak.as_str()),
        ("if-none-match", etag.as_str()),
        ("if-unmodified-since", before),
    ] {
        let r = s
            .send(Method::PATCH, &path, &w.admin, &[h], Some(json!({"role": "editor"})))
            .await;
        assert_problem(r, 412, "precondition-failed").await;
        let r = s.send(Method::DELETE, &path, &w.admin, &[h], None).await;
        assert_problem(r, 412, "precondition-failed").await;
    }
    assert_eq!(get_and_revalidate(&s, &path, &w.admin).await, etag);

    // The current tag passes; the write answers the new validators.
    let r = s
        .send(
            Method::PATCH,
            &path,
            &w.admin,
            &[("if-match", &etag)],
            Some(json!({"role": "editor"})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let patched = validators_of(&r, "PATCH user");
    assert_ne!(patched, etag, "a write changes the tag");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["role"], "editor");
    assert_eq!(get_and_revalidate(&s, &path, &w.admin).await, patched);

    // The old tag no longer deletes; the new one does.
    let r = s
        .send(Method::DELETE, &path, &w.admin, &[("if-match", &etag)], None)
        .await;
    assert_problem(r, 412, "precondition-failed").await;
    let r = s
        .send(Method::DELETE, &path, &w.admin, &[("if-match", &patched)], None)
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn api_keys_have_strong_validators_and_guarded_deletes() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let (uid, _) = user(&s, "k@acme.example", "editor").await;
    let keys = format!("{TENANT}/users/{uid}/api-keys");
    let r = s.call(Method::POST, &keys, &w.admin, Some(json!({"name": "ci"}))).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let etag = header(&r, "etag").to_owned();
    assert!(is_strong_tag(&etag), "{etag}");
    let path = header(&r, "location").to_owned();
    assert_eq!(get_and_revalidate(&s, &path, &w.admin).await, etag);

    for h in [
        ("if-match", "\"stale\""),
        ("if-none-match", "*"),
        ("if-unmodified-since", "Mon, 01 Jan 2001 00:00:00 GMT"),
    ] {
        let r = s.send(Method::DELETE, &path, &w.admin, &[h], None).await;
        assert_problem(r, 412, "precondition-failed").await;
    }
    let r = s
        .send(Method::DELETE, &path, &w.admin, &[("if-match", &etag)], None)
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = s.call(Method::GET, &path, &w.admin, None).await;
    assert_problem(r, 410, "gone").await;
}

#[tokio::test]
async fn collections_have_strong_validators_and_guarded_writes() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let etag = get_and_revalidate(&s, DEVICES, &w.viewer).await;

    // If-Match with the collection's tag can match now (it was weak before).
    let r = s
        .send(
            Method::PATCH,
            DEVICES,
            &w.admin,
            &[("if-match", "\"stale\"")],
            Some(json!({"require_if_match": true})),
        )
        .await;
    assert_problem(r, 412, "precondition-failed").await;
    let r = s
        .send(
            Method::PATCH,
            DEVICES,
            &w.admin,
            &[("if-match", &etag)],
            Some(json!({"require_if_match": true})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let patched = validators_of(&r, "PATCH collection");
    assert_ne!(patched, etag);
    assert_eq!(get_and_revalidate(&s, DEVICES, &w.viewer).await, patched);

    // A new collection's 201 carries its validators; deletes are guarded.
    let r = s
        .call(
            Method::POST,
            &format!("{TENANT}/collections"),
            &w.admin,
            Some(json!({"name": "spare"})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let spare_tag = validators_of(&r, "201 collection");
    let spare = format!("{TENANT}/collections/spare");
    assert_eq!(get_and_revalidate(&s, &spare, &w.viewer).await, spare_tag);
    let r = s
        .send(Method::DELETE, &spare, &w.admin, &[("if-match", &etag)], None)
        .await;
    assert_problem(r, 412, "precondition-failed").await;
    let r = s
        .send(Method::DELETE, &spare, &w.admin, &[("if-match", &spare_tag)], None)
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn records_keep_their_strong_validators() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let r = s
        .call(
            Method::POST,
            &format!("{DEVICES}/records"),
            &w.editor,
            Some(json!({"port": 1})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let created = validators_of(&r, "201 record");
    let path = header(&r, "location").to_owned();
    assert_eq!(get_and_revalidate(&s, &path, &w.viewer).await, created);
    let r = s
        .send(Method::DELETE, &path, &w.editor, &[("if-match", "\"stale\"")], None)
        .await;
    assert_problem(r, 412, "precondition-failed").await;
    let r = s
        .send(Method::DELETE, &path, &w.editor, &[("if-match", &created)], None)
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}
