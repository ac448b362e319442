//! The PostgreSQL side: migrated by the store's own code, checked empty,
//! filled a batch per transaction, counted.

use tokio_postgres::{Client, NoTls, Statement};

use super::MigrateError;
use super::source::Batch;
use super::tables::{BOOKKEEPING, NOT_COPIED, TABLES};
use crate::postgres::{PostgresOptions, PostgresStore};

fn target_error(e: tokio_postgres::Error) -> MigrateError {
    MigrateError::Target(e.to_string())
}

/// The target database, migrated, with the copy's statements prepared.
pub(crate) struct Target {
    client: Client,
    inserts: Vec<Statement>,
    connection: tokio::task::JoinHandle<()>,
}

impl Target {
    /// Runs the migrations `canon serve` runs (by connecting the store as it
    /// does), then connects for the copy.
    pub(crate) async fn open(url: &str) -> Result<Target, MigrateError> {
        // A connection of its own first: its error says what is wrong (no
        // such database, authentication, refused) where the pool's says only
        // that no connection could be made.
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .map_err(|e| MigrateError::TargetUnavailable(describe(&e)))?;
        let connection = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "the connection to the target ended");
            }
        });
        let store = PostgresStore::connect(url, PostgresOptions::default())
            .await
            .map_err(|e| MigrateError::TargetUnavailable(e.to_string()))?;
        drop(store);
        // Each batch commits without waiting for its WAL flush: the last
        // write of the move (`move_generation`) commits synchronously, which
        // flushes the WAL up to it, every batch included, before the move
        // reports success. A crash before that leaves a partial copy, which
        // the operator recreates anyway.
        client
            .batch_execute("SET synchronous_commit = off")
            .await
            .map_err(target_error)?;
        let mut inserts = Vec::with_capacity(TABLES.len());
        for table in TABLES {
            inserts.push(client.prepare(&table.insert()).await.map_err(target_error)?);
        }
        Ok(Target {
            client,
            inserts,
            connection,
        })
    }

    /// The names of the target's tables.
    pub(crate) async fn table_names(&self) -> Result<Vec<String>, MigrateError> {
        let rows = self
            .client
            .query(
                "SELECT table_name::text FROM information_schema.tables
                 WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY 1",
                &[],
            )
            .await
            .map_err(target_error)?;
        rows.iter().map(|r| r.try_get(0).map_err(target_error)).collect()
    }

    /// The columns of the target's table `table`.
    pub(crate) async fn column_names(&self, table: &str) -> Result<Vec<String>, MigrateError> {
        let rows = self
            .client
            .query(
                "SELECT column_name::text FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
                &[&table],
            )
            .await
            .map_err(target_error)?;
        rows.iter().map(|r| r.try_get(0).map_err(target_error)).collect()
    }

    /// Tables holding rows already (besides the rows the migrations make
    /// and those the copy replaces), with their counts.
    pub(crate) async fn occupied(&self) -> Result<Vec<(String, u64)>, MigrateError> {
        let tables = TABLES.iter().filter(|t| t.upsert_on.is_none()).map(|t| t.name).chain(
            NOT_COPIED
                .iter()
                .map(|(name, _)| *name)
                .filter(|n| *n != "cache_generation"),
        );
        let mut occupied = Vec::new();
        for table in tables {
            let n = self.count(table).await?;
            if n > 0 {
                occupied.push((table.to_owned(), n));
            }
        }
        Ok(occupied)
    }

    /// Rows of `table`.
    pub(crate) async fn count(&self, table: &str) -> Result<u64, MigrateError> {
        let row = self
            .client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .map_err(target_error)?;
        let n: i64 = row.try_get(0).map_err(target_error)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Records per tenant.
    pub(crate) async fn records_by_tenant(&self) -> Result<Vec<(String, u64)>, MigrateError> {
        let rows = self
            .client
            .query(
                "SELECT tenant_id, count(*) FROM records GROUP BY tenant_id ORDER BY tenant_id",
                &[],
            )
            .await
            .map_err(target_error)?;
        rows.iter()
            .map(|r| {
                let n: i64 = r.try_get(1).map_err(target_error)?;
                Ok((r.try_get(0).map_err(target_error)?, u64::try_from(n).unwrap_or(0)))
            })
            .collect()
    }

    /// Inserts one batch in a transaction of its own.
    pub(crate) async fn insert(&mut self, batch: &Batch) -> Result<(), MigrateError> {
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            batch.columns.iter().map(|v| v.as_param()).collect();
        let tx = self.client.transaction().await.map_err(target_error)?;
        let inserted = tx
            .execute(&self.inserts[batch.table], &params)
            .await
            .map_err(|e| MigrateError::Target(format!("{}: {}", TABLES[batch.table].name, describe(&e))))?;
        tx.commit().await.map_err(target_error)?;
        if inserted != batch.rows as u64 {
            return Err(MigrateError::Target(format!(
                "{}: {inserted} rows inserted of a batch of {}",
                TABLES[batch.table].name, batch.rows
            )));
        }
        Ok(())
    }

    /// Moves the cache generation past both the source's and the target's
    /// (every node on the target starts from it; moving it is never wrong,
    /// at worst it costs cache misses).
    /// This is the move's last write, and it commits synchronously: its
    /// flush makes every batch before it durable.
    pub(crate) async fn move_generation(&self, source: i64) -> Result<i64, MigrateError> {
        self.client
            .batch_execute("SET synchronous_commit = on")
            .await
            .map_err(target_error)?;
        let row = self
            .client
            .query_one(
                "UPDATE cache_generation SET n = GREATEST(n, $1) + 1 WHERE id = 1 RETURNING n",
                &[&source],
            )
            .await
            .map_err(target_error)?;
        row.try_get(0).map_err(target_error)
    }

    /// Tables the target has that the copy neither carries nor skips on
    /// purpose, nor keeps for itself.
    pub(crate) fn unknown(names: &[String]) -> Vec<&str> {
        names
            .iter()
            .map(String::as_str)
            .filter(|n| {
                !TABLES.iter().any(|t| t.name == *n)
                    && !NOT_COPIED.iter().any(|(s, _)| s == n)
                    && !BOOKKEEPING.contains(n)
            })
            .collect()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// A database error with its detail (the row that broke a constraint).
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_owned(),
        },
        // tokio-postgres says "error connecting to server" and keeps the
        // cause (refused, no such host, …) as the source.
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}
