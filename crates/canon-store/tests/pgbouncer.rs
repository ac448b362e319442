//! The conformance suite on the PostgreSQL backend through PgBouncer in
//! transaction-pooling mode: each transaction may run on another server
//! connection, so the store must keep no session state and no named
//! prepared statement between transactions. Each test starts its own
//! PgBouncer (Debian's `pgbouncer`, killed when the test ends) in front of
//! `CANON_TEST_POSTGRES_URL`'s server, with fewer server connections than
//! the store's pool has, and its own database. Without the variable or the
//! binary, each test prints a note and passes without running.

mod conformance;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use canon_store::postgres::{PostgresOptions, PostgresStore};
use canon_store::prelude::*;
use tokio_postgres::NoTls;

/// A PgBouncer process (killed on drop) and the database made behind it
/// (dropped on drop).
struct Bouncer {
    child: Child,
    _dir: tempfile::TempDir,
    admin_url: String,
    database: String,
    /// The database, through PgBouncer.
    url: String,
}

fn pgbouncer_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>());
    on_path
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("pgbouncer"))
        .find(|p| p.is_file())
}

impl Bouncer {
    async fn start() -> Option<Bouncer> {
        let Ok(admin_url) = std::env::var("CANON_TEST_POSTGRES_URL") else {
            eprintln!("CANON_TEST_POSTGRES_URL is not set: skipping a PgBouncer test");
            return None;
        };
        let Some(binary) = pgbouncer_binary() else {
            eprintln!("pgbouncer is not installed (apt-get install pgbouncer): skipping a PgBouncer test");
            return None;
        };
        let server: tokio_postgres::Config = admin_url.parse().expect("CANON_TEST_POSTGRES_URL");
        let host = match server.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "127.0.0.1".to_owned(),
        };
        let port = server.get_ports().first().copied().unwrap_or(5432);
        let user = server.get_user().unwrap_or("postgres").to_owned();

        static SEQ: AtomicU64 = AtomicU64::new(0);
        let database = format!(
            "canon_bouncer_{}_{}_{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            canon_store::now_millis()
        );
        let (client, conn) = tokio_postgres::connect(&admin_url, NoTls).await.expect("connect");
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {database}"))
            .await
            .expect("create a test database");

        let dir = tempfile::tempdir().unwrap();
        // A free port is only free until someone takes it: a test running
        // beside this one may pick the same one between our probe and
        // PgBouncer's bind. PgBouncer then exits, and the port answers with
        // the other test's PgBouncer, which goes away with that test. So a
        // PgBouncer that exited is started again on another port.
        for _attempt in 0..5 {
            let listen = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut child = spawn_pgbouncer(&binary, dir.path(), &host, port, &user, listen);
            let started = Instant::now();
            let mut listening = false;
            while started.elapsed() < Duration::from_secs(10) {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", listen)).is_ok() {
                    // Ours, unless it exits now having lost the bind.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    listening = child.try_wait().ok().flatten().is_none();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if !listening {
                let _ = child.kill();
                let _ = child.wait();
                continue;
            }
            let url = format!("postgres://{user}@127.0.0.1:{listen}/{database}");
            return Some(Bouncer {
                child,
                _dir: dir,
                admin_url,
                database,
                url,
            });
        }
        panic!("pgbouncer did not start listening in five attempts");
    }
}

/// Starts PgBouncer in transaction pooling on `listen`, for every database
/// of the server at `host:port`, its files in `dir`.
fn spawn_pgbouncer(
    binary: &std::path::Path,
    dir: &std::path::Path,
    host: &str,
    port: u16,
    user: &str,
    listen: u16,
) -> Child {
    let ini = dir.join("pgbouncer.ini");
    let users = dir.join("users.txt");
    std::fs::write(&users, format!("\"{user}\" \"\"\n")).unwrap();
    std::fs::write(
        &ini,
        format!(
            "[databases]\n* = host={host} port={port}\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {listen}\nunix_socket_dir =\n\
             auth_type = trust\nauth_file = {}\npool_mode = transaction\n\
             default_pool_size = 4\nmax_client_conn = 500\n",
            users.display()
        ),
    )
    .unwrap();
    let mut command = Command::new(binary);
    // PgBouncer refuses to run as root: it then runs as `postgres`, and
    // must be able to read its files.
    if is_root() {
        use std::os::unix::fs::PermissionsExt as _;
        for (path, mode) in [(dir, 0o755), (ini.as_path(), 0o644), (users.as_path(), 0o644)] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        command.args(["-u", "postgres"]);
    }
    command
        .arg(&ini)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start pgbouncer")
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (admin_url, name) = (self.admin_url.clone(), self.database.clone());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(&admin_url, NoTls).await?;
                tokio::spawn(conn);
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
            })
            .map_err(std::io::Error::other)
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the test database {}", self.database);
        }
    }
}

async fn fresh() -> Option<(Arc<dyn Store>, Bouncer)> {
    let bouncer = Bouncer::start().await?;
    let options = PostgresOptions {
        pool_size: 8,
        timeout: Duration::from_secs(10),
    };
    let store = PostgresStore::connect(&bouncer.url, options)
        .await
        .expect("open through pgbouncer");
    Some((Arc::new(store), bouncer))
}

conformance_tests!(match fresh().await {
    Some(made) => made,
    None => return,
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_survive_reopen() {
    let Some(bouncer) = Bouncer::start().await else {
        return;
    };
    let open = || {
        let opened = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(PostgresStore::connect(&bouncer.url, PostgresOptions::default()))
        });
        Arc::new(opened.expect("open through pgbouncer")) as Arc<dyn Store>
    };
    conformance::jobs_survive_reopen(open).await;
}
