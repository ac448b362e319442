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

/// A job of `tenant` that the test itself holds as running (claimed under
/// its own owner, with a lease the server's workers will not take over):
/// it ends only when the test ends it. Returns its monitor's path.
async fn job_held_running(s: &Server, tenant: &str) -> (String, String) {
    let canon_store::Lookup::Found(t) = s.store.tenant(tenant).await.unwrap() else {
        panic!("no tenant {tenant}");
    };
    // The server's workers poll the queue too: should one take the job
    // between its creation and the test's claim, try again with another.
    for _ in 0..5 {
        let job = s
            .store
            .create_job(
                canon_store::NewJob {
                    tenant_id: t.id.clone(),
                    kind: canon_store::JobKind::DeleteCollection,
                    params: json!({"collection_id": "none", "collection": "none"}),
                    total: None,
                    with_input: false,
                },
                canon_store::now_millis(),
            )
            .await
            .unwrap();
        let claimed = s
            .store
            .claim_job("the-test", Duration::from_secs(600), canon_store::now_millis())
            .await
            .unwrap();
        if claimed.is_some_and(|c| c.id == job.id) {
            return (format!("/v1/tenants/{tenant}/jobs/{}", job.id), job.id);
        }
    }
    panic!("the server's workers took every job the test made");
}

/// Looks at `monitor` with `Prefer: {prefer}` in the background: how long
/// the answer took, and the answer.
fn look_waiting(
    s: &Server,
    monitor: &str,
    token: &str,
    prefer: &'static str,
) -> tokio::task::JoinHandle<(Duration, reqwest::Response)> {
    let (client, url, token) = (s.client.clone(), s.url(monitor), token.to_owned());
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        let r = client
            .get(url)
            .bearer_auth(token)
            .header("prefer", prefer)
            .send()
            .await
            .unwrap();
        (started.elapsed(), r)
    })
}

#[tokio::test]
async fn jobs_prefer_wait_holds_the_monitor_until_the_job_ends_or_the_wait_is_over() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let (monitor, _) = job_held_running(&s, "acme").await;

    // Without a preference the monitor answers at once, as before.
    let started = std::time::Instant::now();
    let r = s.call(Method::GET, &monitor, &w.viewer, None).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("preference-applied").is_none());
    assert_eq!(header(&r, "retry-after"), "1");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );

    // `Prefer: wait=1` on a job that does not end: held for the second,
    // then the job as it stands, saying the wait was applied.
    let started = std::time::Instant::now();
    let r = s
        .req(Method::GET, &monitor, Some(&w.viewer))
        .header("prefer", "respond-async, wait=1")
        .send()
        .await
        .unwrap();
    let held = started.elapsed();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "preference-applied"), "wait=1");
    assert_eq!(header(&r, "cache-control"), "no-store");
    assert!(held >= Duration::from_millis(950), "answered after {held:?}");
    assert!(held < Duration::from_secs(3), "answered after {held:?}");
    let job: Value = r.json().await.unwrap();
    assert_eq!(job["status"], "running");

    // A long wait ends as soon as the job does: a cancel from another
    // client wakes the waiting monitor, which answers with the canceled job.
    let waiting = look_waiting(&s, &monitor, &w.viewer, "wait=9");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = s.call(Method::DELETE, &monitor, &w.editor, None).await;
    assert_eq!(r.status(), 200);
    let (held, r) = waiting.await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "preference-applied"), "wait=9");
    assert!(
        r.headers().get("retry-after").is_none(),
        "a finished job needs no second look"
    );
    assert!(
        held < Duration::from_secs(3),
        "the cancel did not wake the monitor: {held:?}"
    );
    let job: Value = r.json().await.unwrap();
    assert_eq!(job["status"], "canceled");
}

#[tokio::test]
async fn jobs_prefer_wait_sees_an_end_it_was_not_told_of() {
    // A job ended by another process (here: the store, behind the server's
    // back) is seen by the waiting monitor's own polling, well before the
    // wait is over; a succeeded job is then the usual 303.
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let (monitor, id) = job_held_running(&s, "acme").await;
    let waiting = look_waiting(&s, &monitor, &w.viewer, "wait=8");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let canon_store::Lookup::Found(t) = s.store.tenant("acme").await.unwrap() else {
        panic!("no tenant");
    };
    s.store
        .finish_job(
            &t.id,
            &id,
            "the-test",
            canon_store::JobOutcome::Succeeded {
                result: Some(json!({"deleted_records": 0})),
            },
            canon_store::now_millis(),
            canon_store::JOB_RESULT_RETENTION,
        )
        .await
        .unwrap();
    let (held, r) = waiting.await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(header(&r, "location"), format!("{monitor}/result"));
    assert!(held < Duration::from_secs(2), "answered after {held:?}");
    // A wait longer than the cap, or malformed, is not an error: the cap
    // applies, or the preference is ignored (RFC 7240).
    let r = s
        .req(Method::GET, &monitor, Some(&w.viewer))
        .header("prefer", "wait=abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
}
