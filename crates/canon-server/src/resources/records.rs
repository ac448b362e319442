//! Records of a collection.

use crate::wire::LockRequest;
use canon_http::Problem;
use canon_http::access::{Principal, Role};
use canon_http::flow::{BoxFuture, Existence, Found, Input, LockInfo, Representation, Resource, Success};
use canon_http::media::MediaType;
use canon_store::{
    ApplyPatch, Collection, Expect, Lease, Lookup, Record, RecordQuery, RejectedWrite, SortOrder, is_field_name,
};
use http::Method;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::Arc;

use super::collections::load_collection;
use super::{Cx, settle, still_there};
use crate::error::{rejected_problem, store_problem};
use crate::input::{Query, decode, invalid_field, invalid_query, json_body, record_id};
use crate::listing::Listed;
use crate::state::App;
use crate::{listing, render};

/// Checks record data: a JSON object that satisfies the collection's schema.
/// Every failure is listed, each with a pointer into the record envelope.
/// Checks `data` against `collection`'s schema (400 `schema-violation`).
pub(crate) fn validate(app: &App, collection: &Collection, data: &Value) -> Result<(), Problem> {
    let validator = app.validator(collection)?;
    check_data(&validator, &collection.name, data).map_err(rejected_problem)
}

/// [`validate`] with a compiled `validator`, as a write's computation
/// reports it (so it can run inside the store's write transaction, or be
/// handed to it: an atomic batch's creates and replaces).
pub(crate) fn check_data(
    validator: &jsonschema::Validator,
    collection: &str,
    data: &Value,
) -> Result<(), RejectedWrite> {
    if !data.is_object() {
        return Err(RejectedWrite::Invalid {
            detail: "A record's data must be a JSON object.".into(),
            errors: vec![("/data".into(), "must be an object".into())],
        });
    }
    let errors: Vec<(String, String)> = validator
        .iter_errors(data)
        .map(|e| {
            // Bounded as it is formatted: a huge value is never copied whole.
            let error = canon_http::FieldError::describe(format!("/data{}", e.instance_path().as_str()), &e);
            (error.pointer, error.detail)
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(RejectedWrite::Invalid {
            detail: format!(
                "The record fails the schema of collection {collection} in {} place(s).",
                errors.len()
            ),
            errors,
        })
    }
}

/// The JSON scalar a filter value stands for. A value in double quotes is a
/// JSON string literal and always means that string (`"true"`, `"1"`,
/// `"null"`). Otherwise a number, `true`, `false` or `null`, written exactly
/// as JSON writes it, means that scalar (numbers compare by value: `1.0`
/// finds `1`), and anything else is the string itself. A number Canon could
/// not store exactly is refused, since nothing stored could equal it.
fn filter_value(name: &str, raw: &str) -> Result<Value, Problem> {
    if raw.chars().count() > MAX_FILTER_VALUE_CHARS {
        return Err(invalid_query(
            name,
            &format!("is longer than {MAX_FILTER_VALUE_CHARS} characters"),
        ));
    }
    let parsed = crate::json::parse(raw.as_bytes());
    if raw.starts_with('"') {
        return match parsed {
            Ok(v @ Value::String(_)) => Ok(v),
            _ => Err(invalid_query(
                name,
                "starts with a double quote but is not a JSON string: write \"…\" with JSON escapes",
            )),
        };
    }
    if raw.trim_matches([' ', '\t', '\n', '\r']) != raw {
        return Ok(Value::String(raw.to_owned()));
    }
    match parsed {
        Ok(v @ (Value::Number(_) | Value::Bool(_) | Value::Null)) => Ok(v),
        Err(crate::json::JsonError::Number { error, .. }) => Err(invalid_query(name, error.describe())),
        _ => Ok(Value::String(raw.to_owned())),
    }
}

/// A parsed list query: filters, sort, paging, and the fingerprint of the
/// filters and sort its cursors are bound to.
struct ListQuery {
    filters: Vec<(String, Value)>,
    sort: SortOrder,
    paging: listing::Paging,
    fingerprint: String,
}

fn record_query(q: &Query) -> Result<ListQuery, Problem> {
    let mut filters = Vec::new();
    for (k, v) in &q.0 {
        if let Some(field) = k.strip_prefix("filter[").and_then(|r| r.strip_suffix(']')) {
            if !is_field_name(field) {
                return Err(invalid_query(k, "must name a top-level field ([A-Za-z_][A-Za-z0-9_]*)"));
            }
            if filters.iter().any(|(f, _)| f == field) {
                return Err(invalid_query(
                    k,
                    "is given more than once (a field equals one value; filters on different fields are combined with AND)",
                ));
            }
            filters.push((field.to_owned(), filter_value(k, v)?));
        }
    }
    filters.sort_by(|a, b| a.0.cmp(&b.0));
    let sort = match q.one("sort")? {
        None | Some("id") => SortOrder::Id,
        Some(s) => {
            let (field, descending) = match s.strip_prefix('-') {
                Some(f) => (f, true),
                None => (s, false),
            };
            if !is_field_name(field) {
                return Err(invalid_query("sort", "must be a field name, optionally preceded by -"));
            }
            SortOrder::Field {
                field: field.to_owned(),
                descending,
            }
        }
    };
    let fingerprint = {
        let mut h = Sha256::new();
        h.update(format!("{filters:?}|{sort:?}").as_bytes());
        h.finalize()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let paging = listing::page_request(q)?;
    Ok(ListQuery {
        filters,
        sort,
        paging,
        fingerprint,
    })
}

fn location(cx: &Cx, id: &str) -> String {
    format!(
        "{}/collections/{}/records/{}",
        cx.tenant_path(),
        cx.param("collection"),
        id
    )
}

/// `GET, POST /v1/tenants/{tenant}/collections/{collection}/records`.
pub struct Records {
    cx: Cx,
    collection: Option<Arc<Collection>>,
    query: Option<ListQuery>,
    listed: Option<Listed>,
    data: Option<Value>,
}

impl Records {
    /// For `cx`.
    pub fn new(cx: Cx) -> Self {
        Self {
            cx,
            collection: None,
            query: None,
            listed: None,
            data: None,
        }
    }
}

impl Resource for Records {
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem> {
        self.cx.remember(&input);
        if self.cx.method == Method::POST {
            Query::parse(&input.head.uri, &[])?;
            self.data = Some(json_body(input.body.as_ref())?);
        } else {
            let q = Query::parse(&input.head.uri, &["limit", "cursor", "sort", "filter["])?;
            self.query = Some(record_query(&q)?);
        }
        Ok(())
    }

    fn load(&mut self) -> BoxFuture<'_, Result<Existence, Problem>> {
        Box::pin(async move {
            settle(
                async {
                    let (tenant, collection) = load_collection(&self.cx).await?;
                    let mut found = Found::default();
                    if let Some(q) = self.query.take() {
                        let scope = ["records", &tenant.id, &collection.id, &q.fingerprint];
                        let (page, cursors) = q.paging.open(&self.cx.app, &scope).await?;
                        let query = RecordQuery {
                            page,
                            filters: q.filters,
                            sort: q.sort,
                        };
                        let page = self
                            .cx
                            .app
                            .store
                            .list_raw_records(&collection.id, query)
                            .await
                            .map_err(store_problem)?;
                        found =
                            Listed::from_page_written(page, render::write_raw_record, &cursors).keep(&mut self.listed);
                    }
                    self.collection = Some(collection);
                    Ok(Existence::Found(found))
                }
                .await,
            )
        })
    }

    fn execute(&mut self, media: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        Box::pin(async move {
            let collection = still_there(self.collection.take())?;
            if let Some(data) = self.data.take() {
                validate(&self.cx.app, &collection, &data)?;
                let r = self
                    .cx
                    .app
                    .store
                    .create_record(&collection, data)
                    .await
                    .map_err(store_problem)?;
                return Ok(Success::Created {
                    location: location(&self.cx, &r.id),
                    representation: render::record_representation(&r),
                });
            }
            let listed = self.listed.take().ok_or_else(crate::error::internal)?;
            Ok(Success::Ok(listed.render(media, &self.cx.uri)?))
        })
    }
}

/// How a PATCH body changes a record's data.
enum PatchDocument {
    /// RFC 7396 (also plain `application/json`).
    Merge(Value),
    /// RFC 6902.
    Operations(json_patch::Patch),
}

/// The longest `filter[…]` value (as published in the API description).
pub const MAX_FILTER_VALUE_CHARS: usize = 4096;

/// The longest JSON pointer a JSON Patch operation may name (`path`, `from`).
pub const MAX_POINTER_CHARS: usize = 4096;

/// The most operations one JSON Patch may carry.
pub const MAX_PATCH_OPERATIONS: usize = 1000;

impl PatchDocument {
    fn parse(body: Option<&(MediaType, bytes::Bytes)>) -> Result<PatchDocument, Problem> {
        let media = body.map(|(m, _)| *m);
        let value = json_body(body)?;
        if media == Some(MediaType::JsonPatch) {
            if value.as_array().is_some_and(|ops| ops.len() > MAX_PATCH_OPERATIONS) {
                return Err(Problem::new(
                    canon_http::catalogue::ProblemKind::InvalidField,
                    format!("A JSON Patch has at most {MAX_PATCH_OPERATIONS} operations."),
                )
                .with_errors(vec![canon_http::problem::FieldError::new("", "too many operations")]));
            }
            let long = value.as_array().into_iter().flatten().enumerate().find_map(|(i, op)| {
                ["path", "from"].into_iter().find_map(|member| {
                    op.get(member)
                        .and_then(Value::as_str)
                        .filter(|p| p.chars().count() > MAX_POINTER_CHARS)
                        .map(|_| format!("/{i}/{member}"))
                })
            });
            if let Some(pointer) = long {
                return Err(crate::input::invalid_field(
                    &pointer,
                    &format!("a JSON pointer of at most {MAX_POINTER_CHARS} characters"),
                ));
            }
            return decode(value).map(PatchDocument::Operations);
        }
        Ok(PatchDocument::Merge(value))
    }

    /// The data after the patch. A failing `test` (or an operation the
    /// current data cannot take) is a conflict with the record's state: 409.
    ///
    /// The stored data is canonicalized first (records written before
    /// numbers were canonical may hold `1.0`), and the patch document came
    /// through the strict parser, so a `test` compares numbers by value
    /// (RFC 6902 §4.6) under the same rule as filters and unique fields.
    fn apply(&self, data: &Value) -> Result<Value, RejectedWrite> {
        let mut out = data.clone();
        crate::json::canonicalize(&mut out);
        match self {
            PatchDocument::Merge(patch) => json_patch::merge(&mut out, patch),
            PatchDocument::Operations(patch) => json_patch::patch(&mut out, patch).map_err(|e| {
                let operation = e.operation;
                let detail = format!("{} at {}", e.kind, e.path);
                match e.kind {
                    json_patch::PatchErrorKind::TestFailed => RejectedWrite::TestFailed { operation, detail },
                    _ => RejectedWrite::Inapplicable { operation, detail },
                }
            })?,
        }
        Ok(out)
    }
}

/// The computation a patch runs inside the store's write transaction: the
/// patch applied to the current data, then the collection's schema.
fn patch_computation(doc: PatchDocument, validator: Arc<jsonschema::Validator>, collection: String) -> ApplyPatch {
    Box::new(move |current| {
        let data = doc.apply(current)?;
        check_data(&validator, &collection, &data)?;
        Ok(data)
    })
}

/// [`patch_computation`] for a merge patch (RFC 7396): a batch's `patch`
/// operation, computed exactly as its `PATCH` request would be.
pub(crate) fn merge_patch_computation(
    patch: Value,
    validator: Arc<jsonschema::Validator>,
    collection: String,
) -> ApplyPatch {
    patch_computation(PatchDocument::Merge(patch), validator, collection)
}

/// The lease on a record that blocks `cx`'s caller, if any.
async fn blocking_lease(cx: &Cx, collection_id: &str, id: &str) -> Result<Option<LockInfo>, Problem> {
    let lease = cx.app.store.lease(collection_id, id).await.map_err(store_problem)?;
    Ok(lease
        .filter(|l| Some(l.holder.as_str()) != cx.principal.as_ref().map(Principal::actor))
        .map(|l| render::lock_info(&l)))
}

/// The caller's identity for leases (`anonymous` never writes: writes are guarded).
pub(crate) fn actor(cx: &Cx) -> &str {
    cx.principal.as_ref().map_or("anonymous", Principal::actor)
}

/// `GET, HEAD, PUT, PATCH, DELETE /v1/tenants/{tenant}/collections/{collection}/records/{id}`.
pub struct OneRecord {
    cx: Cx,
    collection: Option<Arc<Collection>>,
    /// The record as stored: a GET or HEAD sends it as it is; a write
    /// expects its tag.
    raw: Option<Arc<canon_store::RawRecord>>,
    data: Option<Value>,
    patch: Option<PatchDocument>,
}

impl OneRecord {
    /// For `cx`.
    pub fn new(cx: Cx) -> Self {
        Self {
            cx,
            collection: None,
            raw: None,
            data: None,
            patch: None,
        }
    }

    /// What the write expects of the stored record: when the client sent a
    /// precondition, exactly the state the flow evaluated it against, checked
    /// again inside the write's transaction.
    fn expect(&self) -> Expect {
        match (&self.raw, self.cx.conditional) {
            (_, false) => Expect::Anything,
            (Some(r), true) => Expect::Etag(r.etag.clone()),
            (None, true) => Expect::Absent,
        }
    }

    /// 200 with the new representation, located at the record's URL.
    fn updated(&self, r: &Record) -> Success {
        let mut rep: Representation = render::record_representation(r);
        rep.content_location = Some(location(&self.cx, &r.id));
        Success::Ok(rep)
    }

    async fn put(&mut self, collection: &Collection) -> Result<Success, Problem> {
        let data = self.data.take().ok_or_else(crate::error::internal)?;
        validate(&self.cx.app, collection, &data)?;
        let (r, created) = self
            .cx
            .app
            .store
            .put_record(collection, self.cx.param("id"), data, self.expect(), actor(&self.cx))
            .await
            .map_err(store_problem)?;
        if created {
            return Ok(Success::Created {
                location: location(&self.cx, &r.id),
                representation: render::record_representation(&r),
            });
        }
        Ok(self.updated(&r))
    }

    /// Applies the patch (then the schema) to the record's current data
    /// inside the store's write transaction, so no other write lands between
    /// reading and writing: an unconditional PATCH never fails for
    /// contention, and a conditional one still has exactly one winner (412
    /// for the others, checked in the same transaction).
    async fn patch(&mut self, collection: &Collection) -> Result<Success, Problem> {
        let doc = self.patch.take().ok_or_else(crate::error::internal)?;
        let validator = self.cx.app.validator(collection)?;
        let apply = patch_computation(doc, validator, collection.name.clone());
        let r = self
            .cx
            .app
            .store
            .patch_record(collection, self.cx.param("id"), apply, self.expect(), actor(&self.cx))
            .await
            .map_err(store_problem)?;
        Ok(self.updated(&r))
    }
}

impl Resource for OneRecord {
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem> {
        self.cx.remember(&input);
        Query::parse(&input.head.uri, &[])?;
        match self.cx.method {
            Method::PUT => {
                record_id(self.cx.param("id"), "/id")?;
                self.data = Some(json_body(input.body.as_ref())?);
            }
            Method::PATCH => self.patch = Some(PatchDocument::parse(input.body.as_ref())?),
            _ => {}
        }
        Ok(())
    }

    fn load(&mut self) -> BoxFuture<'_, Result<Existence, Problem>> {
        Box::pin(async move {
            settle(
                async {
                    let (_, collection) = load_collection(&self.cx).await?;
                    let id = self.cx.param("id");
                    let require_if_match = collection.require_if_match;
                    let writes = !matches!(self.cx.method, Method::GET | Method::HEAD);
                    // The stored text as it is (from the record cache where
                    // there is one): a read sends it without a parse, a tree
                    // or a second serialization; a write needs only its tag,
                    // since the write itself reads the record again inside
                    // its transaction.
                    let lookup = (self.cx.app.store)
                        .raw_record(&collection.id, id)
                        .await
                        .map_err(store_problem)?;
                    let existence = match lookup {
                        Lookup::Found(r) => {
                            let locked_by_other = if writes {
                                blocking_lease(&self.cx, &collection.id, id).await?
                            } else {
                                None
                            };
                            let validators = render::raw_record_validators(&r);
                            self.raw = Some(r);
                            Existence::Found(Found {
                                validators,
                                require_if_match,
                                locked_by_other,
                                ..Found::default()
                            })
                        }
                        Lookup::Gone => Existence::Gone,
                        Lookup::Missing => Existence::Missing,
                    };
                    self.collection = Some(collection);
                    Ok(existence)
                }
                .await,
            )
        })
    }

    fn execute(&mut self, _: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        Box::pin(async move {
            let collection = still_there(self.collection.take())?;
            match self.cx.method {
                Method::PUT => self.put(&collection).await,
                Method::PATCH => self.patch(&collection).await,
                Method::DELETE => {
                    let expect = self.expect();
                    self.cx
                        .app
                        .store
                        .delete_record(
                            &collection.id,
                            self.cx.param("id"),
                            expect,
                            actor(&self.cx),
                            self.cx.retention(),
                        )
                        .await
                        .map_err(store_problem)?;
                    Ok(Success::NoContent)
                }
                _ => Ok(Success::Ok(render::raw_record_representation(&*still_there(
                    self.raw.take(),
                )?))),
            }
        })
    }
}

/// Longest lease a caller may take at once (renewing extends it).
const MAX_LEASE_SECONDS: u64 = 24 * 3600;

/// `GET, PUT, DELETE …/records/{id}/lock`: a lease on one record.
///
/// The lock exists while a live lease does. PUT takes it (201) or renews
/// the caller's own (200); another caller's live lease makes PUT and DELETE
/// 423, except that a tenant admin (or the operator) may DELETE it to break it.
pub struct RecordLock {
    cx: Cx,
    collection_id: Option<String>,
    ttl: Option<std::time::Duration>,
    lease: Option<Lease>,
    /// DELETE by an admin of someone else's lease.
    breaking: bool,
}

impl RecordLock {
    /// For `cx`.
    pub fn new(cx: Cx) -> Self {
        Self {
            cx,
            collection_id: None,
            ttl: None,
            lease: None,
            breaking: false,
        }
    }

    fn path(&self) -> String {
        format!("{}/lock", location(&self.cx, self.cx.param("id")))
    }

    fn may_break(&self) -> bool {
        self.cx.principal.as_ref().is_some_and(|p| p.role() >= Role::Admin)
    }
}

impl Resource for RecordLock {
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem> {
        self.cx.remember(&input);
        Query::parse(&input.head.uri, &[])?;
        if self.cx.method == Method::PUT {
            let body: LockRequest = decode(json_body(input.body.as_ref())?)?;
            if !(1..=MAX_LEASE_SECONDS).contains(&body.ttl_seconds) {
                return Err(invalid_field(
                    "/ttl_seconds",
                    &format!("must be from 1 to {MAX_LEASE_SECONDS}"),
                ));
            }
            self.ttl = Some(std::time::Duration::from_secs(body.ttl_seconds));
        }
        Ok(())
    }

    fn load(&mut self) -> BoxFuture<'_, Result<Existence, Problem>> {
        Box::pin(async move {
            settle(
                async {
                    let (_, collection) = load_collection(&self.cx).await?;
                    let store = &self.cx.app.store;
                    let id = self.cx.param("id");
                    super::found(store.record(&collection.id, id).await.map_err(store_problem)?)?;
                    let lease = store.lease(&collection.id, id).await.map_err(store_problem)?;
                    self.collection_id = Some(collection.id.clone());
                    let actor = actor(&self.cx).to_owned();
                    let existence = match (&self.cx.method, lease) {
                        // Taking a lock needs only the record; someone else's live lease is 423.
                        (&Method::PUT, lease) => Existence::Found(Found {
                            locked_by_other: lease.filter(|l| l.holder != actor).map(|l| render::lock_info(&l)),
                            ..Found::default()
                        }),
                        (_, None) => Existence::Missing,
                        (&Method::DELETE, Some(l)) => {
                            self.breaking = l.holder != actor;
                            let blocked = self.breaking && !self.may_break();
                            Existence::Found(Found {
                                locked_by_other: blocked.then(|| render::lock_info(&l)),
                                ..Found::default()
                            })
                        }
                        (_, Some(l)) => {
                            self.lease = Some(l);
                            Existence::Found(Found::default())
                        }
                    };
                    Ok(existence)
                }
                .await,
            )
        })
    }

    fn execute(&mut self, _: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        Box::pin(async move {
            let collection_id = still_there(self.collection_id.take())?;
            let store = &self.cx.app.store;
            let id = self.cx.param("id");
            match self.cx.method {
                Method::PUT => {
                    let ttl = self.ttl.ok_or_else(crate::error::internal)?;
                    let (lease, new) = store
                        .acquire_lease(&collection_id, id, actor(&self.cx), ttl)
                        .await
                        .map_err(store_problem)?;
                    let mut rep = Representation::json(&render::lease(&lease));
                    if new {
                        return Ok(Success::Created {
                            location: self.path(),
                            representation: rep,
                        });
                    }
                    rep.content_location = Some(self.path());
                    Ok(Success::Ok(rep))
                }
                Method::DELETE => {
                    // The holder releases only its own lease (it may have
                    // expired and passed to someone else meanwhile); an admin
                    // breaking a lease releases whoever's it is.
                    let holder = (!self.breaking).then(|| actor(&self.cx));
                    let released = store
                        .release_lease(&collection_id, id, holder)
                        .await
                        .map_err(store_problem)?;
                    still_there(released.then_some(Success::NoContent))
                }
                _ => Ok(Success::Ok(Representation::json(&render::lease(&still_there(
                    self.lease.take(),
                )?)))),
            }
        })
    }
}
