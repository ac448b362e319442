//! Response bodies: whole in memory, or streamed as they are produced.
//!
//! Most representations are small and built whole ([`Body::Full`]): they
//! can be gzip-coded at once, stored for an idempotent replay and measured
//! for `Content-Length`. Files that may be far larger than memory (an
//! export, a job's result) are [`Body::Streamed`]: the flow decides their
//! status and headers like any other, then the server sends their chunks as
//! the source yields them. The flow never reads a stream; it may wrap one
//! (gzip coding, [`crate::coding::GzipChunks`]).
//!
//! A stream that fails after its status was sent cannot change it: the
//! server cuts the connection, so the client sees a truncated body
//! (a chunked body without its last chunk, or fewer bytes than
//! `Content-Length`) rather than a complete-looking wrong one.

use bytes::Bytes;

use crate::flow::BoxFuture;

/// Why a streamed body stopped before its end.
#[derive(Debug, thiserror::Error)]
#[error("the streamed body failed: {0}")]
pub struct StreamError(pub String);

/// A source of response chunks.
pub trait ChunkSource: Send + Sync {
    /// The next chunk; `None` at the end.
    fn next_chunk(&mut self) -> BoxFuture<'_, Option<Result<Bytes, StreamError>>>;
}

/// A streamed body: its chunks and, when known, its length in bytes.
pub struct Streamed {
    /// Where the chunks come from.
    pub chunks: Box<dyn ChunkSource>,
    /// The total length, sent as `Content-Length` when known.
    pub length: Option<u64>,
}

impl std::fmt::Debug for Streamed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streamed").field("length", &self.length).finish()
    }
}

/// A response body.
#[derive(Debug)]
pub enum Body {
    /// The whole body, in memory.
    Full(Bytes),
    /// A body sent as it is produced.
    Streamed(Streamed),
}

impl Body {
    /// No body.
    pub fn empty() -> Self {
        Body::Full(Bytes::new())
    }

    /// Whether the body is known to be empty.
    pub fn is_empty(&self) -> bool {
        match self {
            Body::Full(bytes) => bytes.is_empty(),
            Body::Streamed(s) => s.length == Some(0),
        }
    }

    /// The bytes of a whole body; `None` for a stream.
    pub fn as_full(&self) -> Option<&Bytes> {
        match self {
            Body::Full(bytes) => Some(bytes),
            Body::Streamed(_) => None,
        }
    }
}

impl Default for Body {
    fn default() -> Self {
        Body::empty()
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        Body::Full(bytes)
    }
}
