//! Server secrets ([`SecretStore`]).

use async_trait::async_trait;

use super::PostgresStore;
use super::rows::*;
use crate::StoreResult;
use crate::model::*;
use crate::prelude::*;

#[async_trait]
impl SecretStore for PostgresStore {
    async fn secret(&self, name: &str, candidate: &str) -> StoreResult<String> {
        self.pool
            .run(async {
                let c = self.pool.conn().await?;
                let now = now_millis();
                // The first writer wins; a node racing it waits for its
                // commit (the primary key), then reads its value.
                c.client()
                    .execute_typed(
                        "INSERT INTO secrets (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
                        &[text(&name), text(&candidate), int(&now)],
                    )
                    .await?;
                let row = c
                    .client()
                    .query_typed_one("SELECT value FROM secrets WHERE name = $1", &[text(&name)])
                    .await?;
                Ok(row.try_get(0)?)
            })
            .await
    }
}
