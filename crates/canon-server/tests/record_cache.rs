//! The record cache under load (docs/decisions.md, "The record cache"): on
//! SQLite with the file locked to the process (the suites' default) a GET of
//! one record may be answered from memory, and the promise is that it never
//! answers a record older than the last write acknowledged with a 2xx, on
//! any connection and through any node of the file.
//!
//! One writer per record cycles through every kind of write (merge patch,
//! PUT, atomic and plain batches, DELETE, PUT re-creating a deleted record,
//! a refused conditional write) on two nodes of one file, while readers on
//! connections of their own GET the records as fast as they can, racing
//! every commit. After each acknowledged write the writer reads the record
//! on its own connection and on a fresh one through the other node; each
//! reader checks that what it got is no older than what was acknowledged
//! before it asked. On PostgreSQL (no record cache) the same must hold.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{Value, json};

const COLLECTION: &str = "/v1/tenants/acme/collections/notes";
/// Records written at once, one writer each: their commits share batches.
const RECORDS: usize = 12;
/// Tasks that only read, each on a connection of its own.
const READERS: usize = 8;
/// How long the writers go on.
const RUN: Duration = Duration::from_secs(4);

/// What a record's writer has had acknowledged, published for the readers:
/// the `seq` of its last acknowledged write, shifted left once, with the low
/// bit set when that write was a DELETE; and the `seq` of the last write it
/// sent (acknowledged or not).
#[derive(Default)]
struct Acknowledged {
    acked: AtomicU64,
    sent: AtomicU64,
}

impl Acknowledged {
    fn sending(&self, seq: u64) {
        self.sent.store(seq, Ordering::SeqCst);
    }

    fn publish(&self, seq: u64, deleted: bool) {
        self.acked.store(seq << 1 | u64::from(deleted), Ordering::SeqCst);
    }

    fn load(&self) -> (u64, bool) {
        let v = self.acked.load(Ordering::SeqCst);
        (v >> 1, v & 1 == 1)
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }
}

/// A client with connections of its own (a separate pool).
fn own_client() -> Client {
    canon_server::http_client::builder().build().expect("client")
}

fn record_path(n: usize) -> String {
    format!("{COLLECTION}/records/r{n}")
}

/// The `seq` a record's body carries.
fn seq_of(body: &Value) -> u64 {
    body["data"]["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no seq in {body}"))
}

async fn get(client: &Client, node: &Server, path: &str, token: &str) -> Response {
    client
        .get(node.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("send")
}

/// What a write's 2xx said the record now is.
#[derive(Clone, Copy)]
struct Expected<'a> {
    seq: u64,
    etag: Option<&'a str>,
    deleted: bool,
}

/// The record at `path` read right after a write acknowledged `expected`
/// (or its deletion): exactly that, since no other write of it is in flight.
async fn assert_reads_back(
    client: &Client,
    node: &Server,
    path: &str,
    token: &str,
    expected: Expected<'_>,
    what: &str,
) {
    let Expected { seq, etag, deleted } = expected;
    let r = get(client, node, path, token).await;
    let status = r.status();
    let tag = header(&r, "etag").to_owned();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    if deleted {
        assert_eq!(status, StatusCode::GONE, "{what}: {path} after its DELETE: {body}");
        return;
    }
    assert_eq!(status, StatusCode::OK, "{what}: {path} after seq {seq}: {body}");
    assert_eq!(seq_of(&body), seq, "{what}: {path} read back stale: {body}");
    if let Some(etag) = etag {
        assert_eq!(tag, etag, "{what}: {path}: the entity tag of the write");
    }
}

/// One writer: every kind of write of record `n`, each read back at once on
/// the writer's connection and on a fresh one through the other node.
async fn writer(
    a: Arc<Server>,
    b: Arc<Server>,
    token: String,
    n: usize,
    acked: Arc<Acknowledged>,
    deadline: Instant,
) -> u64 {
    let path = record_path(n);
    let id = format!("r{n}");
    let client = own_client();
    let mut seq = 1;
    let mut deleted = false;
    let mut writes = 0;
    // The entity tag of the last acknowledged write (the record as set up
    // at first): conditional writes send it and must never be refused.
    let first = get(&client, &a, &path, &token).await;
    let mut last_etag = header(&first, "etag").to_owned();
    while Instant::now() < deadline {
        seq += 1;
        // Through which node this write goes, and its kind.
        let (node, other) = if seq % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let batch = node.url(&format!("{COLLECTION}/records/batch"));
        let kind = if deleted { 99 } else { (seq as usize + n) % 10 };
        acked.sending(seq);
        let (status, etag, now_deleted) = match kind {
            99 | 0 | 1 => {
                // PUT: a replace, or the re-creation of a deleted record.
                let r = client
                    .put(node.url(&path))
                    .bearer_auth(&token)
                    .json(&json!({"seq": seq}))
                    .send()
                    .await
                    .expect("put");
                let expected = if deleted { StatusCode::CREATED } else { StatusCode::OK };
                assert_eq!(r.status(), expected, "PUT {path}");
                (r.status(), Some(header(&r, "etag").to_owned()), false)
            }
            2..=4 => {
                let r = client
                    .patch(node.url(&path))
                    .bearer_auth(&token)
                    .header("content-type", "application/merge-patch+json")
                    .body(json!({"seq": seq, "by": "patch"}).to_string())
                    .send()
                    .await
                    .expect("patch");
                (r.status(), Some(header(&r, "etag").to_owned()), false)
            }
            5 | 6 => {
                // An atomic batch, or a plain one (each operation its own).
                let atomic = kind == 5;
                let r = client
                    .post(&batch)
                    .bearer_auth(&token)
                    .json(&json!({"atomic": atomic, "operations": [
                        {"op": "patch", "id": id, "data": {"seq": seq, "by": "batch"}},
                    ]}))
                    .send()
                    .await
                    .expect("batch");
                let status = r.status();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                let result = &body["results"][0];
                assert_eq!(result["status"], 200, "batch on {path}: {body}");
                let etag = result["etag"].as_str().map(str::to_owned);
                (status, etag, false)
            }
            7 => {
                // A conditional write that is refused changes nothing: the
                // record stays as acknowledged before (seq - 1).
                let r = client
                    .put(node.url(&path))
                    .bearer_auth(&token)
                    .header("if-match", "\"not-the-tag\"")
                    .json(&json!({"seq": seq}))
                    .send()
                    .await
                    .expect("put");
                assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED, "PUT {path} If-Match");
                seq -= 1;
                (StatusCode::OK, None, false)
            }
            8 => {
                // A conditional write with the tag of the last acknowledged
                // write: its precondition is evaluated against the record
                // as loaded (from the cache where there is one), so a stale
                // entry would refuse it.
                let r = client
                    .put(node.url(&path))
                    .bearer_auth(&token)
                    .header("if-match", &last_etag)
                    .json(&json!({"seq": seq}))
                    .send()
                    .await
                    .expect("put");
                assert_eq!(r.status(), StatusCode::OK, "PUT {path} If-Match: {last_etag}");
                (r.status(), Some(header(&r, "etag").to_owned()), false)
            }
            _ => {
                // DELETE, conditional on every other record.
                let mut request = client.delete(node.url(&path)).bearer_auth(&token);
                if n.is_multiple_of(2) {
                    request = request.header("if-match", &last_etag);
                }
                let r = request.send().await.expect("delete");
                assert_eq!(
                    r.status(),
                    StatusCode::NO_CONTENT,
                    "DELETE {path} (If-Match: {last_etag})"
                );
                (r.status(), None, true)
            }
        };
        assert!(status.is_success(), "write {kind} of {path}: {status}");
        if let Some(etag) = &etag {
            last_etag = etag.clone();
        }
        deleted = now_deleted;
        acked.publish(seq, deleted);
        writes += 1;
        let what = format!("write kind {kind}");
        let expected = Expected {
            seq,
            etag: etag.as_deref(),
            deleted,
        };
        assert_reads_back(&client, node, &path, &token, expected, &what).await;
        let fresh = own_client();
        assert_reads_back(&fresh, other, &path, &token, expected, &what).await;
        assert_reads_back(&client, node, &path, &token, expected, &what).await;
    }
    writes
}

/// One reader: GETs the records round and round on its own connection and
/// checks each answer against what was acknowledged before it asked. A
/// conditional reader sends the entity tag it saw last (`If-None-Match`):
/// a 304 says that version is still the record's, so it too must be no
/// older than what was acknowledged.
async fn reader(
    node: Arc<Server>,
    token: String,
    acked: Arc<Vec<Arc<Acknowledged>>>,
    done: Arc<AtomicBool>,
    start: usize,
    conditional: bool,
) -> u64 {
    let client = own_client();
    let mut reads = 0;
    let mut n = start;
    // Per record: the entity tag and seq this reader saw last.
    let mut seen: Vec<Option<(String, u64)>> = vec![None; RECORDS];
    while !done.load(Ordering::SeqCst) {
        n = (n + 1) % RECORDS;
        let path = record_path(n);
        let (before, deleted_before) = acked[n].load();
        let mut request = client.get(node.url(&path)).bearer_auth(&token);
        if let (true, Some((etag, _))) = (conditional, &seen[n]) {
            request = request.header("if-none-match", etag.as_str());
        }
        let r = request.send().await.expect("send");
        let status = r.status();
        let etag = header(&r, "etag").to_owned();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        let sent_after = acked[n].sent();
        let served = match status {
            StatusCode::OK => Some(seq_of(&body)),
            StatusCode::NOT_MODIFIED => seen[n].as_ref().map(|(_, seq)| *seq),
            _ => None,
        };
        match status {
            StatusCode::OK | StatusCode::NOT_MODIFIED => {
                let seq = served.unwrap_or_else(|| panic!("{path}: 304 to an unconditional GET"));
                if status == StatusCode::OK {
                    seen[n] = Some((etag, seq));
                }
                // A write in flight may already show; an acknowledged one
                // must. A record deleted at `before` can only be back by a
                // later write.
                assert!(
                    seq >= before,
                    "{path}: {status}, seq {seq} served after seq {before} was acknowledged: {body}"
                );
                assert!(
                    !deleted_before || seq > before,
                    "{path}: served seq {seq} after its deletion (seq {before}) was acknowledged"
                );
            }
            StatusCode::GONE => {
                // Gone because it was deleted before we asked, or by a
                // delete that was in flight meanwhile.
                assert!(
                    deleted_before || sent_after > before,
                    "{path}: 410 while seq {before} (not a deletion) was the last write and none was sent since"
                );
            }
            other => panic!("{path}: {other} {body}"),
        }
        reads += 1;
    }
    reads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_get_ever_answers_a_record_older_than_the_last_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("canon.db");
    let a = Arc::new(Server::start_on(&db).await);
    let w = world(&a, "acme").await;
    a.ok_json(
        Method::POST,
        "/v1/tenants/acme/collections",
        &w.admin,
        Some(json!({"name": "notes", "schema": {"type": "object"}})),
    )
    .await;
    // The second node starts once the first has set everything up.
    let b = Arc::new(Server::start_on(&db).await);
    let mut acked = Vec::new();
    for n in 0..RECORDS {
        a.ok_json(Method::PUT, &record_path(n), &w.editor, Some(json!({"seq": 1})))
            .await;
        let state = Arc::new(Acknowledged::default());
        state.publish(1, false);
        acked.push(state);
    }
    let acked = Arc::new(acked);
    let done = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for r in 0..READERS {
        let node = if r % 2 == 0 { a.clone() } else { b.clone() };
        readers.push(tokio::spawn(reader(
            node,
            w.viewer.clone(),
            acked.clone(),
            done.clone(),
            r * RECORDS / READERS,
            r % 4 >= 2,
        )));
    }
    let deadline = Instant::now() + RUN;
    let mut writers = Vec::new();
    for n in 0..RECORDS {
        writers.push(tokio::spawn(writer(
            a.clone(),
            b.clone(),
            w.editor.clone(),
            n,
            acked[n].clone(),
            deadline,
        )));
    }
    let mut writes = 0;
    let mut failed = None;
    for t in writers {
        match t.await {
            Ok(n) => writes += n,
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    done.store(true, Ordering::SeqCst);
    let mut reads = 0;
    for t in readers {
        match t.await {
            Ok(n) => reads += n,
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    if let Some(e) = failed {
        std::panic::resume_unwind(e.into_panic());
    }
    // Enough of both for the races to have happened.
    assert!(writes >= 100, "only {writes} writes");
    assert!(reads >= 400, "only {reads} reads");
    eprintln!("{writes} writes, {reads} reads");
}
