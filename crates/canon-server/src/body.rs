//! Reading a request body under a size limit and a deadline.

use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use canon_http::flow::{BodyChunks, BodyError, BodySource, BoxFuture};
use http_body_util::BodyExt;

/// An incoming body, read only if the decision flow asks for it.
pub struct IncomingBody {
    /// The body stream.
    pub body: Body,
    /// Time allowed for the whole body to arrive.
    pub timeout: Duration,
}

impl BodySource for IncomingBody {
    fn read(self: Box<Self>, limit: usize) -> BoxFuture<'static, Result<Bytes, BodyError>> {
        let IncomingBody { mut body, timeout } = *self;
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let mut buf = BytesMut::new();
            loop {
                let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                    Err(_) => return Err(BodyError::TimedOut),
                    Ok(None) => break,
                    Ok(Some(Err(_))) => return Err(BodyError::Aborted),
                    Ok(Some(Ok(frame))) => frame,
                };
                if let Ok(data) = frame.into_data() {
                    if buf.len() + data.len() > limit {
                        return Err(BodyError::TooLarge);
                    }
                    buf.extend_from_slice(&data);
                }
            }
            Ok(buf.freeze())
        })
    }

    fn chunks(self: Box<Self>) -> Box<dyn BodyChunks> {
        Box::new(IncomingChunks {
            body: self.body,
            idle: self.timeout,
        })
    }
}

/// An incoming body taken chunk by chunk (an import): it may take as long
/// as it needs in all, but may not pause longer than `idle` between two
/// chunks (408), so a stalled upload does not hold its slot forever.
struct IncomingChunks {
    body: Body,
    idle: Duration,
}

impl BodyChunks for IncomingChunks {
    fn next_chunk(&mut self) -> BoxFuture<'_, Option<Result<Bytes, BodyError>>> {
        Box::pin(async move {
            loop {
                return match tokio::time::timeout(self.idle, self.body.frame()).await {
                    Err(_) => Some(Err(BodyError::TimedOut)),
                    Ok(None) => None,
                    Ok(Some(Err(_))) => Some(Err(BodyError::Aborted)),
                    Ok(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) if data.is_empty() => continue,
                        Ok(data) => Some(Ok(data)),
                        // Trailers carry no data.
                        Err(_) => continue,
                    },
                };
            }
        })
    }
}

/// A body already in memory (a batch's operations run through the flow as
/// requests of their own).
pub struct ReadyBody(pub Bytes);

impl BodySource for ReadyBody {
    fn read(self: Box<Self>, limit: usize) -> BoxFuture<'static, Result<Bytes, BodyError>> {
        let bytes = self.0;
        Box::pin(async move {
            if bytes.len() > limit {
                Err(BodyError::TooLarge)
            } else {
                Ok(bytes)
            }
        })
    }

    fn chunks(self: Box<Self>) -> Box<dyn BodyChunks> {
        Box::new(Some(self.0))
    }
}

/// The body hyper sends for a flow's response body: a whole body as is, a
/// streamed one chunk by chunk as its source yields them. A source that
/// fails mid-way ends the body with an error, and hyper cuts the
/// connection: the client sees a truncated body, never a complete-looking
/// wrong one (the status was already sent).
pub fn outgoing(body: canon_http::body::Body) -> Body {
    match body {
        canon_http::body::Body::Full(bytes) => Body::from(bytes),
        canon_http::body::Body::Streamed(streamed) => {
            Body::from_stream(futures_util::stream::unfold(streamed.chunks, |mut chunks| async move {
                let chunk = chunks.next_chunk().await?;
                if let Err(e) = &chunk {
                    tracing::warn!(error = %e, "a streamed body failed after its status was sent; cutting the connection");
                }
                Some((chunk, chunks))
            }))
        }
    }
}
