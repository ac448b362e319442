//! The HTTP wiring: the one service every request goes through ([`Handler`]:
//! the request-id and panic envelope around the decision flow, run with a
//! [`resources::service::Exchange`]), and the accept loop.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use canon_http::flow::{self, BoxFuture};
use futures_util::FutureExt;
use http::{HeaderValue, Method, header};
use hyper::body::Body as _;
use tokio::net::TcpListener;

use crate::body::IncomingBody;
pub use crate::connections::{Limits, serve_connections};
use crate::error::internal;
use crate::resources::service::Exchange;
use crate::shed::{Admission, Gated};
pub use crate::state::{ANSWERED_BY_HYPER, App, REQUEST_ID, REQUEST_ID_HEADER};

impl App {
    /// The decision flow as a service, without the envelope (see
    /// [`enveloped`]) and the in-flight gate.
    pub fn flow(self: &Arc<Self>) -> Flow {
        Flow { app: self.clone() }
    }

    /// What every connection runs: the in-flight gate (shed requests are
    /// answered there), then the envelope and the flow.
    pub fn service(self: &Arc<Self>) -> Gated<Enveloped<Flow>> {
        crate::shed::gated(self, enveloped(self.flow()))
    }
}

/// The decision flow as a service: every request, whatever its path. No
/// router: routing is part of the flow (401 must come before 404, and
/// 404/405/501 read one table), and a router with middleware around one
/// fallback cost about 6 % of a record GET's instructions in glue
/// (docs/performance.md).
#[derive(Clone)]
pub struct Flow {
    app: Arc<App>,
}

impl tower::Service<Request> for Flow {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let app = self.app.clone();
        Box::pin(async move { Ok(handle(app, req).await) })
    }
}

/// `inner` inside the request-id and panic envelope (see [`Enveloped`]).
pub fn enveloped<S>(inner: S) -> Enveloped<S> {
    Enveloped { inner }
}

/// Wraps every response of `S`: assigns the request id (the request
/// carries it as [`RequestId`]), turns a panic anywhere below into a 500
/// problem (the server keeps serving), sets `X-Request-Id` and frames the
/// answer ([`framed`]), in that order (the shed gate's 503 has its fields
/// in the same order).
#[derive(Clone)]
pub struct Enveloped<S> {
    inner: S,
}

impl<S> tower::Service<Request> for Enveloped<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let id = request_id(&req);
        let method = req.method().clone();
        // Kept for a panic's problem only; the request moves on.
        let uri = req.uri().clone();
        req.extensions_mut().insert(RequestId(Arc::clone(&id)));
        let answer = self.inner.call(req);
        Box::pin(async move {
            let mut response = match std::panic::AssertUnwindSafe(answer).catch_unwind().await {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_) => {
                    tracing::error!(%method, path = uri.path(), request_id = &*id, "request handler panicked");
                    let (parts, bytes) = flow::problem_response(&internal(), uri.path(), &id, &[]).into_parts();
                    Response::from_parts(parts, Body::from(bytes))
                }
            };
            if let Ok(v) = HeaderValue::from_str(&id) {
                response.headers_mut().insert(REQUEST_ID_HEADER, v);
            }
            Ok(framed(&method, response))
        })
    }
}

/// The request id of the request being served, set by [`Enveloped`];
/// shared, since the flow, the log line and the response header all take it.
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

/// The client's request id when it is sane (1–128 characters from a safe
/// set), otherwise a new one.
pub(crate) fn request_id(req: &Request) -> Arc<str> {
    req.headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| {
            !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(Arc::from)
        .unwrap_or_else(new_request_id)
}

/// A new request id: a UUIDv7 whose random bits come from the thread's
/// generator. `Uuid::now_v7` asks the kernel for them on every call, a
/// system call per request; request ids need neither that nor its ordering
/// within a millisecond.
fn new_request_id() -> Arc<str> {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let id = uuid::Builder::from_unix_timestamp_millis(millis, &rand::random()).into_uuid();
    // Written on the stack, then shared: one allocation.
    Arc::from(&*id.hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()))
}

/// No body for `HEAD`, and its `Content-Length` (unless the answer set it)
/// from the body it would have had: what a router did for every answer.
/// Other answers leave `Content-Length` to hyper, which writes it from the
/// body's exact size straight into the head, where a header value made here
/// would cost an allocation per response. The shed gate's copy of the 503
/// is framed the same way ([`crate::shed`]), so the two heads match.
fn framed(method: &Method, mut response: Response) -> Response {
    if method == Method::HEAD {
        if !response.headers().contains_key(header::CONTENT_LENGTH)
            && let Some(size) = response.body().size_hint().exact()
        {
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        }
        *response.body_mut() = Body::empty();
    }
    response
}

/// The API handler: every request goes through the decision flow.
async fn handle(app: Arc<App>, req: Request) -> Response {
    let started = std::time::Instant::now();
    let _in_flight = crate::metrics::InFlight::new();
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map_or_else(|| Arc::from(""), |r| Arc::clone(&r.0));
    // The gate in front of the envelope (`shed::gated`) took the request's
    // in-flight slot and answered the shed ones already. Served without it,
    // the slot is taken here and the flow's first node sheds. Probes are
    // never shed, nor do they take a slot: a probe must not shed a request.
    let probe = crate::shed::is_probe(req.uri().path());
    let admission = req.extensions().get::<Admission>().copied();
    let permit = match admission {
        Some(_) => None,
        None if probe => None,
        None => app.in_flight.clone().try_acquire_owned().ok(),
    };
    let (head, body) = req.into_parts();
    // The caller's own share of the slots is taken once it is known, at the
    // flow's RateLimit node (429 beyond it): `Exchange::rate_limit`.
    let peer = head
        .extensions
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let client = crate::limits::client_address(peer, &head.headers, &app.config.trusted_proxies);
    let overloaded = match admission {
        Some(admission) => admission == Admission::Overloaded,
        None => permit.is_none() && !probe,
    };
    let exchange = Exchange::new(&app, overloaded, client)
        .with_maintenance(crate::maintenance::availability(&app.maintenance(), head.uri.path()));
    let body = Box::new(IncomingBody {
        body,
        timeout: app.config.body_timeout,
        min_rate: app.config.min_upload_rate,
    });
    let decision = flow::run(&exchange, &head, body, &request_id).await;
    // A request the server failed to serve is not charged to the caller.
    exchange.settle(decision.response.status()).await;
    drop(exchange);
    drop(permit);
    let status = decision.response.status().as_u16();
    let elapsed = started.elapsed();
    let route = decision.route.unwrap_or(crate::metrics::UNMATCHED);
    crate::metrics::request(route, &head.method, status, elapsed);
    if overloaded && status == 503 {
        // Shed: summarised, not a line each (`state::Shed`).
        let now_ms = u64::try_from(canon_store::now_millis()).unwrap_or(0);
        if let Some(shed) = app.shed.record(now_ms) {
            crate::shed::summarise(shed);
        }
    } else {
        // The one line per request: never a header, a query or a body (tokens
        // travel in headers; the route is the template, not the path).
        tracing::info!(
            target: "canon::request",
            method = %head.method,
            route,
            status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            request_id = &*request_id,
            tenant = decision.tenant.as_deref(),
            "request"
        );
    }
    tracing::debug!(route, trace = ?decision.trace, "decided");
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

/// Serves `app` on `listener` until `shutdown` resolves; then, after the
/// shutdown delay (serving on, `/readyz` 503, so a load balancer takes the
/// process out of its pool first), stops accepting, lets the requests in
/// flight finish (up to the shutdown grace), stops the job workers and
/// closes the store, so every acknowledged write is in the database file
/// when this returns.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let purge = tokio::spawn(purge_expired(app.clone()));
    let maintenance = crate::maintenance::watch(&app);
    let quotas = crate::quotas::watch(&app);
    let workers = crate::worker::start(&app, app.config.job_workers);
    let limits = Limits::from_config(&app.config);
    serve_connections(listener, app.service(), limits, drain(app.clone(), shutdown)).await;
    purge.abort();
    maintenance.abort();
    quotas.abort();
    workers.stop().await;
    // The day's last counts, so a restart goes on from them.
    if let Err(e) = crate::quotas::save(&app).await {
        tracing::warn!(error = %e, "could not save the daily quota counts at shutdown");
    }
    tracing::info!("job workers stopped; closing the store");
    match app.store.close().await {
        Ok(()) => tracing::info!("store closed"),
        // Every write was committed before it was acknowledged, so a store
        // that cannot be had at the very end (another process holds the
        // write lock, the file is gone) loses nothing acknowledged: what
        // is left undone is the final checkpoint, which the next open of the
        // database does. Not a failed shutdown.
        Err(canon_store::StoreError::Unavailable(reason)) => tracing::warn!(
            %reason,
            "store closed without its final checkpoint; every acknowledged write is committed"
        ),
        Err(e) => return Err(std::io::Error::other(e)),
    }
    Ok(())
}

/// Resolves `shutdown_delay` after `shutdown` does, `/readyz` answering
/// 503 from the moment `shutdown` resolved. Closing the listener and the
/// idle keep-alive connections at once would race a load balancer still
/// sending on them (a request written to a connection as it closes fails
/// unanswered); meanwhile the balancer's health check takes the process
/// out, and requests keep being served as usual.
async fn drain(app: Arc<App>, shutdown: impl Future<Output = ()>) {
    shutdown.await;
    app.start_draining();
    let delay = app.config.shutdown_delay;
    if !delay.is_zero() {
        tracing::info!(
            delay_ms = delay.as_millis() as u64,
            "draining: /readyz answers 503, requests are still served until the delay ends"
        );
        tokio::time::sleep(delay).await;
    }
    tracing::info!("no new connections; finishing the requests in flight");
}

/// [`serve_connections`] with the default connection limits.
pub async fn serve_router<S>(listener: TcpListener, service: S, shutdown: impl Future<Output = ()> + Send + 'static)
where
    S: crate::connections::ConnectionService,
{
    serve_connections(listener, service, Limits::default(), shutdown).await;
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

#[cfg(test)]
mod tests {
    #[test]
    fn new_request_ids_are_distinct_version_7_uuids_of_now() {
        let (a, b) = (super::new_request_id(), super::new_request_id());
        assert_ne!(a, b);
        let id = uuid::Uuid::parse_str(&a).expect("a UUID");
        assert_eq!(id.get_version_num(), 7);
        let (seconds, _) = id.get_timestamp().expect("a timestamp").to_unix();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(now.abs_diff(seconds) <= 1, "{seconds} vs {now}");
    }
}
