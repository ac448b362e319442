//! The bodies Canon reads and writes, as types.
//!
//! Every request body is decoded into one of these types and every response
//! body is serialized from one, so the JSON Schemas the API description
//! publishes (`openapi.rs`, derived with schemars) are the shapes on the
//! wire: they cannot drift apart. [`schemas`] names them for the route
//! table's `request`/`response` references.

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An RFC 3339 timestamp in UTC with milliseconds.
pub type Timestamp = String;

/// An email address as Canon accepts it (`resources/users.rs`): one `@`
/// between two non-empty parts with no white space (Unicode's, and
/// ECMAScript's U+FEFF) and no control character.
const EMAIL: &str = "^[^@\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff]+@[^@\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff]+$";

/// A tenant.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Tenant {
    /// Its name (a slug), which is also its path segment.
    #[schemars(regex(pattern = r"^[a-z][a-z0-9-]{0,62}$"), length(max = 63))]
    pub name: String,
    /// When it was created.
    #[schemars(extend("format" = "date-time", "maxLength" = 30))]
    pub created_at: Timestamp,
    /// When it last changed.
    #[schemars(extend("format" = "date-time", "maxLength" = 30))]
    pub updated_at: Timestamp,
    /// Its rate limits as they apply now: its own where an operator set
    /// them, the server's defaults otherwise.
    pub limits: TenantLimits,
}

/// A tenant's effective rate limits (docs/decisions.md, "Rate limits and quotas").
#[derive(Debug, Serialize, JsonSchema)]
pub struct TenantLimits {
    /// Requests per second each of its API keys may send; `null`: not limited.
    #[schemars(range(min = 1, max = 1_000_000))]
    pub rate_limit_per_second: Option<u32>,
    /// Requests each of its keys may send at once above that rate.
    #[schemars(range(min = 1, max = 1_000_000))]
    pub burst: Option<u32>,
    /// Requests the tenant may send per UTC day (reset at 00:00 UTC); `null`: not limited.
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub daily_quota: Option<u32>,
    /// Which of these are the tenant's own (the others follow the server's defaults).
    #[schemars(
        length(max = 3),
        inner(regex(pattern = r"^(rate_limit_per_second|burst|daily_quota)$"), length(max = 21))
    )]
    pub own: Vec<String>,
}

/// The body of `PATCH /v1/tenants/{tenant}`: a merge patch of its limits;
/// `null` gives a limit back to the server's default.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantLimitsPatch {
    /// Requests per second each of its API keys may send: 1 to 1000000.
    #[schemars(extend("type" = ["integer", "null"], "format" = "int64", "minimum" = 1, "maximum" = 1_000_000))]
    pub rate_limit_per_second: Option<Value>,
    /// Requests each key may send at once above that rate: 1 to 1000000.
    #[schemars(extend("type" = ["integer", "null"], "format" = "int64", "minimum" = 1, "maximum" = 1_000_000))]
    pub burst: Option<Value>,
    /// Requests the tenant may send per UTC day: 1 to 1000000000.
    #[schemars(extend("type" = ["integer", "null"], "format" = "int64", "minimum" = 1, "maximum" = 1_000_000_000))]
    pub daily_quota: Option<Value>,
}

/// The body of `POST /v1/tenants`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    /// A slug: a lower-case letter, then up to 62 lower-case letters, digits
    /// or `-`; not `current`.
    #[schemars(regex(pattern = r"^(?!current$)[a-z][a-z0-9-]{0,62}$"), length(max = 63))]
    pub name: String,
}

/// A user of a tenant.
#[derive(Debug, Serialize, JsonSchema)]
pub struct User {
    /// Its id.
    #[schemars(extend("format" = "uuid", "maxLength" = 36))]
    pub id: String,
    /// Its email address, unique in the tenant.
    #[schemars(regex(pattern = EMAIL), length(max = 254))]
    pub email: String,
    /// `viewer`, `editor` or `admin`.
    #[schemars(extend("enum" = ["viewer", "editor", "admin"]))]
    pub role: String,
    /// When it was created.
    #[schemars(extend("format" = "date-time", "maxLength" = 30))]
    pub created_at: Timestamp,
    /// When it last changed.
    #[schemars(extend("format" = "date-time", "maxLength" = 30))]
    pub updated_at: Timestamp,
}

/// The body of `POST …/users`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// An email address, unique in the tenant (compared in lower case).
    #[schemars(regex(pattern = EMAIL), length(max = 254))]
    pub email: String,
    /// `viewer`, `editor` or `admin`.
    #[schemars(extend("enum" = ["viewer", "editor", "admin"]))]
    pub role: String,
}

/// The body of `PATCH …/users/{user}`: a merge patch of the user.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// The new role (a merge patch cannot remove it: no `null`).
    #[schemars(extend("enum" = ["viewer", "editor", "admin"], "type" = "string"))]
    pub role: Option<String>,
}

/// An API key (never its token, except once: [`NewApiKeyCreated`]).
#[derive(Debug, Serialize, JsonSchema)]
pub struct ApiKey {
    /// Its id.
    #[schemars(extend("format" = "uuid", "maxLength" = 36))]
    pub id: String,
    /// A name for people.
    #[schemars(length(min = 1, max = 100), regex(pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"))]
    pub name: String,
    /// When it was created.
    #[schemars(extend("format" = "date-time", "maxLength" = 30))]
    pub created_at: Timestamp,
}

/// The body of `POST …/api-keys`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    /// A name for people: 1 to 100 characters, none of them a control character.
    #[schemars(length(min = 1, max = 100), regex(pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"))]
    pub name: String,
}

/// The answer to `POST …/api-keys`: the key and, this once, its token.
#[derive(Debug, Serialize, JsonSchema)]
pub struct NewApiKeyCreated {
    /// The key.
    #[serde(flatten)]
    pub key: ApiKey,
    /// The bearer token. It is shown in this response only: a replay of
    /// the request (same `Idempotency-Key`) answers the same 201 with
    /// `null` here, since Canon keeps no copy of it.
    #[schemars(extend("type" = ["string", "null"], "pattern" = "^canon_[A-Za-z0-9_-]+$", "maxLength" = 128))]
    pub token: String,
}

/// A collection: a name, a JSON Schema for its records and its rules.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Collection {
    /// Its name (a slug).
    #[schemars(regex(pattern = r"^[a-z][a-z0-9-]{0,62}$"), length(max = 63))]
    pub name: String,
    /// The JSON Schema (draft 2020-12) every record's data satisfies.
    #[schemars(extend("type" = ["object", "boolean"]))]
    pub schema: Value,
    /// Top-level fields whose values are unique among its records.
    #[schemars(
        inner(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"), length(max = 64)),
        length(max = 16)
    )]
    pub unique: Vec<String>,
    /// Whether record writes must carry `If-Match`.
    pub require_if_match: bool,
    /// When it was created.
    #[schemars(extend("format" = "date-time", "maxLength" = 30))]
    pub created_at: Timestamp,
    /// When it last changed.
    #[schemars(extend("format" = "date-time", "maxLength" = 30))]
    pub updated_at: Timestamp,
}

/// Drops the `default` serde's default puts in a schema: `{"type":"object"}`
/// as the default of a value that may be an object or a boolean confuses
/// client generators, and the description says it.
fn without_default(schema: &mut Schema) {
    schema.remove("default");
}

fn object_schema() -> Value {
    serde_json::json!({"type": "object"})
}

/// The body of `POST …/collections`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCollection {
    /// A slug: a lower-case letter, then up to 62 lower-case letters, digits or `-`.
    #[schemars(regex(pattern = r"^[a-z][a-z0-9-]{0,62}$"), length(max = 63))]
    pub name: String,
    /// A JSON Schema (draft 2020-12) for the records' data. References are fragments
    /// (`#/$defs/x`, `#anchor`) that resolve, `$id` only at the root, no reference loop on
    /// one value, and at most 10000 subschemas with references inlined.
    /// Without it, `{"type": "object"}`.
    #[serde(default = "object_schema")]
    #[schemars(extend("type" = ["object", "boolean"]), transform = without_default)]
    pub schema: Value,
    /// Top-level fields whose values must be unique among the records.
    #[serde(default)]
    #[schemars(
        inner(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"), length(max = 64)),
        length(max = 16)
    )]
    pub unique: Vec<String>,
    /// Whether record writes must carry `If-Match`.
    #[serde(default)]
    pub require_if_match: bool,
}

/// The body of `PATCH …/collections/{collection}`: a merge patch of its settings.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CollectionPatch {
    /// A new name (a slug); the old one keeps redirecting here.
    #[schemars(regex(pattern = r"^[a-z][a-z0-9-]{0,62}$"), length(max = 63), extend("type" = "string"))]
    pub name: Option<String>,
    /// A new schema, under the same rules as at creation.
    #[schemars(extend("type" = ["object", "boolean"]))]
    pub schema: Option<Value>,
    /// A new list of unique fields.
    #[schemars(
        inner(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"), length(max = 64)),
        length(max = 16),
        extend("type" = "array")
    )]
    pub unique: Option<Vec<String>>,
    /// Whether record writes must carry `If-Match`.
    #[schemars(extend("type" = "boolean"))]
    pub require_if_match: Option<bool>,
}

/// A record: its data and the envelope Canon keeps around it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Record {
    /// Its id (chosen by Canon, or by the client with PUT).
    #[schemars(regex(pattern = r"^[A-Za-z0-9._~-]{1,128}$"), length(max = 128))]
    pub id: String,
    /// The data, as the collection's schema describes it.
    pub data: Value,
    /// Bumped by every write.
    #[schemars(extend("format" = "int64", "minimum" = 1, "maximum" = i64::MAX))]
    pub version: i64,
    /// When it was created.
    #[schemars(extend("format" = "date-time", "maxLength" = 30))]
    pub created_at: Timestamp,
    /// When it last changed.
    #[schemars(extend("format" = "date-time", "maxLength" = 30))]
    pub updated_at: Timestamp,
}

/// A record's lock: a lease held by one caller.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Lease {
    /// Who holds it: a user's id, or `operator`.
    #[schemars(regex(pattern = r"^(operator|[0-9a-f-]{36})$"), length(max = 36))]
    pub holder: String,
    /// When it was taken.
    #[schemars(extend("format" = "date-time", "maxLength" = 30))]
    pub acquired_at: Timestamp,
    /// When it ends unless renewed.
    #[schemars(extend("format" = "date-time", "maxLength" = 30))]
    pub expires_at: Timestamp,
}

/// The body of `PUT …/lock`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LockRequest {
    /// How long the lease lasts, in seconds (at most a day).
    #[schemars(range(min = 1, max = 86400), extend("format" = "int32"))]
    pub ttl_seconds: u64,
}

/// `/healthz` and `/readyz`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Health {
    /// `ok` (alive) or `ready` (the database answers).
    #[schemars(extend("enum" = ["ok", "ready"]))]
    pub status: String,
}

/// `GET /`: where to start.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Index {
    /// The server's name.
    #[schemars(extend("const" = "Canon"))]
    pub name: String,
    /// Canon's version.
    #[schemars(regex(pattern = r"^[0-9]+\.[0-9]+\.[0-9]+"), length(max = 64))]
    pub version: String,
    /// Links by relation: `reference`, `openapi`, `status-codes`, `health`, `ready`.
    #[schemars(extend("additionalProperties" = {"type": "string", "format": "uri-reference", "maxLength": 256}))]
    pub links: std::collections::BTreeMap<String, String>,
}

/// A page of a list (JSON). CSV and NDJSON carry the same items.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "{T}Page")]
pub struct Page<T> {
    /// The items of this page (at most `limit`, itself at most 1000).
    #[schemars(length(max = 1000))]
    pub items: Vec<T>,
    /// The cursor for the next page (also in `Link: rel="next"`), or null at the end.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$"), length(max = 4096))]
    pub next_cursor: Option<String>,
}

/// An RFC 9457 problem: the body of every 4xx and 5xx.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ProblemBody {
    /// A URL (served by Canon) naming the problem type.
    #[serde(rename = "type")]
    #[schemars(regex(pattern = r"^/problems/[a-z][a-z0-9-]*$"), length(max = 64))]
    pub kind: String,
    /// The problem type's fixed summary.
    #[schemars(length(max = 128))]
    pub title: String,
    /// The HTTP status.
    #[schemars(extend("format" = "int32", "minimum" = 400, "maximum" = 599))]
    pub status: u16,
    /// What went wrong in this occurrence (at most 400 characters and `…`).
    #[schemars(length(max = 401))]
    pub detail: String,
    /// The request path.
    #[schemars(extend("format" = "uri-reference", "maxLength" = 8192))]
    pub instance: String,
    /// The request id (also in `X-Request-Id`).
    #[schemars(regex(pattern = r"^[A-Za-z0-9._:-]{1,128}$"), length(max = 128))]
    pub request_id: String,
    /// Field errors (at most 50), each naming a JSON pointer.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 50))]
    pub errors: Option<Vec<FieldErrorBody>>,
    /// How many field errors were left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int64", "minimum" = 1, "maximum" = u32::MAX))]
    pub errors_omitted: Option<u64>,
}

/// One field error in a problem.
#[derive(Debug, Serialize, JsonSchema)]
pub struct FieldErrorBody {
    /// A JSON pointer (RFC 6901) into the request (cut at 200 characters).
    #[schemars(length(max = 201))]
    pub pointer: String,
    /// What is wrong there (at most 200 characters and `…`).
    #[schemars(length(max = 201))]
    pub detail: String,
}

/// Record data: any JSON object (each collection's schema narrows it).
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(extend("type" = "object"))]
pub struct RecordData(pub serde_json::Map<String, Value>);

/// A JSON Patch (RFC 6902) document: at most 1000 operations.
#[derive(Debug, JsonSchema)]
#[schemars(extend("maxItems" = 1000))]
pub struct JsonPatch(#[allow(dead_code)] Vec<JsonPatchOperation>);

/// A JSON pointer (RFC 6901) into the record's data.
#[derive(Debug, JsonSchema)]
pub struct Pointer(
    #[allow(dead_code)]
    #[schemars(regex(pattern = r"^(/([^~/]|~[01])*)*$"), length(max = 4096))]
    String,
);

/// One JSON Patch operation, each with the members RFC 6902 requires of it.
#[derive(Debug, JsonSchema)]
#[serde(tag = "op", rename_all = "lowercase")]
#[allow(dead_code)]
pub enum JsonPatchOperation {
    /// Adds `value` at `path`.
    Add {
        /// Where.
        path: Pointer,
        /// What.
        value: Value,
    },
    /// Removes what is at `path`.
    Remove {
        /// Where.
        path: Pointer,
    },
    /// Replaces what is at `path` with `value`.
    Replace {
        /// Where.
        path: Pointer,
        /// What.
        value: Value,
    },
    /// Moves what is at `from` to `path`.
    Move {
        /// From where.
        from: Pointer,
        /// To where.
        path: Pointer,
    },
    /// Copies what is at `from` to `path`.
    Copy {
        /// From where.
        from: Pointer,
        /// To where.
        path: Pointer,
    },
    /// Fails the whole patch (409) unless `path` holds `value`.
    Test {
        /// Where.
        path: Pointer,
        /// The value expected there.
        value: Value,
    },
}

/// The body of `POST …/records/batch`: at most 1000 operations.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The operations, applied in order.
    #[schemars(length(min = 1, max = 1000))]
    pub operations: Vec<BatchOperation>,
    /// All or nothing in one transaction: 200 with every result, or the
    /// first failing operation's status and problem (its `errors` pointing
    /// at `/operations/{i}`), with nothing applied.
    #[serde(default)]
    pub atomic: bool,
}

/// One operation of a batch: what its single-record request would be.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum BatchOperation {
    /// `POST …/records` (or, with `id`, `PUT …/records/{id}` with `If-None-Match: *`).
    Create {
        /// The id to create at; Canon chooses one when absent.
        #[schemars(regex(pattern = r"^(?!batch$)(?!\.\.?$)[A-Za-z0-9._~-]{1,128}$"), length(max = 128))]
        id: Option<String>,
        /// The record's data.
        data: RecordData,
    },
    /// `PUT …/records/{id}`.
    Replace {
        /// The record.
        #[schemars(regex(pattern = r"^(?!batch$)(?!\.\.?$)[A-Za-z0-9._~-]{1,128}$"), length(max = 128))]
        id: String,
        /// Its new data.
        data: RecordData,
        /// `If-Match`: the entity tag the record must have.
        #[schemars(extend("format" = "entity-tags", "maxLength" = 1024))]
        if_match: Option<String>,
    },
    /// `PATCH …/records/{id}` with a merge patch.
    Patch {
        /// The record.
        #[schemars(regex(pattern = r"^(?!batch$)(?!\.\.?$)[A-Za-z0-9._~-]{1,128}$"), length(max = 128))]
        id: String,
        /// The merge patch (RFC 7396).
        data: RecordData,
        /// `If-Match`: the entity tag the record must have.
        #[schemars(extend("format" = "entity-tags", "maxLength" = 1024))]
        if_match: Option<String>,
    },
    /// `DELETE …/records/{id}`.
    Delete {
        /// The record.
        #[schemars(regex(pattern = r"^(?!batch$)(?!\.\.?$)[A-Za-z0-9._~-]{1,128}$"), length(max = 128))]
        id: String,
        /// `If-Match`: the entity tag the record must have.
        #[schemars(extend("format" = "entity-tags", "maxLength" = 1024))]
        if_match: Option<String>,
    },
}

/// The answer to a batch (207, or 200 when atomic or reported
/// `most-critical` and every operation succeeded): one result per
/// operation, in request order.
#[derive(Debug, Serialize, JsonSchema)]
pub struct BatchResults {
    /// The results.
    #[schemars(length(max = 1000))]
    pub results: Vec<BatchResult>,
}

/// What one operation of a batch answered, as its own request would have.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct BatchResult {
    /// Its status.
    #[schemars(extend("format" = "int32", "minimum" = 200, "maximum" = 599))]
    pub status: u16,
    /// `Location`, when it created a record.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "uri-reference", "maxLength" = 8192))]
    pub location: Option<String>,
    /// `ETag` of the record it wrote.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r#"^(W/)?"[\x21\x23-\x7e]*"$"#), length(max = 256))]
    pub etag: Option<String>,
    /// The record it wrote, or the problem (RFC 9457) it failed with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

/// The body of `POST …/collections/{collection}/exports`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    /// The file's format: one record per line (`ndjson`), or CSV with a
    /// header row and `data.<field>` columns (`csv`).
    pub format: ExportFormat,
    /// Only records whose top-level data fields equal these JSON scalars
    /// (combined with AND), as `filter[field]` does on the record list.
    #[serde(default)]
    #[schemars(extend("maxProperties" = 16, "propertyNames" = {"pattern": "^[A-Za-z_][A-Za-z0-9_]{0,63}$"}))]
    pub filter: serde_json::Map<String, Value>,
}

/// The format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// `application/x-ndjson`: each record as the record list shows it, one per line.
    Ndjson,
    /// `text/csv`: RFC 4180 with a header row, as the record list's CSV.
    Csv,
}

/// A job: work accepted with 202, followed at its monitor
/// (`…/jobs/{job}`: 200 while it is unfinished, failed or canceled, 303 to
/// its result once it succeeded).
#[derive(Debug, Serialize, JsonSchema)]
pub struct Job {
    /// Its id.
    #[schemars(extend("format" = "uuid", "maxLength" = 36))]
    pub id: String,
    /// What it does.
    #[schemars(extend("enum" = ["import", "export", "delete_tenant", "delete_collection", "device_command"]))]
    pub kind: String,
    /// Where it is.
    #[schemars(extend("enum" = ["queued", "running", "succeeded", "failed", "canceled"]))]
    pub status: String,
    /// How far it got.
    pub progress: JobProgress,
    /// When it was accepted.
    #[schemars(extend("format" = "date-time", "maxLength" = 30))]
    pub created_at: Timestamp,
    /// When a worker first took it.
    #[schemars(extend("format" = "date-time", "maxLength" = 30))]
    pub started_at: Option<Timestamp>,
    /// When it finished or was canceled.
    #[schemars(extend("format" = "date-time", "maxLength" = 30))]
    pub finished_at: Option<Timestamp>,
    /// Why it failed (an RFC 9457 problem).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<Value>,
}

/// A job's progress.
#[derive(Debug, Serialize, JsonSchema)]
pub struct JobProgress {
    /// Units done (records).
    #[schemars(extend("format" = "int64", "minimum" = 0, "maximum" = i64::MAX))]
    pub done: i64,
    /// Units in all, when known.
    #[schemars(extend("format" = "int64", "minimum" = 0, "maximum" = i64::MAX))]
    pub total: Option<i64>,
}

/// Maintenance mode (`GET, PUT /v1/admin/maintenance`).
#[derive(Debug, Serialize, JsonSchema)]
pub struct Maintenance {
    /// Whether every `/v1` request but the operator's `/v1/admin/…` calls is
    /// answered 503.
    pub enabled: bool,
    /// The `Retry-After` refused requests carry, in seconds.
    #[schemars(range(min = 1, max = 86400))]
    pub retry_after_seconds: u32,
    /// The detail of the refused requests' problem (empty: a standard text).
    #[schemars(length(max = 1000), regex(pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"))]
    pub message: String,
    /// When it last changed.
    #[schemars(extend("format" = "date-time", "maxLength" = 30))]
    pub updated_at: Timestamp,
}

/// The body of `PUT /v1/admin/maintenance`: the whole setting (`enabled`
/// required; the others default to 300 seconds and a standard text).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceRequest {
    /// On or off.
    pub enabled: bool,
    /// The `Retry-After` refused requests carry: 1 to 86400 seconds.
    #[serde(default = "default_maintenance_retry")]
    #[schemars(range(min = 1, max = 86400))]
    pub retry_after_seconds: u32,
    /// Words for refused clients: up to 1000 characters, none a control
    /// character.
    #[serde(default)]
    #[schemars(length(max = 1000), regex(pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"))]
    pub message: String,
}

/// What `Retry-After` says while maintenance is on, unless the operator
/// says otherwise: five minutes.
pub const DEFAULT_MAINTENANCE_RETRY: u32 = 300;

fn default_maintenance_retry() -> u32 {
    DEFAULT_MAINTENANCE_RETRY
}

/// A device: an appliance's management endpoint, reached through Canon
/// (`…/devices/{device}/api/{path}`).
#[derive(Debug, Serialize, JsonSchema)]
pub struct Device {
    /// Its name (a slug), which is also its path segment.
    #[schemars(regex(pattern = r"^[a-z][a-z0-9-]{0,62}$"), length(max = 63))]
    pub name: String,
    /// The base URL requests are forwarded to.
    #[schemars(length(min = 1, max = 2048), extend("format" = "uri"))]
    pub endpoint: String,
    /// Milliseconds the device has to send its response headers (504 after).
    #[schemars(range(min = 1, max = 60000))]
    pub timeout_ms: u32,
    /// The names of the headers Canon adds to every forwarded request. Their
    /// values are kept encrypted and never shown.
    #[schemars(length(max = 32), inner(length(min = 1, max = 64)))]
    pub headers: Vec<String>,
    /// How Canon trusts the device's TLS certificate (`https` endpoints):
    /// `{}` for the system's roots.
    pub tls: DeviceTls,
    /// How the device has been answering this Canon process.
    pub health: DeviceHealth,
    /// When it was registered.
    #[schemars(extend("format" = "date-time", "maxLength" = 30))]
    pub created_at: Timestamp,
    /// When it last changed.
    #[schemars(extend("format" = "date-time", "maxLength" = 30))]
    pub updated_at: Timestamp,
}

/// How Canon trusts an `https` device's certificate (docs/devices.md,
/// "HTTPS endpoints"). Neither field: the system's roots, and the
/// certificate must name the endpoint's host. Both: both checks.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceTls {
    /// PEM certificates (`-----BEGIN CERTIFICATE-----`) of the CAs the
    /// device's certificate must chain to, instead of the system's roots
    /// (its host name is still checked). A self-signed certificate can be
    /// its own CA unless it is marked as a CA itself: then pin it. Kept
    /// and shown as its certificates alone, re-encoded (text around the
    /// PEM sections is dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 65536), extend("type" = "string"))]
    pub ca_certificate: Option<String>,
    /// The SHA-256 digest of the device's own certificate (DER), as
    /// `openssl x509 -noout -fingerprint -sha256` prints it or as 64 hex
    /// digits; shown as 64 lower-case hex digits. Only that certificate is
    /// accepted; with no `ca_certificate`, its chain, name and dates are
    /// not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9A-Fa-f]{2}(:?[0-9A-Fa-f]{2}){31}$"), length(max = 95), extend("type" = "string"))]
    pub certificate_sha256: Option<String>,
}

/// A device's circuit breaker as this process sees it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DeviceHealth {
    /// `closed`: requests pass. `open`: refused with 503 until `retry_after`.
    /// `half_open`: the next request is a probe; its success closes the circuit.
    #[schemars(regex(pattern = r"^(closed|open|half_open)$"), length(max = 9))]
    pub circuit: String,
    /// Failures (502 or 504) in a row since the device last answered.
    #[schemars(range(min = 0, max = 4294967295u32))]
    pub consecutive_failures: u32,
    /// Seconds until a probe may pass, while the circuit is open.
    #[schemars(range(min = 1, max = 4294967295u64))]
    pub retry_after: Option<u64>,
}

/// Header names a device may be given: an HTTP token.
const HEADER_NAME: &str = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$";

/// The body of `POST …/devices`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDevice {
    /// A slug: a lower-case letter, then up to 62 lower-case letters, digits or `-`.
    #[schemars(regex(pattern = r"^[a-z][a-z0-9-]{0,62}$"), length(max = 63))]
    pub name: String,
    /// An `http` or `https` URL without credentials, query or fragment, whose
    /// host is (or resolves to) an address devices may have
    /// (`CANON_DEVICE_ALLOWED_NETWORKS`; never link-local, metadata or Canon itself).
    #[schemars(length(min = 1, max = 2048))]
    pub endpoint: String,
    /// Milliseconds the device has to send its response headers: 1 to
    /// `CANON_DEVICE_MAX_TIMEOUT_MS` (60000 by default).
    #[schemars(range(min = 1, max = 60000))]
    pub timeout_ms: u32,
    /// Headers added to every forwarded request (the device's own
    /// credentials): names are HTTP tokens (not hop-by-hop fields, `Host`,
    /// `Content-Length` or `Via`), values visible ASCII. Stored encrypted;
    /// needs `CANON_SECRET_KEY`.
    #[serde(default)]
    #[schemars(extend("maxProperties" = 32, "propertyNames" = {"pattern": HEADER_NAME, "maxLength": 64}, "additionalProperties" = {"type": "string", "maxLength": 4096, "pattern": "^[\\x20-\\x7e]*$"}))]
    pub headers: serde_json::Map<String, Value>,
    /// How the device's TLS certificate is trusted; the system's roots
    /// when absent.
    #[serde(default)]
    pub tls: DeviceTls,
}

/// The body of `PATCH …/devices/{device}`: a merge patch of its settings;
/// `headers`, when given, replaces every header.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DevicePatch {
    /// A new endpoint, under the same rules as at registration.
    #[schemars(length(min = 1, max = 2048), extend("type" = "string"))]
    pub endpoint: Option<String>,
    /// A new timeout.
    #[schemars(range(min = 1, max = 60000), extend("type" = "integer"))]
    pub timeout_ms: Option<u32>,
    /// New headers, replacing the old ones (`{}` removes them all).
    #[schemars(extend("type" = "object", "maxProperties" = 32, "propertyNames" = {"pattern": HEADER_NAME, "maxLength": 64}, "additionalProperties" = {"type": "string", "maxLength": 4096, "pattern": "^[\\x20-\\x7e]*$"}))]
    pub headers: Option<serde_json::Map<String, Value>>,
    /// A new trust setting, replacing the old one whole (`{}`: the
    /// system's roots again).
    // Not `null`: a setting cannot be removed, only replaced (`{}`).
    #[schemars(extend("anyOf" = [{"$ref": "#/components/schemas/DeviceTls"}]))]
    pub tls: Option<DeviceTls>,
}

/// The body of `POST …/devices/{device}/commands`: one request for the
/// device, run as a job (202); the job's result is the device's answer.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceCommand {
    /// The method.
    #[schemars(extend("enum" = ["GET", "POST", "PUT", "PATCH", "DELETE"]))]
    pub method: String,
    /// The path below the device's endpoint, with a query if any
    /// (`status?verbose=1`): no leading `/`, no `.` or `..` segment, no
    /// encoded `/` or `\`.
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^[^/#\s][^#\s]*$"))]
    pub path: String,
    /// A JSON body, sent as `application/json`.
    #[serde(default, deserialize_with = "present")]
    pub body: Option<Value>,
}

/// A member that is present, `null` included (`Some(Value::Null)`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// The schema of each body the route table names (`MethodSpec::request`
/// and `MethodSpec::response`), as generated by `generator`: usually a
/// `$ref` into the generator's definitions, which become
/// `components.schemas`.
pub fn schemas(generator: &mut SchemaGenerator) -> Vec<(&'static str, Schema)> {
    macro_rules! named {
        ($($name:literal => $ty:ty),+ $(,)?) => {
            vec![$(($name, generator.subschema_for::<$ty>())),+]
        };
    }
    named! {
        "Tenant" => Tenant,
        "NewTenant" => NewTenant,
        "TenantPage" => Page<Tenant>,
        "User" => User,
        "NewUser" => NewUser,
        "UserPatch" => UserPatch,
        "UserPage" => Page<User>,
        "ApiKey" => ApiKey,
        "NewApiKey" => NewApiKey,
        "NewApiKeyCreated" => NewApiKeyCreated,
        "ApiKeyPage" => Page<ApiKey>,
        "Collection" => Collection,
        "NewCollection" => NewCollection,
        "CollectionPatch" => CollectionPatch,
        "TenantLimitsPatch" => TenantLimitsPatch,
        "CollectionPage" => Page<Collection>,
        "Record" => Record,
        "RecordData" => RecordData,
        "RecordPage" => Page<Record>,
        "JsonPatch" => JsonPatch,
        "Lease" => Lease,
        "LockRequest" => LockRequest,
        "Health" => Health,
        "Index" => Index,
        "Problem" => ProblemBody,
        "BatchRequest" => BatchRequest,
        "BatchResults" => BatchResults,
        "ExportRequest" => ExportRequest,
        "Job" => Job,
        "JobPage" => Page<Job>,
        "Device" => Device,
        "NewDevice" => NewDevice,
        "DevicePatch" => DevicePatch,
        "DevicePage" => Page<Device>,
        "DeviceCommand" => DeviceCommand,
        "Maintenance" => Maintenance,
        "MaintenanceRequest" => MaintenanceRequest,
    }
}
