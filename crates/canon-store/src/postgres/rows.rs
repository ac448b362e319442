//! What every domain file of the PostgreSQL backend shares: error mapping,
//! typed parameters, row mapping and column lists, locks, tombstones,
//! expectations and keyset paging.

use std::time::Duration;

use serde_json::Value;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{GenericClient, Row};

use crate::model::*;
use crate::{StoreError, StoreResult};

/// Maps a PostgreSQL failure to a store error: the database cannot be had
/// for now (the connection lost or refused, the server shutting down or
/// out of connections, a read-only standby, a deadlock or serialization
/// failure, a statement canceled by a timeout) is
/// [`StoreError::Unavailable`] (503, retry); anything else is internal.
pub(super) fn db_error(e: tokio_postgres::Error) -> StoreError {
    let transient = match e.code() {
        // No SQLSTATE: the connection itself failed (I/O, closed, timeout).
        None => true,
        Some(code) => {
            let class = &code.code()[..2];
            // 08: connection exception; 53: insufficient resources;
            // 57: operator intervention (shutdown, cannot connect now, query
            // canceled); 40: transaction rollback (deadlock, serialization).
            matches!(class, "08" | "53" | "57" | "40")
                || *code == SqlState::READ_ONLY_SQL_TRANSACTION
                || *code == SqlState::LOCK_NOT_AVAILABLE
        }
    };
    // The server's own words (tokio-postgres's `Display` says only "db error").
    let message = match e.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => e.to_string(),
    };
    if transient {
        StoreError::Unavailable(message)
    } else {
        StoreError::Internal(message)
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        db_error(e)
    }
}

/// A statement parameter with its type (sent with the statement, so nothing
/// is prepared by name: PgBouncer's transaction pooling needs that).
pub(super) type Param<'a> = (&'a (dyn ToSql + Sync), Type);

/// A `TEXT` parameter.
pub(super) fn text<'a>(v: &'a (dyn ToSql + Sync)) -> Param<'a> {
    (v, Type::TEXT)
}

/// A `BIGINT` parameter.
pub(super) fn int<'a>(v: &'a (dyn ToSql + Sync)) -> Param<'a> {
    (v, Type::INT8)
}

/// A `BYTEA` parameter.
pub(super) fn bytes<'a>(v: &'a (dyn ToSql + Sync)) -> Param<'a> {
    (v, Type::BYTEA)
}

/// A `BOOLEAN` parameter.
pub(super) fn boolean<'a>(v: &'a (dyn ToSql + Sync)) -> Param<'a> {
    (v, Type::BOOL)
}

/// Anything a statement runs on: a connection or a transaction.
pub(super) trait Db: GenericClient + Sync {}
impl<T: GenericClient + Sync> Db for T {}

/// Holds a transaction-scoped advisory lock on `key` until the transaction
/// ends: every write that checks something about `key` before changing it
/// (a record's tag, a lease, a user's role) takes it first, so the check
/// and the change are not interleaved with another writer's. Keys name what
/// they lock (`record/{collection}/{id}`).
pub(super) async fn lock(c: &impl Db, key: &str) -> StoreResult<()> {
    c.execute_typed("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[text(&key)])
        .await?;
    Ok(())
}

pub(super) fn retention_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

/// A stored `BIGINT` as the `u32` it was written from.
pub(super) fn to_u32(v: Option<i64>) -> Option<u32> {
    v.map(|v| u32::try_from(v.max(0)).unwrap_or(u32::MAX))
}

/// Tombstone kinds.
pub(super) mod kind {
    /// Scoped by nothing (`""`): tenant names are global.
    pub const TENANT: &str = "tenant";
    pub const USER: &str = "user";
    pub const API_KEY: &str = "api_key";
    pub const COLLECTION: &str = "collection";
    pub const RECORD: &str = "record";
    pub const JOB: &str = "job";
    pub const DEVICE: &str = "device";
}

pub(super) async fn put_tombstone_at(
    c: &impl Db,
    kind: &str,
    scope: &str,
    key: &str,
    now: Millis,
    retention: Duration,
) -> StoreResult<()> {
    let expires = now.saturating_add(retention_ms(retention));
    c.execute_typed(
        "INSERT INTO tombstones (kind, scope, key, deleted_at, expires_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (kind, scope, key) DO UPDATE SET deleted_at = excluded.deleted_at, expires_at = excluded.expires_at",
        &[text(&kind), text(&scope), text(&key), int(&now), int(&expires)],
    )
    .await?;
    Ok(())
}

pub(super) async fn put_tombstone(
    c: &impl Db,
    kind: &str,
    scope: &str,
    key: &str,
    retention: Duration,
) -> StoreResult<()> {
    put_tombstone_at(c, kind, scope, key, now_millis(), retention).await
}

pub(super) async fn clear_tombstone(c: &impl Db, kind: &str, scope: &str, key: &str) -> StoreResult<()> {
    c.execute_typed(
        "DELETE FROM tombstones WHERE kind = $1 AND scope = $2 AND key = $3",
        &[text(&kind), text(&scope), text(&key)],
    )
    .await?;
    Ok(())
}

/// `Gone` when a live tombstone exists, else `Missing`. Only for writes,
/// which hold the lock a re-create takes (see [`lookup`] for reads).
async fn absent<T>(c: &impl Db, kind: &str, scope: &str, key: &str) -> StoreResult<Lookup<T>> {
    let now = now_millis();
    let live = c
        .query_typed_opt(
            "SELECT 1 FROM tombstones WHERE kind = $1 AND scope = $2 AND key = $3 AND expires_at > $4",
            &[text(&kind), text(&scope), text(&key), int(&now)],
        )
        .await?;
    Ok(if live.is_some() { Lookup::Gone } else { Lookup::Missing })
}

/// The error for a write whose target is not there: [`StoreError::Gone`]
/// when its tombstone is live, else [`StoreError::Vanished`].
pub(super) async fn not_there(c: &impl Db, kind: &str, scope: &str, key: &str) -> StoreError {
    match absent::<()>(c, kind, scope, key).await {
        Ok(Lookup::Gone) => StoreError::Gone,
        Ok(_) => StoreError::Vanished,
        Err(e) => e,
    }
}

pub(super) use crate::model::Tombstone;

/// Looks up one thing: `select` selects its row (at most one) with `args`,
/// `map` reads it, and a miss is told `Gone` from `Missing` by `tombstone`.
///
/// The answer comes from one snapshot (docs/decisions.md, "A lookup
/// decides found, gone or missing from one snapshot"). Under READ COMMITTED
/// each statement has its own, so reading the row and then the tombstone in
/// two statements answered `Missing` when a re-create (which removes the
/// tombstone and inserts the row) committed between them.
///
/// A hit is the row's select alone, as fast as it ever was: statements are
/// planned at each call (nothing is prepared by name, for PgBouncer), and
/// one statement probing the tombstone too would cost every hit its
/// planning (about twice the select's). A miss asks again with one
/// statement reading the row and the tombstone together, and that statement
/// alone decides.
pub(super) async fn lookup<T>(
    c: &impl Db,
    select: &str,
    args: &[Param<'_>],
    map: impl Fn(&Row) -> StoreResult<T>,
    tombstone: Tombstone<'_>,
) -> StoreResult<Lookup<T>> {
    if let Some(row) = c.query_typed_opt(select, args).await? {
        return Ok(Lookup::Found(map(&row)?));
    }
    let n = args.len();
    let sql = format!(
        "SELECT found.*, EXISTS (SELECT 1 FROM tombstones WHERE kind = ${} AND scope = ${} AND key = ${} AND expires_at > ${})
         FROM (SELECT 1) AS one LEFT JOIN (SELECT q.*, TRUE AS canon_found FROM ({select}) AS q) AS found ON TRUE",
        n + 1,
        n + 2,
        n + 3,
        n + 4
    );
    let now = now_millis();
    let mut all = args.to_vec();
    all.extend([
        text(&tombstone.kind),
        text(&tombstone.scope),
        text(&tombstone.key),
        int(&now),
    ]);
    // Exactly one row: the thing's columns (NULL on a miss), whether it was
    // found, whether its tombstone is live.
    let row = c.query_typed_one(&sql, &all).await?;
    let width = row.len();
    if row.try_get::<_, Option<bool>>(width - 2)?.is_some() {
        Ok(Lookup::Found(map(&row)?))
    } else if row.try_get::<_, bool>(width - 1)? {
        Ok(Lookup::Gone)
    } else {
        Ok(Lookup::Missing)
    }
}

/// Fails with [`StoreError::Gone`] when the tenant is being deleted and with
/// [`StoreError::Vanished`] when no tenant has that id. Takes a share lock on
/// the tenant's row, so a deletion starting meanwhile waits for this
/// transaction (and one that committed first is seen): nothing is added to
/// a tenant once its deletion started.
pub(super) async fn live_tenant(c: &impl Db, tenant_id: &str) -> StoreResult<()> {
    let row = c
        .query_typed_opt(
            "SELECT deleted_at FROM tenants WHERE id = $1 FOR SHARE",
            &[text(&tenant_id)],
        )
        .await?;
    match row {
        Some(r) => match r.try_get::<_, Option<i64>>(0)? {
            None => Ok(()),
            Some(_) => Err(StoreError::Gone),
        },
        None => Err(StoreError::Vanished),
    }
}

pub(super) use crate::model::check_existing;

/// Runs a keyset-paginated query: `sql` selects rows with `id > $n` (the
/// cursor, one after `args`) and `LIMIT $n+1`, ordered by id.
pub(super) async fn page<T>(
    c: &impl Db,
    sql: &str,
    args: &[Param<'_>],
    page: &PageRequest,
    map: impl Fn(&Row) -> StoreResult<T>,
    id_of: impl Fn(&T) -> &str,
) -> StoreResult<Page<T>> {
    let after = page.after.as_ref().map(|c| c.id.as_str()).unwrap_or("");
    let fetch = (page.limit + 1) as i64;
    let mut all: Vec<Param<'_>> = args.to_vec();
    all.push(text(&after));
    all.push(int(&fetch));
    let rows = c.query_typed(sql, &all).await?;
    let items = rows
        .iter()
        .map(|r| map(r).map(|t| (t, None)))
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(Page::from_fetched(items, page.limit, id_of))
}

pub(super) fn tenant_row(r: &Row) -> StoreResult<Tenant> {
    Ok(Tenant {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        version: r.try_get(2)?,
        created_at: r.try_get(3)?,
        updated_at: r.try_get(4)?,
        limits: TenantLimits {
            rate_limit_per_second: to_u32(r.try_get(5)?),
            burst: to_u32(r.try_get(6)?),
            daily_quota: to_u32(r.try_get(7)?),
        },
    })
}
pub(super) const TENANT_COLS: &str =
    "id, name, version, created_at, updated_at, rate_limit_per_second, burst, daily_quota";

pub(super) fn role(s: &str) -> StoreResult<TenantRole> {
    TenantRole::parse(s).ok_or_else(|| StoreError::Internal(format!("unknown role {s:?}")))
}

pub(super) fn user_row(r: &Row) -> StoreResult<User> {
    Ok(User {
        id: r.try_get(0)?,
        tenant_id: r.try_get(1)?,
        email: r.try_get(2)?,
        role: role(r.try_get(3)?)?,
        version: r.try_get(4)?,
        created_at: r.try_get(5)?,
        updated_at: r.try_get(6)?,
    })
}
pub(super) const USER_COLS: &str = "id, tenant_id, email, role, version, created_at, updated_at";

pub(super) fn key_row(r: &Row) -> StoreResult<ApiKey> {
    Ok(ApiKey {
        id: r.try_get(0)?,
        user_id: r.try_get(1)?,
        name: r.try_get(2)?,
        version: r.try_get(3)?,
        created_at: r.try_get(4)?,
        updated_at: r.try_get(5)?,
    })
}
pub(super) const KEY_COLS: &str = "id, user_id, name, version, created_at, updated_at";

pub(super) fn json_text(r: &Row, i: usize) -> StoreResult<Value> {
    let s: &str = r.try_get(i)?;
    serde_json::from_str(s).map_err(|e| StoreError::Internal(format!("stored JSON: {e}")))
}

fn opt_json_text(r: &Row, i: usize) -> StoreResult<Option<Value>> {
    let s: Option<&str> = r.try_get(i)?;
    s.map(|s| serde_json::from_str(s).map_err(|e| StoreError::Internal(format!("stored JSON: {e}"))))
        .transpose()
}

pub(super) fn collection_row(r: &Row) -> StoreResult<Collection> {
    let unique: Value = json_text(r, 4)?;
    Ok(Collection {
        id: r.try_get(0)?,
        tenant_id: r.try_get(1)?,
        name: r.try_get(2)?,
        schema: json_text(r, 3)?,
        unique: unique
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default(),
        require_if_match: r.try_get(5)?,
        version: r.try_get(6)?,
        created_at: r.try_get(7)?,
        updated_at: r.try_get(8)?,
    })
}
pub(super) const COLLECTION_COLS: &str =
    "id, tenant_id, name, schema, unique_fields, require_if_match, version, created_at, updated_at";

pub(super) fn record_row(r: &Row) -> StoreResult<Record> {
    Ok(Record {
        collection_id: r.try_get(0)?,
        id: r.try_get(1)?,
        data: json_text(r, 2)?,
        version: r.try_get(3)?,
        etag: r.try_get(4)?,
        created_at: r.try_get(5)?,
        updated_at: r.try_get(6)?,
    })
}
/// A record row with its data left as the JSON text it is stored as.
pub(super) fn raw_record_row(r: &Row) -> StoreResult<RawRecord> {
    Ok(RawRecord {
        id: r.try_get(1)?,
        data: r.try_get(2)?,
        version: r.try_get(3)?,
        etag: r.try_get(4)?,
        created_at: r.try_get(5)?,
        updated_at: r.try_get(6)?,
    })
}
/// The record columns, `body` (the stored text) standing for the data.
pub(super) const RECORD_COLS: &str = "collection_id, id, body, version, etag, created_at, updated_at";

/// The tenant owning a collection, as a sub-select: record reads are
/// addressed by the collection's id alone, and the records' keys lead with
/// the tenant.
pub(super) const TENANT_OF_COLLECTION: &str = "(SELECT tenant_id FROM collections WHERE id = $1)";

pub(super) fn lease_row(r: &Row) -> StoreResult<Lease> {
    Ok(Lease {
        holder: r.try_get(0)?,
        acquired_at: r.try_get(1)?,
        expires_at: r.try_get(2)?,
    })
}

fn enum_column<T>(r: &Row, i: usize, parse: impl Fn(&str) -> Option<T>) -> StoreResult<T> {
    let s: &str = r.try_get(i)?;
    parse(s).ok_or_else(|| StoreError::Internal(format!("unknown stored value {s:?}")))
}

pub(super) fn job_row(r: &Row) -> StoreResult<Job> {
    Ok(Job {
        tenant_id: r.try_get(0)?,
        id: r.try_get(1)?,
        kind: enum_column(r, 2, JobKind::parse)?,
        status: enum_column(r, 3, JobStatus::parse)?,
        params: json_text(r, 4)?,
        progress: Progress {
            done: r.try_get(5)?,
            total: r.try_get(6)?,
        },
        checkpoint: opt_json_text(r, 7)?,
        result: opt_json_text(r, 8)?,
        problem: opt_json_text(r, 9)?,
        attempts: r.try_get(10)?,
        owner: r.try_get(11)?,
        lease_until: r.try_get(12)?,
        input_chunks: r.try_get(13)?,
        input_bytes: r.try_get(14)?,
        result_chunks: r.try_get(15)?,
        result_bytes: r.try_get(16)?,
        created_at: r.try_get(17)?,
        queued_at: r.try_get(18)?,
        started_at: r.try_get(19)?,
        finished_at: r.try_get(20)?,
        result_expires_at: r.try_get(21)?,
    })
}
pub(super) const JOB_COLS: &str = "tenant_id, id, kind, status, params, progress_done, progress_total, checkpoint, \
    result, problem, attempts, owner, lease_until, input_chunks, input_bytes, result_chunks, result_bytes, \
    created_at, queued_at, started_at, finished_at, result_expires_at";
