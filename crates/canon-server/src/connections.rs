//! The accept loop and the life of a connection: how long a client may take
//! to send a header section, how long a connection may sit idle, how many
//! may be open at once, how an early answer reaches a client still sending
//! its body, and how connections end when the server shuts down
//! (docs/http.md, "Connections").
//!
//! An accept loop of our own over hyper's HTTP/1 builder rather than
//! `axum::serve`, which gives no hold on a connection's life: a client
//! sending its headers a byte at a time could hold a connection forever.
//! Both of a connection's clocks (the header section's and the idle one) are
//! kept here, by one watch per connection that reads what its socket did
//! ([`Activity`]), rather than by hyper's header-read timer, which boxed and
//! registered a timer for every request (docs/performance.md).

use foldhash::{HashMap, HashMapExt};
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use hyper::body::Body as _;
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt as _;

use crate::config::Config;

/// After an answer that left the request body unread (a 401, 403, 404, 413,
/// 415… decided from the head), the server half-closes the connection and
/// reads and discards what the client is still sending, for at most this
/// long and this many bytes, before closing. Closing at once, with unread
/// bytes in the socket, makes the kernel send a reset that can destroy the
/// answer before the client reads it: the client sees a broken pipe instead
/// of the problem (Apache's and nginx's "lingering close").
pub const LINGER_TIME: Duration = Duration::from_secs(2);
/// See [`LINGER_TIME`].
pub const LINGER_BYTES: u64 = 16 << 20;

/// The connection settings of [`serve_connections`].
#[derive(Debug, Clone)]
pub struct Limits {
    /// A header section not complete this long after the server starts
    /// waiting for it (a new connection, or the end of the previous
    /// response) closes the connection, without a response.
    pub header_timeout: Duration,
    /// A connection on which no byte moves in either direction this long,
    /// while no request is being handled (or while a response waits for the
    /// client to read it), is closed.
    pub idle_timeout: Duration,
    /// Connections open at once; beyond it the server stops accepting until
    /// one closes (the kernel's listen backlog holds the next few).
    pub max_connections: usize,
    /// Connections one client address may have open at once (an IPv6
    /// address counts with its whole /64); a connection beyond it is closed
    /// as soon as it is accepted.
    pub max_connections_per_address: usize,
    /// Peers the per-address cap does not apply to: reverse proxies, each
    /// carrying many clients' connections (`CANON_TRUSTED_PROXIES`).
    pub uncapped: Vec<IpNet>,
    /// How long shutdown waits for requests in flight before closing their
    /// connections.
    pub shutdown_grace: Duration,
}

impl Limits {
    /// The limits `config` names.
    pub fn from_config(config: &Config) -> Limits {
        Limits {
            header_timeout: config.header_timeout,
            idle_timeout: config.idle_timeout,
            max_connections: config.max_connections,
            max_connections_per_address: config.max_connections_per_address,
            uncapped: config.trusted_proxies.clone(),
            shutdown_grace: config.shutdown_grace,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from_config(&Config::default())
    }
}

/// What [`serve_connections`] runs for each request: an axum `Router`, or
/// Canon's in-flight gate in front of one (`App::service`).
pub trait ConnectionService:
    tower::Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + Sync
    + Unpin
    + 'static
{
}

impl<S> ConnectionService for S where
    S: tower::Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
        + Clone
        + Send
        + Sync
        + Unpin
        + 'static
{
}

/// Runs `service` on every connection `listener` accepts, until `shutdown`
/// resolves; then stops accepting (the listener is closed, so new
/// connections are refused), lets every connection finish the request it is
/// serving (keep-alive off) and waits for them, up to
/// [`Limits::shutdown_grace`]. Each request carries the peer address as
/// `ConnectInfo`.
pub async fn serve_connections<S: ConnectionService>(
    listener: TcpListener,
    service: S,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    // At most u32::MAX, so shutdown can wait for every slot at once.
    let max = limits
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS)
        .min(u32::MAX as usize);
    let slots = Arc::new(Semaphore::new(max));
    let per_address = Arc::new(PerAddress::new(
        limits.max_connections_per_address,
        limits.uncapped.clone(),
    ));
    let (stop, stopping) = watch::channel(false);
    let mut builder = hyper::server::conn::http1::Builder::new();
    // No `max_headers`: hyper's default of 100 fields is kept. Any other
    // value, even 100, makes hyper fill an array of that many slots on every
    // request, about 5 % of a record GET's instructions at 512
    // (docs/performance.md); more than 100 fields is answered by hyper (a
    // bare 431, docs/http.md). No hyper timer: the header section's clock is
    // the connection's watch ([`watch_clocks`]), so hyper's own header-read timeout
    // (30 s by default, and only with a timer) is off.
    builder.header_read_timeout(None);
    tokio::pin!(shutdown);
    loop {
        // A slot first, then a connection: at the limit the loop waits here
        // and new connections queue in the kernel's backlog, costing no file
        // descriptor of ours until a slot frees.
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors, most likely: back off rather
                    // than spin, and keep serving the connections we have.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // One address may not hold every slot: past its share the
        // connection is closed at once (its slot goes back).
        let Some(address_slot) = per_address.open(peer.ip()) else {
            crate::metrics::connection_refused("per-address");
            tracing::debug!(%peer, "connection closed: too many open from its address");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            stream,
            peer,
            service: service.clone(),
            builder: builder.clone(),
            clocks: Clocks {
                header: limits.header_timeout,
                idle: limits.idle_timeout,
            },
            stopping: stopping.clone(),
        };
        tokio::spawn(async move {
            let _permit = permit;
            let _address_slot = address_slot;
            let _open = crate::metrics::OpenConnection::new();
            connection.run().await;
        });
    }
    drop(listener);
    tracing::info!("no longer accepting connections; finishing requests in flight");
    let _ = stop.send(true);
    // Every connection holds a slot until it ends: all slots free means all
    // connections ended.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.shutdown_grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            open = max - slots.available_permits(),
            "connections still open after the shutdown grace; closing them"
        );
    }
}

/// One accepted connection and what serving it needs.
struct Connection<S> {
    stream: TcpStream,
    peer: std::net::SocketAddr,
    service: S,
    builder: hyper::server::conn::http1::Builder,
    clocks: Clocks,
    stopping: watch::Receiver<bool>,
}

/// A connection's two clocks ([`Limits::header_timeout`],
/// [`Limits::idle_timeout`]).
#[derive(Debug, Clone, Copy)]
struct Clocks {
    header: Duration,
    idle: Duration,
}

/// Why a connection's watch closed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expired {
    /// No complete header section in time.
    Header,
    /// Nothing moved in time.
    Idle,
}

/// The response future of one request, boxed so the connection is `Unpin`
/// (hyper hands the socket back only from an `Unpin` connection).
type Responding = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl<S: ConnectionService> Connection<S> {
    async fn run(self) {
        let Connection {
            stream,
            peer,
            service,
            builder,
            clocks,
            mut stopping,
        } = self;
        let activity = Arc::new(Activity::new());
        let seen = activity.clone();
        let service = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let busy = Busy::new(seen.clone());
            // A body is unread until it is read to its end; one that is
            // empty by its head needs no watching (every GET).
            let unread = !req.body().is_end_stream();
            seen.unread.store(unread, Ordering::Relaxed);
            let req = if unread {
                let activity = seen.clone();
                req.map(|inner| Body::new(Tracked { inner, activity }))
            } else {
                req.map(Body::new)
            };
            let response = service.clone().oneshot(req);
            Box::pin(async move {
                let response = response.await;
                // A streamed answer is still being produced once it has a
                // head: the request stays busy until its body ends (or is
                // dropped), so a slow source is neither idle nor a wait for
                // the next header section. A whole body (or none) is
                // written at once: the writes themselves move the clocks.
                Ok(match response {
                    Ok(response) if is_streamed(&response) => {
                        response.map(|inner| Body::new(Answering { inner, _busy: busy }))
                    }
                    Ok(response) => {
                        drop(busy);
                        response
                    }
                    Err(never) => match never {},
                })
            }) as Responding
        });
        let io = hyper_util::rt::TokioIo::new(Watched {
            inner: stream,
            activity: activity.clone(),
        });
        let mut conn = builder.serve_connection(io, service);
        let mut shutting_down = *stopping.borrow();
        if shutting_down {
            Pin::new(&mut conn).graceful_shutdown();
        }
        let ended = loop {
            tokio::select! {
                ended = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => break Ok(ended),
                changed = stopping.changed(), if !shutting_down => {
                    // The sender gone without a word also means: stop.
                    if changed.is_err() || *stopping.borrow() {
                        shutting_down = true;
                        Pin::new(&mut conn).graceful_shutdown();
                    }
                }
                expired = watch_clocks(&activity, clocks) => break Err(expired),
            }
        };
        match ended {
            Ok(Ok(())) => {
                let parts = conn.into_parts();
                // Only a client that may still be sending needs the
                // lingering read; an idle connection (keep-alive ended by
                // shutdown, or by the client) closes at once, so it holds
                // no slot and does not keep shutdown waiting.
                let unread = activity.unread.load(Ordering::Relaxed) || !parts.read_buf.is_empty();
                let stream = parts.io.into_inner().inner;
                if unread {
                    linger(stream).await;
                }
            }
            Ok(Err(e)) => tracing::debug!(error = %e, %peer, "connection ended with an error"),
            Err(Expired::Header) => tracing::debug!(%peer, "connection closed: no header section in time"),
            Err(Expired::Idle) => tracing::debug!(%peer, "idle connection closed"),
        }
    }
}

/// Open connections per client address, for
/// [`Limits::max_connections_per_address`].
struct PerAddress {
    max: usize,
    uncapped: Vec<IpNet>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection counted against its address (none for an
/// uncapped peer); uncounted when dropped.
struct AddressSlot {
    table: Arc<PerAddress>,
    key: Option<IpAddr>,
}

impl PerAddress {
    fn new(max: usize, uncapped: Vec<IpNet>) -> PerAddress {
        PerAddress {
            max: max.max(1),
            uncapped,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a connection from `peer`, or `None` when its address has
    /// as many open as it may. An uncapped peer is not counted.
    fn open(self: &Arc<Self>, peer: IpAddr) -> Option<AddressSlot> {
        if self.uncapped.iter().any(|net| net.contains(&peer)) {
            return Some(AddressSlot {
                table: self.clone(),
                key: None,
            });
        }
        let key = address_key(peer);
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(key).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            table: self.clone(),
            key: Some(key),
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let Some(key) = self.key else { return };
        let mut open = self
            .table
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&key);
            }
        }
    }
}

/// What the per-address cap counts a peer as: an IPv4 address (also when
/// it arrives mapped into IPv6), or an IPv6 address's /64, the block one
/// subscriber is usually given (counting single IPv6 addresses would let
/// one host open as many connections as it has addresses).
fn address_key(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

/// Sends what is left (the answer is written already), half-closes, then
/// reads and discards what the client still sends, within [`LINGER_TIME`]
/// and [`LINGER_BYTES`], so the answer is read before the socket closes.
/// A client that closes its end first (the usual case) ends this at once.
async fn linger(mut stream: TcpStream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let deadline = tokio::time::Instant::now() + LINGER_TIME;
    let mut buffer = vec![0u8; 64 * 1024];
    let mut left = LINGER_BYTES;
    while left > 0 {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n as u64),
            _ => break,
        }
    }
}

/// Resolves when one of the connection's clocks runs out
/// ([`Activity::expired`]), looking again when the nearest could.
async fn watch_clocks(activity: &Activity, clocks: Clocks) -> Expired {
    loop {
        match activity.expired(activity.now_ms(), clocks) {
            Ok(expired) => return expired,
            Err(wait) => tokio::time::sleep(wait.max(Duration::from_millis(10))).await,
        }
    }
}

/// What moved on a connection, and when.
struct Activity {
    start: Instant,
    /// Milliseconds after `start` of the last byte read or written.
    last: AtomicU64,
    /// Milliseconds after `start` since which the server has been waiting
    /// for a header section: the connection's start, the end of a request's
    /// handling, or the last byte of an answer written since.
    head_wait: AtomicU64,
    /// Requests being handled (their handler has not answered yet).
    busy: AtomicUsize,
    /// The last write found the socket's buffer full.
    write_pending: AtomicBool,
    /// The last request's body has not been read to its end (the answer
    /// came from its head): the client may still be sending it.
    unread: AtomicBool,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
            head_wait: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            write_pending: AtomicBool::new(false),
            unread: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A byte was read: the connection is not idle (a header section
    /// trickling in is still late, so its clock goes on).
    fn touch(&self) {
        self.last.store(self.now_ms(), Ordering::Relaxed);
    }

    /// An answer moved on (a request was handled, or bytes of its answer
    /// were written): the connection is not idle, and the wait for the next
    /// header section starts again.
    fn answered(&self) {
        let now = self.now_ms();
        self.last.store(now, Ordering::Relaxed);
        self.head_wait.store(now, Ordering::Relaxed);
    }

    /// At `now` (milliseconds after `start`): which clock has run out, or
    /// how long until one could.
    ///
    /// - Header: no request is being handled, no answer waits for the client
    ///   to read it, and no complete header section came for `clocks.header`
    ///   since the server began waiting for one (hyper calls the service as
    ///   soon as a head is complete, which makes the connection busy).
    /// - Idle: no byte moved for `clocks.idle`, while no request is being
    ///   handled or while an answer waits for the client to read it.
    fn expired(&self, now: u64, clocks: Clocks) -> Result<Expired, Duration> {
        let since = |at: &AtomicU64| Duration::from_millis(now.saturating_sub(at.load(Ordering::Relaxed)));
        let busy = self.busy.load(Ordering::Relaxed) > 0;
        let blocked = self.write_blocked();
        let quiet = since(&self.last);
        if quiet >= clocks.idle && (!busy || blocked) {
            return Ok(Expired::Idle);
        }
        let waiting = !busy && !blocked;
        let waited = since(&self.head_wait);
        if waiting && waited >= clocks.header {
            return Ok(Expired::Header);
        }
        // A handler busy without IO (a long store call) is not idle: look
        // again a little later. A busy or blocked connection starts its
        // header clock afresh when it is done, so a full period is enough.
        let idle_wait = if quiet >= clocks.idle {
            clocks.idle / 4
        } else {
            clocks.idle - quiet
        };
        let header_wait = if waiting { clocks.header - waited } else { clocks.header };
        Err(idle_wait.min(header_wait))
    }

    fn write_blocked(&self) -> bool {
        self.write_pending.load(Ordering::Relaxed)
    }
}

/// Counts a request as being handled while it lives.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: Arc<Activity>) -> Busy {
        // No clock read: the read that completed the head (or the answer
        // written before a pipelined one) moved the clocks just now, and
        // neither clock runs out while a request is busy.
        activity.busy.fetch_add(1, Ordering::Relaxed);
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
        self.0.answered();
    }
}

/// Whether `response` has a body produced as it is sent (an export, a job's
/// result): neither a whole one (its length known) nor none at all (a 304,
/// whose body hyper never sends).
fn is_streamed(response: &Response) -> bool {
    response.status() != http::StatusCode::NOT_MODIFIED
        && !response.body().is_end_stream()
        && response.body().size_hint().exact().is_none()
}

/// A streamed answer's body, which keeps its request [`Busy`] until it ends
/// or is dropped.
struct Answering {
    inner: Body,
    _busy: Busy,
}

impl hyper::body::Body for Answering {
    type Data = hyper::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that clears its connection's [`Activity::unread`] once
/// read to its end.
struct Tracked {
    inner: hyper::body::Incoming,
    activity: Arc<Activity>,
}

impl hyper::body::Body for Tracked {
    type Data = hyper::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.activity.unread.store(false, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A socket that records its [`Activity`].
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note_write(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note_write(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Watched {
    fn note_write(&self, polled: &Poll<std::io::Result<usize>>) {
        match polled {
            Poll::Pending => self.activity.write_pending.store(true, Ordering::Relaxed),
            Poll::Ready(written) => {
                self.activity.write_pending.store(false, Ordering::Relaxed);
                if matches!(written, Ok(n) if *n > 0) {
                    self.activity.answered();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const CLOCKS: Clocks = Clocks {
        header: Duration::from_millis(10_000),
        idle: Duration::from_millis(60_000),
    };

    /// An activity whose last byte moved at `last` and whose wait for a head
    /// began at `head_wait` (milliseconds after its start).
    fn activity(last: u64, head_wait: u64, busy: usize, blocked: bool) -> Activity {
        let a = Activity::new();
        a.last.store(last, Ordering::Relaxed);
        a.head_wait.store(head_wait, Ordering::Relaxed);
        a.busy.store(busy, Ordering::Relaxed);
        a.write_pending.store(blocked, Ordering::Relaxed);
        a
    }

    #[test]
    fn a_header_section_has_its_clock_from_the_wait_not_from_the_last_byte() {
        // A new connection sending nothing: the header clock runs out first.
        let silent = activity(0, 0, 0, false);
        assert_eq!(silent.expired(9_999, CLOCKS), Err(Duration::from_millis(1)));
        assert_eq!(silent.expired(10_000, CLOCKS), Ok(Expired::Header));
        // A head trickling in a byte at a time (reads at 9.9 s) is still late.
        let trickle = activity(9_900, 0, 0, false);
        assert_eq!(trickle.expired(10_000, CLOCKS), Ok(Expired::Header));
        // After an answer (written at 5 s), the next head has until 15 s.
        let keep_alive = activity(5_000, 5_000, 0, false);
        assert_eq!(keep_alive.expired(14_000, CLOCKS), Err(Duration::from_millis(1_000)));
        assert_eq!(keep_alive.expired(15_000, CLOCKS), Ok(Expired::Header));
    }

    #[test]
    fn a_request_being_handled_or_an_answer_waiting_for_the_client_is_not_late() {
        // Busy for a minute without IO (a long store call): neither clock.
        let busy = activity(0, 0, 1, false);
        assert_eq!(busy.expired(70_000, CLOCKS), Err(Duration::from_millis(10_000)));
        // An answer the client does not read: not a header wait; idle once
        // nothing moved for the idle timeout.
        let blocked = activity(1_000, 1_000, 0, true);
        assert_eq!(blocked.expired(30_000, CLOCKS), Err(Duration::from_millis(10_000)));
        assert_eq!(blocked.expired(61_000, CLOCKS), Ok(Expired::Idle));
        // Busy and blocked (a streamed answer stalled by its client): idle.
        let streaming = activity(1_000, 0, 1, true);
        assert_eq!(streaming.expired(61_000, CLOCKS), Ok(Expired::Idle));
    }

    #[test]
    fn the_shorter_clock_closes_an_idle_keep_alive_connection() {
        let clocks = Clocks {
            header: Duration::from_millis(60_000),
            idle: Duration::from_millis(10_000),
        };
        let keep_alive = activity(5_000, 5_000, 0, false);
        assert_eq!(keep_alive.expired(14_000, clocks), Err(Duration::from_millis(1_000)));
        assert_eq!(keep_alive.expired(15_000, clocks), Ok(Expired::Idle));
    }

    #[test]
    fn answering_and_writing_restart_the_header_wait_but_reading_does_not() {
        let a = Activity::new();
        a.head_wait.store(0, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(20));
        a.touch();
        assert_eq!(
            a.head_wait.load(Ordering::Relaxed),
            0,
            "a read leaves the header clock alone"
        );
        assert!(a.last.load(Ordering::Relaxed) >= 20);
        a.answered();
        assert!(a.head_wait.load(Ordering::Relaxed) >= 20, "an answer restarts it");
    }

    #[test]
    fn a_streamed_answer_keeps_its_request_busy_until_its_body_is_done() {
        use futures_util::StreamExt as _;
        let a = Arc::new(Activity::new());
        let chunks = futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"x"))]);
        let streamed = Response::new(Body::from_stream(chunks));
        assert!(is_streamed(&streamed));
        assert!(!is_streamed(&Response::new(Body::from("whole"))));
        assert!(!is_streamed(&Response::new(Body::empty())));
        let not_modified = http::Response::builder()
            .status(304)
            .body(Body::from_stream(futures_util::stream::empty::<
                Result<bytes::Bytes, std::io::Error>,
            >()))
            .unwrap();
        assert!(!is_streamed(&not_modified));

        let busy = Busy::new(a.clone());
        let body = Body::new(Answering {
            inner: streamed.into_body(),
            _busy: busy,
        });
        assert_eq!(a.busy.load(Ordering::Relaxed), 1);
        let mut frames = body.into_data_stream();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            assert!(frames.next().await.is_some());
            assert_eq!(a.busy.load(Ordering::Relaxed), 1, "busy while it streams");
            assert!(frames.next().await.is_none());
        });
        drop(frames);
        assert_eq!(a.busy.load(Ordering::Relaxed), 0, "done once the body is");
    }

    #[test]
    fn an_ipv6_peer_counts_with_its_slash_64_and_a_mapped_ipv4_as_ipv4() {
        assert_eq!(address_key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(address_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(address_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            address_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            address_key(ip("2001:db8:1:2::9"))
        );
        assert_ne!(address_key(ip("2001:db8:1:3::1")), address_key(ip("2001:db8:1:2::1")));
    }

    #[test]
    fn an_address_gets_its_places_back_as_its_connections_close() {
        let table = Arc::new(PerAddress::new(2, vec!["10.0.0.0/8".parse().unwrap()]));
        let a = table.open(ip("192.0.2.1")).expect("first");
        let b = table.open(ip("192.0.2.1")).expect("second");
        assert!(table.open(ip("192.0.2.1")).is_none(), "third refused");
        assert!(table.open(ip("192.0.2.2")).is_some(), "another address is not");
        drop(a);
        let c = table.open(ip("192.0.2.1")).expect("a place came back");
        drop((b, c));
        assert!(table.open.lock().unwrap().is_empty(), "no entry left behind");
        let proxied: Vec<_> = (0..5).map(|_| table.open(ip("10.1.2.3")).expect("uncapped")).collect();
        assert_eq!(proxied.len(), 5);
    }
}
