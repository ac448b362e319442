//! `/v1/tenants/{tenant}/collections` and one collection.

use std::sync::Arc;

use crate::wire::{CollectionPatch, NewCollection as NewCollectionBody};
use canon_http::flow::{BoxFuture, Existence, Found, Input, Resource, Success};
use canon_http::media::MediaType;
use canon_http::{FieldError, Problem, ProblemKind};
use canon_store::{Collection, CollectionChanges, Lookup, NewCollection, PageRequest, Tenant, is_field_name};
use http::Method;
use serde_json::Value;

use super::{Cx, Stop, found_with, settle, still_there, tenants};
use crate::error::store_problem;
use crate::input::{Query, decode, invalid_field, json_body, slug};
use crate::listing::{self, Listed};
use crate::render;

/// Checks `schema` is a valid draft 2020-12 JSON Schema that Canon admits
/// ([`crate::schema_rules::admit`]: fragment references only, `$id` at the
/// root only, every reference resolving, no loop on one value, bounded
/// expanded size) and that compiles without fetching anything.
fn check_schema(schema: &Value) -> Result<(), Problem> {
    if let Err(e) = jsonschema::draft202012::meta::validate(schema) {
        let pointer = format!("/schema{}", e.instance_path().as_str());
        return Err(Problem::new(
            ProblemKind::InvalidField,
            "The schema is not a valid JSON Schema (draft 2020-12).",
        )
        .with_errors(vec![FieldError::new(pointer, e.to_string())]));
    }
    crate::schema_rules::admit(schema).map_err(|refusal| {
        Problem::new(
            ProblemKind::InvalidField,
            "The schema is refused: its references must stay inside it and its validation cost must be bounded.",
        )
        .with_errors(vec![FieldError::new(
            format!("/schema{}", refusal.pointer),
            refusal.message,
        )])
    })?;
    jsonschema::draft202012::new(schema).map_err(|e| {
        Problem::new(ProblemKind::InvalidField, "The schema cannot be compiled.")
            .with_errors(vec![FieldError::new("/schema", e.to_string())])
    })?;
    Ok(())
}

/// The most unique fields a collection may have (each is an index).
pub const MAX_UNIQUE_FIELDS: usize = 16;

/// Checks a `unique` list (`pointer` names it) and returns it sorted, deduplicated.
fn unique_fields(mut unique: Vec<String>, pointer: &str) -> Result<Vec<String>, Problem> {
    if unique.len() > MAX_UNIQUE_FIELDS {
        return Err(invalid_field(
            pointer,
            &format!("at most {MAX_UNIQUE_FIELDS} unique fields"),
        ));
    }
    for (i, f) in unique.iter().enumerate() {
        if !is_field_name(f) {
            return Err(invalid_field(
                &format!("{pointer}/{i}"),
                "must be a top-level field name ([A-Za-z_][A-Za-z0-9_]*)",
            ));
        }
    }
    unique.sort();
    unique.dedup();
    Ok(unique)
}

impl CollectionPatch {
    fn parse(body: Value) -> Result<CollectionChanges, Problem> {
        crate::input::no_removals(&body)?;
        let patch: CollectionPatch = decode(body)?;
        if let Some(name) = &patch.name {
            slug(name, "/name")?;
        }
        if let Some(schema) = &patch.schema {
            check_schema(schema)?;
        }
        Ok(CollectionChanges {
            name: patch.name,
            schema: patch.schema,
            unique: patch.unique.map(|u| unique_fields(u, "/unique")).transpose()?,
            require_if_match: patch.require_if_match,
        })
    }
}

/// `GET, POST /v1/tenants/{tenant}/collections`.
pub struct Collections {
    cx: Cx,
    tenant: Option<Arc<Tenant>>,
    page: Option<listing::Paging>,
    listed: Option<Listed>,
    new: Option<NewCollection>,
}

impl Collections {
    /// For `cx`.
    pub fn new(cx: Cx) -> Self {
        Self {
            cx,
            tenant: None,
            page: None,
            listed: None,
            new: None,
        }
    }
}

/// The URL of the collection called `name` in `cx`'s tenant.
fn collection_path(cx: &Cx, name: &str) -> String {
    format!("{}/collections/{name}", cx.tenant_path())
}

impl Resource for Collections {
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem> {
        self.cx.remember(&input);
        if self.cx.method == Method::POST {
            Query::parse(&input.head.uri, &[])?;
            let body: NewCollectionBody = decode(json_body(input.body.as_ref())?)?;
            slug(&body.name, "/name")?;
            check_schema(&body.schema)?;
            self.new = Some(NewCollection {
                name: body.name,
                schema: body.schema,
                unique: unique_fields(body.unique, "/unique")?,
                require_if_match: body.require_if_match,
            });
        } else {
            let q = Query::parse(&input.head.uri, &["limit", "cursor"])?;
            self.page = Some(listing::page_request(&q)?);
        }
        Ok(())
    }

    fn load(&mut self) -> BoxFuture<'_, Result<Existence, Problem>> {
        Box::pin(async move {
            settle(
                async {
                    let tenant = tenants::require(&self.cx).await?;
                    let mut found = Found::default();
                    if let Some(paging) = self.page.take() {
                        let (page, cursors) = paging.open(&self.cx.app, &["collections", &tenant.id]).await?;
                        let page = self
                            .cx
                            .app
                            .store
                            .list_collections(&tenant.id, page)
                            .await
                            .map_err(store_problem)?;
                        found = Listed::from_page(page, render::collection, &cursors).keep(&mut self.listed);
                    }
                    self.tenant = Some(tenant);
                    Ok(Existence::Found(found))
                }
                .await,
            )
        })
    }

    fn execute(&mut self, media: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        Box::pin(async move {
            let tenant = still_there(self.tenant.take())?;
            if let Some(new) = self.new.take() {
                let c = self
                    .cx
                    .app
                    .store
                    .create_collection(&tenant.id, new)
                    .await
                    .map_err(store_problem)?;
                return Ok(Success::Created {
                    location: collection_path(&self.cx, &c.name),
                    representation: render::collection_representation(&c),
                });
            }
            let listed = self.listed.take().ok_or_else(crate::error::internal)?;
            Ok(Success::Ok(listed.render(media, &self.cx.uri)?))
        })
    }
}

/// Every live collection of `tenant`, in the store's order (by id).
pub async fn all(cx: &Cx, tenant: &Tenant) -> Result<Vec<Collection>, Problem> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = cx
            .app
            .store
            .list_collections(
                &tenant.id,
                PageRequest {
                    limit: listing::MAX_LIMIT,
                    after,
                },
            )
            .await
            .map_err(store_problem)?;
        out.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(out),
        }
    }
}

/// Loads the tenant and the collection named in the path.
pub async fn load_collection(cx: &Cx) -> Result<(Arc<Tenant>, Arc<Collection>), Stop> {
    let tenant = tenants::require(cx).await?;
    let store = &cx.app.store;
    let name = cx.param("collection");
    let lookup = (cx.app.lookups)
        .collection(&**store, &tenant.id, name)
        .await
        .map_err(store_problem)?;
    match lookup {
        Lookup::Found(c) => Ok((tenant, c)),
        other => {
            // An old name of a renamed collection: the same path under the new name.
            if let Some(current) = store.collection_alias(&tenant.id, name).await.map_err(store_problem)? {
                let old_prefix = collection_path(cx, name);
                let rest = cx.uri.path().strip_prefix(&old_prefix).unwrap_or("");
                let target = format!("{}{rest}", collection_path(cx, &current));
                return Err(Stop::At(Existence::Moved(super::with_query(target, &cx.uri))));
            }
            Err(super::absent(&other))
        }
    }
}

/// `GET, PATCH, DELETE /v1/tenants/{tenant}/collections/{collection}`.
pub struct OneCollection {
    cx: Cx,
    found: Option<(Arc<Tenant>, Arc<Collection>)>,
    changes: Option<CollectionChanges>,
    force: bool,
}

impl OneCollection {
    /// For `cx`.
    pub fn new(cx: Cx) -> Self {
        Self {
            cx,
            found: None,
            changes: None,
            force: false,
        }
    }
}

impl Resource for OneCollection {
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem> {
        self.cx.remember(&input);
        match self.cx.method {
            Method::DELETE => self.force = Query::parse(&input.head.uri, &["force"])?.flag("force")?,
            Method::PATCH => {
                Query::parse(&input.head.uri, &[])?;
                self.changes = Some(CollectionPatch::parse(json_body(input.body.as_ref())?)?);
            }
            _ => {
                Query::parse(&input.head.uri, &[])?;
            }
        }
        Ok(())
    }

    fn load(&mut self) -> BoxFuture<'_, Result<Existence, Problem>> {
        Box::pin(async move {
            settle(
                async {
                    let found = load_collection(&self.cx).await?;
                    let existence = found_with(render::collection_validators(&found.1));
                    self.found = Some(found);
                    Ok(existence)
                }
                .await,
            )
        })
    }

    fn execute(&mut self, _: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        Box::pin(async move {
            let (tenant, c) = still_there(self.found.take())?;
            let store = &self.cx.app.store;
            let expect = self.cx.expect_version(c.version);
            match self.cx.method {
                Method::PATCH => {
                    let changes = self.changes.take().unwrap_or_default();
                    let updated = store
                        .update_collection(&tenant.id, &c.name, changes, expect)
                        .await
                        .map_err(store_problem)?;
                    let mut rep = render::collection_representation(&updated);
                    rep.content_location = Some(collection_path(&self.cx, &updated.name));
                    Ok(Success::Ok(rep))
                }
                Method::DELETE => match store
                    .delete_collection(&tenant.id, &c.name, expect, self.cx.retention())
                    .await
                {
                    Ok(_) => Ok(Success::NoContent),
                    // Deleting the records of a non-empty collection is long
                    // work: a job (202), followed at its monitor.
                    Err(canon_store::StoreError::NotEmpty) if self.force => {
                        let job = store
                            .create_job(
                                canon_store::NewJob {
                                    tenant_id: tenant.id.clone(),
                                    kind: canon_store::JobKind::DeleteCollection,
                                    params: serde_json::json!({"collection_id": c.id, "collection": c.name}),
                                    total: None,
                                    with_input: false,
                                },
                                canon_store::now_millis(),
                            )
                            .await
                            .map_err(store_problem)?;
                        Ok(super::jobs::accepted(&self.cx.app, &tenant.name, &job))
                    }
                    Err(e) => Err(store_problem(e)),
                },
                _ => Ok(Success::Ok(render::collection_representation(&c))),
            }
        })
    }
}
