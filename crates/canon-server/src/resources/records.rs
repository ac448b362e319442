//! Records of a collection.

use canon_http::flow::{BoxFuture, Existence, Found, Input, Representation, Resource, Success};
use canon_http::media::MediaType;
use canon_http::validators::Validators;
use canon_http::{FieldError, Problem, ProblemKind};
use canon_store::{Collection, Expect, Lookup, Record, RecordQuery, SortOrder, is_field_name};
use http::Method;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::collections::load_collection;
use super::{Cx, list_success, still_there};
use crate::app::App;
use crate::error::store_problem;
use crate::input::{Query, invalid_query, is_client_id, json_body};
use crate::{listing, render};

/// Checks record data: a JSON object that satisfies the collection's schema.
/// Every failure is listed, each with a pointer into the record envelope.
fn validate(app: &App, collection: &Collection, data: &Value) -> Result<(), Problem> {
    if !data.is_object() {
        return Err(
            Problem::new(ProblemKind::SchemaViolation, "A record's data must be a JSON object.")
                .with_errors(vec![FieldError::new("/data", "must be an object")]),
        );
    }
    let validator = app.validator(collection)?;
    let errors: Vec<FieldError> = validator
        .iter_errors(data)
        .map(|e| FieldError::new(format!("/data{}", e.instance_path().as_str()), e.to_string()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Problem::new(
            ProblemKind::SchemaViolation,
            format!(
                "The record fails the schema of collection {} in {} place(s).",
                collection.name,
                errors.len()
            ),
        )
        .with_errors(errors))
    }
}

/// The JSON scalar a filter value stands for: a number, `true`, `false` or
/// `null` when it parses as one, else the string itself.
fn filter_value(raw: &str) -> Value {
    match serde_json::from_str::<Value>(raw) {
        Ok(v @ (Value::Number(_) | Value::Bool(_) | Value::Null)) => v,
        _ => Value::String(raw.to_owned()),
    }
}

fn record_query(q: &Query) -> Result<(RecordQuery, String), Problem> {
    let mut filters = Vec::new();
    for (k, v) in &q.0 {
        if let Some(field) = k.strip_prefix("filter[").and_then(|r| r.strip_suffix(']')) {
            if !is_field_name(field) {
                return Err(invalid_query(k, "must name a top-level field ([A-Za-z_][A-Za-z0-9_]*)"));
            }
            filters.push((field.to_owned(), filter_value(v)));
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
    let page = listing::page_request(q, &fingerprint)?;
    Ok((RecordQuery { page, filters, sort }, fingerprint))
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
    collection: Option<Collection>,
    query: Option<(RecordQuery, String)>,
    data: Option<Value>,
}

impl Records {
    /// For `cx`.
    pub fn new(cx: Cx) -> Self {
        Self {
            cx,
            collection: None,
            query: None,
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
            match load_collection(&self.cx).await? {
                Ok((_, c)) => {
                    self.collection = Some(c);
                    Ok(Existence::Found(Found::default()))
                }
                Err(e) => Ok(e),
            }
        })
    }

    fn execute(&mut self, media: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        Box::pin(async move {
            let collection = still_there(self.collection.take())?;
            let store = &self.cx.app.store;
            if let Some(data) = self.data.take() {
                validate(&self.cx.app, &collection, &data)?;
                let r = store.create_record(&collection, data).await.map_err(store_problem)?;
                return Ok(Success::Created {
                    location: location(&self.cx, &r.id),
                    representation: render::record_representation(&r),
                });
            }
            let (query, fingerprint) = self.query.take().ok_or_else(crate::error::internal)?;
            let page = store.list_records(&collection.id, query).await.map_err(store_problem)?;
            list_success(
                &self.cx,
                page.items.iter().map(render::record).collect(),
                page.next,
                &fingerprint,
                media,
            )
        })
    }
}

/// `GET, PUT, DELETE /v1/tenants/{tenant}/collections/{collection}/records/{id}`.
pub struct OneRecord {
    cx: Cx,
    collection: Option<Collection>,
    record: Option<Record>,
    data: Option<Value>,
}

impl OneRecord {
    /// For `cx`.
    pub fn new(cx: Cx) -> Self {
        Self {
            cx,
            collection: None,
            record: None,
            data: None,
        }
    }

    /// What the write expects of the stored record: when the client sent a
    /// precondition, exactly the state the flow evaluated it against, checked
    /// again inside the write's transaction.
    fn expect(&self) -> Expect {
        match (&self.record, self.cx.conditional) {
            (_, false) => Expect::Anything,
            (Some(r), true) => Expect::Etag(r.etag.clone()),
            (None, true) => Expect::Absent,
        }
    }
}

impl Resource for OneRecord {
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem> {
        self.cx.remember(&input);
        Query::parse(&input.head.uri, &[])?;
        if self.cx.method == Method::PUT {
            if !is_client_id(self.cx.param("id")) {
                return Err(Problem::new(
                    ProblemKind::InvalidField,
                    "A record id chosen by the client must be 1 to 128 of A-Z a-z 0-9 . _ ~ -",
                )
                .with_errors(vec![FieldError::new("/id", "not a valid record id")]));
            }
            self.data = Some(json_body(input.body.as_ref())?);
        }
        Ok(())
    }

    fn load(&mut self) -> BoxFuture<'_, Result<Existence, Problem>> {
        Box::pin(async move {
            let collection = match load_collection(&self.cx).await? {
                Ok((_, c)) => c,
                Err(e) => return Ok(e),
            };
            let lookup = self
                .cx
                .app
                .store
                .record(&collection.id, self.cx.param("id"))
                .await
                .map_err(store_problem)?;
            let require_if_match = collection.require_if_match;
            self.collection = Some(collection);
            Ok(match lookup {
                Lookup::Found(r) => {
                    let validators: Validators = render::record_validators(&r);
                    self.record = Some(r);
                    Existence::Found(Found {
                        validators,
                        require_if_match,
                        locked_by_other: None,
                    })
                }
                Lookup::Gone => Existence::Gone,
                Lookup::Missing => Existence::Missing,
            })
        })
    }

    fn execute(&mut self, _: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        Box::pin(async move {
            let collection = still_there(self.collection.take())?;
            let store = &self.cx.app.store;
            let id = self.cx.param("id").to_owned();
            match self.cx.method {
                Method::PUT => {
                    let data = self.data.take().ok_or_else(crate::error::internal)?;
                    validate(&self.cx.app, &collection, &data)?;
                    let expect = self.expect();
                    let (r, created) = store
                        .put_record(&collection, &id, data, expect)
                        .await
                        .map_err(store_problem)?;
                    let mut rep: Representation = render::record_representation(&r);
                    if created {
                        return Ok(Success::Created {
                            location: location(&self.cx, &r.id),
                            representation: rep,
                        });
                    }
                    rep.content_location = Some(location(&self.cx, &r.id));
                    Ok(Success::Ok(rep))
                }
                Method::DELETE => {
                    let expect = self.expect();
                    store
                        .delete_record(&collection.id, &id, expect, self.cx.retention())
                        .await
                        .map_err(store_problem)?;
                    Ok(Success::NoContent)
                }
                _ => Ok(Success::Ok(render::record_representation(&still_there(
                    self.record.take(),
                )?))),
            }
        })
    }
}
