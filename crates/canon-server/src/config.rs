//! Server configuration: what `canon serve` was told by flags, environment
//! and config file.

use std::net::SocketAddr;
use std::time::Duration;

pub use ipnet::IpNet;

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// `sqlite://path` (or a bare path), or `postgres://…`.
    pub database_url: String,
    /// Connections to PostgreSQL this process keeps at most (unused on SQLite).
    pub db_pool_size: usize,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// How long a body may take to arrive (408 beyond); for a streamed body
    /// (an import), how long it may pause between two chunks.
    pub body_timeout: Duration,
    /// Largest streamed body (an import) accepted (413 beyond).
    pub max_import_bytes: u64,
    /// Bytes per second a streamed body (an import) must average once its
    /// first `body_timeout` is over (408 below); 0: no minimum.
    pub min_upload_rate: u64,
    /// Requests served at once; beyond it 503 at once.
    pub max_in_flight: usize,
    /// How long a store call waits for the database (a lock another process
    /// holds, a free reader, a place in the writer's queue) before it fails
    /// with 503 (docs/decisions.md, "When the database is unavailable").
    pub db_timeout: Duration,
    /// Who may open the SQLite file while the server runs (exclusive: this
    /// process alone; docs/decisions.md, "Who may open the SQLite file").
    pub sqlite_locking: canon_store::sqlite::FileLocking,
    /// Jobs run at once by this process (workers claiming from the queue).
    pub job_workers: usize,
    /// How long a worker's claim on a job lasts without a checkpoint; a job
    /// whose worker died is taken over after it.
    pub job_lease: Duration,
    /// How long deleted things answer 410 before 404.
    pub tombstone_retention: Duration,
    /// The operator token to create on first start (otherwise generated).
    pub bootstrap_token: Option<String>,
    /// How long a client may take to send a header section (also between
    /// two requests of a keep-alive connection); the connection is closed
    /// after it, without a response.
    pub header_timeout: Duration,
    /// How long a connection may sit with no byte moving while no request
    /// is handled (or while a response waits for the client to read).
    pub idle_timeout: Duration,
    /// Connections open at once; beyond it the server stops accepting
    /// until one closes.
    pub max_connections: usize,
    /// Connections one client address may have open at once (an IPv6
    /// address counts with its /64; `trusted_proxies` are exempt); beyond
    /// it a new connection is closed as soon as it is accepted. The default,
    /// 256, is far above what one ordinary client opens (a browser opens 6
    /// per host, a client library's pool tens), leaves room for a few dozen
    /// users behind one NAT, and needs 16 addresses to fill the default
    /// `max_connections` (docs/http.md, "Connections").
    pub max_connections_per_address: usize,
    /// How long shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
    /// How long a process told to stop keeps serving, with `/readyz`
    /// answering 503, before it stops accepting: the time a load balancer
    /// needs to take it out of its pool (its health check's interval times
    /// its failure count), so no request is sent to a connection closing
    /// under it. 0 (the default): stop accepting at once.
    pub shutdown_delay: Duration,
    /// Requests per second each API key may send (GCRA refill rate), unless
    /// its tenant has its own; 0 turns per-key limiting off.
    pub rate_limit_per_second: u32,
    /// Requests each API key may send at once above its rate.
    pub rate_limit_burst: u32,
    /// Requests each tenant may send per UTC day, unless it has its own;
    /// 0 turns quotas off.
    pub daily_quota: u32,
    /// Failed authentications (unknown tokens) one client address may
    /// cause per `auth_failure_window` before its tokens go unchecked (429);
    /// 0 turns failed-auth limiting off.
    pub auth_failure_limit: u32,
    /// The window of `auth_failure_limit`.
    pub auth_failure_window: Duration,
    /// Peers whose `X-Forwarded-For` names the client (reverse proxies);
    /// empty: the peer is the client.
    pub trusted_proxies: Vec<IpNet>,
    /// Requests one API key, or one tenant, may have in flight at once;
    /// `None`: a quarter of `max_in_flight` (at least 1).
    pub max_in_flight_per_caller: Option<usize>,
    /// The device gateway (docs/devices.md).
    pub devices: crate::devices::DeviceConfig,
    /// `redis://…`: rate limits and daily quotas are held in this Redis,
    /// shared by every node on it; `None`: in process (docs/decisions.md,
    /// "Shared limits in Redis").
    pub redis_url: Option<String>,
    /// What a request meets while Redis cannot be reached.
    pub redis_failure: RedisFailure,
    /// How long one Redis call (connecting included) may take before it
    /// counts as a failure: a hung Redis costs a request at most this.
    pub redis_timeout: Duration,
    /// The first part of every Redis key (`{prefix}:gcra:…`), so that
    /// several deployments can share one Redis.
    pub redis_prefix: String,
}

/// What a request meets while the shared limiter (Redis) cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RedisFailure {
    /// Served without limits (a warning at most once per interval, and
    /// `canon_rate_limiter_unavailable_total`): an outage of the limiter is
    /// not an outage of the API.
    #[default]
    Open,
    /// Refused with 503 and `Retry-After`: no request goes unmetered.
    Closed,
}

impl std::str::FromStr for RedisFailure {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "open" => Ok(RedisFailure::Open),
            "closed" => Ok(RedisFailure::Closed),
            other => Err(format!("{other:?} is neither `open` nor `closed`")),
        }
    }
}

impl RedisFailure {
    /// `open` or `closed`, as configured and as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RedisFailure::Open => "open",
            RedisFailure::Closed => "closed",
        }
    }
}

impl Config {
    /// Requests one caller may have in flight at once.
    pub fn in_flight_share(&self) -> usize {
        self.max_in_flight_per_caller
            .unwrap_or(self.max_in_flight / 4)
            .clamp(1, self.max_in_flight.max(1))
    }
}

/// Parses a comma-separated list of CIDRs or addresses (`10.0.0.0/8, ::1`).
pub fn parse_trusted_proxies(text: &str) -> Result<Vec<IpNet>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{s:?} is not an address or a CIDR (like 10.0.0.0/8)"))
        })
        .collect()
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: "sqlite://canon.db".into(),
            db_pool_size: 16,
            max_body_bytes: 1024 * 1024,
            body_timeout: Duration::from_millis(10_000),
            max_import_bytes: 10 << 30,
            min_upload_rate: 1024,
            max_in_flight: 1024,
            db_timeout: canon_store::sqlite::DEFAULT_TIMEOUT,
            sqlite_locking: canon_store::sqlite::FileLocking::default(),
            job_workers: 2,
            job_lease: Duration::from_secs(30),
            tombstone_retention: Duration::from_secs(30 * 86_400),
            bootstrap_token: None,
            header_timeout: Duration::from_millis(10_000),
            idle_timeout: Duration::from_millis(60_000),
            max_connections: 4096,
            max_connections_per_address: 256,
            shutdown_grace: Duration::from_millis(30_000),
            shutdown_delay: Duration::ZERO,
            rate_limit_per_second: 100,
            rate_limit_burst: 200,
            daily_quota: 1_000_000,
            auth_failure_limit: 20,
            auth_failure_window: Duration::from_secs(60),
            trusted_proxies: Vec::new(),
            max_in_flight_per_caller: None,
            devices: crate::devices::DeviceConfig::default(),
            redis_url: None,
            redis_failure: RedisFailure::Open,
            redis_timeout: Duration::from_millis(250),
            redis_prefix: "canon".into(),
        }
    }
}
