//! Shared limits in Redis over HTTP: two servers (two nodes) on one store
//! and one Redis share a key's burst and a tenant's daily quota; a Redis
//! that cannot be reached serves (open) or answers 503 (closed).
//!
//! The tests that need a Redis run when `CANON_TEST_REDIS_URL` is set
//! (`.ci/run` sets it) and print a note otherwise; each uses a key prefix of
//! its own, so parallel runs on one Redis do not meet.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use canon_server::config::RedisFailure;
use canon_server::limits::ManualClock;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

const TENANT: &str = "/v1/tenants/acme";

fn redis_url() -> Option<String> {
    let url = std::env::var("CANON_TEST_REDIS_URL").ok().filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!("CANON_TEST_REDIS_URL is not set: skipping a Redis limiter test");
    }
    url
}

/// Limits on and generous (the operator sets the world up); the tenant
/// gets tiny ones. Limits held in the Redis at `url` under `prefix`.
fn on_redis(url: &str, prefix: &str, failure: RedisFailure) -> canon_server::Config {
    canon_server::Config {
        rate_limit_per_second: 1000,
        rate_limit_burst: 1000,
        daily_quota: 1_000_000,
        auth_failure_limit: 0,
        redis_url: Some(url.into()),
        redis_prefix: prefix.into(),
        redis_failure: failure,
        ..config()
    }
}

/// 2030-01-01T12:00:00Z.
fn noon() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_893_499_200)
}

async fn get(s: &Server, token: &str) -> reqwest::Response {
    s.req(Method::GET, TENANT, Some(token)).send().await.unwrap()
}

async fn patch_limits(s: &Server, body: serde_json::Value) {
    let r = s
        .req(Method::PATCH, TENANT, Some(OPERATOR))
        .header("content-type", "application/merge-patch+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// Removes every key under `prefix`.
async fn clean(url: &str, prefix: &str) {
    let client = redis::Client::open(url).expect("url");
    let mut c = client.get_multiplexed_async_connection().await.expect("connect");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut c)
        .await
        .expect("keys");
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL").arg(keys).query_async(&mut c).await.expect("del");
    }
}

#[tokio::test]
async fn two_nodes_on_one_redis_share_the_burst_and_the_quota() {
    let Some(url) = redis_url() else { return };
    let prefix = format!("canon-test-{}", uuid::Uuid::new_v4().simple());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canon.db");
    // One clock for both nodes: no refill while the test runs.
    let clock = Arc::new(ManualClock::new(noon()));
    let a = Server::start_clocked_on(on_redis(&url, &prefix, RedisFailure::Closed), &path, clock.clone()).await;
    let w = world(&a, "acme").await;
    // Set before the second node first reads the tenant (its cache).
    patch_limits(&a, json!({"rate_limit_per_second": 1, "burst": 4, "daily_quota": 6})).await;
    let b = Server::start_clocked_on(on_redis(&url, &prefix, RedisFailure::Closed), &path, clock.clone()).await;

    // One key, alternating nodes: 4 in all, then 429 on either node.
    for (i, left) in [3, 2, 1, 0].into_iter().enumerate() {
        let node = if i % 2 == 0 { &a } else { &b };
        let r = get(node, &w.viewer).await;
        assert_eq!(r.status(), StatusCode::OK, "request {i}");
        assert!(
            header(&r, "ratelimit").starts_with(&format!("\"burst\";r={left};t=")),
            "{}",
            header(&r, "ratelimit")
        );
    }
    for node in [&a, &b] {
        let r = get(node, &w.viewer).await;
        assert_eq!(header(&r, "retry-after"), "1");
        assert_eq!(header(&r, "ratelimit"), "\"burst\";r=0;t=4");
        let body = assert_problem(r, 429, "rate-limited").await;
        assert_eq!(body["limit"], "burst");
    }

    // The tenant's quota of 6: 4 taken above; 2 more across its other keys
    // and both nodes, then 429 on both.
    assert_eq!(get(&b, &w.admin).await.status(), StatusCode::OK);
    assert_eq!(get(&a, &w.editor).await.status(), StatusCode::OK);
    for node in [&a, &b] {
        let body = assert_problem(get(node, &w.admin).await, 429, "quota-exhausted").await;
        assert_eq!(body["limit"], "daily");
    }
    // Midnight: a new day's quota, shared again.
    clock.set(noon() + Duration::from_secs(12 * 3600));
    assert_eq!(get(&b, &w.admin).await.status(), StatusCode::OK);
    drop((a, b));
    clean(&url, &prefix).await;
}

/// A Redis URL whose port nothing listens on.
async fn closed_port() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("redis://127.0.0.1:{port}")
}

/// `canon_rate_limiter_unavailable_total{failure}` now (this process's
/// recorder, shared by every server of the test binary).
fn unavailable_count(failure: &str) -> f64 {
    let line = format!("canon_rate_limiter_unavailable_total{{failure=\"{failure}\"}} ");
    canon_server::metrics::render()
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn an_unreachable_redis_fails_open_or_closed_as_configured() {
    let url = closed_port().await;
    let open = Server::start_with(on_redis(&url, "canon", RedisFailure::Open), |r| r).await;
    let w = world(&open, "acme").await;
    let before = unavailable_count("open");
    let r = get(&open, &w.viewer).await;
    assert_eq!(r.status(), StatusCode::OK, "open: served");
    assert!(r.headers().get("ratelimit").is_none(), "no limit was decided");
    assert!(unavailable_count("open") > before, "counted");

    let closed = Server::start_with(on_redis(&url, "canon", RedisFailure::Closed), |r| r).await;
    let r = get(&closed, OPERATOR).await;
    assert_eq!(header(&r, "retry-after"), "1");
    assert_problem(r, 503, "service-unavailable").await;
    // Public routes are not limited: the probe still answers.
    let r = closed.req(Method::GET, "/healthz", None).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
