//! The facts the decision flow asks the server for ([`Service`]): routes,
//! limits, availability, credentials, resources, idempotency keys. The HTTP
//! handler (`app.rs`) runs the flow with an [`Exchange`]; so does a batch,
//! once per operation ([`run_within`]).

use std::sync::Arc;

use bytes::Bytes;
use canon_http::Problem;
use canon_http::access::Principal;
use canon_http::flow::{self, Availability, BoxFuture, KeyState, Keyed, Limits, Resource, Service};
use canon_http::route::{Params, RouteSpec, RouteTable};
use canon_store::KeyOwner;

use crate::error::store_problem;
use crate::state::App;
use crate::{idempotency, token};

/// One request's view of the service.
pub struct Exchange<'a> {
    /// The shared state.
    pub app: &'a Arc<App>,
    /// Whether the in-flight limit was reached (every request but the
    /// probes answers 503).
    pub overloaded: bool,
    /// Whether maintenance mode refuses this request (`crate::maintenance`).
    pub maintenance: Availability,
}

impl Service for Exchange<'_> {
    fn routes(&self) -> &RouteTable {
        &self.app.routes
    }

    fn limits(&self) -> Limits {
        Limits {
            max_body_bytes: self.app.config.max_body_bytes,
            max_stream_bytes: self.app.config.max_import_bytes,
            ..Limits::default()
        }
    }

    fn availability(&self) -> Availability {
        if let Availability::Unavailable { .. } = &self.maintenance {
            self.maintenance.clone()
        } else if self.overloaded {
            Availability::Unavailable {
                retry_after: 1,
                reason: "Canon is serving as many requests as it is allowed to; retry shortly.".into(),
            }
        } else {
            Availability::Available
        }
    }

    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Option<Principal>, Problem>> {
        Box::pin(async move {
            let digest = token::digest(token);
            let owner = self.app.store.key_owner(&digest).await.map_err(store_problem)?;
            Ok(owner.and_then(|owner| match owner {
                KeyOwner::Operator { key_id, token_hash } => {
                    token::digests_match(&token_hash, &digest).then_some(Principal::Operator { key_id })
                }
                KeyOwner::Member {
                    key_id,
                    token_hash,
                    tenant,
                    user_id,
                    role,
                } => token::digests_match(&token_hash, &digest).then_some(Principal::Member {
                    key_id,
                    tenant,
                    user_id,
                    role,
                }),
            }))
        })
    }

    fn resource(&self, route: &'static RouteSpec, params: Params, principal: Option<Principal>) -> Box<dyn Resource> {
        super::for_route(self.app.clone(), route, params, principal)
    }

    fn claim_key<'a>(&'a self, request: Keyed<'a>) -> BoxFuture<'a, Result<KeyState, Problem>> {
        Box::pin(async move { idempotency::claim(&*self.app.store, &request).await })
    }

    fn settle_key<'a>(
        &'a self,
        request: Keyed<'a>,
        response: Option<&'a http::Response<bytes::Bytes>>,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move { idempotency::settle(&*self.app.store, &request, response).await })
    }
}

/// Runs one request through the decision flow inside a request already
/// admitted (a batch's operations): never shed for load, since the batch
/// holds its slot.
pub async fn run_within(
    app: &Arc<App>,
    head: &http::request::Parts,
    body: Bytes,
    request_id: &str,
) -> http::Response<Bytes> {
    // The batch's own request passed the availability checks already.
    let exchange = Exchange {
        app,
        overloaded: false,
        maintenance: Availability::Available,
    };
    // Record routes answer whole bodies; a stream would read as empty.
    flow::run(&exchange, head, Box::new(crate::body::ReadyBody(body)), request_id)
        .await
        .response
        .map(|body| body.as_full().cloned().unwrap_or_default())
}
