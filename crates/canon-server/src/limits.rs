//! Rate limits, daily quotas, failed-auth limiting and each caller's share
//! of the requests in flight (docs/decisions.md, "Rate limits and quotas").
//!
//! The counting state sits behind [`RateLimiter`]: "take one request for
//! key K under policy P at time T, from every limit or from none". The
//! in-process [`MemoryLimiter`] holds it per node; [`RedisLimiter`]
//! (`--redis`) holds the same cells in Redis, shared by every node, and
//! judges them with the same `judge` (see [`limiter_for`]). Time comes
//! from a [`Clock`], so a test moves it past midnight instead of waiting.
//!
//! The per-key limit is GCRA (the generic cell rate algorithm: one
//! "theoretical arrival time" per key), written here rather than taken from
//! `governor`: each tenant has its own rate and burst (governor's keyed
//! limiter has one quota for every key), a refusal must take nothing from
//! any limit (the quota included, so the two are decided together), and the
//! clock must be the injected one. GCRA is a few lines of arithmetic.
//!
//! Daily counts must outlive the process (a restart must not hand every
//! tenant a fresh day) and be shared by the nodes on one database: the
//! in-process limiter keeps, per tenant, what it counted since it last told
//! the store ([`QuotaLedger`]); `crate::quotas` adds that to the store every
//! few seconds and takes the store's totals back as the new base.

use foldhash::{HashMap, HashMapExt};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use canon_http::flow::BoxFuture;
use canon_http::ratelimit::{LimitName, PolicyStanding, RateVerdict, Standing};
use canon_store::QuotaUsage;

mod redis_limiter;
pub use redis_limiter::{RedisLimiter, limiter_for};

/// Where the time comes from.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> SystemTime;
}

/// The system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock moved by hand, for tests (the midnight reset of the daily
/// quota is tested by setting it, not by waiting).
#[derive(Debug)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock standing at `at`.
    pub fn new(at: SystemTime) -> Self {
        Self(AtomicU64::new(nanos(at)))
    }
    /// Moves it to `at`.
    pub fn set(&self, at: SystemTime) {
        self.0.store(nanos(at), Ordering::SeqCst);
    }
    /// Moves it forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.0.load(Ordering::SeqCst))
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

const NANOS_PER_SEC: u64 = 1_000_000_000;
const DAY_SECS: u64 = 86_400;

/// What a limit is counted per. Each scope has its own key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// An API key (by id).
    Key = 0,
    /// A tenant (by id).
    Tenant = 1,
    /// A client address (failed authentications).
    Address = 2,
}

/// How a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// A token bucket (GCRA): one request every `interval`, up to `burst`
    /// at once.
    Gcra {
        /// Time between two requests at the sustained rate.
        interval: Duration,
        /// Requests allowed at once from a full bucket (at least 1).
        burst: u32,
    },
    /// A calendar counter: `quota` requests per UTC day.
    Daily {
        /// Requests per day.
        quota: u32,
    },
}

impl Policy {
    /// `per_second` requests per second with `burst`.
    pub fn per_second(per_second: u32, burst: u32) -> Self {
        Policy::Gcra {
            interval: Duration::from_nanos(NANOS_PER_SEC / u64::from(per_second.max(1))),
            burst: burst.max(1),
        }
    }
}

/// One limit a request is charged against.
#[derive(Debug, Clone, Copy)]
pub struct Charge<'a> {
    /// Its key space.
    pub scope: Scope,
    /// The key in it.
    pub key: &'a str,
    /// How it counts.
    pub policy: Policy,
    /// Its name, in headers and problems.
    pub name: LimitName,
}

impl<'a> Charge<'a> {
    /// The failed-auth limit of the client address written as `address`.
    pub fn auth_failures(address: &'a str, policy: Policy) -> Self {
        Self {
            scope: Scope::Address,
            key: address,
            policy,
            name: LimitName::AuthFailures,
        }
    }
}

/// Why the limiter could not answer (a shared backend unreachable).
#[derive(Debug, thiserror::Error)]
#[error("the rate limiter is unavailable: {0}")]
pub struct LimiterError(pub String);

/// The counting state of every limit.
pub trait RateLimiter: Send + Sync {
    /// At `now`, takes one request from every charge, or from none when
    /// any of them is exhausted (`take` false: only says where the caller
    /// stands). Charges are in increasing [`Scope`] order, one per scope.
    /// A refusal names the exhausted limit that frees last.
    fn acquire<'a>(
        &'a self,
        charges: &'a [Charge<'a>],
        now: SystemTime,
        take: bool,
    ) -> BoxFuture<'a, Result<RateVerdict, LimiterError>>;

    /// [`RateLimiter::acquire`]'s answer when the limiter has it without
    /// waiting (one kept in process always does), else `None`: nothing was
    /// judged or taken, and the caller waits for `acquire`. Every request
    /// is judged, and an answer that is ready needs no boxed future.
    fn acquire_at_once(
        &self,
        charges: &[Charge<'_>],
        now: SystemTime,
        take: bool,
    ) -> Option<Result<RateVerdict, LimiterError>> {
        let _ = (charges, now, take);
        None
    }

    /// Gives back to every charge the one request an earlier `acquire` at
    /// about `now` took: the server failed to serve it (a 5xx), and a
    /// client must not pay for the server's failure.
    fn refund<'a>(&'a self, charges: &'a [Charge<'a>], now: SystemTime) -> BoxFuture<'a, Result<(), LimiterError>>;

    /// The daily counts this limiter keeps for the store to share, if it
    /// keeps them in process (a shared backend keeps them itself).
    fn ledger(&self) -> Option<&dyn QuotaLedger> {
        None
    }
}

/// Daily counts held in process and reconciled with the store: what was
/// counted since the last save goes out, every tenant's total comes back.
pub trait QuotaLedger: Send + Sync {
    /// What was counted (or refunded) per tenant and day since the last
    /// call; those counts are then considered saved.
    fn unsaved(&self) -> Vec<QuotaUsage>;
    /// Takes back counts that could not be saved, so the next save sends
    /// them again.
    fn unsave(&self, usage: &[QuotaUsage]);
    /// The store's totals for `day` (every node's saved counts): each
    /// tenant's count becomes its total plus what this process counted
    /// since its last save.
    fn saved(&self, day: u32, totals: &[QuotaUsage]);
}

/// One key's state.
#[derive(Debug, Clone, Copy)]
enum Cell {
    /// GCRA: the theoretical arrival time, in ns since the epoch.
    Gcra { tat: u64 },
    /// The day (since the epoch), requests counted in it (by every node, as
    /// far as this one knows), and how many of those this process has not
    /// yet added to the store (negative after refunds).
    Daily { day: u64, count: u32, unsaved: i32 },
}

impl Cell {
    /// Whether the cell says nothing a missing one would not (a full
    /// bucket, another day's count already saved): it can be dropped.
    fn idle(&self, now: u64) -> bool {
        match *self {
            Cell::Gcra { tat } => tat <= now,
            Cell::Daily { day, unsaved, .. } => day != day_of(now) && unsaved == 0,
        }
    }
}

/// The UTC day (since the epoch) of `now` in ns.
fn day_of(now: u64) -> u64 {
    now / NANOS_PER_SEC / DAY_SECS
}

/// The outcome of one charge, before it is applied.
struct Judged {
    standing: PolicyStanding,
    /// The cell after taking one, when allowed.
    next: Option<Cell>,
    /// Seconds until it frees, when refused.
    retry_after: u64,
}

fn ceil_secs(ns: u64) -> u64 {
    ns.div_ceil(NANOS_PER_SEC)
}

fn judge(cell: Option<Cell>, policy: Policy, name: LimitName, now: u64) -> Judged {
    match policy {
        Policy::Gcra { interval, burst } => {
            let t = (interval.as_nanos() as u64).max(1);
            let capacity = t.saturating_mul(u64::from(burst));
            let tat = match cell {
                Some(Cell::Gcra { tat }) => tat.max(now),
                _ => now,
            };
            let window = ceil_secs(capacity).max(1);
            let quota = u64::from(burst);
            let after = tat.saturating_add(t);
            if after - now <= capacity {
                Judged {
                    standing: PolicyStanding {
                        name,
                        quota,
                        window,
                        remaining: (capacity - (after - now)) / t,
                        reset: ceil_secs(after - now),
                    },
                    next: Some(Cell::Gcra { tat: after }),
                    retry_after: 0,
                }
            } else {
                Judged {
                    standing: PolicyStanding {
                        name,
                        quota,
                        window,
                        remaining: capacity.saturating_sub(tat - now) / t,
                        reset: ceil_secs(tat - now),
                    },
                    next: None,
                    retry_after: ceil_secs(after - now - capacity).max(1),
                }
            }
        }
        Policy::Daily { quota } => {
            let secs = now / NANOS_PER_SEC;
            let day = secs / DAY_SECS;
            // Another day's cell starts the day at zero; what it had not
            // saved of its own day is dropped with it (seconds of a day
            // that is over, whose quota nothing enforces any more).
            let (count, unsaved) = match cell {
                Some(Cell::Daily { day: d, count, unsaved }) if d == day => (count, unsaved),
                _ => (0, 0),
            };
            let to_midnight = DAY_SECS - secs % DAY_SECS;
            let allowed = count < quota;
            let used = if allowed { count + 1 } else { count };
            Judged {
                standing: PolicyStanding {
                    name,
                    quota: u64::from(quota),
                    window: DAY_SECS,
                    remaining: u64::from(quota.saturating_sub(used)),
                    reset: to_midnight,
                },
                next: allowed.then_some(Cell::Daily {
                    day,
                    count: used,
                    unsaved: unsaved.saturating_add(1),
                }),
                retry_after: if allowed { 0 } else { to_midnight },
            }
        }
    }
}

/// The verdict on judged charges (in charge order): refused when any is,
/// naming the exhausted limit that frees last; the standing of the first
/// two either way. Shared by every backend, so the same history gives the
/// same fields.
fn decide<'j>(judged: impl Iterator<Item = &'j Judged>) -> RateVerdict {
    let mut standing = Standing::default();
    let mut refused: Option<(LimitName, u64)> = None;
    for (slot, j) in judged.enumerate() {
        if slot < 2 {
            standing.policies[slot] = Some(j.standing);
        }
        if j.next.is_none() && refused.is_none_or(|(_, r)| j.retry_after > r) {
            refused = Some((j.standing.name, j.retry_after));
        }
    }
    match refused {
        Some((limit, retry_after)) => RateVerdict::Refused {
            standing,
            limit,
            retry_after,
        },
        None => RateVerdict::Allowed(standing),
    }
}

/// Shards per key space: requests of different keys rarely wait for one
/// another, and no lock is held across an await (the limiter never awaits).
const SHARDS: usize = 16;

struct Shard {
    cells: HashMap<Box<str>, Cell>,
    /// Size at which idle cells are swept out on the next insert.
    sweep_at: usize,
}

/// The in-process limiter: per scope, a sharded map of cells. Idle cells
/// (full buckets, past days) are dropped when a shard grows past twice its
/// live size, so memory follows the keys active within one window.
pub struct MemoryLimiter {
    spaces: [Vec<Mutex<Shard>>; 3],
    /// Picks a key's shard: foldhash, seeded per process, like the maps
    /// (SipHash here was most of a charge's hashing).
    hasher: foldhash::fast::RandomState,
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        let space = || {
            (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        cells: HashMap::new(),
                        sweep_at: 1024,
                    })
                })
                .collect()
        };
        Self {
            spaces: [space(), space(), space()],
            hasher: foldhash::fast::RandomState::default(),
        }
    }
}

impl MemoryLimiter {
    fn shard(&self, scope: Scope, key: &str) -> MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        // A poisoned shard holds plain numbers; they are still usable.
        self.spaces[scope as usize][i]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Cells held, for tests of eviction.
    pub fn len(&self) -> usize {
        self.spaces
            .iter()
            .flatten()
            .map(|s| s.lock().map_or(0, |s| s.cells.len()))
            .sum()
    }

    /// Whether no cell is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The synchronous body of [`RateLimiter::acquire`].
    pub fn acquire_now(&self, charges: &[Charge<'_>], now: SystemTime, take: bool) -> RateVerdict {
        if charges.is_empty() {
            return RateVerdict::Unlimited;
        }
        let now = nanos(now);
        // Every shard involved is held while the charges are judged and
        // applied, so "all or none" holds under concurrency. One charge per
        // scope, locked in scope order: no two requests wait on each other
        // in a circle.
        let ordered = charges.windows(2).all(|w| w[0].scope < w[1].scope);
        // On the stack: every request is charged.
        let mut guards: [Option<MutexGuard<'_, Shard>>; 3] = [None, None, None];
        let mut judged: [Option<Judged>; 3] = [None, None, None];
        for (i, c) in charges.iter().take(3).enumerate() {
            let guard = self.shard(c.scope, c.key);
            judged[i] = Some(judge(guard.cells.get(c.key).copied(), c.policy, c.name, now));
            if ordered {
                guards[i] = Some(guard);
            }
        }
        let verdict = decide(judged.iter().flatten());
        if matches!(verdict, RateVerdict::Refused { .. }) {
            return verdict;
        }
        if take {
            for (i, c) in charges.iter().take(3).enumerate() {
                let Some(next) = judged[i].as_ref().and_then(|j| j.next) else {
                    continue;
                };
                let mut own;
                let shard: &mut Shard = match &mut guards[i] {
                    Some(held) => held,
                    None => {
                        own = self.shard(c.scope, c.key);
                        &mut own
                    }
                };
                shard.put(c.key, next, now);
            }
        }
        verdict
    }

    /// The synchronous body of [`RateLimiter::refund`].
    pub fn refund_now(&self, charges: &[Charge<'_>], now: SystemTime) {
        let now = nanos(now);
        for c in charges {
            let mut shard = self.shard(c.scope, c.key);
            let Some(cell) = shard.cells.get_mut(c.key) else {
                continue;
            };
            match (cell, c.policy) {
                (Cell::Gcra { tat }, Policy::Gcra { interval, .. }) => {
                    *tat = tat.saturating_sub(interval.as_nanos() as u64);
                }
                (Cell::Daily { day, count, unsaved }, Policy::Daily { .. }) if *day == day_of(now) && *count > 0 => {
                    *count -= 1;
                    *unsaved = unsaved.saturating_sub(1);
                }
                _ => {}
            }
        }
    }
}

impl Shard {
    /// Sets `key`'s cell, sweeping idle cells out first when the shard has
    /// grown past its mark.
    fn put(&mut self, key: &str, cell: Cell, now: u64) {
        match self.cells.get_mut(key) {
            Some(kept) => *kept = cell,
            None => {
                if self.cells.len() >= self.sweep_at {
                    self.cells.retain(|_, cell| !cell.idle(now));
                    self.sweep_at = (self.cells.len() * 2).max(1024);
                }
                self.cells.insert(key.into(), cell);
            }
        }
    }
}

impl QuotaLedger for MemoryLimiter {
    fn unsaved(&self) -> Vec<QuotaUsage> {
        let mut out = Vec::new();
        for shard in &self.spaces[Scope::Tenant as usize] {
            let mut shard = shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            for (tenant, cell) in shard.cells.iter_mut() {
                if let Cell::Daily { day, unsaved, .. } = cell
                    && *unsaved != 0
                {
                    out.push(QuotaUsage {
                        tenant_id: tenant.to_string(),
                        day: u32::try_from(*day).unwrap_or(u32::MAX),
                        used: i64::from(*unsaved),
                    });
                    *unsaved = 0;
                }
            }
        }
        out
    }

    fn unsave(&self, usage: &[QuotaUsage]) {
        for u in usage {
            let mut shard = self.shard(Scope::Tenant, &u.tenant_id);
            match shard.cells.get_mut(u.tenant_id.as_str()) {
                Some(Cell::Daily { day, unsaved, .. }) if *day == u64::from(u.day) => {
                    let back = i32::try_from(u.used).unwrap_or(if u.used < 0 { i32::MIN } else { i32::MAX });
                    *unsaved = unsaved.saturating_add(back);
                }
                // The day turned meanwhile: that day's count is over.
                _ => {}
            }
        }
    }

    fn saved(&self, day: u32, totals: &[QuotaUsage]) {
        let now = u64::from(day) * DAY_SECS * NANOS_PER_SEC;
        for t in totals.iter().filter(|t| t.day == day) {
            let total = u32::try_from(t.used.max(0)).unwrap_or(u32::MAX);
            let mut shard = self.shard(Scope::Tenant, &t.tenant_id);
            let cell = match shard.cells.get(t.tenant_id.as_str()) {
                Some(&Cell::Daily { day: d, unsaved, .. }) if d == u64::from(day) => Cell::Daily {
                    day: d,
                    count: total.saturating_add_signed(unsaved),
                    unsaved,
                },
                // A later day is kept; an earlier or missing one starts
                // from the store's total.
                Some(&Cell::Daily { day: d, .. }) if d > u64::from(day) => continue,
                _ => Cell::Daily {
                    day: u64::from(day),
                    count: total,
                    unsaved: 0,
                },
            };
            shard.put(&t.tenant_id, cell, now);
        }
    }
}

impl RateLimiter for MemoryLimiter {
    fn acquire<'a>(
        &'a self,
        charges: &'a [Charge<'a>],
        now: SystemTime,
        take: bool,
    ) -> BoxFuture<'a, Result<RateVerdict, LimiterError>> {
        let verdict = self.acquire_now(charges, now, take);
        Box::pin(async move { Ok(verdict) })
    }

    fn acquire_at_once(
        &self,
        charges: &[Charge<'_>],
        now: SystemTime,
        take: bool,
    ) -> Option<Result<RateVerdict, LimiterError>> {
        Some(Ok(self.acquire_now(charges, now, take)))
    }

    fn refund<'a>(&'a self, charges: &'a [Charge<'a>], now: SystemTime) -> BoxFuture<'a, Result<(), LimiterError>> {
        self.refund_now(charges, now);
        Box::pin(async move { Ok(()) })
    }

    fn ledger(&self) -> Option<&dyn QuotaLedger> {
        Some(self)
    }
}

/// Requests in flight per API key and per tenant, each held to a share of
/// the server's slots. A [`Held`] gives its slots back when dropped.
pub struct InFlight {
    share: u32,
    /// Slots held per caller. Entries at zero stay (a caller's next request
    /// then allocates nothing) until the map grows past [`IN_FLIGHT_SWEEP`].
    /// The counts are `Cell`s, so one look-up finds an entry and moves it.
    counts: Mutex<HashMap<Arc<str>, Count>>,
}

/// Slots one caller holds in [`InFlight`].
type Count = std::cell::Cell<u32>;

/// A caller's entry in [`InFlight`]'s counts, when it has one.
type Slots<'a> = Option<(&'a Arc<str>, &'a Count)>;

/// Callers remembered by [`InFlight`] before those with nothing in flight
/// are dropped.
const IN_FLIGHT_SWEEP: usize = 4096;

impl InFlight {
    /// At most `share` requests in flight per key and per tenant.
    pub fn new(share: usize) -> Arc<Self> {
        Arc::new(Self {
            share: u32::try_from(share.max(1)).unwrap_or(u32::MAX),
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// One slot for `key` and one for `tenant` (when there is one), or none
    /// when either already holds its share.
    pub fn enter(self: &Arc<Self>, key: &str, tenant: Option<&str>) -> Option<Held> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        // One look-up per caller in the usual case (both known): found,
        // judged and counted through the same entry.
        let known_key = counts.get_key_value(key);
        let known_tenant = tenant.map(|t| counts.get_key_value(t));
        let full = |entry: Slots<'_>| entry.is_some_and(|(_, n)| n.get() >= self.share);
        if full(known_key) || known_tenant.is_some_and(full) {
            return None;
        }
        let taken = |entry: Slots<'_>| {
            entry.map(|(kept, n)| {
                n.set(n.get() + 1);
                kept.clone()
            })
        };
        let (key_kept, tenant_kept) = (taken(known_key), known_tenant.map(taken));
        // A caller seen for the first time is added (once the borrows above end).
        let mut add = |k: &str| -> Arc<str> {
            if counts.len() >= IN_FLIGHT_SWEEP {
                counts.retain(|_, n| n.get() > 0);
            }
            let kept: Arc<str> = Arc::from(k);
            counts.insert(kept.clone(), Count::new(1));
            kept
        };
        let key = key_kept.unwrap_or_else(|| add(key));
        let tenant = tenant.map(|t| tenant_kept.flatten().unwrap_or_else(|| add(t)));
        Some(Held {
            owner: self.clone(),
            key,
            tenant,
        })
    }

    fn leave(&self, key: &str) {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get(key) {
            n.set(n.get().saturating_sub(1));
        }
    }

    /// Callers remembered (with or without requests in flight), for tests.
    pub fn remembered(&self) -> usize {
        self.counts.lock().map_or(0, |c| c.len())
    }
}

/// Slots held by one request.
pub struct Held {
    owner: Arc<InFlight>,
    key: Arc<str>,
    tenant: Option<Arc<str>>,
}

impl Held {
    /// The key whose slot this is (shared with the in-flight counts: no copy).
    pub fn key(&self) -> &Arc<str> {
        &self.key
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.owner.leave(&self.key);
        if let Some(t) = &self.tenant {
            self.owner.leave(t);
        }
    }
}

/// Per client address: until when it counts as failing to authenticate,
/// and the tokens that worked from it lately (their SHA-256 digests). When
/// the address is refused for failed authentications, those tokens still
/// pass: a colleague behind the same NAT keeps working while a guesser there
/// is stopped, and the guesser learns nothing (a guess is refused before it
/// is checked). Per node, in shards; entries expire.
pub struct KnownGood {
    shards: Vec<Mutex<HashMap<IpAddr, Seen>>>,
    /// Picks an address's shard and hashes owners (tenant ids, which the
    /// server makes, so no client chooses what collides): foldhash.
    hasher: foldhash::fast::RandomState,
    /// How long a token that worked is remembered.
    remember: u64,
}

#[derive(Default)]
struct Seen {
    /// Ns since the epoch when the address stops counting as failing.
    failing_until: u64,
    /// Digests of tokens that worked from it, with when they are forgotten
    /// and a hash of whose they are (the tenant; 0 for the operator).
    tokens: Vec<([u8; 32], u64, u64)>,
}

impl Seen {
    fn expired(&self, now: u64) -> bool {
        self.failing_until <= now && self.tokens.iter().all(|(_, until, _)| *until <= now)
    }
}

/// Tokens of one tenant remembered per address (its most recent): a
/// tenant's new tokens push out only its own older ones, so no caller can
/// make an address forget another tenant's users (and so lock them out
/// with failures of its own).
const KNOWN_PER_OWNER: usize = 8;
/// Tokens remembered per address in all: beyond it, the tenant with the
/// most remembered tokens there gives up its oldest.
const KNOWN_PER_ADDRESS: usize = 256;
/// Addresses per shard before expired ones are swept.
const SWEEP_ADDRESSES: usize = 4096;

impl Default for KnownGood {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: foldhash::fast::RandomState::default(),
            remember: DAY_SECS * NANOS_PER_SEC,
        }
    }
}

impl KnownGood {
    fn shard(&self, address: &IpAddr) -> MutexGuard<'_, HashMap<IpAddr, Seen>> {
        let i = (self.hasher.hash_one(address) as usize) % SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The hash [`KnownGood::worked`] groups a tenant's tokens by (never 0,
    /// which stands for the operator).
    pub fn owner(&self, tenant_id: &str) -> u64 {
        self.hasher.hash_one(tenant_id).max(1)
    }

    /// Whether `address` failed lately.
    pub fn failing(&self, address: IpAddr, now: u64) -> bool {
        self.shard(&address)
            .get(&address)
            .is_some_and(|f| f.failing_until > now)
    }

    /// Marks `address` as failing until `until` (ns since the epoch).
    pub fn failed(&self, address: IpAddr, now: u64, until: u64) {
        let mut map = self.shard(&address);
        if map.len() >= SWEEP_ADDRESSES && !map.contains_key(&address) {
            map.retain(|_, seen| !seen.expired(now));
        }
        let seen = map.entry(address).or_default();
        seen.failing_until = seen.failing_until.max(until);
    }

    /// Remembers that the token with `digest`, of the tenant hashed as
    /// `owner` (0: the operator), worked from `address`.
    pub fn worked(&self, address: IpAddr, digest: [u8; 32], owner: u64, now: u64) {
        let until = now.saturating_add(self.remember);
        let mut map = self.shard(&address);
        if !map.contains_key(&address) && map.len() >= SWEEP_ADDRESSES {
            map.retain(|_, seen| !seen.expired(now));
        }
        let seen = map.entry(address).or_default();
        if let Some(known) = seen.tokens.iter_mut().find(|(d, _, _)| *d == digest) {
            known.1 = until;
            return;
        }
        seen.tokens.retain(|(_, until, _)| *until > now);
        let of = |owner: u64, tokens: &[([u8; 32], u64, u64)]| tokens.iter().filter(|t| t.2 == owner).count();
        let evict = if of(owner, &seen.tokens) >= KNOWN_PER_OWNER {
            Some(owner)
        } else if seen.tokens.len() >= KNOWN_PER_ADDRESS {
            seen.tokens.iter().map(|t| t.2).max_by_key(|o| of(*o, &seen.tokens))
        } else {
            None
        };
        if let Some(victim) = evict
            && let Some(oldest) = seen
                .tokens
                .iter()
                .enumerate()
                .filter(|(_, t)| t.2 == victim)
                .min_by_key(|(_, t)| t.1)
                .map(|(i, _)| i)
        {
            seen.tokens.remove(oldest);
        }
        seen.tokens.push((digest, until, owner));
    }

    /// Whether the token with `digest` worked from `address` lately.
    pub fn knows(&self, address: IpAddr, digest: &[u8; 32], now: u64) -> bool {
        self.shard(&address)
            .get(&address)
            .is_some_and(|f| f.tokens.iter().any(|(d, until, _)| d == digest && *until > now))
    }
}

/// The address a client's failed authentications are counted under: an
/// IPv4 address as it is (an IPv4-mapped IPv6 one as its IPv4 address), an
/// IPv6 address as its /64. One IPv6 host is usually given a whole /64, so
/// counting per address would give a guesser 2^64 budgets of failures, and
/// the memory of addresses (one entry each for a day) no bound.
pub fn counted_as(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

/// The client's address: the peer's, or, when the peer is a trusted proxy,
/// the nearest address in `X-Forwarded-For` that is not one (read from the
/// right: each proxy appends the address it was reached from, so only the
/// entries trusted proxies wrote can be believed; anything left of them is
/// what the client claimed). An entry that does not parse ends the walk.
pub fn client_address(peer: Option<IpAddr>, headers: &http::HeaderMap, trusted: &[ipnet::IpNet]) -> Option<IpAddr> {
    let mut client = peer?;
    let is_trusted = |a: &IpAddr| trusted.iter().any(|net| net.contains(a));
    if trusted.is_empty() || !is_trusted(&client) {
        return Some(client);
    }
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        let Ok(address) = hop.trim().parse::<IpAddr>() else {
            break;
        };
        client = address;
        if !is_trusted(&client) {
            break;
        }
    }
    Some(client)
}

/// Nanoseconds since the epoch of `t`.
pub fn epoch_nanos(t: SystemTime) -> u64 {
    nanos(t)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn gcra_allows_the_burst_then_one_per_interval() {
        let l = MemoryLimiter::default();
        let c = [burst("k", 2, 3)];
        let t0 = at(1_000_000);
        for left in [2, 1, 0] {
            match l.acquire_now(&c, t0, true) {
                RateVerdict::Allowed(s) => assert_eq!(s.policies[0].unwrap().remaining, left),
                other => panic!("{other:?}"),
            }
        }
        match l.acquire_now(&c, t0, true) {
            RateVerdict::Refused { limit, retry_after, .. } => assert_eq!((limit, retry_after), (LimitName::Burst, 1)),
            other => panic!("{other:?}"),
        }
        // Half a second later (2/s), one more.
        assert!(matches!(
            l.acquire_now(&c, t0 + Duration::from_millis(500), true),
            RateVerdict::Allowed(_)
        ));
        assert!(matches!(
            l.acquire_now(&c, t0 + Duration::from_millis(500), true),
            RateVerdict::Refused { .. }
        ));
    }

    #[test]
    fn a_refusal_takes_nothing_from_any_limit() {
        let l = MemoryLimiter::default();
        let t0 = at(10 * DAY_SECS + 100);
        let c = [burst("k", 1, 1), daily("t", 5)];
        assert!(matches!(l.acquire_now(&c, t0, true), RateVerdict::Allowed(_)));
        // Burst refused: the quota is not counted.
        for _ in 0..10 {
            assert!(matches!(l.acquire_now(&c, t0, true), RateVerdict::Refused { .. }));
        }
        match l.acquire_now(&c, t0 + Duration::from_secs(1), true) {
            RateVerdict::Allowed(s) => assert_eq!(s.policies[1].unwrap().remaining, 3),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_quota_resets_at_midnight_utc() {
        let l = MemoryLimiter::default();
        let c = [daily("t", 2)];
        let before = at(20 * DAY_SECS - 30);
        assert!(matches!(l.acquire_now(&c, before, true), RateVerdict::Allowed(_)));
        assert!(matches!(l.acquire_now(&c, before, true), RateVerdict::Allowed(_)));
        match l.acquire_now(&c, before, true) {
            RateVerdict::Refused { limit, retry_after, .. } => assert_eq!((limit, retry_after), (LimitName::Daily, 30)),
            other => panic!("{other:?}"),
        }
        match l.acquire_now(&c, at(20 * DAY_SECS), true) {
            RateVerdict::Allowed(s) => {
                let p = s.policies[0].unwrap();
                assert_eq!((p.remaining, p.reset), (1, DAY_SECS));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_ledger_hands_out_counts_once_and_takes_totals_as_the_base() {
        let l = MemoryLimiter::default();
        let c = [daily("t", 10)];
        let now = at(20 * DAY_SECS + 5);
        for _ in 0..3 {
            l.acquire_now(&c, now, true);
        }
        let usage = |used| QuotaUsage {
            tenant_id: "t".into(),
            day: 20,
            used,
        };
        assert_eq!(l.unsaved(), vec![usage(3)]);
        assert!(l.unsaved().is_empty(), "handed out once");
        // Counted while the save was under way: kept on top of the total.
        l.acquire_now(&c, now, true);
        // The store says 7 (another node counted 4).
        l.saved(20, &[usage(7)]);
        match l.acquire_now(&c, now, false) {
            RateVerdict::Allowed(s) => assert_eq!(s.policies[0].unwrap().remaining, 1, "7 + 1 counted, 1 more"),
            other => panic!("{other:?}"),
        }
        // A failed save gives the counts back; a refund is a negative count.
        let pending = l.unsaved();
        assert_eq!(pending, vec![usage(1)]);
        l.unsave(&pending);
        l.refund_now(&c, now);
        assert!(l.unsaved().is_empty(), "one counted, one refunded");
        // A tenant this process never saw starts from the store's total;
        // another day's total changes nothing today.
        l.saved(
            20,
            &[QuotaUsage {
                tenant_id: "u".into(),
                day: 20,
                used: 10,
            }],
        );
        assert!(matches!(
            l.acquire_now(&[daily("u", 10)], now, true),
            RateVerdict::Refused { .. }
        ));
        l.saved(
            19,
            &[QuotaUsage {
                tenant_id: "v".into(),
                day: 19,
                used: 10,
            }],
        );
        assert!(matches!(
            l.acquire_now(&[daily("v", 10)], now, true),
            RateVerdict::Allowed(_)
        ));
    }

    #[test]
    fn a_refund_gives_back_a_token_and_a_count() {
        let l = MemoryLimiter::default();
        let c = [burst("k", 1, 1), daily("t", 2)];
        let now = at(30 * DAY_SECS);
        assert!(matches!(l.acquire_now(&c, now, true), RateVerdict::Allowed(_)));
        assert!(matches!(l.acquire_now(&c, now, true), RateVerdict::Refused { .. }));
        l.refund_now(&c, now);
        match l.acquire_now(&c, now, true) {
            RateVerdict::Allowed(s) => assert_eq!(s.policies[1].unwrap().remaining, 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn peeking_takes_nothing() {
        let l = MemoryLimiter::default();
        let c = [burst("k", 1, 1)];
        for _ in 0..3 {
            assert!(matches!(l.acquire_now(&c, at(5), false), RateVerdict::Allowed(_)));
        }
        assert!(l.is_empty());
    }

    #[test]
    fn idle_cells_are_swept() {
        let l = MemoryLimiter::default();
        let keys: Vec<String> = (0..20_000).map(|i| format!("k{i}")).collect();
        for k in &keys {
            l.acquire_now(&[burst(k, 1000, 10)], at(1), true);
        }
        // A second later every bucket is full again: the next inserts sweep them.
        for k in &keys {
            l.acquire_now(&[burst(&format!("{k}-new"), 1000, 10)], at(2), true);
        }
        assert!(l.len() < 30_000, "{} cells kept", l.len());
    }

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(counted_as(a), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        assert_eq!(counted_as(a), counted_as(b));
        assert_ne!(counted_as(a), counted_as(other));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(counted_as(v4), v4);
        assert_eq!(counted_as("::ffff:192.0.2.7".parse().unwrap()), v4);
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = crate::config::parse_trusted_proxies("10.0.0.0/8, ::1").unwrap();
        let mut h = http::HeaderMap::new();
        h.insert("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.7".parse().unwrap());
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        // From an untrusted peer the header is ignored.
        assert_eq!(client_address(ip("5.5.5.5"), &h, &trusted), ip("5.5.5.5"));
        assert_eq!(client_address(ip("10.1.1.1"), &h, &[]), ip("10.1.1.1"));
        // From a trusted proxy: the nearest untrusted hop, not what the client claimed.
        assert_eq!(client_address(ip("10.1.1.1"), &h, &trusted), ip("1.2.3.4"));
        h.insert("x-forwarded-for", "junk".parse().unwrap());
        assert_eq!(client_address(ip("::1"), &h, &trusted), ip("::1"));
    }

    #[test]
    fn in_flight_shares_are_per_key_and_per_tenant() {
        let f = InFlight::new(2);
        let a = f.enter("k1", Some("t")).unwrap();
        let _b = f.enter("k2", Some("t")).unwrap();
        assert!(f.enter("k3", Some("t")).is_none(), "the tenant holds its share");
        assert!(f.enter("op", None).is_some());
        drop(a);
        assert!(f.enter("k3", Some("t")).is_some());
    }

    #[test]
    fn callers_with_nothing_in_flight_are_forgotten_past_the_sweep_mark() {
        let f = InFlight::new(4);
        let held = f.enter("busy", None).unwrap();
        for i in 0..(IN_FLIGHT_SWEEP * 2) {
            drop(f.enter(&format!("k{i}"), None).unwrap());
        }
        assert!(f.remembered() <= IN_FLIGHT_SWEEP + 1, "{}", f.remembered());
        // A caller still in flight is never forgotten: its share holds.
        for _ in 0..3 {
            std::mem::forget(f.enter("busy", None).unwrap());
        }
        assert!(f.enter("busy", None).is_none());
        drop(held);
    }

    #[test]
    fn another_tenants_tokens_never_push_a_remembered_token_out() {
        let known = KnownGood::default();
        let address: IpAddr = "192.0.2.7".parse().expect("address");
        let (acme, beta) = (known.owner("acme-id"), known.owner("beta-id"));
        let victim = [1u8; 32];
        known.worked(address, victim, acme, 10);
        // Beta's admin uses as many keys as it likes from the same address.
        for n in 0..300u16 {
            let mut digest = [2u8; 32];
            digest[..2].copy_from_slice(&n.to_be_bytes());
            known.worked(address, digest, beta, 20 + u64::from(n));
        }
        assert!(known.knows(address, &victim, 1_000), "acme's token was forgotten");
        // A tenant's own new tokens do push its oldest out, past its share.
        for n in 0..KNOWN_PER_OWNER as u8 {
            known.worked(address, [100 + n; 32], acme, 2_000 + u64::from(n));
        }
        assert!(!known.knows(address, &victim, 3_000));
        assert!(known.knows(address, &[100; 32], 3_000));
    }
}
