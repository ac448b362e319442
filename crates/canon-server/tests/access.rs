//! Who may do what (CONTRACT.md §2), cross-tenant invisibility, bad input,
//! and lists.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const RECORDS: &str = "/v1/tenants/acme/collections/devices/records";

#[derive(Clone, Copy, PartialEq, PartialOrd, Debug)]
enum Least {
    Viewer,
    Editor,
    Admin,
    Operator,
}

/// Every route and method of the foundation, with the least role allowed.
fn matrix(record: &str, user: &str) -> Vec<(Method, String, Option<Value>, Least)> {
    let key_list = format!("/v1/tenants/acme/users/{user}/api-keys");
    vec![
        (Method::GET, "/v1/tenants".into(), None, Least::Operator),
        (
            Method::POST,
            "/v1/tenants".into(),
            Some(json!({"name": "newco"})),
            Least::Operator,
        ),
        (Method::GET, "/v1/tenants/acme".into(), None, Least::Viewer),
        (Method::GET, "/v1/tenants/acme/users".into(), None, Least::Admin),
        (
            Method::POST,
            "/v1/tenants/acme/users".into(),
            Some(json!({"email": "x@y.z", "role": "viewer"})),
            Least::Admin,
        ),
        (
            Method::GET,
            format!("/v1/tenants/acme/users/{user}"),
            None,
            Least::Admin,
        ),
        (
            Method::PATCH,
            format!("/v1/tenants/acme/users/{user}"),
            Some(json!({"role": "viewer"})),
            Least::Admin,
        ),
        (Method::GET, key_list.clone(), None, Least::Admin),
        (Method::POST, key_list, Some(json!({"name": "k"})), Least::Admin),
        (Method::GET, "/v1/tenants/acme/collections".into(), None, Least::Viewer),
        (
            Method::POST,
            "/v1/tenants/acme/collections".into(),
            Some(json!({"name": "c2"})),
            Least::Admin,
        ),
        (
            Method::GET,
            "/v1/tenants/acme/collections/devices".into(),
            None,
            Least::Viewer,
        ),
        (Method::GET, RECORDS.into(), None, Least::Viewer),
        (Method::POST, RECORDS.into(), Some(json!({"port": 1})), Least::Editor),
        (Method::GET, record.into(), None, Least::Viewer),
        (Method::HEAD, record.into(), None, Least::Viewer),
        (Method::PUT, record.into(), Some(json!({"port": 2})), Least::Editor),
        (
            Method::DELETE,
            "/v1/tenants/acme/collections/scratch".into(),
            None,
            Least::Admin,
        ),
        (Method::DELETE, format!("{RECORDS}/scratch"), None, Least::Editor),
    ]
}

#[tokio::test]
async fn each_role_can_do_exactly_what_the_contract_allows() {
    for (who, least_held) in [
        ("viewer", Least::Viewer),
        ("editor", Least::Editor),
        ("admin", Least::Admin),
        ("operator", Least::Operator),
    ] {
        // A fresh world per role, so earlier writes do not change later answers.
        let s = Server::start().await;
        let w = world(&s, "acme").await;
        let token = match who {
            "viewer" => w.viewer.clone(),
            "editor" => w.editor.clone(),
            "admin" => w.admin.clone(),
            _ => OPERATOR.to_owned(),
        };
        let rec = s
            .ok_json(Method::POST, RECORDS, OPERATOR, Some(json!({"port": 1})))
            .await;
        let record = format!("{RECORDS}/{}", rec["id"].as_str().unwrap());
        let victim = s
            .ok_json(
                Method::POST,
                "/v1/tenants/acme/users",
                OPERATOR,
                Some(json!({"email": "v@acme.example", "role": "viewer"})),
            )
            .await;
        let user = victim["id"].as_str().unwrap().to_owned();
        s.ok_json(
            Method::POST,
            "/v1/tenants/acme/collections",
            OPERATOR,
            Some(json!({"name": "scratch"})),
        )
        .await;
        s.ok_json(
            Method::PUT,
            &format!("{RECORDS}/scratch"),
            OPERATOR,
            Some(json!({"port": 3})),
        )
        .await;

        for (method, path, body, least) in matrix(&record, &user) {
            let r = s.call(method.clone(), &path, &token, body).await;
            let status = r.status();
            if least_held >= least {
                assert!(status.is_success(), "{who} {method} {path}: {status}");
            } else if method == Method::HEAD {
                assert_eq!(status, StatusCode::FORBIDDEN, "{who} {method} {path}");
            } else {
                let body = assert_problem(r, 403, "forbidden").await;
                assert!(body["required_role"].is_string(), "{who} {method} {path}");
            }
        }
    }
}

#[tokio::test]
async fn no_route_reveals_another_tenants_resources() {
    let s = Server::start().await;
    let acme = world(&s, "acme").await;
    let other = world(&s, "other").await;
    let rec = s
        .ok_json(Method::POST, RECORDS, &acme.editor, Some(json!({"port": 1})))
        .await;
    let record = format!("{RECORDS}/{}", rec["id"].as_str().unwrap());
    let user = acme.editor_id.clone();

    for token in [&other.admin, &other.editor, &other.viewer] {
        for (method, path, body, _) in matrix(&record, &user) {
            if path == "/v1/tenants" {
                continue; // not tenant-scoped: 403 for members, checked above
            }
            let r = s.call(method.clone(), &path, token, body.clone()).await;
            if method == Method::HEAD {
                assert_eq!(r.status(), StatusCode::NOT_FOUND, "{method} {path}");
                continue;
            }
            let existing = assert_problem(r, 404, "not-found").await;
            // The answer for a path that exists is the same as for one that never did.
            let never = path.replace("/acme", "/no-such-tenant");
            let r = s.call(method.clone(), &never, token, body).await;
            let missing = assert_problem(r, 404, "not-found").await;
            assert_eq!(existing["title"], missing["title"]);
            assert_eq!(existing.as_object().unwrap().len(), missing.as_object().unwrap().len());
        }
    }
    // And nothing was changed by any of it.
    let got = s.ok_json(Method::GET, &record, &acme.viewer, None).await;
    assert_eq!(got["version"], 1);
}

#[tokio::test]
async fn bad_input_is_rejected_and_never_written() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let deep = format!("{}1{}", "[".repeat(300), "]".repeat(300));
    let raw_bodies: Vec<(&str, Vec<u8>, &str)> = vec![
        ("malformed JSON", b"{\"port\": ".to_vec(), "malformed-body"),
        ("trailing garbage", b"{\"port\": 1} x".to_vec(), "malformed-body"),
        (
            "invalid UTF-8",
            b"{\"port\": 1, \"serial\": \"\xff\xfe\"}".to_vec(),
            "malformed-body",
        ),
        ("deep nesting", deep.into_bytes(), "malformed-body"),
        ("empty body", Vec::new(), "malformed-body"),
        ("not an object", b"[1, 2]".to_vec(), "schema-violation"),
        ("wrong type", b"{\"port\": \"22\"}".to_vec(), "schema-violation"),
        (
            "unknown field the schema forbids",
            b"{\"port\": 1, \"evil\": true}".to_vec(),
            "schema-violation",
        ),
        ("missing required field", b"{}".to_vec(), "schema-violation"),
    ];
    for (what, body, slug) in raw_bodies {
        let r = s
            .req(Method::POST, RECORDS, Some(&w.editor))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let p = assert_problem(r, 400, slug).await;
        if slug == "schema-violation" {
            assert!(p["errors"].as_array().is_some_and(|e| !e.is_empty()), "{what}: {p}");
        }
    }
    // Every failing field is listed, by pointer into the envelope.
    let r = s
        .call(
            Method::POST,
            RECORDS,
            &w.editor,
            Some(json!({"port": "x", "serial": 5})),
        )
        .await;
    let p = assert_problem(r, 400, "schema-violation").await;
    let mut pointers: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    pointers.sort();
    assert_eq!(pointers, ["/data/port", "/data/serial"]);

    let bad_requests: Vec<(Method, &str, Option<Value>, &str)> = vec![
        (
            Method::POST,
            "/v1/tenants",
            Some(json!({"name": "Bad Name"})),
            "invalid-field",
        ),
        (
            Method::POST,
            "/v1/tenants",
            Some(json!({"name": "current"})),
            "invalid-field",
        ),
        (Method::POST, "/v1/tenants", Some(json!({"name": 5})), "malformed-body"),
        (
            Method::POST,
            "/v1/tenants",
            Some(json!({"name": "ok", "extra": 1})),
            "malformed-body",
        ),
        (
            Method::POST,
            "/v1/tenants/acme/users",
            Some(json!({"email": "nope", "role": "viewer"})),
            "invalid-field",
        ),
        (
            Method::POST,
            "/v1/tenants/acme/users",
            Some(json!({"email": "a@b.c", "role": "root"})),
            "invalid-field",
        ),
        (
            Method::POST,
            "/v1/tenants/acme/collections",
            Some(json!({"name": "c", "schema": {"type": "nonsense"}})),
            "invalid-field",
        ),
        (
            Method::POST,
            "/v1/tenants/acme/collections",
            Some(json!({"name": "c", "schema": {"$ref": "http://example.com/s.json"}})),
            "invalid-field",
        ),
        (
            Method::POST,
            "/v1/tenants/acme/collections",
            Some(json!({"name": "c", "unique": ["a.b"]})),
            "invalid-field",
        ),
        (
            Method::GET,
            "/v1/tenants/acme/collections/devices/records?limit=0",
            None,
            "invalid-query",
        ),
        (
            Method::GET,
            "/v1/tenants/acme/collections/devices/records?limit=abc",
            None,
            "invalid-query",
        ),
        (
            Method::GET,
            "/v1/tenants/acme/collections/devices/records?cursor=garbage",
            None,
            "invalid-query",
        ),
        (
            Method::GET,
            "/v1/tenants/acme/collections/devices/records?sort=a;drop",
            None,
            "invalid-query",
        ),
        (
            Method::GET,
            "/v1/tenants/acme/collections/devices/records?filter[a'b]=1",
            None,
            "invalid-query",
        ),
        (
            Method::GET,
            "/v1/tenants/acme/collections/devices/records?color=red",
            None,
            "invalid-query",
        ),
        (
            Method::PUT,
            "/v1/tenants/acme/collections/devices/records/bad%20id",
            Some(json!({"port": 1})),
            "invalid-field",
        ),
    ];
    for (method, path, body, slug) in bad_requests {
        let r = s.call(method.clone(), path, OPERATOR, body).await;
        let status = r.status();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {path}");
        assert_problem(r, 400, slug).await;
    }
    let r = s
        .req(Method::GET, RECORDS, Some(&w.viewer))
        .header("if-match", "no-quotes")
        .send()
        .await
        .unwrap();
    assert_problem(r, 400, "invalid-header").await;

    let list = s.ok_json(Method::GET, RECORDS, &w.viewer, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "nothing was written");
    let tenants = s.ok_json(Method::GET, "/v1/tenants", OPERATOR, None).await;
    assert_eq!(tenants["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn lists_page_filter_sort_and_negotiate() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    for (port, serial) in [(80, "d"), (443, "a"), (80, "c"), (22, "b")] {
        s.ok_json(
            Method::POST,
            RECORDS,
            &w.editor,
            Some(json!({"port": port, "serial": serial})),
        )
        .await;
    }
    // Pages follow Link: rel="next" to the end.
    let mut url = format!("{RECORDS}?limit=3&sort=serial");
    let mut serials = Vec::new();
    loop {
        let r = s.call(Method::GET, &url, &w.viewer, None).await;
        let link = header(&r, "link").to_owned();
        let body: Value = r.json().await.unwrap();
        serials.extend(
            body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["data"]["serial"].as_str().unwrap().to_owned()),
        );
        if link.is_empty() {
            assert!(body["next_cursor"].is_null());
            break;
        }
        assert!(link.ends_with("; rel=\"next\""));
        assert_eq!(body["next_cursor"].as_str().map(|c| link.contains(c)), Some(true));
        url = link.trim_start_matches('<').split('>').next().unwrap().to_owned();
    }
    assert_eq!(serials, ["a", "b", "c", "d"]);

    let desc = s
        .ok_json(
            Method::GET,
            &format!("{RECORDS}?sort=-port&filter[port]=80"),
            &w.viewer,
            None,
        )
        .await;
    assert_eq!(desc["items"].as_array().unwrap().len(), 2);

    let r = s
        .req(Method::GET, &format!("{RECORDS}?sort=serial"), Some(&w.viewer))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-type"), "application/x-ndjson");
    assert_eq!(header(&r, "vary"), "Accept, Accept-Encoding");
    let text = r.text().await.unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["data"]["serial"], "a");

    let r = s
        .req(Method::GET, &format!("{RECORDS}?sort=serial"), Some(&w.viewer))
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-type"), "text/csv; charset=utf-8");
    let csv = r.text().await.unwrap();
    let mut rows = csv.lines();
    assert_eq!(
        rows.next().unwrap(),
        "id,version,created_at,updated_at,data.port,data.serial"
    );
    assert!(rows.next().unwrap().ends_with(",443,a"));

    // A cursor from one query does not work on another.
    let page = s
        .ok_json(Method::GET, &format!("{RECORDS}?limit=1&sort=serial"), &w.viewer, None)
        .await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let r = s
        .call(
            Method::GET,
            &format!("{RECORDS}?limit=1&sort=port&cursor={cursor}"),
            &w.viewer,
            None,
        )
        .await;
    assert_problem(r, 400, "invalid-query").await;
}
