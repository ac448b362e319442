//! The embedded SQLite backend.
//!
//! One file, WAL mode, `synchronous=FULL`, writes group-committed by a
//! single writer thread ([`engine`]), reads on a pool of read-only
//! connections. Schema migrations run at open, tracked by `user_version`.

mod engine;

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, params};
use serde_json::Value;

use crate::model::*;
use crate::{ApplyPatch, Store, StoreError, StoreResult};
use engine::Engine;
pub use engine::MAX_BATCH;
use engine::internal;

/// Schema migrations, applied in order; `user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    include_str!("schema.sql"),
    include_str!("schema_v2.sql"),
    include_str!("schema_v3.sql"),
    include_str!("schema_v4.sql"),
];

/// The SQLite store.
pub struct SqliteStore {
    engine: Engine,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: impl AsRef<Path>) -> StoreResult<SqliteStore> {
        let engine = Engine::start(path.as_ref(), 4, migrate)?;
        Ok(SqliteStore { engine })
    }
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let applied: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(internal)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        let tx = conn.transaction().map_err(internal)?;
        tx.execute_batch(sql).map_err(internal)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(internal)?;
        tx.commit().map_err(internal)?;
        tracing::info!(version = i + 1, "applied schema migration");
    }
    Ok(())
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation)
}

/// Maps a failed insert to a conflict on `pointer` when a constraint fired.
fn conflict_or_internal(e: rusqlite::Error, pointer: &str) -> StoreError {
    if is_constraint(&e) {
        StoreError::Conflict {
            pointer: pointer.to_owned(),
        }
    } else {
        db_error(e)
    }
}

fn db_error(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                ErrorCode::DatabaseBusy
                    | ErrorCode::DatabaseLocked
                    | ErrorCode::CannotOpen
                    | ErrorCode::DiskFull
                    | ErrorCode::SystemIoFailure
            ) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Internal(e.to_string()),
    }
}

fn retention_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

/// Tombstone kinds.
mod kind {
    pub const USER: &str = "user";
    pub const API_KEY: &str = "api_key";
    pub const COLLECTION: &str = "collection";
    pub const RECORD: &str = "record";
}

fn put_tombstone(conn: &Connection, kind: &str, scope: &str, key: &str, retention: Duration) -> rusqlite::Result<()> {
    let now = now_millis();
    conn.execute(
        "INSERT INTO tombstones (kind, scope, key, deleted_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (kind, scope, key) DO UPDATE SET deleted_at = excluded.deleted_at, expires_at = excluded.expires_at",
        params![kind, scope, key, now, now.saturating_add(retention_ms(retention))],
    )?;
    Ok(())
}

fn clear_tombstone(conn: &Connection, kind: &str, scope: &str, key: &str) -> rusqlite::Result<()> {
    conn.execute(
        "DELETE FROM tombstones WHERE kind = ?1 AND scope = ?2 AND key = ?3",
        params![kind, scope, key],
    )?;
    Ok(())
}

/// `Gone` when a live tombstone exists, else `Missing`.
fn absent<T>(conn: &Connection, kind: &str, scope: &str, key: &str) -> StoreResult<Lookup<T>> {
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
fn not_there(conn: &Connection, kind: &str, scope: &str, key: &str) -> StoreError {
    match absent::<()>(conn, kind, scope, key) {
        Ok(Lookup::Gone) => StoreError::Gone,
        Ok(_) => StoreError::Vanished,
        Err(e) => e,
    }
}

/// Replaces `current`'s data: the next version, a new tag, now as its
/// modification time. The caller re-indexes its unique values.
fn replace_record(conn: &Connection, current: Record, data: Value) -> StoreResult<Record> {
    let r = Record {
        data,
        version: current.version + 1,
        etag: new_etag(),
        updated_at: now_millis(),
        ..current
    };
    conn.execute(
        "UPDATE records SET data = ?1, version = ?2, etag = ?3, updated_at = ?4 WHERE collection_id = ?5 AND id = ?6",
        params![
            r.data.to_string(),
            r.version,
            r.etag,
            r.updated_at,
            r.collection_id,
            r.id
        ],
    )
    .map_err(db_error)?;
    Ok(r)
}

/// Checks `expect` against an existing entity at `version` (with `etag`,
/// for records).
fn check_existing(expect: &Expect, version: i64, etag: Option<&str>) -> StoreResult<()> {
    let holds = match expect {
        Expect::Anything => true,
        Expect::Etag(tag) => etag == Some(tag.as_str()),
        Expect::Version(v) => *v == version,
        Expect::Absent => false,
    };
    if holds {
        Ok(())
    } else {
        Err(StoreError::ExpectationFailed)
    }
}

fn found_or_tombstone<T>(
    conn: &Connection,
    row: Option<T>,
    kind: &str,
    scope: &str,
    key: &str,
) -> StoreResult<Lookup<T>> {
    match row {
        Some(t) => Ok(Lookup::Found(t)),
        None => absent(conn, kind, scope, key),
    }
}

/// Runs a keyset-paginated query: `sql` must select rows with `id > ?` bound
/// last-but-one and `LIMIT ?` bound last, ordered by id.
fn page<T>(
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
    let mut items = rows.collect::<Result<Vec<T>, _>>().map_err(db_error)?;
    let next = if items.len() > page.limit {
        items.truncate(page.limit);
        items.last().map(|t| Cursor {
            id: id_of(t).to_owned(),
            sort_value: None,
        })
    } else {
        None
    };
    Ok(Page { items, next })
}

fn tenant_row(r: &Row<'_>) -> rusqlite::Result<Tenant> {
    Ok(Tenant {
        id: r.get(0)?,
        name: r.get(1)?,
        version: r.get(2)?,
        created_at: r.get(3)?,
        updated_at: r.get(4)?,
    })
}
const TENANT_COLS: &str = "id, name, version, created_at, updated_at";

fn role_from_sql(s: String) -> rusqlite::Result<TenantRole> {
    TenantRole::parse(&s).ok_or_else(|| rusqlite::Error::InvalidColumnType(0, s, rusqlite::types::Type::Text))
}

fn user_row(r: &Row<'_>) -> rusqlite::Result<User> {
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
const USER_COLS: &str = "id, tenant_id, email, role, version, created_at, updated_at";

fn load_user(conn: &Connection, tenant_id: &str, id: &str) -> StoreResult<Option<User>> {
    conn.prepare_cached(&format!(
        "SELECT {USER_COLS} FROM users WHERE tenant_id = ?1 AND id = ?2"
    ))
    .and_then(|mut s| s.query_row([tenant_id, id], user_row).optional())
    .map_err(db_error)
}

/// Loads the user a change addresses and checks `expect` against it; a
/// change that takes the admin role from the tenant's last admin (`stays_admin`
/// false) is [`StoreError::LastAdmin`].
fn user_to_change(
    conn: &Connection,
    tenant_id: &str,
    id: &str,
    expect: &Expect,
    stays_admin: bool,
) -> StoreResult<User> {
    let Some(user) = load_user(conn, tenant_id, id)? else {
        return Err(not_there(conn, kind::USER, tenant_id, id));
    };
    check_existing(expect, user.version, None)?;
    if user.role == TenantRole::Admin && !stays_admin {
        let others: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM users WHERE tenant_id = ?1 AND role = 'admin' AND id <> ?2",
                [tenant_id, id],
                |r| r.get(0),
            )
            .map_err(db_error)?;
        if others == 0 {
            return Err(StoreError::LastAdmin);
        }
    }
    Ok(user)
}

fn key_row(r: &Row<'_>) -> rusqlite::Result<ApiKey> {
    Ok(ApiKey {
        id: r.get(0)?,
        user_id: r.get(1)?,
        name: r.get(2)?,
        version: r.get(3)?,
        created_at: r.get(4)?,
        updated_at: r.get(5)?,
    })
}
const KEY_COLS: &str = "id, user_id, name, version, created_at, updated_at";

fn json_column(r: &Row<'_>, i: usize) -> rusqlite::Result<Value> {
    let s: String = r.get(i)?;
    serde_json::from_str(&s)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e)))
}

fn collection_row(r: &Row<'_>) -> rusqlite::Result<Collection> {
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
const COLLECTION_COLS: &str =
    "id, tenant_id, name, schema, unique_fields, require_if_match, version, created_at, updated_at";

fn record_row(r: &Row<'_>) -> rusqlite::Result<Record> {
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
const RECORD_COLS: &str = "collection_id, id, data, version, etag, created_at, updated_at";

fn new_etag() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..20].to_owned()
}

fn load_record(conn: &Connection, collection_id: &str, id: &str) -> StoreResult<Option<Record>> {
    conn.prepare_cached(&format!(
        "SELECT {RECORD_COLS} FROM records WHERE collection_id = ?1 AND id = ?2"
    ))
    .and_then(|mut s| s.query_row(params![collection_id, id], record_row).optional())
    .map_err(db_error)
}

/// Inserts a new record row; a taken id is a conflict on `/id`.
fn insert_record(conn: &Connection, r: &Record) -> StoreResult<()> {
    conn.prepare_cached(&format!(
        "INSERT INTO records ({RECORD_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
    ))
    .and_then(|mut s| {
        s.execute(params![
            r.collection_id,
            r.id,
            r.data.to_string(),
            r.version,
            r.etag,
            r.created_at,
            r.updated_at
        ])
    })
    .map_err(|e| conflict_or_internal(e, "/id"))?;
    Ok(())
}

fn lease_row(r: &Row<'_>) -> rusqlite::Result<Lease> {
    Ok(Lease {
        holder: r.get(0)?,
        acquired_at: r.get(1)?,
        expires_at: r.get(2)?,
    })
}

/// The record's lease, unless it expired.
fn live_lease(conn: &Connection, collection_id: &str, record_id: &str) -> StoreResult<Option<Lease>> {
    conn.prepare_cached(
        "SELECT holder, acquired_at, expires_at FROM locks
         WHERE collection_id = ?1 AND record_id = ?2 AND expires_at > ?3",
    )
    .and_then(|mut s| {
        s.query_row(params![collection_id, record_id, now_millis()], lease_row)
            .optional()
    })
    .map_err(db_error)
}

/// Fails with [`StoreError::Locked`] when someone other than `actor` holds
/// a live lease on the record.
fn check_lease(conn: &Connection, collection_id: &str, record_id: &str, actor: &str) -> StoreResult<()> {
    match live_lease(conn, collection_id, record_id)? {
        Some(lease) if lease.holder != actor => Err(StoreError::Locked(lease)),
        _ => Ok(()),
    }
}

fn check_expectation(current: Option<&Record>, expect: &Expect) -> StoreResult<()> {
    match current {
        Some(r) => check_existing(expect, r.version, Some(&r.etag)),
        None if matches!(expect, Expect::Anything | Expect::Absent) => Ok(()),
        None => Err(StoreError::ExpectationFailed),
    }
}

/// Rewrites a record's unique-value rows; the first taken value names the field.
fn index_unique(conn: &Connection, collection: &Collection, id: &str, data: &Value) -> StoreResult<()> {
    if collection.unique.is_empty() {
        return Ok(());
    }
    conn.execute(
        "DELETE FROM unique_values WHERE collection_id = ?1 AND record_id = ?2",
        params![collection.id, id],
    )
    .map_err(db_error)?;
    for field in &collection.unique {
        let Some(value) = data.get(field).filter(|v| !v.is_null()) else {
            continue;
        };
        conn.execute(
            "INSERT INTO unique_values (collection_id, field, value, record_id) VALUES (?1, ?2, ?3, ?4)",
            params![collection.id, field, value.to_string(), id],
        )
        .map_err(|e| conflict_or_internal(e, &format!("/data/{field}")))?;
    }
    Ok(())
}

fn drop_alias(conn: &Connection, tenant_id: &str, name: &str) -> StoreResult<()> {
    conn.execute(
        "DELETE FROM collection_aliases WHERE tenant_id = ?1 AND name = ?2",
        [tenant_id, name],
    )
    .map_err(db_error)?;
    Ok(())
}

fn load_collection(conn: &Connection, tenant_id: &str, name: &str) -> StoreResult<Option<Collection>> {
    conn.prepare_cached(&format!(
        "SELECT {COLLECTION_COLS} FROM collections WHERE tenant_id = ?1 AND name = ?2"
    ))
    .and_then(|mut s| s.query_row([tenant_id, name], collection_row).optional())
    .map_err(db_error)
}

/// Applies `changes` to the collection called `name`, inside the writer's
/// transaction.
fn update_collection(
    conn: &Connection,
    tenant_id: &str,
    name: &str,
    changes: CollectionChanges,
    expect: &Expect,
) -> StoreResult<Collection> {
    let Some(current) = load_collection(conn, tenant_id, name)? else {
        return Err(not_there(conn, kind::COLLECTION, tenant_id, name));
    };
    check_existing(expect, current.version, None)?;
    let mut next = current.clone();
    if let Some(new_name) = changes.name.filter(|n| *n != current.name) {
        if load_collection(conn, tenant_id, &new_name)?.is_some() {
            return Err(StoreError::Conflict {
                pointer: "/name".into(),
            });
        }
        drop_alias(conn, tenant_id, &new_name)?;
        clear_tombstone(conn, kind::COLLECTION, tenant_id, &new_name).map_err(db_error)?;
        conn.execute(
            "INSERT INTO collection_aliases (tenant_id, name, collection_id, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![tenant_id, current.name, current.id, now_millis()],
        )
        .map_err(db_error)?;
        next.name = new_name;
    }
    if let Some(schema) = changes.schema {
        next.schema = schema;
    }
    if let Some(flag) = changes.require_if_match {
        next.require_if_match = flag;
    }
    let reindex = changes.unique.as_ref().is_some_and(|u| *u != current.unique);
    if let Some(unique) = changes.unique {
        next.unique = unique;
    }
    next.version = current.version + 1;
    next.updated_at = now_millis();
    conn.execute(
        "UPDATE collections SET name = ?1, schema = ?2, unique_fields = ?3, require_if_match = ?4, version = ?5, updated_at = ?6 WHERE id = ?7",
        params![
            next.name,
            next.schema.to_string(),
            Value::from(next.unique.clone()).to_string(),
            next.require_if_match,
            next.version,
            next.updated_at,
            next.id
        ],
    )
    .map_err(db_error)?;
    if reindex {
        conn.execute("DELETE FROM unique_values WHERE collection_id = ?1", [&next.id])
            .map_err(db_error)?;
        let mut stmt = conn
            .prepare(&format!("SELECT {RECORD_COLS} FROM records WHERE collection_id = ?1"))
            .map_err(db_error)?;
        let records = stmt
            .query_map([&next.id], record_row)
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(db_error)?;
        for r in &records {
            index_unique(conn, &next, &r.id, &r.data)?;
        }
    }
    Ok(next)
}

fn collection_exists(conn: &Connection, collection_id: &str) -> StoreResult<()> {
    let found: Option<i64> = conn
        .query_row("SELECT 1 FROM collections WHERE id = ?1", [collection_id], |r| r.get(0))
        .optional()
        .map_err(db_error)?;
    found.map(|_| ()).ok_or(StoreError::Vanished)
}

/// Converts a JSON scalar to the SQL value `json_extract` yields for it.
fn sql_scalar(v: &Value) -> SqlValue {
    match v {
        Value::Null => SqlValue::Null,
        Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Value::Number(n) => n
            .as_i64()
            .map(SqlValue::Integer)
            .unwrap_or_else(|| SqlValue::Real(n.as_f64().unwrap_or(0.0))),
        Value::String(s) => SqlValue::Text(s.clone()),
        other => SqlValue::Text(other.to_string()),
    }
}

fn json_of_sql(v: SqlValue) -> Value {
    match v {
        SqlValue::Null => Value::Null,
        SqlValue::Integer(i) => Value::from(i),
        SqlValue::Real(f) => Value::from(f),
        SqlValue::Text(s) => Value::String(s),
        SqlValue::Blob(_) => Value::Null,
    }
}

/// `json_type` names matching a JSON scalar, for type-exact filters.
fn json_types(v: &Value) -> &'static [&'static str] {
    match v {
        Value::Null => &["null"],
        Value::Bool(true) => &["true"],
        Value::Bool(false) => &["false"],
        Value::Number(_) => &["integer", "real"],
        Value::String(_) => &["text"],
        _ => &["object", "array"],
    }
}

/// Text sort values longer than this many characters are compared by
/// [`sort_key`]: their prefix, then a digest of the whole value.
pub const SORT_PREFIX_CHARS: usize = 256;

/// The key a record list sorts by: the value itself, except that text longer
/// than [`SORT_PREFIX_CHARS`] characters becomes its first
/// [`SORT_PREFIX_CHARS`] characters, a `#` and a SHA-256 digest (hex) of the
/// whole text. Truncation by characters keeps the order of keys the order of
/// the values (SQLite compares text by UTF-8 bytes, i.e. code points), except
/// among long values that share their prefix: those are ordered by digest, so
/// equal values stay together. The key is what cursors carry, so a cursor
/// stays small however long the sorted field is, and still names an exact
/// position.
fn sort_key(v: SqlValue) -> SqlValue {
    use sha2::Digest as _;
    match v {
        SqlValue::Text(s) if s.chars().nth(SORT_PREFIX_CHARS).is_some() => {
            let prefix: String = s.chars().take(SORT_PREFIX_CHARS).collect();
            let digest = sha2::Sha256::digest(s.as_bytes());
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            SqlValue::Text(format!("{prefix}#{hex}"))
        }
        other => other,
    }
}

/// Registers Canon's SQL functions (`canon_sort_key`) on a connection.
pub(crate) fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        "canon_sort_key",
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| Ok(sort_key(ctx.get::<SqlValue>(0)?)),
    )
}

fn list_records(conn: &Connection, collection_id: &str, q: &RecordQuery) -> StoreResult<Page<Record>> {
    let mut sql = format!("SELECT {RECORD_COLS}");
    let mut args: Vec<SqlValue> = vec![SqlValue::Text(collection_id.to_owned())];
    let sort = match &q.sort {
        SortOrder::Id => None,
        SortOrder::Field { field, descending } => Some((format!("$.\"{field}\""), *descending)),
    };
    if let Some((path, _)) = &sort {
        args.push(SqlValue::Text(path.clone()));
        sql.push_str(", canon_sort_key(json_extract(data, ?2)) AS sort_value");
    }
    sql.push_str(" FROM records WHERE collection_id = ?1");
    for (field, value) in &q.filters {
        args.push(SqlValue::Text(format!("$.\"{field}\"")));
        let p = args.len();
        let types = json_types(value)
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        if value.is_null() {
            sql.push_str(&format!(" AND json_type(data, ?{p}) = 'null'"));
        } else if value.is_number() {
            // Numbers compare by their JSON text, which is exact for every
            // i64, u64 and f64 (json_extract would turn large integers into
            // REALs). Canon stores numbers canonically (1.0 as 1, -0 as 0)
            // and passes canonical filter values, so equal text is equal value.
            args.push(SqlValue::Text(value.to_string()));
            sql.push_str(&format!(
                " AND json_type(data, ?{p}) IN ({types}) AND (data -> ?{p}) = ?{}",
                p + 1
            ));
        } else {
            args.push(sql_scalar(value));
            sql.push_str(&format!(
                " AND json_type(data, ?{p}) IN ({types}) AND json_extract(data, ?{p}) = ?{}",
                p + 1
            ));
        }
    }
    if let Some(after) = &q.page.after {
        args.push(SqlValue::Text(after.id.clone()));
        let id_p = args.len();
        match (&sort, &after.sort_value) {
            (None, _) => sql.push_str(&format!(" AND id > ?{id_p}")),
            // Missing values sort last; after one, only other missing values follow.
            (Some(_), None | Some(Value::Null)) => {
                sql.push_str(&format!(" AND sort_value IS NULL AND id > ?{id_p}"));
            }
            (Some((_, desc)), Some(v)) => {
                args.push(sql_scalar(v));
                let v_p = args.len();
                let cmp = if *desc { "<" } else { ">" };
                sql.push_str(&format!(
                    " AND (sort_value IS NULL OR sort_value {cmp} ?{v_p} OR (sort_value = ?{v_p} AND id > ?{id_p}))"
                ));
            }
        }
    }
    match &sort {
        None => sql.push_str(" ORDER BY id"),
        Some((_, desc)) => sql.push_str(&format!(
            " ORDER BY sort_value IS NULL, sort_value {}, id",
            if *desc { "DESC" } else { "ASC" }
        )),
    }
    args.push(SqlValue::Integer((q.page.limit + 1) as i64));
    sql.push_str(&format!(" LIMIT ?{}", args.len()));

    let mut stmt = conn.prepare_cached(&sql).map_err(db_error)?;
    let sorted = sort.is_some();
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args.iter()), |r| {
            let sort_value = if sorted {
                Some(json_of_sql(r.get::<_, SqlValue>(7)?))
            } else {
                None
            };
            Ok((record_row(r)?, sort_value))
        })
        .map_err(db_error)?;
    let mut items = rows.collect::<Result<Vec<_>, _>>().map_err(db_error)?;
    let next = if items.len() > q.page.limit {
        items.truncate(q.page.limit);
        items.last().map(|(r, v)| Cursor {
            id: r.id.clone(),
            sort_value: v.clone(),
        })
    } else {
        None
    };
    Ok(Page {
        items: items.into_iter().map(|(r, _)| r).collect(),
        next,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        self.engine
            .read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(db_error))
            .await
    }

    async fn bootstrap_operator(&self, token_hash: &str) -> StoreResult<bool> {
        let hash = token_hash.to_owned();
        self.engine
            .write(move |c| {
                let exists: Option<i64> = c
                    .query_row("SELECT 1 FROM api_keys WHERE tenant_id IS NULL LIMIT 1", [], |r| r.get(0))
                    .optional()
                    .map_err(db_error)?;
                if exists.is_some() {
                    return Ok(false);
                }
                c.execute(
                    "INSERT INTO api_keys (id, tenant_id, user_id, name, token_hash, created_at) VALUES (?1, NULL, NULL, 'operator', ?2, ?3)",
                    params![new_id(), hash, now_millis()],
                )
                .map_err(db_error)?;
                Ok(true)
            })
            .await
    }

    async fn key_owner(&self, token_hash: &str) -> StoreResult<Option<KeyOwner>> {
        let hash = token_hash.to_owned();
        self.engine
            .read(move |c| {
                c.prepare_cached(
                    "SELECT k.id, k.token_hash, t.name, u.id, u.role FROM api_keys k
                     LEFT JOIN users u ON u.id = k.user_id
                     LEFT JOIN tenants t ON t.id = k.tenant_id
                     WHERE k.token_hash = ?1",
                )
                .and_then(|mut s| {
                    s.query_row([hash], |r| {
                        let key_id: String = r.get(0)?;
                        let token_hash: String = r.get(1)?;
                        let tenant: Option<String> = r.get(2)?;
                        Ok(match tenant {
                            None => KeyOwner::Operator { key_id, token_hash },
                            Some(tenant) => KeyOwner::Member {
                                key_id,
                                token_hash,
                                tenant,
                                user_id: r.get(3)?,
                                role: role_from_sql(r.get(4)?)?,
                            },
                        })
                    })
                    .optional()
                })
                .map_err(db_error)
            })
            .await
    }

    async fn create_tenant(&self, name: &str) -> StoreResult<Tenant> {
        let name = name.to_owned();
        self.engine
            .write(move |c| {
                let now = now_millis();
                let t = Tenant {
                    id: new_id(),
                    name,
                    version: 1,
                    created_at: now,
                    updated_at: now,
                };
                c.execute(
                    &format!("INSERT INTO tenants ({TENANT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
                    params![t.id, t.name, t.version, t.created_at, t.updated_at],
                )
                .map_err(|e| conflict_or_internal(e, "/name"))?;
                Ok(t)
            })
            .await
    }

    async fn tenant(&self, name: &str) -> StoreResult<Lookup<Tenant>> {
        let name = name.to_owned();
        self.engine
            .read(move |c| {
                let t = c
                    .prepare_cached(&format!("SELECT {TENANT_COLS} FROM tenants WHERE name = ?1"))
                    .and_then(|mut s| s.query_row([&name], tenant_row).optional())
                    .map_err(db_error)?;
                Ok(t.map_or(Lookup::Missing, Lookup::Found))
            })
            .await
    }

    async fn list_tenants(&self, p: PageRequest) -> StoreResult<Page<Tenant>> {
        self.engine
            .read(move |c| {
                page(
                    c,
                    &format!("SELECT {TENANT_COLS} FROM tenants WHERE id > ?1 ORDER BY id LIMIT ?2"),
                    None,
                    &p,
                    tenant_row,
                    |t| &t.id,
                )
            })
            .await
    }

    async fn create_user(&self, tenant_id: &str, email: &str, role: TenantRole) -> StoreResult<User> {
        let (tenant_id, email) = (tenant_id.to_owned(), email.to_owned());
        self.engine
            .write(move |c| {
                let now = now_millis();
                let u = User {
                    id: new_id(),
                    tenant_id,
                    email,
                    role,
                    version: 1,
                    created_at: now,
                    updated_at: now,
                };
                c.execute(
                    &format!("INSERT INTO users ({USER_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                    params![
                        u.id,
                        u.tenant_id,
                        u.email,
                        u.role.as_str(),
                        u.version,
                        u.created_at,
                        u.updated_at
                    ],
                )
                .map_err(|e| conflict_or_internal(e, "/email"))?;
                Ok(u)
            })
            .await
    }

    async fn user(&self, tenant_id: &str, id: &str) -> StoreResult<Lookup<User>> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.to_owned());
        self.engine
            .read(move |c| {
                let u = load_user(c, &tenant_id, &id)?;
                found_or_tombstone(c, u, kind::USER, &tenant_id, &id)
            })
            .await
    }

    async fn list_users(&self, tenant_id: &str, p: PageRequest) -> StoreResult<Page<User>> {
        let tenant_id = tenant_id.to_owned();
        self.engine
            .read(move |c| {
                page(
                    c,
                    &format!("SELECT {USER_COLS} FROM users WHERE tenant_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3"),
                    Some(&tenant_id),
                    &p,
                    user_row,
                    |u| &u.id,
                )
            })
            .await
    }

    async fn set_user_role(&self, tenant_id: &str, id: &str, role: TenantRole, expect: Expect) -> StoreResult<User> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.to_owned());
        self.engine
            .write(move |c| {
                let current = user_to_change(c, &tenant_id, &id, &expect, role == TenantRole::Admin)?;
                let u = User {
                    role,
                    version: current.version + 1,
                    updated_at: now_millis(),
                    ..current
                };
                c.execute(
                    "UPDATE users SET role = ?1, version = ?2, updated_at = ?3 WHERE tenant_id = ?4 AND id = ?5",
                    params![u.role.as_str(), u.version, u.updated_at, tenant_id, id],
                )
                .map_err(db_error)?;
                Ok(u)
            })
            .await
    }

    async fn delete_user(&self, tenant_id: &str, id: &str, expect: Expect, retention: Duration) -> StoreResult<()> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.to_owned());
        self.engine
            .write(move |c| {
                user_to_change(c, &tenant_id, &id, &expect, false)?;
                c.execute("DELETE FROM api_keys WHERE user_id = ?1", [&id])
                    .map_err(db_error)?;
                c.execute("DELETE FROM users WHERE tenant_id = ?1 AND id = ?2", [&tenant_id, &id])
                    .map_err(db_error)?;
                put_tombstone(c, kind::USER, &tenant_id, &id, retention).map_err(db_error)?;
                Ok(())
            })
            .await
    }

    async fn create_api_key(
        &self,
        tenant_id: &str,
        user_id: &str,
        name: &str,
        token_hash: &str,
    ) -> StoreResult<ApiKey> {
        let (tenant_id, user_id, name, hash) = (
            tenant_id.to_owned(),
            user_id.to_owned(),
            name.to_owned(),
            token_hash.to_owned(),
        );
        self.engine
            .write(move |c| {
                let exists: Option<i64> = c
                    .query_row(
                        "SELECT 1 FROM users WHERE tenant_id = ?1 AND id = ?2",
                        [&tenant_id, &user_id],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(db_error)?;
                if exists.is_none() {
                    return Err(StoreError::Vanished);
                }
                let now = now_millis();
                let k = ApiKey {
                    id: new_id(),
                    user_id: Some(user_id),
                    name,
                    version: 1,
                    created_at: now,
                    updated_at: now,
                };
                c.execute(
                    "INSERT INTO api_keys (id, tenant_id, user_id, name, token_hash, version, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        k.id,
                        tenant_id,
                        k.user_id,
                        k.name,
                        hash,
                        k.version,
                        k.created_at,
                        k.updated_at
                    ],
                )
                .map_err(db_error)?;
                Ok(k)
            })
            .await
    }

    async fn api_key(&self, user_id: &str, id: &str) -> StoreResult<Lookup<ApiKey>> {
        let (user_id, id) = (user_id.to_owned(), id.to_owned());
        self.engine
            .read(move |c| {
                let k = c
                    .prepare_cached(&format!(
                        "SELECT {KEY_COLS} FROM api_keys WHERE user_id = ?1 AND id = ?2"
                    ))
                    .and_then(|mut s| s.query_row([&user_id, &id], key_row).optional())
                    .map_err(db_error)?;
                found_or_tombstone(c, k, kind::API_KEY, &user_id, &id)
            })
            .await
    }

    async fn list_api_keys(&self, user_id: &str, p: PageRequest) -> StoreResult<Page<ApiKey>> {
        let user_id = user_id.to_owned();
        self.engine
            .read(move |c| {
                page(
                    c,
                    &format!("SELECT {KEY_COLS} FROM api_keys WHERE user_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3"),
                    Some(&user_id),
                    &p,
                    key_row,
                    |k| &k.id,
                )
            })
            .await
    }

    async fn revoke_api_key(&self, user_id: &str, id: &str, expect: Expect, retention: Duration) -> StoreResult<()> {
        let (user_id, id) = (user_id.to_owned(), id.to_owned());
        self.engine
            .write(move |c| {
                let version: Option<i64> = c
                    .query_row(
                        "SELECT version FROM api_keys WHERE user_id = ?1 AND id = ?2",
                        [&user_id, &id],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(db_error)?;
                let Some(version) = version else {
                    return Err(not_there(c, kind::API_KEY, &user_id, &id));
                };
                check_existing(&expect, version, None)?;
                c.execute("DELETE FROM api_keys WHERE user_id = ?1 AND id = ?2", [&user_id, &id])
                    .map_err(db_error)?;
                put_tombstone(c, kind::API_KEY, &user_id, &id, retention).map_err(db_error)?;
                Ok(())
            })
            .await
    }

    async fn create_collection(&self, tenant_id: &str, new: NewCollection) -> StoreResult<Collection> {
        let tenant_id = tenant_id.to_owned();
        self.engine
            .write(move |c| {
                let now = now_millis();
                let col = Collection {
                    id: new_id(),
                    tenant_id,
                    name: new.name,
                    schema: new.schema,
                    unique: new.unique,
                    require_if_match: new.require_if_match,
                    version: 1,
                    created_at: now,
                    updated_at: now,
                };
                c.execute(
                    &format!("INSERT INTO collections ({COLLECTION_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
                    params![
                        col.id,
                        col.tenant_id,
                        col.name,
                        col.schema.to_string(),
                        Value::from(col.unique.clone()).to_string(),
                        col.require_if_match,
                        col.version,
                        col.created_at,
                        col.updated_at
                    ],
                )
                .map_err(|e| conflict_or_internal(e, "/name"))?;
                clear_tombstone(c, kind::COLLECTION, &col.tenant_id, &col.name).map_err(db_error)?;
                // A new collection under an old name ends that name's redirect.
                drop_alias(c, &col.tenant_id, &col.name)?;
                Ok(col)
            })
            .await
    }

    async fn collection(&self, tenant_id: &str, name: &str) -> StoreResult<Lookup<Collection>> {
        let (tenant_id, name) = (tenant_id.to_owned(), name.to_owned());
        self.engine
            .read(move |c| {
                let col = load_collection(c, &tenant_id, &name)?;
                found_or_tombstone(c, col, kind::COLLECTION, &tenant_id, &name)
            })
            .await
    }

    async fn list_collections(&self, tenant_id: &str, p: PageRequest) -> StoreResult<Page<Collection>> {
        let tenant_id = tenant_id.to_owned();
        self.engine
            .read(move |c| {
                page(
                    c,
                    &format!(
                        "SELECT {COLLECTION_COLS} FROM collections WHERE tenant_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
                    ),
                    Some(&tenant_id),
                    &p,
                    collection_row,
                    |col| &col.id,
                )
            })
            .await
    }

    async fn delete_collection(
        &self,
        tenant_id: &str,
        name: &str,
        expect: Expect,
        retention: Duration,
    ) -> StoreResult<()> {
        let (tenant_id, name) = (tenant_id.to_owned(), name.to_owned());
        self.engine
            .write(move |c| {
                let Some(current) = load_collection(c, &tenant_id, &name)? else {
                    return Err(not_there(c, kind::COLLECTION, &tenant_id, &name));
                };
                check_existing(&expect, current.version, None)?;
                let id = current.id;
                let has_records: Option<i64> = c
                    .query_row("SELECT 1 FROM records WHERE collection_id = ?1 LIMIT 1", [&id], |r| {
                        r.get(0)
                    })
                    .optional()
                    .map_err(db_error)?;
                if has_records.is_some() {
                    return Err(StoreError::NotEmpty);
                }
                c.execute(
                    "DELETE FROM tombstones WHERE kind = ?1 AND scope = ?2",
                    [kind::RECORD, &id],
                )
                .map_err(db_error)?;
                c.execute("DELETE FROM collection_aliases WHERE collection_id = ?1", [&id])
                    .map_err(db_error)?;
                c.execute("DELETE FROM locks WHERE collection_id = ?1", [&id])
                    .map_err(db_error)?;
                c.execute("DELETE FROM collections WHERE id = ?1", [&id])
                    .map_err(db_error)?;
                put_tombstone(c, kind::COLLECTION, &tenant_id, &name, retention).map_err(db_error)?;
                Ok(())
            })
            .await
    }

    async fn update_collection(
        &self,
        tenant_id: &str,
        name: &str,
        changes: CollectionChanges,
        expect: Expect,
    ) -> StoreResult<Collection> {
        let (tenant_id, name) = (tenant_id.to_owned(), name.to_owned());
        self.engine
            .write(move |c| update_collection(c, &tenant_id, &name, changes, &expect))
            .await
    }

    async fn collection_alias(&self, tenant_id: &str, name: &str) -> StoreResult<Option<String>> {
        let (tenant_id, name) = (tenant_id.to_owned(), name.to_owned());
        self.engine
            .read(move |c| {
                c.prepare_cached(
                    "SELECT c.name FROM collection_aliases a JOIN collections c ON c.id = a.collection_id
                     WHERE a.tenant_id = ?1 AND a.name = ?2",
                )
                .and_then(|mut s| s.query_row([&tenant_id, &name], |r| r.get(0)).optional())
                .map_err(db_error)
            })
            .await
    }

    async fn create_record(&self, collection: &Collection, data: Value) -> StoreResult<Record> {
        let collection = collection.clone();
        self.engine
            .write(move |c| {
                collection_exists(c, &collection.id)?;
                let now = now_millis();
                let r = Record {
                    id: new_id(),
                    collection_id: collection.id.clone(),
                    data,
                    version: 1,
                    etag: new_etag(),
                    created_at: now,
                    updated_at: now,
                };
                insert_record(c, &r)?;
                index_unique(c, &collection, &r.id, &r.data)?;
                Ok(r)
            })
            .await
    }

    async fn record(&self, collection_id: &str, id: &str) -> StoreResult<Lookup<Record>> {
        let (collection_id, id) = (collection_id.to_owned(), id.to_owned());
        self.engine
            .read(move |c| {
                let r = load_record(c, &collection_id, &id)?;
                found_or_tombstone(c, r, kind::RECORD, &collection_id, &id)
            })
            .await
    }

    async fn list_records(&self, collection_id: &str, query: RecordQuery) -> StoreResult<Page<Record>> {
        let collection_id = collection_id.to_owned();
        self.engine.read(move |c| list_records(c, &collection_id, &query)).await
    }

    async fn put_record(
        &self,
        collection: &Collection,
        id: &str,
        data: Value,
        expect: Expect,
        actor: &str,
    ) -> StoreResult<(Record, bool)> {
        let (collection, id, actor) = (collection.clone(), id.to_owned(), actor.to_owned());
        self.engine
            .write(move |c| {
                collection_exists(c, &collection.id)?;
                let current = load_record(c, &collection.id, &id)?;
                check_expectation(current.as_ref(), &expect)?;
                check_lease(c, &collection.id, &id, &actor)?;
                let now = now_millis();
                let (record, created) = match current {
                    Some(cur) => (replace_record(c, cur, data)?, false),
                    None => {
                        let r = Record {
                            id,
                            collection_id: collection.id.clone(),
                            data,
                            version: 1,
                            etag: new_etag(),
                            created_at: now,
                            updated_at: now,
                        };
                        insert_record(c, &r)?;
                        clear_tombstone(c, kind::RECORD, &r.collection_id, &r.id).map_err(db_error)?;
                        (r, true)
                    }
                };
                index_unique(c, &collection, &record.id, &record.data)?;
                Ok((record, created))
            })
            .await
    }

    async fn patch_record(
        &self,
        collection: &Collection,
        id: &str,
        apply: ApplyPatch,
        expect: Expect,
        actor: &str,
    ) -> StoreResult<Record> {
        let (collection, id, actor) = (collection.clone(), id.to_owned(), actor.to_owned());
        self.engine
            .write(move |c| {
                collection_exists(c, &collection.id)?;
                let Some(current) = load_record(c, &collection.id, &id)? else {
                    return Err(not_there(c, kind::RECORD, &collection.id, &id));
                };
                check_expectation(Some(&current), &expect)?;
                check_lease(c, &collection.id, &id, &actor)?;
                let data = apply(&current.data).map_err(StoreError::Rejected)?;
                let r = replace_record(c, current, data)?;
                index_unique(c, &collection, &r.id, &r.data)?;
                Ok(r)
            })
            .await
    }

    async fn delete_record(
        &self,
        collection_id: &str,
        id: &str,
        expect: Expect,
        actor: &str,
        retention: Duration,
    ) -> StoreResult<()> {
        let (collection_id, id, actor) = (collection_id.to_owned(), id.to_owned(), actor.to_owned());
        self.engine
            .write(move |c| {
                let Some(current) = load_record(c, &collection_id, &id)? else {
                    return Err(not_there(c, kind::RECORD, &collection_id, &id));
                };
                check_expectation(Some(&current), &expect)?;
                check_lease(c, &collection_id, &id, &actor)?;
                c.execute(
                    "DELETE FROM locks WHERE collection_id = ?1 AND record_id = ?2",
                    [&collection_id, &id],
                )
                .map_err(db_error)?;
                c.execute(
                    "DELETE FROM records WHERE collection_id = ?1 AND id = ?2",
                    [&collection_id, &id],
                )
                .map_err(db_error)?;
                c.execute(
                    "DELETE FROM unique_values WHERE collection_id = ?1 AND record_id = ?2",
                    [&collection_id, &id],
                )
                .map_err(db_error)?;
                put_tombstone(c, kind::RECORD, &collection_id, &id, retention).map_err(db_error)?;
                Ok(())
            })
            .await
    }

    async fn lease(&self, collection_id: &str, record_id: &str) -> StoreResult<Option<Lease>> {
        let (collection_id, record_id) = (collection_id.to_owned(), record_id.to_owned());
        self.engine
            .read(move |c| live_lease(c, &collection_id, &record_id))
            .await
    }

    async fn acquire_lease(
        &self,
        collection_id: &str,
        record_id: &str,
        holder: &str,
        ttl: Duration,
    ) -> StoreResult<(Lease, bool)> {
        let (collection_id, record_id, holder) = (collection_id.to_owned(), record_id.to_owned(), holder.to_owned());
        self.engine
            .write(move |c| {
                if load_record(c, &collection_id, &record_id)?.is_none() {
                    return Err(StoreError::Vanished);
                }
                let now = now_millis();
                let current = live_lease(c, &collection_id, &record_id)?;
                let renewed = match current {
                    Some(lease) if lease.holder != holder => return Err(StoreError::Locked(lease)),
                    Some(lease) => Some(lease),
                    None => None,
                };
                let lease = Lease {
                    holder,
                    acquired_at: renewed.as_ref().map_or(now, |l| l.acquired_at),
                    expires_at: now.saturating_add(retention_ms(ttl)),
                };
                c.execute(
                    "INSERT INTO locks (collection_id, record_id, holder, acquired_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (collection_id, record_id) DO UPDATE SET
                       holder = excluded.holder, acquired_at = excluded.acquired_at, expires_at = excluded.expires_at",
                    params![collection_id, record_id, lease.holder, lease.acquired_at, lease.expires_at],
                )
                .map_err(db_error)?;
                Ok((lease, renewed.is_none()))
            })
            .await
    }

    async fn release_lease(&self, collection_id: &str, record_id: &str, holder: Option<&str>) -> StoreResult<bool> {
        let (collection_id, record_id, holder) = (
            collection_id.to_owned(),
            record_id.to_owned(),
            holder.map(str::to_owned),
        );
        self.engine
            .write(move |c| {
                let Some(lease) = live_lease(c, &collection_id, &record_id)? else {
                    return Ok(false);
                };
                if holder.as_ref().is_some_and(|h| *h != lease.holder) {
                    return Err(StoreError::Locked(lease));
                }
                c.execute(
                    "DELETE FROM locks WHERE collection_id = ?1 AND record_id = ?2",
                    [&collection_id, &record_id],
                )
                .map_err(db_error)?;
                Ok(true)
            })
            .await
    }

    async fn claim_idempotency(
        &self,
        request: &IdempotencyRequest,
        ttl: Duration,
        lease: Duration,
    ) -> StoreResult<IdempotencyClaim> {
        let request = request.clone();
        self.engine
            .write(move |c| {
                let now = now_millis();
                let row = c
                    .query_row(
                        "SELECT fingerprint, claimed_at, expires_at, status, headers, body FROM idempotency_keys
                         WHERE scope = ?1 AND key = ?2",
                        [&request.scope, &request.key],
                        |r| {
                            Ok((
                                r.get::<_, String>(0)?,
                                r.get::<_, i64>(1)?,
                                r.get::<_, i64>(2)?,
                                r.get::<_, Option<u16>>(3)?,
                                r.get::<_, Option<String>>(4)?,
                                r.get::<_, Option<Vec<u8>>>(5)?,
                            ))
                        },
                    )
                    .optional()
                    .map_err(db_error)?;
                if let Some((fingerprint, claimed_at, expires_at, status, headers, body)) = row
                    && expires_at > now
                {
                    if fingerprint != request.fingerprint {
                        return Ok(IdempotencyClaim::Mismatch);
                    }
                    match status {
                        Some(status) => {
                            let headers: Vec<(String, String)> = headers
                                .as_deref()
                                .map(serde_json::from_str)
                                .transpose()
                                .map_err(internal)?
                                .unwrap_or_default();
                            return Ok(IdempotencyClaim::Completed(StoredResponse {
                                status,
                                headers,
                                body: body.unwrap_or_default(),
                            }));
                        }
                        None if now.saturating_sub(claimed_at) < retention_ms(lease) => {
                            return Ok(IdempotencyClaim::InFlight);
                        }
                        // The first request's server died mid-flight: take over.
                        None => {}
                    }
                }
                c.execute(
                    "INSERT INTO idempotency_keys (scope, key, fingerprint, claimed_at, expires_at, status, headers, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, NULL, NULL, NULL)
                     ON CONFLICT (scope, key) DO UPDATE SET fingerprint = excluded.fingerprint,
                       claimed_at = excluded.claimed_at, expires_at = excluded.expires_at,
                       status = NULL, headers = NULL, body = NULL",
                    params![
                        request.scope,
                        request.key,
                        request.fingerprint,
                        now,
                        now.saturating_add(retention_ms(ttl))
                    ],
                )
                .map_err(db_error)?;
                Ok(IdempotencyClaim::Claimed)
            })
            .await
    }

    async fn complete_idempotency(&self, scope: &str, key: &str, response: StoredResponse) -> StoreResult<()> {
        let (scope, key) = (scope.to_owned(), key.to_owned());
        let headers = serde_json::to_string(&response.headers).map_err(internal)?;
        self.engine
            .write(move |c| {
                c.execute(
                    "UPDATE idempotency_keys SET status = ?1, headers = ?2, body = ?3 WHERE scope = ?4 AND key = ?5",
                    params![response.status, headers, response.body, scope, key],
                )
                .map_err(db_error)?;
                Ok(())
            })
            .await
    }

    async fn release_idempotency(&self, scope: &str, key: &str) -> StoreResult<()> {
        let (scope, key) = (scope.to_owned(), key.to_owned());
        self.engine
            .write(move |c| {
                c.execute(
                    "DELETE FROM idempotency_keys WHERE scope = ?1 AND key = ?2 AND status IS NULL",
                    [&scope, &key],
                )
                .map_err(db_error)?;
                Ok(())
            })
            .await
    }

    async fn secret(&self, name: &str, candidate: &str) -> StoreResult<String> {
        let (name, candidate) = (name.to_owned(), candidate.to_owned());
        self.engine
            .write(move |c| {
                c.execute(
                    "INSERT INTO secrets (name, value, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING",
                    params![name, candidate, now_millis()],
                )
                .map_err(db_error)?;
                c.query_row("SELECT value FROM secrets WHERE name = ?1", [&name], |r| r.get(0))
                    .map_err(db_error)
            })
            .await
    }

    async fn purge_expired(&self) -> StoreResult<u64> {
        self.engine
            .write(|c| {
                let now = now_millis();
                let mut n = 0;
                for sql in [
                    "DELETE FROM tombstones WHERE expires_at <= ?1",
                    "DELETE FROM locks WHERE expires_at <= ?1",
                    "DELETE FROM idempotency_keys WHERE expires_at <= ?1",
                ] {
                    n += c.execute(sql, [now]).map_err(db_error)? as u64;
                }
                Ok(n)
            })
            .await
    }
}
