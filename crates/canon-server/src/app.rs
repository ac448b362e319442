//! The running server: shared state, the one axum handler every request
//! goes through, and the [`Service`] facts the decision flow asks for.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use bytes::Bytes;
use canon_http::Problem;
use canon_http::access::Principal;
use canon_http::flow::{self, Availability, BoxFuture, KeyState, Keyed, Limits, Resource, Service};
use canon_http::route::{Params, RouteSpec, RouteTable};
use canon_store::{Collection, KeyOwner, Store};
use futures_util::FutureExt;
use http::HeaderValue;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

use crate::body::IncomingBody;
use crate::config::Config;
use crate::error::{internal, store_problem};
use crate::routes::ROUTES;
use crate::token;
use crate::{idempotency, resources};

/// The request-id header.
pub const REQUEST_ID: &str = "x-request-id";

/// Compiled JSON Schema validators, per collection id and version.
type SchemaCache = Mutex<HashMap<String, (i64, Arc<jsonschema::Validator>)>>;

/// State shared by all requests.
pub struct App {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The configuration.
    pub config: Config,
    routes: RouteTable,
    schemas: SchemaCache,
    in_flight: Arc<Semaphore>,
    cursor_key: tokio::sync::OnceCell<crate::cursor::CursorKey>,
}

impl App {
    /// Builds the state over `store`.
    pub fn new(config: Config, store: Arc<dyn Store>) -> Result<Arc<App>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Arc::new(App {
            store,
            routes: RouteTable::new(ROUTES)?,
            schemas: Mutex::new(HashMap::new()),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            cursor_key: tokio::sync::OnceCell::new(),
            config,
        }))
    }

    /// Creates the operator key on an empty store. Returns the token when
    /// one was generated (the caller prints it once).
    pub async fn bootstrap(&self) -> Result<Option<String>, canon_store::StoreError> {
        let (token, generated) = match &self.config.bootstrap_token {
            Some(t) => (t.clone(), false),
            None => (token::generate(), true),
        };
        let created = self.store.bootstrap_operator(&token::digest(&token)).await?;
        Ok((created && generated).then_some(token))
    }

    /// The key list cursors are signed with: the store's shared secret,
    /// created by the first node that needs it.
    pub async fn cursor_key(&self) -> Result<&crate::cursor::CursorKey, Problem> {
        use crate::cursor::{CursorKey, SECRET_NAME};
        self.cursor_key
            .get_or_try_init(|| async {
                let secret = self
                    .store
                    .secret(SECRET_NAME, &CursorKey::generate_secret())
                    .await
                    .map_err(store_problem)?;
                CursorKey::from_secret(&secret).ok_or_else(internal)
            })
            .await
    }

    /// The compiled validator for `collection`'s schema.
    pub fn validator(&self, collection: &Collection) -> Result<Arc<jsonschema::Validator>, Problem> {
        if let Ok(cache) = self.schemas.lock()
            && let Some((version, v)) = cache.get(&collection.id)
            && *version == collection.version
        {
            return Ok(v.clone());
        }
        // A schema stored before the admission rules may be one they refuse
        // (an exponential reference graph would stall every write): its
        // records cannot be written until the schema is replaced.
        if let Err(refusal) = crate::schema_rules::admit(&collection.schema) {
            return Err(Problem::new(
                canon_http::ProblemKind::StateConflict,
                format!(
                    "The collection's schema breaks the current schema rules (at /schema{}: {}); an admin must \
                     replace it (PATCH the collection) before records can be written.",
                    refusal.pointer, refusal.message
                ),
            ));
        }
        let v = Arc::new(jsonschema::draft202012::new(&collection.schema).map_err(|e| {
            tracing::error!(collection = %collection.id, error = %e, "stored schema does not compile");
            internal()
        })?);
        if let Ok(mut cache) = self.schemas.lock() {
            cache.insert(collection.id.clone(), (collection.version, v.clone()));
        }
        Ok(v)
    }

    /// The axum router, without the envelope (see [`enveloped`]): one
    /// fallback handler, since routing is part of the decision flow (401 must
    /// come before 404, and 404/405/501 read one table).
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new().fallback(handle).with_state(self.clone())
    }
}

/// One request's view of the service.
struct Exchange<'a> {
    app: &'a Arc<App>,
    overloaded: bool,
}

impl Service for Exchange<'_> {
    fn routes(&self) -> &RouteTable {
        &self.app.routes
    }

    fn limits(&self) -> Limits {
        Limits {
            max_body_bytes: self.app.config.max_body_bytes,
            ..Limits::default()
        }
    }

    fn availability(&self) -> Availability {
        if self.overloaded {
            Availability::Unavailable {
                retry_after: 1,
                reason: "Canon is serving as many requests as it is allowed to; retry shortly.".into(),
            }
        } else {
            Availability::Available
        }
    }

    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Option<Principal>, Problem>> {
        Box::pin(async move {
            let digest = token::digest(token);
            let owner = self.app.store.key_owner(&digest).await.map_err(store_problem)?;
            Ok(owner.and_then(|owner| match owner {
                KeyOwner::Operator { key_id, token_hash } => {
                    token::digests_match(&token_hash, &digest).then_some(Principal::Operator { key_id })
                }
                KeyOwner::Member {
                    key_id,
                    token_hash,
                    tenant,
                    user_id,
                    role,
                } => token::digests_match(&token_hash, &digest).then_some(Principal::Member {
                    key_id,
                    tenant,
                    user_id,
                    role,
                }),
            }))
        })
    }

    fn resource(&self, route: &'static RouteSpec, params: Params, principal: Option<Principal>) -> Box<dyn Resource> {
        resources::for_route(self.app.clone(), route, params, principal)
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
    let exchange = Exchange { app, overloaded: false };
    flow::run(&exchange, head, Box::new(crate::body::ReadyBody(body)), request_id)
        .await
        .response
}

/// The request id of the request being served, set by [`envelope`].
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The client's request id when it is sane (1–128 characters from a safe
/// set), otherwise a new one.
fn request_id(req: &Request) -> String {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| {
            !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

/// Wraps every response: assigns the request id, turns a panic anywhere
/// below into a 500 problem (the server keeps serving), sets `X-Request-Id`.
async fn envelope(mut req: Request, next: Next) -> Response {
    let id = request_id(&req);
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut response = match std::panic::AssertUnwindSafe(next.run(req)).catch_unwind().await {
        Ok(response) => response,
        Err(_) => {
            tracing::error!(%method, path, request_id = id, "request handler panicked");
            let (parts, bytes) = flow::problem_response(&internal(), &path, &id, &[]).into_parts();
            Response::from_parts(parts, Body::from(bytes))
        }
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    response
}

/// Adds the request-id and panic envelope around `router`.
pub fn enveloped(router: Router) -> Router {
    router.layer(middleware::from_fn(envelope))
}

/// The API handler: every request goes through the decision flow.
async fn handle(State(app): State<Arc<App>>, req: Request) -> Response {
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    // Answer 503 at once instead of queueing when the in-flight limit is
    // reached. Probes are never shed: an orchestrator must be able to tell
    // "busy" from "dead" exactly when the server is busiest.
    let probe = matches!(req.uri().path(), "/healthz" | "/readyz");
    let permit = app.in_flight.clone().try_acquire_owned().ok();
    let (head, body) = req.into_parts();
    let exchange = Exchange {
        app: &app,
        overloaded: permit.is_none() && !probe,
    };
    let body = Box::new(IncomingBody {
        body,
        timeout: app.config.body_timeout,
    });
    let decision = flow::run(&exchange, &head, body, &request_id).await;
    drop(permit);
    tracing::debug!(
        method = %head.method,
        path = head.uri.path(),
        status = decision.response.status().as_u16(),
        trace = ?decision.trace,
        "decided"
    );
    let (parts, bytes) = decision.response.into_parts();
    if parts.status == http::StatusCode::NOT_MODIFIED {
        // A body of unknown length, so hyper does not invent
        // `Content-Length: 0` for a 304 to HEAD: that header must equal the
        // 200's or be absent (RFC 9110 §15.4.5).
        return Response::from_parts(
            parts,
            Body::from_stream(futures_util::stream::empty::<Result<bytes::Bytes, std::io::Error>>()),
        );
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// Serves `app` on `listener` until `shutdown` resolves, then finishes the
/// requests in flight.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let purge = tokio::spawn(purge_expired(app.clone()));
    serve_router(listener, enveloped(app.router()), shutdown).await;
    purge.abort();
    Ok(())
}

/// How long a client may take to send a request's header section. hyper
/// closes the connection after it (it has no response to send yet).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How many header fields hyper parses before answering 431 itself. Above
/// hyper's default of 100, so the flow's own limit (on bytes, with a problem
/// body) decides for any ordinary request; see `docs/decisions.md`.
const MAX_HEADER_FIELDS: usize = 512;

/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Statuses hyper answers itself, before the flow runs and without a
/// problem body (docs/http.md, "What hyper answers before the flow runs"):
/// 400 for a request that does not parse, 431 past its header limits, 414
/// past its target limit. The flow answers each of them too.
pub const ANSWERED_BY_HYPER: &[u16] = &[400, 414, 431];

/// Runs `router` on every connection `listener` accepts, until `shutdown`
/// resolves; then stops accepting and waits (up to a bound) for the
/// connections in flight to finish.
///
/// An accept loop of our own rather than `axum::serve`, which sets no hyper
/// timer: without one hyper's header-read timeout is silently off, and a
/// client sending its headers a byte at a time could hold a connection
/// forever. Each request carries the peer address as `ConnectInfo`.
pub async fn serve_router(listener: TcpListener, router: Router, shutdown: impl Future<Output = ()> + Send + 'static) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_headers(MAX_HEADER_FIELDS);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors, most likely: back off rather
                    // than spin, and keep serving the connections we have.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(req.map(Body::new))
        });
        let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after the drain timeout; closing them");
    }
}

/// Deletes expired tombstones, leases and idempotency keys every ten
/// minutes (lookups already ignore them; this only reclaims space).
async fn purge_expired(app: Arc<App>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
    loop {
        tick.tick().await;
        match app.store.purge_expired().await {
            Ok(n) if n > 0 => tracing::info!(purged = n, "expired rows removed"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "purge of expired rows failed"),
        }
    }
}
