//! Writes racing a delete and re-create of what they write.
//!
//! What is allowed: the thing is created before the race, and every delete
//! leaves a tombstone that outlives it ([`KEEP`]). So at every instant the
//! thing is either there or deleted with a live tombstone, and a write,
//! wherever it falls among the re-creator's steps, either finds it
//! (succeeds) or finds its tombstone ([`StoreError::Gone`]).
//! [`StoreError::Vanished`] ("no such thing was ever there", a 404) is wrong
//! at every instant, and so is any other error. The re-creator's own delete
//! is held to the same rule (a racer may have deleted first: `Gone`); its
//! create always succeeds (nothing else creates the name).
//!
//! A write that misses its target reads the tombstone in a second statement
//! (after waiting on a concurrent delete's row lock, it must see that
//! delete's tombstone). On PostgreSQL a re-create committing between the two
//! statements made it answer `Vanished`, unless the write holds a lock the
//! re-create takes too (docs/decisions.md, "A lookup decides found, gone or
//! missing from one snapshot").

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use canon_store::*;
use serde_json::json;

use super::devices::new_device;
use super::{KEEP, LEASE, collection, tenant};

/// How long each race runs: long enough for dozens of re-creates on either
/// backend (without the locks, PostgreSQL answered `Vanished` within about
/// half a second), short enough for the suite (a case within 2 s).
const RACE: Duration = Duration::from_millis(1000);

/// Writers racing the re-creator.
const RACERS: usize = 2;

/// What a write may answer: `Ok` (it found the thing) or `Gone` (it found
/// the tombstone). Counts which.
fn allowed(what: &str, op: &str, result: StoreResult<()>, done: &mut u64, gone: &mut u64) {
    match result {
        Ok(()) => *done += 1,
        Err(StoreError::Gone) => *gone += 1,
        Err(e) => panic!("{what}: {op} answered {e:?} while it is deleted and re-created"),
    }
}

/// Runs the re-creator (`delete` then `create`, until the race ends) and
/// `RACERS` racers, each writing `write(n)` for n = 0, 1, 2, … (a write
/// names itself), checking every answer.
async fn race<D, DF, C, CF, W, WF>(what: &str, delete: D, create: C, write: W)
where
    D: Fn() -> DF,
    DF: Future<Output = StoreResult<()>>,
    C: Fn() -> CF,
    CF: Future<Output = StoreResult<()>>,
    W: Fn(u64) -> WF,
    WF: Future<Output = (&'static str, StoreResult<()>)>,
{
    let deadline = Instant::now() + RACE;
    let recreator = async {
        let (mut cycles, mut gone) = (0u64, 0u64);
        while Instant::now() < deadline {
            allowed(what, "the re-creator's delete", delete().await, &mut 0, &mut gone);
            create().await.unwrap_or_else(|e| panic!("{what}: re-create: {e:?}"));
            cycles += 1;
        }
        (cycles, gone)
    };
    let racer = async || {
        let (mut n, mut done, mut gone) = (0u64, 0u64, 0u64);
        while Instant::now() < deadline {
            let (op, result) = write(n).await;
            allowed(what, op, result, &mut done, &mut gone);
            n += 1;
        }
        (done, gone)
    };
    let racers = futures_util::future::join_all((0..RACERS).map(|_| racer()));
    let ((cycles, recreator_gone), seen) = tokio::join!(recreator, racers);
    assert!(cycles > 0, "{what}: the re-creator never re-created it");
    let (done, gone) = seen.iter().fold((0, 0), |(d, g), (d2, g2)| (d + d2, g + g2));
    eprintln!(
        "{what}: {cycles} re-creates ({recreator_gone} deleted first by a racer); racers: {done} done, {gone} gone"
    );
}

pub async fn writes_to_a_recreated_device_are_never_vanished(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    store.create_device(&t.id, new_device("fw")).await.expect("create");
    let changes = DeviceChanges {
        timeout_ms: Some(500),
        ..DeviceChanges::default()
    };
    // The racers' futures borrow these; each racer's write moves copies.
    let (store, t, changes) = (&*store, &t, &changes);
    race(
        "device",
        || store.delete_device(&t.id, "fw", Expect::Anything, KEEP),
        || async { store.create_device(&t.id, new_device("fw")).await.map(drop) },
        move |n| async move {
            if n.is_multiple_of(2) {
                let updated = store.update_device(&t.id, "fw", changes.clone(), Expect::Anything);
                ("update", updated.await.map(drop))
            } else {
                ("delete", store.delete_device(&t.id, "fw", Expect::Anything, KEEP).await)
            }
        },
    )
    .await;
}

pub async fn writes_to_a_recreated_collection_are_never_vanished(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    collection(&*store, &t, "things", &[]).await;
    let changes = CollectionChanges {
        schema: Some(json!({"type": "object", "title": "things"})),
        ..CollectionChanges::default()
    };
    let (store, t, changes) = (&*store, &t, &changes);
    race(
        "collection",
        || store.delete_collection(&t.id, "things", Expect::Anything, KEEP),
        || async {
            let new = NewCollection {
                name: "things".into(),
                schema: json!({"type": "object"}),
                unique: Vec::new(),
                require_if_match: false,
            };
            store.create_collection(&t.id, new).await.map(drop)
        },
        move |n| async move {
            if n.is_multiple_of(2) {
                let updated = store.update_collection(&t.id, "things", changes.clone(), Expect::Anything);
                ("update", updated.await.map(drop))
            } else {
                let deleted = store.delete_collection(&t.id, "things", Expect::Anything, KEEP);
                ("delete", deleted.await)
            }
        },
    )
    .await;
}

/// A tenant's name is re-created once its deletion ran to the end and the
/// name was released; racers delete it meanwhile, and so sometimes start
/// the deletion the re-creator then drives, or start it again once its job
/// was purged (`Ok`). The tenant is there, being deleted, or released with
/// its tombstone live: a delete, or a change of its limits, answers `Ok` or
/// `Gone`.
pub async fn writes_to_a_recreated_tenant_are_never_vanished(store: Arc<dyn Store>) {
    tenant(&*store, "acme").await;
    // The racers' futures borrow it (each racer's write is a `move`).
    let store = &*store;
    // Drives the deletion until the name is released. A racer's delete may
    // start it again until then (one whose job was purged stopped).
    let release = async || -> StoreResult<()> {
        while let Some(deletion) = store.tenant_deletion("acme").await? {
            let (tenant_id, job_id) = (&deletion.tenant_id, &deletion.job_id);
            if deletion.job_status == Some(JobStatus::Queued) {
                // The only job queued: a racer's restart of an earlier
                // deletion that raced the release of its name either kept
                // the tenant or answered `Gone`, never left a job behind
                // (an orphan, claimed first as the older, failed this).
                let claimed = store.claim_job("w", LEASE, now_millis()).await?;
                let claimed = claimed.map(|job| job.id);
                assert_eq!(
                    claimed.as_ref(),
                    Some(job_id),
                    "tenant: claimed another job than the deletion's"
                );
                while !store
                    .delete_tenant_step(tenant_id, job_id, "w", "acme/", 100, now_millis())
                    .await?
                    .finished
                {}
                let outcome = JobOutcome::Succeeded { result: None };
                store
                    .finish_job(tenant_id, job_id, "w", outcome, now_millis(), Duration::ZERO)
                    .await?;
            }
            store.purge_expired_jobs(now_millis(), KEEP).await?;
            store.purge_expired().await?;
        }
        Ok(())
    };
    race(
        "tenant",
        || async {
            let deleted = store.delete_tenant("acme", Expect::Anything, KEEP, now_millis()).await;
            if matches!(deleted, Ok(_) | Err(StoreError::Gone)) {
                release().await.expect("release the name");
            }
            deleted.map(drop)
        },
        || async { store.create_tenant("acme").await.map(drop) },
        |n| async move {
            if n.is_multiple_of(2) {
                let limits = TenantLimits {
                    burst: Some(10),
                    ..TenantLimits::default()
                };
                let set = store.set_tenant_limits("acme", limits, Expect::Anything).await;
                ("set limits", set.map(drop))
            } else {
                let deleted = store.delete_tenant("acme", Expect::Anything, KEEP, now_millis()).await;
                ("delete", deleted.map(drop))
            }
        },
    )
    .await;
}
