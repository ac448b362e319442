//! Moving a store from SQLite to PostgreSQL (`canon migrate-store`).
//!
//! [`sqlite_to_postgres`] copies every table that holds state (see
//! `tables.rs` for the list, in dependency order, and [`NOT_COPIED`] for
//! what is left behind and why) from an embedded SQLite file into an empty
//! PostgreSQL database, then compares row counts per table (and records per
//! tenant) on both sides. The source is read in one snapshot under its
//! exclusive lock, so no server can write to it meanwhile; the target gets
//! the migrations `canon serve` runs, then one transaction per batch (rows
//! sent as one array per column and unnested, so a batch is one statement),
//! while the next batch is being read. Nothing is held whole in memory: a
//! batch is at most `batch_rows` rows or about `batch_bytes` bytes, and the
//! reader is at most two batches ahead of the writer.
//!
//! Values are carried as stored: ids, versions, ETags, timestamps, key
//! hashes (keys keep working), sealed device headers (the same
//! `CANON_SECRET_KEY` opens them), job results. The one translation is the
//! PostgreSQL store's own spelling: JSONB beside each record's text, unique
//! values in JSONB's rendering, booleans, the operator key's empty tenant.

mod source;
mod tables;
mod target;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

pub use tables::NOT_COPIED;

use source::Source;
use tables::TABLES;
use target::Target;

/// How the copy batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrateOptions {
    /// Rows per batch (one insert, one transaction).
    pub batch_rows: usize,
    /// Bytes after which a batch is sent even if it has fewer rows (job
    /// blobs are chunks of about 1 MiB each).
    pub batch_bytes: usize,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        MigrateOptions {
            batch_rows: 1000,
            batch_bytes: 16 << 20,
        }
    }
}

/// Why the move did not happen (or stopped).
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The source file is opened by another process, most likely a running
    /// `canon serve`.
    #[error(
        "{0} is in use (is a `canon serve` running on it?): stop every server on it first, then run the move again"
    )]
    SourceInUse(String),
    /// The source's schema is not the one this build writes.
    #[error(
        "the source's schema is v{found}, this build's is v{expected}: {}",
        if found < expected { "start and stop this version's `canon serve` on it once (it migrates the file), then move it" } else { "use the build that wrote it" }
    )]
    SourceVersion {
        /// The source's `user_version`.
        found: i64,
        /// This build's.
        expected: i64,
    },
    /// The target database holds data already.
    #[error("the target database is not empty ({}): move into a new, empty database", describe_occupied(.0))]
    TargetNotEmpty(Vec<(String, u64)>),
    /// A table on either side that this build does not know what to do with
    /// (a schema this build does not match).
    #[error("tables this build does not copy: {}", .0.join(", "))]
    UnknownTables(Vec<String>),
    /// Columns on either side that the copy does not carry (`table.column`,
    /// and which side): this build's copy is behind its own schema.
    #[error("columns the copy does not carry: {}", .0.join(", "))]
    UncarriedColumns(Vec<String>),
    /// Reading the source failed.
    #[error("the source: {0}")]
    Source(String),
    /// The target could not be connected to or migrated: nothing of the
    /// copy was written (its schema may have been, which a next run uses).
    #[error("cannot use the target: {0}")]
    TargetUnavailable(String),
    /// Writing the target failed during the copy. The target may hold part
    /// of the copy: drop and recreate the database before running again.
    #[error("the target: {0}")]
    Target(String),
}

fn describe_occupied(tables: &[(String, u64)]) -> String {
    tables
        .iter()
        .map(|(t, n)| format!("{t}: {n} rows"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Told how the copy goes (the CLI draws a progress bar).
pub trait Progress: Send + Sync {
    /// The copy starts: `total` rows to copy.
    fn begin(&self, total: u64);
    /// `rows` more rows of `table` were copied (committed).
    fn copied(&self, table: &str, rows: u64);
    /// The copy ended, before the verification: `rows` copied in `took`
    /// (from `begin` to the last commit). The same figures as
    /// [`Summary::rows`] and [`Summary::copying`], so a rate shown now and
    /// one computed from the summary agree.
    fn done(&self, rows: u64, took: Duration);
}

/// Rows of one table on both sides after the copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCount {
    /// The table (or `records of tenant <id>`).
    pub table: String,
    /// Rows in the source.
    pub source: u64,
    /// Rows in the target.
    pub target: u64,
}

/// What the move did, and whether both sides agree.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Each copied table's counts, in copy order.
    pub tables: Vec<TableCount>,
    /// Records per tenant (`table` is the tenant's id).
    pub records_by_tenant: Vec<TableCount>,
    /// Rows copied in all.
    pub rows: u64,
    /// The target's cache generation afterwards.
    pub generation: i64,
    /// How long copying the rows took: from [`Progress::begin`] to the
    /// last commit (what a rate of rows per second is over).
    pub copying: Duration,
    /// How long the whole move took: opening both sides, the target's
    /// migrations, the checks before, the copy and the verification.
    pub elapsed: Duration,
}

impl Summary {
    /// The counts that differ; empty when the move is verified.
    pub fn mismatches(&self) -> Vec<&TableCount> {
        self.tables
            .iter()
            .chain(&self.records_by_tenant)
            .filter(|c| c.source != c.target)
            .collect()
    }
}

/// Copies the SQLite store at `from` into the empty PostgreSQL database at
/// `to` (migrating it first), then verifies the counts. `Ok` carries the
/// summary, mismatches included: the caller fails when
/// [`Summary::mismatches`] is not empty.
///
/// Reading SQLite blocks: the reader runs on a blocking thread, and the
/// short checks before it on the caller's.
pub async fn sqlite_to_postgres(
    from: &Path,
    to: &str,
    options: MigrateOptions,
    progress: &dyn Progress,
) -> Result<Summary, MigrateError> {
    let started = Instant::now();
    let source = Source::open(from)?;
    let unknown = unknown_tables(&source.table_names()?);
    if !unknown.is_empty() {
        return Err(MigrateError::UnknownTables(unknown));
    }
    let mut uncarried = source_uncarried(&source)?;
    let mut target = Target::open(to).await?;
    uncarried.extend(target_uncarried(&target).await?);
    if !uncarried.is_empty() {
        return Err(MigrateError::UncarriedColumns(uncarried));
    }
    let mut counts = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        counts.push(source.count(table.name)?);
    }
    let source_by_tenant = source.records_by_tenant()?;
    let source_generation = source.generation()?;

    let unknown: Vec<String> = Target::unknown(&target.table_names().await?)
        .into_iter()
        .map(str::to_owned)
        .collect();
    if !unknown.is_empty() {
        return Err(MigrateError::UnknownTables(unknown));
    }
    let occupied = target.occupied().await?;
    if !occupied.is_empty() {
        return Err(MigrateError::TargetNotEmpty(occupied));
    }

    let total: u64 = counts.iter().sum();
    let copy_started = Instant::now();
    progress.begin(total);
    // Two batches in flight: one being inserted, one read ahead.
    let (sender, mut batches) = tokio::sync::mpsc::channel(2);
    let reader = tokio::task::spawn_blocking(move || {
        source.read_all(options.batch_rows.max(1), options.batch_bytes.max(1), |batch| {
            sender.blocking_send(batch).is_ok()
        })
        // The source (and its lock) goes when the reader is done.
    });
    let mut rows = 0;
    while let Some(batch) = batches.recv().await {
        target.insert(&batch).await?;
        rows += batch.rows as u64;
        progress.copied(TABLES[batch.table].name, batch.rows as u64);
    }
    reader
        .await
        .map_err(|e| MigrateError::Source(format!("the reader stopped: {e}")))??;
    let copying = copy_started.elapsed();
    progress.done(rows, copying);
    let generation = target.move_generation(source_generation).await?;

    let mut tables = Vec::with_capacity(TABLES.len());
    for (table, source) in TABLES.iter().zip(counts) {
        tables.push(TableCount {
            table: table.name.to_owned(),
            source,
            target: target.count(table.name).await?,
        });
    }
    let records_by_tenant = pair_up(source_by_tenant, target.records_by_tenant().await?);
    Ok(Summary {
        tables,
        records_by_tenant,
        rows,
        generation,
        copying,
        elapsed: started.elapsed(),
    })
}

/// Columns of the source's copied tables that no column of the copy
/// carries, and columns the copy expects that the source lacks.
fn source_uncarried(source: &Source) -> Result<Vec<String>, MigrateError> {
    let mut uncarried = Vec::new();
    for table in TABLES {
        let carried: Vec<&str> = table.columns.iter().filter_map(|c| c.carries).collect();
        let present = source.column_names(table.name)?;
        differences(table.name, "SQLite", &carried, &present, &mut uncarried);
    }
    Ok(uncarried)
}

/// Columns of the target's copied tables that the copy does not fill, and
/// columns it fills that the target lacks.
async fn target_uncarried(target: &Target) -> Result<Vec<String>, MigrateError> {
    let mut uncarried = Vec::new();
    for table in TABLES {
        let carried: Vec<&str> = table.columns.iter().map(|c| c.name).collect();
        let present = target.column_names(table.name).await?;
        differences(table.name, "PostgreSQL", &carried, &present, &mut uncarried);
    }
    Ok(uncarried)
}

/// Adds to `out` what `present` has and `carried` lacks, and the reverse.
fn differences(table: &str, side: &str, carried: &[&str], present: &[String], out: &mut Vec<String>) {
    for name in present {
        if !carried.contains(&name.as_str()) {
            out.push(format!("{table}.{name} ({side}, not copied)"));
        }
    }
    for name in carried {
        if !present.iter().any(|p| p == name) {
            out.push(format!("{table}.{name} (missing in {side})"));
        }
    }
}

/// Source tables neither copied nor left behind on purpose.
fn unknown_tables(names: &[String]) -> Vec<String> {
    names
        .iter()
        .filter(|n| !TABLES.iter().any(|t| t.name == n.as_str()) && !NOT_COPIED.iter().any(|(s, _)| s == n))
        .cloned()
        .collect()
}

/// Both sides' per-tenant counts, by tenant (a tenant missing on one side
/// counts 0 there).
fn pair_up(source: Vec<(String, u64)>, target: Vec<(String, u64)>) -> Vec<TableCount> {
    let mut both: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (tenant, n) in source {
        both.entry(tenant).or_default().0 = n;
    }
    for (tenant, n) in target {
        both.entry(tenant).or_default().1 = n;
    }
    both.into_iter()
        .map(|(table, (source, target))| TableCount { table, source, target })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    /// A store's file, made by the store (every migration run) and closed.
    async fn fresh_sqlite(dir: &Path) -> Source {
        let path = dir.join("source.db");
        let store = crate::sqlite::SqliteStore::open(&path).expect("open");
        store.close().await.expect("close");
        drop(store);
        // The store's background thread lets go of the file within a tick.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match Source::open(&path) {
                Ok(source) => return source,
                Err(MigrateError::SourceInUse(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("open the source: {e}"),
            }
        }
    }

    /// Fails when either schema gains a table or a column that the copy
    /// does not carry (or loses one it expects): add it to `tables.rs`.
    /// PostgreSQL's side runs when `CANON_TEST_POSTGRES_URL` is set.
    #[tokio::test]
    async fn every_column_of_both_schemas_is_carried() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = fresh_sqlite(dir.path()).await;
        assert_eq!(source_uncarried(&source).expect("columns"), Vec::<String>::new());
        assert_eq!(
            unknown_tables(&source.table_names().expect("tables")),
            Vec::<String>::new()
        );
        for table in TABLES {
            assert!(
                source.table_names().expect("tables").iter().any(|n| n == table.name),
                "{} is not a SQLite table",
                table.name
            );
        }
        let Ok(admin_url) = std::env::var("CANON_TEST_POSTGRES_URL") else {
            eprintln!("CANON_TEST_POSTGRES_URL is not set: the PostgreSQL side is not checked");
            return;
        };
        let name = format!("canon_migrate_columns_{}_{}", std::process::id(), crate::now_millis());
        let (admin, conn) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create");
        let base = admin_url.split('?').next().unwrap_or(&admin_url);
        let scheme_end = base.find("://").map_or(0, |i| i + 3);
        let server = base[scheme_end..]
            .find('/')
            .map_or(base, |slash| &base[..scheme_end + slash]);
        let target = Target::open(&format!("{server}/{name}")).await.expect("target");
        let uncarried = target_uncarried(&target).await.expect("columns");
        let names = target.table_names().await.expect("tables");
        let unknown: Vec<&str> = Target::unknown(&names);
        let empty = target.occupied().await.expect("occupied");
        drop(target);
        let _ = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
        assert_eq!(uncarried, Vec::<String>::new());
        assert_eq!(unknown, Vec::<&str>::new());
        assert_eq!(empty, Vec::new(), "a freshly migrated database counts as empty");
    }

    #[test]
    fn a_column_on_one_side_only_is_named() {
        let mut out = Vec::new();
        differences(
            "devices",
            "SQLite",
            &["id", "name"],
            &["id".into(), "name".into(), "trust".into()],
            &mut out,
        );
        differences("devices", "PostgreSQL", &["id", "gone"], &["id".into()], &mut out);
        assert_eq!(
            out,
            [
                "devices.trust (SQLite, not copied)",
                "devices.gone (missing in PostgreSQL)"
            ]
        );
    }

    #[test]
    fn a_batch_is_one_insert_of_unnested_arrays() {
        let maintenance = TABLES.iter().find(|t| t.name == "maintenance").expect("maintenance");
        assert_eq!(
            maintenance.insert(),
            "INSERT INTO maintenance (id, enabled, retry_after_seconds, message, version, updated_at) \
             SELECT u.c0, u.c1, u.c2, u.c3, u.c4, u.c5 \
             FROM unnest($1::int8[], $2::bool[], $3::int8[], $4::text[], $5::int8[], $6::int8[]) AS u(c0, c1, c2, c3, c4, c5) \
             ON CONFLICT (id) DO UPDATE SET enabled = EXCLUDED.enabled, retry_after_seconds = EXCLUDED.retry_after_seconds, \
             message = EXCLUDED.message, version = EXCLUDED.version, updated_at = EXCLUDED.updated_at"
        );
        let records = TABLES.iter().find(|t| t.name == "records").expect("records");
        assert!(
            records
                .select()
                .starts_with("SELECT c.tenant_id, t.collection_id, t.id, t.data, t.data, ")
        );
    }
}
