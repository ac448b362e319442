//! A tenant's devices ([`DeviceStore`]), as `sqlite/devices.rs` keeps them.

use std::time::Duration;

use async_trait::async_trait;
use tokio_postgres::Row;

use super::PostgresStore;
use super::rows::*;
use crate::device::*;
use crate::model::*;
use crate::{StoreError, StoreResult};

const DEVICE_COLS: &str = "id, tenant_id, name, endpoint, timeout_ms, headers, version, created_at, updated_at, \
     tls_ca_certificate, tls_certificate_sha256";

fn device_row(r: &Row) -> StoreResult<Device> {
    let headers = json_text(r, 5)?;
    Ok(Device {
        id: r.try_get(0)?,
        tenant_id: r.try_get(1)?,
        name: r.try_get(2)?,
        endpoint: r.try_get(3)?,
        timeout_ms: to_u32(Some(r.try_get(4)?)).unwrap_or_default(),
        headers: headers_from(&headers),
        tls: DeviceTls {
            ca_certificate: r.try_get(9)?,
            certificate_sha256: r.try_get(10)?,
        },
        version: r.try_get(6)?,
        created_at: r.try_get(7)?,
        updated_at: r.try_get(8)?,
    })
}

/// The tenant's device called `name`, its row locked for the rest of the
/// transaction.
async fn lock_device(c: &impl Db, tenant_id: &str, name: &str) -> StoreResult<Option<Device>> {
    let sql = format!("SELECT {DEVICE_COLS} FROM devices WHERE tenant_id = $1 AND name = $2 FOR UPDATE");
    let row = c.query_typed_opt(&sql, &[text(&tenant_id), text(&name)]).await?;
    row.map(|r| device_row(&r)).transpose()
}

/// Holds the lock on the tenant's device name `name` until the transaction
/// ends. Every write of a device name takes it: its creation, update and
/// deletion. A write that misses the device reads its tombstone in a second
/// statement (after waiting on a concurrent deletion's row lock it must see
/// that deletion's tombstone); holding this lock, no re-create commits
/// between the two, which would make a device that is there answer
/// `Vanished`.
///
/// Lock order: the tenant's row (`FOR SHARE`, creations only) before this
/// lock, this lock before the device's row.
async fn lock_name(c: &impl Db, tenant_id: &str, name: &str) -> StoreResult<()> {
    lock(c, &format!("device/{tenant_id}/{name}")).await
}

/// The live device called `name`, its name and row locked and checked
/// against `expect`, or why not.
async fn existing(c: &impl Db, tenant_id: &str, name: &str, expect: &Expect) -> StoreResult<Device> {
    lock_name(c, tenant_id, name).await?;
    let Some(current) = lock_device(c, tenant_id, name).await? else {
        return Err(not_there(c, kind::DEVICE, tenant_id, name).await);
    };
    check_existing(expect, current.version, None)?;
    Ok(current)
}

#[async_trait]
impl DeviceStore for PostgresStore {
    async fn create_device(&self, tenant_id: &str, new: NewDevice) -> StoreResult<Device> {
        self.pool
            .write(true, async |tx| {
                live_tenant(tx, tenant_id).await?;
                lock_name(tx, tenant_id, &new.name).await?;
                let now = now_millis();
                let device = Device {
                    id: new_id(),
                    tenant_id: tenant_id.to_owned(),
                    name: new.name,
                    endpoint: new.endpoint,
                    timeout_ms: new.timeout_ms,
                    headers: new.headers,
                    tls: new.tls,
                    version: 1,
                    created_at: now,
                    updated_at: now,
                };
                let (timeout, headers) = (i64::from(device.timeout_ms), headers_text(&device.headers));
                let inserted = tx
                    .execute_typed(
                        &format!(
                            "INSERT INTO devices ({DEVICE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                                 ON CONFLICT DO NOTHING"
                        ),
                        &[
                            text(&device.id),
                            text(&device.tenant_id),
                            text(&device.name),
                            text(&device.endpoint),
                            int(&timeout),
                            text(&headers),
                            int(&device.version),
                            int(&device.created_at),
                            int(&device.updated_at),
                            text(&device.tls.ca_certificate),
                            text(&device.tls.certificate_sha256),
                        ],
                    )
                    .await?;
                if inserted == 0 {
                    return Err(StoreError::Conflict {
                        pointer: "/name".into(),
                    });
                }
                clear_tombstone(tx, kind::DEVICE, &device.tenant_id, &device.name).await?;
                Ok(device)
            })
            .await
    }

    async fn device(&self, tenant_id: &str, name: &str) -> StoreResult<Lookup<Device>> {
        self.pool
            .run(async {
                let c = self.pool.conn().await?;
                let tombstone = Tombstone::new(kind::DEVICE, tenant_id, name);
                lookup(
                    c.client(),
                    &format!("SELECT {DEVICE_COLS} FROM devices WHERE tenant_id = $1 AND name = $2"),
                    &[text(&tenant_id), text(&name)],
                    device_row,
                    tombstone,
                )
                .await
            })
            .await
    }

    async fn list_devices(&self, tenant_id: &str, p: PageRequest) -> StoreResult<Page<Device>> {
        self.pool
            .run(async {
                let c = self.pool.conn().await?;
                page(
                    c.client(),
                    &format!("SELECT {DEVICE_COLS} FROM devices WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3"),
                    &[text(&tenant_id)],
                    &p,
                    device_row,
                    |d| &d.id,
                )
                .await
            })
            .await
    }

    async fn update_device(
        &self,
        tenant_id: &str,
        name: &str,
        changes: DeviceChanges,
        expect: Expect,
    ) -> StoreResult<Device> {
        self.pool
            .write(true, async |tx| {
                let mut next = existing(tx, tenant_id, name, &expect).await?;
                if let Some(endpoint) = changes.endpoint {
                    next.endpoint = endpoint;
                }
                if let Some(timeout_ms) = changes.timeout_ms {
                    next.timeout_ms = timeout_ms;
                }
                if let Some(headers) = changes.headers {
                    next.headers = headers;
                }
                if let Some(tls) = changes.tls {
                    next.tls = tls;
                }
                next.version += 1;
                next.updated_at = now_millis().max(next.updated_at);
                let (timeout, headers) = (i64::from(next.timeout_ms), headers_text(&next.headers));
                tx.execute_typed(
                    "UPDATE devices SET endpoint = $1, timeout_ms = $2, headers = $3, version = $4, updated_at = $5,
                         tls_ca_certificate = $8, tls_certificate_sha256 = $9
                         WHERE tenant_id = $6 AND id = $7",
                    &[
                        text(&next.endpoint),
                        int(&timeout),
                        text(&headers),
                        int(&next.version),
                        int(&next.updated_at),
                        text(&next.tenant_id),
                        text(&next.id),
                        text(&next.tls.ca_certificate),
                        text(&next.tls.certificate_sha256),
                    ],
                )
                .await?;
                Ok(next)
            })
            .await
    }

    async fn delete_device(&self, tenant_id: &str, name: &str, expect: Expect, retention: Duration) -> StoreResult<()> {
        self.pool
            .write(true, async |tx| {
                let current = existing(tx, tenant_id, name, &expect).await?;
                let gone = tx
                    .execute_typed(
                        "DELETE FROM devices WHERE tenant_id = $1 AND id = $2",
                        &[text(&tenant_id), text(&current.id)],
                    )
                    .await?;
                if gone != 1 {
                    return Err(StoreError::Vanished);
                }
                put_tombstone(tx, kind::DEVICE, tenant_id, name, retention).await?;
                Ok(())
            })
            .await
    }
}
