//! The HTTP wiring: the one axum handler every request goes through (it
//! runs the decision flow with a [`resources::service::Exchange`]), the
//! request-id and panic envelope, and the accept loop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use canon_http::flow;
use futures_util::FutureExt;
use http::HeaderValue;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

use crate::body::IncomingBody;
use crate::error::internal;
use crate::resources::service::Exchange;
pub use crate::state::{ANSWERED_BY_HYPER, App, REQUEST_ID};

impl App {
    /// The axum router, without the envelope (see [`enveloped`]): one
    /// fallback handler, since routing is part of the decision flow (401 must
    /// come before 404, and 404/405/501 read one table).
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new().fallback(handle).with_state(self.clone())
    }
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
    // Nor do they take a slot: a probe must not shed a request.
    let probe = matches!(req.uri().path(), "/healthz" | "/readyz");
    let permit = if probe {
        None
    } else {
        app.in_flight.clone().try_acquire_owned().ok()
    };
    let (head, body) = req.into_parts();
    // The caller's own share of the slots is taken once it is known, at the
    // flow's RateLimit node (429 beyond it): `Exchange::rate_limit`.
    let peer = head
        .extensions
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let client = crate::limits::client_address(peer, &head.headers, &app.config.trusted_proxies);
    let exchange = Exchange::new(&app, permit.is_none() && !probe, client)
        .with_maintenance(crate::maintenance::availability(&app.maintenance(), head.uri.path()));
    let body = Box::new(IncomingBody {
        body,
        timeout: app.config.body_timeout,
    });
    let decision = flow::run(&exchange, &head, body, &request_id).await;
    drop(exchange);
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
    Response::from_parts(parts, crate::body::outgoing(bytes))
}

/// Serves `app` on `listener` until `shutdown` resolves, then finishes the
/// requests in flight.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let purge = tokio::spawn(purge_expired(app.clone()));
    let maintenance = crate::maintenance::watch(&app);
    crate::worker::start(&app, app.config.job_workers);
    serve_router(listener, enveloped(app.router()), shutdown).await;
    purge.abort();
    maintenance.abort();
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
        // Finished jobs past their retention leave a tombstone (410) kept
        // as long as any other; abandoned uploads go without one.
        match app
            .store
            .purge_expired_jobs(canon_store::now_millis(), app.config.tombstone_retention)
            .await
        {
            Ok(n) if n > 0 => tracing::info!(purged = n, "expired jobs removed"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "purge of expired jobs failed"),
        }
    }
}
