//! The in-flight gate: the first thing every request meets, before the
//! request-id envelope, authentication and the decision flow
//! (docs/performance.md, "Overload").
//!
//! Beyond `CANON_MAX_IN_FLIGHT` requests in flight Canon answers 503 at once
//! rather than queueing. Under overload most requests are refused, so a
//! refusal must cost little: reaching the flow's first node through the
//! envelope, the handler and the flow (a problem built, its text checked and
//! serialised for every request) took most of the CPU the admitted requests
//! needed. Here a shed request costs a semaphore try, a request id, and a copy
//! of a response rendered once per process by the flow's own
//! [`flow::unavailable_response`] (so from the catalogue), with the request's
//! path and id put in: the same status, headers and body the flow's
//! ServiceAvailable node answers.

use std::convert::Infallible;
use std::future::{Future, Ready};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use canon_http::flow::{self, Availability};
use futures_util::FutureExt as _;
use futures_util::future::{Either, Join, Map};
use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::sync::OwnedSemaphorePermit;

use crate::state::{App, REQUEST_ID_HEADER};

/// Seconds a shed request is told to wait (`Retry-After`, and
/// `retry_after` in its body).
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// The detail of a shed request's problem.
pub const OVERLOADED: &str = "Canon is serving as many requests as it is allowed to; retry shortly.";

/// The flow's availability fact for a request beyond the in-flight limit.
pub fn overloaded() -> Availability {
    Availability::Unavailable {
        retry_after: RETRY_AFTER_SECONDS,
        reason: OVERLOADED.into(),
    }
}

/// Paths never shed and never counted against the in-flight limit: an
/// orchestrator must be able to tell "busy" from "dead" exactly when the
/// server is busiest, and a scrape of /metrics is how an operator sees it.
pub fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// How a request passed the gate, for `app::handle` (a request extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// It holds an in-flight slot, which the gate keeps until its response.
    Admitted,
    /// No slot was free, but maintenance mode refuses this request: the flow
    /// answers it (maintenance's 503 comes first at the ServiceAvailable
    /// node, with the operator's message), told that the server is
    /// overloaded in case maintenance ended meanwhile.
    Overloaded,
}

/// Wraps `inner` (the enveloped router) in the in-flight gate of `app`.
/// Renders the shed answer now, so the first shed request does not pay for it.
pub fn gated<S>(app: &Arc<App>, inner: S) -> Gated<S> {
    LazyLock::force(&SHED);
    Gated {
        app: app.clone(),
        inner,
    }
}

/// The gate as a tower service over the service every connection runs
/// ([`gated`]).
#[derive(Clone)]
pub struct Gated<S> {
    app: Arc<App>,
    inner: S,
}

/// What the service answers.
type Answer = Result<Response, Infallible>;

/// A passed request's response, with its slot (none for a probe, or for a
/// request maintenance refuses) held until the response is ready; no
/// allocation of its own.
type Passed<F> =
    Map<Join<F, Ready<Option<OwnedSemaphorePermit>>>, fn((Answer, Option<OwnedSemaphorePermit>)) -> Answer>;

/// `inner`, holding `permit` until it is ready.
fn holding<F: Future<Output = Answer>>(inner: F, permit: Option<OwnedSemaphorePermit>) -> Passed<F> {
    // The permit is dropped with the tuple, once the response is ready.
    let release: fn((Answer, Option<OwnedSemaphorePermit>)) -> Answer = |(answer, _permit)| answer;
    futures_util::future::join(inner, std::future::ready(permit)).map(release)
}

impl<S> tower::Service<Request> for Gated<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Answer>, Passed<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let path = req.uri().path();
        if is_probe(path) {
            return Either::Right(holding(self.inner.call(req), None));
        }
        let admission = match self.app.in_flight.clone().try_acquire_owned() {
            Ok(permit) => Ok(permit),
            // Maintenance answers before overload in the flow; its copy of the
            // setting is a lock read, and only an overloaded request reads it here.
            Err(_) if crate::maintenance::applies_to(path) && self.app.maintenance().enabled => Err(()),
            Err(_) => return Either::Left(std::future::ready(Ok(shed(&self.app, &req)))),
        };
        match admission {
            Ok(permit) => {
                req.extensions_mut().insert(Admission::Admitted);
                Either::Right(holding(self.inner.call(req), Some(permit)))
            }
            Err(()) => {
                req.extensions_mut().insert(Admission::Overloaded);
                Either::Right(holding(self.inner.call(req), None))
            }
        }
    }
}

/// Answers a request beyond the in-flight limit: the flow's 503, counted
/// in the metrics like any request (route `unmatched`: no route was looked
/// up; the handles are kept per thread) and in the once-a-second log summary.
fn shed(app: &App, req: &Request) -> Response {
    let started = Instant::now();
    let request_id = crate::app::request_id(req);
    let response = SHED.respond(req.uri().path(), &request_id, req.method() == http::Method::HEAD);
    crate::metrics::request(crate::metrics::UNMATCHED, req.method(), 503, started.elapsed());
    let now_ms = u64::try_from(canon_store::now_millis()).unwrap_or(0);
    if let Some(shed) = app.shed.record(now_ms) {
        summarise(shed);
    }
    response
}

/// The log's summary line of shed requests (`state::Shed`).
pub(crate) fn summarise(shed: u64) {
    tracing::warn!(
        shed,
        "in-flight limit reached: requests shed with 503 since the last such line"
    );
}

/// The shed answer, rendered once.
static SHED: LazyLock<Rendered> = LazyLock::new(Rendered::new);

/// A part of the rendered body.
#[derive(Debug)]
enum Piece {
    Text(Bytes),
    Instance,
    RequestId,
}

/// The ServiceAvailable node's 503 for an overloaded request, rendered
/// with stand-ins for the two things that vary (the problem's `instance`,
/// the request's path, and its `request_id`), then cut around them.
#[derive(Debug)]
struct Rendered {
    status: StatusCode,
    headers: HeaderMap,
    /// The body: text, and where the path and the id go. Empty when the
    /// stand-ins could not be found (then each answer is rendered whole).
    pieces: Vec<Piece>,
    /// Bytes of text in `pieces`.
    text_len: usize,
}

/// Stand-ins no JSON encoding changes and no problem text contains.
const INSTANCE_MARK: &str = "canon-shed-instance-6f1d2b";
const REQUEST_ID_MARK: &str = "canon-shed-request-id-6f1d2b";

impl Rendered {
    fn new() -> Rendered {
        let (parts, body) =
            flow::unavailable_response(RETRY_AFTER_SECONDS, OVERLOADED, INSTANCE_MARK, REQUEST_ID_MARK).into_parts();
        let pieces = cut(&body).unwrap_or_else(|| {
            tracing::error!("the shed answer could not be prepared; each is rendered whole");
            Vec::new()
        });
        let text_len = pieces
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.len(),
                _ => 0,
            })
            .sum();
        Rendered {
            status: parts.status,
            headers: parts.headers,
            pieces,
            text_len,
        }
    }

    /// The answer to the request at `instance` whose id is `request_id`,
    /// with `X-Request-Id` as the envelope sets it, framed as the envelope
    /// frames the flow's answers (`app::framed`): `Content-Length` set here
    /// only for `HEAD` (hyper sends no body then), otherwise hyper's.
    fn respond(&self, instance: &str, request_id: &str, head: bool) -> Response {
        let (mut response, len) = if self.pieces.is_empty() {
            let (parts, body) =
                flow::unavailable_response(RETRY_AFTER_SECONDS, OVERLOADED, instance, request_id).into_parts();
            let len = body.len();
            (Response::from_parts(parts, Body::from(body)), len)
        } else {
            let mut body = Vec::with_capacity(self.text_len + instance.len() + request_id.len() + 16);
            for piece in &self.pieces {
                match piece {
                    Piece::Text(t) => body.extend_from_slice(t),
                    Piece::Instance => json_string(&mut body, instance),
                    Piece::RequestId => json_string(&mut body, request_id),
                }
            }
            let len = body.len();
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = self.status;
            *response.headers_mut() = self.headers.clone();
            (response, len)
        };
        if let Ok(v) = HeaderValue::from_str(request_id) {
            response.headers_mut().insert(REQUEST_ID_HEADER, v);
        }
        if head {
            response
                .headers_mut()
                .insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        response
    }
}

/// `body` cut around the JSON strings of the two stand-ins, each found
/// exactly once.
fn cut(body: &Bytes) -> Option<Vec<Piece>> {
    let instance = serde_json::to_string(INSTANCE_MARK).ok()?;
    let request_id = serde_json::to_string(REQUEST_ID_MARK).ok()?;
    let find = |mark: &str| {
        let text = std::str::from_utf8(body).ok()?;
        let at = text.find(mark)?;
        (text.matches(mark).count() == 1).then_some((at, mark.len()))
    };
    let mut marks = [
        (find(&instance)?, Piece::Instance),
        (find(&request_id)?, Piece::RequestId),
    ];
    marks.sort_by_key(|((at, _), _)| *at);
    let mut pieces = Vec::with_capacity(5);
    let mut from = 0;
    for ((at, len), piece) in marks {
        if at < from {
            return None;
        }
        pieces.push(Piece::Text(body.slice(from..at)));
        pieces.push(piece);
        from = at + len;
    }
    pieces.push(Piece::Text(body.slice(from..)));
    Some(pieces)
}

/// Appends `s` as a JSON string, escaped as the flow's serialiser escapes it.
fn json_string(out: &mut Vec<u8>, s: &str) {
    if serde_json::to_writer(&mut *out, s).is_err() {
        // Writing to a Vec cannot fail; an empty string keeps the body JSON.
        out.extend_from_slice(b"\"\"");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::REQUEST_ID;

    async fn body_of(response: Response) -> (http::response::Parts, Bytes) {
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (parts, bytes)
    }

    #[tokio::test]
    async fn the_shed_answer_is_the_flows_byte_for_byte() {
        let rendered = Rendered::new();
        assert!(!rendered.pieces.is_empty(), "the stand-ins were found");
        for (instance, id) in [
            ("/v1/tenants/acme/collections/devices/records/r1", "req-1"),
            ("/v1/tenants/a%22b/x\\y\"z", "id.with:chars_-"),
            ("/", "0196a0b2-0000-7000-8000-000000000000"),
            ("/v1/ünïcode/\u{1}", ""),
        ] {
            let (parts, body) = body_of(rendered.respond(instance, id, false)).await;
            let (want, want_body) =
                flow::unavailable_response(RETRY_AFTER_SECONDS, OVERLOADED, instance, id).into_parts();
            assert_eq!(parts.status, want.status);
            assert_eq!(body, want_body, "{instance}");
            let mut headers = want.headers.clone();
            if let Ok(v) = HeaderValue::from_str(id) {
                headers.insert(REQUEST_ID, v);
            }
            assert_eq!(parts.headers, headers);
            // To HEAD, the length of the body it would have had.
            let (parts, _) = body_of(rendered.respond(instance, id, true)).await;
            headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(want_body.len()));
            assert_eq!(parts.headers, headers);
        }
    }

    #[tokio::test]
    async fn without_its_stand_ins_the_answer_is_rendered_whole() {
        let rendered = Rendered {
            pieces: Vec::new(),
            ..Rendered::new()
        };
        let (parts, body) = body_of(rendered.respond("/v1/x", "id-2", false)).await;
        let (want, want_body) =
            flow::unavailable_response(RETRY_AFTER_SECONDS, OVERLOADED, "/v1/x", "id-2").into_parts();
        assert_eq!(parts.status, want.status);
        assert_eq!(body, want_body);
        assert_eq!(parts.headers.get(REQUEST_ID).unwrap(), "id-2");
    }

    #[test]
    fn stand_ins_found_twice_or_not_at_all_are_refused() {
        let once = serde_json::to_vec(&serde_json::json!({"a": INSTANCE_MARK, "b": REQUEST_ID_MARK})).unwrap();
        assert!(cut(&Bytes::from(once)).is_some());
        let twice =
            serde_json::to_vec(&serde_json::json!({"a": INSTANCE_MARK, "b": INSTANCE_MARK, "c": REQUEST_ID_MARK}))
                .unwrap();
        assert!(cut(&Bytes::from(twice)).is_none());
        assert!(cut(&Bytes::from_static(b"{}")).is_none());
    }
}
