//! The state every request shares ([`App`]) and the facts about the server
//! the modules below the HTTP wiring read. Beneath `resources/`,
//! `idempotency.rs` and `app.rs`, and importing none of them, so the
//! server's modules form no circle: `state` ← `resources` ← `app`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use canon_http::Problem;
use canon_http::route::RouteTable;
use canon_store::{Collection, Store};
use tokio::sync::{Notify, Semaphore};

use crate::config::Config;
use crate::error::{internal, store_problem};
use crate::routes::ROUTES;
use crate::token;

/// The request-id header.
pub const REQUEST_ID: &str = "x-request-id";

/// [`REQUEST_ID`] as a header name made at compile time: a `&str` name is
/// parsed, and a custom one copied, on every use.
pub const REQUEST_ID_HEADER: http::HeaderName = http::HeaderName::from_static(REQUEST_ID);

/// Compiled JSON Schema validators, per collection id and version.
type SchemaCache = Mutex<HashMap<String, (i64, Arc<jsonschema::Validator>)>>;

/// State shared by all requests.
pub struct App {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The configuration.
    pub config: Config,
    /// The route table the flow routes with.
    pub(crate) routes: RouteTable,
    schemas: SchemaCache,
    /// Slots for requests in flight (beyond them: 503).
    pub(crate) in_flight: Arc<Semaphore>,
    /// Each caller's share of those slots (beyond it: 429).
    pub(crate) callers_in_flight: Arc<crate::limits::InFlight>,
    /// The counting state of rate limits and quotas.
    pub(crate) limiter: Arc<dyn crate::limits::RateLimiter>,
    /// Where limits read the time.
    pub(crate) clock: Arc<dyn crate::limits::Clock>,
    /// Addresses failing to authenticate, and the tokens that worked from them.
    pub(crate) known_good: crate::limits::KnownGood,
    cursor_key: tokio::sync::OnceCell<crate::cursor::CursorKey>,
    /// Wake-ups for the job workers and the monitors waiting on jobs.
    pub(crate) jobs: JobSignals,
    /// Requests shed at the in-flight limit, for the log's summary line.
    pub(crate) shed: Shed,
    /// Who keys belong to, tenants and collections by name (`crate::cache`).
    pub(crate) lookups: crate::cache::Lookups,
    /// The device gateway (`crate::devices`).
    pub(crate) devices: crate::devices::Gateway,
    /// Maintenance mode as last read from the store (`crate::maintenance`).
    maintenance: std::sync::RwLock<Arc<canon_store::Maintenance>>,
    /// Told to stop: `/readyz` answers 503 while the process still serves
    /// (`Config::shutdown_delay`).
    draining: std::sync::atomic::AtomicBool,
}

/// What this process tells its own workers and waiting monitors about
/// jobs, so neither learns of a change only at its next poll. Only a hint:
/// a job queued or finished by another process is still found by polling
/// (workers every 200 ms, monitors every 250 ms).
#[derive(Debug, Default)]
pub(crate) struct JobSignals {
    /// A job became claimable: one idle worker wakes.
    queued: Notify,
    /// A job finished, failed or was canceled: every waiting monitor looks.
    finished: Notify,
}

/// Requests shed with 503 at the in-flight limit since the log last said
/// so. An overloaded server writes one summary line a second at most, not a
/// line per shed request: at tens of thousands of 503s a second, a line each
/// would spend on logging the CPU the requests in flight need (the metrics
/// still count every one).
#[derive(Debug, Default)]
pub(crate) struct Shed {
    count: std::sync::atomic::AtomicU64,
    last_line_ms: std::sync::atomic::AtomicU64,
}

impl Shed {
    /// Counts one shed request at `now_ms`; returns how many to report when
    /// a summary line is due (the first shed, then at most once a second).
    pub(crate) fn record(&self, now_ms: u64) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        self.count.fetch_add(1, Relaxed);
        let last = self.last_line_ms.load(Relaxed);
        if last != 0 && now_ms.saturating_sub(last) < 1000 {
            return None;
        }
        self.last_line_ms
            .compare_exchange(last, now_ms.max(1), Relaxed, Relaxed)
            .ok()
            .map(|_| self.count.swap(0, Relaxed))
    }
}

impl JobSignals {
    /// A job was queued: wakes one idle worker (or the next to go idle).
    pub(crate) fn queued(&self) {
        self.queued.notify_one();
    }

    /// Waits for [`JobSignals::queued`].
    pub(crate) async fn wait_queued(&self) {
        self.queued.notified().await;
    }

    /// A job reached its end: wakes every monitor waiting on one.
    pub(crate) fn finished(&self) {
        self.finished.notify_waiters();
    }

    /// What [`JobSignals::finished`] notifies. A waiter takes and enables
    /// its `notified()` *before* looking at the job, so an end between the
    /// look and the wait is not missed.
    pub(crate) fn finish_signal(&self) -> &Notify {
        &self.finished
    }
}

impl App {
    /// Builds the state over `store`.
    pub fn new(config: Config, store: Arc<dyn Store>) -> Result<Arc<App>, Box<dyn std::error::Error + Send + Sync>> {
        Self::with_clock(config, store, Arc::new(crate::limits::SystemClock))
    }

    /// Builds the state over `store`, with limits read on `clock` (tests
    /// move it to cross midnight).
    pub fn with_clock(
        config: Config,
        store: Arc<dyn Store>,
        clock: Arc<dyn crate::limits::Clock>,
    ) -> Result<Arc<App>, Box<dyn std::error::Error + Send + Sync>> {
        crate::metrics::install();
        Ok(Arc::new(App {
            store,
            routes: RouteTable::new(ROUTES)?,
            schemas: Mutex::new(HashMap::new()),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            callers_in_flight: crate::limits::InFlight::new(config.in_flight_share()),
            limiter: crate::limits::limiter_for(&config)?,
            clock,
            known_good: crate::limits::KnownGood::default(),
            cursor_key: tokio::sync::OnceCell::new(),
            jobs: JobSignals::default(),
            shed: Shed::default(),
            lookups: crate::cache::Lookups::default(),
            devices: crate::devices::Gateway::new(config.devices.clone(), config.listen)?,
            maintenance: std::sync::RwLock::new(Arc::new(canon_store::Maintenance {
                enabled: false,
                retry_after_seconds: crate::wire::DEFAULT_MAINTENANCE_RETRY,
                message: String::new(),
                version: 0,
                updated_at: 0,
            })),
            draining: std::sync::atomic::AtomicBool::new(false),
            config,
        }))
    }

    /// Creates the operator key on an empty store, reads the maintenance
    /// mode and the day's quota counts. Returns the token when one was generated (the caller prints it
    /// once).
    pub async fn bootstrap(&self) -> Result<Option<String>, canon_store::StoreError> {
        let (token, generated) = match &self.config.bootstrap_token {
            Some(t) => (t.clone(), false),
            None => (token::generate(), true),
        };
        let created = self.store.bootstrap_operator(&token::digest(&token)).await?;
        // Maintenance mode holds from the first request after a restart, and
        // the day's quota counts go on from where they were.
        self.remember_maintenance(self.store.maintenance().await?);
        crate::quotas::save(self).await?;
        Ok((created && generated).then_some(token))
    }

    /// Maintenance mode as this process last read it from the store: on
    /// every request, so a lock read, never a store read.
    pub fn maintenance(&self) -> Arc<canon_store::Maintenance> {
        match self.maintenance.read() {
            Ok(m) => m.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Whether the process was told to stop (it may still be serving).
    pub fn draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Marks the process as stopping: from now on `/readyz` answers 503.
    pub(crate) fn start_draining(&self) {
        self.draining.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Keeps `m` as the current maintenance mode, unless an equal or newer
    /// version is kept already (a slow refresh never undoes a change).
    pub fn remember_maintenance(&self, m: canon_store::Maintenance) {
        let mut kept = match self.maintenance.write() {
            Ok(kept) => kept,
            Err(poisoned) => poisoned.into_inner(),
        };
        if m.version > kept.version {
            *kept = Arc::new(m);
        }
    }

    /// The key list cursors are signed with: the store's shared secret,
    /// created by the first node that needs it.
    pub async fn cursor_key(&self) -> Result<&crate::cursor::CursorKey, Problem> {
        use crate::cursor::{CursorKey, SECRET_NAME};
        self.cursor_key
            .get_or_try_init(|| async {
                let secret = self
                    .store
                    .secret(SECRET_NAME, &CursorKey::generate_secret())
                    .await
                    .map_err(store_problem)?;
                CursorKey::from_secret(&secret).ok_or_else(internal)
            })
            .await
    }

    /// The compiled validator for `collection`'s schema.
    pub fn validator(&self, collection: &Collection) -> Result<Arc<jsonschema::Validator>, Problem> {
        if let Ok(cache) = self.schemas.lock()
            && let Some((version, v)) = cache.get(&collection.id)
            && *version == collection.version
        {
            return Ok(v.clone());
        }
        // A schema stored before the admission rules may be one they refuse
        // (an exponential reference graph would stall every write): its
        // records cannot be written until the schema is replaced.
        if let Err(refusal) = crate::schema_rules::admit(&collection.schema) {
            return Err(Problem::new(
                canon_http::ProblemKind::StateConflict,
                format!(
                    "The collection's schema breaks the current schema rules (at /schema{}: {}); an admin must \
                     replace it (PATCH the collection) before records can be written.",
                    refusal.pointer, refusal.message
                ),
            ));
        }
        let v = Arc::new(jsonschema::draft202012::new(&collection.schema).map_err(|e| {
            tracing::error!(collection = %collection.id, error = %e, "stored schema does not compile");
            internal()
        })?);
        if let Ok(mut cache) = self.schemas.lock() {
            cache.insert(collection.id.clone(), (collection.version, v.clone()));
        }
        Ok(v)
    }
}

/// Statuses hyper answers itself, before the flow runs and without a
/// problem body (docs/http.md, "What hyper answers before the flow runs"):
/// 400 for a request that does not parse, 431 past its header limits, 414
/// past its target limit. The flow answers each of them too.
pub const ANSWERED_BY_HYPER: &[u16] = &[400, 414, 431];

#[cfg(test)]
mod tests {
    use super::Shed;

    #[test]
    fn shed_requests_are_summarised_once_a_second_at_most() {
        let shed = Shed::default();
        assert_eq!(shed.record(5_000), Some(1), "the first is said at once");
        assert_eq!(shed.record(5_100), None);
        assert_eq!(shed.record(5_999), None);
        assert_eq!(shed.record(6_000), Some(3), "a second later, with the ones between");
        assert_eq!(shed.record(6_500), None);
        assert_eq!(shed.record(9_000), Some(2));
    }
}
