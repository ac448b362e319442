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
    /// Time allowed for the whole body to arrive; for a body taken chunk by
    /// chunk, the longest pause between two chunks.
    pub timeout: Duration,
    /// Bytes per second a body taken chunk by chunk must average once its
    /// first `timeout` is over (0: no minimum).
    pub min_rate: u64,
}

impl BodySource for IncomingBody {
    fn read(self: Box<Self>, limit: usize) -> BoxFuture<'static, Result<Bytes, BodyError>> {
        let IncomingBody { mut body, timeout, .. } = *self;
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
            pace: Pace::new(tokio::time::Instant::now(), self.timeout, self.min_rate),
        })
    }
}

/// An incoming body taken chunk by chunk (an import): it may take as long
/// as it needs in all, but may not pause longer than `idle` between two
/// chunks, nor fall below its minimum average rate (408), so a stalled or
/// trickled upload does not hold its slot for long.
struct IncomingChunks {
    body: Body,
    idle: Duration,
    pace: Pace,
}

/// The minimum average rate of an upload: after a grace period, every byte
/// received buys `1 / min_rate` seconds more. A client that trickles a few
/// bytes now and then (each pause under the idle timeout) would otherwise
/// hold its in-flight slot for as long as it likes.
#[derive(Debug, Clone, Copy)]
struct Pace {
    /// When the upload started plus the grace period.
    start: tokio::time::Instant,
    min_rate: u64,
    received: u64,
}

impl Pace {
    fn new(now: tokio::time::Instant, grace: Duration, min_rate: u64) -> Self {
        Self {
            start: now + grace,
            min_rate,
            received: 0,
        }
    }

    /// When the upload falls below the rate if nothing more arrives (None:
    /// no minimum).
    fn deadline(&self) -> Option<tokio::time::Instant> {
        (self.min_rate > 0).then(|| {
            let earned = Duration::from_secs_f64(self.received as f64 / self.min_rate as f64);
            self.start + earned
        })
    }
}

impl BodyChunks for IncomingChunks {
    fn next_chunk(&mut self) -> BoxFuture<'_, Option<Result<Bytes, BodyError>>> {
        Box::pin(async move {
            loop {
                let idle = tokio::time::Instant::now() + self.idle;
                let until = self.pace.deadline().map_or(idle, |paced| paced.min(idle));
                return match tokio::time::timeout_at(until, self.body.frame()).await {
                    Err(_) => Some(Err(BodyError::TimedOut)),
                    Ok(None) => None,
                    Ok(Some(Err(_))) => Some(Err(BodyError::Aborted)),
                    Ok(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) if data.is_empty() => continue,
                        Ok(data) => {
                            self.pace.received += data.len() as u64;
                            Some(Ok(data))
                        }
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
