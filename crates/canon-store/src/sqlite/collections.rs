//! Collections, their renames and deletion ([`CollectionStore`]).

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::SqliteStore;
use super::records::index_unique;
use super::rows::*;
use crate::model::*;
use crate::prelude::*;
use crate::{StoreError, StoreResult};

pub(super) fn drop_alias(conn: &Connection, tenant_id: &str, name: &str) -> StoreResult<()> {
    conn.execute(
        "DELETE FROM collection_aliases WHERE tenant_id = ?1 AND name = ?2",
        [tenant_id, name],
    )
    .map_err(db_error)?;
    Ok(())
}

pub(super) fn load_collection(conn: &Connection, tenant_id: &str, name: &str) -> StoreResult<Option<Collection>> {
    conn.prepare_cached(&format!(
        "SELECT {COLLECTION_COLS} FROM collections WHERE tenant_id = ?1 AND name = ?2"
    ))
    .and_then(|mut s| s.query_row([tenant_id, name], collection_row).optional())
    .map_err(db_error)
}

/// Applies `changes` to the collection called `name`, inside the writer's
/// transaction.
pub(super) fn update_collection(
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
        let enforced = super::records::Enforced::of(&next);
        for r in &records {
            index_unique(conn, &enforced, &r.id, &r.data)?;
        }
    }
    Ok(next)
}

pub(super) fn collection_exists(conn: &Connection, collection_id: &str) -> StoreResult<()> {
    let found: Option<i64> = conn
        .prepare_cached("SELECT 1 FROM collections WHERE id = ?1")
        .and_then(|mut s| s.query_row([collection_id], |r| r.get(0)).optional())
        .map_err(db_error)?;
    found.map(|_| ()).ok_or(StoreError::Vanished)
}

#[async_trait]
impl CollectionStore for SqliteStore {
    async fn create_collection(&self, tenant_id: &str, new: NewCollection) -> StoreResult<Collection> {
        let tenant_id = tenant_id.to_owned();
        self.engine
            .write(move |c| {
                live_tenant(c, &tenant_id)?;
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
        self.engine
            .read_point(|c| {
                let tombstone = Tombstone::new(kind::COLLECTION, tenant_id, name);
                lookup(
                    c,
                    &format!("SELECT {COLLECTION_COLS} FROM collections WHERE tenant_id = ?1 AND name = ?2"),
                    params![tenant_id, name],
                    collection_row,
                    tombstone,
                )
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
}
