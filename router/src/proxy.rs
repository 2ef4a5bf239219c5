//! The HTTP plumbing: a purpose-built HTTP/1 proxy loop, served by pingora-core as a
//! [`ServerApp`] (Pingora owns the listeners, the worker runtimes, graceful shutdown and
//! upgrade; this module owns each connection from its first byte).
//!
//! Everything about *where* a request goes lives in [`crate::decide`] and `switchyard-core`;
//! this file reads requests, answers 400/404/502/504 itself, forwards the rest on a pooled
//! upstream connection ([`crate::upstream`]), rewrites the path, adds
//! `x-switchyard-served-by` and records metrics.
//!
//! Why not pingora-proxy's `ProxyHttp`: on this machine its generic per-request machinery
//! cost about 95k instructions and 76 allocations per request (bench/RESULTS.md). Here a
//! connection reuses three buffers for its whole life; a small request and a small response
//! each cross the proxy in one read and one write, heads are parsed into offsets and never
//! copied into header maps.
//!
//! What it keeps of a full proxy: streamed bodies both ways (content-length, chunked, or until
//! close), `Expect: 100-continue` (answered here), connection upgrades (a byte tunnel after
//! `101`), hop-by-hop headers dropped both ways, HTTP/1.0 clients, pipelined requests, one
//! failover on a connect failure (never to weight 0, never for a pin), a replay on a fresh
//! connection when a reused one turns out closed, and upstream connections reused only after
//! a cleanly finished exchange.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use switchyard_core::table::Route;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Sleep;

use crate::decide::{decide, Decision, RequestView, Target, PIN_HEADER, SERVED_BY_HEADER};
use crate::http1::{Body, Chunked, Head, Malformed, Meta, MAX_HEAD};
use crate::live::Shared;
use crate::upstream::{ConnectError, Upstreams};

/// How long a keep-alive client connection may sit idle between requests (or take to send a
/// request head).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How far the idle deadline may lag behind the last request.
const IDLE_SLACK: Duration = Duration::from_secs(1);
/// Body bytes copied beside a head so both go out in one write.
const INLINE_BODY: usize = 16 * 1024;
/// Initial size of a connection's read buffers.
const BUFFER: usize = 8 * 1024;

/// The router's proxy app.
pub struct Proxy {
    shared: Arc<Shared>,
    upstreams: Upstreams,
    drain: Arc<Drain>,
}

impl Proxy {
    /// A proxy routing on `shared`'s live table; `drain` ends its connections gracefully.
    pub fn new(shared: Arc<Shared>, drain: Arc<Drain>) -> Self {
        Proxy {
            shared,
            upstreams: Upstreams::new(),
            drain,
        }
    }
}

/// A graceful stop before Pingora's own: each connection closes after the response it is
/// writing (idle ones at once), and the stop waits only as long as connections remain, not
/// for a fixed grace period.
pub struct Drain {
    stop: watch::Sender<bool>,
    open: AtomicUsize,
}

impl Drain {
    /// Not draining, no connections.
    pub fn new() -> Self {
        Drain {
            stop: watch::Sender::new(false),
            open: AtomicUsize::new(0),
        }
    }

    /// Starts draining; returns once no connection is open, or `within` has passed (false).
    pub async fn drain(&self, within: Duration) -> bool {
        self.stop.send_replace(true);
        let deadline = Instant::now() + within;
        while self.open.load(Ordering::Acquire) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts a connection as open while it lives.
struct Open<'d>(&'d AtomicUsize);

impl<'d> Open<'d> {
    fn new(open: &'d AtomicUsize) -> Self {
        open.fetch_add(1, Ordering::AcqRel);
        Open(open)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[async_trait]
impl ServerApp for Proxy {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _open = Open::new(&self.drain.open);
        let mut conn = Conn {
            proxy: self,
            inb: Buf::new(),
            upb: Buf::new(),
            out: Vec::with_capacity(1024),
            req: Head::default(),
            resp: Head::default(),
            shutdown: shutdown.clone(),
            draining: self.drain.stop.subscribe(),
        };
        // One idle timer and one shutdown wait for the connection's whole life: arming a
        // timer and a watch per request cost more than the rest of the request's bookkeeping.
        let idle = tokio::time::sleep(IDLE_TIMEOUT);
        tokio::pin!(idle);
        let (mut pingora_stop, mut drain_stop) = (shutdown.clone(), self.drain.stop.subscribe());
        let stop = async move {
            tokio::select! {
                _ = pingora_stop.wait_for(|stop| *stop) => {}
                _ = drain_stop.wait_for(|stop| *stop) => {}
            }
        };
        tokio::pin!(stop);
        while conn
            .next_request(&mut stream, idle.as_mut(), stop.as_mut())
            .await
        {
            if conn.exchange(&mut stream).await == Next::Close {
                break;
            }
        }
        linger(&mut stream, &mut conn.inb).await;
        None
    }
}

/// Closes our side, then reads what the client still sends for a moment: closing a socket
/// with unread input resets it, and the reset can destroy the response just written.
async fn linger(stream: &mut Stream, buf: &mut Buf) {
    const LINGER: Duration = Duration::from_secs(1);
    if stream.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut budget = 256 * 1024;
        while budget > 0 {
            buf.consume(buf.bytes().len());
            match buf.fill(stream).await {
                Ok(n) if n > 0 => budget -= n.min(budget),
                _ => return,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// A read buffer: bytes `start..end` of `data` are unread.
struct Buf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl Buf {
    fn new() -> Buf {
        Buf {
            data: vec![0; BUFFER],
            start: 0,
            end: 0,
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads more bytes; 0 at the end of the stream.
    async fn fill<R: AsyncRead + Unpin + ?Sized>(&mut self, from: &mut R) -> io::Result<usize> {
        if self.end == self.data.len() {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                // Only a head still incomplete grows a buffer, and heads are bounded.
                let grown = (self.data.len() * 2).min(MAX_HEAD + BUFFER);
                if grown == self.data.len() {
                    return Err(io::Error::other("buffer full"));
                }
                self.data.resize(grown, 0);
            }
        }
        let n = from.read(&mut self.data[self.end..]).await?;
        self.end += n;
        Ok(n)
    }
}

/// After an exchange: serve the next request on the connection, or close it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
}

/// What is left of a body to copy.
#[derive(Debug, Clone)]
enum Left {
    Bytes(u64),
    Chunks(Chunked),
    UntilClose,
}

impl Left {
    fn of(body: Body) -> Left {
        match body {
            Body::Length(n) => Left::Bytes(n),
            Body::Chunked => Left::Chunks(Chunked::default()),
            Body::UntilClose => Left::UntilClose,
        }
    }

    /// How many of `available` bytes belong to the body (and takes them off what is left).
    fn take(&mut self, available: &[u8]) -> Result<usize, Malformed> {
        match self {
            Left::Bytes(n) => {
                let take = (*n).min(available.len() as u64);
                *n -= take;
                Ok(take as usize)
            }
            Left::Chunks(c) => c.scan(available),
            Left::UntilClose => Ok(available.len()),
        }
    }

    fn done(&self) -> bool {
        match self {
            Left::Bytes(n) => *n == 0,
            Left::Chunks(c) => c.done(),
            Left::UntilClose => false,
        }
    }
}

/// Why a body copy stopped early.
enum CopyError {
    /// The sending side ended or failed.
    From,
    /// The receiving side failed.
    To,
    /// The body breaks its framing.
    Framing,
}

/// Copies the rest of a body: bytes already in `buf` first, then reads from `from`.
async fn copy_body<R, W>(
    from: &mut R,
    buf: &mut Buf,
    to: &mut W,
    left: &mut Left,
) -> Result<(), CopyError>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    loop {
        if !buf.is_empty() {
            let take = left.take(buf.bytes()).map_err(|_| CopyError::Framing)?;
            to.write_all(&buf.bytes()[..take])
                .await
                .map_err(|_| CopyError::To)?;
            buf.consume(take);
        }
        if left.done() {
            return Ok(());
        }
        match buf.fill(from).await {
            Ok(0) if matches!(left, Left::UntilClose) => return Ok(()),
            Ok(0) | Err(_) => return Err(CopyError::From),
            Ok(_) => {}
        }
    }
}

/// How an upstream exchange failed before a response head arrived.
enum Failed {
    /// Nothing came back on a reused connection: it may have been closed while idle.
    Stale,
    /// The upstream closed, reset or sent garbage.
    Upstream(String),
    /// The client went away or broke its body.
    Client,
}

/// One client connection: its buffers live as long as it does.
struct Conn<'p> {
    proxy: &'p Proxy,
    /// From the client.
    inb: Buf,
    /// From the upstream.
    upb: Buf,
    /// Heads (and small bodies) being written.
    out: Vec<u8>,
    req: Head,
    resp: Head,
    shutdown: ShutdownWatch,
    draining: watch::Receiver<bool>,
}

impl Conn<'_> {
    /// Waits for a complete request head; false when the connection should just close (the
    /// client left or idled out, or the server is shutting down between requests).
    async fn next_request(
        &mut self,
        down: &mut Stream,
        mut idle: Pin<&mut Sleep>,
        mut stop: Pin<&mut impl Future<Output = ()>>,
    ) -> bool {
        // The idle deadline moves at most once a second: a timer reset is not free, and the
        // timeout need not be exact to the millisecond.
        let now = tokio::time::Instant::now();
        if idle.deadline() + IDLE_SLACK < now + IDLE_TIMEOUT {
            idle.as_mut().reset(now + IDLE_TIMEOUT);
        }
        loop {
            if !self.inb.is_empty() {
                match self.req.parse_request(self.inb.bytes()) {
                    Ok(true) => return true,
                    Ok(false) => {}
                    Err(bad) => {
                        let status = if bad == Malformed::TooLarge { 431 } else { 400 };
                        let reply = Reply::new(status, format!("{bad}\n"));
                        reply.send(down, &mut self.out, Next::Close).await;
                        return false;
                    }
                }
            }
            // Shutdown ends a connection only between requests, never in a half-read head.
            let between = self.inb.is_empty();
            let read = tokio::select! {
                biased;
                read = self.inb.fill(down) => read,
                () = &mut idle => return false,
                () = &mut stop, if between => return false,
            };
            if !matches!(read, Ok(n) if n > 0) {
                return false;
            }
        }
    }

    /// The server is stopping: no new request on this connection.
    fn stopping(&self) -> bool {
        *self.shutdown.borrow() || *self.draining.borrow()
    }

    /// Serves the request whose head is in `self.req`.
    async fn exchange(&mut self, down: &mut Stream) -> Next {
        let started = Instant::now();
        let head_request = self.req.method.of(self.inb.bytes()) == b"HEAD";
        let meta = match self.req.meta {
            Ok(meta) => meta,
            Err(bad) => {
                let reply = Reply::new(400, format!("{bad}\n"));
                return reply.send(down, &mut self.out, Next::Close).await;
            }
        };
        let mut target = match self.route() {
            Ok(target) => target,
            Err(mut reply) => {
                reply.head_request = head_request;
                let next = self.skip_request(&meta);
                return reply.send(down, &mut self.out, next).await;
            }
        };
        let (addr, mut up, reused) =
            match connect(&self.proxy.upstreams, &mut target, started).await {
                Ok(connected) => connected,
                Err((status, why)) => {
                    let reply = Reply::failed(&target, started, head_request, status, why);
                    let next = self.skip_request(&meta);
                    return reply.send(down, &mut self.out, next).await;
                }
            };

        // The upstream's request head, and as much of the body as is already here.
        self.out.clear();
        write_request_head(&mut self.out, self.inb.bytes(), &self.req, &meta, &target);
        let head_len = self.req.len;
        let mut left = Left::of(meta.body);
        let early = match left.take(&self.inb.bytes()[head_len..]) {
            Ok(n) => n,
            Err(bad) => {
                let reply = Reply::new(400, format!("{bad}\n"));
                return reply.send(down, &mut self.out, Next::Close).await;
            }
        };
        let whole = left.done();
        let outcome = if whole {
            // All of it is here: send it (one write when small) and read the response head. A
            // reused connection that turns out closed is replaced once when the request may be
            // sent twice (RFC 9110 §9.2.2): the upstream may have closed it before reading
            // the request, or after acting on it, and nothing tells the two apart.
            let body = &self.inb.bytes()[head_len..head_len + early];
            let (inline, rest) = if early <= INLINE_BODY {
                (body, &[][..])
            } else {
                (&[][..], body)
            };
            self.out.extend_from_slice(inline);
            let mut outcome =
                send_whole(&mut up, &self.out, rest, &mut self.upb, &mut self.resp).await;
            if reused
                && replayable(&self.req, self.inb.bytes())
                && matches!(outcome, Err(Failed::Stale))
            {
                outcome = match Upstreams::connect(addr).await {
                    Ok(fresh) => {
                        up = fresh;
                        send_whole(&mut up, &self.out, rest, &mut self.upb, &mut self.resp).await
                    }
                    Err(e) => Err(Failed::Upstream(e.to_string())),
                };
            }
            self.inb.consume(head_len + early);
            outcome
        } else {
            // The body bytes already here go out right behind the head.
            let body = &self.inb.bytes()[head_len..head_len + early];
            self.out.extend_from_slice(body);
            self.inb.consume(head_len + early);
            if meta.expect_continue
                && (down
                    .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                    .await
                    .is_err()
                    || down.flush().await.is_err())
            {
                return Next::Close;
            }
            stream_request(
                down,
                &mut self.inb,
                &mut up,
                &self.out,
                &mut left,
                &mut self.upb,
                &mut self.resp,
            )
            .await
        };
        let body_sent = left.done();
        let why = match outcome {
            Ok(()) => None,
            Err(Failed::Client) => {
                count(&target, started, true);
                return Next::Close;
            }
            Err(Failed::Stale) => Some("closed the connection without answering".to_string()),
            Err(Failed::Upstream(why)) => Some(why),
        };
        if let Some(why) = why {
            let body = format!("{} failed: {why}\n", target.served_by());
            let reply = Reply::failed(&target, started, head_request, 502, body);
            let next = if body_sent && meta.keep_alive {
                Next::KeepAlive
            } else {
                Next::Close
            };
            return reply.send(down, &mut self.out, next).await;
        }
        let response = Exchange {
            addr,
            target: &target,
            request: meta,
            head_request,
            body_sent,
            started,
        };
        self.respond(down, up, response).await
    }

    /// The routing decision for the request in `self.req`, or the reply that refuses it.
    fn route(&self) -> Result<Target, Reply> {
        let buf = self.inb.bytes();
        let parts = self.req.parts;
        if !parts.proxyable {
            return Err(Reply::new(
                400,
                "request target must be a path or an absolute http URL\n".into(),
            ));
        }
        // Parts of a target httparse accepted as text, split at ASCII: always UTF-8.
        let text = |span: crate::http1::Span| std::str::from_utf8(span.of(buf)).unwrap_or_default();
        let path = match text(parts.path) {
            "" => "/",
            path => path,
        };
        let host = match self.req.get(buf, "host") {
            Some(h) => std::str::from_utf8(h).unwrap_or_default(),
            None => parts.authority.map(text).unwrap_or_default(),
        };
        let view = RequestView {
            host,
            path,
            header: |name: &str| self.req.get(buf, name),
        };
        let metrics = &self.proxy.shared.metrics;
        match decide(&self.proxy.shared.live.load(), &view) {
            Decision::Forward(target) => Ok(target),
            Decision::NoRoute => {
                metrics.unmatched.inc();
                Err(Reply::new(
                    404,
                    format!("no function matches host {host} and path {path}\n"),
                ))
            }
            Decision::UnknownPin { function, pin } => {
                metrics.refused.inc();
                Err(Reply::new(
                    400,
                    format!("{PIN_HEADER}: {pin} is not a version or tag of function {function}\n"),
                ))
            }
        }
    }

    /// After answering a request here: drops it from the buffer when its body is all in it
    /// (the connection can go on), else the connection must close.
    fn skip_request(&mut self, meta: &Meta) -> Next {
        let head_len = self.req.len;
        let mut left = Left::of(meta.body);
        match left.take(&self.inb.bytes()[head_len..]) {
            Ok(n) if left.done() && meta.keep_alive => {
                self.inb.consume(head_len + n);
                Next::KeepAlive
            }
            _ => Next::Close,
        }
    }

    /// Forwards the response whose head is in `self.upb`, then its body.
    async fn respond(&mut self, down: &mut Stream, mut up: TcpStream, x: Exchange<'_>) -> Next {
        let served_by = x.target.served_by();
        let status = self.resp.status;
        let meta = match self.resp.meta {
            Ok(meta) => meta,
            Err(bad) => {
                let body = format!("{served_by} answered badly: {bad}\n");
                return x.failed(body).send(down, &mut self.out, Next::Close).await;
            }
        };
        if status == 101 {
            if !x.request.upgrade {
                let body = format!("{served_by} switched protocols unasked\n");
                return x.failed(body).send(down, &mut self.out, Next::Close).await;
            }
            return self.tunnel(down, up, &x).await;
        }
        let body = if x.head_request || status == 204 || status == 304 {
            Body::Length(0)
        } else {
            meta.body
        };
        let framed = body != Body::UntilClose;
        let keep_down = x.request.keep_alive && x.body_sent && framed && !self.stopping();
        let keep_up = meta.keep_alive && x.body_sent && framed;

        let rbuf = self.upb.bytes();
        self.out.clear();
        write_response_head(
            &mut self.out,
            rbuf,
            &self.resp,
            served_by,
            keep_down,
            self.req.minor,
        );
        let head_len = self.resp.len;
        let mut left = Left::of(body);
        let Ok(early) = left.take(&rbuf[head_len..]) else {
            let body = format!("{served_by} sent a malformed chunked body\n");
            return x.failed(body).send(down, &mut self.out, Next::Close).await;
        };
        let body_bytes = &rbuf[head_len..head_len + early];
        let mut complete = if early <= INLINE_BODY {
            self.out.extend_from_slice(body_bytes);
            down.write_all(&self.out).await.is_ok()
        } else {
            down.write_all(&self.out).await.is_ok() && down.write_all(body_bytes).await.is_ok()
        };
        self.upb.consume(head_len + early);
        if complete && !left.done() {
            complete = copy_body(&mut up, &mut self.upb, down, &mut left)
                .await
                .is_ok();
        }
        complete = complete && down.flush().await.is_ok();
        let ended = left.done() || (body == Body::UntilClose && complete);
        count(x.target, x.started, status >= 500 || !complete || !ended);
        if complete && ended && keep_up && self.upb.is_empty() {
            self.proxy.upstreams.put(x.addr, up, x.started);
        }
        let leftover = self.upb.bytes().len();
        self.upb.consume(leftover);
        if complete && ended && keep_down {
            Next::KeepAlive
        } else {
            Next::Close
        }
    }

    /// After a `101`: the response head, then bytes both ways until either side closes.
    async fn tunnel(&mut self, down: &mut Stream, mut up: TcpStream, x: &Exchange<'_>) -> Next {
        let rbuf = self.upb.bytes();
        self.out.clear();
        write_response_head(
            &mut self.out,
            rbuf,
            &self.resp,
            x.target.served_by(),
            true,
            self.req.minor,
        );
        self.out.extend_from_slice(&rbuf[self.resp.len..]);
        let upstream_early = rbuf.len();
        self.upb.consume(upstream_early);
        count(x.target, x.started, false);
        if down.write_all(&self.out).await.is_err() || down.flush().await.is_err() {
            return Next::Close;
        }
        // Whatever the client sent after its request head already speaks the new protocol.
        if up.write_all(self.inb.bytes()).await.is_err() {
            return Next::Close;
        }
        let client_early = self.inb.bytes().len();
        self.inb.consume(client_early);
        let _ = tokio::io::copy_bidirectional(down, &mut up).await;
        Next::Close
    }
}

/// What [`Conn::respond`] needs to know about the request it answers.
struct Exchange<'t> {
    addr: SocketAddr,
    target: &'t Target,
    request: Meta,
    head_request: bool,
    body_sent: bool,
    started: Instant,
}

impl Exchange<'_> {
    /// The 502 for a response that cannot be forwarded.
    fn failed(&self, body: String) -> Reply {
        Reply::failed(self.target, self.started, self.head_request, 502, body)
    }
}

/// A response the router writes itself.
struct Reply {
    status: u16,
    body: String,
    served_by: Option<String>,
    head_request: bool,
}

impl Reply {
    fn new(status: u16, body: String) -> Reply {
        Reply {
            status,
            body,
            served_by: None,
            head_request: false,
        }
    }

    /// The answer to a request its backend failed: counted as that backend's error, and named
    /// in `x-switchyard-served-by`.
    fn failed(
        target: &Target,
        started: Instant,
        head_request: bool,
        status: u16,
        body: String,
    ) -> Reply {
        count(target, started, true);
        Reply {
            status,
            body,
            served_by: Some(target.served_by().to_string()),
            head_request,
        }
    }

    /// Writes it; returns `next`, or [`Next::Close`] when the client is gone.
    async fn send(&self, down: &mut Stream, out: &mut Vec<u8>, next: Next) -> Next {
        use std::io::Write;
        out.clear();
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n",
            self.status,
            reason(self.status),
            self.body.len()
        );
        if let Some(served_by) = &self.served_by {
            push_header(out, SERVED_BY_HEADER.as_bytes(), served_by.as_bytes());
        }
        if next == Next::Close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !self.head_request {
            out.extend_from_slice(self.body.as_bytes());
        }
        if down.write_all(out).await.is_err() || down.flush().await.is_err() {
            return Next::Close;
        }
        next
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        404 => "Not Found",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// Counts one finished request against the backend that served (or failed) it.
fn count(target: &Target, started: Instant, failed: bool) {
    if let Some(m) = target.extras.backends.get(target.backend) {
        m.requests.inc();
        m.latency.observe(started.elapsed().as_secs_f64());
        if failed {
            m.errors.inc();
        }
    }
}

/// A connection to the target's backend: pooled, else new. When it cannot be reached, the
/// error is counted and the request moves once to the version failover picks.
async fn connect(
    upstreams: &Upstreams,
    target: &mut Target,
    started: Instant,
) -> Result<(SocketAddr, TcpStream, bool), (u16, String)> {
    let mut failed_over = false;
    loop {
        let backend = &target.route.backends[target.backend];
        let upstream = &backend.upstream;
        if upstream.tls {
            return Err((
                502,
                format!(
                    "{} is served over https, which this router build does not speak to upstreams\n",
                    backend.served_by
                ),
            ));
        }
        let error = match upstreams.resolve(&upstream.host, upstream.port).await {
            Ok(addr) => match upstreams.take(addr, started) {
                Some(conn) => return Ok((addr, conn, true)),
                None => match Upstreams::connect(addr).await {
                    Ok(conn) => return Ok((addr, conn, false)),
                    Err(e) => e,
                },
            },
            Err(e) => e,
        };
        let unreachable = format!("cannot reach {}: {error}\n", backend.served_by);
        match target.failover() {
            Some(next) if !failed_over => {
                if let Some(m) = target.extras.backends.get(target.backend) {
                    m.errors.inc();
                }
                tracing::debug!("{} failing over", unreachable.trim_end());
                target.backend = next;
                failed_over = true;
            }
            _ => {
                let status = if matches!(error, ConnectError::Timeout) {
                    504
                } else {
                    502
                };
                return Err((status, unreachable));
            }
        }
    }
}

/// A request that may be sent again after a connection failed under it: an idempotent method,
/// or one the client marked with an idempotency key.
fn replayable(head: &Head, buf: &[u8]) -> bool {
    matches!(
        head.method.of(buf),
        b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE" | b"PUT" | b"DELETE"
    ) || head.get(buf, "idempotency-key").is_some()
}

/// Sends a whole request and reads the response head.
async fn send_whole(
    up: &mut TcpStream,
    out: &[u8],
    rest: &[u8],
    upb: &mut Buf,
    resp: &mut Head,
) -> Result<(), Failed> {
    if up.write_all(out).await.is_err() || up.write_all(rest).await.is_err() {
        return Err(Failed::Stale);
    }
    read_response_head(up, upb, resp).await
}

/// Sends a request whose body is still arriving, while watching for the response: an upstream
/// may answer (and stop reading) before the body ends. `left` tells what was not sent.
async fn stream_request(
    down: &mut Stream,
    inb: &mut Buf,
    up: &mut TcpStream,
    out: &[u8],
    left: &mut Left,
    upb: &mut Buf,
    resp: &mut Head,
) -> Result<(), Failed> {
    let (mut from_up, mut to_up) = up.split();
    let send = async {
        to_up.write_all(out).await.map_err(|_| CopyError::To)?;
        copy_body(down, inb, &mut to_up, left).await
    };
    let recv = read_response_head(&mut from_up, upb, resp);
    tokio::pin!(send, recv);
    let mut sending = true;
    loop {
        tokio::select! {
            head = &mut recv => return head,
            sent = &mut send, if sending => match sent {
                // Sent, or the upstream stopped reading: its answer (or its close) follows.
                Ok(()) | Err(CopyError::To) => sending = false,
                Err(CopyError::From) | Err(CopyError::Framing) => return Err(Failed::Client),
            },
        }
    }
}

/// Reads a final response head into `upb` (interim `1xx` heads other than `101` are dropped:
/// `100 Continue` is the router's to send).
async fn read_response_head<R: AsyncRead + Unpin + ?Sized>(
    up: &mut R,
    upb: &mut Buf,
    resp: &mut Head,
) -> Result<(), Failed> {
    let mut answered = false;
    loop {
        if !upb.is_empty() {
            match resp.parse_response(upb.bytes()) {
                Ok(true) if (100..200).contains(&resp.status) && resp.status != 101 => {
                    upb.consume(resp.len);
                    continue;
                }
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(bad) => return Err(Failed::Upstream(format!("invalid response: {bad}"))),
            }
        }
        match upb.fill(up).await {
            Ok(0) | Err(_) if !answered => return Err(Failed::Stale),
            Ok(0) => return Err(Failed::Upstream("closed mid-response".into())),
            Err(e) => return Err(Failed::Upstream(e.to_string())),
            Ok(_) => answered = true,
        }
    }
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The request head as the upstream gets it: the path rewritten for the backend, hop-by-hop
/// headers and `Expect` dropped (`100 Continue` is the router's to send), the pin header
/// dropped unless the function honours pins.
fn write_request_head(out: &mut Vec<u8>, buf: &[u8], head: &Head, meta: &Meta, target: &Target) {
    let route: &Route = &target.route;
    let base = &route.backends[target.backend].upstream.base_path;
    let parts = &head.parts;
    out.extend_from_slice(head.method.of(buf));
    out.push(b' ');
    let path = parts.path.of(buf);
    let rewrite = parts.authority.is_some() || route.strip_prefix || !base.is_empty();
    if rewrite && (path.is_empty() || path.starts_with(b"/")) {
        let path = std::str::from_utf8(path).unwrap_or_default();
        out.extend_from_slice(base.as_bytes());
        out.extend_from_slice(
            route
                .upstream_path(if path.is_empty() { "/" } else { path })
                .as_bytes(),
        );
        if let Some(q) = parts.query {
            out.push(b'?');
            out.extend_from_slice(q.of(buf));
        }
    } else {
        out.extend_from_slice(head.target.of(buf));
    }
    out.extend_from_slice(if head.minor == 0 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    for field in &head.fields {
        let name = field.name.of(buf);
        if field.hop
            || name.eq_ignore_ascii_case(b"expect")
            || (!route.pinning && name.eq_ignore_ascii_case(PIN_HEADER.as_bytes()))
        {
            continue;
        }
        field.write_to(buf, out);
    }
    if meta.upgrade {
        out.extend_from_slice(b"connection: upgrade\r\n");
        if let Some(protocol) = head.get(buf, "upgrade") {
            push_header(out, b"upgrade", protocol);
        }
    } else if head.minor == 0 {
        // HTTP/1.0 to the upstream too (so no chunked answer), kept alive if it agrees.
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The response head as the client gets it: hop-by-hop headers dropped, the router's
/// `x-switchyard-served-by`, and the client connection's own `Connection` header.
fn write_response_head(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &Head,
    served_by: &str,
    keep_alive: bool,
    client_minor: u8,
) {
    let status = head.status;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&[
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
        b' ',
    ]);
    out.extend_from_slice(head.reason.of(buf));
    out.extend_from_slice(b"\r\n");
    for field in &head.fields {
        if field.hop
            || field
                .name
                .of(buf)
                .eq_ignore_ascii_case(SERVED_BY_HEADER.as_bytes())
        {
            continue;
        }
        field.write_to(buf, out);
    }
    push_header(out, SERVED_BY_HEADER.as_bytes(), served_by.as_bytes());
    if status == 101 {
        out.extend_from_slice(b"connection: upgrade\r\n");
        if let Some(protocol) = head.get(buf, "upgrade") {
            push_header(out, b"upgrade", protocol);
        }
    } else if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if client_minor == 0 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}
