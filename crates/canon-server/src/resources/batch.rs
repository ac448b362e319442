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
//!
//! An atomic batch (`"atomic": true`) is all or nothing: its operations are
//! checked as their requests' parse would check them (ids, `if_match`), their
//! data against the schema, and then applied in one store transaction
//! ([`canon_store::RecordStore::apply_atomically`]) that checks, for each in
//! turn, what the flow checks of its request (existence, `if_match`, the
//! collection's demand for it, leases, unique fields). 200 with every result,
//! or the first failing operation's problem (through `store_problem`, so the
//! same status its request would get) and nothing applied.

use std::sync::Arc;

use bytes::Bytes;
use canon_http::catalogue::{PROBLEMS, ProblemKind};
use canon_http::flow::{BoxFuture, Existence, Found, Input, Representation, Resource, Success};
use canon_http::media::MediaType;
use canon_http::validators::TagCondition;
use canon_http::{FieldError, Problem};
use canon_store::{CheckedData, Collection, Expect, RecordWrite, RecordWritten};
use http::{HeaderValue, Method, header};
use serde_json::{Map, Value, json};

use super::collections::load_collection;
use super::records::{actor, check_data, merge_patch_computation};
use super::{Cx, settle, still_there};
use crate::error::store_problem;
use crate::input::{Query, decode, invalid_field, invalid_query, json_body, record_id};
use crate::render;
use crate::wire::{BatchOperation, BatchRequest, BatchResult, BatchResults};

/// How a batch reports its results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Report {
    /// 207 with every result.
    All,
    /// The most severe status, successes in `partialSuccessResponses`.
    MostCritical,
}

/// How a batch's operations are applied.
enum Plan {
    /// Each on its own, through the flow as its own request.
    EachOnItsOwn(Vec<BatchOperation>),
    /// All or nothing, in one store transaction.
    Atomic(Vec<AtomicOp>),
}

/// An operation of an atomic batch once the checks its request makes before
/// reading anything (its id, its `If-Match`) passed: what remains is decided
/// against the store, inside the transaction.
enum AtomicOp {
    /// `POST …/records`: a new record at an id Canon chooses.
    Create(Map<String, Value>),
    /// `PUT …/records/{id}`: create-only ([`Expect::Absent`]) for a `create`
    /// with an id, else a replace (or create) under its `if_match`.
    Put {
        id: String,
        data: Map<String, Value>,
        expect: Expect,
    },
    /// `PATCH …/records/{id}` with a merge patch.
    Patch {
        id: String,
        patch: Map<String, Value>,
        expect: Expect,
    },
    /// `DELETE …/records/{id}`.
    Delete { id: String, expect: Expect },
}

/// `POST …/records/batch`.
pub struct Batch {
    cx: Cx,
    plan: Option<Plan>,
    report: Report,
    authorization: Option<HeaderValue>,
    records: String,
    collection: Option<Arc<Collection>>,
}

impl Batch {
    /// For `cx`.
    pub fn new(cx: Cx) -> Self {
        Self {
            cx,
            plan: None,
            report: Report::All,
            authorization: None,
            records: String::new(),
            collection: None,
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
        self.plan = Some(if request.atomic {
            Plan::Atomic(prepare_atomic(request.operations)?)
        } else {
            Plan::EachOnItsOwn(request.operations)
        });
        Ok(())
    }

    fn load(&mut self) -> BoxFuture<'_, Result<Existence, Problem>> {
        Box::pin(async move {
            settle(
                async {
                    let (_, collection) = load_collection(&self.cx).await?;
                    self.collection = Some(collection);
                    Ok(Existence::Found(Found::default()))
                }
                .await,
            )
        })
    }

    fn execute(&mut self, _: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        Box::pin(async move {
            let operations = match still_there(self.plan.take())? {
                Plan::EachOnItsOwn(operations) => operations,
                Plan::Atomic(ops) => {
                    let collection = still_there(self.collection.take())?;
                    return match self.apply_atomically(&collection, ops).await {
                        Ok(results) => Ok(Success::Ok(Representation::json(&to_json(&BatchResults { results })))),
                        // Only one operation can fail, and it undid the
                        // others: nothing succeeded to list.
                        Err(problem) if self.report == Report::MostCritical => {
                            Err(problem.with("partialSuccessResponses", Value::Array(Vec::new())))
                        }
                        Err(problem) => Err(problem),
                    };
                }
            };
            let independent = self.collection.as_ref().is_some_and(|c| c.unique.is_empty());
            let results = self.run_in_waves(operations, independent).await;
            match self.report {
                Report::All => Ok(Success::MultiStatus(Representation::json(&to_json(&BatchResults {
                    results,
                })))),
                Report::MostCritical => most_critical(results),
            }
        })
    }
}

/// The operations of an atomic batch, each checked as its request's parse
/// would check it before anything is read: a record id (400 at
/// `/operations/{i}/id`, for every operation that names one, since no
/// record can have an invalid id) and `if_match` (400 at
/// `/operations/{i}/if_match`). One malformed operation makes the batch
/// malformed, whatever the store holds.
fn prepare_atomic(operations: Vec<BatchOperation>) -> Result<Vec<AtomicOp>, Problem> {
    let mut prepared = Vec::with_capacity(operations.len());
    for (i, op) in operations.into_iter().enumerate() {
        let id = |id: String| record_id(&id, &format!("/operations/{i}/id")).map(|()| id);
        let expect = |tags: Option<String>| expectation(tags.as_deref(), &format!("/operations/{i}/if_match"));
        prepared.push(match op {
            BatchOperation::Create { id: None, data } => AtomicOp::Create(data.0),
            BatchOperation::Create { id: Some(at), data } => AtomicOp::Put {
                id: id(at)?,
                data: data.0,
                expect: Expect::Absent,
            },
            BatchOperation::Replace { id: at, data, if_match } => AtomicOp::Put {
                id: id(at)?,
                data: data.0,
                expect: expect(if_match)?,
            },
            BatchOperation::Patch { id: at, data, if_match } => AtomicOp::Patch {
                id: id(at)?,
                patch: data.0,
                expect: expect(if_match)?,
            },
            BatchOperation::Delete { id: at, if_match } => AtomicOp::Delete {
                id: id(at)?,
                expect: expect(if_match)?,
            },
        });
    }
    Ok(prepared)
}

/// What an operation's `if_match` asks of its record, read as the flow reads
/// an `If-Match` header (RFC 9110 §13.1.1: `*`, or a list of tags compared
/// strongly, so a weak tag never matches; empty list elements are ignored,
/// and a list of none is no condition).
fn expectation(if_match: Option<&str>, pointer: &str) -> Result<Expect, Problem> {
    let Some(value) = if_match else {
        return Ok(Expect::Anything);
    };
    let refused = || invalid_field(pointer, "must be `*` or a list of entity tags, such as \"a1b2\"");
    let mut headers = http::HeaderMap::new();
    headers.insert(header::IF_MATCH, HeaderValue::from_str(value).map_err(|_| refused())?);
    Ok(
        match TagCondition::from_headers(&headers, &header::IF_MATCH).map_err(|_| refused())? {
            None => Expect::Anything,
            Some(TagCondition::Any) => Expect::Exists,
            Some(TagCondition::Tags(tags)) => Expect::OneOf(
                tags.iter()
                    .filter(|t| !t.is_weak())
                    .map(|t| t.to_string().trim_matches('"').to_owned())
                    .collect(),
            ),
        },
    )
}

impl Batch {
    /// Applies an atomic batch: schema checks of the new data first (on this
    /// task, not the store's writer), then every operation in one store
    /// transaction. The results are what each operation's own request would
    /// have answered.
    async fn apply_atomically(&self, collection: &Collection, ops: Vec<AtomicOp>) -> Result<Vec<BatchResult>, Problem> {
        let app = &self.cx.app;
        // Fetched only when an operation writes data: deleting needs no schema.
        let mut validator = None;
        let mut writes = Vec::with_capacity(ops.len());
        for op in ops {
            if !matches!(op, AtomicOp::Delete { .. }) && validator.is_none() {
                validator = Some(app.validator(collection)?);
            }
            let checked = |data: Map<String, Value>| -> CheckedData {
                let data = Value::Object(data);
                match &validator {
                    Some(v) => check_data(v, &collection.name, &data).map(|()| data),
                    None => Ok(data),
                }
            };
            writes.push(match op {
                AtomicOp::Create(data) => RecordWrite::Create { data: checked(data) },
                AtomicOp::Put { id, data, expect } => RecordWrite::Put {
                    id,
                    data: checked(data),
                    expect,
                },
                AtomicOp::Patch { id, patch, expect } => RecordWrite::Patch {
                    id,
                    apply: merge_patch_computation(
                        Value::Object(patch),
                        validator.clone().ok_or_else(crate::error::internal)?,
                        collection.name.clone(),
                    ),
                    expect,
                },
                AtomicOp::Delete { id, expect } => RecordWrite::Delete { id, expect },
            });
        }
        let written = app
            .store
            .apply_atomically(collection, writes, actor(&self.cx), self.cx.retention())
            .await
            .map_err(store_problem)?;
        Ok(written.into_iter().map(|w| self.result_of(w)).collect())
    }

    /// The result an atomic operation's own request would have answered:
    /// 201 with `Location`, 200, or 204; the record's tag and representation.
    fn result_of(&self, written: RecordWritten) -> BatchResult {
        let (status, location, record) = match written {
            RecordWritten::Created(r) => (201, Some(format!("{}/{}", self.records, r.id)), Some(r)),
            RecordWritten::Updated(r) => (200, None, Some(r)),
            RecordWritten::Deleted => (204, None, None),
        };
        BatchResult {
            status,
            location,
            etag: record
                .as_ref()
                .and_then(|r| render::record_validators(r).etag)
                .map(|t| t.to_string()),
            body: record.as_ref().map(render::record),
        }
    }
}

/// The most operations one batch may carry.
pub const MAX_OPERATIONS: usize = 1000;

/// How many operations of one wave run at once. Their writes meet in the
/// store's group commit, so a wave of independent creates costs a few
/// commits instead of one each.
const PIPELINE_DEPTH: usize = 64;

/// The wave of each operation: operations of one wave run at once, waves
/// one after the other. An operation goes one wave after the last earlier
/// operation on the same record id, so that operations on one record apply
/// in request order and see each other's effects, as they would in turn.
/// When the collection has unique fields (`independent` false), any two
/// writes can decide each other's outcome (which of two equal values wins,
/// a delete freeing a value a later create takes), so every operation is
/// its own wave: the batch runs strictly in order.
fn waves(operations: &[BatchOperation], independent: bool) -> Vec<usize> {
    if !independent {
        return (0..operations.len()).collect();
    }
    let mut last_wave_of: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    operations
        .iter()
        .map(|op| {
            let id = match op {
                BatchOperation::Create { id, .. } => id.as_deref(),
                BatchOperation::Replace { id, .. }
                | BatchOperation::Patch { id, .. }
                | BatchOperation::Delete { id, .. } => Some(id.as_str()),
            };
            match id {
                None => 0,
                Some(id) => {
                    let wave = last_wave_of.get(id).map_or(0, |w| w + 1);
                    last_wave_of.insert(id, wave);
                    wave
                }
            }
        })
        .collect()
}

impl Batch {
    /// Runs the operations in their [`waves`], and answers their results in
    /// request order.
    async fn run_in_waves(&self, operations: Vec<BatchOperation>, independent: bool) -> Vec<BatchResult> {
        use futures_util::StreamExt;

        let wave_of = waves(&operations, independent);
        let count = wave_of.iter().max().map_or(0, |w| w + 1);
        let mut by_wave: Vec<Vec<(usize, BatchOperation)>> = (0..count).map(|_| Vec::new()).collect();
        for (i, (op, wave)) in operations.into_iter().zip(wave_of).enumerate() {
            by_wave[wave].push((i, op));
        }
        let mut results: Vec<Option<BatchResult>> = (0..by_wave.iter().map(Vec::len).sum()).map(|_| None).collect();
        for wave in by_wave {
            let done: Vec<(usize, BatchResult)> = futures_util::stream::iter(wave)
                .map(|(i, op)| async move { (i, self.run(i, op).await) })
                .buffer_unordered(PIPELINE_DEPTH)
                .collect()
                .await;
            for (i, result) in done {
                results[i] = Some(result);
            }
        }
        results.into_iter().flatten().collect()
    }

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
    use super::{severity, waves};
    use crate::wire::BatchOperation;

    fn ops(json: serde_json::Value) -> Vec<BatchOperation> {
        serde_json::from_value(json).expect("operations")
    }

    #[test]
    fn operations_on_one_record_keep_their_order_and_others_share_a_wave() {
        let operations = ops(serde_json::json!([
            {"op": "create", "data": {}},
            {"op": "create", "id": "a", "data": {}},
            {"op": "patch", "id": "a", "data": {}},
            {"op": "delete", "id": "b"},
            {"op": "create", "data": {}},
            {"op": "replace", "id": "a", "data": {}},
            {"op": "create", "id": "b", "data": {}},
        ]));
        assert_eq!(waves(&operations, true), [0, 0, 1, 0, 0, 2, 1]);
    }

    #[test]
    fn unique_fields_make_every_operation_its_own_wave() {
        let operations = ops(serde_json::json!([
            {"op": "create", "data": {}},
            {"op": "create", "data": {}},
            {"op": "delete", "id": "b"},
        ]));
        assert_eq!(waves(&operations, false), [0, 1, 2]);
    }

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
