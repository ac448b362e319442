//! What the rate limiter costs: GETs of one record per second, with the
//! limits on (generous, so nothing is refused) and off, in one run, on the
//! same machine, alternating rounds. Not a timed test; figures depend on
//! the machine (docs/performance.md).
//!
//! `cargo run --release -p canon-server --example bench_limits -- [seconds per round] [connections]`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use canon_server::{App, Config};
use canon_store::sqlite::SqliteStore;
use serde_json::{Value, json};

const OPERATOR: &str = "bench-operator-token";

struct Running {
    base: String,
    key: String,
    record: String,
    stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn start(limits: bool) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open(dir.path().join("canon.db")).expect("store"));
    let mut config = Config {
        bootstrap_token: Some(OPERATOR.into()),
        max_in_flight: 4096,
        ..Config::default()
    };
    if limits {
        // On, but never refusing: the cost of judging, not of 429s.
        config.rate_limit_per_second = 1_000_000;
        config.rate_limit_burst = 1_000_000;
        config.daily_quota = 1_000_000_000;
        config.max_in_flight_per_caller = Some(4096);
    } else {
        config.rate_limit_per_second = 0;
        config.daily_quota = 0;
        config.auth_failure_limit = 0;
        config.max_in_flight_per_caller = Some(4096);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let app = App::new(config, store).expect("app");
    app.bootstrap().await.expect("bootstrap");
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(canon_server::serve_router(listener, app.service(), async move {
        let _ = rx.await;
    }));
    let client = canon_server::http_client::client();
    let post = |path: String, token: String, body: Value| {
        let client = client.clone();
        let url = format!("{base}{path}");
        async move {
            let r = client
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .expect("post");
            assert!(r.status().is_success(), "{}", r.status());
            r.json::<Value>().await.expect("json")
        }
    };
    post("/v1/tenants".into(), OPERATOR.into(), json!({"name": "bench"})).await;
    let user = post(
        "/v1/tenants/bench/users".into(),
        OPERATOR.into(),
        json!({"email": "b@bench.example", "role": "admin"}),
    )
    .await;
    let id = user["id"].as_str().expect("id");
    let key = post(
        format!("/v1/tenants/bench/users/{id}/api-keys"),
        OPERATOR.into(),
        json!({"name": "bench"}),
    )
    .await["token"]
        .as_str()
        .expect("token")
        .to_owned();
    post(
        "/v1/tenants/bench/collections".into(),
        key.clone(),
        json!({"name": "things", "schema": {"type": "object"}}),
    )
    .await;
    let rec = post(
        "/v1/tenants/bench/collections/things/records".into(),
        key.clone(),
        json!({"port": 22}),
    )
    .await;
    let record = format!(
        "/v1/tenants/bench/collections/things/records/{}",
        rec["id"].as_str().expect("id")
    );
    Running {
        base,
        key,
        record,
        stop,
        _dir: dir,
    }
}

/// Requests per second over `secs` with `connections` keep-alive clients.
async fn round(server: &Running, secs: u64, connections: usize) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let url = format!("{}{}", server.base, server.record);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (done, url, key) = (done.clone(), url.clone(), server.key.clone());
        tasks.push(tokio::spawn(async move {
            let client = canon_server::http_client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .expect("client");
            while Instant::now() < deadline {
                let r = client.get(&url).bearer_auth(&key).send().await.expect("get");
                assert_eq!(r.status(), 200);
                let _ = r.bytes().await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    for t in tasks {
        t.await.expect("task");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let connections: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(32);
    let on = start(true).await;
    let off = start(false).await;
    // Warm both up.
    round(&on, 1, connections).await;
    round(&off, 1, connections).await;
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        without.push(round(&off, secs, connections).await);
        with.push(round(&on, secs, connections).await);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (w, wo) = (mean(&with), mean(&without));
    println!("| limiter | GET record, req/s (3 rounds of {secs} s, {connections} connections) |");
    println!("|---|---|");
    println!("| off | {wo:.0} ({}) |", fmt(&without));
    println!("| on | {w:.0} ({}) |", fmt(&with));
    println!("\ncost: {:.1} % of throughput", (1.0 - w / wo) * 100.0);
    let _ = on.stop.send(());
    let _ = off.stop.send(());
    micro(wo);
}

/// The limiter's own work for one request, timed alone on one thread (a
/// loaded machine makes the end-to-end comparison noisy): judging the key's
/// bucket and the tenant's quota, the in-flight share, remembering the
/// token for its address, the two header values.
fn micro(served_per_second: f64) {
    use canon_http::ratelimit::{LimitName, RateVerdict};
    use canon_server::limits::{Charge, InFlight, KnownGood, MemoryLimiter, Policy, Scope, epoch_nanos};
    use sha2::Digest as _;
    let limiter = MemoryLimiter::default();
    let in_flight = InFlight::new(1024);
    let known = KnownGood::default();
    let address: std::net::IpAddr = [127, 0, 0, 1].into();
    let token = "canon_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";
    let n = 1_000_000u32;
    let started = Instant::now();
    let mut bytes = 0usize;
    for i in 0..n {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_900_000_000) + Duration::from_micros(u64::from(i));
        let charges = [
            Charge {
                scope: Scope::Key,
                key: "0192f2c4-key",
                policy: Policy::per_second(1_000_000, 1_000_000),
                name: LimitName::Burst,
            },
            Charge {
                scope: Scope::Tenant,
                key: "0192f2c4-tenant",
                policy: Policy::Daily { quota: 2_000_000 },
                name: LimitName::Daily,
            },
        ];
        let held = in_flight.enter("0192f2c4-key", Some("0192f2c4-tenant"));
        let verdict = limiter.acquire_now(&charges, now, true);
        known.worked(
            address,
            sha2::Sha256::digest(token.as_bytes()).into(),
            known.owner("bench"),
            epoch_nanos(now),
        );
        if let RateVerdict::Allowed(s) = verdict {
            bytes += s.policy_field().map_or(0, |v| v.len()) + s.limit_field().map_or(0, |v| v.len());
        }
        drop(held);
    }
    let per = started.elapsed().as_nanos() as f64 / f64::from(n);
    let budget = 1e9 / served_per_second;
    println!(
        "\nlimiter work per request, alone on one thread: {per:.0} ns ({bytes} header bytes); \
         {:.2} % of the {budget:.0} ns each request took end to end without it",
        per / budget * 100.0
    );
}

fn fmt(v: &[f64]) -> String {
    v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", ")
}
