//! `POST …/collections/{collection}/exports`: a collection's records into a
//! file (NDJSON or CSV), written by a job and fetched from its result.
//!
//! Everything that can fail at once does, before any job exists: the body's
//! shape (400), the collection (404, 410, 301 for an old name), the role
//! (403). The job ([`crate::export`]) then pages through the records by id
//! and stores the file in chunks; the job's result streams it back.

use std::sync::Arc;

use canon_http::flow::{BoxFuture, Existence, Found, Input, Resource, Success};
use canon_http::media::MediaType;
use canon_http::{FieldError, Problem, ProblemKind};
use canon_store::{Collection, JobKind, NewJob, Tenant, is_field_name, now_millis};
use serde_json::{Value, json};

use super::collections::load_collection;
use super::records::MAX_FILTER_VALUE_CHARS;
use super::{Cx, settle, still_there};
use crate::error::store_problem;
use crate::input::{Query, decode, json_body};
use crate::wire::ExportRequest;

/// The most filters an export takes (as published in the API description).
const MAX_FILTERS: usize = 16;

/// `POST /v1/tenants/{tenant}/collections/{collection}/exports`.
pub struct Exports {
    cx: Cx,
    request: Option<ExportRequest>,
    found: Option<(Arc<Tenant>, Arc<Collection>)>,
}

impl Exports {
    /// For `cx`.
    pub fn new(cx: Cx) -> Self {
        Self {
            cx,
            request: None,
            found: None,
        }
    }
}

/// Refuses filters the record list would refuse: a field that is not a
/// top-level name, a value that is not a JSON scalar or is too long.
fn check_filter(request: &ExportRequest) -> Result<(), Problem> {
    let bad = |field: &str, why: String| {
        Problem::new(ProblemKind::InvalidField, format!("The filter on `{field}` {why}.")).with_errors(vec![
            FieldError::new(format!("/filter/{}", field.replace('~', "~0").replace('/', "~1")), why),
        ])
    };
    if request.filter.len() > MAX_FILTERS {
        return Err(Problem::new(
            ProblemKind::InvalidField,
            format!("An export takes at most {MAX_FILTERS} filters."),
        )
        .with_errors(vec![FieldError::new(
            "/filter",
            format!("at most {MAX_FILTERS} fields"),
        )]));
    }
    for (field, value) in &request.filter {
        if !is_field_name(field) {
            return Err(bad(
                field,
                "must name a top-level field ([A-Za-z_][A-Za-z0-9_]*)".into(),
            ));
        }
        match value {
            Value::String(s) if s.chars().count() > MAX_FILTER_VALUE_CHARS => {
                return Err(bad(
                    field,
                    format!("is longer than {MAX_FILTER_VALUE_CHARS} characters"),
                ));
            }
            Value::Array(_) | Value::Object(_) => {
                return Err(bad(field, "must be a string, number, boolean or null".into()));
            }
            _ => {}
        }
    }
    Ok(())
}

impl Resource for Exports {
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem> {
        self.cx.remember(&input);
        Query::parse(&input.head.uri, &[])?;
        let request: ExportRequest = decode(json_body(input.body.as_ref())?)?;
        check_filter(&request)?;
        self.request = Some(request);
        Ok(())
    }

    fn load(&mut self) -> BoxFuture<'_, Result<Existence, Problem>> {
        Box::pin(async move {
            settle(
                async {
                    self.found = Some(load_collection(&self.cx).await?);
                    Ok(Existence::Found(Found::default()))
                }
                .await,
            )
        })
    }

    fn execute(&mut self, _: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        Box::pin(async move {
            let (tenant, collection) = still_there(self.found.take())?;
            let request = still_there(self.request.take())?;
            let job = self
                .cx
                .app
                .store
                .create_job(
                    NewJob {
                        tenant_id: tenant.id.clone(),
                        kind: JobKind::Export,
                        params: json!({
                            "collection_id": collection.id,
                            "collection": collection.name,
                            "format": request.format,
                            "filter": request.filter,
                        }),
                        total: None,
                        with_input: false,
                    },
                    now_millis(),
                )
                .await
                .map_err(store_problem)?;
            Ok(super::jobs::accepted(&self.cx.app, &tenant.name, &job))
        })
    }
}
