//! One module per resource family. Each resource supplies facts to the
//! decision flow (does it exist, what are its validators) and performs the
//! method; none of them chooses a status.

mod admin;
mod batch;
mod collections;
mod devices;
mod docs;
mod exports;
mod health;
mod imports;
pub mod jobs;
pub(crate) mod records;
pub mod service;
mod tenants;
mod users;

use std::sync::Arc;
use std::time::Duration;

use canon_http::access::{CURRENT_TENANT, Principal};
use canon_http::flow::{BoxFuture, Existence, Found, Input, Resource, Success};
use canon_http::media::MediaType;
use canon_http::route::{Params, RouteSpec};
use canon_http::validators::Validators;
use canon_http::{Problem, ProblemKind};
use canon_store::{Expect, Lookup, Tenant};
use http::{HeaderMap, Method, Uri, header};

use crate::error::store_problem;
use crate::routes::name;
use crate::state::App;

/// What every resource knows about its request.
pub struct Cx {
    /// Shared state.
    pub app: Arc<App>,
    /// Path parameters.
    pub params: Params,
    /// The caller (`None` on public routes).
    pub principal: Option<Principal>,
    /// The request method (set at parse).
    pub method: Method,
    /// The request target (set at parse).
    pub uri: Uri,
    /// Whether the request carries a precondition header, so writes must
    /// be checked atomically against the state the flow evaluated.
    pub conditional: bool,
}

impl Cx {
    /// A path parameter (always present: the route pattern names it).
    pub fn param(&self, name: &str) -> &str {
        self.params.get(name).unwrap_or("")
    }

    /// Keeps what later steps need from the request head.
    pub fn remember(&mut self, input: &Input<'_>) {
        self.method = input.head.method.clone();
        self.uri = input.head.uri.clone();
        self.conditional = is_conditional(&input.head.headers);
    }

    /// The tenant named in the path.
    pub async fn tenant(&self) -> Result<Lookup<Arc<Tenant>>, Problem> {
        (self.app.lookups)
            .tenant(&*self.app.store, self.param("tenant"))
            .await
            .map_err(store_problem)
    }

    /// How long tombstones are kept.
    pub fn retention(&self) -> Duration {
        self.app.config.tombstone_retention
    }

    /// What a write of an entity loaded at `version` expects inside its
    /// transaction: when the client sent a precondition, exactly the state
    /// the flow evaluated it against; otherwise anything.
    pub fn expect_version(&self, version: i64) -> Expect {
        if self.conditional {
            Expect::Version(version)
        } else {
            Expect::Anything
        }
    }

    /// The path of the tenant's resources.
    pub fn tenant_path(&self) -> String {
        format!("/v1/tenants/{}", self.param("tenant"))
    }
}

fn is_conditional(h: &HeaderMap) -> bool {
    h.contains_key(header::IF_MATCH)
        || h.contains_key(header::IF_NONE_MATCH)
        || h.contains_key(header::IF_UNMODIFIED_SINCE)
}

/// Why a load stopped before reaching the addressed resource.
pub enum Stop {
    /// Something on the path is missing, gone or elsewhere: that is the answer.
    At(Existence),
    /// Loading failed.
    Failed(Problem),
}

impl From<Problem> for Stop {
    fn from(p: Problem) -> Self {
        Stop::Failed(p)
    }
}

/// A load's outcome as the flow takes it: a stop on the path is an answer.
pub fn settle(outcome: Result<Existence, Stop>) -> Result<Existence, Problem> {
    match outcome {
        Ok(e) | Err(Stop::At(e)) => Ok(e),
        Err(Stop::Failed(p)) => Err(p),
    }
}

/// The value a lookup of what the addressed resource lives in found, or
/// the stop it means: a missing or deleted container is 404 or 410 for
/// every method, even one that would create the resource itself.
pub fn found<T>(lookup: Lookup<T>) -> Result<T, Stop> {
    match lookup {
        Lookup::Found(t) => Ok(t),
        other => Err(absent(&other)),
    }
}

/// The stop a container's lookup that found nothing means: 410 when it
/// was deleted, else 404.
pub fn absent<T>(lookup: &Lookup<T>) -> Stop {
    match lookup {
        Lookup::Gone => Stop::At(Existence::ContainerGone),
        _ => Stop::At(Existence::ContainerMissing),
    }
}

/// The existence of a container resource (a list) given its parent's lookup.
pub fn container<T>(parent: Lookup<T>) -> Existence {
    match parent {
        Lookup::Found(_) => Existence::Found(Found::default()),
        Lookup::Gone => Existence::Gone,
        Lookup::Missing => Existence::Missing,
    }
}

/// The resource handling `route`.
pub fn for_route(
    app: Arc<App>,
    route: &'static RouteSpec,
    params: Params,
    principal: Option<Principal>,
) -> Box<dyn Resource> {
    let cx = Cx {
        app,
        params,
        principal,
        method: Method::GET,
        uri: Uri::default(),
        conditional: false,
    };
    if cx.params.get("tenant") == Some(CURRENT_TENANT) {
        return Box::new(CurrentTenant(cx));
    }
    match route.name {
        name::HEALTH => Box::new(health::Health),
        name::READY => Box::new(health::Ready(cx)),
        name::METRICS => Box::new(health::Metrics),
        name::STATUS_CODES => Box::new(docs::StatusCodes),
        name::OPENAPI => Box::new(docs::OpenApi),
        name::INDEX => Box::new(docs::Index),
        name::REFERENCE => Box::new(docs::StaticFile::reference()),
        name::REDOC => Box::new(docs::StaticFile::redoc()),
        name::REDOC_LICENSE => Box::new(docs::StaticFile::redoc_license()),
        name::PROBLEM => Box::new(docs::ProblemPage::new(cx)),
        name::TENANTS => Box::new(tenants::Tenants::new(cx)),
        name::TENANT => Box::new(tenants::OneTenant::new(cx)),
        name::TENANT_OPENAPI => Box::new(docs::TenantOpenApi::new(cx)),
        name::USERS => Box::new(users::Users::new(cx)),
        name::JOBS => Box::new(jobs::Jobs::new(cx)),
        name::IMPORTS => Box::new(imports::Imports::new(cx)),
        name::EXPORTS => Box::new(exports::Exports::new(cx)),
        name::JOB => Box::new(jobs::OneJob::new(cx)),
        name::JOB_RESULT => Box::new(jobs::JobResult::new(cx)),
        name::USER => Box::new(users::OneUser::new(cx)),
        name::API_KEYS => Box::new(users::ApiKeys::new(cx)),
        name::API_KEY => Box::new(users::OneApiKey::new(cx)),
        name::COLLECTIONS => Box::new(collections::Collections::new(cx)),
        name::COLLECTION => Box::new(collections::OneCollection::new(cx)),
        name::RECORDS => Box::new(records::Records::new(cx)),
        name::RECORD => Box::new(records::OneRecord::new(cx)),
        name::LOCK => Box::new(records::RecordLock::new(cx)),
        name::BATCH => Box::new(batch::Batch::new(cx)),
        name::DEVICES => Box::new(devices::Devices::new(cx)),
        name::DEVICE => Box::new(devices::OneDevice::new(cx)),
        name::DEVICE_API => Box::new(devices::DeviceApi::new(cx)),
        name::DEVICE_COMMANDS => Box::new(devices::DeviceCommands::new(cx)),
        name::MAINTENANCE => Box::new(admin::Maintenance::new(cx)),
        // Planned routes have no methods, so the flow answers 501 before
        // asking for a resource; this arm is never reached.
        _ => Box::new(Unreachable),
    }
}

/// Any route under `/v1/tenants/current/…`: a temporary redirect to the same
/// path under the caller's own tenant. Temporary, and varying by
/// `Authorization`, because the target depends on who asks. The operator
/// belongs to no tenant: 404.
struct CurrentTenant(Cx);

impl Resource for CurrentTenant {
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem> {
        self.0.remember(&input);
        Ok(())
    }

    fn load(&mut self) -> BoxFuture<'_, Result<Existence, Problem>> {
        Box::pin(async move {
            let Some(own) = self.0.principal.as_ref().and_then(Principal::tenant) else {
                return Ok(Existence::Missing);
            };
            let prefix = format!("/v1/tenants/{CURRENT_TENANT}");
            let rest = self.0.uri.path().strip_prefix(&prefix).unwrap_or("");
            Ok(Existence::Redirect(with_query(
                format!("/v1/tenants/{own}{rest}"),
                &self.0.uri,
            )))
        })
    }

    fn execute(&mut self, _: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        Box::pin(async { Err(crate::error::internal()) })
    }
}

/// `path` with the query of `uri`, for redirects that keep the request's query.
pub fn with_query(path: String, uri: &Uri) -> String {
    match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    }
}

struct Unreachable;

impl Resource for Unreachable {
    fn parse(&mut self, _: Input<'_>) -> Result<(), Problem> {
        Err(Problem::new(
            ProblemKind::NotImplemented,
            "This operation is not implemented yet.",
        ))
    }
    fn load(&mut self) -> BoxFuture<'_, Result<Existence, Problem>> {
        Box::pin(async { Ok(Existence::Missing) })
    }
    fn execute(&mut self, _: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        Box::pin(async {
            Err(Problem::new(
                ProblemKind::NotImplemented,
                "This operation is not implemented yet.",
            ))
        })
    }
}

/// The existence of a resource found with `validators`.
pub fn found_with(validators: Validators) -> Existence {
    Existence::Found(Found {
        validators,
        ..Found::default()
    })
}

/// Unwraps a lookup that `load` already found, or reports the race.
pub fn still_there<T>(lookup: Option<T>) -> Result<T, Problem> {
    lookup.ok_or_else(|| {
        Problem::new(
            ProblemKind::NotFound,
            "The resource was deleted while this request was handled.",
        )
    })
}
