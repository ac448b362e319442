//! Users of a tenant and their API keys.

use std::sync::Arc;

use crate::wire::{NewApiKey as NewKey, NewUser, UserPatch};
use canon_http::Problem;
use canon_http::access::TenantRole;
use canon_http::flow::{BoxFuture, Existence, Found, Input, Representation, Resource, Success};
use canon_http::media::MediaType;
use canon_store::{ApiKey, Lookup, Tenant, User};
use http::Method;

use super::{Cx, Stop, found, found_with, settle, still_there, tenants};
use crate::error::store_problem;
use crate::input::{Query, decode, invalid_field, json_body};
use crate::listing::{self, Listed};
use crate::{render, token};

fn role(s: &str) -> Result<TenantRole, Problem> {
    TenantRole::parse(s).ok_or_else(|| invalid_field("/role", "must be one of admin, editor, viewer"))
}

/// Lower-cases and checks an email address: one `@`, something on each side,
/// no white space or control characters, at most 254 bytes.
fn email(s: &str) -> Result<String, Problem> {
    // Exactly the published pattern (`wire::NewUser`): one `@` between two
    // non-empty parts without white space (Unicode's or ECMAScript's, which
    // adds U+FEFF) or control characters; at most 254 characters.
    let valid = s.chars().count() <= 254
        && s.split('@').count() == 2
        && s.split('@').all(|p| !p.is_empty())
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\u{feff}');
    // ASCII case only: it keeps the length (Unicode lower-casing can
    // double it: `İ` becomes two characters) and is how mail systems compare
    // domains; a non-ASCII local part is kept as written.
    let e = s.to_ascii_lowercase();
    if valid {
        Ok(e)
    } else {
        Err(invalid_field("/email", "must be an email address"))
    }
}

/// `GET, POST /v1/tenants/{tenant}/users`.
pub struct Users {
    cx: Cx,
    tenant: Option<Arc<Tenant>>,
    page: Option<listing::Paging>,
    listed: Option<Listed>,
    new: Option<(String, TenantRole)>,
}

impl Users {
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

impl Resource for Users {
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem> {
        self.cx.remember(&input);
        if self.cx.method == Method::POST {
            Query::parse(&input.head.uri, &[])?;
            let new: NewUser = decode(json_body(input.body.as_ref())?)?;
            self.new = Some((email(&new.email)?, role(&new.role)?));
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
                        let (page, cursors) = paging.open(&self.cx.app, &["users", &tenant.id]).await?;
                        let page = self
                            .cx
                            .app
                            .store
                            .list_users(&tenant.id, page)
                            .await
                            .map_err(store_problem)?;
                        found = Listed::from_page(page, render::user, &cursors).keep(&mut self.listed);
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
            let store = &self.cx.app.store;
            if let Some((email, role)) = self.new.take() {
                let u = store
                    .create_user(&tenant.id, &email, role)
                    .await
                    .map_err(store_problem)?;
                return Ok(Success::Created {
                    location: format!("{}/users/{}", self.cx.tenant_path(), u.id),
                    representation: render::user_representation(&u),
                });
            }
            let listed = self.listed.take().ok_or_else(crate::error::internal)?;
            Ok(Success::Ok(listed.render(media, &self.cx.uri)?))
        })
    }
}

/// Loads the tenant and the user named in the path.
async fn load_user(cx: &Cx) -> Result<(Arc<Tenant>, User), Stop> {
    let tenant = tenants::require(cx).await?;
    let user = found(
        cx.app
            .store
            .user(&tenant.id, cx.param("user"))
            .await
            .map_err(store_problem)?,
    )?;
    Ok((tenant, user))
}

/// `GET, PATCH, DELETE /v1/tenants/{tenant}/users/{user}`.
pub struct OneUser {
    cx: Cx,
    found: Option<(Arc<Tenant>, User)>,
    role: Option<TenantRole>,
}

impl OneUser {
    /// For `cx`.
    pub fn new(cx: Cx) -> Self {
        Self {
            cx,
            found: None,
            role: None,
        }
    }
}

impl Resource for OneUser {
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem> {
        self.cx.remember(&input);
        Query::parse(&input.head.uri, &[])?;
        if self.cx.method == Method::PATCH {
            let body = json_body(input.body.as_ref())?;
            crate::input::no_removals(&body)?;
            let patch: UserPatch = decode(body)?;
            self.role = patch.role.as_deref().map(role).transpose()?;
        }
        Ok(())
    }

    fn load(&mut self) -> BoxFuture<'_, Result<Existence, Problem>> {
        Box::pin(async move {
            settle(
                async {
                    let found = load_user(&self.cx).await?;
                    let existence = found_with(render::user_validators(&found.1));
                    self.found = Some(found);
                    Ok(existence)
                }
                .await,
            )
        })
    }

    fn execute(&mut self, _: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        Box::pin(async move {
            let (tenant, user) = still_there(self.found.take())?;
            let store = &self.cx.app.store;
            let expect = self.cx.expect_version(user.version);
            match self.cx.method {
                Method::DELETE => {
                    store
                        .delete_user(&tenant.id, &user.id, expect, self.cx.retention())
                        .await
                        .map_err(store_problem)?;
                    Ok(Success::NoContent)
                }
                Method::PATCH => {
                    let user = match self.role {
                        Some(role) => store
                            .set_user_role(&tenant.id, &user.id, role, expect)
                            .await
                            .map_err(store_problem)?,
                        None => user,
                    };
                    let mut rep = render::user_representation(&user);
                    rep.content_location = Some(self.cx.uri.path().to_owned());
                    Ok(Success::Ok(rep))
                }
                _ => Ok(Success::Ok(render::user_representation(&user))),
            }
        })
    }
}

/// `GET, POST /v1/tenants/{tenant}/users/{user}/api-keys`.
pub struct ApiKeys {
    cx: Cx,
    found: Option<(Arc<Tenant>, User)>,
    page: Option<listing::Paging>,
    listed: Option<Listed>,
    name: Option<String>,
}

impl ApiKeys {
    /// For `cx`.
    pub fn new(cx: Cx) -> Self {
        Self {
            cx,
            found: None,
            page: None,
            listed: None,
            name: None,
        }
    }
}

impl Resource for ApiKeys {
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem> {
        self.cx.remember(&input);
        if self.cx.method == Method::POST {
            Query::parse(&input.head.uri, &[])?;
            let new: NewKey = decode(json_body(input.body.as_ref())?)?;
            // Exactly the published pattern (`wire::NewApiKey`): no trimming.
            let name = new.name.as_str();
            if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
                return Err(invalid_field("/name", "must be 1 to 100 printable characters"));
            }
            self.name = Some(name.to_owned());
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
                    let (tenant, user) = load_user(&self.cx).await?;
                    let mut found = Found::default();
                    if let Some(paging) = self.page.take() {
                        let (page, cursors) = paging.open(&self.cx.app, &["api-keys", &tenant.id, &user.id]).await?;
                        let page = self
                            .cx
                            .app
                            .store
                            .list_api_keys(&user.id, page)
                            .await
                            .map_err(store_problem)?;
                        found = Listed::from_page(page, render::api_key, &cursors).keep(&mut self.listed);
                    }
                    self.found = Some((tenant, user));
                    Ok(Existence::Found(found))
                }
                .await,
            )
        })
    }

    fn execute(&mut self, media: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        Box::pin(async move {
            let (tenant, user) = still_there(self.found.take())?;
            let store = &self.cx.app.store;
            if let Some(name) = self.name.take() {
                let secret = token::generate();
                let k = store
                    .create_api_key(&tenant.id, &user.id, &name, &token::digest(&secret))
                    .await
                    .map_err(store_problem)?;
                let body = render::new_api_key(&k, secret);
                // The only response that ever shows the token: no cache may keep it.
                let rep = Representation::json(&body)
                    .with_validators(render::api_key_validators(&k))
                    .shown_once();
                let location = format!("{}/users/{}/api-keys/{}", self.cx.tenant_path(), user.id, k.id);
                return Ok(Success::Created {
                    location,
                    representation: rep,
                });
            }
            let listed = self.listed.take().ok_or_else(crate::error::internal)?;
            Ok(Success::Ok(listed.render(media, &self.cx.uri)?))
        })
    }
}

/// `GET, DELETE /v1/tenants/{tenant}/users/{user}/api-keys/{key}`.
pub struct OneApiKey {
    cx: Cx,
    found: Option<(User, ApiKey)>,
}

impl OneApiKey {
    /// For `cx`.
    pub fn new(cx: Cx) -> Self {
        Self { cx, found: None }
    }
}

impl Resource for OneApiKey {
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem> {
        self.cx.remember(&input);
        Query::parse(&input.head.uri, &[]).map(|_| ())
    }

    fn load(&mut self) -> BoxFuture<'_, Result<Existence, Problem>> {
        Box::pin(async move {
            settle(
                async {
                    let (_, user) = load_user(&self.cx).await?;
                    match self
                        .cx
                        .app
                        .store
                        .api_key(&user.id, self.cx.param("key"))
                        .await
                        .map_err(store_problem)?
                    {
                        Lookup::Found(k) => {
                            let existence = found_with(render::api_key_validators(&k));
                            self.found = Some((user, k));
                            Ok(existence)
                        }
                        other => Ok(super::container(other)),
                    }
                }
                .await,
            )
        })
    }

    fn execute(&mut self, _: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        Box::pin(async move {
            let (user, key) = still_there(self.found.take())?;
            if self.cx.method == Method::DELETE {
                let expect = self.cx.expect_version(key.version);
                self.cx
                    .app
                    .store
                    .revoke_api_key(&user.id, &key.id, expect, self.cx.retention())
                    .await
                    .map_err(store_problem)?;
                return Ok(Success::NoContent);
            }
            Ok(Success::Ok(render::api_key_representation(&key)))
        })
    }
}
