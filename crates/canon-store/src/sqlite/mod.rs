//! The embedded SQLite backend.
//!
//! One file, WAL mode, `synchronous=FULL`, writes group-committed by a
//! single writer thread ([`engine`]), reads on a pool of read-only
//! connections. Schema migrations run at open, tracked by `user_version`.
//!
//! One file per domain, each implementing its trait for [`SqliteStore`]:
//! `tenants.rs` (tenants, users, keys), `collections.rs`, `records.rs`,
//! `leases.rs`, `idempotency.rs`, `secrets.rs`, `jobs.rs`; `rows.rs` holds the row
//! mapping and the helpers they share (errors, tombstones, paging), and
//! `tenant_deletion.rs` the steps of a tenant's deletion, which span the
//! domains. A PostgreSQL backend mirrors this layout file for file.

mod collections;
mod devices;
mod engine;
mod idempotency;
mod jobs;
mod leases;
mod maintenance;
mod quotas;
mod record_cache;
mod records;
mod rows;
mod secrets;
mod tenant_deletion;
mod tenants;

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::Connection;

use crate::model::*;
use crate::{Store, StoreResult};
use engine::Engine;
use engine::internal;
pub use engine::{DEFAULT_TIMEOUT, FileLocking, MAX_BATCH, Options};
pub use records::SORT_PREFIX_CHARS;
pub(crate) use records::register_functions;
use rows::db_error;

/// Schema migrations, applied in order; `user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    include_str!("schema.sql"),
    include_str!("schema_v2.sql"),
    include_str!("schema_v3.sql"),
    include_str!("schema_v4.sql"),
    include_str!("schema_v5.sql"),
    include_str!("schema_v6.sql"),
    include_str!("schema_v7.sql"),
    include_str!("schema_v8.sql"),
    include_str!("schema_v9.sql"),
    include_str!("schema_v10.sql"),
    include_str!("schema_v11.sql"),
    include_str!("schema_v12.sql"),
];

/// The schema version this build writes (`PRAGMA user_version` after
/// every migration ran).
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The SQLite store.
pub struct SqliteStore {
    engine: Engine,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it,
    /// waiting at most [`DEFAULT_TIMEOUT`] for the database in any call.
    pub fn open(path: impl AsRef<Path>) -> StoreResult<SqliteStore> {
        Self::open_with_timeout(path, DEFAULT_TIMEOUT)
    }

    /// Opens the database at `path` like [`SqliteStore::open`]; every wait
    /// for the database (a lock another process holds, a free reader, a place
    /// in the writer's queue) lasts at most `timeout`, then the call fails
    /// with [`crate::StoreError::Unavailable`].
    pub fn open_with_timeout(path: impl AsRef<Path>, timeout: Duration) -> StoreResult<SqliteStore> {
        Self::open_with(
            path,
            Options {
                timeout,
                ..Options::default()
            },
        )
    }

    /// Opens the database at `path` with `options`: the bound on every wait
    /// for it and who else may open the file ([`FileLocking`]).
    pub fn open_with(path: impl AsRef<Path>, options: Options) -> StoreResult<SqliteStore> {
        let engine = Engine::start(path.as_ref(), 4, options, migrate)?;
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

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        self.engine.ping().await
    }

    async fn close(&self) -> StoreResult<()> {
        self.engine.close().await
    }

    fn generation(&self) -> u64 {
        self.engine.generation()
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
                    // Quota counts of days before yesterday (a node may
                    // still flush yesterday's last seconds).
                    "DELETE FROM quota_usage WHERE day < ?1 / 86400000 - 1",
                ] {
                    n += c.execute(sql, [now]).map_err(db_error)? as u64;
                }
                n += tenant_deletion::release_names(c)?;
                Ok(n)
            })
            .await
    }
}
