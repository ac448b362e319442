//! Node-by-node tests of the decision flow: each test sets up the facts that
//! make exactly one node decide, and asserts the status, the headers that
//! status implies, the problem type and the path of nodes taken.

use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::header::HeaderName;
use http::{Method, Request, StatusCode, header};
use serde_json::Value;

use crate::access::{Principal, Role, TenantRole};
use crate::flow::*;
use crate::media::MediaType;
use crate::problem::Problem;
use crate::ratelimit::{LimitName, PolicyStanding, RateVerdict, Standing};
use crate::route::{Guard, MethodSpec, Params, RouteSpec, RouteTable};
use crate::validators::{EntityTag, Validators};
use crate::{FieldError, ProblemKind};

static ROUTES: &[RouteSpec] = &[
    RouteSpec {
        name: "item",
        pattern: "/v1/tenants/{tenant}/items/{id}",
        methods: &[
            MethodSpec::read(Method::GET, Guard::Role(Role::Viewer), &[MediaType::Json]),
            MethodSpec::write(
                Method::PUT,
                Guard::Role(Role::Editor),
                &[MediaType::Json],
                &[MediaType::Json],
            )
            .creating(),
            MethodSpec::write(Method::DELETE, Guard::Role(Role::Editor), &[], &[]),
        ],
        planned: &[Method::PATCH],
        summary: "an item",
        states: crate::route::States::FIXED,
    },
    RouteSpec {
        name: "items",
        pattern: "/v1/tenants/{tenant}/items",
        methods: &[
            MethodSpec::read(
                Method::GET,
                Guard::Role(Role::Viewer),
                &[MediaType::Json, MediaType::Csv],
            ),
            MethodSpec::write(
                Method::POST,
                Guard::Role(Role::Editor),
                &[MediaType::Json],
                &[MediaType::Json],
            ),
        ],
        planned: &[],
        summary: "items",
        states: crate::route::States::FIXED,
    },
    RouteSpec {
        name: "uploads",
        pattern: "/v1/tenants/{tenant}/uploads",
        methods: &[MethodSpec::write(
            Method::POST,
            Guard::Role(Role::Editor),
            &[MediaType::Ndjson],
            &[MediaType::Json],
        )
        .streaming()],
        planned: &[],
        summary: "uploads",
        states: crate::route::States::FIXED,
    },
    RouteSpec {
        name: "health",
        pattern: "/healthz",
        methods: &[MethodSpec::read(Method::GET, Guard::Public, &[MediaType::Json])],
        planned: &[],
        summary: "health",
        states: crate::route::States::FIXED,
    },
];

/// The facts a test controls.
struct Facts {
    availability: Availability,
    principal: Option<Principal>,
    existence: Existence,
    parse_error: Option<Problem>,
    execute: Result<Success, Problem>,
    limits: Limits,
    /// What the idempotency ledger answers for a key.
    key_state: fn() -> KeyState,
    /// When set, `execute` answers 200 with these chunks, streamed.
    stream: Option<&'static [&'static str]>,
    /// What the limiter answers at the `RateLimit` node.
    rate: RateVerdict,
    /// What failed-auth limiting answers before a token is checked.
    screen: RateVerdict,
    /// The client's standing after an unknown token.
    failed: RateVerdict,
}

impl Clone for Facts {
    fn clone(&self) -> Self {
        Self {
            availability: self.availability.clone(),
            principal: self.principal.clone(),
            existence: self.existence.clone(),
            parse_error: self.parse_error.clone(),
            execute: self.execute.as_ref().map(copy_success).map_err(Clone::clone),
            limits: self.limits,
            key_state: self.key_state,
            stream: self.stream,
            rate: self.rate,
            screen: self.screen,
            failed: self.failed,
        }
    }
}

/// A copy of `success`, whose representations are whole (a streamed body
/// cannot be copied; these tests use none).
fn copy_success(success: &Success) -> Success {
    let copy = |rep: &Representation| Representation {
        media: rep.media,
        body: crate::body::Body::Full(rep.body.as_full().cloned().expect("a whole body")),
        validators: rep.validators.clone(),
        cache_control: rep.cache_control,
        content_location: rep.content_location.clone(),
        links: rep.links.clone(),
        vary: rep.vary,
        content_security_policy: rep.content_security_policy,
        retry_after: rep.retry_after,
        content_disposition: rep.content_disposition.clone(),
        preference_applied: rep.preference_applied.clone(),
        shown_once: rep.shown_once,
    };
    match success {
        Success::Ok(rep) => Success::Ok(copy(rep)),
        Success::Created {
            location,
            representation,
        } => Success::Created {
            location: location.clone(),
            representation: copy(representation),
        },
        Success::NoContent => Success::NoContent,
        Success::MultiStatus(rep) => Success::MultiStatus(copy(rep)),
        Success::Accepted {
            location,
            representation,
        } => Success::Accepted {
            location: location.clone(),
            representation: copy(representation),
        },
        Success::Forwarded(response) => {
            let mut copy = http::Response::new(crate::body::Body::Full(
                response.body().as_full().cloned().unwrap_or_default(),
            ));
            *copy.status_mut() = response.status();
            *copy.headers_mut() = response.headers().clone();
            Success::Forwarded(copy)
        }
    }
}

impl Default for Facts {
    fn default() -> Self {
        Self {
            availability: Availability::Available,
            principal: Some(member(TenantRole::Editor)),
            existence: Existence::Found(Found {
                validators: Validators::new(EntityTag::strong("v1"), UNIX_EPOCH + Duration::from_secs(1_000_000)),
                ..Found::default()
            }),
            parse_error: None,
            execute: Ok(Success::Ok(Representation::json(&serde_json::json!({"ok": true})))),
            limits: Limits::default(),
            key_state: || KeyState::Fresh,
            stream: None,
            rate: RateVerdict::Unlimited,
            screen: RateVerdict::Unlimited,
            failed: RateVerdict::Unlimited,
        }
    }
}

fn member(role: TenantRole) -> Principal {
    Principal::Member {
        key_id: "k1".into(),
        tenant: "acme".into(),
        user_id: "u1".into(),
        role,
    }
}

struct Stub {
    facts: Facts,
    table: RouteTable,
    /// What the resource saw at `parse`.
    seen_body: Arc<Mutex<Option<(MediaType, Bytes)>>>,
    /// Settlements of idempotency keys: the key and the kept status.
    settled: Arc<Mutex<Vec<Settlement>>>,
}

/// A settled idempotency key and the status kept for it (`None`: freed).
type Settlement = (String, Option<u16>);

impl Service for Stub {
    fn routes(&self) -> &RouteTable {
        &self.table
    }
    fn limits(&self) -> Limits {
        self.facts.limits
    }
    fn availability(&self) -> Availability {
        self.facts.availability.clone()
    }
    fn authenticate<'a>(&'a self, token: &'a str) -> Answer<'a, Result<Option<Principal>, Problem>> {
        let p = if token == "good" {
            self.facts.principal.clone()
        } else {
            None
        };
        // Waited for, as a store read would be.
        Answer::later(async move { Ok(p) })
    }
    fn resource(&self, _: &'static RouteSpec, _: Params, _: Option<Principal>) -> Box<dyn Resource> {
        Box::new(StubResource {
            facts: self.facts.clone(),
            seen_body: self.seen_body.clone(),
            streamed: None,
        })
    }
    fn rate_limit<'a>(&'a self, _: &'a Principal) -> Answer<'a, Result<RateVerdict, Problem>> {
        Answer::ready(Ok(self.facts.rate))
    }
    fn screen_token<'a>(&'a self, _: &'a str) -> Answer<'a, RateVerdict> {
        Answer::ready(self.facts.screen)
    }
    fn token_failed(&self) -> Answer<'_, RateVerdict> {
        let verdict = self.facts.failed;
        Answer::later(async move { verdict })
    }
    fn claim_key<'a>(&'a self, _: Keyed<'a>) -> BoxFuture<'a, Result<KeyState, Problem>> {
        let state = (self.facts.key_state)();
        Box::pin(async move { Ok(state) })
    }
    fn settle_key<'a>(&'a self, request: Keyed<'a>, response: Option<&'a http::Response<Bytes>>) -> BoxFuture<'a, ()> {
        self.settled
            .lock()
            .unwrap()
            .push((request.key.to_owned(), response.map(|r| r.status().as_u16())));
        Box::pin(async {})
    }
}

struct StubResource {
    facts: Facts,
    seen_body: Arc<Mutex<Option<(MediaType, Bytes)>>>,
    streamed: Option<StreamedBody>,
}

impl Resource for StubResource {
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem> {
        *self.seen_body.lock().unwrap() = input.body;
        self.facts.parse_error.clone().map_or(Ok(()), Err)
    }
    fn load(&mut self) -> BoxFuture<'_, Result<Existence, Problem>> {
        let e = self.facts.existence.clone();
        Box::pin(async move { Ok(e) })
    }
    fn execute(&mut self, _: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        let r = match self.facts.stream {
            Some(chunks) => {
                let length = chunks.iter().map(|c| c.len() as u64).sum();
                let source = StaticChunks(chunks.iter().map(|c| Bytes::from_static(c.as_bytes())).collect());
                let streamed = crate::body::Streamed {
                    chunks: Box::new(source),
                    length: Some(length),
                };
                let validators =
                    Validators::new(EntityTag::strong("file"), UNIX_EPOCH + Duration::from_secs(1_000_000));
                Ok(Success::Ok(
                    Representation::streamed(MediaType::Ndjson, streamed).with_validators(validators),
                ))
            }
            None => self.facts.execute.as_ref().map(copy_success).map_err(Clone::clone),
        };
        // A streamed body is read here, in the action, as a real resource
        // would; what it read is what it "saw".
        let streamed = self.streamed.take();
        let seen = self.seen_body.clone();
        Box::pin(async move {
            if let Some(mut body) = streamed {
                let mut all = Vec::new();
                while let Some(chunk) = body.next().await {
                    all.extend_from_slice(&chunk?);
                }
                *seen.lock().unwrap() = Some((body.media.expect("typed"), Bytes::from(all)));
            }
            r
        })
    }
    fn take_body(&mut self, body: StreamedBody) {
        self.streamed = Some(body);
    }
}

/// A streamed body made of fixed chunks.
struct StaticChunks(std::collections::VecDeque<Bytes>);

impl crate::body::ChunkSource for StaticChunks {
    fn next_chunk(&mut self) -> BoxFuture<'_, Option<Result<Bytes, crate::body::StreamError>>> {
        let next = self.0.pop_front().map(Ok);
        Box::pin(async move { next })
    }
}

/// Every chunk of `body`, in order.
async fn drain(body: crate::body::Body) -> Vec<u8> {
    match body {
        crate::body::Body::Full(bytes) => bytes.to_vec(),
        crate::body::Body::Streamed(mut s) => {
            let mut all = Vec::new();
            while let Some(chunk) = s.chunks.next_chunk().await {
                all.extend_from_slice(&chunk.unwrap());
            }
            all
        }
    }
}

/// Runs `req` and returns the response with its body as the flow left it.
async fn run_body(facts: Facts, req: Request<Bytes>) -> http::Response<crate::body::Body> {
    let stub = Stub {
        facts,
        table: RouteTable::new(ROUTES).unwrap(),
        seen_body: Default::default(),
        settled: Default::default(),
    };
    let (head, body) = req.into_parts();
    run(&stub, &head, Box::new(body), "rid").await.response
}

#[tokio::test]
async fn a_streamed_representation_is_sent_as_produced_with_its_length() {
    let facts = Facts {
        stream: Some(&["{\"a\":1}\n", "{\"a\":2}\n"]),
        ..Facts::default()
    };
    let r = run_body(facts.clone(), req(Method::GET, ITEM).body(Bytes::new()).unwrap()).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CONTENT_LENGTH], "16");
    assert_eq!(r.headers()[header::ETAG], "\"file\"");
    assert!(r.body().as_full().is_none(), "the body stays a stream");
    assert_eq!(drain(r.into_body()).await, b"{\"a\":1}\n{\"a\":2}\n");

    // gzip: coded as it streams; the length is no longer known, the tag is the coded one's.
    let r = run_body(
        facts,
        req(Method::GET, ITEM)
            .header("accept-encoding", "gzip")
            .body(Bytes::new())
            .unwrap(),
    )
    .await;
    assert_eq!(r.headers()[header::CONTENT_ENCODING], "gzip");
    assert!(r.headers().get(header::CONTENT_LENGTH).is_none());
    assert_eq!(r.headers()[header::ETAG], "\"file-gzip\"");
    let coded = drain(r.into_body()).await;
    let plain = crate::coding::decode(crate::coding::RequestCoding::Gzip, Bytes::from(coded), 1 << 20).unwrap();
    assert_eq!(&plain[..], b"{\"a\":1}\n{\"a\":2}\n");
}

#[tokio::test]
async fn a_streamed_answer_to_a_keyed_post_frees_its_key() {
    let facts = Facts {
        stream: Some(&["x"]),
        ..Facts::default()
    };
    let r = run_with(facts, post_keyed("\"k-1\"")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.settled, vec![("k-1".to_owned(), None)]);
}

struct Run {
    settled: Vec<Settlement>,
    status: StatusCode,
    headers: http::HeaderMap,
    body: Value,
    trace: Vec<Node>,
    seen_body: Option<(MediaType, Bytes)>,
}

impl Run {
    fn problem_type(&self) -> &str {
        self.body["type"].as_str().unwrap_or("")
    }
    fn header(&self, name: header::HeaderName) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
    fn last(&self) -> Node {
        *self.trace.last().unwrap()
    }
}

/// Runs `req` (given a `Host` when it has none, as every client sends one).
async fn run_with(facts: Facts, mut req: Request<Bytes>) -> Run {
    if !req.headers().contains_key(header::HOST) {
        req.headers_mut().insert(header::HOST, "canon.test".parse().unwrap());
    }
    run_raw(facts, req).await
}

/// Runs `req` exactly as given.
async fn run_raw(facts: Facts, req: Request<Bytes>) -> Run {
    let seen = Arc::new(Mutex::new(None));
    let settled = Arc::new(Mutex::new(Vec::new()));
    let stub = Stub {
        facts,
        table: RouteTable::new(ROUTES).unwrap(),
        seen_body: seen.clone(),
        settled: settled.clone(),
    };
    let (head, body) = req.into_parts();
    let decision = run(&stub, &head, Box::new(body), "rid").await;
    let (parts, body) = decision.response.into_parts();
    // A streamed body reads as none here (see `run_body` for streams).
    let body = body.as_full().cloned().unwrap_or_default();
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap()
    };
    let seen_body = seen.lock().unwrap().take();
    let settled = settled.lock().unwrap().clone();
    Run {
        settled,
        status: parts.status,
        headers: parts.headers,
        body,
        trace: decision.trace,
        seen_body,
    }
}

fn req(method: Method, uri: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "canon.test")
        .header("authorization", "Bearer good")
}

fn get(uri: &str) -> Request<Bytes> {
    req(Method::GET, uri).body(Bytes::new()).unwrap()
}

fn put_json(uri: &str, body: &str) -> http::request::Builder {
    req(Method::PUT, uri)
        .header("content-type", "application/json")
        .header("content-length", body.len())
}

const ITEM: &str = "/v1/tenants/acme/items/1";

fn assert_problem(r: &Run, status: u16, slug: &str) {
    assert_eq!(r.status.as_u16(), status, "body: {}", r.body);
    assert_eq!(r.header(header::CONTENT_TYPE), "application/problem+json");
    assert_eq!(r.problem_type(), format!("/problems/{slug}"));
    assert_eq!(r.body["status"], status);
    assert_eq!(r.body["request_id"], "rid");
    assert!(r.body["detail"].as_str().is_some_and(|d| !d.is_empty()));
}

#[tokio::test]
async fn happy_path_visits_every_node_in_order() {
    let r = run_with(Facts::default(), get(ITEM)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.trace,
        vec![
            Node::ServiceAvailable,
            Node::KnownMethod,
            Node::UriLength,
            Node::HeaderSize,
            Node::Target,
            Node::Authenticated,
            Node::RateLimit,
            Node::RouteExists,
            Node::MethodAllowed,
            Node::Authorized,
            Node::ContentType,
            Node::Body,
            Node::Acceptable,
            Node::WellFormed,
            Node::Exists,
            Node::Preconditions,
            Node::Execute,
        ]
    );
}

#[tokio::test]
async fn n01_unavailable_is_503_with_retry_after_before_anything_else() {
    let facts = Facts {
        availability: Availability::Unavailable {
            retry_after: 30,
            reason: "maintenance".into(),
        },
        ..Facts::default()
    };
    let r = run_with(
        facts,
        Request::builder().method("FOO").uri(ITEM).body(Bytes::new()).unwrap(),
    )
    .await;
    assert_problem(&r, 503, "service-unavailable");
    assert_eq!(r.header(header::RETRY_AFTER), "30");
    assert_eq!(r.trace, vec![Node::ServiceAvailable]);
}

#[tokio::test]
async fn unavailable_response_is_what_the_first_node_answers() {
    // A server that refuses before the flow (Canon's shed path) answers
    // this: it must be the node's own response.
    let facts = Facts {
        availability: Availability::Unavailable {
            retry_after: 7,
            reason: "busy".into(),
        },
        ..Facts::default()
    };
    let r = run_with(facts, get(ITEM)).await;
    let (parts, body) = unavailable_response(7, "busy", ITEM, "rid").into_parts();
    assert_eq!(parts.status, r.status);
    assert_eq!(parts.headers, r.headers);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), r.body);
    assert_eq!(r.body["retry_after"], 7);
}

#[tokio::test]
async fn n02_unknown_method_is_501_before_auth() {
    for m in ["FOO", "PROPFIND", "BREW"] {
        let r = run_with(
            Facts::default(),
            Request::builder().method(m).uri(ITEM).body(Bytes::new()).unwrap(),
        )
        .await;
        assert_problem(&r, 501, "not-implemented");
        assert_eq!(r.last(), Node::KnownMethod);
    }
}

#[tokio::test]
async fn n03_long_uri_is_414() {
    let uri = format!("{ITEM}?q={}", "a".repeat(9000));
    let r = run_with(Facts::default(), get(&uri)).await;
    assert_problem(&r, 414, "uri-too-long");
    assert_eq!(r.last(), Node::UriLength);
}

#[tokio::test]
async fn n04_large_headers_are_431() {
    let r = run_with(
        Facts::default(),
        req(Method::GET, ITEM)
            .header("x-big", "b".repeat(20_000))
            .body(Bytes::new())
            .unwrap(),
    )
    .await;
    assert_problem(&r, 431, "headers-too-large");
    assert_eq!(r.last(), Node::HeaderSize);
}

#[tokio::test]
async fn n05_missing_credentials_are_401_with_challenge() {
    let r = run_with(Facts::default(), Request::get(ITEM).body(Bytes::new()).unwrap()).await;
    assert_problem(&r, 401, "credentials-required");
    assert_eq!(r.header(header::WWW_AUTHENTICATE), "Bearer realm=\"canon\"");
    assert_eq!(r.last(), Node::Authenticated);
}

#[tokio::test]
async fn n05_bad_credentials_are_401_with_the_rfc_6750_error_code() {
    let cases = [
        // An unknown token: invalid_token.
        ("Bearer nope", "invalid-token", ", error=\"invalid_token\""),
        // Another scheme is no bearer credential at all: the bare challenge.
        ("Basic Zm9vOmJhcg==", "credentials-required", ""),
        ("Digest x", "credentials-required", ""),
        // A bearer request without a usable token is malformed: invalid_request.
        ("Bearer", "credentials-required", ", error=\"invalid_request\""),
        ("Bearer  ", "credentials-required", ", error=\"invalid_request\""),
        ("Bearer a b", "credentials-required", ", error=\"invalid_request\""),
    ];
    for (auth, slug, error) in cases {
        let r = run_with(
            Facts::default(),
            Request::get(ITEM)
                .header("authorization", auth)
                .body(Bytes::new())
                .unwrap(),
        )
        .await;
        assert_problem(&r, 401, slug);
        assert_eq!(
            r.header(header::WWW_AUTHENTICATE),
            format!("Bearer realm=\"canon\"{error}"),
            "{auth}"
        );
    }
    let r = run_with(
        Facts::default(),
        Request::get(ITEM)
            .header("authorization", "Bearer good")
            .header("authorization", "Bearer good")
            .body(Bytes::new())
            .unwrap(),
    )
    .await;
    assert_eq!(
        r.header(header::WWW_AUTHENTICATE),
        "Bearer realm=\"canon\", error=\"invalid_request\""
    );
}

#[tokio::test]
async fn n05_unknown_v1_paths_need_credentials_before_404() {
    let r = run_with(
        Facts::default(),
        Request::get("/v1/nowhere").body(Bytes::new()).unwrap(),
    )
    .await;
    assert_problem(&r, 401, "credentials-required");
    let r = run_with(Facts::default(), Request::get("/nowhere").body(Bytes::new()).unwrap()).await;
    assert_problem(&r, 404, "not-found");
    assert!(!r.trace.contains(&Node::Authenticated));
}

#[tokio::test]
async fn public_routes_skip_authentication() {
    let r = run_with(Facts::default(), Request::get("/healthz").body(Bytes::new()).unwrap()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(!r.trace.contains(&Node::Authenticated));
}

#[tokio::test]
async fn n06_no_route_is_404() {
    let r = run_with(Facts::default(), get("/v1/tenants/acme/nothing")).await;
    assert_problem(&r, 404, "not-found");
    assert_eq!(r.last(), Node::RouteExists);
}

#[tokio::test]
async fn options_is_204_with_allow() {
    let r = run_with(Facts::default(), req(Method::OPTIONS, ITEM).body(Bytes::new()).unwrap()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.header(header::ALLOW), "GET, HEAD, PUT, DELETE, OPTIONS");
    assert_eq!(r.last(), Node::Options);
}

#[tokio::test]
async fn n07_unsupported_method_is_405_with_allow() {
    let r = run_with(Facts::default(), req(Method::POST, ITEM).body(Bytes::new()).unwrap()).await;
    assert_problem(&r, 405, "method-not-allowed");
    assert_eq!(r.header(header::ALLOW), "GET, HEAD, PUT, DELETE, OPTIONS");
    assert_eq!(r.last(), Node::MethodAllowed);
}

#[tokio::test]
async fn n07_trace_connect_and_query_are_recognised_and_refused_with_allow() {
    for m in ["TRACE", "CONNECT", "QUERY"] {
        let method = Method::from_bytes(m.as_bytes()).unwrap();
        let r = run_with(Facts::default(), req(method, ITEM).body(Bytes::new()).unwrap()).await;
        assert_problem(&r, 405, "method-not-allowed");
        assert_eq!(r.header(header::ALLOW), "GET, HEAD, PUT, DELETE, OPTIONS");
        assert_eq!(r.last(), Node::MethodAllowed);
    }
}

#[tokio::test]
async fn n07_planned_method_is_501_without_allow() {
    let r = run_with(Facts::default(), req(Method::PATCH, ITEM).body(Bytes::new()).unwrap()).await;
    assert_problem(&r, 501, "not-implemented");
    assert!(r.headers.get(header::ALLOW).is_none());
}

#[tokio::test]
async fn n08_wrong_content_type_is_415_with_accept_post() {
    let r = run_with(
        Facts::default(),
        req(Method::POST, "/v1/tenants/acme/items")
            .header("content-type", "text/xml")
            .header("content-length", "3")
            .body(Bytes::from("<a>"))
            .unwrap(),
    )
    .await;
    assert_problem(&r, 415, "unsupported-media-type");
    assert_eq!(
        r.header(header::HeaderName::from_static("accept-post")),
        "application/json"
    );
    assert_eq!(r.body["accepted"][0], "application/json");
    assert_eq!(r.last(), Node::ContentType);

    let r = run_with(
        Facts::default(),
        req(Method::PUT, ITEM)
            .header("content-length", "2")
            .body(Bytes::from("{}"))
            .unwrap(),
    )
    .await;
    assert_problem(&r, 415, "unsupported-media-type");
}

#[tokio::test]
async fn n09_body_over_limit_is_413() {
    let facts = Facts {
        limits: Limits {
            max_body_bytes: 10,
            ..Limits::default()
        },
        ..Facts::default()
    };
    let body = "{\"a\":\"0123456789\"}";
    let r = run_with(facts.clone(), put_json(ITEM, body).body(Bytes::from(body)).unwrap()).await;
    assert_problem(&r, 413, "content-too-large");
    assert_eq!(r.body["max_bytes"], 10);
    assert_eq!(r.header(header::CONNECTION), "close");
    assert_eq!(r.last(), Node::Body);
    // Without a Content-Length the limit is enforced while reading.
    let r = run_with(
        facts,
        req(Method::PUT, ITEM)
            .header("content-type", "application/json")
            .header("transfer-encoding", "chunked")
            .body(Bytes::from(body))
            .unwrap(),
    )
    .await;
    assert_problem(&r, 413, "content-too-large");
}

#[tokio::test]
async fn n09_body_reaches_the_resource_with_its_media_type() {
    let r = run_with(Facts::default(), put_json(ITEM, "{}").body(Bytes::from("{}")).unwrap()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.seen_body, Some((MediaType::Json, Bytes::from("{}"))));
}

#[tokio::test]
async fn n10_nothing_acceptable_is_406_naming_what_is() {
    let r = run_with(
        Facts::default(),
        req(Method::GET, "/v1/tenants/acme/items")
            .header("accept", "application/xml")
            .body(Bytes::new())
            .unwrap(),
    )
    .await;
    assert_problem(&r, 406, "not-acceptable");
    assert_eq!(
        r.body["acceptable"],
        serde_json::json!(["application/json", "text/csv"])
    );
    assert_eq!(r.last(), Node::Acceptable);
}

#[tokio::test]
async fn n11_malformed_input_is_400() {
    let facts = Facts {
        parse_error: Some(
            Problem::new(ProblemKind::MalformedBody, "bad json").with_errors(vec![FieldError::new("", "eof")]),
        ),
        ..Facts::default()
    };
    let r = run_with(facts, get(ITEM)).await;
    assert_problem(&r, 400, "malformed-body");
    assert_eq!(r.last(), Node::WellFormed);

    let r = run_with(
        Facts::default(),
        req(Method::GET, ITEM)
            .header("if-match", "not-a-tag")
            .body(Bytes::new())
            .unwrap(),
    )
    .await;
    assert_problem(&r, 400, "invalid-header");
}

#[tokio::test]
async fn n12_role_too_low_is_403() {
    let facts = Facts {
        principal: Some(member(TenantRole::Viewer)),
        ..Facts::default()
    };
    let r = run_with(facts, req(Method::DELETE, ITEM).body(Bytes::new()).unwrap()).await;
    assert_problem(&r, 403, "forbidden");
    assert_eq!(r.body["required_role"], "editor");
    assert_eq!(r.last(), Node::Authorized);
}

#[tokio::test]
async fn n12_other_tenant_is_404_not_403() {
    let facts = Facts {
        principal: Some(member(TenantRole::Viewer)),
        ..Facts::default()
    };
    let r = run_with(
        facts,
        req(Method::DELETE, "/v1/tenants/other/items/1")
            .body(Bytes::new())
            .unwrap(),
    )
    .await;
    assert_problem(&r, 404, "not-found");
    assert_eq!(r.last(), Node::Authorized);
}

#[tokio::test]
async fn n13_existence() {
    let r = run_with(
        Facts {
            existence: Existence::Missing,
            ..Facts::default()
        },
        get(ITEM),
    )
    .await;
    assert_problem(&r, 404, "not-found");
    assert_eq!(r.last(), Node::Exists);

    let r = run_with(
        Facts {
            existence: Existence::Gone,
            ..Facts::default()
        },
        get(ITEM),
    )
    .await;
    assert_problem(&r, 410, "gone");

    let moved = Facts {
        existence: Existence::Moved("/v1/new".into()),
        ..Facts::default()
    };
    let r = run_with(moved.clone(), get(ITEM)).await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.header(header::LOCATION), "/v1/new");
    let r = run_with(moved, req(Method::DELETE, ITEM).body(Bytes::new()).unwrap()).await;
    assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT);

    let r = run_with(
        Facts {
            existence: Existence::Redirect("/v1/t/acme".into()),
            ..Facts::default()
        },
        get(ITEM),
    )
    .await;
    assert_eq!(r.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(r.header(header::VARY), "Authorization");
}

#[tokio::test]
async fn n13_missing_resource_can_be_created_by_put() {
    let created = Success::Created {
        location: ITEM.into(),
        representation: Representation::json(&Value::Null),
    };
    let facts = Facts {
        existence: Existence::Missing,
        execute: Ok(created),
        ..Facts::default()
    };
    let r = run_with(facts, put_json(ITEM, "{}").body(Bytes::from("{}")).unwrap()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header(header::LOCATION), ITEM);
}

#[tokio::test]
async fn n14_preconditions() {
    let r = run_with(
        Facts::default(),
        req(Method::GET, ITEM)
            .header("if-none-match", "W/\"v1\"")
            .body(Bytes::new())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert_eq!(r.header(header::ETAG), "\"v1\"");
    assert_eq!(r.header(header::CACHE_CONTROL), "private, no-cache");
    assert_eq!(r.body, Value::Null);
    assert_eq!(r.last(), Node::Preconditions);

    let r = run_with(
        Facts::default(),
        put_json(ITEM, "{}")
            .header("if-match", "\"v0\"")
            .body(Bytes::from("{}"))
            .unwrap(),
    )
    .await;
    assert_problem(&r, 412, "precondition-failed");
    assert_eq!(r.header(header::ETAG), "\"v1\"");
}

#[tokio::test]
async fn n14_not_found_beats_precondition_failed() {
    let facts = Facts {
        existence: Existence::Missing,
        ..Facts::default()
    };
    let r = run_with(
        facts,
        req(Method::DELETE, ITEM)
            .header("if-match", "\"v0\"")
            .body(Bytes::new())
            .unwrap(),
    )
    .await;
    assert_problem(&r, 404, "not-found");
}

#[tokio::test]
async fn n15_require_if_match_is_428_on_writes_only() {
    let found = Found {
        require_if_match: true,
        ..Found::default()
    };
    let facts = Facts {
        existence: Existence::Found(found),
        ..Facts::default()
    };
    let r = run_with(facts.clone(), req(Method::DELETE, ITEM).body(Bytes::new()).unwrap()).await;
    assert_problem(&r, 428, "precondition-required");
    assert_eq!(r.last(), Node::PreconditionRequired);
    let r = run_with(facts, get(ITEM)).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn n16_locked_by_other_is_423_naming_holder() {
    let lock = LockInfo {
        holder: "k2".into(),
        expires_at: "2030-01-01T00:00:00Z".into(),
    };
    let facts = Facts {
        existence: Existence::Found(Found {
            locked_by_other: Some(lock),
            ..Found::default()
        }),
        ..Facts::default()
    };
    let r = run_with(facts, req(Method::DELETE, ITEM).body(Bytes::new()).unwrap()).await;
    assert_problem(&r, 423, "locked");
    assert_eq!(r.body["lock"]["holder"], "k2");
    assert_eq!(r.last(), Node::Unlocked);
}

#[tokio::test]
async fn n17_execute_failures_come_from_the_catalogue() {
    let facts = Facts {
        execute: Err(Problem::new(ProblemKind::UniqueConflict, "taken")),
        ..Facts::default()
    };
    let r = run_with(facts, put_json(ITEM, "{}").body(Bytes::from("{}")).unwrap()).await;
    assert_problem(&r, 409, "unique-conflict");
    assert_eq!(r.last(), Node::Execute);
}

#[tokio::test]
async fn success_statuses_and_headers() {
    let rep = Representation::json(&serde_json::json!({"id": 1})).with_validators(Validators::new(
        EntityTag::strong("e"),
        UNIX_EPOCH + Duration::from_secs(784_111_777),
    ));
    let facts = Facts {
        execute: Ok(Success::Ok(rep)),
        ..Facts::default()
    };
    let r = run_with(facts, get(ITEM)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header(header::ETAG), "\"e\"");
    assert_eq!(r.header(header::LAST_MODIFIED), "Sun, 06 Nov 1994 08:49:37 GMT");
    assert_eq!(r.header(header::CACHE_CONTROL), "private, no-cache");
    assert_eq!(r.header(header::CONTENT_TYPE), "application/json");

    let facts = Facts {
        execute: Ok(Success::NoContent),
        ..Facts::default()
    };
    let r = run_with(facts, req(Method::DELETE, ITEM).body(Bytes::new()).unwrap()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
}

const ITEMS: &str = "/v1/tenants/acme/items";

fn post_keyed(key: &str) -> Request<Bytes> {
    req(Method::POST, ITEMS)
        .header("content-type", "application/json")
        .header("content-length", "2")
        .header("idempotency-key", key)
        .body(Bytes::from("{}"))
        .unwrap()
}

fn created() -> Success {
    Success::Created {
        location: ITEM.into(),
        representation: Representation::json(&serde_json::json!({"id": 1}))
            .with_validators(Validators::new(EntityTag::strong("e1"), UNIX_EPOCH)),
    }
}

#[tokio::test]
async fn n14_precondition_nodes_one_by_one() {
    // If-Match is compared strongly: a weak tag never matches.
    let r = run_with(
        Facts::default(),
        put_json(ITEM, "{}")
            .header("if-match", "W/\"v1\"")
            .body(Bytes::from("{}"))
            .unwrap(),
    )
    .await;
    assert_problem(&r, 412, "precondition-failed");
    assert_eq!(r.last(), Node::Preconditions);

    // If-Match: * on a missing resource fails even for a creating PUT.
    let missing = Facts {
        existence: Existence::Missing,
        execute: Ok(created()),
        ..Facts::default()
    };
    let r = run_with(
        missing.clone(),
        put_json(ITEM, "{}")
            .header("if-match", "*")
            .body(Bytes::from("{}"))
            .unwrap(),
    )
    .await;
    assert_problem(&r, 412, "precondition-failed");
    assert_eq!(r.header(header::ETAG), "", "nothing to name when nothing exists");

    // If-None-Match: * makes PUT create-only: 201 when missing, 412 when present.
    let r = run_with(
        missing,
        put_json(ITEM, "{}")
            .header("if-none-match", "*")
            .body(Bytes::from("{}"))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = run_with(
        Facts::default(),
        put_json(ITEM, "{}")
            .header("if-none-match", "*")
            .body(Bytes::from("{}"))
            .unwrap(),
    )
    .await;
    assert_problem(&r, 412, "precondition-failed");

    // If-Modified-Since is ignored when If-None-Match is present.
    let later = crate::validators::http_date(UNIX_EPOCH + Duration::from_secs(2_000_000));
    let r = run_with(
        Facts::default(),
        req(Method::GET, ITEM)
            .header("if-none-match", "\"other\"")
            .header("if-modified-since", &later)
            .body(Bytes::new())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = run_with(
        Facts::default(),
        req(Method::GET, ITEM)
            .header("if-modified-since", &later)
            .body(Bytes::new())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);

    // If-Unmodified-Since before the last change fails a write.
    let r = run_with(
        Facts::default(),
        req(Method::DELETE, ITEM)
            .header("if-unmodified-since", crate::validators::http_date(UNIX_EPOCH))
            .body(Bytes::new())
            .unwrap(),
    )
    .await;
    assert_problem(&r, 412, "precondition-failed");
}

#[tokio::test]
async fn n14_gone_beats_precondition_failed() {
    let facts = Facts {
        existence: Existence::Gone,
        ..Facts::default()
    };
    let r = run_with(
        facts,
        req(Method::GET, ITEM)
            .header("if-none-match", "*")
            .body(Bytes::new())
            .unwrap(),
    )
    .await;
    assert_problem(&r, 410, "gone");
    assert_eq!(r.last(), Node::Exists);
}

#[tokio::test]
async fn n14_not_modified_list_carries_vary_accept() {
    let r = run_with(
        Facts::default(),
        req(Method::GET, ITEMS)
            .header("if-none-match", "\"v1\"")
            .body(Bytes::new())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert_eq!(r.header(header::VARY), "Accept, Accept-Encoding");
}

#[tokio::test]
async fn n13b_idempotency_key_fresh_runs_and_is_settled() {
    let facts = Facts {
        existence: Existence::Found(Found::default()),
        execute: Ok(created()),
        ..Facts::default()
    };
    let r = run_with(facts, post_keyed("\"k-1\"")).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.trace.contains(&Node::Idempotent));
    assert_eq!(r.settled, vec![("k-1".to_owned(), Some(201))]);
}

#[tokio::test]
async fn n13b_idempotency_key_failures_a_retry_may_fix_free_the_key() {
    let facts = Facts {
        existence: Existence::Found(Found::default()),
        execute: Err(Problem::new(ProblemKind::ServiceUnavailable, "db down")),
        ..Facts::default()
    };
    let r = run_with(facts, post_keyed("k-2")).await;
    assert_problem(&r, 503, "service-unavailable");
    assert_eq!(r.settled, vec![("k-2".to_owned(), None)]);

    // A conflict is an outcome: kept and replayed.
    let facts = Facts {
        existence: Existence::Found(Found::default()),
        execute: Err(Problem::new(ProblemKind::UniqueConflict, "taken")),
        ..Facts::default()
    };
    let r = run_with(facts, post_keyed("k-3")).await;
    assert_problem(&r, 409, "unique-conflict");
    assert_eq!(r.settled, vec![("k-3".to_owned(), Some(409))]);
}

#[tokio::test]
async fn n13b_idempotency_key_replay_in_flight_and_mismatch() {
    let facts = Facts {
        key_state: || {
            let mut response = http::Response::new(Bytes::from_static(b"{\"id\":1}"));
            *response.status_mut() = StatusCode::CREATED;
            response.headers_mut().insert(header::LOCATION, ITEM.parse().unwrap());
            KeyState::Completed(response)
        },
        ..Facts::default()
    };
    let r = run_with(facts, post_keyed("k")).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header(header::LOCATION), ITEM);
    assert_eq!(r.header(IDEMPOTENT_REPLAYED), "true");
    assert_eq!(r.last(), Node::Idempotent);
    assert!(r.settled.is_empty(), "a replay settles nothing");

    let facts = Facts {
        key_state: || KeyState::InFlight,
        ..Facts::default()
    };
    let r = run_with(facts, post_keyed("k")).await;
    assert_problem(&r, 409, "idempotency-key-in-flight");

    let facts = Facts {
        key_state: || KeyState::Mismatch,
        ..Facts::default()
    };
    let r = run_with(facts, post_keyed("k")).await;
    assert_problem(&r, 422, "idempotency-key-reused");
}

#[tokio::test]
async fn n11_malformed_idempotency_key_is_400() {
    for bad in ["\"unterminated", "\"\"", "has space"] {
        let r = run_with(Facts::default(), post_keyed(bad)).await;
        assert_problem(&r, 400, "invalid-header");
        assert_eq!(r.last(), Node::WellFormed, "{bad}");
    }
}

#[tokio::test]
async fn prefer_return_minimal_drops_the_body_keeps_the_validators() {
    let rep = Representation::json(&serde_json::json!({"id": 1}))
        .with_validators(Validators::new(EntityTag::strong("e2"), UNIX_EPOCH));
    let facts = Facts {
        execute: Ok(Success::Ok(rep)),
        ..Facts::default()
    };
    let r = run_with(
        facts.clone(),
        put_json(ITEM, "{}")
            .header("prefer", "return=minimal")
            .body(Bytes::from("{}"))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.body, Value::Null);
    assert_eq!(r.header(header::ETAG), "\"e2\"");
    assert_eq!(r.header(header::CONTENT_TYPE), "");
    assert_eq!(
        r.header(header::HeaderName::from_static("preference-applied")),
        "return=minimal"
    );

    // Reads ignore the preference.
    let r = run_with(
        facts,
        req(Method::GET, ITEM)
            .header("prefer", "return=minimal")
            .body(Bytes::new())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);

    // 201 keeps its Location, without a body.
    let facts = Facts {
        existence: Existence::Missing,
        execute: Ok(created()),
        ..Facts::default()
    };
    let r = run_with(
        facts,
        put_json(ITEM, "{}")
            .header("prefer", "respond-async, return=minimal")
            .body(Bytes::from("{}"))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header(header::LOCATION), ITEM);
    assert_eq!(r.header(header::ETAG), "\"e1\"");
    assert_eq!(r.body, Value::Null);
}

/// A body that must never be read: reading it fails the test.
struct Untouchable;

impl BodySource for Untouchable {
    fn read(self: Box<Self>, _: usize) -> BoxFuture<'static, Result<Bytes, BodyError>> {
        panic!("the flow read a body it should have refused first");
    }
    fn chunks(self: Box<Self>) -> Box<dyn BodyChunks> {
        Box::new(Untouchable)
    }
}

impl BodyChunks for Untouchable {
    fn next_chunk(&mut self) -> BoxFuture<'_, Option<Result<Bytes, BodyError>>> {
        panic!("the flow read a streamed body it should have refused first");
    }
}

#[tokio::test]
async fn n08_authorization_is_decided_before_the_body_is_read() {
    // A viewer's write and another tenant's write are refused from the route,
    // the method and the caller alone: the stalled body is never awaited.
    let cases = [
        (member(TenantRole::Viewer), ITEM, 403),
        (member(TenantRole::Editor), "/v1/tenants/other/items/1", 404),
    ];
    for (principal, uri, status) in cases {
        let stub = Stub {
            facts: Facts {
                principal: Some(principal),
                ..Facts::default()
            },
            table: RouteTable::new(ROUTES).unwrap(),
            seen_body: Default::default(),
            settled: Default::default(),
        };
        let (head, _) = put_json(uri, "{}").body(()).unwrap().into_parts();
        let decision = run(&stub, &head, Box::new(Untouchable), "rid").await;
        assert_eq!(decision.response.status().as_u16(), status, "{uri}");
        assert_eq!(decision.trace.last(), Some(&Node::Authorized));
        assert!(!decision.trace.contains(&Node::Body));
    }
}

#[tokio::test]
async fn n03b_host_must_be_sent_once_and_valid_on_http_1_1() {
    let no_host = Request::get(ITEM)
        .header("authorization", "Bearer good")
        .body(Bytes::new())
        .unwrap();
    let r = run_raw(Facts::default(), no_host).await;
    assert_problem(&r, 400, "invalid-header");
    assert_eq!(r.last(), Node::Target);

    let two = req(Method::GET, ITEM)
        .header("host", "b.test")
        .body(Bytes::new())
        .unwrap();
    assert_problem(&run_raw(Facts::default(), two).await, 400, "invalid-header");

    for bad in ["", "a b", "user@host", "host:port", "[::1", "a/b", "a\\b", "a\"b"] {
        let r = run_raw(
            Facts::default(),
            Request::get(ITEM)
                .header("host", bad)
                .header("authorization", "Bearer good")
                .body(Bytes::new())
                .unwrap(),
        )
        .await;
        assert_problem(&r, 400, "invalid-header");
    }
    for good in [
        "canon.test",
        "127.0.0.1:8080",
        "[::1]:80",
        "localhost",
        "a-b_c~d!$&'()*+,;=%41.test",
    ] {
        let r = run_raw(
            Facts::default(),
            Request::get(ITEM)
                .header("host", good)
                .header("authorization", "Bearer good")
                .body(Bytes::new())
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{good}");
    }
    // HTTP/1.0 has no Host requirement.
    let old = Request::get(ITEM)
        .version(http::Version::HTTP_10)
        .header("authorization", "Bearer good")
        .body(Bytes::new())
        .unwrap();
    assert_eq!(run_raw(Facts::default(), old).await.status, StatusCode::OK);
}

#[tokio::test]
async fn n03b_dot_segments_are_400_in_every_path_position() {
    for path in [
        "/v1/tenants/acme/items/..",
        "/v1/tenants/acme/items/.",
        "/v1/tenants/acme/items/%2e%2E",
        "/v1/tenants/acme/items/%2E",
        "/v1/tenants/../items/1",
        "/v1/tenants/%2e/items",
    ] {
        let r = run_with(Facts::default(), put_json(path, "{}").body(Bytes::from("{}")).unwrap()).await;
        assert_problem(&r, 400, "invalid-header");
        assert_eq!(r.last(), Node::Target, "{path}");
    }
    // A dot inside a segment, or three of them, is an ordinary character.
    for path in [
        "/v1/tenants/acme/items/a..b",
        "/v1/tenants/acme/items/...",
        "/v1/tenants/acme/items/%2e%2e%2e",
        "/v1/tenants/acme/items/.x",
        "/v1/tenants/acme/items/%2ex",
    ] {
        let r = run_with(Facts::default(), get(path)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn options_asterisk_describes_the_server() {
    let r = run_with(Facts::default(), Request::options("*").body(Bytes::new()).unwrap()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.header(header::ALLOW), "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");
    let r = run_with(Facts::default(), Request::get("*").body(Bytes::new()).unwrap()).await;
    assert_problem(&r, 400, "invalid-header");
}

#[tokio::test]
async fn options_names_the_bodies_post_and_patch_take() {
    let r = run_with(
        Facts::default(),
        req(Method::OPTIONS, "/v1/tenants/acme/items")
            .body(Bytes::new())
            .unwrap(),
    )
    .await;
    assert_eq!(r.header(HeaderName::from_static("accept-post")), "application/json");
    assert!(r.headers.get("accept-patch").is_none());
}

#[tokio::test]
async fn n07_head_on_a_planned_get_is_501_like_get() {
    static PLANNED: &[RouteSpec] = &[RouteSpec {
        name: "later",
        pattern: "/v1/later",
        methods: &[],
        planned: &[Method::GET],
        summary: "later",
        states: crate::route::States::FIXED,
    }];
    for method in [Method::GET, Method::HEAD] {
        let stub = Stub {
            facts: Facts::default(),
            table: RouteTable::new(PLANNED).unwrap(),
            seen_body: Default::default(),
            settled: Default::default(),
        };
        let (head, body) = req(method.clone(), "/v1/later")
            .body(Bytes::new())
            .unwrap()
            .into_parts();
        let d = run(&stub, &head, Box::new(body), "rid").await;
        assert_eq!(d.response.status(), StatusCode::NOT_IMPLEMENTED, "{method}");
    }
}

#[tokio::test]
async fn n15_if_match_star_does_not_satisfy_require_if_match() {
    let facts = Facts {
        existence: Existence::Found(Found {
            require_if_match: true,
            validators: Validators::new(EntityTag::strong("v1"), UNIX_EPOCH),
            ..Found::default()
        }),
        ..Facts::default()
    };
    let r = run_with(
        facts.clone(),
        put_json(ITEM, "{}")
            .header("if-match", "*")
            .body(Bytes::from("{}"))
            .unwrap(),
    )
    .await;
    assert_problem(&r, 428, "precondition-required");
    let r = run_with(
        facts,
        put_json(ITEM, "{}")
            .header("if-match", "\"v1\"")
            .body(Bytes::from("{}"))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn responses_that_depend_on_accept_say_so() {
    let r = run_with(Facts::default(), get(ITEM)).await;
    assert_eq!(r.header(header::VARY), "Accept, Accept-Encoding");
    let r = run_with(
        Facts::default(),
        req(Method::GET, ITEM)
            .header("accept", "text/csv")
            .body(Bytes::new())
            .unwrap(),
    )
    .await;
    assert_problem(&r, 406, "not-acceptable");
    assert_eq!(r.header(header::VARY), "Accept");
    // A 403 is decided before negotiation: it does not vary.
    let facts = Facts {
        principal: Some(member(TenantRole::Viewer)),
        ..Facts::default()
    };
    let r = run_with(facts, req(Method::DELETE, ITEM).body(Bytes::new()).unwrap()).await;
    assert!(r.headers.get(header::VARY).is_none());
}

/// Runs `req` and returns the raw response, for coded bodies.
async fn run_bytes(facts: Facts, req: Request<Bytes>) -> http::Response<Bytes> {
    let stub = Stub {
        facts,
        table: RouteTable::new(ROUTES).unwrap(),
        seen_body: Default::default(),
        settled: Default::default(),
    };
    let (head, body) = req.into_parts();
    run(&stub, &head, Box::new(body), "rid")
        .await
        .response
        .map(|b| b.as_full().cloned().expect("a whole body"))
}

#[tokio::test]
async fn gzip_responses_carry_their_own_strong_tag_and_validate_either_way() {
    let validators = Validators::new(EntityTag::strong("v1"), UNIX_EPOCH + Duration::from_secs(1_000_000));
    let facts = Facts {
        execute: Ok(Success::Ok(
            Representation::json(&serde_json::json!({"ok": true})).with_validators(validators),
        )),
        ..Facts::default()
    };
    let r = run_bytes(
        facts,
        req(Method::GET, ITEM)
            .header("accept-encoding", "gzip, br")
            .body(Bytes::new())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CONTENT_ENCODING], "gzip");
    assert_eq!(r.headers()[header::ETAG], "\"v1-gzip\"");
    let plain = crate::coding::decode(crate::coding::RequestCoding::Gzip, r.body().clone(), 1 << 20).unwrap();
    assert_eq!(&plain[..], br#"{"ok":true}"#);

    // Revalidating with the coded tag: 304 carrying the coded tag.
    let r = run_bytes(
        Facts::default(),
        req(Method::GET, ITEM)
            .header("accept-encoding", "gzip")
            .header("if-none-match", "\"v1-gzip\"")
            .body(Bytes::new())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(r.headers()[header::ETAG], "\"v1-gzip\"");
    // Without gzip the same tag still validates, answered with the plain tag.
    let r = run_bytes(
        Facts::default(),
        req(Method::GET, ITEM)
            .header("if-none-match", "\"v1-gzip\"")
            .body(Bytes::new())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(r.headers()[header::ETAG], "\"v1\"");
    // A write guarded by the coded tag succeeds.
    let r = run_bytes(
        Facts::default(),
        put_json(ITEM, "{}")
            .header("if-match", "\"v1-gzip\"")
            .body(Bytes::from("{}"))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn n08_request_codings_gzip_is_decoded_others_are_415() {
    let body = crate::coding::gzip(b"{\"a\":1}");
    let r = run_with(
        Facts::default(),
        req(Method::POST, "/v1/tenants/acme/items")
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .header("content-length", body.len())
            .body(body)
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.seen_body.unwrap().1, Bytes::from_static(b"{\"a\":1}"));

    let r = run_with(
        Facts::default(),
        req(Method::POST, "/v1/tenants/acme/items")
            .header("content-type", "application/json")
            .header("content-encoding", "br")
            .header("content-length", 2)
            .body(Bytes::from("{}"))
            .unwrap(),
    )
    .await;
    assert_problem(&r, 415, "unsupported-media-type");
    assert_eq!(r.header(header::ACCEPT_ENCODING), "gzip, identity");

    // The limit applies to the decoded body: a small bomb is 413.
    let bomb = crate::coding::gzip(&vec![b' '; 2 * 1024 * 1024]);
    assert!(bomb.len() < 10 * 1024);
    let r = run_with(
        Facts::default(),
        req(Method::POST, "/v1/tenants/acme/items")
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .header("content-length", bomb.len())
            .body(bomb)
            .unwrap(),
    )
    .await;
    assert_problem(&r, 413, "content-too-large");

    let r = run_with(
        Facts::default(),
        req(Method::POST, "/v1/tenants/acme/items")
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .header("content-length", 8)
            .body(Bytes::from("not gzip"))
            .unwrap(),
    )
    .await;
    assert_problem(&r, 400, "malformed-body");
}

const UPLOADS: &str = "/v1/tenants/acme/uploads";

fn upload(body: &'static str) -> http::request::Builder {
    req(Method::POST, UPLOADS)
        .header("content-type", "application/x-ndjson")
        .header("content-length", body.len())
}

#[tokio::test]
async fn n09_a_streamed_body_reaches_the_action_whole_and_unread_before() {
    let body = "{\"a\":1}\n{\"a\":2}\n";
    let facts = Facts {
        execute: Ok(Success::NoContent),
        ..Facts::default()
    };
    let r = run_with(facts, upload(body).body(Bytes::from_static(body.as_bytes())).unwrap()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    // parse saw no body; the action read all of it, as NDJSON.
    assert_eq!(
        r.seen_body,
        Some((MediaType::Ndjson, Bytes::from_static(body.as_bytes())))
    );
    assert_eq!(r.last(), Node::Execute);
}

#[tokio::test]
async fn n09_a_streamed_body_is_refused_before_the_action_for_length_and_coding() {
    // A declared length over the stream limit: 413 at the Body node.
    let facts = Facts {
        execute: Ok(Success::NoContent),
        limits: Limits {
            max_stream_bytes: 4,
            ..Limits::default()
        },
        ..Facts::default()
    };
    let r = run_with(
        facts.clone(),
        upload("12345").body(Bytes::from_static(b"12345")).unwrap(),
    )
    .await;
    assert_problem(&r, 413, "content-too-large");
    assert_eq!(r.last(), Node::Body);
    assert!(r.seen_body.is_none());
    // Without a declared length (chunked), the stream stops the action
    // once it passes the limit.
    let r = run_with(
        facts.clone(),
        req(Method::POST, UPLOADS)
            .header("content-type", "application/x-ndjson")
            .header("transfer-encoding", "chunked")
            .body(Bytes::from_static(b"12345"))
            .unwrap(),
    )
    .await;
    assert_problem(&r, 413, "content-too-large");
    assert_eq!(r.last(), Node::Execute);
    // A content coding: 415 naming identity.
    let r = run_with(
        facts,
        upload("x")
            .header("content-encoding", "gzip")
            .body(Bytes::from_static(b"x"))
            .unwrap(),
    )
    .await;
    assert_problem(&r, 415, "unsupported-media-type");
    assert_eq!(r.header(header::ACCEPT_ENCODING), "identity");
}

#[tokio::test]
async fn n09_a_streamed_body_is_never_touched_when_a_later_node_refuses() {
    // A viewer may not upload: 403 before the body, which must stay unread.
    let facts = Facts {
        principal: Some(member(TenantRole::Viewer)),
        execute: Ok(Success::NoContent),
        ..Facts::default()
    };
    let stub = Stub {
        facts,
        table: RouteTable::new(ROUTES).unwrap(),
        seen_body: Arc::new(Mutex::new(None)),
        settled: Arc::new(Mutex::new(Vec::new())),
    };
    let (head, ()) = upload("{}").body(()).unwrap().into_parts();
    let decision = run(&stub, &head, Box::new(Untouchable), "rid").await;
    assert_eq!(decision.response.status(), StatusCode::FORBIDDEN);
    // A precondition that fails (412) also leaves the stream unread: the
    // resource gets it only at Execute.
    let facts = Facts {
        execute: Ok(Success::NoContent),
        existence: Existence::Missing,
        ..Facts::default()
    };
    let stub = Stub {
        facts,
        table: RouteTable::new(ROUTES).unwrap(),
        seen_body: Arc::new(Mutex::new(None)),
        settled: Arc::new(Mutex::new(Vec::new())),
    };
    let (head, ()) = upload("{}").body(()).unwrap().into_parts();
    let decision = run(&stub, &head, Box::new(Untouchable), "rid").await;
    assert_eq!(decision.response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn n16_accepted_work_is_202_with_location_and_retry_after() {
    let facts = Facts {
        execute: Ok(Success::Accepted {
            location: "/v1/tenants/acme/jobs/j1".into(),
            representation: Representation::json(&serde_json::json!({"id": "j1", "status": "queued"})),
        }),
        ..Facts::default()
    };
    let r = run_with(facts, req(Method::DELETE, ITEM).body(Bytes::new()).unwrap()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(r.header(header::LOCATION), "/v1/tenants/acme/jobs/j1");
    assert_eq!(r.header(header::RETRY_AFTER), "1");
    assert_eq!(r.body["status"], "queued");
}

#[tokio::test]
async fn n13_finished_work_is_303_for_reads_only() {
    let facts = Facts {
        existence: Existence::SeeOther("/v1/tenants/acme/items/1/result".into()),
        execute: Ok(Success::NoContent),
        ..Facts::default()
    };
    let r = run_with(facts.clone(), get(ITEM)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.header(header::LOCATION), "/v1/tenants/acme/items/1/result");
    assert_eq!(r.last(), Node::Exists);
    // A write reaches its action (cancelling a finished job is the
    // resource's own answer).
    let r = run_with(facts, req(Method::DELETE, ITEM).body(Bytes::new()).unwrap()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_resource_with_one_media_type_known_once_loaded_is_406_when_accept_refuses_it() {
    let facts = Facts {
        existence: Existence::Found(Found {
            media: Some(MediaType::Csv),
            ..Found::default()
        }),
        ..Facts::default()
    };
    let r = run_with(
        facts.clone(),
        req(Method::GET, ITEM)
            .header("accept", "application/json")
            .body(Bytes::new())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE);
    assert_eq!(r.body["acceptable"], serde_json::json!(["text/csv"]));
    assert!(r.trace.contains(&Node::Exists));

    let r = run_with(
        facts,
        req(Method::GET, ITEM)
            .header("accept", "text/csv, application/json;q=0.1")
            .body(Bytes::new())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
}

fn burst(remaining: u64, reset: u64) -> PolicyStanding {
    PolicyStanding {
        name: LimitName::Burst,
        quota: 10,
        window: 2,
        remaining,
        reset,
    }
}

fn daily(remaining: u64, reset: u64) -> PolicyStanding {
    PolicyStanding {
        name: LimitName::Daily,
        quota: 1000,
        window: 86_400,
        remaining,
        reset,
    }
}

#[tokio::test]
async fn n05b_rate_limited_is_429_naming_the_limit_with_retry_after() {
    let facts = Facts {
        rate: RateVerdict::Refused {
            standing: Standing::two(burst(0, 2), daily(990, 40_000)),
            limit: LimitName::Burst,
            retry_after: 1,
        },
        ..Facts::default()
    };
    let r = run_with(facts, get(ITEM)).await;
    assert_problem(&r, 429, "rate-limited");
    assert_eq!(r.last(), Node::RateLimit);
    assert_eq!(r.header(header::RETRY_AFTER), "1");
    assert_eq!(r.body["limit"], "burst");
    assert_eq!(r.body["retry_after"], 1);
    assert_eq!(r.body["quota"], 10);
    assert_eq!(
        r.header(crate::ratelimit::RATELIMIT_POLICY),
        "\"burst\";q=10;w=2, \"daily\";q=1000;w=86400"
    );
    assert_eq!(r.header(crate::ratelimit::RATELIMIT), "\"burst\";r=0;t=2");
}

#[tokio::test]
async fn n05b_daily_quota_is_429_until_midnight() {
    let facts = Facts {
        rate: RateVerdict::Refused {
            standing: Standing::two(burst(9, 1), daily(0, 3_600)),
            limit: LimitName::Daily,
            retry_after: 3_600,
        },
        ..Facts::default()
    };
    let r = run_with(facts, get(ITEM)).await;
    assert_problem(&r, 429, "quota-exhausted");
    assert_eq!(r.header(header::RETRY_AFTER), "3600");
    assert_eq!(r.body["limit"], "daily");
    assert_eq!(r.header(crate::ratelimit::RATELIMIT), "\"daily\";r=0;t=3600");
}

#[tokio::test]
async fn n05b_a_refusal_comes_before_routing_and_is_never_zero_seconds() {
    // Even a path with no route: the limit is the caller's, not the route's.
    let facts = Facts {
        rate: RateVerdict::Refused {
            standing: Standing::default(),
            limit: LimitName::InFlight,
            retry_after: 0,
        },
        ..Facts::default()
    };
    let r = run_with(facts, get("/v1/tenants/acme/nothing")).await;
    assert_problem(&r, 429, "too-many-in-flight");
    assert_eq!(r.header(header::RETRY_AFTER), "1");
    assert!(!r.trace.contains(&Node::RouteExists));
}

#[tokio::test]
async fn n05b_the_fields_go_on_every_response_once_the_caller_is_known() {
    let allowed = Facts {
        rate: RateVerdict::Allowed(Standing::two(burst(9, 1), daily(500, 7))),
        ..Facts::default()
    };
    // 200, 404 (no route), 404 (missing), 304, 405: all carry them.
    let missing = Facts {
        existence: Existence::Missing,
        ..allowed.clone()
    };
    let cases = [
        (allowed.clone(), get(ITEM), 200),
        (allowed.clone(), get("/v1/tenants/acme/nothing"), 404),
        (missing, get(ITEM), 404),
        (
            allowed.clone(),
            req(Method::GET, ITEM)
                .header("if-none-match", "\"v1\"")
                .body(Bytes::new())
                .unwrap(),
            304,
        ),
        (
            allowed.clone(),
            req(Method::POST, ITEM).body(Bytes::new()).unwrap(),
            405,
        ),
    ];
    for (facts, request, status) in cases {
        let r = run_with(facts, request).await;
        assert_eq!(r.status.as_u16(), status);
        assert_eq!(
            r.header(crate::ratelimit::RATELIMIT_POLICY),
            "\"burst\";q=10;w=2, \"daily\";q=1000;w=86400",
            "{status}"
        );
        // 9/10 of the burst vs 500/1000 of the day: the day is closer.
        assert_eq!(r.header(crate::ratelimit::RATELIMIT), "\"daily\";r=500;t=7");
    }
    // Public routes and responses decided before the caller is known carry none.
    let r = run_with(allowed.clone(), Request::get("/healthz").body(Bytes::new()).unwrap()).await;
    assert!(r.headers.get(crate::ratelimit::RATELIMIT).is_none());
    let r = run_with(allowed, Request::get(ITEM).body(Bytes::new()).unwrap()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.headers.get(crate::ratelimit::RATELIMIT_POLICY).is_none());
}

#[tokio::test]
async fn n05_failed_auth_limiting_screens_tokens_before_they_are_checked() {
    let standing = Standing::one(PolicyStanding {
        name: LimitName::AuthFailures,
        quota: 5,
        window: 60,
        remaining: 0,
        reset: 12,
    });
    // Refused at the screen: 429, and the token is not checked at all (a
    // good one would otherwise pass: the screen decides).
    let facts = Facts {
        screen: RateVerdict::Refused {
            standing,
            limit: LimitName::AuthFailures,
            retry_after: 12,
        },
        ..Facts::default()
    };
    let r = run_with(facts, get(ITEM)).await;
    assert_problem(&r, 429, "auth-failures-limited");
    assert_eq!(r.header(header::RETRY_AFTER), "12");
    assert_eq!(r.last(), Node::Authenticated);
    assert_eq!(r.header(crate::ratelimit::RATELIMIT), "\"auth-failures\";r=0;t=12");
    // A screen that passes, then an unknown token: 401 with the standing.
    let facts = Facts {
        screen: RateVerdict::Allowed(Standing::default()),
        failed: RateVerdict::Allowed(Standing::one(PolicyStanding {
            remaining: 3,
            ..standing.policies[0].unwrap()
        })),
        ..Facts::default()
    };
    let r = run_with(
        facts.clone(),
        Request::get(ITEM)
            .header("authorization", "Bearer bad")
            .body(Bytes::new())
            .unwrap(),
    )
    .await;
    assert_problem(&r, 401, "invalid-token");
    assert_eq!(r.header(crate::ratelimit::RATELIMIT), "\"auth-failures\";r=3;t=12");
    // A good token is not counted as a failure.
    let r = run_with(facts, get(ITEM)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers.get(crate::ratelimit::RATELIMIT).is_none());
}

#[tokio::test]
async fn n05b_a_replayed_response_carries_the_current_standing() {
    fn completed() -> KeyState {
        let mut r = http::Response::new(Bytes::from_static(b"{}"));
        *r.status_mut() = StatusCode::CREATED;
        KeyState::Completed(r)
    }
    let facts = Facts {
        key_state: completed,
        rate: RateVerdict::Allowed(Standing::one(burst(4, 1))),
        ..Facts::default()
    };
    let r = run_with(facts, post_keyed("\"k-9\"")).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header(IDEMPOTENT_REPLAYED), "true");
    assert_eq!(r.header(crate::ratelimit::RATELIMIT), "\"burst\";r=4;t=1");
}

#[test]
fn a_429_frees_an_idempotency_key() {
    assert!(!is_replayable(StatusCode::TOO_MANY_REQUESTS));
}
