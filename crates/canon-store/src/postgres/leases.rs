//! Leases (locks) on records ([`LeaseStore`]). A lease and the writes it
//! guards take the same advisory lock (the record's), so a lease taken
//! while a write is checking waits for that write, and the other way round.

use std::time::Duration;

use async_trait::async_trait;

use super::PostgresStore;
use super::records::{load_record, lock_record};
use super::rows::*;
use crate::model::*;
use crate::prelude::*;
use crate::{StoreError, StoreResult};

/// The record's lease, unless it expired.
pub(super) async fn live_lease(c: &impl Db, collection_id: &str, record_id: &str) -> StoreResult<Option<Lease>> {
    let now = now_millis();
    let row = c
        .query_typed_opt(
            &format!(
                "SELECT holder, acquired_at, expires_at FROM locks
                 WHERE tenant_id = {TENANT_OF_COLLECTION} AND collection_id = $1 AND record_id = $2
                   AND expires_at > $3"
            ),
            &[text(&collection_id), text(&record_id), int(&now)],
        )
        .await?;
    row.map(|r| lease_row(&r)).transpose()
}

/// Fails with [`StoreError::Locked`] when someone other than `actor` holds
/// a live lease on the record.
pub(super) async fn check_lease(c: &impl Db, collection_id: &str, record_id: &str, actor: &str) -> StoreResult<()> {
    match live_lease(c, collection_id, record_id).await? {
        Some(lease) if lease.holder != actor => Err(StoreError::Locked(lease)),
        _ => Ok(()),
    }
}

#[async_trait]
impl LeaseStore for PostgresStore {
    async fn lease(&self, collection_id: &str, record_id: &str) -> StoreResult<Option<Lease>> {
        self.pool
            .run(async {
                let c = self.pool.conn().await?;
                live_lease(c.client(), collection_id, record_id).await
            })
            .await
    }

    async fn acquire_lease(
        &self,
        collection_id: &str,
        record_id: &str,
        holder: &str,
        ttl: Duration,
    ) -> StoreResult<(Lease, bool)> {
        self.pool
            .write(false, async |tx| {
                lock_record(tx, collection_id, record_id).await?;
                if load_record(tx, collection_id, record_id).await?.is_none() {
                    return Err(StoreError::Vanished);
                }
                let now = now_millis();
                let renewed = match live_lease(tx, collection_id, record_id).await? {
                    Some(lease) if lease.holder != holder => return Err(StoreError::Locked(lease)),
                    Some(lease) => Some(lease),
                    None => None,
                };
                let lease = Lease {
                    holder: holder.to_owned(),
                    acquired_at: renewed.as_ref().map_or(now, |l| l.acquired_at),
                    expires_at: now.saturating_add(retention_ms(ttl)),
                };
                tx.execute_typed(
                    &format!(
                        "INSERT INTO locks (tenant_id, collection_id, record_id, holder, acquired_at, expires_at)
                             VALUES ({TENANT_OF_COLLECTION}, $1, $2, $3, $4, $5)
                             ON CONFLICT (tenant_id, collection_id, record_id) DO UPDATE SET
                               holder = excluded.holder, acquired_at = excluded.acquired_at,
                               expires_at = excluded.expires_at"
                    ),
                    &[
                        text(&collection_id),
                        text(&record_id),
                        text(&lease.holder),
                        int(&lease.acquired_at),
                        int(&lease.expires_at),
                    ],
                )
                .await?;
                Ok((lease, renewed.is_none()))
            })
            .await
    }

    async fn release_lease(&self, collection_id: &str, record_id: &str, holder: Option<&str>) -> StoreResult<bool> {
        self.pool
            .write(false, async |tx| {
                lock_record(tx, collection_id, record_id).await?;
                let Some(lease) = live_lease(tx, collection_id, record_id).await? else {
                    return Ok(false);
                };
                if holder.is_some_and(|h| h != lease.holder) {
                    return Err(StoreError::Locked(lease));
                }
                tx.execute_typed(
                    &format!(
                        "DELETE FROM locks WHERE tenant_id = {TENANT_OF_COLLECTION} AND collection_id = $1
                             AND record_id = $2"
                    ),
                    &[text(&collection_id), text(&record_id)],
                )
                .await?;
                Ok(true)
            })
            .await
    }
}
