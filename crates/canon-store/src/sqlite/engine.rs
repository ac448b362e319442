//! The SQLite engine: one writer thread that group-commits, and a pool of
//! read-only connections.
//!
//! Durability costs one fsync per commit (~220/s on the development disk), so
//! throughput comes from putting many writes in one commit, never from
//! weakening `synchronous=FULL`. The writer takes every write waiting in its
//! queue (up to [`MAX_BATCH`]), runs each inside its own SAVEPOINT within one
//! transaction, commits once, and only then answers each caller. A write that
//! fails rolls back to its savepoint and leaves the others untouched; if the
//! commit itself fails, every write of the batch reports the failure.
//!
//! Every wait for the database is bounded by the engine's `timeout`
//! (docs/decisions.md, "When the database is unavailable"): SQLite's busy
//! timeout (a lock held by another process), the wait for a free reader and
//! for a place in the writer's queue. Past it a call fails with
//! [`StoreError::Unavailable`] (HTTP 503) instead of hanging. A database file
//! that was moved, removed or replaced under the open connections is noticed
//! by the checkpointer thread; every call then fails at once, until the file
//! is back.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::record_cache::RecordCache;
use crate::{StoreError, StoreResult};

/// Most writes committed together.
pub const MAX_BATCH: usize = 512;
/// Writes waiting for the writer before callers wait to enqueue.
const QUEUE_DEPTH: usize = 4096;

/// How long a store call waits for the database by default (see
/// [`Engine::start`]).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(1000);

/// Delivers one write's result once the batch's commit outcome is known.
type Completion = Box<dyn FnOnce(Option<&StoreError>) + Send>;
/// One queued write: runs on the writer's connection, says whether it
/// succeeded, and hands back its completion. Given an error instead of the
/// connection (the transaction could not begin), it answers its caller with
/// that error at once and does not run.
type Job = Box<dyn FnOnce(Result<&Connection, &StoreError>) -> (bool, Completion) + Send>;

/// Who may open the database file while an engine has it open.
///
/// `Exclusive` (the default) uses SQLite's `unix-excl` VFS: the first
/// connection locks the file for this process and keeps the lock until the
/// last one closes, and the WAL index lives in this process's memory instead
/// of a shared `-shm` file. A read transaction then takes no POSIX lock
/// (`fcntl`) at all and contends for no cross-process mutex, which were
/// three of the five system calls of a record GET (docs/performance.md).
/// Any other process (a second `canon`, the `sqlite3` shell, a backup
/// tool) cannot open the file while Canon runs. `Shared` keeps SQLite's
/// default locking, for operators who need such a tool beside a running
/// server (docs/decisions.md, "Who may open the SQLite file").
///
/// On platforms without the `unix-excl` VFS both behave as `Shared`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileLocking {
    /// This process only.
    #[default]
    Exclusive,
    /// Any process, with SQLite's default POSIX locks.
    Shared,
}

impl std::str::FromStr for FileLocking {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "exclusive" => Ok(FileLocking::Exclusive),
            "shared" => Ok(FileLocking::Shared),
            other => Err(format!("expected exclusive or shared, not {other:?}")),
        }
    }
}

/// How an engine opens its database: the bound on every wait and who else
/// may open the file.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The bound on every wait for the database (see [`Engine::start`]).
    pub timeout: Duration,
    /// Who else may open the file.
    pub locking: FileLocking,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout: DEFAULT_TIMEOUT,
            locking: FileLocking::default(),
        }
    }
}

/// Opens a connection with Canon's pragmas; `options.timeout` bounds how long
/// a statement waits for a lock another connection holds.
fn open(path: &Path, read_only: bool, options: Options) -> rusqlite::Result<Connection> {
    let exclusive = cfg!(unix) && options.locking == FileLocking::Exclusive;
    // A connection opened read-only takes real POSIX locks even under
    // `unix-excl` (SQLite exempts read-only files from the process lock), so
    // under it readers open read-write and are kept from writing by
    // `query_only` instead.
    let flags = if read_only && !exclusive {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI
    };
    let conn = if exclusive {
        Connection::open_with_flags_and_vfs(path, flags, "unix-excl")?
    } else {
        Connection::open_with_flags(path, flags)?
    };
    conn.busy_timeout(options.timeout)?;
    if read_only {
        conn.pragma_update(None, "query_only", true)?;
    } else {
        // WAL lets readers run beside the writer; FULL syncs the WAL on every
        // commit, so a committed write survives power loss and kill -9.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
    }
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Statement journals (for savepoints) and temporary indexes in memory,
    // not temporary files: nothing in them survives a crash anyway, and on
    // disk every savepoint's first touch of a page cost a write syscall.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Room for every statement a bulk write repeats (see `rows::exec`).
    conn.set_prepared_statement_cache_capacity(128);
    super::register_functions(&conn)?;
    Ok(conn)
}

/// The error of opening the writer's connection with `locking`: a file
/// another process holds gets a message that says so, and what to do. The
/// advice depends on what this process asked for: one that already shares
/// was refused by a process holding the file for itself alone (or a tool's
/// lock), so telling it to share would send the operator in a circle.
fn opening(locking: FileLocking) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            let advice = match locking {
                FileLocking::Exclusive => {
                    "Canon opens its SQLite file for itself alone unless CANON_SQLITE_LOCKING=shared"
                }
                FileLocking::Shared => {
                    "a canon opens its SQLite file for itself alone by default: to share the file, every process \
                     on it needs CANON_SQLITE_LOCKING=shared (and no tool may hold a lock on it)"
                }
            };
            StoreError::Unavailable(format!(
                "the database file is in use by another process (another canon, or a tool such as the sqlite3 \
                 shell); {advice}"
            ))
        }
        _ => internal(e),
    }
}

/// Records a point read's time. The histogram's handle is kept per thread:
/// finding it in the recorder's registry by name and label on every read
/// cost more than recording.
fn read_seconds(elapsed: Duration) {
    thread_local! {
        static READS: metrics::Histogram = metrics::histogram!(crate::metrics::STORE_SECONDS, "op" => "read");
    }
    READS.with(|h| h.record(elapsed.as_secs_f64()));
}

/// Records a write's time (its wait for the group commit included), as
/// [`read_seconds`] does.
fn write_seconds(elapsed: Duration) {
    thread_local! {
        static WRITES: metrics::Histogram = metrics::histogram!(crate::metrics::STORE_SECONDS, "op" => "write");
    }
    WRITES.with(|h| h.record(elapsed.as_secs_f64()));
}

/// The writer and the readers of one database file.
pub struct Engine {
    path: PathBuf,
    writes: mpsc::Sender<Job>,
    readers: Mutex<Vec<Connection>>,
    read_permits: Semaphore,
    /// Tells the checkpointer thread to stop.
    stopping: Arc<AtomicBool>,
    /// Set by [`Engine::close`]: later writes are refused.
    closed: AtomicBool,
    /// Set while the file at `path` is not the one the connections have
    /// open (moved, removed, replaced); kept up to date by the checkpointer.
    detached: Arc<AtomicBool>,
    /// The bound on every wait and who else may open the file.
    options: Options,
    /// Moves whenever the `cache_generation` row does: see
    /// [`Engine::generation`].
    generation: Arc<Generation>,
    /// Records read by key, while the file is this process's alone.
    records: Option<Arc<RecordCache>>,
}

/// The in-process view of the database's `cache_generation` counter
/// (schema v10: triggers move it with every change to tenants, users, keys,
/// collections and aliases). The writer looks at the row before each commit
/// and moves this counter once the commit is durable, before any caller of
/// the batch is answered; the checkpointer looks every
/// [`CHECKPOINT_EVERY`] for changes committed by other processes.
#[derive(Debug, Default)]
pub struct Generation {
    counter: AtomicU64,
}

impl Generation {
    /// The current value.
    pub fn get(&self) -> u64 {
        self.counter.load(Ordering::Acquire)
    }

    fn advance(&self) {
        self.counter.fetch_add(1, Ordering::AcqRel);
    }
}

/// The database's `cache_generation` counter as `conn` sees it (None before
/// the migration that creates it, or when the read fails: the caller then
/// treats it as changed, which only costs cache misses).
/// Runs a transaction-control statement (`BEGIN IMMEDIATE`, `SAVEPOINT op`,
/// `COMMIT`…) from the connection's statement cache: the writer runs
/// several per batch, and parsing them each time was a tenth of a create's
/// instructions.
fn control(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn stored_generation(conn: &Connection) -> Option<i64> {
    conn.prepare_cached("SELECT n FROM cache_generation WHERE id = 1")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .ok()
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
    }
}

/// How often the checkpointer copies the WAL into the database (and checks
/// that the database file is still the one open).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// WAL pages after which the writer checkpoints by itself, should the
/// checkpointer fall behind (SQLite's default is 1000).
const WRITER_CHECKPOINT_PAGES: i64 = 16_000;

/// Copies the WAL into the database file off the writer's thread
/// (`PRAGMA wal_checkpoint(PASSIVE)` on a connection of its own, which never
/// blocks the writer): left to the writer, the checkpoint runs inside the
/// commit that crosses the threshold and stalls every write queued behind it.
///
/// It also watches the database file: see [`FileIdentity`].
fn checkpointer_loop(
    conn: Connection,
    stopping: Arc<AtomicBool>,
    watch: Option<(PathBuf, FileIdentity)>,
    detached: Arc<AtomicBool>,
    generation: Arc<Generation>,
) {
    let mut seen = stored_generation(&conn);
    while !stopping.load(Ordering::Relaxed) {
        std::thread::sleep(CHECKPOINT_EVERY);
        // Changes committed by another process (this one's own writes
        // moved the counter already; moving it twice costs nothing).
        let now = stored_generation(&conn);
        if now != seen || now.is_none() {
            generation.advance();
            seen = now;
        }
        if let Some((path, opened)) = &watch {
            let now = FileIdentity::of(path);
            let gone = now.as_ref() != Some(opened);
            if gone != detached.swap(gone, Ordering::AcqRel) {
                if gone {
                    tracing::error!(path = %path.display(), "the database file was moved, removed or replaced; refusing every store call until it is back");
                } else {
                    tracing::warn!(path = %path.display(), "the database file is back; serving again");
                }
            }
        }
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(error = %e, "a background checkpoint did not run");
        }
    }
}

/// Which file a path names (device and inode).
///
/// SQLite keeps working on the file descriptors it has open: after the
/// database file (or its directory) is moved or removed, reads and writes
/// still succeed, on a file no later process will open, so every write
/// acknowledged from then on would be lost at the next start. The engine
/// therefore compares the path's file with the one it opened and refuses
/// every call while they differ (503): a file moved back resumes service by
/// itself; a file replaced by another needs a restart, since the open
/// connections still hold the old one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileIdentity {
    device: u64,
    inode: u64,
}

impl FileIdentity {
    #[cfg(unix)]
    fn of(path: &Path) -> Option<FileIdentity> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| FileIdentity {
            device: m.dev(),
            inode: m.ino(),
        })
    }

    #[cfg(not(unix))]
    fn of(_: &Path) -> Option<FileIdentity> {
        None
    }
}

impl Engine {
    /// Opens `path` (creating it), runs `setup` on the writer connection
    /// before anything else, and starts the writer thread. `options.timeout`
    /// bounds every wait for the database (a lock held elsewhere, a free reader, a
    /// place in the writer's queue): past it a call fails with
    /// [`StoreError::Unavailable`].
    pub fn start(
        path: &Path,
        readers: usize,
        options: Options,
        setup: impl FnOnce(&mut Connection) -> StoreResult<()>,
    ) -> StoreResult<Engine> {
        let mut writer = open(path, false, options).map_err(opening(options.locking))?;
        setup(&mut writer)?;
        writer
            .pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES)
            .map_err(internal)?;
        // No other process can write an exclusively locked file, so this
        // process's writer sees every change to a record: what a cache of
        // records needs (super::record_cache).
        let records = match (options.locking, FileIdentity::of(path)) {
            (FileLocking::Exclusive, Some(file)) if cfg!(unix) => Some(RecordCache::of_file(file.device, file.inode)),
            _ => None,
        };
        let dropped = match &records {
            Some(cache) => {
                let written = Written::default();
                watch_record_writes(&writer, written.clone()).map_err(internal)?;
                Some((cache.clone(), written))
            }
            None => None,
        };
        let checkpointer = open(path, false, options).map_err(internal)?;
        let stopping = Arc::new(AtomicBool::new(false));
        let detached = Arc::new(AtomicBool::new(false));
        let (flag, seen) = (stopping.clone(), detached.clone());
        let watch = FileIdentity::of(path).map(|id| (path.to_owned(), id));
        let generation = Arc::new(Generation::default());
        let watched = generation.clone();
        std::thread::Builder::new()
            .name("canon-sqlite-checkpointer".into())
            .spawn(move || checkpointer_loop(checkpointer, flag, watch, seen, watched))
            .map_err(|e| StoreError::Internal(format!("cannot start the checkpointer: {e}")))?;
        let readers = readers.max(1);
        let mut pool = Vec::with_capacity(readers);
        for _ in 0..readers {
            pool.push(open(path, true, options).map_err(internal)?);
        }
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let moved = generation.clone();
        std::thread::Builder::new()
            .name("canon-sqlite-writer".into())
            .spawn(move || writer_loop(writer, rx, moved, dropped))
            .map_err(|e| StoreError::Internal(format!("cannot start writer: {e}")))?;
        Ok(Engine {
            path: path.to_owned(),
            writes: tx,
            readers: Mutex::new(pool),
            read_permits: Semaphore::new(readers),
            stopping,
            closed: AtomicBool::new(false),
            detached,
            options,
            generation,
            records,
        })
    }

    /// A number that moves whenever tenants, users, API keys, collections
    /// or collection aliases change: this process's own changes move it
    /// before their write returns, other processes' within
    /// [`CHECKPOINT_EVERY`] (100 ms). Caches of those tables keep an entry
    /// only while it has not moved.
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// The cache of records read by key: only while the file is this
    /// process's alone (see [`FileLocking`]).
    pub fn record_cache(&self) -> Option<&RecordCache> {
        self.records.as_deref()
    }

    /// [`StoreError::Unavailable`] while the database file is not the one
    /// open (see [`FileIdentity`]).
    pub fn attached(&self) -> StoreResult<()> {
        if self.detached.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable(format!(
                "the database file {} was moved, removed or replaced",
                self.path.display()
            )));
        }
        Ok(())
    }

    /// Proves the database answers: a read transaction reads the schema
    /// from the file, and the writer begins and commits a write transaction
    /// (which writes no page, so the probe costs no fsync).
    pub async fn ping(&self) -> StoreResult<()> {
        self.read(|c| {
            c.query_row("PRAGMA schema_version", [], |r| r.get::<_, i64>(0))
                .map_err(super::rows::db_error)
        })
        .await?;
        self.write(|_| Ok(())).await
    }

    /// Runs `op` in the next group commit. Resolves once the commit is
    /// durable (or failed).
    pub async fn write<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable("the store is closed".into()));
        }
        let started = std::time::Instant::now();
        let written = self.enqueue(op).await;
        write_seconds(started.elapsed());
        written
    }

    /// Finishes every write queued so far, refuses later ones, and copies
    /// the WAL into the database file (`wal_checkpoint(TRUNCATE)`), so the
    /// file is complete on its own when the process ends.
    ///
    /// [`StoreError::Unavailable`] when the database could not be had for
    /// that (another process holds its write lock, the file is gone): every
    /// write queued before has been answered all the same, and none was
    /// acknowledged before its commit, so nothing acknowledged is lost; the
    /// WAL stays beside the database and its next open checkpoints it.
    pub async fn close(&self) -> StoreResult<()> {
        self.closed.store(true, Ordering::Release);
        // The queue is first in, first out: once this no-op is answered, so
        // is every write queued before it (committed, or refused with its
        // batch when the transaction could not begin).
        let drained = self.enqueue(|_| Ok(())).await;
        self.stopping.store(true, Ordering::Relaxed);
        let (path, options) = (self.path.clone(), self.options);
        let checkpointed = tokio::task::spawn_blocking(move || {
            let conn = open(&path, false, options).map_err(super::rows::db_error)?;
            // A checkpoint that cannot take the lock within the busy timeout
            // is no error to SQLite: it says so in its first column.
            let busy: i64 = conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))
                .map_err(super::rows::db_error)?;
            if busy != 0 {
                return Err(StoreError::Unavailable(
                    "the WAL could not be checkpointed: another connection holds the database".into(),
                ));
            }
            Ok(())
        })
        .await
        .map_err(internal)?;
        drained.and(checkpointed)
    }

    async fn enqueue<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.attached()?;
        let (tx, rx) = oneshot::channel::<StoreResult<T>>();
        let job: Job = Box::new(move |conn| {
            let conn = match conn {
                Ok(conn) => conn,
                Err(refused) => {
                    let _ = tx.send(Err(refused.clone()));
                    let nothing: Completion = Box::new(|_| {});
                    return (false, nothing);
                }
            };
            let result = op(conn);
            let ok = result.is_ok();
            let completion: Completion = Box::new(move |commit_error| {
                let outcome = match (commit_error, result) {
                    (Some(e), _) => Err(e.clone()),
                    (None, r) => r,
                };
                let _ = tx.send(outcome);
            });
            (ok, completion)
        });
        // A full queue means the writer is stuck (each batch waiting out the
        // timeout on a lock): nothing was submitted yet, so refusing is safe.
        match tokio::time::timeout(self.options.timeout, self.writes.send(job)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(StoreError::Unavailable("the writer has stopped".into())),
            Err(_) => {
                return Err(StoreError::Unavailable(
                    "the writer's queue stayed full past the timeout".into(),
                ));
            }
        }
        // Once queued, the write is waited for without a bound of our own: it
        // may still commit, and a 503 must never hide a committed write. The
        // writer answers within about one timeout (a transaction that cannot
        // begin fails the whole queue at once).
        rx.await.map_err(|_| {
            if self.writes.is_closed() {
                StoreError::Unavailable("the writer stopped before this write's commit".into())
            } else {
                // Only a write that panicked is dropped by a running writer.
                StoreError::Internal("the write panicked and was rolled back".into())
            }
        })?
    }

    /// Runs `op` on a read-only connection, on the blocking pool.
    pub async fn read<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let started = std::time::Instant::now();
        let result = self.read_now(op).await;
        read_seconds(started.elapsed());
        result
    }

    /// Runs `op`, a point read (a row or two by key, answered from
    /// SQLite's page cache in microseconds), on a read-only connection on
    /// the calling thread. A hop to the blocking pool costs more than such
    /// a read (issue 11's profile: about as much as all of HTTP), and in
    /// WAL mode a reader never waits for the writer, so the async worker is
    /// held for no longer than a poll. Scans (lists, exports, job chunks)
    /// use [`Engine::read`].
    pub async fn read_point<T, F>(&self, op: F) -> StoreResult<T>
    where
        F: FnOnce(&Connection) -> StoreResult<T>,
    {
        let started = std::time::Instant::now();
        let (_permit, conn) = self.reader().await?;
        let result = match catch_unwind(AssertUnwindSafe(|| op(&conn))) {
            Ok(result) => {
                self.give_back(conn);
                result
            }
            // The read panicked: its connection is dropped; a fresh one
            // replaces it on the next read.
            Err(_) => Err(StoreError::Internal("a read panicked".into())),
        };
        read_seconds(started.elapsed());
        result
    }

    /// A read-only connection and the permit that counts it. Every reader
    /// busy for the whole timeout means reads are stuck (a lock, a failing
    /// disk) or overloaded: answer now rather than queue.
    async fn reader(&self) -> StoreResult<(tokio::sync::SemaphorePermit<'_>, Connection)> {
        self.attached()?;
        let permit = match tokio::time::timeout(self.options.timeout, self.read_permits.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(StoreError::Unavailable("the readers are closed".into())),
            Err(_) => {
                return Err(StoreError::Unavailable(
                    "no reader became free within the timeout".into(),
                ));
            }
        };
        let conn = self.readers.lock().map_err(|_| internal("reader pool poisoned"))?.pop();
        let conn = match conn {
            Some(c) => c,
            None => open(&self.path, true, self.options).map_err(super::rows::db_error)?,
        };
        Ok((permit, conn))
    }

    /// Returns a reader to the pool after a read that did not panic.
    fn give_back(&self, conn: Connection) {
        if let Ok(mut pool) = self.readers.lock() {
            pool.push(conn);
        }
    }

    async fn read_now<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (_permit, conn) = self.reader().await?;
        let joined = tokio::task::spawn_blocking(move || {
            let result = op(&conn);
            (conn, result)
        })
        .await;
        match joined {
            Ok((conn, result)) => {
                self.give_back(conn);
                result
            }
            // The closure panicked: its connection is dropped; a fresh one
            // replaces it on the next read.
            Err(e) => Err(StoreError::Internal(format!("read task failed: {e}"))),
        }
    }
}

/// The records a batch wrote, as the writer's temporary triggers report
/// them: (collection id, record id).
type Written = Arc<Mutex<Vec<(String, String)>>>;

/// Makes every update and delete of a record on the writer's connection
/// report the record's key into `written` (temporary triggers, this
/// connection's only: nothing is stored in the file). A tenant's deletion
/// deletes its records with statements that fire them too.
///
/// Inserts report nothing, on purpose: only found records are cached, so a
/// cached key names a row that exists, and an insert of that key fails
/// unless a delete (which reports it) removed the row first. A read that
/// raced the insert found nothing and offered nothing. Creates, batches and
/// imports therefore pay no trigger (it cost bulk creates a tenth of their
/// rate).
fn watch_record_writes(conn: &Connection, written: Written) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        "canon_record_written",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DIRECTONLY,
        move |ctx| {
            let key = (ctx.get::<String>(0)?, ctx.get::<String>(1)?);
            written.lock().unwrap_or_else(|e| e.into_inner()).push(key);
            Ok(rusqlite::types::Null)
        },
    )?;
    conn.execute_batch(
        "CREATE TEMP TRIGGER canon_record_updated AFTER UPDATE ON main.records
           BEGIN SELECT canon_record_written(OLD.collection_id, OLD.id);
                 SELECT canon_record_written(NEW.collection_id, NEW.id); END;
         CREATE TEMP TRIGGER canon_record_deleted AFTER DELETE ON main.records
           BEGIN SELECT canon_record_written(OLD.collection_id, OLD.id); END;",
    )
}

fn writer_loop(
    conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    generation: Arc<Generation>,
    records: Option<(Arc<RecordCache>, Written)>,
) {
    // The batch's written keys, moved out of the triggers' list so the
    // cache's lock is never taken while holding it.
    let mut written = Vec::new();
    let mut seen = stored_generation(&conn);
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut completions: Vec<Completion> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        metrics::histogram!(crate::metrics::COMMIT_BATCH).record(batch.len() as f64);
        if let Err(e) = control(&conn, "BEGIN IMMEDIATE") {
            // Another process holds the write lock past the busy timeout, or
            // the disk fails. Every write queued now would wait out the same
            // timeout in turn: answer them all with the error at once, so no
            // caller waits more than about one timeout.
            let refused = super::rows::db_error(e);
            for job in batch.drain(..) {
                let _ = job(Err(&refused));
            }
            let mut also = 0;
            while let Ok(job) = rx.try_recv() {
                let _ = job(Err(&refused));
                also += 1;
            }
            tracing::error!(error = %refused, queued = also, "cannot begin a write transaction; refused the queued writes");
            continue;
        }
        for job in batch.drain(..) {
            if let Err(e) = control(&conn, "SAVEPOINT op") {
                let _ = job(Err(&super::rows::db_error(e)));
                continue;
            }
            match catch_unwind(AssertUnwindSafe(|| job(Ok(&conn)))) {
                Ok((true, done)) => {
                    let _ = control(&conn, "RELEASE op");
                    completions.push(done);
                }
                Ok((false, done)) => {
                    let _ = control(&conn, "ROLLBACK TO op").and_then(|()| control(&conn, "RELEASE op"));
                    completions.push(done);
                }
                Err(_) => {
                    // The job's sender was dropped while unwinding; its
                    // caller gets an internal error. Undo what it did.
                    tracing::error!("a write panicked; rolled back to its savepoint");
                    let _ = control(&conn, "ROLLBACK TO op").and_then(|()| control(&conn, "RELEASE op"));
                }
            }
        }
        // Did the batch change what caches hold? Read inside the
        // transaction, so it counts exactly this batch's changes.
        let now = stored_generation(&conn);
        let commit_error = control(&conn, "COMMIT").err().map(|e| {
            let _ = control(&conn, "ROLLBACK");
            StoreError::Unavailable(format!("commit failed: {e}"))
        });
        if commit_error.is_some() {
            // What was read belonged to a transaction that is gone.
            generation.advance();
            seen = None;
        } else if now != seen || now.is_none() {
            // Before anyone is answered: the request after a revocation
            // must not be served from a cache.
            generation.advance();
            seen = now;
        }
        if let Some((cache, reported)) = &records {
            // Likewise: the request after a write reads the record anew.
            std::mem::swap(&mut written, &mut *reported.lock().unwrap_or_else(|e| e.into_inner()));
            cache.batch_finished(&mut written);
        }
        for done in completions.drain(..) {
            done(commit_error.as_ref());
        }
    }
}

/// Maps any displayable error to [`StoreError::Internal`].
pub fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(e.to_string())
}
