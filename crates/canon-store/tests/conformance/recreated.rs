//! Lookups racing a delete and re-create of the thing they look up: a
//! lookup decides found, gone or missing from one snapshot, so once the
//! thing was created it is never `Missing` (docs/decisions.md, "A lookup
//! decides found, gone or missing from one snapshot"). Read as two snapshots (the row, then the tombstone), a
//! re-create committing in between (it removes the tombstone and inserts the
//! row) made the lookup answer `Missing`, a 404 for a thing that exists.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use canon_store::*;
use serde_json::json;

use super::devices::new_device;
use super::{ACTOR, KEEP, collection, tenant};

/// How long each race runs: long enough for hundreds of re-creates on
/// either backend, short enough for the suite.
const RACE: Duration = Duration::from_millis(1500);

/// Readers per race, each a lookup in flight at any time.
const READERS: usize = 3;

/// Runs `READERS` readers of `read` until `deadline`, alongside `writer` (a
/// task deleting and re-creating the thing until then, returning how many
/// times it did). Every answer must be `Found` or `Gone`.
async fn race<T, F, Fut>(what: &str, deadline: Instant, writer: tokio::task::JoinHandle<u64>, read: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = StoreResult<Lookup<T>>>,
{
    let reader = async || {
        let (mut found, mut gone) = (0u64, 0u64);
        while Instant::now() < deadline {
            match read().await.expect("lookup") {
                Lookup::Found(_) => found += 1,
                Lookup::Gone => gone += 1,
                Lookup::Missing => panic!("{what}: Missing while it is deleted and re-created"),
            }
        }
        (found, gone)
    };
    let mut readers = Vec::new();
    for _ in 0..READERS {
        readers.push(reader());
    }
    let seen = futures_util::future::join_all(readers).await;
    let cycles = writer.await.expect("writer");
    assert!(cycles > 0, "{what}: the writer never re-created it");
    let (found, gone) = seen.iter().fold((0, 0), |(f, g), (f2, g2)| (f + f2, g + g2));
    eprintln!("{what}: {cycles} re-creates, {found} found, {gone} gone");
}

pub async fn a_recreated_record_is_never_missing(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    let c = collection(&*store, &t, "things", &[]).await;
    store
        .put_record(&c, "r", json!({"n": 0}), Expect::Anything, ACTOR)
        .await
        .expect("create");
    let deadline = Instant::now() + RACE;
    let writer = tokio::spawn({
        let (store, c) = (store.clone(), c.clone());
        async move {
            let mut cycles = 0;
            while Instant::now() < deadline {
                store
                    .delete_record(&c.id, "r", Expect::Anything, ACTOR, KEEP)
                    .await
                    .expect("delete");
                store
                    .put_record(&c, "r", json!({"n": cycles}), Expect::Anything, ACTOR)
                    .await
                    .expect("re-create");
                cycles += 1;
            }
            cycles
        }
    });
    // Both reads of one record: the parsed one and the stored text.
    let reads = AtomicU64::new(0);
    race("record", deadline, writer, || async {
        if reads.fetch_add(1, Ordering::Relaxed).is_multiple_of(2) {
            store.record(&c.id, "r").await.map(|l| l.map(drop))
        } else {
            store.raw_record(&c.id, "r").await.map(|l| l.map(drop))
        }
    })
    .await;
}

pub async fn a_recreated_collection_is_never_missing(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    collection(&*store, &t, "things", &[]).await;
    let deadline = Instant::now() + RACE;
    let writer = tokio::spawn({
        let (store, t) = (store.clone(), t.clone());
        async move {
            let mut cycles = 0;
            while Instant::now() < deadline {
                store
                    .delete_collection(&t.id, "things", Expect::Anything, KEEP)
                    .await
                    .expect("delete");
                collection(&*store, &t, "things", &[]).await;
                cycles += 1;
            }
            cycles
        }
    });
    race("collection", deadline, writer, || store.collection(&t.id, "things")).await;
}

pub async fn a_recreated_device_is_never_missing(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    store.create_device(&t.id, new_device("fw")).await.expect("create");
    let deadline = Instant::now() + RACE;
    let writer = tokio::spawn({
        let (store, t) = (store.clone(), t.clone());
        async move {
            let mut cycles = 0;
            while Instant::now() < deadline {
                store
                    .delete_device(&t.id, "fw", Expect::Anything, KEEP)
                    .await
                    .expect("delete");
                store.create_device(&t.id, new_device("fw")).await.expect("re-create");
                cycles += 1;
            }
            cycles
        }
    });
    race("device", deadline, writer, || store.device(&t.id, "fw")).await;
}
