//! Tenant deletion: a tombstone with its job in one transaction, then
//! bounded, lease-checked steps that empty the tenant and count what went.

use std::sync::Arc;
use std::time::Duration;

use canon_store::*;
use serde_json::json;

use super::{ACTOR, KEEP, LEASE, LEASE_MS, collection, first_page, t0, tenant};

/// The idempotency scope prefix of `acme`'s members, as the server makes it.
const ACME_SCOPES: &str = "acme/";

fn export_job(t: &Tenant) -> NewJob {
    NewJob {
        tenant_id: t.id.clone(),
        kind: JobKind::Export,
        params: json!({}),
        total: None,
        with_input: false,
    }
}

async fn idempotency(store: &dyn Store, scope: &str, key: &str) {
    let request = IdempotencyRequest {
        scope: scope.into(),
        key: key.into(),
        fingerprint: "f".into(),
    };
    let day = Duration::from_secs(86_400);
    assert_eq!(
        store.claim_idempotency(&request, day, LEASE).await.unwrap(),
        IdempotencyClaim::Claimed
    );
}

/// The 202 moment: one transaction makes the tenant a tombstone (Gone, its
/// keys dead, nothing added to it any more, its name held) and queues the job.
pub async fn deleting_a_tenant_tombstones_it_with_its_job(store: Arc<dyn Store>) {
    let now = t0();
    let t = tenant(&*store, "acme").await;
    let other = tenant(&*store, "other").await;
    let u = store
        .create_user(&t.id, "a@acme.example", TenantRole::Admin)
        .await
        .unwrap();
    store.create_api_key(&t.id, &u.id, "ci", "acme-key").await.unwrap();
    assert!(matches!(
        store
            .delete_tenant("acme", Expect::Version(t.version + 1), KEEP, now)
            .await,
        Err(StoreError::ExpectationFailed)
    ));
    assert!(store.tenant_deletion("acme").await.unwrap().is_none(), "a live tenant");

    let job = store
        .delete_tenant("acme", Expect::Version(t.version), KEEP, now)
        .await
        .unwrap();
    assert_eq!(
        (job.kind, job.status, job.tenant_id.as_str()),
        (JobKind::DeleteTenant, JobStatus::Queued, t.id.as_str())
    );
    assert_eq!(job.params, json!({"tenant": "acme", "tenant_id": t.id}));
    assert_eq!(store.job(&t.id, &job.id).await.unwrap(), Lookup::Found(job.clone()));

    assert_eq!(store.tenant("acme").await.unwrap(), Lookup::Gone);
    assert_eq!(
        store.key_owner("acme-key").await.unwrap(),
        None,
        "its keys stop at once"
    );
    let names: Vec<String> = store
        .list_tenants(first_page(10))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["other"]);
    let deletion = store.tenant_deletion("acme").await.unwrap().expect("a deletion");
    assert_eq!(
        (
            deletion.tenant_id.as_str(),
            deletion.job_id.as_str(),
            deletion.job_status,
            deletion.deleted_at,
            deletion.emptied_at
        ),
        (t.id.as_str(), job.id.as_str(), Some(JobStatus::Queued), now, None)
    );
    assert!(!deletion.stopped());

    // Nothing can be added to it any more, and its name is held.
    assert!(matches!(
        store.create_user(&t.id, "b@acme.example", TenantRole::Viewer).await,
        Err(StoreError::Gone)
    ));
    assert!(matches!(
        store.create_api_key(&t.id, &u.id, "late", "late-key").await,
        Err(StoreError::Gone)
    ));
    let new = NewCollection {
        name: "late".into(),
        schema: json!({}),
        unique: vec![],
        require_if_match: false,
    };
    assert!(matches!(
        store.create_collection(&t.id, new).await,
        Err(StoreError::Gone)
    ));
    assert!(matches!(
        store.create_job(export_job(&t), now).await,
        Err(StoreError::Gone)
    ));
    assert!(matches!(
        store.create_tenant("acme").await,
        Err(StoreError::HeldByDeletion { pointer }) if pointer == "/name"
    ));

    // A second delete while it runs is Gone; an unknown name Vanished.
    assert!(matches!(
        store.delete_tenant("acme", Expect::Anything, KEEP, now).await,
        Err(StoreError::Gone)
    ));
    assert!(matches!(
        store.delete_tenant("nope", Expect::Anything, KEEP, now).await,
        Err(StoreError::Vanished)
    ));
    // The other tenant is untouched.
    assert!(matches!(store.tenant("other").await.unwrap(), Lookup::Found(o) if o == other));
}

/// Of concurrent deletes of one tenant, one starts the deletion and every
/// other sees the tombstone: one job only.
pub async fn concurrent_tenant_deletes_have_one_winner(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    let now = t0();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.delete_tenant("acme", Expect::Anything, KEEP, now).await })
        })
        .collect();
    let (mut ok, mut gone) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::Gone) => gone += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((ok, gone), (1, 7));
    assert_eq!(store.list_jobs(&t.id, first_page(10)).await.unwrap().items.len(), 1);
}

/// Steps of at most `limit` rows empty the tenant: its other jobs canceled
/// first, then collections with everything below them, users with their
/// keys, tombstones, its members' idempotency entries, its other jobs with
/// their chunks. The counts are exact, a step after the end changes nothing,
/// another tenant keeps everything, and once the job is purged the name is
/// free again (the tenant's tombstone answers meanwhile).
pub async fn tenant_deletion_steps_empty_the_tenant_and_count_what_went(store: Arc<dyn Store>) {
    let now = t0();
    let t = tenant(&*store, "acme").await;
    let other = tenant(&*store, "acme-2").await;
    // Two collections, one renamed, with unique values, a lease, a tombstone.
    let devices = collection(&*store, &t, "devices", &["serial"]).await;
    let probes = collection(&*store, &t, "probes", &[]).await;
    for i in 0..7 {
        store
            .put_record(
                &devices,
                &format!("d{i}"),
                json!({"serial": format!("S{i}")}),
                Expect::Anything,
                ACTOR,
            )
            .await
            .unwrap();
    }
    for i in 0..4 {
        store.create_record(&probes, json!({"n": i})).await.unwrap();
    }
    store
        .delete_record(&devices.id, "d6", Expect::Anything, ACTOR, KEEP)
        .await
        .unwrap();
    store.acquire_lease(&devices.id, "d0", ACTOR, KEEP).await.unwrap();
    store
        .update_collection(
            &t.id,
            "probes",
            CollectionChanges {
                name: Some("sensors".into()),
                ..CollectionChanges::default()
            },
            Expect::Anything,
        )
        .await
        .unwrap();
    // Users with keys, and a deleted user whose key left a tombstone.
    let admin = store
        .create_user(&t.id, "a@acme.example", TenantRole::Admin)
        .await
        .unwrap();
    let gone_user = store
        .create_user(&t.id, "g@acme.example", TenantRole::Viewer)
        .await
        .unwrap();
    store.create_api_key(&t.id, &admin.id, "one", "k1").await.unwrap();
    store.create_api_key(&t.id, &admin.id, "two", "k2").await.unwrap();
    let gone_key = store.create_api_key(&t.id, &gone_user.id, "x", "k3").await.unwrap();
    store
        .revoke_api_key(&gone_user.id, &gone_key.id, Expect::Anything, KEEP)
        .await
        .unwrap();
    store
        .delete_user(&t.id, &gone_user.id, Expect::Anything, KEEP)
        .await
        .unwrap();
    store
        .create_user(&t.id, "e@acme.example", TenantRole::Editor)
        .await
        .unwrap();
    // Two devices, one deleted (its tombstone stays under the tenant).
    for name in ["fw-1", "fw-2"] {
        store
            .create_device(&t.id, super::devices::new_device(name))
            .await
            .unwrap();
    }
    store
        .delete_device(&t.id, "fw-2", Expect::Anything, KEEP)
        .await
        .unwrap();
    // The ledger: two entries of acme's members; one of acme-2's.
    idempotency(&*store, "acme/u1", "k").await;
    idempotency(&*store, "acme/u2", "k").await;
    idempotency(&*store, "acme-2/u1", "k").await;
    // Jobs: a finished one with a result, two running, one upload still arriving.
    let finished = store.create_job(export_job(&t), now).await.unwrap();
    assert_eq!(
        store.claim_job("w0", LEASE, now).await.unwrap().unwrap().id,
        finished.id
    );
    store
        .append_job_result(&t.id, &finished.id, "w0", 0, b"rows".to_vec(), now)
        .await
        .unwrap();
    store
        .finish_job(
            &t.id,
            &finished.id,
            "w0",
            JobOutcome::Succeeded { result: None },
            now,
            JOB_RESULT_RETENTION,
        )
        .await
        .unwrap();
    let running = store.create_job(export_job(&t), now + 1).await.unwrap();
    let queued = store.create_job(export_job(&t), now + 2).await.unwrap();
    let staged = store
        .create_job(
            NewJob {
                with_input: true,
                ..export_job(&t)
            },
            now,
        )
        .await
        .unwrap();
    for seq in 0..3 {
        store
            .append_job_input(&t.id, &staged.id, seq, vec![b'x'; 10])
            .await
            .unwrap();
    }
    assert_eq!(store.claim_job("w1", LEASE, now).await.unwrap().unwrap().id, running.id);
    // The other tenant's data, to prove it stays.
    let theirs = collection(&*store, &other, "devices", &["serial"]).await;
    store
        .put_record(&theirs, "d0", json!({"serial": "S0"}), Expect::Anything, ACTOR)
        .await
        .unwrap();
    let their_job = store.create_job(export_job(&other), now + 3).await.unwrap();

    let deletion = store
        .delete_tenant("acme", Expect::Anything, KEEP, now + 4)
        .await
        .unwrap();
    // Claim the deletion: the older queued jobs go to another worker first.
    assert_eq!(
        store.claim_job("w2", LEASE, now + 5).await.unwrap().unwrap().id,
        queued.id
    );
    assert_eq!(
        store.claim_job("w3", LEASE, now + 5).await.unwrap().unwrap().id,
        their_job.id
    );
    assert_eq!(
        store.claim_job("w4", LEASE, now + 5).await.unwrap().unwrap().id,
        deletion.id
    );

    let mut steps = 0;
    let mut done = -1;
    let last = loop {
        let step = store
            .delete_tenant_step(&t.id, &deletion.id, "w4", ACME_SCOPES, 3, now + 6)
            .await
            .unwrap();
        steps += 1;
        assert!(step.deleted.total() >= done, "progress never goes back");
        done = step.deleted.total();
        let job = store.job(&t.id, &deletion.id).await.unwrap().found().unwrap();
        assert_eq!(job.progress.done, done);
        assert_eq!(job.checkpoint, Some(serde_json::to_value(step.deleted).unwrap()));
        if steps == 1 {
            // The first step cancels the tenant's running and queued jobs.
            assert_eq!(step.deleted.jobs_canceled, 2);
            for (id, owner) in [(&running.id, "w1"), (&queued.id, "w2")] {
                assert!(matches!(
                    store.heartbeat(&t.id, id, owner, now + LEASE_MS, now + 6).await,
                    Err(StoreError::LeaseLost)
                ));
            }
        }
        if step.finished {
            break step.deleted;
        }
        assert!(steps < 100, "the deletion does not end");
    };
    assert!(steps > 5, "bounded steps, not one transaction: {steps}");
    assert_eq!(
        last,
        DeletedContents {
            collections: 2,
            records: 10,
            leases: 1,
            users: 2,
            api_keys: 2,
            jobs_canceled: 2,
            jobs: 4,
            idempotency_keys: 2,
            devices: 1,
        }
    );
    // A step after the end finds nothing and counts nothing twice.
    let again = store
        .delete_tenant_step(&t.id, &deletion.id, "w4", ACME_SCOPES, 3, now + 7)
        .await
        .unwrap();
    assert_eq!((again.deleted, again.finished), (last, true));

    // Nothing of acme answers, not even as a tombstone of its own.
    assert!(
        store
            .list_collections(&t.id, first_page(10))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(store.list_users(&t.id, first_page(10)).await.unwrap().items.is_empty());
    assert_eq!(store.collection(&t.id, "devices").await.unwrap(), Lookup::Missing);
    assert_eq!(store.device(&t.id, "fw-1").await.unwrap(), Lookup::Missing);
    assert_eq!(store.device(&t.id, "fw-2").await.unwrap(), Lookup::Missing);
    assert_eq!(store.collection_alias(&t.id, "probes").await.unwrap(), None);
    assert_eq!(store.record(&devices.id, "d6").await.unwrap(), Lookup::Missing);
    assert_eq!(store.record(&devices.id, "d1").await.unwrap(), Lookup::Missing);
    assert_eq!(store.lease(&devices.id, "d0").await.unwrap(), None);
    assert_eq!(store.user(&t.id, &gone_user.id).await.unwrap(), Lookup::Missing);
    assert_eq!(
        store.api_key(&gone_user.id, &gone_key.id).await.unwrap(),
        Lookup::Missing
    );
    assert_eq!(store.key_owner("k1").await.unwrap(), None);
    let jobs = store.list_jobs(&t.id, first_page(10)).await.unwrap().items;
    assert_eq!(
        jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        [deletion.id.as_str()]
    );
    assert_eq!(store.read_job_result(&t.id, &finished.id, 0).await.unwrap(), None);
    assert_eq!(store.read_job_input(&t.id, &staged.id, 0).await.unwrap(), None);
    assert_eq!(store.job(&t.id, &finished.id).await.unwrap(), Lookup::Missing);
    idempotency(&*store, "acme/u1", "k").await;
    // acme-2 keeps everything, its ledger entry included.
    assert!(matches!(
        store.record(&theirs.id, "d0").await.unwrap(),
        Lookup::Found(_)
    ));
    assert!(
        matches!(store.job(&other.id, &their_job.id).await.unwrap(), Lookup::Found(j) if j.status == JobStatus::Running)
    );
    let request = IdempotencyRequest {
        scope: "acme-2/u1".into(),
        key: "k".into(),
        fingerprint: "f".into(),
    };
    assert_eq!(
        store.claim_idempotency(&request, KEEP, LEASE).await.unwrap(),
        IdempotencyClaim::InFlight
    );

    // The job ends; the name stays held until the job is purged.
    let result = json!({"deleted": serde_json::to_value(last).unwrap()});
    let done_job = store
        .finish_job(
            &t.id,
            &deletion.id,
            "w4",
            JobOutcome::Succeeded { result: Some(result) },
            now + 8,
            JOB_RESULT_RETENTION,
        )
        .await
        .unwrap();
    let held = store.tenant_deletion("acme").await.unwrap().unwrap();
    assert_eq!(held.job_status, Some(JobStatus::Succeeded));
    assert!(held.emptied_at.is_some() && !held.stopped());
    store.purge_expired().await.unwrap();
    assert!(matches!(
        store.create_tenant("acme").await,
        Err(StoreError::HeldByDeletion { .. })
    ));
    let expires = done_job.result_expires_at.unwrap();
    store.purge_expired_jobs(expires, KEEP).await.unwrap();
    store.purge_expired().await.unwrap();
    assert_eq!(store.tenant_deletion("acme").await.unwrap(), None);
    assert_eq!(
        store.tenant("acme").await.unwrap(),
        Lookup::Gone,
        "the tombstone answers"
    );
    // So it does to a write by the name (410, not 404).
    assert!(matches!(
        store
            .set_tenant_limits("acme", TenantLimits::default(), Expect::Anything)
            .await,
        Err(StoreError::Gone)
    ));
    let again = store.create_tenant("acme").await.expect("the name is free again");
    assert_ne!(again.id, t.id);
    assert_eq!(store.tenant("acme").await.unwrap(), Lookup::Found(again));
}

/// A step is the lease holder's alone, is never applied twice, and never
/// empties a tenant that is not being deleted by that job. A crash between
/// steps loses nothing: the next claimer resumes with the counts so far.
pub async fn tenant_deletion_steps_need_the_lease(store: Arc<dyn Store>) {
    let now = t0();
    let t = tenant(&*store, "acme").await;
    let live = tenant(&*store, "live").await;
    let devices = collection(&*store, &t, "devices", &[]).await;
    for i in 0..5 {
        store.create_record(&devices, json!({"n": i})).await.unwrap();
    }
    let kept = collection(&*store, &live, "kept", &[]).await;
    let export = store.create_job(export_job(&live), now).await.unwrap();
    let deletion = store
        .delete_tenant("acme", Expect::Anything, KEEP, now + 1)
        .await
        .unwrap();
    // A job that is not the tenant's deletion may not empty it, nor a live tenant.
    assert_eq!(store.claim_job("w0", LEASE, now).await.unwrap().unwrap().id, export.id);
    assert!(matches!(
        store
            .delete_tenant_step(&live.id, &export.id, "w0", "live/", 100, now)
            .await,
        Err(StoreError::Internal(_))
    ));
    assert!(matches!(store.collection(&live.id, "kept").await.unwrap(), Lookup::Found(c) if c == kept));
    store.cancel_job(&live.id, &export.id, now, KEEP).await.unwrap();
    // Not claimed: no lease, nothing deleted.
    assert!(matches!(
        store
            .delete_tenant_step(&t.id, &deletion.id, "w1", ACME_SCOPES, 100, now)
            .await,
        Err(StoreError::LeaseLost)
    ));
    assert_eq!(
        store.claim_job("w1", LEASE, now).await.unwrap().unwrap().id,
        deletion.id
    );
    let first = store
        .delete_tenant_step(&t.id, &deletion.id, "w1", ACME_SCOPES, 2, now + 1)
        .await
        .unwrap();
    assert_eq!((first.deleted.records, first.finished), (2, false));
    // Another owner, or the holder after its lease ran out, changes nothing.
    for (owner, at) in [("w2", now + 2), ("w1", now + LEASE_MS)] {
        assert!(matches!(
            store
                .delete_tenant_step(&t.id, &deletion.id, owner, ACME_SCOPES, 2, at)
                .await,
            Err(StoreError::LeaseLost)
        ));
    }
    let page = RecordQuery {
        page: first_page(10),
        filters: vec![],
        sort: SortOrder::Id,
    };
    assert_eq!(store.list_records(&devices.id, page).await.unwrap().items.len(), 3);
    // w1 "died"; w2 takes the job over once the lease expired and finishes it.
    let resumed = store.claim_job("w2", LEASE, now + LEASE_MS).await.unwrap().unwrap();
    assert_eq!((resumed.id.as_str(), resumed.attempts), (deletion.id.as_str(), 2));
    let last = loop {
        let step = store
            .delete_tenant_step(&t.id, &deletion.id, "w2", ACME_SCOPES, 2, now + LEASE_MS + 1)
            .await
            .unwrap();
        if step.finished {
            break step.deleted;
        }
    };
    assert_eq!((last.records, last.collections), (5, 1), "each record counted once");
}

/// A deletion that stopped (its job canceled, or failed) leaves the tenant
/// a tombstone with its name held; deleting again starts a new job, which
/// alone may step, and finishes the work.
pub async fn a_stopped_tenant_deletion_starts_again(store: Arc<dyn Store>) {
    let now = t0();
    let t = tenant(&*store, "acme").await;
    let devices = collection(&*store, &t, "devices", &[]).await;
    for i in 0..4 {
        store.create_record(&devices, json!({"n": i})).await.unwrap();
    }
    let first = store.delete_tenant("acme", Expect::Anything, KEEP, now).await.unwrap();
    store.claim_job("w1", LEASE, now).await.unwrap().unwrap();
    store
        .delete_tenant_step(&t.id, &first.id, "w1", ACME_SCOPES, 2, now)
        .await
        .unwrap();
    store.cancel_job(&t.id, &first.id, now + 1, KEEP).await.unwrap();
    assert!(matches!(
        store
            .delete_tenant_step(&t.id, &first.id, "w1", ACME_SCOPES, 2, now + 1)
            .await,
        Err(StoreError::LeaseLost)
    ));
    let stopped = store.tenant_deletion("acme").await.unwrap().unwrap();
    assert_eq!(stopped.job_status, Some(JobStatus::Canceled));
    assert!(stopped.stopped());
    assert_eq!(store.tenant("acme").await.unwrap(), Lookup::Gone);
    assert!(matches!(
        store.create_tenant("acme").await,
        Err(StoreError::HeldByDeletion { .. })
    ));

    let second = store
        .delete_tenant("acme", Expect::Anything, KEEP, now + 2)
        .await
        .unwrap();
    assert_ne!(second.id, first.id);
    let restarted = store.tenant_deletion("acme").await.unwrap().unwrap();
    assert_eq!(
        (restarted.job_id.as_str(), restarted.job_status, restarted.deleted_at),
        (second.id.as_str(), Some(JobStatus::Queued), now),
        "the tenant was deleted when the first deletion started"
    );
    assert!(matches!(
        store.delete_tenant("acme", Expect::Anything, KEEP, now + 2).await,
        Err(StoreError::Gone)
    ));
    assert_eq!(
        store.claim_job("w2", LEASE, now + 2).await.unwrap().unwrap().id,
        second.id
    );
    let last = loop {
        let step = store
            .delete_tenant_step(&t.id, &second.id, "w2", ACME_SCOPES, 100, now + 3)
            .await
            .unwrap();
        if step.finished {
            break step.deleted;
        }
    };
    // The new job counts what it removed: the records the first one left,
    // and the first job itself.
    assert_eq!((last.records, last.collections, last.jobs), (2, 1, 1));
}
