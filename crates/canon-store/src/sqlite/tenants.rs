//! Tenants, users, API keys and authentication ([`TenantStore`]).

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use super::jobs::insert_job;
use super::rows::*;
use super::tenant_deletion;
use crate::model::*;
use crate::prelude::*;
use crate::{StoreError, StoreResult};

/// The tenant called `name` and, once its deletion started, when it did.
fn load_tenant(conn: &Connection, name: &str) -> StoreResult<Option<(Tenant, Option<Millis>)>> {
    conn.prepare_cached(&format!(
        "SELECT {TENANT_COLS}, deleted_at FROM tenants WHERE name = ?1"
    ))
    .and_then(|mut s| s.query_row([name], |r| Ok((tenant_row(r)?, r.get(8)?))).optional())
    .map_err(db_error)
}

/// The deletion of the tenant called `name`, while its row holds the name.
fn load_deletion(conn: &Connection, name: &str) -> StoreResult<Option<TenantDeletion>> {
    conn.prepare_cached(
        "SELECT t.id, t.name, t.deletion_job, j.status, t.deleted_at, t.emptied_at FROM tenants t
         LEFT JOIN jobs j ON j.tenant_id = t.id AND j.id = t.deletion_job
         WHERE t.name = ?1 AND t.deleted_at IS NOT NULL",
    )
    .and_then(|mut s| {
        s.query_row([name], |r| {
            let status: Option<String> = r.get(3)?;
            Ok(TenantDeletion {
                tenant_id: r.get(0)?,
                name: r.get(1)?,
                job_id: r.get(2)?,
                job_status: status.as_deref().and_then(JobStatus::parse),
                deleted_at: r.get(4)?,
                emptied_at: r.get(5)?,
            })
        })
        .optional()
    })
    .map_err(db_error)
}

pub(super) fn load_user(conn: &Connection, tenant_id: &str, id: &str) -> StoreResult<Option<User>> {
    conn.prepare_cached(&format!(
        "SELECT {USER_COLS} FROM users WHERE tenant_id = ?1 AND id = ?2"
    ))
    .and_then(|mut s| s.query_row([tenant_id, id], user_row).optional())
    .map_err(db_error)
}

/// Loads the user a change addresses and checks `expect` against it; a
/// change that takes the admin role from the tenant's last admin (`stays_admin`
/// false) is [`StoreError::LastAdmin`].
pub(super) fn user_to_change(
    conn: &Connection,
    tenant_id: &str,
    id: &str,
    expect: &Expect,
    stays_admin: bool,
) -> StoreResult<User> {
    let Some(user) = load_user(conn, tenant_id, id)? else {
        return Err(not_there(conn, kind::USER, tenant_id, id));
    };
    check_existing(expect, user.version, None)?;
    if user.role == TenantRole::Admin && !stays_admin {
        let others: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM users WHERE tenant_id = ?1 AND role = 'admin' AND id <> ?2",
                [tenant_id, id],
                |r| r.get(0),
            )
            .map_err(db_error)?;
        if others == 0 {
            return Err(StoreError::LastAdmin);
        }
    }
    Ok(user)
}

#[async_trait]
impl TenantStore for SqliteStore {
    async fn bootstrap_operator(&self, token_hash: &str) -> StoreResult<bool> {
        let hash = token_hash.to_owned();
        self.engine
            .write(move |c| {
                let exists: Option<i64> = c
                    .query_row("SELECT 1 FROM api_keys WHERE tenant_id IS NULL LIMIT 1", [], |r| r.get(0))
                    .optional()
                    .map_err(db_error)?;
                if exists.is_some() {
                    return Ok(false);
                }
                c.execute(
                    "INSERT INTO api_keys (id, tenant_id, user_id, name, token_hash, created_at) VALUES (?1, NULL, NULL, 'operator', ?2, ?3)",
                    params![new_id(), hash, now_millis()],
                )
                .map_err(db_error)?;
                Ok(true)
            })
            .await
    }

    async fn key_owner(&self, token_hash: &str) -> StoreResult<Option<KeyOwner>> {
        let hash = token_hash;
        self.engine
            .read_point(|c| {
                // Only the operator's key has no tenant. A member's key counts
                // only while its tenant is live: a deleted tenant's keys stop
                // authenticating the moment its deletion starts.
                c.prepare_cached(
                    "SELECT k.id, k.token_hash, k.tenant_id, t.name, u.id, u.role,
                            t.rate_limit_per_second, t.burst, t.daily_quota, t.version FROM api_keys k
                     LEFT JOIN users u ON u.id = k.user_id
                     LEFT JOIN tenants t ON t.id = k.tenant_id
                     WHERE k.token_hash = ?1
                       AND (k.tenant_id IS NULL OR (t.id IS NOT NULL AND t.deleted_at IS NULL))",
                )
                .and_then(|mut s| {
                    s.query_row([hash], |r| {
                        let key_id: String = r.get(0)?;
                        let token_hash: String = r.get(1)?;
                        let tenant_id: Option<String> = r.get(2)?;
                        Ok(match tenant_id {
                            None => KeyOwner::Operator {
                                key_id: key_id.into(),
                                token_hash,
                            },
                            Some(tenant_id) => KeyOwner::Member {
                                key_id: key_id.into(),
                                token_hash,
                                tenant: r.get::<_, String>(3)?.into(),
                                user_id: r.get::<_, String>(4)?.into(),
                                role: role_from_sql(r.get(5)?)?,
                                tenant_id: tenant_id.into(),
                                limits: TenantLimits {
                                    rate_limit_per_second: r.get(6)?,
                                    burst: r.get(7)?,
                                    daily_quota: r.get(8)?,
                                },
                                tenant_version: r.get(9)?,
                            },
                        })
                    })
                    .optional()
                })
                .map_err(db_error)
            })
            .await
    }

    async fn create_tenant(&self, name: &str) -> StoreResult<Tenant> {
        let name = name.to_owned();
        self.engine
            .write(move |c| {
                if load_deletion(c, &name)?.is_some() {
                    return Err(StoreError::HeldByDeletion {
                        pointer: "/name".into(),
                    });
                }
                let now = now_millis();
                let t = Tenant {
                    id: new_id(),
                    name,
                    version: 1,
                    created_at: now,
                    updated_at: now,
                    limits: TenantLimits::default(),
                };
                c.execute(
                    "INSERT INTO tenants (id, name, version, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![t.id, t.name, t.version, t.created_at, t.updated_at],
                )
                .map_err(|e| conflict_or_internal(e, "/name"))?;
                // A name whose deleted tenant was purged is free again.
                clear_tombstone(c, kind::TENANT, "", &t.name).map_err(db_error)?;
                Ok(t)
            })
            .await
    }

    async fn set_tenant_limits(&self, name: &str, limits: TenantLimits, expect: Expect) -> StoreResult<Tenant> {
        let name = name.to_owned();
        self.engine
            .write(move |c| {
                let t = match load_tenant(c, &name)? {
                    Some((t, None)) => t,
                    Some((_, Some(_))) => return Err(StoreError::Gone),
                    // A name released since its deletion: its tombstone answers.
                    None => return Err(not_there(c, kind::TENANT, "", &name)),
                };
                check_existing(&expect, t.version, None)?;
                let t = Tenant {
                    version: t.version + 1,
                    updated_at: now_millis().max(t.updated_at),
                    limits,
                    ..t
                };
                c.execute(
                    "UPDATE tenants SET version = ?2, updated_at = ?3, rate_limit_per_second = ?4, burst = ?5,
                            daily_quota = ?6 WHERE id = ?1",
                    params![
                        t.id,
                        t.version,
                        t.updated_at,
                        t.limits.rate_limit_per_second,
                        t.limits.burst,
                        t.limits.daily_quota
                    ],
                )
                .map_err(db_error)?;
                Ok(t)
            })
            .await
    }

    async fn tenant(&self, name: &str) -> StoreResult<Lookup<Tenant>> {
        self.engine
            .read_point(|c| {
                let tombstone = Tombstone::new(kind::TENANT, "", name);
                let found = lookup(
                    c,
                    &format!("SELECT {TENANT_COLS}, deleted_at FROM tenants WHERE name = ?1"),
                    params![name],
                    |r| Ok((tenant_row(r)?, r.get::<_, Option<Millis>>(8)?)),
                    tombstone,
                )?;
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
        self.engine
            .read(move |c| {
                page(
                    c,
                    &format!(
                        "SELECT {TENANT_COLS} FROM tenants WHERE deleted_at IS NULL AND id > ?1 ORDER BY id LIMIT ?2"
                    ),
                    None,
                    &p,
                    tenant_row,
                    |t| &t.id,
                )
            })
            .await
    }

    async fn create_user(&self, tenant_id: &str, email: &str, role: TenantRole) -> StoreResult<User> {
        let (tenant_id, email) = (tenant_id.to_owned(), email.to_owned());
        self.engine
            .write(move |c| {
                live_tenant(c, &tenant_id)?;
                let now = now_millis();
                let u = User {
                    id: new_id(),
                    tenant_id,
                    email,
                    role,
                    version: 1,
                    created_at: now,
                    updated_at: now,
                };
                c.execute(
                    &format!("INSERT INTO users ({USER_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                    params![
                        u.id,
                        u.tenant_id,
                        u.email,
                        u.role.as_str(),
                        u.version,
                        u.created_at,
                        u.updated_at
                    ],
                )
                .map_err(|e| conflict_or_internal(e, "/email"))?;
                Ok(u)
            })
            .await
    }

    async fn user(&self, tenant_id: &str, id: &str) -> StoreResult<Lookup<User>> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.to_owned());
        self.engine
            .read(move |c| {
                let tombstone = Tombstone::new(kind::USER, &tenant_id, &id);
                lookup(
                    c,
                    &format!("SELECT {USER_COLS} FROM users WHERE tenant_id = ?1 AND id = ?2"),
                    params![tenant_id, id],
                    user_row,
                    tombstone,
                )
            })
            .await
    }

    async fn list_users(&self, tenant_id: &str, p: PageRequest) -> StoreResult<Page<User>> {
        let tenant_id = tenant_id.to_owned();
        self.engine
            .read(move |c| {
                page(
                    c,
                    &format!("SELECT {USER_COLS} FROM users WHERE tenant_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3"),
                    Some(&tenant_id),
                    &p,
                    user_row,
                    |u| &u.id,
                )
            })
            .await
    }

    async fn set_user_role(&self, tenant_id: &str, id: &str, role: TenantRole, expect: Expect) -> StoreResult<User> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.to_owned());
        self.engine
            .write(move |c| {
                let current = user_to_change(c, &tenant_id, &id, &expect, role == TenantRole::Admin)?;
                let u = User {
                    role,
                    version: current.version + 1,
                    updated_at: now_millis(),
                    ..current
                };
                c.execute(
                    "UPDATE users SET role = ?1, version = ?2, updated_at = ?3 WHERE tenant_id = ?4 AND id = ?5",
                    params![u.role.as_str(), u.version, u.updated_at, tenant_id, id],
                )
                .map_err(db_error)?;
                Ok(u)
            })
            .await
    }

    async fn delete_user(&self, tenant_id: &str, id: &str, expect: Expect, retention: Duration) -> StoreResult<()> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.to_owned());
        self.engine
            .write(move |c| {
                user_to_change(c, &tenant_id, &id, &expect, false)?;
                c.execute("DELETE FROM api_keys WHERE user_id = ?1", [&id])
                    .map_err(db_error)?;
                c.execute("DELETE FROM users WHERE tenant_id = ?1 AND id = ?2", [&tenant_id, &id])
                    .map_err(db_error)?;
                put_tombstone(c, kind::USER, &tenant_id, &id, retention).map_err(db_error)?;
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
        let (tenant_id, user_id, name, hash) = (
            tenant_id.to_owned(),
            user_id.to_owned(),
            name.to_owned(),
            token_hash.to_owned(),
        );
        self.engine
            .write(move |c| {
                live_tenant(c, &tenant_id)?;
                let exists: Option<i64> = c
                    .query_row(
                        "SELECT 1 FROM users WHERE tenant_id = ?1 AND id = ?2",
                        [&tenant_id, &user_id],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(db_error)?;
                if exists.is_none() {
                    return Err(StoreError::Vanished);
                }
                let now = now_millis();
                let k = ApiKey {
                    id: new_id(),
                    user_id: Some(user_id),
                    name,
                    version: 1,
                    created_at: now,
                    updated_at: now,
                };
                c.execute(
                    "INSERT INTO api_keys (id, tenant_id, user_id, name, token_hash, version, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        k.id,
                        tenant_id,
                        k.user_id,
                        k.name,
                        hash,
                        k.version,
                        k.created_at,
                        k.updated_at
                    ],
                )
                .map_err(db_error)?;
                Ok(k)
            })
            .await
    }

    async fn api_key(&self, user_id: &str, id: &str) -> StoreResult<Lookup<ApiKey>> {
        let (user_id, id) = (user_id.to_owned(), id.to_owned());
        self.engine
            .read(move |c| {
                let tombstone = Tombstone::new(kind::API_KEY, &user_id, &id);
                lookup(
                    c,
                    &format!("SELECT {KEY_COLS} FROM api_keys WHERE user_id = ?1 AND id = ?2"),
                    params![user_id, id],
                    key_row,
                    tombstone,
                )
            })
            .await
    }

    async fn list_api_keys(&self, user_id: &str, p: PageRequest) -> StoreResult<Page<ApiKey>> {
        let user_id = user_id.to_owned();
        self.engine
            .read(move |c| {
                page(
                    c,
                    &format!("SELECT {KEY_COLS} FROM api_keys WHERE user_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3"),
                    Some(&user_id),
                    &p,
                    key_row,
                    |k| &k.id,
                )
            })
            .await
    }

    async fn revoke_api_key(&self, user_id: &str, id: &str, expect: Expect, retention: Duration) -> StoreResult<()> {
        let (user_id, id) = (user_id.to_owned(), id.to_owned());
        self.engine
            .write(move |c| {
                let version: Option<i64> = c
                    .query_row(
                        "SELECT version FROM api_keys WHERE user_id = ?1 AND id = ?2",
                        [&user_id, &id],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(db_error)?;
                let Some(version) = version else {
                    return Err(not_there(c, kind::API_KEY, &user_id, &id));
                };
                check_existing(&expect, version, None)?;
                c.execute("DELETE FROM api_keys WHERE user_id = ?1 AND id = ?2", [&user_id, &id])
                    .map_err(db_error)?;
                put_tombstone(c, kind::API_KEY, &user_id, &id, retention).map_err(db_error)?;
                Ok(())
            })
            .await
    }

    async fn delete_tenant(&self, name: &str, expect: Expect, retention: Duration, now: Millis) -> StoreResult<Job> {
        let name = name.to_owned();
        self.engine
            .write(move |c| {
                let Some((tenant, deleted_at)) = load_tenant(c, &name)? else {
                    return Err(not_there(c, kind::TENANT, "", &name));
                };
                match deleted_at {
                    None => check_existing(&expect, tenant.version, None)?,
                    // Deleted already: only a deletion that stopped starts again.
                    Some(_) => {
                        if !load_deletion(c, &name)?.is_some_and(|d| d.stopped()) {
                            return Err(StoreError::Gone);
                        }
                    }
                }
                let job = insert_job(
                    c,
                    &NewJob {
                        tenant_id: tenant.id.clone(),
                        kind: JobKind::DeleteTenant,
                        params: serde_json::json!({"tenant": tenant.name, "tenant_id": tenant.id}),
                        total: None,
                        with_input: false,
                    },
                    now,
                )?;
                c.execute(
                    "UPDATE tenants SET deleted_at = COALESCE(deleted_at, ?1), deletion_job = ?2,
                       version = version + 1, updated_at = ?1
                     WHERE id = ?3",
                    params![now, job.id, tenant.id],
                )
                .map_err(db_error)?;
                put_tombstone(c, kind::TENANT, "", &tenant.name, retention).map_err(db_error)?;
                Ok(job)
            })
            .await
    }

    async fn tenant_deletion(&self, name: &str) -> StoreResult<Option<TenantDeletion>> {
        let name = name.to_owned();
        self.engine.read(move |c| load_deletion(c, &name)).await
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
        self.engine.write(move |c| deletion.step(c, limit)).await
    }
}
