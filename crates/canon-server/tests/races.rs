//! Writes that race: unconditional patches all apply, concurrent deletes have
//! one winner (204) and the rest see the tombstone (410), a tenant keeps its
//! last admin (409 last-admin), and a new key's token is never cached.

mod common;

use common::*;
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

const TENANT: &str = "/v1/tenants/acme";
const NOTES: &str = "/v1/tenants/acme/collections/notes";

/// Sends every request of `requests` at once and returns the responses in order.
async fn all_at_once(requests: Vec<reqwest::RequestBuilder>) -> Vec<Response> {
    let tasks: Vec<_> = requests.into_iter().map(|r| tokio::spawn(r.send())).collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.expect("task").expect("send"));
    }
    out
}

/// A collection `notes` with a permissive schema and one record; returns the record's path.
async fn notes_record(s: &Server, w: &World) -> String {
    s.ok_json(
        Method::POST,
        &format!("{TENANT}/collections"),
        &w.admin,
        Some(json!({"name": "notes", "schema": {"type": "object", "properties": {"f0": {"type": "integer"}}}})),
    )
    .await;
    let r = s
        .call(Method::POST, &format!("{NOTES}/records"), &w.editor, Some(json!({})))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    header(&r, "location").to_owned()
}

fn merge_patch(s: &Server, path: &str, token: &str, body: Value) -> reqwest::RequestBuilder {
    s.req(Method::PATCH, path, Some(token))
        .header("content-type", "application/merge-patch+json")
        .body(body.to_string())
}

#[tokio::test]
async fn unconditional_patches_never_fail_for_contention() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let path = notes_record(&s, &w).await;

    let requests = (0..20)
        .map(|i| merge_patch(&s, &path, &w.editor, json!({format!("f{i}"): i})))
        .collect();
    for (i, r) in all_at_once(requests).await.into_iter().enumerate() {
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "patch {i}: {}",
            r.text().await.unwrap_or_default()
        );
    }
    let record = s.ok_json(Method::GET, &path, &w.viewer, None).await;
    assert_eq!(record["version"], 21, "{record}");
    for i in 0..20 {
        assert_eq!(record["data"][format!("f{i}")], i, "{record}");
    }

    // The patch is still checked inside the write: a failing test is 409,
    // a result that breaks the schema is 400, and neither changes anything.
    let r = s
        .req(Method::PATCH, &path, Some(&w.editor))
        .header("content-type", "application/json-patch+json")
        .body(json!([{"op": "test", "path": "/f0", "value": 99}]).to_string())
        .send()
        .await
        .unwrap();
    let body = assert_problem(r, 409, "patch-test-failed").await;
    assert_eq!(body["errors"][0]["pointer"], "/0");
    let r = s
        .req(Method::PATCH, &path, Some(&w.editor))
        .header("content-type", "application/json-patch+json")
        .body(json!([{"op": "remove", "path": "/nope"}]).to_string())
        .send()
        .await
        .unwrap();
    assert_problem(r, 409, "state-conflict").await;
    let r = merge_patch(&s, &path, &w.editor, json!({"f0": "text"}))
        .send()
        .await
        .unwrap();
    let body = assert_problem(r, 400, "schema-violation").await;
    assert_eq!(body["errors"][0]["pointer"], "/data/f0");
    let unchanged = s.ok_json(Method::GET, &path, &w.viewer, None).await;
    assert_eq!(unchanged["version"], 21);
}

#[tokio::test]
async fn conditional_patches_have_one_winner() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let path = notes_record(&s, &w).await;
    let r = s.call(Method::GET, &path, &w.viewer, None).await;
    let etag = header(&r, "etag").to_owned();

    let requests = (0..10)
        .map(|i| merge_patch(&s, &path, &w.editor, json!({format!("f{i}"): i})).header("if-match", etag.clone()))
        .collect();
    let statuses: Vec<u16> = all_at_once(requests)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 412).count(), 9, "{statuses:?}");
}

/// Sends `n` DELETEs of `path` at once: exactly one 204, every other 410
/// (never 404 or 500), each 410 a `gone` problem.
async fn one_delete_wins(s: &Server, path: &str, token: &str, n: usize) {
    let requests = (0..n).map(|_| s.req(Method::DELETE, path, Some(token))).collect();
    let mut deleted = 0;
    for r in all_at_once(requests).await {
        match r.status() {
            StatusCode::NO_CONTENT => deleted += 1,
            _ => {
                assert_problem(r, 410, "gone").await;
            }
        }
    }
    assert_eq!(deleted, 1, "{path}");
    let r = s.req(Method::GET, path, Some(token)).send().await.unwrap();
    assert_problem(r, 410, "gone").await;
}

#[tokio::test]
async fn concurrent_deletes_have_one_winner_for_every_kind() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;

    let record = notes_record(&s, &w).await;
    one_delete_wins(&s, &record, &w.editor, 10).await;

    let (uid, _) = add_user(&s, "acme", "gone@acme.example", "viewer").await;
    let key = s
        .ok_json(
            Method::POST,
            &format!("{TENANT}/users/{uid}/api-keys"),
            &w.admin,
            Some(json!({"name": "ci"})),
        )
        .await;
    let key_path = format!("{TENANT}/users/{uid}/api-keys/{}", key["id"].as_str().unwrap());
    one_delete_wins(&s, &key_path, &w.admin, 10).await;

    one_delete_wins(&s, &format!("{TENANT}/users/{uid}"), &w.admin, 10).await;

    // The collection is empty now that its record is gone.
    one_delete_wins(&s, NOTES, &w.admin, 10).await;
}

/// The id of the tenant's admin (the world's only one).
async fn admin_id(s: &Server, w: &World) -> String {
    let users = s.ok_json(Method::GET, &format!("{TENANT}/users"), &w.admin, None).await;
    let admins: Vec<&Value> = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["role"] == "admin")
        .collect();
    assert_eq!(admins.len(), 1, "{users}");
    admins[0]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_tenant_keeps_its_last_admin() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let me = format!("{TENANT}/users/{}", admin_id(&s, &w).await);

    // Neither the admin itself nor the operator may demote or delete the last admin.
    for token in [w.admin.as_str(), OPERATOR] {
        let r = s.call(Method::PATCH, &me, token, Some(json!({"role": "editor"}))).await;
        let body = assert_problem(r, 409, "last-admin").await;
        assert!(body["detail"].as_str().unwrap().contains("admin"), "{body}");
        let r = s.call(Method::DELETE, &me, token, None).await;
        assert_problem(r, 409, "last-admin").await;
    }
    let r = s.call(Method::GET, &me, &w.admin, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["role"], "admin", "nothing changed");

    // With a second admin, the first may step down; the second then stays.
    let (other, _) = add_user(&s, "acme", "second@acme.example", "admin").await;
    let r = s
        .call(Method::PATCH, &me, &w.admin, Some(json!({"role": "viewer"})))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = s
        .call(Method::DELETE, &format!("{TENANT}/users/{other}"), OPERATOR, None)
        .await;
    assert_problem(r, 409, "last-admin").await;
    let r = s.call(Method::GET, "/problems/last-admin", OPERATOR, None).await;
    assert_eq!(r.status(), StatusCode::OK, "the problem type is documented");
}

#[tokio::test]
async fn a_new_keys_token_is_never_stored_by_caches() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let (uid, _) = add_user(&s, "acme", "k@acme.example", "editor").await;
    let r = s
        .call(
            Method::POST,
            &format!("{TENANT}/users/{uid}/api-keys"),
            &w.admin,
            Some(json!({"name": "ci"})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "cache-control"), "no-store");
    let location = header(&r, "location").to_owned();
    let body: Value = r.json().await.unwrap();
    assert!(body["token"].as_str().is_some_and(|t| !t.is_empty()));

    // Reading the key later shows no token, and may be revalidated.
    let r = s.call(Method::GET, &location, &w.admin, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "cache-control"), "private, no-cache");
    let body: Value = r.json().await.unwrap();
    assert!(body.get("token").is_none(), "{body}");
}

#[tokio::test]
async fn a_new_keys_token_is_shown_once_whatever_the_client_prefers_and_never_replayed() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let (uid, _) = add_user(&s, "acme", "k@acme.example", "editor").await;
    let path = format!("{TENANT}/users/{uid}/api-keys");
    let keyed = || {
        s.req(Method::POST, &path, Some(&w.admin))
            .header("idempotency-key", "key-once-1")
            .header("prefer", "return=minimal")
            .json(&json!({"name": "ci"}))
    };
    // return=minimal is not applied: this body is the token's only copy.
    let r = keyed().send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(r.headers().get("preference-applied").is_none());
    let location = header(&r, "location").to_owned();
    let body: Value = r.json().await.unwrap();
    let token = body["token"].as_str().unwrap_or_default().to_owned();
    assert!(!token.is_empty(), "{body}");

    // The replay confirms the creation, the key included, but the ledger
    // kept no secret: the token is null.
    let r = keyed().send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "location"), location);
    assert_eq!(header(&r, "cache-control"), "no-store");
    assert_eq!(header(&r, "content-type"), "application/json");
    assert_eq!(header(&r, "idempotent-replayed"), "true");
    let replayed = r.bytes().await.unwrap();
    assert!(!String::from_utf8_lossy(&replayed).contains(&token));
    let replayed: Value = serde_json::from_slice(&replayed).unwrap();
    assert_eq!(replayed["token"], Value::Null);
    assert_eq!(replayed["id"], body["id"]);
    assert_eq!(replayed["name"], "ci");
}
