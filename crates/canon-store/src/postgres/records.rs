//! Records: conditional writes, patches, unique values, sorted lists
//! ([`RecordStore`]).
//!
//! Every write of an existing record's id takes the record's advisory lock
//! before reading it, so its checks (expectation, lease) and its change
//! are one step for every other writer of that record, on any node. Data
//! is stored twice in one row: `data` (jsonb) for filters and sorts, and
//! `body`, the JSON text Canon wrote, which reads return as it is (key
//! order and the spelling of numbers kept, as on SQLite).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio_postgres::types::{ToSql, Type};

use super::PostgresStore;
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

/// A fresh strong tag: 80 random bits as 20 hex digits.
fn new_etag() -> String {
    use rand::Rng as _;
    let bits: u128 = rand::rng().random();
    format!("{:020x}", bits >> 48)
}

/// Holds the record's advisory lock until the transaction ends.
pub(super) async fn lock_record(c: &impl Db, collection_id: &str, id: &str) -> StoreResult<()> {
    lock(c, &format!("record/{collection_id}/{id}")).await
}

/// Selects the record `$2` of the collection `$1`.
fn select_record_sql() -> &'static str {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "SELECT {RECORD_COLS} FROM records
             WHERE tenant_id = {TENANT_OF_COLLECTION} AND collection_id = $1 AND id = $2"
        )
    });
    &SQL
}

pub(super) async fn load_record(c: &impl Db, collection_id: &str, id: &str) -> StoreResult<Option<Record>> {
    let row = c
        .query_typed_opt(select_record_sql(), &[text(&collection_id), text(&id)])
        .await?;
    row.map(|r| record_row(&r)).transpose()
}

/// A record looked up by a read, as `map` reads its row.
async fn lookup_record<T>(
    c: &impl Db,
    collection_id: &str,
    id: &str,
    map: impl Fn(&tokio_postgres::Row) -> StoreResult<T>,
) -> StoreResult<Lookup<T>> {
    let tombstone = Tombstone::new(kind::RECORD, collection_id, id);
    lookup(
        c,
        select_record_sql(),
        &[text(&collection_id), text(&id)],
        map,
        tombstone,
    )
    .await
}

/// Inserts a new record row; a taken id is a conflict on `/id`.
async fn insert_record(c: &impl Db, tenant_id: &str, r: &Record) -> StoreResult<()> {
    let body = crate::model::compact_json(&r.data);
    let data = jsonb_text(&body);
    let inserted = c
        .execute_typed(
            "INSERT INTO records (tenant_id, collection_id, id, data, body, version, etag, created_at, updated_at)
             VALUES ($1, $2, $3, $9::JSONB, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            &[
                text(&tenant_id),
                text(&r.collection_id),
                text(&r.id),
                text(&body),
                int(&r.version),
                text(&r.etag),
                int(&r.created_at),
                int(&r.updated_at),
                text(&data),
            ],
        )
        .await?;
    if inserted == 0 {
        return Err(StoreError::Conflict { pointer: "/id".into() });
    }
    Ok(())
}

/// Creates a record at an id the client chose, clearing the tombstone a
/// deleted record of that id left (a PUT re-creates it).
async fn create_at(c: &impl Db, tenant_id: &str, collection_id: &str, id: String, data: Value) -> StoreResult<Record> {
    let r = first_version(collection_id, id, data);
    insert_record(c, tenant_id, &r).await?;
    clear_tombstone(c, kind::RECORD, &r.collection_id, &r.id).await?;
    Ok(r)
}

/// Replaces `current`'s data: the next version, a new tag, now as its
/// modification time. The caller re-indexes its unique values.
async fn replace_record(c: &impl Db, tenant_id: &str, current: Record, data: Value) -> StoreResult<Record> {
    let r = Record {
        data,
        version: current.version + 1,
        etag: new_etag(),
        updated_at: now_millis(),
        ..current
    };
    let body = crate::model::compact_json(&r.data);
    let data = jsonb_text(&body);
    c.execute_typed(
        "UPDATE records SET data = $8::JSONB, body = $1, version = $2, etag = $3, updated_at = $4
         WHERE tenant_id = $5 AND collection_id = $6 AND id = $7",
        &[
            text(&body),
            int(&r.version),
            text(&r.etag),
            int(&r.updated_at),
            text(&tenant_id),
            text(&r.collection_id),
            text(&r.id),
            text(&data),
        ],
    )
    .await?;
    Ok(r)
}

/// JSON text as jsonb can hold it: jsonb refuses the character U+0000, so
/// each `\u0000` escape becomes `\\u0000` (an escaped backslash, then
/// `u0000`). Only the jsonb copy (filters, sorts, unique values) sees it;
/// `body` keeps the data exactly. The one inexactness: a string holding
/// U+0000 and one holding the six characters `\u0000` instead compare equal
/// there.
pub(crate) fn jsonb_text(json: &str) -> std::borrow::Cow<'_, str> {
    if !json.contains("\\u0000") {
        return std::borrow::Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 8);
    let mut chars = json.chars();
    while let Some(ch) = chars.next() {
        out.push(ch);
        if ch != '\\' {
            continue;
        }
        // An escape: its next character is never the start of another.
        let Some(next) = chars.next() else { break };
        if next == 'u' && chars.as_str().starts_with("0000") {
            out.push_str("\\u0000");
            chars.nth(3);
        } else {
            out.push(next);
        }
    }
    std::borrow::Cow::Owned(out)
}

fn check_expectation(current: Option<&Record>, expect: &Expect) -> StoreResult<()> {
    match current {
        Some(r) => check_existing(expect, r.version, Some(&r.etag)),
        None if matches!(expect, Expect::Anything | Expect::Absent) => Ok(()),
        None => Err(StoreError::ExpectationFailed),
    }
}

/// Whether a write of a record may go on, in the order of the decision
/// flow: `expect` (412), the collection's demand for a tag when the record
/// exists and `require_tag` (428, atomic batches only), then `actor`'s right
/// past a lease (423).
async fn check_write(
    c: &impl Db,
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
    check_lease(c, collection_id, id, actor).await
}

/// One write of a record's data at `id` (PUT): replaces it, or creates it
/// (clearing a tombstone). Returns the record and whether it was created.
async fn put_one(
    c: &impl Db,
    collection: &Collection,
    id: String,
    data: CheckedData,
    expect: &Expect,
    require_tag: bool,
    actor: &str,
) -> StoreResult<(Record, bool)> {
    lock_record(c, &collection.id, &id).await?;
    let current = load_record(c, &collection.id, &id).await?;
    check_write(c, &collection.id, &id, current.as_ref(), expect, require_tag, actor).await?;
    let data = data.map_err(StoreError::Rejected)?;
    let tenant_id = &collection.tenant_id;
    let (record, created) = match current {
        Some(cur) => (replace_record(c, tenant_id, cur, data).await?, false),
        None => (create_at(c, tenant_id, &collection.id, id, data).await?, true),
    };
    index_unique(c, collection, &record.id, &record.data).await?;
    Ok((record, created))
}

/// One patch of the existing record at `id`: `apply` computes its new data
/// from the current data.
async fn patch_one(
    c: &impl Db,
    collection: &Collection,
    id: &str,
    apply: ApplyPatch,
    expect: &Expect,
    require_tag: bool,
    actor: &str,
) -> StoreResult<Record> {
    lock_record(c, &collection.id, id).await?;
    let Some(current) = load_record(c, &collection.id, id).await? else {
        return Err(not_there(c, kind::RECORD, &collection.id, id).await);
    };
    check_write(c, &collection.id, id, Some(&current), expect, require_tag, actor).await?;
    let data = apply(&current.data).map_err(StoreError::Rejected)?;
    let r = replace_record(c, &collection.tenant_id, current, data).await?;
    index_unique(c, collection, &r.id, &r.data).await?;
    Ok(r)
}

/// One delete of the existing record at `id`: its lease and unique values
/// go with it, and a tombstone kept for `retention` stays.
async fn delete_one(
    c: &impl Db,
    collection_id: &str,
    id: &str,
    expect: &Expect,
    require_tag: bool,
    actor: &str,
    retention: Duration,
) -> StoreResult<()> {
    lock_record(c, collection_id, id).await?;
    let Some(current) = load_record(c, collection_id, id).await? else {
        return Err(not_there(c, kind::RECORD, collection_id, id).await);
    };
    check_write(c, collection_id, id, Some(&current), expect, require_tag, actor).await?;
    for sql in [
        "DELETE FROM locks WHERE tenant_id = (SELECT tenant_id FROM collections WHERE id = $1)
           AND collection_id = $1 AND record_id = $2",
        "DELETE FROM records WHERE tenant_id = (SELECT tenant_id FROM collections WHERE id = $1)
           AND collection_id = $1 AND id = $2",
        "DELETE FROM unique_values WHERE tenant_id = (SELECT tenant_id FROM collections WHERE id = $1)
           AND collection_id = $1 AND record_id = $2",
    ] {
        c.execute_typed(sql, &[text(&collection_id), text(&id)]).await?;
    }
    put_tombstone(c, kind::RECORD, collection_id, id, retention).await
}

/// One write of an atomic batch, with the collection's demand for tags.
async fn apply_one(
    c: &impl Db,
    collection: &Collection,
    write: RecordWrite,
    actor: &str,
    retention: Duration,
) -> StoreResult<RecordWritten> {
    let require_tag = collection.require_if_match;
    match write {
        RecordWrite::Create { data } => {
            let data = data.map_err(StoreError::Rejected)?;
            let r = first_version(&collection.id, new_id(), data);
            insert_record(c, &collection.tenant_id, &r).await?;
            index_unique(c, collection, &r.id, &r.data).await?;
            Ok(RecordWritten::Created(r))
        }
        RecordWrite::Put { id, data, expect } => {
            let (r, created) = put_one(c, collection, id, data, &expect, require_tag, actor).await?;
            Ok(if created {
                RecordWritten::Created(r)
            } else {
                RecordWritten::Updated(r)
            })
        }
        RecordWrite::Patch { id, apply, expect } => patch_one(c, collection, &id, apply, &expect, require_tag, actor)
            .await
            .map(RecordWritten::Updated),
        RecordWrite::Delete { id, expect } => {
            delete_one(c, &collection.id, &id, &expect, require_tag, actor, retention).await?;
            Ok(RecordWritten::Deleted)
        }
    }
}

/// Writes the unique-value rows of a record that has none yet; a taken
/// value is a conflict naming its field. Values are kept as jsonb writes
/// them, as the re-index of a collection reads them from the records.
async fn index_new_unique(c: &impl Db, collection: &Collection, id: &str, data: &Value) -> StoreResult<()> {
    for field in &collection.unique {
        let Some(value) = data.get(field).filter(|v| !v.is_null()) else {
            continue;
        };
        let value = value.to_string();
        let value = jsonb_text(&value);
        let inserted = c
            .execute_typed(
                "INSERT INTO unique_values (tenant_id, collection_id, field, value, record_id)
                 VALUES ($1, $2, $3, ($4::JSONB)::TEXT, $5) ON CONFLICT DO NOTHING",
                &[
                    text(&collection.tenant_id),
                    text(&collection.id),
                    text(field),
                    text(&value),
                    text(&id),
                ],
            )
            .await?;
        if inserted == 0 {
            return Err(StoreError::Conflict {
                pointer: format!("/data/{field}"),
            });
        }
    }
    Ok(())
}

/// Rewrites a record's unique-value rows; the first taken value names the field.
async fn index_unique(c: &impl Db, collection: &Collection, id: &str, data: &Value) -> StoreResult<()> {
    if collection.unique.is_empty() {
        return Ok(());
    }
    c.execute_typed(
        "DELETE FROM unique_values WHERE tenant_id = $1 AND collection_id = $2 AND record_id = $3",
        &[text(&collection.tenant_id), text(&collection.id), text(&id)],
    )
    .await?;
    index_new_unique(c, collection, id, data).await
}

/// Owned statement parameters, built as a query is.
#[derive(Default)]
struct Args(Vec<(Box<dyn ToSql + Sync + Send>, Type)>);

impl Args {
    /// Adds a parameter; returns its `$n`.
    fn push(&mut self, v: impl ToSql + Sync + Send + 'static, t: Type) -> String {
        self.0.push((Box::new(v), t));
        format!("${}", self.0.len())
    }

    fn params(&self) -> Vec<Param<'_>> {
        self.0
            .iter()
            .map(|(v, t)| (&**v as &(dyn ToSql + Sync), t.clone()))
            .collect()
    }
}

/// Appends the `AND …` conditions of `filters` to `sql`. Equality is
/// type-exact (the number 80 is not the string "80") and numbers compare
/// as jsonb numerics, exactly (Canon stores and passes them canonically).
fn push_filters(sql: &mut String, args: &mut Args, filters: &[(String, Value)]) {
    for (field, value) in filters {
        let f = args.push(field.clone(), Type::TEXT);
        if value.is_null() {
            sql.push_str(&format!(" AND jsonb_typeof(data -> {f}) = 'null'"));
        } else {
            let v = args.push(jsonb_text(&value.to_string()).into_owned(), Type::TEXT);
            sql.push_str(&format!(" AND (data -> {f}) = {v}::JSONB"));
        }
    }
}

/// The sort columns of a list by field `$f`, ordered as SQLite orders
/// `canon_sort_key(json_extract(…))`: numbers and booleans (as 0 and 1)
/// first, by value; then text (strings, and objects and arrays as JSON
/// text) by bytes, long text by prefix and digest; missing and null last.
fn sort_columns(f: &str) -> String {
    format!(
        "CASE jsonb_typeof(data -> {f}) WHEN 'number' THEN 1 WHEN 'boolean' THEN 1
           WHEN 'string' THEN 2 WHEN 'object' THEN 2 WHEN 'array' THEN 2 END AS sort_rank,
         CASE jsonb_typeof(data -> {f}) WHEN 'number' THEN (data -> {f})::NUMERIC
           WHEN 'boolean' THEN CASE WHEN (data -> {f})::BOOLEAN THEN 1 ELSE 0 END END AS sort_num,
         canon_sort_text(CASE jsonb_typeof(data -> {f}) WHEN 'string' THEN data ->> {f}
           WHEN 'object' THEN (data -> {f})::TEXT WHEN 'array' THEN (data -> {f})::TEXT END)
           COLLATE \"C\" AS sort_text"
    )
}

/// Where a page sorted by a field continues: after the cursor's position
/// (`v` the sort value it carries, `id` its record), in `desc` order.
fn after_sorted(args: &mut Args, v: Option<&Value>, id: &str, desc: bool) -> String {
    let id = args.push(id.to_owned(), Type::TEXT);
    let cmp = if desc { "<" } else { ">" };
    let (rank, column, key) = match v {
        None | Some(Value::Null) => return format!("sort_rank IS NULL AND id > {id}"),
        Some(Value::Number(n)) => (
            1,
            "sort_num",
            format!("{}::NUMERIC", args.push(n.to_string(), Type::TEXT)),
        ),
        Some(Value::Bool(b)) => (
            1,
            "sort_num",
            format!("{}::NUMERIC", args.push(i64::from(*b).to_string(), Type::TEXT)),
        ),
        Some(Value::String(s)) => (2, "sort_text", args.push(s.clone(), Type::TEXT)),
        Some(other) => (2, "sort_text", args.push(other.to_string(), Type::TEXT)),
    };
    format!(
        "(sort_rank IS NULL OR sort_rank {cmp} {rank} OR (sort_rank = {rank} AND ({column} {cmp} {key} \
         OR ({column} = {key} AND id > {id}))))"
    )
}

/// The sort value a cursor carries for a row (its `sort_rank`, `sort_num`
/// as text, `sort_text` at `at`, `at + 1`, `at + 2`).
fn sort_value(r: &tokio_postgres::Row, at: usize) -> StoreResult<Value> {
    let rank: Option<i32> = r.try_get(at)?;
    Ok(match rank {
        Some(1) => {
            let n: Option<String> = r.try_get(at + 1)?;
            n.and_then(|n| serde_json::from_str(&n).ok()).unwrap_or(Value::Null)
        }
        Some(_) => r
            .try_get::<_, Option<String>>(at + 2)?
            .map_or(Value::Null, Value::String),
        None => Value::Null,
    })
}

/// A page of a collection's records as `row` makes them.
async fn list_rows<T>(
    c: &impl Db,
    collection_id: &str,
    q: &RecordQuery,
    row: fn(&tokio_postgres::Row) -> StoreResult<T>,
    id_of: fn(&T) -> &str,
) -> StoreResult<Page<T>> {
    let mut args = Args::default();
    let cid = args.push(collection_id.to_owned(), Type::TEXT);
    let sort = match &q.sort {
        SortOrder::Id => None,
        SortOrder::Field { field, descending } => Some((args.push(field.clone(), Type::TEXT), *descending)),
    };
    let mut inner = format!("SELECT {RECORD_COLS}");
    if let Some((f, _)) = &sort {
        inner.push_str(", ");
        inner.push_str(&sort_columns(f));
    }
    inner.push_str(&format!(
        " FROM records WHERE tenant_id = (SELECT tenant_id FROM collections WHERE id = {cid}) AND collection_id = {cid}"
    ));
    push_filters(&mut inner, &mut args, &q.filters);
    let mut sql = match &sort {
        // The sort value text travels as text (numeric to text keeps it exact).
        Some(_) => format!(
            "SELECT collection_id, id, body, version, etag, created_at, updated_at, sort_rank, sort_num::TEXT, \
             sort_text FROM ({inner}) r WHERE TRUE"
        ),
        None => format!("{inner} AND TRUE"),
    };
    if let Some(after) = &q.page.after {
        match &sort {
            None => {
                let id = args.push(after.id.clone(), Type::TEXT);
                sql.push_str(&format!(" AND id > {id}"));
            }
            Some((_, desc)) => {
                let cond = after_sorted(&mut args, after.sort_value.as_ref(), &after.id, *desc);
                sql.push_str(&format!(" AND {cond}"));
            }
        }
    }
    match &sort {
        None => sql.push_str(" ORDER BY id"),
        Some((_, desc)) => {
            let dir = if *desc { "DESC" } else { "ASC" };
            sql.push_str(&format!(
                " ORDER BY sort_rank IS NULL, sort_rank {dir}, sort_num {dir}, sort_text {dir}, id"
            ));
        }
    }
    let limit = args.push((q.page.limit + 1) as i64, Type::INT8);
    sql.push_str(&format!(" LIMIT {limit}"));

    let rows = c.query_typed(&sql, &args.params()).await?;
    let sorted = sort.is_some();
    let items = rows
        .iter()
        .map(|r| Ok((row(r)?, if sorted { Some(sort_value(r, 7)?) } else { None })))
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(Page::from_fetched(items, q.page.limit, id_of))
}

#[async_trait]
impl RecordStore for PostgresStore {
    async fn create_record(&self, collection: &Collection, data: Value) -> StoreResult<Record> {
        self.pool
            .write(false, async |tx| {
                collection_exists(tx, collection).await?;
                let r = first_version(&collection.id, new_id(), data);
                insert_record(tx, &collection.tenant_id, &r).await?;
                index_unique(tx, collection, &r.id, &r.data).await?;
                Ok(r)
            })
            .await
    }

    async fn record(&self, collection_id: &str, id: &str) -> StoreResult<Lookup<Record>> {
        self.pool
            .run(async {
                let c = self.pool.conn().await?;
                lookup_record(c.client(), collection_id, id, record_row).await
            })
            .await
    }

    async fn raw_record(&self, collection_id: &str, id: &str) -> StoreResult<Lookup<Arc<RawRecord>>> {
        self.pool
            .run(async {
                let c = self.pool.conn().await?;
                let found = lookup_record(c.client(), collection_id, id, raw_record_row).await?;
                Ok(found.map(Arc::new))
            })
            .await
    }

    async fn list_records(&self, collection_id: &str, query: RecordQuery) -> StoreResult<Page<Record>> {
        self.pool
            .run(async {
                let c = self.pool.conn().await?;
                list_rows(c.client(), collection_id, &query, record_row, |r| &r.id).await
            })
            .await
    }

    async fn list_raw_records(&self, collection_id: &str, query: RecordQuery) -> StoreResult<Page<RawRecord>> {
        self.pool
            .run(async {
                let c = self.pool.conn().await?;
                list_rows(c.client(), collection_id, &query, raw_record_row, |r| &r.id).await
            })
            .await
    }

    async fn count_records(&self, collection_id: &str, filters: Vec<(String, Value)>) -> StoreResult<u64> {
        self.pool
            .run(async {
                let c = self.pool.conn().await?;
                let mut args = Args::default();
                let cid = args.push(collection_id.to_owned(), Type::TEXT);
                let mut sql = format!(
                    "SELECT COUNT(*) FROM records
                     WHERE tenant_id = (SELECT tenant_id FROM collections WHERE id = {cid}) AND collection_id = {cid}"
                );
                push_filters(&mut sql, &mut args, &filters);
                let count: i64 = c.client().query_typed_one(&sql, &args.params()).await?.try_get(0)?;
                Ok(u64::try_from(count).unwrap_or(0))
            })
            .await
    }

    async fn create_absent_records(
        &self,
        collection: &Collection,
        records: Vec<(String, Value)>,
    ) -> StoreResult<Vec<StoreResult<()>>> {
        self.pool
            .write(false, async |tx| {
                collection_exists(tx, collection).await?;
                let mut out = Vec::with_capacity(records.len());
                for (id, data) in records {
                    // The inserts themselves are the checks (the record's
                    // key, then its unique values, each `ON CONFLICT DO
                    // NOTHING`), and the rare record that fails half-way is
                    // undone by hand: no savepoint per record.
                    let r = first_version(&collection.id, id, data);
                    match insert_record(tx, &collection.tenant_id, &r).await {
                        Err(StoreError::Conflict { .. }) => {
                            out.push(Err(StoreError::ExpectationFailed));
                            continue;
                        }
                        other => other?,
                    }
                    if let Err(e) = index_new_unique(tx, collection, &r.id, &r.data).await {
                        if !matches!(e, StoreError::Conflict { .. }) {
                            return Err(e);
                        }
                        for undo in [
                            "DELETE FROM unique_values WHERE tenant_id = $1 AND collection_id = $2 AND record_id = $3",
                            "DELETE FROM records WHERE tenant_id = $1 AND collection_id = $2 AND id = $3",
                        ] {
                            tx.execute_typed(undo, &[text(&collection.tenant_id), text(&collection.id), text(&r.id)])
                                .await?;
                        }
                        out.push(Err(e));
                        continue;
                    }
                    clear_tombstone(tx, kind::RECORD, &r.collection_id, &r.id).await?;
                    out.push(Ok(()));
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
        self.pool
            .write(false, async |tx| {
                collection_exists(tx, collection).await?;
                let written = put_one(tx, collection, id.to_owned(), Ok(data), &expect, false, actor).await?;
                Ok(written)
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
        self.pool
            .write(false, async |tx| {
                collection_exists(tx, collection).await?;
                let r = patch_one(tx, collection, id, apply, &expect, false, actor).await?;
                Ok(r)
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
        self.pool
            .write(false, async |tx| {
                collection_exists(tx, collection).await?;
                let mut done = Vec::with_capacity(writes.len());
                // The first failing write returns before the commit: the
                // transaction rolls back, and the others with it.
                for (index, write) in writes.into_iter().enumerate() {
                    let written =
                        apply_one(tx, collection, write, actor, retention)
                            .await
                            .map_err(|cause| match cause {
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
        self.pool
            .write(false, async |tx| {
                delete_one(tx, collection_id, id, &expect, false, actor, retention).await?;
                Ok(())
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::jsonb_text;

    #[test]
    fn jsonb_text_spells_out_nul_and_nothing_else() {
        let nul = serde_json::json!({"a": "x\u{0}y", "b": "\\u0000", "c": "\u{1}"}).to_string();
        let held = jsonb_text(&nul);
        let parsed: serde_json::Value = serde_json::from_str(&held).unwrap();
        assert_eq!(parsed["a"], "x\\u0000y");
        assert_eq!(parsed["b"], "\\u0000", "an escaped backslash stays one");
        assert_eq!(parsed["c"], "\u{1}");
        assert!(matches!(jsonb_text("{\"a\":1}"), std::borrow::Cow::Borrowed(_)));
    }
}
