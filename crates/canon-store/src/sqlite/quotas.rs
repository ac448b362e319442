//! Daily quota usage ([`QuotaStore`]): one row per tenant and UTC day.

use async_trait::async_trait;
use rusqlite::{Connection, params};

use super::SqliteStore;
use super::rows::*;
use crate::StoreResult;
use crate::model::*;
use crate::prelude::*;

fn totals(c: &Connection, day: u32) -> StoreResult<Vec<QuotaUsage>> {
    let mut s = c
        .prepare_cached("SELECT tenant_id, used FROM quota_usage WHERE day = ?1")
        .map_err(db_error)?;
    let rows = s
        .query_map([day], |r| {
            Ok(QuotaUsage {
                tenant_id: r.get(0)?,
                day,
                used: r.get(1)?,
            })
        })
        .map_err(db_error)?;
    rows.collect::<Result<_, _>>().map_err(db_error)
}

#[async_trait]
impl QuotaStore for SqliteStore {
    async fn add_quota_usage(&self, deltas: Vec<QuotaUsage>, day: u32) -> StoreResult<Vec<QuotaUsage>> {
        if deltas.is_empty() {
            return self.engine.read(move |c| totals(c, day)).await;
        }
        self.engine
            .write(move |c| {
                for d in &deltas {
                    let added = c
                        .prepare_cached(
                            "UPDATE quota_usage SET used = MAX(0, used + ?3) WHERE tenant_id = ?1 AND day = ?2",
                        )
                        .and_then(|mut s| s.execute(params![d.tenant_id, d.day, d.used]))
                        .map_err(db_error)?;
                    if added == 0 {
                        c.prepare_cached("INSERT INTO quota_usage (tenant_id, day, used) VALUES (?1, ?2, MAX(0, ?3))")
                            .and_then(|mut s| s.execute(params![d.tenant_id, d.day, d.used]))
                            .map_err(db_error)?;
                    }
                }
                totals(c, day)
            })
            .await
    }
}
