//! The durable job queue ([`JobStore`]): jobs, their chunked inputs and
//! results (`job_blobs`), claims with leases. A claim takes the oldest
//! claimable job with `FOR UPDATE SKIP LOCKED`, so concurrent claimers on
//! every node each get a different job without waiting for one another;
//! every lease check locks the job's row first (`FOR UPDATE`), so a claim
//! and the holder's writes are serialized.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::PostgresStore;
use super::rows::*;
use crate::model::*;
use crate::prelude::*;
use crate::{StoreError, StoreResult};

/// The two kinds of blob a job has.
const INPUT: &str = "input";
const RESULT: &str = "result";

async fn load_job(c: &impl Db, tenant_id: &str, id: &str, lock: bool) -> StoreResult<Option<Job>> {
    let sql = format!(
        "SELECT {JOB_COLS} FROM jobs WHERE tenant_id = $1 AND id = $2{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let row = c.query_typed_opt(&sql, &[text(&tenant_id), text(&id)]).await?;
    row.map(|r| job_row(&r)).transpose()
}

async fn job_or_vanished(c: &impl Db, tenant_id: &str, id: &str) -> StoreResult<Job> {
    load_job(c, tenant_id, id, false).await?.ok_or(StoreError::Vanished)
}

/// The job `owner` holds at `now` (its row locked until the transaction
/// ends), or [`StoreError::LeaseLost`].
pub(super) async fn held_job(c: &impl Db, tenant_id: &str, id: &str, owner: &str, now: Millis) -> StoreResult<Job> {
    match load_job(c, tenant_id, id, true).await? {
        Some(job)
            if job.status == JobStatus::Running
                && job.owner.as_deref() == Some(owner)
                && job.lease_until.is_some_and(|until| until > now) =>
        {
            Ok(job)
        }
        _ => Err(StoreError::LeaseLost),
    }
}

/// Stores chunk `seq` of a job's `part`, given how many chunks and bytes are
/// stored; returns the new counts. A `seq` already stored drops it and every
/// later chunk first.
async fn put_chunk(
    c: &impl Db,
    job: &Job,
    part: &str,
    seq: i64,
    chunk: &[u8],
    (chunks, stored_bytes): (i64, i64),
) -> StoreResult<(i64, i64)> {
    if chunk.len() > MAX_JOB_CHUNK_BYTES {
        return Err(StoreError::Internal(format!(
            "a job chunk of {} bytes is over {MAX_JOB_CHUNK_BYTES}",
            chunk.len()
        )));
    }
    if !(0..=chunks).contains(&seq) {
        return Err(StoreError::ExpectationFailed);
    }
    let mut kept_bytes = stored_bytes;
    let key = [text(&job.tenant_id), text(&job.id), text(&part)];
    if seq < chunks {
        let mut args = key.to_vec();
        args.push(int(&seq));
        c.execute_typed(
            "DELETE FROM job_blobs WHERE tenant_id = $1 AND job_id = $2 AND part = $3 AND seq >= $4",
            &args,
        )
        .await?;
        kept_bytes = c
            .query_typed_one(
                "SELECT COALESCE(SUM(length(bytes)), 0)::BIGINT FROM job_blobs
                 WHERE tenant_id = $1 AND job_id = $2 AND part = $3",
                &key,
            )
            .await?
            .try_get(0)?;
    }
    let mut args = key.to_vec();
    args.push(int(&seq));
    args.push(bytes(&chunk));
    c.execute_typed(
        "INSERT INTO job_blobs (tenant_id, job_id, part, seq, bytes) VALUES ($1, $2, $3, $4, $5)",
        &args,
    )
    .await?;
    Ok((seq + 1, kept_bytes + chunk.len() as i64))
}

async fn read_chunk(c: &impl Db, tenant_id: &str, id: &str, part: &str, seq: i64) -> StoreResult<Option<Vec<u8>>> {
    let row = c
        .query_typed_opt(
            "SELECT bytes FROM job_blobs WHERE tenant_id = $1 AND job_id = $2 AND part = $3 AND seq = $4",
            &[text(&tenant_id), text(&id), text(&part), int(&seq)],
        )
        .await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

async fn drop_job(c: &impl Db, tenant_id: &str, id: &str) -> StoreResult<()> {
    for sql in [
        "DELETE FROM job_blobs WHERE tenant_id = $1 AND job_id = $2",
        "DELETE FROM jobs WHERE tenant_id = $1 AND id = $2",
    ] {
        c.execute_typed(sql, &[text(&tenant_id), text(&id)]).await?;
    }
    Ok(())
}

fn json_string(v: Option<&Value>) -> Option<String> {
    v.map(Value::to_string)
}

/// Inserts `new` as created at `now` (staged or queued), inside the
/// caller's transaction: `create_job`, and a tenant's deletion, whose job
/// is created with the tenant's tombstone.
pub(super) async fn insert_job(c: &impl Db, new: &NewJob, now: Millis) -> StoreResult<Job> {
    let (status, queued_at, lease_until) = if new.with_input {
        (
            JobStatus::Staged,
            None,
            Some(now.saturating_add(retention_ms(JOB_STAGING_TTL))),
        )
    } else {
        (JobStatus::Queued, Some(now), None)
    };
    let id = new_id();
    let params = new.params.to_string();
    c.execute_typed(
        "INSERT INTO jobs (tenant_id, id, kind, status, params, progress_done, progress_total, attempts,
           lease_until, created_at, queued_at)
         VALUES ($1, $2, $3, $4, $5, 0, $6, 0, $7, $8, $9)",
        &[
            text(&new.tenant_id),
            text(&id),
            text(&new.kind.as_str()),
            text(&status.as_str()),
            text(&params),
            int(&new.total),
            int(&lease_until),
            int(&now),
            int(&queued_at),
        ],
    )
    .await?;
    job_or_vanished(c, &new.tenant_id, &id).await
}

#[async_trait]
impl JobStore for PostgresStore {
    async fn create_job(&self, new: NewJob, now: Millis) -> StoreResult<Job> {
        self.pool
            .write(false, async |tx| {
                live_tenant(tx, &new.tenant_id).await?;
                let job = insert_job(tx, &new, now).await?;
                Ok(job)
            })
            .await
    }

    async fn append_job_input(&self, tenant_id: &str, job_id: &str, seq: i64, chunk: Vec<u8>) -> StoreResult<()> {
        self.pool
            .write(false, async |tx| {
                live_tenant(tx, tenant_id).await?;
                let job = load_job(tx, tenant_id, job_id, true)
                    .await?
                    .ok_or(StoreError::Vanished)?;
                if job.status != JobStatus::Staged {
                    return Err(StoreError::ExpectationFailed);
                }
                let (chunks, size) =
                    put_chunk(tx, &job, INPUT, seq, &chunk, (job.input_chunks, job.input_bytes)).await?;
                tx.execute_typed(
                    "UPDATE jobs SET input_chunks = $1, input_bytes = $2 WHERE tenant_id = $3 AND id = $4",
                    &[int(&chunks), int(&size), text(&tenant_id), text(&job_id)],
                )
                .await?;
                Ok(())
            })
            .await
    }

    async fn enqueue_job(&self, tenant_id: &str, job_id: &str, now: Millis) -> StoreResult<Job> {
        self.pool
            .write(false, async |tx| {
                    live_tenant(tx, tenant_id).await?;
                    let job = load_job(tx, tenant_id, job_id, true)
                        .await?
                        .ok_or(StoreError::Vanished)?;
                    if job.status != JobStatus::Staged {
                        return Err(StoreError::ExpectationFailed);
                    }
                    tx.execute_typed(
                        "UPDATE jobs SET status = 'queued', queued_at = $1, lease_until = NULL WHERE tenant_id = $2 AND id = $3",
                        &[int(&now), text(&tenant_id), text(&job_id)],
                    )
                    .await?;
                    let job = job_or_vanished(tx, tenant_id, job_id).await?;
                    Ok(job)
})
            .await
    }

    async fn read_job_input(&self, tenant_id: &str, job_id: &str, seq: i64) -> StoreResult<Option<Vec<u8>>> {
        self.pool
            .run(async {
                let c = self.pool.conn().await?;
                read_chunk(c.client(), tenant_id, job_id, INPUT, seq).await
            })
            .await
    }

    async fn claim_job(&self, owner: &str, lease: Duration, now: Millis) -> StoreResult<Option<Job>> {
        self.pool
            .write(false, async |tx| {
                // `status IN (…)` matches the partial index `jobs_claimable`;
                // a job another claimer has locked is skipped, not waited for.
                let next = tx
                    .query_typed_opt(
                        "SELECT tenant_id, id FROM jobs
                             WHERE status IN ('queued', 'running') AND (status = 'queued' OR lease_until <= $1)
                             ORDER BY queued_at, id LIMIT 1
                             FOR UPDATE SKIP LOCKED",
                        &[int(&now)],
                    )
                    .await?;
                let Some(next) = next else {
                    return Ok(None);
                };
                let (tenant_id, id): (String, String) = (next.try_get(0)?, next.try_get(1)?);
                let until = now.saturating_add(retention_ms(lease));
                tx.execute_typed(
                    "UPDATE jobs SET status = 'running', owner = $1, lease_until = $2, attempts = attempts + 1,
                           started_at = COALESCE(started_at, $3)
                         WHERE tenant_id = $4 AND id = $5",
                    &[text(&owner), int(&until), int(&now), text(&tenant_id), text(&id)],
                )
                .await?;
                let job = job_or_vanished(tx, &tenant_id, &id).await?;
                Ok(Some(job))
            })
            .await
    }

    async fn heartbeat(
        &self,
        tenant_id: &str,
        job_id: &str,
        owner: &str,
        lease_until: Millis,
        now: Millis,
    ) -> StoreResult<Job> {
        self.pool
            .write(false, async |tx| {
                held_job(tx, tenant_id, job_id, owner, now).await?;
                tx.execute_typed(
                    "UPDATE jobs SET lease_until = $1 WHERE tenant_id = $2 AND id = $3",
                    &[int(&lease_until), text(&tenant_id), text(&job_id)],
                )
                .await?;
                let job = job_or_vanished(tx, tenant_id, job_id).await?;
                Ok(job)
            })
            .await
    }

    async fn checkpoint(
        &self,
        tenant_id: &str,
        job_id: &str,
        owner: &str,
        checkpoint: Value,
        progress: Progress,
        lease_until: Millis,
        now: Millis,
    ) -> StoreResult<Job> {
        self.pool
            .write(false, async |tx| {
                held_job(tx, tenant_id, job_id, owner, now).await?;
                let checkpoint = checkpoint.to_string();
                tx.execute_typed(
                    "UPDATE jobs SET checkpoint = $1, progress_done = $2, progress_total = $3, lease_until = $4
                         WHERE tenant_id = $5 AND id = $6",
                    &[
                        text(&checkpoint),
                        int(&progress.done),
                        int(&progress.total),
                        int(&lease_until),
                        text(&tenant_id),
                        text(&job_id),
                    ],
                )
                .await?;
                let job = job_or_vanished(tx, tenant_id, job_id).await?;
                Ok(job)
            })
            .await
    }

    async fn append_job_result(
        &self,
        tenant_id: &str,
        job_id: &str,
        owner: &str,
        seq: i64,
        chunk: Vec<u8>,
        now: Millis,
    ) -> StoreResult<()> {
        self.pool
            .write(false, async |tx| {
                let job = held_job(tx, tenant_id, job_id, owner, now).await?;
                let (chunks, size) =
                    put_chunk(tx, &job, RESULT, seq, &chunk, (job.result_chunks, job.result_bytes)).await?;
                tx.execute_typed(
                    "UPDATE jobs SET result_chunks = $1, result_bytes = $2 WHERE tenant_id = $3 AND id = $4",
                    &[int(&chunks), int(&size), text(&tenant_id), text(&job_id)],
                )
                .await?;
                Ok(())
            })
            .await
    }

    async fn finish_job(
        &self,
        tenant_id: &str,
        job_id: &str,
        owner: &str,
        outcome: JobOutcome,
        now: Millis,
        keep: Duration,
    ) -> StoreResult<Job> {
        self.pool
            .write(false, async |tx| {
                held_job(tx, tenant_id, job_id, owner, now).await?;
                let (status, result, problem) = match &outcome {
                    JobOutcome::Succeeded { result } => (JobStatus::Succeeded, result.as_ref(), None),
                    JobOutcome::Failed { problem } => (JobStatus::Failed, None, Some(problem)),
                };
                let (result, problem) = (json_string(result), json_string(problem));
                let expires = now.saturating_add(retention_ms(keep));
                tx.execute_typed(
                    "UPDATE jobs SET status = $1, result = $2, problem = $3, lease_until = NULL, finished_at = $4,
                           result_expires_at = $5
                         WHERE tenant_id = $6 AND id = $7",
                    &[
                        text(&status.as_str()),
                        text(&result),
                        text(&problem),
                        int(&now),
                        int(&expires),
                        text(&tenant_id),
                        text(&job_id),
                    ],
                )
                .await?;
                let job = job_or_vanished(tx, tenant_id, job_id).await?;
                Ok(job)
            })
            .await
    }

    async fn cancel_job(&self, tenant_id: &str, job_id: &str, now: Millis, keep: Duration) -> StoreResult<Job> {
        self.pool
            .write(false, async |tx| {
                let Some(job) = load_job(tx, tenant_id, job_id, true).await? else {
                    return Err(not_there(tx, kind::JOB, tenant_id, job_id).await);
                };
                let job = match job.status {
                    s if s.is_finished() => return Err(StoreError::JobFinished(s)),
                    // Never accepted (its upload did not finish): nothing to keep.
                    JobStatus::Staged => {
                        drop_job(tx, tenant_id, job_id).await?;
                        Job {
                            status: JobStatus::Canceled,
                            finished_at: Some(now),
                            ..job
                        }
                    }
                    _ => {
                        let expires = now.saturating_add(retention_ms(keep));
                        tx.execute_typed(
                            "UPDATE jobs SET status = 'canceled', lease_until = NULL, finished_at = $1,
                                   result_expires_at = $2
                                 WHERE tenant_id = $3 AND id = $4",
                            &[int(&now), int(&expires), text(&tenant_id), text(&job_id)],
                        )
                        .await?;
                        job_or_vanished(tx, tenant_id, job_id).await?
                    }
                };
                Ok(job)
            })
            .await
    }

    async fn job(&self, tenant_id: &str, job_id: &str) -> StoreResult<Lookup<Job>> {
        self.pool
            .run(async {
                let c = self.pool.conn().await?;
                let tombstone = Tombstone::new(kind::JOB, tenant_id, job_id);
                // A staged job is not there yet.
                lookup(
                    c.client(),
                    &format!("SELECT {JOB_COLS} FROM jobs WHERE tenant_id = $1 AND id = $2 AND status <> 'staged'"),
                    &[text(&tenant_id), text(&job_id)],
                    job_row,
                    tombstone,
                )
                .await
            })
            .await
    }

    async fn list_jobs(&self, tenant_id: &str, p: PageRequest) -> StoreResult<Page<Job>> {
        self.pool
            .run(async {
                let c = self.pool.conn().await?;
                page(
                    c.client(),
                    &format!(
                        "SELECT {JOB_COLS} FROM jobs WHERE tenant_id = $1 AND status <> 'staged' AND id > $2
                         ORDER BY id LIMIT $3"
                    ),
                    &[text(&tenant_id)],
                    &p,
                    job_row,
                    |j| &j.id,
                )
                .await
            })
            .await
    }

    async fn read_job_result(&self, tenant_id: &str, job_id: &str, seq: i64) -> StoreResult<Option<Vec<u8>>> {
        self.pool
            .run(async {
                let c = self.pool.conn().await?;
                read_chunk(c.client(), tenant_id, job_id, RESULT, seq).await
            })
            .await
    }

    async fn purge_expired_jobs(&self, now: Millis, tombstone_keep: Duration) -> StoreResult<u64> {
        self.pool
            .write(false, async |tx| {
                    let expires = now.saturating_add(retention_ms(tombstone_keep));
                    // Finished jobs past their retention leave a tombstone.
                    let expired: i64 = tx
                        .query_typed_one(
                            "WITH gone AS (
                               DELETE FROM jobs WHERE result_expires_at <= $1 RETURNING tenant_id, id
                             ), blobs AS (
                               DELETE FROM job_blobs b USING gone WHERE b.tenant_id = gone.tenant_id AND b.job_id = gone.id
                             ), stones AS (
                               INSERT INTO tombstones (kind, scope, key, deleted_at, expires_at)
                               SELECT 'job', tenant_id, id, $1, $2 FROM gone
                               ON CONFLICT (kind, scope, key) DO UPDATE
                                 SET deleted_at = excluded.deleted_at, expires_at = excluded.expires_at
                             )
                             SELECT COUNT(*) FROM gone",
                            &[int(&now), int(&expires)],
                        )
                        .await?
                        .try_get(0)?;
                    // Abandoned uploads were never accepted: no tombstone.
                    let abandoned: i64 = tx
                        .query_typed_one(
                            "WITH gone AS (
                               DELETE FROM jobs WHERE status = 'staged' AND lease_until <= $1 RETURNING tenant_id, id
                             ), blobs AS (
                               DELETE FROM job_blobs b USING gone WHERE b.tenant_id = gone.tenant_id AND b.job_id = gone.id
                             )
                             SELECT COUNT(*) FROM gone",
                            &[int(&now)],
                        )
                        .await?
                        .try_get(0)?;
                    Ok(u64::try_from(expired + abandoned).unwrap_or(0))
})
            .await
    }
}
