//! Canon's route table (CONTRACT.md §2): every path, its methods, the role
//! each demands, and the media types each reads and writes. The decision flow
//! reads it for 404/405/415/406/403 and `Allow`; `/docs` and tests read it too.

use canon_http::ProblemKind::{
    BadGateway, DeviceBusy, DeviceCircuitOpen, GatewayTimeout, Gone, InvalidField, InvalidPath, LastAdmin, Locked,
    NotFound, PatchTestFailed, PreconditionFailed, PreconditionRequired, SchemaViolation, StateConflict,
    UniqueConflict,
};
use canon_http::access::Role;
use canon_http::media::MediaType::{self, Html, Json, JsonPatch, MergePatch};
use canon_http::route::{Guard, MethodSpec, Outcome, RouteSpec, States};
use http::Method;

use crate::assets;
use crate::listing::LIST_TYPES;

const JSON: &[MediaType] = &[Json];
const PATCH: &[MediaType] = &[MergePatch, Json];
const RECORD_PATCH: &[MediaType] = &[MergePatch, JsonPatch, Json];
const PAGE: &[MediaType] = &[Html, Json];
const HTML: &[MediaType] = &[Html];
const JAVASCRIPT: &[MediaType] = &[MediaType::JavaScript];
const TEXT: &[MediaType] = &[MediaType::Text];
const NONE: &[MediaType] = &[];
const NDJSON: &[MediaType] = &[MediaType::Ndjson];
/// A job's result: a JSON report, or an export's file. Each result has one
/// of these, known once the job is loaded (`Found::media`).
const RESULT_TYPES: &[MediaType] = &[Json, MediaType::Ndjson, MediaType::Csv];

const fn role(r: Role) -> Guard {
    Guard::Role(r)
}
const fn get(g: Guard, produces: &'static [MediaType]) -> MethodSpec {
    MethodSpec::read(Method::GET, g, produces)
}
const fn post(g: Guard) -> MethodSpec {
    MethodSpec::write(Method::POST, g, JSON, JSON).answering(&[Outcome::Created])
}
const fn put(g: Guard) -> MethodSpec {
    MethodSpec::write(Method::PUT, g, JSON, JSON)
}
const fn patch(g: Guard) -> MethodSpec {
    MethodSpec::write(Method::PATCH, g, PATCH, JSON)
}
const fn patch_record(g: Guard) -> MethodSpec {
    MethodSpec::write(Method::PATCH, g, RECORD_PATCH, JSON)
}
/// A method of the device gateway: the request goes to the device, whose
/// answer comes back as it is; the gateway itself can only fail.
const fn relay(spec: MethodSpec) -> MethodSpec {
    spec.forwarding()
        .raising(&[InvalidPath, BadGateway, DeviceCircuitOpen, DeviceBusy, GatewayTimeout])
}
/// A relayed write.
const fn relay_write(method: Method, r: Role) -> MethodSpec {
    relay(MethodSpec::write(method, role(r), NONE, NONE))
}
const fn delete(g: Guard) -> MethodSpec {
    MethodSpec::write(Method::DELETE, g, NONE, NONE).answering(&[Outcome::NoContent])
}

/// What a path under a tenant can meet: a missing tenant (or parent), a
/// deleted tenant (410: its tombstone), and `/v1/tenants/current`
/// redirecting to the caller's own.
const IN_TENANT: States = States::FIXED.missing().gone().current();
/// Below a deletable parent (a user, a collection): its tombstone too
/// (already among a tenant's states, now that tenants are deleted).
const BELOW_DELETABLE: States = IN_TENANT.gone();
/// Below a collection: tombstones and old names.
const IN_COLLECTION: States = BELOW_DELETABLE.moved();

use Role::{Admin, Editor, Operator, Viewer};

/// Route names, used to dispatch to handlers.
pub mod name {
    #![allow(missing_docs)]
    pub const HEALTH: &str = "health";
    pub const READY: &str = "ready";
    pub const METRICS: &str = "metrics";
    pub const STATUS_CODES: &str = "status-codes";
    pub const PROBLEM: &str = "problem";
    pub const OPENAPI: &str = "openapi";
    pub const INDEX: &str = "index";
    pub const REFERENCE: &str = "reference";
    pub const REDOC: &str = "redoc";
    pub const REDOC_LICENSE: &str = "redoc-license";
    pub const TENANTS: &str = "tenants";
    pub const TENANT: &str = "tenant";
    pub const TENANT_OPENAPI: &str = "tenant-openapi";
    pub const USERS: &str = "users";
    pub const USER: &str = "user";
    pub const API_KEYS: &str = "api-keys";
    pub const API_KEY: &str = "api-key";
    pub const COLLECTIONS: &str = "collections";
    pub const COLLECTION: &str = "collection";
    pub const RECORDS: &str = "records";
    pub const RECORD: &str = "record";
    pub const LOCK: &str = "lock";
    pub const BATCH: &str = "batch";
    pub const IMPORTS: &str = "imports";
    pub const EXPORTS: &str = "exports";
    pub const JOBS: &str = "jobs";
    pub const JOB: &str = "job";
    pub const JOB_RESULT: &str = "job-result";
    pub const MAINTENANCE: &str = "maintenance";
    pub const DEVICES: &str = "devices";
    pub const DEVICE: &str = "device";
    pub const DEVICE_API: &str = "device-api";
    pub const DEVICE_COMMANDS: &str = "device-commands";
    pub const PLANNED: &str = "planned";
}

/// Every route Canon serves.
pub static ROUTES: &[RouteSpec] = &[
    RouteSpec {
        name: name::INDEX,
        pattern: "/",
        methods: &[get(Guard::Public, PAGE).bodies(None, Some("Index"))],
        planned: &[],
        summary: "Where to start: the API reference and description, the status codes, the probes, the version.",
        states: States::FIXED,
    },
    RouteSpec {
        name: name::HEALTH,
        pattern: "/healthz",
        methods: &[get(Guard::Public, JSON).bodies(None, Some("Health"))],
        planned: &[],
        summary: "The process is alive.",
        states: States::FIXED,
    },
    RouteSpec {
        name: name::READY,
        pattern: "/readyz",
        methods: &[get(Guard::Public, JSON).bodies(None, Some("Health"))],
        planned: &[],
        summary: "The database answers and the process is not stopping (503 from SIGTERM on, through `CANON_SHUTDOWN_DELAY_MS`, while it still serves).",
        states: States::FIXED,
    },
    RouteSpec {
        name: name::METRICS,
        pattern: "/metrics",
        methods: &[get(role(Operator), TEXT)],
        planned: &[],
        summary: "Prometheus metrics (text format): requests by route template, method and status, latencies, requests in flight, open connections, rate-limit refusals, store latency and group-commit sizes. The operator's token only.",
        states: States::FIXED,
    },
    RouteSpec {
        name: name::STATUS_CODES,
        pattern: "/docs/status-codes",
        methods: &[get(Guard::Public, PAGE)],
        planned: &[],
        summary: "Every status and problem type Canon answers.",
        states: States::FIXED,
    },
    RouteSpec {
        name: name::PROBLEM,
        pattern: "/problems/{slug}",
        methods: &[get(Guard::Public, PAGE)],
        planned: &[],
        summary: "One problem type.",
        states: States::FIXED.missing(),
    },
    RouteSpec {
        name: name::OPENAPI,
        pattern: "/openapi.json",
        methods: &[get(Guard::Public, JSON)],
        planned: &[],
        summary: "This API's description (OpenAPI 3.1), generated from the route table and the catalogue.",
        states: States::FIXED,
    },
    RouteSpec {
        name: name::REFERENCE,
        pattern: "/docs",
        methods: &[get(Guard::Public, HTML)],
        planned: &[],
        summary: "The API reference: this description rendered in the browser by the renderer Canon serves itself; the page loads nothing from another origin.",
        states: States::FIXED,
    },
    RouteSpec {
        name: name::REDOC,
        pattern: assets::REDOC_PATH,
        methods: &[get(Guard::Public, JAVASCRIPT)],
        planned: &[],
        summary: "The reference's renderer (Redoc's standalone bundle, MIT). Its URL names its version, so it is cached as immutable.",
        states: States::FIXED,
    },
    RouteSpec {
        name: name::REDOC_LICENSE,
        pattern: assets::REDOC_LICENSE_PATH,
        methods: &[get(Guard::Public, TEXT)],
        planned: &[],
        summary: "The renderer's licence and those of the libraries bundled in it.",
        states: States::FIXED,
    },
    RouteSpec {
        name: name::TENANTS,
        pattern: "/v1/tenants",
        methods: &[
            get(role(Operator), LIST_TYPES).bodies(None, Some("TenantPage")),
            post(role(Operator))
                .bodies(Some("NewTenant"), Some("Tenant"))
                .raising(&[UniqueConflict, InvalidField]),
        ],
        planned: &[],
        summary: "Tenants.",
        states: States::FIXED,
    },
    RouteSpec {
        name: name::TENANT,
        pattern: "/v1/tenants/{tenant}",
        methods: &[
            get(role(Viewer), JSON).bodies(None, Some("Tenant")),
            patch(role(Operator))
                .bodies(Some("TenantLimitsPatch"), Some("Tenant"))
                .raising(&[InvalidField]),
            // Deletion is long work: 202 and a job, followed by the operator
            // at `/v1/tenants/{tenant}/jobs/{job}` while the tenant is 410.
            MethodSpec::write(Method::DELETE, role(Operator), NONE, JSON)
                .answering(&[Outcome::Accepted])
                .bodies(None, Some("Job")),
        ],
        planned: &[],
        summary: "One tenant and its rate limits (PATCH, operator only: a merge patch of `rate_limit_per_second`, \
                  `burst` and `daily_quota`; `null` gives one back to the server's default). DELETE (operator only) answers 202 with the job that deletes everything in it: from \
                  then on the tenant answers 410 and its keys 401; the operator follows the job at \
                  /v1/tenants/{tenant}/jobs/{job}, which stays reachable until the job expires.",
        states: IN_TENANT,
    },
    RouteSpec {
        name: name::TENANT_OPENAPI,
        pattern: "/v1/tenants/{tenant}/openapi.json",
        methods: &[get(role(Viewer), JSON)],
        planned: &[],
        summary: "This API's description as the tenant sees it: its collections' record paths typed with their schemas.",
        states: IN_TENANT,
    },
    RouteSpec {
        name: name::USERS,
        pattern: "/v1/tenants/{tenant}/users",
        methods: &[
            get(role(Admin), LIST_TYPES).bodies(None, Some("UserPage")),
            post(role(Admin))
                .bodies(Some("NewUser"), Some("User"))
                .raising(&[UniqueConflict, InvalidField]),
        ],
        planned: &[],
        summary: "A tenant's users.",
        states: IN_TENANT,
    },
    RouteSpec {
        name: name::USER,
        pattern: "/v1/tenants/{tenant}/users/{user}",
        methods: &[
            get(role(Admin), JSON).bodies(None, Some("User")),
            patch(role(Admin))
                .bodies(Some("UserPatch"), Some("User"))
                .raising(&[LastAdmin, InvalidField]),
            delete(role(Admin)).raising(&[LastAdmin]),
        ],
        planned: &[],
        summary: "One user.",
        states: BELOW_DELETABLE,
    },
    RouteSpec {
        name: name::API_KEYS,
        pattern: "/v1/tenants/{tenant}/users/{user}/api-keys",
        methods: &[
            get(role(Admin), LIST_TYPES).bodies(None, Some("ApiKeyPage")),
            post(role(Admin))
                .bodies(Some("NewApiKey"), Some("NewApiKeyCreated"))
                .raising(&[InvalidField]),
        ],
        planned: &[],
        summary: "A user's API keys.",
        states: BELOW_DELETABLE,
    },
    RouteSpec {
        name: name::API_KEY,
        pattern: "/v1/tenants/{tenant}/users/{user}/api-keys/{key}",
        methods: &[get(role(Admin), JSON).bodies(None, Some("ApiKey")), delete(role(Admin))],
        planned: &[],
        summary: "One API key.",
        states: BELOW_DELETABLE,
    },
    RouteSpec {
        name: name::COLLECTIONS,
        pattern: "/v1/tenants/{tenant}/collections",
        methods: &[
            get(role(Viewer), LIST_TYPES).bodies(None, Some("CollectionPage")),
            post(role(Admin))
                .bodies(Some("NewCollection"), Some("Collection"))
                .raising(&[UniqueConflict, InvalidField]),
        ],
        planned: &[],
        summary: "A tenant's collections.",
        states: IN_TENANT,
    },
    RouteSpec {
        name: name::COLLECTION,
        pattern: "/v1/tenants/{tenant}/collections/{collection}",
        methods: &[
            get(role(Viewer), JSON).bodies(None, Some("Collection")),
            patch(role(Admin))
                .bodies(Some("CollectionPatch"), Some("Collection"))
                .raising(&[UniqueConflict, InvalidField]),
            // `?force=true` on a collection with records: 202 and a job.
            MethodSpec::write(Method::DELETE, role(Admin), NONE, JSON)
                .answering(&[Outcome::NoContent, Outcome::Accepted])
                .bodies(None, Some("Job"))
                .raising(&[StateConflict]),
        ],
        planned: &[],
        summary: "One collection.",
        states: IN_COLLECTION,
    },
    RouteSpec {
        name: name::RECORDS,
        pattern: "/v1/tenants/{tenant}/collections/{collection}/records",
        methods: &[
            get(role(Viewer), LIST_TYPES).bodies(None, Some("RecordPage")),
            post(role(Editor)).bodies(Some("RecordData"), Some("Record")).raising(&[
                SchemaViolation,
                UniqueConflict,
                InvalidField,
            ]),
        ],
        planned: &[],
        summary: "A collection's records.",
        states: IN_COLLECTION,
    },
    RouteSpec {
        name: name::RECORD,
        pattern: "/v1/tenants/{tenant}/collections/{collection}/records/{id}",
        methods: &[
            get(role(Viewer), JSON).bodies(None, Some("Record")),
            put(role(Editor))
                .bodies(Some("RecordData"), Some("Record"))
                .creating()
                .answering(&[Outcome::Ok, Outcome::Created])
                .raising(&[SchemaViolation, UniqueConflict, NotFound]),
            patch_record(role(Editor))
                .bodies(Some("RecordData"), Some("Record"))
                .raising(&[PatchTestFailed, StateConflict, SchemaViolation, UniqueConflict]),
            delete(role(Editor)),
        ],
        planned: &[],
        summary: "One record.",
        states: IN_COLLECTION.require_if_match().lockable(),
    },
    RouteSpec {
        name: name::LOCK,
        pattern: "/v1/tenants/{tenant}/collections/{collection}/records/{id}/lock",
        methods: &[
            get(role(Editor), JSON).bodies(None, Some("Lease")),
            put(role(Editor))
                .bodies(Some("LockRequest"), Some("Lease"))
                .answering(&[Outcome::Created, Outcome::Ok]),
            delete(role(Editor)),
        ],
        planned: &[],
        summary: "A record's lock: a lease that keeps other callers from writing it.",
        states: IN_COLLECTION.lockable(),
    },
    // `batch` is a reserved word, never a record id: PUT (the only method
    // that names a new record by its path) answers 400 saying so, rather
    // than a 405 that would suggest records cannot be put at all.
    RouteSpec {
        name: name::BATCH,
        pattern: "/v1/tenants/{tenant}/collections/{collection}/records/batch",
        methods: &[
            MethodSpec::write(Method::POST, role(Editor), JSON, JSON)
                .bodies(Some("BatchRequest"), Some("BatchResults"))
                .answering(&[Outcome::MultiStatus, Outcome::Ok])
                .raising(&[
                    InvalidField,
                    SchemaViolation,
                    UniqueConflict,
                    PatchTestFailed,
                    StateConflict,
                    PreconditionFailed,
                    PreconditionRequired,
                    Locked,
                    NotFound,
                    Gone,
                ]),
            put(role(Editor))
                .bodies(Some("RecordData"), None)
                .answering(&[])
                .raising(&[InvalidField]),
        ],
        planned: &[],
        summary: "Batch writes: each operation decided like its own request (207), or the most critical status; \
                  with `\"atomic\": true`, all or nothing in one transaction (200 with every result, or the first \
                  failing operation's status with `errors` at `/operations/{i}`, and nothing applied). \
                  PUT answers 400: `batch` is reserved, not a record id.",
        states: IN_COLLECTION,
    },
    RouteSpec {
        name: name::IMPORTS,
        pattern: "/v1/tenants/{tenant}/collections/{collection}/imports",
        methods: &[MethodSpec::write(Method::POST, role(Editor), NDJSON, JSON)
            .streaming()
            .answering(&[Outcome::Accepted])
            .bodies(None, Some("Job"))],
        planned: &[],
        summary: "Imports: an NDJSON upload of records (streamed, up to CANON_MAX_IMPORT_BYTES), run as a job (202).",
        states: IN_COLLECTION,
    },
    RouteSpec {
        name: name::EXPORTS,
        pattern: "/v1/tenants/{tenant}/collections/{collection}/exports",
        methods: &[MethodSpec::write(Method::POST, role(Viewer), JSON, JSON)
            .answering(&[Outcome::Accepted])
            .bodies(Some("ExportRequest"), Some("Job"))],
        planned: &[],
        summary: "Exports: the collection's records (optionally filtered) into an NDJSON or CSV file, written by a \
                  job (202); the job's result is the file.",
        states: IN_COLLECTION,
    },
    RouteSpec {
        name: name::JOBS,
        pattern: "/v1/tenants/{tenant}/jobs",
        methods: &[get(role(Viewer), LIST_TYPES).bodies(None, Some("JobPage"))],
        planned: &[],
        summary: "The tenant's jobs: work accepted with 202.",
        states: IN_TENANT,
    },
    RouteSpec {
        name: name::JOB,
        pattern: "/v1/tenants/{tenant}/jobs/{job}",
        methods: &[
            get(role(Viewer), JSON).bodies(None, Some("Job")),
            MethodSpec::write(Method::DELETE, role(Editor), NONE, JSON)
                .bodies(None, Some("Job"))
                .raising(&[StateConflict]),
        ],
        planned: &[],
        summary: "A job's monitor: 200 while unfinished (Retry-After), failed or canceled; 303 to its result once \
                  it succeeded. DELETE cancels. Under a deleted tenant (410), the operator still follows the \
                  tenant's deletion job here, and its result, until the job expires.",
        states: BELOW_DELETABLE.see_other(),
    },
    RouteSpec {
        name: name::JOB_RESULT,
        pattern: "/v1/tenants/{tenant}/jobs/{job}/result",
        methods: &[get(role(Viewer), RESULT_TYPES)],
        planned: &[],
        summary: "What a succeeded job produced.",
        states: BELOW_DELETABLE,
    },
    RouteSpec {
        name: name::DEVICES,
        pattern: "/v1/tenants/{tenant}/devices",
        methods: &[
            get(role(Viewer), LIST_TYPES).bodies(None, Some("DevicePage")),
            post(role(Admin))
                .bodies(Some("NewDevice"), Some("Device"))
                .raising(&[UniqueConflict, InvalidField]),
        ],
        planned: &[],
        summary: "A tenant's devices: appliances whose management endpoints Canon relays requests to. Registering \
                  one (admin) checks its endpoint's addresses (docs/devices.md); its `headers` are stored \
                  encrypted and shown by name only; an `https` device's certificate is trusted by the system's \
                  roots, or by its own `tls.ca_certificate` (PEM) and/or pinned `tls.certificate_sha256`.",
        states: IN_TENANT,
    },
    RouteSpec {
        name: name::DEVICE,
        pattern: "/v1/tenants/{tenant}/devices/{device}",
        methods: &[
            get(role(Viewer), JSON).bodies(None, Some("Device")),
            patch(role(Admin))
                .bodies(Some("DevicePatch"), Some("Device"))
                .raising(&[InvalidField]),
            delete(role(Admin)),
        ],
        planned: &[],
        summary: "One device, with its `health` (its circuit breaker in this process).",
        states: BELOW_DELETABLE,
    },
    RouteSpec {
        name: name::DEVICE_COMMANDS,
        pattern: "/v1/tenants/{tenant}/devices/{device}/commands",
        methods: &[MethodSpec::write(Method::POST, role(Editor), JSON, JSON)
            .answering(&[Outcome::Accepted])
            .bodies(Some("DeviceCommand"), Some("Job"))
            .raising(&[InvalidField])],
        planned: &[],
        summary: "Long device commands: the request runs as a job (202), sent to the device at most once and \
                  given up to CANON_DEVICE_MAX_TIMEOUT_MS; the job's result is the device's answer \
                  (`status`, `headers`, `body`), reached by 303 from the job's monitor.",
        states: BELOW_DELETABLE,
    },
    // The device's answer, whatever it is, is relayed: its statuses,
    // headers and bodies are the device's own (`default` in the API
    // description), besides the gateway's 502, 503 and 504.
    RouteSpec {
        name: name::DEVICE_API,
        pattern: "/v1/tenants/{tenant}/devices/{device}/api/{*path}",
        methods: &[
            relay(MethodSpec::read(Method::GET, role(Viewer), NONE)),
            relay_write(Method::POST, Editor),
            relay_write(Method::PUT, Editor),
            relay_write(Method::PATCH, Editor),
            relay_write(Method::DELETE, Editor),
        ],
        planned: &[],
        summary: "The device gateway: the request is relayed to `{endpoint}/{path}` with its query and body \
                  (streamed), without the caller's Authorization and with the device's own headers; the \
                  device's status, headers and body come back as they are (streamed). 502 when the device \
                  refuses, resets or answers garbage, or its TLS certificate is not trusted, 504 when it sends no response headers within its \
                  `timeout_ms`, 503 while its circuit is open or its concurrency limit is reached.",
        states: BELOW_DELETABLE,
    },
    RouteSpec {
        name: name::MAINTENANCE,
        pattern: "/v1/admin/maintenance",
        methods: &[
            get(role(Operator), JSON).bodies(None, Some("Maintenance")),
            put(role(Operator)).bodies(Some("MaintenanceRequest"), Some("Maintenance")),
        ],
        planned: &[],
        summary: "Maintenance mode. While it is on, every other /v1 request answers 503 with the operator's message and \
                  Retry-After; this route, the probes and the documentation keep answering. Kept in the store: it \
                  survives a restart and reaches every node on the database within a second.",
        states: States::FIXED,
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use canon_http::route::RouteTable;

    #[test]
    fn table_compiles() {
        let t = RouteTable::new(ROUTES).unwrap();
        assert_eq!(
            t.lookup("/v1/tenants/a/collections/c/records/batch").unwrap().0.name,
            name::BATCH
        );
        assert_eq!(
            t.lookup("/v1/tenants/a/collections/c/records/x").unwrap().0.name,
            name::RECORD
        );
    }

    #[test]
    fn api_routes_are_guarded_and_others_public() {
        // A route is guarded exactly when the flow authenticates its
        // requests: the API under /v1, and /metrics.
        for r in ROUTES {
            for m in r.methods {
                let public = m.guard == Guard::Public;
                let authenticated = canon_http::operation::needs_credentials(r.pattern);
                assert_eq!(public, !authenticated, "{} {}", m.method, r.pattern);
            }
        }
    }
}
