//! `GET /metrics`: the operator's, in Prometheus's text format, and its
//! series move with the traffic. Every server of this process shares one
//! recorder, so the tests compare values before and after, never absolute
//! ones.

mod common;

use std::collections::BTreeMap;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// One sample: the metric's name and labels, and its value.
type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

/// Parses Prometheus's text exposition format (version 0.0.4) strictly
/// enough to fail on anything malformed: `# HELP`/`# TYPE` lines, and
/// `name{label="value",…} value` samples.
fn parse(text: &str) -> (Samples, BTreeMap<String, String>) {
    let mut samples = Samples::new();
    let mut types = BTreeMap::new();
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars()
                .enumerate()
                .all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit()))
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(name_ok(name), "{line}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment: {line}");
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("value in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("labels in {line}"));
                let mut labels = BTreeMap::new();
                let mut rest = body;
                while !rest.is_empty() {
                    let (key, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("label in {line}"));
                    assert!(name_ok(key), "{line}");
                    let end = after.find('"').unwrap_or_else(|| panic!("label value in {line}"));
                    labels.insert(key.to_owned(), after[..end].to_owned());
                    rest = after[end + 1..].trim_start_matches(',');
                }
                (name, labels)
            }
        };
        assert!(name_ok(name), "{line}");
        samples.insert((name.to_owned(), labels), value);
    }
    (samples, types)
}

async fn scrape(s: &Server) -> (String, Samples, BTreeMap<String, String>) {
    let r = s.req(Method::GET, "/metrics", Some(OPERATOR)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), "text/plain; charset=utf-8");
    let text = r.text().await.unwrap();
    let (samples, types) = parse(&text);
    (text, samples, types)
}

fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let labels: BTreeMap<String, String> = labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
    samples.get(&(name.to_owned(), labels)).copied().unwrap_or(0.0)
}

/// The sum of the samples of `name` whose labels include `labels`.
fn sum(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|((n, l), _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test]
async fn metrics_are_the_operators_only() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let r = s.req(Method::GET, "/metrics", None).send().await.unwrap();
    assert_eq!(header(&r, "www-authenticate"), "Bearer realm=\"canon\"");
    assert_problem(r, 401, "credentials-required").await;
    let r = s.req(Method::GET, "/metrics", Some(&w.admin)).send().await.unwrap();
    assert_problem(r, 403, "forbidden").await;
    let r = s.req(Method::POST, "/metrics", Some(OPERATOR)).send().await.unwrap();
    assert_eq!(header(&r, "allow"), "GET, HEAD, OPTIONS");
    assert_problem(r, 405, "method-not-allowed").await;
}

#[tokio::test]
async fn counters_move_by_route_template_and_tenants_never_appear() {
    let s = Server::start().await;
    let w = world(&s, "tenant-with-a-telling-name").await;
    let records = "/v1/tenants/tenant-with-a-telling-name/collections/devices/records";
    let (_, before, _) = scrape(&s).await;

    for _ in 0..3 {
        let r = s.req(Method::GET, "/healthz", None).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    for port in 0..4 {
        s.ok_json(Method::POST, records, &w.editor, Some(json!({"port": port})))
            .await;
    }
    let r = s.call(Method::POST, records, &w.viewer, Some(json!({"port": 9}))).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = s.req(Method::GET, "/no/such/path-xyz", None).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let (text, after, types) = scrape(&s).await;
    let delta = |name: &str, labels: &[(&str, &str)]| value(&after, name, labels) - value(&before, name, labels);
    let requests = "canon_http_requests_total";
    assert_eq!(types.get(requests).map(String::as_str), Some("counter"));
    assert!(delta(requests, &[("route", "/healthz"), ("method", "GET"), ("status", "200")]) >= 3.0);
    let template = "/v1/tenants/{tenant}/collections/{collection}/records";
    assert!(
        delta(requests, &[("route", template), ("method", "POST"), ("status", "201")]) >= 4.0,
        "{text}"
    );
    assert!(delta(requests, &[("route", template), ("method", "POST"), ("status", "403")]) >= 1.0);
    assert!(
        delta(
            requests,
            &[("route", "unmatched"), ("method", "GET"), ("status", "404")]
        ) >= 1.0
    );
    // Latency histograms, with buckets.
    let latency = "canon_http_request_duration_seconds";
    assert_eq!(types.get(latency).map(String::as_str), Some("histogram"), "{text}");
    let count = |samples: &Samples| sum(samples, &format!("{latency}_count"), &[("route", template)]);
    assert!(count(&after) - count(&before) >= 5.0);
    assert!(
        sum(
            &after,
            &format!("{latency}_bucket"),
            &[("route", template), ("le", "+Inf")]
        ) >= 5.0
    );
    // The store's latency and the writer's group commits.
    assert!(
        sum(&after, "canon_store_call_duration_seconds_count", &[("op", "write")]) >= 4.0,
        "{text}"
    );
    assert!(sum(&after, "canon_store_call_duration_seconds_count", &[("op", "read")]) >= 1.0);
    assert!(sum(&after, "canon_store_commit_batch_size_count", &[]) >= 1.0, "{text}");
    // Gauges: this scrape is in flight, on an open connection.
    assert!(value(&after, "canon_http_requests_in_flight", &[]) >= 1.0, "{text}");
    assert!(value(&after, "canon_open_connections", &[]) >= 1.0, "{text}");
    // Only templates and fixed words in label values: no tenant, no raw path.
    assert!(!text.contains("telling-name"), "{text}");
    assert!(!text.contains("path-xyz"), "{text}");
}

#[tokio::test]
async fn rate_limit_refusals_are_counted_by_limit() {
    let s = Server::start().await;
    let (_, before, _) = scrape(&s).await;
    canon_server::metrics::rate_limited("burst");
    canon_server::metrics::rate_limited("burst");
    let (_, after, types) = scrape(&s).await;
    let name = "canon_rate_limited_total";
    assert_eq!(types.get(name).map(String::as_str), Some("counter"));
    assert!(value(&after, name, &[("limit", "burst")]) - value(&before, name, &[("limit", "burst")]) >= 2.0);
}

#[tokio::test]
async fn a_scrape_is_never_refused_by_the_operators_own_rate() {
    // The operator's key has a burst of 2; the API refuses its third
    // request, /metrics (how the operator watches the server) never does.
    let s = Server::start_with(
        canon_server::Config {
            rate_limit_per_second: 1,
            rate_limit_burst: 2,
            ..config()
        },
        |r| r,
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            s.call(Method::GET, "/v1/tenants", OPERATOR, None)
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 429]);
    for _ in 0..3 {
        let r = s.call(Method::GET, "/metrics", OPERATOR, None).await;
        assert_eq!(r.status(), 200);
        assert!(
            r.headers().get("ratelimit").is_none(),
            "/metrics is not under a /v1 policy"
        );
    }
}
