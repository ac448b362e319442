//! Maintenance mode ([`MaintenanceStore`]): one row, versioned like every
//! other entity; a change locks it (`FOR UPDATE`) before checking its version.

use async_trait::async_trait;

use super::PostgresStore;
use super::rows::*;
use crate::StoreResult;
use crate::model::*;
use crate::prelude::*;

async fn load(c: &impl Db, lock: bool) -> StoreResult<Maintenance> {
    let sql = format!(
        "SELECT enabled, retry_after_seconds, message, version, updated_at FROM maintenance WHERE id = 1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let r = c.query_typed_one(&sql, &[]).await?;
    Ok(Maintenance {
        enabled: r.try_get(0)?,
        retry_after_seconds: to_u32(Some(r.try_get(1)?)).unwrap_or(0),
        message: r.try_get(2)?,
        version: r.try_get(3)?,
        updated_at: r.try_get(4)?,
    })
}

#[async_trait]
impl MaintenanceStore for PostgresStore {
    async fn maintenance(&self) -> StoreResult<Maintenance> {
        self.pool
            .run(async {
                let c = self.pool.conn().await?;
                load(c.client(), false).await
            })
            .await
    }

    async fn set_maintenance(
        &self,
        setting: MaintenanceSetting,
        expect: Expect,
        now: Millis,
    ) -> StoreResult<Maintenance> {
        self.pool
            .write(false, async |tx| {
                let current = load(tx, true).await?;
                check_existing(&expect, current.version, None)?;
                let retry = i64::from(setting.retry_after_seconds);
                tx.execute_typed(
                    "UPDATE maintenance SET enabled = $1, retry_after_seconds = $2, message = $3,
                           version = version + 1, updated_at = $4 WHERE id = 1",
                    &[
                        boolean(&setting.enabled),
                        int(&retry),
                        text(&setting.message),
                        int(&now),
                    ],
                )
                .await?;
                let set = load(tx, false).await?;
                Ok(set)
            })
            .await
    }
}
