//! The decision flow: one ordered pipeline that decides every response's
//! status (CONTRACT.md §3).
//!
//! [`run`] walks the nodes of [`Node`] in order. Each node asks the
//! [`Service`] or the [`Resource`] for a fact and either passes or halts with
//! a problem from the catalogue. Handlers never choose a status: they supply
//! facts (is the method known, who is calling, does the resource exist, what
//! are its validators) and, at the end, a [`Success`] whose variant fixes the
//! 2xx status. The flow records every node it passed, so a test can assert the
//! path as well as the outcome.
//!
//! The flow does no IO itself. Reading the body, authenticating and loading
//! the resource are facts supplied through the traits below.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use serde_json::Value;

use crate::access::{Access, Principal, authorize};
use crate::body::{Body, Streamed};
use crate::catalogue::ProblemKind;
use crate::coding::{self, DecodeError, RequestCoding};
use crate::media::{self, ContentTypeError, MediaType};
use crate::problem::Problem;
use crate::ratelimit::{RATELIMIT, RATELIMIT_POLICY, RateVerdict, Standing};
use crate::route::{Guard, MethodSpec, Params, RouteSpec, RouteTable};
use crate::validators::{self, Conditions, EntityTag, PreconditionOutcome, Validators};

/// A boxed, sendable future, as returned by the fact-supplying traits.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A fact that is usually known at once: a future that is ready without a
/// box, and boxed only when the answer must wait (a store read on a cache
/// miss, a limiter shared over the network). Every request asks for its
/// caller, its standing and its screening; boxing answers that were ready
/// all along cost an allocation each.
pub enum Answer<'a, T> {
    /// Known at once.
    Ready(std::future::Ready<T>),
    /// To be waited for.
    Later(BoxFuture<'a, T>),
}

impl<'a, T> Answer<'a, T> {
    /// An answer known now.
    pub fn ready(value: T) -> Self {
        Answer::Ready(std::future::ready(value))
    }

    /// An answer `future` will give.
    pub fn later(future: impl Future<Output = T> + Send + 'a) -> Self {
        Answer::Later(Box::pin(future))
    }
}

impl<T> Future for Answer<'_, T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<T> {
        // Both variants are `Unpin`: a `Ready` holds a value, a `Later` a box.
        match self.get_mut() {
            Answer::Ready(ready) => Pin::new(ready).poll(cx),
            Answer::Later(future) => future.as_mut().poll(cx),
        }
    }
}

/// The nodes of the flow, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    /// 503: maintenance, overload, database down.
    ServiceAvailable,
    /// 501: a method Canon does not recognise (TRACE and CONNECT are
    /// recognised and refused by every route: 405).
    KnownMethod,
    /// 414: request target longer than the limit.
    UriLength,
    /// 431: header section larger than the limit.
    HeaderSize,
    /// 400: the request target and `Host` are well-formed (RFC 9112 §3.2,
    /// §3.2.4): one valid `Host` on HTTP/1.1, `*` only with OPTIONS, no dot
    /// segments (which every URL resolver would rewrite away).
    Target,
    /// 401: credentials, for `/v1` paths.
    Authenticated,
    /// 429: rate limits and quotas.
    RateLimit,
    /// 404: no route for the path.
    RouteExists,
    /// 204 for OPTIONS.
    Options,
    /// 405 (or 501 for a planned method): the route does not support the method.
    MethodAllowed,
    /// 403 (or 404 for another tenant): the caller's role allows the action.
    /// Decided from the route, the method and the caller alone, before any
    /// body is read: a caller who may not write never holds a slot for one.
    Authorized,
    /// 415: the body's media type and content coding.
    ContentType,
    /// 413 and 408: the body's size (after decoding) and arrival.
    Body,
    /// 406: something in `Accept` can be produced.
    Acceptable,
    /// 400: headers, query and body are well-formed.
    WellFormed,
    /// 409, 422 or a replay: a POST's `Idempotency-Key` was seen before.
    Idempotent,
    /// 404, 410, 301, 307, 308: the resource's existence.
    Exists,
    /// 412, 304: conditional request headers.
    Preconditions,
    /// 428: the resource demands `If-Match`.
    PreconditionRequired,
    /// 423: another caller holds the lock.
    Unlocked,
    /// 2xx, or 409/400 from the action itself.
    Execute,
}

/// Whether the service can take requests now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// Serving.
    Available,
    /// Not serving: answer 503 with `Retry-After`.
    Unavailable {
        /// Seconds the client should wait.
        retry_after: u64,
        /// Why, for the problem's detail.
        reason: String,
    },
}

/// The request exceeds a limit the flow enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest request target accepted (414 beyond).
    pub max_uri_bytes: usize,
    /// Largest header section accepted, names and values (431 beyond).
    pub max_header_bytes: usize,
    /// Largest body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Largest streamed body accepted, for methods that stream
    /// (`MethodSpec::streams`; 413 beyond).
    pub max_stream_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_uri_bytes: 8 * 1024,
            max_header_bytes: 16 * 1024,
            max_body_bytes: 1024 * 1024,
            max_stream_bytes: 10 << 30,
        }
    }
}

/// Why a body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// It is longer than the limit (413).
    TooLarge,
    /// It did not arrive in time (408).
    TimedOut,
    /// The connection failed while reading it (400).
    Aborted,
}

/// The request body, read only when the flow decides to.
pub trait BodySource: Send {
    /// Reads the whole body, failing once more than `limit` bytes arrive.
    fn read(self: Box<Self>, limit: usize) -> BoxFuture<'static, Result<Bytes, BodyError>>;
    /// The body as chunks, as they arrive (for methods that stream).
    fn chunks(self: Box<Self>) -> Box<dyn BodyChunks>;
}

/// A body arriving chunk by chunk.
pub trait BodyChunks: Send {
    /// The next chunk; `None` at the end.
    fn next_chunk(&mut self) -> BoxFuture<'_, Option<Result<Bytes, BodyError>>>;
}

impl BodyChunks for Option<Bytes> {
    fn next_chunk(&mut self) -> BoxFuture<'_, Option<Result<Bytes, BodyError>>> {
        let chunk = self.take().filter(|b| !b.is_empty()).map(Ok);
        Box::pin(async move { chunk })
    }
}

/// A streamed request body as a resource receives it (`Resource::take_body`),
/// once every node before `Execute` has passed. It enforces the stream
/// limit itself, and turns what can go wrong while it arrives into the
/// problem the flow answers with (413, 408, 400), so that status is decided
/// here, in one place, and not by each resource.
pub struct StreamedBody {
    /// Its media type; `None` for a body relayed to another server as it
    /// came ([`crate::route::MethodSpec::forwards`]), whose type is the
    /// client's business.
    pub media: Option<MediaType>,
    chunks: Box<dyn BodyChunks>,
    limit: u64,
    received: u64,
}

impl std::fmt::Debug for StreamedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamedBody")
            .field("media", &self.media)
            .field("limit", &self.limit)
            .field("received", &self.received)
            .finish()
    }
}

impl StreamedBody {
    /// Over `chunks`, refusing more than `limit` bytes.
    pub fn new(media: MediaType, chunks: Box<dyn BodyChunks>, limit: u64) -> Self {
        Self {
            media: Some(media),
            chunks,
            limit,
            received: 0,
        }
    }

    /// A body to relay as it comes, whatever its type and coding, refusing
    /// more than `limit` bytes.
    pub fn forwarded(chunks: Box<dyn BodyChunks>, limit: u64) -> Self {
        Self {
            media: None,
            chunks,
            limit,
            received: 0,
        }
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The next chunk, `None` at the end, or the problem that ends the body.
    pub async fn next(&mut self) -> Option<Result<Bytes, Problem>> {
        let chunk = match self.chunks.next_chunk().await? {
            Ok(chunk) => chunk,
            Err(e) => return Some(Err(body_problem(e, self.limit))),
        };
        self.received += chunk.len() as u64;
        if self.received > self.limit {
            return Some(Err(body_problem(BodyError::TooLarge, self.limit)));
        }
        Some(Ok(chunk))
    }
}

/// The problem a body that could not be read answers with.
fn body_problem(error: BodyError, limit: u64) -> Problem {
    match error {
        BodyError::TooLarge => Problem::new(
            ProblemKind::ContentTooLarge,
            format!("The body is larger than {limit} bytes."),
        )
        .with("max_bytes", limit),
        BodyError::TimedOut => Problem::new(ProblemKind::RequestTimeout, "The body did not arrive in time."),
        BodyError::Aborted => Problem::new(ProblemKind::MalformedBody, "The body could not be read to its end."),
    }
}

impl BodySource for Bytes {
    fn read(self: Box<Self>, limit: usize) -> BoxFuture<'static, Result<Bytes, BodyError>> {
        let body = *self;
        Box::pin(async move {
            if body.len() > limit {
                Err(BodyError::TooLarge)
            } else {
                Ok(body)
            }
        })
    }
    fn chunks(self: Box<Self>) -> Box<dyn BodyChunks> {
        Box::new(Some(*self))
    }
}

/// Service-wide facts: availability, limits, routes and authentication.
pub trait Service: Send + Sync {
    /// The route table.
    fn routes(&self) -> &RouteTable;
    /// The limits to enforce.
    fn limits(&self) -> Limits;
    /// Whether requests can be taken now.
    fn availability(&self) -> Availability;
    /// The principal holding `token`; `Ok(None)` when the token is unknown,
    /// revoked or expired.
    fn authenticate<'a>(&'a self, token: &'a str) -> Answer<'a, Result<Option<Principal>, Problem>>;
    /// The current time, for judging dates the client sent (a future
    /// `If-Modified-Since` is ignored).
    fn now(&self) -> std::time::SystemTime {
        std::time::SystemTime::now()
    }
    /// The handler for one request to `route`.
    fn resource(&self, route: &'static RouteSpec, params: Params, principal: Option<Principal>) -> Box<dyn Resource>;
    /// Claims a POST's idempotency key, or says what became of the request
    /// that used it first. Without a ledger every key is fresh.
    fn claim_key<'a>(&'a self, request: Keyed<'a>) -> BoxFuture<'a, Result<KeyState, Problem>> {
        let _ = request;
        Box::pin(async { Ok(KeyState::Fresh) })
    }
    /// The `RateLimit` node's fact: takes one request from the limits of
    /// `principal` (its key's burst, its tenant's daily quota, its share of
    /// the requests in flight), all or nothing. A refusal takes nothing.
    /// Without a limiter nothing is limited.
    fn rate_limit<'a>(&'a self, principal: &'a Principal) -> Answer<'a, Result<RateVerdict, Problem>> {
        let _ = principal;
        Answer::ready(Ok(RateVerdict::Unlimited))
    }
    /// Failed-auth limiting, before `token` is checked: `Refused` when the
    /// client has failed too often lately and `token` is not one that
    /// already worked from where it calls. Nothing is taken.
    fn screen_token<'a>(&'a self, token: &'a str) -> Answer<'a, RateVerdict> {
        let _ = token;
        Answer::ready(RateVerdict::Unlimited)
    }
    /// Counts a failed authentication (an unknown token) against the
    /// client; its standing afterwards.
    fn token_failed(&self) -> Answer<'_, RateVerdict> {
        Answer::ready(RateVerdict::Unlimited)
    }
    /// Records the response to replay for a claimed key, or frees the key
    /// when `response` is `None` (the outcome should not be replayed).
    fn settle_key<'a>(&'a self, request: Keyed<'a>, response: Option<&'a Response<Bytes>>) -> BoxFuture<'a, ()> {
        let _ = (request, response);
        Box::pin(async {})
    }
}

/// A POST carrying an `Idempotency-Key`, as the ledger needs it.
#[derive(Debug, Clone, Copy)]
pub struct Keyed<'a> {
    /// The key the client sent.
    pub key: &'a str,
    /// Who sent it: keys are scoped to the caller.
    pub principal: &'a Principal,
    /// The request line and headers.
    pub head: &'a Parts,
    /// The body, to tell a retry from a different request.
    pub body: &'a [u8],
}

/// What the ledger knows of an idempotency key.
#[derive(Debug)]
pub enum KeyState {
    /// First use (now claimed): run the request.
    Fresh,
    /// The first request with the key is still running (409).
    InFlight,
    /// The key was used for a different request (422).
    Mismatch,
    /// The first request finished: send its response again.
    Completed(Response<Bytes>),
}

/// Whether a response to a keyed POST is kept for replay. Outcomes a retry
/// may change (timeouts, rate limits, server failures) free the key instead.
pub fn is_replayable(status: StatusCode) -> bool {
    !(status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS)
}

/// The header naming a POST's idempotency key.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Set on a response replayed for an idempotency key.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Reads `Idempotency-Key`: an RFC 8941 string (`"…"`) or, leniently, a bare
/// token; 1 to 255 visible ASCII characters.
pub fn idempotency_key(headers: &http::HeaderMap) -> Result<Option<String>, &'static str> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err("Idempotency-Key must be sent once");
    }
    let raw = value
        .to_str()
        .map_err(|_| "Idempotency-Key must be visible ASCII")?
        .trim();
    let key = match raw.strip_prefix('"') {
        Some(rest) => rest
            .strip_suffix('"')
            .ok_or("Idempotency-Key has an unterminated quote")?,
        None => raw,
    };
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') {
        return Err("Idempotency-Key must be 1 to 255 visible ASCII characters, without quotes or backslashes");
    }
    Ok(Some(key.to_owned()))
}

/// The `name=value` preferences of the request's `Prefer` fields (RFC
/// 7240), in order: names as sent, values without their quotes; parameters
/// after `;` and preferences without a value are left out.
pub fn preferences(head: &Parts) -> impl Iterator<Item = (&str, &str)> {
    head.headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|p| {
            let (name, value) = p.split(';').next()?.split_once('=')?;
            Some((name.trim(), value.trim().trim_matches('"')))
        })
}

/// Whether the request asks for `Prefer: return=minimal`.
fn prefers_minimal(head: &Parts) -> bool {
    preferences(head).any(|(name, value)| name.eq_ignore_ascii_case("return") && value.eq_ignore_ascii_case("minimal"))
}

/// What a resource is given at the well-formedness node.
#[derive(Debug)]
pub struct Input<'a> {
    /// The request line and headers.
    pub head: &'a Parts,
    /// The body and its media type, when the method takes one and one was sent.
    pub body: Option<(MediaType, Bytes)>,
}

/// Per-request facts about the addressed resource, and the action itself.
pub trait Resource: Send {
    /// Checks and keeps the query and body (400 on failure). Called once.
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem>;
    /// Says whether the resource exists, and its validators.
    fn load(&mut self) -> BoxFuture<'_, Result<Existence, Problem>>;
    /// Performs the method. `produce` is the negotiated media type when the
    /// method answers with a body.
    fn execute(&mut self, produce: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>>;
    /// Receives the body of a method that streams (`MethodSpec::streams`),
    /// just before `execute`, once every other node has passed: nothing of
    /// it has been read yet. Resources that do not stream never get one.
    fn take_body(&mut self, body: StreamedBody) {
        drop(body);
    }
}

/// A resource's state as far as the flow needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// Its validators (for 304/412).
    pub validators: Validators,
    /// Writes must carry `If-Match` (428).
    pub require_if_match: bool,
    /// Held by another caller (423).
    pub locked_by_other: Option<LockInfo>,
    /// The `Cache-Control` its representation carries, repeated on a 304
    /// (RFC 9110 §15.4.5); `None` means `private, no-cache`.
    pub cache_control: Option<&'static str>,
    /// The one media type this resource is available in, when only loading
    /// it tells (a job's result is JSON, CSV or NDJSON by the job): the flow
    /// answers 406 when `Accept` refuses it, and produces it otherwise.
    /// `None`: the route's `produces` list decides alone.
    pub media: Option<MediaType>,
}

/// A lock held by someone other than the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    /// Who holds it.
    pub holder: String,
    /// When it expires.
    pub expires_at: String,
}

impl LockInfo {
    /// The 423 problem naming the holder and the expiry.
    pub fn problem(&self) -> Problem {
        Problem::new(
            ProblemKind::Locked,
            format!(
                "The resource is locked by {} until {}; retry after that, or ask the holder to release it.",
                self.holder, self.expires_at
            ),
        )
        .with(
            "lock",
            serde_json::json!({"holder": self.holder, "expires_at": self.expires_at}),
        )
    }
}

/// Whether the addressed resource exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Existence {
    /// It exists.
    Found(Found),
    /// It never existed (or its tombstone expired).
    Missing,
    /// It was deleted and its tombstone is still kept.
    Gone,
    /// What it would live in (a tenant, a collection, a record) does not
    /// exist: 404 for every method, even one that could create it (a PUT
    /// under a missing collection is 404, not 201, nor 412 for `If-Match`).
    ContainerMissing,
    /// What it would live in was deleted: 410 for every method.
    ContainerGone,
    /// It lives at another URL for good (301 for GET/HEAD, 308 otherwise).
    Moved(String),
    /// It is reached through another URL for now (307).
    Redirect(String),
    /// It is a finished piece of work whose outcome lives at another URL:
    /// 303 See Other for GET and HEAD (RFC 9110 §15.4.4). Other methods
    /// are answered as for [`Existence::Found`] with default facts.
    SeeOther(String),
}

/// A representation to send.
#[derive(Debug)]
pub struct Representation {
    /// Its media type.
    pub media: MediaType,
    /// The encoded body: whole, or streamed (see [`crate::body`]).
    pub body: Body,
    /// Validators of the representation.
    pub validators: Validators,
    /// `Cache-Control`, when the representation carries one.
    pub cache_control: Option<&'static str>,
    /// `Content-Location`, when the body represents another URL (PUT/PATCH).
    pub content_location: Option<String>,
    /// `Link` header values (`<…>; rel="next"`).
    pub links: Vec<String>,
    /// `Vary` header value.
    pub vary: Option<&'static str>,
    /// `Content-Security-Policy`, for HTML that runs scripts.
    pub content_security_policy: Option<&'static str>,
    /// `Retry-After` in seconds: when to look again (a job still running).
    pub retry_after: Option<u64>,
    /// `Content-Disposition`, for a file meant to be saved (an export).
    pub content_disposition: Option<String>,
    /// A preference of the request's `Prefer` the resource honoured (RFC
    /// 7240 §3), such as `wait=5` on a job's monitor; `return=minimal` is
    /// the flow's own and added beside it.
    pub preference_applied: Option<String>,
    /// Whether the body is a secret shown once (see
    /// [`Representation::shown_once`]). Its own fact, not read from
    /// `Cache-Control`: other bodies (a job's) are `no-store` too, because
    /// they change, and a replay must show them whole.
    pub(crate) shown_once: bool,
}

impl Representation {
    /// A JSON representation of `value`.
    pub fn json(value: &Value) -> Self {
        Self::new(
            MediaType::Json,
            Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
        )
    }

    /// A representation of `body` as `media`.
    pub fn new(media: MediaType, body: Bytes) -> Self {
        Self::of(media, Body::Full(body))
    }

    /// A representation streamed from `body` as `media`: sent as it is
    /// produced, never held whole (exports, job results).
    pub fn streamed(media: MediaType, body: Streamed) -> Self {
        Self::of(media, Body::Streamed(body))
    }

    fn of(media: MediaType, body: Body) -> Self {
        Self {
            media,
            body,
            validators: Validators::default(),
            cache_control: None,
            content_location: None,
            links: Vec::new(),
            vary: None,
            content_security_policy: None,
            retry_after: None,
            content_disposition: None,
            preference_applied: None,
            shown_once: false,
        }
    }

    /// With validators (and the `Cache-Control` records carry).
    pub fn with_validators(mut self, validators: Validators) -> Self {
        self.validators = validators;
        self.cache_control = Some(REVALIDATE_PRIVATELY);
        self
    }

    /// Marks the body as a secret shown once (a new API key's token): no
    /// cache may keep it (`Cache-Control: no-store`), the response carries
    /// [`ShownOnce`] so the idempotency ledger keeps it without the secret,
    /// and `Prefer: return=minimal` is not applied, because this body is the
    /// only copy of the secret there will ever be.
    pub fn shown_once(mut self) -> Self {
        self.cache_control = Some(NO_STORE);
        self.shown_once = true;
        self
    }

    /// Whether this is a secret shown once (see [`Representation::shown_once`]).
    pub fn is_shown_once(&self) -> bool {
        self.shown_once
    }
}

/// The response extension that marks a body holding a secret shown once
/// ([`Representation::shown_once`]): whoever keeps a copy of the response
/// (the idempotency ledger) must keep it without the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShownOnce;

/// `Cache-Control` of a representation no cache may keep.
pub const NO_STORE: &str = "no-store";

/// The `Cache-Control` of a representation with validators, and of a 304
/// unless the resource says otherwise: any cache may keep it, but must
/// revalidate it (with the validators) before each use, and no shared cache
/// may keep it (it is a tenant's, sent with credentials).
pub const REVALIDATE_PRIVATELY: &str = "private, no-cache";

/// How an action succeeded. The variant fixes the 2xx status.
#[derive(Debug)]
pub enum Success {
    /// 200 with a representation.
    Ok(Representation),
    /// 201: created at `location`.
    Created {
        /// Absolute path of the new resource.
        location: String,
        /// Its representation.
        representation: Representation,
    },
    /// 204.
    NoContent,
    /// 207: a batch ran; the body holds each operation's own status.
    MultiStatus(Representation),
    /// 202: the work was accepted as a job at `location` (the monitor), to
    /// be polled after `retry_after` seconds; the body is the job.
    Accepted {
        /// The job's monitor.
        location: String,
        /// The job.
        representation: Representation,
    },
    /// Another server's answer (a device's, through the gateway), relayed
    /// with its own status, headers and body: only a method that forwards
    /// ([`crate::route::MethodSpec::forwards`]) answers this. The flow adds
    /// the caller's rate-limit fields and nothing else.
    Forwarded(Response<Body>),
}

/// The flow's answer: the response and the nodes passed to reach it.
#[derive(Debug)]
pub struct Decision {
    /// The response to send (the server adds `X-Request-Id`).
    pub response: Response<Body>,
    /// The nodes passed, in order; the last one decided.
    pub trace: Vec<Node>,
    /// The route's pattern (`/v1/tenants/{tenant}`), when the path matched
    /// one: what logs and metrics name a request by, never the raw path.
    pub route: Option<&'static str>,
    /// The tenant the request acted in, when known: the caller's own, or
    /// the one an authenticated operator named in the path.
    pub tenant: Option<std::sync::Arc<str>>,
}

/// Methods Canon implements somewhere; `OPTIONS *` lists them.
pub const KNOWN_METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

/// Registered methods Canon recognises and refuses on every resource:
/// TRACE and CONNECT (RFC 9110) and QUERY (the safe method with a body, in
/// the IANA registry) reach their route and are answered 405 with `Allow`
/// (RFC 9110 §15.5.6: recognised, not allowed for the target), as nginx or
/// Apache answer TRACE when it is switched off. Other methods are 501.
fn refused(method: &Method) -> bool {
    *method == Method::TRACE || *method == Method::CONNECT || method.as_str() == "QUERY"
}

/// The realm in `WWW-Authenticate`.
const REALM: &str = "Bearer realm=\"canon\"";

/// A halt: the problem and the headers it implies.
struct Halt {
    problem: Box<Problem>,
    headers: Vec<(HeaderName, String)>,
}

impl From<Problem> for Halt {
    fn from(problem: Problem) -> Self {
        Halt {
            problem: Box::new(problem),
            headers: Vec::new(),
        }
    }
}

impl Halt {
    fn with(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// One flow run: the request and the nodes passed so far.
struct Walk<'r> {
    head: &'r Parts,
    request_id: &'r str,
    trace: Vec<Node>,
    /// The route and method produce a body, so the response depends on
    /// `Accept` and `Accept-Encoding` (set once the flow negotiates).
    negotiated: bool,
    /// The caller's standing against its limits, once known: its fields
    /// go on the response, whatever decided it.
    standing: Option<Standing>,
    /// See [`Decision::route`].
    route: Option<&'static str>,
    /// See [`Decision::tenant`].
    tenant: Option<std::sync::Arc<str>>,
}

impl Walk<'_> {
    fn visit(&mut self, node: Node) {
        self.trace.push(node);
    }
}

/// Runs the flow for one request and returns the response.
///
/// `request_id` goes into problem bodies; the caller sets the header.
pub async fn run(service: &dyn Service, head: &Parts, body: Box<dyn BodySource>, request_id: &str) -> Decision {
    let mut walk = Walk {
        head,
        request_id,
        trace: Vec::with_capacity(20),
        negotiated: false,
        standing: None,
        route: None,
        tenant: None,
    };
    let mut response = respond(head, request_id, decide(service, &mut walk, body).await);
    if walk.negotiated {
        negotiated(head, &mut response);
    }
    // Here, after every node, so no status can forget them: 2xx, 304, a
    // replay, every problem decided once the caller is known.
    if let Some(standing) = &walk.standing {
        advertise(standing, &mut response);
    }
    Decision {
        response,
        trace: walk.trace,
        route: walk.route,
        tenant: walk.tenant,
    }
}

/// The halt of the ServiceAvailable node: 503, and when to come back.
fn unavailable(retry_after: u64, reason: impl Into<String>) -> Halt {
    // The body says when, as the header does (and as a database outage's 503 does).
    Halt::from(Problem::new(ProblemKind::ServiceUnavailable, reason).with("retry_after", retry_after))
        .with(header::RETRY_AFTER, retry_after.to_string())
}

/// The response [`run`] gives a request to `instance` when the service
/// answers [`Availability::Unavailable`] with `retry_after` and `reason`:
/// the ServiceAvailable node's 503, byte for byte. A server that must
/// refuse before running the flow (Canon sheds requests beyond its
/// in-flight limit this way) renders it from here, so the two cannot
/// drift apart.
pub fn unavailable_response(retry_after: u64, reason: &str, instance: &str, request_id: &str) -> Response<Bytes> {
    let halt = unavailable(retry_after, reason);
    problem_response(&halt.problem, instance, request_id, &halt.headers)
}

/// The response for a flow outcome.
fn respond(head: &Parts, request_id: &str, outcome: Result<Response<Body>, Halt>) -> Response<Body> {
    match outcome {
        Ok(response) => response,
        Err(halt) => problem_response(&halt.problem, head.uri.path(), request_id, &halt.headers).map(Body::Full),
    }
}

async fn decide(service: &dyn Service, walk: &mut Walk<'_>, body: Box<dyn BodySource>) -> Result<Response<Body>, Halt> {
    let head = walk.head;
    let limits = service.limits();

    walk.visit(Node::ServiceAvailable);
    if let Availability::Unavailable { retry_after, reason } = service.availability() {
        return Err(unavailable(retry_after, reason));
    }

    walk.visit(Node::KnownMethod);
    if !KNOWN_METHODS.contains(&head.method) && !refused(&head.method) {
        return Err(Problem::new(
            ProblemKind::NotImplemented,
            format!("The method {} is not implemented by Canon.", head.method),
        )
        .into());
    }

    walk.visit(Node::UriLength);
    let target_len = head.uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if target_len > limits.max_uri_bytes {
        return Err(Problem::new(
            ProblemKind::UriTooLong,
            format!(
                "The request target is {target_len} bytes; the limit is {}.",
                limits.max_uri_bytes
            ),
        )
        .into());
    }

    walk.visit(Node::HeaderSize);
    let header_bytes: usize = head.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if header_bytes > limits.max_header_bytes {
        return Err(Problem::new(
            ProblemKind::HeadersTooLarge,
            format!(
                "The header section is {header_bytes} bytes; the limit is {}.",
                limits.max_header_bytes
            ),
        )
        .into());
    }

    walk.visit(Node::Target);
    check_target(head)?;

    let path = head.uri.path();
    if path == "*" {
        // `OPTIONS *` asks about the server itself (RFC 9110 §9.3.7).
        walk.visit(Node::Options);
        let methods: Vec<&str> = KNOWN_METHODS.iter().map(Method::as_str).collect();
        return Ok(empty(StatusCode::NO_CONTENT, &[(header::ALLOW, methods.join(", "))]));
    }
    let matched = service.routes().lookup(path);
    walk.route = matched.as_ref().map(|(route, _)| route.pattern);
    let principal = if requires_credentials(path) {
        walk.visit(Node::Authenticated);
        let principal = authenticate(service, walk).await?;
        if crate::operation::is_api(path) {
            walk.visit(Node::RateLimit);
            rate_limit(service, walk, &principal).await?;
        }
        Some(principal)
    } else {
        None
    };
    walk.tenant = match &principal {
        Some(Principal::Member { tenant, .. }) => Some(tenant.clone()),
        Some(Principal::Operator { .. }) => matched
            .as_ref()
            .and_then(|(_, params)| params.get("tenant"))
            .filter(|t| *t != crate::access::CURRENT_TENANT)
            .map(Into::into),
        None => None,
    };

    walk.visit(Node::RouteExists);
    let Some((route, params)) = matched else {
        return Err(Problem::new(ProblemKind::NotFound, format!("No resource lives at {path}.")).into());
    };

    if head.method == Method::OPTIONS {
        walk.visit(Node::Options);
        return Ok(options(route));
    }

    walk.visit(Node::MethodAllowed);
    let Some(spec) = route.method(&head.method) else {
        let wanted = if head.method == Method::HEAD {
            &Method::GET
        } else {
            &head.method
        };
        if route.planned.contains(wanted) {
            return Err(Problem::new(
                ProblemKind::NotImplemented,
                format!("{wanted} on this resource is part of the contract but not implemented yet."),
            )
            .into());
        }
        return Err(Halt::from(Problem::new(
            ProblemKind::MethodNotAllowed,
            format!("{} is not supported here; see Allow.", head.method),
        ))
        .with(header::ALLOW, route.allow()));
    };

    walk.visit(Node::Authorized);
    authorized(head, spec, principal.as_ref(), params.get("tenant"))?;

    walk.visit(Node::ContentType);
    // A relayed body's type and coding are for the server it goes to.
    let body_media = if spec.forwards { None } else { content_type(head, spec)? };

    walk.visit(Node::Body);
    let (body, streamed) = match body_media {
        _ if spec.forwards => (None, Some(forward_body(head, body, limits.max_stream_bytes)?)),
        Some((media, coding)) if spec.streams => (
            None,
            Some(stream_body(head, body, media, coding, limits.max_stream_bytes)?),
        ),
        Some((media, coding)) => (
            Some((media, read_body(head, body, coding, limits.max_body_bytes).await?)),
            None,
        ),
        None => (None, None),
    };

    walk.visit(Node::Acceptable);
    walk.negotiated = !spec.produces.is_empty();
    let produce = acceptable(head, spec)?;

    walk.visit(Node::WellFormed);
    // Conditions and idempotency keys of a relayed request are the other
    // server's to judge: Canon holds no state of its to compare them with.
    let conditions = if spec.forwards {
        Conditions::default()
    } else {
        Conditions::from_headers(&head.headers, service.now())
            .map_err(|e| Problem::new(ProblemKind::InvalidHeader, e.to_string()))?
    };
    let key = if head.method == Method::POST && !spec.forwards {
        idempotency_key(&head.headers).map_err(|e| Problem::new(ProblemKind::InvalidHeader, e))?
    } else {
        None
    };
    let body_bytes = body.as_ref().map(|(_, b)| b.clone()).unwrap_or_default();
    let mut resource = service.resource(route, params, principal.clone());
    resource.parse(Input { head, body })?;

    let (Some(key), Some(principal)) = (key, principal.as_ref()) else {
        return act(walk, resource, spec, &conditions, produce, streamed).await;
    };
    walk.visit(Node::Idempotent);
    let keyed = Keyed {
        key: &key,
        principal,
        head,
        body: &body_bytes,
    };
    match service.claim_key(keyed).await? {
        KeyState::Fresh => {}
        KeyState::InFlight => {
            return Err(Problem::new(
                ProblemKind::IdempotencyKeyInFlight,
                "A request with this Idempotency-Key is still being processed; retry shortly.",
            )
            .into());
        }
        KeyState::Mismatch => {
            return Err(Problem::new(
                ProblemKind::IdempotencyKeyReused,
                "This Idempotency-Key was used for a different request (another target or body).",
            )
            .into());
        }
        KeyState::Completed(mut response) => {
            set(&mut response, IDEMPOTENT_REPLAYED, "true");
            return Ok(response.map(Body::Full));
        }
    }
    let outcome = act(walk, resource, spec, &conditions, produce, streamed).await;
    let response = respond(head, walk.request_id, outcome);
    // A streamed answer cannot be kept for replay: its key is freed.
    let keep = replayable_copy(&response);
    service.settle_key(keyed, keep.as_ref()).await;
    Ok(response)
}

/// A copy of `response` for the idempotency ledger, when it is whole and
/// its status is one a retry would get again ([`is_replayable`]).
fn replayable_copy(response: &Response<Body>) -> Option<Response<Bytes>> {
    let bytes = response.body().as_full()?;
    if !is_replayable(response.status()) {
        return None;
    }
    let mut copy = Response::new(bytes.clone());
    *copy.status_mut() = response.status();
    *copy.version_mut() = response.version();
    *copy.headers_mut() = response.headers().clone();
    if let Some(marker) = response.extensions().get::<ShownOnce>() {
        copy.extensions_mut().insert(*marker);
    }
    Some(copy)
}

/// The nodes from existence to the action: what the resource's state decides.
async fn act(
    walk: &mut Walk<'_>,
    mut resource: Box<dyn Resource>,
    spec: &MethodSpec,
    conditions: &Conditions,
    produce: Option<MediaType>,
    streamed: Option<StreamedBody>,
) -> Result<Response<Body>, Halt> {
    let head = walk.head;
    let path = head.uri.path();
    walk.visit(Node::Exists);
    let found = match resource.load().await? {
        Existence::Found(found) => Some(found),
        Existence::Missing if spec.creates => None,
        Existence::Gone if spec.creates => None,
        Existence::Missing | Existence::ContainerMissing => return Err(not_found(path).into()),
        Existence::Gone | Existence::ContainerGone => {
            return Err(Problem::new(ProblemKind::Gone, format!("{path} was deleted.")).into());
        }
        Existence::Moved(location) => {
            let status = if is_safe(&head.method) {
                StatusCode::MOVED_PERMANENTLY
            } else {
                StatusCode::PERMANENT_REDIRECT
            };
            return Ok(empty(status, &[(header::LOCATION, location)]));
        }
        Existence::Redirect(location) => {
            return Ok(empty(
                StatusCode::TEMPORARY_REDIRECT,
                &[(header::LOCATION, location), (header::VARY, "Authorization".into())],
            ));
        }
        Existence::SeeOther(location) if is_safe(&head.method) => {
            return Ok(empty(StatusCode::SEE_OTHER, &[(header::LOCATION, location)]));
        }
        Existence::SeeOther(_) => Some(Found::default()),
    };
    let produce = match found.as_ref().and_then(|f| f.media) {
        Some(media) => Some(variant_acceptable(head, media)?),
        None => produce,
    };

    walk.visit(Node::Preconditions);
    match validators::evaluate(&head.method, conditions, found.as_ref().map(|f| &f.validators)) {
        PreconditionOutcome::Proceed => {}
        PreconditionOutcome::NotModified => {
            return Ok(not_modified(found.as_ref(), spec));
        }
        PreconditionOutcome::Failed => {
            let mut halt = Halt::from(Problem::new(
                ProblemKind::PreconditionFailed,
                "A precondition in the request headers does not hold for the current state of the resource.",
            ));
            if let Some(etag) = found.as_ref().and_then(|f| f.validators.etag.as_ref()) {
                halt = halt.with(header::ETAG, etag.to_string());
            }
            return Err(halt);
        }
    }

    if let Some(found) = found.as_ref().filter(|_| spec.writes) {
        walk.visit(Node::PreconditionRequired);
        // `If-Match: *` holds for any state, so it does not satisfy the demand.
        if found.require_if_match && !conditions.if_match_names_a_tag() {
            return Err(Problem::new(
                ProblemKind::PreconditionRequired,
                "This collection requires conditional writes: GET the record and resend with If-Match set to its ETag (`*` does not count).",
            )
            .into());
        }
        walk.visit(Node::Unlocked);
        if let Some(lock) = &found.locked_by_other {
            return Err(lock.problem().into());
        }
    }

    walk.visit(Node::Execute);
    if let Some(body) = streamed {
        resource.take_body(body);
    }
    let success = resource.execute(produce).await?;
    let minimal = !is_safe(&head.method) && prefers_minimal(head);
    Ok(success_response(success, minimal))
}

/// The request target and `Host` (the [`Node::Target`] node).
fn check_target(head: &Parts) -> Result<(), Halt> {
    let bad = |detail: &str| Err(Problem::new(ProblemKind::InvalidHeader, detail.to_owned()).into());
    let mut hosts = head.headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        // HTTP/1.0 predates Host; every later version must send it.
        (None, _) if head.version == http::Version::HTTP_10 => {}
        (None, _) => return bad("The request has no Host header; HTTP/1.1 requires exactly one."),
        (Some(one), None) if !is_valid_host(one) => {
            return bad("The Host header is not a valid host[:port].");
        }
        (Some(_), None) => {}
        (Some(_), Some(_)) => return bad("The request has more than one Host header."),
    }
    let path = head.uri.path();
    if path == "*" && head.method != Method::OPTIONS {
        return bad("The request target `*` is only meaningful with OPTIONS.");
    }
    if has_dot_segment(path) {
        return bad(
            "The path has a `.` or `..` segment (or an encoded one); URL resolvers rewrite those, so Canon never \
             serves or creates anything at such a path.",
        );
    }
    Ok(())
}

/// Whether `value` is `uri-host [ ":" port ]` (RFC 9110 §7.2): an IP
/// literal in brackets or a reg-name, and a numeric port.
fn is_valid_host(value: &HeaderValue) -> bool {
    let Ok(s) = value.to_str() else {
        return false;
    };
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((literal, after)) = rest.split_once(']') else {
            return false;
        };
        let literal_ok = !literal.is_empty() && literal.bytes().all(|b| b.is_ascii_hexdigit() || b":.".contains(&b));
        if !literal_ok {
            return false;
        }
        (
            "x",
            after
                .strip_prefix(':')
                .map(Some)
                .unwrap_or((!after.is_empty()).then_some("x")),
        )
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    !host.is_empty() && host.bytes().all(|b| REG_NAME[usize::from(b)]) && port_ok
}

/// The bytes of a reg-name (RFC 3986 §3.2.2: unreserved, sub-delims and
/// `%` of a pct-encoded octet), as a table: every request's `Host` is
/// checked byte by byte.
static REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric();
        b += 1;
    }
    let others = b"-._~!$&'()*+,;=%";
    let mut i = 0;
    while i < others.len() {
        table[others[i] as usize] = true;
        i += 1;
    }
    table
};

/// Whether a segment of `path` is `.` or `..`, literally or percent-encoded.
fn has_dot_segment(path: &str) -> bool {
    // Without decoding into new strings: this runs on every request, and
    // most paths have neither a dot nor an escape at all.
    if !path.bytes().any(|b| b == b'.' || b == b'%') {
        return false;
    }
    path.split('/').any(|seg| {
        let mut rest = seg.as_bytes();
        let mut dots = 0;
        while !rest.is_empty() && dots <= 2 {
            match rest {
                [b'.', tail @ ..] => rest = tail,
                [b'%', b'2', e, tail @ ..] if e.eq_ignore_ascii_case(&b'e') => rest = tail,
                _ => return false,
            }
            dots += 1;
        }
        rest.is_empty() && (dots == 1 || dots == 2)
    })
}

/// The 204 to `OPTIONS` on a route: `Allow`, and which bodies POST and
/// PATCH take (`Accept-Post`, RFC 9110 §B; `Accept-Patch`, RFC 5789 §3.1).
fn options(route: &RouteSpec) -> Response<Body> {
    let mut headers = vec![(header::ALLOW, route.allow())];
    for (method, name) in [(Method::POST, "accept-post"), (Method::PATCH, "accept-patch")] {
        if let Some(spec) = route.method(&method).filter(|s| !s.accepts.is_empty()) {
            let types: Vec<&str> = spec.accepts.iter().map(|m| m.essence()).collect();
            headers.push((HeaderName::from_static(name), types.join(", ")));
        }
    }
    empty(StatusCode::NO_CONTENT, &headers)
}

/// The [`Node::Authorized`] node: 403 when the caller's role is too low, 404
/// when the resource belongs to another tenant (existence is not revealed).
fn authorized(
    head: &Parts,
    spec: &MethodSpec,
    principal: Option<&Principal>,
    tenant: Option<&str>,
) -> Result<(), Halt> {
    let Guard::Role(required) = spec.guard else {
        return Ok(());
    };
    // A guarded route outside /v1 would reach here unauthenticated: a
    // table error, refused rather than served.
    let Some(principal) = principal else {
        return Err(Halt::from(Problem::new(
            ProblemKind::CredentialsRequired,
            "This resource needs credentials.",
        ))
        .with(header::WWW_AUTHENTICATE, REALM));
    };
    match authorize(principal, tenant, required) {
        Access::Granted => Ok(()),
        Access::Invisible => Err(not_found(head.uri.path()).into()),
        Access::Forbidden { required } => Err(Problem::new(
            ProblemKind::Forbidden,
            format!(
                "{} {} needs the {required} role; you are {}.",
                head.method,
                head.uri.path(),
                principal.role()
            ),
        )
        .with("required_role", required.as_str())
        .into()),
    }
}

/// What a negotiated response (its route and method produce a body) adds:
/// `Vary: Accept` on 2xx, 304 and 406, and for 2xx and 304 the content
/// coding: gzip when the client accepts it, with the coded bytes' own
/// strong tag (RFC 9110 §8.8.3) and `Vary: Accept-Encoding`.
fn negotiated(head: &Parts, response: &mut Response<Body>) {
    let status = response.status();
    if status == StatusCode::NOT_ACCEPTABLE {
        add_vary(response, "Accept");
    }
    // Redirects and other errors read the same whatever the client accepts.
    if !(status.is_success() || status == StatusCode::NOT_MODIFIED) {
        return;
    }
    if response.headers().contains_key(header::VARY) {
        add_vary(response, "Accept");
        add_vary(response, "Accept-Encoding");
    } else {
        // The common case, in one insert: what the two calls above write.
        set_static(response, header::VARY, VARY_NEGOTIATED);
    }
    let codable = status == StatusCode::NOT_MODIFIED || !response.body().is_empty();
    if !codable || !coding::accepts_gzip(&head.headers) {
        return;
    }
    match std::mem::take(response.body_mut()) {
        Body::Full(bytes) if bytes.is_empty() => {}
        Body::Full(bytes) => {
            *response.body_mut() = Body::Full(coding::gzip(&bytes));
            set(response, header::CONTENT_ENCODING, "gzip");
        }
        Body::Streamed(streamed) => {
            *response.body_mut() = Body::Streamed(Streamed {
                chunks: Box::new(coding::GzipChunks::new(streamed.chunks)),
                length: None,
            });
            response.headers_mut().remove(header::CONTENT_LENGTH);
            set(response, header::CONTENT_ENCODING, "gzip");
        }
    }
    let tag = response
        .headers()
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .and_then(EntityTag::parse);
    if let Some(tag) = tag {
        set(response, header::ETAG, &tag.gzip().to_string());
    }
}

/// The `Vary` line of a negotiated answer: what [`negotiated`] adds.
const VARY_NEGOTIATED: &str = "Accept, Accept-Encoding";

/// Adds `token` to `Vary` unless it is there already, keeping one line.
/// The usual cases (no `Vary` yet; `Accept` then `Accept-Encoding`) set a
/// static value: no allocation on the hot path.
fn add_vary<B>(response: &mut Response<B>, token: &'static str) {
    const BOTH: &str = VARY_NEGOTIATED;
    let headers = response.headers_mut();
    // The common cases without building the line: no `Vary` yet, or the
    // one line `negotiated` itself writes. (The general case below allocated
    // and split a string twice per answer.)
    let mut lines = headers.get_all(header::VARY).iter();
    let (first, more) = (lines.next(), lines.next().is_some());
    let fast: Option<&'static str> = match first.map(HeaderValue::as_bytes) {
        None => Some(token),
        Some(one)
            if !more
                && (one.eq_ignore_ascii_case(token.as_bytes())
                    || (one == BOTH.as_bytes() && matches!(token, "Accept" | "Accept-Encoding"))) =>
        {
            return;
        }
        Some(b"Accept") if !more && token == "Accept-Encoding" => Some(BOTH),
        Some(_) => None,
    };
    if let Some(value) = fast {
        headers.insert(header::VARY, HeaderValue::from_static(value));
        return;
    }
    let line = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(", ");
    if line.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)) {
        return;
    }
    let value = match line.trim() {
        "" => HeaderValue::from_static(token),
        "Accept" if token == "Accept-Encoding" => HeaderValue::from_static(BOTH),
        line => match HeaderValue::try_from(format!("{line}, {token}")) {
            Ok(v) => v,
            Err(_) => return,
        },
    };
    headers.insert(header::VARY, value);
}

/// `/v1` is the authenticated API; everything else (health, docs) is public.
/// Unknown paths under `/v1` demand credentials too, so anonymous callers
/// cannot map the API's routes.
fn requires_credentials(path: &str) -> bool {
    crate::operation::needs_credentials(path)
}

/// The [`Node::RateLimit`] node: 429 when the caller is over one of its
/// limits, naming the limit, with `Retry-After`.
async fn rate_limit(service: &dyn Service, walk: &mut Walk<'_>, principal: &Principal) -> Result<(), Halt> {
    let verdict = service.rate_limit(principal).await?;
    walk.standing = verdict.standing();
    refusal(verdict)
}

/// The 429 for a refused verdict.
fn refusal(verdict: RateVerdict) -> Result<(), Halt> {
    let RateVerdict::Refused {
        standing,
        limit,
        retry_after,
    } = verdict
    else {
        return Ok(());
    };
    let retry_after = retry_after.max(1);
    let policy = standing.iter().find(|p| p.name == limit);
    let detail = match (limit, policy) {
        (crate::ratelimit::LimitName::Burst, Some(p)) => format!(
            "This API key's rate limit is exhausted: {} requests per {} s. Retry in {retry_after} s.",
            p.quota, p.window
        ),
        (crate::ratelimit::LimitName::Daily, Some(p)) => format!(
            "The tenant's daily quota of {} requests is used up; it starts again at 00:00 UTC, in {retry_after} s.",
            p.quota
        ),
        (crate::ratelimit::LimitName::AuthFailures, _) => format!(
            "Too many unknown tokens were sent from this client address; tokens from it are not checked for {retry_after} s."
        ),
        (crate::ratelimit::LimitName::InFlight, _) => {
            "This caller already has its whole share of the requests in flight; wait for a response, then retry."
                .to_owned()
        }
        (other, None) => format!("The {} limit is exhausted. Retry in {retry_after} s.", other.as_str()),
    };
    let mut problem = Problem::new(limit.problem_kind(), detail)
        .with("limit", limit.as_str())
        .with("retry_after", retry_after);
    if let Some(p) = policy {
        problem = problem.with("quota", p.quota).with("window_seconds", p.window);
    }
    Err(Halt::from(problem).with(header::RETRY_AFTER, retry_after.to_string()))
}

/// Sets `RateLimit-Policy` and `RateLimit` from `standing`.
fn advertise<B>(standing: &Standing, response: &mut Response<B>) {
    if let Some(v) = standing.policy_field() {
        response.headers_mut().insert(RATELIMIT_POLICY, v);
    }
    if let Some(v) = standing.limit_field() {
        response.headers_mut().insert(RATELIMIT, v);
    }
}

async fn authenticate(service: &dyn Service, walk: &mut Walk<'_>) -> Result<Principal, Halt> {
    let head = walk.head;
    let mut values = head.headers.get_all(header::AUTHORIZATION).iter();
    // RFC 6750 §3.1: a request without a usable bearer token gets the bare
    // challenge (no error code); a malformed bearer request gets
    // `invalid_request`; a well-formed but unknown token `invalid_token`.
    let no_bearer = |detail: &str| {
        Halt::from(Problem::new(ProblemKind::CredentialsRequired, detail.to_owned()))
            .with(header::WWW_AUTHENTICATE, REALM)
    };
    let malformed = |detail: &str| {
        Halt::from(Problem::new(ProblemKind::CredentialsRequired, detail.to_owned()))
            .with(header::WWW_AUTHENTICATE, format!("{REALM}, error=\"invalid_request\""))
    };
    let value = match (values.next(), values.next()) {
        (None, _) => return Err(no_bearer("Send an API key as `Authorization: Bearer <token>`.")),
        (Some(one), None) => one
            .to_str()
            .map_err(|_| malformed("The Authorization header is not visible ASCII."))?,
        (Some(_), Some(_)) => return Err(malformed("Send exactly one Authorization header.")),
    };
    let value = value.trim();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(no_bearer(
            "Canon accepts only bearer tokens: send `Authorization: Bearer <token>`.",
        ));
    }
    let token = token.trim();
    if token.is_empty() || token.contains(' ') {
        return Err(malformed(
            "The Bearer credentials are empty or malformed: send `Authorization: Bearer <token>`.",
        ));
    }
    // Failed-auth limiting: a client that sent too many unknown tokens has
    // the next ones refused before they are checked, so a guess is never
    // confirmed at speed; a token that worked from there before passes.
    let screened = service.screen_token(token).await;
    if let RateVerdict::Refused { .. } = screened {
        walk.standing = screened.standing();
        refusal(screened)?;
    }
    match service.authenticate(token).await? {
        Some(principal) => Ok(principal),
        None => {
            walk.standing = service.token_failed().await.standing();
            Err(invalid_token())
        }
    }
}

/// The 401 for a token Canon does not know.
fn invalid_token() -> Halt {
    Halt::from(Problem::new(
        ProblemKind::InvalidToken,
        "The token is unknown, revoked or expired.",
    ))
    .with(header::WWW_AUTHENTICATE, format!("{REALM}, error=\"invalid_token\""))
}

/// Whether the request carries a body, judged by its framing headers.
fn has_body(head: &Parts) -> bool {
    let length = head
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match length {
        Some(n) => n > 0,
        None => head.headers.contains_key(header::TRANSFER_ENCODING),
    }
}

fn content_type(head: &Parts, spec: &MethodSpec) -> Result<Option<(MediaType, RequestCoding)>, Halt> {
    if spec.accepts.is_empty() || !has_body(head) {
        return Ok(None);
    }
    let coding = coding::request_coding(&head.headers).map_err(|e| {
        Halt::from(
            Problem::new(ProblemKind::UnsupportedMediaType, format!("The body's {e}."))
                .with("accepted_encodings", coding::ACCEPTED_CODINGS),
        )
        .with(header::ACCEPT_ENCODING, coding::ACCEPTED_CODINGS)
    })?;
    let accepted: Vec<&str> = spec.accepts.iter().map(|m| m.essence()).collect();
    let unsupported = |detail: String| {
        let mut halt =
            Halt::from(Problem::new(ProblemKind::UnsupportedMediaType, detail).with("accepted", accepted.clone()));
        let accept_header = if head.method == Method::PATCH {
            Some(header::HeaderName::from_static("accept-patch"))
        } else if head.method == Method::POST {
            Some(header::HeaderName::from_static("accept-post"))
        } else {
            None
        };
        if let Some(name) = accept_header {
            halt = halt.with(name, accepted.join(", "));
        }
        halt
    };
    let Some(value) = head.headers.get(header::CONTENT_TYPE) else {
        return Err(unsupported(format!(
            "The body has no Content-Type; send one of: {}.",
            accepted.join(", ")
        )));
    };
    let parsed = value
        .to_str()
        .map_err(|_| ContentTypeError::Malformed)
        .and_then(media::parse_content_type);
    match parsed {
        Ok(m) if spec.accepts.contains(&m) => Ok(Some((m, coding))),
        Ok(m) => Err(unsupported(format!(
            "{m} is not accepted here; send one of: {}.",
            accepted.join(", ")
        ))),
        Err(e) => Err(unsupported(format!("{e}; send one of: {}.", accepted.join(", ")))),
    }
}

async fn read_body(
    head: &Parts,
    body: Box<dyn BodySource>,
    coding: RequestCoding,
    limit: usize,
) -> Result<Bytes, Halt> {
    let too_large = || {
        Halt::from(
            Problem::new(
                ProblemKind::ContentTooLarge,
                format!("The body is larger than {limit} bytes."),
            )
            .with("max_bytes", limit),
        )
        .with(header::CONNECTION, "close")
    };
    let declared = head
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match body.read(limit).await {
        Ok(bytes) => match coding::decode(coding, bytes, limit) {
            Ok(decoded) => Ok(decoded),
            Err(DecodeError::TooLarge) => Err(too_large()),
            Err(DecodeError::Corrupt) => Err(Problem::new(
                ProblemKind::MalformedBody,
                "The body is not valid for its Content-Encoding (gzip).",
            )
            .into()),
        },
        Err(BodyError::TooLarge) => Err(too_large()),
        Err(BodyError::TimedOut) => Err(Halt::from(Problem::new(
            ProblemKind::RequestTimeout,
            "The body did not arrive in time.",
        ))
        .with(header::CONNECTION, "close")),
        Err(BodyError::Aborted) => {
            Err(Problem::new(ProblemKind::MalformedBody, "The body could not be read to its end.").into())
        }
    }
}

/// A body to relay as it comes (a forwarding method): nothing is read here;
/// a declared length over the limit is 413 at once.
fn forward_body(head: &Parts, body: Box<dyn BodySource>, limit: u64) -> Result<StreamedBody, Halt> {
    let declared = head
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Halt::from(body_problem(BodyError::TooLarge, limit)).with(header::CONNECTION, "close"));
    }
    Ok(StreamedBody::forwarded(body.chunks(), limit))
}

/// A body to stream: nothing is read here. A declared length over the
/// limit is 413 at once; a content coding is 415 (a streamed body is taken
/// as it arrives, identity only).
fn stream_body(
    head: &Parts,
    body: Box<dyn BodySource>,
    media: MediaType,
    coding: RequestCoding,
    limit: u64,
) -> Result<StreamedBody, Halt> {
    if coding != RequestCoding::Identity {
        return Err(Halt::from(
            Problem::new(
                ProblemKind::UnsupportedMediaType,
                "This body is taken as it arrives, without a content coding; send it with `identity`.",
            )
            .with("accepted_encodings", "identity"),
        )
        .with(header::ACCEPT_ENCODING, "identity"));
    }
    let declared = head
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Halt::from(body_problem(BodyError::TooLarge, limit)).with(header::CONNECTION, "close"));
    }
    Ok(StreamedBody::new(media, body.chunks(), limit))
}

fn acceptable(head: &Parts, spec: &MethodSpec) -> Result<Option<MediaType>, Halt> {
    if spec.produces.is_empty() {
        return Ok(None);
    }
    let values = head
        .headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok());
    match media::negotiate(values, spec.produces) {
        Some(m) => Ok(Some(m)),
        None => {
            let offered: Vec<&str> = spec.produces.iter().map(|m| m.essence()).collect();
            Err(Problem::new(
                ProblemKind::NotAcceptable,
                format!(
                    "Nothing in Accept can be produced here; available: {}.",
                    offered.join(", ")
                ),
            )
            .with("acceptable", offered)
            .into())
        }
    }
}

/// The loaded resource's one media type, when `Accept` takes it (406
/// otherwise, naming it).
fn variant_acceptable(head: &Parts, media: MediaType) -> Result<MediaType, Halt> {
    let values = head
        .headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok());
    media::negotiate(values, std::slice::from_ref(&media)).ok_or_else(|| {
        Problem::new(
            ProblemKind::NotAcceptable,
            format!(
                "This resource is available only as {}, which Accept refuses.",
                media.essence()
            ),
        )
        .with("acceptable", [media.essence()])
        .into()
    })
}

fn is_safe(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

fn not_found(path: &str) -> Problem {
    Problem::new(ProblemKind::NotFound, format!("No resource lives at {path}."))
}

fn empty(status: StatusCode, headers: &[(HeaderName, String)]) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            response.headers_mut().append(name.clone(), v);
        }
    }
    response
}

fn set<B>(response: &mut Response<B>, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, v);
    }
}

/// [`set`] for a value known when Canon is built: no copy, no check.
fn set_static<B>(response: &mut Response<B>, name: HeaderName, value: &'static str) {
    response.headers_mut().insert(name, static_value(value));
}

/// `value` as a header value. `HeaderValue::from_static` checks every byte
/// when it runs; the values nearly every answer carries are made at compile
/// time instead, and found by a comparison that costs less than the check.
fn static_value(value: &'static str) -> HeaderValue {
    const PRIVATELY: HeaderValue = HeaderValue::from_static(REVALIDATE_PRIVATELY);
    const NEGOTIATED: HeaderValue = HeaderValue::from_static(VARY_NEGOTIATED);
    match value {
        REVALIDATE_PRIVATELY => PRIVATELY,
        VARY_NEGOTIATED => NEGOTIATED,
        _ => HeaderValue::from_static(value),
    }
}

fn set_validators<B>(response: &mut Response<B>, v: &Validators) {
    if let Some(etag) = &v.etag
        && let Some(value) = etag.header_value()
    {
        response.headers_mut().insert(header::ETAG, value);
    }
    if let Some(t) = v.last_modified {
        response
            .headers_mut()
            .insert(header::LAST_MODIFIED, crate::date::http_date_value(t));
    }
}

fn not_modified(found: Option<&Found>, spec: &MethodSpec) -> Response<Body> {
    let mut response = empty(StatusCode::NOT_MODIFIED, &[]);
    if let Some(found) = found {
        set_validators(&mut response, &found.validators);
    }
    let cache_control = found.and_then(|f| f.cache_control).unwrap_or(REVALIDATE_PRIVATELY);
    set_static(&mut response, header::CACHE_CONTROL, cache_control);
    if spec.produces.len() > 1 {
        set_static(&mut response, header::VARY, "Accept");
    }
    response
}

fn representation_response(status: StatusCode, rep: Representation) -> Response<Body> {
    let mut response = Response::new(rep.body);
    *response.status_mut() = status;
    if rep.shown_once {
        response.extensions_mut().insert(ShownOnce);
    }
    // Room for what the flow and the envelope add (validators, `Vary`,
    // `RateLimit` fields, the request id…): the map is not regrown.
    *response.headers_mut() = http::HeaderMap::with_capacity(16);
    // A whole body's length is the server's to set; a stream's is known
    // only to its source.
    if let Body::Streamed(Streamed { length: Some(n), .. }) = response.body() {
        let n = HeaderValue::from(*n);
        response.headers_mut().insert(header::CONTENT_LENGTH, n);
    }
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, rep.media.content_type_value());
    set_validators(&mut response, &rep.validators);
    if let Some(cc) = rep.cache_control {
        set_static(&mut response, header::CACHE_CONTROL, cc);
    }
    if let Some(cl) = &rep.content_location {
        set(&mut response, header::CONTENT_LOCATION, cl);
    }
    if let Some(vary) = rep.vary {
        set_static(&mut response, header::VARY, vary);
    }
    if let Some(csp) = rep.content_security_policy {
        set_static(&mut response, header::CONTENT_SECURITY_POLICY, csp);
    }
    if let Some(seconds) = rep.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if let Some(disposition) = &rep.content_disposition {
        set(&mut response, header::CONTENT_DISPOSITION, disposition);
    }
    if let Some(applied) = &rep.preference_applied {
        set(&mut response, PREFERENCE_APPLIED, applied);
    }
    for link in &rep.links {
        if let Ok(v) = HeaderValue::from_str(link) {
            response.headers_mut().append(header::LINK, v);
        }
    }
    response
}

/// The 2xx response for `success`. With `minimal` (`Prefer: return=minimal`
/// on a write) the body is left out: 200 becomes 204, 201 stays 201; the
/// validators and locations stay.
fn success_response(success: Success, minimal: bool) -> Response<Body> {
    // A secret shown once keeps its body whatever the client prefers.
    let minimal = minimal
        && match &success {
            Success::Ok(rep) => !rep.is_shown_once(),
            Success::Created { representation, .. } => !representation.is_shown_once(),
            // Each operation's status is in the body: it cannot be left out.
            Success::NoContent | Success::MultiStatus(_) | Success::Accepted { .. } | Success::Forwarded(_) => false,
        };
    let mut response = match success {
        Success::Ok(rep) if minimal => {
            let mut response = representation_response(StatusCode::NO_CONTENT, rep);
            *response.body_mut() = Body::empty();
            response.headers_mut().remove(header::CONTENT_TYPE);
            response
        }
        Success::Ok(rep) => representation_response(StatusCode::OK, rep),
        Success::Created {
            location,
            representation,
        } => {
            let mut response = representation_response(StatusCode::CREATED, representation);
            set(&mut response, header::LOCATION, &location);
            if minimal {
                *response.body_mut() = Body::empty();
                response.headers_mut().remove(header::CONTENT_TYPE);
            }
            response
        }
        Success::NoContent => return empty(StatusCode::NO_CONTENT, &[]),
        Success::Forwarded(response) => return response,
        Success::MultiStatus(rep) => representation_response(StatusCode::MULTI_STATUS, rep),
        Success::Accepted {
            location,
            mut representation,
        } => {
            // 202 always tells the client where and when to look.
            representation.retry_after = representation.retry_after.or(Some(1));
            let mut response = representation_response(StatusCode::ACCEPTED, representation);
            set(&mut response, header::LOCATION, &location);
            response
        }
    };
    if minimal {
        let applied = match response.headers().get(PREFERENCE_APPLIED).and_then(|v| v.to_str().ok()) {
            Some(other) => format!("{other}, return=minimal"),
            None => "return=minimal".to_owned(),
        };
        set(&mut response, PREFERENCE_APPLIED, &applied);
    }
    response
}

/// RFC 7240's response header naming the preferences that were honoured.
pub const PREFERENCE_APPLIED: HeaderName = HeaderName::from_static("preference-applied");

/// Builds the `application/problem+json` response for `problem`.
pub fn problem_response(
    problem: &Problem,
    instance: &str,
    request_id: &str,
    headers: &[(HeaderName, String)],
) -> Response<Bytes> {
    let body = problem.to_body(instance, request_id);
    let mut response = Response::new(Bytes::from(serde_json::to_vec(&body).unwrap_or_default()));
    *response.status_mut() = problem.kind().status();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, MediaType::Problem.content_type_value());
    // 503 and 429 always tell the client when to come back.
    let needs_retry_after = matches!(problem.kind().status().as_u16(), 429 | 503);
    if needs_retry_after && !headers.iter().any(|(n, _)| n == header::RETRY_AFTER) {
        let secs = problem.extension("retry_after").and_then(Value::as_u64).unwrap_or(1);
        set(&mut response, header::RETRY_AFTER, &secs.to_string());
    }
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            response.headers_mut().append(name.clone(), v);
        }
    }
    response
}
