//! Collections, their renames and deletion ([`CollectionStore`]).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::PostgresStore;
use super::rows::*;
use crate::model::*;
use crate::prelude::*;
use crate::{StoreError, StoreResult};

async fn drop_alias(c: &impl Db, tenant_id: &str, name: &str) -> StoreResult<()> {
    c.execute_typed(
        "DELETE FROM collection_aliases WHERE tenant_id = $1 AND name = $2",
        &[text(&tenant_id), text(&name)],
    )
    .await?;
    Ok(())
}

async fn load_collection(c: &impl Db, tenant_id: &str, name: &str, lock: bool) -> StoreResult<Option<Collection>> {
    let sql = format!(
        "SELECT {COLLECTION_COLS} FROM collections WHERE tenant_id = $1 AND name = $2{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let row = c.query_typed_opt(&sql, &[text(&tenant_id), text(&name)]).await?;
    row.map(|r| collection_row(&r)).transpose()
}

/// Serializes the writes of one tenant's collections: creations, updates
/// (renames among them) and deletions. A name checked free stays free until
/// the change commits, and a write that misses its collection reads the
/// tombstone in a second statement (after waiting on a concurrent
/// deletion's row lock it must see that deletion's tombstone) with no
/// re-create committing between the two, which would make a collection that
/// is there answer `Vanished`.
///
/// Lock order: the tenant's row (`FOR SHARE`, creations only) before this
/// lock, this lock before a collection's row; record writes take the
/// collection's row, then the record's lock, and never this one.
async fn lock_names(c: &impl Db, tenant_id: &str) -> StoreResult<()> {
    lock(c, &format!("collection-names/{tenant_id}")).await
}

/// Indexes every record of `collection` again for its unique fields, one
/// statement per field; a value two records share is a conflict naming the
/// field.
async fn reindex(c: &impl Db, collection: &Collection) -> StoreResult<()> {
    c.execute_typed(
        "DELETE FROM unique_values WHERE tenant_id = $1 AND collection_id = $2",
        &[text(&collection.tenant_id), text(&collection.id)],
    )
    .await?;
    for field in &collection.unique {
        let row = c
            .query_typed_one(
                "WITH candidates AS (
                   SELECT id, (data -> $3)::TEXT AS value FROM records
                   WHERE tenant_id = $1 AND collection_id = $2 AND jsonb_typeof(data -> $3) <> 'null'
                 ), inserted AS (
                   INSERT INTO unique_values (tenant_id, collection_id, field, value, record_id)
                   SELECT $1, $2, $3, value, id FROM candidates
                   ON CONFLICT DO NOTHING RETURNING 1
                 )
                 SELECT (SELECT COUNT(*) FROM candidates), (SELECT COUNT(*) FROM inserted)",
                &[text(&collection.tenant_id), text(&collection.id), text(field)],
            )
            .await?;
        let (candidates, inserted): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        if candidates != inserted {
            return Err(StoreError::Conflict {
                pointer: format!("/data/{field}"),
            });
        }
    }
    Ok(())
}

/// Checks that the collection exists and keeps its row (a key-share lock)
/// until the write commits: its deletion waits, then finds the record.
pub(super) async fn collection_exists(c: &impl Db, collection: &Collection) -> StoreResult<()> {
    let found = c
        .query_typed_opt(
            "SELECT 1 FROM collections WHERE tenant_id = $1 AND id = $2 FOR KEY SHARE",
            &[text(&collection.tenant_id), text(&collection.id)],
        )
        .await?;
    found.map(|_| ()).ok_or(StoreError::Vanished)
}

#[async_trait]
impl CollectionStore for PostgresStore {
    async fn create_collection(&self, tenant_id: &str, new: NewCollection) -> StoreResult<Collection> {
        self.pool
            .write(true, async |tx| {
                live_tenant(tx, tenant_id).await?;
                lock_names(tx, tenant_id).await?;
                let now = now_millis();
                let col = Collection {
                    id: new_id(),
                    tenant_id: tenant_id.to_owned(),
                    name: new.name,
                    schema: new.schema,
                    unique: new.unique,
                    require_if_match: new.require_if_match,
                    version: 1,
                    created_at: now,
                    updated_at: now,
                };
                let (schema, unique) = (col.schema.to_string(), Value::from(col.unique.clone()).to_string());
                let inserted = tx
                    .execute_typed(
                        &format!(
                            "INSERT INTO collections ({COLLECTION_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                                 ON CONFLICT DO NOTHING"
                        ),
                        &[
                            text(&col.id),
                            text(&col.tenant_id),
                            text(&col.name),
                            text(&schema),
                            text(&unique),
                            boolean(&col.require_if_match),
                            int(&col.version),
                            int(&col.created_at),
                            int(&col.updated_at),
                        ],
                    )
                    .await?;
                if inserted == 0 {
                    return Err(StoreError::Conflict {
                        pointer: "/name".into(),
                    });
                }
                clear_tombstone(tx, kind::COLLECTION, &col.tenant_id, &col.name).await?;
                // A new collection under an old name ends that name's redirect.
                drop_alias(tx, &col.tenant_id, &col.name).await?;
                Ok(col)
            })
            .await
    }

    async fn collection(&self, tenant_id: &str, name: &str) -> StoreResult<Lookup<Collection>> {
        self.pool
            .run(async {
                let c = self.pool.conn().await?;
                let tombstone = Tombstone::new(kind::COLLECTION, tenant_id, name);
                lookup(
                    c.client(),
                    &format!("SELECT {COLLECTION_COLS} FROM collections WHERE tenant_id = $1 AND name = $2"),
                    &[text(&tenant_id), text(&name)],
                    collection_row,
                    tombstone,
                )
                .await
            })
            .await
    }

    async fn list_collections(&self, tenant_id: &str, p: PageRequest) -> StoreResult<Page<Collection>> {
        self.pool
            .run(async {
                let c = self.pool.conn().await?;
                page(
                    c.client(),
                    &format!(
                        "SELECT {COLLECTION_COLS} FROM collections WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3"
                    ),
                    &[text(&tenant_id)],
                    &p,
                    collection_row,
                    |col| &col.id,
                )
                .await
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
        self.pool
            .write(true, async |tx| {
                lock_names(tx, tenant_id).await?;
                let Some(current) = load_collection(tx, tenant_id, name, true).await? else {
                    return Err(not_there(tx, kind::COLLECTION, tenant_id, name).await);
                };
                check_existing(&expect, current.version, None)?;
                let id = current.id;
                let has_records = tx
                    .query_typed_opt(
                        "SELECT 1 FROM records WHERE tenant_id = $1 AND collection_id = $2 LIMIT 1",
                        &[text(&tenant_id), text(&id)],
                    )
                    .await?;
                if has_records.is_some() {
                    return Err(StoreError::NotEmpty);
                }
                tx.execute_typed(
                    "DELETE FROM tombstones WHERE kind = $1 AND scope = $2",
                    &[text(&kind::RECORD), text(&id)],
                )
                .await?;
                for sql in [
                    "DELETE FROM collection_aliases WHERE tenant_id = $1 AND collection_id = $2",
                    "DELETE FROM locks WHERE tenant_id = $1 AND collection_id = $2",
                    "DELETE FROM collections WHERE tenant_id = $1 AND id = $2",
                ] {
                    tx.execute_typed(sql, &[text(&tenant_id), text(&id)]).await?;
                }
                put_tombstone(tx, kind::COLLECTION, tenant_id, name, retention).await?;
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
        self.pool
            .write(true, async |tx| {
                    lock_names(tx, tenant_id).await?;
                    let Some(current) = load_collection(tx, tenant_id, name, true).await? else {
                        return Err(not_there(tx, kind::COLLECTION, tenant_id, name).await);
                    };
                    check_existing(&expect, current.version, None)?;
                    let mut next = current.clone();
                    if let Some(new_name) = changes.name.filter(|n| *n != current.name) {
                        if load_collection(tx, tenant_id, &new_name, false).await?.is_some() {
                            return Err(StoreError::Conflict {
                                pointer: "/name".into(),
                            });
                        }
                        drop_alias(tx, tenant_id, &new_name).await?;
                        clear_tombstone(tx, kind::COLLECTION, tenant_id, &new_name).await?;
                        let now = now_millis();
                        tx.execute_typed(
                            "INSERT INTO collection_aliases (tenant_id, name, collection_id, created_at) VALUES ($1, $2, $3, $4)",
                            &[text(&tenant_id), text(&current.name), text(&current.id), int(&now)],
                        )
                        .await?;
                        next.name = new_name;
                    }
                    if let Some(schema) = changes.schema {
                        next.schema = schema;
                    }
                    if let Some(flag) = changes.require_if_match {
                        next.require_if_match = flag;
                    }
                    let reindexed = changes.unique.as_ref().is_some_and(|u| *u != current.unique);
                    if let Some(unique) = changes.unique {
                        next.unique = unique;
                    }
                    next.version = current.version + 1;
                    next.updated_at = now_millis();
                    let (schema, unique) = (next.schema.to_string(), Value::from(next.unique.clone()).to_string());
                    tx.execute_typed(
                        "UPDATE collections SET name = $1, schema = $2, unique_fields = $3, require_if_match = $4,
                           version = $5, updated_at = $6
                         WHERE tenant_id = $7 AND id = $8",
                        &[
                            text(&next.name),
                            text(&schema),
                            text(&unique),
                            boolean(&next.require_if_match),
                            int(&next.version),
                            int(&next.updated_at),
                            text(&tenant_id),
                            text(&next.id),
                        ],
                    )
                    .await?;
                    if reindexed {
                        reindex(tx, &next).await?;
                    }
                    Ok(next)
})
            .await
    }

    async fn collection_alias(&self, tenant_id: &str, name: &str) -> StoreResult<Option<String>> {
        self.pool
            .run(async {
                let c = self.pool.conn().await?;
                let row = c
                    .client()
                    .query_typed_opt(
                        "SELECT c.name FROM collection_aliases a
                         JOIN collections c ON c.tenant_id = a.tenant_id AND c.id = a.collection_id
                         WHERE a.tenant_id = $1 AND a.name = $2",
                        &[text(&tenant_id), text(&name)],
                    )
                    .await?;
                Ok(row.map(|r| r.try_get(0)).transpose()?)
            })
            .await
    }
}
