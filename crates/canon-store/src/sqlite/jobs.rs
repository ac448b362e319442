//! The durable job queue ([`JobStore`]): jobs, their chunked inputs and
//! results (`job_blobs`), claims with leases. Every lease check runs inside
//! the writer's transaction, so a claim and the checks of the holder's
//! writes are serialized with each other, in this process and (through
//! SQLite's write lock) in every other process on the same file.

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::SqliteStore;
use super::engine::internal;
use super::rows::*;
use crate::model::*;
use crate::prelude::*;
use crate::{StoreError, StoreResult};

/// The two kinds of blob a job has.
const INPUT: &str = "input";
const RESULT: &str = "result";

fn load_job(conn: &Connection, tenant_id: &str, id: &str) -> StoreResult<Option<Job>> {
    conn.prepare_cached(&format!("SELECT {JOB_COLS} FROM jobs WHERE tenant_id = ?1 AND id = ?2"))
        .and_then(|mut s| s.query_row([tenant_id, id], job_row).optional())
        .map_err(db_error)
}

fn job_or_vanished(conn: &Connection, tenant_id: &str, id: &str) -> StoreResult<Job> {
    load_job(conn, tenant_id, id)?.ok_or(StoreError::Vanished)
}

/// The job `owner` holds at `now`, or [`StoreError::LeaseLost`].
pub(super) fn held_job(conn: &Connection, tenant_id: &str, id: &str, owner: &str, now: Millis) -> StoreResult<Job> {
    match load_job(conn, tenant_id, id)? {
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
fn put_chunk(
    conn: &Connection,
    job: &Job,
    part: &str,
    seq: i64,
    chunk: &[u8],
    (chunks, bytes): (i64, i64),
) -> StoreResult<(i64, i64)> {
    if chunk.len() > MAX_JOB_CHUNK_BYTES {
        return Err(internal(format!(
            "a job chunk of {} bytes is over {MAX_JOB_CHUNK_BYTES}",
            chunk.len()
        )));
    }
    if !(0..=chunks).contains(&seq) {
        return Err(StoreError::ExpectationFailed);
    }
    let mut kept_bytes = bytes;
    if seq < chunks {
        conn.execute(
            "DELETE FROM job_blobs WHERE tenant_id = ?1 AND job_id = ?2 AND part = ?3 AND seq >= ?4",
            params![job.tenant_id, job.id, part, seq],
        )
        .map_err(db_error)?;
        kept_bytes = conn
            .query_row(
                "SELECT COALESCE(SUM(length(bytes)), 0) FROM job_blobs WHERE tenant_id = ?1 AND job_id = ?2 AND part = ?3",
                params![job.tenant_id, job.id, part],
                |r| r.get(0),
            )
            .map_err(db_error)?;
    }
    conn.prepare_cached("INSERT INTO job_blobs (tenant_id, job_id, part, seq, bytes) VALUES (?1, ?2, ?3, ?4, ?5)")
        .and_then(|mut s| s.execute(params![job.tenant_id, job.id, part, seq, chunk]))
        .map_err(db_error)?;
    Ok((seq + 1, kept_bytes + chunk.len() as i64))
}

fn read_chunk(conn: &Connection, tenant_id: &str, id: &str, part: &str, seq: i64) -> StoreResult<Option<Vec<u8>>> {
    conn.prepare_cached("SELECT bytes FROM job_blobs WHERE tenant_id = ?1 AND job_id = ?2 AND part = ?3 AND seq = ?4")
        .and_then(|mut s| s.query_row(params![tenant_id, id, part, seq], |r| r.get(0)).optional())
        .map_err(db_error)
}

fn drop_job(conn: &Connection, tenant_id: &str, id: &str) -> StoreResult<()> {
    conn.execute(
        "DELETE FROM job_blobs WHERE tenant_id = ?1 AND job_id = ?2",
        [tenant_id, id],
    )
    .map_err(db_error)?;
    conn.execute("DELETE FROM jobs WHERE tenant_id = ?1 AND id = ?2", [tenant_id, id])
        .map_err(db_error)?;
    Ok(())
}

fn json_text(v: Option<&Value>) -> Option<String> {
    v.map(Value::to_string)
}

/// Inserts `new` as created at `now` (staged or queued), inside the
/// caller's transaction: `create_job`, and a tenant's deletion, whose job
/// is created with the tenant's tombstone.
pub(super) fn insert_job(conn: &Connection, new: &NewJob, now: Millis) -> StoreResult<Job> {
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
    conn.execute(
        "INSERT INTO jobs (tenant_id, id, kind, status, params, progress_done, progress_total, attempts,
           lease_until, created_at, queued_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, 0, ?7, ?8, ?9)",
        params![
            new.tenant_id,
            id,
            new.kind.as_str(),
            status.as_str(),
            new.params.to_string(),
            new.total,
            lease_until,
            now,
            queued_at
        ],
    )
    .map_err(db_error)?;
    job_or_vanished(conn, &new.tenant_id, &id)
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn create_job(&self, new: NewJob, now: Millis) -> StoreResult<Job> {
        self.engine
            .write(move |c| {
                live_tenant(c, &new.tenant_id)?;
                insert_job(c, &new, now)
            })
            .await
    }

    async fn append_job_input(&self, tenant_id: &str, job_id: &str, seq: i64, chunk: Vec<u8>) -> StoreResult<()> {
        let (tenant_id, job_id) = (tenant_id.to_owned(), job_id.to_owned());
        self.engine
            .write(move |c| {
                live_tenant(c, &tenant_id)?;
                let job = job_or_vanished(c, &tenant_id, &job_id)?;
                if job.status != JobStatus::Staged {
                    return Err(StoreError::ExpectationFailed);
                }
                let (chunks, bytes) = put_chunk(c, &job, INPUT, seq, &chunk, (job.input_chunks, job.input_bytes))?;
                c.execute(
                    "UPDATE jobs SET input_chunks = ?1, input_bytes = ?2 WHERE tenant_id = ?3 AND id = ?4",
                    params![chunks, bytes, tenant_id, job_id],
                )
                .map_err(db_error)?;
                Ok(())
            })
            .await
    }

    async fn enqueue_job(&self, tenant_id: &str, job_id: &str, now: Millis) -> StoreResult<Job> {
        let (tenant_id, job_id) = (tenant_id.to_owned(), job_id.to_owned());
        self.engine
            .write(move |c| {
                live_tenant(c, &tenant_id)?;
                let job = job_or_vanished(c, &tenant_id, &job_id)?;
                if job.status != JobStatus::Staged {
                    return Err(StoreError::ExpectationFailed);
                }
                c.execute(
                    "UPDATE jobs SET status = 'queued', queued_at = ?1, lease_until = NULL WHERE tenant_id = ?2 AND id = ?3",
                    params![now, tenant_id, job_id],
                )
                .map_err(db_error)?;
                job_or_vanished(c, &tenant_id, &job_id)
            })
            .await
    }

    async fn read_job_input(&self, tenant_id: &str, job_id: &str, seq: i64) -> StoreResult<Option<Vec<u8>>> {
        let (tenant_id, job_id) = (tenant_id.to_owned(), job_id.to_owned());
        self.engine
            .read(move |c| read_chunk(c, &tenant_id, &job_id, INPUT, seq))
            .await
    }

    async fn claim_job(&self, owner: &str, lease: Duration, now: Millis) -> StoreResult<Option<Job>> {
        let owner = owner.to_owned();
        self.engine
            .write(move |c| {
                // `status IN (…)` matches the partial index `jobs_claimable`.
                let next: Option<(String, String)> = c
                    .prepare_cached(
                        "SELECT tenant_id, id FROM jobs
                         WHERE status IN ('queued', 'running') AND (status = 'queued' OR lease_until <= ?1)
                         ORDER BY queued_at, id LIMIT 1",
                    )
                    .and_then(|mut s| s.query_row([now], |r| Ok((r.get(0)?, r.get(1)?))).optional())
                    .map_err(db_error)?;
                let Some((tenant_id, id)) = next else {
                    return Ok(None);
                };
                c.execute(
                    "UPDATE jobs SET status = 'running', owner = ?1, lease_until = ?2, attempts = attempts + 1,
                       started_at = COALESCE(started_at, ?3)
                     WHERE tenant_id = ?4 AND id = ?5",
                    params![owner, now.saturating_add(retention_ms(lease)), now, tenant_id, id],
                )
                .map_err(db_error)?;
                job_or_vanished(c, &tenant_id, &id).map(Some)
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
        let (tenant_id, job_id, owner) = (tenant_id.to_owned(), job_id.to_owned(), owner.to_owned());
        self.engine
            .write(move |c| {
                held_job(c, &tenant_id, &job_id, &owner, now)?;
                c.execute(
                    "UPDATE jobs SET lease_until = ?1 WHERE tenant_id = ?2 AND id = ?3",
                    params![lease_until, tenant_id, job_id],
                )
                .map_err(db_error)?;
                job_or_vanished(c, &tenant_id, &job_id)
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
        let (tenant_id, job_id, owner) = (tenant_id.to_owned(), job_id.to_owned(), owner.to_owned());
        self.engine
            .write(move |c| {
                held_job(c, &tenant_id, &job_id, &owner, now)?;
                c.execute(
                    "UPDATE jobs SET checkpoint = ?1, progress_done = ?2, progress_total = ?3, lease_until = ?4 \
                     WHERE tenant_id = ?5 AND id = ?6",
                    params![
                        checkpoint.to_string(),
                        progress.done,
                        progress.total,
                        lease_until,
                        tenant_id,
                        job_id
                    ],
                )
                .map_err(db_error)?;
                job_or_vanished(c, &tenant_id, &job_id)
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
        let (tenant_id, job_id, owner) = (tenant_id.to_owned(), job_id.to_owned(), owner.to_owned());
        self.engine
            .write(move |c| {
                let job = held_job(c, &tenant_id, &job_id, &owner, now)?;
                let (chunks, bytes) = put_chunk(c, &job, RESULT, seq, &chunk, (job.result_chunks, job.result_bytes))?;
                c.execute(
                    "UPDATE jobs SET result_chunks = ?1, result_bytes = ?2 WHERE tenant_id = ?3 AND id = ?4",
                    params![chunks, bytes, tenant_id, job_id],
                )
                .map_err(db_error)?;
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
        let (tenant_id, job_id, owner) = (tenant_id.to_owned(), job_id.to_owned(), owner.to_owned());
        self.engine
            .write(move |c| {
                held_job(c, &tenant_id, &job_id, &owner, now)?;
                let (status, result, problem) = match &outcome {
                    JobOutcome::Succeeded { result } => (JobStatus::Succeeded, result.as_ref(), None),
                    JobOutcome::Failed { problem } => (JobStatus::Failed, None, Some(problem)),
                };
                c.execute(
                    "UPDATE jobs SET status = ?1, result = ?2, problem = ?3, lease_until = NULL, finished_at = ?4,
                       result_expires_at = ?5
                     WHERE tenant_id = ?6 AND id = ?7",
                    params![
                        status.as_str(),
                        json_text(result),
                        json_text(problem),
                        now,
                        now.saturating_add(retention_ms(keep)),
                        tenant_id,
                        job_id
                    ],
                )
                .map_err(db_error)?;
                job_or_vanished(c, &tenant_id, &job_id)
            })
            .await
    }

    async fn cancel_job(&self, tenant_id: &str, job_id: &str, now: Millis, keep: Duration) -> StoreResult<Job> {
        let (tenant_id, job_id) = (tenant_id.to_owned(), job_id.to_owned());
        self.engine
            .write(move |c| {
                let Some(job) = load_job(c, &tenant_id, &job_id)? else {
                    return Err(not_there(c, kind::JOB, &tenant_id, &job_id));
                };
                match job.status {
                    s if s.is_finished() => Err(StoreError::JobFinished(s)),
                    // Never accepted (its upload did not finish): nothing to keep.
                    JobStatus::Staged => {
                        drop_job(c, &tenant_id, &job_id)?;
                        Ok(Job {
                            status: JobStatus::Canceled,
                            finished_at: Some(now),
                            ..job
                        })
                    }
                    _ => {
                        c.execute(
                            "UPDATE jobs SET status = 'canceled', lease_until = NULL, finished_at = ?1, result_expires_at = ?2
                             WHERE tenant_id = ?3 AND id = ?4",
                            params![now, now.saturating_add(retention_ms(keep)), tenant_id, job_id],
                        )
                        .map_err(db_error)?;
                        job_or_vanished(c, &tenant_id, &job_id)
                    }
                }
            })
            .await
    }

    async fn job(&self, tenant_id: &str, job_id: &str) -> StoreResult<Lookup<Job>> {
        let (tenant_id, job_id) = (tenant_id.to_owned(), job_id.to_owned());
        self.engine
            .read(move |c| {
                let tombstone = Tombstone::new(kind::JOB, &tenant_id, &job_id);
                // A staged job is not there yet.
                lookup(
                    c,
                    &format!("SELECT {JOB_COLS} FROM jobs WHERE tenant_id = ?1 AND id = ?2 AND status <> 'staged'"),
                    params![tenant_id, job_id],
                    job_row,
                    tombstone,
                )
            })
            .await
    }

    async fn list_jobs(&self, tenant_id: &str, p: PageRequest) -> StoreResult<Page<Job>> {
        let tenant_id = tenant_id.to_owned();
        self.engine
            .read(move |c| {
                page(
                    c,
                    &format!(
                        "SELECT {JOB_COLS} FROM jobs WHERE tenant_id = ?1 AND status <> 'staged' AND id > ?2 ORDER BY id LIMIT ?3"
                    ),
                    Some(&tenant_id),
                    &p,
                    job_row,
                    |j| &j.id,
                )
            })
            .await
    }

    async fn read_job_result(&self, tenant_id: &str, job_id: &str, seq: i64) -> StoreResult<Option<Vec<u8>>> {
        let (tenant_id, job_id) = (tenant_id.to_owned(), job_id.to_owned());
        self.engine
            .read(move |c| read_chunk(c, &tenant_id, &job_id, RESULT, seq))
            .await
    }

    async fn purge_expired_jobs(&self, now: Millis, tombstone_keep: Duration) -> StoreResult<u64> {
        self.engine
            .write(move |c| {
                let ids = |sql: &str| -> StoreResult<Vec<(String, String)>> {
                    c.prepare_cached(sql)
                        .and_then(|mut s| {
                            s.query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))?
                                .collect::<Result<Vec<_>, _>>()
                        })
                        .map_err(db_error)
                };
                let expired = ids("SELECT tenant_id, id FROM jobs WHERE result_expires_at <= ?1")?;
                let abandoned = ids("SELECT tenant_id, id FROM jobs WHERE status = 'staged' AND lease_until <= ?1")?;
                for (tenant_id, id) in &expired {
                    drop_job(c, tenant_id, id)?;
                    c.execute(
                        "INSERT INTO tombstones (kind, scope, key, deleted_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (kind, scope, key) DO UPDATE SET deleted_at = excluded.deleted_at, expires_at = excluded.expires_at",
                        params![kind::JOB, tenant_id, id, now, now.saturating_add(retention_ms(tombstone_keep))],
                    )
                    .map_err(db_error)?;
                }
                for (tenant_id, id) in &abandoned {
                    drop_job(c, tenant_id, id)?;
                }
                Ok((expired.len() + abandoned.len()) as u64)
            })
            .await
    }
}
