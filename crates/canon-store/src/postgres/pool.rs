//! The connection pool, the migrations run at connect, the bound on every
//! call, `close`, and the cache generation (moved by this process's writes
//! at their commit, and by a poller for every other node's).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use super::rows::db_error;
use crate::{StoreError, StoreResult};

tokio::task_local! {
    /// Whether the store call running on this task began a transaction (a
    /// write), for the call's metric.
    static WROTE: std::cell::Cell<bool>;
}

/// A transaction on one of the pool's connections.
pub(super) type Tx<'a> = tokio_postgres::Transaction<'a>;

/// How often each node reads the cache generation: another node's change to
/// a tenant, user, key, collection or alias reaches this node's caches
/// within this bound plus one round trip.
pub const GENERATION_POLL: Duration = Duration::from_millis(50);

/// The migrations, in order; `canon_schema.version` records how many ran.
/// PostgreSQL's list starts at SQLite's v10 in one step (no PostgreSQL
/// database predates it); later schema changes are added to both lists.
const MIGRATIONS: &[&str] = &[
    include_str!("schema.sql"),
    include_str!("schema_v2.sql"),
    include_str!("schema_v3.sql"),
];

/// The advisory lock key every node's migration takes ("canon" in ASCII).
const MIGRATION_LOCK: i64 = 0x63_61_6e_6f_6e;

/// How the PostgreSQL store uses its database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PostgresOptions {
    /// Connections in the pool (per node). Behind PgBouncer, PgBouncer's own
    /// pool bounds the server's connections.
    pub pool_size: usize,
    /// The longest a call waits for the database: for a free connection,
    /// for a new one, for a lock (each write transaction's `lock_timeout`),
    /// and the whole of a readiness ping. Past it the call is
    /// [`StoreError::Unavailable`] (503). A call's own work (a large import
    /// batch, a re-index) is not cut by it: a whole call is bounded by
    /// [`call_bound`] instead, against a server that stopped answering
    /// without closing the connection.
    pub timeout: Duration,
}

/// The longest one store call may take in all: ten times the wait bound,
/// and at least 30 s.
pub fn call_bound(timeout: Duration) -> Duration {
    (timeout * 10).max(Duration::from_secs(30))
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            pool_size: 16,
            timeout: Duration::from_secs(5),
        }
    }
}

/// What the pool and its poller share.
struct Shared {
    pool: deadpool_postgres::Pool,
    generation: AtomicU64,
}

/// The pool with the store's bounds around it.
pub(super) struct Pool {
    shared: Arc<Shared>,
    timeout: Duration,
    closed: AtomicBool,
    in_flight: AtomicUsize,
    poller: tokio::task::JoinHandle<()>,
}

/// One connection taken from the pool, given back on drop.
pub(super) struct Conn {
    object: deadpool_postgres::Object,
    /// Taken after `close`: reads go on, writes are refused.
    closed: bool,
    /// How long a write's statements may wait for a lock, in milliseconds.
    lock_timeout_ms: u128,
}

impl Conn {
    /// The connection, for statements outside a transaction (one-statement
    /// reads).
    pub(super) fn client(&self) -> &tokio_postgres::Client {
        &self.object
    }

    /// Begins a transaction (read committed), unless the store is closed:
    /// every write runs in one, so this is where later writes are refused.
    pub(super) async fn transaction(&mut self) -> StoreResult<Tx<'_>> {
        if self.closed {
            return Err(StoreError::Unavailable("the store is closed".into()));
        }
        let _ = WROTE.try_with(|w| w.set(true));
        let client: &mut tokio_postgres::Client = &mut self.object;
        let tx = client.transaction().await.map_err(db_error)?;
        // Scoped to the transaction (no session state): a lock held
        // elsewhere past the bound fails the write as unavailable (55P03).
        tx.batch_execute(&format!("SET LOCAL lock_timeout = {}", self.lock_timeout_ms))
            .await
            .map_err(db_error)?;
        Ok(tx)
    }
}

/// Counts a call in flight while it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// No connection could be had: none free within the timeout, or a new one
/// could not be made (the server down, refusing, out of connections, the
/// database not accepting any): the database is unavailable, whatever the
/// server said.
fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Unavailable(format!("no database connection: {e}"))
}

impl Pool {
    pub(super) async fn connect(url: &str, options: PostgresOptions) -> StoreResult<Pool> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Internal(format!("the database URL: {e}")))?;
        config.connect_timeout(options.timeout);
        config.application_name("canon");
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                // Only a closed connection is dropped; a statement checking
                // each connection would cost a round trip per call.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .wait_timeout(Some(options.timeout))
            .create_timeout(Some(options.timeout))
            .recycle_timeout(Some(options.timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Internal(format!("the connection pool: {e}")))?;
        let shared = Arc::new(Shared {
            pool,
            generation: AtomicU64::new(0),
        });
        let mut conn = Conn {
            object: shared.pool.get().await.map_err(pool_error)?,
            closed: false,
            lock_timeout_ms: options.timeout.as_millis().max(1),
        };
        migrate(&mut conn).await?;
        let n = read_generation(conn.client()).await?;
        shared.generation.store(n, Ordering::Release);
        drop(conn);
        let poller = tokio::spawn(poll_generation(Arc::downgrade(&shared)));
        Ok(Pool {
            shared,
            timeout: options.timeout,
            closed: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            poller,
        })
    }

    /// Runs one store call, counted in flight (`close` waits for it), and
    /// [`StoreError::Unavailable`] past [`call_bound`] (the transaction, if
    /// any, rolls back when its connection's future is dropped).
    pub(super) async fn run<T>(&self, call: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
        self.run_within(call_bound(self.timeout), call).await
    }

    /// Runs one store call like [`Pool::run`], bounded by `limit`.
    pub(super) async fn run_within<T>(
        &self,
        limit: Duration,
        call: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let _counted = InFlight(&self.in_flight);
        let started = std::time::Instant::now();
        let (result, wrote) = WROTE
            .scope(std::cell::Cell::new(false), async {
                let result = tokio::time::timeout(limit, call).await;
                (result, WROTE.with(std::cell::Cell::get))
            })
            .await;
        // The same metric as SQLite's: a call that began a transaction is a write.
        let op = if wrote { "write" } else { "read" };
        metrics::histogram!(crate::metrics::STORE_SECONDS, "op" => op).record(started.elapsed().as_secs_f64());
        match result {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!(
                "the database did not answer within {} ms",
                limit.as_millis()
            ))),
        }
    }

    /// A connection from the pool.
    pub(super) async fn conn(&self) -> StoreResult<Conn> {
        let object = self.shared.pool.get().await.map_err(pool_error)?;
        Ok(Conn {
            object,
            closed: self.closed.load(Ordering::Acquire),
            lock_timeout_ms: self.timeout.as_millis().max(1),
        })
    }

    /// Runs `work` as one write: a store call ([`Pool::run`]) in a
    /// transaction of its own, ended by [`Pool::finish`] (committed when
    /// `work` succeeds, moving the generation when `moving`).
    pub(super) async fn write<T>(
        &self,
        moving: bool,
        work: impl AsyncFnOnce(&Tx<'_>) -> StoreResult<T>,
    ) -> StoreResult<T> {
        self.run(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            let result = work(&tx).await;
            self.finish(tx, result, moving).await
        })
        .await
    }

    /// Ends a write's transaction: commits it when `result` is `Ok` (moving
    /// the generation first when `moving`: see [`Pool::commit_moving`]),
    /// else rolls it back and waits for that, so its locks are gone before
    /// the caller goes on (a rollback merely queued on the connection could
    /// still hold a row that the caller's next call, on another connection,
    /// skips as locked).
    pub(super) async fn finish<T>(&self, tx: Tx<'_>, result: StoreResult<T>, moving: bool) -> StoreResult<T> {
        match result {
            Ok(value) => {
                if moving {
                    self.commit_moving(tx).await?;
                } else {
                    tx.commit().await.map_err(db_error)?;
                }
                // Each write commits alone (PostgreSQL groups WAL flushes itself).
                metrics::histogram!(crate::metrics::COMMIT_BATCH).record(1.0);
                Ok(value)
            }
            Err(e) => {
                // The error the call met is the one to report; a failed
                // rollback ends the connection, which rolls back as well.
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }

    /// Commits a transaction that changed (or may have changed) what the
    /// generation covers, and moves this process's generation to the one
    /// it committed, before the caller answers.
    pub(super) async fn commit_moving(&self, tx: Tx<'_>) -> StoreResult<()> {
        let n = read_generation(&tx).await?;
        tx.commit().await.map_err(db_error)?;
        self.shared.generation.fetch_max(n, Ordering::AcqRel);
        Ok(())
    }

    /// The bound on waits ([`PostgresOptions::timeout`]).
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(super) fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
    }

    /// Refuses later writes, and waits (at most `grace`) for the calls in
    /// flight. Reads go on; the connections close when the store is dropped.
    pub(super) async fn close(&self, grace: Duration) -> StoreResult<()> {
        self.closed.store(true, Ordering::Release);
        let deadline = tokio::time::Instant::now() + grace;
        while self.in_flight.load(Ordering::Acquire) > 0 {
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreError::Unavailable("calls still in flight at close".into()));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

async fn read_generation(c: &impl tokio_postgres::GenericClient) -> StoreResult<u64> {
    let row = c
        .query_typed_one("SELECT n FROM cache_generation WHERE id = 1", &[])
        .await
        .map_err(db_error)?;
    let n: i64 = row.try_get(0).map_err(db_error)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Reads the generation every [`GENERATION_POLL`] until the store goes.
/// A failed read is retried at the next tick (the database being away
/// fails the calls that need it; the caches keep what they hold meanwhile,
/// as with SQLite).
async fn poll_generation(shared: std::sync::Weak<Shared>) {
    let mut tick = tokio::time::interval(GENERATION_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let read = tokio::time::timeout(GENERATION_POLL * 20, async {
            let conn = shared.pool.get().await.map_err(pool_error)?;
            read_generation(&**conn).await
        })
        .await;
        if let Ok(Ok(n)) = read {
            shared.generation.fetch_max(n, Ordering::AcqRel);
        }
    }
}

/// Applies the migrations not applied yet, all in one transaction under an
/// advisory lock: nodes starting at once wait for the first, then find
/// nothing left to do.
async fn migrate(conn: &mut Conn) -> StoreResult<()> {
    let tx = conn.transaction().await?;
    // Another node's migration may take longer than a write's lock bound.
    tx.batch_execute("SET LOCAL lock_timeout = '60s'")
        .await
        .map_err(db_error)?;
    tx.execute_typed(
        "SELECT pg_advisory_xact_lock($1)",
        &[(&MIGRATION_LOCK, tokio_postgres::types::Type::INT8)],
    )
    .await
    .map_err(db_error)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS canon_schema (version INTEGER NOT NULL)")
        .await
        .map_err(db_error)?;
    let row = tx
        .query_typed_opt("SELECT version FROM canon_schema", &[])
        .await
        .map_err(db_error)?;
    let applied = match row {
        Some(r) => r.try_get::<_, i32>(0).map_err(db_error)?,
        None => {
            tx.batch_execute("INSERT INTO canon_schema (version) VALUES (0)")
                .await
                .map_err(db_error)?;
            0
        }
    };
    let applied = usize::try_from(applied).unwrap_or(0);
    if applied > MIGRATIONS.len() {
        return Err(StoreError::Internal(format!(
            "the database's schema (v{applied}) is newer than this build knows (v{})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.batch_execute(sql).await.map_err(db_error)?;
        let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.execute_typed(
            "UPDATE canon_schema SET version = $1",
            &[(&version, tokio_postgres::types::Type::INT4)],
        )
        .await
        .map_err(db_error)?;
        tracing::info!(version = i + 1, "applied PostgreSQL schema migration");
    }
    tx.commit().await.map_err(db_error)
}
