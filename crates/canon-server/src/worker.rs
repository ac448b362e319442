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

/// Starts `workers` workers for `app`; they run until the process ends.
pub fn start(app: &Arc<App>, workers: usize) {
    for n in 0..workers.max(1) {
        tokio::spawn(run(app.clone(), n));
    }
}

async fn run(app: Arc<App>, n: usize) {
    loop {
        let owner = format!("worker-{n}-{}", uuid::Uuid::now_v7());
        match app.store.claim_job(&owner, app.config.job_lease, now_millis()).await {
            Ok(Some(job)) => work(&app, job, &owner).await,
            Ok(None) => tokio::time::sleep(IDLE_POLL).await,
            Err(e) => {
                tracing::warn!(error = %e, "could not claim a job");
                tokio::time::sleep(IDLE_POLL * 5).await;
            }
        }
    }
}

/// Runs `job` under `owner` and records how it ended, unless the lease was
/// lost (canceled, or taken over): then whoever holds it now decides.
async fn work(app: &App, job: Job, owner: &str) {
    let outcome = if job.attempts > MAX_ATTEMPTS {
        Err(Step::Failed(Problem::new(
            ProblemKind::Internal,
            format!("The job was started {MAX_ATTEMPTS} times without finishing."),
        )))
    } else {
        match job.kind {
            JobKind::DeleteCollection => delete_collection(app, &job, owner).await,
            JobKind::DeleteTenant => delete_tenant(app, &job, owner).await,
            JobKind::Import => import(app, &job, owner).await,
            JobKind::Export => crate::export::run(app, &job, owner).await,
        }
    };
    let outcome = match outcome {
        Ok(result) => JobOutcome::Succeeded { result: Some(result) },
        Err(Step::Failed(problem)) => JobOutcome::Failed {
            problem: problem.to_body("", ""),
        },
        Err(Step::LeaseLost) => return,
    };
    let finished = app
        .store
        .finish_job(
            &job.tenant_id,
            &job.id,
            owner,
            outcome,
            now_millis(),
            canon_store::JOB_RESULT_RETENTION,
        )
        .await;
    if let Err(e) = finished
        && !matches!(e, StoreError::LeaseLost)
    {
        tracing::error!(job = %job.id, error = %e, "could not record a job's end");
    }
}

/// Stores a step's checkpoint and renews the lease for another
/// `job_lease`: both fail once the lease is lost (canceled, taken over).
pub(crate) async fn save(app: &App, job: &Job, owner: &str, checkpoint: Value, progress: Progress) -> Result<(), Step> {
    let now = now_millis();
    let lease = i64::try_from(app.config.job_lease.as_millis()).unwrap_or(i64::MAX);
    app.store
        .checkpoint(&job.tenant_id, &job.id, owner, checkpoint, progress, now.saturating_add(lease), now)
        .await?;
    Ok(())
}

/// Why a job stopped before finishing.
pub(crate) enum Step {
    /// It failed, with this problem.
    Failed(Problem),
    /// Its lease is gone (canceled, or another worker has it).
    LeaseLost,
}

impl From<StoreError> for Step {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::LeaseLost => Step::LeaseLost,
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

/// Lines imported between two checkpoints inside one input chunk: bounds
/// both the work a crash repeats and how long a cancel takes to stop it.
const LINES_PER_CHECKPOINT: usize = 200;

/// An import's checkpoint: its state with `carry`, the start of a line
/// cut by the end of the chunk before `state.chunk`.
fn import_checkpoint(state: &mut ImportState, carry: &[u8]) -> Value {
    use base64::Engine as _;
    state.carry = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(carry);
    serde_json::to_value(&*state).unwrap_or(Value::Null)
}

fn import_progress(state: &ImportState) -> Progress {
    Progress {
        done: state.created + state.failed,
        total: None,
    }
}

/// Failed lines kept in an import's report (the rest are only counted).
const MAX_REPORTED_FAILURES: usize = 1000;

/// Where an import stands: saved as its checkpoint after every input chunk,
/// so a retry resumes at the next chunk with the same counts.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct ImportState {
    /// The next input chunk to read.
    chunk: i64,
    /// The start of a line cut by the end of the chunk before `chunk`
    /// (base64url).
    carry: String,
    /// Lines of chunk `chunk` already done (a checkpoint inside a chunk).
    skip: usize,
    /// The number of the next line (1-based).
    line: u64,
    /// Records created.
    created: i64,
    /// Lines that failed.
    failed: i64,
    /// The first failures: line, pointer, problem.
    failures: Vec<Value>,
}

/// `POST …/imports`: every line of the stored NDJSON input becomes a record
/// at the id `{job}-{line}`, so a retry after a crash re-creates nothing: a
/// line whose record exists was done before (`If-None-Match: *`
/// semantics). A line that is not a JSON object, fails the schema, collides
/// on a unique field or exceeds the single-record body limit fails on its
/// own, in the report; the import goes on.
async fn import(app: &App, job: &Job, owner: &str) -> Result<Value, Step> {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    let mut state: ImportState = job
        .checkpoint
        .clone()
        .and_then(|c| serde_json::from_value(c).ok())
        .unwrap_or(ImportState {
            line: 1,
            ..ImportState::default()
        });
    let collection = import_collection(app, job).await?;
    let mut pending = URL_SAFE_NO_PAD.decode(&state.carry).unwrap_or_default();
    let mut batch = Vec::with_capacity(LINES_PER_CHECKPOINT);
    while let Some(chunk) = app.store.read_job_input(&job.tenant_id, &job.id, state.chunk).await? {
        // `pending` is the carried start of a line, then this chunk; the
        // first `state.skip` of its lines were done before a checkpoint.
        let carry = std::mem::take(&mut pending);
        pending = carry.clone();
        pending.extend_from_slice(&chunk);
        let mut start = 0;
        let mut index = 0;
        while let Some(end) = pending[start..].iter().position(|b| *b == b'\n') {
            if index >= state.skip {
                let line = &pending[start..start + end];
                read_line(app, job, &collection, &mut state, line, &mut batch);
                if (index + 1) % LINES_PER_CHECKPOINT == 0 {
                    // Mid-chunk: resume at this chunk, past these lines.
                    write_lines(app, &collection, &mut state, &mut batch).await?;
                    state.skip = index + 1;
                    save(
                        app,
                        job,
                        owner,
                        import_checkpoint(&mut state, &carry),
                        import_progress(&state),
                    )
                    .await?;
                }
            }
            index += 1;
            start += end + 1;
        }
        pending.drain(..start);
        write_lines(app, &collection, &mut state, &mut batch).await?;
        state.chunk += 1;
        state.skip = 0;
        save(
            app,
            job,
            owner,
            import_checkpoint(&mut state, &pending),
            import_progress(&state),
        )
        .await?;
    }
    if !pending.is_empty() {
        // The last line, without its newline.
        let line = std::mem::take(&mut pending);
        read_line(app, job, &collection, &mut state, &line, &mut batch);
        write_lines(app, &collection, &mut state, &mut batch).await?;
    }
    state.failures.sort_by_key(|f| f["line"].as_u64());
    Ok(json!({
        "collection": collection.name,
        "lines": state.line - 1,
        "created": state.created,
        "failed": state.failed,
        "failures": state.failures,
        "failures_omitted": (state.failed as usize).saturating_sub(state.failures.len()),
    }))
}

/// The collection an import writes to, by the name it had (following a
/// rename); the job fails when it was deleted.
async fn import_collection(app: &App, job: &Job) -> Result<canon_store::Collection, Step> {
    let name = job.params["collection"].as_str().unwrap_or_default();
    let mut lookup = app.store.collection(&job.tenant_id, name).await?;
    if !matches!(lookup, canon_store::Lookup::Found(_))
        && let Some(current) = app.store.collection_alias(&job.tenant_id, name).await?
    {
        lookup = app.store.collection(&job.tenant_id, &current).await?;
    }
    match lookup {
        canon_store::Lookup::Found(c) if c.id == job.params["collection_id"].as_str().unwrap_or_default() => Ok(c),
        _ => Err(Step::Failed(Problem::new(
            ProblemKind::Gone,
            "The collection was deleted while the import waited or ran.",
        ))),
    }
}

/// A line that passed its checks, waiting to be written with its batch.
struct ReadLine {
    number: u64,
    id: String,
    data: Value,
}

/// Reads one line (numbered `state.line`): blank lines are skipped, a line
/// that is too long, not JSON or fails the schema is a failure at once, a
/// good one joins `batch` under the id `{job}-{line}`.
fn read_line(
    app: &App,
    job: &Job,
    collection: &canon_store::Collection,
    state: &mut ImportState,
    line: &[u8],
    batch: &mut Vec<ReadLine>,
) {
    let number = state.line;
    state.line += 1;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    let checked = if line.len() > app.config.max_body_bytes {
        Err(Problem::new(
            ProblemKind::ContentTooLarge,
            format!("The line is larger than {} bytes.", app.config.max_body_bytes),
        ))
    } else {
        crate::json::parse(line)
            .map_err(|e| crate::input::json_problem(&e))
            .and_then(|data| crate::resources::records::validate(app, collection, &data).map(|()| data))
    };
    match checked {
        Ok(data) => batch.push(ReadLine {
            number,
            id: format!("{}-{number}", job.id),
            data,
        }),
        Err(problem) => fail_line(state, number, &problem),
    }
}

/// Writes `batch` in one transaction: a record that exists already was
/// written by an attempt before a crash (created, not again); a unique
/// collision fails its line.
async fn write_lines(
    app: &App,
    collection: &canon_store::Collection,
    state: &mut ImportState,
    batch: &mut Vec<ReadLine>,
) -> Result<(), Step> {
    if batch.is_empty() {
        return Ok(());
    }
    let lines = std::mem::take(batch);
    let numbers: Vec<u64> = lines.iter().map(|l| l.number).collect();
    let results = app
        .store
        .create_absent_records(collection, lines.into_iter().map(|l| (l.id, l.data)).collect())
        .await?;
    for (number, result) in numbers.into_iter().zip(results) {
        match result {
            Ok(()) | Err(StoreError::ExpectationFailed) => state.created += 1,
            Err(e @ StoreError::Conflict { .. }) => fail_line(state, number, &crate::error::store_problem(e)),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Counts line `number` as failed with `problem`, listed while the report
/// has room.
fn fail_line(state: &mut ImportState, number: u64, problem: &Problem) {
    state.failed += 1;
    if state.failures.len() < MAX_REPORTED_FAILURES {
        let body = problem.to_body("", "");
        let pointer = body["errors"][0]["pointer"].as_str().unwrap_or("").to_owned();
        state.failures.push(json!({
            "line": number,
            "pointer": pointer,
            "problem": {"type": body["type"], "title": body["title"], "status": body["status"], "detail": body["detail"], "errors": body.get("errors")},
        }));
    }
}
