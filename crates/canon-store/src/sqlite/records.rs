//! Records: conditional writes, patches, unique values, sorted lists
//! ([`RecordStore`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::SqliteStore;
use super::collections::collection_exists;
use super::leases::check_lease;
use super::rows::*;
use crate::model::*;
use crate::prelude::*;
use crate::{ApplyPatch, CheckedData, RecordWrite, RecordWritten, StoreError, StoreResult};

/// A record's first version, as of now.
fn first_version(collection_id: &str, id: String, data: Value) -> Record {
    let now = now_millis();
    Record {
        id,
        collection_id: collection_id.to_owned(),
        data,
        version: 1,
        etag: new_etag(),
        created_at: now,
        updated_at: now,
    }
}

/// Creates a record at an id the client chose, clearing the tombstone a
/// deleted record of that id left (a PUT re-creates it).
fn create_at(c: &Connection, collection_id: &str, id: String, data: Value) -> StoreResult<Record> {
    let r = first_version(collection_id, id, data);
    insert_record(c, &r)?;
    clear_tombstone(c, kind::RECORD, &r.collection_id, &r.id).map_err(db_error)?;
    Ok(r)
}

/// Replaces `current`'s data: the next version, a new tag, now as its
/// modification time. The caller re-indexes its unique values.
pub(super) fn replace_record(conn: &Connection, current: Record, data: Value) -> StoreResult<Record> {
    let r = Record {
        data,
        version: current.version + 1,
        etag: new_etag(),
        updated_at: now_millis(),
        ..current
    };
    exec(
        conn,
        "UPDATE records SET data = ?1, version = ?2, etag = ?3, updated_at = ?4 WHERE collection_id = ?5 AND id = ?6",
        params![
            crate::model::compact_json(&r.data),
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

/// A fresh strong tag: 80 random bits as 20 hex digits, from the thread's
/// CSPRNG (a system call per tag, as `Uuid::new_v4` makes, costs bulk
/// writes dearly).
pub(super) fn new_etag() -> String {
    use rand::Rng as _;
    let bits: u128 = rand::rng().random();
    format!("{:020x}", bits >> 48)
}

/// The point read of one record by key, written out once: every GET and
/// write prepares it from the statement cache, which is looked up by text.
fn select_record_sql() -> &'static str {
    static SQL: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("SELECT {RECORD_COLS} FROM records WHERE collection_id = ?1 AND id = ?2"));
    &SQL
}

pub(super) fn load_record(conn: &Connection, collection_id: &str, id: &str) -> StoreResult<Option<Record>> {
    conn.prepare_cached(select_record_sql())
        .and_then(|mut s| s.query_row(params![collection_id, id], record_row).optional())
        .map_err(db_error)
}

/// A record looked up by a read, as `map` reads its row.
fn lookup_record<T>(
    conn: &Connection,
    collection_id: &str,
    id: &str,
    map: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<Lookup<T>> {
    let tombstone = Tombstone::new(kind::RECORD, collection_id, id);
    lookup(conn, select_record_sql(), params![collection_id, id], map, tombstone)
}

/// Inserts a new record row; a taken id is a conflict on `/id`.
pub(super) fn insert_record(conn: &Connection, r: &Record) -> StoreResult<()> {
    insert_record_text(conn, r, &crate::model::compact_json(&r.data))
}

/// [`insert_record`] with `r`'s data already written as compact JSON: a
/// create writes it before its turn on the single writer, which then does
/// less per write.
pub(super) fn insert_record_text(conn: &Connection, r: &Record, data: &str) -> StoreResult<()> {
    // Built once: `prepare_cached` looks statements up by their text, and
    // formatting it was a tenth of the writer's own work per create.
    static INSERT: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("INSERT INTO records ({RECORD_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"));
    conn.prepare_cached(&INSERT)
        .and_then(|mut s| {
            s.execute(params![
                r.collection_id,
                r.id,
                data,
                r.version,
                r.etag,
                r.created_at,
                r.updated_at
            ])
        })
        .map_err(|e| conflict_or_internal(e, "/id"))?;
    Ok(())
}

pub(super) fn check_expectation(current: Option<&Record>, expect: &Expect) -> StoreResult<()> {
    match current {
        Some(r) => check_existing(expect, r.version, Some(&r.etag)),
        None if matches!(expect, Expect::Anything | Expect::Absent) => Ok(()),
        None => Err(StoreError::ExpectationFailed),
    }
}

/// Whether a write of a record may go on, checked inside its transaction
/// in the order of the decision flow: `expect` (412), then, when the record
/// exists and `require_tag` (the collection's `require_if_match`, enforced
/// here only for atomic batches), an expectation that names a tag (428),
/// then `actor`'s right past a lease (423).
fn check_write(
    c: &Connection,
    collection_id: &str,
    id: &str,
    current: Option<&Record>,
    expect: &Expect,
    require_tag: bool,
    actor: &str,
) -> StoreResult<()> {
    check_expectation(current, expect)?;
    if require_tag && current.is_some() && !expect.names_a_tag() {
        return Err(StoreError::ExpectationRequired);
    }
    check_lease(c, collection_id, id, actor)
}

/// What a write enforces of its collection: the collection itself (its
/// id), its unique fields and its demand for `If-Match`. A write takes
/// these to the writer thread instead of a copy of the whole collection,
/// whose schema it never reads.
pub(super) struct Enforced {
    /// The collection's id.
    pub(super) id: String,
    /// Its unique top-level fields.
    pub(super) unique: Vec<String>,
    /// Writes must carry `If-Match`.
    pub(super) require_if_match: bool,
}

impl Enforced {
    /// What `collection` enforces.
    pub(super) fn of(collection: &Collection) -> Self {
        Self {
            id: collection.id.clone(),
            unique: collection.unique.clone(),
            require_if_match: collection.require_if_match,
        }
    }
}

/// One write of a record's data at `id` (PUT): replaces it, or creates it
/// (clearing a tombstone). Returns the record and whether it was created.
fn put_one(
    c: &Connection,
    collection: &Enforced,
    id: String,
    data: CheckedData,
    expect: &Expect,
    require_tag: bool,
    actor: &str,
) -> StoreResult<(Record, bool)> {
    let current = load_record(c, &collection.id, &id)?;
    check_write(c, &collection.id, &id, current.as_ref(), expect, require_tag, actor)?;
    let data = data.map_err(StoreError::Rejected)?;
    let (record, created) = match current {
        Some(cur) => (replace_record(c, cur, data)?, false),
        None => (create_at(c, &collection.id, id, data)?, true),
    };
    index_unique(c, collection, &record.id, &record.data)?;
    Ok((record, created))
}

/// One patch of the existing record at `id`: `apply` computes its new
/// data from the current data.
fn patch_one(
    c: &Connection,
    collection: &Enforced,
    id: &str,
    apply: ApplyPatch,
    expect: &Expect,
    require_tag: bool,
    actor: &str,
) -> StoreResult<Record> {
    let Some(current) = load_record(c, &collection.id, id)? else {
        return Err(not_there(c, kind::RECORD, &collection.id, id));
    };
    check_write(c, &collection.id, id, Some(&current), expect, require_tag, actor)?;
    let data = apply(&current.data).map_err(StoreError::Rejected)?;
    let r = replace_record(c, current, data)?;
    index_unique(c, collection, &r.id, &r.data)?;
    Ok(r)
}

/// One delete of the existing record at `id`: its lease and unique values
/// go with it, and a tombstone kept for `retention` stays.
fn delete_one(
    c: &Connection,
    collection_id: &str,
    id: &str,
    expect: &Expect,
    require_tag: bool,
    actor: &str,
    retention: Duration,
) -> StoreResult<()> {
    let Some(current) = load_record(c, collection_id, id)? else {
        return Err(not_there(c, kind::RECORD, collection_id, id));
    };
    check_write(c, collection_id, id, Some(&current), expect, require_tag, actor)?;
    for table in [
        "DELETE FROM locks WHERE collection_id = ?1 AND record_id = ?2",
        "DELETE FROM records WHERE collection_id = ?1 AND id = ?2",
        "DELETE FROM unique_values WHERE collection_id = ?1 AND record_id = ?2",
    ] {
        exec(c, table, [collection_id, id]).map_err(db_error)?;
    }
    put_tombstone(c, kind::RECORD, collection_id, id, retention).map_err(db_error)
}

/// One write of an atomic batch, with the collection's demand for tags.
fn apply_one(
    c: &Connection,
    collection: &Enforced,
    write: RecordWrite,
    actor: &str,
    retention: Duration,
) -> StoreResult<RecordWritten> {
    let require_tag = collection.require_if_match;
    match write {
        RecordWrite::Create { data } => {
            let data = data.map_err(StoreError::Rejected)?;
            let r = first_version(&collection.id, new_id(), data);
            insert_record(c, &r)?;
            index_unique(c, collection, &r.id, &r.data)?;
            Ok(RecordWritten::Created(r))
        }
        RecordWrite::Put { id, data, expect } => {
            let (r, created) = put_one(c, collection, id, data, &expect, require_tag, actor)?;
            Ok(if created {
                RecordWritten::Created(r)
            } else {
                RecordWritten::Updated(r)
            })
        }
        RecordWrite::Patch { id, apply, expect } => {
            patch_one(c, collection, &id, apply, &expect, require_tag, actor).map(RecordWritten::Updated)
        }
        RecordWrite::Delete { id, expect } => {
            delete_one(c, &collection.id, &id, &expect, require_tag, actor, retention)?;
            Ok(RecordWritten::Deleted)
        }
    }
}

/// Writes the unique-value rows of a record that has none yet (just
/// created); a taken value is a conflict naming its field.
fn index_new_unique(conn: &Connection, collection: &Enforced, id: &str, data: &Value) -> StoreResult<()> {
    for field in &collection.unique {
        let Some(value) = data.get(field).filter(|v| !v.is_null()) else {
            continue;
        };
        exec(
            conn,
            "INSERT INTO unique_values (collection_id, field, value, record_id) VALUES (?1, ?2, ?3, ?4)",
            params![collection.id, field, value.to_string(), id],
        )
        .map_err(|e| conflict_or_internal(e, &format!("/data/{field}")))?;
    }
    Ok(())
}

/// Rewrites a record's unique-value rows; the first taken value names the field.
pub(super) fn index_unique(conn: &Connection, collection: &Enforced, id: &str, data: &Value) -> StoreResult<()> {
    if collection.unique.is_empty() {
        return Ok(());
    }
    exec(
        conn,
        "DELETE FROM unique_values WHERE collection_id = ?1 AND record_id = ?2",
        params![collection.id, id],
    )
    .map_err(db_error)?;
    index_new_unique(conn, collection, id, data)
}

/// Converts a JSON scalar to the SQL value `json_extract` yields for it.
pub(super) fn sql_scalar(v: &Value) -> SqlValue {
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

pub(super) fn json_of_sql(v: SqlValue) -> Value {
    match v {
        SqlValue::Null => Value::Null,
        SqlValue::Integer(i) => Value::from(i),
        SqlValue::Real(f) => Value::from(f),
        SqlValue::Text(s) => Value::String(s),
        SqlValue::Blob(_) => Value::Null,
    }
}

/// `json_type` names matching a JSON scalar, for type-exact filters.
pub(super) fn json_types(v: &Value) -> &'static [&'static str] {
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
pub(super) fn sort_key(v: SqlValue) -> SqlValue {
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

/// Appends the `AND …` conditions of `filters` to `sql` (whose `?1` is the
/// collection id), their values to `args`.
fn push_filters(sql: &mut String, args: &mut Vec<SqlValue>, filters: &[(String, Value)]) {
    for (field, value) in filters {
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
}

/// How many records of a collection match `filters`.
pub(super) fn count_records(conn: &Connection, collection_id: &str, filters: &[(String, Value)]) -> StoreResult<u64> {
    let mut sql = "SELECT COUNT(*) FROM records WHERE collection_id = ?1".to_owned();
    let mut args: Vec<SqlValue> = vec![SqlValue::Text(collection_id.to_owned())];
    push_filters(&mut sql, &mut args, filters);
    let count: i64 = conn
        .query_row(&sql, rusqlite::params_from_iter(args), |r| r.get(0))
        .map_err(db_error)?;
    Ok(u64::try_from(count).unwrap_or(0))
}

pub(super) fn list_records(conn: &Connection, collection_id: &str, q: &RecordQuery) -> StoreResult<Page<Record>> {
    list_rows(conn, collection_id, q, record_row, |r| &r.id)
}

/// [`list_records`] with each row as `row` makes it (`id_of` names its id,
/// for the next page's cursor).
fn list_rows<T>(
    conn: &Connection,
    collection_id: &str,
    q: &RecordQuery,
    row: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    id_of: fn(&T) -> &str,
) -> StoreResult<Page<T>> {
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
    push_filters(&mut sql, &mut args, &q.filters);
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
            Ok((row(r)?, sort_value))
        })
        .map_err(db_error)?;
    let items = rows.collect::<Result<Vec<_>, _>>().map_err(db_error)?;
    Ok(Page::from_fetched(items, q.page.limit, id_of))
}

#[async_trait]
impl RecordStore for SqliteStore {
    async fn create_record(&self, collection: &Collection, data: Value) -> StoreResult<Record> {
        let collection = Enforced::of(collection);
        // The data's text is written here, in parallel with other requests;
        // the id and the timestamps are the writer's, so ids follow commits.
        let text = crate::model::compact_json(&data);
        self.engine
            .write(move |c| {
                collection_exists(c, &collection.id)?;
                let r = first_version(&collection.id, new_id(), data);
                insert_record_text(c, &r, &text)?;
                index_unique(c, &collection, &r.id, &r.data)?;
                Ok(r)
            })
            .await
    }

    async fn record(&self, collection_id: &str, id: &str) -> StoreResult<Lookup<Record>> {
        self.engine
            .read_point(|c| lookup_record(c, collection_id, id, record_row))
            .await
    }

    async fn list_records(&self, collection_id: &str, query: RecordQuery) -> StoreResult<Page<Record>> {
        let collection_id = collection_id.to_owned();
        self.engine.read(move |c| list_records(c, &collection_id, &query)).await
    }

    async fn raw_record(&self, collection_id: &str, id: &str) -> StoreResult<Lookup<Arc<RawRecord>>> {
        let cache = self.engine.record_cache();
        let ticket = match cache {
            Some(cache) => {
                // A moved or replaced file refuses every call, cached or not.
                self.engine.attached()?;
                if let Some(hit) = cache.get(collection_id, id) {
                    return Ok(Lookup::Found(hit));
                }
                Some(cache.ticket())
            }
            None => None,
        };
        let read = self
            .engine
            .read_point(|c| lookup_record(c, collection_id, id, raw_record_row))
            .await?
            .map(Arc::new);
        if let (Some(cache), Some(ticket), Lookup::Found(record)) = (cache, ticket, &read) {
            cache.offer(ticket, collection_id, record);
        }
        Ok(read)
    }

    async fn list_raw_records(&self, collection_id: &str, query: RecordQuery) -> StoreResult<Page<RawRecord>> {
        let collection_id = collection_id.to_owned();
        self.engine
            .read(move |c| list_rows(c, &collection_id, &query, raw_record_row, |r| &r.id))
            .await
    }

    async fn count_records(&self, collection_id: &str, filters: Vec<(String, Value)>) -> StoreResult<u64> {
        let collection_id = collection_id.to_owned();
        self.engine
            .read(move |c| count_records(c, &collection_id, &filters))
            .await
    }

    async fn create_absent_records(
        &self,
        collection: &Collection,
        records: Vec<(String, Value)>,
    ) -> StoreResult<Vec<StoreResult<()>>> {
        let collection = Enforced::of(collection);
        self.engine
            .write(move |c| {
                collection_exists(c, &collection.id)?;
                let mut out = Vec::with_capacity(records.len());
                for (id, data) in records {
                    // The inserts themselves are the checks (the record's
                    // key, then its unique values), and the rare record that
                    // fails half-way is undone by hand: no savepoint and no
                    // look-up per record, which bulk work would pay for every
                    // record (a savepoint journals each page it touches).
                    let one = (|| {
                        let r = first_version(&collection.id, id, data);
                        match insert_record(c, &r) {
                            Err(StoreError::Conflict { .. }) => return Err(StoreError::ExpectationFailed),
                            other => other?,
                        }
                        if let Err(e) = index_new_unique(c, &collection, &r.id, &r.data) {
                            for undo in [
                                "DELETE FROM unique_values WHERE collection_id = ?1 AND record_id = ?2",
                                "DELETE FROM records WHERE collection_id = ?1 AND id = ?2",
                            ] {
                                exec(c, undo, [&collection.id, &r.id]).map_err(db_error)?;
                            }
                            return Err(e);
                        }
                        clear_tombstone(c, kind::RECORD, &r.collection_id, &r.id).map_err(db_error)
                    })();
                    out.push(one);
                }
                Ok(out)
            })
            .await
    }

    async fn put_record(
        &self,
        collection: &Collection,
        id: &str,
        data: Value,
        expect: Expect,
        actor: &str,
    ) -> StoreResult<(Record, bool)> {
        let (collection, id, actor) = (Enforced::of(collection), id.to_owned(), actor.to_owned());
        self.engine
            .write(move |c| {
                collection_exists(c, &collection.id)?;
                put_one(c, &collection, id, Ok(data), &expect, false, &actor)
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
        let (collection, id, actor) = (Enforced::of(collection), id.to_owned(), actor.to_owned());
        self.engine
            .write(move |c| {
                collection_exists(c, &collection.id)?;
                patch_one(c, &collection, &id, apply, &expect, false, &actor)
            })
            .await
    }

    async fn apply_atomically(
        &self,
        collection: &Collection,
        writes: Vec<RecordWrite>,
        actor: &str,
        retention: Duration,
    ) -> StoreResult<Vec<RecordWritten>> {
        let (collection, actor) = (Enforced::of(collection), actor.to_owned());
        // One write job: the engine runs it in one savepoint and rolls all of
        // it back when it fails, so the first failing write undoes the others.
        self.engine
            .write(move |c| {
                collection_exists(c, &collection.id)?;
                let mut done = Vec::with_capacity(writes.len());
                for (index, write) in writes.into_iter().enumerate() {
                    let written = apply_one(c, &collection, write, &actor, retention).map_err(|cause| match cause {
                        // The store itself failing is not this write's fault.
                        e @ (StoreError::Unavailable(_) | StoreError::Internal(_)) => e,
                        cause => StoreError::AtWrite {
                            index,
                            cause: Box::new(cause),
                        },
                    })?;
                    done.push(written);
                }
                Ok(done)
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
            .write(move |c| delete_one(c, &collection_id, &id, &expect, false, &actor, retention))
            .await
    }
}
