//! The OpenAPI 3.1 description of Canon, generated, never hand-written.
//!
//! Paths and methods come from the route table ([`crate::routes::ROUTES`]);
//! each operation's responses are the statuses its flow nodes can produce
//! ([`canon_http::operation::statuses`]); response descriptions, problem
//! types and examples come from the catalogue; body schemas are derived
//! from the wire types ([`crate::wire`]) with schemars. `canon openapi`
//! prints it, `/openapi.json` serves it and `docs/openapi.json` keeps it in
//! review (a test fails when it differs from what the code generates).

use std::collections::BTreeSet;

use canon_http::catalogue::{PROBLEMS, ProblemType, status_entry};
use canon_http::media::MediaType;
use canon_http::operation;
use canon_http::route::{Guard, MethodSpec, Outcome, RouteSpec};
use http::Method;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::routes::{ROUTES, name};
use crate::wire;

/// The OpenAPI document for [`ROUTES`].
pub fn document() -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .into_generator();
    let named: Vec<(&str, Value)> = wire::schemas(&mut generator)
        .into_iter()
        .map(|(n, s)| (n, s.to_value()))
        .collect();
    let schema = |name: &str| -> Value {
        named
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| json!({"description": format!("unknown schema {name}")}))
    };

    let mut paths = Map::new();
    for route in ROUTES {
        let mut item = Map::new();
        let params = path_parameters(route.pattern);
        if !params.is_empty() {
            item.insert("parameters".into(), Value::Array(params));
        }
        for spec in route.methods {
            item.insert(
                spec.method.as_str().to_ascii_lowercase(),
                operation_object(route, spec, &schema),
            );
        }
        for method in route.planned {
            item.insert(method.as_str().to_ascii_lowercase(), planned_operation(route, method));
        }
        paths.insert(openapi_path(route.pattern), Value::Object(item));
    }

    let mut schemas: Map<String, Value> = generator
        .take_definitions(true)
        .into_iter()
        .collect::<serde_json::Map<_, _>>();
    schemas.sort_keys();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Canon",
            "version": env!("CARGO_PKG_VERSION"),
            "summary": "A multi-tenant REST resource server whose every status means what it says.",
            "description": DESCRIPTION,
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": "service"}, {"name": "tenants"}, {"name": "records"}, {"name": "planned"}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API key's token: `Authorization: Bearer <token>`."},
            },
            "schemas": schemas,
            "headers": headers(),
            "responses": error_responses(),
        },
    })
}

const DESCRIPTION: &str = "Every response is decided by one ordered decision flow; each operation lists \
exactly the statuses its nodes can produce. Errors are RFC 9457 problems (`application/problem+json`) whose \
`type` is a page at `/problems/{slug}`; [`/docs/status-codes`](/docs/status-codes) lists every status \
(and which belong to work not built yet). Two answers belong to no \
operation and are documented here once: 405 (the path exists but not the method; `Allow` lists the \
methods) and 501 (a method Canon does not implement at all). OPTIONS on any path answers 204 with `Allow`.";

/// A route pattern as an OpenAPI path template: a catch-all `{*rest}`
/// becomes `{rest}` (OpenAPI cannot say that it spans segments; its
/// parameter's description does).
pub fn openapi_path(pattern: &str) -> String {
    pattern.replace("{*", "{")
}

/// The `{name}` parameters of a path pattern.
fn path_parameters(pattern: &str) -> Vec<Value> {
    pattern
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            let name = name.trim_start_matches('*');
            json!({
                "name": name,
                "in": "path",
                "required": true,
                "schema": {"type": "string", "minLength": 1},
                "description": parameter_description(name),
            })
        })
        .collect()
}

fn parameter_description(name: &str) -> &'static str {
    match name {
        "tenant" => "The tenant's name, or `current` for the caller's own tenant (307).",
        "collection" => "The collection's name (an old name redirects: 301/308).",
        "id" => "The record's id.",
        "user" => "The user's id.",
        "key" => "The API key's id.",
        "slug" => "A problem type's slug.",
        "path" => "The device endpoint's path; it may contain `/`.",
        _ => "A path segment.",
    }
}

/// A stable `operationId`: method and route name (planned routes use their
/// last literal segments).
fn operation_id(route: &RouteSpec, method: &Method) -> String {
    let base = if route.name == name::PLANNED {
        route
            .pattern
            .split('/')
            .filter(|s| !s.is_empty() && !s.starts_with('{') && *s != "v1")
            .collect::<Vec<_>>()
            .join("-")
    } else {
        route.name.to_owned()
    };
    format!("{}-{base}", method.as_str().to_ascii_lowercase())
}

fn tag(route: &RouteSpec) -> &'static str {
    if route.name == name::PLANNED {
        "planned"
    } else if route.pattern.contains("/collections/") {
        "records"
    } else if route.pattern.starts_with("/v1/") {
        "tenants"
    } else {
        "service"
    }
}

fn security(route: &RouteSpec) -> Value {
    if operation::needs_credentials(route.pattern) {
        json!([{"bearer": []}])
    } else {
        json!([])
    }
}

fn operation_object(route: &RouteSpec, spec: &MethodSpec, schema: &dyn Fn(&str) -> Value) -> Value {
    let mut op = Map::new();
    op.insert("operationId".into(), operation_id(route, &spec.method).into());
    op.insert("summary".into(), route.summary.into());
    op.insert("tags".into(), json!([tag(route)]));
    let who = match spec.guard {
        Guard::Public => "Anyone, without credentials.".to_owned(),
        Guard::Role(role) => format!("Callers with the `{role}` role or above."),
    };
    op.insert("description".into(), who.into());
    op.insert("security".into(), security(route));
    let parameters = operation_parameters(spec);
    if !parameters.is_empty() {
        op.insert("parameters".into(), Value::Array(parameters));
    }
    if !spec.accepts.is_empty() {
        let mut content = Map::new();
        for media in spec.accepts {
            let body_schema = match media {
                MediaType::JsonPatch => schema("JsonPatch"),
                _ => spec.request.map_or_else(|| json!({}), schema),
            };
            content.insert(media.essence().into(), json!({"schema": body_schema}));
        }
        op.insert("requestBody".into(), json!({"required": true, "content": content}));
    }
    let statuses = operation::statuses(route, spec);
    let mut responses = Map::new();
    for status in &statuses {
        responses.insert(status.to_string(), response_object(*status, spec, schema));
    }
    op.insert("responses".into(), Value::Object(responses));
    if let (Some(links), Some(Value::Object(created))) = (
        creation_links(route, spec),
        op.get_mut("responses").and_then(|r| r.get_mut("201")),
    ) {
        created.insert("links".into(), links);
    }
    Value::Object(op)
}

fn planned_operation(route: &RouteSpec, method: &Method) -> Value {
    let mut responses = Map::new();
    for status in operation::planned_statuses(route) {
        responses.insert(
            status.to_string(),
            json!({"$ref": format!("#/components/responses/{}", error_response_name(status))}),
        );
    }
    json!({
        "operationId": operation_id(route, method),
        "summary": route.summary,
        "description": "Part of the contract but not implemented yet: answers 501.",
        "tags": ["planned"],
        "x-canon-planned": true,
        "security": security(route),
        "responses": responses,
    })
}

/// Query and header parameters the flow and the resources read.
fn operation_parameters(spec: &MethodSpec) -> Vec<Value> {
    let mut out = Vec::new();
    let list = spec.method == Method::GET && spec.produces.contains(&MediaType::Csv);
    if list {
        out.push(json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}, "description": "Items per page."}));
        out.push(json!({"name": "cursor", "in": "query", "schema": {"type": "string"}, "description": "The cursor of the next page, from `Link: rel=\"next\"` or `next_cursor`; bound to this list, its filters and sort."}));
    }
    if list && spec.response == Some("RecordPage") {
        out.push(json!({"name": "sort", "in": "query", "schema": {"type": "string"}, "description": "A top-level field, `-field` for descending."}));
        out.push(json!({"name": "filter", "in": "query", "style": "deepObject", "explode": true, "schema": {"type": "object", "additionalProperties": {"type": "string"}}, "description": "`filter[field]=value`: a JSON literal (`22`, `true`, `null`), a quoted JSON string (`\"22\"`), or else the text itself."}));
    }
    if spec.method == Method::GET {
        out.push(header_parameter(
            "If-None-Match",
            "Answer 304 when one of these tags is current.",
        ));
        out.push(header_parameter(
            "If-Modified-Since",
            "Answer 304 when unchanged since (ignored with If-None-Match or when in the future).",
        ));
    } else {
        out.push(header_parameter("If-Match", "Write only if the current strong tag is one of these (412 otherwise; `*` never satisfies a collection that requires If-Match)."));
        out.push(header_parameter(
            "If-Unmodified-Since",
            "Write only if unchanged since (412 otherwise).",
        ));
    }
    if spec.method == Method::PUT && spec.creates {
        out.push(header_parameter(
            "If-None-Match",
            "`*`: create only (412 when it exists).",
        ));
    }
    if spec.method == Method::POST {
        out.push(header_parameter(
            "Idempotency-Key",
            "Retries with the same key and body get the first response again (1 to 255 visible ASCII characters).",
        ));
    }
    if spec.writes && !spec.produces.is_empty() {
        out.push(header_parameter(
            "Prefer",
            "`return=minimal`: leave the body out (200 becomes 204).",
        ));
    }
    out
}

fn header_parameter(name: &str, description: &str) -> Value {
    // The syntax each header must have (a malformed one is a 400).
    let schema = match name {
        "If-Match" | "If-None-Match" => {
            json!({"type": "string", "pattern": r#"^(\*|(W/)?"[\x21\x23-\x7e]*"(\s*,\s*(W/)?"[\x21\x23-\x7e]*")*)$"#})
        }
        "Idempotency-Key" => json!({"type": "string", "pattern": r"^[\x21\x23-\x5b\x5d-\x7e]{1,255}$"}),
        "If-Modified-Since" | "If-Unmodified-Since" => {
            json!({"type": "string", "description": "An HTTP-date, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`."})
        }
        _ => json!({"type": "string"}),
    };
    json!({"name": name, "in": "header", "required": false, "schema": schema, "description": description})
}

fn describe(status: u16) -> String {
    status_entry(status).map_or_else(|| "See /docs/status-codes.".to_owned(), |e| e.when.to_owned())
}

fn header_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/headers/{name}")})
}

fn response_object(status: u16, spec: &MethodSpec, schema: &dyn Fn(&str) -> Value) -> Value {
    if status >= 400 {
        return json!({"$ref": format!("#/components/responses/{}", error_response_name(status))});
    }
    let mut headers = Map::new();
    headers.insert("X-Request-Id".into(), header_ref("X-Request-Id"));
    let mut response = Map::new();
    response.insert("description".into(), describe(status).into());
    let produces_body = matches!(status, 200 | 201) && !spec.produces.is_empty();
    match status {
        200 | 201 => {
            if !spec.produces.contains(&MediaType::Html) {
                headers.insert("ETag".into(), header_ref("ETag"));
            }
            if spec.method == Method::GET && spec.response.is_some_and(|r| !r.ends_with("Page") && r != "Health") {
                headers.insert("Last-Modified".into(), header_ref("Last-Modified"));
            }
            if status == 201 {
                headers.insert("Location".into(), header_ref("Location"));
            }
            if spec.produces.contains(&MediaType::Csv) {
                headers.insert("Link".into(), header_ref("Link"));
            }
            if produces_body {
                headers.insert("Vary".into(), header_ref("Vary"));
            }
        }
        204 if spec.outcomes.contains(&Outcome::Ok) || spec.outcomes.contains(&Outcome::Created) => {
            headers.insert("Preference-Applied".into(), header_ref("Preference-Applied"));
        }
        301 | 307 | 308 => {
            headers.insert("Location".into(), header_ref("Location"));
        }
        304 => {
            headers.insert("ETag".into(), header_ref("ETag"));
            headers.insert("Vary".into(), header_ref("Vary"));
        }
        _ => {}
    }
    response.insert("headers".into(), Value::Object(headers));
    if produces_body {
        let mut content = Map::new();
        for media in spec.produces {
            let body_schema = match media {
                MediaType::Json => spec.response.map_or_else(|| json!({}), schema),
                MediaType::Csv => json!({"type": "string", "description": "RFC 4180 CSV with a header row."}),
                MediaType::Ndjson => json!({"type": "string", "description": "One JSON item per line."}),
                _ => json!({"type": "string"}),
            };
            content.insert(media.essence().into(), json!({"schema": body_schema}));
        }
        response.insert("content".into(), Value::Object(content));
    }
    Value::Object(response)
}

/// The name of the shared problem response for `status` in
/// `components.responses`.
fn error_response_name(status: u16) -> String {
    format!("Problem{status}")
}

/// The shared problem responses, one per error status of the catalogue.
fn error_responses() -> Value {
    let codes: BTreeSet<u16> = PROBLEMS.iter().map(|p| p.status).collect();
    codes
        .into_iter()
        .map(|c| (error_response_name(c), error_response(c)))
        .collect::<Map<_, _>>()
        .into()
}

/// A problem response for `status`, with the catalogue's first problem
/// type of that status as its example.
fn error_response(status: u16) -> Value {
    let kinds: Vec<&ProblemType> = PROBLEMS.iter().filter(|p| p.status == status).collect();
    let example = kinds.first().copied();
    let mut headers = Map::new();
    headers.insert("X-Request-Id".into(), header_ref("X-Request-Id"));
    match status {
        401 => {
            headers.insert("WWW-Authenticate".into(), header_ref("WWW-Authenticate"));
        }
        415 => {
            headers.insert("Accept-Encoding".into(), header_ref("Accept-Encoding"));
        }
        429 | 503 => {
            headers.insert("Retry-After".into(), header_ref("Retry-After"));
        }
        412 => {
            headers.insert("ETag".into(), header_ref("ETag"));
        }
        _ => {}
    }
    let types: Vec<String> = kinds.iter().map(|p| format!("`{}`", p.type_url())).collect();
    let mut media = json!({"schema": {"$ref": "#/components/schemas/ProblemBody"}});
    if let Some(p) = example {
        media["example"] = json!({
            "type": p.type_url(),
            "title": p.title,
            "status": p.status,
            "detail": p.description,
            "instance": "/v1/…",
            "request_id": "01JD8Y5Z6Q2W3E4R5T6Y7U8I9O",
        });
    }
    json!({
        "description": format!("{} Problem types: {}.", describe(status), types.join(", ")),
        "headers": headers,
        "content": {"application/problem+json": media},
    })
}

/// Links from a create (POST answering 201) to the operations on what it
/// created, so stateful testers and client generators can chain calls.
fn creation_links(route: &RouteSpec, spec: &MethodSpec) -> Option<Value> {
    if spec.method != Method::POST || !spec.outcomes.contains(&Outcome::Created) {
        return None;
    }
    let item = ROUTES.iter().find(|r| {
        r.pattern
            .strip_prefix(route.pattern)
            .and_then(|rest| rest.strip_prefix("/{"))
            .is_some_and(|rest| rest.ends_with('}') && !rest.contains('/'))
    })?;
    let created_param = item.pattern.rsplit('/').next()?.trim_matches(|c| c == '{' || c == '}');
    let from_body = if matches!(created_param, "tenant" | "collection") {
        "$response.body#/name"
    } else {
        "$response.body#/id"
    };
    let mut parameters = Map::new();
    for p in path_parameters(item.pattern) {
        let n = p["name"].as_str().unwrap_or_default().to_owned();
        let value = if n == created_param {
            from_body.to_owned()
        } else {
            format!("$request.path.{n}")
        };
        parameters.insert(n, value.into());
    }
    let mut links = Map::new();
    for m in item.methods {
        let id = operation_id(item, &m.method);
        links.insert(id.clone(), json!({"operationId": id, "parameters": parameters}));
    }
    Some(Value::Object(links))
}

fn headers() -> Value {
    let s = |d: &str| json!({"description": d, "schema": {"type": "string"}});
    json!({
        "X-Request-Id": s("The request's id (the client's, if it sent a sane one); also in problem bodies."),
        "ETag": s("The representation's entity tag (strong for single resources, weak for lists; gzip bodies have their own)."),
        "Last-Modified": s("When the resource last changed (HTTP-date)."),
        "Location": s("The created resource, or the redirect target."),
        "Link": s("`<…>; rel=\"next\"` when there is another page."),
        "Vary": s("The request headers the representation depends on (`Accept`, `Accept-Encoding`)."),
        "Preference-Applied": s("`return=minimal` when the body was left out as asked."),
        "WWW-Authenticate": s("The bearer challenge (RFC 6750)."),
        "Accept-Encoding": s("The content codings Canon accepts for request bodies."),
        "Retry-After": s("Seconds to wait before retrying."),
    })
}

/// Statuses listed for `method` on the route with `pattern` in `doc`.
pub fn listed_statuses(doc: &Value, pattern: &str, method: &Method) -> BTreeSet<u16> {
    doc["paths"][openapi_path(pattern)][method.as_str().to_ascii_lowercase()]["responses"]
        .as_object()
        .map(|r| r.keys().filter_map(|k| k.parse().ok()).collect())
        .unwrap_or_default()
}
