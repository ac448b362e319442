//! The `canon` binary.
//!
//! `canon serve` reads flags, then `CANON_*` environment variables, then the
//! `--config` TOML file (same keys, snake_case), then defaults, in that order
//! of precedence. `canon import` and `canon export` are clients of a running
//! server (`transfer`). `canon migrate-store` moves a stopped server's SQLite
//! store into PostgreSQL (`migrate_store`).

mod allocator;
mod device_args;
mod migrate_store;
mod transfer;

/// mimalloc rather than glibc's malloc: allocation and freeing were about a
/// third of a record GET's instructions in issue 11's profile, and mimalloc's
/// thread-local free lists serve a request's many short-lived allocations
/// for a fraction of that (docs/performance.md). Called through
/// [`allocator`], which takes its plain calls where the alignment allows.
#[global_allocator]
static ALLOCATOR: allocator::Allocator = allocator::Allocator;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use canon_server::{App, Config};
use canon_store::Store;
use canon_store::postgres::{PostgresOptions, PostgresStore};
use canon_store::sqlite::SqliteStore;
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

#[derive(Parser)]
#[command(
    name = "canon",
    version,
    about = "A multi-tenant REST resource server that gets HTTP right."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
// Parsed once at start: the size of the variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Print the OpenAPI 3.1 description (what `/openapi.json` serves).
    Openapi,
    /// Import an NDJSON file into a collection of a running server, as a job.
    #[command(after_help = transfer::EXIT_STATUS_HELP)]
    Import(transfer::import::ImportArgs),
    /// Export a collection of a running server to a file (NDJSON or CSV), as a job.
    #[command(after_help = transfer::EXIT_STATUS_HELP)]
    Export(transfer::export::ExportArgs),
    /// Copy a stopped server's SQLite store into an empty PostgreSQL database, and verify it.
    #[command(after_help = migrate_store::EXIT_STATUS_HELP)]
    MigrateStore(migrate_store::MigrateStoreArgs),
}

#[derive(Args, Default)]
struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "CANON_LISTEN")]
    listen: Option<SocketAddr>,
    /// Database URL: sqlite://PATH or postgres://USER@HOST:PORT/DB [default: sqlite://canon.db].
    #[arg(long = "database", env = "CANON_DATABASE_URL")]
    database_url: Option<String>,
    /// Connections this process keeps to PostgreSQL at most [default: 16].
    #[arg(long, env = "CANON_DB_POOL_SIZE")]
    db_pool_size: Option<usize>,
    /// Redis URL (redis://[user:password@]host[:port][/db]): rate limits and
    /// daily quotas shared by every node on it [default: none, kept per node].
    #[arg(long = "redis", env = "CANON_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// While Redis cannot be reached: `open` serves requests without limits,
    /// `closed` refuses them with 503 [default: open].
    #[arg(long, env = "CANON_REDIS_FAILURE")]
    redis_failure: Option<canon_server::config::RedisFailure>,
    /// Milliseconds one Redis call (connecting included) may take before it
    /// counts as a failure [default: 250].
    #[arg(long, env = "CANON_REDIS_TIMEOUT_MS")]
    redis_timeout_ms: Option<u64>,
    /// Prefix of Canon's Redis keys, so deployments can share one Redis [default: canon].
    #[arg(long, env = "CANON_REDIS_PREFIX")]
    redis_prefix: Option<String>,
    /// TOML file with any of these settings.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Largest request body, in bytes [default: 1048576].
    #[arg(long, env = "CANON_MAX_BODY_BYTES")]
    max_body_bytes: Option<usize>,
    /// Milliseconds a body may take to arrive before 408 [default: 10000].
    #[arg(long, env = "CANON_BODY_TIMEOUT_MS")]
    body_timeout_ms: Option<u64>,
    /// Largest streamed upload (an import), in bytes [default: 10737418240].
    #[arg(long, env = "CANON_MAX_IMPORT_BYTES")]
    max_import_bytes: Option<u64>,
    /// Bytes per second an upload must average after its first body
    /// timeout, or 408; 0 for no minimum [default: 1024].
    #[arg(long, env = "CANON_MIN_UPLOAD_RATE")]
    min_upload_rate: Option<u64>,
    /// Requests served at once; beyond it 503 [default: 1024].
    #[arg(long, env = "CANON_MAX_IN_FLIGHT")]
    max_in_flight: Option<usize>,
    /// Milliseconds a store call waits for the database (a lock held
    /// elsewhere, a free reader, the writer's queue) before 503 [default: 1000].
    #[arg(long, env = "CANON_DB_TIMEOUT_MS")]
    db_timeout_ms: Option<u64>,
    /// Who may open the SQLite file while this server runs: `exclusive`
    /// (this process alone, the fastest) or `shared` (also a `sqlite3`
    /// shell or a backup tool) [default: exclusive].
    #[arg(long, env = "CANON_SQLITE_LOCKING")]
    sqlite_locking: Option<canon_store::sqlite::FileLocking>,
    /// Jobs this process runs at once [default: 2].
    #[arg(long, env = "CANON_JOB_WORKERS")]
    job_workers: Option<usize>,
    /// Milliseconds a job's claim lasts without a checkpoint [default: 30000].
    #[arg(long, env = "CANON_JOB_LEASE_MS")]
    job_lease_ms: Option<u64>,
    /// Days a deleted resource answers 410 before 404 [default: 30].
    #[arg(long, env = "CANON_TOMBSTONE_DAYS")]
    tombstone_days: Option<u64>,
    /// Operator token to create on first start [default: generated and printed].
    #[arg(long, env = "CANON_BOOTSTRAP_TOKEN", hide_env_values = true)]
    bootstrap_token: Option<String>,
    /// Requests per second per API key, unless its tenant has its own; 0: off [default: 100].
    #[arg(long, env = "CANON_RATE_LIMIT_PER_SECOND")]
    rate_limit_per_second: Option<u32>,
    /// Requests an API key may send at once above its rate [default: 200].
    #[arg(long, env = "CANON_RATE_LIMIT_BURST")]
    rate_limit_burst: Option<u32>,
    /// Requests per tenant per UTC day, unless it has its own; 0: off [default: 1000000].
    #[arg(long, env = "CANON_DAILY_QUOTA")]
    daily_quota: Option<u32>,
    /// Unknown tokens one client address may send per window before 429; 0: off [default: 20].
    #[arg(long, env = "CANON_AUTH_FAILURE_LIMIT")]
    auth_failure_limit: Option<u32>,
    /// The window of the failed-auth limit, in seconds [default: 60].
    #[arg(long, env = "CANON_AUTH_FAILURE_WINDOW_SECS")]
    auth_failure_window_secs: Option<u64>,
    /// Reverse proxies whose X-Forwarded-For names the client: CIDRs or addresses,
    /// comma-separated [default: none, the peer is the client].
    #[arg(long, env = "CANON_TRUSTED_PROXIES")]
    trusted_proxies: Option<String>,
    /// Requests one API key or one tenant may have in flight; beyond it 429
    /// [default: a quarter of CANON_MAX_IN_FLIGHT].
    #[arg(long, env = "CANON_MAX_IN_FLIGHT_PER_CALLER")]
    max_in_flight_per_caller: Option<usize>,
    /// Milliseconds a client may take to send a header section, also
    /// between two requests of a connection; then it is closed [default: 10000].
    #[arg(long, env = "CANON_HEADER_TIMEOUT_MS")]
    header_timeout_ms: Option<u64>,
    /// Milliseconds a connection may sit idle before it is closed [default: 60000].
    #[arg(long, env = "CANON_IDLE_TIMEOUT_MS")]
    idle_timeout_ms: Option<u64>,
    /// Connections open at once; beyond it the server stops accepting [default: 4096].
    #[arg(long, env = "CANON_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Connections one client address (an IPv6 /64) may have open at once;
    /// beyond it a new one is closed at accept. Trusted proxies are exempt [default: 256].
    #[arg(long, env = "CANON_MAX_CONNECTIONS_PER_ADDRESS")]
    max_connections_per_address: Option<usize>,
    /// Milliseconds shutdown (SIGTERM, SIGINT) waits for requests in flight [default: 30000].
    #[arg(long, env = "CANON_SHUTDOWN_GRACE_MS")]
    shutdown_grace_ms: Option<u64>,
    /// Milliseconds a stopping server keeps serving with /readyz 503, so a load balancer takes
    /// it out first [default: 0].
    #[arg(long, env = "CANON_SHUTDOWN_DELAY_MS")]
    shutdown_delay_ms: Option<u64>,
    /// Log lines as `text` or `json` (one object a line) [default: text].
    #[arg(long, env = "CANON_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    #[command(flatten)]
    devices: device_args::DeviceArgs,
}

/// How log lines are written (to stderr).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object a line, for a log collector.
    Json,
}

/// The config file: the same settings as the flags.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    database_url: Option<String>,
    db_pool_size: Option<usize>,
    redis_url: Option<String>,
    redis_failure: Option<String>,
    redis_timeout_ms: Option<u64>,
    redis_prefix: Option<String>,
    max_body_bytes: Option<usize>,
    body_timeout_ms: Option<u64>,
    max_import_bytes: Option<u64>,
    min_upload_rate: Option<u64>,
    max_in_flight: Option<usize>,
    db_timeout_ms: Option<u64>,
    sqlite_locking: Option<String>,
    job_workers: Option<usize>,
    job_lease_ms: Option<u64>,
    tombstone_days: Option<u64>,
    bootstrap_token: Option<String>,
    rate_limit_per_second: Option<u32>,
    rate_limit_burst: Option<u32>,
    daily_quota: Option<u32>,
    auth_failure_limit: Option<u32>,
    auth_failure_window_secs: Option<u64>,
    trusted_proxies: Option<String>,
    max_in_flight_per_caller: Option<usize>,
    header_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    max_connections: Option<usize>,
    max_connections_per_address: Option<usize>,
    shutdown_grace_ms: Option<u64>,
    shutdown_delay_ms: Option<u64>,
    log_format: Option<LogFormat>,
    devices: Option<device_args::DeviceFile>,
}

/// The config file `--config` names, if any.
fn file_config(args: &ServeArgs) -> Result<FileConfig, String> {
    match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
        }
        None => Ok(FileConfig::default()),
    }
}

fn resolve(args: ServeArgs, file: FileConfig) -> Result<Config, String> {
    let config = resolve_unchecked(args, file)?;
    let zero = [
        ("header timeout", config.header_timeout.is_zero()),
        ("idle timeout", config.idle_timeout.is_zero()),
        ("max connections", config.max_connections == 0),
        ("max connections per address", config.max_connections_per_address == 0),
    ];
    match zero.iter().find(|(_, is_zero)| *is_zero) {
        Some((name, _)) => Err(format!("the {name} must be at least 1")),
        None => Ok(config),
    }
}

fn resolve_unchecked(args: ServeArgs, file: FileConfig) -> Result<Config, String> {
    let d = Config::default();
    let millis = |flag: Option<u64>, file: Option<u64>, default: Duration| {
        flag.or(file).map(Duration::from_millis).unwrap_or(default)
    };
    let sqlite_locking = match (args.sqlite_locking, file.sqlite_locking) {
        (Some(locking), _) => locking,
        (None, Some(text)) => text.parse().map_err(|e| format!("sqlite_locking: {e}"))?,
        (None, None) => d.sqlite_locking,
    };
    let redis_failure = match (args.redis_failure, file.redis_failure) {
        (Some(f), _) => f,
        (None, Some(text)) => text.parse().map_err(|e| format!("redis_failure: {e}"))?,
        (None, None) => d.redis_failure,
    };
    Ok(Config {
        listen: args.listen.or(file.listen).unwrap_or(d.listen),
        database_url: args.database_url.or(file.database_url).unwrap_or(d.database_url),
        db_pool_size: args.db_pool_size.or(file.db_pool_size).unwrap_or(d.db_pool_size).max(1),
        max_body_bytes: args.max_body_bytes.or(file.max_body_bytes).unwrap_or(d.max_body_bytes),
        body_timeout: args
            .body_timeout_ms
            .or(file.body_timeout_ms)
            .map(Duration::from_millis)
            .unwrap_or(d.body_timeout),
        max_import_bytes: args
            .max_import_bytes
            .or(file.max_import_bytes)
            .unwrap_or(d.max_import_bytes),
        min_upload_rate: args
            .min_upload_rate
            .or(file.min_upload_rate)
            .unwrap_or(d.min_upload_rate),
        max_in_flight: args.max_in_flight.or(file.max_in_flight).unwrap_or(d.max_in_flight),
        db_timeout: args
            .db_timeout_ms
            .or(file.db_timeout_ms)
            .map(Duration::from_millis)
            .unwrap_or(d.db_timeout),
        job_workers: args.job_workers.or(file.job_workers).unwrap_or(d.job_workers),
        job_lease: args
            .job_lease_ms
            .or(file.job_lease_ms)
            .map(Duration::from_millis)
            .unwrap_or(d.job_lease),
        tombstone_retention: args
            .tombstone_days
            .or(file.tombstone_days)
            .map(|days| Duration::from_secs(days * 86_400))
            .unwrap_or(d.tombstone_retention),
        bootstrap_token: args.bootstrap_token.or(file.bootstrap_token),
        rate_limit_per_second: args
            .rate_limit_per_second
            .or(file.rate_limit_per_second)
            .unwrap_or(d.rate_limit_per_second),
        rate_limit_burst: args
            .rate_limit_burst
            .or(file.rate_limit_burst)
            .unwrap_or(d.rate_limit_burst),
        daily_quota: args.daily_quota.or(file.daily_quota).unwrap_or(d.daily_quota),
        auth_failure_limit: args
            .auth_failure_limit
            .or(file.auth_failure_limit)
            .unwrap_or(d.auth_failure_limit),
        auth_failure_window: args
            .auth_failure_window_secs
            .or(file.auth_failure_window_secs)
            .map(|s| Duration::from_secs(s.max(1)))
            .unwrap_or(d.auth_failure_window),
        trusted_proxies: match args.trusted_proxies.or(file.trusted_proxies) {
            Some(text) => {
                canon_server::config::parse_trusted_proxies(&text).map_err(|e| format!("trusted proxies: {e}"))?
            }
            None => d.trusted_proxies,
        },
        max_in_flight_per_caller: args.max_in_flight_per_caller.or(file.max_in_flight_per_caller),
        header_timeout: millis(args.header_timeout_ms, file.header_timeout_ms, d.header_timeout),
        idle_timeout: millis(args.idle_timeout_ms, file.idle_timeout_ms, d.idle_timeout),
        max_connections: args
            .max_connections
            .or(file.max_connections)
            .unwrap_or(d.max_connections),
        max_connections_per_address: args
            .max_connections_per_address
            .or(file.max_connections_per_address)
            .unwrap_or(d.max_connections_per_address),
        shutdown_grace: millis(args.shutdown_grace_ms, file.shutdown_grace_ms, d.shutdown_grace),
        shutdown_delay: millis(args.shutdown_delay_ms, file.shutdown_delay_ms, d.shutdown_delay),
        devices: device_args::resolve(args.devices, file.devices.unwrap_or_default())?,
        redis_url: args.redis_url.or(file.redis_url),
        redis_failure,
        sqlite_locking,
        redis_timeout: millis(args.redis_timeout_ms, file.redis_timeout_ms, d.redis_timeout),
        redis_prefix: args.redis_prefix.or(file.redis_prefix).unwrap_or(d.redis_prefix),
    })
}

/// Whether `url` names a PostgreSQL database.
fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// `url` without its password, for logs.
fn redacted(url: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => format!("{}{}:***{}", &url[..scheme_end], &rest[..colon], &rest[at..]),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Opens the store `config.database_url` names: SQLite (a file) or
/// PostgreSQL (migrated at open, its pool of `config.db_pool_size`). Returns
/// it with what to call it in logs.
async fn open_store(config: &Config) -> Result<(Arc<dyn Store>, String), String> {
    let url = &config.database_url;
    if is_postgres(url) {
        let options = PostgresOptions {
            pool_size: config.db_pool_size,
            timeout: config.db_timeout,
        };
        let store = PostgresStore::connect(url, options)
            .await
            .map_err(|e| format!("cannot open {}: {e}", redacted(url)))?;
        return Ok((Arc::new(store), redacted(url)));
    }
    let path = sqlite_path(url)?;
    let options = canon_store::sqlite::Options {
        timeout: config.db_timeout,
        locking: config.sqlite_locking,
    };
    let store = SqliteStore::open_with(&path, options).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    Ok((Arc::new(store), path.display().to_string()))
}

fn sqlite_path(url: &str) -> Result<PathBuf, String> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    if path.is_empty() {
        return Err("the database URL names no file".into());
    }
    Ok(PathBuf::from(path))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

async fn serve(config: Config) -> Result<(), String> {
    let (store, database) = open_store(&config).await?;
    let app = App::new(config, store).map_err(|e| e.to_string())?;
    if let Some(token) = app.bootstrap().await.map_err(|e| e.to_string())? {
        eprintln!("Created the operator token (shown once, store it now):\n\n    {token}\n");
    }
    let listener = tokio::net::TcpListener::bind(app.config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", app.config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%addr, %database, "canon is serving");
    eprintln!("canon listening on http://{addr}");
    canon_server::serve(app, listener, shutdown_signal())
        .await
        .map_err(|e| format!("shutdown: {e}"))?;
    tracing::info!("canon stopped");
    Ok(())
}

/// Logs go to stderr, filtered by `CANON_LOG` (default `level`). Each request
/// is one line (target `canon::request`): method, route template, status,
/// latency, request id, tenant; never a header, a query or a body.
fn init_logs(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CANON_LOG").unwrap_or_else(|_| level.into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => logs.json().flatten_event(true).init(),
        // Colour only for a person at a terminal: escape codes in a log file
        // or a collector are noise.
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

/// The server's settings, and logging set up in the format they name (the
/// config file can name it, so logging starts only once it is read).
fn serve_config(args: ServeArgs) -> Result<Config, String> {
    let file = file_config(&args)?;
    let format = args.log_format.or(file.log_format).unwrap_or_default();
    init_logs(format, "info");
    resolve(args, file)
}

/// The level a command logs at unless `CANON_LOG` says otherwise: a client
/// command told to be quiet (`--progress none`: nothing on stderr but
/// errors) logs warnings and errors only, not what it did step by step
/// (`migrate-store`'s target migrations).
fn default_log_level(command: &Command) -> &'static str {
    let progress = match command {
        Command::Import(args) => args.target.progress,
        Command::Export(args) => args.target.progress,
        Command::MigrateStore(args) => args.progress,
        Command::Serve(_) | Command::Openapi => return "info",
    };
    if progress == transfer::progress::ProgressMode::None {
        "warn"
    } else {
        "info"
    }
}

fn main() -> ExitCode {
    // TLS's crypto provider (ring), before anything can build an HTTP client;
    // every client is built through `http_client`, which would install it too.
    canon_server::http_client::install_crypto_provider();
    let cli = Cli::parse();
    // `serve` starts logging once its config is read (the file can name the format).
    if !matches!(cli.command, Command::Serve(_)) {
        init_logs(LogFormat::Text, default_log_level(&cli.command));
    }
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| eprintln!("canon: cannot start the runtime: {e}"))
    };
    match cli.command {
        Command::Openapi => {
            let doc = canon_server::openapi::document();
            match serde_json::to_string_pretty(&doc) {
                Ok(text) => {
                    println!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("canon: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve(args) => match serve_config(args).map(|config| runtime().map(|rt| rt.block_on(serve(config)))) {
            Err(e) => {
                eprintln!("canon: {e}");
                ExitCode::FAILURE
            }
            Ok(Ok(Ok(()))) => ExitCode::SUCCESS,
            Ok(Ok(Err(e))) => {
                eprintln!("canon: {e}");
                ExitCode::FAILURE
            }
            Ok(Err(())) => ExitCode::FAILURE,
        },
        Command::Import(args) => match runtime() {
            Ok(rt) => transfer::finish(rt.block_on(transfer::import::run(args))),
            Err(()) => transfer::Exit::Broken.into(),
        },
        Command::Export(args) => match runtime() {
            Ok(rt) => transfer::finish(rt.block_on(transfer::export::run(args))),
            Err(()) => transfer::Exit::Broken.into(),
        },
        Command::MigrateStore(args) => match runtime() {
            Ok(rt) => rt.block_on(migrate_store::run(args)),
            Err(()) => ExitCode::FAILURE,
        },
    }
}
