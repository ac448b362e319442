//! `POST …/collections/{collection}/records/batch`: many record writes in
//! one request.
//!
//! Each operation runs through the decision flow as the single-record
//! request it stands for (`POST …/records`, `PUT`/`PATCH`/`DELETE
//! …/records/{id}`, with its `If-Match`), with the batch's own credentials,
//! so it is decided exactly like that request: leases (423), preconditions
//! (412), schema (400), uniqueness (409), missing records (404) and so on.
//! The batch answers 207 with every result in request order, or, with
//! `?report=most-critical`, one status: the most severe of the operations
//! (see [`severity`]) with the successes in `partialSuccessResponses`.

use bytes::Bytes;
use canon_http::catalogue::{PROBLEMS, ProblemKind};
use canon_http::flow::{BoxFuture, Existence, Found, Input, Representation, Resource, Success};
use canon_http::media::MediaType;
use canon_http::{FieldError, Problem};
use http::{HeaderValue, Method, header};
use serde_json::{Value, json};

use super::collections::load_collection;
use super::{Cx, settle, still_there};
use crate::input::{Query, decode, invalid_query, json_body, record_id};
use crate::wire::{BatchOperation, BatchRequest, BatchResult, BatchResults};

/// How a batch reports its results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Report {
    /// 207 with every result.
    All,
    /// The most severe status, successes in `partialSuccessResponses`.
    MostCritical,
}

/// `POST …/records/batch`.
pub struct Batch {
    cx: Cx,
    request: Option<BatchRequest>,
    report: Report,
    authorization: Option<HeaderValue>,
    records: String,
}

impl Batch {
    /// For `cx`.
    pub fn new(cx: Cx) -> Self {
        Self {
            cx,
            request: None,
            report: Report::All,
            authorization: None,
            records: String::new(),
        }
    }
}

/// How severe a status is when one must stand for a whole batch: a server
/// fault above every client error (nothing the client changes helps), then
/// the client errors that need the request itself changed (malformed,
/// invalid), then those of identity (not allowed), then of the target (not
/// there), then of state that a re-read resolves (conflict, stale tag,
/// `If-Match` required), then the temporary ones (locked, too many
/// requests). Successes are 0. Ties go to the earliest operation.
pub fn severity(status: u16) -> u8 {
    const RANKED: [(u16, u8); 17] = [
        (500, 100),
        (503, 99),
        (504, 98),
        (502, 97),
        (400, 80),
        (422, 79),
        (413, 78),
        (415, 77),
        (401, 70),
        (403, 69),
        (404, 60),
        (410, 59),
        (409, 50),
        (412, 49),
        (428, 48),
        (423, 40),
        (429, 39),
    ];
    match RANKED.iter().find(|(s, _)| *s == status) {
        Some((_, rank)) => *rank,
        None if status >= 500 => 96,
        None if status >= 400 => 30,
        None => 0,
    }
}

impl Resource for Batch {
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem> {
        self.cx.remember(&input);
        if input.head.method == Method::PUT {
            // `batch` is reserved, never a record id: a PUT here is refused
            // as naming one (400), not 405 as if records could not be put.
            return record_id("batch", "/id");
        }
        let q = Query::parse(&input.head.uri, &["report"])?;
        self.report = match q.one("report")? {
            None => Report::All,
            Some("most-critical") => Report::MostCritical,
            Some(_) => return Err(invalid_query("report", "must be `most-critical` when given")),
        };
        let request: BatchRequest = decode(json_body(input.body.as_ref())?)?;
        if request.operations.is_empty() || request.operations.len() > MAX_OPERATIONS {
            return Err(Problem::new(
                ProblemKind::InvalidField,
                format!("A batch has 1 to {MAX_OPERATIONS} operations."),
            )
            .with_errors(vec![FieldError::new(
                "/operations",
                format!("1 to {MAX_OPERATIONS} operations"),
            )]));
        }
        self.authorization = input.head.headers.get(header::AUTHORIZATION).cloned();
        self.records = input
            .head
            .uri
            .path()
            .strip_suffix("/batch")
            .unwrap_or_default()
            .to_owned();
        self.request = Some(request);
        Ok(())
    }

    fn load(&mut self) -> BoxFuture<'_, Result<Existence, Problem>> {
        Box::pin(async move {
            settle(
                async {
                    load_collection(&self.cx).await?;
                    Ok(Existence::Found(Found::default()))
                }
                .await,
            )
        })
    }

    fn execute(&mut self, _: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        Box::pin(async move {
            let request = still_there(self.request.take())?;
            if request.atomic {
                return Err(Problem::new(
                    ProblemKind::NotImplemented,
                    "Atomic batches (all or nothing) are part of the contract but not implemented yet; \
                     send the batch without `atomic` to apply each operation on its own.",
                ));
            }
            let mut results = Vec::with_capacity(request.operations.len());
            for (i, op) in request.operations.into_iter().enumerate() {
                results.push(self.run(i, op).await);
            }
            match self.report {
                Report::All => Ok(Success::MultiStatus(Representation::json(&to_json(&BatchResults {
                    results,
                })))),
                Report::MostCritical => most_critical(results),
            }
        })
    }
}

/// The most operations one batch may carry.
pub const MAX_OPERATIONS: usize = 1000;

impl Batch {
    /// Runs operation `i` as its own request through the flow.
    async fn run(&self, i: usize, op: BatchOperation) -> BatchResult {
        let (method, id, body, if_match, create_only) = match op {
            BatchOperation::Create { id: None, data } => (Method::POST, None, Some(data.0), None, false),
            BatchOperation::Create { id: Some(id), data } => (Method::PUT, Some(id), Some(data.0), None, true),
            BatchOperation::Replace { id, data, if_match } => (Method::PUT, Some(id), Some(data.0), if_match, false),
            BatchOperation::Patch { id, data, if_match } => (Method::PATCH, Some(id), Some(data.0), if_match, false),
            BatchOperation::Delete { id, if_match } => (Method::DELETE, Some(id), None, if_match, false),
        };
        let target = match &id {
            Some(id) => format!("{}/{id}", self.records),
            None => self.records.clone(),
        };
        let mut builder = http::Request::builder().method(method.clone()).uri(target.as_str());
        if let Some(auth) = &self.authorization {
            builder = builder.header(header::AUTHORIZATION, auth.clone());
        }
        builder = builder.header(header::HOST, "canon.internal");
        let bytes = match body {
            Some(data) => {
                let media = if method == Method::PATCH {
                    MediaType::MergePatch
                } else {
                    MediaType::Json
                };
                builder = builder.header(header::CONTENT_TYPE, media.content_type());
                Bytes::from(serde_json::to_vec(&Value::Object(data)).unwrap_or_default())
            }
            None => Bytes::new(),
        };
        builder = builder.header(header::CONTENT_LENGTH, bytes.len());
        if let Some(tag) = if_match {
            builder = builder.header(header::IF_MATCH, tag);
        }
        if create_only {
            builder = builder.header(header::IF_NONE_MATCH, "*");
        }
        let Ok(request) = builder.body(()) else {
            return failed(Problem::new(
                ProblemKind::InvalidField,
                "This operation cannot be expressed as a request (an id or tag with characters a header cannot hold).",
            )
            .with_errors(vec![FieldError::new(format!("/operations/{i}"), "not a valid request")]));
        };
        let (head, ()) = request.into_parts();
        let request_id = format!("batch-{i}");
        let response = super::service::run_within(&self.cx.app, &head, bytes, &request_id).await;
        let header = |name: header::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let body = (!response.body().is_empty())
            .then(|| serde_json::from_slice::<Value>(response.body()).ok())
            .flatten();
        BatchResult {
            status: response.status().as_u16(),
            location: header(header::LOCATION),
            etag: header(header::ETAG),
            body,
        }
    }
}

fn to_json(results: &BatchResults) -> Value {
    serde_json::to_value(results).unwrap_or(Value::Null)
}

/// A result for an operation refused before it could run.
fn failed(problem: Problem) -> BatchResult {
    BatchResult {
        status: problem.kind().status().as_u16(),
        location: None,
        etag: None,
        body: Some(problem.to_body("", "")),
    }
}

/// `?report=most-critical`: 200 with the results when every operation
/// succeeded; else the most severe operation's problem, its `errors`
/// pointing at that operation, with the successes listed.
fn most_critical(results: Vec<BatchResult>) -> Result<Success, Problem> {
    let worst = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.status >= 400)
        .max_by(|(i, a), (j, b)| severity(a.status).cmp(&severity(b.status)).then(j.cmp(i)));
    let Some((index, worst)) = worst else {
        return Ok(Success::Ok(Representation::json(&to_json(&BatchResults { results }))));
    };
    let slug = worst
        .body
        .as_ref()
        .and_then(|b| b["type"].as_str())
        .and_then(|t| t.strip_prefix("/problems/"))
        .unwrap_or("");
    let kind = PROBLEMS
        .iter()
        .find(|p| p.slug == slug)
        .map(|p| p.kind)
        .unwrap_or(ProblemKind::Internal);
    let detail = worst
        .body
        .as_ref()
        .and_then(|b| b["detail"].as_str())
        .unwrap_or("")
        .to_owned();
    let successes: Vec<Value> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.status < 400)
        .map(|(i, r)| {
            let mut entry = json!({"operation": i, "status": r.status});
            if let Some(location) = &r.location {
                entry["location"] = location.clone().into();
            }
            if let Some(etag) = &r.etag {
                entry["etag"] = etag.clone().into();
            }
            entry
        })
        .collect();
    Err(Problem::new(kind, format!("Operation {index} failed: {detail}"))
        .with_errors(vec![FieldError::new(format!("/operations/{index}"), slug.to_owned())])
        .with("partialSuccessResponses", Value::Array(successes)))
}

#[cfg(test)]
mod tests {
    use super::severity;

    #[test]
    fn server_faults_outrank_client_errors_and_state_outranks_waiting() {
        assert!(severity(500) > severity(400));
        assert!(severity(503) > severity(422));
        assert!(severity(400) > severity(403));
        assert!(severity(403) > severity(404));
        assert!(severity(404) > severity(409));
        assert!(severity(409) > severity(412));
        assert!(severity(412) > severity(423));
        assert!(severity(423) > severity(201));
        assert_eq!(severity(204), 0);
    }
}
