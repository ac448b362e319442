//! Content codings (RFC 9110 §8.4, §12.5.3): gzip request bodies decoded
//! under the body limit, and gzip responses for clients that ask for them.
//!
//! Canon supports `gzip` (and its alias `x-gzip`) besides `identity`. gzip is
//! what every HTTP client and proxy speaks; zstd and br would add native or
//! large dependencies for a gain that matters little on JSON of this size.
//!
//! Decoding is pure CPU work over bytes already read, so it stays in this
//! crate beside the flow that decides the 413 and 415 it can cause.

use std::io::{Read, Write};

use bytes::Bytes;
use http::HeaderMap;
use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING};

use crate::body::{ChunkSource, StreamError};
use crate::flow::BoxFuture;

/// The value of `Accept-Encoding` on a 415 for an unsupported coding.
pub const ACCEPTED_CODINGS: &str = "gzip, identity";

/// How a request body is coded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestCoding {
    /// Not coded.
    Identity,
    /// gzip (RFC 1952).
    Gzip,
}

/// A `Content-Encoding` Canon cannot decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the content coding {0} is not supported; send gzip or no Content-Encoding")]
pub struct UnsupportedCoding(pub String);

/// Reads `Content-Encoding`. More than one coding (`gzip, gzip`) is refused:
/// nobody sends stacked codings on purpose, and each layer multiplies what a
/// small body can expand to.
pub fn request_coding(headers: &HeaderMap) -> Result<RequestCoding, UnsupportedCoding> {
    let mut codings = Vec::new();
    for value in headers.get_all(CONTENT_ENCODING) {
        let s = value.to_str().map_err(|_| UnsupportedCoding("(not ASCII)".into()))?;
        codings.extend(
            s.split(',')
                .map(|c| c.trim().to_ascii_lowercase())
                .filter(|c| !c.is_empty() && c != "identity"),
        );
    }
    match codings.as_slice() {
        [] => Ok(RequestCoding::Identity),
        [one] if one == "gzip" || one == "x-gzip" => Ok(RequestCoding::Gzip),
        _ => Err(UnsupportedCoding(codings.join(", "))),
    }
}

/// Why a coded body could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The decoded body is longer than the limit (413: a small "zip bomb"
    /// costs no more than the limit).
    TooLarge,
    /// The bytes are not valid for the coding (400).
    Corrupt,
}

/// Decodes `body`, stopping as soon as the output passes `limit` bytes.
pub fn decode(coding: RequestCoding, body: Bytes, limit: usize) -> Result<Bytes, DecodeError> {
    match coding {
        RequestCoding::Identity => Ok(body),
        RequestCoding::Gzip => {
            let mut out = Vec::new();
            let mut decoder = flate2::read::MultiGzDecoder::new(&body[..]).take(limit as u64 + 1);
            decoder.read_to_end(&mut out).map_err(|_| DecodeError::Corrupt)?;
            if out.len() > limit {
                Err(DecodeError::TooLarge)
            } else {
                Ok(Bytes::from(out))
            }
        }
    }
}

/// Whether `Accept-Encoding` lets Canon answer with gzip: `gzip` (or `*`)
/// with a non-zero weight, and gzip not refused by name.
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut gzip = None;
    let mut identity = None;
    let mut any = None;
    for value in headers.get_all(ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()) {
        for item in value.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .and_then(|(_, v)| v.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match name.as_str() {
                "gzip" | "x-gzip" => gzip = Some(q),
                "identity" => identity = Some(q),
                "*" => any = Some(q),
                _ => {}
            }
        }
    }
    let gzip_q = gzip.or(any).unwrap_or(0.0);
    // Identity is always acceptable (RFC 9110 §12.5.3); gzip is chosen when
    // the client accepts it and does not value identity more.
    let identity_q = identity.or(any).unwrap_or(0.0);
    gzip_q > 0.0 && gzip_q >= identity_q
}

/// gzip-codes `body`.
pub fn gzip(body: &[u8]) -> Bytes {
    let mut encoder =
        flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 2 + 32), flate2::Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(body);
    Bytes::from(encoder.finish().unwrap_or_default())
}

/// gzip-codes a streamed body chunk by chunk: each source chunk is
/// compressed and flushed as it arrives (a sync flush), so memory stays at
/// one chunk whatever the body's size and the client sees data as soon as
/// it exists. The coded length is not known in advance.
pub struct GzipChunks {
    source: Box<dyn ChunkSource>,
    encoder: Option<flate2::write::GzEncoder<Vec<u8>>>,
}

impl GzipChunks {
    /// Codes `source`.
    pub fn new(source: Box<dyn ChunkSource>) -> Self {
        Self {
            source,
            encoder: Some(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast())),
        }
    }
}

impl ChunkSource for GzipChunks {
    fn next_chunk(&mut self) -> BoxFuture<'_, Option<Result<Bytes, StreamError>>> {
        Box::pin(async move {
            loop {
                let encoder = self.encoder.as_mut()?;
                match self.source.next_chunk().await {
                    Some(Ok(chunk)) => {
                        let written = encoder.write_all(&chunk).and_then(|()| encoder.flush());
                        if let Err(e) = written {
                            return Some(Err(StreamError(e.to_string())));
                        }
                        let coded = std::mem::take(encoder.get_mut());
                        if !coded.is_empty() {
                            return Some(Ok(Bytes::from(coded)));
                        }
                    }
                    Some(Err(e)) => {
                        self.encoder = None;
                        return Some(Err(e));
                    }
                    None => {
                        let encoder = self.encoder.take()?;
                        return Some(
                            encoder
                                .finish()
                                .map(Bytes::from)
                                .map_err(|e| StreamError(e.to_string())),
                        );
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(name: http::HeaderName, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(name.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn request_codings() {
        assert_eq!(request_coding(&HeaderMap::new()), Ok(RequestCoding::Identity));
        assert_eq!(
            request_coding(&headers(CONTENT_ENCODING, &["identity"])),
            Ok(RequestCoding::Identity)
        );
        assert_eq!(
            request_coding(&headers(CONTENT_ENCODING, &["GZIP"])),
            Ok(RequestCoding::Gzip)
        );
        assert!(request_coding(&headers(CONTENT_ENCODING, &["br"])).is_err());
        assert!(request_coding(&headers(CONTENT_ENCODING, &["gzip, gzip"])).is_err());
        assert!(request_coding(&headers(CONTENT_ENCODING, &["gzip", "deflate"])).is_err());
    }

    #[test]
    fn gzip_round_trip_and_the_limit_applies_after_decoding() {
        let plain = vec![b'a'; 100_000];
        let coded = gzip(&plain);
        assert!(coded.len() < 1_000);
        assert_eq!(
            decode(RequestCoding::Gzip, coded.clone(), 100_000).unwrap().len(),
            100_000
        );
        assert_eq!(decode(RequestCoding::Gzip, coded, 99_999), Err(DecodeError::TooLarge));
        assert_eq!(
            decode(RequestCoding::Gzip, Bytes::from_static(b"not gzip"), 10),
            Err(DecodeError::Corrupt)
        );
    }

    #[test]
    fn accept_encoding() {
        assert!(!accepts_gzip(&HeaderMap::new()));
        assert!(accepts_gzip(&headers(ACCEPT_ENCODING, &["gzip, deflate, br"])));
        assert!(accepts_gzip(&headers(ACCEPT_ENCODING, &["br;q=1, *;q=0.1"])));
        assert!(!accepts_gzip(&headers(ACCEPT_ENCODING, &["gzip;q=0, *"])));
        assert!(!accepts_gzip(&headers(ACCEPT_ENCODING, &["identity"])));
        assert!(!accepts_gzip(&headers(ACCEPT_ENCODING, &["*;q=0"])));
        assert!(!accepts_gzip(&headers(ACCEPT_ENCODING, &["gzip;q=0.5, identity;q=1"])));
        assert!(accepts_gzip(&headers(ACCEPT_ENCODING, &["gzip;q=1, identity;q=0.5"])));
    }
}
