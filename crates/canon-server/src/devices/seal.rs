//! Device header values sealed at rest: ChaCha20-Poly1305 (RustCrypto's
//! `chacha20poly1305`) under `CANON_SECRET_KEY`, a random 96-bit nonce per
//! value, bound to where the value belongs (tenant, device, header name) so
//! a sealed value copied to another device or header does not open.

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

use super::config::SecretKey;

/// Marks the format (and a later key or algorithm change).
const PREFIX: &str = "v1.";
const NONCE_BYTES: usize = 12;

/// Why a sealed value did not open: another key, or altered bytes.
#[derive(Debug, thiserror::Error)]
#[error("a sealed device header did not open (another CANON_SECRET_KEY, or altered data)")]
pub struct Unsealable;

/// Seals and opens device header values.
pub struct Sealer {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(…)")
    }
}

/// What a sealed value is bound to.
fn context(tenant_id: &str, device: &str, header: &str) -> Vec<u8> {
    format!("canon-device-header\0{tenant_id}\0{device}\0{header}").into_bytes()
}

impl Sealer {
    /// A sealer with `key`.
    pub fn new(key: &SecretKey) -> Self {
        Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key.0)),
        }
    }

    /// `value` sealed for header `header` of device `device` of the tenant
    /// `tenant_id`: `v1.` and base64url of nonce and ciphertext.
    pub fn seal(&self, tenant_id: &str, device: &str, header: &str, value: &str) -> String {
        let nonce: [u8; NONCE_BYTES] = rand::random();
        let aad = context(tenant_id, device, header);
        let payload = Payload {
            msg: value.as_bytes(),
            aad: &aad,
        };
        // Encryption fails only for messages beyond ChaCha20's 256 GiB.
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .unwrap_or_default();
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        )
    }

    /// Opens what [`Sealer::seal`] made for the same place.
    pub fn open(&self, tenant_id: &str, device: &str, header: &str, sealed: &str) -> Result<String, Unsealable> {
        let bytes = sealed
            .strip_prefix(PREFIX)
            .and_then(|b| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b).ok())
            .filter(|b| b.len() > NONCE_BYTES)
            .ok_or(Unsealable)?;
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let aad = context(tenant_id, device, header);
        let opened = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| Unsealable)?;
        String::from_utf8(opened).map_err(|_| Unsealable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(byte: u8) -> Sealer {
        Sealer::new(&SecretKey([byte; 32]))
    }

    #[test]
    fn a_sealed_value_opens_only_where_it_belongs_with_its_key() {
        let s = sealer(7);
        let sealed = s.seal("t1", "fw", "x-token", "s3cret-value");
        assert!(sealed.starts_with("v1."));
        assert!(!sealed.contains("s3cret"));
        assert_eq!(s.open("t1", "fw", "x-token", &sealed).unwrap(), "s3cret-value");
        // A fresh nonce each time: the same value never seals the same.
        assert_ne!(sealed, s.seal("t1", "fw", "x-token", "s3cret-value"));
        // Another place, another key, altered bytes: nothing opens.
        assert!(s.open("t1", "fw", "x-other", &sealed).is_err());
        assert!(s.open("t1", "fw-2", "x-token", &sealed).is_err());
        assert!(s.open("t2", "fw", "x-token", &sealed).is_err());
        assert!(sealer(8).open("t1", "fw", "x-token", &sealed).is_err());
        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 1;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        assert!(
            s.open("t1", "fw", "x-token", &String::from_utf8(altered).unwrap())
                .is_err()
        );
        assert!(s.open("t1", "fw", "x-token", "v1.").is_err());
        assert!(s.open("t1", "fw", "x-token", "plain").is_err());
    }
}
