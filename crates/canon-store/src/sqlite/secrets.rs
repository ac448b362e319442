//! Server secrets ([`SecretStore`]).

use async_trait::async_trait;
use rusqlite::params;

use super::SqliteStore;
use super::rows::*;
use crate::StoreResult;
use crate::model::*;
use crate::prelude::*;

#[async_trait]
impl SecretStore for SqliteStore {
    async fn secret(&self, name: &str, candidate: &str) -> StoreResult<String> {
        let (name, candidate) = (name.to_owned(), candidate.to_owned());
        self.engine
            .write(move |c| {
                c.execute(
                    "INSERT INTO secrets (name, value, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING",
                    params![name, candidate, now_millis()],
                )
                .map_err(db_error)?;
                c.query_row("SELECT value FROM secrets WHERE name = ?1", [&name], |r| r.get(0))
                    .map_err(db_error)
            })
            .await
    }
}
