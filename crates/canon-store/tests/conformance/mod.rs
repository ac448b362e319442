//! The backend-agnostic store suite. Every backend's test file calls each
//! function here with a fresh, empty store; nothing here knows which engine
//! it talks to.

mod devices;
mod recreated;
mod recreated_writes;
mod tenant_deletion;

use std::sync::Arc;
use std::time::Duration;

use canon_store::*;
pub use devices::*;
pub use recreated::*;
pub use recreated_writes::*;
use serde_json::json;
pub use tenant_deletion::*;

const KEEP: Duration = Duration::from_secs(3600);
/// The writer in tests that do not care who writes.
const ACTOR: &str = "tester";

fn first_page(limit: usize) -> PageRequest {
    PageRequest { limit, after: None }
}

async fn tenant(store: &dyn Store, name: &str) -> Tenant {
    store.create_tenant(name).await.expect("create tenant")
}

async fn collection(store: &dyn Store, t: &Tenant, name: &str, unique: &[&str]) -> Collection {
    store
        .create_collection(
            &t.id,
            NewCollection {
                name: name.into(),
                schema: json!({"type": "object"}),
                unique: unique.iter().map(|s| s.to_string()).collect(),
                require_if_match: false,
            },
        )
        .await
        .expect("create collection")
}

pub async fn tenants_are_unique_by_name(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    assert!(matches!(store.create_tenant("acme").await, Err(StoreError::Conflict { pointer }) if pointer == "/name"));
    assert_eq!(store.tenant("acme").await.unwrap(), Lookup::Found(t));
    assert_eq!(store.tenant("nope").await.unwrap(), Lookup::Missing);
}

pub async fn tenant_limits_are_versioned_and_come_with_the_key(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    assert_eq!(t.limits, TenantLimits::default(), "a new tenant takes the defaults");
    let u = store
        .create_user(&t.id, "a@example.com", TenantRole::Admin)
        .await
        .unwrap();
    store.create_api_key(&t.id, &u.id, "ci", "khash").await.unwrap();

    let limits = TenantLimits {
        rate_limit_per_second: Some(5),
        burst: Some(20),
        daily_quota: Some(4_000_000_000),
    };
    assert!(matches!(
        store
            .set_tenant_limits("acme", limits, Expect::Version(t.version + 1))
            .await,
        Err(StoreError::ExpectationFailed)
    ));
    let changed = store
        .set_tenant_limits("acme", limits, Expect::Version(t.version))
        .await
        .unwrap();
    assert_eq!((changed.limits, changed.version), (limits, t.version + 1));
    assert_eq!(store.tenant("acme").await.unwrap(), Lookup::Found(changed.clone()));
    match store.key_owner("khash").await.unwrap() {
        Some(KeyOwner::Member {
            limits: seen,
            tenant_id,
            tenant_version,
            ..
        }) => {
            assert_eq!(
                (seen, &*tenant_id, tenant_version),
                (limits, t.id.as_str(), changed.version)
            );
        }
        other => panic!("{other:?}"),
    }
    // Back to the defaults, one field at a time.
    let partly = TenantLimits { burst: None, ..limits };
    let again = store.set_tenant_limits("acme", partly, Expect::Anything).await.unwrap();
    assert_eq!(again.limits.burst, None);
    assert_eq!(again.limits.daily_quota, Some(4_000_000_000));
    let listed = store.list_tenants(first_page(10)).await.unwrap();
    assert_eq!(listed.items[0].limits, partly);

    assert!(matches!(
        store.set_tenant_limits("nope", limits, Expect::Anything).await,
        Err(StoreError::Vanished)
    ));
    store
        .delete_tenant("acme", Expect::Anything, KEEP, now_millis())
        .await
        .unwrap();
    assert!(matches!(
        store.set_tenant_limits("acme", limits, Expect::Anything).await,
        Err(StoreError::Gone)
    ));
}

pub async fn lists_page_by_cursor(store: Arc<dyn Store>) {
    for i in 0..5 {
        tenant(&*store, &format!("t{i}")).await;
    }
    let p1 = store.list_tenants(first_page(2)).await.unwrap();
    assert_eq!(p1.items.len(), 2);
    let p2 = store
        .list_tenants(PageRequest {
            limit: 2,
            after: p1.next.clone(),
        })
        .await
        .unwrap();
    let p3 = store
        .list_tenants(PageRequest {
            limit: 2,
            after: p2.next.clone(),
        })
        .await
        .unwrap();
    assert_eq!(p3.items.len(), 1);
    assert!(p3.next.is_none());
    let names: Vec<_> = [p1, p2, p3].into_iter().flat_map(|p| p.items).map(|t| t.name).collect();
    assert_eq!(names, ["t0", "t1", "t2", "t3", "t4"]);
}

pub async fn users_keys_and_authentication(store: Arc<dyn Store>) {
    assert!(store.bootstrap_operator("ophash").await.unwrap());
    assert!(!store.bootstrap_operator("other").await.unwrap(), "only one bootstrap");
    assert!(matches!(
        store.key_owner("ophash").await.unwrap(),
        Some(KeyOwner::Operator { .. })
    ));

    let t = tenant(&*store, "acme").await;
    let u = store
        .create_user(&t.id, "a@example.com", TenantRole::Editor)
        .await
        .unwrap();
    assert!(matches!(
        store.create_user(&t.id, "a@example.com", TenantRole::Viewer).await,
        Err(StoreError::Conflict { pointer }) if pointer == "/email"
    ));
    let other = tenant(&*store, "other").await;
    store
        .create_user(&other.id, "a@example.com", TenantRole::Viewer)
        .await
        .expect("emails are unique per tenant only");

    let k = store.create_api_key(&t.id, &u.id, "ci", "khash").await.unwrap();
    match store.key_owner("khash").await.unwrap() {
        Some(KeyOwner::Member {
            tenant,
            user_id,
            role,
            key_id,
            ..
        }) => {
            assert_eq!(
                (&*tenant, &*user_id, role, &*key_id),
                ("acme", u.id.as_str(), TenantRole::Editor, k.id.as_str())
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(
            store.create_api_key(&other.id, &u.id, "x", "h2").await,
            Err(StoreError::Vanished)
        ),
        "a user of another tenant is not found"
    );

    let role = store
        .set_user_role(&t.id, &u.id, TenantRole::Admin, Expect::Anything)
        .await
        .unwrap();
    assert_eq!((role.role, role.version), (TenantRole::Admin, 2));
    store
        .revoke_api_key(&u.id, &k.id, Expect::Anything, KEEP)
        .await
        .unwrap();
    assert_eq!(
        store.key_owner("khash").await.unwrap(),
        None,
        "revoked keys do not authenticate"
    );
    assert_eq!(store.api_key(&u.id, &k.id).await.unwrap(), Lookup::Gone);

    let k2 = store.create_api_key(&t.id, &u.id, "ci2", "khash2").await.unwrap();
    // The tenant's last admin stays; with another admin it may go.
    assert!(matches!(
        store.delete_user(&t.id, &u.id, Expect::Anything, KEEP).await,
        Err(StoreError::LastAdmin)
    ));
    store
        .create_user(&t.id, "b@example.com", TenantRole::Admin)
        .await
        .unwrap();
    store.delete_user(&t.id, &u.id, Expect::Anything, KEEP).await.unwrap();
    assert_eq!(store.user(&t.id, &u.id).await.unwrap(), Lookup::Gone);
    assert_eq!(
        store.key_owner("khash2").await.unwrap(),
        None,
        "a deleted user's keys stop working"
    );
    assert_eq!(
        store.user(&other.id, &u.id).await.unwrap(),
        Lookup::Missing,
        "tombstones are per tenant"
    );
    let _ = k2;
}

pub async fn records_crud_versions_and_tombstones(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    let c = collection(&*store, &t, "devices", &[]).await;
    let r = store.create_record(&c, json!({"name": "a"})).await.unwrap();
    assert_eq!(r.version, 1);
    assert_eq!(store.record(&c.id, &r.id).await.unwrap(), Lookup::Found(r.clone()));

    let (r2, created) = store
        .put_record(&c, &r.id, json!({"name": "b"}), Expect::Anything, ACTOR)
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(r2.version, 2);
    assert_ne!(r2.etag, r.etag);
    assert_eq!(r2.created_at, r.created_at);

    assert!(matches!(
        store
            .put_record(&c, &r.id, json!({}), Expect::Etag(r.etag.clone()), ACTOR)
            .await,
        Err(StoreError::ExpectationFailed)
    ));
    assert!(matches!(
        store.put_record(&c, &r.id, json!({}), Expect::Absent, ACTOR).await,
        Err(StoreError::ExpectationFailed)
    ));

    let (made, created) = store
        .put_record(&c, "client-id", json!({"name": "c"}), Expect::Absent, ACTOR)
        .await
        .unwrap();
    assert!(created);
    assert_eq!(made.id, "client-id");

    store
        .delete_record(&c.id, &r.id, Expect::Etag(r2.etag.clone()), ACTOR, KEEP)
        .await
        .unwrap();
    assert_eq!(store.record(&c.id, &r.id).await.unwrap(), Lookup::Gone);
    assert!(matches!(
        store.delete_record(&c.id, &r.id, Expect::Anything, ACTOR, KEEP).await,
        Err(StoreError::Gone)
    ));

    // A zero retention leaves an already-expired tombstone: 404, and purged.
    store
        .delete_record(&c.id, "client-id", Expect::Anything, ACTOR, Duration::ZERO)
        .await
        .unwrap();
    assert!(matches!(
        store
            .delete_record(&c.id, "client-id", Expect::Anything, ACTOR, KEEP)
            .await,
        Err(StoreError::Vanished)
    ));
    assert_eq!(store.record(&c.id, "client-id").await.unwrap(), Lookup::Missing);
    assert!(store.purge_expired().await.unwrap() >= 1);

    // Re-creating at a deleted id clears its tombstone.
    let (again, created) = store
        .put_record(&c, &r.id, json!({"name": "again"}), Expect::Anything, ACTOR)
        .await
        .unwrap();
    assert!(created);
    assert_eq!(again.version, 1);
    assert_ne!(again.etag, r.etag);
}

pub async fn unique_fields_conflict_by_pointer(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    let c = collection(&*store, &t, "devices", &["serial", "mac"]).await;
    let a = store
        .create_record(&c, json!({"serial": "S1", "mac": "m1"}))
        .await
        .unwrap();
    match store.create_record(&c, json!({"serial": "S2", "mac": "m1"})).await {
        Err(StoreError::Conflict { pointer }) => assert_eq!(pointer, "/data/mac"),
        other => panic!("{other:?}"),
    }
    // The failed write left nothing behind: S2 is still free.
    store.create_record(&c, json!({"serial": "S2"})).await.expect("S2 free");
    // Values are typed: the number 1 and the string "1" differ.
    store.create_record(&c, json!({"serial": 1})).await.unwrap();
    store.create_record(&c, json!({"serial": "1"})).await.unwrap();
    // Replacing frees the old value; deleting frees the new one.
    store
        .put_record(&c, &a.id, json!({"serial": "S9"}), Expect::Anything, ACTOR)
        .await
        .unwrap();
    store
        .create_record(&c, json!({"serial": "S1", "mac": "m1"}))
        .await
        .expect("S1 and m1 freed");
    store
        .delete_record(&c.id, &a.id, Expect::Anything, ACTOR, KEEP)
        .await
        .unwrap();
    store
        .create_record(&c, json!({"serial": "S9"}))
        .await
        .expect("S9 freed");
    // Missing and null values are not unique.
    store.create_record(&c, json!({"serial": null})).await.unwrap();
    store.create_record(&c, json!({"serial": null})).await.unwrap();
}

pub async fn collections_delete_only_when_empty(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    let c = collection(&*store, &t, "devices", &[]).await;
    assert!(matches!(
        store.create_collection(&t.id, NewCollection { name: "devices".into(), schema: json!({}), unique: vec![], require_if_match: false }).await,
        Err(StoreError::Conflict { pointer }) if pointer == "/name"
    ));
    let r = store.create_record(&c, json!({})).await.unwrap();
    assert!(matches!(
        store.delete_collection(&t.id, "devices", Expect::Anything, KEEP).await,
        Err(StoreError::NotEmpty)
    ));
    store
        .delete_record(&c.id, &r.id, Expect::Anything, ACTOR, KEEP)
        .await
        .unwrap();
    store
        .delete_collection(&t.id, "devices", Expect::Anything, KEEP)
        .await
        .unwrap();
    assert_eq!(store.collection(&t.id, "devices").await.unwrap(), Lookup::Gone);
    assert!(matches!(
        store.create_record(&c, json!({})).await,
        Err(StoreError::Vanished)
    ));
    let again = collection(&*store, &t, "devices", &[]).await;
    assert_eq!(store.collection(&t.id, "devices").await.unwrap(), Lookup::Found(again));
    assert_eq!(
        store.list_collections(&t.id, first_page(10)).await.unwrap().items.len(),
        1
    );
}

pub async fn record_lists_filter_sort_and_page(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    let c = collection(&*store, &t, "devices", &[]).await;
    let rows = [
        json!({"name": "d", "port": 80, "up": true}),
        json!({"name": "a", "port": 443, "up": false}),
        json!({"name": "c", "port": 80, "up": true}),
        json!({"name": "b", "port": "80"}),
        json!({"port": 22}),
    ];
    for r in rows {
        store.create_record(&c, r).await.unwrap();
    }
    let q =
        |filters: Vec<(&str, serde_json::Value)>, sort: SortOrder, limit: usize, after: Option<Cursor>| RecordQuery {
            page: PageRequest { limit, after },
            filters: filters.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            sort,
        };
    let names = |p: &Page<Record>| {
        p.items
            .iter()
            .map(|r| r.data.get("name").and_then(|n| n.as_str()).unwrap_or("-").to_owned())
            .collect::<Vec<_>>()
    };

    let by_port = store
        .list_records(&c.id, q(vec![("port", json!(80))], SortOrder::Id, 10, None))
        .await
        .unwrap();
    assert_eq!(names(&by_port), ["d", "c"], "number 80 does not match string \"80\"");
    let up = store
        .list_records(&c.id, q(vec![("up", json!(true))], SortOrder::Id, 10, None))
        .await
        .unwrap();
    assert_eq!(names(&up), ["d", "c"]);
    // The raw page is the same page, its data the stored JSON text.
    let raw = store
        .list_raw_records(&c.id, q(vec![("port", json!(80))], SortOrder::Id, 1, None))
        .await
        .unwrap();
    let parsed = store
        .list_records(&c.id, q(vec![("port", json!(80))], SortOrder::Id, 1, None))
        .await
        .unwrap();
    assert_eq!(raw.next, parsed.next);
    assert_eq!(raw.items.len(), 1);
    assert_eq!(raw.items[0].id, parsed.items[0].id);
    assert_eq!(raw.items[0].data, parsed.items[0].data.to_string());
    assert_eq!(raw.items[0].etag, parsed.items[0].etag);
    // Counting takes the same filters.
    let count = |filters: Vec<(&str, serde_json::Value)>| {
        store.count_records(&c.id, filters.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    };
    assert_eq!(count(vec![]).await.unwrap(), 5);
    assert_eq!(count(vec![("port", json!(80))]).await.unwrap(), 2);
    assert_eq!(count(vec![("port", json!("80"))]).await.unwrap(), 1);
    assert_eq!(count(vec![("port", json!(80)), ("name", json!("c"))]).await.unwrap(), 1);

    let sort = SortOrder::Field {
        field: "name".into(),
        descending: false,
    };
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let p = store
            .list_records(&c.id, q(vec![], sort.clone(), 2, after))
            .await
            .unwrap();
        all.extend(names(&p));
        after = p.next;
        if after.is_none() {
            break;
        }
    }
    assert_eq!(
        all,
        ["a", "b", "c", "d", "-"],
        "missing values sort last, pages join up"
    );

    let desc = SortOrder::Field {
        field: "name".into(),
        descending: true,
    };
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let p = store
            .list_records(&c.id, q(vec![], desc.clone(), 3, after))
            .await
            .unwrap();
        all.extend(names(&p));
        after = p.next;
        if after.is_none() {
            break;
        }
    }
    assert_eq!(all, ["d", "c", "b", "a", "-"]);
}

pub async fn concurrent_writes_all_commit(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    let c = Arc::new(collection(&*store, &t, "devices", &["serial"]).await);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (store, c) = (store.clone(), c.clone());
        // Every tenth write collides with an earlier serial and must fail alone.
        let serial = if i % 10 == 9 {
            format!("s{}", i - 1)
        } else {
            format!("s{i}")
        };
        tasks.push(tokio::spawn(async move {
            store.create_record(&c, json!({"serial": serial})).await
        }));
    }
    let mut ok = 0;
    let mut conflicts = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::Conflict { .. }) => conflicts += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(ok + conflicts, 200);
    assert_eq!(conflicts, 20);
    let listed = store
        .list_records(
            &c.id,
            RecordQuery {
                page: first_page(1000),
                filters: vec![],
                sort: SortOrder::Id,
            },
        )
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 180);
}

pub async fn same_expectation_has_one_winner(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    let c = Arc::new(collection(&*store, &t, "devices", &[]).await);
    let r = store.create_record(&c, json!({"n": 0})).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (store, c, id, etag) = (store.clone(), c.clone(), r.id.clone(), r.etag.clone());
        tasks.push(tokio::spawn(async move {
            store
                .put_record(&c, &id, json!({"n": i}), Expect::Etag(etag), ACTOR)
                .await
        }));
    }
    let mut winners = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => winners += 1,
            Err(StoreError::ExpectationFailed) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(winners, 1);
}

pub async fn leases_block_other_writers_until_released_or_expired(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    let c = collection(&*store, &t, "devices", &[]).await;
    let r = store.create_record(&c, json!({"n": 0})).await.unwrap();
    assert_eq!(store.lease(&c.id, &r.id).await.unwrap(), None);

    let (lease, new) = store.acquire_lease(&c.id, &r.id, "alice", KEEP).await.unwrap();
    assert!(new);
    assert_eq!(lease.holder, "alice");
    assert_eq!(store.lease(&c.id, &r.id).await.unwrap(), Some(lease.clone()));

    // Renewing keeps the acquisition time; another holder is refused.
    let (renewed, new) = store.acquire_lease(&c.id, &r.id, "alice", KEEP).await.unwrap();
    assert!(!new);
    assert_eq!(renewed.acquired_at, lease.acquired_at);
    assert!(matches!(
        store.acquire_lease(&c.id, &r.id, "bob", KEEP).await,
        Err(StoreError::Locked(l)) if l.holder == "alice"
    ));

    // Writes by others fail inside the transaction; the holder's succeed.
    assert!(matches!(
        store
            .put_record(&c, &r.id, json!({"n": 1}), Expect::Anything, "bob")
            .await,
        Err(StoreError::Locked(_))
    ));
    assert!(matches!(
        store.delete_record(&c.id, &r.id, Expect::Anything, "bob", KEEP).await,
        Err(StoreError::Locked(_))
    ));
    store
        .put_record(&c, &r.id, json!({"n": 2}), Expect::Anything, "alice")
        .await
        .unwrap();

    // Only the holder releases by name; a break releases anyone's.
    assert!(matches!(
        store.release_lease(&c.id, &r.id, Some("bob")).await,
        Err(StoreError::Locked(_))
    ));
    assert!(store.release_lease(&c.id, &r.id, None).await.unwrap());
    assert!(!store.release_lease(&c.id, &r.id, None).await.unwrap());
    store
        .put_record(&c, &r.id, json!({"n": 3}), Expect::Anything, "bob")
        .await
        .unwrap();

    // An expired lease frees itself.
    store
        .acquire_lease(&c.id, &r.id, "alice", Duration::from_millis(30))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(store.lease(&c.id, &r.id).await.unwrap(), None);
    let (taken, new) = store.acquire_lease(&c.id, &r.id, "bob", KEEP).await.unwrap();
    assert!(new);
    assert_eq!(taken.holder, "bob");

    // Deleting the record (by the holder) drops its lease; no lease on a missing record.
    store
        .delete_record(&c.id, &r.id, Expect::Anything, "bob", KEEP)
        .await
        .unwrap();
    assert_eq!(store.lease(&c.id, &r.id).await.unwrap(), None);
    assert!(matches!(
        store.acquire_lease(&c.id, &r.id, "bob", KEEP).await,
        Err(StoreError::Vanished)
    ));
}

pub async fn renamed_collections_leave_redirects(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    let a = collection(&*store, &t, "a", &[]).await;
    let rename = |name: &str| CollectionChanges {
        name: Some(name.into()),
        ..CollectionChanges::default()
    };
    let b = store
        .update_collection(&t.id, "a", rename("b"), Expect::Version(1))
        .await
        .unwrap();
    assert_eq!((b.id.as_str(), b.name.as_str(), b.version), (a.id.as_str(), "b", 2));
    assert_eq!(store.collection(&t.id, "a").await.unwrap(), Lookup::Missing);
    assert_eq!(store.collection_alias(&t.id, "a").await.unwrap().as_deref(), Some("b"));

    // Two renames: both old names lead to the current one.
    store
        .update_collection(&t.id, "b", rename("c"), Expect::Anything)
        .await
        .unwrap();
    assert_eq!(store.collection_alias(&t.id, "a").await.unwrap().as_deref(), Some("c"));
    assert_eq!(store.collection_alias(&t.id, "b").await.unwrap().as_deref(), Some("c"));

    // A taken name conflicts; a missing collection is None.
    collection(&*store, &t, "other", &[]).await;
    assert!(matches!(
        store.update_collection(&t.id, "c", rename("other"), Expect::Anything).await,
        Err(StoreError::Conflict { pointer }) if pointer == "/name"
    ));
    assert!(matches!(
        store
            .update_collection(&t.id, "zzz", rename("y"), Expect::Anything)
            .await,
        Err(StoreError::Vanished)
    ));
    assert!(matches!(
        store
            .update_collection(&t.id, "c", rename("y"), Expect::Version(1))
            .await,
        Err(StoreError::ExpectationFailed)
    ));

    // A new collection under an old name ends that redirect.
    collection(&*store, &t, "a", &[]).await;
    assert_eq!(store.collection_alias(&t.id, "a").await.unwrap(), None);
    assert_eq!(store.collection_alias(&t.id, "b").await.unwrap().as_deref(), Some("c"));

    // Options and unique fields change; colliding records refuse the index.
    let c = store.collection(&t.id, "c").await.unwrap().found().unwrap();
    store.create_record(&c, json!({"serial": "S1"})).await.unwrap();
    store.create_record(&c, json!({"serial": "S1"})).await.unwrap();
    let unique = CollectionChanges {
        unique: Some(vec!["serial".into()]),
        require_if_match: Some(true),
        ..CollectionChanges::default()
    };
    assert!(matches!(
        store.update_collection(&t.id, "c", unique.clone(), Expect::Anything).await,
        Err(StoreError::Conflict { pointer }) if pointer == "/data/serial"
    ));
    let unchanged = store.collection(&t.id, "c").await.unwrap().found().unwrap();
    assert!(unchanged.unique.is_empty() && !unchanged.require_if_match);

    // Deleting the collection ends its redirects.
    let empty = collection(&*store, &t, "d", &[]).await;
    store
        .update_collection(&t.id, "d", rename("e"), Expect::Anything)
        .await
        .unwrap();
    store
        .delete_collection(&t.id, "e", Expect::Anything, KEEP)
        .await
        .unwrap();
    assert_eq!(store.collection_alias(&t.id, "d").await.unwrap(), None);
    assert_eq!(store.collection(&t.id, &empty.name).await.unwrap(), Lookup::Missing);
}

pub async fn idempotency_keys_claim_replay_and_expire(store: Arc<dyn Store>) {
    let request = IdempotencyRequest {
        scope: "acme/alice".into(),
        key: "k1".into(),
        fingerprint: "f1".into(),
    };
    let day = Duration::from_secs(86_400);
    let lease = Duration::from_secs(60);
    assert_eq!(
        store.claim_idempotency(&request, day, lease).await.unwrap(),
        IdempotencyClaim::Claimed
    );
    assert_eq!(
        store.claim_idempotency(&request, day, lease).await.unwrap(),
        IdempotencyClaim::InFlight
    );
    let other_body = IdempotencyRequest {
        fingerprint: "f2".into(),
        ..request.clone()
    };
    assert_eq!(
        store.claim_idempotency(&other_body, day, lease).await.unwrap(),
        IdempotencyClaim::Mismatch
    );
    // Another caller's key of the same name is separate.
    let other_scope = IdempotencyRequest {
        scope: "acme/bob".into(),
        ..request.clone()
    };
    assert_eq!(
        store.claim_idempotency(&other_scope, day, lease).await.unwrap(),
        IdempotencyClaim::Claimed
    );

    let response = StoredResponse {
        status: 201,
        headers: vec![("location".into(), "/x".into())],
        body: b"{}".to_vec(),
    };
    store
        .complete_idempotency("acme/alice", "k1", response.clone())
        .await
        .unwrap();
    assert_eq!(
        store.claim_idempotency(&request, day, lease).await.unwrap(),
        IdempotencyClaim::Completed(response)
    );
    // Releasing a completed key does nothing; releasing a claim frees it.
    store.release_idempotency("acme/alice", "k1").await.unwrap();
    assert!(matches!(
        store.claim_idempotency(&request, day, lease).await.unwrap(),
        IdempotencyClaim::Completed(_)
    ));
    store.release_idempotency("acme/bob", "k1").await.unwrap();
    assert_eq!(
        store.claim_idempotency(&other_scope, day, lease).await.unwrap(),
        IdempotencyClaim::Claimed
    );

    // An abandoned claim (older than its lease) can be taken over.
    let abandoned = IdempotencyRequest {
        key: "k2".into(),
        ..request.clone()
    };
    let short = Duration::from_millis(20);
    assert_eq!(
        store.claim_idempotency(&abandoned, day, short).await.unwrap(),
        IdempotencyClaim::Claimed
    );
    tokio::time::sleep(Duration::from_millis(40)).await;
    assert_eq!(
        store.claim_idempotency(&abandoned, day, short).await.unwrap(),
        IdempotencyClaim::Claimed
    );

    // Expired keys are forgotten and purged.
    let brief = IdempotencyRequest {
        key: "k3".into(),
        ..request.clone()
    };
    store.claim_idempotency(&brief, Duration::ZERO, lease).await.unwrap();
    assert!(store.purge_expired().await.unwrap() >= 1);
    let reused = IdempotencyRequest {
        fingerprint: "new".into(),
        ..brief
    };
    assert_eq!(
        store.claim_idempotency(&reused, day, lease).await.unwrap(),
        IdempotencyClaim::Claimed
    );
}

/// Sets field `f{i}` of a record to `i`, as a merge patch inside the write.
fn set_field(i: usize) -> ApplyPatch {
    Box::new(move |current| {
        let mut data = current.clone();
        data[format!("f{i}")] = json!(i);
        Ok(data)
    })
}

pub async fn absent_records_are_created_together_each_on_its_own(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    let c = collection(&*store, &t, "devices", &["serial"]).await;
    store
        .put_record(&c, "old", json!({"serial": "A"}), Expect::Absent, ACTOR)
        .await
        .unwrap();
    let results = store
        .create_absent_records(
            &c,
            vec![
                ("new-1".into(), json!({"serial": "B"})),
                ("old".into(), json!({"serial": "Z"})),
                ("new-2".into(), json!({"serial": "A"})),
                ("new-3".into(), json!({"serial": "C"})),
            ],
        )
        .await
        .unwrap();
    assert!(results[0].is_ok());
    assert!(matches!(results[1], Err(StoreError::ExpectationFailed)));
    assert!(matches!(results[2], Err(StoreError::Conflict { .. })));
    assert!(results[3].is_ok());
    // The failed ones left nothing; the others are there, once.
    assert!(store.record(&c.id, "new-2").await.unwrap().found().is_none());
    assert_eq!(
        store.record(&c.id, "old").await.unwrap().found().unwrap().data["serial"],
        "A"
    );
    assert_eq!(
        store.record(&c.id, "new-3").await.unwrap().found().unwrap().data["serial"],
        "C"
    );
    // "B" is taken now: the unique index saw new-1.
    let again = store
        .create_absent_records(&c, vec![("new-4".into(), json!({"serial": "B"}))])
        .await
        .unwrap();
    assert!(matches!(again[0], Err(StoreError::Conflict { .. })));
}

pub async fn patches_apply_inside_the_write(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    let c = Arc::new(collection(&*store, &t, "devices", &["serial"]).await);
    let r = store.create_record(&c, json!({})).await.unwrap();

    // Unconditional patches never fail for contention: each sees the last.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (store, c, id) = (store.clone(), c.clone(), r.id.clone());
        tasks.push(tokio::spawn(async move {
            store.patch_record(&c, &id, set_field(i), Expect::Anything, ACTOR).await
        }));
    }
    for t in tasks {
        t.await.unwrap().expect("an unconditional patch commits");
    }
    let after = store.record(&c.id, &r.id).await.unwrap().found().unwrap();
    assert_eq!(after.version, 21);
    for i in 0..20 {
        assert_eq!(after.data[format!("f{i}")], json!(i), "{}", after.data);
    }

    // Conditional patches with one tag: exactly one winner.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let (store, c, id, etag) = (store.clone(), c.clone(), r.id.clone(), after.etag.clone());
        tasks.push(tokio::spawn(async move {
            store
                .patch_record(&c, &id, set_field(i), Expect::Etag(etag), ACTOR)
                .await
        }));
    }
    let mut winners = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => winners += 1,
            Err(StoreError::ExpectationFailed) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(winners, 1);

    // A rejected computation writes nothing and says why.
    let before = store.record(&c.id, &r.id).await.unwrap().found().unwrap();
    let refuse: ApplyPatch = Box::new(|_| {
        Err(RejectedWrite::TestFailed {
            operation: 0,
            detail: "no".into(),
        })
    });
    assert!(matches!(
        store.patch_record(&c, &r.id, refuse, Expect::Anything, ACTOR).await,
        Err(StoreError::Rejected(RejectedWrite::TestFailed { operation: 0, .. }))
    ));
    assert_eq!(store.record(&c.id, &r.id).await.unwrap(), Lookup::Found(before));

    // The patched data is indexed: a taken unique value conflicts.
    store.create_record(&c, json!({"serial": "S1"})).await.unwrap();
    let take: ApplyPatch = Box::new(|_| Ok(json!({"serial": "S1"})));
    assert!(matches!(
        store.patch_record(&c, &r.id, take, Expect::Anything, ACTOR).await,
        Err(StoreError::Conflict { pointer }) if pointer == "/data/serial"
    ));

    // A deleted record is gone; one that never existed has vanished.
    store
        .delete_record(&c.id, &r.id, Expect::Anything, ACTOR, KEEP)
        .await
        .unwrap();
    assert!(matches!(
        store
            .patch_record(&c, &r.id, set_field(0), Expect::Anything, ACTOR)
            .await,
        Err(StoreError::Gone)
    ));
    assert!(matches!(
        store
            .patch_record(&c, "nope", set_field(0), Expect::Anything, ACTOR)
            .await,
        Err(StoreError::Vanished)
    ));
}

/// The index and cause of an atomic batch that failed at one write.
fn failed_write(result: StoreResult<Vec<RecordWritten>>) -> (usize, StoreError) {
    match result {
        Err(StoreError::AtWrite { index, cause }) => (index, *cause),
        other => panic!("expected one write to fail, got {other:?}"),
    }
}

/// A replace (or create) at `id` with data that passed the caller's checks.
fn put_write(id: &str, data: serde_json::Value, expect: Expect) -> RecordWrite {
    RecordWrite::Put {
        id: id.into(),
        data: Ok(data),
        expect,
    }
}

pub async fn atomic_writes_apply_in_order_all_together(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    let c = collection(&*store, &t, "devices", &["serial"]).await;
    let (keep, _) = store
        .put_record(&c, "keep", json!({"serial": "K"}), Expect::Absent, ACTOR)
        .await
        .unwrap();
    store
        .put_record(&c, "doomed", json!({"serial": "D"}), Expect::Absent, ACTOR)
        .await
        .unwrap();

    // Each write sees the earlier ones: create at an id, then patch it; a
    // value freed by one write is free for the next.
    let done = store
        .apply_atomically(
            &c,
            vec![
                RecordWrite::Create {
                    data: Ok(json!({"serial": "N"})),
                },
                put_write("made", json!({"serial": "M"}), Expect::Absent),
                RecordWrite::Patch {
                    id: "made".into(),
                    apply: set_field(1),
                    expect: Expect::Anything,
                },
                put_write(
                    "keep",
                    json!({"serial": "K2"}),
                    Expect::OneOf(vec!["stale".into(), keep.etag.clone()]),
                ),
                RecordWrite::Delete {
                    id: "doomed".into(),
                    expect: Expect::Exists,
                },
                put_write("took-d", json!({"serial": "D"}), Expect::Anything),
            ],
            ACTOR,
            KEEP,
        )
        .await
        .unwrap();
    assert_eq!(done.len(), 6);
    let RecordWritten::Created(new) = &done[0] else {
        panic!("{:?}", done[0])
    };
    assert_eq!((new.version, &new.data), (1, &json!({"serial": "N"})));
    assert!(matches!(&done[1], RecordWritten::Created(r) if r.id == "made" && r.version == 1));
    let RecordWritten::Updated(made) = &done[2] else {
        panic!("{:?}", done[2])
    };
    assert_eq!((made.version, &made.data), (2, &json!({"serial": "M", "f1": 1})));
    assert!(matches!(&done[3], RecordWritten::Updated(r) if r.version == 2 && r.data["serial"] == "K2"));
    assert_eq!(done[4], RecordWritten::Deleted);
    assert!(matches!(&done[5], RecordWritten::Created(r) if r.id == "took-d"));

    // What the results say is what the store holds.
    assert_eq!(store.record(&c.id, "made").await.unwrap(), Lookup::Found(made.clone()));
    assert_eq!(store.record(&c.id, &new.id).await.unwrap(), Lookup::Found(new.clone()));
    assert_eq!(store.record(&c.id, "doomed").await.unwrap(), Lookup::Gone);
    assert!(matches!(
        store.create_record(&c, json!({"serial": "K2"})).await,
        Err(StoreError::Conflict { .. })
    ));
    store
        .create_record(&c, json!({"serial": "K"}))
        .await
        .expect("K was freed");
}

pub async fn atomic_writes_roll_back_entirely_at_the_first_failure(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    let c = collection(&*store, &t, "devices", &["serial"]).await;
    let (keep, _) = store
        .put_record(&c, "keep", json!({"serial": "K"}), Expect::Absent, ACTOR)
        .await
        .unwrap();
    let (other, _) = store
        .put_record(&c, "other", json!({"serial": "O"}), Expect::Absent, ACTOR)
        .await
        .unwrap();
    let all = |store: Arc<dyn Store>, collection_id: String| async move {
        let query = RecordQuery {
            page: first_page(100),
            filters: Vec::new(),
            sort: SortOrder::Id,
        };
        store.list_records(&collection_id, query).await.unwrap().items
    };
    let before = all(store.clone(), c.id.clone()).await;

    // Four writes succeed, the fifth fails its expectation: nothing stays.
    let failed = store
        .apply_atomically(
            &c,
            vec![
                RecordWrite::Create {
                    data: Ok(json!({"serial": "X1"})),
                },
                put_write("new", json!({"serial": "X2"}), Expect::Absent),
                RecordWrite::Delete {
                    id: "other".into(),
                    expect: Expect::Etag(other.etag.clone()),
                },
                RecordWrite::Patch {
                    id: "keep".into(),
                    apply: set_field(7),
                    expect: Expect::Anything,
                },
                put_write("keep", json!({}), Expect::Etag(keep.etag.clone())),
                RecordWrite::Create { data: Ok(json!({})) },
            ],
            ACTOR,
            KEEP,
        )
        .await;
    // The patch (write 3) moved `keep` on, so write 4's tag is stale there.
    let (index, cause) = failed_write(failed);
    assert_eq!(index, 4);
    assert!(matches!(cause, StoreError::ExpectationFailed), "{cause:?}");
    assert_eq!(
        all(store.clone(), c.id.clone()).await,
        before,
        "nothing of the batch was written"
    );
    assert_eq!(
        store.record(&c.id, "other").await.unwrap(),
        Lookup::Found(other.clone())
    );
    assert_eq!(
        store.record(&c.id, "new").await.unwrap(),
        Lookup::Missing,
        "no tombstone either"
    );
    for serial in ["X1", "X2"] {
        store
            .create_record(&c, json!({"serial": serial}))
            .await
            .expect("unique values of a failed batch are free");
    }

    // Two writes of the batch taking one unique value: the second conflicts.
    let failed = store
        .apply_atomically(
            &c,
            vec![
                RecordWrite::Create {
                    data: Ok(json!({"serial": "U"})),
                },
                put_write("u2", json!({"serial": "U"}), Expect::Anything),
            ],
            ACTOR,
            KEEP,
        )
        .await;
    let (index, cause) = failed_write(failed);
    assert_eq!(index, 1);
    assert!(
        matches!(cause, StoreError::Conflict { ref pointer } if pointer == "/data/serial"),
        "{cause:?}"
    );
    store
        .create_record(&c, json!({"serial": "U"}))
        .await
        .expect("U is free");

    // A refusal of the caller's checks is reported at its write, after the
    // write's own checks: an id taken comes before bad data.
    let refusal = || RejectedWrite::Invalid {
        detail: "bad".into(),
        errors: vec![("/data/x".into(), "bad".into())],
    };
    let failed = store
        .apply_atomically(
            &c,
            vec![
                put_write("fresh", json!({}), Expect::Absent),
                RecordWrite::Put {
                    id: "keep".into(),
                    data: Err(refusal()),
                    expect: Expect::Absent,
                },
            ],
            ACTOR,
            KEEP,
        )
        .await;
    assert!(matches!(failed_write(failed), (1, StoreError::ExpectationFailed)));
    let failed = store
        .apply_atomically(
            &c,
            vec![
                put_write("fresh", json!({}), Expect::Absent),
                RecordWrite::Create { data: Err(refusal()) },
            ],
            ACTOR,
            KEEP,
        )
        .await;
    assert!(matches!(
        failed_write(failed),
        (1, StoreError::Rejected(RejectedWrite::Invalid { .. }))
    ));
    assert_eq!(store.record(&c.id, "fresh").await.unwrap(), Lookup::Missing);
}

pub async fn atomic_writes_check_existence_leases_and_required_tags(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    let c = store
        .create_collection(
            &t.id,
            NewCollection {
                name: "strict".into(),
                schema: json!({"type": "object"}),
                unique: Vec::new(),
                require_if_match: true,
            },
        )
        .await
        .unwrap();
    let apply = |writes: Vec<RecordWrite>, actor: &'static str| {
        let (store, c) = (store.clone(), c.clone());
        async move { store.apply_atomically(&c, writes, actor, KEEP).await }
    };

    // Creating needs no tag; writing an existing record does, and `*` is not one.
    apply(vec![put_write("r", json!({"n": 0}), Expect::Anything)], ACTOR)
        .await
        .expect("a create names no tag");
    let r = store.record(&c.id, "r").await.unwrap().found().unwrap();
    for expect in [Expect::Anything, Expect::Exists] {
        let failed = apply(vec![put_write("r", json!({"n": 1}), expect)], ACTOR).await;
        assert!(matches!(failed_write(failed), (0, StoreError::ExpectationRequired)));
    }
    // A stale tag is 412 before the demand for a tag is considered.
    let failed = apply(vec![put_write("r", json!({"n": 1}), Expect::OneOf(Vec::new()))], ACTOR).await;
    assert!(matches!(failed_write(failed), (0, StoreError::ExpectationFailed)));

    // Someone else's lease blocks the write, at its index; the holder's passes.
    store.acquire_lease(&c.id, "r", "alice", KEEP).await.unwrap();
    let tagged = || Expect::Etag(r.etag.clone());
    let failed = apply(
        vec![
            put_write("s", json!({}), Expect::Absent),
            RecordWrite::Patch {
                id: "r".into(),
                apply: set_field(0),
                expect: tagged(),
            },
        ],
        "bob",
    )
    .await;
    assert!(matches!(failed_write(failed), (1, StoreError::Locked(l)) if l.holder == "alice"));
    assert_eq!(store.record(&c.id, "s").await.unwrap(), Lookup::Missing);
    let done = apply(
        vec![RecordWrite::Delete {
            id: "r".into(),
            expect: tagged(),
        }],
        "alice",
    )
    .await
    .unwrap();
    assert_eq!(done, [RecordWritten::Deleted]);
    assert_eq!(
        store.lease(&c.id, "r").await.unwrap(),
        None,
        "the lease went with the record"
    );

    // Patches and deletes need the record: a tombstone is Gone, nothing is Vanished.
    for (id, expected) in [("r", "gone"), ("never", "vanished")] {
        for write in [
            RecordWrite::Patch {
                id: id.into(),
                apply: set_field(0),
                expect: Expect::Anything,
            },
            RecordWrite::Delete {
                id: id.into(),
                expect: Expect::Anything,
            },
        ] {
            let (index, cause) = failed_write(apply(vec![write], ACTOR).await);
            assert_eq!(index, 0);
            match (expected, cause) {
                ("gone", StoreError::Gone) | ("vanished", StoreError::Vanished) => {}
                (_, cause) => panic!("{id}: {cause:?}"),
            }
        }
    }
    // A write earlier in the batch decides what a later one finds: a delete
    // then a patch of the same record is Gone at the patch.
    apply(vec![put_write("t", json!({}), Expect::Absent)], ACTOR)
        .await
        .unwrap();
    let t_tag = store.record(&c.id, "t").await.unwrap().found().unwrap().etag;
    let failed = apply(
        vec![
            RecordWrite::Delete {
                id: "t".into(),
                expect: Expect::Etag(t_tag),
            },
            RecordWrite::Patch {
                id: "t".into(),
                apply: set_field(0),
                expect: Expect::Anything,
            },
        ],
        ACTOR,
    )
    .await;
    assert!(matches!(failed_write(failed), (1, StoreError::Gone)));
    assert!(store.record(&c.id, "t").await.unwrap().found().is_some());
    // A replace of a deleted record re-creates it, unless it names a tag.
    let failed = apply(vec![put_write("r", json!({}), Expect::Etag(r.etag.clone()))], ACTOR).await;
    assert!(matches!(failed_write(failed), (0, StoreError::ExpectationFailed)));
    let done = apply(vec![put_write("r", json!({}), Expect::Anything)], ACTOR)
        .await
        .unwrap();
    assert!(matches!(&done[0], RecordWritten::Created(again) if again.version == 1));

    // A collection that is not there fails the batch as a whole.
    let empty = collection(&*store, &t, "empty", &[]).await;
    store
        .delete_collection(&t.id, "empty", Expect::Anything, KEEP)
        .await
        .unwrap();
    let gone = store
        .apply_atomically(&empty, vec![RecordWrite::Create { data: Ok(json!({})) }], ACTOR, KEEP)
        .await;
    assert!(matches!(gone, Err(StoreError::Vanished)), "{gone:?}");
}

/// Runs `n` copies of `delete` at once; asserts exactly one succeeds and
/// every other sees the tombstone.
async fn one_delete_wins<F, Fut>(what: &str, n: usize, delete: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = StoreResult<()>> + Send + 'static,
{
    let tasks: Vec<_> = (0..n).map(|_| tokio::spawn(delete())).collect();
    let (mut ok, mut gone) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(StoreError::Gone) => gone += 1,
            Err(e) => panic!("{what}: {e}"),
        }
    }
    assert_eq!((ok, gone), (1, n - 1), "{what}");
}

pub async fn concurrent_deletes_have_one_winner(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    let c = collection(&*store, &t, "devices", &[]).await;
    let r = store.create_record(&c, json!({})).await.unwrap();
    let (cid, rid) = (c.id.clone(), r.id.clone());
    let s = store.clone();
    one_delete_wins("record", 10, move || {
        let (s, cid, rid) = (s.clone(), cid.clone(), rid.clone());
        async move { s.delete_record(&cid, &rid, Expect::Anything, ACTOR, KEEP).await }
    })
    .await;

    store
        .create_user(&t.id, "admin@example.com", TenantRole::Admin)
        .await
        .unwrap();
    let u = store
        .create_user(&t.id, "a@example.com", TenantRole::Editor)
        .await
        .unwrap();
    let k = store.create_api_key(&t.id, &u.id, "ci", "khash").await.unwrap();
    let (uid, kid) = (u.id.clone(), k.id.clone());
    let s = store.clone();
    one_delete_wins("api key", 10, move || {
        let (s, uid, kid) = (s.clone(), uid.clone(), kid.clone());
        async move { s.revoke_api_key(&uid, &kid, Expect::Anything, KEEP).await }
    })
    .await;

    let (tid, uid) = (t.id.clone(), u.id.clone());
    let s = store.clone();
    one_delete_wins("user", 10, move || {
        let (s, tid, uid) = (s.clone(), tid.clone(), uid.clone());
        async move { s.delete_user(&tid, &uid, Expect::Anything, KEEP).await }
    })
    .await;

    let tid = t.id.clone();
    let s = store.clone();
    one_delete_wins("collection", 10, move || {
        let (s, tid) = (s.clone(), tid.clone());
        async move { s.delete_collection(&tid, "devices", Expect::Anything, KEEP).await }
    })
    .await;
}

pub async fn versions_guard_every_entity(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    assert_eq!(t.version, 1);
    let admin = store
        .create_user(&t.id, "admin@example.com", TenantRole::Admin)
        .await
        .unwrap();
    let u = store
        .create_user(&t.id, "a@example.com", TenantRole::Viewer)
        .await
        .unwrap();
    assert_eq!(u.version, 1);
    let u2 = store
        .set_user_role(&t.id, &u.id, TenantRole::Editor, Expect::Version(1))
        .await
        .unwrap();
    assert_eq!(u2.version, 2);
    assert!(u2.updated_at >= u.updated_at);
    assert!(matches!(
        store
            .set_user_role(&t.id, &u.id, TenantRole::Viewer, Expect::Version(1))
            .await,
        Err(StoreError::ExpectationFailed)
    ));
    assert!(matches!(
        store.delete_user(&t.id, &u.id, Expect::Version(1), KEEP).await,
        Err(StoreError::ExpectationFailed)
    ));

    let k = store.create_api_key(&t.id, &u.id, "ci", "khash").await.unwrap();
    assert_eq!((k.version, k.updated_at), (1, k.created_at));
    assert_eq!(store.api_key(&u.id, &k.id).await.unwrap(), Lookup::Found(k.clone()));
    assert!(matches!(
        store.revoke_api_key(&u.id, &k.id, Expect::Version(2), KEEP).await,
        Err(StoreError::ExpectationFailed)
    ));
    store
        .revoke_api_key(&u.id, &k.id, Expect::Version(1), KEEP)
        .await
        .unwrap();

    let c = collection(&*store, &t, "devices", &[]).await;
    assert!(matches!(
        store
            .delete_collection(&t.id, "devices", Expect::Version(c.version + 1), KEEP)
            .await,
        Err(StoreError::ExpectationFailed)
    ));
    store
        .delete_collection(&t.id, "devices", Expect::Version(c.version), KEEP)
        .await
        .unwrap();
    store.delete_user(&t.id, &u.id, Expect::Version(2), KEEP).await.unwrap();
    let _ = admin;
}

pub async fn tenants_keep_their_last_admin(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    let a = store
        .create_user(&t.id, "a@example.com", TenantRole::Admin)
        .await
        .unwrap();
    for role in [TenantRole::Editor, TenantRole::Viewer] {
        assert!(matches!(
            store.set_user_role(&t.id, &a.id, role, Expect::Anything).await,
            Err(StoreError::LastAdmin)
        ));
    }
    assert!(matches!(
        store.delete_user(&t.id, &a.id, Expect::Anything, KEEP).await,
        Err(StoreError::LastAdmin)
    ));
    // Re-asserting the role is fine; other tenants' admins do not count.
    store
        .set_user_role(&t.id, &a.id, TenantRole::Admin, Expect::Anything)
        .await
        .unwrap();
    let other = tenant(&*store, "other").await;
    store
        .create_user(&other.id, "x@example.com", TenantRole::Admin)
        .await
        .unwrap();
    assert!(matches!(
        store.delete_user(&t.id, &a.id, Expect::Anything, KEEP).await,
        Err(StoreError::LastAdmin)
    ));

    // Two admins demoting each other at once: exactly one succeeds.
    let b = store
        .create_user(&t.id, "b@example.com", TenantRole::Admin)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for id in [a.id.clone(), b.id.clone()] {
        let (store, tid) = (store.clone(), t.id.clone());
        tasks.push(tokio::spawn(async move {
            store
                .set_user_role(&tid, &id, TenantRole::Viewer, Expect::Anything)
                .await
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 1);
    assert!(outcomes.iter().any(|o| matches!(o, Err(StoreError::LastAdmin))));
}

/// Sorting by text longer than the cursor can carry: pages still visit every
/// record exactly once, in value order (long values sharing a prefix are kept
/// together), and each cursor stays small.
pub async fn long_sort_values_page_exactly_once(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    let c = collection(&*store, &t, "notes", &[]).await;
    let shared = "é".repeat(300);
    let values = vec![
        "a".to_owned(),
        "b".repeat(6000),
        format!("{shared}x"),
        format!("{shared}y"),
        format!("{shared}x"),
        "é".repeat(256),
        "c".to_owned(),
    ];
    for v in &values {
        store.create_record(&c, json!({"text": v})).await.unwrap();
    }
    store.create_record(&c, json!({"other": 1})).await.unwrap();
    for descending in [false, true] {
        let sort = SortOrder::Field {
            field: "text".into(),
            descending,
        };
        let mut seen: Vec<String> = Vec::new();
        let mut ids = std::collections::HashSet::new();
        let mut after = None;
        loop {
            let p = store
                .list_records(
                    &c.id,
                    RecordQuery {
                        page: PageRequest { limit: 1, after },
                        filters: vec![],
                        sort: sort.clone(),
                    },
                )
                .await
                .unwrap();
            for r in &p.items {
                assert!(ids.insert(r.id.clone()), "{} listed twice", r.id);
                seen.push(r.data.get("text").and_then(|v| v.as_str()).unwrap_or("-").to_owned());
            }
            if let Some(next) = &p.next {
                let size = serde_json::to_vec(next).unwrap().len();
                assert!(size < 1500, "cursor of {size} bytes");
            }
            after = p.next;
            if after.is_none() {
                break;
            }
        }
        assert_eq!(seen.len(), 8, "every record once");
        assert_eq!(seen.last().map(String::as_str), Some("-"), "missing values last");
        seen.pop();
        let mut expected = values.clone();
        expected.sort();
        if descending {
            expected.reverse();
        }
        // Long values with one prefix may be ordered by digest among themselves.
        let key = |v: &String| v.chars().take(256).collect::<String>();
        assert_eq!(
            seen.iter().map(key).collect::<Vec<_>>(),
            expected.iter().map(key).collect::<Vec<_>>()
        );
        let pos = |v: &str| seen.iter().position(|s| s == v).unwrap();
        let x = format!("{shared}x");
        assert_eq!(
            pos(&x).abs_diff(seen.iter().rposition(|s| *s == x).unwrap()),
            1,
            "equal values adjacent"
        );
    }
}

/// A secret is created by the first caller and returned to every later one.
pub async fn secrets_are_created_once(store: Arc<dyn Store>) {
    let first = store.secret("cursor", "one").await.unwrap();
    assert_eq!(first, "one");
    assert_eq!(store.secret("cursor", "two").await.unwrap(), "one");
    assert_eq!(store.secret("other", "three").await.unwrap(), "three");
}

// ---- Jobs ------------------------------------------------------------------

const LEASE: Duration = Duration::from_secs(30);
const LEASE_MS: i64 = 30_000;

/// A time well after the wall clock, so tombstones written "at" it are live.
fn t0() -> Millis {
    now_millis() + 1_000
}

fn new_job(t: &Tenant, kind: JobKind, with_input: bool) -> NewJob {
    NewJob {
        tenant_id: t.id.clone(),
        kind,
        params: json!({"collection": "devices"}),
        total: None,
        with_input,
    }
}

/// Claims go to the job that has waited longest; none when nothing waits.
pub async fn jobs_are_claimed_oldest_first(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    let now = t0();
    assert_eq!(store.claim_job("w1", LEASE, now).await.unwrap(), None);
    let a = store
        .create_job(new_job(&t, JobKind::Export, false), now)
        .await
        .unwrap();
    let b = store
        .create_job(new_job(&t, JobKind::DeleteCollection, false), now + 1)
        .await
        .unwrap();
    let c = store
        .create_job(new_job(&t, JobKind::Export, false), now + 2)
        .await
        .unwrap();
    assert_eq!((a.status, a.attempts, a.owner.clone()), (JobStatus::Queued, 0, None));
    let mut order = Vec::new();
    for w in ["w1", "w2", "w3"] {
        let j = store.claim_job(w, LEASE, now + 10).await.unwrap().expect("a job");
        assert_eq!(
            (j.status, j.attempts, j.owner.as_deref(), j.lease_until, j.started_at),
            (
                JobStatus::Running,
                1,
                Some(w),
                Some(now + 10 + LEASE_MS),
                Some(now + 10)
            )
        );
        order.push(j.id);
    }
    assert_eq!(order, [a.id, b.id, c.id]);
    assert_eq!(
        store.claim_job("w4", LEASE, now + 10).await.unwrap(),
        None,
        "live leases are not claimable"
    );
}

/// Of many concurrent claimers each job goes to exactly one.
pub async fn concurrent_claimers_never_share_a_job(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    let now = t0();
    let n = 20;
    for i in 0..n {
        store
            .create_job(new_job(&t, JobKind::Export, false), now + i)
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for w in 0..(2 * n) {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.claim_job(&format!("w{w}"), LEASE, now + 100).await.unwrap()
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        if let Some(j) = task.await.unwrap() {
            ids.push(j.id);
        }
    }
    assert_eq!(
        ids.len(),
        n as usize,
        "every job claimed once, the other claimers got none"
    );
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n as usize, "no job went to two claimers");
}

/// An expired lease lets another owner claim the job (attempts + 1, the
/// checkpoint kept); the old owner's heartbeat, checkpoint, result and
/// finish then fail, and so do any non-holder's.
pub async fn expired_leases_pass_the_job_on(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    let now = t0();
    let job = store
        .create_job(new_job(&t, JobKind::Import, false), now)
        .await
        .unwrap();
    let j = store.claim_job("w1", LEASE, now).await.unwrap().unwrap();
    let progress = Progress {
        done: 5,
        total: Some(10),
    };
    let saved = store
        .checkpoint(
            &t.id,
            &j.id,
            "w1",
            json!({"line": 5}),
            progress,
            now + LEASE_MS,
            now + 1,
        )
        .await
        .unwrap();
    assert_eq!((saved.checkpoint, saved.progress), (Some(json!({"line": 5})), progress));
    // Not the holder: refused, whatever the call.
    let lost = |r: StoreResult<Job>| matches!(r, Err(StoreError::LeaseLost));
    assert!(lost(store.heartbeat(&t.id, &j.id, "w2", now + 99_999, now + 2).await));
    assert!(lost(
        store
            .checkpoint(&t.id, &j.id, "w2", json!({}), progress, now + 99_999, now + 2)
            .await
    ));
    assert!(lost(
        store
            .finish_job(
                &t.id,
                &j.id,
                "w2",
                JobOutcome::Succeeded { result: None },
                now + 2,
                KEEP
            )
            .await
    ));
    assert!(matches!(
        store
            .append_job_result(&t.id, &j.id, "w2", 0, b"x".to_vec(), now + 2)
            .await,
        Err(StoreError::LeaseLost)
    ));
    // A heartbeat keeps the lease; nobody claims it meanwhile.
    let beat = store
        .heartbeat(&t.id, &j.id, "w1", now + 2 * LEASE_MS, now + LEASE_MS - 1)
        .await
        .unwrap();
    assert_eq!(beat.lease_until, Some(now + 2 * LEASE_MS));
    assert_eq!(store.claim_job("w2", LEASE, now + LEASE_MS + 1).await.unwrap(), None);
    // The lease runs out: the holder cannot use it any more, and w2 claims.
    let late = now + 2 * LEASE_MS;
    assert!(lost(store.heartbeat(&t.id, &j.id, "w1", late + LEASE_MS, late).await));
    let again = store
        .claim_job("w2", LEASE, late)
        .await
        .unwrap()
        .expect("expired lease is claimable");
    assert_eq!(again.id, job.id);
    assert_eq!(
        (
            again.attempts,
            again.owner.as_deref(),
            again.checkpoint.clone(),
            again.progress
        ),
        (2, Some("w2"), Some(json!({"line": 5})), progress)
    );
    assert_eq!(again.started_at, Some(now), "first start kept");
    assert!(lost(
        store
            .checkpoint(
                &t.id,
                &j.id,
                "w1",
                json!({"line": 9}),
                progress,
                late + LEASE_MS,
                late + 1
            )
            .await
    ));
    assert!(lost(
        store
            .finish_job(
                &t.id,
                &j.id,
                "w1",
                JobOutcome::Succeeded { result: None },
                late + 1,
                KEEP
            )
            .await
    ));
    let done = store
        .finish_job(
            &t.id,
            &j.id,
            "w2",
            JobOutcome::Succeeded {
                result: Some(json!({"imported": 10})),
            },
            late + 2,
            KEEP,
        )
        .await
        .unwrap();
    assert_eq!(
        (
            done.status,
            done.result.clone(),
            done.finished_at,
            done.result_expires_at,
            done.lease_until
        ),
        (
            JobStatus::Succeeded,
            Some(json!({"imported": 10})),
            Some(late + 2),
            Some(late + 2 + KEEP.as_millis() as i64),
            None
        )
    );
    assert!(
        lost(store.heartbeat(&t.id, &j.id, "w2", late + LEASE_MS, late + 3).await),
        "finished: no lease"
    );
    assert_eq!(
        store.claim_job("w3", LEASE, late + 10 * LEASE_MS).await.unwrap(),
        None,
        "finished jobs are never claimed"
    );
    assert_eq!(store.job(&t.id, &j.id).await.unwrap(), Lookup::Found(done));

    let failed = store
        .create_job(new_job(&t, JobKind::Export, false), late)
        .await
        .unwrap();
    store.claim_job("w4", LEASE, late).await.unwrap().unwrap();
    let f = store
        .finish_job(
            &t.id,
            &failed.id,
            "w4",
            JobOutcome::Failed {
                problem: json!({"status": 500}),
            },
            late + 1,
            KEEP,
        )
        .await
        .unwrap();
    assert_eq!(
        (f.status, f.problem, f.result),
        (JobStatus::Failed, Some(json!({"status": 500})), None)
    );
}

/// Cancel: queued and running jobs become canceled (the worker loses its
/// lease); a finished job is a typed conflict; nothing there is Vanished.
pub async fn cancel_stops_unfinished_jobs_only(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    let now = t0();
    let queued = store
        .create_job(new_job(&t, JobKind::Export, false), now)
        .await
        .unwrap();
    let c = store.cancel_job(&t.id, &queued.id, now + 1, KEEP).await.unwrap();
    assert_eq!((c.status, c.finished_at), (JobStatus::Canceled, Some(now + 1)));
    assert_eq!(
        store.claim_job("w1", LEASE, now + 2).await.unwrap(),
        None,
        "canceled jobs are not claimed"
    );

    let running = store
        .create_job(new_job(&t, JobKind::Export, false), now)
        .await
        .unwrap();
    store.claim_job("w1", LEASE, now + 2).await.unwrap().unwrap();
    store.cancel_job(&t.id, &running.id, now + 3, KEEP).await.unwrap();
    assert!(matches!(
        store.heartbeat(&t.id, &running.id, "w1", now + LEASE_MS, now + 4).await,
        Err(StoreError::LeaseLost)
    ));
    assert!(matches!(
        store
            .finish_job(
                &t.id,
                &running.id,
                "w1",
                JobOutcome::Succeeded { result: None },
                now + 4,
                KEEP
            )
            .await,
        Err(StoreError::LeaseLost)
    ));
    assert!(matches!(
        store.cancel_job(&t.id, &running.id, now + 5, KEEP).await,
        Err(StoreError::JobFinished(JobStatus::Canceled))
    ));

    let finished = store
        .create_job(new_job(&t, JobKind::Export, false), now)
        .await
        .unwrap();
    store.claim_job("w2", LEASE, now + 5).await.unwrap().unwrap();
    store
        .finish_job(
            &t.id,
            &finished.id,
            "w2",
            JobOutcome::Succeeded { result: None },
            now + 6,
            KEEP,
        )
        .await
        .unwrap();
    assert!(matches!(
        store.cancel_job(&t.id, &finished.id, now + 7, KEEP).await,
        Err(StoreError::JobFinished(JobStatus::Succeeded))
    ));
    assert!(matches!(
        store.cancel_job(&t.id, "no-such-job", now + 7, KEEP).await,
        Err(StoreError::Vanished)
    ));

    // A staged job (its upload failed) is dropped with its input.
    let staged = store.create_job(new_job(&t, JobKind::Import, true), now).await.unwrap();
    store
        .append_job_input(&t.id, &staged.id, 0, b"part".to_vec())
        .await
        .unwrap();
    let dropped = store.cancel_job(&t.id, &staged.id, now + 8, KEEP).await.unwrap();
    assert_eq!(dropped.status, JobStatus::Canceled);
    assert_eq!(store.job(&t.id, &staged.id).await.unwrap(), Lookup::Missing);
    assert_eq!(store.read_job_input(&t.id, &staged.id, 0).await.unwrap(), None);
}

/// Inputs: chunks round-trip in order; a job is not claimable, visible or
/// listed before its input is complete; a retried chunk replaces the tail.
pub async fn job_inputs_stream_in_chunks_before_enqueue(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    let now = t0();
    let job = store.create_job(new_job(&t, JobKind::Import, true), now).await.unwrap();
    assert_eq!(job.status, JobStatus::Staged);
    let chunks: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 1000 + i as usize]).collect();
    for (seq, chunk) in chunks.iter().enumerate() {
        store
            .append_job_input(&t.id, &job.id, seq as i64, chunk.clone())
            .await
            .unwrap();
        assert_eq!(
            store.claim_job("w1", LEASE, now + 1).await.unwrap(),
            None,
            "staged: not claimable"
        );
    }
    assert!(matches!(
        store.append_job_input(&t.id, &job.id, 7, b"gap".to_vec()).await,
        Err(StoreError::ExpectationFailed)
    ));
    // A retried chunk 4 replaces it (and would drop anything after it).
    store
        .append_job_input(&t.id, &job.id, 4, chunks[4].clone())
        .await
        .unwrap();
    assert_eq!(
        store.job(&t.id, &job.id).await.unwrap(),
        Lookup::Missing,
        "not accepted yet"
    );
    assert!(store.list_jobs(&t.id, first_page(10)).await.unwrap().items.is_empty());

    let queued = store.enqueue_job(&t.id, &job.id, now + 2).await.unwrap();
    let total: usize = chunks.iter().map(Vec::len).sum();
    assert_eq!(
        (queued.status, queued.input_chunks, queued.input_bytes, queued.queued_at),
        (JobStatus::Queued, 5, total as i64, Some(now + 2))
    );
    assert!(matches!(
        store.append_job_input(&t.id, &job.id, 5, b"late".to_vec()).await,
        Err(StoreError::ExpectationFailed)
    ));
    assert!(matches!(
        store.enqueue_job(&t.id, &job.id, now + 3).await,
        Err(StoreError::ExpectationFailed)
    ));
    let claimed = store.claim_job("w1", LEASE, now + 3).await.unwrap().unwrap();
    assert_eq!(claimed.id, job.id);
    let mut read = Vec::new();
    let mut seq = 0;
    while let Some(chunk) = store.read_job_input(&t.id, &job.id, seq).await.unwrap() {
        read.push(chunk);
        seq += 1;
    }
    assert_eq!(read, chunks);
    assert_eq!(store.list_jobs(&t.id, first_page(10)).await.unwrap().items.len(), 1);

    // Results stream the same way, written by the holder only.
    for seq in 0..3 {
        store
            .append_job_result(&t.id, &job.id, "w1", seq, vec![b'r', seq as u8], now + 4)
            .await
            .unwrap();
    }
    // A retry from a checkpoint at chunk 1 rewrites from there.
    store
        .append_job_result(&t.id, &job.id, "w1", 1, b"R1".to_vec(), now + 5)
        .await
        .unwrap();
    let done = store
        .finish_job(
            &t.id,
            &job.id,
            "w1",
            JobOutcome::Succeeded { result: None },
            now + 6,
            2 * JOB_STAGING_TTL,
        )
        .await
        .unwrap();
    assert_eq!((done.result_chunks, done.result_bytes), (2, 4));
    assert_eq!(
        store.read_job_result(&t.id, &job.id, 0).await.unwrap(),
        Some(vec![b'r', 0])
    );
    assert_eq!(
        store.read_job_result(&t.id, &job.id, 1).await.unwrap(),
        Some(b"R1".to_vec())
    );
    assert_eq!(store.read_job_result(&t.id, &job.id, 2).await.unwrap(), None);

    // An abandoned upload is dropped by the purge, without a tombstone.
    let abandoned = store.create_job(new_job(&t, JobKind::Import, true), now).await.unwrap();
    store
        .append_job_input(&t.id, &abandoned.id, 0, b"half".to_vec())
        .await
        .unwrap();
    let deadline = abandoned.lease_until.expect("a staging deadline");
    assert_eq!(store.purge_expired_jobs(deadline - 1, KEEP).await.unwrap(), 0);
    assert_eq!(store.purge_expired_jobs(deadline, KEEP).await.unwrap(), 1);
    assert!(matches!(
        store.append_job_input(&t.id, &abandoned.id, 1, b"rest".to_vec()).await,
        Err(StoreError::Vanished)
    ));
    assert_eq!(store.read_job_input(&t.id, &abandoned.id, 0).await.unwrap(), None);
}

/// Another tenant's job answers as one that never existed.
pub async fn other_tenants_jobs_are_missing(store: Arc<dyn Store>) {
    let a = tenant(&*store, "acme").await;
    let b = tenant(&*store, "other").await;
    let now = t0();
    let job = store.create_job(new_job(&a, JobKind::Export, true), now).await.unwrap();
    store
        .append_job_input(&a.id, &job.id, 0, b"secret".to_vec())
        .await
        .unwrap();
    assert!(matches!(
        store.append_job_input(&b.id, &job.id, 1, b"x".to_vec()).await,
        Err(StoreError::Vanished)
    ));
    assert!(matches!(
        store.enqueue_job(&b.id, &job.id, now).await,
        Err(StoreError::Vanished)
    ));
    store.enqueue_job(&a.id, &job.id, now).await.unwrap();
    assert!(matches!(store.job(&a.id, &job.id).await.unwrap(), Lookup::Found(_)));
    assert_eq!(store.job(&b.id, &job.id).await.unwrap(), Lookup::Missing);
    assert!(store.list_jobs(&b.id, first_page(10)).await.unwrap().items.is_empty());
    assert_eq!(store.read_job_input(&b.id, &job.id, 0).await.unwrap(), None);
    assert!(matches!(
        store.cancel_job(&b.id, &job.id, now, KEEP).await,
        Err(StoreError::Vanished)
    ));
    let claimed = store.claim_job("w1", LEASE, now).await.unwrap().unwrap();
    assert!(matches!(
        store.heartbeat(&b.id, &claimed.id, "w1", now + LEASE_MS, now + 1).await,
        Err(StoreError::LeaseLost)
    ));
}

/// Finished jobs are kept until `result_expires_at`, then purged with their
/// blobs, leaving a tombstone (Gone); unfinished jobs are never purged.
pub async fn purged_jobs_are_gone(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    let now = t0();
    let job = store
        .create_job(new_job(&t, JobKind::Export, false), now)
        .await
        .unwrap();
    let waiting = store
        .create_job(new_job(&t, JobKind::Export, false), now + 1)
        .await
        .unwrap();
    store.claim_job("w1", LEASE, now).await.unwrap().unwrap();
    store
        .append_job_result(&t.id, &job.id, "w1", 0, b"rows".to_vec(), now + 1)
        .await
        .unwrap();
    let done = store
        .finish_job(
            &t.id,
            &job.id,
            "w1",
            JobOutcome::Succeeded { result: None },
            now + 2,
            JOB_RESULT_RETENTION,
        )
        .await
        .unwrap();
    let expires = done.result_expires_at.unwrap();
    assert!(expires - done.finished_at.unwrap() >= 24 * 3600 * 1000);
    assert_eq!(
        store.purge_expired_jobs(expires - 1, KEEP).await.unwrap(),
        0,
        "kept until it expires"
    );
    assert_eq!(
        store.read_job_result(&t.id, &job.id, 0).await.unwrap(),
        Some(b"rows".to_vec())
    );
    assert_eq!(store.purge_expired_jobs(expires, KEEP).await.unwrap(), 1);
    assert_eq!(store.job(&t.id, &job.id).await.unwrap(), Lookup::Gone);
    assert_eq!(store.read_job_result(&t.id, &job.id, 0).await.unwrap(), None);
    assert!(matches!(
        store.cancel_job(&t.id, &job.id, expires, KEEP).await,
        Err(StoreError::Gone)
    ));
    assert!(matches!(store.job(&t.id, &waiting.id).await.unwrap(), Lookup::Found(j) if j.status == JobStatus::Queued));
    assert_eq!(store.list_jobs(&t.id, first_page(10)).await.unwrap().items.len(), 1);
}

/// A job's checkpoint, progress and lease survive closing and reopening the
/// store: after a crash the job is resumed from its checkpoint by the next
/// claimer once the dead worker's lease expires, never lost. `open` opens
/// the same database each time.
pub async fn jobs_survive_reopen(open: impl Fn() -> Arc<dyn Store>) {
    let now = t0();
    let (tenant_id, job_id) = {
        let store = open();
        let t = tenant(&*store, "acme").await;
        let job = store.create_job(new_job(&t, JobKind::Import, true), now).await.unwrap();
        store
            .append_job_input(&t.id, &job.id, 0, b"{\"n\":1}\n".to_vec())
            .await
            .unwrap();
        store.enqueue_job(&t.id, &job.id, now).await.unwrap();
        store.claim_job("w1", LEASE, now).await.unwrap().unwrap();
        store
            .checkpoint(
                &t.id,
                &job.id,
                "w1",
                json!({"line": 1}),
                Progress { done: 1, total: None },
                now + LEASE_MS,
                now + 1,
            )
            .await
            .unwrap();
        (t.id, job.id)
        // The process "dies" here, holding the lease.
    };
    let store = open();
    let j = store.job(&tenant_id, &job_id).await.unwrap().found().expect("not lost");
    assert_eq!(
        (j.status, j.checkpoint.clone()),
        (JobStatus::Running, Some(json!({"line": 1})))
    );
    assert_eq!(
        store.claim_job("w2", LEASE, now + 2).await.unwrap(),
        None,
        "the lease still runs"
    );
    let resumed = store.claim_job("w2", LEASE, now + LEASE_MS).await.unwrap().unwrap();
    assert_eq!(
        (
            resumed.id.as_str(),
            resumed.attempts,
            resumed.checkpoint,
            resumed.progress.done
        ),
        (job_id.as_str(), 2, Some(json!({"line": 1})), 1)
    );
    assert_eq!(
        store.read_job_input(&tenant_id, &job_id, 0).await.unwrap(),
        Some(b"{\"n\":1}\n".to_vec())
    );
}

/// `close` lets every write submitted before it commit, answers each, and
/// refuses writes after it; what was acknowledged can still be read.
pub async fn close_finishes_submitted_writes_and_refuses_later_ones(store: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for i in 0..100 {
        let store = store.clone();
        tasks.push(tokio::spawn(
            async move { (i, store.create_tenant(&format!("t{i}")).await) },
        ));
    }
    tokio::task::yield_now().await;
    store.close().await.expect("close");
    let mut acknowledged = Vec::new();
    for task in tasks {
        let (i, created) = task.await.expect("task");
        match created {
            Ok(_) => acknowledged.push(i),
            Err(StoreError::Unavailable(_)) => {}
            Err(e) => panic!("a write before close failed otherwise: {e}"),
        }
    }
    for i in acknowledged {
        assert!(matches!(
            store.tenant(&format!("t{i}")).await.expect("read"),
            Lookup::Found(_)
        ));
    }
    assert!(matches!(
        store.create_tenant("later").await,
        Err(StoreError::Unavailable(_))
    ));
}

pub async fn maintenance_is_off_until_set_and_versioned(store: Arc<dyn Store>) {
    let initial = store.maintenance().await.unwrap();
    assert!(!initial.enabled);
    assert!(initial.message.is_empty());
    let on = MaintenanceSetting {
        enabled: true,
        retry_after_seconds: 120,
        message: "Upgrading storage".into(),
    };
    let set = store
        .set_maintenance(on.clone(), Expect::Version(initial.version), 1_000)
        .await
        .unwrap();
    assert!(set.enabled);
    assert_eq!(
        (set.retry_after_seconds, set.message.as_str()),
        (120, "Upgrading storage")
    );
    assert_eq!(set.version, initial.version + 1);
    assert_eq!(set.updated_at, 1_000);
    assert_eq!(store.maintenance().await.unwrap(), set);
    // A change made against an older version is refused and changes nothing.
    let stale = store
        .set_maintenance(
            MaintenanceSetting {
                enabled: false,
                ..on.clone()
            },
            Expect::Version(initial.version),
            2_000,
        )
        .await;
    assert!(matches!(stale, Err(StoreError::ExpectationFailed)), "{stale:?}");
    assert_eq!(store.maintenance().await.unwrap(), set);
    let off = store
        .set_maintenance(
            MaintenanceSetting {
                enabled: false,
                retry_after_seconds: 300,
                message: String::new(),
            },
            Expect::Anything,
            3_000,
        )
        .await
        .unwrap();
    assert!(!off.enabled);
    assert_eq!(off.version, set.version + 1);
}

pub async fn quota_usage_adds_up_per_tenant_and_day(store: Arc<dyn Store>) {
    let usage = |tenant: &str, day: u32, used: i64| QuotaUsage {
        tenant_id: tenant.into(),
        day,
        used,
    };
    let sorted = |mut v: Vec<QuotaUsage>| {
        v.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
        v
    };
    assert!(store.add_quota_usage(vec![], 20_000).await.unwrap().is_empty());
    let totals = store
        .add_quota_usage(
            vec![usage("a", 20_000, 5), usage("b", 20_000, 2), usage("a", 19_999, 7)],
            20_000,
        )
        .await
        .unwrap();
    assert_eq!(sorted(totals), vec![usage("a", 20_000, 5), usage("b", 20_000, 2)]);
    // Deltas add (two nodes, or one node's successive flushes); a refund
    // subtracts but never goes below zero; other days stay apart.
    let totals = store
        .add_quota_usage(vec![usage("a", 20_000, 3), usage("b", 20_000, -5)], 20_000)
        .await
        .unwrap();
    assert_eq!(sorted(totals), vec![usage("a", 20_000, 8), usage("b", 20_000, 0)]);
    let yesterday = store.add_quota_usage(vec![], 19_999).await.unwrap();
    assert_eq!(yesterday, vec![usage("a", 19_999, 7)]);
    // Concurrent flushes lose nothing.
    let flushes = (0..8).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.add_quota_usage(vec![usage("c", 20_000, 10)], 20_000).await })
    });
    for f in flushes {
        f.await.unwrap().unwrap();
    }
    let totals = sorted(store.add_quota_usage(vec![], 20_000).await.unwrap());
    assert_eq!(totals[2], usage("c", 20_000, 80));
}

pub async fn the_generation_moves_with_what_caches_hold_and_only_with_it(store: Arc<dyn Store>) {
    let moved = |before: u64, what: &str| {
        let now = store.generation();
        assert!(now > before, "{what} moves the generation");
        now
    };
    let g = store.generation();
    let t = tenant(&*store, "acme").await;
    let g = moved(g, "a new tenant");
    let c = collection(&*store, &t, "devices", &[]).await;
    let g = moved(g, "a new collection");
    let u = store
        .create_user(&t.id, "a@example.com", TenantRole::Editor)
        .await
        .unwrap();
    let g = moved(g, "a new user");
    let k = store.create_api_key(&t.id, &u.id, "ci", "khash").await.unwrap();
    let g = moved(g, "a new key");
    // Records, leases and jobs are not cached: they leave it alone.
    let r = store.create_record(&c, json!({"n": 1})).await.unwrap();
    store
        .put_record(&c, &r.id, json!({"n": 2}), Expect::Anything, ACTOR)
        .await
        .unwrap();
    assert_eq!(store.generation(), g, "record writes do not move it");
    store
        .set_user_role(&t.id, &u.id, TenantRole::Viewer, Expect::Anything)
        .await
        .unwrap();
    let g = moved(g, "a role change");
    let changes = CollectionChanges {
        name: Some("things".into()),
        schema: None,
        unique: None,
        require_if_match: None,
    };
    store
        .update_collection(&t.id, "devices", changes, Expect::Anything)
        .await
        .unwrap();
    let g = moved(g, "a rename");
    store
        .set_tenant_limits("acme", TenantLimits::default(), Expect::Anything)
        .await
        .unwrap();
    let g = moved(g, "a tenant's limits");
    store
        .revoke_api_key(&u.id, &k.id, Expect::Anything, Duration::from_secs(60))
        .await
        .unwrap();
    moved(g, "a revocation");
}

pub async fn a_raw_record_is_the_record_with_its_stored_text(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    let c = collection(&*store, &t, "devices", &[]).await;
    let data = json!({"z": 1, "a": [1.5, "x\"y", null], "m": {"é": "\u{1}"}, "n": 12345678901234567890u64});
    let r = store.create_record(&c, data.clone()).await.unwrap();
    let Lookup::Found(raw) = store.raw_record(&c.id, &r.id).await.unwrap() else {
        panic!("found");
    };
    assert_eq!(
        (
            raw.id.as_str(),
            raw.version,
            raw.etag.as_str(),
            raw.created_at,
            raw.updated_at
        ),
        (r.id.as_str(), r.version, r.etag.as_str(), r.created_at, r.updated_at)
    );
    // The stored text is the compact form the JSON writer gives.
    assert_eq!(raw.data, serde_json::to_string(&data).unwrap());
    assert_eq!(store.raw_record(&c.id, "nope").await.unwrap(), Lookup::Missing);
    store
        .delete_record(&c.id, &r.id, Expect::Anything, ACTOR, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(store.raw_record(&c.id, &r.id).await.unwrap(), Lookup::Gone);
}

/// Runs every conformance test, each on a fresh store from `make`.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make;
            tenants_are_unique_by_name,
            lists_page_by_cursor,
            users_keys_and_authentication,
            tenant_limits_are_versioned_and_come_with_the_key,
            records_crud_versions_and_tombstones,
            unique_fields_conflict_by_pointer,
            collections_delete_only_when_empty,
            record_lists_filter_sort_and_page,
            concurrent_writes_all_commit,
            same_expectation_has_one_winner,
            leases_block_other_writers_until_released_or_expired,
            renamed_collections_leave_redirects,
            idempotency_keys_claim_replay_and_expire,
            patches_apply_inside_the_write,
            absent_records_are_created_together_each_on_its_own,
            atomic_writes_apply_in_order_all_together,
            atomic_writes_roll_back_entirely_at_the_first_failure,
            atomic_writes_check_existence_leases_and_required_tags,
            concurrent_deletes_have_one_winner,
            versions_guard_every_entity,
            tenants_keep_their_last_admin,
            long_sort_values_page_exactly_once,
            secrets_are_created_once,
            maintenance_is_off_until_set_and_versioned,
            quota_usage_adds_up_per_tenant_and_day,
            the_generation_moves_with_what_caches_hold_and_only_with_it,
            a_raw_record_is_the_record_with_its_stored_text,
            jobs_are_claimed_oldest_first,
            concurrent_claimers_never_share_a_job,
            expired_leases_pass_the_job_on,
            cancel_stops_unfinished_jobs_only,
            job_inputs_stream_in_chunks_before_enqueue,
            other_tenants_jobs_are_missing,
            purged_jobs_are_gone,
            deleting_a_tenant_tombstones_it_with_its_job,
            concurrent_tenant_deletes_have_one_winner,
            tenant_deletion_steps_empty_the_tenant_and_count_what_went,
            tenant_deletion_steps_need_the_lease,
            a_stopped_tenant_deletion_starts_again,
            close_finishes_submitted_writes_and_refuses_later_ones,
            devices_crud_versions_and_tombstones,
            device_headers_are_kept_as_given,
            device_tls_settings_are_kept_and_replaced,
            devices_are_per_tenant,
            a_recreated_record_is_never_missing,
            a_recreated_collection_is_never_missing,
            a_recreated_device_is_never_missing,
            writes_to_a_recreated_device_are_never_vanished,
            writes_to_a_recreated_collection_are_never_vanished,
            writes_to_a_recreated_tenant_are_never_vanished,
        );
    };
    (@each $make:expr; $($name:ident,)+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (store, _guard) = $make;
                conformance::$name(store).await;
            }
        )+
    };
}
