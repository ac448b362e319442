//! Tenants, users, API keys and authentication ([`TenantStore`]).

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use super::rows::*;
use crate::model::*;
use crate::prelude::*;
use crate::{StoreError, StoreResult};

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
        let hash = token_hash.to_owned();
        self.engine
            .read(move |c| {
                c.prepare_cached(
                    "SELECT k.id, k.token_hash, t.name, u.id, u.role FROM api_keys k
                     LEFT JOIN users u ON u.id = k.user_id
                     LEFT JOIN tenants t ON t.id = k.tenant_id
                     WHERE k.token_hash = ?1",
                )
                .and_then(|mut s| {
                    s.query_row([hash], |r| {
                        let key_id: String = r.get(0)?;
                        let token_hash: String = r.get(1)?;
                        let tenant: Option<String> = r.get(2)?;
                        Ok(match tenant {
                            None => KeyOwner::Operator { key_id, token_hash },
                            Some(tenant) => KeyOwner::Member {
                                key_id,
                                token_hash,
                                tenant,
                                user_id: r.get(3)?,
                                role: role_from_sql(r.get(4)?)?,
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
                let now = now_millis();
                let t = Tenant {
                    id: new_id(),
                    name,
                    version: 1,
                    created_at: now,
                    updated_at: now,
                };
                c.execute(
                    &format!("INSERT INTO tenants ({TENANT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
                    params![t.id, t.name, t.version, t.created_at, t.updated_at],
                )
                .map_err(|e| conflict_or_internal(e, "/name"))?;
                Ok(t)
            })
            .await
    }

    async fn tenant(&self, name: &str) -> StoreResult<Lookup<Tenant>> {
        let name = name.to_owned();
        self.engine
            .read(move |c| {
                let t = c
                    .prepare_cached(&format!("SELECT {TENANT_COLS} FROM tenants WHERE name = ?1"))
                    .and_then(|mut s| s.query_row([&name], tenant_row).optional())
                    .map_err(db_error)?;
                Ok(t.map_or(Lookup::Missing, Lookup::Found))
            })
            .await
    }

    async fn list_tenants(&self, p: PageRequest) -> StoreResult<Page<Tenant>> {
        self.engine
            .read(move |c| {
                page(
                    c,
                    &format!("SELECT {TENANT_COLS} FROM tenants WHERE id > ?1 ORDER BY id LIMIT ?2"),
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
                let u = load_user(c, &tenant_id, &id)?;
                found_or_tombstone(c, u, kind::USER, &tenant_id, &id)
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
                let k = c
                    .prepare_cached(&format!(
                        "SELECT {KEY_COLS} FROM api_keys WHERE user_id = ?1 AND id = ?2"
                    ))
                    .and_then(|mut s| s.query_row([&user_id, &id], key_row).optional())
                    .map_err(db_error)?;
                found_or_tombstone(c, k, kind::API_KEY, &user_id, &id)
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
}
