//! Prometheus metrics (`GET /metrics`, docs/operations.md).
//!
//! The `metrics` facade records; the Prometheus exporter's recorder is
//! installed once per process ([`install`], called by `App::new`) and
//! rendered by the `/metrics` resource. One recorder per process, not per
//! [`crate::App`]: the facade has one global recorder, and tests that start
//! many servers in one process share it (they compare counters before and
//! after, never absolute values).
//!
//! Labels are bounded sets of `&'static str`: a route's *template* (never
//! the path), the method, the status, a limit's name. No tenant name or id
//! ever becomes a label value (unbounded cardinality), and recording a
//! request allocates no label string.

use foldhash::{HashMap, HashMapExt};
use std::cell::RefCell;
use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use http::Method;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests answered, by `route`, `method`, `status`.
pub const REQUESTS: &str = "canon_http_requests_total";
/// Seconds from a request's head to its response's head, by `route`,
/// `method` (a histogram).
pub const REQUEST_SECONDS: &str = "canon_http_request_duration_seconds";
/// Requests being handled now.
pub const IN_FLIGHT: &str = "canon_http_requests_in_flight";
/// Connections open now.
pub const OPEN_CONNECTIONS: &str = "canon_open_connections";
/// Connections closed as soon as they were accepted, by `reason`
/// ([`connection_refused`]).
pub const CONNECTIONS_REFUSED: &str = "canon_connections_refused_total";
/// The route label of a request that matched no route, or was answered
/// before routing (shed at the in-flight limit).
pub const UNMATCHED: &str = "unmatched";
/// Requests refused by a rate limit or quota, by `limit` ([`rate_limited`]).
pub const RATE_LIMITED: &str = "canon_rate_limited_total";
/// Rate-limit decisions the shared limiter (Redis) could not make, by
/// `failure` (`open`: served unlimited; `closed`: refused with 503)
/// ([`limiter_unavailable`]).
pub const LIMITER_UNAVAILABLE: &str = "canon_rate_limiter_unavailable_total";
/// Look-ups of the caches in front of the store, by `cache` (`keys`,
/// `tenants`, `collections`) and `outcome` (`hit`, `miss`).
pub const CACHE_LOOKUPS: &str = "canon_cache_lookups_total";
/// Store calls' seconds, by `op` (`read`, `write`): recorded by canon-store.
pub const STORE_SECONDS: &str = canon_store::metrics::STORE_SECONDS;
/// Writes per group commit: recorded by canon-store.
pub const COMMIT_BATCH: &str = canon_store::metrics::COMMIT_BATCH;

/// Latency buckets, in seconds: 0.5 ms to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Batch-size buckets: powers of two up to the engine's largest batch.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
/// How often the exporter's upkeep runs (drains histogram samples, so
/// memory stays bounded between scrapes).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder as the process's global recorder (once;
/// later calls return the same handle) and starts its upkeep thread.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(COMMIT_BATCH.into()), BATCH_BUCKETS));
        let builder = match builder {
            Ok(b) => b,
            // Only an empty bucket list is refused: not ours.
            Err(e) => {
                tracing::error!(error = %e, "metric buckets refused; histograms become summaries");
                PrometheusBuilder::new()
            }
        };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            // Someone embedding Canon installed their own recorder: ours
            // then renders only what is recorded through it (nothing).
            tracing::warn!("a metrics recorder was installed already; /metrics stays empty");
        }
        describe();
        let upkeep = handle.clone();
        let started = std::thread::Builder::new()
            .name("canon-metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                }
            });
        if let Err(e) = started {
            tracing::warn!(error = %e, "cannot start the metrics upkeep thread");
        }
        handle
    })
}

/// The metrics in Prometheus's text format.
pub fn render() -> String {
    install().render()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(REQUESTS, "Requests answered, by route template, method and status.");
    describe_histogram!(
        REQUEST_SECONDS,
        Unit::Seconds,
        "Time from a request's head to its response's head, by route template and method."
    );
    describe_gauge!(IN_FLIGHT, "Requests being handled now.");
    describe_gauge!(OPEN_CONNECTIONS, "Connections open now.");
    describe_counter!(
        CONNECTIONS_REFUSED,
        "Connections closed as soon as they were accepted, by reason (per-address: its address had as many open as it may)."
    );
    describe_counter!(RATE_LIMITED, "Requests refused by a rate limit or quota, by limit.");
    describe_counter!(
        LIMITER_UNAVAILABLE,
        "Rate-limit decisions (and refunds) Redis could not answer, by failure policy (open: served without limits; closed: 503)."
    );
    describe_histogram!(
        STORE_SECONDS,
        Unit::Seconds,
        "Store calls' latency, by op (read, write)."
    );
    describe_histogram!(COMMIT_BATCH, "Writes committed together by one group commit.");
}

/// Counts a request refused by the rate limit or quota named `limit`
/// (`LimitName::as_str`: `burst`, `daily`, `auth-failures`, `in-flight`): a fixed,
/// small set of names, never a key or tenant.
pub fn rate_limited(limit: &'static str) {
    metrics::counter!(RATE_LIMITED, "limit" => limit).increment(1);
}

/// Counts a call the shared limiter could not answer, under the failure
/// policy `failure` (`open` or `closed`).
pub fn limiter_unavailable(failure: &'static str) {
    metrics::counter!(LIMITER_UNAVAILABLE, "failure" => failure).increment(1);
}

/// A label value of the per-thread handle maps, known by where it lies: the
/// values are `&'static str`s from fixed tables, and hashing an address and
/// a length instead of the text was most of what finding a handle cost. The
/// same address and length are the same text; two equal texts at different
/// addresses only get a handle each, both to the one metric the recorder
/// keeps for the label set.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Label(usize, usize);

impl Label {
    fn of(value: &'static str) -> Label {
        Label(value.as_ptr() as usize, value.len())
    }
}

/// Records one answered request.
///
/// The handles are kept per thread by their labels: building a metric's key
/// and finding it in the recorder's registry cost more than the rest of the
/// request's metrics (issue 11's profile), and the label sets are few.
pub fn request(route: &'static str, method: &Method, status: u16, elapsed: Duration) {
    type Handles = HashMap<(Label, Label, Label), (metrics::Counter, metrics::Histogram)>;
    thread_local! {
        static HANDLES: RefCell<Handles> = RefCell::new(HashMap::new());
    }
    let method = method_label(method);
    let status = status_label(status);
    HANDLES.with_borrow_mut(|handles| {
        let key = (Label::of(route), Label::of(method), Label::of(status));
        let (count, latency) = handles.entry(key).or_insert_with(|| {
            (
                metrics::counter!(REQUESTS, "route" => route, "method" => method, "status" => status),
                metrics::histogram!(REQUEST_SECONDS, "route" => route, "method" => method),
            )
        });
        count.increment(1);
        latency.record(elapsed.as_secs_f64());
    });
}

/// Counts a look-up of the cache named `cache` (`keys`, `tenants`,
/// `collections`) that hit or missed.
pub fn cache_lookup(cache: &'static str, hit: bool) {
    type Handles = HashMap<(Label, bool), metrics::Counter>;
    thread_local! {
        static HANDLES: RefCell<Handles> = RefCell::new(HashMap::new());
    }
    HANDLES.with_borrow_mut(|handles| {
        handles
            .entry((Label::of(cache), hit))
            .or_insert_with(|| {
                let outcome = if hit { "hit" } else { "miss" };
                metrics::counter!(CACHE_LOOKUPS, "cache" => cache, "outcome" => outcome)
            })
            .increment(1);
    });
}

/// Counts a connection closed at accept, for `reason` (`per-address`).
pub fn connection_refused(reason: &'static str) {
    metrics::counter!(CONNECTIONS_REFUSED, "reason" => reason).increment(1);
}

/// Counts a request as in flight while it lives.
pub struct InFlight(());

/// The in-flight gauge's handle, kept per thread like [`request`]'s: the
/// gauge moves twice per request, and finding it in the registry each time
/// was most of that.
fn in_flight_gauge(change: f64) {
    thread_local! {
        static GAUGE: metrics::Gauge = metrics::gauge!(IN_FLIGHT);
    }
    GAUGE.with(|g| g.increment(change));
}

impl InFlight {
    /// A request starts.
    pub fn new() -> InFlight {
        in_flight_gauge(1.0);
        InFlight(())
    }
}

impl Default for InFlight {
    fn default() -> Self {
        InFlight::new()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        in_flight_gauge(-1.0);
    }
}

/// Counts a connection as open while it lives.
pub struct OpenConnection(());

impl OpenConnection {
    /// A connection was accepted.
    pub fn new() -> OpenConnection {
        metrics::gauge!(OPEN_CONNECTIONS).increment(1.0);
        OpenConnection(())
    }
}

impl Default for OpenConnection {
    fn default() -> Self {
        OpenConnection::new()
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!(OPEN_CONNECTIONS).decrement(1.0);
    }
}

/// The label of a method: the registered ones by name, anything else
/// `OTHER` (a client may send any token as a method).
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "OTHER",
    }
}

/// Every status's label, made once.
static STATUS_LABELS: LazyLock<Vec<String>> = LazyLock::new(|| (100..600).map(|c: u16| c.to_string()).collect());

/// The label of a status, without allocating.
pub fn status_label(status: u16) -> &'static str {
    match status.checked_sub(100).and_then(|i| STATUS_LABELS.get(usize::from(i))) {
        Some(label) => label.as_str(),
        None => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_static_and_bounded() {
        assert_eq!(status_label(200), "200");
        assert_eq!(status_label(599), "599");
        assert_eq!(status_label(42), "other");
        assert_eq!(status_label(600), "other");
        assert_eq!(method_label(&Method::from_bytes(b"FOO").unwrap()), "OTHER");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
    }
}
