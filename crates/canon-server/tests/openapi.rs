//! The API description: generated from the route table, its statuses
//! derived from the flow, committed for review, served as written.

mod common;

use std::collections::BTreeSet;

use canon_http::operation;
use canon_server::openapi::{self, listed_statuses, openapi_path};
use canon_server::routes::ROUTES;
use common::{OPERATOR, Server, assert_problem, header, world};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

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

/// Every `$ref` in `value` names something in `doc` (a JSON pointer,
/// percent-decoded as a URI fragment is), and every operation id is unique.
fn check_refs(doc: &Value, value: &Value) {
    match value {
        Value::Object(map) => {
            for r in ["$ref", "$dynamicRef"]
                .iter()
                .filter_map(|k| map.get(*k).and_then(Value::as_str))
            {
                let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("external ref {r}"));
                let pointer = percent_decode(pointer);
                assert!(doc.pointer(&pointer).is_some(), "dangling {r}");
            }
            // Values in schemas (`const`, `enum`, …) are data, not references.
            map.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "const" | "enum" | "default" | "examples"))
                .for_each(|(_, v)| check_refs(doc, v));
        }
        Value::Array(items) => items.iter().for_each(|v| check_refs(doc, v)),
        _ => {}
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// The document is structurally sound: references resolve, operation ids
/// are unique, and every templated path declares exactly its parameters.
fn check_structure(doc: &Value) {
    check_refs(doc, doc);
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let templated: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        let declared: BTreeSet<&str> = item["parameters"]
            .as_array()
            .map(|ps| ps.iter().filter_map(|p| p["name"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(templated, declared, "{path}");
        for (method, op) in item.as_object().unwrap() {
            if method != "parameters" {
                let id = op["operationId"].as_str().unwrap().to_owned();
                assert!(ids.insert(id.clone()), "duplicate operationId {id}");
            }
        }
    }
}

#[test]
fn openapi_every_reference_resolves_and_every_error_is_a_problem() {
    let doc = openapi::document();
    check_structure(&doc);
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

/// A schema using `$schema`, a root `$id`, `$defs` and fragment references
/// (Canon admits no other kind).
fn sensor_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://example.com/schemas/sensor",
        "type": "object",
        "properties": {
            "unit": {"$ref": "#/$defs/unit"},
            "limits": {"type": "array", "items": {"$ref": "#/$defs/limit"}},
            "enum": {"const": {"$ref": "#/not/a/schema"}}
        },
        "required": ["unit"],
        "$defs": {
            "unit": {"enum": ["C", "F"]},
            "limit": {"type": "number"}
        }
    })
}

async fn tenant_doc(s: &Server, tenant: &str, token: &str) -> (Value, String) {
    let r = s
        .send(
            Method::GET,
            &format!("/v1/tenants/{tenant}/openapi.json"),
            token,
            &[],
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let etag = header(&r, "etag").to_owned();
    (r.json().await.unwrap(), etag)
}

/// `GET /v1/tenants/acme/openapi.json` as `token` with `If-None-Match: tag`.
async fn revalidate(s: &Server, token: &str, tag: &str) -> reqwest::Response {
    let path = "/v1/tenants/acme/openapi.json";
    s.send(Method::GET, path, token, &[("if-none-match", tag)], None).await
}

#[tokio::test]
async fn tenant_openapi_types_each_collection_with_its_schema() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    s.ok_json(
        Method::POST,
        "/v1/tenants/acme/collections",
        &w.admin,
        Some(json!({"name": "sensors", "schema": sensor_schema()})),
    )
    .await;

    let r = s
        .send(Method::GET, "/v1/tenants/acme/openapi.json", &w.viewer, &[], None)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), "application/json");
    assert_eq!(header(&r, "cache-control"), "private, no-cache");
    let etag = header(&r, "etag").to_owned();
    assert!(etag.starts_with('"') && etag.len() > 2, "a strong tag: {etag}");
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    check_structure(&doc);
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.keys().all(|p| !p.contains("{tenant}")), "the tenant is named");
    // The generic paths stay (under the tenant's name), and the new route is in it too.
    assert!(paths.contains_key("/v1/tenants/acme/collections/{collection}/records/{id}"));
    assert!(paths.contains_key("/v1/tenants/acme/openapi.json"));

    let schemas = &doc["components"]["schemas"];
    for c in ["devices", "sensors"] {
        let list = &paths[&format!("/v1/tenants/acme/collections/{c}/records")];
        let one = &paths[&format!("/v1/tenants/acme/collections/{c}/records/{{id}}")];
        assert_eq!(list["post"]["operationId"], format!("post-records-{c}"));
        assert_eq!(
            list["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            format!("#/components/schemas/RecordData_{c}")
        );
        assert_eq!(
            list["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            format!("#/components/schemas/RecordPage_{c}")
        );
        assert_eq!(
            one["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            format!("#/components/schemas/Record_{c}")
        );
        assert_eq!(
            one["put"]["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            format!("#/components/schemas/RecordData_{c}")
        );
        // A merge patch is not the data: it stays generic.
        assert_eq!(
            one["patch"]["requestBody"]["content"]["application/merge-patch+json"]["schema"]["$ref"],
            "#/components/schemas/RecordData"
        );
        assert_eq!(
            schemas[format!("Record_{c}")]["properties"]["data"]["$ref"],
            format!("#/components/schemas/RecordData_{c}")
        );
        assert_eq!(
            schemas[format!("RecordPage_{c}")]["properties"]["items"]["items"]["$ref"],
            format!("#/components/schemas/Record_{c}")
        );
        // Only the id is a parameter; a create links to the typed operations.
        assert_eq!(one["parameters"].as_array().unwrap().len(), 1);
        assert_eq!(
            list["post"]["responses"]["201"]["links"][format!("get-record-{c}")]["parameters"],
            json!({"id": "$response.body#/id"})
        );
        // The same operations, with the same derived statuses, as the generic routes.
        for (route, item) in [(route_named("records"), list), (route_named("record"), one)] {
            for spec in route.methods {
                let op = &item[spec.method.as_str().to_ascii_lowercase()];
                let listed: BTreeSet<u16> = op["responses"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .map(|k| k.parse().unwrap())
                    .collect();
                assert_eq!(listed, operation::statuses(route, spec), "{} {c}", spec.method);
            }
        }
    }
    // The devices schema as it is; the sensors schema embedded so its references resolve.
    assert_eq!(
        schemas["RecordData_devices"],
        s.ok_json(Method::GET, "/v1/tenants/acme/collections/devices", &w.viewer, None)
            .await["schema"]
    );
    let sensors = &schemas["RecordData_sensors"];
    assert!(
        sensors.get("$schema").is_none() && sensors.get("$id").is_none(),
        "{sensors}"
    );
    assert_eq!(
        sensors["properties"]["unit"]["$ref"],
        "#/components/schemas/RecordData_sensors/$defs/unit"
    );
    assert_eq!(
        sensors["properties"]["limits"]["items"]["$ref"],
        "#/components/schemas/RecordData_sensors/$defs/limit"
    );
    // Values are data, not schemas: left alone.
    assert_eq!(sensors["properties"]["enum"]["const"]["$ref"], "#/not/a/schema");

    // Conditional GET and HEAD through the flow.
    let r = revalidate(&s, &w.viewer, &etag).await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&r, "etag"), etag);
    let r = s
        .send(Method::HEAD, "/v1/tenants/acme/openapi.json", &w.viewer, &[], None)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "etag"), etag);
    // The operator and every member read the same document.
    for token in [OPERATOR, w.admin.as_str(), w.editor.as_str()] {
        assert_eq!(tenant_doc(&s, "acme", token).await.1, etag);
    }
}

fn route_named(name: &str) -> &'static canon_http::route::RouteSpec {
    ROUTES.iter().find(|r| r.name == name).unwrap()
}

#[tokio::test]
async fn tenant_openapi_changes_with_the_collections() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let (before, tag) = tenant_doc(&s, "acme", &w.viewer).await;
    let port = &before["components"]["schemas"]["RecordData_devices"]["properties"]["port"];
    assert_eq!(port, &json!({"type": "integer"}));

    // A schema change: a new tag and the new schema.
    let new_schema = json!({"type": "object", "properties": {"port": {"type": "integer", "maximum": 65535}}});
    let r = s
        .send(
            Method::PATCH,
            "/v1/tenants/acme/collections/devices",
            &w.admin,
            &[],
            Some(json!({"schema": new_schema})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = revalidate(&s, &w.viewer, &tag).await;
    assert_eq!(r.status(), StatusCode::OK);
    let patched_tag = header(&r, "etag").to_owned();
    assert_ne!(patched_tag, tag);
    let after: Value = r.json().await.unwrap();
    assert_eq!(after["components"]["schemas"]["RecordData_devices"], new_schema);

    // A new collection appears, a deleted one disappears; each changes the tag.
    s.ok_json(
        Method::POST,
        "/v1/tenants/acme/collections",
        &w.admin,
        Some(json!({"name": "rooms"})),
    )
    .await;
    let (with_rooms, rooms_tag) = tenant_doc(&s, "acme", &w.viewer).await;
    assert_ne!(rooms_tag, patched_tag);
    assert!(with_rooms["paths"]["/v1/tenants/acme/collections/rooms/records"].is_object());
    let r = s
        .send(
            Method::DELETE,
            "/v1/tenants/acme/collections/rooms",
            &w.admin,
            &[],
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (without, final_tag) = tenant_doc(&s, "acme", &w.viewer).await;
    assert!(
        without["paths"]
            .get("/v1/tenants/acme/collections/rooms/records")
            .is_none()
    );
    assert!(without["components"]["schemas"].get("Record_rooms").is_none());
    assert_ne!(final_tag, rooms_tag);
    // Deterministic: the same collections give the same bytes and tag.
    assert_eq!(final_tag, patched_tag);
}

#[tokio::test]
async fn tenant_openapi_answers_like_every_tenant_resource() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let other = world(&s, "other").await;
    let path = "/v1/tenants/acme/openapi.json";

    let r = s.req(Method::GET, path, None).send().await.unwrap();
    assert!(header(&r, "www-authenticate").starts_with("Bearer"));
    assert_problem(r, 401, "credentials-required").await;
    // Another tenant's admin cannot tell it from a tenant that does not exist.
    let r = s.send(Method::GET, path, &other.admin, &[], None).await;
    assert_problem(r, 404, "not-found").await;
    let r = s
        .send(Method::GET, "/v1/tenants/nobody/openapi.json", OPERATOR, &[], None)
        .await;
    assert_problem(r, 404, "not-found").await;
    // `current` is the caller's own tenant.
    let r = s
        .send(Method::GET, "/v1/tenants/current/openapi.json", &w.viewer, &[], None)
        .await;
    assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(header(&r, "location"), path);
    // Negotiation, methods and query like everywhere.
    let r = s
        .send(Method::GET, path, &w.viewer, &[("accept", "text/csv")], None)
        .await;
    assert_problem(r, 406, "not-acceptable").await;
    let r = s.send(Method::POST, path, &w.admin, &[], Some(json!({}))).await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&r, "allow"), "GET, HEAD, OPTIONS");
    let r = s.send(Method::GET, &format!("{path}?x=1"), &w.viewer, &[], None).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // The other tenant's document lists only its own collections.
    let (doc, _) = tenant_doc(&s, "other", &other.viewer).await;
    assert!(
        doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .all(|p| !p.starts_with("/v1/tenants/") || p.starts_with("/v1/tenants/other"))
    );
}

#[test]
fn tenant_openapi_embeds_schemas_so_every_reference_resolves() {
    // Recursion to the root, anchors (plain and dynamic), a pointer with
    // characters a fragment must escape, a property called like a keyword.
    let tree = json!({
        "$id": "urn:tree",
        "type": "object",
        "properties": {
            "children": {"type": "array", "items": {"$ref": "#"}},
            "leaf": {"$ref": "#leaf"},
            "spaced": {"$ref": "#/$defs/a%20b"},
            "item": {"$dynamicRef": "#item"},
            "const": {"$ref": "#/$defs/a%20b"},
            "$anchor": {"type": "string"}
        },
        "$defs": {
            "l": {"$anchor": "leaf", "type": "string"},
            "a b": {"type": "integer"},
            "item": {"$dynamicAnchor": "item", "$defs": {"x": {"type": "string"}}, "$ref": "#/$defs/item/$defs/x"}
        }
    });
    let sensors = sensor_schema();
    let doc = openapi::tenant_document(
        "acme",
        &[
            openapi::TypedCollection {
                name: "tree",
                schema: &tree,
            },
            openapi::TypedCollection {
                name: "sensors",
                schema: &sensors,
            },
        ],
    );
    check_structure(&doc);
    let embedded = &doc["components"]["schemas"]["RecordData_tree"];
    let at = "#/components/schemas/RecordData_tree";
    assert_eq!(embedded["properties"]["children"]["items"]["$ref"], at);
    assert_eq!(embedded["properties"]["leaf"]["$ref"], format!("{at}/$defs/l"));
    assert_eq!(embedded["properties"]["spaced"]["$ref"], format!("{at}/$defs/a%20b"));
    assert_eq!(embedded["properties"]["const"]["$ref"], format!("{at}/$defs/a%20b"));
    assert_eq!(
        embedded["properties"]["item"]["$dynamicRef"],
        format!("{at}/$defs/item")
    );
    assert_eq!(embedded["$defs"]["item"]["$ref"], format!("{at}/$defs/item/$defs/x"));
    assert_eq!(embedded["properties"]["$anchor"], json!({"type": "string"}));
    let text = embedded.to_string();
    for gone in ["\"$id\"", "\"$schema\"", "\"$anchor\":\"", "\"$dynamicAnchor\""] {
        assert!(!text.contains(gone), "{gone} in {text}");
    }
}

/// A schema stored before the admission rules that breaks them is not
/// embedded with references the document cannot hold.
#[test]
fn tenant_openapi_describes_a_schema_stored_before_the_rules_without_its_references() {
    let old = json!({"properties": {"a": {"$ref": "https://EX.com/root#/$defs/a"}}});
    let doc = openapi::tenant_document(
        "acme",
        &[openapi::TypedCollection {
            name: "old",
            schema: &old,
        }],
    );
    check_structure(&doc);
    let embedded = &doc["components"]["schemas"]["RecordData_old"];
    assert!(!embedded.to_string().contains("$ref"), "{embedded}");
    assert!(embedded["description"].as_str().unwrap().contains("PATCH"));
}

/// `OPTIONS` on every documented path answers `Allow` with exactly the
/// methods built there (the document's operations not marked
/// `x-canon-planned`), `HEAD` with `GET`, and `OPTIONS`: planned methods
/// answer 501 and are not advertised. (schemathesis's own Allow check is
/// switched off on paths with planned methods; this is the exact rule.)
#[tokio::test]
async fn allow_lists_exactly_the_built_methods() {
    let s = Server::start().await;
    let doc = openapi::document();
    let paths = doc["paths"].as_object().unwrap();
    for (path, item) in paths {
        let mut built: BTreeSet<String> = item
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, op)| op.get("x-canon-planned").is_none() && op.get("responses").is_some())
            .map(|(m, _)| m.to_ascii_uppercase())
            .collect();
        if built.contains("GET") {
            built.insert("HEAD".into());
        }
        built.insert("OPTIONS".into());
        let concrete: String = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x1" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        let r = s.call(Method::OPTIONS, &concrete, OPERATOR, None).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "OPTIONS {concrete}");
        let allow: BTreeSet<String> = header(&r, "allow")
            .split(',')
            .map(|m| m.trim().to_owned())
            .filter(|m| !m.is_empty())
            .collect();
        assert_eq!(allow, built, "Allow on {path}");
    }
}
