//! Exports: a collection's records into an NDJSON or CSV file, written by a
//! job (202) and streamed back from its result.

mod common;

use std::io::Read;
use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const EXPORTS: &str = "/v1/tenants/acme/collections/devices/exports";
const RECORDS: &str = "/v1/tenants/acme/collections/devices/records";
const IMPORTS: &str = "/v1/tenants/acme/collections/devices/imports";

/// Starts an export of `body` and returns the job's monitor.
async fn export(s: &Server, token: &str, body: Value) -> String {
    let r = s.call(Method::POST, EXPORTS, token, Some(body)).await;
    assert_eq!(r.status(), 202);
    assert!(header(&r, "retry-after").parse::<u64>().is_ok());
    let location = header(&r, "location").to_owned();
    let job: Value = r.json().await.unwrap();
    assert_eq!(job["kind"], "export");
    assert_eq!(
        location,
        format!("/v1/tenants/acme/jobs/{}", job["id"].as_str().unwrap())
    );
    location
}

/// Follows a job's monitor to the 303 and returns the result's location.
async fn result_location(s: &Server, token: &str, location: &str) -> String {
    for _ in 0..2000 {
        let r = s.call(Method::GET, location, token, None).await;
        if r.status() == 303 {
            return header(&r, "location").to_owned();
        }
        assert_eq!(r.status(), 200);
        let job: Value = r.json().await.unwrap();
        assert!(job["status"] == "queued" || job["status"] == "running", "{job}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the export did not finish");
}

async fn create(s: &Server, token: &str, data: Value) -> Value {
    s.ok_json(Method::POST, RECORDS, token, Some(data)).await
}

#[tokio::test]
async fn exports_stream_ndjson_with_disposition_tag_and_length() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let mut ids = Vec::new();
    for port in [22, 80, 443] {
        let r = create(&s, &w.editor, json!({"port": port, "serial": format!("S{port}")})).await;
        ids.push(r["id"].as_str().unwrap().to_owned());
    }
    ids.sort();
    // A viewer may export.
    let monitor = export(&s, &w.viewer, json!({"format": "ndjson"})).await;
    let result = result_location(&s, &w.viewer, &monitor).await;
    assert_eq!(result, format!("{monitor}/result"));

    let r = s.call(Method::GET, &result, &w.viewer, None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "application/x-ndjson");
    let job_id = monitor.rsplit('/').next().unwrap();
    assert_eq!(
        header(&r, "content-disposition"),
        format!("attachment; filename=\"devices-{job_id}.ndjson\"")
    );
    let etag = header(&r, "etag").to_owned();
    assert!(etag.starts_with(&format!("\"{job_id}.")), "{etag}");
    let length: usize = header(&r, "content-length").parse().unwrap();
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len(), length);
    let lines: Vec<Value> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let exported: Vec<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(exported, ids, "every record once, in id order");
    // Each line is the record as the list shows it.
    let one = s
        .ok_json(Method::GET, &format!("{RECORDS}/{}", ids[0]), &w.viewer, None)
        .await;
    assert_eq!(lines[0], one);

    // The result never changes: revalidation is 304.
    let r = s
        .req(Method::GET, &result, Some(&w.viewer))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(header(&r, "etag"), etag);
    // The file is NDJSON only.
    let r = s
        .req(Method::GET, &result, Some(&w.viewer))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    let problem = assert_problem(r, 406, "not-acceptable").await;
    assert_eq!(problem["acceptable"], json!(["application/x-ndjson"]));
    // gzip for a client that asks: coded as it streams, no length.
    let r = s
        .req(Method::GET, &result, Some(&w.viewer))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-encoding"), "gzip");
    assert!(r.headers().get("content-length").is_none());
    let coded = r.bytes().await.unwrap();
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&coded[..])
        .read_to_end(&mut plain)
        .unwrap();
    assert_eq!(plain, body);
}

#[tokio::test]
async fn exports_write_csv_with_a_header_and_honour_the_filter() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    create(&s, &w.editor, json!({"port": 22, "serial": "=cmd|' /C calc'!A0"})).await;
    create(&s, &w.editor, json!({"port": 80})).await;
    create(&s, &w.editor, json!({"port": 22, "serial": "x,y"})).await;
    let monitor = export(&s, &w.editor, json!({"format": "csv", "filter": {"port": 22}})).await;
    let result = result_location(&s, &w.editor, &monitor).await;
    let r = s.call(Method::GET, &result, &w.editor, None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "text/csv; charset=utf-8");
    assert!(header(&r, "content-disposition").ends_with(".csv\""));
    let text = r.text().await.unwrap();
    let rows: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(rows[0], "id,version,created_at,updated_at,data.port,data.serial");
    assert_eq!(rows.len(), 3, "the header and the two records on port 22: {text}");
    assert!(
        text.contains(",22,'=cmd|' /C calc'!A0\r\n"),
        "formulas are neutralised: {text}"
    );
    assert!(text.contains(",22,\"x,y\""), "{text}");
    assert!(!text.contains(",80,"), "{text}");

    // The job's summary counts what it wrote.
    let jobs = s.ok_json(Method::GET, "/v1/tenants/acme/jobs", &w.editor, None).await;
    assert_eq!(jobs["items"][0]["progress"]["done"], 2, "{jobs}");
}

#[tokio::test]
async fn exports_refuse_at_once_what_can_be_refused_at_once() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    let r = s
        .call(Method::POST, EXPORTS, &w.viewer, Some(json!({"format": "xlsx"})))
        .await;
    assert_problem(r, 400, "malformed-body").await;
    let r = s
        .call(
            Method::POST,
            EXPORTS,
            &w.viewer,
            Some(json!({"format": "csv", "filter": {"a-b": 1}})),
        )
        .await;
    let problem = assert_problem(r, 400, "invalid-field").await;
    assert_eq!(problem["errors"][0]["pointer"], "/filter/a-b");
    // The pointer escapes what RFC 6901 escapes.
    let r = s
        .call(
            Method::POST,
            EXPORTS,
            &w.viewer,
            Some(json!({"format": "csv", "filter": {"a/b~c": 1}})),
        )
        .await;
    let problem = assert_problem(r, 400, "invalid-field").await;
    assert_eq!(problem["errors"][0]["pointer"], "/filter/a~1b~0c");
    let r = s
        .call(
            Method::POST,
            EXPORTS,
            &w.viewer,
            Some(json!({"format": "csv", "filter": {"port": [1]}})),
        )
        .await;
    assert_problem(r, 400, "invalid-field").await;
    let r = s
        .call(
            Method::POST,
            "/v1/tenants/acme/collections/nope/exports",
            &w.viewer,
            Some(json!({"format": "csv"})),
        )
        .await;
    assert_problem(r, 404, "not-found").await;
    let r = s
        .req(Method::POST, EXPORTS, Some(&w.viewer))
        .header("content-type", "text/csv")
        .body("format\ncsv")
        .send()
        .await
        .unwrap();
    assert_problem(r, 415, "unsupported-media-type").await;
    // None of these made a job.
    let jobs = s.ok_json(Method::GET, "/v1/tenants/acme/jobs", &w.viewer, None).await;
    assert_eq!(jobs["items"], json!([]));
}

#[tokio::test]
async fn exports_larger_than_a_chunk_arrive_whole_and_in_order() {
    let s = Server::start().await;
    let w = world(&s, "acme").await;
    // About 6 MB of NDJSON out: more than one 4 MiB result chunk.
    let count = 30_000;
    let mut upload = String::new();
    for i in 0..count {
        upload.push_str(&format!(
            "{{\"port\":{i},\"serial\":\"serial-number-{i:08}-{}\"}}\n",
            "x".repeat(60)
        ));
    }
    let r = s
        .req(Method::POST, IMPORTS, Some(&w.editor))
        .header("content-type", "application/x-ndjson")
        .body(upload)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let import = header(&r, "location").to_owned();
    let report = s
        .ok_json(
            Method::GET,
            &result_location(&s, &w.editor, &import).await,
            &w.editor,
            None,
        )
        .await;
    assert_eq!(report["created"], count, "{report}");

    let monitor = export(&s, &w.viewer, json!({"format": "ndjson"})).await;
    let result = result_location(&s, &w.viewer, &monitor).await;
    let r = s.call(Method::GET, &result, &w.viewer, None).await;
    let length: usize = header(&r, "content-length").parse().unwrap();
    assert!(length > 4 << 20, "{length}");
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len(), length);
    let ids: Vec<String> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids.len(), count);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in id order, none twice");
}
