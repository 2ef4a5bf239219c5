//! The HTTP plumbing: a purpose-built HTTP/1 proxy loop, served by pingora-core as a
//! [`ServerApp`] (Pingora owns the listeners, the worker runtimes, graceful shutdown and
//! upgrade; this module owns each connection from its first byte).
//!
//! Everything about *where* a request goes lives in [`crate::decide`] and `switchyard-core`;
//! the wire format (heads parsed and written, framing) in [`crate::http1`]; pooled upstream
//! connections and failover in [`crate::upstream`]. This module is the connection's life:
//!
//! | file | job |
//! |---|---|
//! | `proxy.rs` | the [`ServerApp`], graceful drain, the per-connection loop (read a head, serve it, again) |
//! | `proxy/exchange.rs` | one request: route → connect → send → respond → tunnel, and its metrics |
//! | `proxy/body.rs` | read buffers, what is left of a body, copying and streaming bodies |
//! | `proxy/reply.rs` | every reply the router writes itself (400, 404, 408, 431, 502, 503, 504) |
//! | `proxy/deadline.rs` | the timeout of every step that waits, on one timer per connection |
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
//!
//! What bounds it: every step that waits on the other side has a timeout (an idle time: it
//! restarts on progress), the router's or the function's own (`spec.timeouts`); past
//! `--max-connections` a new client gets a 503 and is closed.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::config::Timeouts;
use crate::http1::{Head, Malformed};
use crate::live::Shared;
use crate::upstream::Upstreams;

mod body;
mod deadline;
mod exchange;
mod mirror;
mod reply;

use body::Buf;
use deadline::{Alarm, Due, Step};
use reply::Reply;

/// The router's proxy app.
pub struct Proxy {
    shared: Arc<Shared>,
    upstreams: Upstreams,
    drain: Arc<Drain>,
    trust: Trust,
    bounds: Bounds,
}

/// How long each step may wait, and how many connections the proxy holds.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// The router's timeouts (a function's own replace them for its requests).
    pub timeouts: Timeouts,
    /// Client connections held at once; past it new ones get a 503 and are closed.
    pub max_connections: usize,
    /// Connections per upstream address, idle or in use.
    pub max_upstream_connections: usize,
}

/// Which client-sent forwarding headers are believed, and which the router writes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Trust {
    /// Proxies in front of the router whose `X-Forwarded-*` values are kept (0: none).
    pub hops: usize,
    /// Also write an RFC 7239 `Forwarded` header.
    pub forwarded_header: bool,
}

impl Proxy {
    /// A proxy routing on `shared`'s live table; `drain` ends its connections gracefully;
    /// `trust` decides what functions are told about the client; `bounds` how long and how
    /// many.
    pub fn new(shared: Arc<Shared>, drain: Arc<Drain>, trust: Trust, bounds: Bounds) -> Self {
        Proxy {
            upstreams: Upstreams::new(bounds.max_upstream_connections, &shared.metrics),
            shared,
            drain,
            trust,
            bounds,
        }
    }
}

/// The client's address as text, kept beside the connection (written once, no allocation).
struct Peer {
    text: [u8; 64],
    len: usize,
}

impl Peer {
    fn of(stream: &Stream) -> Peer {
        use std::io::Write;
        let mut peer = Peer {
            text: [0; 64],
            len: 0,
        };
        let ip = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let mut cursor = std::io::Cursor::new(&mut peer.text[..]);
        let written = match ip {
            Some(ip) => write!(cursor, "{ip}"),
            None => write!(cursor, "unknown"),
        };
        peer.len = if written.is_ok() {
            cursor.position() as usize
        } else {
            0
        };
        peer
    }

    fn bytes(&self) -> &[u8] {
        &self.text[..self.len]
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

/// Counts a connection as open while it lives (for the drain, and in the metrics).
struct Open<'d> {
    count: &'d AtomicUsize,
    gauge: &'d prometheus::IntGauge,
    /// Connections open with this one.
    now: usize,
}

impl<'d> Open<'d> {
    fn new(count: &'d AtomicUsize, gauge: &'d prometheus::IntGauge) -> Self {
        let now = count.fetch_add(1, Ordering::AcqRel) + 1;
        gauge.inc();
        Open { count, gauge, now }
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
        self.gauge.dec();
    }
}

/// The answer to a connection past `--max-connections`.
const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 42\r\nconnection: close\r\nretry-after: 1\r\n\r\nthe router is at its limit of connections\n";

#[async_trait]
impl ServerApp for Proxy {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let metrics = &self.shared.metrics;
        let open = Open::new(&self.drain.open, &metrics.client_connections);
        let timeouts = self.bounds.timeouts;
        if open.now > self.bounds.max_connections {
            // Refused before anything is read or allocated; a short linger so the answer is
            // not destroyed by a reset. Pingora's other services (the admin port) are apart.
            metrics.refused_connections.inc();
            let write = stream.write_all(TOO_MANY);
            if matches!(
                tokio::time::timeout(timeouts.client_write, write).await,
                Ok(Ok(()))
            ) {
                let mut buf = Buf::new();
                linger(&mut stream, &mut buf, Duration::from_millis(250)).await;
            }
            return None;
        }
        let due = Due::new(Step::ClientIdle, timeouts.client_idle);
        let mut conn = Conn {
            proxy: self,
            inb: Buf::new(),
            upb: Buf::new(),
            out: Vec::with_capacity(1024),
            req: Head::default(),
            resp: Head::default(),
            shutdown: shutdown.clone(),
            draining: self.drain.stop.subscribe(),
            peer: Peer::of(&stream),
            alarm: Alarm::new(timeouts.client_idle),
            due,
            timeouts,
        };
        // One timer (the alarm) and one shutdown wait for the connection's whole life: arming
        // a timer and a watch per request cost more than the rest of the request's bookkeeping.
        let (mut pingora_stop, mut drain_stop) = (shutdown.clone(), self.drain.stop.subscribe());
        let stop = async move {
            tokio::select! {
                _ = pingora_stop.wait_for(|stop| *stop) => {}
                _ = drain_stop.wait_for(|stop| *stop) => {}
            }
        };
        tokio::pin!(stop);
        while conn.next_request(&mut stream, stop.as_mut()).await {
            if conn.exchange(&mut stream).await == Next::Close {
                break;
            }
        }
        linger(&mut stream, &mut conn.inb, Duration::from_secs(1)).await;
        None
    }
}

/// Closes our side, then reads what the client still sends for a moment: closing a socket
/// with unread input resets it, and the reset can destroy the response just written. All of
/// it within `within`: the close flushes what is still buffered, which a client that does not
/// read would otherwise hold forever.
async fn linger(stream: &mut Stream, buf: &mut Buf, within: Duration) {
    let linger = async {
        if stream.shutdown().await.is_err() {
            return;
        }
        let mut budget = 256 * 1024;
        while budget > 0 {
            buf.consume(buf.bytes().len());
            match buf.fill(stream).await {
                Ok(n) if n > 0 => budget -= n.min(budget),
                _ => return,
            }
        }
    };
    let _ = tokio::time::timeout(within, linger).await;
}

/// After an exchange: serve the next request on the connection, or close it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
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
    /// The client's address, for `X-Forwarded-For`.
    peer: Peer,
    /// The connection's one timer, and the deadline of the step under way.
    alarm: Alarm,
    due: Due,
    /// The timeouts of the request under way (the router's, or its function's own).
    timeouts: Timeouts,
}

impl Conn<'_> {
    /// Waits for a complete request head; false when the connection should just close (the
    /// client left or idled out, or the server is shutting down between requests).
    async fn next_request(
        &mut self,
        down: &mut Stream,
        mut stop: Pin<&mut impl Future<Output = ()>>,
    ) -> bool {
        // The router's timeouts until the request is routed.
        self.timeouts = self.proxy.bounds.timeouts;
        self.due.set(Step::ClientIdle, self.timeouts.client_idle);
        let bad = {
            // One deadline for the whole head, however slowly it trickles in.
            let rung = self.alarm.rung(&self.due);
            tokio::pin!(rung);
            loop {
                if !self.inb.is_empty() {
                    match self.req.parse_request(self.inb.bytes()) {
                        Ok(true) => return true,
                        Ok(false) => {}
                        // RFC 9112 §2.3: a higher minor version is served as the highest we
                        // speak. httparse refuses it, so the digit is rewritten in place (the
                        // upstream gets HTTP/1.1 anyway) and the head parsed again.
                        Err(Malformed::Syntax)
                            if crate::http1::newer_minor_as_one(self.inb.bytes_mut()) =>
                        {
                            continue
                        }
                        Err(bad) => break bad,
                    }
                }
                // Shutdown ends a connection only between requests, never in a half-read head.
                let between = self.inb.is_empty();
                let read = tokio::select! {
                    biased;
                    read = self.inb.fill(down) => read,
                    _ = &mut rung => return false,
                    () = &mut stop, if between => return false,
                };
                if !matches!(read, Ok(n) if n > 0) {
                    return false;
                }
            }
        };
        let status = if bad == Malformed::TooLarge { 431 } else { 400 };
        let reply = Reply::new(status, format!("{bad}\n"));
        self.send(down, &reply, Next::Close).await;
        false
    }

    /// Writes a reply of the router's own, within the client-write timeout.
    async fn send(&mut self, down: &mut Stream, reply: &Reply, next: Next) -> Next {
        let within = self.timeouts.client_write;
        self.due.set(Step::ClientWrite, within);
        let send = reply.send(down, &mut self.out, next);
        deadline::guard(&mut self.alarm, &self.due, send)
            .await
            .unwrap_or(Next::Close)
    }

    /// The server is stopping: no new request on this connection. Both watches only ever
    /// change once, to true (or close), so a change is the stop; asking for one is an atomic
    /// load, where reading the value takes the channel's lock. A stop already under way when the
    /// connection began is caught by the loop's stop future before its next request instead.
    fn stopping(&self) -> bool {
        self.shutdown.has_changed().unwrap_or(true) || self.draining.has_changed().unwrap_or(true)
    }
}
