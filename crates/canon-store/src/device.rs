//! Devices: appliances a tenant reaches through Canon's gateway (schema v11;
//! docs/devices.md).
//!
//! The store keeps what it is given. A device's header values arrive sealed
//! (encrypted by the server with `CANON_SECRET_KEY`): the store never sees
//! them in clear, never interprets them, and hands them back as they were.
//! Checks of the endpoint (scheme, address policy) and of the timeout are the
//! server's; the store enforces only the unique name per tenant.

use std::time::Duration;

use async_trait::async_trait;

use crate::StoreResult;
use crate::model::{Expect, Lookup, Millis, Page, PageRequest};

/// One static header the gateway adds to every request it forwards to a
/// device (the device's own credentials, typically).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceHeader {
    /// The header's name, lower case.
    pub name: String,
    /// Its value, sealed by the server: opaque text to the store.
    pub sealed: String,
}

/// `headers` as both backends keep them: a JSON array of `{"name", "sealed"}`.
pub(crate) fn headers_text(headers: &[DeviceHeader]) -> String {
    serde_json::Value::Array(
        headers
            .iter()
            .map(|h| serde_json::json!({"name": h.name, "sealed": h.sealed}))
            .collect(),
    )
    .to_string()
}

/// The headers [`headers_text`] wrote, read back.
pub(crate) fn headers_from(kept: &serde_json::Value) -> Vec<DeviceHeader> {
    let field = |h: &serde_json::Value, k: &str| {
        h.get(k)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    kept.as_array()
        .map(|a| {
            a.iter()
                .map(|h| DeviceHeader {
                    name: field(h, "name"),
                    sealed: field(h, "sealed"),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// How the gateway trusts a device's TLS certificate (`https` endpoints;
/// docs/devices.md). Both `None`: the system's roots. The server checks both
/// fields before they reach the store (PEM that parses, 64 hex digits);
/// neither is a secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct DeviceTls {
    /// A PEM bundle of the CAs the device's certificate must chain to,
    /// instead of the system's roots.
    pub ca_certificate: Option<String>,
    /// The SHA-256 digest of the device's own certificate (DER), 64
    /// lower-case hex digits: the certificate it must present.
    pub certificate_sha256: Option<String>,
}

/// A device of a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Id (UUIDv7).
    pub id: String,
    /// Owning tenant's id.
    pub tenant_id: String,
    /// Slug, unique in the tenant: the device's path segment.
    pub name: String,
    /// The base URL requests are forwarded to (`http` or `https`).
    pub endpoint: String,
    /// How long the gateway waits for the device's response headers.
    pub timeout_ms: u32,
    /// Headers added to every forwarded request, in the order given.
    pub headers: Vec<DeviceHeader>,
    /// How its TLS certificate is trusted.
    pub tls: DeviceTls,
    /// 1 at creation, +1 on every change.
    pub version: i64,
    /// Creation time.
    pub created_at: Millis,
    /// Last change.
    pub updated_at: Millis,
}

/// What a new device is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDevice {
    /// Slug.
    pub name: String,
    /// Base URL.
    pub endpoint: String,
    /// Response-header timeout.
    pub timeout_ms: u32,
    /// Sealed static headers.
    pub headers: Vec<DeviceHeader>,
    /// How its TLS certificate is trusted.
    pub tls: DeviceTls,
}

/// Changes to a device; `None` leaves a setting as it is. The name is not
/// among them: a device is addressed by it, and renames are not offered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceChanges {
    /// A new base URL.
    pub endpoint: Option<String>,
    /// A new timeout.
    pub timeout_ms: Option<u32>,
    /// A new set of headers, replacing every old one.
    pub headers: Option<Vec<DeviceHeader>>,
    /// A new trust setting, replacing the old one.
    pub tls: Option<DeviceTls>,
}

/// A tenant's devices.
#[async_trait]
pub trait DeviceStore: Send + Sync {
    /// Creates a device. [`crate::StoreError::Conflict`] on `/name` when the
    /// tenant has a device of that name, [`crate::StoreError::Gone`] when the
    /// tenant is being deleted. A name whose device was deleted is free
    /// again: its tombstone goes.
    async fn create_device(&self, tenant_id: &str, new: NewDevice) -> StoreResult<Device>;
    /// A device by name: `Gone` while its tombstone is kept.
    async fn device(&self, tenant_id: &str, name: &str) -> StoreResult<Lookup<Device>>;
    /// Devices by id (creation order).
    async fn list_devices(&self, tenant_id: &str, page: PageRequest) -> StoreResult<Page<Device>>;
    /// Changes a device (a new version), `expect` checked against its
    /// version inside the write's transaction:
    /// [`crate::StoreError::Gone`] (tombstone) or
    /// [`crate::StoreError::Vanished`] when it is not there,
    /// [`crate::StoreError::ExpectationFailed`] when `expect` does not hold.
    async fn update_device(
        &self,
        tenant_id: &str,
        name: &str,
        changes: DeviceChanges,
        expect: Expect,
    ) -> StoreResult<Device>;
    /// Deletes a device, leaving a tombstone kept for `retention`; fails
    /// like [`DeviceStore::update_device`].
    async fn delete_device(&self, tenant_id: &str, name: &str, expect: Expect, retention: Duration) -> StoreResult<()>;
}
