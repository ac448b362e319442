//! The stored entities and the shapes of queries over them.
//!
//! Times are milliseconds since the Unix epoch (UTC) so every backend stores
//! them the same way; the server formats them.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use canon_http::access::TenantRole;

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// The current time in [`Millis`].
pub fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A new time-ordered id (UUIDv7), so ids sort in creation order (the
/// crate's shared counter orders ids of one millisecond). Its random bits
/// come from the thread's generator (`uuid`'s `fast-rng`), not a system call
/// per id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// Internal id.
    pub id: String,
    /// The unique slug it is addressed by.
    pub name: String,
    /// 1 at creation, +1 on every change.
    pub version: i64,
    /// Creation time.
    pub created_at: Millis,
    /// Last change.
    pub updated_at: Millis,
    /// Its own rate limits; each `None` is the server's default.
    pub limits: TenantLimits,
}

/// A tenant's own rate limits (schema v7). Each `None` stands for the
/// server's default, so a changed default reaches every tenant that was
/// never given a value of its own. The store keeps what it is given; the
/// server checks the ranges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantLimits {
    /// Requests per second each of its API keys may send (the token
    /// bucket's refill rate).
    pub rate_limit_per_second: Option<u32>,
    /// Requests each of its keys may send at once, above the rate.
    pub burst: Option<u32>,
    /// Requests the tenant may send per calendar day (UTC).
    pub daily_quota: Option<u32>,
}

/// A tenant whose deletion has started ([`crate::TenantStore::delete_tenant`]).
///
/// From then on the tenant is a tombstone (its lookup is `Gone`, its keys no
/// longer authenticate), but its name stays taken and keeps naming its id
/// until its deletion has emptied it and its job has expired, so the
/// operator can follow the job under the tenant's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantDeletion {
    /// The deleted tenant's id (its jobs are keyed by it).
    pub tenant_id: String,
    /// Its name.
    pub name: String,
    /// The job deleting its contents (the latest one, if it was restarted).
    pub job_id: String,
    /// Where that job is; `None` once it was purged.
    pub job_status: Option<JobStatus>,
    /// When the tenant became a tombstone.
    pub deleted_at: Millis,
    /// When its last contents went (the deletion's last step), if they did.
    pub emptied_at: Option<Millis>,
}

impl TenantDeletion {
    /// Whether the deletion stopped before it finished: its job failed, was
    /// canceled or is gone. Then a new `DELETE` starts a new job that
    /// finishes the work; otherwise the deletion is under way (or done).
    pub fn stopped(&self) -> bool {
        !matches!(
            self.job_status,
            Some(JobStatus::Staged | JobStatus::Queued | JobStatus::Running | JobStatus::Succeeded)
        )
    }
}

/// What a tenant's deletion removed, by kind: the result of its job, and
/// its checkpoint while it runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedContents {
    /// Collections.
    pub collections: i64,
    /// Records of those collections.
    pub records: i64,
    /// Leases (locks) on those records.
    pub leases: i64,
    /// Users.
    pub users: i64,
    /// Their API keys.
    pub api_keys: i64,
    /// The tenant's other jobs that were still queued or running, canceled
    /// by the first step.
    pub jobs_canceled: i64,
    /// The tenant's other jobs (the canceled ones included), with their
    /// inputs and results.
    pub jobs: i64,
    /// Entries of the idempotency ledger kept for the tenant's members.
    pub idempotency_keys: i64,
    /// Devices (schema v11; absent from checkpoints written before it).
    #[serde(default)]
    pub devices: i64,
}

impl DeletedContents {
    /// Rows removed in all: the job's progress.
    pub fn total(&self) -> i64 {
        self.collections
            + self.records
            + self.leases
            + self.users
            + self.api_keys
            + self.jobs
            + self.idempotency_keys
            + self.devices
    }
}

/// Where a tenant's deletion stands after one step
/// ([`crate::TenantStore::delete_tenant_step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantDeletionStep {
    /// What the deletion removed so far, this step included.
    pub deleted: DeletedContents,
    /// Whether nothing of the tenant is left but its tombstone and this job.
    pub finished: bool,
}

/// A user of a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Id.
    pub id: String,
    /// Owning tenant's id.
    pub tenant_id: String,
    /// Email, stored lower-cased; unique within the tenant.
    pub email: String,
    /// Role.
    pub role: TenantRole,
    /// 1 at creation, +1 on every change.
    pub version: i64,
    /// Creation time.
    pub created_at: Millis,
    /// Last change.
    pub updated_at: Millis,
}

/// An API key (never its token: only the token's hash is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Id.
    pub id: String,
    /// The user it belongs to; `None` for the operator's key.
    pub user_id: Option<String>,
    /// A label chosen by its creator.
    pub name: String,
    /// 1 at creation, +1 on every change.
    pub version: i64,
    /// Creation time.
    pub created_at: Millis,
    /// Last change.
    pub updated_at: Millis,
}

/// Who holds an API key, as found by its token hash. Its names are
/// shared (`Arc<str>`): every request's principal is made from a cached
/// owner, and copies them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOwner {
    /// The operator.
    Operator {
        /// Key id.
        key_id: Arc<str>,
        /// The stored hash, for the constant-time comparison.
        token_hash: String,
    },
    /// A tenant's user.
    Member {
        /// Key id.
        key_id: Arc<str>,
        /// The stored hash, for the constant-time comparison.
        token_hash: String,
        /// Tenant name.
        tenant: Arc<str>,
        /// User id.
        user_id: Arc<str>,
        /// The user's role.
        role: TenantRole,
        /// The tenant's id.
        tenant_id: Arc<str>,
        /// The tenant's own rate limits, loaded with the key so that
        /// limiting costs no read of its own.
        limits: TenantLimits,
        /// The tenant's version when the key was read.
        tenant_version: i64,
    },
}

/// What a new collection is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCollection {
    /// Slug.
    pub name: String,
    /// JSON Schema (draft 2020-12) for its records' data.
    pub schema: Value,
    /// Top-level data fields whose values must be unique.
    pub unique: Vec<String>,
    /// Whether writes of existing records must carry `If-Match`.
    pub require_if_match: bool,
}

/// A collection.
#[derive(Debug, Clone, PartialEq)]
pub struct Collection {
    /// Id.
    pub id: String,
    /// Owning tenant's id.
    pub tenant_id: String,
    /// Slug.
    pub name: String,
    /// JSON Schema for its records' data.
    pub schema: Value,
    /// Unique top-level fields.
    pub unique: Vec<String>,
    /// Writes must carry `If-Match`.
    pub require_if_match: bool,
    /// Bumped on every change of the collection itself.
    pub version: i64,
    /// Creation time.
    pub created_at: Millis,
    /// Last change.
    pub updated_at: Millis,
}

/// A record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Id (server-made UUIDv7, or chosen by the client through PUT).
    pub id: String,
    /// The collection's id.
    pub collection_id: String,
    /// The data, a JSON object.
    pub data: Value,
    /// 1 at creation, +1 on every write.
    pub version: i64,
    /// Opaque strong entity tag, new on every write.
    pub etag: String,
    /// Creation time.
    pub created_at: Millis,
    /// Last change.
    pub updated_at: Millis,
}

/// The result of looking something up by its address.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup<T> {
    /// It exists.
    Found(T),
    /// It was deleted and its tombstone has not expired.
    Gone,
    /// It never existed, or its tombstone expired.
    Missing,
}

impl<T> Lookup<T> {
    /// The found value, if any.
    pub fn found(self) -> Option<T> {
        match self {
            Lookup::Found(t) => Some(t),
            _ => None,
        }
    }

    /// The same lookup with the found value turned by `f`.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Lookup<U> {
        match self {
            Lookup::Found(t) => Lookup::Found(f(t)),
            Lookup::Gone => Lookup::Gone,
            Lookup::Missing => Lookup::Missing,
        }
    }
}

/// Where a page of a list starts: after the item with this id (and, for sorted
/// record lists, this sort value).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// The last id of the previous page.
    pub id: String,
    /// The sort field's value on that item, when the list is sorted by a field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort_value: Option<Value>,
}

/// A record with its data as stored: JSON text, compact and canonical
/// (what `serde_json` writes for the parsed data, so copying it out equals
/// parsing and writing it again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// Id within the collection.
    pub id: String,
    /// The data as JSON text.
    pub data: String,
    /// Bumped by every write.
    pub version: i64,
    /// Strong entity tag.
    pub etag: String,
    /// Creation time.
    pub created_at: Millis,
    /// Last modification time.
    pub updated_at: Millis,
}

/// A page request.
#[derive(Debug, Clone, PartialEq)]
pub struct PageRequest {
    /// Items per page, at least 1.
    pub limit: usize,
    /// Where to continue from.
    pub after: Option<Cursor>,
}

/// A page of results.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Where the next page starts, when there is one.
    pub next: Option<Cursor>,
}

impl<T> Page<T> {
    /// The page of `limit` items out of `limit + 1` fetched in list order,
    /// each with its sort value (`None` in id order): a row beyond `limit`
    /// means there is more, after the last item kept. Both backends page
    /// this way.
    pub fn from_fetched(mut fetched: Vec<(T, Option<Value>)>, limit: usize, id_of: impl Fn(&T) -> &str) -> Page<T> {
        let next = if fetched.len() > limit {
            fetched.truncate(limit);
            fetched.last().map(|(item, sort_value)| Cursor {
                id: id_of(item).to_owned(),
                sort_value: sort_value.clone(),
            })
        } else {
            None
        };
        Page {
            items: fetched.into_iter().map(|(item, _)| item).collect(),
            next,
        }
    }
}

/// Checks `expect` against an existing entity at `version` (with `etag`,
/// for records), as every backend's conditional write does inside its
/// transaction.
pub(crate) fn check_existing(expect: &Expect, version: i64, etag: Option<&str>) -> crate::StoreResult<()> {
    let holds = match expect {
        Expect::Anything => true,
        Expect::Etag(tag) => etag == Some(tag.as_str()),
        Expect::Version(v) => *v == version,
        Expect::Absent => false,
        Expect::Exists => true,
        Expect::OneOf(tags) => etag.is_some_and(|e| tags.iter().any(|t| t == e)),
    };
    if holds {
        Ok(())
    } else {
        Err(crate::StoreError::ExpectationFailed)
    }
}

/// Sort order of a record list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortOrder {
    /// By id: creation order for server-made ids.
    Id,
    /// By a top-level data field (missing values last), then id.
    Field {
        /// The field.
        field: String,
        /// Descending.
        descending: bool,
    },
}

/// A record list query.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordQuery {
    /// Paging.
    pub page: PageRequest,
    /// Equality filters on top-level data fields; values are JSON scalars.
    /// Numbers are canonical (see canon-server's `json.rs`) and a backend
    /// compares them exactly, by their JSON text, never through a double.
    pub filters: Vec<(String, Value)>,
    /// Order.
    pub sort: SortOrder,
}

/// Whether a field name may be used in filters, sorts and unique lists:
/// `[A-Za-z_][A-Za-z0-9_]{0,63}`.
pub fn is_field_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// What a write expects the record's current state to be, checked atomically
/// with the write (so two writers with the same `If-Match` cannot both win).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Whatever is there.
    Anything,
    /// The record exists with this entity tag.
    Etag(String),
    /// The entity exists at this version (tenants, users, keys and
    /// collections, whose tags derive from their version).
    Version(i64),
    /// The record does not exist.
    Absent,
    /// The record exists, whatever its tag (`If-Match: *`).
    Exists,
    /// The record exists with one of these entity tags (`If-Match` naming
    /// several; an empty list never holds).
    OneOf(Vec<String>),
}

impl Expect {
    /// Whether the expectation names the entity tag(s) the writer read:
    /// what a collection with `require_if_match` demands of every write to
    /// an existing record.
    pub fn names_a_tag(&self) -> bool {
        matches!(self, Expect::Etag(_) | Expect::OneOf(_) | Expect::Version(_))
    }
}

/// A lease on a record: while it is live, only its holder may write the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Who holds it (a user id, or `operator`).
    pub holder: String,
    /// When it was first taken.
    pub acquired_at: Millis,
    /// When it releases itself.
    pub expires_at: Millis,
}

/// Changes to a collection; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CollectionChanges {
    /// A new name; the old one becomes a redirect.
    pub name: Option<String>,
    /// A new schema, checked by later writes.
    pub schema: Option<Value>,
    /// New unique fields; existing records are indexed again.
    pub unique: Option<Vec<String>>,
    /// Whether writes must carry `If-Match`.
    pub require_if_match: Option<bool>,
}

/// Why the computation of a write refused the current data
/// ([`crate::StoreError::Rejected`]). The server turns each into the problem
/// it answered before the computation moved into the write's transaction.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RejectedWrite {
    /// A JSON Patch `test` operation did not hold.
    #[error("the test at operation {operation} did not hold")]
    TestFailed {
        /// Index of the failing operation.
        operation: usize,
        /// What failed, and where.
        detail: String,
    },
    /// A patch operation cannot be applied to the current data.
    #[error("operation {operation} cannot be applied: {detail}")]
    Inapplicable {
        /// Index of the failing operation.
        operation: usize,
        /// What failed, and where.
        detail: String,
    },
    /// The resulting data breaks the collection's schema.
    #[error("{detail}")]
    Invalid {
        /// A summary.
        detail: String,
        /// Each failing location: a JSON pointer into the record envelope and what is wrong.
        errors: Vec<(String, String)>,
    },
}

/// A response kept for an idempotency key, replayed to retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// The status code.
    pub status: u16,
    /// Header names and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// One request's claim on an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyClaim {
    /// The key was free (or its earlier request was abandoned): go ahead,
    /// then complete or release it.
    Claimed,
    /// Another request with this key is still running.
    InFlight,
    /// The key was used for a different request.
    Mismatch,
    /// The key's request finished: replay this.
    Completed(StoredResponse),
}

/// A request to claim an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRequest {
    /// Whose key it is: the caller's identity (and tenant).
    pub scope: String,
    /// The key the client sent.
    pub key: String,
    /// A digest of the request (method, target, body), to spot reuse.
    pub fingerprint: String,
}

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Records from an uploaded NDJSON body (its input blob).
    Import,
    /// A collection's records into a file (its result blob).
    Export,
    /// A tenant and everything in it.
    DeleteTenant,
    /// A collection and its records.
    DeleteCollection,
    /// A request relayed to a device, whose answer is the result (schema v11).
    DeviceCommand,
}

impl JobKind {
    /// Every kind.
    pub const ALL: [JobKind; 5] = [
        JobKind::Import,
        JobKind::Export,
        JobKind::DeleteTenant,
        JobKind::DeleteCollection,
        JobKind::DeviceCommand,
    ];

    /// The stored (and wire) name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Import => "import",
            JobKind::Export => "export",
            JobKind::DeleteTenant => "delete_tenant",
            JobKind::DeleteCollection => "delete_collection",
            JobKind::DeviceCommand => "device_command",
        }
    }

    /// The kind called `s`.
    pub fn parse(s: &str) -> Option<JobKind> {
        JobKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Where a job is in its life (docs/jobs.md has the state diagram).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Created with an input that is still arriving ([`crate::JobStore::append_job_input`]):
    /// not claimable, and invisible to [`crate::JobStore::job`] and
    /// [`crate::JobStore::list_jobs`] (the server has not answered 202 yet).
    /// [`crate::JobStore::enqueue_job`] makes it `Queued`; an upload abandoned
    /// for [`JOB_STAGING_TTL`] is purged.
    Staged,
    /// Waiting for a worker.
    Queued,
    /// Claimed by a worker whose lease is `lease_until`.
    Running,
    /// Done; its result (if any) is kept until `result_expires_at`.
    Succeeded,
    /// Gave up; `problem` says why.
    Failed,
    /// Canceled before it finished.
    Canceled,
}

impl JobStatus {
    /// Every status.
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Staged,
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Canceled,
    ];

    /// The stored (and wire) name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Staged => "staged",
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Canceled => "canceled",
        }
    }

    /// The status called `s`.
    pub fn parse(s: &str) -> Option<JobStatus> {
        JobStatus::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Succeeded, failed or canceled: it will not change again.
    pub fn is_finished(self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Failed | JobStatus::Canceled)
    }
}

/// How far a job got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Units done (records, bytes: the job kind decides).
    pub done: i64,
    /// Units in all, when known.
    pub total: Option<i64>,
}

/// Asynchronous work accepted with 202.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Id (UUIDv7).
    pub id: String,
    /// Owning tenant's id.
    pub tenant_id: String,
    /// What it does.
    pub kind: JobKind,
    /// Where it is.
    pub status: JobStatus,
    /// How far it got.
    pub progress: Progress,
    /// What it was asked to do (collection, format, …), as the server wrote it.
    pub params: Value,
    /// The last checkpoint its worker stored: where a retry resumes.
    pub checkpoint: Option<Value>,
    /// A small result summary (counts); large results are result chunks.
    pub result: Option<Value>,
    /// Why it failed (a problem body).
    pub problem: Option<Value>,
    /// How many times it was claimed (1 on the first run).
    pub attempts: i64,
    /// Who holds (or last held) its lease.
    pub owner: Option<String>,
    /// When the current lease ends (while running); a staged job's upload deadline.
    pub lease_until: Option<Millis>,
    /// Input chunks stored (0, 1, …, `input_chunks - 1`).
    pub input_chunks: i64,
    /// Input bytes stored.
    pub input_bytes: i64,
    /// Result chunks stored.
    pub result_chunks: i64,
    /// Result bytes stored.
    pub result_bytes: i64,
    /// Creation time.
    pub created_at: Millis,
    /// When it became claimable (claims take the oldest first).
    pub queued_at: Option<Millis>,
    /// When it was first claimed.
    pub started_at: Option<Millis>,
    /// When it finished or was canceled.
    pub finished_at: Option<Millis>,
    /// When it and its result go (then GET answers 410).
    pub result_expires_at: Option<Millis>,
}

/// What a new job is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// Owning tenant's id.
    pub tenant_id: String,
    /// What it does.
    pub kind: JobKind,
    /// What it was asked to do.
    pub params: Value,
    /// Units in all, when known at creation.
    pub total: Option<i64>,
    /// Whether an input follows: the job is created [`JobStatus::Staged`] and
    /// becomes claimable once [`crate::JobStore::enqueue_job`] says the input
    /// is complete. Without, it is created `Queued`.
    pub with_input: bool,
}

/// How a worker ends a job it holds.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    /// Done; `result` is a small summary (large results are result chunks).
    Succeeded {
        /// The summary, if any.
        result: Option<Value>,
    },
    /// Gave up for good.
    Failed {
        /// A problem body saying why.
        problem: Value,
    },
}

/// How long an unfinished upload keeps a staged job before purge drops it.
pub const JOB_STAGING_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// The shortest time a finished job (and its result) is kept.
pub const JOB_RESULT_RETENTION: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// The largest chunk of a job's input or result, so one write stays small
/// (uploads stream in chunks of about 1 MiB).
pub const MAX_JOB_CHUNK_BYTES: usize = 4 << 20;

/// Maintenance mode as the operator set it: while `enabled`, every `/v1`
/// request except the operator's `/v1/admin/…` calls is answered 503.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maintenance {
    /// Whether it is on.
    pub enabled: bool,
    /// What `Retry-After` tells refused clients, in seconds.
    pub retry_after_seconds: u32,
    /// The operator's words for refused clients (empty: a standard text).
    pub message: String,
    /// Goes up with every change (the entity tag derives from it).
    pub version: i64,
    /// Last change.
    pub updated_at: Millis,
}

/// Requests counted against one tenant's daily quota on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaUsage {
    /// The tenant (by id).
    pub tenant_id: String,
    /// The UTC day, in days since 1970-01-01.
    pub day: u32,
    /// Requests counted (in a delta handed to the store: requests to add,
    /// negative for refunds).
    pub used: i64,
}

/// What the operator sets (`PUT /v1/admin/maintenance`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceSetting {
    /// Whether it is on.
    pub enabled: bool,
    /// What `Retry-After` tells refused clients, in seconds.
    pub retry_after_seconds: u32,
    /// The operator's words for refused clients.
    pub message: String,
}

/// `value` as compact JSON text, as stores keep record data: through
/// serde_json's writer into one buffer (`Value`'s `Display` goes through the
/// formatting machinery, checking each piece it writes as UTF-8).
pub(crate) fn compact_json(value: &Value) -> String {
    // A `Value` always serializes (its map keys are strings); the fallback
    // is the same text by the slower path.
    serde_json::to_string(value).unwrap_or_else(|_| value.to_string())
}

/// What a lookup's tombstone is keyed by: the kind of thing, its parent's
/// id (`""` for tenant names) and its key. Both backends' `rows::lookup`
/// take one to tell `Gone` from `Missing` on a miss.
pub(crate) struct Tombstone<'a> {
    pub kind: &'a str,
    pub scope: &'a str,
    pub key: &'a str,
}

impl<'a> Tombstone<'a> {
    /// The tombstone of `key` of `kind` within `scope`.
    pub(crate) const fn new(kind: &'a str, scope: &'a str, key: &'a str) -> Self {
        Self { kind, scope, key }
    }
}
