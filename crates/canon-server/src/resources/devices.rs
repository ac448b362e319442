//! `/v1/tenants/{tenant}/devices`, one device, and the gateway route
//! `…/devices/{device}/api/{path}` (docs/devices.md).

use std::sync::Arc;

use canon_http::flow::{BoxFuture, Existence, Found, Input, Representation, Resource, StreamedBody, Success};
use canon_http::media::MediaType;
use canon_http::validators::{EntityTag, Validators};
use canon_http::{FieldError, Problem, ProblemKind};
use canon_store::{Device, DeviceChanges, DeviceHeader, DeviceTls, NewDevice, Tenant};
use http::{HeaderMap, Method};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Cx, Stop, found, found_with, settle, still_there, tenants};
use crate::devices::Gateway;
use crate::devices::forward::Outgoing;
use crate::error::store_problem;
use crate::input::{Query, decode, invalid_field, json_body, slug};
use crate::listing::{self, Listed};
use crate::render::{system_time, timestamp};
use crate::wire;

/// The most headers a device may carry.
pub const MAX_DEVICE_HEADERS: usize = 32;
/// The longest header value a device may carry.
pub const MAX_HEADER_VALUE: usize = 4096;

/// Fields a device may not set: hop-by-hop fields, and those the gateway
/// sets itself.
const RESERVED_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "via",
    "expect",
];

/// A device's headers as given (`{"name": "value"}`), checked: names are
/// HTTP tokens (kept lower case, each once), values visible ASCII.
fn header_values(given: serde_json::Map<String, Value>, pointer: &str) -> Result<Vec<(String, String)>, Problem> {
    if given.len() > MAX_DEVICE_HEADERS {
        return Err(invalid_field(pointer, &format!("at most {MAX_DEVICE_HEADERS} headers")));
    }
    let mut out: Vec<(String, String)> = Vec::with_capacity(given.len());
    for (name, value) in given {
        let at = format!("{pointer}/{}", name.replace('~', "~0").replace('/', "~1"));
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || name.len() > 64 || !name.bytes().all(token) {
            return Err(invalid_field(
                &at,
                "the name must be an HTTP field name (a token of 1 to 64 characters)",
            ));
        }
        let lower = name.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(invalid_field(
                &at,
                "this field is hop-by-hop or set by the gateway itself",
            ));
        }
        if out.iter().any(|(n, _)| *n == lower) {
            return Err(invalid_field(&at, "the same field twice (names are case-insensitive)"));
        }
        let Value::String(value) = value else {
            return Err(invalid_field(&at, "must be a string"));
        };
        if value.len() > MAX_HEADER_VALUE || !value.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            return Err(invalid_field(
                &at,
                &format!("must be at most {MAX_HEADER_VALUE} visible ASCII characters or spaces"),
            ));
        }
        out.push((lower, value));
    }
    Ok(out)
}

/// Checks a timeout (at `/timeout_ms`) against the configured maximum.
fn timeout(ms: u32, gateway: &Gateway) -> Result<u32, Problem> {
    let max = gateway.config.max_timeout_ms;
    if ms == 0 || ms > max {
        return Err(invalid_field("/timeout_ms", &format!("must be 1 to {max}")));
    }
    Ok(ms)
}

/// `headers` sealed for the device `name` of `tenant`; refused when the
/// server has no key to seal them with.
fn seal(
    gateway: &Gateway,
    tenant: &Tenant,
    name: &str,
    headers: Vec<(String, String)>,
) -> Result<Vec<DeviceHeader>, Problem> {
    if headers.is_empty() {
        return Ok(Vec::new());
    }
    let Some(sealer) = gateway.sealer() else {
        return Err(Problem::new(
            ProblemKind::InvalidField,
            "This server has no CANON_SECRET_KEY to encrypt device headers with, so it stores none: register \
             the device without `headers`, or ask the operator to set the key (docs/devices.md).",
        )
        .with_errors(vec![FieldError::new(
            "/headers",
            "needs CANON_SECRET_KEY on the server",
        )]));
    };
    Ok(headers
        .into_iter()
        .map(|(header, value)| DeviceHeader {
            sealed: sealer.seal(&tenant.id, name, &header, &value),
            name: header,
        })
        .collect())
}

/// A device as its JSON representation: header names only, and its health.
fn render(d: &Device, gateway: &Gateway) -> Value {
    let health = gateway.health(d);
    serde_json::to_value(wire::Device {
        name: d.name.clone(),
        endpoint: d.endpoint.clone(),
        timeout_ms: d.timeout_ms,
        headers: d.headers.iter().map(|h| h.name.clone()).collect(),
        tls: wire::DeviceTls {
            ca_certificate: d.tls.ca_certificate.clone(),
            certificate_sha256: d.tls.certificate_sha256.clone(),
        },
        health: wire::DeviceHealth {
            circuit: health.circuit.as_str().to_owned(),
            consecutive_failures: health.consecutive_failures,
            retry_after: health.retry_after,
        },
        created_at: timestamp(d.created_at),
        updated_at: timestamp(d.updated_at),
    })
    .unwrap_or_default()
}

/// A device's validators: a strong tag from its version and its health
/// (both are in the representation), and its modification time.
fn validators(d: &Device, gateway: &Gateway) -> Validators {
    let health = gateway.health(d);
    let text = format!(
        "device\n{}\n{}\n{}\n{}",
        d.id,
        d.version,
        health.circuit.as_str(),
        health.consecutive_failures
    );
    let digest = Sha256::digest(text.as_bytes());
    let tag = EntityTag::strong(digest.iter().take(10).map(|b| format!("{b:02x}")).collect::<String>());
    Validators::new(tag, system_time(d.updated_at))
}

fn representation(d: &Device, gateway: &Gateway) -> Representation {
    Representation::json(&render(d, gateway)).with_validators(validators(d, gateway))
}

fn device_path(cx: &Cx, name: &str) -> String {
    format!("{}/devices/{name}", cx.tenant_path())
}

/// A device to register, as parsed (its endpoint's addresses are checked,
/// and its headers sealed, once the tenant is known).
struct Registration {
    name: String,
    endpoint: String,
    timeout_ms: u32,
    headers: Vec<(String, String)>,
    tls: DeviceTls,
}

/// The shape of a body's `tls` member, before it is decoded: an object
/// whose members are strings. serde would take an array for the struct (its
/// fields by position) and `null` for an absent field, and a PATCH of
/// `{"tls": {"certificate_sha256": null}}` would then drop the whole setting
/// (the CA with the pin) and fall back to the system's roots: wider trust
/// than the client asked for. `tls` is replaced whole, so a member is given
/// or left out, never `null`.
fn tls_shape(body: &Value) -> Result<(), Problem> {
    let Some(tls) = body.get("tls") else {
        return Ok(());
    };
    let Some(members) = tls.as_object() else {
        return if tls.is_null() {
            Ok(()) // decoding (POST) or `no_removals` (PATCH) decides
        } else {
            Err(invalid_field("/tls", "must be an object"))
        };
    };
    match members.iter().find(|(_, v)| v.is_null()) {
        Some((k, _)) => Err(invalid_field(
            &format!("/tls/{k}"),
            "cannot be null: `tls` is replaced whole, so leave the member out ({} for the system's roots)",
        )),
        None => Ok(()),
    }
}

/// A trust setting as given, checked (a 400 at its field below `/tls`).
fn trust(gateway: &Gateway, given: wire::DeviceTls) -> Result<DeviceTls, Problem> {
    gateway.admit_tls(
        &DeviceTls {
            ca_certificate: given.ca_certificate,
            certificate_sha256: given.certificate_sha256,
        },
        "/tls",
    )
}

/// `GET, POST /v1/tenants/{tenant}/devices`.
pub struct Devices {
    cx: Cx,
    tenant: Option<Arc<Tenant>>,
    page: Option<listing::Paging>,
    listed: Option<Listed>,
    new: Option<Registration>,
}

impl Devices {
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

impl Resource for Devices {
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem> {
        self.cx.remember(&input);
        if self.cx.method == Method::POST {
            Query::parse(&input.head.uri, &[])?;
            let body = json_body(input.body.as_ref())?;
            tls_shape(&body)?;
            let body: wire::NewDevice = decode(body)?;
            slug(&body.name, "/name")?;
            crate::devices::endpoint::parse(&body.endpoint).map_err(|why| invalid_field("/endpoint", &why))?;
            self.new = Some(Registration {
                timeout_ms: timeout(body.timeout_ms, &self.cx.app.devices)?,
                headers: header_values(body.headers, "/headers")?,
                tls: trust(&self.cx.app.devices, body.tls)?,
                name: body.name,
                endpoint: body.endpoint,
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
                        let (page, cursors) = paging.open(&self.cx.app, &["devices", &tenant.id]).await?;
                        let page = self
                            .cx
                            .app
                            .store
                            .list_devices(&tenant.id, page)
                            .await
                            .map_err(store_problem)?;
                        let gateway = &self.cx.app.devices;
                        found = Listed::from_page(page, |d| render(d, gateway), &cursors).keep(&mut self.listed);
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
            let gateway = &self.cx.app.devices;
            if let Some(new) = self.new.take() {
                gateway.admit_endpoint(&new.endpoint, "/endpoint").await?;
                let headers = seal(gateway, &tenant, &new.name, new.headers)?;
                let device = self
                    .cx
                    .app
                    .store
                    .create_device(
                        &tenant.id,
                        NewDevice {
                            name: new.name,
                            endpoint: new.endpoint,
                            timeout_ms: new.timeout_ms,
                            headers,
                            tls: new.tls,
                        },
                    )
                    .await
                    .map_err(store_problem)?;
                return Ok(Success::Created {
                    location: device_path(&self.cx, &device.name),
                    representation: representation(&device, gateway),
                });
            }
            let listed = self.listed.take().ok_or_else(crate::error::internal)?;
            Ok(Success::Ok(listed.render(media, &self.cx.uri)?))
        })
    }
}

/// Loads the tenant and the device named in the path.
async fn load_device(cx: &Cx) -> Result<(Arc<Tenant>, Device), Stop> {
    let tenant = tenants::require(cx).await?;
    let device = found(
        cx.app
            .store
            .device(&tenant.id, cx.param("device"))
            .await
            .map_err(store_problem)?,
    )?;
    Ok((tenant, device))
}

/// A device's changes as parsed (the endpoint's addresses checked and the
/// headers sealed once the device is loaded).
#[derive(Default)]
struct Changes {
    endpoint: Option<String>,
    timeout_ms: Option<u32>,
    headers: Option<Vec<(String, String)>>,
    tls: Option<DeviceTls>,
}

/// `GET, PATCH, DELETE /v1/tenants/{tenant}/devices/{device}`.
pub struct OneDevice {
    cx: Cx,
    found: Option<(Arc<Tenant>, Device)>,
    changes: Option<Changes>,
}

impl OneDevice {
    /// For `cx`.
    pub fn new(cx: Cx) -> Self {
        Self {
            cx,
            found: None,
            changes: None,
        }
    }
}

impl Resource for OneDevice {
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem> {
        self.cx.remember(&input);
        Query::parse(&input.head.uri, &[])?;
        if self.cx.method == Method::PATCH {
            let body = json_body(input.body.as_ref())?;
            crate::input::no_removals(&body)?;
            tls_shape(&body)?;
            let patch: wire::DevicePatch = decode(body)?;
            if let Some(endpoint) = &patch.endpoint {
                crate::devices::endpoint::parse(endpoint).map_err(|why| invalid_field("/endpoint", &why))?;
            }
            self.changes = Some(Changes {
                timeout_ms: patch
                    .timeout_ms
                    .map(|ms| timeout(ms, &self.cx.app.devices))
                    .transpose()?,
                headers: patch.headers.map(|h| header_values(h, "/headers")).transpose()?,
                tls: patch.tls.map(|t| trust(&self.cx.app.devices, t)).transpose()?,
                endpoint: patch.endpoint,
            });
        }
        Ok(())
    }

    fn load(&mut self) -> BoxFuture<'_, Result<Existence, Problem>> {
        Box::pin(async move {
            settle(
                async {
                    let found = load_device(&self.cx).await?;
                    let existence = found_with(validators(&found.1, &self.cx.app.devices));
                    self.found = Some(found);
                    Ok(existence)
                }
                .await,
            )
        })
    }

    fn execute(&mut self, _: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        Box::pin(async move {
            let (tenant, device) = still_there(self.found.take())?;
            let store = &self.cx.app.store;
            let gateway = &self.cx.app.devices;
            let expect = self.cx.expect_version(device.version);
            match self.cx.method {
                Method::DELETE => {
                    store
                        .delete_device(&tenant.id, &device.name, expect, self.cx.retention())
                        .await
                        .map_err(store_problem)?;
                    gateway.forget(&device);
                    Ok(Success::NoContent)
                }
                Method::PATCH => {
                    let changes = self.changes.take().unwrap_or_default();
                    if let Some(endpoint) = &changes.endpoint {
                        gateway.admit_endpoint(endpoint, "/endpoint").await?;
                    }
                    let headers = changes
                        .headers
                        .map(|h| seal(gateway, &tenant, &device.name, h))
                        .transpose()?;
                    let updated = store
                        .update_device(
                            &tenant.id,
                            &device.name,
                            DeviceChanges {
                                endpoint: changes.endpoint,
                                timeout_ms: changes.timeout_ms,
                                headers,
                                tls: changes.tls,
                            },
                            expect,
                        )
                        .await
                        .map_err(store_problem)?;
                    let mut rep = representation(&updated, gateway);
                    rep.content_location = Some(device_path(&self.cx, &updated.name));
                    Ok(Success::Ok(rep))
                }
                _ => Ok(Success::Ok(representation(&device, gateway))),
            }
        })
    }
}

/// The part of a raw request path after `/devices/{device}/api/`, as sent
/// (still percent-encoded). `Err` for an encoded `/` or `\`, which would
/// let one segment escape into another once the device decodes it.
fn relayed_path(raw: &str) -> Result<&str, Problem> {
    // `/v1/tenants/{tenant}/devices/{device}/api/` is seven segments.
    let rest = raw.splitn(8, '/').nth(7).unwrap_or("");
    let lower = rest.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return Err(Problem::new(
            ProblemKind::InvalidPath,
            "The device path has an encoded `/` or `\\`, which could escape the device endpoint's path; send \
             the path's segments as they are.",
        ));
    }
    Ok(rest)
}

/// `{endpoint}/{path}?{query}`, or the 502 a stored endpoint that no
/// longer parses is.
fn target(endpoint: &str, path: &str, query: Option<&str>) -> Result<reqwest::Url, Problem> {
    crate::devices::endpoint::target(endpoint, path, query)
        .map_err(|why| Problem::new(ProblemKind::BadGateway, format!("The device's stored endpoint {why}.")))
}

/// `GET, POST, PUT, PATCH, DELETE …/devices/{device}/api/{path}`: the
/// request relayed to the device, its answer relayed back.
pub struct DeviceApi {
    cx: Cx,
    device: Option<Device>,
    headers: HeaderMap,
    path: String,
    body: Option<StreamedBody>,
    has_body: bool,
}

impl DeviceApi {
    /// For `cx`.
    pub fn new(cx: Cx) -> Self {
        Self {
            cx,
            device: None,
            headers: HeaderMap::new(),
            path: String::new(),
            body: None,
            has_body: false,
        }
    }
}

impl Resource for DeviceApi {
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem> {
        self.cx.remember(&input);
        self.path = relayed_path(input.head.uri.path())?.to_owned();
        self.headers = input.head.headers.clone();
        let length = self
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        self.has_body = match length {
            Some(n) => n > 0,
            None => self.headers.contains_key(http::header::TRANSFER_ENCODING),
        };
        Ok(())
    }

    fn load(&mut self) -> BoxFuture<'_, Result<Existence, Problem>> {
        Box::pin(async move {
            settle(
                async {
                    let (_, device) = load_device(&self.cx).await?;
                    self.device = Some(device);
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
            let device = still_there(self.device.take())?;
            let url = target(&device.endpoint, &self.path, self.cx.uri.query())?;
            let out = Outgoing {
                method: self.cx.method.clone(),
                url,
                headers: std::mem::take(&mut self.headers),
                device_headers: Vec::new(),
                body: self.body.take().filter(|_| self.has_body),
                timeout: std::time::Duration::from_millis(u64::from(device.timeout_ms)),
            };
            let response = self.cx.app.devices.forward(&device, out).await?;
            Ok(Success::Forwarded(response))
        })
    }
}

/// Checks a command's path: relative to the endpoint, with no dot segment
/// and no encoded `/` or `\` (as the gateway's own paths).
fn command_path(path: &str) -> Result<(), Problem> {
    let bad = |why: &str| Err(invalid_field("/path", why));
    if path.is_empty() || path.len() > 2048 {
        return bad("must be 1 to 2048 characters");
    }
    if path.starts_with('/')
        || path.contains('#')
        || path
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\u{feff}')
    {
        return bad("must be relative (no leading `/`), without `#`, white space or control characters");
    }
    let lower = path.split('?').next().unwrap_or_default().to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return bad("must not have an encoded `/` or `\\`");
    }
    let dots = |seg: &str| matches!(seg.replace("%2e", "."), s if s == "." || s == "..");
    if lower.split('/').any(dots) {
        return bad("must not have a `.` or `..` segment");
    }
    Ok(())
}

/// `POST …/devices/{device}/commands`: a long command, run as a job.
pub struct DeviceCommands {
    cx: Cx,
    found: Option<(Arc<Tenant>, Device)>,
    command: Option<wire::DeviceCommand>,
}

impl DeviceCommands {
    /// For `cx`.
    pub fn new(cx: Cx) -> Self {
        Self {
            cx,
            found: None,
            command: None,
        }
    }
}

impl Resource for DeviceCommands {
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem> {
        self.cx.remember(&input);
        Query::parse(&input.head.uri, &[])?;
        let command: wire::DeviceCommand = decode(json_body(input.body.as_ref())?)?;
        if !crate::devices::command::METHODS.contains(&command.method.as_str()) {
            return Err(invalid_field("/method", "must be one of GET, POST, PUT, PATCH, DELETE"));
        }
        command_path(&command.path)?;
        self.command = Some(command);
        Ok(())
    }

    fn load(&mut self) -> BoxFuture<'_, Result<Existence, Problem>> {
        Box::pin(async move {
            settle(
                async {
                    self.found = Some(load_device(&self.cx).await?);
                    Ok(Existence::Found(Found::default()))
                }
                .await,
            )
        })
    }

    fn execute(&mut self, _: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        Box::pin(async move {
            let (tenant, device) = still_there(self.found.take())?;
            let command = still_there(self.command.take())?;
            let mut params = serde_json::json!({
                "device": device.name,
                "device_id": device.id,
                "method": command.method,
                "path": command.path,
            });
            if let Some(body) = command.body {
                params["body"] = body;
            }
            let job = self
                .cx
                .app
                .store
                .create_job(
                    canon_store::NewJob {
                        tenant_id: tenant.id.clone(),
                        kind: canon_store::JobKind::DeviceCommand,
                        params,
                        total: Some(1),
                        with_input: false,
                    },
                    canon_store::now_millis(),
                )
                .await
                .map_err(store_problem)?;
            Ok(super::jobs::accepted(&self.cx.app, &tenant.name, &job))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relayed_path_is_what_follows_api_and_cannot_smuggle_slashes() {
        let p = |raw: &str| relayed_path(raw).map(str::to_owned);
        assert_eq!(p("/v1/tenants/acme/devices/fw/api/status").unwrap(), "status");
        assert_eq!(p("/v1/tenants/acme/devices/fw/api/a/b%20c/").unwrap(), "a/b%20c/");
        assert!(p("/v1/tenants/acme/devices/fw/api/a%2F..%2Fadmin").is_err());
        assert!(p("/v1/tenants/acme/devices/fw/api/a%2f").is_err());
        assert!(p("/v1/tenants/acme/devices/fw/api/a%5Cb").is_err());
    }

    #[test]
    fn the_target_is_below_the_endpoint_path_with_the_query() {
        let t = |e: &str, p: &str, q: Option<&str>| target(e, p, q).unwrap().to_string();
        assert_eq!(t("http://10.0.0.1:8080", "status", None), "http://10.0.0.1:8080/status");
        assert_eq!(
            t("http://10.0.0.1/mgmt/", "a/b", Some("x=1")),
            "http://10.0.0.1/mgmt/a/b?x=1"
        );
        assert_eq!(t("http://10.0.0.1/mgmt", "a%20b", None), "http://10.0.0.1/mgmt/a%20b");
    }

    #[test]
    fn command_paths_stay_below_the_endpoint() {
        for ok in ["status", "a/b?x=1", "config/apply", "a%20b"] {
            assert!(command_path(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/abs", "a/../b", "..", "a/%2e%2e/b", "a%2Fb", "a b", "a#b", "./x"] {
            assert!(command_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn device_headers_are_tokens_with_visible_values_each_once() {
        let map = |v: Value| v.as_object().cloned().unwrap();
        let ok = header_values(map(serde_json::json!({"X-Token": "abc", "accept": "*/*"})), "/headers").unwrap();
        assert_eq!(ok[0], ("x-token".to_owned(), "abc".to_owned()));
        for bad in [
            serde_json::json!({"bad name": "x"}),
            serde_json::json!({"Connection": "close"}),
            serde_json::json!({"host": "x"}),
            serde_json::json!({"x-a": "line\nbreak"}),
            serde_json::json!({"x-a": 1}),
            serde_json::json!({"X-A": "1", "x-a": "2"}),
        ] {
            assert!(header_values(map(bad.clone()), "/headers").is_err(), "{bad}");
        }
    }
}
