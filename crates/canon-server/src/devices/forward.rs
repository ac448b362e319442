//! Relaying one request to a device and its answer back, both streamed
//! (docs/devices.md, "What is forwarded").

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use canon_http::body::{Body, ChunkSource, StreamError, Streamed};
use canon_http::flow::{BoxFuture, StreamedBody};
use canon_http::{Problem, ProblemKind};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response};

use super::address::{AddressPolicy, Refusal};
use super::breaker::Pass;
use super::config::NameLookup;

/// Hop-by-hop fields (RFC 9110 §7.6.1), never relayed either way, and the
/// fields Canon sets itself on the way to the device.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether `name` is hop-by-hop, or named by the message's `Connection`.
fn is_hop_by_hop(name: &HeaderName, headers: &HeaderMap) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
        || headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case(name.as_str()))
}

/// The end-to-end fields of `headers`, `Via` with `via` appended.
fn end_to_end(headers: &HeaderMap, via: &str, drop: &[HeaderName]) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.len() + 1);
    for (name, value) in headers {
        if !is_hop_by_hop(name, headers) && !drop.contains(name) && name != header::VIA {
            out.append(name.clone(), value.clone());
        }
    }
    let earlier: Vec<&str> = headers
        .get_all(header::VIA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let value = if earlier.is_empty() {
        via.to_owned()
    } else {
        format!("{}, {via}", earlier.join(", "))
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        out.insert(header::VIA, v);
    }
    out
}

/// Whether a request with these headers already went through this process
/// (its `Via` names it): a device pointed back at Canon would loop.
pub fn looped(headers: &HeaderMap, via: &str) -> bool {
    let token = via.rsplit(' ').next().unwrap_or(via);
    headers
        .get_all(header::VIA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|hop| hop.trim().ends_with(token)))
}

/// An address refused at connect time, carried through the HTTP client's
/// resolver so the failure can say why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AddressRefused(pub Refusal);

/// The HTTP client's resolver: every address a device's name resolves to
/// at connect time is checked, so a name cannot be re-pointed (DNS
/// rebinding) at an address registration would have refused.
pub struct Guarded {
    /// The address rules.
    pub policy: AddressPolicy,
    /// The lookup.
    pub lookup: Arc<dyn NameLookup>,
}

impl reqwest::dns::Resolve for Guarded {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let lookup = self.lookup.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let ips = lookup.lookup(&host).await?;
            for ip in &ips {
                policy
                    .check_ip(*ip)
                    .map_err(|refusal| Box::new(AddressRefused(refusal)) as Box<dyn std::error::Error + Send + Sync>)?;
            }
            let addrs: reqwest::dns::Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// One request on its way to a device.
pub struct Outgoing {
    /// The method.
    pub method: Method,
    /// The full URL: the endpoint, the path, the query.
    pub url: reqwest::Url,
    /// The caller's fields.
    pub headers: HeaderMap,
    /// The device's own fields (opened), added last: they win.
    pub device_headers: Vec<(HeaderName, HeaderValue)>,
    /// The body, when the request has one.
    pub body: Option<StreamedBody>,
    /// How long the device has to send its response headers; also the
    /// longest pause allowed in its body.
    pub timeout: Duration,
}

/// How a relayed request ended without the device's answer.
#[derive(Debug)]
pub enum Failure {
    /// The device failed (502/504): counts against its circuit.
    Device(Problem),
    /// Something else (the caller's body, a refused address): does not.
    Other(Problem),
}

/// The problem a failed exchange with the device is, judged from the HTTP
/// client's error.
fn device_failure(e: &reqwest::Error) -> Failure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(AddressRefused(refusal)) = err.downcast_ref::<AddressRefused>() {
            return Failure::Other(Problem::new(
                ProblemKind::BadGateway,
                format!("The device's endpoint now resolves to an address Canon may not reach: {refusal}."),
            ));
        }
        source = err.source();
    }
    if let Some(why) = super::tls::failure(e) {
        return Failure::Device(Problem::new(
            ProblemKind::BadGateway,
            format!("TLS with the device failed: {why}."),
        ));
    }
    let detail = if e.is_connect() {
        "The device's endpoint refused the connection or could not be reached."
    } else {
        "The device closed or reset the connection, or answered something that is not HTTP."
    };
    Failure::Device(Problem::new(ProblemKind::BadGateway, detail))
}

/// Sends `out` with `client`; the device's answer as a response whose body
/// streams from the device, holding `pass` (the device's slot) until it
/// ends. `via` is this hop's `Via` value.
pub async fn relay(
    client: &reqwest::Client,
    out: Outgoing,
    via: &str,
    mut pass: Pass,
) -> Result<Response<Body>, Failure> {
    let mut headers = end_to_end(
        &out.headers,
        via,
        &[header::HOST, header::AUTHORIZATION, header::EXPECT],
    );
    for (name, value) in out.device_headers {
        headers.insert(name, value);
    }
    // What went wrong with the caller's own body, if that is what ended the
    // exchange: then the answer is the caller's problem, not a 502.
    let body_problem: Arc<Mutex<Option<Problem>>> = Arc::new(Mutex::new(None));
    // The device's `timeout_ms` counts from the moment it has the whole
    // request: a long upload is not the device's delay. While the body is
    // being relayed, the wait restarts with every chunk handed over, so a
    // device that stops reading it is still cut off.
    let (progress, mut relayed) = tokio::sync::watch::channel(out.body.is_none());
    let mut request = reqwest::Request::new(out.method, out.url);
    *request.headers_mut() = headers;
    if let Some(body) = out.body {
        *request.body_mut() = Some(reqwest::Body::wrap_stream(caller_chunks(
            body,
            body_problem.clone(),
            progress,
        )));
    }
    let started = Instant::now();
    let device_time = async {
        loop {
            if *relayed.borrow_and_update() {
                break tokio::time::sleep(out.timeout).await;
            }
            match tokio::time::timeout(out.timeout, relayed.changed()).await {
                Err(_) => break,
                Ok(Ok(())) => {}
                // The body ended in an error, which the exchange reports.
                Ok(Err(_)) => std::future::pending::<()>().await,
            }
        }
    };
    let sent = tokio::select! {
        sent = client.execute(request) => Ok(sent),
        () = device_time => Err(()),
    };
    let caller_fault = || body_problem.lock().ok().and_then(|mut p| p.take());
    let response = match sent {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => {
            if let Some(problem) = caller_fault() {
                return Err(Failure::Other(problem));
            }
            let failure = device_failure(&e);
            tracing::info!(error = %e.without_url(), "device exchange failed");
            if matches!(failure, Failure::Device(_)) {
                pass.failed(Instant::now());
            }
            return Err(failure);
        }
        Err(_) => {
            if let Some(problem) = caller_fault() {
                return Err(Failure::Other(problem));
            }
            pass.failed(Instant::now());
            return Err(Failure::Device(
                Problem::new(
                    ProblemKind::GatewayTimeout,
                    format!(
                        "The device sent no response headers within its timeout_ms ({} ms).",
                        out.timeout.as_millis()
                    ),
                )
                .with("timeout_ms", out.timeout.as_millis() as u64),
            ));
        }
    };
    pass.succeeded();
    tracing::debug!(
        status = response.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "device answered"
    );
    let mut answer = Response::new(Body::empty());
    *answer.status_mut() = response.status();
    *answer.headers_mut() = end_to_end(response.headers(), via, &[]);
    *answer.body_mut() = Body::Streamed(Streamed {
        length: None,
        chunks: Box::new(DeviceBody {
            response: Some(response),
            idle: out.timeout,
            _pass: pass,
        }),
    });
    Ok(answer)
}

/// The caller's body as the HTTP client's stream; a failure is kept in
/// `problem` for the answer.
/// `progress` is told of every chunk handed over (a change without a new
/// value), and becomes `true` once the last one was.
fn caller_chunks(
    body: StreamedBody,
    problem: Arc<Mutex<Option<Problem>>>,
    progress: tokio::sync::watch::Sender<bool>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures_util::stream::unfold((body, problem, progress), |(mut body, problem, progress)| async move {
        let Some(next) = body.next().await else {
            progress.send_replace(true);
            return None;
        };
        match next {
            Ok(chunk) => {
                progress.send_modify(|_| {});
                Some((Ok(chunk), (body, problem, progress)))
            }
            Err(p) => {
                if let Ok(mut slot) = problem.lock() {
                    *slot = Some(p);
                }
                Some((
                    Err(std::io::Error::other("the caller's body failed")),
                    (body, problem, progress),
                ))
            }
        }
    })
}

/// The device's body, chunk by chunk as it arrives; a pause longer than the
/// device's timeout, or a failure, ends it with an error, and the server
/// cuts the connection (the status was sent already).
struct DeviceBody {
    response: Option<reqwest::Response>,
    idle: Duration,
    _pass: Pass,
}

impl ChunkSource for DeviceBody {
    fn next_chunk(&mut self) -> BoxFuture<'_, Option<Result<Bytes, StreamError>>> {
        Box::pin(async move {
            let response = self.response.as_mut()?;
            let outcome = match tokio::time::timeout(self.idle, response.chunk()).await {
                Ok(Ok(Some(chunk))) => return Some(Ok(chunk)),
                Ok(Ok(None)) => None,
                Ok(Err(e)) => Some(Err(StreamError(format!(
                    "the device's body failed: {}",
                    e.without_url()
                )))),
                Err(_) => Some(Err(StreamError(format!(
                    "the device's body paused longer than its timeout ({} ms)",
                    self.idle.as_millis()
                )))),
            };
            self.response = None;
            outcome
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_fields_and_those_connection_names_stay_behind() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret-hop"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer caller"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.insert(header::VIA, HeaderValue::from_static("1.0 edge"));
        let out = end_to_end(&h, "1.1 canon-1", &[header::AUTHORIZATION]);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[header::CONTENT_TYPE], "text/plain");
        assert_eq!(out[header::VIA], "1.0 edge, 1.1 canon-1");
        assert!(looped(&out, "1.1 canon-1"));
        assert!(!looped(&h, "1.1 canon-1"));
    }
}
