//! Rate limits, daily quotas, failed-auth limiting and each caller's share
//! of the requests in flight, over HTTP on a real socket. Time is a
//! `ManualClock` the tests move: no test waits for a refill or a midnight.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use canon_server::limits::ManualClock;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

const TENANT: &str = "/v1/tenants/acme";
const RECORDS: &str = "/v1/tenants/acme/collections/devices/records";

/// 2030-01-01T23:59:00Z: a minute before midnight UTC.
fn before_midnight() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_893_542_340)
}

/// Limits on, generous by default (the operator sets the world up with
/// them); each test gives the tenant tiny ones.
fn limited() -> canon_server::Config {
    canon_server::Config {
        rate_limit_per_second: 1000,
        rate_limit_burst: 1000,
        daily_quota: 1_000_000,
        auth_failure_limit: 0,
        ..config()
    }
}

async fn start(config: canon_server::Config) -> (Server, Arc<ManualClock>, World) {
    let clock = Arc::new(ManualClock::new(before_midnight()));
    let s = Server::start_clocked(config, clock.clone(), |r| r).await;
    let w = world(&s, "acme").await;
    (s, clock, w)
}

async fn patch_limits(s: &Server, body: Value) -> reqwest::Response {
    s.req(Method::PATCH, TENANT, Some(OPERATOR))
        .header("content-type", "application/merge-patch+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

async fn get(s: &Server, path: &str, token: &str) -> reqwest::Response {
    s.req(Method::GET, path, Some(token)).send().await.unwrap()
}

#[tokio::test]
async fn the_burst_is_429_with_retry_after_until_the_next_token() {
    let (s, clock, w) = start(limited()).await;
    let r = patch_limits(&s, json!({"rate_limit_per_second": 1, "burst": 3})).await;
    assert_eq!(r.status(), StatusCode::OK);
    for left in [2, 1, 0] {
        let r = get(&s, TENANT, &w.viewer).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            header(&r, "ratelimit-policy"),
            "\"burst\";q=3;w=3, \"daily\";q=1000000;w=86400"
        );
        assert!(
            header(&r, "ratelimit").starts_with(&format!("\"burst\";r={left};t=")),
            "{}",
            header(&r, "ratelimit")
        );
    }
    let r = get(&s, TENANT, &w.viewer).await;
    assert_eq!(header(&r, "retry-after"), "1");
    assert_eq!(header(&r, "ratelimit"), "\"burst\";r=0;t=3");
    assert!(header(&r, "ratelimit-policy").contains("\"burst\";q=3;w=3"));
    let body = assert_problem(r, 429, "rate-limited").await;
    assert_eq!(body["limit"], "burst");
    assert_eq!(body["retry_after"], 1);
    assert_eq!(
        (body["quota"].as_u64(), body["window_seconds"].as_u64()),
        (Some(3), Some(3))
    );
    // The key is limited, not the tenant: another key of it still has its burst.
    assert_eq!(get(&s, TENANT, &w.admin).await.status(), StatusCode::OK);
    // One second later, exactly one more.
    clock.advance(Duration::from_secs(1));
    assert_eq!(get(&s, TENANT, &w.viewer).await.status(), StatusCode::OK);
    assert_eq!(get(&s, TENANT, &w.viewer).await.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_keyed_post_refused_429_frees_its_key() {
    let (s, clock, w) = start(limited()).await;
    patch_limits(&s, json!({"rate_limit_per_second": 1, "burst": 1})).await;
    assert_eq!(get(&s, TENANT, &w.editor).await.status(), StatusCode::OK);
    let post = || {
        s.req(Method::POST, RECORDS, Some(&w.editor))
            .header("idempotency-key", "\"k-1\"")
            .json(&json!({"port": 1}))
            .send()
    };
    assert_problem(post().await.unwrap(), 429, "rate-limited").await;
    clock.advance(Duration::from_secs(1));
    let r = post().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "the 429 was not kept for replay");
    assert!(r.headers().get("idempotent-replayed").is_none());
}

#[tokio::test]
async fn the_daily_quota_is_429_until_midnight_utc_and_refusals_do_not_count() {
    let (s, clock, w) = start(limited()).await;
    let r = patch_limits(&s, json!({"daily_quota": 5})).await;
    let tenant: Value = r.json().await.unwrap();
    assert_eq!(tenant["limits"]["daily_quota"], 5);
    assert_eq!(tenant["limits"]["own"], json!(["daily_quota"]));
    for left in (0..5).rev() {
        let r = get(&s, TENANT, &w.viewer).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "ratelimit"), format!("\"daily\";r={left};t=60"));
    }
    // Refused again and again: none of these counts.
    for _ in 0..3 {
        let r = get(&s, TENANT, &w.admin).await;
        assert_eq!(header(&r, "retry-after"), "60", "seconds to 00:00 UTC");
        assert_eq!(header(&r, "ratelimit"), "\"daily\";r=0;t=60");
        let body = assert_problem(r, 429, "quota-exhausted").await;
        assert_eq!(body["limit"], "daily");
        assert_eq!(body["quota"], 5);
    }
    // The operator has no tenant quota.
    assert_eq!(get(&s, TENANT, OPERATOR).await.status(), StatusCode::OK);
    clock.advance(Duration::from_secs(30));
    let r = get(&s, TENANT, &w.viewer).await;
    assert_eq!(header(&r, "retry-after"), "30");
    // Midnight: a new day, the whole quota again.
    clock.set(before_midnight() + Duration::from_secs(60));
    let r = get(&s, TENANT, &w.viewer).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "ratelimit"), "\"daily\";r=4;t=86400");
}

#[tokio::test]
async fn the_days_count_survives_a_restart_and_is_shared_by_nodes_on_one_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canon.db");
    let clock = Arc::new(ManualClock::new(before_midnight() - Duration::from_secs(3600)));
    let a = Server::start_clocked_on(limited(), &path, clock.clone()).await;
    let w = world(&a, "acme").await;
    assert_eq!(
        patch_limits(&a, json!({"daily_quota": 6})).await.status(),
        StatusCode::OK
    );
    let b = Server::start_clocked_on(limited(), &path, clock.clone()).await;
    for _ in 0..3 {
        assert_eq!(get(&a, TENANT, &w.viewer).await.status(), StatusCode::OK);
    }
    // What each node runs every few seconds: its counts out, the totals in.
    canon_server::quotas::save(&a.app).await.unwrap();
    canon_server::quotas::save(&b.app).await.unwrap();
    let r = get(&b, TENANT, &w.viewer).await;
    assert_eq!(header(&r, "ratelimit"), "\"daily\";r=2;t=3660", "b counts a's three");
    assert_eq!(get(&a, TENANT, &w.viewer).await.status(), StatusCode::OK);
    // Both save; each now knows the five, so one request is left in all.
    canon_server::quotas::save(&b.app).await.unwrap();
    canon_server::quotas::save(&a.app).await.unwrap();
    canon_server::quotas::save(&b.app).await.unwrap();
    assert_eq!(get(&b, TENANT, &w.viewer).await.status(), StatusCode::OK);
    canon_server::quotas::save(&b.app).await.unwrap();
    canon_server::quotas::save(&a.app).await.unwrap();
    let r = get(&a, TENANT, &w.viewer).await;
    assert_problem(r, 429, "quota-exhausted").await;
    // A restart does not hand out a fresh day: the count is read back at
    // start, and the refused requests above counted nothing.
    drop((a, b));
    let c = Server::start_clocked_on(limited(), &path, clock.clone()).await;
    let r = get(&c, TENANT, &w.viewer).await;
    assert_eq!(header(&r, "retry-after"), "3660");
    assert_problem(r, 429, "quota-exhausted").await;
    // The next day starts from zero, whatever the store kept of this one.
    clock.set(before_midnight() + Duration::from_secs(60));
    let r = get(&c, TENANT, &w.viewer).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "ratelimit"), "\"daily\";r=5;t=86400");
    canon_server::quotas::save(&c.app).await.unwrap();
    let today = canon_store::QuotaStore::add_quota_usage(&*c.store, vec![], 21_916)
        .await
        .unwrap();
    assert_eq!(today.iter().map(|u| u.used).collect::<Vec<_>>(), vec![1]);
}

#[tokio::test]
async fn every_v1_response_carries_the_fields_once_the_caller_is_known() {
    let (s, _clock, w) = start(limited()).await;
    patch_limits(&s, json!({"daily_quota": 100})).await;
    let created = s
        .ok_json(Method::POST, RECORDS, &w.editor, Some(json!({"port": 7})))
        .await;
    let record = format!("{RECORDS}/{}", created["id"].as_str().unwrap());
    let r = get(&s, &record, &w.viewer).await;
    assert_eq!(r.status(), StatusCode::OK);
    let etag = header(&r, "etag").to_owned();
    let not_modified = s
        .req(Method::GET, &record, Some(&w.viewer))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);
    let missing = get(&s, &format!("{RECORDS}/nope"), &w.viewer).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let forbidden = s
        .req(Method::POST, RECORDS, Some(&w.viewer))
        .json(&json!({"port": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
    for (r, left) in [(&r, 98), (&not_modified, 97), (&missing, 96), (&forbidden, 95)] {
        assert_eq!(
            header(r, "ratelimit-policy"),
            "\"burst\";q=1000;w=1, \"daily\";q=100;w=86400",
            "{}",
            r.status()
        );
        assert_eq!(header(r, "ratelimit"), format!("\"daily\";r={left};t=60"));
    }
    // No key, no policy: a 401 and the public routes carry none.
    let anonymous = s.req(Method::GET, TENANT, None).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert!(anonymous.headers().get("ratelimit-policy").is_none());
    let health = s.req(Method::GET, "/healthz", None).send().await.unwrap();
    assert!(health.headers().get("ratelimit").is_none());
    // The operator: its key's rate only.
    let op = get(&s, TENANT, OPERATOR).await;
    assert_eq!(header(&op, "ratelimit-policy"), "\"burst\";q=1000;w=1");
}

#[tokio::test]
async fn tenant_limits_are_patched_by_the_operator_and_validated() {
    let (s, _clock, w) = start(limited()).await;
    let before = get(&s, TENANT, OPERATOR).await;
    let etag = header(&before, "etag").to_owned();
    let shown: Value = before.json().await.unwrap();
    assert_eq!(
        shown["limits"],
        json!({"rate_limit_per_second": 1000, "burst": 1000, "daily_quota": 1_000_000, "own": []})
    );
    // Every bad value at once, each by pointer.
    let r = patch_limits(&s, json!({"rate_limit_per_second": -1, "burst": 0, "daily_quota": 1.5})).await;
    let body = assert_problem(r, 400, "invalid-field").await;
    let pointers: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(pointers, ["/rate_limit_per_second", "/burst", "/daily_quota"]);
    for (bad, pointer) in [
        (json!({"daily_quota": 10_000_000_000u64}), "/daily_quota"),
        (json!({"rate_limit_per_second": 1_000_001}), "/rate_limit_per_second"),
        (json!({"burst": "10"}), "/burst"),
    ] {
        let body = assert_problem(patch_limits(&s, bad.clone()).await, 400, "invalid-field").await;
        assert_eq!(body["errors"][0]["pointer"], pointer, "{bad}");
    }
    let body = assert_problem(patch_limits(&s, json!({"quota": 5})).await, 400, "malformed-body").await;
    assert_eq!(body["errors"][0]["pointer"], "/quota");
    // Only the operator.
    let r = s
        .req(Method::PATCH, TENANT, Some(&w.admin))
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"daily_quota": 1000000000}"#)
        .send()
        .await
        .unwrap();
    assert_problem(r, 403, "forbidden").await;
    // If-Match like every PATCH; plain JSON is a merge patch too.
    let r = s
        .req(Method::PATCH, TENANT, Some(OPERATOR))
        .header("if-match", "\"stale\"")
        .json(&json!({"burst": 5}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 412, "precondition-failed").await;
    let r = s
        .req(Method::PATCH, TENANT, Some(OPERATOR))
        .header("if-match", etag.as_str())
        .json(&json!({"rate_limit_per_second": 10, "burst": 20}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_ne!(header(&r, "etag"), etag, "a new version");
    let t: Value = r.json().await.unwrap();
    assert_eq!(
        t["limits"],
        json!({"rate_limit_per_second": 10, "burst": 20, "daily_quota": 1_000_000, "own": ["rate_limit_per_second", "burst"]})
    );
    // The tenant's own keys see them; they apply at once.
    let r = get(&s, TENANT, &w.viewer).await;
    assert!(header(&r, "ratelimit-policy").starts_with("\"burst\";q=20;w=2"));
    // `null` gives a limit back to the default.
    let t: Value = patch_limits(&s, json!({"burst": null})).await.json().await.unwrap();
    assert_eq!(t["limits"]["burst"], 1000);
    assert_eq!(t["limits"]["own"], json!(["rate_limit_per_second"]));
    let t: Value = get(&s, TENANT, OPERATOR).await.json().await.unwrap();
    assert_eq!(t["limits"]["rate_limit_per_second"], 10);
}

#[tokio::test]
async fn repeated_bad_tokens_are_429_and_a_valid_token_is_not_slowed() {
    let config = canon_server::Config {
        auth_failure_limit: 3,
        auth_failure_window: Duration::from_secs(60),
        ..limited()
    };
    let (s, clock, w) = start(config).await;
    // The viewer works from this address before the guessing starts.
    assert_eq!(get(&s, TENANT, &w.viewer).await.status(), StatusCode::OK);
    for left in [2, 1, 0] {
        let r = get(&s, TENANT, "canon_guess").await;
        assert_eq!(header(&r, "ratelimit-policy"), "\"auth-failures\";q=3;w=60");
        assert!(header(&r, "ratelimit").starts_with(&format!("\"auth-failures\";r={left};")));
        assert_problem(r, 401, "invalid-token").await;
    }
    let r = get(&s, TENANT, "canon_guess").await;
    assert_eq!(header(&r, "retry-after"), "20", "one failure refills every 60/3 s");
    let body = assert_problem(r, 429, "auth-failures-limited").await;
    assert_eq!(body["limit"], "auth-failures");
    // The right token is not confirmed either: refused before it is checked.
    let (_, fresh) = add_user(&s, "acme", "new@acme.example", "viewer").await;
    let r = get(&s, TENANT, &fresh).await;
    assert_problem(r, 429, "auth-failures-limited").await;
    // A token that already worked from here is not slowed by the guesser.
    for _ in 0..5 {
        assert_eq!(get(&s, TENANT, &w.viewer).await.status(), StatusCode::OK);
    }
    // Once a failure has refilled, tokens are checked again.
    clock.advance(Duration::from_secs(20));
    assert_eq!(get(&s, TENANT, &fresh).await.status(), StatusCode::OK);
    assert_problem(get(&s, TENANT, "canon_guess").await, 401, "invalid-token").await;
    assert_problem(get(&s, TENANT, "canon_guess").await, 429, "auth-failures-limited").await;
}

#[tokio::test]
async fn forwarded_for_counts_only_behind_a_trusted_proxy() {
    let bad = |s: &Server, from: &'static str| {
        s.req(Method::GET, TENANT, Some("canon_guess"))
            .header("x-forwarded-for", from)
            .send()
    };
    // Not trusted: the header is ignored, every request is the peer's.
    let config = canon_server::Config {
        auth_failure_limit: 2,
        ..limited()
    };
    let (s, _clock, _w) = start(config.clone()).await;
    assert_eq!(bad(&s, "1.1.1.1").await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(bad(&s, "2.2.2.2").await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        bad(&s, "3.3.3.3").await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Behind a trusted proxy (the test's loopback): counted per client.
    let config = canon_server::Config {
        trusted_proxies: canon_server::config::parse_trusted_proxies("127.0.0.0/8, ::1").unwrap(),
        ..config
    };
    let (s, _clock, _w) = start(config).await;
    for _ in 0..2 {
        assert_eq!(bad(&s, "1.1.1.1").await.unwrap().status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        bad(&s, "1.1.1.1").await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(bad(&s, "2.2.2.2").await.unwrap().status(), StatusCode::UNAUTHORIZED);
    // What a client claims left of the proxy's entry is not believed.
    assert_eq!(
        bad(&s, "9.9.9.9, 1.1.1.1").await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // An IPv6 client is counted per /64: a fresh address in the same block
    // gets no fresh budget; another block does.
    for from in ["2001:db8:7:1::1", "2001:db8:7:1::2"] {
        assert_eq!(bad(&s, from).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        bad(&s, "2001:db8:7:1:abcd::99").await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        bad(&s, "2001:db8:7:2::1").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}

/// A POST whose body never finishes: it holds its slot until the body
/// deadline (408) or until the socket goes.
async fn stalled_upload(s: &Server, token: &str) -> tokio::net::TcpStream {
    let mut sock = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST {RECORDS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"port\":"
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock
}

#[tokio::test]
async fn one_caller_cannot_hold_more_than_its_share_of_the_slots() {
    let config = canon_server::Config {
        max_in_flight: 8,
        max_in_flight_per_caller: Some(2),
        body_timeout: Duration::from_secs(5),
        ..limited()
    };
    let (s, _clock, w) = start(config).await;
    let other = {
        s.ok_json(Method::POST, "/v1/tenants", OPERATOR, Some(json!({"name": "other"})))
            .await;
        add_user(&s, "other", "a@other.example", "admin").await.1
    };
    let held = [stalled_upload(&s, &w.editor).await, stalled_upload(&s, &w.editor).await];
    // Let both reach the flow's RateLimit node.
    let mut refused = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let r = get(&s, TENANT, &w.editor).await;
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("the editor's third request is refused");
    assert_eq!(header(&r, "retry-after"), "1");
    assert!(
        header(&r, "ratelimit-policy").contains("\"burst\""),
        "the fields still say where it stands"
    );
    let body = assert_problem(r, 429, "too-many-in-flight").await;
    assert_eq!(body["limit"], "in-flight");
    // The tenant holds its share too: its other keys wait as well.
    assert_problem(get(&s, TENANT, &w.viewer).await, 429, "too-many-in-flight").await;
    // Everyone else is served: the slots are not all taken.
    assert_eq!(get(&s, "/v1/tenants/other", &other).await.status(), StatusCode::OK);
    assert_eq!(get(&s, TENANT, OPERATOR).await.status(), StatusCode::OK);
    // The slots come back when the requests end.
    drop(held);
    let mut served = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if get(&s, TENANT, &w.editor).await.status() == StatusCode::OK {
            served = true;
            break;
        }
    }
    assert!(served, "the editor is served again once its requests ended");
}
