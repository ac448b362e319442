//! The record cache's race (docs/decisions.md, "The record cache") without
//! HTTP in between, so reads and commits interleave thousands of times a
//! second: a read that began before a commit must never leave the record as
//! it was in the cache once the commit's caller is answered.
//!
//! Writers, one per record, replace their record again and again on two
//! stores of one file (they share the cache and each has its own writer
//! thread); after each acknowledged write the writer reads the record back
//! through both stores. Readers on more threads than there are cores read
//! every record as fast as they can and check each answer against what was
//! acknowledged before they asked.
//!
//! Also: a cached record is refused, as every read is, while the database
//! file is moved away (over HTTP other reads of the request would answer 503
//! first, so only the store can tell); and records cached before their
//! tenant is deleted are not served once the deletion's step removed them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use canon_store::prelude::*;
use canon_store::sqlite::SqliteStore;
use canon_store::{Collection, Expect, Lookup, NewCollection};
use serde_json::json;

const RECORDS: usize = 8;
const READERS: usize = 6;
const RUN: Duration = Duration::from_secs(3);

fn id(n: usize) -> String {
    format!("r{n}")
}

async fn writer(
    stores: [Arc<SqliteStore>; 2],
    collection: Collection,
    n: usize,
    acked: Arc<AtomicU64>,
    deadline: Instant,
) -> u64 {
    let id = id(n);
    let mut writes = 0;
    while Instant::now() < deadline {
        let store = &stores[writes as usize % 2];
        let (written, _) = store
            .put_record(&collection, &id, json!({"w": writes}), Expect::Anything, "t")
            .await
            .expect("put");
        acked.fetch_max(written.version as u64, Ordering::SeqCst);
        writes += 1;
        for store in &stores {
            match store.raw_record(&collection.id, &id).await.expect("read") {
                Lookup::Found(read) => {
                    assert_eq!(
                        (read.version, &read.etag),
                        (written.version, &written.etag),
                        "{id} read back stale right after its write"
                    );
                }
                other => panic!("{id}: {other:?} after a write"),
            }
        }
    }
    writes
}

async fn reader(
    store: Arc<SqliteStore>,
    collection_id: String,
    acked: Arc<Vec<Arc<AtomicU64>>>,
    done: Arc<AtomicBool>,
) -> u64 {
    let mut reads = 0;
    while !done.load(Ordering::SeqCst) {
        for (n, acked) in acked.iter().enumerate() {
            let before = acked.load(Ordering::SeqCst);
            let Lookup::Found(read) = store.raw_record(&collection_id, &id(n)).await.expect("read") else {
                panic!("r{n} not found");
            };
            assert!(
                read.version as u64 >= before,
                "r{n}: version {} served after version {before} was acknowledged",
                read.version
            );
            reads += 1;
        }
        // Let the writers' answers run on this thread too.
        tokio::task::yield_now().await;
    }
    reads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn a_read_that_raced_a_commit_never_leaves_the_old_record_cached() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canon.db");
    let a = Arc::new(SqliteStore::open(&path).unwrap());
    let b = Arc::new(SqliteStore::open(&path).unwrap());
    let (_, collection) = acme_notes(&a).await;
    let mut acked = Vec::new();
    for n in 0..RECORDS {
        let (r, _) = a
            .put_record(&collection, &id(n), json!({}), Expect::Anything, "t")
            .await
            .unwrap();
        acked.push(Arc::new(AtomicU64::new(r.version as u64)));
    }
    let acked = Arc::new(acked);
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..READERS)
        .map(|r| {
            let store = if r % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(reader(store, collection.id.clone(), acked.clone(), done.clone()))
        })
        .collect();
    let deadline = Instant::now() + RUN;
    let writers: Vec<_> = (0..RECORDS)
        .map(|n| {
            tokio::spawn(writer(
                [a.clone(), b.clone()],
                collection.clone(),
                n,
                acked[n].clone(),
                deadline,
            ))
        })
        .collect();
    let mut failed = None;
    let mut writes = 0;
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
    eprintln!("{writes} writes, {reads} reads");
    assert!(writes >= 200 && reads >= 2000, "{writes} writes, {reads} reads");
}

/// A record in the cache is refused like every read of the file once the
/// database file is moved away (the engine's check of its file), and served
/// again once the file is back: the cache answers only for the file it was
/// filled from, while that file is where it was.
/// Tenant `acme` and its collection `notes` (any object), made through `store`.
async fn acme_notes(store: &SqliteStore) -> (canon_store::Tenant, Collection) {
    let tenant = store.create_tenant("acme").await.unwrap();
    let new = NewCollection {
        name: "notes".into(),
        schema: json!({"type": "object"}),
        unique: vec![],
        require_if_match: false,
    };
    let collection = store.create_collection(&tenant.id, new).await.unwrap();
    (tenant, collection)
}

#[tokio::test]
async fn a_cached_record_is_refused_while_the_database_file_is_moved_away() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("data");
    std::fs::create_dir(&home).unwrap();
    let store = SqliteStore::open(home.join("canon.db")).unwrap();
    let (_, collection) = acme_notes(&store).await;
    store
        .put_record(&collection, "r", json!({}), Expect::Anything, "t")
        .await
        .unwrap();
    // Read twice: the second answer comes from the cache.
    for _ in 0..2 {
        assert!(matches!(
            store.raw_record(&collection.id, "r").await,
            Ok(Lookup::Found(_))
        ));
    }

    let away = dir.path().join("elsewhere");
    std::fs::rename(&home, &away).unwrap();
    let started = Instant::now();
    let mut read = store.raw_record(&collection.id, "r").await;
    while read.is_ok() && started.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        read = store.raw_record(&collection.id, "r").await;
    }
    assert!(
        matches!(read, Err(canon_store::StoreError::Unavailable(_))),
        "a cached record outlived its file: {read:?}"
    );

    std::fs::rename(&away, &home).unwrap();
    let started = Instant::now();
    while !matches!(store.raw_record(&collection.id, "r").await, Ok(Lookup::Found(_))) {
        assert!(started.elapsed() < Duration::from_secs(2), "not served again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A tenant's deletion removes its records in bounded steps (a job's
/// deletes, not a record DELETE each): every record cached before is gone
/// from the cache once the step that removed it is answered, never served
/// from memory after it.
#[tokio::test]
async fn records_cached_before_their_tenant_is_deleted_are_not_served_after() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("canon.db")).unwrap();
    let (tenant, collection) = acme_notes(&store).await;
    for n in 0..RECORDS {
        store
            .put_record(&collection, &id(n), json!({}), Expect::Anything, "t")
            .await
            .unwrap();
        // Read twice: the second answer comes from the cache.
        for _ in 0..2 {
            assert!(matches!(
                store.raw_record(&collection.id, &id(n)).await,
                Ok(Lookup::Found(_))
            ));
        }
    }
    let now = canon_store::now_millis();
    let job = store
        .delete_tenant("acme", Expect::Anything, Duration::from_secs(60), now)
        .await
        .unwrap();
    let claimed = store
        .claim_job("w", Duration::from_secs(30), now)
        .await
        .unwrap()
        .expect("the deletion's job");
    assert_eq!(claimed.id, job.id);
    // Steps of 3 rows: the records go over several commits.
    loop {
        let step = store
            .delete_tenant_step(&tenant.id, &job.id, "w", "acme/", 3, now)
            .await
            .unwrap();
        let removed = step.deleted.records as usize;
        let mut served = 0;
        for n in 0..RECORDS {
            if let Lookup::Found(_) = store.raw_record(&collection.id, &id(n)).await.unwrap() {
                served += 1;
            }
        }
        assert_eq!(served, RECORDS - removed, "records served after a step removed them");
        if step.finished {
            break;
        }
    }
}
