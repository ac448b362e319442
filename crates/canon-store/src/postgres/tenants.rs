//! Tenants, users, API keys and authentication ([`TenantStore`]).

use std::time::Duration;

use async_trait::async_trait;

use super::PostgresStore;
use super::jobs::insert_job;
use super::rows::*;
use super::tenant_deletion;
use crate::model::*;
use crate::prelude::*;
use crate::{StoreError, StoreResult};

/// The tenant called `name` and, once its deletion started, when it did,
/// its row locked for the rest of the transaction.
async fn lock_tenant(c: &impl Db, name: &str) -> StoreResult<Option<(Tenant, Option<Millis>)>> {
    let sql = format!("SELECT {TENANT_COLS}, deleted_at FROM tenants WHERE name = $1 FOR UPDATE");
    let row = c.query_typed_opt(&sql, &[text(&name)]).await?;
    row.map(|r| Ok((tenant_row(&r)?, r.try_get(8)?))).transpose()
}

/// Holds the lock on the tenant name `name` until the transaction ends. Its
/// creation takes it, and so do the writes to the tenant by name (its
/// deletion, its limits): one that misses the tenant (its name released)
/// reads the tombstone in a second statement, and no re-create commits
/// between the two, which would make a tenant that is there answer
/// `Vanished`.
///
/// Lock order: this lock before the tenant's row.
async fn lock_name(c: &impl Db, name: &str) -> StoreResult<()> {
    lock(c, &format!("tenant/{name}")).await
}

/// The deletion of the tenant called `name`, while its row holds the name.
async fn load_deletion(c: &impl Db, name: &str) -> StoreResult<Option<TenantDeletion>> {
    let row = c
        .query_typed_opt(
            "SELECT t.id, t.name, t.deletion_job, j.status, t.deleted_at, t.emptied_at FROM tenants t
             LEFT JOIN jobs j ON j.tenant_id = t.id AND j.id = t.deletion_job
             WHERE t.name = $1 AND t.deleted_at IS NOT NULL",
            &[text(&name)],
        )
        .await?;
    row.map(|r| {
        let status: Option<&str> = r.try_get(3)?;
        Ok(TenantDeletion {
            tenant_id: r.try_get(0)?,
            name: r.try_get(1)?,
            job_id: r.try_get(2)?,
            job_status: status.and_then(JobStatus::parse),
            deleted_at: r.try_get(4)?,
            emptied_at: r.try_get(5)?,
        })
    })
    .transpose()
}

/// The user `id` of the tenant, its row locked for the rest of the
/// transaction.
async fn lock_user(c: &impl Db, tenant_id: &str, id: &str) -> StoreResult<Option<User>> {
    let sql = format!("SELECT {USER_COLS} FROM users WHERE tenant_id = $1 AND id = $2 FOR UPDATE");
    let row = c.query_typed_opt(&sql, &[text(&tenant_id), text(&id)]).await?;
    row.map(|r| user_row(&r)).transpose()
}

/// Loads the user a change addresses and checks `expect` against it; a
/// change that takes the admin role from the tenant's last admin
/// (`stays_admin` false) is [`StoreError::LastAdmin`]. Changes to one
/// tenant's users are serialized (an advisory lock), so two admins demoted
/// at once cannot both see the other one still an admin.
async fn user_to_change(
    c: &impl Db,
    tenant_id: &str,
    id: &str,
    expect: &Expect,
    stays_admin: bool,
) -> StoreResult<User> {
    lock(c, &format!("users/{tenant_id}")).await?;
    let Some(user) = lock_user(c, tenant_id, id).await? else {
        return Err(not_there(c, kind::USER, tenant_id, id).await);
    };
    check_existing(expect, user.version, None)?;
    if user.role == TenantRole::Admin && !stays_admin {
        let others: i64 = c
            .query_typed_one(
                "SELECT COUNT(*) FROM users WHERE tenant_id = $1 AND role = 'admin' AND id <> $2",
                &[text(&tenant_id), text(&id)],
            )
            .await?
            .try_get(0)?;
        if others == 0 {
            return Err(StoreError::LastAdmin);
        }
    }
    Ok(user)
}

/// The user's tenant, as a sub-select on `$1` (keys are addressed by their
/// user's id alone; their keys lead with the tenant).
const TENANT_OF_USER: &str = "(SELECT tenant_id FROM users WHERE id = $1)";

#[async_trait]
impl TenantStore for PostgresStore {
    async fn bootstrap_operator(&self, token_hash: &str) -> StoreResult<bool> {
        self.pool
            .write(true, async |tx| {
                // Nodes starting at once: one creates the key, the others see it.
                lock(tx, "operator").await?;
                let exists = tx
                    .query_typed_opt("SELECT 1 FROM api_keys WHERE tenant_id = '' LIMIT 1", &[])
                    .await?;
                if exists.is_some() {
                    return Ok(false);
                }
                let (id, now) = (new_id(), now_millis());
                tx.execute_typed(
                    "INSERT INTO api_keys (tenant_id, id, user_id, name, token_hash, created_at, updated_at)
                         VALUES ('', $1, NULL, 'operator', $2, $3, $3)",
                    &[text(&id), text(&token_hash), int(&now)],
                )
                .await?;
                Ok(true)
            })
            .await
    }

    async fn key_owner(&self, token_hash: &str) -> StoreResult<Option<KeyOwner>> {
        self.pool
            .run(async {
                let c = self.pool.conn().await?;
                // Only the operator's key has no tenant. A member's key counts
                // only while its tenant is live.
                let row = c
                    .client()
                    .query_typed_opt(
                        "SELECT k.id, k.token_hash, k.tenant_id, t.name, u.id, u.role,
                                t.rate_limit_per_second, t.burst, t.daily_quota, t.version FROM api_keys k
                         LEFT JOIN users u ON u.tenant_id = k.tenant_id AND u.id = k.user_id
                         LEFT JOIN tenants t ON t.id = k.tenant_id
                         WHERE k.token_hash = $1
                           AND (k.tenant_id = '' OR (t.id IS NOT NULL AND t.deleted_at IS NULL))",
                        &[text(&token_hash)],
                    )
                    .await?;
                let Some(r) = row else {
                    return Ok(None);
                };
                let key_id: String = r.try_get(0)?;
                let token_hash: String = r.try_get(1)?;
                let tenant_id: String = r.try_get(2)?;
                Ok(Some(if tenant_id.is_empty() {
                    KeyOwner::Operator {
                        key_id: key_id.into(),
                        token_hash,
                    }
                } else {
                    KeyOwner::Member {
                        key_id: key_id.into(),
                        token_hash,
                        tenant: r.try_get::<_, String>(3)?.into(),
                        user_id: r.try_get::<_, String>(4)?.into(),
                        role: role(r.try_get(5)?)?,
                        tenant_id: tenant_id.into(),
                        limits: TenantLimits {
                            rate_limit_per_second: to_u32(r.try_get(6)?),
                            burst: to_u32(r.try_get(7)?),
                            daily_quota: to_u32(r.try_get(8)?),
                        },
                        tenant_version: r.try_get(9)?,
                    }
                }))
            })
            .await
    }

    async fn create_tenant(&self, name: &str) -> StoreResult<Tenant> {
        self.pool
            .write(true, async |tx| {
                lock_name(tx, name).await?;
                if load_deletion(tx, name).await?.is_some() {
                    return Err(StoreError::HeldByDeletion {
                        pointer: "/name".into(),
                    });
                }
                let now = now_millis();
                let t = Tenant {
                    id: new_id(),
                    name: name.to_owned(),
                    version: 1,
                    created_at: now,
                    updated_at: now,
                    limits: TenantLimits::default(),
                };
                let inserted = tx
                    .execute_typed(
                        "INSERT INTO tenants (id, name, version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)
                             ON CONFLICT DO NOTHING",
                        &[
                            text(&t.id),
                            text(&t.name),
                            int(&t.version),
                            int(&t.created_at),
                            int(&t.updated_at),
                        ],
                    )
                    .await?;
                if inserted == 0 {
                    return Err(StoreError::Conflict {
                        pointer: "/name".into(),
                    });
                }
                // A name whose deleted tenant was purged is free again.
                clear_tombstone(tx, kind::TENANT, "", &t.name).await?;
                Ok(t)
            })
            .await
    }

    async fn set_tenant_limits(&self, name: &str, limits: TenantLimits, expect: Expect) -> StoreResult<Tenant> {
        self.pool
            .write(true, async |tx| {
                // A name released since its deletion still has its tombstone
                // (410); read after the miss, with no re-create in between.
                lock_name(tx, name).await?;
                let t = match lock_tenant(tx, name).await? {
                    Some((t, None)) => t,
                    Some((_, Some(_))) => return Err(StoreError::Gone),
                    None => return Err(not_there(tx, kind::TENANT, "", name).await),
                };
                check_existing(&expect, t.version, None)?;
                let t = Tenant {
                    version: t.version + 1,
                    updated_at: now_millis().max(t.updated_at),
                    limits,
                    ..t
                };
                let as_i64 = |v: Option<u32>| v.map(i64::from);
                let (rate, burst, quota) = (
                    as_i64(limits.rate_limit_per_second),
                    as_i64(limits.burst),
                    as_i64(limits.daily_quota),
                );
                tx.execute_typed(
                    "UPDATE tenants SET version = $2, updated_at = $3, rate_limit_per_second = $4, burst = $5,
                                daily_quota = $6 WHERE id = $1",
                    &[
                        text(&t.id),
                        int(&t.version),
                        int(&t.updated_at),
                        int(&rate),
                        int(&burst),
                        int(&quota),
                    ],
                )
                .await?;
                Ok(t)
            })
            .await
    }

    async fn tenant(&self, name: &str) -> StoreResult<Lookup<Tenant>> {
        self.pool
            .run(async {
                let c = self.pool.conn().await?;
                let tombstone = Tombstone::new(kind::TENANT, "", name);
                let found = lookup(
                    c.client(),
                    &format!("SELECT {TENANT_COLS}, deleted_at FROM tenants WHERE name = $1"),
                    &[text(&name)],
                    |r| Ok((tenant_row(r)?, r.try_get::<_, Option<Millis>>(8)?)),
                    tombstone,
                )
                .await?;
                // A tenant being deleted still holds its name: it is gone.
                Ok(match found {
                    Lookup::Found((t, None)) => Lookup::Found(t),
                    Lookup::Found((_, Some(_))) | Lookup::Gone => Lookup::Gone,
                    Lookup::Missing => Lookup::Missing,
                })
            })
            .await
    }

    async fn list_tenants(&self, p: PageRequest) -> StoreResult<Page<Tenant>> {
        self.pool
            .run(async {
                let c = self.pool.conn().await?;
                page(
                    c.client(),
                    &format!(
                        "SELECT {TENANT_COLS} FROM tenants WHERE deleted_at IS NULL AND id > $1 ORDER BY id LIMIT $2"
                    ),
                    &[],
                    &p,
                    tenant_row,
                    |t| &t.id,
                )
                .await
            })
            .await
    }

    async fn create_user(&self, tenant_id: &str, email: &str, role: TenantRole) -> StoreResult<User> {
        self.pool
            .write(true, async |tx| {
                live_tenant(tx, tenant_id).await?;
                let now = now_millis();
                let u = User {
                    id: new_id(),
                    tenant_id: tenant_id.to_owned(),
                    email: email.to_owned(),
                    role,
                    version: 1,
                    created_at: now,
                    updated_at: now,
                };
                let inserted = tx
                    .execute_typed(
                        &format!(
                            "INSERT INTO users ({USER_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING"
                        ),
                        &[
                            text(&u.id),
                            text(&u.tenant_id),
                            text(&u.email),
                            text(&u.role.as_str()),
                            int(&u.version),
                            int(&u.created_at),
                            int(&u.updated_at),
                        ],
                    )
                    .await?;
                if inserted == 0 {
                    return Err(StoreError::Conflict {
                        pointer: "/email".into(),
                    });
                }
                Ok(u)
            })
            .await
    }

    async fn user(&self, tenant_id: &str, id: &str) -> StoreResult<Lookup<User>> {
        self.pool
            .run(async {
                let c = self.pool.conn().await?;
                let tombstone = Tombstone::new(kind::USER, tenant_id, id);
                lookup(
                    c.client(),
                    &format!("SELECT {USER_COLS} FROM users WHERE tenant_id = $1 AND id = $2"),
                    &[text(&tenant_id), text(&id)],
                    user_row,
                    tombstone,
                )
                .await
            })
            .await
    }

    async fn list_users(&self, tenant_id: &str, p: PageRequest) -> StoreResult<Page<User>> {
        self.pool
            .run(async {
                let c = self.pool.conn().await?;
                page(
                    c.client(),
                    &format!("SELECT {USER_COLS} FROM users WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3"),
                    &[text(&tenant_id)],
                    &p,
                    user_row,
                    |u| &u.id,
                )
                .await
            })
            .await
    }

    async fn set_user_role(&self, tenant_id: &str, id: &str, role: TenantRole, expect: Expect) -> StoreResult<User> {
        self.pool
            .write(true, async |tx| {
                let current = user_to_change(tx, tenant_id, id, &expect, role == TenantRole::Admin).await?;
                let u = User {
                    role,
                    version: current.version + 1,
                    updated_at: now_millis(),
                    ..current
                };
                tx.execute_typed(
                    "UPDATE users SET role = $1, version = $2, updated_at = $3 WHERE tenant_id = $4 AND id = $5",
                    &[
                        text(&u.role.as_str()),
                        int(&u.version),
                        int(&u.updated_at),
                        text(&tenant_id),
                        text(&id),
                    ],
                )
                .await?;
                Ok(u)
            })
            .await
    }

    async fn delete_user(&self, tenant_id: &str, id: &str, expect: Expect, retention: Duration) -> StoreResult<()> {
        self.pool
            .write(true, async |tx| {
                user_to_change(tx, tenant_id, id, &expect, false).await?;
                tx.execute_typed(
                    "DELETE FROM api_keys WHERE tenant_id = $1 AND user_id = $2",
                    &[text(&tenant_id), text(&id)],
                )
                .await?;
                tx.execute_typed(
                    "DELETE FROM users WHERE tenant_id = $1 AND id = $2",
                    &[text(&tenant_id), text(&id)],
                )
                .await?;
                put_tombstone(tx, kind::USER, tenant_id, id, retention).await?;
                Ok(())
            })
            .await
    }

    async fn create_api_key(
        &self,
        tenant_id: &str,
        user_id: &str,
        name: &str,
        token_hash: &str,
    ) -> StoreResult<ApiKey> {
        self.pool
            .write(true, async |tx| {
                live_tenant(tx, tenant_id).await?;
                // The user's row stays while the key is added: a deletion of
                // the user waits, then deletes the key with it.
                let exists = tx
                    .query_typed_opt(
                        "SELECT 1 FROM users WHERE tenant_id = $1 AND id = $2 FOR KEY SHARE",
                        &[text(&tenant_id), text(&user_id)],
                    )
                    .await?;
                if exists.is_none() {
                    return Err(StoreError::Vanished);
                }
                let now = now_millis();
                let k = ApiKey {
                    id: new_id(),
                    user_id: Some(user_id.to_owned()),
                    name: name.to_owned(),
                    version: 1,
                    created_at: now,
                    updated_at: now,
                };
                tx.execute_typed(
                    "INSERT INTO api_keys (tenant_id, id, user_id, name, token_hash, version, created_at, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    &[
                        text(&tenant_id),
                        text(&k.id),
                        text(&k.user_id),
                        text(&k.name),
                        text(&token_hash),
                        int(&k.version),
                        int(&k.created_at),
                        int(&k.updated_at),
                    ],
                )
                .await?;
                Ok(k)
            })
            .await
    }

    async fn api_key(&self, user_id: &str, id: &str) -> StoreResult<Lookup<ApiKey>> {
        self.pool
            .run(async {
                let c = self.pool.conn().await?;
                let tombstone = Tombstone::new(kind::API_KEY, user_id, id);
                lookup(
                    c.client(),
                    &format!(
                        "SELECT {KEY_COLS} FROM api_keys WHERE tenant_id = {TENANT_OF_USER} AND user_id = $1 AND id = $2"
                    ),
                    &[text(&user_id), text(&id)],
                    key_row,
                    tombstone,
                )
                .await
            })
            .await
    }

    async fn list_api_keys(&self, user_id: &str, p: PageRequest) -> StoreResult<Page<ApiKey>> {
        self.pool
            .run(async {
                let c = self.pool.conn().await?;
                page(
                    c.client(),
                    &format!(
                        "SELECT {KEY_COLS} FROM api_keys WHERE tenant_id = {TENANT_OF_USER} AND user_id = $1
                         AND id > $2 ORDER BY id LIMIT $3"
                    ),
                    &[text(&user_id)],
                    &p,
                    key_row,
                    |k| &k.id,
                )
                .await
            })
            .await
    }

    async fn revoke_api_key(&self, user_id: &str, id: &str, expect: Expect, retention: Duration) -> StoreResult<()> {
        self.pool
            .write(true, async |tx| {
                    let row = tx
                        .query_typed_opt(
                            &format!(
                                "SELECT version FROM api_keys WHERE tenant_id = {TENANT_OF_USER} AND user_id = $1 AND id = $2
                                 FOR UPDATE"
                            ),
                            &[text(&user_id), text(&id)],
                        )
                        .await?;
                    let Some(row) = row else {
                        return Err(not_there(tx, kind::API_KEY, user_id, id).await);
                    };
                    check_existing(&expect, row.try_get(0)?, None)?;
                    tx.execute_typed(
                        &format!("DELETE FROM api_keys WHERE tenant_id = {TENANT_OF_USER} AND user_id = $1 AND id = $2"),
                        &[text(&user_id), text(&id)],
                    )
                    .await?;
                    put_tombstone(tx, kind::API_KEY, user_id, id, retention).await?;
                    Ok(())
})
            .await
    }

    async fn delete_tenant(&self, name: &str, expect: Expect, retention: Duration, now: Millis) -> StoreResult<Job> {
        self.pool
            .write(true, async |tx| {
                lock_name(tx, name).await?;
                let Some((tenant, deleted_at)) = lock_tenant(tx, name).await? else {
                    return Err(not_there(tx, kind::TENANT, "", name).await);
                };
                match deleted_at {
                    None => check_existing(&expect, tenant.version, None)?,
                    // Deleted already: only a deletion that stopped starts again.
                    Some(_) => {
                        if !load_deletion(tx, name).await?.is_some_and(|d| d.stopped()) {
                            return Err(StoreError::Gone);
                        }
                    }
                }
                let job = insert_job(
                    tx,
                    &NewJob {
                        tenant_id: tenant.id.clone(),
                        kind: JobKind::DeleteTenant,
                        params: serde_json::json!({"tenant": tenant.name, "tenant_id": tenant.id}),
                        total: None,
                        with_input: false,
                    },
                    now,
                )
                .await?;
                tx.execute_typed(
                    "UPDATE tenants SET deleted_at = COALESCE(deleted_at, $1), deletion_job = $2,
                           version = version + 1, updated_at = $1
                         WHERE id = $3",
                    &[int(&now), text(&job.id), text(&tenant.id)],
                )
                .await?;
                put_tombstone(tx, kind::TENANT, "", &tenant.name, retention).await?;
                Ok(job)
            })
            .await
    }

    async fn tenant_deletion(&self, name: &str) -> StoreResult<Option<TenantDeletion>> {
        self.pool
            .run(async {
                let c = self.pool.conn().await?;
                load_deletion(c.client(), name).await
            })
            .await
    }

    async fn delete_tenant_step(
        &self,
        tenant_id: &str,
        job_id: &str,
        owner: &str,
        idempotency_scope: &str,
        limit: usize,
        now: Millis,
    ) -> StoreResult<TenantDeletionStep> {
        let deletion = tenant_deletion::Deletion {
            tenant_id: tenant_id.to_owned(),
            job_id: job_id.to_owned(),
            owner: owner.to_owned(),
            idempotency_scope: idempotency_scope.to_owned(),
            now,
        };
        self.pool
            .write(true, async |tx| {
                let step = deletion.step(tx, limit).await?;
                Ok(step)
            })
            .await
    }
}
