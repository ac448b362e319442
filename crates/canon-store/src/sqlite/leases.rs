//! Leases (locks) on records ([`LeaseStore`]).

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use super::records::load_record;
use super::rows::*;
use crate::model::*;
use crate::prelude::*;
use crate::{StoreError, StoreResult};

/// The record's lease, unless it expired.
pub(super) fn live_lease(conn: &Connection, collection_id: &str, record_id: &str) -> StoreResult<Option<Lease>> {
    conn.prepare_cached(
        "SELECT holder, acquired_at, expires_at FROM locks
         WHERE collection_id = ?1 AND record_id = ?2 AND expires_at > ?3",
    )
    .and_then(|mut s| {
        s.query_row(params![collection_id, record_id, now_millis()], lease_row)
            .optional()
    })
    .map_err(db_error)
}

/// Fails with [`StoreError::Locked`] when someone other than `actor` holds
/// a live lease on the record.
pub(super) fn check_lease(conn: &Connection, collection_id: &str, record_id: &str, actor: &str) -> StoreResult<()> {
    match live_lease(conn, collection_id, record_id)? {
        Some(lease) if lease.holder != actor => Err(StoreError::Locked(lease)),
        _ => Ok(()),
    }
}

#[async_trait]
impl LeaseStore for SqliteStore {
    async fn lease(&self, collection_id: &str, record_id: &str) -> StoreResult<Option<Lease>> {
        self.engine
            .read_point(|c| live_lease(c, collection_id, record_id))
            .await
    }

    async fn acquire_lease(
        &self,
        collection_id: &str,
        record_id: &str,
        holder: &str,
        ttl: Duration,
    ) -> StoreResult<(Lease, bool)> {
        let (collection_id, record_id, holder) = (collection_id.to_owned(), record_id.to_owned(), holder.to_owned());
        self.engine
            .write(move |c| {
                if load_record(c, &collection_id, &record_id)?.is_none() {
                    return Err(StoreError::Vanished);
                }
                let now = now_millis();
                let current = live_lease(c, &collection_id, &record_id)?;
                let renewed = match current {
                    Some(lease) if lease.holder != holder => return Err(StoreError::Locked(lease)),
                    Some(lease) => Some(lease),
                    None => None,
                };
                let lease = Lease {
                    holder,
                    acquired_at: renewed.as_ref().map_or(now, |l| l.acquired_at),
                    expires_at: now.saturating_add(retention_ms(ttl)),
                };
                c.execute(
                    "INSERT INTO locks (collection_id, record_id, holder, acquired_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (collection_id, record_id) DO UPDATE SET
                       holder = excluded.holder, acquired_at = excluded.acquired_at, expires_at = excluded.expires_at",
                    params![collection_id, record_id, lease.holder, lease.acquired_at, lease.expires_at],
                )
                .map_err(db_error)?;
                Ok((lease, renewed.is_none()))
            })
            .await
    }

    async fn release_lease(&self, collection_id: &str, record_id: &str, holder: Option<&str>) -> StoreResult<bool> {
        let (collection_id, record_id, holder) = (
            collection_id.to_owned(),
            record_id.to_owned(),
            holder.map(str::to_owned),
        );
        self.engine
            .write(move |c| {
                let Some(lease) = live_lease(c, &collection_id, &record_id)? else {
                    return Ok(false);
                };
                if holder.as_ref().is_some_and(|h| *h != lease.holder) {
                    return Err(StoreError::Locked(lease));
                }
                c.execute(
                    "DELETE FROM locks WHERE collection_id = ?1 AND record_id = ?2",
                    [&collection_id, &record_id],
                )
                .map_err(db_error)?;
                Ok(true)
            })
            .await
    }
}
