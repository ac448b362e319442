//! `/v1/tenants/{tenant}/collections` and one collection.

use canon_http::flow::{BoxFuture, Existence, Found, Input, Resource, Success};
use canon_http::media::MediaType;
use canon_http::{FieldError, Problem, ProblemKind};
use canon_store::{Collection, Lookup, NewCollection, PageRequest, Tenant, is_field_name};
use http::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Cx, created, list_success, ok, still_there, tenants};
use crate::error::store_problem;
use crate::input::{Query, decode, invalid_field, json_body, slug};
use crate::{listing, render};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCollectionBody {
    name: String,
    #[serde(default = "default_schema")]
    schema: Value,
    #[serde(default)]
    unique: Vec<String>,
    #[serde(default)]
    require_if_match: bool,
}

fn default_schema() -> Value {
    json!({"type": "object"})
}

/// Checks `schema` is a valid draft 2020-12 JSON Schema that compiles
/// without fetching anything (remote `$ref`s are refused).
fn check_schema(schema: &Value) -> Result<(), Problem> {
    if let Err(e) = jsonschema::draft202012::meta::validate(schema) {
        let pointer = format!("/schema{}", e.instance_path().as_str());
        return Err(Problem::new(
            ProblemKind::InvalidField,
            "The schema is not a valid JSON Schema (draft 2020-12).",
        )
        .with_errors(vec![FieldError::new(pointer, e.to_string())]));
    }
    jsonschema::draft202012::new(schema).map_err(|e| {
        Problem::new(ProblemKind::InvalidField, "The schema cannot be compiled.")
            .with_errors(vec![FieldError::new("/schema", e.to_string())])
    })?;
    Ok(())
}

/// `GET, POST /v1/tenants/{tenant}/collections`.
pub struct Collections {
    cx: Cx,
    tenant: Option<Tenant>,
    page: Option<PageRequest>,
    new: Option<NewCollection>,
}

impl Collections {
    /// For `cx`.
    pub fn new(cx: Cx) -> Self {
        Self {
            cx,
            tenant: None,
            page: None,
            new: None,
        }
    }
}

impl Resource for Collections {
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem> {
        self.cx.remember(&input);
        if self.cx.method == Method::POST {
            Query::parse(&input.head.uri, &[])?;
            let body: NewCollectionBody = decode(json_body(input.body.as_ref())?)?;
            slug(&body.name, "/name")?;
            check_schema(&body.schema)?;
            for (i, f) in body.unique.iter().enumerate() {
                if !is_field_name(f) {
                    return Err(invalid_field(
                        &format!("/unique/{i}"),
                        "must be a top-level field name ([A-Za-z_][A-Za-z0-9_]*)",
                    ));
                }
            }
            let mut unique = body.unique;
            unique.sort();
            unique.dedup();
            self.new = Some(NewCollection {
                name: body.name,
                schema: body.schema,
                unique,
                require_if_match: body.require_if_match,
            });
        } else {
            let q = Query::parse(&input.head.uri, &["limit", "cursor"])?;
            self.page = Some(listing::page_request(&q, "collections")?);
        }
        Ok(())
    }

    fn load(&mut self) -> BoxFuture<'_, Result<Existence, Problem>> {
        Box::pin(async move {
            match tenants::require(&self.cx).await? {
                Ok(t) => {
                    self.tenant = Some(t);
                    Ok(Existence::Found(Found::default()))
                }
                Err(e) => Ok(e),
            }
        })
    }

    fn execute(&mut self, media: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        Box::pin(async move {
            let tenant = still_there(self.tenant.take())?;
            let store = &self.cx.app.store;
            if let Some(new) = self.new.take() {
                let c = store.create_collection(&tenant.id, new).await.map_err(store_problem)?;
                return Ok(created(
                    format!("{}/collections/{}", self.cx.tenant_path(), c.name),
                    &render::collection(&c),
                ));
            }
            let page = store
                .list_collections(
                    &tenant.id,
                    self.page.take().unwrap_or(PageRequest {
                        limit: listing::DEFAULT_LIMIT,
                        after: None,
                    }),
                )
                .await
                .map_err(store_problem)?;
            list_success(
                &self.cx,
                page.items.iter().map(render::collection).collect(),
                page.next,
                "collections",
                media,
            )
        })
    }
}

/// Loads the tenant and the collection named in the path.
pub async fn load_collection(cx: &Cx) -> Result<Result<(Tenant, Collection), Existence>, Problem> {
    let tenant = match tenants::require(cx).await? {
        Ok(t) => t,
        Err(e) => return Ok(Err(e)),
    };
    Ok(
        match cx
            .app
            .store
            .collection(&tenant.id, cx.param("collection"))
            .await
            .map_err(store_problem)?
        {
            Lookup::Found(c) => Ok((tenant, c)),
            other => Err(super::container(other)),
        },
    )
}

/// `GET, DELETE /v1/tenants/{tenant}/collections/{collection}`.
pub struct OneCollection {
    cx: Cx,
    found: Option<(Tenant, Collection)>,
    force: bool,
}

impl OneCollection {
    /// For `cx`.
    pub fn new(cx: Cx) -> Self {
        Self {
            cx,
            found: None,
            force: false,
        }
    }
}

impl Resource for OneCollection {
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem> {
        self.cx.remember(&input);
        if self.cx.method == Method::DELETE {
            self.force = Query::parse(&input.head.uri, &["force"])?.flag("force")?;
        } else {
            Query::parse(&input.head.uri, &[])?;
        }
        Ok(())
    }

    fn load(&mut self) -> BoxFuture<'_, Result<Existence, Problem>> {
        Box::pin(async move {
            match load_collection(&self.cx).await? {
                Ok(found) => {
                    self.found = Some(found);
                    Ok(Existence::Found(Found::default()))
                }
                Err(e) => Ok(e),
            }
        })
    }

    fn execute(&mut self, _: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        Box::pin(async move {
            let (tenant, c) = still_there(self.found.take())?;
            if self.cx.method != Method::DELETE {
                return Ok(ok(&render::collection(&c)));
            }
            match self
                .cx
                .app
                .store
                .delete_collection(&tenant.id, &c.name, self.cx.retention())
                .await
            {
                Ok(_) => Ok(Success::NoContent),
                // Deleting the records of a non-empty collection is long work:
                // it becomes a job (202) with the jobs feature.
                Err(canon_store::StoreError::NotEmpty) if self.force => Err(Problem::new(
                    ProblemKind::NotImplemented,
                    "Deleting a collection that still has records (?force=true) runs as a job, which is not implemented yet.",
                )),
                Err(e) => Err(store_problem(e)),
            }
        })
    }
}
