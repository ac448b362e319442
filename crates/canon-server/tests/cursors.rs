//! List cursors over HTTP: bounded (long sort values never push the next
//! link past the URI limit), signed (edits are 400), bound to their list
//! (another collection, filter, sort or tenant is 400), and verified by every
//! node and after a restart (the signing secret lives in the database).

mod common;

use std::collections::HashSet;

use common::{OPERATOR, Server, assert_problem, header, world};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const NOTES: &str = "/v1/tenants/acme/collections/notes/records";

async fn notes(s: &Server, tenant: &str) {
    s.ok_json(
        Method::POST,
        &format!("/v1/tenants/{tenant}/collections"),
        OPERATOR,
        Some(json!({"name": "notes", "schema": {"type": "object"}})),
    )
    .await;
}

/// The target of `Link: <…>; rel="next"`, if any.
fn next_link(r: &reqwest::Response) -> Option<String> {
    let link = header(r, "link");
    let start = link.find('<')? + 1;
    let end = link.find('>')?;
    link.contains("rel=\"next\"").then(|| link[start..end].to_owned())
}

/// Follows `Link: rel="next"` from `first` to the end; returns the ids seen
/// and the longest link.
async fn walk(s: &Server, first: &str) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut longest = 0;
    let mut target = Some(first.to_owned());
    let mut pages = 0;
    while let Some(t) = target {
        pages += 1;
        assert!(pages < 100, "paging does not end");
        let r = s.call(Method::GET, &t, OPERATOR, None).await;
        assert_eq!(r.status(), StatusCode::OK, "GET {t}");
        target = next_link(&r);
        longest = longest.max(header(&r, "link").len());
        let body: Value = r.json().await.unwrap();
        for item in body["items"].as_array().unwrap() {
            ids.push(item["id"].as_str().unwrap().to_owned());
        }
        assert_eq!(body["next_cursor"].is_string(), target.is_some());
    }
    (ids, longest)
}

#[tokio::test]
async fn paging_by_a_6_kb_field_completes_with_short_links() {
    let s = Server::start().await;
    world(&s, "acme").await;
    notes(&s, "acme").await;
    let mut created = HashSet::new();
    let long = "x".repeat(6 * 1024);
    for i in 0..7 {
        // Long values that share a 6 KB prefix, differing only at the end.
        let text = if i == 6 {
            "short".to_owned()
        } else {
            format!("{long}{}", i % 3)
        };
        let r = s
            .ok_json(Method::POST, NOTES, OPERATOR, Some(json!({"text": text})))
            .await;
        created.insert(r["id"].as_str().unwrap().to_owned());
    }
    s.ok_json(Method::POST, NOTES, OPERATOR, Some(json!({"untitled": true})))
        .await;
    for sort in ["text", "-text"] {
        let (ids, longest) = walk(&s, &format!("{NOTES}?limit=2&sort={sort}")).await;
        assert_eq!(ids.len(), 8, "{sort}: every record once");
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 8, "{sort}: no duplicates");
        assert!(created.iter().all(|id| ids.contains(id)));
        assert!(longest < 2048, "{sort}: a Link of {longest} bytes");
    }
}

async fn first_cursor(s: &Server, query: &str) -> String {
    let r = s.call(Method::GET, &format!("{NOTES}?{query}"), OPERATOR, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    body["next_cursor"].as_str().expect("a next cursor").to_owned()
}

async fn three_notes(s: &Server) {
    for i in 0..3 {
        s.ok_json(Method::POST, NOTES, OPERATOR, Some(json!({"n": i, "kind": "a"})))
            .await;
    }
}

#[tokio::test]
async fn an_edited_cursor_is_400() {
    let s = Server::start().await;
    world(&s, "acme").await;
    notes(&s, "acme").await;
    three_notes(&s).await;
    let cursor = first_cursor(&s, "limit=1&sort=n").await;
    let (payload, tag) = cursor.split_once('.').expect("payload.tag");
    let mut edited = payload.as_bytes().to_vec();
    let last = edited.len() - 2;
    edited[last] = if edited[last] == b'A' { b'B' } else { b'A' };
    let edited = format!("{}.{tag}", String::from_utf8(edited).unwrap());
    let mut bad_tag = tag.to_owned();
    bad_tag.replace_range(0..1, if tag.starts_with('A') { "B" } else { "A" });
    for c in [
        edited,
        format!("{payload}.{bad_tag}"),
        payload.to_owned(),
        "garbage".into(),
    ] {
        let r = s
            .call(
                Method::GET,
                &format!("{NOTES}?limit=1&sort=n&cursor={c}"),
                OPERATOR,
                None,
            )
            .await;
        let body = assert_problem(r, 400, "invalid-query").await;
        assert_eq!(body["parameter"], "cursor");
    }
    let r = s
        .call(
            Method::GET,
            &format!("{NOTES}?limit=1&sort=n&cursor={cursor}"),
            OPERATOR,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK, "the unedited cursor still works");
}

#[tokio::test]
async fn a_cursor_reused_with_another_list_is_400() {
    let s = Server::start().await;
    world(&s, "acme").await;
    notes(&s, "acme").await;
    three_notes(&s).await;
    world(&s, "globex").await;
    notes(&s, "globex").await;
    let cursor = first_cursor(&s, "limit=1&sort=n&filter[kind]=a").await;
    let elsewhere = [
        format!("{NOTES}?limit=1&sort=n&filter[kind]=b"),
        format!("{NOTES}?limit=1&sort=n"),
        format!("{NOTES}?limit=1&sort=-n&filter[kind]=a"),
        format!("{NOTES}?limit=1&sort=kind&filter[kind]=a"),
        "/v1/tenants/acme/collections/devices/records?limit=1&sort=n&filter[kind]=a".to_owned(),
        "/v1/tenants/globex/collections/notes/records?limit=1&sort=n&filter[kind]=a".to_owned(),
        "/v1/tenants/acme/users?limit=1".to_owned(),
        "/v1/tenants?limit=1".to_owned(),
    ];
    for target in elsewhere {
        let url = format!("{target}&cursor={cursor}");
        let r = s.call(Method::GET, &url, OPERATOR, None).await;
        let body = assert_problem(r, 400, "invalid-query").await;
        assert_eq!(body["parameter"], "cursor", "{target}");
    }
    // Same list, parameters in another order: the same list.
    let r = s
        .call(
            Method::GET,
            &format!("{NOTES}?filter[kind]=a&cursor={cursor}&sort=n&limit=5"),
            OPERATOR,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn cursors_work_on_every_node_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canon.db");
    let a = Server::start_on(&path).await;
    world(&a, "acme").await;
    notes(&a, "acme").await;
    three_notes(&a).await;
    let cursor = first_cursor(&a, "limit=1&sort=n").await;
    let b = Server::start_on(&path).await;
    assert_eq!(
        rest(&b, &cursor).await,
        [json!(1), json!(2)],
        "another node verifies the cursor"
    );
    drop(a);
    drop(b);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let c = Server::start_on(&path).await;
    assert_eq!(
        rest(&c, &cursor).await,
        [json!(1), json!(2)],
        "the restarted server verifies the cursor"
    );
}

/// The `n` of every item after `cursor` (sorted by `n`).
async fn rest(s: &Server, cursor: &str) -> Vec<Value> {
    let url = format!("{NOTES}?limit=5&sort=n&cursor={cursor}");
    let r = s.call(Method::GET, &url, OPERATOR, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["data"]["n"].clone())
        .collect()
}
