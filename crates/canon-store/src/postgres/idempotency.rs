//! The idempotency ledger ([`IdempotencyStore`]). A claim locks its key
//! (an advisory lock on scope and key) before reading it, so of two
//! requests with one key, on any nodes, one claims and the other sees it.

use std::time::Duration;

use async_trait::async_trait;

use super::PostgresStore;
use super::rows::*;
use crate::model::*;
use crate::prelude::*;
use crate::{StoreError, StoreResult};

#[async_trait]
impl IdempotencyStore for PostgresStore {
    async fn claim_idempotency(
        &self,
        request: &IdempotencyRequest,
        ttl: Duration,
        lease: Duration,
    ) -> StoreResult<IdempotencyClaim> {
        self.pool
            .write(false, async |tx| {
                    // The scope's length keeps "a" + "bc" apart from "ab" + "c".
                    let (scope, key) = (&request.scope, &request.key);
                    lock(tx, &format!("idempotency/{}/{scope}{key}", scope.len())).await?;
                    let now = now_millis();
                    let row = tx
                        .query_typed_opt(
                            "SELECT fingerprint, claimed_at, expires_at, status, headers, body FROM idempotency_keys
                             WHERE scope = $1 AND key = $2",
                            &[text(&request.scope), text(&request.key)],
                        )
                        .await?;
                    if let Some(row) = row {
                        let (fingerprint, claimed_at, expires_at): (String, i64, i64) =
                            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
                        if expires_at > now {
                            if fingerprint != request.fingerprint {
                                return Ok(IdempotencyClaim::Mismatch);
                            }
                            match row.try_get::<_, Option<i32>>(3)? {
                                Some(status) => {
                                    let headers: Option<String> = row.try_get(4)?;
                                    let headers: Vec<(String, String)> = headers
                                        .as_deref()
                                        .map(serde_json::from_str)
                                        .transpose()
                                        .map_err(|e| StoreError::Internal(e.to_string()))?
                                        .unwrap_or_default();
                                    let body: Option<Vec<u8>> = row.try_get(5)?;
                                    return Ok(IdempotencyClaim::Completed(StoredResponse {
                                        status: u16::try_from(status).unwrap_or(500),
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
                    }
                    let expires = now.saturating_add(retention_ms(ttl));
                    tx.execute_typed(
                        "INSERT INTO idempotency_keys (scope, key, fingerprint, claimed_at, expires_at, status, headers, body)
                         VALUES ($1, $2, $3, $4, $5, NULL, NULL, NULL)
                         ON CONFLICT (scope, key) DO UPDATE SET fingerprint = excluded.fingerprint,
                           claimed_at = excluded.claimed_at, expires_at = excluded.expires_at,
                           status = NULL, headers = NULL, body = NULL",
                        &[
                            text(&request.scope),
                            text(&request.key),
                            text(&request.fingerprint),
                            int(&now),
                            int(&expires),
                        ],
                    )
                    .await?;
                    Ok(IdempotencyClaim::Claimed)
})
            .await
    }

    async fn complete_idempotency(&self, scope: &str, key: &str, response: StoredResponse) -> StoreResult<()> {
        let headers = serde_json::to_string(&response.headers).map_err(|e| StoreError::Internal(e.to_string()))?;
        let status = i32::from(response.status);
        self.pool
            .run(async {
                let c = self.pool.conn().await?;
                c.client()
                    .execute_typed(
                        "UPDATE idempotency_keys SET status = $1, headers = $2, body = $3 WHERE scope = $4 AND key = $5",
                        &[
                            (&status, tokio_postgres::types::Type::INT4),
                            text(&headers),
                            bytes(&response.body),
                            text(&scope),
                            text(&key),
                        ],
                    )
                    .await?;
                Ok(())
            })
            .await
    }

    async fn release_idempotency(&self, scope: &str, key: &str) -> StoreResult<()> {
        self.pool
            .run(async {
                let c = self.pool.conn().await?;
                c.client()
                    .execute_typed(
                        "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND status IS NULL",
                        &[text(&scope), text(&key)],
                    )
                    .await?;
                Ok(())
            })
            .await
    }
}
