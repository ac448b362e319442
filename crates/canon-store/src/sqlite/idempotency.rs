//! The idempotency ledger ([`IdempotencyStore`]).

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use super::engine::internal;
use super::rows::*;
use crate::StoreResult;
use crate::model::*;
use crate::prelude::*;

#[async_trait]
impl IdempotencyStore for SqliteStore {
    async fn claim_idempotency(
        &self,
        request: &IdempotencyRequest,
        ttl: Duration,
        lease: Duration,
    ) -> StoreResult<IdempotencyClaim> {
        let request = request.clone();
        self.engine
            .write(move |c| {
                let now = now_millis();
                let row = c
                    .query_row(
                        "SELECT fingerprint, claimed_at, expires_at, status, headers, body FROM idempotency_keys
                         WHERE scope = ?1 AND key = ?2",
                        [&request.scope, &request.key],
                        |r| {
                            Ok((
                                r.get::<_, String>(0)?,
                                r.get::<_, i64>(1)?,
                                r.get::<_, i64>(2)?,
                                r.get::<_, Option<u16>>(3)?,
                                r.get::<_, Option<String>>(4)?,
                                r.get::<_, Option<Vec<u8>>>(5)?,
                            ))
                        },
                    )
                    .optional()
                    .map_err(db_error)?;
                if let Some((fingerprint, claimed_at, expires_at, status, headers, body)) = row
                    && expires_at > now
                {
                    if fingerprint != request.fingerprint {
                        return Ok(IdempotencyClaim::Mismatch);
                    }
                    match status {
                        Some(status) => {
                            let headers: Vec<(String, String)> = headers
                                .as_deref()
                                .map(serde_json::from_str)
                                .transpose()
                                .map_err(internal)?
                                .unwrap_or_default();
                            return Ok(IdempotencyClaim::Completed(StoredResponse {
                                status,
                                headers,
                                body: body.unwrap_or_default(),
                            }));
                        }
                        None if now.saturating_sub(claimed_at) < retention_ms(lease) => {
                            return Ok(IdempotencyClaim::InFlight);
                        }
                        // The first request's server died mid-flight: take over.
                        None => {}
                    }
                }
                c.execute(
                    "INSERT INTO idempotency_keys (scope, key, fingerprint, claimed_at, expires_at, status, headers, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, NULL, NULL, NULL)
                     ON CONFLICT (scope, key) DO UPDATE SET fingerprint = excluded.fingerprint,
                       claimed_at = excluded.claimed_at, expires_at = excluded.expires_at,
                       status = NULL, headers = NULL, body = NULL",
                    params![
                        request.scope,
                        request.key,
                        request.fingerprint,
                        now,
                        now.saturating_add(retention_ms(ttl))
                    ],
                )
                .map_err(db_error)?;
                Ok(IdempotencyClaim::Claimed)
            })
            .await
    }

    async fn complete_idempotency(&self, scope: &str, key: &str, response: StoredResponse) -> StoreResult<()> {
        let (scope, key) = (scope.to_owned(), key.to_owned());
        let headers = serde_json::to_string(&response.headers).map_err(internal)?;
        self.engine
            .write(move |c| {
                c.execute(
                    "UPDATE idempotency_keys SET status = ?1, headers = ?2, body = ?3 WHERE scope = ?4 AND key = ?5",
                    params![response.status, headers, response.body, scope, key],
                )
                .map_err(db_error)?;
                Ok(())
            })
            .await
    }

    async fn release_idempotency(&self, scope: &str, key: &str) -> StoreResult<()> {
        let (scope, key) = (scope.to_owned(), key.to_owned());
        self.engine
            .write(move |c| {
                c.execute(
                    "DELETE FROM idempotency_keys WHERE scope = ?1 AND key = ?2 AND status IS NULL",
                    [&scope, &key],
                )
                .map_err(db_error)?;
                Ok(())
            })
            .await
    }
}
