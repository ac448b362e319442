//! What each operation (a route and one of its methods) can answer, derived
//! from the decision flow's nodes and the route table's facts.
//!
//! [`statuses`] walks the nodes in the order [`crate::flow::run`] does and
//! asks, for each, whether it applies to the operation: 401 only under
//! `/v1`, 415/413/408 only where a body is read, 406 only where one is
//! produced, 428 only where writes can be required to carry `If-Match`, and
//! so on. The API description lists exactly these statuses; [`explore`]
//! drives the real flow through every fact the route declares and collects
//! what it answers, so a test can prove the two agree.

use std::collections::BTreeSet;

use bytes::Bytes;
use http::{Method, Request, header};

use crate::access::{Principal, Role, TenantRole};
use crate::catalogue::ProblemKind;
use crate::flow::{
    Answer, Availability, BodyChunks, BodyError, BodySource, BoxFuture, Existence, Found, Input, KeyState, Keyed,
    LockInfo, Representation, Resource, Service, StreamedBody, Success,
};
use crate::media::MediaType;
use crate::problem::Problem;
use crate::ratelimit::{LimitName, RateVerdict, Standing};
use crate::route::{Guard, MethodSpec, Outcome, Params, RouteSpec, RouteTable};
use crate::validators::{EntityTag, Validators};

/// Statuses every operation can answer, whatever its facts: 400 (a bad
/// `Host`, a malformed conditional header or query), 414, 431 and 503.
pub const EVERYWHERE: &[u16] = &[400, 414, 431, 503];

/// Statuses the flow answers outside any one operation: 204 to `OPTIONS`
/// (on a route, or `OPTIONS *` about the server), 404 for a path no route
/// matches, 405 for a method a route does not list and 501 for a method
/// Canon does not implement at all. The API description states them once.
pub const OUTSIDE_OPERATIONS: &[u16] = &[204, 404, 405, 501];

/// Every status the flow can answer on `routes`: each operation's
/// ([`statuses`]), each planned method's ([`planned_statuses`]) and
/// [`OUTSIDE_OPERATIONS`]. [`explore_all`] proves it against the real flow.
pub fn produced(routes: &[RouteSpec]) -> BTreeSet<u16> {
    let mut out: BTreeSet<u16> = OUTSIDE_OPERATIONS.iter().copied().collect();
    for route in routes {
        for spec in route.methods {
            out.extend(statuses(route, spec));
        }
        if !route.planned.is_empty() {
            out.extend(planned_statuses(route));
        }
    }
    out
}

/// Whether requests to `pattern` must authenticate (the flow's `Authenticated` node):
/// the API under `/v1`, and the operator's `/metrics`.
pub fn needs_credentials(pattern: &str) -> bool {
    is_api(pattern) || pattern == "/metrics"
}

/// Whether requests to `pattern` are rate limited (the flow's `RateLimit`
/// node): the API under `/v1` only. `/metrics` is how an operator watches an
/// overload, so neither the operator's own traffic nor the in-flight share
/// may refuse it.
pub fn is_api(pattern: &str) -> bool {
    pattern == "/v1" || pattern.starts_with("/v1/")
}

/// Every status the flow can answer for `spec` on `route`, in order.
pub fn statuses(route: &RouteSpec, spec: &MethodSpec) -> BTreeSet<u16> {
    let mut out: BTreeSet<u16> = EVERYWHERE.iter().copied().collect();
    // A resource runs: the store it reads can fail (500, or 503 when unreachable).
    out.insert(500);
    let states = route.states;
    let safe = spec.method == Method::GET || spec.method == Method::HEAD;
    // Authenticated, RateLimit.
    if needs_credentials(route.pattern) {
        out.insert(401);
    }
    if is_api(route.pattern) {
        out.insert(429);
    }
    // Authorized: members below the required role (403); members of another
    // tenant never learn that the tenant exists (404).
    if let Guard::Role(required) = spec.guard {
        if required > Role::Viewer {
            out.insert(403);
        }
        if route.pattern.contains("{tenant}") {
            out.insert(404);
        }
    }
    // ContentType, Body. A relayed body is of any type: too large, or
    // stalled, as it streams.
    if spec.forwards {
        out.extend([408, 413]);
    } else if !spec.accepts.is_empty() {
        out.extend([408, 413, 415]);
    }
    // Acceptable.
    if !spec.produces.is_empty() {
        out.insert(406);
    }
    // Idempotent: keyed POSTs (a relayed one's key is the other server's).
    if spec.method == Method::POST && !spec.forwards {
        out.extend([409, 422]);
    }
    // Exists. A method that creates its target still meets a missing or
    // deleted container (`Existence::ContainerMissing`/`ContainerGone`).
    if states.missing {
        out.insert(404);
    }
    if states.gone {
        out.insert(410);
    }
    if states.moved {
        out.insert(if safe { 301 } else { 308 });
    }
    if states.current {
        out.insert(307);
    }
    if states.see_other && safe {
        out.insert(303);
    }
    // Preconditions: any existing resource answers `If-None-Match: *` with
    // 304 to a read; any request may carry an `If-Match` that fails.
    // A relayed request's conditions are the other server's to judge.
    if safe && !spec.forwards {
        out.insert(304);
    }
    if !spec.forwards {
        out.insert(412);
    }
    // PreconditionRequired, Unlocked.
    if spec.writes && states.require_if_match {
        out.insert(428);
    }
    if spec.writes && states.lockable {
        out.insert(423);
    }
    // Execute, with `Prefer: return=minimal` turning a write's 200 into 204.
    for outcome in spec.outcomes {
        out.insert(outcome.status());
        if *outcome == Outcome::Ok && !safe {
            out.insert(204);
        }
    }
    out.extend(spec.raises.iter().map(|k| k.entry().status));
    out
}

/// The statuses a planned method answers: 501, after the nodes that run
/// before `MethodAllowed` (no resource runs, so no 500).
pub fn planned_statuses(route: &RouteSpec) -> BTreeSet<u16> {
    let mut out: BTreeSet<u16> = EVERYWHERE.iter().copied().collect();
    if needs_credentials(route.pattern) {
        out.insert(401);
    }
    if is_api(route.pattern) {
        out.insert(429);
    }
    out.insert(501);
    out
}

/// Runs the real flow for `spec` on `route` once for every fact the route
/// table declares (each node's deciding input varied on its own) and
/// returns the statuses it answered.
pub async fn explore(route: &'static RouteSpec, spec: &MethodSpec) -> BTreeSet<u16> {
    let mut seen = BTreeSet::new();
    for probe in probes(route, spec) {
        let service = Probe {
            table: RouteTable::new(std::slice::from_ref(route)).expect("one route always compiles"),
            scene: probe.scene,
        };
        let body: Box<dyn BodySource> = match probe.body_error {
            Some(e) => Box::new(FailingBody(e)),
            None => Box::new(probe.request.body().clone()),
        };
        let (head, _) = probe.request.into_parts();
        let decision = crate::flow::run(&service, &head, body, "explore").await;
        seen.insert(decision.response.status().as_u16());
    }
    seen
}

/// The statuses a planned method answers, from the real flow.
pub async fn explore_planned(route: &'static RouteSpec, method: &Method) -> BTreeSet<u16> {
    let spec = MethodSpec::read(method.clone(), Guard::Public, &[]);
    let mut seen = BTreeSet::new();
    for probe in probes(route, &spec).into_iter().filter(|p| p.before_method_allowed) {
        let service = Probe {
            table: RouteTable::new(std::slice::from_ref(route)).expect("one route always compiles"),
            scene: probe.scene,
        };
        let (head, body) = probe.request.into_parts();
        let decision = crate::flow::run(&service, &head, Box::new(body), "explore").await;
        seen.insert(decision.response.status().as_u16());
    }
    seen
}

/// The statuses the real flow answers on `routes`: [`explore`] of every
/// operation, [`explore_planned`] of every planned method, and requests
/// outside any operation (`OPTIONS` on each route and on `*`, another
/// method with the target `*`, paths no route matches inside and outside
/// `/v1`, every implemented method a route does not list, an unknown method).
pub async fn explore_all(routes: &'static [RouteSpec]) -> BTreeSet<u16> {
    let mut seen = BTreeSet::new();
    for route in routes {
        for spec in route.methods {
            seen.extend(explore(route, spec).await);
        }
        for method in route.planned {
            seen.extend(explore_planned(route, method).await);
        }
    }
    let mut requests: Vec<(Method, String)> = vec![
        (Method::OPTIONS, "*".into()),
        (Method::GET, "*".into()),
        (Method::GET, "/no-such-route".into()),
        (Method::GET, "/v1/no-such-route".into()),
    ];
    if let Ok(unknown) = Method::from_bytes(b"FOO") {
        requests.push((unknown, "/".into()));
    }
    for route in routes {
        let path = concrete_path(route.pattern);
        requests.push((Method::OPTIONS, path.clone()));
        for method in crate::flow::KNOWN_METHODS {
            let listed = route.method(&method).is_some() || route.planned.contains(&method);
            if !listed && method != Method::OPTIONS {
                requests.push((method, path.clone()));
            }
        }
    }
    let scene = Scene::new(&MethodSpec::read(Method::GET, Guard::Public, &[]));
    for (method, target) in requests {
        let Ok(request) = Request::builder()
            .method(method)
            .uri(target.as_str())
            .header(header::HOST, "canon.test")
            .header(header::AUTHORIZATION, "Bearer good")
            .body(Bytes::new())
        else {
            continue;
        };
        let Ok(table) = RouteTable::new(routes) else {
            continue;
        };
        let service = Probe {
            table,
            scene: scene.clone(),
        };
        let (head, body) = request.into_parts();
        let decision = crate::flow::run(&service, &head, Box::new(body), "explore").await;
        seen.insert(decision.response.status().as_u16());
    }
    seen
}

/// `pattern` with every parameter filled in.
fn concrete_path(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|seg| match seg {
            "{tenant}" => "acme",
            s if s.starts_with("{*") => "a/b",
            s if s.starts_with('{') => "x",
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// What the probing service and resource answer.
#[derive(Clone)]
struct Scene {
    available: bool,
    /// The caller is over a rate limit (429).
    limited: bool,
    principal: Principal,
    parse_fails: bool,
    existence: Existence,
    load_fails: Option<ProblemKind>,
    key_state: KeyChoice,
    execute: Result<Outcome, ProblemKind>,
}

#[derive(Clone, Copy)]
enum KeyChoice {
    Fresh,
    InFlight,
    Mismatch,
}

impl Scene {
    fn new(spec: &MethodSpec) -> Self {
        Scene {
            available: true,
            limited: false,
            principal: Principal::Operator { key_id: "op".into() },
            parse_fails: false,
            existence: Existence::Found(found()),
            load_fails: None,
            key_state: KeyChoice::Fresh,
            execute: spec.outcomes.first().copied().ok_or(ProblemKind::InvalidField),
        }
    }
}

fn found() -> Found {
    Found {
        validators: Validators::new(EntityTag::strong("t1"), std::time::UNIX_EPOCH),
        ..Found::default()
    }
}

fn member(tenant: &str, role: TenantRole) -> Principal {
    Principal::Member {
        key_id: "k".into(),
        tenant: tenant.into(),
        user_id: "u".into(),
        role,
    }
}

struct ProbeRequest {
    request: Request<Bytes>,
    scene: Scene,
    body_error: Option<BodyError>,
    /// Varies only what nodes before `MethodAllowed` read.
    before_method_allowed: bool,
}

/// One probe per deciding fact, each from a baseline request that passes.
fn probes(route: &'static RouteSpec, spec: &MethodSpec) -> Vec<ProbeRequest> {
    let path = concrete_path(route.pattern);
    let base = Scene::new(spec);
    let request = |edit: &dyn Fn(http::request::Builder) -> http::request::Builder, body: &[u8]| {
        let mut b = Request::builder()
            .method(spec.method.clone())
            .uri(path.as_str())
            .header(header::HOST, "canon.test")
            .header(header::AUTHORIZATION, "Bearer good");
        if let Some(media) = spec.accepts.first() {
            b = b.header(header::CONTENT_TYPE, media.essence());
        }
        if !body.is_empty() {
            b = b.header(header::CONTENT_LENGTH, body.len());
        }
        edit(b)
            .body(Bytes::copy_from_slice(body))
            .expect("probe requests are well-formed")
    };
    let same = |b: http::request::Builder| b;
    let mut out = Vec::new();
    let mut push = |request: Request<Bytes>, scene: Scene, body_error: Option<BodyError>, early: bool| {
        out.push(ProbeRequest {
            request,
            scene,
            body_error,
            before_method_allowed: early,
        });
    };
    let body: &[u8] = if spec.accepts.is_empty() { b"" } else { b"{}" };

    // Nodes before MethodAllowed.
    push(request(&same, body), base.clone(), None, true);
    push(
        request(&same, body),
        Scene {
            available: false,
            ..base.clone()
        },
        None,
        true,
    );
    let long = format!("{path}?q={}", "x".repeat(9000));
    push(request(&|b| b.uri(long.as_str()), body), base.clone(), None, true);
    let big = "x".repeat(17 * 1024);
    push(
        request(&|b| b.header("x-big", big.as_str()), body),
        base.clone(),
        None,
        true,
    );
    push(
        request(&|b| b.header(header::HOST, "a b"), body),
        base.clone(),
        None,
        true,
    );
    push(
        request(&|b| b.header(header::AUTHORIZATION, "Bearer bad"), body),
        base.clone(),
        None,
        true,
    );
    push(
        request(&same, body),
        Scene {
            limited: true,
            ..base.clone()
        },
        None,
        true,
    );

    // Authorized.
    for role in [TenantRole::Viewer, TenantRole::Editor, TenantRole::Admin] {
        for tenant in ["acme", "other"] {
            let scene = Scene {
                principal: member(tenant, role),
                ..base.clone()
            };
            push(request(&same, body), scene, None, false);
        }
    }
    // ContentType and Body.
    push(
        request(&|b| b.header(header::CONTENT_TYPE, "application/xml"), b"<x/>"),
        base.clone(),
        None,
        false,
    );
    push(
        request(&|b| b.header(header::CONTENT_ENCODING, "br"), body),
        base.clone(),
        None,
        false,
    );
    for e in [BodyError::TooLarge, BodyError::TimedOut, BodyError::Aborted] {
        push(request(&same, body), base.clone(), Some(e), false);
    }
    // Acceptable.
    push(
        request(&|b| b.header(header::ACCEPT, "image/png"), body),
        base.clone(),
        None,
        false,
    );
    // WellFormed.
    push(
        request(&same, body),
        Scene {
            parse_fails: true,
            ..base.clone()
        },
        None,
        false,
    );
    // Idempotent.
    for key_state in [KeyChoice::InFlight, KeyChoice::Mismatch] {
        push(
            request(&|b| b.header("idempotency-key", "k1"), body),
            Scene {
                key_state,
                ..base.clone()
            },
            None,
            false,
        );
    }
    // Exists, as the route's states allow; failing loads.
    let mut existences = Vec::new();
    if route.states.missing {
        existences.push(Existence::Missing);
        existences.push(Existence::ContainerMissing);
    }
    if route.states.gone {
        existences.push(Existence::Gone);
        existences.push(Existence::ContainerGone);
    }
    if route.states.moved {
        existences.push(Existence::Moved("/elsewhere".into()));
    }
    if route.states.current {
        existences.push(Existence::Redirect("/elsewhere".into()));
    }
    if route.states.see_other {
        existences.push(Existence::SeeOther("/elsewhere".into()));
    }
    for existence in existences {
        push(
            request(&same, body),
            Scene {
                existence,
                ..base.clone()
            },
            None,
            false,
        );
    }
    for kind in [ProblemKind::Internal, ProblemKind::ServiceUnavailable] {
        push(
            request(&same, body),
            Scene {
                load_fails: Some(kind),
                ..base.clone()
            },
            None,
            false,
        );
    }
    // Preconditions.
    push(
        request(&|b| b.header(header::IF_MATCH, "\"other\""), body),
        base.clone(),
        None,
        false,
    );
    push(
        request(&|b| b.header(header::IF_NONE_MATCH, "*"), body),
        base.clone(),
        None,
        false,
    );
    // PreconditionRequired and Unlocked.
    if route.states.require_if_match {
        let scene = Scene {
            existence: Existence::Found(Found {
                require_if_match: true,
                ..found()
            }),
            ..base.clone()
        };
        push(request(&same, body), scene, None, false);
    }
    if route.states.lockable {
        let scene = Scene {
            existence: Existence::Found(Found {
                locked_by_other: Some(LockInfo {
                    holder: "someone".into(),
                    expires_at: "later".into(),
                }),
                ..found()
            }),
            ..base.clone()
        };
        push(request(&same, body), scene, None, false);
    }
    // Execute: every outcome, with and without `Prefer: return=minimal`,
    // and every problem the action raises.
    for outcome in spec.outcomes {
        for prefer in ["return=representation", "return=minimal"] {
            let scene = Scene {
                execute: Ok(*outcome),
                ..base.clone()
            };
            push(request(&|b| b.header("prefer", prefer), body), scene, None, false);
        }
    }
    for kind in spec.raises {
        let scene = Scene {
            execute: Err(*kind),
            ..base.clone()
        };
        push(request(&same, body), scene, None, false);
    }
    out
}

/// A body whose reading fails.
struct FailingBody(BodyError);

impl BodySource for FailingBody {
    fn read(self: Box<Self>, _: usize) -> BoxFuture<'static, Result<Bytes, BodyError>> {
        let e = self.0;
        Box::pin(async move { Err(e) })
    }
    fn chunks(self: Box<Self>) -> Box<dyn BodyChunks> {
        Box::new(FailingChunks(Some(self.0)))
    }
}

/// Chunks whose first read fails.
struct FailingChunks(Option<BodyError>);

impl BodyChunks for FailingChunks {
    fn next_chunk(&mut self) -> BoxFuture<'_, Option<Result<Bytes, BodyError>>> {
        let e = self.0.take();
        Box::pin(async move { e.map(Err) })
    }
}

/// The probing service: one route, facts from a [`Scene`].
struct Probe {
    table: RouteTable,
    scene: Scene,
}

impl Service for Probe {
    fn routes(&self) -> &RouteTable {
        &self.table
    }
    fn limits(&self) -> crate::flow::Limits {
        crate::flow::Limits::default()
    }
    fn availability(&self) -> Availability {
        if self.scene.available {
            Availability::Available
        } else {
            Availability::Unavailable {
                retry_after: 1,
                reason: "probe".into(),
            }
        }
    }
    fn authenticate<'a>(&'a self, token: &'a str) -> Answer<'a, Result<Option<Principal>, Problem>> {
        let principal = (token == "good").then(|| self.scene.principal.clone());
        Answer::ready(Ok(principal))
    }
    fn resource(&self, _: &'static RouteSpec, _: Params, _: Option<Principal>) -> Box<dyn Resource> {
        Box::new(ProbeResource(self.scene.clone(), None))
    }
    fn rate_limit<'a>(&'a self, _: &'a Principal) -> Answer<'a, Result<RateVerdict, Problem>> {
        let verdict = if self.scene.limited {
            RateVerdict::Refused {
                standing: Standing::default(),
                limit: LimitName::Burst,
                retry_after: 1,
            }
        } else {
            RateVerdict::Unlimited
        };
        Answer::ready(Ok(verdict))
    }
    fn claim_key<'a>(&'a self, _: Keyed<'a>) -> BoxFuture<'a, Result<KeyState, Problem>> {
        let state = match self.scene.key_state {
            KeyChoice::Fresh => KeyState::Fresh,
            KeyChoice::InFlight => KeyState::InFlight,
            KeyChoice::Mismatch => KeyState::Mismatch,
        };
        Box::pin(async move { Ok(state) })
    }
}

struct ProbeResource(Scene, Option<StreamedBody>);

impl Resource for ProbeResource {
    fn parse(&mut self, _: Input<'_>) -> Result<(), Problem> {
        if self.0.parse_fails {
            return Err(Problem::new(ProblemKind::InvalidQuery, "probe"));
        }
        Ok(())
    }
    fn load(&mut self) -> BoxFuture<'_, Result<Existence, Problem>> {
        let outcome = match self.0.load_fails {
            Some(kind) => Err(Problem::new(kind, "probe")),
            None => Ok(self.0.existence.clone()),
        };
        Box::pin(async move { outcome })
    }
    fn execute(&mut self, produce: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        let rep = || Representation::new(produce.unwrap_or(MediaType::Json), Bytes::from_static(b"{}"));
        let outcome = match self.0.execute {
            Ok(Outcome::Ok) => Ok(Success::Ok(rep())),
            Ok(Outcome::Created) => Ok(Success::Created {
                location: "/created".into(),
                representation: rep(),
            }),
            Ok(Outcome::NoContent) => Ok(Success::NoContent),
            Ok(Outcome::MultiStatus) => Ok(Success::MultiStatus(rep())),
            Ok(Outcome::Accepted) => Ok(Success::Accepted {
                location: "/job".into(),
                representation: rep(),
            }),
            Ok(Outcome::Forwarded) => Ok(Success::Forwarded(http::Response::new(crate::body::Body::empty()))),
            Err(kind) => Err(Problem::new(kind, "probe")),
        };
        // A streamed body is read in the action, as a real resource would:
        // what goes wrong while it arrives is the action's answer.
        let streamed = self.1.take();
        Box::pin(async move {
            if let Some(mut body) = streamed {
                while let Some(chunk) = body.next().await {
                    chunk?;
                }
            }
            outcome
        })
    }
    fn take_body(&mut self, body: StreamedBody) {
        self.1 = Some(body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::States;

    static ROUTES: &[RouteSpec] = &[
        RouteSpec {
            name: "record",
            pattern: "/v1/tenants/{tenant}/things/{id}",
            methods: &[
                MethodSpec::read(Method::GET, Guard::Role(Role::Viewer), &[MediaType::Json]),
                MethodSpec::write(
                    Method::PUT,
                    Guard::Role(Role::Editor),
                    &[MediaType::Json],
                    &[MediaType::Json],
                )
                .creating()
                .answering(&[Outcome::Ok, Outcome::Created])
                .raising(&[ProblemKind::UniqueConflict]),
                MethodSpec::write(Method::DELETE, Guard::Role(Role::Editor), &[], &[]).answering(&[Outcome::NoContent]),
            ],
            planned: &[Method::PATCH],
            summary: "a thing",
            states: States::FIXED.missing().gone().current().require_if_match().lockable(),
        },
        RouteSpec {
            name: "things",
            pattern: "/v1/things",
            methods: &[MethodSpec::write(
                Method::POST,
                Guard::Role(Role::Operator),
                &[MediaType::Json],
                &[MediaType::Json],
            )
            .answering(&[Outcome::Created])],
            planned: &[],
            summary: "things",
            states: States::FIXED,
        },
        RouteSpec {
            name: "relay",
            pattern: "/v1/tenants/{tenant}/relay/{*path}",
            methods: &[
                MethodSpec::read(Method::GET, Guard::Role(Role::Viewer), &[]).forwarding(),
                MethodSpec::write(Method::POST, Guard::Role(Role::Editor), &[], &[]).forwarding(),
            ],
            planned: &[],
            summary: "relayed",
            states: States::FIXED.missing().gone().current(),
        },
        RouteSpec {
            name: "health",
            pattern: "/healthz",
            methods: &[MethodSpec::read(Method::GET, Guard::Public, &[MediaType::Json])],
            planned: &[],
            summary: "health",
            states: States::FIXED,
        },
    ];

    fn set(codes: &[u16]) -> BTreeSet<u16> {
        codes.iter().copied().collect()
    }

    #[tokio::test]
    async fn derived_statuses_are_exactly_what_the_flow_answers() {
        for route in ROUTES {
            for spec in route.methods {
                assert_eq!(
                    statuses(route, spec),
                    explore(route, spec).await,
                    "{} {}",
                    spec.method,
                    route.pattern
                );
            }
            for method in route.planned {
                assert_eq!(planned_statuses(route), explore_planned(route, method).await);
            }
        }
    }

    #[tokio::test]
    async fn produced_is_exactly_what_the_flow_answers_on_the_table() {
        assert_eq!(produced(ROUTES), explore_all(ROUTES).await);
        // 405 and 501 belong to no operation, yet the flow answers them.
        assert!(produced(ROUTES).is_superset(&set(OUTSIDE_OPERATIONS)));
    }

    #[test]
    fn each_fact_adds_its_statuses() {
        let [record, things, health] = [&ROUTES[0], &ROUTES[1], &ROUTES[3]];
        assert_eq!(
            statuses(record, &record.methods[0]),
            set(&[200, 304, 307, 400, 401, 404, 406, 410, 412, 414, 429, 431, 500, 503])
        );
        // A creating PUT creates a missing or deleted resource (201), but
        // its container may be missing (404) or deleted (410).
        assert_eq!(
            statuses(record, &record.methods[1]),
            set(&[
                200, 201, 204, 307, 400, 401, 403, 404, 406, 408, 409, 410, 412, 413, 414, 415, 423, 428, 429, 431,
                500, 503
            ])
        );
        assert_eq!(
            statuses(things, &things.methods[0]),
            set(&[
                201, 400, 401, 403, 406, 408, 409, 412, 413, 414, 415, 422, 429, 431, 500, 503
            ])
        );
        assert_eq!(
            statuses(health, &health.methods[0]),
            set(&[200, 304, 400, 406, 412, 414, 431, 500, 503])
        );
        assert_eq!(planned_statuses(record), set(&[400, 401, 414, 429, 431, 501, 503]));
        // A relayed request: any body (413 and 408 as it streams, never
        // 415), no 304, 406, 412 or idempotency statuses of Canon's own.
        let relay = &ROUTES[2];
        assert_eq!(
            statuses(relay, &relay.methods[0]),
            set(&[200, 307, 400, 401, 404, 408, 410, 413, 414, 429, 431, 500, 503])
        );
        assert_eq!(
            statuses(relay, &relay.methods[1]),
            set(&[200, 307, 400, 401, 403, 404, 408, 410, 413, 414, 429, 431, 500, 503])
        );
    }
}
