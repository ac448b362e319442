//! Daily quota usage ([`QuotaStore`]): one row per tenant and UTC day,
//! added to with one upsert per tenant (atomic against every other node's).

use async_trait::async_trait;

use super::PostgresStore;
use super::rows::*;
use crate::StoreResult;
use crate::model::*;
use crate::prelude::*;

async fn totals(c: &impl Db, day: u32) -> StoreResult<Vec<QuotaUsage>> {
    let d = i64::from(day);
    let rows = c
        .query_typed("SELECT tenant_id, used FROM quota_usage WHERE day = $1", &[int(&d)])
        .await?;
    rows.iter()
        .map(|r| {
            Ok(QuotaUsage {
                tenant_id: r.try_get(0)?,
                day,
                used: r.try_get(1)?,
            })
        })
        .collect()
}

#[async_trait]
impl QuotaStore for PostgresStore {
    async fn add_quota_usage(&self, mut deltas: Vec<QuotaUsage>, day: u32) -> StoreResult<Vec<QuotaUsage>> {
        // Rows locked in one order on every node: two flushes cannot deadlock.
        deltas.sort_by(|a, b| (&a.tenant_id, a.day).cmp(&(&b.tenant_id, b.day)));
        self.pool
            .run(async {
                let mut c = self.pool.conn().await?;
                if deltas.is_empty() {
                    return totals(c.client(), day).await;
                }
                let tx = c.transaction().await?;
                let result = async {
                    for d in &deltas {
                        let day = i64::from(d.day);
                        tx.execute_typed(
                            "INSERT INTO quota_usage (tenant_id, day, used) VALUES ($1, $2, GREATEST(0, $3))
                             ON CONFLICT (tenant_id, day) DO UPDATE SET used = GREATEST(0, quota_usage.used + $3)",
                            &[text(&d.tenant_id), int(&day), int(&d.used)],
                        )
                        .await?;
                    }
                    let all = totals(&tx, day).await?;
                    Ok(all)
                }
                .await;
                self.pool.finish(tx, result, false).await
            })
            .await
    }
}
