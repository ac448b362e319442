//! Server configuration: what `canon serve` was told by flags, environment
//! and config file.

use std::net::SocketAddr;
use std::time::Duration;

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// `sqlite://path` (or a bare path).
    pub database_url: String,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// How long a body may take to arrive (408 beyond); for a streamed body
    /// (an import), how long it may pause between two chunks.
    pub body_timeout: Duration,
    /// Largest streamed body (an import) accepted (413 beyond).
    pub max_import_bytes: u64,
    /// Requests served at once; beyond it 503 at once.
    pub max_in_flight: usize,
    /// Jobs run at once by this process (workers claiming from the queue).
    pub job_workers: usize,
    /// How long a worker's claim on a job lasts without a checkpoint; a job
    /// whose worker died is taken over after it.
    pub job_lease: Duration,
    /// How long deleted things answer 410 before 404.
    pub tombstone_retention: Duration,
    /// The operator token to create on first start (otherwise generated).
    pub bootstrap_token: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: "sqlite://canon.db".into(),
            max_body_bytes: 1024 * 1024,
            body_timeout: Duration::from_millis(10_000),
            max_import_bytes: 10 << 30,
            max_in_flight: 1024,
            job_workers: 2,
            job_lease: Duration::from_secs(30),
            tombstone_retention: Duration::from_secs(30 * 86_400),
            bootstrap_token: None,
        }
    }
}
