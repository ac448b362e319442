//! The SQLite side: opened without migrating, locked against a server, read
//! in one snapshot, a batch at a time.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, ffi};

use super::MigrateError;
use super::tables::{Kind, TABLES, Table};
use crate::postgres::jsonb_text;

/// One batch's values, column by column (each column becomes one array
/// parameter of the insert).
#[derive(Debug)]
pub(crate) enum Values {
    /// Text (also JSON text).
    Text(Vec<Option<String>>),
    /// Integers.
    Int(Vec<Option<i64>>),
    /// Booleans.
    Bool(Vec<Option<bool>>),
    /// Bytes.
    Bytes(Vec<Option<Vec<u8>>>),
}

impl Values {
    fn new(kind: Kind, capacity: usize) -> Values {
        match kind {
            Kind::Text | Kind::Jsonb | Kind::JsonbAsText => Values::Text(Vec::with_capacity(capacity)),
            Kind::Int => Values::Int(Vec::with_capacity(capacity)),
            Kind::Bool => Values::Bool(Vec::with_capacity(capacity)),
            Kind::Bytes => Values::Bytes(Vec::with_capacity(capacity)),
        }
    }

    /// The parameter for the insert.
    pub(crate) fn as_param(&self) -> &(dyn tokio_postgres::types::ToSql + Sync) {
        match self {
            Values::Text(v) => v,
            Values::Int(v) => v,
            Values::Bool(v) => v,
            Values::Bytes(v) => v,
        }
    }

    /// Appends column `i` of `row` (of `kind`); returns the bytes it holds.
    fn push(&mut self, kind: Kind, row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<usize> {
        Ok(match self {
            Values::Text(v) => {
                let text: Option<String> = row.get(i)?;
                let text = match (kind, text) {
                    (Kind::Jsonb | Kind::JsonbAsText, Some(t)) => Some(jsonb_text(&t).into_owned()),
                    (_, t) => t,
                };
                let n = text.as_ref().map_or(0, String::len);
                v.push(text);
                n
            }
            Values::Int(v) => {
                v.push(row.get(i)?);
                8
            }
            Values::Bool(v) => {
                v.push(row.get::<_, Option<i64>>(i)?.map(|n| n != 0));
                1
            }
            Values::Bytes(v) => {
                let bytes: Option<Vec<u8>> = row.get(i)?;
                let n = bytes.as_ref().map_or(0, Vec::len);
                v.push(bytes);
                n
            }
        })
    }
}

/// Rows of one table, read together and inserted together.
#[derive(Debug)]
pub(crate) struct Batch {
    /// Index of the table in [`TABLES`].
    pub(crate) table: usize,
    /// How many rows.
    pub(crate) rows: usize,
    /// Their values, one entry per column.
    pub(crate) columns: Vec<Values>,
}

/// The source database, opened and locked for the copy.
pub(crate) struct Source {
    conn: Connection,
}

fn source_error(e: rusqlite::Error) -> MigrateError {
    MigrateError::Source(e.to_string())
}

impl Source {
    /// Opens the file at `path` (never creating it) and takes its exclusive
    /// lock for the whole copy, so no server writes to it meanwhile: a
    /// running `canon serve` holds the file open, which makes this fail at
    /// once ([`MigrateError::SourceInUse`]). Then checks its schema version.
    pub(crate) fn open(path: &Path) -> Result<Source, MigrateError> {
        if !path.is_file() {
            return Err(MigrateError::Source(format!("{} is not a file", path.display())));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(path, flags).map_err(source_error)?;
        // No wait: a lock held is a server (or another tool) using the file.
        conn.busy_timeout(std::time::Duration::ZERO).map_err(source_error)?;
        // EXCLUSIVE locking in WAL mode needs every other connection gone;
        // a `canon serve` keeps its connections for its whole life.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
            .map_err(source_error)?;
        match conn.execute_batch("BEGIN EXCLUSIVE") {
            Ok(()) => {}
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, ffi::ErrorCode::DatabaseBusy | ffi::ErrorCode::DatabaseLocked) =>
            {
                return Err(MigrateError::SourceInUse(path.display().to_string()));
            }
            Err(e) => return Err(source_error(e)),
        }
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(source_error)?;
        if version != crate::sqlite::SCHEMA_VERSION {
            return Err(MigrateError::SourceVersion {
                found: version,
                expected: crate::sqlite::SCHEMA_VERSION,
            });
        }
        Ok(Source { conn })
    }

    /// The names of the source's tables.
    pub(crate) fn table_names(&self) -> Result<Vec<String>, MigrateError> {
        let mut s = self
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
            .map_err(source_error)?;
        let names = s
            .query_map([], |r| r.get(0))
            .map_err(source_error)?
            .collect::<Result<Vec<String>, _>>()
            .map_err(source_error)?;
        Ok(names)
    }

    /// The columns of the source's table `table`.
    pub(crate) fn column_names(&self, table: &str) -> Result<Vec<String>, MigrateError> {
        let mut s = self
            .conn
            .prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
            .map_err(source_error)?;
        let names = s
            .query_map([table], |r| r.get(0))
            .map_err(source_error)?
            .collect::<Result<Vec<String>, _>>()
            .map_err(source_error)?;
        Ok(names)
    }

    /// Rows of `table` (all of them, not only those the copy reads: an
    /// orphan left behind shows as a mismatch).
    pub(crate) fn count(&self, table: &str) -> Result<u64, MigrateError> {
        let n: i64 = self
            .conn
            .query_row(&format!("SELECT count(*) FROM main.{table}"), [], |r| r.get(0))
            .map_err(source_error)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Records per tenant.
    pub(crate) fn records_by_tenant(&self) -> Result<Vec<(String, u64)>, MigrateError> {
        let mut s = self
            .conn
            .prepare(
                "SELECT c.tenant_id, count(*) FROM main.records AS r
                 JOIN main.collections AS c ON c.id = r.collection_id GROUP BY c.tenant_id ORDER BY c.tenant_id",
            )
            .map_err(source_error)?;
        let rows = s
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(source_error)?
            .map(|r| r.map(|(t, n)| (t, u64::try_from(n).unwrap_or(0))))
            .collect::<Result<Vec<_>, _>>()
            .map_err(source_error)?;
        Ok(rows)
    }

    /// The source's cache generation.
    pub(crate) fn generation(&self) -> Result<i64, MigrateError> {
        self.conn
            .query_row("SELECT n FROM cache_generation WHERE id = 1", [], |r| r.get(0))
            .map_err(source_error)
    }

    /// Reads every copied table in order, handing each batch (at most
    /// `batch_rows` rows, or about `batch_bytes`) to `send`; stops when
    /// `send` returns false (the writer gave up).
    pub(crate) fn read_all(
        &self,
        batch_rows: usize,
        batch_bytes: usize,
        mut send: impl FnMut(Batch) -> bool,
    ) -> Result<(), MigrateError> {
        for (index, table) in TABLES.iter().enumerate() {
            if !self.read_table(index, table, batch_rows, batch_bytes, &mut send)? {
                return Ok(());
            }
        }
        Ok(())
    }

    fn read_table(
        &self,
        index: usize,
        table: &Table,
        batch_rows: usize,
        batch_bytes: usize,
        send: &mut impl FnMut(Batch) -> bool,
    ) -> Result<bool, MigrateError> {
        let fresh = || Batch {
            table: index,
            rows: 0,
            columns: table.columns.iter().map(|c| Values::new(c.kind, batch_rows)).collect(),
        };
        let mut s = self.conn.prepare(&table.select()).map_err(source_error)?;
        let mut rows = s.query([]).map_err(source_error)?;
        let mut batch = fresh();
        let mut bytes = 0;
        while let Some(row) = rows.next().map_err(source_error)? {
            for (i, (column, values)) in table.columns.iter().zip(&mut batch.columns).enumerate() {
                bytes += values.push(column.kind, row, i).map_err(source_error)?;
            }
            batch.rows += 1;
            // Job blobs are chunks of about 1 MiB: a batch is bounded by
            // bytes as well as rows.
            if batch.rows >= batch_rows || bytes >= batch_bytes {
                if !send(std::mem::replace(&mut batch, fresh())) {
                    return Ok(false);
                }
                bytes = 0;
            }
        }
        Ok(batch.rows == 0 || send(batch))
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        // Read only: nothing to keep. Closing the connection releases the lock.
        let _ = self.conn.execute_batch("ROLLBACK");
    }
}
