//! `POST …/collections/{collection}/imports`: an NDJSON upload of records,
//! taken as it arrives and stored as the job's input before the 202.
//!
//! The body streams (it may be far larger than the single-request limit):
//! the flow hands it over only after every check has passed (403, 404, 415,
//! a declared length over `CANON_MAX_IMPORT_BYTES`), and this resource
//! copies it into the store in chunks of [`INPUT_CHUNK`], under a staged
//! job that no worker can see. Only when the whole body is durable is the job
//! queued and 202 answered; an upload that breaks off (the client goes away,
//! it stalls, it grows too large) deletes the staged job: no job exists.

use std::sync::Arc;

use canon_http::Problem;
use canon_http::flow::{BoxFuture, Existence, Found, Input, Resource, StreamedBody, Success};
use canon_http::media::MediaType;
use canon_store::{Collection, JobKind, NewJob, Tenant, now_millis};
use serde_json::json;

use super::collections::load_collection;
use super::{Cx, settle, still_there};
use crate::error::store_problem;
use crate::input::Query;

/// The size of the chunks an upload is stored in (the last may be smaller).
pub const INPUT_CHUNK: usize = 1 << 20;

/// `POST /v1/tenants/{tenant}/collections/{collection}/imports`.
pub struct Imports {
    cx: Cx,
    found: Option<(Arc<Tenant>, Arc<Collection>)>,
    body: Option<StreamedBody>,
}

impl Imports {
    /// For `cx`.
    pub fn new(cx: Cx) -> Self {
        Self {
            cx,
            found: None,
            body: None,
        }
    }
}

impl Resource for Imports {
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem> {
        self.cx.remember(&input);
        Query::parse(&input.head.uri, &[]).map(|_| ())
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

    fn take_body(&mut self, body: StreamedBody) {
        self.body = Some(body);
    }

    fn execute(&mut self, _: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        Box::pin(async move {
            let (tenant, collection) = still_there(self.found.take())?;
            let mut body = self
                .body
                .take()
                .unwrap_or_else(|| StreamedBody::new(MediaType::Ndjson, Box::new(None::<bytes::Bytes>), 0));
            let store = &self.cx.app.store;
            let job = store
                .create_job(
                    NewJob {
                        tenant_id: tenant.id.clone(),
                        kind: JobKind::Import,
                        params: json!({"collection_id": collection.id, "collection": collection.name}),
                        total: None,
                        with_input: true,
                    },
                    now_millis(),
                )
                .await
                .map_err(store_problem)?;
            if let Err(problem) = upload(&self.cx, &job.tenant_id, &job.id, &mut body).await {
                // No job for an upload that did not arrive whole.
                if let Err(e) = store
                    .cancel_job(&job.tenant_id, &job.id, now_millis(), canon_store::JOB_RESULT_RETENTION)
                    .await
                {
                    tracing::warn!(job = %job.id, error = %e, "could not drop an abandoned upload");
                }
                return Err(problem);
            }
            let job = store
                .enqueue_job(&job.tenant_id, &job.id, now_millis())
                .await
                .map_err(store_problem)?;
            Ok(super::jobs::accepted(&self.cx.app, &tenant.name, &job))
        })
    }
}

/// Copies `body` into the job's input, [`INPUT_CHUNK`] bytes at a time.
async fn upload(cx: &Cx, tenant_id: &str, job_id: &str, body: &mut StreamedBody) -> Result<(), Problem> {
    let mut buffer = Vec::with_capacity(INPUT_CHUNK);
    let mut seq = 0;
    while let Some(chunk) = body.next().await {
        buffer.extend_from_slice(&chunk?);
        if buffer.len() >= INPUT_CHUNK {
            let full = std::mem::replace(&mut buffer, Vec::with_capacity(INPUT_CHUNK));
            cx.app
                .store
                .append_job_input(tenant_id, job_id, seq, full)
                .await
                .map_err(store_problem)?;
            seq += 1;
        }
    }
    if !buffer.is_empty() {
        cx.app
            .store
            .append_job_input(tenant_id, job_id, seq, buffer)
            .await
            .map_err(store_problem)?;
    }
    Ok(())
}
