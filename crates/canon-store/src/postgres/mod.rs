//! The PostgreSQL backend, for several Canon nodes on one database.
//!
//! A pool of connections (deadpool-postgres over tokio-postgres), sized by
//! configuration. Every statement is sent with its parameter types
//! (`query_typed`: parse, bind and execute in one round trip, on the unnamed
//! statement), so no named prepared statement outlives its transaction and
//! no session state is kept between transactions: the store works through
//! PgBouncer in transaction-pooling mode. Every write runs in one
//! transaction at PostgreSQL's default isolation (read committed); what a
//! write checks (expectations, leases, a tenant being live, a job's lease)
//! is made stable by a row lock or a transaction-scoped advisory lock taken
//! before the check (docs/deploy.md, "What the PostgreSQL backend
//! guarantees"). Uniqueness is enforced by primary keys and unique
//! constraints, hit with `ON CONFLICT DO NOTHING` so the field can be named
//! without aborting the transaction.
//!
//! One file per domain, mirroring `sqlite/`: `tenants.rs`, `collections.rs`,
//! `records.rs`, `leases.rs`, `idempotency.rs`, `secrets.rs`, `jobs.rs`,
//! `maintenance.rs`, `quotas.rs`, `tenant_deletion.rs`; `rows.rs` holds row
//! mapping and the helpers they share; `pool.rs` the connection pool, the
//! migrations and the cache generation's poller.

mod collections;
mod devices;
mod idempotency;
mod jobs;
mod leases;
mod maintenance;
mod pool;
mod quotas;
mod records;
mod rows;
mod secrets;
mod tenant_deletion;
mod tenants;

use std::time::Duration;

use async_trait::async_trait;

use crate::model::*;
use crate::{Store, StoreResult};
pub use pool::{GENERATION_POLL, PostgresOptions, call_bound};
use pool::{Pool, Tx};
pub(crate) use records::jsonb_text;
use rows::*;

/// The PostgreSQL store.
pub struct PostgresStore {
    pool: Pool,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`),
    /// migrates it (safe when several nodes start at once: the migrations
    /// run under a transaction-scoped advisory lock) and starts the cache
    /// generation's poller. Fails with [`crate::StoreError::Unavailable`]
    /// when the database cannot be reached within `options.timeout`.
    pub async fn connect(url: &str, options: PostgresOptions) -> StoreResult<PostgresStore> {
        let pool = Pool::connect(url, options).await?;
        Ok(PostgresStore { pool })
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> StoreResult<()> {
        // Readiness must answer within the wait bound, whatever the call
        // bound of other calls.
        self.pool
            .run_within(self.pool.timeout(), async {
                let mut c = self.pool.conn().await?;
                // A read-write transaction that reads the database: a node
                // left on a standby (read-only after a failover) is not ready.
                let tx = c.transaction().await?;
                let result = async {
                    let row = tx
                        .query_typed_one("SELECT n, pg_is_in_recovery() FROM cache_generation WHERE id = 1", &[])
                        .await?;
                    let in_recovery: bool = row.try_get(1)?;
                    if in_recovery {
                        return Err(crate::StoreError::Unavailable(
                            "the database is a read-only standby".into(),
                        ));
                    }
                    Ok(())
                }
                .await;
                self.pool.finish(tx, result, false).await
            })
            .await
    }

    fn generation(&self) -> u64 {
        self.pool.generation()
    }

    async fn purge_expired(&self) -> StoreResult<u64> {
        self.pool
            .run(async {
                let mut c = self.pool.conn().await?;
                let tx: Tx<'_> = c.transaction().await?;
                let result = async {
                    let now = now_millis();
                    let mut n = 0;
                    for sql in [
                        "DELETE FROM tombstones WHERE expires_at <= $1",
                        "DELETE FROM locks WHERE expires_at <= $1",
                        "DELETE FROM idempotency_keys WHERE expires_at <= $1",
                        // Quota counts of days before yesterday (a node may
                        // still flush yesterday's last seconds).
                        "DELETE FROM quota_usage WHERE day < $1 / 86400000 - 1",
                    ] {
                        n += tx.execute_typed(sql, &[int(&now)]).await?;
                    }
                    n += tenant_deletion::release_names(&tx).await?;
                    Ok(n)
                }
                .await;
                self.pool.finish(tx, result, true).await
            })
            .await
    }

    async fn close(&self) -> StoreResult<()> {
        self.pool.close(Duration::from_secs(30)).await
    }
}
