//! An NDJSON file as a request body: read in chunks as the connection takes
//! them (never whole in memory), counted in bytes for the upload's
//! progress and in lines for the job's, so the job's progress has a total
//! and an ETA although the server learns the number of lines only by
//! importing them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::io::AsyncReadExt;

use super::progress::Phase;

/// The size of the reads from the file.
const READ_CHUNK: usize = 64 * 1024;

/// Counts the lines the server will import: lines with anything but ASCII
/// whitespace (the server skips blank lines, and counts a last line without
/// its newline).
#[derive(Debug, Default, Clone)]
pub struct LineCounter {
    lines: u64,
    in_content_line: bool,
}

impl LineCounter {
    /// Counts the lines `chunk` ends, carrying a started line over.
    pub fn feed(&mut self, chunk: &[u8]) {
        for byte in chunk {
            if *byte == b'\n' {
                self.lines += u64::from(self.in_content_line);
                self.in_content_line = false;
            } else if !byte.is_ascii_whitespace() {
                self.in_content_line = true;
            }
        }
    }

    /// The count, the last line included even without its newline.
    pub fn finish(&self) -> u64 {
        self.lines + u64::from(self.in_content_line)
    }
}

/// What the body stream has seen, readable once the upload is over.
#[derive(Debug, Default)]
pub struct Seen {
    /// Lines with content read so far (a last line without its newline
    /// included).
    lines: AtomicU64,
    /// Whether the whole file was read: its end, or as many bytes as its
    /// declared length (hyper stops asking for more once it sent those).
    complete: AtomicBool,
}

impl Seen {
    /// The file's line count, once the stream read all of it.
    pub fn lines(&self) -> Option<u64> {
        self.complete
            .load(Ordering::Acquire)
            .then(|| self.lines.load(Ordering::Acquire))
    }
}

/// The body stream of `file` (`length` bytes, when known): its bytes,
/// shown in `phase` as they are handed to the connection; `seen` counts its
/// lines. The body starts at once: a server that refuses an upload from its
/// head (401, 404, 413, …) reads and discards what follows for a while
/// before it closes, so the refusal reaches the client as an answer, not as
/// a broken pipe (docs/http.md).
pub fn body_stream(
    file: tokio::fs::File,
    length: Option<u64>,
    phase: Phase,
    seen: Arc<Seen>,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    struct State {
        file: tokio::fs::File,
        read: u64,
        counter: LineCounter,
        phase: Phase,
        seen: Arc<Seen>,
    }
    let state = Some(State {
        file,
        read: 0,
        counter: LineCounter::default(),
        phase,
        seen,
    });
    futures_util::stream::unfold(state, move |state| async move {
        let mut state = state?;
        let mut buffer = BytesMut::with_capacity(READ_CHUNK);
        match state.file.read_buf(&mut buffer).await {
            Ok(0) => {
                state.seen.complete.store(true, Ordering::Release);
                None
            }
            Ok(n) => {
                state.read += n as u64;
                state.counter.feed(&buffer);
                state.phase.inc(n as u64);
                state.seen.lines.store(state.counter.finish(), Ordering::Release);
                if length.is_some_and(|length| state.read >= length) {
                    state.seen.complete.store(true, Ordering::Release);
                }
                Some((Ok(buffer.freeze()), Some(state)))
            }
            // The error ends the body (and so the request).
            Err(e) => Some((Err(e), None)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(chunks: &[&[u8]]) -> u64 {
        let mut counter = LineCounter::default();
        for chunk in chunks {
            counter.feed(chunk);
        }
        counter.finish()
    }

    #[test]
    fn blank_lines_are_not_counted_and_the_last_line_is() {
        assert_eq!(count(&[b""]), 0);
        assert_eq!(count(&[b"{}\n\n  \r\n{}"]), 2);
        assert_eq!(count(&[b"{}\n{}\n"]), 2);
        assert_eq!(count(&[b"not json\n\t\n"]), 1);
    }

    #[test]
    fn lines_cut_between_chunks_count_once() {
        assert_eq!(count(&[b"{\"a\"", b":1}\n{", b"}"]), 2);
        assert_eq!(count(&[b"{}", b"\n", b"\n", b" ", b"\n"]), 1);
    }
}
