//! A tenant's devices ([`DeviceStore`]).

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::SqliteStore;
use super::rows::*;
use crate::device::*;
use crate::model::*;
use crate::{StoreError, StoreResult};

const DEVICE_COLS: &str = "id, tenant_id, name, endpoint, timeout_ms, headers, version, created_at, updated_at, \
     tls_ca_certificate, tls_certificate_sha256";

fn device_row(r: &Row<'_>) -> rusqlite::Result<Device> {
    let headers = json_column(r, 5)?;
    Ok(Device {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        name: r.get(2)?,
        endpoint: r.get(3)?,
        timeout_ms: r.get(4)?,
        headers: headers_from(&headers),
        tls: DeviceTls {
            ca_certificate: r.get(9)?,
            certificate_sha256: r.get(10)?,
        },
        version: r.get(6)?,
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
    })
}

fn load_device(conn: &Connection, tenant_id: &str, name: &str) -> StoreResult<Option<Device>> {
    conn.prepare_cached(&format!(
        "SELECT {DEVICE_COLS} FROM devices WHERE tenant_id = ?1 AND name = ?2"
    ))
    .and_then(|mut s| s.query_row([tenant_id, name], device_row).optional())
    .map_err(db_error)
}

/// The live device called `name`, checked against `expect`, or why not.
fn existing(conn: &Connection, tenant_id: &str, name: &str, expect: &Expect) -> StoreResult<Device> {
    let Some(current) = load_device(conn, tenant_id, name)? else {
        return Err(not_there(conn, kind::DEVICE, tenant_id, name));
    };
    check_existing(expect, current.version, None)?;
    Ok(current)
}

#[async_trait]
impl DeviceStore for SqliteStore {
    async fn create_device(&self, tenant_id: &str, new: NewDevice) -> StoreResult<Device> {
        let tenant_id = tenant_id.to_owned();
        self.engine
            .write(move |c| {
                live_tenant(c, &tenant_id)?;
                let now = now_millis();
                let device = Device {
                    id: new_id(),
                    tenant_id,
                    name: new.name,
                    endpoint: new.endpoint,
                    timeout_ms: new.timeout_ms,
                    headers: new.headers,
                    tls: new.tls,
                    version: 1,
                    created_at: now,
                    updated_at: now,
                };
                c.execute(
                    &format!(
                        "INSERT INTO devices ({DEVICE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
                    ),
                    params![
                        device.id,
                        device.tenant_id,
                        device.name,
                        device.endpoint,
                        device.timeout_ms,
                        headers_text(&device.headers),
                        device.version,
                        device.created_at,
                        device.updated_at,
                        device.tls.ca_certificate,
                        device.tls.certificate_sha256
                    ],
                )
                .map_err(|e| conflict_or_internal(e, "/name"))?;
                clear_tombstone(c, kind::DEVICE, &device.tenant_id, &device.name).map_err(db_error)?;
                Ok(device)
            })
            .await
    }

    async fn device(&self, tenant_id: &str, name: &str) -> StoreResult<Lookup<Device>> {
        self.engine
            .read_point(|c| {
                let tombstone = Tombstone::new(kind::DEVICE, tenant_id, name);
                lookup(
                    c,
                    &format!("SELECT {DEVICE_COLS} FROM devices WHERE tenant_id = ?1 AND name = ?2"),
                    params![tenant_id, name],
                    device_row,
                    tombstone,
                )
            })
            .await
    }

    async fn list_devices(&self, tenant_id: &str, p: PageRequest) -> StoreResult<Page<Device>> {
        let tenant_id = tenant_id.to_owned();
        self.engine
            .read(move |c| {
                page(
                    c,
                    &format!("SELECT {DEVICE_COLS} FROM devices WHERE tenant_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3"),
                    Some(&tenant_id),
                    &p,
                    device_row,
                    |d| &d.id,
                )
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
        let (tenant_id, name) = (tenant_id.to_owned(), name.to_owned());
        self.engine
            .write(move |c| {
                let mut next = existing(c, &tenant_id, &name, &expect)?;
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
                c.execute(
                    "UPDATE devices SET endpoint = ?1, timeout_ms = ?2, headers = ?3, version = ?4, updated_at = ?5,
                         tls_ca_certificate = ?7, tls_certificate_sha256 = ?8
                     WHERE id = ?6",
                    params![
                        next.endpoint,
                        next.timeout_ms,
                        headers_text(&next.headers),
                        next.version,
                        next.updated_at,
                        next.id,
                        next.tls.ca_certificate,
                        next.tls.certificate_sha256
                    ],
                )
                .map_err(db_error)?;
                Ok(next)
            })
            .await
    }

    async fn delete_device(&self, tenant_id: &str, name: &str, expect: Expect, retention: Duration) -> StoreResult<()> {
        let (tenant_id, name) = (tenant_id.to_owned(), name.to_owned());
        self.engine
            .write(move |c| {
                let current = existing(c, &tenant_id, &name, &expect)?;
                let gone = c
                    .execute("DELETE FROM devices WHERE id = ?1", [&current.id])
                    .map_err(db_error)?;
                if gone != 1 {
                    return Err(StoreError::Vanished);
                }
                put_tombstone(c, kind::DEVICE, &tenant_id, &name, retention).map_err(db_error)?;
                Ok(())
            })
            .await
    }
}
