//! The idempotency-key ledger behind the decision flow's `Idempotent` node
//! (CONTRACT.md §4): how a keyed POST is scoped, fingerprinted, kept and
//! replayed.
//!
//! A key belongs to one caller in one tenant, so two users may pick the
//! same key without meeting. The fingerprint covers the method, the target
//! and the body: the same key sent with anything else is a different request
//! (422). Responses are kept for [`KEY_TTL`]; a claim whose request never
//! finished (its node died) is taken over after [`IN_FLIGHT_LEASE`].

use std::time::Duration;

use bytes::Bytes;
use canon_http::Problem;
use canon_http::flow::{KeyState, Keyed, ShownOnce};
use canon_store::{IdempotencyClaim, IdempotencyRequest, Store, StoredResponse};
use http::{HeaderName, HeaderValue, Response, StatusCode, header};
use sha2::{Digest, Sha256};

use crate::error::store_problem;

/// How long a key is remembered after its first use.
pub const KEY_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a claim may stay unfinished before a retry may take it over.
pub const IN_FLIGHT_LEASE: Duration = Duration::from_secs(60);

/// The ledger row's identity and fingerprint for `request`.
pub fn ledger_request(request: &Keyed<'_>) -> IdempotencyRequest {
    let mut h = Sha256::new();
    h.update(request.head.method.as_str().as_bytes());
    h.update(b"\n");
    h.update(
        request
            .head
            .uri
            .path_and_query()
            .map_or("", |pq| pq.as_str())
            .as_bytes(),
    );
    h.update(b"\n");
    h.update(request.body);
    let fingerprint = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    IdempotencyRequest {
        scope: scope(request),
        key: request.key.to_owned(),
        fingerprint,
    }
}

/// Whose key it is: the caller, within its tenant.
fn scope(request: &Keyed<'_>) -> String {
    let principal = request.principal;
    match principal.tenant() {
        Some(tenant) => format!("{}{}", tenant_scope_prefix(tenant), principal.actor()),
        None => format!("-/{}", principal.actor()),
    }
}

/// The start every scope of `tenant`'s members shares: a tenant's deletion
/// drops their entries by it (the operator's, `-/operator`, expire alone).
pub fn tenant_scope_prefix(tenant: &str) -> String {
    format!("{tenant}/")
}

/// Claims the key of `request`.
pub async fn claim(store: &dyn Store, request: &Keyed<'_>) -> Result<KeyState, Problem> {
    let claim = store
        .claim_idempotency(&ledger_request(request), KEY_TTL, IN_FLIGHT_LEASE)
        .await
        .map_err(store_problem)?;
    Ok(match claim {
        IdempotencyClaim::Claimed => KeyState::Fresh,
        IdempotencyClaim::InFlight => KeyState::InFlight,
        IdempotencyClaim::Mismatch => KeyState::Mismatch,
        IdempotencyClaim::Completed(stored) => KeyState::Completed(replay(stored)),
    })
}

/// Keeps `response` for the key of `request`, or frees the key.
pub async fn settle(store: &dyn Store, request: &Keyed<'_>, response: Option<&Response<Bytes>>) {
    // Settling needs only the row's identity: the fingerprint was checked at the claim.
    let scope = scope(request);
    let outcome = match response {
        Some(r) => store.complete_idempotency(&scope, request.key, keep(r)).await,
        None => store.release_idempotency(&scope, request.key).await,
    };
    if let Err(e) = outcome {
        // The write already happened; a retry will see the key in flight
        // until the lease ends. Say so in the logs, not to this client.
        tracing::warn!(error = %e, key = request.key, "could not settle an idempotency key");
    }
}

/// Headers that belong to one exchange, not to the outcome.
fn is_hop_header(name: &HeaderName) -> bool {
    name == header::CONNECTION || name == header::DATE || name.as_str() == crate::state::REQUEST_ID
}

/// What the ledger keeps of a response. A secret shown once (a new API
/// key's token, marked [`ShownOnce`] by the flow) is kept without its
/// secret: a JSON object keeps every member but `token`, which becomes
/// `null`, so a replay confirms what was created (status, `Location`, the
/// key) but cannot show the secret again; any other such body is not kept at
/// all, nor the headers that describe it. Every other body is kept whole,
/// `no-store` ones too (a job's 202): no cache keeps them, but the replay of
/// the first answer must be that answer.
fn keep(response: &Response<Bytes>) -> StoredResponse {
    let secret = response.extensions().get::<ShownOnce>().is_some();
    let body = if secret {
        without_secret(response.body())
    } else {
        Some(response.body().to_vec())
    };
    let describes_body = |n: &HeaderName| {
        n == header::CONTENT_TYPE || n == header::CONTENT_LENGTH || n == header::ETAG || n == header::LAST_MODIFIED
    };
    // The body changed (or is gone): its length must be the server's to set.
    let drop_header = |n: &HeaderName| secret && (n == header::CONTENT_LENGTH || (body.is_none() && describes_body(n)));
    StoredResponse {
        status: response.status().as_u16(),
        headers: response
            .headers()
            .iter()
            .filter(|(n, _)| !is_hop_header(n))
            .filter(|(n, _)| !drop_header(n))
            .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect(),
        body: body.unwrap_or_default(),
    }
}

/// A shown-once JSON object with its `token` member set to `null`; `None`
/// for any other body (never kept).
fn without_secret(body: &[u8]) -> Option<Vec<u8>> {
    let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let token = value.as_object_mut()?.get_mut("token")?;
    *token = serde_json::Value::Null;
    serde_json::to_vec(&value).ok()
}

fn replay(stored: StoredResponse) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from(stored.body));
    *response.status_mut() = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in stored.headers {
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            response.headers_mut().append(n, v);
        }
    }
    response
}
