//! Files vendored into the binary (`crates/canon-server/assets/`), so the
//! API reference at `/docs` renders with no network access.
//!
//! The renderer is Redoc's standalone bundle (npm `redoc`, MIT). Its URL
//! carries the version, so a cached copy is never stale: a new version is a
//! new URL. `scripts/vendor-docs-assets` refreshes the files; the tests
//! below fail until [`REDOC_VERSION`] names the vendored version.

use bytes::Bytes;

use canon_http::validators::EntityTag;

/// The vendored Redoc version, as a literal for `concat!`.
macro_rules! redoc_version {
    () => {
        "2.5.4"
    };
}

/// The vendored Redoc version (`assets/redoc/VERSION`).
pub const REDOC_VERSION: &str = redoc_version!();

/// Where the renderer is served. Versioned, hence immutable.
pub const REDOC_PATH: &str = concat!("/docs/assets/redoc-", redoc_version!(), "/redoc.standalone.js");

/// Where the renderer's licences are served: the name the bundle's first
/// line points to, next to it.
pub const REDOC_LICENSE_PATH: &str = concat!(
    "/docs/assets/redoc-",
    redoc_version!(),
    "/redoc.standalone.js.LICENSE.txt"
);

/// `Cache-Control` of a versioned asset: its URL changes whenever its bytes
/// do, so any cache may keep it for a year without asking again.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Redoc's standalone bundle, byte for byte as published.
pub static REDOC_JS: &[u8] = include_bytes!("../assets/redoc/redoc.standalone.js");

/// Redoc's licence followed by the notices of the libraries its bundle
/// contains.
pub static REDOC_LICENSE: &str = concat!(
    "Redoc ",
    redoc_version!(),
    " (npm package `redoc`, https://github.com/Redocly/redoc)\n\n",
    include_str!("../assets/redoc/LICENSE"),
    "\nLibraries bundled in redoc.standalone.js:\n\n",
    include_str!("../assets/redoc/redoc.standalone.js.LICENSE.txt"),
);

/// One vendored file: its bytes and a strong tag (a digest of them).
pub struct Asset {
    /// The bytes served.
    pub bytes: Bytes,
    /// Its strong entity tag.
    pub tag: EntityTag,
}

impl Asset {
    /// `bytes`, tagged by their digest.
    pub fn new(bytes: Bytes) -> Self {
        Asset {
            tag: EntityTag::strong(digest(&bytes)),
            bytes,
        }
    }
}

/// The first 12 bytes of the SHA-256 of `bytes`, in hex: a strong tag.
pub fn digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The renderer, hashed once.
pub static REDOC: std::sync::LazyLock<Asset> = std::sync::LazyLock::new(|| Asset::new(Bytes::from_static(REDOC_JS)));

/// Its licences, hashed once.
pub static REDOC_LICENSES: std::sync::LazyLock<Asset> =
    std::sync::LazyLock::new(|| Asset::new(Bytes::from_static(REDOC_LICENSE.as_bytes())));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_constant_names_the_vendored_version() {
        assert_eq!(include_str!("../assets/redoc/VERSION").trim(), REDOC_VERSION);
        let notice = include_str!("../assets/redoc/redoc.standalone.js.LICENSE.txt");
        assert!(notice.contains(&format!("Version: \"{REDOC_VERSION}\"")));
        assert!(REDOC_PATH.contains(REDOC_VERSION));
        assert!(REDOC_JS.starts_with(b"/*! For license information please see redoc.standalone.js.LICENSE.txt */"));
        assert_eq!(
            REDOC_LICENSE_PATH,
            format!("{REDOC_PATH}.LICENSE.txt"),
            "where the bundle says its licences are"
        );
    }
}
