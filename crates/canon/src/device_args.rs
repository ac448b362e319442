//! `canon serve`'s device gateway settings (docs/devices.md,
//! "Configuration"): flags, `CANON_*` variables, and the config file's
//! `[devices]` table, in that order of precedence.

use std::time::Duration;

use canon_server::devices::{DeviceConfig, SecretKey};
use clap::Args;
use serde::Deserialize;

/// The flags (and their variables).
#[derive(Args, Default)]
pub struct DeviceArgs {
    /// Key that encrypts device header values at rest: 32 bytes as 64 hex
    /// digits or base64 (`openssl rand -hex 32`) [default: none; devices
    /// then take no headers].
    #[arg(long, env = "CANON_SECRET_KEY", hide_env_values = true)]
    secret_key: Option<String>,
    /// Networks device endpoints may be in, CIDRs comma-separated [default:
    /// loopback and the private ranges].
    #[arg(long, env = "CANON_DEVICE_ALLOWED_NETWORKS")]
    device_allowed_networks: Option<String>,
    /// Largest timeout_ms a device may have [default: 60000].
    #[arg(long, env = "CANON_DEVICE_MAX_TIMEOUT_MS")]
    device_max_timeout_ms: Option<u32>,
    /// Failures in a row that open a device's circuit [default: 5].
    #[arg(long, env = "CANON_DEVICE_BREAKER_THRESHOLD")]
    device_breaker_threshold: Option<u32>,
    /// Milliseconds an open circuit refuses requests before a probe [default: 30000].
    #[arg(long, env = "CANON_DEVICE_BREAKER_OPEN_MS")]
    device_breaker_open_ms: Option<u64>,
    /// Requests one device may have in flight through this process [default: 16].
    #[arg(long, env = "CANON_DEVICE_MAX_CONCURRENCY")]
    device_max_concurrency: Option<usize>,
}

/// The config file's `[devices]` table: the same settings.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DeviceFile {
    secret_key: Option<String>,
    allowed_networks: Option<String>,
    max_timeout_ms: Option<u32>,
    breaker_threshold: Option<u32>,
    breaker_open_ms: Option<u64>,
    max_concurrency: Option<usize>,
}

/// The gateway's configuration from `args`, then `file`, then defaults.
pub fn resolve(args: DeviceArgs, file: DeviceFile) -> Result<DeviceConfig, String> {
    let d = DeviceConfig::default();
    let secret_key = match args.secret_key.or(file.secret_key) {
        Some(text) => Some(SecretKey::parse(&text).map_err(|e| format!("CANON_SECRET_KEY: {e}"))?),
        None => None,
    };
    let allowed_networks = match args.device_allowed_networks.or(file.allowed_networks) {
        Some(text) => canon_server::config::parse_trusted_proxies(&text)
            .map_err(|e| format!("CANON_DEVICE_ALLOWED_NETWORKS: {e}"))?,
        None => d.allowed_networks.clone(),
    };
    let config = DeviceConfig {
        secret_key,
        allowed_networks,
        max_timeout_ms: args
            .device_max_timeout_ms
            .or(file.max_timeout_ms)
            .unwrap_or(d.max_timeout_ms),
        breaker_threshold: args
            .device_breaker_threshold
            .or(file.breaker_threshold)
            .unwrap_or(d.breaker_threshold),
        breaker_open: args
            .device_breaker_open_ms
            .or(file.breaker_open_ms)
            .map(Duration::from_millis)
            .unwrap_or(d.breaker_open),
        max_concurrency: args
            .device_max_concurrency
            .or(file.max_concurrency)
            .unwrap_or(d.max_concurrency),
        lookup: d.lookup.clone(),
    };
    if config.max_timeout_ms == 0 || config.breaker_threshold == 0 || config.max_concurrency == 0 {
        return Err("the device timeout maximum, breaker threshold and concurrency must be at least 1".into());
    }
    if config.secret_key.is_none() {
        tracing::info!("no CANON_SECRET_KEY: devices can be registered without headers only (docs/devices.md)");
    }
    Ok(config)
}
