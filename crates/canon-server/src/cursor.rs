//! List cursors: small, signed, and bound to the list they came from.
//!
//! A cursor is `base64url(payload) "." base64url(tag)`. The payload is JSON:
//! the list's scope (a digest of tenant, collection, filters and sort, or of
//! whatever identifies the list) and the store's position (last id and sort
//! key). The tag is HMAC-SHA256 over the payload with a server secret kept in
//! the store ([`canon_store::Store::secret`]), so every node and every restart
//! verifies the same cursors, and a client can neither edit one nor move it to
//! another list: either is a 400 `invalid-query`.
//!
//! Cursors are bounded: the store's sort key replaces text longer than 256
//! characters by a prefix and a digest, ids are at most 128 bytes, so a
//! cursor is at most a few KiB and a `Link: rel="next"` never outgrows the
//! 8 KiB URI limit because of it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use canon_http::Problem;
use canon_store::Cursor;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::input::invalid_query;

type HmacSha256 = Hmac<Sha256>;

/// The store's name for the cursor-signing secret.
pub const SECRET_NAME: &str = "cursor-hmac-sha256";

/// Cursors longer than this are rejected before any decoding. Issued
/// cursors stay under 2 KiB (sort values are cut at 256 characters); 4 KiB
/// also keeps any too-long cursor, percent-encoded, under hyper's 64 KiB
/// request-target limit, so the flow answers it (400/414), not hyper.
pub const MAX_CURSOR_LEN: usize = 4096;

/// The key cursors are signed with.
#[derive(Clone)]
pub struct CursorKey {
    mac: HmacSha256,
}

impl std::fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorKey(..)")
    }
}

impl CursorKey {
    /// The key derived from the stored `secret` (`None` only if HMAC
    /// refused the key, which it does not for any length).
    pub fn from_secret(secret: &str) -> Option<CursorKey> {
        let mac = <HmacSha256 as Mac>::new_from_slice(secret.as_bytes()).ok()?;
        Some(CursorKey { mac })
    }

    /// A fresh random secret, for [`canon_store::Store::secret`] to keep when
    /// none is stored yet.
    pub fn generate_secret() -> String {
        let bytes: [u8; 32] = rand::random();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Binds cursors to the list identified by `parts` (for example
    /// `["records", tenant_id, collection_id, filters_and_sort]`).
    pub fn bind(&self, parts: &[&str]) -> Binding {
        let mut h = Sha256::new();
        for p in parts {
            // Length-prefixed, so ["ab","c"] and ["a","bc"] differ.
            h.update((p.len() as u64).to_be_bytes());
            h.update(p.as_bytes());
        }
        let scope = h.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect();
        Binding {
            mac: self.mac.clone(),
            scope,
        }
    }
}

/// Seals and opens the cursors of one list.
#[derive(Clone, Debug)]
pub struct Binding {
    mac: HmacSha256,
    scope: String,
}

#[derive(Serialize, Deserialize)]
struct Payload {
    #[serde(rename = "s")]
    scope: String,
    #[serde(rename = "c")]
    cursor: Cursor,
}

impl Binding {
    fn tag(&self, payload: &[u8]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(b"canon-cursor-v1\0");
        mac.update(payload);
        mac
    }

    /// The client's token for `cursor` on this list.
    pub fn seal(&self, cursor: &Cursor) -> String {
        let payload = serde_json::to_vec(&Payload {
            scope: self.scope.clone(),
            cursor: cursor.clone(),
        })
        .unwrap_or_default();
        let tag = self.tag(&payload).finalize().into_bytes();
        format!("{}.{}", URL_SAFE_NO_PAD.encode(&payload), URL_SAFE_NO_PAD.encode(tag))
    }

    /// The position a token names, when this server issued it for this list.
    pub fn open(&self, token: &str) -> Result<Cursor, Problem> {
        let forged = || invalid_query("cursor", "was not issued by this server or was altered");
        if token.len() > MAX_CURSOR_LEN {
            return Err(forged());
        }
        let (payload, tag) = token.split_once('.').ok_or_else(forged)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| forged())?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| forged())?;
        self.tag(&payload).verify_slice(&tag).map_err(|_| forged())?;
        let payload: Payload = serde_json::from_slice(&payload).map_err(|_| forged())?;
        if payload.scope != self.scope {
            return Err(invalid_query(
                "cursor",
                "belongs to another list (another tenant, collection, filter or sort)",
            ));
        }
        Ok(payload.cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cursor() -> Cursor {
        Cursor {
            id: "abc".into(),
            sort_value: Some(json!("x")),
        }
    }

    #[test]
    fn round_trip_and_binding() {
        let key = CursorKey::from_secret("s3cret").unwrap();
        let list = key.bind(&["records", "t1", "c1", "q"]);
        let token = list.seal(&cursor());
        assert_eq!(list.open(&token).unwrap(), cursor());
        let other = key.bind(&["records", "t1", "c1", "q2"]);
        let p = other.open(&token).unwrap_err();
        assert!(p.detail().contains("another list"), "{p}");
        assert!(key.bind(&["records", "t1c1", "", "q"]).open(&token).is_err());
    }

    #[test]
    fn edited_or_foreign_tokens_are_rejected() {
        let key = CursorKey::from_secret("s3cret").unwrap();
        let list = key.bind(&["tenants"]);
        let token = list.seal(&cursor());
        let (payload, tag) = token.split_once('.').unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(payload).unwrap();
        let i = bytes.iter().position(|b| *b == b'a').unwrap();
        bytes[i] = b'b';
        let edited = format!("{}.{tag}", URL_SAFE_NO_PAD.encode(bytes));
        assert!(list.open(&edited).is_err());
        let stranger = CursorKey::from_secret("other").unwrap().bind(&["tenants"]);
        assert!(stranger.open(&token).is_err());
        for junk in ["", ".", "!!!", "a.b", &"A".repeat(10_000)] {
            assert!(list.open(junk).is_err(), "{junk}");
        }
    }
}
