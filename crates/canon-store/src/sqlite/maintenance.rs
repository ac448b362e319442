//! Maintenance mode ([`MaintenanceStore`]): one row, versioned like every
//! other entity.

use async_trait::async_trait;
use rusqlite::{Connection, params};

use super::SqliteStore;
use super::rows::*;
use crate::StoreResult;
use crate::model::*;
use crate::prelude::*;

fn load(c: &Connection) -> StoreResult<Maintenance> {
    c.prepare_cached("SELECT enabled, retry_after_seconds, message, version, updated_at FROM maintenance WHERE id = 1")
        .and_then(|mut s| {
            s.query_row([], |r| {
                Ok(Maintenance {
                    enabled: r.get(0)?,
                    retry_after_seconds: r.get(1)?,
                    message: r.get(2)?,
                    version: r.get(3)?,
                    updated_at: r.get(4)?,
                })
            })
        })
        .map_err(db_error)
}

#[async_trait]
impl MaintenanceStore for SqliteStore {
    async fn maintenance(&self) -> StoreResult<Maintenance> {
        self.engine.read(load).await
    }

    async fn set_maintenance(
        &self,
        setting: MaintenanceSetting,
        expect: Expect,
        now: Millis,
    ) -> StoreResult<Maintenance> {
        self.engine
            .write(move |c| {
                let current = load(c)?;
                check_existing(&expect, current.version, None)?;
                c.execute(
                    "UPDATE maintenance SET enabled = ?1, retry_after_seconds = ?2, message = ?3, \
                     version = version + 1, updated_at = ?4 WHERE id = 1",
                    params![setting.enabled, setting.retry_after_seconds, setting.message, now],
                )
                .map_err(db_error)?;
                load(c)
            })
            .await
    }
}
