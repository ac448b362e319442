//! What the Redis limiter costs per request beside the in-process one: the
//! same two charges (a key's burst, its tenant's daily quota), never
//! refused, timed by wall clock on one task (latency of one decision) and
//! with 32 decisions in flight (throughput), plus this process's CPU time
//! per decision (Redis's own work is in its process). Not a timed test;
//! figures depend on the machine (docs/decisions.md, "Shared limits in Redis").
//!
//! `cargo run --release -p canon-server --example bench_redis_limiter -- [redis://…] [decisions]`

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use canon_http::ratelimit::{LimitName, RateVerdict};
use canon_server::config::RedisFailure;
use canon_server::limits::{Charge, MemoryLimiter, Policy, RateLimiter, RedisLimiter, Scope};

fn charges() -> [Charge<'static>; 2] {
    [
        Charge {
            scope: Scope::Key,
            key: "0192f2c4-key",
            policy: Policy::per_second(1_000_000, 1_000_000),
            name: LimitName::Burst,
        },
        Charge {
            scope: Scope::Tenant,
            key: "0192f2c4-tenant",
            policy: Policy::Daily { quota: 2_000_000_000 },
            name: LimitName::Daily,
        },
    ]
}

fn at(i: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_900_000_000) + Duration::from_micros(i)
}

/// This process's CPU time (user + system) so far, from /proc (Linux).
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime is the
    // 14th field overall, stime the 15th, in clock ticks (100 a second).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// One task, `n` decisions: mean, p50 and p99 of one decision.
async fn sequential(limiter: &dyn RateLimiter, n: u64) -> (f64, u64, u64, Duration) {
    let c = charges();
    let mut took = Vec::with_capacity(n as usize);
    let cpu0 = cpu();
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        let verdict = limiter.acquire(&c, at(i), true).await.expect("limiter answers");
        took.push(t.elapsed().as_nanos() as u64);
        assert!(matches!(verdict, RateVerdict::Allowed(_)), "{verdict:?}");
    }
    let mean = started.elapsed().as_nanos() as f64 / n as f64;
    let cpu = cpu().saturating_sub(cpu0);
    took.sort_unstable();
    let pct = |p: f64| took[((took.len() as f64 - 1.0) * p) as usize];
    (mean, pct(0.5), pct(0.99), cpu)
}

/// `tasks` tasks of `n / tasks` decisions each: decisions per second.
async fn concurrent(limiter: Arc<dyn RateLimiter>, n: u64, tasks: u64) -> (f64, Duration) {
    let cpu0 = cpu();
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let c = charges();
                for i in 0..n / tasks {
                    let verdict = limiter.acquire(&c, at(i * tasks + t), true).await.expect("answers");
                    assert!(matches!(verdict, RateVerdict::Allowed(_)));
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("task");
    }
    let per_second = n as f64 / started.elapsed().as_secs_f64();
    (per_second, cpu().saturating_sub(cpu0))
}

/// Redis's own CPU time so far (`INFO cpu`: user + system), or zero.
async fn redis_cpu(url: &str) -> Duration {
    let Ok(client) = redis::Client::open(url) else {
        return Duration::ZERO;
    };
    let Ok(mut c) = client.get_multiplexed_async_connection().await else {
        return Duration::ZERO;
    };
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(&mut c)
        .await
        .unwrap_or_default();
    let secs: f64 = info
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| *k == "used_cpu_user" || *k == "used_cpu_sys")
        .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
        .sum();
    Duration::from_secs_f64(secs)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .or_else(|| std::env::var("CANON_TEST_REDIS_URL").ok())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let prefix = format!("canon-bench-{}", std::process::id());
    let memory: Arc<dyn RateLimiter> = Arc::new(MemoryLimiter::default());
    let redis: Arc<dyn RateLimiter> =
        Arc::new(RedisLimiter::new(&url, &prefix, RedisFailure::Closed, Duration::from_secs(2)).expect("redis url"));
    // Connect and load the script before timing.
    sequential(redis.as_ref(), 100).await;

    println!(
        "| limiter | mean ns | p50 ns | p99 ns | CPU ns/decision (Canon + Redis) | decisions/s, 32 in flight | CPU ns/decision, 32 in flight (Canon + Redis) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, limiter, n) in [("in process", memory, n * 10), ("Redis, loopback", redis, n)] {
        let per = |d: Duration| d.as_nanos() as f64 / n as f64;
        let r0 = redis_cpu(&url).await;
        let (mean, p50, p99, cpu) = sequential(limiter.as_ref(), n).await;
        let r1 = redis_cpu(&url).await;
        let (rate, cpu_c) = concurrent(limiter, n, 32).await;
        let r2 = redis_cpu(&url).await;
        // The in-process limiter leaves Redis idle: what it shows is the
        // INFO calls and anything else on that Redis.
        let (rs, rc) = if name == "in process" {
            (Duration::ZERO, Duration::ZERO)
        } else {
            (r1.saturating_sub(r0), r2.saturating_sub(r1))
        };
        println!(
            "| {name} | {mean:.0} | {p50} | {p99} | {:.0} + {:.0} | {rate:.0} | {:.0} + {:.0} |",
            per(cpu),
            per(rs),
            per(cpu_c),
            per(rc)
        );
    }

    // Leaves nothing behind in a shared Redis.
    if let Ok(client) = redis::Client::open(url.as_str())
        && let Ok(mut c) = client.get_multiplexed_async_connection().await
    {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query_async(&mut c)
            .await
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<i64, _> = redis::cmd("DEL").arg(keys).query_async(&mut c).await;
        }
    }
}
