//! Devices: unique names per tenant, versions checked inside the write,
//! tombstones, and sealed headers kept exactly as given.

use std::sync::Arc;

use canon_store::*;

use super::{KEEP, first_page, tenant};

/// A device called `name` with one sealed header.
pub fn new_device(name: &str) -> NewDevice {
    NewDevice {
        name: name.into(),
        endpoint: "http://127.0.0.1:9/api".into(),
        timeout_ms: 2000,
        headers: vec![DeviceHeader {
            name: "x-device-token".into(),
            sealed: "v1.c2VhbGVk".into(),
        }],
        tls: DeviceTls::default(),
    }
}

pub async fn devices_crud_versions_and_tombstones(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    let d = store.create_device(&t.id, new_device("fw-1")).await.unwrap();
    assert_eq!((d.version, d.name.as_str(), d.timeout_ms), (1, "fw-1", 2000));
    assert!(matches!(
        store.create_device(&t.id, new_device("fw-1")).await,
        Err(StoreError::Conflict { pointer }) if pointer == "/name"
    ));
    assert_eq!(store.device(&t.id, "fw-1").await.unwrap(), Lookup::Found(d.clone()));
    assert_eq!(store.device(&t.id, "nope").await.unwrap(), Lookup::Missing);

    // A change is a new version; a stale expectation changes nothing.
    let changes = DeviceChanges {
        timeout_ms: Some(500),
        ..DeviceChanges::default()
    };
    let changed = store
        .update_device(&t.id, "fw-1", changes.clone(), Expect::Version(1))
        .await
        .unwrap();
    assert_eq!((changed.version, changed.timeout_ms), (2, 500));
    assert_eq!(changed.endpoint, d.endpoint);
    assert_eq!(changed.headers, d.headers);
    assert!(matches!(
        store.update_device(&t.id, "fw-1", changes, Expect::Version(1)).await,
        Err(StoreError::ExpectationFailed)
    ));
    assert!(matches!(
        store.delete_device(&t.id, "fw-1", Expect::Version(1), KEEP).await,
        Err(StoreError::ExpectationFailed)
    ));

    // Lists page by id.
    store.create_device(&t.id, new_device("fw-2")).await.unwrap();
    store.create_device(&t.id, new_device("fw-3")).await.unwrap();
    let first = store.list_devices(&t.id, first_page(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    let rest = store
        .list_devices(
            &t.id,
            PageRequest {
                limit: 2,
                after: first.next.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1);
    assert!(rest.next.is_none());

    // Deleted: a tombstone (Gone), writes to it are Gone, the name is free again.
    store
        .delete_device(&t.id, "fw-1", Expect::Version(2), KEEP)
        .await
        .unwrap();
    assert_eq!(store.device(&t.id, "fw-1").await.unwrap(), Lookup::Gone);
    assert!(matches!(
        store
            .update_device(&t.id, "fw-1", DeviceChanges::default(), Expect::Anything)
            .await,
        Err(StoreError::Gone)
    ));
    assert!(matches!(
        store.delete_device(&t.id, "fw-1", Expect::Anything, KEEP).await,
        Err(StoreError::Gone)
    ));
    assert!(matches!(
        store.delete_device(&t.id, "never", Expect::Anything, KEEP).await,
        Err(StoreError::Vanished)
    ));
    let again = store.create_device(&t.id, new_device("fw-1")).await.unwrap();
    assert_eq!(again.version, 1);
    assert_ne!(again.id, d.id);
    assert_eq!(store.device(&t.id, "fw-1").await.unwrap(), Lookup::Found(again));
}

pub async fn device_headers_are_kept_as_given(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    let headers = vec![
        DeviceHeader {
            name: "x-b".into(),
            sealed: "v1.second".into(),
        },
        DeviceHeader {
            name: "x-a".into(),
            sealed: "v1.first".into(),
        },
    ];
    let d = store
        .create_device(
            &t.id,
            NewDevice {
                headers: headers.clone(),
                ..new_device("fw")
            },
        )
        .await
        .unwrap();
    assert_eq!(d.headers, headers, "in the order given");
    let replaced = store
        .update_device(
            &t.id,
            "fw",
            DeviceChanges {
                headers: Some(Vec::new()),
                endpoint: Some("https://fw.example/".into()),
                ..DeviceChanges::default()
            },
            Expect::Anything,
        )
        .await
        .unwrap();
    assert!(replaced.headers.is_empty());
    assert_eq!(replaced.endpoint, "https://fw.example/");
    assert_eq!(store.device(&t.id, "fw").await.unwrap(), Lookup::Found(replaced));
}

pub async fn device_tls_settings_are_kept_and_replaced(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let pin = "ab".repeat(32);
    let d = store
        .create_device(
            &t.id,
            NewDevice {
                endpoint: "https://10.0.0.1/".into(),
                tls: DeviceTls {
                    ca_certificate: Some(pem.into()),
                    certificate_sha256: None,
                },
                ..new_device("fw")
            },
        )
        .await
        .unwrap();
    assert_eq!(d.tls.ca_certificate.as_deref(), Some(pem), "kept byte for byte");
    assert_eq!(d.tls.certificate_sha256, None);
    assert_eq!(store.device(&t.id, "fw").await.unwrap(), Lookup::Found(d.clone()));
    // Another change leaves it; a new setting replaces it whole.
    let timed = store
        .update_device(
            &t.id,
            "fw",
            DeviceChanges {
                timeout_ms: Some(100),
                ..DeviceChanges::default()
            },
            Expect::Anything,
        )
        .await
        .unwrap();
    assert_eq!(timed.tls, d.tls);
    let pinned = store
        .update_device(
            &t.id,
            "fw",
            DeviceChanges {
                tls: Some(DeviceTls {
                    ca_certificate: None,
                    certificate_sha256: Some(pin.clone()),
                }),
                ..DeviceChanges::default()
            },
            Expect::Anything,
        )
        .await
        .unwrap();
    assert_eq!(pinned.tls.ca_certificate, None);
    assert_eq!(pinned.tls.certificate_sha256, Some(pin));
    let listed = store.list_devices(&t.id, first_page(10)).await.unwrap();
    assert_eq!(listed.items, vec![pinned.clone()]);
    let cleared = store
        .update_device(
            &t.id,
            "fw",
            DeviceChanges {
                tls: Some(DeviceTls::default()),
                ..DeviceChanges::default()
            },
            Expect::Anything,
        )
        .await
        .unwrap();
    assert_eq!(cleared.tls, DeviceTls::default());
    assert_eq!(store.device(&t.id, "fw").await.unwrap(), Lookup::Found(cleared));
}

pub async fn devices_are_per_tenant(store: Arc<dyn Store>) {
    let a = tenant(&*store, "acme").await;
    let b = tenant(&*store, "globex").await;
    store.create_device(&a.id, new_device("fw")).await.unwrap();
    // The same name in another tenant is another device.
    store.create_device(&b.id, new_device("fw")).await.unwrap();
    store.delete_device(&b.id, "fw", Expect::Anything, KEEP).await.unwrap();
    assert!(matches!(store.device(&a.id, "fw").await.unwrap(), Lookup::Found(_)));
    assert_eq!(store.device(&b.id, "fw").await.unwrap(), Lookup::Gone);
    assert_eq!(store.list_devices(&b.id, first_page(10)).await.unwrap().items, vec![]);
    // A tenant being deleted takes no new device.
    store
        .delete_tenant("globex", Expect::Anything, KEEP, now_millis())
        .await
        .unwrap();
    assert!(matches!(
        store.create_device(&b.id, new_device("fw2")).await,
        Err(StoreError::Gone)
    ));
}
