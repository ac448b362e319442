//! `/v1/tenants` and `/v1/tenants/{tenant}`.

use std::sync::Arc;

use crate::wire::{NewTenant, TenantLimitsPatch};
use canon_http::flow::{BoxFuture, Existence, Found, Input, Resource, Success};
use canon_http::media::MediaType;
use canon_http::{FieldError, Problem};
use canon_store::{Expect, Lookup, Tenant, TenantLimits, now_millis};
use http::Method;
use serde_json::Value;

use super::{Cx, Stop, found_with, still_there};
use crate::error::store_problem;
use crate::input::{Query, decode, invalid_field, invalid_fields, json_body, slug};
use crate::listing::{self, Listed};
use crate::render;

/// Tenant names that would shadow a path: `current` stands for the caller's
/// own tenant.
pub const RESERVED: &[&str] = &[canon_http::access::CURRENT_TENANT];

/// `GET, POST /v1/tenants`.
pub struct Tenants {
    cx: Cx,
    page: Option<listing::Paging>,
    listed: Option<Listed>,
    new: Option<NewTenant>,
}

impl Tenants {
    /// For `cx`.
    pub fn new(cx: Cx) -> Self {
        Self {
            cx,
            page: None,
            listed: None,
            new: None,
        }
    }
}

impl Resource for Tenants {
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem> {
        self.cx.remember(&input);
        if self.cx.method == Method::POST {
            Query::parse(&input.head.uri, &[])?;
            let new: NewTenant = decode(json_body(input.body.as_ref())?)?;
            slug(&new.name, "/name")?;
            if RESERVED.contains(&new.name.as_str()) {
                return Err(invalid_field("/name", "is reserved"));
            }
            self.new = Some(new);
        } else {
            let q = Query::parse(&input.head.uri, &["limit", "cursor"])?;
            self.page = Some(listing::page_request(&q)?);
        }
        Ok(())
    }

    fn load(&mut self) -> BoxFuture<'_, Result<Existence, Problem>> {
        Box::pin(async move {
            let mut found = Found::default();
            if let Some(paging) = self.page.take() {
                let (page, cursors) = paging.open(&self.cx.app, &["tenants"]).await?;
                let page = self.cx.app.store.list_tenants(page).await.map_err(store_problem)?;
                let config = &self.cx.app.config;
                found = Listed::from_page(page, |t| render::tenant(t, config), &cursors).keep(&mut self.listed);
            }
            Ok(Existence::Found(found))
        })
    }

    fn execute(&mut self, media: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        Box::pin(async move {
            if let Some(new) = self.new.take() {
                let t = self
                    .cx
                    .app
                    .store
                    .create_tenant(&new.name)
                    .await
                    .map_err(store_problem)?;
                return Ok(Success::Created {
                    location: format!("/v1/tenants/{}", t.name),
                    representation: render::tenant_representation(&t, &self.cx.app.config),
                });
            }
            let listed = self.listed.take().ok_or_else(crate::error::internal)?;
            Ok(Success::Ok(listed.render(media, &self.cx.uri)?))
        })
    }
}

/// One limit in a merge patch: absent (unchanged), `null` (the server's
/// default) or a new value.
type LimitChange = Option<Option<u32>>;

/// A checked merge patch of a tenant's limits.
#[derive(Debug, Default, Clone, Copy)]
struct LimitsPatch {
    rate_limit_per_second: LimitChange,
    burst: LimitChange,
    daily_quota: LimitChange,
}

impl LimitsPatch {
    /// The limits after the patch.
    fn apply(&self, to: TenantLimits) -> TenantLimits {
        TenantLimits {
            rate_limit_per_second: self.rate_limit_per_second.unwrap_or(to.rate_limit_per_second),
            burst: self.burst.unwrap_or(to.burst),
            daily_quota: self.daily_quota.unwrap_or(to.daily_quota),
        }
    }
}

/// The largest rate and burst a tenant may be given: a million requests a
/// second is beyond what one node serves; anything larger is a typo.
pub const MAX_RATE: u64 = 1_000_000;
/// The largest daily quota: a billion requests a day (11,574 a second).
pub const MAX_DAILY_QUOTA: u64 = 1_000_000_000;

/// Checks a body of `PATCH /v1/tenants/{tenant}`, every field at once.
fn limits_patch(body: Value) -> Result<LimitsPatch, Problem> {
    // The shape (an object, no unknown members) as the schema says it; the
    // values are read from the body itself, where `null` differs from absent.
    let _: TenantLimitsPatch = decode(body.clone())?;
    let mut errors = Vec::new();
    let mut field = |name: &str, max: u64| -> LimitChange {
        let value = body.get(name)?;
        if value.is_null() {
            return Some(None);
        }
        let what = match value.as_u64() {
            Some(0) => "must be at least 1 (0 would refuse every request); null gives back the default".to_owned(),
            Some(n) if n > max => format!("must be at most {max}"),
            Some(n) => return Some(u32::try_from(n).ok()),
            None if value.as_i64().is_some() => "must be a positive integer".to_owned(),
            None => "must be a whole number (an integer), or null for the server's default".to_owned(),
        };
        errors.push(FieldError::new(format!("/{name}"), what));
        None
    };
    let out = LimitsPatch {
        rate_limit_per_second: field("rate_limit_per_second", MAX_RATE),
        burst: field("burst", MAX_RATE),
        daily_quota: field("daily_quota", MAX_DAILY_QUOTA),
    };
    if errors.is_empty() {
        return Ok(out);
    }
    Err(invalid_fields(errors))
}

/// `GET, PATCH, DELETE /v1/tenants/{tenant}`.
///
/// DELETE starts the tenant's deletion (operator only, by the route table):
/// in one store transaction the tenant becomes a tombstone and a job is
/// queued to delete everything in it, so the answer is 202 with that job.
/// A tenant whose deletion stopped (its job failed or was canceled) answers
/// 410 to every read, but a DELETE starts a new job that finishes the work.
pub struct OneTenant {
    cx: Cx,
    tenant: Option<Tenant>,
    /// DELETE of a tenant whose earlier deletion stopped.
    restart: bool,
    /// PATCH: the change of its limits.
    patch: Option<LimitsPatch>,
}

impl OneTenant {
    /// For `cx`.
    pub fn new(cx: Cx) -> Self {
        Self {
            cx,
            tenant: None,
            restart: false,
            patch: None,
        }
    }

    /// Whether the deleted tenant of the path has a deletion that stopped
    /// before it finished, which a DELETE starts again.
    async fn deletion_stopped(&self) -> Result<bool, Problem> {
        let deletion = self
            .cx
            .app
            .store
            .tenant_deletion(self.cx.param("tenant"))
            .await
            .map_err(store_problem)?;
        Ok(deletion.is_some_and(|d| d.stopped()))
    }

    /// Starts the deletion: 202, `Location` = the job's monitor, the job.
    async fn delete(&mut self) -> Result<Success, Problem> {
        let name = self.cx.param("tenant").to_owned();
        let expect = if self.restart {
            Expect::Anything
        } else {
            let t = still_there(self.tenant.take())?;
            self.cx.expect_version(t.version)
        };
        let job = self
            .cx
            .app
            .store
            .delete_tenant(&name, expect, self.cx.retention(), now_millis())
            .await
            .map_err(store_problem)?;
        Ok(super::jobs::accepted(&self.cx.app, &name, &job))
    }
}

impl Resource for OneTenant {
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem> {
        self.cx.remember(&input);
        Query::parse(&input.head.uri, &[])?;
        if self.cx.method == Method::PATCH {
            self.patch = Some(limits_patch(json_body(input.body.as_ref())?)?);
        }
        Ok(())
    }

    fn load(&mut self) -> BoxFuture<'_, Result<Existence, Problem>> {
        Box::pin(async move {
            let lookup = self.cx.tenant().await?;
            let existence = match &lookup {
                Lookup::Found(t) => found_with(render::tenant_validators(t)),
                Lookup::Gone if self.cx.method == Method::DELETE && self.deletion_stopped().await? => {
                    self.restart = true;
                    Existence::Found(Found::default())
                }
                other => super::container(other.clone()),
            };
            self.tenant = lookup.found().map(Arc::unwrap_or_clone);
            Ok(existence)
        })
    }

    fn execute(&mut self, _: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        Box::pin(async move {
            if self.cx.method == Method::DELETE {
                return self.delete().await;
            }
            let mut t = still_there(self.tenant.take())?;
            if let Some(patch) = self.patch.take() {
                let expect = self.cx.expect_version(t.version);
                t = self
                    .cx
                    .app
                    .store
                    .set_tenant_limits(&t.name, patch.apply(t.limits), expect)
                    .await
                    .map_err(store_problem)?;
            }
            Ok(Success::Ok(render::tenant_representation(&t, &self.cx.app.config)))
        })
    }
}

/// The tenant of a tenant-scoped request, for resources below it.
pub async fn require(cx: &Cx) -> Result<Arc<Tenant>, Stop> {
    super::found(cx.tenant().await?)
}
