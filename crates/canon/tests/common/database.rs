//! A PostgreSQL database made for one test on `CANON_TEST_POSTGRES_URL`'s
//! server, dropped at its end, or when the test fails.

use tokio_postgres::NoTls;

/// A connection to the server's maintenance database, and the name and
/// URL of a database made on it for this test.
pub struct Database {
    /// The connection to the maintenance database (the one the variable names).
    pub admin: tokio_postgres::Client,
    /// The test database's name.
    pub name: String,
    /// The test database's URL.
    pub url: String,
    admin_url: String,
    dropped: bool,
}

impl Database {
    /// Makes a database named `{prefix}_{pid}_{millis}`; `None` (with a
    /// note on stderr) when `CANON_TEST_POSTGRES_URL` is not set.
    pub async fn make(prefix: &str) -> Option<Database> {
        let Ok(admin_url) = std::env::var("CANON_TEST_POSTGRES_URL") else {
            eprintln!("CANON_TEST_POSTGRES_URL is not set: skipping a PostgreSQL test");
            return None;
        };
        let (admin, conn) = tokio_postgres::connect(&admin_url, NoTls).await.expect("connect");
        tokio::spawn(conn);
        let name = format!("{prefix}_{}_{}", std::process::id(), canon_store::now_millis());
        admin.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
        // The admin URL's database swapped for this one.
        let base = admin_url.split('?').next().unwrap_or(&admin_url);
        let scheme_end = base.find("://").map_or(0, |i| i + 3);
        let server = match base[scheme_end..].find('/') {
            Some(slash) => &base[..scheme_end + slash],
            None => base,
        };
        let url = format!("{server}/{name}");
        Some(Database {
            admin,
            name,
            url,
            admin_url,
            dropped: false,
        })
    }

    /// A connection to the test database itself (to look at its rows).
    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, NoTls).await.expect("connect");
        tokio::spawn(conn);
        client
    }

    /// Drops the database, ending the connections still open to it.
    pub async fn drop_it(mut self) {
        self.dropped = true;
        let _ = self.admin.batch_execute(&self.drop_statement()).await;
    }

    fn drop_statement(&self) -> String {
        format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)
    }
}

impl Drop for Database {
    /// A test that failed before `drop_it` leaves no database behind: the
    /// drop runs on a thread of its own (the test's runtime may be
    /// unwinding), on a connection of its own.
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (url, statement) = (self.admin_url.clone(), self.drop_statement());
        let dropping = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let (client, conn) = tokio_postgres::connect(&url, NoTls).await?;
                tokio::spawn(conn);
                client.batch_execute(&statement).await
            })?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        });
        if let Ok(Err(e)) = dropping.join() {
            eprintln!("could not drop the test database {}: {e}", self.name);
        }
    }
}
