//! Canon's storage: the [`Store`] trait and its backends.
//!
//! The trait speaks in domain operations (create a record, look up a key by
//! its hash), not SQL, so each backend writes the SQL its engine does best
//! and callers never see which one they talk to. Every write is atomic and
//! durable when its future resolves with `Ok`: a caller may answer 2xx then.
//!
//! Backends: [`sqlite::SqliteStore`] (embedded, the default) and
//! [`postgres::PostgresStore`] (several nodes on one database), held to the
//! same conformance suite.

pub mod device;
pub mod metrics;
pub mod migrate;
pub mod model;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

pub use device::{Device, DeviceChanges, DeviceHeader, DeviceStore, DeviceTls, NewDevice};
pub use model::*;

/// The store traits, for `use canon_store::prelude::*`: calling a domain
/// trait's method on a concrete backend (not on `dyn Store`) needs that trait
/// in scope.
pub mod prelude {
    pub use crate::{
        CollectionStore, DeviceStore, IdempotencyStore, JobStore, LeaseStore, MaintenanceStore, QuotaStore,
        RecordStore, SecretStore, Store, TenantStore,
    };
}

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A unique value is taken. `pointer` is a JSON pointer into the request
    /// body naming the field (`/name`, `/email`, `/data/serial`, `/id`).
    #[error("{pointer} is already taken")]
    Conflict {
        /// The conflicting field.
        pointer: String,
    },
    /// A unique value is still held by something being deleted: a deleted
    /// tenant's name stays taken until its deletion finished and its job
    /// expired ([`TenantDeletion`]). `pointer` names the field, as for
    /// [`StoreError::Conflict`].
    #[error("{pointer} is held by something being deleted")]
    HeldByDeletion {
        /// The field whose value is held.
        pointer: String,
    },
    /// A collection still has records.
    #[error("the collection still has records")]
    NotEmpty,
    /// The expectation given with a write did not hold.
    #[error("the record changed since it was read")]
    ExpectationFailed,
    /// Another caller holds a live lease on the record.
    #[error("the record is locked by {}", .0.holder)]
    Locked(Lease),
    /// The addressed resource (or its parent) does not exist: it never did,
    /// or it disappeared while the write was queued and left no tombstone.
    #[error("the target no longer exists")]
    Vanished,
    /// The addressed resource was deleted (its tombstone was found inside
    /// the write's transaction): of concurrent deletes, all but one see this.
    #[error("the target was deleted")]
    Gone,
    /// The change would leave the tenant without an admin.
    #[error("the tenant would be left without an admin")]
    LastAdmin,
    /// The caller's computation refused the current data (a failed patch
    /// `test`, a schema violation of the result); nothing was written.
    #[error("the write was rejected: {0}")]
    Rejected(RejectedWrite),
    /// The caller does not hold the job's lease (any more): it expired and
    /// another owner claimed the job, the job was canceled or finished, or
    /// the caller never held it. The worker must stop.
    #[error("the job's lease is not held by this owner")]
    LeaseLost,
    /// The job already finished (succeeded, failed or was canceled), so it
    /// cannot be canceled (HTTP 409).
    #[error("the job already finished: {}", .0.as_str())]
    JobFinished(JobStatus),
    /// The collection demands that a write of an existing record name the
    /// entity tag it expects (`require_if_match`), and this one did not
    /// ([`Expect::Etag`] or [`Expect::OneOf`]; [`Expect::Exists`] does not
    /// count: it holds for any version). Checked only by
    /// [`RecordStore::apply_atomically`]; single writes leave it to the
    /// server's decision flow (HTTP 428).
    #[error("the collection requires the write to name the record's entity tag")]
    ExpectationRequired,
    /// Write `index` (counted from 0) of an atomic batch failed with
    /// `cause`; nothing of the batch was written.
    #[error("write {index} of the batch failed: {cause}")]
    AtWrite {
        /// Which write failed.
        index: usize,
        /// Why it failed (never another [`StoreError::AtWrite`]).
        #[source]
        cause: Box<StoreError>,
    },
    /// The database cannot be reached or is failing.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Anything else (a bug, corrupt data). The message is for logs only.
    #[error("storage error: {0}")]
    Internal(String),
}

/// Computes a record's new data from its current data inside the write's
/// transaction (see [`RecordStore::patch_record`]).
pub type ApplyPatch = Box<dyn FnOnce(&Value) -> Result<Value, RejectedWrite> + Send>;

/// The new data of a create or replace in an atomic batch, as the caller
/// checked it before the transaction (against the collection's schema, off
/// the writer): `Err` is the caller's refusal, reported as
/// [`StoreError::Rejected`] when the transaction reaches this write, after
/// its existence, expectation and lease checks, so a batch fails at the same
/// write, with the same error, as one write after another would.
pub type CheckedData = Result<Value, RejectedWrite>;

/// One write of an atomic batch ([`RecordStore::apply_atomically`]): what a
/// single record write would be, with the same checks, in the same order.
pub enum RecordWrite {
    /// Creates a record at a new id (as [`RecordStore::create_record`]).
    Create {
        /// Its data.
        data: CheckedData,
    },
    /// Replaces the record at `id`, or creates it there (as
    /// [`RecordStore::put_record`]); [`Expect::Absent`] makes it create-only.
    Put {
        /// The record.
        id: String,
        /// Its new data.
        data: CheckedData,
        /// What the record must be.
        expect: Expect,
    },
    /// Computes the existing record's new data from its current data (as
    /// [`RecordStore::patch_record`]), seeing the batch's earlier writes.
    Patch {
        /// The record.
        id: String,
        /// The computation (patch, then schema).
        apply: ApplyPatch,
        /// What the record must be.
        expect: Expect,
    },
    /// Deletes the existing record, leaving a tombstone (as
    /// [`RecordStore::delete_record`]).
    Delete {
        /// The record.
        id: String,
        /// What the record must be.
        expect: Expect,
    },
}

/// What one write of an atomic batch did.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordWritten {
    /// A new record.
    Created(Record),
    /// The record's next version.
    Updated(Record),
    /// The record is deleted (a tombstone).
    Deleted,
}

/// Shorthand for store results.
pub type StoreResult<T> = Result<T, StoreError>;

/// Every persistent operation Canon performs, grouped by domain.
///
/// `Store` is the union of the domain traits below plus what spans them
/// (`ping`, `purge_expired`). Callers hold an `Arc<dyn Store>` and call any
/// domain's method on it with no further import (a trait object resolves its
/// supertraits' methods like its own); a concrete backend needs the traits in
/// scope (`use canon_store::prelude::*`). A part of the server that needs one
/// domain only may take that trait alone (`Arc<dyn Store>` upcasts to
/// `Arc<dyn JobStore>`). Each backend implements
/// one trait per file (`sqlite/tenants.rs`: `impl TenantStore for
/// SqliteStore`, …), so backends mirror each other file for file.
///
/// Tenant-scoped operations take the tenant's id, so a caller can only reach
/// rows of the tenant it resolved first: one tenant's ids never find another
/// tenant's rows.
#[async_trait]
pub trait Store:
    TenantStore
    + CollectionStore
    + RecordStore
    + LeaseStore
    + IdempotencyStore
    + SecretStore
    + JobStore
    + MaintenanceStore
    + QuotaStore
    + DeviceStore
    + Send
    + Sync
    + 'static
{
    /// Proves the database answers reads and writes: a read transaction
    /// that reads from the database itself (not a constant), and a write
    /// transaction begun and committed (it need write nothing). Fails with
    /// [`StoreError::Unavailable`] within the backend's timeout when either
    /// cannot be had (readiness answers 503 then).
    async fn ping(&self) -> StoreResult<()>;

    /// A number that moves whenever tenants, users, API keys, collections
    /// or collection aliases change (docs/decisions.md, "Caches and their
    /// invalidation"). A change made through this store moves it before the
    /// write returns; a change made by another process on the same database
    /// within 100 ms. A cache of any of those keeps an entry only while the
    /// number it was read under is still current. Never blocks.
    fn generation(&self) -> u64;

    /// Deletes what expired: tombstones, leases, idempotency keys, and the
    /// rows of deleted tenants that were emptied and whose deletion job was
    /// purged (their tombstone stays, their name is free). Returns how many
    /// rows went.
    async fn purge_expired(&self) -> StoreResult<u64>;

    /// Prepares for the process to end: waits for the writes already
    /// submitted to commit, refuses later ones ([`StoreError::Unavailable`]),
    /// and leaves the database complete on its own (SQLite: the WAL copied
    /// into the database file; a server backend: connections closed).
    /// [`StoreError::Unavailable`] when the database cannot be had for that
    /// last step (SQLite: another process holds the write lock): the writes
    /// were answered all the same and every one acknowledged is committed;
    /// only the tidying is left (the WAL's next open checkpoints it).
    async fn close(&self) -> StoreResult<()>;
}

/// Tenants, their users and API keys, and authentication by key.
#[async_trait]
pub trait TenantStore: Send + Sync {
    /// Creates the operator key with `token_hash` unless an operator key
    /// exists. Returns whether it created one.
    async fn bootstrap_operator(&self, token_hash: &str) -> StoreResult<bool>;
    /// Who holds the key whose token hashes to `token_hash`.
    async fn key_owner(&self, token_hash: &str) -> StoreResult<Option<KeyOwner>>;
    /// Creates a tenant. [`StoreError::Conflict`] when a tenant has the name,
    /// [`StoreError::HeldByDeletion`] when a deleted tenant still holds it
    /// ([`TenantDeletion`]). A name whose tenant was deleted and purged is
    /// free again: its tombstone goes.
    async fn create_tenant(&self, name: &str) -> StoreResult<Tenant>;
    /// Sets the rate limits of the tenant called `name` (a new version),
    /// `expect` checked against its version inside the write's
    /// transaction. [`StoreError::Gone`] for a deleted tenant,
    /// [`StoreError::Vanished`] for an unknown name,
    /// [`StoreError::ExpectationFailed`] when `expect` does not hold.
    async fn set_tenant_limits(&self, name: &str, limits: TenantLimits, expect: Expect) -> StoreResult<Tenant>;
    /// A tenant by name: `Gone` from the moment its deletion started.
    async fn tenant(&self, name: &str) -> StoreResult<Lookup<Tenant>>;
    /// Tenants by id (deleted ones left out).
    async fn list_tenants(&self, page: PageRequest) -> StoreResult<Page<Tenant>>;
    /// Starts deleting the tenant called `name` at `now`, in one write
    /// transaction: the tenant becomes a tombstone (kept for `retention`
    /// once its name is released) and a queued [`JobKind::DeleteTenant`] job,
    /// keyed by the tenant's id with params `{"tenant", "tenant_id"}`, is
    /// returned, to remove its contents step by step
    /// ([`TenantStore::delete_tenant_step`]). From the commit on, the tenant
    /// answers `Gone`, its keys stop authenticating, nothing can be added to
    /// it (writes that would answer [`StoreError::Gone`]) and its name stays
    /// taken. `expect` is checked against the live tenant's version.
    ///
    /// A tenant whose deletion stopped ([`TenantDeletion::stopped`]) gets a
    /// new job. [`StoreError::Gone`] when its deletion is under way or done,
    /// [`StoreError::Vanished`] when no tenant has that name.
    async fn delete_tenant(&self, name: &str, expect: Expect, retention: Duration, now: Millis) -> StoreResult<Job>;
    /// The deletion of the tenant called `name`, while the deleted tenant
    /// still holds its name; `None` for a live tenant or an unknown name.
    async fn tenant_deletion(&self, name: &str) -> StoreResult<Option<TenantDeletion>>;
    /// One bounded step of a tenant's deletion, run by `owner`, the holder
    /// of the lease on `job_id` (the tenant's current deletion job), at
    /// `now`. Removes at most about `limit` rows, in this order: cancels the
    /// tenant's other queued and running jobs; deletes each collection
    /// (leases, records, unique values and tombstones below it first); each
    /// user with its API keys; the tombstones kept under the tenant; the
    /// idempotency entries whose scope starts with `idempotency_scope` (the
    /// server's scope prefix for the tenant's members, never empty); the
    /// tenant's other jobs with their inputs and results. Deletes leave no
    /// tombstones of their own: the tenant's tombstone answers for all of
    /// them.
    ///
    /// The step, its counts and the job's checkpoint and progress commit in
    /// one write transaction, checked against the lease: a step is never
    /// applied or counted twice, and a worker that lost its lease
    /// ([`StoreError::LeaseLost`]) changes nothing. Once the tenant is empty
    /// the step says `finished` and records it; the deleted tenant's row
    /// then goes when `purge_expired` finds its job expired.
    async fn delete_tenant_step(
        &self,
        tenant_id: &str,
        job_id: &str,
        owner: &str,
        idempotency_scope: &str,
        limit: usize,
        now: Millis,
    ) -> StoreResult<TenantDeletionStep>;
    /// Creates a user. [`StoreError::Gone`] when the tenant is being
    /// deleted (checked inside the write's transaction, like every write
    /// that adds to a tenant).
    async fn create_user(&self, tenant_id: &str, email: &str, role: TenantRole) -> StoreResult<User>;
    /// A user by id.
    async fn user(&self, tenant_id: &str, id: &str) -> StoreResult<Lookup<User>>;
    /// Users by id.
    async fn list_users(&self, tenant_id: &str, page: PageRequest) -> StoreResult<Page<User>>;
    /// Changes a user's role (a new version, even when the role is the same).
    /// Inside the write's transaction: [`StoreError::Gone`] (tombstone) or
    /// [`StoreError::Vanished`] when the user is not there,
    /// [`StoreError::ExpectationFailed`] when `expect` does not hold,
    /// [`StoreError::LastAdmin`] when it would demote the tenant's last admin.
    async fn set_user_role(&self, tenant_id: &str, id: &str, role: TenantRole, expect: Expect) -> StoreResult<User>;
    /// Deletes a user and its keys, leaving a tombstone for `retention`.
    /// Fails like [`TenantStore::set_user_role`] (deleting the last admin is
    /// [`StoreError::LastAdmin`]).
    async fn delete_user(&self, tenant_id: &str, id: &str, expect: Expect, retention: Duration) -> StoreResult<()>;
    /// Creates an API key for a user ([`StoreError::Vanished`] when the user
    /// is not there, [`StoreError::Gone`] when the tenant is being deleted).
    async fn create_api_key(&self, tenant_id: &str, user_id: &str, name: &str, token_hash: &str)
    -> StoreResult<ApiKey>;
    /// A user's key by id.
    async fn api_key(&self, user_id: &str, id: &str) -> StoreResult<Lookup<ApiKey>>;
    /// A user's keys by id.
    async fn list_api_keys(&self, user_id: &str, page: PageRequest) -> StoreResult<Page<ApiKey>>;
    /// Revokes (deletes) a key, leaving a tombstone. [`StoreError::Gone`]
    /// (tombstone) or [`StoreError::Vanished`] when the key is not there,
    /// [`StoreError::ExpectationFailed`] when `expect` does not hold, both
    /// checked inside the write's transaction.
    async fn revoke_api_key(&self, user_id: &str, id: &str, expect: Expect, retention: Duration) -> StoreResult<()>;
}

/// A tenant's collections, their renames (aliases) and deletion.
#[async_trait]
pub trait CollectionStore: Send + Sync {
    /// Creates a collection ([`StoreError::Gone`] when the tenant is being
    /// deleted).
    async fn create_collection(&self, tenant_id: &str, new: NewCollection) -> StoreResult<Collection>;
    /// A collection by name.
    async fn collection(&self, tenant_id: &str, name: &str) -> StoreResult<Lookup<Collection>>;
    /// Collections by id.
    async fn list_collections(&self, tenant_id: &str, page: PageRequest) -> StoreResult<Page<Collection>>;
    /// Deletes an empty collection ([`StoreError::NotEmpty`] otherwise),
    /// leaving a tombstone and ending its redirects. [`StoreError::Gone`]
    /// (tombstone) or [`StoreError::Vanished`] when no collection has that
    /// name, [`StoreError::ExpectationFailed`] when `expect` does not hold,
    /// all checked inside the write's transaction.
    async fn delete_collection(
        &self,
        tenant_id: &str,
        name: &str,
        expect: Expect,
        retention: Duration,
    ) -> StoreResult<()>;
    /// Changes a collection (a new version). A rename keeps the old name as
    /// a redirect to the collection; a changed `unique` list re-indexes every
    /// record ([`StoreError::Conflict`] when existing records already collide).
    /// Fails like [`CollectionStore::delete_collection`] when the collection is not
    /// there or `expect` does not hold.
    async fn update_collection(
        &self,
        tenant_id: &str,
        name: &str,
        changes: CollectionChanges,
        expect: Expect,
    ) -> StoreResult<Collection>;
    /// The current name of the collection that was once called `name`, when
    /// `name` is an old name of a renamed collection.
    async fn collection_alias(&self, tenant_id: &str, name: &str) -> StoreResult<Option<String>>;
}

/// A collection's records: conditional writes, patches inside the write, lists.
#[async_trait]
pub trait RecordStore: Send + Sync {
    /// Creates a record with a new id.
    async fn create_record(&self, collection: &Collection, data: Value) -> StoreResult<Record>;
    /// A record by id.
    async fn record(&self, collection_id: &str, id: &str) -> StoreResult<Lookup<Record>>;
    /// A record by id as [`RecordStore::record`] finds it, its data still
    /// the JSON text the store holds (compact, canonical): for reads that
    /// only send the record out (a GET). Shared: a store that keeps records
    /// in memory hands out the record it keeps, not a copy.
    async fn raw_record(&self, collection_id: &str, id: &str) -> StoreResult<Lookup<Arc<RawRecord>>>;
    /// A page of records.
    async fn list_records(&self, collection_id: &str, query: RecordQuery) -> StoreResult<Page<Record>>;
    /// A page of records as [`RecordStore::list_records`] finds them, each
    /// with its data still the JSON text the store holds, not parsed: for
    /// bulk reads that only copy records out (exports).
    async fn list_raw_records(&self, collection_id: &str, query: RecordQuery) -> StoreResult<Page<RawRecord>>;
    /// How many records match `filters` (as in [`RecordQuery::filters`]).
    async fn count_records(&self, collection_id: &str, filters: Vec<(String, Value)>) -> StoreResult<u64>;
    /// Creates each of `records` (id, data) that does not exist yet, all in
    /// one write transaction (one commit for the lot: bulk work such as an
    /// import). Each record succeeds or fails on its own, in order:
    /// [`StoreError::ExpectationFailed`] when it already exists,
    /// [`StoreError::Conflict`] when it collides on a unique field; a failed
    /// one leaves nothing behind. Fails as a whole only when the collection
    /// is gone or the store fails.
    async fn create_absent_records(
        &self,
        collection: &Collection,
        records: Vec<(String, Value)>,
    ) -> StoreResult<Vec<StoreResult<()>>>;
    /// Replaces a record's data, or creates it at `id`, as `actor`. Returns
    /// the record and whether it was created. Fails with
    /// [`StoreError::ExpectationFailed`] when `expect` does not hold and with
    /// [`StoreError::Locked`] when someone else holds a lease on the record,
    /// both checked inside the write's transaction.
    async fn put_record(
        &self,
        collection: &Collection,
        id: &str,
        data: Value,
        expect: Expect,
        actor: &str,
    ) -> StoreResult<(Record, bool)>;
    /// Reads a record's current data, computes its new data with `apply` and
    /// writes it, all inside one write transaction, so no other write can
    /// land in between: an unconditional patch never fails for contention.
    /// [`StoreError::Gone`] (tombstone) or [`StoreError::Vanished`] when the
    /// record is not there; `expect` and leases are checked like
    /// [`RecordStore::put_record`]; `apply` refusing the data is
    /// [`StoreError::Rejected`], and nothing is written.
    async fn patch_record(
        &self,
        collection: &Collection,
        id: &str,
        apply: ApplyPatch,
        expect: Expect,
        actor: &str,
    ) -> StoreResult<Record>;
    /// Applies every write of `writes` in order, as `actor`, all or nothing
    /// in one write transaction: each write sees the earlier ones (create then
    /// patch one id works; two writes taking one unique value conflict).
    /// Every write is checked inside the transaction in the order its single
    /// write checks: the record's existence ([`StoreError::Gone`],
    /// [`StoreError::Vanished`] for patches and deletes), `expect`
    /// ([`StoreError::ExpectationFailed`]), the collection's demand for a tag
    /// when the record exists ([`StoreError::ExpectationRequired`], when
    /// `collection.require_if_match`), leases ([`StoreError::Locked`]), the
    /// data ([`StoreError::Rejected`]) and unique fields
    /// ([`StoreError::Conflict`]). The first write that fails rolls the whole
    /// batch back: the error is [`StoreError::AtWrite`] naming it, and nothing
    /// was written. A missing collection or a failing store fails the batch
    /// as a whole (not `AtWrite`). Deletes leave tombstones kept for
    /// `retention`. Returns what each write did, in order.
    async fn apply_atomically(
        &self,
        collection: &Collection,
        writes: Vec<RecordWrite>,
        actor: &str,
        retention: Duration,
    ) -> StoreResult<Vec<RecordWritten>>;
    /// Deletes a record as `actor`, leaving a tombstone and dropping its lease.
    /// [`StoreError::Gone`] (tombstone: someone else deleted it first) or
    /// [`StoreError::Vanished`] when it is not there; checks `expect` and
    /// leases like [`RecordStore::put_record`], all inside the write's transaction.
    async fn delete_record(
        &self,
        collection_id: &str,
        id: &str,
        expect: Expect,
        actor: &str,
        retention: Duration,
    ) -> StoreResult<()>;
}

/// Leases (locks) on records; record writes check them in their transaction.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// The live lease on a record, if any.
    async fn lease(&self, collection_id: &str, record_id: &str) -> StoreResult<Option<Lease>>;
    /// Takes or renews the lease on an existing record for `holder`, for
    /// `ttl`. Returns the lease and whether it is new (false: renewed).
    /// Fails with [`StoreError::Locked`] when another holder's lease is live
    /// and with [`StoreError::Vanished`] when the record does not exist.
    async fn acquire_lease(
        &self,
        collection_id: &str,
        record_id: &str,
        holder: &str,
        ttl: Duration,
    ) -> StoreResult<(Lease, bool)>;
    /// Releases the live lease on a record. With `holder`, only that holder's
    /// lease ([`StoreError::Locked`] if someone else's is live); without, any
    /// (an admin breaking it). Returns whether a live lease was released.
    async fn release_lease(&self, collection_id: &str, record_id: &str, holder: Option<&str>) -> StoreResult<bool>;
}

/// The idempotency ledger of keyed POSTs.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claims an idempotency key for one request, or reports the earlier
    /// request that used it. A claim still unfinished after `lease` counts as
    /// abandoned (its server died) and may be claimed again; a key is
    /// forgotten `ttl` after its first use.
    async fn claim_idempotency(
        &self,
        request: &IdempotencyRequest,
        ttl: Duration,
        lease: Duration,
    ) -> StoreResult<IdempotencyClaim>;
    /// Records the response to replay for a claimed key.
    async fn complete_idempotency(&self, scope: &str, key: &str, response: StoredResponse) -> StoreResult<()>;
    /// Frees a claimed key whose request should not be replayed (it failed
    /// in a way a retry may fix).
    async fn release_idempotency(&self, scope: &str, key: &str) -> StoreResult<()>;
}

/// Server secrets shared by every node on one database.
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// The server secret called `name`: stores `candidate` when there is none
    /// yet, and returns the stored value either way. Every node on one
    /// database, and every restart, gets the same secret (the first writer
    /// wins).
    async fn secret(&self, name: &str, candidate: &str) -> StoreResult<String>;
}

/// Maintenance mode, shared by every node on one database and kept across
/// restarts (docs/decisions.md, "Maintenance mode").
#[async_trait]
pub trait MaintenanceStore: Send + Sync {
    /// The current setting (off, on a store that was never told otherwise).
    async fn maintenance(&self) -> StoreResult<Maintenance>;
    /// Replaces the setting at `now` if `expect` (a version) holds
    /// ([`StoreError::ExpectationFailed`] otherwise); the version goes up.
    async fn set_maintenance(
        &self,
        setting: MaintenanceSetting,
        expect: Expect,
        now: Millis,
    ) -> StoreResult<Maintenance>;
}

/// Requests counted against each tenant's daily quota, kept in the store so
/// that a restart does not hand every tenant a fresh day and every node on
/// one database counts against the same total (docs/decisions.md, "Daily
/// quotas across restarts and nodes").
#[async_trait]
pub trait QuotaStore: Send + Sync {
    /// Adds each of `deltas` to its tenant's count for its day (never below
    /// zero), then returns every tenant's count for `day`. Empty `deltas`
    /// only read.
    async fn add_quota_usage(&self, deltas: Vec<QuotaUsage>, day: u32) -> StoreResult<Vec<QuotaUsage>>;
}

/// The durable job queue (docs/jobs.md): jobs, their chunked inputs and
/// results, and leases that let several processes share the queue.
///
/// Every lease check runs inside the write's transaction. A worker "holds" a
/// job while it is `Running` with its `owner` and `lease_until > now`; every
/// call below that takes an `owner` fails with [`StoreError::LeaseLost`]
/// otherwise (the lease expired, another owner claimed it, or it was
/// canceled), and the worker must stop. `owner` names one claim: make it
/// unique per claim (a node id plus a fresh UUID), so a stale task of the
/// same node cannot pass for the new holder.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Creates a job at `now`: `Queued` (claimable at once), or `Staged`
    /// when `new.with_input` (claimable only after [`JobStore::enqueue_job`]).
    /// [`StoreError::Gone`] when the tenant is being deleted.
    async fn create_job(&self, new: NewJob, now: Millis) -> StoreResult<Job>;
    /// Stores chunk `seq` of a staged job's input, durably. Chunks are
    /// numbered 0, 1, 2, …: `seq` must be at most the number stored so far;
    /// a `seq` already stored replaces that chunk and drops every later one
    /// (a retried upload resumes there). [`StoreError::ExpectationFailed`]
    /// when `seq` skips ahead or the job is no longer staged;
    /// [`StoreError::Vanished`] when there is no such job,
    /// [`StoreError::Gone`] when the tenant is being deleted. At most
    /// [`MAX_JOB_CHUNK_BYTES`] per chunk.
    async fn append_job_input(&self, tenant_id: &str, job_id: &str, seq: i64, chunk: Vec<u8>) -> StoreResult<()>;
    /// Marks a staged job's input complete and queues it at `now`: from the
    /// commit on, any process may claim it (the server answers 202 then).
    /// [`StoreError::ExpectationFailed`] when it is not staged,
    /// [`StoreError::Vanished`] when there is no such job,
    /// [`StoreError::Gone`] when the tenant is being deleted.
    async fn enqueue_job(&self, tenant_id: &str, job_id: &str, now: Millis) -> StoreResult<Job>;
    /// Input chunk `seq`, or `None` past the last one. Read one chunk at a
    /// time: a large input is never in memory whole.
    async fn read_job_input(&self, tenant_id: &str, job_id: &str, seq: i64) -> StoreResult<Option<Vec<u8>>>;

    /// Claims the job that has waited longest: a queued one, or a running one
    /// whose lease expired by `now` (its worker died; the claim resumes it from
    /// its checkpoint). Atomic: of concurrent claimers, across processes, each
    /// job goes to one. The claimed job is `Running` for `owner` until
    /// `now + lease`, with `attempts` one higher.
    async fn claim_job(&self, owner: &str, lease: Duration, now: Millis) -> StoreResult<Option<Job>>;
    /// Extends the lease `owner` holds to `lease_until`.
    async fn heartbeat(
        &self,
        tenant_id: &str,
        job_id: &str,
        owner: &str,
        lease_until: Millis,
        now: Millis,
    ) -> StoreResult<Job>;
    /// Stores where the job got to (a retry resumes from `checkpoint`) and
    /// extends the lease to `lease_until`, in one write: a step's progress
    /// and its lease renewal cost one commit.
    #[allow(clippy::too_many_arguments)]
    async fn checkpoint(
        &self,
        tenant_id: &str,
        job_id: &str,
        owner: &str,
        checkpoint: Value,
        progress: Progress,
        lease_until: Millis,
        now: Millis,
    ) -> StoreResult<Job>;
    /// Stores chunk `seq` of the result of a job `owner` holds; numbering and
    /// replacement as for [`JobStore::append_job_input`] (a retry resuming
    /// from a checkpoint rewrites the chunks written after it).
    async fn append_job_result(
        &self,
        tenant_id: &str,
        job_id: &str,
        owner: &str,
        seq: i64,
        chunk: Vec<u8>,
        now: Millis,
    ) -> StoreResult<()>;
    /// Ends a job `owner` holds at `now`; it and its result are kept for
    /// `keep` (at least [`JOB_RESULT_RETENTION`] by contract).
    async fn finish_job(
        &self,
        tenant_id: &str,
        job_id: &str,
        owner: &str,
        outcome: JobOutcome,
        now: Millis,
        keep: Duration,
    ) -> StoreResult<Job>;

    /// Cancels a staged, queued or running job at `now`, kept for `keep`. Its
    /// worker loses the lease (its next heartbeat or checkpoint fails) and
    /// stops; what it already did stays done. [`StoreError::JobFinished`]
    /// when the job had already finished (HTTP 409), [`StoreError::Gone`] or
    /// [`StoreError::Vanished`] when it is not there.
    async fn cancel_job(&self, tenant_id: &str, job_id: &str, now: Millis, keep: Duration) -> StoreResult<Job>;
    /// A job by id: `Gone` once purged (its tombstone), `Missing` for
    /// another tenant's job and for a staged one.
    async fn job(&self, tenant_id: &str, job_id: &str) -> StoreResult<Lookup<Job>>;
    /// A tenant's jobs (staged ones excepted), by id: creation order.
    async fn list_jobs(&self, tenant_id: &str, page: PageRequest) -> StoreResult<Page<Job>>;
    /// Result chunk `seq`, or `None` past the last one.
    async fn read_job_result(&self, tenant_id: &str, job_id: &str, seq: i64) -> StoreResult<Option<Vec<u8>>>;
    /// Deletes finished jobs whose `result_expires_at` passed by `now`, with
    /// their inputs and results, leaving tombstones kept for `tombstone_keep`
    /// (GET answers 410, then 404), and staged jobs whose upload was abandoned
    /// (no tombstone: they were never accepted). Returns how many jobs went.
    async fn purge_expired_jobs(&self, now: Millis, tombstone_keep: Duration) -> StoreResult<u64>;
}
