//! The OpenAPI 3.1 description of Canon, generated, never hand-written.
//!
//! Paths and methods come from the route table ([`crate::routes::ROUTES`]);
//! each operation's responses are the statuses its flow nodes can produce
//! ([`canon_http::operation::statuses`]); response descriptions, problem
//! types and examples come from the catalogue; body schemas are derived
//! from the wire types ([`crate::wire`]) with schemars. `canon openapi`
//! prints it, `/openapi.json` serves it and `docs/openapi.json` keeps it in
//! review (a test fails when it differs from what the code generates).
//!
//! One generator writes two documents: the global one ([`document`]) and a
//! tenant's ([`tenant_document`], `/v1/tenants/{tenant}/openapi.json`), which
//! is the same document with the tenant's name in its paths and, for each of
//! its collections, the record paths again under the collection's name with
//! the collection's JSON Schema as the records' `data`.

use std::collections::BTreeSet;

use canon_http::access::Role;
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
    generate(&Scope {
        tenant: None,
        collections: &[],
    })
}

/// A collection whose records a tenant's document describes with its schema.
#[derive(Debug, Clone, Copy)]
pub struct TypedCollection<'a> {
    /// Its name (a slug).
    pub name: &'a str,
    /// The JSON Schema (draft 2020-12) of its records' data.
    pub schema: &'a Value,
}

/// The OpenAPI document as the tenant `tenant` sees it: every path under
/// `/v1/tenants/{tenant}` names the tenant, and each of `collections` has its
/// own record paths (`…/collections/{name}/records` and `…/records/{id}`)
/// whose bodies carry its schema (`RecordData_{name}`, `Record_{name}`,
/// `RecordPage_{name}` in `components.schemas`). The generic record paths
/// stay, for collections created after the document was read.
pub fn tenant_document(tenant: &str, collections: &[TypedCollection<'_>]) -> Value {
    generate(&Scope {
        tenant: Some(tenant),
        collections,
    })
}

/// What a document describes: the whole API, or one tenant's view of it.
struct Scope<'a> {
    /// The tenant named in the paths instead of `{tenant}`.
    tenant: Option<&'a str>,
    /// The collections whose record paths are typed.
    collections: &'a [TypedCollection<'a>],
}

impl Scope<'_> {
    /// Where `route` is described: generically, or for `collection`.
    fn site(&self, route: &'static RouteSpec, collection: Option<&str>) -> Site {
        let mut path = openapi_path(route.pattern);
        if let Some(tenant) = self.tenant {
            path = path.replace("{tenant}", tenant);
        }
        if let Some(c) = collection {
            path = path.replace("{collection}", c);
        }
        Site {
            route,
            path,
            collection: collection.map(str::to_owned),
        }
    }
}

/// The routes whose bodies are records, described again for each collection
/// of a tenant's document.
fn typed(route: &RouteSpec) -> bool {
    route.name == name::RECORDS || route.name == name::RECORD
}

/// One route under one path: generic, or one collection's typed copy.
struct Site {
    route: &'static RouteSpec,
    /// The OpenAPI path (templated where the document is generic).
    path: String,
    /// The collection whose schema types the bodies.
    collection: Option<String>,
}

/// The body schemas the route table names, and a collection's in its place
/// where a site is typed.
struct Bodies {
    named: Vec<(&'static str, Value)>,
}

impl Bodies {
    /// The schema of the body called `name` for `method` at `site`. A typed
    /// site's records carry the collection's schema; a PATCH body is a patch
    /// of the data, not data, so it stays generic.
    fn get(&self, name: &str, site: &Site, method: &Method) -> Value {
        if let Some(c) = &site.collection {
            let typed = matches!(name, "Record" | "RecordPage") || (name == "RecordData" && *method != Method::PATCH);
            if typed {
                return schema_ref(&typed_name(name, c));
            }
        }
        self.named
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| json!({"description": format!("unknown schema {name}")}))
    }
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// The component name of `base` typed for `collection`, limited to the
/// characters OpenAPI allows in component names (`^[a-zA-Z0-9._-]+$`).
pub fn typed_name(base: &str, collection: &str) -> String {
    let clean: String = collection
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{base}_{clean}")
}

fn generate(scope: &Scope<'_>) -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .into_generator();
    let bodies = Bodies {
        named: wire::schemas(&mut generator)
            .into_iter()
            .map(|(n, s)| (n, s.to_value()))
            .collect(),
    };

    let mut paths = Map::new();
    for route in ROUTES {
        let site = scope.site(route, None);
        paths.insert(site.path.clone(), path_item(&site, scope, &bodies));
        if typed(route) {
            for c in scope.collections {
                let site = scope.site(route, Some(c.name));
                paths.insert(site.path.clone(), path_item(&site, scope, &bodies));
            }
        }
    }

    let mut schemas: Map<String, Value> = generator
        .take_definitions(true)
        .into_iter()
        .collect::<serde_json::Map<_, _>>();
    for c in scope.collections {
        typed_schemas(c, &mut schemas);
    }
    schemas.sort_keys();
    let (title, description) = match scope.tenant {
        None => ("Canon".to_owned(), DESCRIPTION.to_owned()),
        Some(t) => (
            format!("Canon: tenant {t}"),
            format!(
                "The API as the tenant `{t}` sees it: its paths name the tenant, and each of its collections has \
                 its own record paths whose bodies carry the collection's schema. {DESCRIPTION}"
            ),
        ),
    };
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": env!("CARGO_PKG_VERSION"),
            "summary": "A multi-tenant REST resource server whose every status means what it says.",
            "description": description,
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
            "contact": {"name": "Canon maintainers"},
        },
        // Canon is a public API server: the document describes what every
        // client may call (`x-internal: false`).
        "servers": [{
            "url": "/",
            "description": "The server that served this document: production, staging or local alike.",
            "x-internal": false,
        }],
        "tags": [{"name": "service"}, {"name": "tenants"}, {"name": "records"}, {"name": "planned"}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API key's token: `Authorization: Bearer <token>`."},
                "operator": {"type": "http", "scheme": "bearer", "description": "The operator's token (`CANON_BOOTSTRAP_TOKEN`, or the one printed at first start), not an API key: it manages tenants and the service itself."},
            },
            "schemas": schemas,
            "headers": headers(),
            "responses": error_responses(&paths),
        },
    })
}

/// The path item of `site`: its parameters and one operation per method.
fn path_item(site: &Site, scope: &Scope<'_>, bodies: &Bodies) -> Value {
    let route = site.route;
    let mut item = Map::new();
    let params = path_parameters(&site.path);
    if !params.is_empty() {
        item.insert("parameters".into(), Value::Array(params));
    }
    for spec in route.methods {
        let schema = |name: &str| bodies.get(name, site, &spec.method);
        item.insert(
            spec.method.as_str().to_ascii_lowercase(),
            operation_object(site, scope, spec, &schema),
        );
    }
    for method in route.planned {
        item.insert(method.as_str().to_ascii_lowercase(), planned_operation(site, method));
    }
    Value::Object(item)
}

/// Adds `RecordData_{c}` (the collection's schema, embedded so that its
/// references resolve in the document), `Record_{c}` and `RecordPage_{c}`
/// (the generic envelope and page around it) to `schemas`.
fn typed_schemas(c: &TypedCollection<'_>, schemas: &mut Map<String, Value>) {
    let data = typed_name("RecordData", c.name);
    let record = typed_name("Record", c.name);
    let page = typed_name("RecordPage", c.name);
    let mut envelope = schemas
        .get("Record")
        .cloned()
        .unwrap_or_else(|| json!({"type": "object"}));
    envelope["properties"]["data"] = json!({
        "$ref": format!("#/components/schemas/{data}"),
        "description": format!("The data, as the schema of the collection `{}` describes it.", c.name),
    });
    envelope["description"] = format!("A record of the collection `{}`.", c.name).into();
    let mut list = schemas
        .get("RecordPage")
        .cloned()
        .unwrap_or_else(|| json!({"type": "object"}));
    list["properties"]["items"]["items"] = schema_ref(&record);
    list["description"] = format!("A page of the collection `{}` (JSON).", c.name).into();
    schemas.insert(data.clone(), embed_schema(c.schema, &data));
    schemas.insert(record, envelope);
    schemas.insert(page, list);
}

/// A collection's schema as `components.schemas.{name}`.
///
/// Canon admits only schemas that are one resource with fragment references
/// ([`crate::schema_rules::admit`]: `#/pointer` or `#anchor`, `$id` at the
/// root only), so embedding is a rename: the root's `$schema` (Canon compiles
/// every schema as draft 2020-12, OpenAPI 3.1's dialect) and `$id` go (two
/// collections may share one), every `$ref` and `$dynamicRef` becomes a
/// pointer into the schema's new place (`#/$defs/x` becomes
/// `#/components/schemas/{name}/$defs/x`, `#anchor` the pointer of the
/// subschema declaring it), and `$anchor`/`$dynamicAnchor` go (two schemas of
/// one document may declare the same name; in one resource a `$dynamicRef`
/// means what a `$ref` to its anchor means). Values (`const`, `enum`,
/// `default`, `examples`) are data and stay as they are. A schema stored
/// before these rules that breaks them is described as accepting anything,
/// with a note, rather than with references the document cannot hold.
pub fn embed_schema(schema: &Value, name: &str) -> Value {
    if crate::schema_rules::admit(schema).is_err() {
        return json!({
            "description": "This collection's schema was stored before Canon's admission rules and breaks them (a reference outside the schema, a nested `$id`, a loop or too high a cost), so it cannot be described here; read it with GET on the collection, and replace it with PATCH.",
        });
    }
    let anchors = crate::schema_rules::anchors(schema);
    let mut out = schema.clone();
    let Value::Object(root) = &mut out else {
        return out;
    };
    root.remove("$schema");
    root.remove("$id");
    let to = format!("#/components/schemas/{name}");
    each_schema(root, &mut |schema| {
        schema.remove("$anchor");
        schema.remove("$dynamicAnchor");
        for keyword in ["$ref", "$dynamicRef"] {
            let Some(Value::String(r)) = schema.get_mut(keyword) else {
                continue;
            };
            let fragment = r.strip_prefix('#').unwrap_or_default();
            let pointer = if fragment.is_empty() || fragment.starts_with('/') {
                Some(fragment.to_owned())
            } else {
                anchors.get(fragment).map(|p| fragment_of(p))
            };
            if let Some(pointer) = pointer {
                *r = format!("{to}{pointer}");
            }
        }
    });
    out
}

/// Calls `f` on every object in `schema` (itself included) that may be a
/// schema, not entering values (`const`, `enum`, `default`, `examples`).
fn each_schema(schema: &mut Map<String, Value>, f: &mut dyn FnMut(&mut Map<String, Value>)) {
    f(schema);
    for (key, value) in schema.iter_mut() {
        match (key.as_str(), value) {
            (k, _) if crate::schema_rules::DATA_KEYWORDS.contains(&k) => {}
            // Maps of names to schemas: a property may be called `const`.
            (
                "properties" | "patternProperties" | "$defs" | "definitions" | "dependentSchemas",
                Value::Object(named),
            ) => named.values_mut().for_each(|v| each_in(v, f)),
            (_, value) => each_in(value, f),
        }
    }
}

fn each_in(value: &mut Value, f: &mut dyn FnMut(&mut Map<String, Value>)) {
    match value {
        Value::Object(map) => each_schema(map, f),
        Value::Array(items) => items.iter_mut().for_each(|v| each_in(v, f)),
        _ => {}
    }
}

/// A JSON pointer (RFC 6901) written as a URI fragment (RFC 3986): what a
/// fragment cannot hold percent-encoded.
fn fragment_of(pointer: &str) -> String {
    let mut out = String::with_capacity(pointer.len());
    for b in pointer.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

const DESCRIPTION: &str = "Every response is decided by one ordered decision flow; each operation lists \
exactly the statuses its nodes can produce. Errors are RFC 9457 problems (`application/problem+json`) whose \
`type` is a page at `/problems/{slug}`; [`/docs/status-codes`](/docs/status-codes) lists every status \
(and which belong to work not built yet). Two answers belong to no \
operation and are documented here once: 405 (the path exists but not the method; `Allow` lists the \
methods; also TRACE, CONNECT and QUERY, recognised and refused everywhere) and 501 (a method Canon does not \
recognise). OPTIONS on any documented path answers 204 with `Allow` (with credentials under `/v1`, like any \
other method there).";

/// A route pattern as an OpenAPI path template: a catch-all `{*rest}`
/// becomes `{rest}` (OpenAPI cannot say that it spans segments; its
/// parameter's description does).
pub fn openapi_path(pattern: &str) -> String {
    pattern.replace("{*", "{")
}

/// The `{name}` parameters of an OpenAPI path.
fn path_parameters(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            let name = name.trim_start_matches('*');
            json!({
                "name": name,
                "in": "path",
                "required": true,
                "schema": parameter_schema(name),
                "description": parameter_description(name),
            })
        })
        .collect()
}

/// The syntax of each path parameter, as the resources check it: a value
/// outside it names nothing (404), or, for a record id a client chooses,
/// is refused (400).
fn parameter_schema(name: &str) -> Value {
    match name {
        "tenant" | "collection" | "device" | "slug" => json!({"type": "string", "maxLength": 63, "pattern": SLUG}),
        "user" | "key" => json!({"type": "string", "format": "uuid", "maxLength": 36}),
        "id" => json!({"type": "string", "maxLength": 128, "pattern": RECORD_ID}),
        _ => json!({"type": "string", "minLength": 1, "maxLength": 2048, "pattern": "^[^?#]+$"}),
    }
}

/// A top-level field name (`canon_store::is_field_name`).
pub const FIELD: &str = "^[A-Za-z_][A-Za-z0-9_]{0,63}$";
/// A sort order: a field name, `-` first for descending.
const SORT: &str = "^-?[A-Za-z_][A-Za-z0-9_]{0,63}$";
/// A cursor's syntax (`cursor.rs`): base64url payload, `.`, base64url tag.
const CURSOR: &str = "^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+$";
/// A slug (`input::is_slug`).
pub const SLUG: &str = "^[a-z][a-z0-9-]{0,62}$";
/// A record id (`input::record_id`): 1 to 128 unreserved characters, not
/// `.`, `..` or the reserved word `batch`.
pub const RECORD_ID: &str = r"^(?!batch$)(?!\.\.?$)[A-Za-z0-9._~-]{1,128}$";

fn parameter_description(name: &str) -> &'static str {
    match name {
        "tenant" => "The tenant's name, or `current` for the caller's own tenant (307).",
        "collection" => "The collection's name (an old name redirects: 301/308).",
        "id" => "The record's id.",
        "user" => "The user's id.",
        "key" => "The API key's id.",
        "slug" => "A problem type's slug.",
        "device" => "The device's name.",
        "path" => "The device endpoint's path; it may contain `/`.",
        _ => "A path segment.",
    }
}

/// A stable `operationId`: method and route name (planned routes use their
/// last literal segments), then the collection's name at a typed site.
fn operation_id(site: &Site, method: &Method) -> String {
    let route = site.route;
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
    let method = method.as_str().to_ascii_lowercase();
    match &site.collection {
        Some(c) => format!("{method}-{base}-{c}"),
        None => format!("{method}-{base}"),
    }
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

/// Who may call: nobody needs credentials for public routes; the
/// operator's own operations (tenants, `/v1/admin`) take the operator's
/// token, a credential no API key can be; everything else an API key.
fn security(route: &RouteSpec, guard: Option<&Guard>) -> Value {
    let operator = matches!(guard, Some(Guard::Role(Role::Operator))) || route.pattern.starts_with("/v1/admin/");
    if !operation::needs_credentials(route.pattern) {
        json!([])
    } else if operator {
        json!([{"operator": []}])
    } else {
        json!([{"bearer": []}])
    }
}

fn operation_object(site: &Site, scope: &Scope<'_>, spec: &MethodSpec, schema: &dyn Fn(&str) -> Value) -> Value {
    let route = site.route;
    let mut op = Map::new();
    op.insert("operationId".into(), operation_id(site, &spec.method).into());
    let summary = match &site.collection {
        Some(c) => format!("{} Collection `{c}`.", route.summary),
        None => route.summary.to_owned(),
    };
    op.insert("summary".into(), summary.into());
    op.insert("tags".into(), json!([tag(route)]));
    let who = match spec.guard {
        Guard::Public => "Anyone, without credentials.".to_owned(),
        Guard::Role(role) => format!("Callers with the `{role}` role or above."),
    };
    op.insert("description".into(), who.into());
    op.insert("security".into(), security(route, Some(&spec.guard)));
    let parameters = operation_parameters(spec);
    if !parameters.is_empty() {
        op.insert("parameters".into(), Value::Array(parameters));
    }
    if !spec.accepts.is_empty() {
        let mut content = Map::new();
        for media in spec.accepts {
            let body_schema = match media {
                MediaType::JsonPatch => schema("JsonPatch"),
                // Any bytes are an upload: each line is judged on its own,
                // in the job's report (OpenAPI 3.1 has no per-line schema).
                MediaType::Ndjson => json!({
                    "contentMediaType": "application/x-ndjson",
                    "description": "One record's data (a JSON object) per line.",
                }),
                _ => spec.request.map_or_else(|| json!({}), schema),
            };
            content.insert(media.essence().into(), json!({"schema": body_schema}));
        }
        op.insert("requestBody".into(), json!({"required": true, "content": content}));
    }
    if spec.forwards && spec.writes {
        // Relayed as it comes: any type, any coding, or none at all.
        op.insert(
            "requestBody".into(),
            json!({"required": false, "description": "Relayed to the device as it is (streamed).", "content": {
                // At most CANON_MAX_IMPORT_BYTES, the limit of every streamed body (its default here).
                "application/octet-stream": {"schema": {"type": "string", "format": "binary", "maxLength": 10_u64 << 30}},
                "application/json": {"schema": {}},
            }}),
        );
    }
    let statuses = operation::statuses(route, spec);
    let mut responses = Map::new();
    for status in &statuses {
        responses.insert(status.to_string(), response_object(*status, spec, schema));
    }
    if spec.forwards {
        responses.insert(
            "default".into(),
            json!({"description": "The device's answer, relayed: its status, headers (hop-by-hop fields removed, \
                   `Via` added) and body, as the device sent them."}),
        );
    }
    op.insert("responses".into(), Value::Object(responses));
    if let (Some(links), Some(Value::Object(created))) = (
        creation_links(site, scope, spec),
        op.get_mut("responses").and_then(|r| r.get_mut("201")),
    ) {
        created.insert("links".into(), links);
    }
    Value::Object(op)
}

fn planned_operation(site: &Site, method: &Method) -> Value {
    let route = site.route;
    let mut responses = Map::new();
    for status in operation::planned_statuses(route) {
        responses.insert(
            status.to_string(),
            json!({"$ref": format!("#/components/responses/{}", error_response_name(status))}),
        );
    }
    json!({
        "operationId": operation_id(site, method),
        "summary": route.summary,
        "description": "Part of the contract but not implemented yet: answers 501.",
        "tags": ["planned"],
        "x-canon-planned": true,
        "security": security(route, None),
        "responses": responses,
    })
}

/// Query and header parameters the flow and the resources read.
fn operation_parameters(spec: &MethodSpec) -> Vec<Value> {
    let mut out = Vec::new();
    // A relayed request's headers and query are the device's business.
    if spec.forwards {
        return out;
    }
    // A list answers a page (`…Page`); a job's result also comes in CSV but is no list.
    let list = spec.method == Method::GET && spec.response.is_some_and(|r| r.ends_with("Page"));
    if list {
        out.push(json!({"name": "limit", "in": "query", "schema": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 1000}, "description": "Items per page."}));
        out.push(json!({"name": "cursor", "in": "query", "schema": {"type": "string", "format": "canon-cursor", "minLength": 3, "maxLength": crate::cursor::MAX_CURSOR_LEN, "pattern": CURSOR}, "description": "The cursor of the next page, from `Link: rel=\"next\"` or `next_cursor`; bound to this list, its filters and sort (400 when it was not issued for them)."}));
    }
    if list && spec.response == Some("RecordPage") {
        out.push(json!({"name": "sort", "in": "query", "schema": {"type": "string", "maxLength": 65, "pattern": SORT}, "description": "A top-level field, `-field` for descending."}));
        out.push(json!({"name": "filter", "in": "query", "style": "deepObject", "explode": true, "schema": {"type": "object", "propertyNames": {"pattern": FIELD}, "additionalProperties": {"type": "string", "maxLength": 4096}}, "description": "`filter[field]=value`: a JSON literal (`22`, `true`, `null`), a quoted JSON string (`\"22\"`), or else the text itself."}));
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
    if is_job_monitor_read(spec) {
        out.push(header_parameter(
            "Prefer",
            "`wait=N` (RFC 7240): answer as soon as the job ends, or after at most N seconds (capped at 10) with \
             the job as it stands; the 200 then says `Preference-Applied: wait=N`.",
        ));
    }
    out
}

/// A `GET` of a job's monitor, which honours `Prefer: wait`.
fn is_job_monitor_read(spec: &MethodSpec) -> bool {
    spec.method == Method::GET && spec.response == Some("Job")
}

fn header_parameter(name: &str, description: &str) -> Value {
    // The syntax each header must have (a malformed one is a 400). The
    // `format`s name the syntax for tools: schemathesis is given a generator
    // for each (scripts/schemathesis_hooks.py); the patterns say it exactly.
    let schema = match name {
        // RFC 9110 §13.1.1: `*` or a list of entity tags; empty list
        // elements are allowed (§5.6.1) and an empty list matches nothing.
        "If-Match" | "If-None-Match" => json!({
            "type": "string",
            "format": "entity-tags",
            "maxLength": MAX_HEADER_VALUE,
            "pattern": r#"^(\*|((W/)?"[\x21\x23-\x7e]*")?(\s*,\s*((W/)?"[\x21\x23-\x7e]*")?)*)$"#
        }),
        // An RFC 8941 string or, leniently, the bare key.
        "Idempotency-Key" => json!({
            "type": "string",
            "maxLength": 257,
            "pattern": r#"^("[\x21\x23-\x5b\x5d-\x7e]{1,255}"|[\x21\x23-\x5b\x5d-\x7e]{1,255})$"#
        }),
        // RFC 9110 §13.1.3-4: a value that is not an HTTP-date is ignored.
        "If-Modified-Since" | "If-Unmodified-Since" => json!({
            "type": "string",
            "format": "http-date",
            "maxLength": MAX_HEADER_VALUE,
            "description": "An HTTP-date, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`; any other value is ignored."
        }),
        // RFC 7240: preferences Canon does not know are ignored.
        "Prefer" => json!({"type": "string", "format": "prefer", "maxLength": MAX_HEADER_VALUE}),
        _ => json!({"type": "string", "maxLength": MAX_HEADER_VALUE}),
    };
    json!({"name": name, "in": "header", "required": false, "schema": schema, "description": description})
}

/// The longest header value the document admits: the flow answers 431 to a
/// header section over 16 KiB, so no single value can be longer.
const MAX_HEADER_VALUE: usize = 16 * 1024;

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
    if spec.forwards {
        return json!({
            "description": "The device's answer (200 here; any other status under `default`), relayed as it came.",
            "headers": {
                "X-Request-Id": header_ref("X-Request-Id"),
                "RateLimit-Policy": header_ref("RateLimit-Policy"),
                "RateLimit": header_ref("RateLimit"),
            },
            // Whatever the device sends; as bytes, since only it knows the type.
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary", "maxLength": 10_u64 << 30}}},
        });
    }
    let mut headers = Map::new();
    headers.insert("X-Request-Id".into(), header_ref("X-Request-Id"));
    let mut response = Map::new();
    response.insert("description".into(), describe(status).into());
    let produces_body = (200..=202).contains(&status) && !spec.produces.is_empty();
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
            if is_job_monitor_read(spec) {
                headers.insert("Retry-After".into(), header_ref("Retry-After"));
                headers.insert("Preference-Applied".into(), header_ref("Preference-Applied"));
            }
            if spec.produces.contains(&MediaType::Csv) {
                headers.insert("Link".into(), header_ref("Link"));
            }
            if produces_body {
                headers.insert("Vary".into(), header_ref("Vary"));
            }
        }
        // Work accepted as a job: where to follow it, when to look, and the
        // job itself as the body.
        202 => {
            headers.insert("Location".into(), header_ref("Location"));
            headers.insert("Retry-After".into(), header_ref("Retry-After"));
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
    // An authenticated caller's standing against its limits, on every answer.
    if matches!(spec.guard, canon_http::route::Guard::Role(_)) {
        headers.insert("RateLimit-Policy".into(), header_ref("RateLimit-Policy"));
        headers.insert("RateLimit".into(), header_ref("RateLimit"));
    }
    response.insert("headers".into(), Value::Object(headers));
    if produces_body {
        let mut content = Map::new();
        for media in spec.produces {
            let body_schema = match media {
                MediaType::Json => spec.response.map_or_else(|| json!({}), schema),
                // Not JSON: the media type says what the bytes are (OpenAPI
                // 3.1 §4.8.14.3), there is no JSON value to constrain.
                MediaType::Csv => {
                    json!({"contentMediaType": "text/csv", "description": "RFC 4180 CSV with a header row."})
                }
                MediaType::Ndjson => {
                    json!({"contentMediaType": "application/x-ndjson", "description": "One JSON item per line."})
                }
                other => json!({"contentMediaType": other.essence()}),
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
/// The problem responses the operations in `paths` refer to (an unused
/// component would describe a status no operation answers).
fn error_responses(paths: &Map<String, Value>) -> Value {
    let used: BTreeSet<u16> = paths
        .values()
        .filter_map(Value::as_object)
        .flat_map(|item| item.values())
        .filter_map(|op| op.get("responses").and_then(Value::as_object))
        .flat_map(|responses| responses.keys())
        .filter_map(|k| k.parse::<u16>().ok())
        .collect();
    let codes: BTreeSet<u16> = PROBLEMS.iter().map(|p| p.status).collect();
    codes
        .intersection(&used)
        .copied()
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
        429 => {
            headers.insert("Retry-After".into(), header_ref("Retry-After"));
            headers.insert("RateLimit-Policy".into(), header_ref("RateLimit-Policy"));
            headers.insert("RateLimit".into(), header_ref("RateLimit"));
        }
        503 => {
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
            "instance": "/v1/tenants/acme/collections/devices/records/r1",
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
fn creation_links(site: &Site, scope: &Scope<'_>, spec: &MethodSpec) -> Option<Value> {
    let route = site.route;
    if spec.method != Method::POST || !spec.outcomes.contains(&Outcome::Created) {
        return None;
    }
    let item = ROUTES.iter().find(|r| {
        r.pattern
            .strip_prefix(route.pattern)
            .and_then(|rest| rest.strip_prefix("/{"))
            .is_some_and(|rest| rest.ends_with('}') && !rest.contains('/'))
    })?;
    let item = scope.site(item, site.collection.as_deref());
    let created_param = item
        .route
        .pattern
        .rsplit('/')
        .next()?
        .trim_matches(|c| c == '{' || c == '}');
    // A tenant's document names its tenant: what `POST /v1/tenants` creates
    // is no path of it.
    if !item.path.contains(&format!("{{{created_param}}}")) {
        return None;
    }
    let from_body = if matches!(created_param, "tenant" | "collection") {
        "$response.body#/name"
    } else {
        "$response.body#/id"
    };
    let mut parameters = Map::new();
    for p in path_parameters(&item.path) {
        let n = p["name"].as_str().unwrap_or_default().to_owned();
        let value = if n == created_param {
            from_body.to_owned()
        } else {
            format!("$request.path.{n}")
        };
        parameters.insert(n, value.into());
    }
    let mut links = Map::new();
    for m in item.route.methods {
        let id = operation_id(&item, &m.method);
        links.insert(id.clone(), json!({"operationId": id, "parameters": parameters}));
    }
    Some(Value::Object(links))
}

fn headers() -> Value {
    let h = |d: &str, schema: Value| json!({"description": d, "schema": schema});
    json!({
        "X-Request-Id": h(
            "The request's id (the client's, if it sent a sane one); also in problem bodies.",
            json!({"type": "string", "maxLength": 128, "pattern": "^[A-Za-z0-9._:-]{1,128}$"}),
        ),
        "ETag": h(
            "The representation's entity tag (strong for single resources, weak for lists; gzip bodies have their own).",
            json!({"type": "string", "maxLength": 256, "pattern": "^(W/)?\"[\\x21\\x23-\\x7e]*\"$"}),
        ),
        "Last-Modified": h(
            "When the resource last changed.",
            json!({"type": "string", "format": "http-date", "maxLength": 29}),
        ),
        "Location": h(
            "The created resource, the redirect target, or (202) the monitor of the accepted job.",
            json!({"type": "string", "format": "uri-reference", "maxLength": 8192}),
        ),
        "Link": h(
            "`<…>; rel=\"next\"` when there is another page.",
            json!({"type": "string", "maxLength": 8192, "pattern": "^<[^>]*>; rel=\"next\"$"}),
        ),
        "Vary": h(
            "The request headers the representation depends on (`Accept`, `Accept-Encoding`, `Authorization`).",
            json!({"type": "string", "maxLength": 256, "pattern": "^[A-Za-z-]+(, *[A-Za-z-]+)*$"}),
        ),
        "Preference-Applied": h(
            "The preferences honoured (RFC 7240): `return=minimal` when the body was left out as asked; \
             `wait=N` when a job's monitor waited for the job's end.",
            json!({"type": "string", "maxLength": 64, "pattern": "^(return=minimal|wait=[0-9]{1,2})$"}),
        ),
        "WWW-Authenticate": h(
            "The bearer challenge (RFC 6750).",
            json!({"type": "string", "maxLength": 1024, "pattern": "^Bearer realm=\"canon\""}),
        ),
        "Accept-Encoding": h(
            "The content codings Canon accepts for request bodies.",
            json!({"type": "string", "maxLength": 64, "pattern": "^[a-z]+(, *[a-z]+)*$"}),
        ),
        "Retry-After": h(
            "Seconds to wait before retrying.",
            json!({"type": "string", "maxLength": 10, "pattern": "^[0-9]+$"}),
        ),
        "RateLimit-Policy": h(
            "The quota policies that apply to the caller (draft-ietf-httpapi-ratelimit-headers-10): \
             `\"burst\";q=<burst>;w=<seconds to refill it>` for its API key, `\"daily\";q=<quota>;w=86400` \
             for its tenant (none for the operator), or `\"auth-failures\"` for a client sending unknown tokens.",
            json!({"type": "string", "maxLength": 256, "pattern": "^\"[a-z-]+\";q=[0-9]+;w=[0-9]+(, *\"[a-z-]+\";q=[0-9]+;w=[0-9]+)*$"}),
        ),
        "RateLimit": h(
            "The policy closest to exhaustion: requests left (`r`) and seconds until it is whole again (`t`; \
             for `\"daily\"`, until 00:00 UTC).",
            json!({"type": "string", "maxLength": 128, "pattern": "^\"[a-z-]+\";r=[0-9]+;t=[0-9]+$"}),
        ),
    })
}

/// Statuses listed for `method` on the route with `pattern` in `doc`.
pub fn listed_statuses(doc: &Value, pattern: &str, method: &Method) -> BTreeSet<u16> {
    doc["paths"][openapi_path(pattern)][method.as_str().to_ascii_lowercase()]["responses"]
        .as_object()
        .map(|r| r.keys().filter_map(|k| k.parse().ok()).collect())
        .unwrap_or_default()
}
