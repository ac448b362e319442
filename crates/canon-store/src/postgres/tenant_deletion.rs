//! The steps of a tenant's deletion ([`TenantStore::delete_tenant_step`]),
//! which reach into every domain's tables, and the release of a deleted
//! tenant's name once its deletion is over (`purge_expired`). The same
//! phases, in the same order and with the same budget, as SQLite's
//! (`sqlite/tenant_deletion.rs` explains them).
//!
//! [`TenantStore::delete_tenant_step`]: crate::TenantStore::delete_tenant_step

use tokio_postgres::types::{ToSql, Type};

use super::jobs::held_job;
use super::rows::*;
use crate::model::*;
use crate::{StoreError, StoreResult};

/// What one job chunk costs of a step's budget, against 1 for any other row.
const CHUNK_COST: usize = 32;

/// The rows a step may still delete.
struct Budget(usize);

impl Budget {
    fn left(&self) -> usize {
        self.0
    }

    fn spend(&mut self, rows: usize) {
        self.0 = self.0.saturating_sub(rows);
    }
}

/// One tenant's deletion, as its job's holder runs it.
pub(super) struct Deletion {
    /// The deleted tenant's id.
    pub tenant_id: String,
    /// Its current deletion job.
    pub job_id: String,
    /// The job's lease holder.
    pub owner: String,
    /// The prefix of the idempotency scopes of the tenant's members.
    pub idempotency_scope: String,
    /// The time the step runs at (leases are checked against it).
    pub now: Millis,
}

/// Text parameters `$1`, `$2`, … for `args`.
fn texts<'a>(args: &'a [&'a str]) -> Vec<Param<'a>> {
    args.iter().map(|a| text(a as &(dyn ToSql + Sync))).collect()
}

/// Deletes at most `limit` rows of `table` matching `filter` (its
/// parameters are `args`, `$1`, `$2`, …). Returns how many went.
async fn delete_at_most(c: &impl Db, table: &str, filter: &str, args: &[&str], limit: usize) -> StoreResult<usize> {
    if limit == 0 {
        return Ok(0);
    }
    let sql = format!(
        "DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} WHERE {filter} LIMIT ${}))",
        args.len() + 1
    );
    let limit_param = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut params = texts(args);
    params.push(int(&limit_param));
    let n = c.execute_typed(&sql, &params).await?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// Deletes what `budget` allows of the rows [`delete_at_most`] would;
/// returns how many went and whether none is left (known only when the
/// budget was not used up).
async fn drain(c: &impl Db, budget: &mut Budget, table: &str, filter: &str, args: &[&str]) -> StoreResult<(i64, bool)> {
    let limit = budget.left();
    let n = delete_at_most(c, table, filter, args, limit).await?;
    budget.spend(n);
    Ok((n as i64, n < limit))
}

/// The first `column` of `table` matching `filter`, in `column` order.
async fn first(c: &impl Db, table: &str, column: &str, filter: &str, args: &[&str]) -> StoreResult<Option<String>> {
    let row = c
        .query_typed_opt(
            &format!("SELECT {column} FROM {table} WHERE {filter} ORDER BY {column} LIMIT 1"),
            &texts(args),
        )
        .await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

/// The first string after `prefix` in byte order (its last character,
/// incremented): `scope >= prefix AND scope < end` is exactly the scopes
/// starting with `prefix`, and an index range (the column is `COLLATE "C"`).
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    let last = chars.pop()?;
    let next = char::from_u32(u32::from(last) + 1)?;
    chars.push(next);
    Some(chars.into_iter().collect())
}

impl Deletion {
    /// One step, inside the caller's transaction: checks the lease, deletes
    /// within `limit`, and stores the counts as the job's checkpoint and
    /// progress.
    pub(super) async fn step(&self, c: &impl Db, limit: usize) -> StoreResult<TenantDeletionStep> {
        let job = held_job(c, &self.tenant_id, &self.job_id, &self.owner, self.now).await?;
        self.check_deleting(c).await?;
        let mut deleted: DeletedContents = job
            .checkpoint
            .and_then(|c| serde_json::from_value(c).ok())
            .unwrap_or_default();
        let mut budget = Budget(limit.max(1));
        let mut finished = true;
        for phase in 0..7 {
            if budget.left() == 0 {
                finished = false;
                break;
            }
            let (b, d) = (&mut budget, &mut deleted);
            let done = match phase {
                0 => self.cancel_jobs(c, b, d).await?,
                1 => self.collections(c, b, d).await?,
                2 => self.devices(c, b, d).await?,
                3 => self.users(c, b, d).await?,
                4 => self.tombstones(c, b).await?,
                5 => self.idempotency_keys(c, b, d).await?,
                _ => self.other_jobs(c, b, d).await?,
            };
            if !done {
                finished = false;
                break;
            }
        }
        if finished {
            c.execute_typed(
                "UPDATE tenants SET emptied_at = COALESCE(emptied_at, $1) WHERE id = $2",
                &[int(&self.now), text(&self.tenant_id)],
            )
            .await?;
        }
        let checkpoint = serde_json::to_string(&deleted).map_err(|e| StoreError::Internal(e.to_string()))?;
        let total = deleted.total();
        c.execute_typed(
            "UPDATE jobs SET checkpoint = $1, progress_done = $2 WHERE tenant_id = $3 AND id = $4",
            &[
                text(&checkpoint),
                int(&total),
                text(&self.tenant_id),
                text(&self.job_id),
            ],
        )
        .await?;
        Ok(TenantDeletionStep { deleted, finished })
    }

    /// Refuses to touch a tenant unless its deletion started and this job is
    /// the one deleting it.
    async fn check_deleting(&self, c: &impl Db) -> StoreResult<()> {
        let row = c
            .query_typed_opt(
                "SELECT deletion_job FROM tenants WHERE id = $1 AND deleted_at IS NOT NULL",
                &[text(&self.tenant_id)],
            )
            .await?;
        let job: Option<String> = row.map(|r| r.try_get(0)).transpose()?.flatten();
        if job.as_deref() == Some(self.job_id.as_str()) {
            Ok(())
        } else {
            Err(StoreError::Internal(format!(
                "job {} is not the deletion of tenant {}",
                self.job_id, self.tenant_id
            )))
        }
    }

    /// Cancels the tenant's other queued and running jobs.
    async fn cancel_jobs(&self, c: &impl Db, budget: &mut Budget, deleted: &mut DeletedContents) -> StoreResult<bool> {
        let limit = budget.left();
        let keep_until = self.now.saturating_add(retention_ms(JOB_RESULT_RETENTION));
        let limit_param = i64::try_from(limit).unwrap_or(i64::MAX);
        let n = c
            .execute_typed(
                "UPDATE jobs SET status = 'canceled', lease_until = NULL, finished_at = $3, result_expires_at = $4
                 WHERE (tenant_id, id) IN (
                   SELECT tenant_id, id FROM jobs
                   WHERE tenant_id = $1 AND id <> $2 AND status IN ('queued', 'running') LIMIT $5)",
                &[
                    text(&self.tenant_id),
                    text(&self.job_id),
                    int(&self.now),
                    int(&keep_until),
                    int(&limit_param),
                ],
            )
            .await?;
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        budget.spend(n);
        deleted.jobs_canceled += n as i64;
        Ok(n < limit)
    }

    /// Each collection in turn: the leases, unique values, records and
    /// record tombstones below it, then its old names and itself.
    async fn collections(&self, c: &impl Db, budget: &mut Budget, deleted: &mut DeletedContents) -> StoreResult<bool> {
        let tenant: &str = &self.tenant_id;
        while budget.left() > 0 {
            let Some(id) = first(c, "collections", "id", "tenant_id = $1", &[tenant]).await? else {
                return Ok(true);
            };
            let below: &[&str] = &[tenant, &id];
            let under = "tenant_id = $1 AND collection_id = $2";
            let (leases, _) = drain(c, budget, "locks", under, below).await?;
            deleted.leases += leases;
            drain(c, budget, "unique_values", under, below).await?;
            let (records, _) = drain(c, budget, "records", under, below).await?;
            deleted.records += records;
            drain(
                c,
                budget,
                "tombstones",
                "kind = $1 AND scope = $2",
                &[kind::RECORD, &id],
            )
            .await?;
            let (_, no_alias) = drain(c, budget, "collection_aliases", under, below).await?;
            // Budget left after every drain: each removed less than it was
            // allowed, so nothing is left below the collection.
            if !no_alias || budget.left() == 0 {
                return Ok(false);
            }
            c.execute_typed(
                "DELETE FROM collections WHERE tenant_id = $1 AND id = $2",
                &[text(&tenant), text(&id)],
            )
            .await?;
            budget.spend(1);
            deleted.collections += 1;
        }
        Ok(false)
    }

    /// Each user in turn: its API keys and their tombstones, then itself.
    /// The tenant's devices, their sealed headers with them.
    async fn devices(&self, c: &impl Db, budget: &mut Budget, deleted: &mut DeletedContents) -> StoreResult<bool> {
        let (n, none_left) = drain(c, budget, "devices", "tenant_id = $1", &[&self.tenant_id]).await?;
        deleted.devices += n;
        Ok(none_left)
    }

    async fn users(&self, c: &impl Db, budget: &mut Budget, deleted: &mut DeletedContents) -> StoreResult<bool> {
        let tenant: &str = &self.tenant_id;
        while budget.left() > 0 {
            let Some(id) = first(c, "users", "id", "tenant_id = $1", &[tenant]).await? else {
                return Ok(true);
            };
            let (keys, _) = drain(c, budget, "api_keys", "tenant_id = $1 AND user_id = $2", &[tenant, &id]).await?;
            deleted.api_keys += keys;
            if !drain_key_tombstones(c, budget, &id).await? {
                return Ok(false);
            }
            c.execute_typed(
                "DELETE FROM users WHERE tenant_id = $1 AND id = $2",
                &[text(&tenant), text(&id)],
            )
            .await?;
            budget.spend(1);
            deleted.users += 1;
        }
        Ok(false)
    }

    /// The tombstones kept under the tenant: deleted users (with their keys'
    /// tombstones), collections and jobs. The tenant's own tombstone stays.
    async fn tombstones(&self, c: &impl Db, budget: &mut Budget) -> StoreResult<bool> {
        let tenant: &str = &self.tenant_id;
        while budget.left() > 0 {
            let user = &[kind::USER, tenant];
            let Some(user_id) = first(c, "tombstones", "key", "kind = $1 AND scope = $2", user).await? else {
                break;
            };
            if !drain_key_tombstones(c, budget, &user_id).await? {
                return Ok(false);
            }
            c.execute_typed(
                "DELETE FROM tombstones WHERE kind = $1 AND scope = $2 AND key = $3",
                &[text(&kind::USER), text(&tenant), text(&user_id)],
            )
            .await?;
            budget.spend(1);
        }
        for k in [kind::COLLECTION, kind::DEVICE, kind::JOB] {
            let (_, none_left) = drain(c, budget, "tombstones", "kind = $1 AND scope = $2", &[k, tenant]).await?;
            if !none_left {
                return Ok(false);
            }
        }
        Ok(budget.left() > 0)
    }

    /// The idempotency ledger's entries of the tenant's members.
    async fn idempotency_keys(
        &self,
        c: &impl Db,
        budget: &mut Budget,
        deleted: &mut DeletedContents,
    ) -> StoreResult<bool> {
        let prefix = self.idempotency_scope.as_str();
        let Some(end) = prefix_end(prefix) else {
            return Err(StoreError::Internal("an empty idempotency scope prefix".into()));
        };
        let (n, none_left) = drain(
            c,
            budget,
            "idempotency_keys",
            "scope >= $1 AND scope < $2",
            &[prefix, &end],
        )
        .await?;
        deleted.idempotency_keys += n;
        Ok(none_left)
    }

    /// The tenant's other jobs, each with its input and result chunks first.
    async fn other_jobs(&self, c: &impl Db, budget: &mut Budget, deleted: &mut DeletedContents) -> StoreResult<bool> {
        let tenant: &str = &self.tenant_id;
        while budget.left() > 0 {
            let Some(id) = first(c, "jobs", "id", "tenant_id = $1 AND id <> $2", &[tenant, &self.job_id]).await? else {
                return Ok(true);
            };
            // A chunk weighs more than a row; at least one goes per step.
            let limit = (budget.left() / CHUNK_COST).max(1);
            let chunks =
                delete_at_most(c, "job_blobs", "tenant_id = $1 AND job_id = $2", &[tenant, &id], limit).await?;
            budget.spend(chunks.saturating_mul(CHUNK_COST));
            if chunks == limit || budget.left() == 0 {
                return Ok(false);
            }
            c.execute_typed(
                "DELETE FROM jobs WHERE tenant_id = $1 AND id = $2",
                &[text(&tenant), text(&id)],
            )
            .await?;
            budget.spend(1);
            deleted.jobs += 1;
        }
        Ok(false)
    }
}

/// Releases the names of deleted tenants that were emptied and whose
/// deletion job was purged. Returns how many went.
///
/// Two statements, because one is wrong under READ COMMITTED. A DELETE that
/// restarts such a deletion (a purged job counts as stopped) locks the
/// tenant's row, queues a new job and points the row at it. A single
/// `DELETE … WHERE … NOT EXISTS (job)` that read the row before that commit
/// waited for the row's lock, then re-checked its WHERE on the updated row
/// (EvalPlanQual) but ran the subquery in its own, older snapshot, where the
/// new job does not exist: it removed the tenant and orphaned the job its
/// 202 had handed out. So the first statement only locks the candidates,
/// skipping rows a restart holds (they wait for the next purge), and the
/// second decides in a snapshot of its own, taken after every lock was
/// granted: a restart that changed a locked row committed before its lock
/// was granted, so its job is seen; none can change the row afterwards.
/// (Clearing `emptied_at` on restart would also fail the re-check, but
/// leans on what EvalPlanQual re-reads, and changes what the column means.)
pub(super) async fn release_names(c: &impl Db) -> StoreResult<u64> {
    const RELEASABLE: &str = "emptied_at IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM jobs j WHERE j.tenant_id = tenants.id AND j.id = tenants.deletion_job)";
    let locked = c
        .query_typed(
            &format!("SELECT id FROM tenants WHERE {RELEASABLE} FOR UPDATE SKIP LOCKED"),
            &[],
        )
        .await?;
    if locked.is_empty() {
        return Ok(0);
    }
    let ids = locked
        .iter()
        .map(|r| r.try_get::<_, String>(0))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(c.execute_typed(
        &format!("DELETE FROM tenants WHERE id = ANY($1) AND {RELEASABLE}"),
        &[(&ids, Type::TEXT_ARRAY)],
    )
    .await?)
}

/// Drains the tombstones of a user's API keys within `budget`: whether they
/// are all gone with budget left for the user itself.
async fn drain_key_tombstones(c: &impl Db, budget: &mut Budget, user_id: &str) -> StoreResult<bool> {
    let (_, none_left) = drain(
        c,
        budget,
        "tombstones",
        "kind = $1 AND scope = $2",
        &[kind::API_KEY, user_id],
    )
    .await?;
    Ok(none_left && budget.left() > 0)
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn a_prefix_ends_where_its_last_character_is_one_higher() {
        assert_eq!(prefix_end("acme/").as_deref(), Some("acme0"));
        assert_eq!(prefix_end(""), None);
    }
}
