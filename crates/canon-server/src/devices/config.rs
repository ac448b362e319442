//! The gateway's settings (docs/devices.md, "Configuration").

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use canon_http::flow::BoxFuture;
use ipnet::IpNet;

/// The key device secrets are sealed with (`CANON_SECRET_KEY`): 32 bytes,
/// given as 64 hexadecimal digits or as base64. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(pub(crate) [u8; 32]);

impl SecretKey {
    /// Reads a key from its text form; `Err` says what is wrong, never the key.
    pub fn parse(text: &str) -> Result<SecretKey, String> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| "not hexadecimal".to_owned())?
        } else {
            let engines = [
                base64::engine::general_purpose::STANDARD,
                base64::engine::general_purpose::STANDARD_NO_PAD,
                base64::engine::general_purpose::URL_SAFE,
                base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ];
            engines
                .iter()
                .find_map(|e| e.decode(text).ok())
                .ok_or_else(|| "neither 64 hexadecimal digits nor base64".to_owned())?
        };
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("{} bytes; it must be 32 (e.g. `openssl rand -hex 32`)", b.len()))?;
        Ok(SecretKey(key))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(…)")
    }
}

/// Looks a host name up: the gateway's DNS, replaceable in tests (a name
/// that resolves to a metadata address, or changes its answer).
pub trait NameLookup: Send + Sync {
    /// The addresses of `host`.
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, std::io::Result<Vec<IpAddr>>>;
}

/// The system's resolver.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemLookup;

impl NameLookup for SystemLookup {
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, std::io::Result<Vec<IpAddr>>> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, 0)).await?.map(|a| a.ip()).collect()) })
    }
}

/// Everything the device gateway is configured with.
#[derive(Clone)]
pub struct DeviceConfig {
    /// The key device header values are sealed with. Without one, devices
    /// can be registered without `headers` only (docs/devices.md).
    pub secret_key: Option<SecretKey>,
    /// Where device endpoints may point (CIDRs), checked at registration
    /// and again at connect time after DNS resolution. Link-local and
    /// metadata addresses, unspecified and multicast addresses and Canon's
    /// own listen address are refused whatever this says.
    pub allowed_networks: Vec<IpNet>,
    /// The largest `timeout_ms` a device may have.
    pub max_timeout_ms: u32,
    /// Failures in a row (502 or 504) that open a device's circuit.
    pub breaker_threshold: u32,
    /// How long an open circuit refuses requests before one probe may pass.
    pub breaker_open: Duration,
    /// Requests one device may have in flight through this process.
    pub max_concurrency: usize,
    /// Host name resolution (the system's by default).
    pub lookup: Arc<dyn NameLookup>,
}

impl fmt::Debug for DeviceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceConfig")
            .field("secret_key", &self.secret_key.as_ref().map(|_| "set"))
            .field("allowed_networks", &self.allowed_networks)
            .field("max_timeout_ms", &self.max_timeout_ms)
            .field("breaker_threshold", &self.breaker_threshold)
            .field("breaker_open", &self.breaker_open)
            .field("max_concurrency", &self.max_concurrency)
            .finish_non_exhaustive()
    }
}

/// The networks devices may be in unless configured otherwise: loopback and
/// the private ranges (RFC 1918, IPv6 unique local), where management
/// interfaces of appliances live. Public addresses must be listed
/// explicitly (docs/devices.md, "Which addresses a device may have").
pub const DEFAULT_ALLOWED_NETWORKS: &str = "127.0.0.0/8, ::1/128, 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7";

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            secret_key: None,
            allowed_networks: crate::config::parse_trusted_proxies(DEFAULT_ALLOWED_NETWORKS).unwrap_or_default(),
            max_timeout_ms: 60_000,
            breaker_threshold: 5,
            breaker_open: Duration::from_secs(30),
            max_concurrency: 16,
            lookup: Arc::new(SystemLookup),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hex_or_base64_of_32_bytes_and_never_shown() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let k = SecretKey::parse(hex).unwrap();
        assert_eq!(k.0[1], 0x11);
        let b64 = base64::engine::general_purpose::STANDARD.encode(k.0);
        assert_eq!(SecretKey::parse(&b64).unwrap(), k);
        assert!(SecretKey::parse("short").is_err());
        assert!(SecretKey::parse(&hex[..62]).is_err());
        assert_eq!(format!("{k:?}"), "SecretKey(…)");
        assert!(!format!("{:?}", DeviceConfig::default()).contains("SecretKey"));
    }

    #[test]
    fn the_default_networks_parse() {
        assert_eq!(DeviceConfig::default().allowed_networks.len(), 6);
    }
}
