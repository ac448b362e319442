//! A job survives `kill -9` of its process: a new process takes it over
//! once its lease runs out, resumes from its checkpoint, and every record
//! of the import is there exactly once; every record of a deleted tenant
//! is deleted, and counted, exactly once.

mod common;

use std::time::{Duration, Instant};

use common::wait_ready;

use serde_json::{Value, json};

const TOKEN: &str = "job-restart-operator";
const LINES: usize = 20_000;

/// One worker, and a short lease so a restarted process takes the job over quickly.
const JOBS: &[(&str, &str)] = &[("CANON_JOB_WORKERS", "1"), ("CANON_JOB_LEASE_MS", "1500")];

/// Every record id of the collection, all pages.
async fn record_ids(client: &reqwest::Client, base: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut url = format!("{base}/v1/tenants/acme/collections/c/records?limit=1000");
    loop {
        let page: Value = client
            .get(&url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => url = format!("{base}/v1/tenants/acme/collections/c/records?limit=1000&cursor={cursor}"),
            None => return ids,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_survives_kill_9_and_applies_every_line_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("canon.db");
    let node = common::Node::start(&db, TOKEN, JOBS).await;
    let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]});
    node.post_ok("/v1/tenants", json!({"name": "acme"})).await;
    node.post_ok(
        "/v1/tenants/acme/collections",
        json!({"name": "c", "schema": schema, "unique": ["n"]}),
    )
    .await;
    let (mut child, port, base, client) = (node.child, node.port, node.base, node.client);
    let body: String = (0..LINES).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    let r = client
        .post(format!("{base}/v1/tenants/acme/collections/c/imports"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_owned();

    // Kill the process while the import is half done.
    let start = Instant::now();
    loop {
        // The monitor's progress counts committed batches.
        let job: Value = client
            .get(format!("{base}{location}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or_default();
        let done = job["progress"]["done"].as_u64().unwrap_or(0);
        // (reqwest follows a 303 to the report, which has `created`.)
        assert!(
            job.get("created").is_none(),
            "the import finished before it could be interrupted"
        );
        if done > 0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "the import never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // A new process on the same store takes the job over and finishes it.
    let mut child = common::spawn(&db, port, TOKEN, JOBS);
    wait_ready(&client, &base).await;
    let interrupted = record_ids(&client, &base).await.len();
    assert!(interrupted < LINES, "{interrupted} records already");
    let start = Instant::now();
    let report: Value = loop {
        let r = client
            .get(format!("{base}{location}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        // reqwest follows the 303 to the result.
        let body: Value = r.json().await.unwrap();
        if body.get("created").is_some() {
            break body;
        }
        assert!(body["status"] == "queued" || body["status"] == "running", "{body}");
        assert!(start.elapsed() < Duration::from_secs(120), "the job was not resumed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(report["failed"], 0, "{report}");
    let mut ids = record_ids(&client, &base).await;
    assert_eq!(ids.len(), LINES, "every line once");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), LINES, "no record twice");
    let job: Value = client
        .get(format!("{base}/v1/tenants/acme/jobs"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(job["items"][0]["status"] == "succeeded", "{job}");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// GETs `path` as the operator (following a 303 to the result) and returns the body.
async fn get_json(client: &reqwest::Client, base: &str, path: &str) -> Value {
    let r = client
        .get(format!("{base}{path}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    r.json().await.unwrap()
}

/// Imports `body` (NDJSON) into collection `c` of `acme` and waits for the job's report.
async fn import_all(client: &reqwest::Client, base: &str, body: String) {
    let r = client
        .post(format!("{base}/v1/tenants/acme/collections/c/imports"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let import = r.headers()["location"].to_str().unwrap().to_owned();
    let start = Instant::now();
    while get_json(client, base, &import).await.get("created").is_none() {
        assert!(start.elapsed() < Duration::from_secs(120), "the import did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Kills `child` once the job at `location` runs and has committed some of
/// its steps; `result_member` is a member of its result, which must not be
/// there yet (the job finished before it could be interrupted).
async fn kill_mid_job(
    child: &mut std::process::Child,
    client: &reqwest::Client,
    base: &str,
    location: &str,
    result_member: &str,
) {
    let start = Instant::now();
    loop {
        let job = get_json(client, base, location).await;
        assert!(
            job.get(result_member).is_none(),
            "the job finished before it could be interrupted"
        );
        if job["status"] == "running" && job["progress"]["done"].as_i64().unwrap() > 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the job never started: {job}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_deletion_survives_kill_9_and_counts_every_record_once() {
    const RECORDS: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("canon.db");
    let node = common::Node::start(&db, TOKEN, JOBS).await;
    let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]});
    node.post_ok("/v1/tenants", json!({"name": "acme"})).await;
    node.post_ok(
        "/v1/tenants/acme/collections",
        json!({"name": "c", "schema": schema, "unique": ["n"]}),
    )
    .await;
    let (mut child, port, base, client) = (node.child, node.port, node.base, node.client);
    import_all(
        &client,
        &base,
        (0..RECORDS)
            .map(|n| {
                format!(
                    "{{\"n\":{n}}}
"
                )
            })
            .collect(),
    )
    .await;

    let r = client
        .delete(format!("{base}/v1/tenants/acme"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    // Kill the process once the deletion has committed some steps, not all.
    kill_mid_job(&mut child, &client, &base, &location, "deleted").await;

    // A new process takes the job over once the lease ran out and finishes it.
    let mut child = common::spawn(&db, port, TOKEN, JOBS);
    wait_ready(&client, &base).await;
    let interrupted = get_json(&client, &base, &location).await;
    assert!(interrupted.get("deleted").is_none(), "{interrupted}");
    let start = Instant::now();
    let result = loop {
        let body = get_json(&client, &base, &location).await;
        if body.get("deleted").is_some() {
            break body;
        }
        assert!(body["status"] == "queued" || body["status"] == "running", "{body}");
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the deletion was not resumed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let deleted = &result["deleted"];
    assert_eq!(deleted["records"], RECORDS, "every record counted once: {result}");
    assert_eq!(
        (deleted["collections"].as_i64(), deleted["jobs"].as_i64()),
        (Some(1), Some(1))
    );
    let r = client
        .get(format!("{base}/v1/tenants/acme"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_survives_kill_9_and_holds_every_record_once_in_order() {
    // About 20 MB of NDJSON out: five 4 MiB result chunks, stored two at a
    // time (chunk k with the checkpoint of chunk k − 1).
    const RECORDS: usize = 40_000;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("canon.db");
    let node = common::Node::start(&db, TOKEN, JOBS).await;
    let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]});
    node.post_ok("/v1/tenants", json!({"name": "acme"})).await;
    node.post_ok("/v1/tenants/acme/collections", json!({"name": "c", "schema": schema}))
        .await;
    let (mut child, port, base, client) = (node.child, node.port, node.base, node.client);
    let pad = "x".repeat(300);
    import_all(
        &client,
        &base,
        (0..RECORDS)
            .map(|n| format!("{{\"n\":{n},\"pad\":\"{pad}\"}}\n"))
            .collect(),
    )
    .await;

    let r = client
        .post(format!("{base}/v1/tenants/acme/collections/c/exports"))
        .bearer_auth(TOKEN)
        .json(&json!({"format": "ndjson"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    // Kill the process once some chunks are checkpointed, not all.
    kill_mid_job(&mut child, &client, &base, &location, "records").await;

    // A new process takes the job over once the lease ran out, resumes
    // after the last checkpointed chunk, and the file is whole.
    let mut child = common::spawn(&db, port, TOKEN, JOBS);
    wait_ready(&client, &base).await;
    let start = Instant::now();
    let summary = loop {
        let r = client
            .get(format!("{base}{location}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        // reqwest follows the 303 to the file itself.
        if r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/x-ndjson")
        {
            break r.text().await.unwrap();
        }
        let body: Value = r.json().await.unwrap();
        assert!(body["status"] == "queued" || body["status"] == "running", "{body}");
        assert!(start.elapsed() < Duration::from_secs(120), "the export was not resumed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let numbers: Vec<i64> = summary
        .lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(record["data"]["pad"].as_str().map(str::len), Some(300));
            record["data"]["n"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(numbers.len(), RECORDS, "every record once");
    // Import ids sort in line order: the file is in id order, so in `n` order.
    assert!(
        numbers.iter().enumerate().all(|(i, n)| *n == i as i64),
        "in order, none twice"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
