//! `/docs/status-codes` and `/problems/{slug}`: documentation generated from
//! the catalogue the flow answers with, so the two cannot disagree.

use bytes::Bytes;
use canon_http::Problem;
use canon_http::catalogue::{PROBLEMS, ProblemKind, ProblemType, STATUSES};
use canon_http::flow::{BoxFuture, Existence, Found, Input, Representation, Resource, Success};
use canon_http::media::MediaType;
use canon_http::validators::{EntityTag, Validators};
use serde_json::{Value, json};

use std::collections::BTreeSet;
use std::sync::LazyLock;

use super::{Cx, collections, found_with, settle, still_there, tenants};
use crate::assets::{self, Asset, IMMUTABLE};
use crate::input::Query;
use crate::openapi::TypedCollection;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn problem_json(p: &ProblemType) -> Value {
    json!({"type": p.type_url(), "slug": p.slug, "status": p.status, "title": p.title, "description": p.description})
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3rem .5rem;vertical-align:top;text-align:left}}</style>\
         </head><body><h1>{t}</h1>\n{body}</body></html>\n",
        t = escape(title)
    )
}

/// How long caches may keep a documentation page. The pages are generated
/// from the catalogue compiled into this binary, so they change only when
/// Canon is upgraded; an hour bounds how stale a page can be after that.
const DOCS_CACHE_CONTROL: &str = "public, max-age=3600";

/// A documentation page exists; a 304 repeats its `Cache-Control`.
fn docs_found() -> Found {
    Found {
        cache_control: Some(DOCS_CACHE_CONTROL),
        ..Found::default()
    }
}

fn representation(media: Option<MediaType>, json: Value, html: String) -> Representation {
    let mut rep = match media {
        Some(MediaType::Html) => Representation::new(MediaType::Html, Bytes::from(html)),
        _ => Representation::json(&json),
    };
    rep.cache_control = Some(DOCS_CACHE_CONTROL);
    rep
}

/// Every status a request can receive today: what the flow can answer on
/// the route table (`operation::produced`, proved against the real flow by
/// `operation::explore_all`) and what hyper answers before the flow runs.
/// Derived, never flagged by hand.
pub static ANSWERED: LazyLock<BTreeSet<u16>> = LazyLock::new(|| {
    let mut out = canon_http::operation::produced(crate::routes::ROUTES);
    out.extend(crate::state::ANSWERED_BY_HYPER);
    out
});

/// Whether the contract's `status` belongs to work not built yet: no request
/// can receive it today.
fn is_planned(status: u16) -> bool {
    !ANSWERED.contains(&status)
}

fn planned_mark(status: u16) -> &'static str {
    if is_planned(status) {
        " <em title=\"Part of the contract, not answered yet\">(planned)</em>"
    } else {
        ""
    }
}

/// `GET /docs/status-codes`.
pub struct StatusCodes;

impl Resource for StatusCodes {
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem> {
        Query::parse(&input.head.uri, &[]).map(|_| ())
    }
    fn load(&mut self) -> BoxFuture<'_, Result<Existence, Problem>> {
        Box::pin(async { Ok(Existence::Found(docs_found())) })
    }
    fn execute(&mut self, media: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        Box::pin(async move {
            let statuses: Vec<Value> = STATUSES
                .iter()
                .map(|s| {
                    let problems: Vec<&str> = PROBLEMS.iter().filter(|p| p.status == s.code).map(|p| p.slug).collect();
                    json!({"status": s.code, "reason": s.reason, "when": s.when, "headers": s.headers, "problem_types": problems, "planned": is_planned(s.code)})
                })
                .collect();
            let problems: Vec<Value> = PROBLEMS
                .iter()
                .map(|p| {
                    let mut v = problem_json(p);
                    v["planned"] = is_planned(p.status).into();
                    v
                })
                .collect();
            let mut html = String::from(
                "<p>Every status in Canon's contract. <strong>Planned</strong> marks the statuses of work not built yet \
                 (jobs, batches, rate limits, the device gateway): no request can receive them today. The others are exactly \
                 the statuses Canon's decision flow can answer on some route, derived from the route table as \
                 <a href=\"/docs\">the API reference</a> lists them per operation.</p>\n\
                 <h2>Statuses</h2>\n<table><tr><th>Status</th><th>When Canon sends it</th><th>Headers</th><th>Problem types</th></tr>\n",
            );
            for s in STATUSES {
                let links: Vec<String> = PROBLEMS
                    .iter()
                    .filter(|p| p.status == s.code)
                    .map(|p| format!("<a href=\"{}\">{}</a>", p.type_url(), p.slug))
                    .collect();
                html.push_str(&format!(
                    "<tr id=\"s{c}\"><td>{c} {r}{m}</td><td>{w}</td><td>{h}</td><td>{l}</td></tr>\n",
                    c = s.code,
                    r = escape(s.reason),
                    m = planned_mark(s.code),
                    w = escape(s.when),
                    h = escape(&s.headers.join(", ")),
                    l = links.join(" ")
                ));
            }
            html.push_str("</table>\n<h2>Problem types</h2>\n<table><tr><th>Type</th><th>Status</th><th>Title</th><th>Meaning</th></tr>\n");
            for p in PROBLEMS {
                html.push_str(&format!(
                    "<tr><td><a href=\"{u}\">{u}</a></td><td>{s}{m}</td><td>{t}</td><td>{d}</td></tr>\n",
                    u = p.type_url(),
                    s = p.status,
                    m = planned_mark(p.status),
                    t = escape(p.title),
                    d = escape(p.description)
                ));
            }
            html.push_str("</table>\n");
            let json = json!({"statuses": statuses, "problem_types": problems});
            Ok(Success::Ok(representation(
                media,
                json,
                page("Canon status codes", &html),
            )))
        })
    }
}

/// `GET /problems/{slug}`.
pub struct ProblemPage {
    cx: Cx,
    kind: Option<ProblemKind>,
}

impl ProblemPage {
    /// For the slug in `cx`.
    pub fn new(cx: Cx) -> Self {
        Self { cx, kind: None }
    }
}

impl Resource for ProblemPage {
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem> {
        Query::parse(&input.head.uri, &[])?;
        self.kind = ProblemKind::from_slug(self.cx.param("slug"));
        Ok(())
    }
    fn load(&mut self) -> BoxFuture<'_, Result<Existence, Problem>> {
        let found = self.kind.is_some();
        Box::pin(async move {
            Ok(if found {
                Existence::Found(docs_found())
            } else {
                Existence::Missing
            })
        })
    }
    fn execute(&mut self, media: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        let entry = self.kind.map(|k| k.entry());
        Box::pin(async move {
            let p = entry.ok_or_else(crate::error::internal)?;
            let html = format!(
                "<p><code>{u}</code> is sent with status <a href=\"/docs/status-codes#s{s}\">{s}</a>.</p>\n<p>{d}</p>\n\
                 <p>Every problem body has <code>type</code>, <code>title</code>, <code>status</code>, <code>detail</code>, \
                 <code>instance</code> and <code>request_id</code>.</p>\n",
                u = p.type_url(),
                s = p.status,
                d = escape(p.description)
            );
            Ok(Success::Ok(representation(
                media,
                problem_json(p),
                page(p.title, &html),
            )))
        })
    }
}

/// A generated API description as served: its bytes and their strong tag
/// (a digest of the bytes, so equal tags mean equal bytes).
#[derive(Clone)]
struct Described {
    bytes: Bytes,
    validators: Validators,
}

impl Described {
    fn new(doc: &Value) -> Self {
        use sha2::Digest;
        let bytes = serde_json::to_vec_pretty(doc).unwrap_or_default();
        let digest = sha2::Sha256::digest(&bytes);
        let tag: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
        Self {
            bytes: Bytes::from(bytes),
            validators: Validators {
                etag: Some(EntityTag::strong(tag)),
                last_modified: None,
            },
        }
    }

    /// The representation, `private, no-cache` as every representation with
    /// validators (the global document, public, overrides it).
    fn representation(&self) -> Representation {
        Representation::new(MediaType::Json, self.bytes.clone()).with_validators(self.validators.clone())
    }
}

/// The global API description, built once: it depends only on this binary.
static OPENAPI: std::sync::LazyLock<Described> =
    std::sync::LazyLock::new(|| Described::new(&crate::openapi::document()));

/// `GET /openapi.json`: the OpenAPI 3.1 description (see `openapi.rs`).
pub struct OpenApi;

impl Resource for OpenApi {
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem> {
        Query::parse(&input.head.uri, &[]).map(|_| ())
    }
    fn load(&mut self) -> BoxFuture<'_, Result<Existence, Problem>> {
        Box::pin(async {
            Ok(Existence::Found(Found {
                validators: OPENAPI.validators.clone(),
                ..docs_found()
            }))
        })
    }
    fn execute(&mut self, _: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        Box::pin(async {
            let mut rep = OPENAPI.representation();
            rep.cache_control = Some(DOCS_CACHE_CONTROL);
            Ok(Success::Ok(rep))
        })
    }
}

/// `GET /v1/tenants/{tenant}/openapi.json`: the API description as the
/// tenant sees it, its collections' records typed with their schemas
/// ([`crate::openapi::tenant_document`]).
///
/// The document can be large (tens of KiB per collection), so it costs
/// nothing to revalidate: its strong tag is a digest of what it is made of
/// (this binary's version, the tenant's name, each live collection's id and
/// version, which every change of a collection bumps), computed in `load`
/// without building the document, and 304 is decided by the flow from that
/// tag. The bytes are built only for a 200 (or HEAD), off the async workers
/// (`spawn_blocking`), one build at a time, and kept in a small cache keyed by
/// the tag. Credentialed and following the data: `private, no-cache` (the
/// default of a representation with validators).
pub struct TenantOpenApi {
    cx: Cx,
    parts: Option<TenantDocParts>,
}

/// What a tenant's document is built from, and its tag.
struct TenantDocParts {
    tenant: String,
    collections: Vec<canon_store::Collection>,
    validators: Validators,
}

impl TenantOpenApi {
    /// For `cx`.
    pub fn new(cx: Cx) -> Self {
        Self { cx, parts: None }
    }
}

/// Built tenant documents by tag. Bounded: past [`TENANT_DOC_CACHE_BYTES`]
/// it is emptied (a rebuild is always possible, and rare: tags change only
/// when collections do).
static TENANT_DOCS: LazyLock<std::sync::Mutex<std::collections::HashMap<String, Bytes>>> =
    LazyLock::new(Default::default);
/// The most bytes [`TENANT_DOCS`] keeps.
const TENANT_DOC_CACHE_BYTES: usize = 64 << 20;
/// One build at a time: a build holds the whole document in memory and a
/// blocking thread; more callers wait for the permit, not for a worker.
static TENANT_DOC_BUILDS: LazyLock<tokio::sync::Semaphore> = LazyLock::new(|| tokio::sync::Semaphore::new(1));

fn cached_tenant_doc(tag: &str) -> Option<Bytes> {
    TENANT_DOCS.lock().ok().and_then(|docs| docs.get(tag).cloned())
}

fn cache_tenant_doc(tag: String, bytes: Bytes) {
    if let Ok(mut docs) = TENANT_DOCS.lock() {
        let held: usize = docs.values().map(Bytes::len).sum();
        if held + bytes.len() > TENANT_DOC_CACHE_BYTES {
            docs.clear();
        }
        if bytes.len() <= TENANT_DOC_CACHE_BYTES {
            docs.insert(tag, bytes);
        }
    }
}

impl TenantDocParts {
    fn new(tenant: String, collections: Vec<canon_store::Collection>) -> Self {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(env!("CARGO_PKG_VERSION").as_bytes());
        h.update(b"\0");
        h.update(tenant.as_bytes());
        for c in &collections {
            h.update(format!("\0{}\0{}", c.id, c.version).as_bytes());
        }
        let tag: String = h.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect();
        Self {
            tenant,
            collections,
            validators: Validators {
                etag: Some(EntityTag::strong(tag)),
                last_modified: None,
            },
        }
    }

    fn tag(&self) -> String {
        self.validators
            .etag
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default()
    }

    fn build(&self) -> Bytes {
        let typed: Vec<TypedCollection<'_>> = self
            .collections
            .iter()
            .map(|c| TypedCollection {
                name: &c.name,
                schema: &c.schema,
            })
            .collect();
        let doc = crate::openapi::tenant_document(&self.tenant, &typed);
        Bytes::from(serde_json::to_vec_pretty(&doc).unwrap_or_default())
    }
}

impl Resource for TenantOpenApi {
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem> {
        self.cx.remember(&input);
        Query::parse(&input.head.uri, &[]).map(|_| ())
    }

    fn load(&mut self) -> BoxFuture<'_, Result<Existence, Problem>> {
        Box::pin(async move {
            settle(
                async {
                    let tenant = tenants::require(&self.cx).await?;
                    let collections = collections::all(&self.cx, &tenant).await?;
                    let parts = TenantDocParts::new(tenant.name.clone(), collections);
                    let existence = found_with(parts.validators.clone());
                    self.parts = Some(parts);
                    Ok(existence)
                }
                .await,
            )
        })
    }

    fn execute(&mut self, _: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        Box::pin(async move {
            let parts = std::sync::Arc::new(still_there(self.parts.take())?);
            let tag = parts.tag();
            let bytes = match cached_tenant_doc(&tag) {
                Some(bytes) => bytes,
                None => {
                    let _permit = TENANT_DOC_BUILDS.acquire().await.map_err(|_| unavailable())?;
                    // Another caller may have built it while this one waited.
                    match cached_tenant_doc(&tag) {
                        Some(bytes) => bytes,
                        None => {
                            let builder = parts.clone();
                            let bytes = tokio::task::spawn_blocking(move || builder.build())
                                .await
                                .map_err(|_| unavailable())?;
                            cache_tenant_doc(tag, bytes.clone());
                            bytes
                        }
                    }
                }
            };
            Ok(Success::Ok(
                Representation::new(MediaType::Json, bytes).with_validators(parts.validators.clone()),
            ))
        })
    }
}

fn unavailable() -> Problem {
    Problem::new(
        ProblemKind::ServiceUnavailable,
        "The document could not be built; try again.",
    )
}

/// `GET /`: links to the API description, the status codes, the probes and
/// the version, as HTML or JSON by `Accept`.
pub struct Index;

impl Resource for Index {
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem> {
        Query::parse(&input.head.uri, &[]).map(|_| ())
    }
    fn load(&mut self) -> BoxFuture<'_, Result<Existence, Problem>> {
        Box::pin(async { Ok(Existence::Found(docs_found())) })
    }
    fn execute(&mut self, media: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        Box::pin(async move {
            let links: [(&str, &str, &str); 5] = [
                ("reference", "/docs", "The API reference"),
                ("openapi", "/openapi.json", "The API description (OpenAPI 3.1)"),
                ("status-codes", "/docs/status-codes", "Every status and problem type"),
                ("health", "/healthz", "Liveness"),
                ("ready", "/readyz", "Readiness (the database answers)"),
            ];
            let body = crate::wire::Index {
                name: "Canon".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                links: links
                    .iter()
                    .map(|(rel, href, _)| ((*rel).into(), (*href).into()))
                    .collect(),
            };
            let mut html = format!("<p>Version {}.</p>\n<ul>\n", env!("CARGO_PKG_VERSION"));
            for (_, href, what) in links {
                html.push_str(&format!("<li><a href=\"{href}\">{}</a></li>\n", escape(what)));
            }
            html.push_str("</ul>\n");
            let json = serde_json::to_value(&body).unwrap_or(Value::Null);
            Ok(Success::Ok(representation(media, json, page("Canon", &html))))
        })
    }
}

/// The `/docs` page: Redoc renders `/openapi.json`. Everything it loads is
/// same-origin (the description and the vendored renderer); its options sit
/// in attributes, so the page has no inline script. System fonts only.
static REFERENCE_HTML: LazyLock<String> = LazyLock::new(|| {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Canon API reference</title><link rel=\"icon\" href=\"data:,\">\
         <style>body{{margin:0}}nav.canon,footer.canon{{font:14px system-ui,sans-serif;padding:.5rem 1rem}}\
         nav.canon{{border-bottom:1px solid #ddd}}nav.canon a{{margin-right:1.5rem}}footer.canon{{border-top:1px solid #ddd;color:#555}}</style>\
         </head><body>\n\
         <nav class=\"canon\"><a href=\"/\">Canon</a><a href=\"/docs/status-codes\">Status codes</a>\
         <a href=\"/openapi.json\">OpenAPI description</a></nav>\n\
         <noscript><p>This reference is rendered with JavaScript. Without it, read \
         <a href=\"/openapi.json\">the OpenAPI description</a> and <a href=\"/docs/status-codes\">the status codes</a>.</p></noscript>\n\
         <redoc spec-url=\"/openapi.json\" expand-responses=\"200,201\" required-props-first=\"true\" \
         theme='{{\"typography\":{{\"fontFamily\":\"system-ui, sans-serif\",\"headings\":{{\"fontFamily\":\"system-ui, sans-serif\"}},\
         \"code\":{{\"fontFamily\":\"ui-monospace, monospace\"}}}}}}'></redoc>\n\
         <script src=\"{js}\"></script>\n\
         <footer class=\"canon\">Canon {canon}. Rendered by Redoc {redoc} (MIT; <a href=\"{license}\">licences</a>).</footer>\n\
         </body></html>\n",
        js = assets::REDOC_PATH,
        license = assets::REDOC_LICENSE_PATH,
        redoc = assets::REDOC_VERSION,
        canon = env!("CARGO_PKG_VERSION"),
    )
});

static REFERENCE: LazyLock<Asset> = LazyLock::new(|| Asset::new(Bytes::from(REFERENCE_HTML.as_str())));

/// What `/docs` may load: scripts, the description and images from Canon
/// itself, nothing from another origin. Redoc injects its styles (so inline
/// styles are allowed) and runs its search index in a worker it starts from
/// a `blob:` URL; its footer logo, on Redoc's CDN, is blocked and hidden.
pub const REFERENCE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; \
base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// How long caches may keep `/docs`: they must revalidate (a 304 is cheap),
/// so after an upgrade the page never points at a renderer version the
/// binary no longer serves.
pub const REFERENCE_CACHE_CONTROL: &str = "public, no-cache";

/// A file compiled into the binary: the `/docs` page, the renderer, its
/// licences. Strong tags are digests of the bytes.
pub struct StaticFile {
    media: MediaType,
    asset: &'static Asset,
    cache_control: &'static str,
    policy: Option<&'static str>,
}

impl StaticFile {
    /// `GET /docs`.
    pub fn reference() -> Self {
        Self {
            media: MediaType::Html,
            asset: &REFERENCE,
            cache_control: REFERENCE_CACHE_CONTROL,
            policy: Some(REFERENCE_POLICY),
        }
    }

    /// `GET` the renderer.
    pub fn redoc() -> Self {
        Self {
            media: MediaType::JavaScript,
            asset: &assets::REDOC,
            cache_control: IMMUTABLE,
            policy: None,
        }
    }

    /// `GET` the renderer's licences.
    pub fn redoc_license() -> Self {
        Self {
            media: MediaType::Text,
            asset: &assets::REDOC_LICENSES,
            cache_control: IMMUTABLE,
            policy: None,
        }
    }

    fn validators(&self) -> Validators {
        Validators {
            etag: Some(self.asset.tag.clone()),
            last_modified: None,
        }
    }
}

impl Resource for StaticFile {
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem> {
        Query::parse(&input.head.uri, &[]).map(|_| ())
    }
    fn load(&mut self) -> BoxFuture<'_, Result<Existence, Problem>> {
        let found = Found {
            validators: self.validators(),
            cache_control: Some(self.cache_control),
            ..Found::default()
        };
        Box::pin(async move { Ok(Existence::Found(found)) })
    }
    fn execute(&mut self, _: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        let mut rep = Representation::new(self.media, self.asset.bytes.clone()).with_validators(self.validators());
        rep.cache_control = Some(self.cache_control);
        rep.content_security_policy = self.policy;
        Box::pin(async move { Ok(Success::Ok(rep)) })
    }
}
