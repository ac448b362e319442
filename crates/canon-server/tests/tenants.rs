//! Tenant deletion over HTTP: the operator's DELETE answers 202 with a job;
//! from then on the tenant is 410 and its keys 401, while the operator
//! follows the job under the tenant's path to its result; the tenant's data
//! goes, every other tenant's stays.

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const ACME: &str = "/v1/tenants/acme";
const DEVICES: &str = "/v1/tenants/acme/collections/devices";

/// Sends `DELETE /v1/tenants/{tenant}` as the operator and checks the 202:
/// `Location` = the job's monitor, `Retry-After`, the job as the body.
/// Returns the monitor's path.
async fn delete_tenant(s: &Server, tenant: &str) -> String {
    let r = s
        .call(Method::DELETE, &format!("/v1/tenants/{tenant}"), OPERATOR, None)
        .await;
    assert_eq!(r.status(), 202);
    let location = header(&r, "location").to_owned();
    assert!(header(&r, "retry-after").parse::<u64>().unwrap() >= 1);
    let job: Value = r.json().await.unwrap();
    assert_eq!(
        (job["kind"].as_str(), job["status"].as_str()),
        (Some("delete_tenant"), Some("queued"))
    );
    assert_eq!(
        location,
        format!("/v1/tenants/{tenant}/jobs/{}", job["id"].as_str().unwrap())
    );
    location
}

/// Follows the monitor at `location` as the operator until it answers 303;
/// returns how many 200s it answered first and the result it leads to.
async fn follow(s: &Server, location: &str) -> (usize, Value) {
    for running in 0..400 {
        let r = s.call(Method::GET, location, OPERATOR, None).await;
        if r.status() == 303 {
            assert_eq!(header(&r, "location"), format!("{location}/result"));
            let result = s
                .ok_json(Method::GET, &format!("{location}/result"), OPERATOR, None)
                .await;
            return (running, result);
        }
        assert_eq!(r.status(), 200, "monitor");
        assert_eq!(header(&r, "retry-after"), "1");
        let job: Value = r.json().await.unwrap();
        assert!(job["status"] == "queued" || job["status"] == "running", "{job}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the deletion did not finish");
}

/// Puts `n` records (`serial` unique) into acme's devices, a batch at a time.
async fn fill(s: &Server, token: &str, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let operations: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"op": "create", "data": {"port": i, "serial": format!("S{i}")}}))
            .collect();
        let r = s
            .call(
                Method::POST,
                &format!("{DEVICES}/records/batch"),
                token,
                Some(json!({"operations": operations})),
            )
            .await;
        assert_eq!(r.status(), 207);
        let results: Value = r.json().await.unwrap();
        assert!(
            results["results"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["status"] == 201)
        );
    }
}

#[tokio::test]
async fn tenant_delete_is_202_then_the_operator_follows_the_job_to_its_result() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let other = world(&s, "other").await;
    fill(&s, &w.editor, 1000).await;
    let first = s
        .ok_json(Method::GET, &format!("{DEVICES}/records?limit=1"), &w.viewer, None)
        .await;
    let record = format!("{DEVICES}/records/{}", first["items"][0]["id"].as_str().unwrap());
    let r = s
        .call(
            Method::PUT,
            &format!("{record}/lock"),
            &w.editor,
            Some(json!({"ttl_seconds": 600})),
        )
        .await;
    assert_eq!(r.status(), 201);
    s.ok_json(
        Method::PUT,
        "/v1/tenants/other/collections/devices/records/mine",
        &other.editor,
        Some(json!({"port": 1, "serial": "S1"})),
    )
    .await;

    let location = delete_tenant(&s, "acme").await;
    // At once: the tenant and everything under it is 410, its keys 401.
    let r = s.call(Method::GET, ACME, OPERATOR, None).await;
    assert_problem(r, 410, "gone").await;
    for path in [
        DEVICES.to_owned(),
        record.clone(),
        format!("{ACME}/users"),
        format!("{ACME}/jobs"),
    ] {
        let r = s.call(Method::GET, &path, OPERATOR, None).await;
        assert_problem(r, 410, "gone").await;
    }
    let r = s.call(Method::GET, ACME, &w.admin, None).await;
    assert_problem(r, 401, "invalid-token").await;
    let r = s.call(Method::GET, &location, &w.viewer, None).await;
    assert_problem(r, 401, "invalid-token").await;
    // Another tenant's member still cannot see acme's job.
    let r = s.call(Method::GET, &location, &other.admin, None).await;
    assert_problem(r, 404, "not-found").await;
    let tenants = s.ok_json(Method::GET, "/v1/tenants", OPERATOR, None).await;
    let names: Vec<&str> = tenants["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["other"]);

    // The operator follows the job under the deleted tenant: 200, then 303.
    let (running, result) = follow(&s, &location).await;
    assert!(running >= 1, "the monitor answered 200 while the deletion ran");
    assert_eq!(result["tenant"], "acme");
    assert_eq!(
        result["deleted"],
        json!({
            "collections": 1, "records": 1000, "leases": 1, "users": 3, "api_keys": 3,
            "jobs_canceled": 0, "jobs": 0, "idempotency_keys": 0, "devices": 0
        })
    );
    let job = s
        .ok_json(Method::GET, &format!("{location}/result"), OPERATOR, None)
        .await;
    assert_eq!(job, result);

    // Afterwards: still 410 and 401; the other tenant keeps everything.
    let r = s.call(Method::GET, ACME, OPERATOR, None).await;
    assert_problem(r, 410, "gone").await;
    let r = s
        .call(Method::GET, &format!("{DEVICES}/records"), &w.viewer, None)
        .await;
    assert_problem(r, 401, "invalid-token").await;
    let theirs = s
        .ok_json(
            Method::GET,
            "/v1/tenants/other/collections/devices/records",
            &other.viewer,
            None,
        )
        .await;
    assert_eq!(theirs["items"].as_array().unwrap().len(), 1);
    s.ok_json(Method::GET, "/v1/tenants/other/users", &other.admin, None)
        .await;
}

#[tokio::test]
async fn only_the_operator_deletes_a_tenant_and_only_one_that_exists() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let other = world(&s, "other").await;
    // The tenant's own admin may read it, not delete it; another tenant's
    // member does not even learn it exists.
    let r = s.call(Method::DELETE, ACME, &w.admin, None).await;
    let body = assert_problem(r, 403, "forbidden").await;
    assert_eq!(body["required_role"], "operator");
    let r = s.call(Method::DELETE, ACME, &other.admin, None).await;
    assert_problem(r, 404, "not-found").await;
    let r = s.call(Method::DELETE, "/v1/tenants/nope", OPERATOR, None).await;
    assert_problem(r, 404, "not-found").await;
    s.ok_json(Method::GET, ACME, &w.viewer, None).await;
    let r = s.call(Method::OPTIONS, ACME, OPERATOR, None).await;
    assert_eq!(header(&r, "allow"), "GET, HEAD, PATCH, DELETE, OPTIONS");
    // A stale If-Match is refused before anything happens.
    let r = s
        .send(Method::DELETE, ACME, OPERATOR, &[("if-match", "\"stale\"")], None)
        .await;
    assert_problem(r, 412, "precondition-failed").await;
    s.ok_json(Method::GET, ACME, &w.viewer, None).await;

    // While the deletion runs, and after: a second DELETE is 410, and the
    // name cannot be taken, with the reason.
    let location = delete_tenant(&s, "acme").await;
    let r = s.call(Method::DELETE, ACME, OPERATOR, None).await;
    assert_problem(r, 410, "gone").await;
    let r = s
        .call(Method::POST, "/v1/tenants", OPERATOR, Some(json!({"name": "acme"})))
        .await;
    let body = assert_problem(r, 409, "unique-conflict").await;
    assert_eq!(body["errors"][0]["pointer"], "/name");
    assert!(body["detail"].as_str().unwrap().contains("deleted tenant"), "{body}");
    follow(&s, &location).await;
    let r = s.call(Method::DELETE, ACME, OPERATOR, None).await;
    assert_problem(r, 410, "gone").await;
}

#[tokio::test]
async fn under_a_deleted_tenant_only_its_deletion_job_answers_and_a_stopped_one_starts_again() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    s.ok_json(
        Method::PUT,
        &format!("{DEVICES}/records/r1"),
        &w.editor,
        Some(json!({"port": 1})),
    )
    .await;
    // A job of the tenant from before its deletion.
    let r = s
        .call(Method::DELETE, &format!("{DEVICES}?force=true"), &w.admin, None)
        .await;
    assert_eq!(r.status(), 202);
    let earlier = header(&r, "location").to_owned();
    let location = delete_tenant(&s, "acme").await;
    let r = s.call(Method::GET, &earlier, OPERATOR, None).await;
    assert_problem(r, 410, "gone").await;
    let r = s
        .call(
            Method::GET,
            &format!("{ACME}/jobs/01a23460-0000-7000-8000-000000000000"),
            OPERATOR,
            None,
        )
        .await;
    assert_problem(r, 410, "gone").await;
    follow(&s, &location).await;

    // Cancel a deletion (the operator may, at its monitor): the tenant stays
    // 410 with its name held, and a new DELETE starts a job that finishes.
    // The cancel races the worker, which may finish an empty tenant first
    // (then 409): try a few tenants.
    let mut canceled = None;
    for n in 0..5 {
        let name = format!("t{n}");
        s.ok_json(Method::POST, "/v1/tenants", OPERATOR, Some(json!({"name": name})))
            .await;
        let monitor = delete_tenant(&s, &name).await;
        let r = s.call(Method::DELETE, &monitor, OPERATOR, None).await;
        if r.status() == 200 {
            let job: Value = r.json().await.unwrap();
            assert_eq!(job["status"], "canceled");
            canceled = Some((name, monitor));
            break;
        }
        assert_problem(r, 409, "state-conflict").await;
    }
    let (name, monitor) = canceled.expect("one deletion was canceled before it finished");
    let job = s.ok_json(Method::GET, &monitor, OPERATOR, None).await;
    assert_eq!(job["status"], "canceled");
    let tenant = format!("/v1/tenants/{name}");
    let r = s.call(Method::GET, &tenant, OPERATOR, None).await;
    assert_problem(r, 410, "gone").await;
    let r = s
        .call(Method::POST, "/v1/tenants", OPERATOR, Some(json!({"name": name})))
        .await;
    let body = assert_problem(r, 409, "unique-conflict").await;
    assert!(body["detail"].as_str().unwrap().contains("DELETE"), "{body}");
    let again = delete_tenant(&s, &name).await;
    assert_ne!(again, monitor);
    let (_, result) = follow(&s, &again).await;
    assert_eq!(result["tenant"], name.as_str());
}

#[tokio::test]
async fn a_deleted_tenants_name_is_free_once_its_job_expired() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let location = delete_tenant(&s, "acme").await;
    follow(&s, &location).await;
    let r = s
        .call(Method::POST, "/v1/tenants", OPERATOR, Some(json!({"name": "acme"})))
        .await;
    assert_problem(r, 409, "unique-conflict").await;
    // A day and more later the job is purged, and the name released.
    let later = canon_store::now_millis() + 25 * 3600 * 1000;
    s.store
        .purge_expired_jobs(later, Duration::from_secs(3600))
        .await
        .unwrap();
    s.store.purge_expired().await.unwrap();
    let r = s.call(Method::GET, &location, OPERATOR, None).await;
    assert_problem(r, 410, "gone").await;
    let r = s.call(Method::GET, ACME, OPERATOR, None).await;
    assert_problem(r, 410, "gone").await;
    let r = s
        .call(Method::POST, "/v1/tenants", OPERATOR, Some(json!({"name": "acme"})))
        .await;
    assert_eq!(r.status(), 201);
    // A new tenant: empty, and the old keys do not reach it.
    let r = s.call(Method::GET, ACME, &w.admin, None).await;
    assert_problem(r, 401, "invalid-token").await;
    let users = s.ok_json(Method::GET, &format!("{ACME}/users"), OPERATOR, None).await;
    assert_eq!(users["items"], json!([]));
}

/// Deletes the tenant `name` through `store` and runs its deletion to the
/// end, the job purged and the name released (its tombstone stays).
/// Whether it went so: `false` when a server's worker claimed the job first.
async fn delete_and_release(store: &dyn canon_store::Store, name: &str) -> bool {
    use canon_store::{Expect, JobOutcome, now_millis};
    let keep = Duration::from_secs(3600);
    let job = store
        .delete_tenant(name, Expect::Anything, keep, now_millis())
        .await
        .unwrap();
    let claimed = store
        .claim_job("w", Duration::from_secs(30), now_millis())
        .await
        .unwrap();
    if claimed.map(|j| j.id) != Some(job.id.clone()) {
        return false;
    }
    let tenant_id = job.tenant_id.clone();
    while !store
        .delete_tenant_step(&tenant_id, &job.id, "w", &format!("{name}/"), 500, now_millis())
        .await
        .unwrap()
        .finished
    {}
    let outcome = JobOutcome::Succeeded { result: None };
    let done = store
        .finish_job(&tenant_id, &job.id, "w", outcome, now_millis(), Duration::ZERO)
        .await
        .unwrap();
    store
        .purge_expired_jobs(done.result_expires_at.unwrap(), keep)
        .await
        .unwrap();
    store.purge_expired().await.unwrap();
    assert_eq!(store.tenant_deletion(name).await.unwrap(), None, "released");
    true
}

/// A PATCH of a tenant's limits that loaded the tenant before another node
/// released its name (node a serves it from its cache until it sees b's
/// changes) is 410 like every later request, not 404: the store's write
/// finds the tombstone.
#[tokio::test]
async fn a_limits_patch_racing_the_release_of_the_name_is_410() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canon.db");
    let a = Server::start_on(&path).await;
    // b writes behind a's back, its changes seen by a within its bound;
    // it runs the deletion itself (no worker of its own to beat to it).
    let b = node_store(&path).await;
    for attempt in 0..20 {
        let name = format!("t{attempt}");
        let tenant_path = format!("/v1/tenants/{name}");
        let before = a.store.generation();
        b.create_tenant(&name).await.unwrap();
        // Right after a saw b's change: the most time before it looks again.
        let waited = std::time::Instant::now();
        while a.store.generation() == before {
            assert!(waited.elapsed() < Duration::from_secs(2), "a never saw b's change");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let r = a.call(Method::GET, &tenant_path, OPERATOR, None).await;
        assert_eq!(r.status(), 200, "a holds the tenant");
        if !delete_and_release(&*b, &name).await {
            continue;
        }
        let r = a
            .req(Method::PATCH, &tenant_path, Some(OPERATOR))
            .header("content-type", "application/merge-patch+json")
            .body(r#"{"burst": 5}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(header(&r, "etag"), "", "no validators on a problem");
        let body = assert_problem(r, 410, "gone").await;
        if body["detail"] == format!("{tenant_path} was deleted.") {
            // a saw the release before the PATCH: its lookup answered.
            continue;
        }
        assert_eq!(
            body["detail"], "The resource was deleted while this request was handled.",
            "the store's write answered"
        );
        // Once a sees b's changes (within its bound), its lookup answers 410
        // too, from the tombstone.
        let seen = std::time::Instant::now();
        let r = loop {
            let r = a.call(Method::GET, &tenant_path, OPERATOR, None).await;
            if r.status() != 200 || seen.elapsed() > Duration::from_secs(1) {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let body = assert_problem(r, 410, "gone").await;
        assert_eq!(body["detail"], format!("{tenant_path} was deleted."));
        eprintln!("the PATCH raced the release at attempt {attempt}");
        return;
    }
    panic!("a never patched before it saw the release");
}
