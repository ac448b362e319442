//! The device gateway (issue 12; docs/devices.md): devices' endpoints and
//! sealed headers, the address rules, forwarding with its failures, and
//! each device's circuit breaker and concurrency limit.
//!
//! `resources/devices.rs` is the HTTP side (CRUD and the forwarding
//! route); this module holds what every request to a device shares.

pub mod address;
pub mod breaker;
pub mod command;
pub mod config;
pub mod endpoint;
pub mod forward;
pub mod seal;
pub mod tls;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use canon_http::body::Body;
use canon_http::{FieldError, Problem, ProblemKind};
use canon_store::{Device, DeviceTls};
use http::Response;
use http::header::{HeaderName, HeaderValue};

use address::AddressPolicy;
use breaker::{Breakers, Health, Refused};
pub use config::{DeviceConfig, SecretKey};
use forward::{Failure, Guarded, Outgoing};
use seal::Sealer;
use sha2::{Digest, Sha256};
use tls::Trust;

/// How many HTTP clients with a trust setting of their own the gateway
/// keeps; past it, it starts over (a client is cheap to build again).
const MAX_TRUST_CLIENTS: usize = 256;

/// What every request to a device shares.
pub struct Gateway {
    /// The settings.
    pub config: DeviceConfig,
    sealer: Option<Sealer>,
    policy: AddressPolicy,
    /// The client of devices without a trust setting (the system's roots).
    client: reqwest::Client,
    /// A client per distinct trust setting, by the setting's digest: a
    /// device whose setting changed finds another client, so a connection
    /// made under the old trust is never reused under the new.
    trusted: Mutex<HashMap<[u8; 32], reqwest::Client>>,
    breakers: Breakers,
    /// This process's `Via` value (`1.1 canon-` and a random token, which
    /// also tells a request that looped back through this process).
    via: String,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("via", &self.via)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// The gateway of a server listening on `listen`.
    pub fn new(config: DeviceConfig, listen: std::net::SocketAddr) -> Result<Gateway, reqwest::Error> {
        let policy = AddressPolicy::new(config.allowed_networks.clone(), listen);
        let client = Self::build_client(&policy, &config, None)?;
        let token: u32 = rand::random();
        Ok(Gateway {
            sealer: config.secret_key.as_ref().map(Sealer::new),
            breakers: Breakers::new(config.breaker_threshold, config.breaker_open, config.max_concurrency),
            policy,
            client,
            trusted: Mutex::new(HashMap::new()),
            via: format!("1.1 canon-{token:08x}"),
            config,
        })
    }

    /// A client for devices: every one resolves names through the address
    /// rules ([`Guarded`]), none follows redirects or uses a proxy; `tls`
    /// replaces reqwest's own verification (the system's roots).
    fn build_client(
        policy: &AddressPolicy,
        config: &DeviceConfig,
        tls: Option<rustls::ClientConfig>,
    ) -> Result<reqwest::Client, reqwest::Error> {
        let mut builder = crate::http_client::builder()
            // A device's redirect is its answer, relayed; never followed
            // (a redirect could lead anywhere the address rules refuse).
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(Guarded {
                policy: policy.clone(),
                lookup: config.lookup.clone(),
            }));
        if let Some(tls) = tls {
            builder = builder.tls_backend_preconfigured(tls);
        }
        builder.build()
    }

    /// The client for a device with this trust setting, built at first use.
    fn client_for(&self, tls: &DeviceTls) -> Result<reqwest::Client, Problem> {
        let broken = |why: String| {
            tracing::error!(error = %why, "a device's stored TLS setting is unusable");
            Problem::new(
                ProblemKind::BadGateway,
                format!("The device's stored TLS setting cannot be used ({why}); an admin must set it again."),
            )
        };
        if tls.ca_certificate.is_none() && tls.certificate_sha256.is_none() {
            return Ok(self.client.clone());
        }
        // The cache is keyed by the setting's text, so a request to a device
        // whose client exists parses no certificate and builds no verifier.
        let mut hasher = Sha256::new();
        for field in [&tls.ca_certificate, &tls.certificate_sha256] {
            let text = field.as_deref().unwrap_or_default();
            hasher.update((text.len() as u64).to_be_bytes());
            hasher.update(text.as_bytes());
        }
        let key: [u8; 32] = hasher.finalize().into();
        if let Some(client) = self.trusted.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(client);
        }
        let Some(trust) = Trust::of(tls).map_err(|e| broken(e.to_string()))? else {
            return Ok(self.client.clone());
        };
        let config = trust.client_config().map_err(|e| broken(e.to_string()))?;
        let client = Self::build_client(&self.policy, &self.config, Some(config)).map_err(|e| broken(e.to_string()))?;
        if let Ok(mut cache) = self.trusted.lock() {
            if cache.len() >= MAX_TRUST_CLIENTS {
                cache.clear();
            }
            cache.insert(key, client.clone());
        }
        Ok(client)
    }

    /// Checks a trust setting for registration: the 400 points at its
    /// field below `pointer`.
    pub fn admit_tls(&self, tls: &DeviceTls, pointer: &str) -> Result<DeviceTls, Problem> {
        let refuse = |e: tls::TrustError| {
            let at = e.pointer(pointer);
            Problem::new(
                ProblemKind::InvalidField,
                format!("`{}` {e}.", at.trim_start_matches('/').replace('/', ".")),
            )
            .with_errors(vec![FieldError::new(&at, e.to_string())])
        };
        // Kept canonical: the certificates alone, so what GET shows is
        // what is trusted, and the client cache's key (the setting's text)
        // is the same for two settings that trust the same certificates.
        let kept = DeviceTls {
            ca_certificate: tls
                .ca_certificate
                .as_deref()
                .map(tls::canonical_bundle)
                .transpose()
                .map_err(refuse)?,
            certificate_sha256: tls
                .certificate_sha256
                .as_deref()
                .map(tls::normalize_fingerprint)
                .transpose()
                .map_err(refuse)?,
        };
        Trust::of(&kept).map_err(refuse)?;
        Ok(kept)
    }

    /// The sealer, when `CANON_SECRET_KEY` is set.
    pub fn sealer(&self) -> Option<&Sealer> {
        self.sealer.as_ref()
    }

    /// Checks an endpoint for registration: syntax, then its addresses now
    /// (a name is resolved). The 400 points at `pointer`.
    pub async fn admit_endpoint(&self, text: &str, pointer: &str) -> Result<reqwest::Url, Problem> {
        let refuse = |why: String| {
            Problem::new(ProblemKind::InvalidField, format!("The endpoint {why}."))
                .with_errors(vec![FieldError::new(pointer, why)])
        };
        let url = endpoint::parse(text).map_err(refuse)?;
        endpoint::resolve(&url, &self.policy, &*self.config.lookup)
            .await
            .map_err(refuse)?;
        Ok(url)
    }

    /// The device's health in this process.
    pub fn health(&self, device: &Device) -> Health {
        self.breakers.health(&device.id, Instant::now())
    }

    /// Forgets a deleted device's circuit and slots.
    pub fn forget(&self, device: &Device) {
        self.breakers.forget(&device.id);
    }

    /// The problem a device's stored headers that do not open are.
    fn unsealable(device: &Device) -> Problem {
        tracing::error!(device = %device.id, "a device header does not open with CANON_SECRET_KEY");
        Problem::new(
            ProblemKind::BadGateway,
            "The device's stored headers cannot be opened with this server's CANON_SECRET_KEY (was the key \
             changed?); an admin must set them again (PATCH the device).",
        )
    }

    /// The device's headers, opened.
    fn open_headers(&self, device: &Device) -> Result<Vec<(HeaderName, HeaderValue)>, Problem> {
        let mut out = Vec::with_capacity(device.headers.len());
        for h in &device.headers {
            let sealer = self.sealer.as_ref().ok_or_else(|| Self::unsealable(device))?;
            let value = sealer
                .open(&device.tenant_id, &device.name, &h.name, &h.sealed)
                .map_err(|_| Self::unsealable(device))?;
            let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| Self::unsealable(device))?;
            let mut value = HeaderValue::from_str(&value).map_err(|_| Self::unsealable(device))?;
            value.set_sensitive(true);
            out.push((name, value));
        }
        Ok(out)
    }

    /// Relays `out` (its device headers still to add) to `device`: the
    /// device's answer, or the problem that stands for its failure (502,
    /// 504; 503 while its circuit is open or its slots are taken).
    pub async fn forward(&self, device: &Device, mut out: Outgoing) -> Result<Response<Body>, Problem> {
        if forward::looped(&out.headers, &self.via) {
            return Err(Problem::new(
                ProblemKind::BadGateway,
                "The request came back through this gateway: the device's endpoint leads to Canon itself.",
            ));
        }
        // An open circuit answers at once, before any look-up.
        let pass = match self.breakers.admit(&device.id, Instant::now()) {
            Ok(pass) => pass,
            Err(Refused::Open { retry_after }) => {
                return Err(Problem::new(
                    ProblemKind::DeviceCircuitOpen,
                    format!(
                        "The device failed {} times in a row; its circuit is open. Retry in {retry_after} s.",
                        self.config.breaker_threshold
                    ),
                )
                .with("retry_after", retry_after));
            }
            Err(Refused::Busy) => {
                return Err(Problem::new(
                    ProblemKind::DeviceBusy,
                    format!(
                        "The device already has {} requests in flight through Canon. Retry in 1 s.",
                        self.config.max_concurrency
                    ),
                )
                .with("retry_after", 1));
            }
        };
        // An IP literal never reaches the resolver: checked here, with its
        // port, like a name's addresses (Canon's own address included).
        if let Err(why) = endpoint::resolve(&out.url, &self.policy, &*self.config.lookup).await {
            return Err(Problem::new(
                ProblemKind::BadGateway,
                format!("The device's endpoint {why}; Canon does not connect there."),
            ));
        }
        out.device_headers = self.open_headers(device)?;
        let client = self.client_for(&device.tls)?;
        match forward::relay(&client, out, &self.via, pass).await {
            Ok(response) => Ok(response),
            Err(Failure::Device(problem) | Failure::Other(problem)) => Err(problem),
        }
    }
}
