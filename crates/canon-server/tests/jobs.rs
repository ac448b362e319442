//! Jobs: long work accepted with 202, followed at its monitor (200 while it
//! runs, 303 to its result once it succeeded), cancelable until it ends.

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const COLLECTION: &str = "/v1/tenants/acme/collections/devices";

/// Follows the monitor at `location` until it answers 303; returns the
/// statuses it answered on the way and the 303's target.
async fn follow(s: &Server, token: &str, location: &str) -> (Vec<(u16, Value)>, String) {
    let mut seen = Vec::new();
    for _ in 0..200 {
        let r = s.call(Method::GET, location, token, None).await;
        let status = r.status().as_u16();
        if status == 303 {
            return (seen, header(&r, "location").to_owned());
        }
        assert_eq!(status, 200, "monitor");
        assert_eq!(header(&r, "cache-control"), "no-store");
        let job: Value = r.json().await.unwrap();
        if job["status"] == "queued" || job["status"] == "running" {
            seen.push((status, job));
        } else {
            panic!("the job ended without succeeding: {job}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the job did not finish in time");
}

#[tokio::test]
async fn jobs_a_forced_collection_delete_is_202_then_303_to_its_result() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    for i in 0..40 {
        s.ok_json(
            Method::PUT,
            &format!("{COLLECTION}/records/r{i}"),
            &w.editor,
            Some(json!({"port": i})),
        )
        .await;
    }
    // Without force, a collection with records is a conflict.
    let r = s.call(Method::DELETE, COLLECTION, &w.admin, None).await;
    assert_problem(r, 409, "state-conflict").await;
    // With force: 202, Location = the job, Retry-After, the job as the body.
    let r = s
        .call(Method::DELETE, &format!("{COLLECTION}?force=true"), &w.admin, None)
        .await;
    assert_eq!(r.status(), 202);
    let location = header(&r, "location").to_owned();
    assert!(location.starts_with("/v1/tenants/acme/jobs/"), "{location}");
    assert!(header(&r, "retry-after").parse::<u64>().unwrap() >= 1);
    let job: Value = r.json().await.unwrap();
    assert_eq!(job["kind"], "delete_collection");
    assert_eq!(job["status"], "queued");
    assert_eq!(
        format!("/v1/tenants/acme/jobs/{}", job["id"].as_str().unwrap()),
        location
    );
    // The monitor, followed as a client would: 303 to the result at the end.
    let (_, result) = follow(&s, &w.viewer, &location).await;
    assert_eq!(result, format!("{location}/result"));
    let report = s.ok_json(Method::GET, &result, &w.viewer, None).await;
    assert_eq!(report["deleted_records"], 40);
    // The collection and its records are gone (410), and the job is listed.
    let r = s.call(Method::GET, COLLECTION, &w.viewer, None).await;
    assert_problem(r, 410, "gone").await;
    let r = s
        .call(Method::GET, &format!("{COLLECTION}/records/r1"), &w.viewer, None)
        .await;
    assert_problem(r, 410, "gone").await;
    let list = s.ok_json(Method::GET, "/v1/tenants/acme/jobs", &w.viewer, None).await;
    assert_eq!(list["items"][0]["status"], "succeeded");
    // A finished job cannot be canceled.
    let r = s.call(Method::DELETE, &location, &w.editor, None).await;
    assert_problem(r, 409, "state-conflict").await;
}

#[tokio::test]
async fn jobs_belong_to_their_tenant() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let other = world(&s, "other").await;
    s.ok_json(
        Method::PUT,
        &format!("{COLLECTION}/records/r1"),
        &w.editor,
        Some(json!({"port": 1})),
    )
    .await;
    let r = s
        .call(Method::DELETE, &format!("{COLLECTION}?force=true"), &w.admin, None)
        .await;
    assert_eq!(r.status(), 202);
    let location = header(&r, "location").to_owned();
    let id = location.rsplit('/').next().unwrap().to_owned();
    // Another tenant's job is 404, under its own tenant's path too.
    let r = s.call(Method::GET, &location, &other.viewer, None).await;
    assert_problem(r, 404, "not-found").await;
    let r = s
        .call(
            Method::GET,
            &format!("/v1/tenants/other/jobs/{id}"),
            &other.viewer,
            None,
        )
        .await;
    assert_problem(r, 404, "not-found").await;
    // Unknown jobs, and results of unknown jobs, are 404.
    let r = s
        .call(
            Method::GET,
            "/v1/tenants/acme/jobs/01a23460-0000-7000-8000-000000000000/result",
            &w.viewer,
            None,
        )
        .await;
    assert_problem(r, 404, "not-found").await;
    // A viewer may follow, not cancel.
    let r = s.call(Method::DELETE, &location, &w.viewer, None).await;
    assert_problem(r, 403, "forbidden").await;
}
