//! The facts the decision flow asks the server for ([`Service`]): routes,
//! limits, availability, credentials, resources, idempotency keys. The HTTP
//! handler (`app.rs`) runs the flow with an [`Exchange`]; so does a batch,
//! once per operation ([`run_within`]).

use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use canon_http::Problem;
use canon_http::access::Principal;
use canon_http::flow::{self, Answer, Availability, BoxFuture, KeyState, Keyed, Limits, Resource, Service};
use canon_http::ratelimit::{LimitName, RateVerdict};
use canon_http::route::{Params, RouteSpec, RouteTable};
use canon_store::{KeyOwner, TenantLimits};

use crate::error::store_problem;
use crate::limits::{Charge, Held, Policy, Scope, epoch_nanos};
use crate::state::App;
use crate::{idempotency, token};

/// One request's view of the service.
pub struct Exchange<'a> {
    /// The shared state.
    pub app: &'a Arc<App>,
    /// Whether the in-flight limit was reached (every request but the
    /// probes answers 503).
    pub overloaded: bool,
    /// Whether maintenance mode refuses this request (`crate::maintenance`).
    pub maintenance: Availability,
    /// Where the client's failed authentications are counted, when known:
    /// its address, or its IPv6 /64 (`limits::counted_as`).
    pub client: Option<IpAddr>,
    /// A request run inside another (a batch's operations): its limits
    /// were charged once, for the request that holds it.
    pub nested: bool,
    /// The caller's tenant and its limits, loaded with the key.
    caller: OnceLock<(Arc<str>, TenantLimits)>,
    /// The caller's share of the slots in flight, held until the exchange ends.
    held: Mutex<Option<Held>>,
    /// What the RateLimit node took from the caller's limits, given back
    /// by [`Exchange::settle`] if the server then fails to serve it.
    taken: Mutex<Option<Taken>>,
    /// The request's time by the limits' clock, read once, when first
    /// asked: screening, authentication and limits judge one request at one
    /// instant.
    now: OnceLock<std::time::SystemTime>,
}

/// One request taken from a caller's limits: its key's burst and its
/// tenant's daily quota (the tenant is the exchange's caller), and when.
struct Taken {
    key: Arc<str>,
    burst: Option<Policy>,
    daily: Option<Policy>,
    at: std::time::SystemTime,
}

/// Whether `status` says the server failed to serve a request it took
/// (a bug's 500, a 503 from a store that cannot be reached): such a
/// request is not charged to the caller's limits. 501 is an answer (the
/// method is not built), not a failure.
fn failed(status: http::StatusCode) -> bool {
    status.is_server_error() && status != http::StatusCode::NOT_IMPLEMENTED
}

impl<'a> Exchange<'a> {
    /// The exchange of one request from `client`.
    pub fn new(app: &'a Arc<App>, overloaded: bool, client: Option<IpAddr>) -> Self {
        Self {
            app,
            overloaded,
            maintenance: Availability::Available,
            client: client.map(crate::limits::counted_as),
            nested: false,
            caller: OnceLock::new(),
            held: Mutex::new(None),
            taken: Mutex::new(None),
            now: OnceLock::new(),
        }
    }

    /// Ends the exchange of a request answered `status`: when the server
    /// failed to serve it ([`failed`]), gives back what it took from the
    /// caller's burst and daily quota. A client is limited for what it is
    /// served, and retrying through an outage would otherwise spend its
    /// day's quota on the server's failures.
    pub async fn settle(&self, status: http::StatusCode) {
        if !failed(status) {
            return;
        }
        let Some(taken) = self.taken.lock().ok().and_then(|mut t| t.take()) else {
            return;
        };
        let burst = taken.burst.map(|policy| Charge {
            scope: Scope::Key,
            key: &taken.key,
            policy,
            name: LimitName::Burst,
        });
        let daily = taken
            .daily
            .zip(self.caller.get())
            .map(|(policy, (tenant_id, _))| Charge {
                scope: Scope::Tenant,
                key: tenant_id,
                policy,
                name: LimitName::Daily,
            });
        let charges: Vec<Charge<'_>> = burst.into_iter().chain(daily).collect();
        if let Err(e) = self.app.limiter.refund(&charges, taken.at).await {
            // The caller stays charged, as it would have been without refunds.
            tracing::warn!(error = %e, "could not give back a failed request's charge");
        }
    }

    /// The failed-auth policy, when on.
    fn auth_failures(&self) -> Option<Policy> {
        let c = &self.app.config;
        (c.auth_failure_limit > 0).then(|| Policy::Gcra {
            interval: c.auth_failure_window / c.auth_failure_limit,
            burst: c.auth_failure_limit,
        })
    }

    /// How long an address counts as failing after a failure: until its
    /// failures have all refilled.
    fn failing_for(&self) -> u64 {
        self.app.config.auth_failure_window.as_nanos() as u64
    }

    fn now(&self) -> std::time::SystemTime {
        *self.now.get_or_init(|| self.app.clock.now())
    }

    /// This exchange, refused (or not) by maintenance mode.
    pub fn with_maintenance(self, maintenance: Availability) -> Self {
        Self { maintenance, ..self }
    }

    /// Who holds the token whose digest is `digest` (`raw_digest` as bytes),
    /// given the key the digest found; remembers the caller's tenant and
    /// marks the client known-good when it is someone.
    fn principal_of(&self, owner: Option<&KeyOwner>, digest: &str, raw_digest: [u8; 32]) -> Option<Principal> {
        let principal = owner.and_then(|owner| match owner {
            KeyOwner::Operator { key_id, token_hash } => {
                token::digests_match(token_hash, digest).then(|| Principal::Operator { key_id: key_id.clone() })
            }
            KeyOwner::Member {
                key_id,
                token_hash,
                tenant,
                user_id,
                role,
                tenant_id,
                limits,
                ..
            } => token::digests_match(token_hash, digest).then(|| {
                // The tenant's limits come with the key: limiting
                // costs no read of its own.
                let _ = self.caller.set((tenant_id.clone(), *limits));
                Principal::Member {
                    key_id: key_id.clone(),
                    tenant: tenant.clone(),
                    user_id: user_id.clone(),
                    role: *role,
                }
            }),
        });
        if principal.is_some()
            && let Some(client) = self.client
            && self.auth_failures().is_some()
        {
            // Remembered, so that failures of others at this address
            // never stop this token.
            let now = epoch_nanos(self.now());
            let owner = self
                .caller
                .get()
                .map_or(0, |(tenant_id, _)| self.app.known_good.owner(tenant_id));
            self.app.known_good.worked(client, raw_digest, owner, now);
        }
        principal
    }

    /// The `RateLimit` node's answer once the limiter judged `charges`:
    /// without `held` (the caller is over its share of the slots in flight)
    /// a refusal that took nothing; otherwise the limiter's verdict, with
    /// the slot and the charges kept until the exchange ends.
    fn charged(
        &self,
        held: Option<Held>,
        verdict: Result<RateVerdict, crate::limits::LimiterError>,
        charges: &[Charge<'_>],
        now: std::time::SystemTime,
    ) -> Result<RateVerdict, Problem> {
        let verdict = verdict.map_err(limiter_problem)?;
        let Some(held) = held else {
            // The fields still say where it stands.
            return Ok(counted(RateVerdict::Refused {
                standing: verdict.standing().unwrap_or_default(),
                limit: LimitName::InFlight,
                retry_after: 1,
            }));
        };
        if !matches!(verdict, RateVerdict::Refused { .. }) {
            // The key as the in-flight counts keep it: no copy per request.
            let key = held.key().clone();
            if let Ok(mut slot) = self.held.lock() {
                *slot = Some(held);
            }
            if !charges.is_empty()
                && let Ok(mut slot) = self.taken.lock()
            {
                let policy = |name| charges.iter().find(|c| c.name == name).map(|c| c.policy);
                *slot = Some(Taken {
                    key,
                    burst: policy(LimitName::Burst),
                    daily: policy(LimitName::Daily),
                    at: now,
                });
            }
        }
        Ok(counted(verdict))
    }
}

/// A request's charges, on the stack: its key's burst, then its tenant's
/// daily quota, either of which may be off.
#[derive(Clone, Copy)]
enum Charges<'a> {
    None,
    One([Charge<'a>; 1]),
    Two([Charge<'a>; 2]),
}

impl<'a> Charges<'a> {
    /// These charges and `charge` after them (a request has two at most:
    /// a third is not kept).
    fn and(self, charge: Charge<'a>) -> Self {
        match self {
            Charges::None => Charges::One([charge]),
            Charges::One([first]) => Charges::Two([first, charge]),
            full @ Charges::Two(_) => full,
        }
    }

    /// The charges, in order.
    fn as_slice(&self) -> &[Charge<'a>] {
        match self {
            Charges::None => &[],
            Charges::One(one) => one,
            Charges::Two(two) => two,
        }
    }
}

impl Service for Exchange<'_> {
    fn routes(&self) -> &RouteTable {
        &self.app.routes
    }

    fn limits(&self) -> Limits {
        Limits {
            max_body_bytes: self.app.config.max_body_bytes,
            max_stream_bytes: self.app.config.max_import_bytes,
            ..Limits::default()
        }
    }

    fn availability(&self) -> Availability {
        if let Availability::Unavailable { .. } = &self.maintenance {
            self.maintenance.clone()
        } else if self.overloaded {
            crate::shed::overloaded()
        } else {
            Availability::Available
        }
    }

    fn authenticate<'a>(&'a self, token: &'a str) -> Answer<'a, Result<Option<Principal>, Problem>> {
        // Hashed once: the hex digest finds the key, the bytes mark the
        // client as known-good below.
        let raw_digest = token::digest_bytes(token);
        let hex = token::hex(&raw_digest);
        // A key in the cache is answered at once; a miss reads the store.
        let store = &*self.app.store;
        if let Some(owner) = self.app.lookups.cached_key_owner(store, hex.as_str()) {
            return Answer::ready(Ok(self.principal_of(Some(&owner), hex.as_str(), raw_digest)));
        }
        Answer::later(async move {
            let owner = (self.app.lookups)
                .read_key_owner(store, hex.as_str())
                .await
                .map_err(store_problem)?;
            Ok(self.principal_of(owner.as_deref(), hex.as_str(), raw_digest))
        })
    }

    fn screen_token<'a>(&'a self, token: &'a str) -> Answer<'a, RateVerdict> {
        let (Some(client), Some(policy)) = (self.client, self.auth_failures()) else {
            return Answer::ready(RateVerdict::Unlimited);
        };
        let now = self.now();
        // Most clients never failed: one look-up, no counting, no wait.
        if !self.app.known_good.failing(client, epoch_nanos(now)) {
            return Answer::ready(RateVerdict::Unlimited);
        }
        Answer::later(async move {
            let key = client.to_string();
            let charge = [Charge::auth_failures(&key, policy)];
            match self.app.limiter.acquire(&charge, now, false).await {
                Ok(verdict @ RateVerdict::Refused { .. }) => {
                    let digest = token::digest_bytes(token);
                    if self.app.known_good.knows(client, &digest, epoch_nanos(now)) {
                        RateVerdict::Unlimited
                    } else {
                        counted(verdict)
                    }
                }
                // A limiter that cannot answer does not lock everyone out.
                _ => RateVerdict::Unlimited,
            }
        })
    }

    fn token_failed(&self) -> Answer<'_, RateVerdict> {
        Answer::later(async move {
            let (Some(client), Some(policy)) = (self.client, self.auth_failures()) else {
                return RateVerdict::Unlimited;
            };
            let now = self.now();
            let key = client.to_string();
            let charge = [Charge::auth_failures(&key, policy)];
            let nanos = epoch_nanos(now);
            self.app.known_good.failed(client, nanos, nanos + self.failing_for());
            self.app
                .limiter
                .acquire(&charge, now, true)
                .await
                .unwrap_or(RateVerdict::Unlimited)
        })
    }

    fn rate_limit<'a>(&'a self, principal: &'a Principal) -> Answer<'a, Result<RateVerdict, Problem>> {
        if self.nested {
            return Answer::ready(Ok(RateVerdict::Unlimited));
        }
        let config = &self.app.config;
        let (key, tenant) = match principal {
            Principal::Operator { key_id } => (&**key_id, None),
            Principal::Member { key_id, .. } => (&**key_id, self.caller.get()),
        };
        let own = tenant.map(|(_, l)| *l).unwrap_or_default();
        let per_second = own.rate_limit_per_second.unwrap_or(config.rate_limit_per_second);
        let burst = own.burst.unwrap_or(config.rate_limit_burst);
        let quota = own.daily_quota.unwrap_or(config.daily_quota);
        let mut charges = Charges::None;
        if per_second > 0 {
            charges = charges.and(Charge {
                scope: Scope::Key,
                key,
                policy: Policy::per_second(per_second, burst),
                name: LimitName::Burst,
            });
        }
        // The operator has no tenant, so no quota: only its key's rate.
        if let Some((tenant_id, _)) = tenant.filter(|_| quota > 0) {
            charges = charges.and(Charge {
                scope: Scope::Tenant,
                key: tenant_id,
                policy: Policy::Daily { quota },
                name: LimitName::Daily,
            });
        }
        let now = self.now();
        let held = self.app.callers_in_flight.enter(key, tenant.map(|(id, _)| &**id));
        // Over its share of the slots: nothing is taken, the limits only
        // say where the caller stands.
        let take = held.is_some();
        // An in-process limiter answers at once; a shared one is waited for.
        if let Some(verdict) = self.app.limiter.acquire_at_once(charges.as_slice(), now, take) {
            return Answer::ready(self.charged(held, verdict, charges.as_slice(), now));
        }
        Answer::later(async move {
            let verdict = self.app.limiter.acquire(charges.as_slice(), now, take).await;
            self.charged(held, verdict, charges.as_slice(), now)
        })
    }

    fn resource(&self, route: &'static RouteSpec, params: Params, principal: Option<Principal>) -> Box<dyn Resource> {
        super::for_route(self.app.clone(), route, params, principal)
    }

    fn claim_key<'a>(&'a self, request: Keyed<'a>) -> BoxFuture<'a, Result<KeyState, Problem>> {
        Box::pin(async move { idempotency::claim(&*self.app.store, &request).await })
    }

    fn settle_key<'a>(
        &'a self,
        request: Keyed<'a>,
        response: Option<&'a http::Response<bytes::Bytes>>,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move { idempotency::settle(&*self.app.store, &request, response).await })
    }
}

/// Runs one request through the decision flow inside a request already
/// admitted (a batch's operations): never shed for load, since the batch
/// holds its slot.
pub async fn run_within(
    app: &Arc<App>,
    head: &http::request::Parts,
    body: Bytes,
    request_id: &str,
) -> http::Response<Bytes> {
    // The batch's own request passed the availability checks already.
    let exchange = Exchange {
        nested: true,
        ..Exchange::new(app, false, None)
    };
    // Record routes answer whole bodies; a stream would read as empty.
    flow::run(&exchange, head, Box::new(crate::body::ReadyBody(body)), request_id)
        .await
        .response
        .map(|body| body.as_full().cloned().unwrap_or_default())
}

/// A limiter that cannot answer: 503, the request is not served unmetered.
/// The limiter logs its failures itself, at most one line per interval: one
/// line per refused request would flood the log during an outage.
fn limiter_problem(e: crate::limits::LimiterError) -> Problem {
    tracing::debug!(error = %e, "rate limiter unavailable");
    Problem::new(
        canon_http::ProblemKind::ServiceUnavailable,
        "The rate limiter cannot be reached; retry shortly.",
    )
}

/// Counts a refusal in `canon_rate_limited_total` by the limit's name (a
/// fixed word: never a key, a tenant or an address).
fn counted(verdict: RateVerdict) -> RateVerdict {
    if let RateVerdict::Refused { limit, .. } = &verdict {
        crate::metrics::rate_limited(limit.as_str());
    }
    verdict
}
