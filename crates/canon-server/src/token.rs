//! API tokens: random, high-entropy, stored only as SHA-256 digests.
//!
//! A SHA-256 digest is the right hash here (not a slow password hash): tokens
//! carry 256 bits of randomness, so nothing can be guessed from the digest,
//! and a digest can be looked up by index. The found row's digest is then
//! compared in constant time.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

/// Prefix of every token Canon issues, so leaked tokens are easy to find.
pub const PREFIX: &str = "canon_";

/// A new random token.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The stored digest of `token` (hex).
pub fn digest(token: &str) -> String {
    hex(&digest_bytes(token)).as_str().to_owned()
}

/// The SHA-256 digest of `token`, as bytes.
pub fn digest_bytes(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A digest in lower-case hex, as stored digests are written: kept on the
/// stack, since every request hashes a token and only looks the text up.
#[derive(Clone, Copy)]
pub struct HexDigest([u8; 64]);

impl HexDigest {
    /// The 64 hex digits.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written into it.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// `digest` in lower-case hex.
pub fn hex(digest: &[u8; 32]) -> HexDigest {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (pair, &b) in out.chunks_exact_mut(2).zip(digest) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 15)];
    }
    HexDigest(out)
}

/// Constant-time equality of two digests. Compared eight bytes at a time
/// (`subtle` on `u64` words): its byte-slice comparison fences every byte
/// on its own, which cost ~650 instructions of every request for a
/// 64-digit digest.
pub fn digests_match(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let (a_words, b_words) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail = a_words.remainder().ct_eq(b_words.remainder());
    let words = a_words.zip(b_words).fold(Choice::from(1), |equal, (x, y)| {
        let word = |w: &[u8]| u64::from_le_bytes(w.try_into().unwrap_or_default());
        equal & word(x).ct_eq(&word(y))
    });
    bool::from(words & tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_digest_stably() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert!(a.starts_with(PREFIX) && a.len() > 40);
        assert_eq!(digest(&a), digest(&a));
        assert_ne!(digest(&a), digest(&b));
        assert!(digests_match(&digest(&a), &digest(&a)));
        assert!(!digests_match(&digest(&a), &digest(&b)));
        // Any one byte differing, in the words or in a tail shorter than one.
        let hex = digest(&a);
        for at in 0..hex.len() {
            let mut other = hex.clone().into_bytes();
            other[at] ^= 1;
            assert!(!digests_match(&hex, std::str::from_utf8(&other).unwrap()), "{at}");
        }
        assert!(digests_match("abcdefghij", "abcdefghij"));
        assert!(!digests_match("abcdefghij", "abcdefghik"));
        assert!(!digests_match("abcdefghij", "abcdefghi"));
        assert!(digests_match("", ""));
        // Lower-case hex, as every stored key's digest is written.
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
