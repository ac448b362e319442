//! The limiter held in Redis (`--redis`, `CANON_REDIS_URL`): every node on
//! one Redis shares each key's burst and each tenant's daily quota
//! (docs/decisions.md, "Shared limits in Redis").
//!
//! One Lua script per request reads every charge's cell, decides, and takes
//! from all of them or from none; Redis runs a script alone, so two nodes
//! never both take the last token. The script answers with the cells as it
//! found them, and the verdict's fields are computed from those by the same
//! `judge` the in-process limiter uses: the same history gives the same
//! `RateLimit` fields on either backend.
//!
//! Keys (`{prefix}:gcra:{scope}:{key}`, `{prefix}:day:{day}:{scope}:{key}`)
//! live no longer than they say something: a GCRA cell expires when its
//! bucket is full again, a day's count an hour after that day's midnight.
//!
//! Redis unreachable, slow or answering garbage is decided by
//! [`RedisFailure`]: served without limits or refused with 503. After a
//! failure Redis is left alone for [`PAUSE_AFTER_FAILURE`], so an outage
//! costs requests no time, and the warning is logged at most once per
//! [`WARN_EVERY`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime};

use canon_http::flow::BoxFuture;
use canon_http::ratelimit::RateVerdict;
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{
    Cell, Charge, DAY_SECS, Judged, LimiterError, MemoryLimiter, NANOS_PER_SEC, Policy, RateLimiter, Scope, day_of,
    decide, judge, nanos,
};
use crate::config::{Config, RedisFailure};

/// How long Redis is not asked after a failure: requests meanwhile meet
/// the failure policy at once instead of each waiting for a timeout.
pub const PAUSE_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// At most one warning per this interval while Redis fails (with the count
/// of the failures not logged since the last one).
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// How long a day's count outlives the day's end: a refund of a request
/// taken just before midnight still finds it.
const DAY_KEPT_PAST_MIDNIGHT_SECS: u64 = 3_600;

/// How long a GCRA cell outlives the moment its bucket is full again: the
/// nodes' clocks may disagree by this much without a node losing a cell
/// another still counts on.
const GCRA_KEPT_EXTRA_MS: u64 = 1_000;

/// Largest GCRA capacity (rate interval × burst) the script handles
/// exactly: Lua's numbers are doubles, whole up to 2^53 (about 104 days in
/// nanoseconds). A larger one is clamped to it.
const MAX_CAPACITY_NS: u64 = 1 << 52;

/// Judges every charge and takes from all or none.
///
/// `KEYS[i]`: charge i's cell. `ARGV`: the time (whole seconds, then
/// nanoseconds: nanoseconds since the epoch are past 2^53), whether to
/// take, then three per charge: `g`, the interval and the capacity in ns
/// (GCRA), or `d`, the quota and the seconds the count is kept (a day).
///
/// A GCRA cell holds its theoretical arrival time as `"{secs} {nanos}"`;
/// only its distance from now is computed with, which is whole in a
/// double. Answers `{taken, cell_1, …}` where a GCRA cell is how far its
/// arrival time is ahead of now (0 for a full bucket), and a day's is its
/// count, both as found before taking.
const ACQUIRE_LUA: &str = r#"
local now_s = tonumber(ARGV[1])
local now_n = tonumber(ARGV[2])
local take = ARGV[3] == '1'
local found = {}
local allowed = true
for i = 1, #KEYS do
  local a = 3 + (i - 1) * 3
  local v = redis.call('GET', KEYS[i])
  if ARGV[a + 1] == 'g' then
    local ahead = 0
    if v then
      local s, n = string.match(v, '^(%d+) (%d+)$')
      if s then
        ahead = (tonumber(s) - now_s) * 1e9 + (tonumber(n) - now_n)
      end
      if ahead < 0 then ahead = 0 end
    end
    found[i] = ahead
    if ahead + tonumber(ARGV[a + 2]) > tonumber(ARGV[a + 3]) then allowed = false end
  else
    local count = tonumber(v or '0') or 0
    found[i] = count
    if count >= tonumber(ARGV[a + 2]) then allowed = false end
  end
end
if allowed and take then
  for i = 1, #KEYS do
    local a = 3 + (i - 1) * 3
    if ARGV[a + 1] == 'g' then
      local after = found[i] + tonumber(ARGV[a + 2])
      local total = now_n + after
      local secs = now_s + math.floor(total / 1e9)
      local nanos = total - math.floor(total / 1e9) * 1e9
      redis.call('SET', KEYS[i], string.format('%d %d', secs, nanos), 'PX', math.ceil(after / 1e6) + GCRA_KEPT_EXTRA_MS)
    else
      if redis.call('INCR', KEYS[i]) == 1 then
        redis.call('EXPIRE', KEYS[i], tonumber(ARGV[a + 3]))
      end
    end
  end
end
local answer = {allowed and take and 1 or 0}
for i = 1, #KEYS do answer[i + 1] = found[i] end
return answer
"#;

/// Gives back one request to every charge. `ARGV`: two per charge, `g` and
/// the interval in ns (the arrival time moves back by it; the cell keeps
/// its expiry), or `d` and 0 (the count goes down, never below 0).
const REFUND_LUA: &str = r#"
for i = 1, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if v then
    if ARGV[2 * i - 1] == 'g' then
      local s, n = string.match(v, '^(%d+) (%d+)$')
      if s then
        local total = tonumber(n) - tonumber(ARGV[2 * i])
        local secs = tonumber(s) + math.floor(total / 1e9)
        local nanos = total - math.floor(total / 1e9) * 1e9
        if secs < 0 then secs = 0; nanos = 0 end
        redis.call('SET', KEYS[i], string.format('%d %d', secs, nanos), 'KEEPTTL')
      end
    elseif (tonumber(v) or 0) > 0 then
      redis.call('DECR', KEYS[i])
    end
  end
end
return 0
"#;

static ACQUIRE: LazyLock<Script> =
    LazyLock::new(|| Script::new(&ACQUIRE_LUA.replace("GCRA_KEPT_EXTRA_MS", &GCRA_KEPT_EXTRA_MS.to_string())));
static REFUND: LazyLock<Script> = LazyLock::new(|| Script::new(REFUND_LUA));

/// Why one call to Redis gave no verdict.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("not asked: it failed less than {PAUSE_AFTER_FAILURE:?} ago")]
    Paused,
    #[error("unexpected answer: {0:?}")]
    Answer(Vec<i64>),
}

/// When the last warning was logged, and failures since.
#[derive(Default)]
struct Warned {
    last: Option<Instant>,
    unlogged: u64,
}

/// Rate limits and daily quotas held in one Redis, shared by every node on
/// it. Connects on first use (a node starts while Redis is down) and
/// reconnects by itself.
pub struct RedisLimiter {
    client: redis::Client,
    connection: tokio::sync::OnceCell<ConnectionManager>,
    prefix: String,
    failure: RedisFailure,
    timeout: Duration,
    /// Milliseconds after `started` before which Redis is not asked.
    paused_until: AtomicU64,
    started: Instant,
    warned: Mutex<Warned>,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: never printed.
        f.debug_struct("RedisLimiter")
            .field("prefix", &self.prefix)
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

/// The limiter `config` asks for: Redis when a URL is given, else in process.
pub fn limiter_for(config: &Config) -> Result<Arc<dyn RateLimiter>, LimiterError> {
    Ok(match &config.redis_url {
        Some(url) => Arc::new(RedisLimiter::new(
            url,
            &config.redis_prefix,
            config.redis_failure,
            config.redis_timeout,
        )?),
        None => Arc::new(MemoryLimiter::default()),
    })
}

impl RedisLimiter {
    /// A limiter on the Redis at `url` (`redis://[user:password@]host[:port][/db]`),
    /// its keys under `prefix`, each call bounded by `timeout`. Only the URL
    /// is checked here; nothing is connected yet.
    pub fn new(url: &str, prefix: &str, failure: RedisFailure, timeout: Duration) -> Result<Self, LimiterError> {
        let client = redis::Client::open(url).map_err(|e| LimiterError(format!("the Redis URL: {e}")))?;
        let timeout = timeout.max(Duration::from_millis(1));
        Ok(Self {
            client,
            connection: tokio::sync::OnceCell::new(),
            prefix: prefix.to_owned(),
            failure,
            timeout,
            paused_until: AtomicU64::new(0),
            started: Instant::now(),
            warned: Mutex::new(Warned::default()),
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, Failure> {
        let manager = self
            .connection
            .get_or_try_init(|| async {
                // One quick retry, then the failure policy: a request
                // never waits through a long backoff.
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(10))
                    .set_max_delay(self.timeout);
                ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            })
            .await?;
        Ok(manager.clone())
    }

    /// The cell of `charge` at `now` (ns): a day's count is keyed by its day.
    fn key(&self, charge: &Charge<'_>, now: u64) -> String {
        let scope = match charge.scope {
            Scope::Key => "k",
            Scope::Tenant => "t",
            Scope::Address => "a",
        };
        match charge.policy {
            Policy::Gcra { .. } => format!("{}:gcra:{scope}:{}", self.prefix, charge.key),
            Policy::Daily { .. } => format!("{}:day:{}:{scope}:{}", self.prefix, day_of(now), charge.key),
        }
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Runs `call` unless Redis failed lately, within the timeout.
    async fn ask<T>(&self, call: impl Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
        if self.elapsed_ms() < self.paused_until.load(Ordering::Relaxed) {
            return Err(Failure::Paused);
        }
        match tokio::time::timeout(self.timeout, call).await {
            Ok(answer) => answer,
            Err(_) => Err(Failure::Timeout(self.timeout)),
        }
    }

    async fn judge_all(&self, charges: &[Charge<'_>], now: u64, take: bool) -> Result<RateVerdict, Failure> {
        let mut call = ACQUIRE.prepare_invoke();
        call.arg(now / NANOS_PER_SEC)
            .arg(now % NANOS_PER_SEC)
            .arg(u8::from(take));
        for c in charges {
            call.key(self.key(c, now));
            match c.policy {
                Policy::Gcra { interval, burst } => {
                    let t = (interval.as_nanos() as u64).max(1);
                    let capacity = t.saturating_mul(u64::from(burst)).min(MAX_CAPACITY_NS);
                    call.arg("g").arg(t).arg(capacity);
                }
                Policy::Daily { quota } => {
                    let to_midnight = DAY_SECS - (now / NANOS_PER_SEC) % DAY_SECS;
                    call.arg("d").arg(quota).arg(to_midnight + DAY_KEPT_PAST_MIDNIGHT_SECS);
                }
            }
        }
        let found: Vec<i64> = self
            .ask(async {
                let mut connection = self.connection().await?;
                Ok(call.invoke_async(&mut connection).await?)
            })
            .await?;
        if found.len() != charges.len() + 1 {
            return Err(Failure::Answer(found));
        }
        let judged: Vec<Judged> = charges
            .iter()
            .zip(&found[1..])
            .map(|(c, &cell)| {
                let cell = u64::try_from(cell).unwrap_or(0);
                let cell = match c.policy {
                    Policy::Gcra { .. } => Cell::Gcra {
                        tat: now.saturating_add(cell),
                    },
                    Policy::Daily { .. } => Cell::Daily {
                        day: day_of(now),
                        count: u32::try_from(cell).unwrap_or(u32::MAX),
                        unsaved: 0,
                    },
                };
                judge(Some(cell), c.policy, c.name, now)
            })
            .collect();
        Ok(decide(judged.iter()))
    }

    async fn give_back(&self, charges: &[Charge<'_>], now: u64) -> Result<(), Failure> {
        let mut call = REFUND.prepare_invoke();
        for c in charges {
            call.key(self.key(c, now));
            match c.policy {
                Policy::Gcra { interval, .. } => call.arg("g").arg((interval.as_nanos() as u64).max(1)),
                Policy::Daily { .. } => call.arg("d").arg(0),
            };
        }
        self.ask(async {
            let mut connection = self.connection().await?;
            let _: i64 = call.invoke_async(&mut connection).await?;
            Ok(())
        })
        .await
    }

    /// Counts a call Redis did not answer, pauses asking it, and logs at
    /// most one warning per [`WARN_EVERY`].
    fn failed(&self, failure: &Failure) {
        crate::metrics::limiter_unavailable(self.failure.as_str());
        if !matches!(failure, Failure::Paused) {
            let until = self.elapsed_ms() + PAUSE_AFTER_FAILURE.as_millis() as u64;
            self.paused_until.fetch_max(until, Ordering::Relaxed);
        }
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        if warned.last.is_some_and(|last| last.elapsed() < WARN_EVERY) {
            warned.unlogged += 1;
            return;
        }
        let since = std::mem::take(&mut warned.unlogged);
        warned.last = Some(Instant::now());
        drop(warned);
        match self.failure {
            RedisFailure::Open => tracing::warn!(
                error = %failure,
                failures_not_logged = since,
                "Redis (shared rate limits) unavailable: requests are served without rate limits or quotas"
            ),
            RedisFailure::Closed => tracing::warn!(
                error = %failure,
                failures_not_logged = since,
                "Redis (shared rate limits) unavailable: requests are refused with 503"
            ),
        }
    }
}

impl RateLimiter for RedisLimiter {
    fn acquire<'a>(
        &'a self,
        charges: &'a [Charge<'a>],
        now: SystemTime,
        take: bool,
    ) -> BoxFuture<'a, Result<RateVerdict, LimiterError>> {
        Box::pin(async move {
            if charges.is_empty() {
                return Ok(RateVerdict::Unlimited);
            }
            match self.judge_all(charges, nanos(now), take).await {
                Ok(verdict) => Ok(verdict),
                Err(failure) => {
                    self.failed(&failure);
                    match self.failure {
                        RedisFailure::Open => Ok(RateVerdict::Unlimited),
                        RedisFailure::Closed => Err(LimiterError(failure.to_string())),
                    }
                }
            }
        })
    }

    fn refund<'a>(&'a self, charges: &'a [Charge<'a>], now: SystemTime) -> BoxFuture<'a, Result<(), LimiterError>> {
        Box::pin(async move {
            if charges.is_empty() {
                return Ok(());
            }
            // A refund that fails leaves the caller charged, as without
            // refunds; it is counted and logged like any failure (rate
            // limited), not once per failed request.
            if let Err(failure) = self.give_back(charges, nanos(now)).await {
                self.failed(&failure);
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    //! Against a real Redis (`CANON_TEST_REDIS_URL`; `.ci/run` sets it):
    //! the in-process limiter's cases, each history checked field by field
    //! against a `MemoryLimiter`, then what only a shared limiter does. Each
    //! test has its own key prefix and removes its keys.

    use super::*;
    use canon_http::ratelimit::LimitName;
    use std::time::UNIX_EPOCH;

    /// The test Redis, or `None` with a note (the test then checks nothing).
    fn redis_url() -> Option<String> {
        let url = std::env::var("CANON_TEST_REDIS_URL").ok().filter(|u| !u.is_empty());
        if url.is_none() {
            eprintln!("CANON_TEST_REDIS_URL is not set: skipping a Redis limiter test");
        }
        url
    }

    /// A limiter on the test Redis under a prefix of its own.
    fn limiter(url: &str, prefix: &str, failure: RedisFailure) -> RedisLimiter {
        RedisLimiter::new(url, prefix, failure, Duration::from_secs(2)).expect("redis url")
    }

    fn new_prefix() -> String {
        format!("canon-test-{}", uuid::Uuid::new_v4().simple())
    }

    /// Removes every key under `prefix`.
    async fn clean(url: &str, prefix: &str) {
        let client = redis::Client::open(url).expect("url");
        let mut c = client.get_multiplexed_async_connection().await.expect("connect");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query_async(&mut c)
            .await
            .expect("keys");
        if !keys.is_empty() {
            let _: i64 = redis::cmd("DEL").arg(keys).query_async(&mut c).await.expect("del");
        }
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn burst<'a>(key: &'a str, per_second: u32, burst: u32) -> Charge<'a> {
        Charge {
            scope: Scope::Key,
            key,
            policy: Policy::per_second(per_second, burst),
            name: LimitName::Burst,
        }
    }

    fn daily(key: &str, quota: u32) -> Charge<'_> {
        Charge {
            scope: Scope::Tenant,
            key,
            policy: Policy::Daily { quota },
            name: LimitName::Daily,
        }
    }

    /// Both limiters, fed the same history.
    struct Pair {
        redis: RedisLimiter,
        memory: MemoryLimiter,
    }

    impl Pair {
        /// Acquires on both; the verdicts must be equal, field by field.
        async fn acquire(&self, charges: &[Charge<'_>], now: SystemTime, take: bool) -> RateVerdict {
            let shared = self.redis.acquire(charges, now, take).await.expect("redis answers");
            let local = self.memory.acquire_now(charges, now, take);
            assert_eq!(shared, local, "Redis and in-process verdicts differ");
            shared
        }

        async fn refund(&self, charges: &[Charge<'_>], now: SystemTime) {
            self.redis.refund(charges, now).await.expect("refund");
            self.memory.refund_now(charges, now);
        }
    }

    async fn pair() -> Option<(Pair, String, String)> {
        let url = redis_url()?;
        let prefix = new_prefix();
        let pair = Pair {
            redis: limiter(&url, &prefix, RedisFailure::Closed),
            memory: MemoryLimiter::default(),
        };
        Some((pair, url, prefix))
    }

    #[tokio::test]
    async fn gcra_allows_the_burst_then_one_per_interval() {
        let Some((l, url, prefix)) = pair().await else { return };
        let c = [burst("k", 2, 3)];
        let t0 = at(1_000_000);
        for left in [2, 1, 0] {
            match l.acquire(&c, t0, true).await {
                RateVerdict::Allowed(s) => assert_eq!(s.policies[0].unwrap().remaining, left),
                other => panic!("{other:?}"),
            }
        }
        match l.acquire(&c, t0, true).await {
            RateVerdict::Refused { limit, retry_after, .. } => assert_eq!((limit, retry_after), (LimitName::Burst, 1)),
            other => panic!("{other:?}"),
        }
        // Half a second later (2/s), one more: refused, then freed.
        let later = t0 + Duration::from_millis(500);
        assert!(matches!(l.acquire(&c, later, true).await, RateVerdict::Allowed(_)));
        assert!(matches!(l.acquire(&c, later, true).await, RateVerdict::Refused { .. }));
        clean(&url, &prefix).await;
    }

    #[tokio::test]
    async fn a_refusal_takes_nothing_from_any_limit() {
        let Some((l, url, prefix)) = pair().await else { return };
        let t0 = at(10 * DAY_SECS + 100);
        let c = [burst("k", 1, 1), daily("t", 5)];
        assert!(matches!(l.acquire(&c, t0, true).await, RateVerdict::Allowed(_)));
        // Burst refused: the quota is not counted.
        for _ in 0..10 {
            assert!(matches!(l.acquire(&c, t0, true).await, RateVerdict::Refused { .. }));
        }
        match l.acquire(&c, t0 + Duration::from_secs(1), true).await {
            RateVerdict::Allowed(s) => assert_eq!(s.policies[1].unwrap().remaining, 3),
            other => panic!("{other:?}"),
        }
        // Quota refused (another key of the tenant): the burst is not taken.
        let other = [burst("k2", 1, 1), daily("t", 5)];
        let t1 = t0 + Duration::from_secs(2);
        for _ in 0..3 {
            l.acquire(&[daily("t", 5)], t1, true).await;
        }
        assert!(matches!(
            l.acquire(&other, t1, true).await,
            RateVerdict::Refused {
                limit: LimitName::Daily,
                ..
            }
        ));
        assert!(matches!(
            l.acquire(&[burst("k2", 1, 1)], t1, true).await,
            RateVerdict::Allowed(_)
        ));
        clean(&url, &prefix).await;
    }

    #[tokio::test]
    async fn the_quota_resets_at_midnight_utc() {
        let Some((l, url, prefix)) = pair().await else { return };
        let c = [daily("t", 2)];
        let before = at(20 * DAY_SECS - 30);
        assert!(matches!(l.acquire(&c, before, true).await, RateVerdict::Allowed(_)));
        assert!(matches!(l.acquire(&c, before, true).await, RateVerdict::Allowed(_)));
        match l.acquire(&c, before, true).await {
            RateVerdict::Refused { limit, retry_after, .. } => assert_eq!((limit, retry_after), (LimitName::Daily, 30)),
            other => panic!("{other:?}"),
        }
        match l.acquire(&c, at(20 * DAY_SECS), true).await {
            RateVerdict::Allowed(s) => {
                let p = s.policies[0].unwrap();
                assert_eq!((p.remaining, p.reset), (1, DAY_SECS));
            }
            other => panic!("{other:?}"),
        }
        // The day's count expires past midnight, not before.
        let client = redis::Client::open(url.as_str()).expect("url");
        let mut con = client.get_multiplexed_async_connection().await.expect("connect");
        let ttl: i64 = redis::cmd("TTL")
            .arg(format!("{prefix}:day:19:t:t"))
            .query_async(&mut con)
            .await
            .expect("ttl");
        assert!((30..=30 + DAY_KEPT_PAST_MIDNIGHT_SECS as i64).contains(&ttl), "{ttl}");
        clean(&url, &prefix).await;
    }

    #[tokio::test]
    async fn a_refund_gives_back_a_token_and_a_count() {
        let Some((l, url, prefix)) = pair().await else { return };
        let c = [burst("k", 1, 1), daily("t", 2)];
        let now = at(30 * DAY_SECS);
        assert!(matches!(l.acquire(&c, now, true).await, RateVerdict::Allowed(_)));
        assert!(matches!(l.acquire(&c, now, true).await, RateVerdict::Refused { .. }));
        l.refund(&c, now).await;
        match l.acquire(&c, now, true).await {
            RateVerdict::Allowed(s) => assert_eq!(s.policies[1].unwrap().remaining, 1),
            other => panic!("{other:?}"),
        }
        clean(&url, &prefix).await;
    }

    #[tokio::test]
    async fn peeking_takes_nothing() {
        let Some((l, url, prefix)) = pair().await else { return };
        let c = [burst("k", 1, 1), daily("t", 1)];
        for _ in 0..3 {
            assert!(matches!(l.acquire(&c, at(5), false).await, RateVerdict::Allowed(_)));
        }
        assert!(matches!(l.acquire(&c, at(5), true).await, RateVerdict::Allowed(_)));
        clean(&url, &prefix).await;
    }

    /// A long pseudo-random history of acquires, peeks and refunds on a few
    /// keys, tenants and addresses, with the clock moving by uneven steps
    /// (across a midnight): every verdict equal on both backends.
    #[tokio::test]
    async fn any_history_gives_the_same_fields_as_in_process() {
        let Some((l, url, prefix)) = pair().await else { return };
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut now = at(40 * DAY_SECS - 3) + Duration::from_nanos(123_456_789);
        let keys = ["k1", "k2", "k3"];
        let tenants = ["t1", "t2"];
        let mut refused = std::collections::HashSet::new();
        for _ in 0..400 {
            now += Duration::from_nanos(next(150_000_000));
            let key = keys[next(3) as usize];
            let tenant = tenants[next(2) as usize];
            let address = Charge::auth_failures("192.0.2.1", Policy::per_second(3, 2));
            let charges = match next(4) {
                0 => vec![burst(key, 2, 2)],
                1 => vec![daily(tenant, 40)],
                2 => vec![address],
                _ => vec![burst(key, 2, 2), daily(tenant, 40)],
            };
            match next(10) {
                0 => l.refund(&charges, now).await,
                1 => {
                    l.acquire(&charges, now, false).await;
                }
                _ => {
                    if let RateVerdict::Refused { limit, .. } = l.acquire(&charges, now, true).await {
                        refused.insert(limit);
                    }
                }
            }
        }
        // The history reached every limit (so refusals were compared too).
        assert_eq!(refused.len(), 3, "{refused:?}");
        clean(&url, &prefix).await;
    }

    #[tokio::test]
    async fn two_nodes_share_a_keys_burst_and_a_tenants_quota() {
        let Some(url) = redis_url() else { return };
        let prefix = new_prefix();
        let (a, b) = (
            limiter(&url, &prefix, RedisFailure::Closed),
            limiter(&url, &prefix, RedisFailure::Closed),
        );
        let now = at(50 * DAY_SECS);
        // A burst of 4 for one key: 4 in all across both nodes, not 4 each.
        let c = [burst("k", 1, 4)];
        let mut allowed = 0;
        for i in 0..8 {
            let node = if i % 2 == 0 { &a } else { &b };
            if matches!(node.acquire(&c, now, true).await, Ok(RateVerdict::Allowed(_))) {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 4);
        // A tenant's quota of 5 across its keys on both nodes.
        let mut allowed = 0;
        for i in 0..10 {
            let key = format!("key-{i}");
            let c = [burst(&key, 100, 100), daily("t", 5)];
            let node = if i % 2 == 0 { &a } else { &b };
            if matches!(node.acquire(&c, now, true).await, Ok(RateVerdict::Allowed(_))) {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 5);
        // Concurrently too: 20 at once over both nodes, a burst of 6.
        let c = [burst("hot", 1, 6)];
        let calls = (0..20).map(|i| {
            let node = if i % 2 == 0 { &a } else { &b };
            node.acquire(&c, now, true)
        });
        let verdicts = futures_util::future::join_all(calls).await;
        let allowed = verdicts
            .iter()
            .filter(|v| matches!(v, Ok(RateVerdict::Allowed(_))))
            .count();
        assert_eq!(allowed, 6);
        // Another deployment (prefix) on the same Redis counts apart.
        let other_prefix = new_prefix();
        let other = limiter(&url, &other_prefix, RedisFailure::Closed);
        assert!(matches!(
            other.acquire(&[burst("k", 1, 4)], now, true).await,
            Ok(RateVerdict::Allowed(_))
        ));
        clean(&url, &prefix).await;
        clean(&url, &other_prefix).await;
    }

    /// A Redis URL whose port nothing listens on.
    async fn closed_port() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        format!("redis://127.0.0.1:{port}")
    }

    #[tokio::test]
    async fn unreachable_redis_fails_open_by_default() {
        assert_eq!(RedisFailure::default(), RedisFailure::Open);
        let l = limiter(&closed_port().await, "canon", RedisFailure::Open);
        let c = [burst("k", 1, 1)];
        for _ in 0..3 {
            assert!(matches!(l.acquire(&c, at(5), true).await, Ok(RateVerdict::Unlimited)));
        }
        l.refund(&c, at(5)).await.expect("a refund never fails the request");
    }

    #[tokio::test]
    async fn unreachable_redis_fails_closed_when_configured() {
        let l = limiter(&closed_port().await, "canon", RedisFailure::Closed);
        let c = [burst("k", 1, 1)];
        let started = Instant::now();
        for _ in 0..3 {
            assert!(l.acquire(&c, at(5), true).await.is_err());
        }
        // Paused after the first failure: the next ones cost nothing.
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        assert!(l.acquire(&[], at(5), true).await.is_ok(), "no charge, nothing to ask");
    }

    /// Forwards connections on `listener` to the Redis at `to` until the
    /// returned set is dropped (which closes every forwarded connection).
    fn proxy(listener: tokio::net::TcpListener, to: String) -> tokio::task::JoinSet<()> {
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = to.clone();
                connections.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        tasks
    }

    #[tokio::test]
    async fn the_limiter_recovers_by_itself_when_redis_comes_back() {
        let Some(url) = redis_url() else { return };
        // host:port of the test Redis (no credentials expected in a test URL).
        let target = url
            .trim_start_matches("redis://")
            .rsplit('@')
            .next()
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default()
            .to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr");
        let prefix = new_prefix();
        let l = limiter(&format!("redis://{address}"), &prefix, RedisFailure::Closed);
        let c = [burst("k", 1, 100)];
        let up = proxy(listener, target.clone());
        assert!(l.acquire(&c, at(5), true).await.is_ok());
        // Redis goes away: every connection to it is cut.
        drop(up);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(l.acquire(&c, at(5), true).await.is_err());
        // It comes back on the same address; after the pause, served again.
        let listener = tokio::net::TcpListener::bind(address).await.expect("rebind");
        let _up = proxy(listener, target);
        tokio::time::sleep(PAUSE_AFTER_FAILURE + Duration::from_millis(100)).await;
        let mut recovered = false;
        for _ in 0..20 {
            if let Ok(RateVerdict::Allowed(s)) = l.acquire(&c, at(5), true).await {
                // The count went on from before the outage.
                assert_eq!(s.policies[0].unwrap().remaining, 98);
                recovered = true;
                break;
            }
            tokio::time::sleep(PAUSE_AFTER_FAILURE).await;
        }
        assert!(recovered, "the limiter did not reconnect");
        clean(&url, &prefix).await;
    }

    #[tokio::test]
    async fn a_hung_redis_costs_a_request_at_most_the_timeout() {
        // Accepts connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("redis://{}", listener.local_addr().expect("addr"));
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                open.push(socket);
            }
        });
        let l = RedisLimiter::new(&url, "canon", RedisFailure::Closed, Duration::from_millis(200)).expect("url");
        let started = Instant::now();
        let answer = l.acquire(&[burst("k", 1, 1)], at(5), true).await;
        let took = started.elapsed();
        assert!(answer.is_err());
        assert!(
            took >= Duration::from_millis(150) && took < Duration::from_secs(2),
            "{took:?}"
        );
        held.abort();
    }
}
