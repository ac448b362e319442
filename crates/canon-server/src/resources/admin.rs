//! The operator's administration of the server itself:
//! `GET, PUT /v1/admin/maintenance` (docs/decisions.md, "Maintenance mode").

use canon_http::flow::{BoxFuture, Existence, Input, Representation, Resource, Success};
use canon_http::media::MediaType;
use canon_http::validators::{EntityTag, Validators};
use canon_http::{FieldError, Problem};
use canon_store::{MaintenanceSetting, now_millis};
use http::Method;
use serde::Deserialize;
use serde_json::Value;

use super::{Cx, found_with, still_there};
use crate::error::store_problem;
use crate::input::{Query, decode, invalid_fields, json_body};
use crate::render::{system_time, timestamp};
use crate::wire::{self, DEFAULT_MAINTENANCE_RETRY, MaintenanceRequest};

/// The longest message the operator may leave for refused clients.
const MAX_MESSAGE_CHARS: usize = 1000;
/// The longest `Retry-After` the operator may ask clients to wait: a day.
const MAX_RETRY_AFTER: u32 = 86_400;

/// `GET, PUT /v1/admin/maintenance`.
pub struct Maintenance {
    cx: Cx,
    current: Option<canon_store::Maintenance>,
    request: Option<MaintenanceRequest>,
}

impl Maintenance {
    /// For `cx`.
    pub fn new(cx: Cx) -> Self {
        Self {
            cx,
            current: None,
            request: None,
        }
    }
}

/// The setting's validators: a strong tag from its version (every change
/// bumps it; the representation is rendered from the row alone).
fn validators(m: &canon_store::Maintenance) -> Validators {
    Validators::new(
        EntityTag::strong(format!("maintenance-{}", m.version)),
        system_time(m.updated_at),
    )
}

/// The shape of a `PUT` body: an object without unknown members (as the
/// schema says it); the values are checked by [`maintenance_request`], so a
/// wrong type is named by its pointer like a wrong value, not in serde's
/// words.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "deserialized only to check the shape")]
struct Shape {
    enabled: Option<Value>,
    retry_after_seconds: Option<Value>,
    message: Option<Value>,
}

/// Checks a body of `PUT /v1/admin/maintenance`, every field at once.
fn maintenance_request(body: Value) -> Result<MaintenanceRequest, Problem> {
    let _: Shape = decode(body.clone())?;
    let mut errors = Vec::new();
    let enabled = match body.get("enabled") {
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            errors.push(FieldError::new("/enabled", "must be true or false"));
            None
        }
        None => {
            errors.push(FieldError::new("/enabled", "is required: true or false"));
            None
        }
    };
    let retry_after = match body.get("retry_after_seconds") {
        None => Some(DEFAULT_MAINTENANCE_RETRY),
        Some(v) => match v.as_u64().map(u32::try_from) {
            Some(Ok(n)) if (1..=MAX_RETRY_AFTER).contains(&n) => Some(n),
            _ => {
                errors.push(FieldError::new(
                    "/retry_after_seconds",
                    format!("must be a whole number of seconds from 1 to {MAX_RETRY_AFTER}"),
                ));
                None
            }
        },
    };
    let message = match body.get("message") {
        None => Some(String::new()),
        Some(Value::String(m)) if m.chars().count() > MAX_MESSAGE_CHARS => {
            errors.push(FieldError::new(
                "/message",
                format!("must be at most {MAX_MESSAGE_CHARS} characters"),
            ));
            None
        }
        Some(Value::String(m)) if m.chars().any(char::is_control) => {
            errors.push(FieldError::new("/message", "must not contain control characters"));
            None
        }
        Some(Value::String(m)) => Some(m.clone()),
        Some(_) => {
            errors.push(FieldError::new("/message", "must be a string"));
            None
        }
    };
    match (enabled, retry_after, message) {
        (Some(enabled), Some(retry_after_seconds), Some(message)) if errors.is_empty() => Ok(MaintenanceRequest {
            enabled,
            retry_after_seconds,
            message,
        }),
        _ => Err(invalid_fields(errors)),
    }
}

fn representation(m: &canon_store::Maintenance) -> Representation {
    let body = wire::Maintenance {
        enabled: m.enabled,
        retry_after_seconds: m.retry_after_seconds,
        message: m.message.clone(),
        updated_at: timestamp(m.updated_at),
    };
    let mut rep = Representation::json(&serde_json::to_value(body).unwrap_or_default()).with_validators(validators(m));
    // The operator must see the setting as it is, not as a cache kept it.
    rep.cache_control = Some("no-cache");
    rep
}

impl Resource for Maintenance {
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem> {
        self.cx.remember(&input);
        Query::parse(&input.head.uri, &[])?;
        if self.cx.method == Method::PUT {
            self.request = Some(maintenance_request(json_body(input.body.as_ref())?)?);
        }
        Ok(())
    }

    fn load(&mut self) -> BoxFuture<'_, Result<Existence, Problem>> {
        Box::pin(async move {
            // Read from the store, not the process's copy: a PUT's
            // precondition is judged against the setting as it is.
            let current = self.cx.app.store.maintenance().await.map_err(store_problem)?;
            let existence = found_with(validators(&current));
            self.current = Some(current);
            Ok(existence)
        })
    }

    fn execute(&mut self, _: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        Box::pin(async move {
            let current = still_there(self.current.take())?;
            let Some(request) = self.request.take() else {
                return Ok(Success::Ok(representation(&current)));
            };
            let setting = MaintenanceSetting {
                enabled: request.enabled,
                retry_after_seconds: request.retry_after_seconds,
                message: request.message,
            };
            let app = &self.cx.app;
            let set = app
                .store
                .set_maintenance(setting, self.cx.expect_version(current.version), now_millis())
                .await
                .map_err(store_problem)?;
            // This process applies it from its next request; the others
            // read it within `maintenance::REFRESH_EVERY`.
            app.remember_maintenance(set.clone());
            tracing::info!(
                enabled = set.enabled,
                retry_after = set.retry_after_seconds,
                "maintenance mode set"
            );
            let mut rep = representation(&set);
            rep.content_location = Some("/v1/admin/maintenance".into());
            Ok(Success::Ok(rep))
        })
    }
}
