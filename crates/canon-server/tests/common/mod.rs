//! A real Canon server on a real socket, and helpers to talk to it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use canon_server::connections::ConnectionService;
use canon_server::{App, Config, Flow};
use canon_store::sqlite::SqliteStore;
use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

pub const OPERATOR: &str = "operator-token-for-tests";

pub struct Server {
    pub addr: SocketAddr,
    pub client: Client,
    /// The server's store, for tests that must set up a state HTTP cannot
    /// reach (a request stuck in flight).
    pub store: Arc<dyn canon_store::Store>,
    /// The server's state, for tests that run its periodic tasks by hand
    /// (saving the quota counts) instead of waiting for them.
    pub app: Arc<App>,
    _dir: Option<tempfile::TempDir>,
    _database: Option<PostgresDatabase>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Whether the suites run on PostgreSQL: `CANON_TEST_HTTP_POSTGRES=1` with
/// `CANON_TEST_POSTGRES_URL` naming a server. Each server then gets a
/// database of its own on it, named after its SQLite path (two servers on
/// one path are two nodes on one database; a restart finds its data).
fn postgres_server() -> Option<String> {
    std::env::var_os("CANON_TEST_HTTP_POSTGRES")?;
    std::env::var("CANON_TEST_POSTGRES_URL").ok()
}

/// Whether the suites run on PostgreSQL (see [`postgres_server`]).
pub fn on_postgres() -> bool {
    postgres_server().is_some()
}

/// A database made on the test server, dropped (connections and all) on drop.
pub struct PostgresDatabase {
    admin_url: String,
    name: String,
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop may run inside the test's runtime: the drop gets its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await?;
                tokio::spawn(conn);
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
            })
            .map_err(std::io::Error::other)
        })
        .join();
    }
}

/// Drops, once per test process, the databases earlier test processes left
/// (those standing for paths the caller kept, which no server drops): each
/// name carries its process's id, and a process that is gone needs none.
async fn sweep_once(client: &tokio_postgres::Client) {
    static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    SWEPT
        .get_or_init(|| async {
            let Ok(rows) = client
                .query(
                    "SELECT datname FROM pg_database WHERE datname LIKE 'canon\\_http\\_%'",
                    &[],
                )
                .await
            else {
                return;
            };
            for row in rows {
                let name: String = row.get(0);
                let pid = name.split('_').nth(2).unwrap_or("");
                if !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            }
        })
        .await;
}

/// The store a test server runs on: SQLite at `path`, or the PostgreSQL
/// database standing for `path` (see [`postgres_server`]).
async fn open_store(
    config: &Config,
    path: &std::path::Path,
) -> (Arc<dyn canon_store::Store>, Option<PostgresDatabase>) {
    let Some(admin_url) = postgres_server() else {
        let store = SqliteStore::open_with(
            path,
            canon_store::sqlite::Options {
                timeout: config.db_timeout,
                locking: config.sqlite_locking,
            },
        )
        .expect("open store");
        return (Arc::new(store), None);
    };
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::hash::DefaultHasher::new();
    path.hash(&mut hasher);
    let name = format!("canon_http_{}_{:016x}", std::process::id(), hasher.finish());
    let (client, conn) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
        .await
        .expect("connect to CANON_TEST_POSTGRES_URL");
    tokio::spawn(conn);
    sweep_once(&client).await;
    if let Err(e) = client.batch_execute(&format!("CREATE DATABASE {name}")).await {
        // Made already by an earlier server on the same path.
        assert_eq!(
            e.code(),
            Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE),
            "create a test database: {e}"
        );
    }
    let base = admin_url.split('?').next().unwrap_or(&admin_url);
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let server = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    let options = canon_store::postgres::PostgresOptions {
        pool_size: config.db_pool_size,
        timeout: config.db_timeout,
    };
    let store = canon_store::postgres::PostgresStore::connect(&format!("{server}/{name}"), options)
        .await
        .expect("open the PostgreSQL store");
    (Arc::new(store), Some(PostgresDatabase { admin_url, name }))
}

/// Another handle on the database of the servers on `path` (a node without
/// a server: no workers, no caches), for tests that write behind the
/// servers' backs. The database stays for the servers.
pub async fn node_store(path: &std::path::Path) -> Arc<dyn canon_store::Store> {
    let (store, database) = open_store(&config(), path).await;
    std::mem::forget(database);
    store
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The test servers' configuration. Rate limits, quotas and failed-auth
/// limiting are off: the other suites send many requests with one key (or
/// many bad tokens) on purpose; `tests/limits.rs` turns each on.
pub fn config() -> Config {
    Config {
        bootstrap_token: Some(OPERATOR.into()),
        rate_limit_per_second: 0,
        daily_quota: 0,
        auth_failure_limit: 0,
        max_in_flight_per_caller: Some(usize::MAX),
        // Suites open many connections from 127.0.0.1 (slow header
        // sections, held uploads); `tests/connections.rs` turns it down.
        max_connections_per_address: 100_000,
        ..Config::default()
    }
}

impl Server {
    /// Sends `method` to `path` as `token`, with extra `headers` and an
    /// optional JSON body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Response {
        let mut b = self.req(method, path, Some(token));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        if let Some(body) = body {
            b = b.json(&body);
        }
        b.send().await.expect("send")
    }

    pub async fn start() -> Server {
        Self::start_with(config(), |r| r).await
    }

    /// Starts a server with `config`; `extend` may add test-only routes
    /// under the same envelope.
    pub async fn start_with<S: ConnectionService>(config: Config, extend: impl FnOnce(Flow) -> S) -> Server {
        Self::start_clocked(config, Arc::new(canon_server::limits::SystemClock), extend).await
    }

    /// Starts a server whose limits read `clock` (a test moves it).
    pub async fn start_clocked<S: ConnectionService>(
        config: Config,
        clock: Arc<dyn canon_server::limits::Clock>,
        extend: impl FnOnce(Flow) -> S,
    ) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("canon.db");
        Self::launch(config, &path, Some(dir), clock, extend).await
    }

    /// Starts a server with `config` and `clock` on the database file at
    /// `path`, which the caller keeps.
    pub async fn start_clocked_on(
        config: Config,
        path: &std::path::Path,
        clock: Arc<dyn canon_server::limits::Clock>,
    ) -> Server {
        Self::launch(config, path, None, clock, |r| r).await
    }

    /// Starts a server without the in-flight gate in front of its envelope
    /// (`canon_server::shed`): its handler takes the slots itself and the
    /// flow's first node sheds, as before the gate existed.
    pub async fn start_ungated(config: Config) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("canon.db");
        Self::launch_with(
            config,
            &path,
            Some(dir),
            Arc::new(canon_server::limits::SystemClock),
            |r| r,
            false,
        )
        .await
    }

    /// Starts a server on the database file at `path`, which the caller
    /// keeps: two servers on one path are two nodes; dropping one and
    /// starting another is a restart.
    pub async fn start_on(path: &std::path::Path) -> Server {
        Self::launch(config(), path, None, Arc::new(canon_server::limits::SystemClock), |r| r).await
    }

    /// Starts a server with `config` on the database file at `path`, which
    /// the caller keeps (and may lock, move or remove).
    pub async fn start_with_on(config: Config, path: &std::path::Path) -> Server {
        Self::launch(config, path, None, Arc::new(canon_server::limits::SystemClock), |r| r).await
    }

    async fn launch<S: ConnectionService>(
        config: Config,
        path: &std::path::Path,
        dir: Option<tempfile::TempDir>,
        clock: Arc<dyn canon_server::limits::Clock>,
        extend: impl FnOnce(Flow) -> S,
    ) -> Server {
        Self::launch_with(config, path, dir, clock, extend, true).await
    }

    async fn launch_with<S: ConnectionService>(
        mut config: Config,
        path: &std::path::Path,
        dir: Option<tempfile::TempDir>,
        clock: Arc<dyn canon_server::limits::Clock>,
        extend: impl FnOnce(Flow) -> S,
        gated: bool,
    ) -> Server {
        let (store, database) = open_store(&config, path).await;
        // A database made for a server's own temporary directory goes with
        // the server; one standing for a path the caller keeps (nodes,
        // restarts) stays for the next server on that path.
        let database = match database {
            Some(made) if dir.is_none() => {
                std::mem::forget(made);
                None
            }
            other => other,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        config.listen = addr;
        let app = App::with_clock(config, store.clone(), clock).expect("app");
        app.bootstrap().await.expect("bootstrap");
        canon_server::worker::start(&app, app.config.job_workers);
        canon_server::maintenance::watch(&app);
        let router = canon_server::enveloped(extend(app.flow()));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let limits = canon_server::Limits::from_config(&app.config);
        let stop = async move {
            let _ = rx.await;
        };
        if gated {
            let service = canon_server::shed::gated(&app, router);
            tokio::spawn(canon_server::serve_connections(listener, service, limits, stop));
        } else {
            tokio::spawn(canon_server::serve_connections(listener, router, limits, stop));
        }
        let client = canon_server::http_client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Server {
            addr,
            client,
            store,
            app,
            _dir: dir,
            _database: database,
            shutdown: Some(tx),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn req(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let mut b = self.client.request(method, self.url(path));
        if let Some(t) = token {
            b = b.bearer_auth(t);
        }
        b
    }

    pub async fn call(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Response {
        let mut b = self.req(method, path, Some(token));
        if let Some(body) = body {
            b = b.json(&body);
        }
        b.send().await.expect("send")
    }

    pub async fn ok_json(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Value {
        let r = self.call(method.clone(), path, token, body).await;
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {path}: {status} {body}");
        body
    }
}

/// A tenant with one user of each role, an API key each, and a collection.
pub struct World {
    pub admin: String,
    pub editor: String,
    pub viewer: String,
    pub editor_id: String,
}

pub async fn world(s: &Server, tenant: &str) -> World {
    s.ok_json(Method::POST, "/v1/tenants", OPERATOR, Some(json!({"name": tenant})))
        .await;
    let mut tokens = Vec::new();
    let mut ids = Vec::new();
    for role in ["admin", "editor", "viewer"] {
        let (id, token) = add_user(s, tenant, &format!("{role}@{tenant}.example"), role).await;
        tokens.push(token);
        ids.push(id);
    }
    s.ok_json(
        Method::POST,
        &format!("/v1/tenants/{tenant}/collections"),
        OPERATOR,
        Some(json!({
            "name": "devices",
            "schema": {"type": "object", "properties": {"port": {"type": "integer"}, "serial": {"type": "string"}}, "required": ["port"], "additionalProperties": false},
            "unique": ["serial"]
        })),
    )
    .await;
    World {
        admin: tokens[0].clone(),
        editor: tokens[1].clone(),
        viewer: tokens[2].clone(),
        editor_id: ids[1].clone(),
    }
}

/// Adds a user with `role` to `tenant` and returns its id and a token.
pub async fn add_user(s: &Server, tenant: &str, email: &str, role: &str) -> (String, String) {
    let u = s
        .ok_json(
            Method::POST,
            &format!("/v1/tenants/{tenant}/users"),
            OPERATOR,
            Some(json!({"email": email, "role": role})),
        )
        .await;
    let id = u["id"].as_str().expect("id").to_owned();
    let k = s
        .ok_json(
            Method::POST,
            &format!("/v1/tenants/{tenant}/users/{id}/api-keys"),
            OPERATOR,
            Some(json!({"name": role})),
        )
        .await;
    (id, k["token"].as_str().expect("token").to_owned())
}

pub fn header<'a>(r: &'a Response, name: &str) -> &'a str {
    r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Asserts `r` is the problem `slug` with `status`, a body whose members
/// agree with the response, and an `X-Request-Id` matching `request_id`.
pub async fn assert_problem(r: Response, status: u16, slug: &str) -> Value {
    assert_eq!(
        r.status(),
        StatusCode::from_u16(status).unwrap(),
        "{:?}",
        r.url().path()
    );
    assert_eq!(header(&r, "content-type"), "application/problem+json");
    let rid = header(&r, "x-request-id").to_owned();
    assert!(!rid.is_empty(), "x-request-id");
    let path = r.url().path().to_owned();
    let body: Value = r.json().await.expect("problem body is JSON");
    assert_eq!(body["type"], format!("/problems/{slug}"), "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert!(body["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(body["detail"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(body["instance"], path);
    assert_eq!(body["request_id"], rid);
    body
}

/// A resolver for the device gateway that answers from a table the test
/// holds, and may change mid-test (DNS rebinding).
pub struct FakeDns(pub std::sync::Mutex<Vec<(String, std::net::IpAddr)>>);

impl canon_server::devices::config::NameLookup for FakeDns {
    fn lookup<'a>(&'a self, host: &'a str) -> canon_http::flow::BoxFuture<'a, std::io::Result<Vec<std::net::IpAddr>>> {
        let found: Vec<std::net::IpAddr> = self
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(h, _)| h == host)
            .map(|(_, ip)| *ip)
            .collect();
        Box::pin(async move { Ok(found) })
    }
}
