//! The job workers: a bounded pool that claims jobs from the store's queue
//! (docs/jobs.md) and runs them.
//!
//! Each claim takes a lease under an owner name unique to that claim; the
//! worker checkpoints (and so renews the lease) after every step, and stops
//! as soon as the store says the lease is lost (the job was canceled, or the
//! lease expired and another worker took the job over). A job that was
//! running when its process died is claimed again after its lease expires
//! and resumes from its checkpoint: every step is idempotent with respect to
//! it, so nothing is applied twice.
//!
//! A step that meets an unavailable database ([`StoreError::Unavailable`])
//! does not fail the job: the worker backs off and, once the database
//! answers again and its lease still holds, resumes from the stored
//! checkpoint; a lease that ran out meanwhile lets any worker claim the job
//! (docs/jobs.md, "When the database is unavailable").

use std::sync::Arc;
use std::time::Duration;

use canon_http::Problem;
use canon_http::catalogue::ProblemKind;
use canon_store::{
    Expect, Job, JobKind, JobOutcome, PageRequest, Progress, RecordQuery, SortOrder, StoreError, now_millis,
};
use serde_json::{Value, json};

use crate::state::App;

/// How long an idle worker waits before asking the queue again.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// Records deleted per step of a collection's deletion.
const DELETE_STEP: usize = 500;
/// A job claimed this many times without finishing fails.
const MAX_ATTEMPTS: i64 = 5;
/// First pause after a step met an unavailable database; doubled on every
/// further failure, up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest pause between two tries of an unavailable database.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The running workers. Dropping this leaves them running until the
/// process ends; [`Workers::stop`] stops them.
pub struct Workers {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Workers {
    /// Stops every worker and waits for them: a worker between jobs stops
    /// at once; a worker in a job stops where it is, as if its process had
    /// died. Each step is idempotent against its checkpoint, so the job's
    /// lease runs out and a worker of any node takes it over from there
    /// (docs/jobs.md).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Starts `workers` workers for `app`; they run until [`Workers::stop`]
/// (or the process ends).
pub fn start(app: &Arc<App>, workers: usize) -> Workers {
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let tasks = (0..workers.max(1))
        .map(|n| {
            let (app, mut stopping) = (app.clone(), stopping.clone());
            tokio::spawn(async move {
                tokio::select! {
                    () = run(app, n) => {}
                    () = stopped(&mut stopping) => {}
                }
            })
        })
        .collect();
    Workers { stop, tasks }
}

/// Resolves when [`Workers::stop`] is called (never, if its `Workers` was
/// dropped instead).
async fn stopped(stopping: &mut tokio::sync::watch::Receiver<bool>) {
    if stopping.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn run(app: Arc<App>, n: usize) {
    loop {
        let owner = format!("worker-{n}-{}", uuid::Uuid::now_v7());
        match app.store.claim_job(&owner, app.config.job_lease, now_millis()).await {
            Ok(Some(job)) => work(&app, job, &owner).await,
            // Woken at once by a job this process queues; one queued by
            // another process is found at the next poll.
            Ok(None) => {
                tokio::select! {
                    () = tokio::time::sleep(IDLE_POLL) => {}
                    () = app.jobs.wait_queued() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not claim a job");
                tokio::time::sleep(IDLE_POLL * 5).await;
            }
        }
    }
}

/// Runs `job` under `owner` and records how it ended, unless the lease was
/// lost (canceled, or taken over): then whoever holds it now decides. While
/// the database is unavailable the job waits (see the module's docs).
async fn work(app: &App, mut job: Job, owner: &str) {
    let mut pause = BACKOFF_MIN;
    let outcome = loop {
        match attempt(app, &job, owner).await {
            Ok(result) => break JobOutcome::Succeeded { result: Some(result) },
            Err(Step::Failed(problem)) => {
                break JobOutcome::Failed {
                    problem: problem.to_body("", ""),
                };
            }
            Err(Step::LeaseLost) => return,
            Err(Step::Unavailable(why)) => {
                tracing::warn!(job = %job.id, error = %why, "the database is unavailable; the job waits to resume");
                match resume(app, &job, owner, &mut pause).await {
                    Some(stored) => job = stored,
                    None => return,
                }
            }
        }
    };
    loop {
        let finished = app
            .store
            .finish_job(
                &job.tenant_id,
                &job.id,
                owner,
                outcome.clone(),
                now_millis(),
                canon_store::JOB_RESULT_RETENTION,
            )
            .await;
        match finished {
            Ok(_) => return app.jobs.finished(),
            Err(StoreError::LeaseLost) => return,
            Err(StoreError::Unavailable(why)) => {
                tracing::warn!(job = %job.id, error = %why, "the database is unavailable; the job's end waits to be recorded");
                tokio::time::sleep(next_pause(&mut pause)).await;
            }
            Err(e) => return tracing::error!(job = %job.id, error = %e, "could not record a job's end"),
        }
    }
}

/// One run of `job` from its checkpoint.
async fn attempt(app: &App, job: &Job, owner: &str) -> Result<Value, Step> {
    if job.attempts > MAX_ATTEMPTS {
        return Err(Step::Failed(Problem::new(
            ProblemKind::Internal,
            format!("The job was started {MAX_ATTEMPTS} times without finishing."),
        )));
    }
    match job.kind {
        JobKind::DeleteCollection => delete_collection(app, job, owner).await,
        JobKind::DeleteTenant => delete_tenant(app, job, owner).await,
        JobKind::Import => crate::import::run(app, job, owner).await,
        JobKind::Export => crate::export::run(app, job, owner).await,
        JobKind::DeviceCommand => crate::devices::command::run(app, job, owner).await,
    }
}

/// Waits, backing off, until the database renews `job`'s lease, and returns
/// the job as stored (its last checkpoint), to resume from there without a
/// new attempt. `None` once the lease is lost: it ran out during the outage
/// (the job is claimed again, as after a crash) or the job was canceled.
async fn resume(app: &App, job: &Job, owner: &str, pause: &mut Duration) -> Option<Job> {
    loop {
        tokio::time::sleep(next_pause(pause)).await;
        let now = now_millis();
        match app
            .store
            .heartbeat(&job.tenant_id, &job.id, owner, lease_until(app), now)
            .await
        {
            Ok(stored) => {
                tracing::info!(job = %job.id, "the database answers again; the job resumes from its checkpoint");
                *pause = BACKOFF_MIN;
                return Some(stored);
            }
            Err(StoreError::Unavailable(_)) => {}
            Err(StoreError::LeaseLost) => return None,
            Err(e) => {
                tracing::error!(job = %job.id, error = %e, "could not resume a job");
                return None;
            }
        }
    }
}

/// The pause to take now; doubles the next one, up to [`BACKOFF_MAX`].
fn next_pause(pause: &mut Duration) -> Duration {
    let now = *pause;
    *pause = (*pause * 2).min(BACKOFF_MAX);
    now
}

/// Stores a step's checkpoint and renews the lease for another
/// `job_lease`: both fail once the lease is lost (canceled, taken over).
pub(crate) async fn save(app: &App, job: &Job, owner: &str, checkpoint: Value, progress: Progress) -> Result<(), Step> {
    let now = now_millis();
    app.store
        .checkpoint(
            &job.tenant_id,
            &job.id,
            owner,
            checkpoint,
            progress,
            lease_until(app),
            now,
        )
        .await?;
    Ok(())
}

/// When a lease taken or renewed now ends.
pub(crate) fn lease_until(app: &App) -> canon_store::Millis {
    let lease = i64::try_from(app.config.job_lease.as_millis()).unwrap_or(i64::MAX);
    now_millis().saturating_add(lease)
}

/// Why a job stopped before finishing.
pub(crate) enum Step {
    /// It failed, with this problem.
    Failed(Problem),
    /// Its lease is gone (canceled, or another worker has it).
    LeaseLost,
    /// The database is unavailable: the job is not over; it resumes once
    /// the database answers.
    Unavailable(String),
}

impl From<StoreError> for Step {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::LeaseLost => Step::LeaseLost,
            StoreError::Unavailable(why) => Step::Unavailable(why),
            other => {
                tracing::error!(error = %other, "a job step failed in the store");
                Step::Failed(Problem::new(ProblemKind::Internal, "The store failed during the job."))
            }
        }
    }
}

/// `DELETE …/collections/{c}?force=true`: deletes the records a page at a
/// time (each a tombstone, as a DELETE of the record would leave), then the
/// collection. Resumable: a step deletes whatever is still there.
async fn delete_collection(app: &App, job: &Job, owner: &str) -> Result<Value, Step> {
    let collection_id = job.params["collection_id"].as_str().unwrap_or_default().to_owned();
    let name = job.params["collection"].as_str().unwrap_or_default().to_owned();
    let retention = app.config.tombstone_retention;
    let mut done = job.progress.done;
    loop {
        let page = app
            .store
            .list_records(
                &collection_id,
                RecordQuery {
                    page: PageRequest {
                        limit: DELETE_STEP,
                        after: None,
                    },
                    filters: Vec::new(),
                    sort: SortOrder::Id,
                },
            )
            .await?;
        let mut deleted = 0;
        for record in &page.items {
            match app
                .store
                .delete_record(&collection_id, &record.id, Expect::Anything, "job", retention)
                .await
            {
                Ok(()) => deleted += 1,
                // Someone else's lease: left for the next pass.
                Err(StoreError::Locked(_)) => {}
                // Deleted meanwhile by someone else: nothing to do.
                Err(StoreError::Gone | StoreError::Vanished) => {}
                Err(e) => return Err(e.into()),
            }
        }
        done += deleted;
        let progress = Progress {
            done,
            total: job.progress.total,
        };
        save(app, job, owner, json!({"deleted": done}), progress).await?;
        if page.items.is_empty() || (deleted == 0 && page.next.is_none()) {
            break;
        }
        if deleted == 0 {
            // Every record left is locked by another caller.
            return Err(Step::Failed(Problem::new(
                ProblemKind::Locked,
                "Records of the collection are locked by other callers; delete again when the locks end.",
            )));
        }
    }
    match app
        .store
        .delete_collection(&job.tenant_id, &name, Expect::Anything, retention)
        .await
    {
        Ok(()) | Err(StoreError::Gone | StoreError::Vanished) => {
            Ok(json!({"collection": name, "deleted_records": done}))
        }
        Err(StoreError::NotEmpty) => Err(Step::Failed(Problem::new(
            ProblemKind::StateConflict,
            "Records were added to the collection while it was being deleted; delete it again.",
        ))),
        Err(e) => Err(e.into()),
    }
}

/// `DELETE /v1/tenants/{tenant}`: the tenant is a tombstone since the 202;
/// this empties it in steps of [`DELETE_STEP`] rows, as a collection's
/// deletion does. Each step is one store transaction that also stores the
/// counts as the checkpoint, checked against the lease: a step is never
/// applied or counted twice, and a retry after a crash resumes where the
/// last committed step left off. The result counts what went, by kind.
async fn delete_tenant(app: &App, job: &Job, owner: &str) -> Result<Value, Step> {
    let tenant = job.params["tenant"].as_str().unwrap_or_default().to_owned();
    if tenant.is_empty() {
        return Err(Step::Failed(Problem::new(
            ProblemKind::Internal,
            "The deletion job does not name its tenant.",
        )));
    }
    let scopes = crate::idempotency::tenant_scope_prefix(&tenant);
    let lease = i64::try_from(app.config.job_lease.as_millis()).unwrap_or(i64::MAX);
    loop {
        let now = now_millis();
        let step = app
            .store
            .delete_tenant_step(&job.tenant_id, &job.id, owner, &scopes, DELETE_STEP, now)
            .await?;
        if step.finished {
            return Ok(json!({"tenant": tenant, "deleted": step.deleted}));
        }
        app.store
            .heartbeat(&job.tenant_id, &job.id, owner, now.saturating_add(lease), now)
            .await?;
    }
}
