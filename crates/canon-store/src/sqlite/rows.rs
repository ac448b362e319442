//! What every domain file of the SQLite backend shares: row mapping and
//! column lists, error mapping, tombstones, expectations and keyset paging.

use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, ToSql, params};
use serde_json::Value;

use crate::model::*;
use crate::{StoreError, StoreResult};

pub(super) fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation)
}

/// Maps a failed insert to a conflict on `pointer` when a constraint fired.
pub(super) fn conflict_or_internal(e: rusqlite::Error, pointer: &str) -> StoreError {
    if is_constraint(&e) {
        StoreError::Conflict {
            pointer: pointer.to_owned(),
        }
    } else {
        db_error(e)
    }
}

/// Maps a SQLite failure to a store error: the database cannot be reached
/// for now (a lock held elsewhere past the busy timeout, a file that cannot
/// be opened, a full disk, an I/O error, a failed lock protocol) is
/// [`StoreError::Unavailable`] (503, retry); anything else is internal.
pub(super) fn db_error(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                ErrorCode::DatabaseBusy
                    | ErrorCode::DatabaseLocked
                    | ErrorCode::CannotOpen
                    | ErrorCode::DiskFull
                    | ErrorCode::SystemIoFailure
                    | ErrorCode::FileLockingProtocolFailed
            ) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Internal(e.to_string()),
    }
}

pub(super) fn retention_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
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

pub(super) fn put_tombstone(
    conn: &Connection,
    kind: &str,
    scope: &str,
    key: &str,
    retention: Duration,
) -> rusqlite::Result<()> {
    let now = now_millis();
    exec(
        conn,
        "INSERT INTO tombstones (kind, scope, key, deleted_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (kind, scope, key) DO UPDATE SET deleted_at = excluded.deleted_at, expires_at = excluded.expires_at",
        params![kind, scope, key, now, now.saturating_add(retention_ms(retention))],
    )?;
    Ok(())
}

pub(super) fn clear_tombstone(conn: &Connection, kind: &str, scope: &str, key: &str) -> rusqlite::Result<()> {
    exec(
        conn,
        "DELETE FROM tombstones WHERE kind = ?1 AND scope = ?2 AND key = ?3",
        params![kind, scope, key],
    )?;
    Ok(())
}

/// `Gone` when a live tombstone exists, else `Missing`. Only for writes,
/// inside the writer's transaction (see [`lookup`] for reads).
pub(super) fn absent<T>(conn: &Connection, kind: &str, scope: &str, key: &str) -> StoreResult<Lookup<T>> {
    let live: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM tombstones WHERE kind = ?1 AND scope = ?2 AND key = ?3 AND expires_at > ?4",
            params![kind, scope, key, now_millis()],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_error)?;
    Ok(if live.is_some() { Lookup::Gone } else { Lookup::Missing })
}

/// The error for a write whose target is not there: [`StoreError::Gone`]
/// when its tombstone is live (someone deleted it first), else
/// [`StoreError::Vanished`].
pub(super) fn not_there(conn: &Connection, kind: &str, scope: &str, key: &str) -> StoreError {
    match absent::<()>(conn, kind, scope, key) {
        Ok(Lookup::Gone) => StoreError::Gone,
        Ok(_) => StoreError::Vanished,
        Err(e) => e,
    }
}

/// Fails with [`StoreError::Gone`] when the tenant is being deleted and with
/// [`StoreError::Vanished`] when no tenant has that id. Every write that adds
/// something to a tenant checks it inside its transaction, so nothing is added
/// once the tenant's deletion started (a request that loaded the tenant just
/// before cannot slip a row past the deletion).
pub(super) fn live_tenant(conn: &Connection, tenant_id: &str) -> StoreResult<()> {
    let deleted_at: Option<Option<Millis>> = conn
        .prepare_cached("SELECT deleted_at FROM tenants WHERE id = ?1")
        .and_then(|mut s| s.query_row([tenant_id], |r| r.get(0)).optional())
        .map_err(db_error)?;
    match deleted_at {
        Some(None) => Ok(()),
        Some(Some(_)) => Err(StoreError::Gone),
        None => Err(StoreError::Vanished),
    }
}

pub(super) use crate::model::check_existing;

pub(super) use crate::model::Tombstone;

/// Looks up one thing: `select` selects its row (at most one) with `args`
/// (`?1`..), `map` reads it, and a miss is told `Gone` from `Missing` by
/// `tombstone`.
///
/// The answer comes from one snapshot (docs/decisions.md, "A lookup
/// decides found, gone or missing from one snapshot"). A reader runs
/// outside any transaction, so each statement is its own read transaction
/// and, in WAL mode, its own snapshot: reading the row and then the
/// tombstone in two statements answered `Missing` when a re-create (which
/// removes the tombstone and inserts the row) committed between them.
///
/// A hit is the row's select alone, as fast as it ever was; a miss asks
/// again with one statement reading the row and the tombstone together, and
/// that statement alone decides (a read transaction around both statements
/// would cost every hit its `BEGIN` and `COMMIT`).
pub(super) fn lookup<T>(
    conn: &Connection,
    select: &str,
    args: &[&dyn ToSql],
    map: impl Fn(&Row<'_>) -> rusqlite::Result<T>,
    tombstone: Tombstone<'_>,
) -> StoreResult<Lookup<T>> {
    let hit = conn
        .prepare_cached(select)
        .and_then(|mut s| s.query_row(args, &map).optional())
        .map_err(db_error)?;
    if let Some(t) = hit {
        return Ok(Lookup::Found(t));
    }
    let n = args.len();
    let sql = format!(
        "SELECT found.*, EXISTS (SELECT 1 FROM tombstones WHERE kind = ?{} AND scope = ?{} AND key = ?{} AND expires_at > ?{})
         FROM (SELECT 1) AS one LEFT JOIN (SELECT q.*, 1 AS canon_found FROM ({select}) AS q) AS found ON 1",
        n + 1,
        n + 2,
        n + 3,
        n + 4
    );
    let now = now_millis();
    let mut all = args.to_vec();
    all.extend([&tombstone.kind as &dyn ToSql, &tombstone.scope, &tombstone.key, &now]);
    // Exactly one row: the thing's columns (NULL on a miss), whether it was
    // found, whether its tombstone is live.
    conn.prepare_cached(&sql)
        .and_then(|mut s| {
            s.query_row(&*all, |r| {
                let width = r.as_ref().column_count();
                if r.get::<_, Option<i64>>(width - 2)?.is_some() {
                    map(r).map(Lookup::Found)
                } else if r.get::<_, bool>(width - 1)? {
                    Ok(Lookup::Gone)
                } else {
                    Ok(Lookup::Missing)
                }
            })
        })
        .map_err(db_error)
}

/// Runs a keyset-paginated query: `sql` must select rows with `id > ?` bound
/// last-but-one and `LIMIT ?` bound last, ordered by id.
pub(super) fn page<T>(
    conn: &Connection,
    sql: &str,
    scope: Option<&str>,
    page: &PageRequest,
    map: impl Fn(&Row<'_>) -> rusqlite::Result<T>,
    id_of: impl Fn(&T) -> &str,
) -> StoreResult<Page<T>> {
    let after = page.after.as_ref().map(|c| c.id.as_str()).unwrap_or("");
    let fetch = (page.limit + 1) as i64;
    let mut stmt = conn.prepare_cached(sql).map_err(db_error)?;
    let rows = match scope {
        Some(s) => stmt.query_map(params![s, after, fetch], &map),
        None => stmt.query_map(params![after, fetch], &map),
    }
    .map_err(db_error)?;
    let items = rows
        .map(|r| r.map(|t| (t, None)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_error)?;
    Ok(Page::from_fetched(items, page.limit, id_of))
}

pub(super) fn tenant_row(r: &Row<'_>) -> rusqlite::Result<Tenant> {
    Ok(Tenant {
        id: r.get(0)?,
        name: r.get(1)?,
        version: r.get(2)?,
        created_at: r.get(3)?,
        updated_at: r.get(4)?,
        limits: TenantLimits {
            rate_limit_per_second: r.get(5)?,
            burst: r.get(6)?,
            daily_quota: r.get(7)?,
        },
    })
}
pub(super) const TENANT_COLS: &str =
    "id, name, version, created_at, updated_at, rate_limit_per_second, burst, daily_quota";

pub(super) fn role_from_sql(s: String) -> rusqlite::Result<TenantRole> {
    TenantRole::parse(&s).ok_or_else(|| rusqlite::Error::InvalidColumnType(0, s, rusqlite::types::Type::Text))
}

pub(super) fn user_row(r: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        email: r.get(2)?,
        role: role_from_sql(r.get(3)?)?,
        version: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
    })
}
pub(super) const USER_COLS: &str = "id, tenant_id, email, role, version, created_at, updated_at";

pub(super) fn key_row(r: &Row<'_>) -> rusqlite::Result<ApiKey> {
    Ok(ApiKey {
        id: r.get(0)?,
        user_id: r.get(1)?,
        name: r.get(2)?,
        version: r.get(3)?,
        created_at: r.get(4)?,
        updated_at: r.get(5)?,
    })
}
pub(super) const KEY_COLS: &str = "id, user_id, name, version, created_at, updated_at";

pub(super) fn json_column(r: &Row<'_>, i: usize) -> rusqlite::Result<Value> {
    let s: String = r.get(i)?;
    serde_json::from_str(&s)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e)))
}

pub(super) fn collection_row(r: &Row<'_>) -> rusqlite::Result<Collection> {
    let unique: Value = json_column(r, 4)?;
    Ok(Collection {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        name: r.get(2)?,
        schema: json_column(r, 3)?,
        unique: unique
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default(),
        require_if_match: r.get(5)?,
        version: r.get(6)?,
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
    })
}
pub(super) const COLLECTION_COLS: &str =
    "id, tenant_id, name, schema, unique_fields, require_if_match, version, created_at, updated_at";

pub(super) fn record_row(r: &Row<'_>) -> rusqlite::Result<Record> {
    Ok(Record {
        collection_id: r.get(0)?,
        id: r.get(1)?,
        data: json_column(r, 2)?,
        version: r.get(3)?,
        etag: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
    })
}
/// A record row with its data left as the JSON text it is stored as.
pub(super) fn raw_record_row(r: &Row<'_>) -> rusqlite::Result<RawRecord> {
    Ok(RawRecord {
        id: r.get(1)?,
        data: r.get(2)?,
        version: r.get(3)?,
        etag: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
    })
}
pub(super) const RECORD_COLS: &str = "collection_id, id, data, version, etag, created_at, updated_at";

pub(super) fn lease_row(r: &Row<'_>) -> rusqlite::Result<Lease> {
    Ok(Lease {
        holder: r.get(0)?,
        acquired_at: r.get(1)?,
        expires_at: r.get(2)?,
    })
}

fn opt_json_column(r: &Row<'_>, i: usize) -> rusqlite::Result<Option<Value>> {
    let s: Option<String> = r.get(i)?;
    s.map(|s| {
        serde_json::from_str(&s)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e)))
    })
    .transpose()
}

fn enum_column<T>(r: &Row<'_>, i: usize, parse: impl Fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    let s: String = r.get(i)?;
    parse(&s).ok_or(rusqlite::Error::InvalidColumnType(i, s, rusqlite::types::Type::Text))
}

pub(super) fn job_row(r: &Row<'_>) -> rusqlite::Result<Job> {
    Ok(Job {
        tenant_id: r.get(0)?,
        id: r.get(1)?,
        kind: enum_column(r, 2, JobKind::parse)?,
        status: enum_column(r, 3, JobStatus::parse)?,
        params: json_column(r, 4)?,
        progress: Progress {
            done: r.get(5)?,
            total: r.get(6)?,
        },
        checkpoint: opt_json_column(r, 7)?,
        result: opt_json_column(r, 8)?,
        problem: opt_json_column(r, 9)?,
        attempts: r.get(10)?,
        owner: r.get(11)?,
        lease_until: r.get(12)?,
        input_chunks: r.get(13)?,
        input_bytes: r.get(14)?,
        result_chunks: r.get(15)?,
        result_bytes: r.get(16)?,
        created_at: r.get(17)?,
        queued_at: r.get(18)?,
        started_at: r.get(19)?,
        finished_at: r.get(20)?,
        result_expires_at: r.get(21)?,
    })
}
pub(super) const JOB_COLS: &str = "tenant_id, id, kind, status, params, progress_done, progress_total, checkpoint, \
    result, problem, attempts, owner, lease_until, input_chunks, input_bytes, result_chunks, result_bytes, \
    created_at, queued_at, started_at, finished_at, result_expires_at";

/// Runs `sql` through the connection's statement cache: a statement run
/// for every record of a bulk write is parsed once, not each time
/// (`Connection::execute` prepares anew on every call).
pub(super) fn exec(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}
