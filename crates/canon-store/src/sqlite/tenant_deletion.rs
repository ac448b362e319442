//! The steps of a tenant's deletion ([`TenantStore::delete_tenant_step`]),
//! which reach into every domain's tables, and the release of a deleted
//! tenant's name once its deletion is over (`purge_expired`).
//!
//! A step runs inside one write transaction and spends a budget of rows:
//! each phase below deletes what it can within what is left, and the step
//! ends when the budget is spent or every phase found nothing more. Phases
//! run in the same order in every step (an empty phase costs one index
//! lookup), so a row that appeared behind a phase already passed (a write
//! that loaded the tenant just before its deletion started) is still found.
//!
//! [`TenantStore::delete_tenant_step`]: crate::TenantStore::delete_tenant_step

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::jobs::held_job;
use super::rows::*;
use crate::model::*;
use crate::{StoreError, StoreResult};

/// What one job chunk (up to [`MAX_JOB_CHUNK_BYTES`], about 1 MiB usually)
/// costs of a step's budget, against 1 for any other row.
const CHUNK_COST: usize = 32;

/// One phase of a step: deletes what the budget allows of one part of the
/// tenant, counts it, and says whether that part is empty now.
type Phase = fn(&Deletion, &Connection, &mut Budget, &mut DeletedContents) -> StoreResult<bool>;

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

/// Deletes at most `limit` rows of `table` matching `filter` (its
/// parameters are `args`, `?1`, `?2`, …), rows being told apart by the
/// columns `key`. Returns how many went.
fn delete_at_most(
    conn: &Connection,
    table: &str,
    key: &str,
    filter: &str,
    args: &[&str],
    limit: usize,
) -> StoreResult<usize> {
    if limit == 0 {
        return Ok(0);
    }
    let sql = format!(
        "DELETE FROM {table} WHERE ({key}) IN (SELECT {key} FROM {table} WHERE {filter} LIMIT ?{})",
        args.len() + 1
    );
    let mut values: Vec<SqlValue> = args.iter().map(|a| SqlValue::Text((*a).to_owned())).collect();
    values.push(SqlValue::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
    conn.prepare_cached(&sql)
        .and_then(|mut s| s.execute(params_from_iter(values)))
        .map_err(db_error)
}

/// Deletes what `budget` allows of the rows [`delete_at_most`] would;
/// returns how many went and whether none is left (known only when the
/// budget was not used up).
fn drain(
    conn: &Connection,
    budget: &mut Budget,
    table: &str,
    key: &str,
    filter: &str,
    args: &[&str],
) -> StoreResult<(i64, bool)> {
    let limit = budget.left();
    let n = delete_at_most(conn, table, key, filter, args, limit)?;
    budget.spend(n);
    Ok((n as i64, n < limit))
}

/// The first `column` of `table` matching `filter`, in `column` order.
fn first(conn: &Connection, table: &str, column: &str, filter: &str, args: &[&str]) -> StoreResult<Option<String>> {
    conn.prepare_cached(&format!(
        "SELECT {column} FROM {table} WHERE {filter} ORDER BY {column} LIMIT 1"
    ))
    .and_then(|mut s| s.query_row(params_from_iter(args.iter()), |r| r.get(0)).optional())
    .map_err(db_error)
}

/// The first string after `prefix` in SQLite's text order (its last
/// character, incremented): `scope >= prefix AND scope < end` is exactly
/// the scopes starting with `prefix`, and an index range.
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    let last = chars.pop()?;
    let next = char::from_u32(u32::from(last) + 1)?;
    chars.push(next);
    Some(chars.into_iter().collect())
}

impl Deletion {
    /// One step (see the module's documentation), inside the writer's
    /// transaction: checks the lease, deletes within `limit`, and stores the
    /// counts as the job's checkpoint and progress.
    pub(super) fn step(&self, conn: &Connection, limit: usize) -> StoreResult<TenantDeletionStep> {
        let job = held_job(conn, &self.tenant_id, &self.job_id, &self.owner, self.now)?;
        self.check_deleting(conn)?;
        let mut deleted: DeletedContents = job
            .checkpoint
            .and_then(|c| serde_json::from_value(c).ok())
            .unwrap_or_default();
        let mut budget = Budget(limit.max(1));
        let phases: [Phase; 7] = [
            Self::cancel_jobs,
            Self::collections,
            Self::devices,
            Self::users,
            Self::tombstones,
            Self::idempotency_keys,
            Self::other_jobs,
        ];
        let mut finished = true;
        for phase in phases {
            if budget.left() == 0 || !phase(self, conn, &mut budget, &mut deleted)? {
                finished = false;
                break;
            }
        }
        if finished {
            conn.execute(
                "UPDATE tenants SET emptied_at = COALESCE(emptied_at, ?1) WHERE id = ?2",
                params![self.now, self.tenant_id],
            )
            .map_err(db_error)?;
        }
        let checkpoint = serde_json::to_string(&deleted).map_err(|e| StoreError::Internal(e.to_string()))?;
        conn.execute(
            "UPDATE jobs SET checkpoint = ?1, progress_done = ?2 WHERE tenant_id = ?3 AND id = ?4",
            params![checkpoint, deleted.total(), self.tenant_id, self.job_id],
        )
        .map_err(db_error)?;
        Ok(TenantDeletionStep { deleted, finished })
    }

    /// Refuses to touch a tenant unless its deletion started and this job is
    /// the one deleting it: a job of the wrong kind or a stale one must never
    /// empty a live tenant.
    fn check_deleting(&self, conn: &Connection) -> StoreResult<()> {
        let job: Option<Option<String>> = conn
            .query_row(
                "SELECT deletion_job FROM tenants WHERE id = ?1 AND deleted_at IS NOT NULL",
                [&self.tenant_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_error)?;
        if job.flatten().as_deref() == Some(self.job_id.as_str()) {
            Ok(())
        } else {
            Err(StoreError::Internal(format!(
                "job {} is not the deletion of tenant {}",
                self.job_id, self.tenant_id
            )))
        }
    }

    /// Cancels the tenant's other queued and running jobs, so no worker goes
    /// on writing into it (each loses its lease at its next write).
    fn cancel_jobs(&self, conn: &Connection, budget: &mut Budget, deleted: &mut DeletedContents) -> StoreResult<bool> {
        let limit = budget.left();
        let keep_until = self.now.saturating_add(retention_ms(JOB_RESULT_RETENTION));
        let n = conn
            .prepare_cached(
                "UPDATE jobs SET status = 'canceled', lease_until = NULL, finished_at = ?3, result_expires_at = ?4
                 WHERE (tenant_id, id) IN (
                   SELECT tenant_id, id FROM jobs
                   WHERE tenant_id = ?1 AND id <> ?2 AND status IN ('queued', 'running') LIMIT ?5)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    self.tenant_id,
                    self.job_id,
                    self.now,
                    keep_until,
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ])
            })
            .map_err(db_error)?;
        budget.spend(n);
        deleted.jobs_canceled += n as i64;
        Ok(n < limit)
    }

    /// Each collection in turn: the leases, unique values, records and
    /// record tombstones below it, then its old names and itself.
    fn collections(&self, conn: &Connection, budget: &mut Budget, deleted: &mut DeletedContents) -> StoreResult<bool> {
        while budget.left() > 0 {
            let Some(id) = first(conn, "collections", "id", "tenant_id = ?1", &[&self.tenant_id])? else {
                return Ok(true);
            };
            let scope: &[&str] = &[&id];
            let (leases, _) = drain(
                conn,
                budget,
                "locks",
                "collection_id, record_id",
                "collection_id = ?1",
                scope,
            )?;
            deleted.leases += leases;
            drain(
                conn,
                budget,
                "unique_values",
                "collection_id, field, value",
                "collection_id = ?1",
                scope,
            )?;
            let (records, _) = drain(
                conn,
                budget,
                "records",
                "collection_id, id",
                "collection_id = ?1",
                scope,
            )?;
            deleted.records += records;
            let record = &[kind::RECORD, id.as_str()];
            drain(
                conn,
                budget,
                "tombstones",
                "kind, scope, key",
                "kind = ?1 AND scope = ?2",
                record,
            )?;
            let (_, no_alias) = drain(
                conn,
                budget,
                "collection_aliases",
                "tenant_id, name",
                "collection_id = ?1",
                scope,
            )?;
            // Budget left after every drain: each removed less than it was
            // allowed, so nothing is left below the collection.
            if !no_alias || budget.left() == 0 {
                return Ok(false);
            }
            conn.execute("DELETE FROM collections WHERE id = ?1", [&id])
                .map_err(db_error)?;
            budget.spend(1);
            deleted.collections += 1;
        }
        Ok(false)
    }

    /// The tenant's devices (schema v11), their sealed headers with them.
    fn devices(&self, conn: &Connection, budget: &mut Budget, deleted: &mut DeletedContents) -> StoreResult<bool> {
        let (n, none_left) = drain(conn, budget, "devices", "id", "tenant_id = ?1", &[&self.tenant_id])?;
        deleted.devices += n;
        Ok(none_left)
    }

    /// Each user in turn: its API keys and their tombstones, then itself.
    fn users(&self, conn: &Connection, budget: &mut Budget, deleted: &mut DeletedContents) -> StoreResult<bool> {
        while budget.left() > 0 {
            let Some(id) = first(conn, "users", "id", "tenant_id = ?1", &[&self.tenant_id])? else {
                return Ok(true);
            };
            let (keys, _) = drain(conn, budget, "api_keys", "id", "user_id = ?1", &[&id])?;
            deleted.api_keys += keys;
            if !drain_key_tombstones(conn, budget, &id)? {
                return Ok(false);
            }
            conn.execute(
                "DELETE FROM users WHERE tenant_id = ?1 AND id = ?2",
                [&self.tenant_id, &id],
            )
            .map_err(db_error)?;
            budget.spend(1);
            deleted.users += 1;
        }
        Ok(false)
    }

    /// The tombstones kept under the tenant: deleted users (with their keys'
    /// tombstones), collections and jobs. The tenant's own tombstone stays.
    fn tombstones(&self, conn: &Connection, budget: &mut Budget, _: &mut DeletedContents) -> StoreResult<bool> {
        let tenant: &str = &self.tenant_id;
        while budget.left() > 0 {
            let user = &[kind::USER, tenant];
            let Some(user_id) = first(conn, "tombstones", "key", "kind = ?1 AND scope = ?2", user)? else {
                break;
            };
            if !drain_key_tombstones(conn, budget, &user_id)? {
                return Ok(false);
            }
            conn.execute(
                "DELETE FROM tombstones WHERE kind = ?1 AND scope = ?2 AND key = ?3",
                params![kind::USER, tenant, user_id],
            )
            .map_err(db_error)?;
            budget.spend(1);
        }
        for k in [kind::COLLECTION, kind::DEVICE, kind::JOB] {
            let (_, none_left) = drain(
                conn,
                budget,
                "tombstones",
                "kind, scope, key",
                "kind = ?1 AND scope = ?2",
                &[k, tenant],
            )?;
            if !none_left {
                return Ok(false);
            }
        }
        Ok(budget.left() > 0)
    }

    /// The idempotency ledger's entries of the tenant's members (responses
    /// kept for their retries; the keys that could retry are gone).
    fn idempotency_keys(
        &self,
        conn: &Connection,
        budget: &mut Budget,
        deleted: &mut DeletedContents,
    ) -> StoreResult<bool> {
        let prefix = self.idempotency_scope.as_str();
        let Some(end) = prefix_end(prefix) else {
            return Err(StoreError::Internal("an empty idempotency scope prefix".into()));
        };
        let (n, none_left) = drain(
            conn,
            budget,
            "idempotency_keys",
            "scope, key",
            "scope >= ?1 AND scope < ?2",
            &[prefix, &end],
        )?;
        deleted.idempotency_keys += n;
        Ok(none_left)
    }

    /// The tenant's other jobs, each with its input and result chunks first.
    fn other_jobs(&self, conn: &Connection, budget: &mut Budget, deleted: &mut DeletedContents) -> StoreResult<bool> {
        while budget.left() > 0 {
            let Some(id) = first(
                conn,
                "jobs",
                "id",
                "tenant_id = ?1 AND id <> ?2",
                &[&self.tenant_id, &self.job_id],
            )?
            else {
                return Ok(true);
            };
            // A chunk weighs more than a row; at least one goes per step.
            let limit = (budget.left() / CHUNK_COST).max(1);
            let chunks = delete_at_most(
                conn,
                "job_blobs",
                "rowid",
                "tenant_id = ?1 AND job_id = ?2",
                &[&self.tenant_id, &id],
                limit,
            )?;
            budget.spend(chunks.saturating_mul(CHUNK_COST));
            if chunks == limit || budget.left() == 0 {
                return Ok(false);
            }
            conn.execute(
                "DELETE FROM jobs WHERE tenant_id = ?1 AND id = ?2",
                [&self.tenant_id, &id],
            )
            .map_err(db_error)?;
            budget.spend(1);
            deleted.jobs += 1;
        }
        Ok(false)
    }
}

/// Releases the names of deleted tenants that were emptied and whose
/// deletion job was purged: their rows go (their tombstone, written when
/// the deletion started, answers from then on) and the name may be taken
/// again. Returns how many went.
pub(super) fn release_names(conn: &Connection) -> StoreResult<u64> {
    let n = conn
        .execute(
            "DELETE FROM tenants WHERE emptied_at IS NOT NULL AND NOT EXISTS (
               SELECT 1 FROM jobs j WHERE j.tenant_id = tenants.id AND j.id = tenants.deletion_job)",
            [],
        )
        .map_err(db_error)?;
    Ok(n as u64)
}

/// Drains the tombstones of a user's API keys within `budget`: whether they
/// are all gone with budget left for the user itself.
fn drain_key_tombstones(conn: &Connection, budget: &mut Budget, user_id: &str) -> StoreResult<bool> {
    let (_, none_left) = drain(
        conn,
        budget,
        "tombstones",
        "kind, scope, key",
        "kind = ?1 AND scope = ?2",
        &[kind::API_KEY, user_id],
    )?;
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
