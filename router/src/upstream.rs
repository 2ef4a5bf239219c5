//! Upstream connections: name resolution (cached briefly), the keep-alive pool, and connecting
//! a request's target with one failover to another version.
//!
//! The pool is a stack of idle connections per socket address: the most recently used one is
//! reused first, so a burst uses few connections and the rest age out. Every connection is
//! checked before reuse (one non-blocking read): one with any unread byte on it (stray bytes
//! after a response, a desynchronised upstream) or closed by the upstream is dropped, never
//! handed to the next request, which would read them as its own response. A close that races
//! the check is caught by the proxy, which retries a request it can replay once on a new
//! connection.
//!
//! Each address holds at most `--max-upstream-connections` connections, idle or in use (an
//! [`UpConn`] carries its place in the count and gives it back when it closes): a request that
//! finds them all busy waits for one to come back, up to its connect timeout, then gets a 503
//! (not a failover: a full version is not a down one).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntGauge};
use switchyard_core::cowmap::FxHashMap;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::config::Timeouts;
use crate::decide::Target;
use crate::metrics::Metrics;

/// How long a resolved upstream host name is reused.
const DNS_TTL: Duration = Duration::from_secs(10);
/// Idle connections older than this are closed instead of reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(55);
/// Most idle connections kept per upstream address.
const MAX_IDLE: usize = 1024;

/// Why no connection could be had.
#[derive(Debug)]
pub enum ConnectError {
    /// The host name does not resolve.
    Resolve(String),
    /// The connect did not finish in the connect timeout.
    Timeout(Duration),
    /// The connect failed (refused, unreachable, …).
    Io(io::Error),
    /// The address held its most connections for the whole connect timeout.
    Saturated(usize),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Resolve(host) => write!(f, "cannot resolve {host}"),
            ConnectError::Timeout(after) => write!(f, "connect timed out after {after:?}"),
            ConnectError::Io(e) => write!(f, "cannot connect: {e}"),
            ConnectError::Saturated(max) => {
                write!(
                    f,
                    "all {max} connections busy for the whole connect timeout"
                )
            }
        }
    }
}

/// One upstream address's connection count, shared by its connections' permits.
struct Held {
    open: AtomicUsize,
    /// Requests waiting for a connection to free up.
    waiting: AtomicUsize,
    freed: Notify,
    gauge: IntGauge,
    saturated: IntCounter,
}

impl Held {
    fn wake_one(&self) {
        if self.waiting.load(Ordering::Acquire) > 0 {
            self.freed.notify_one();
        }
    }
}

/// One connection's place in its address's count: given back when the connection closes.
struct Permit(Arc<Held>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.gauge.dec();
        self.0.wake_one();
    }
}

/// A connection to an upstream, counted against its address's limit while it lives.
pub struct UpConn {
    /// The socket.
    pub io: TcpStream,
    permit: Permit,
}

impl std::ops::Deref for UpConn {
    type Target = TcpStream;
    fn deref(&self) -> &TcpStream {
        &self.io
    }
}

impl std::ops::DerefMut for UpConn {
    fn deref_mut(&mut self) -> &mut TcpStream {
        &mut self.io
    }
}

struct Idle {
    conn: UpConn,
    since: Instant,
}

/// One upstream address: its idle connections and its count.
struct Slot {
    idle: Vec<Idle>,
    held: Arc<Held>,
}

/// What the pool has for a request.
enum Got {
    /// An idle connection.
    Pooled(UpConn),
    /// Room for a new one.
    Room(Permit),
    /// None: every allowed connection is in use (the caller is counted as waiting).
    Full(Arc<Held>),
}

/// A name's address for one port, and when it was resolved.
type Resolved = (u16, SocketAddr, Instant);

/// The pool's keys are socket addresses from our own routing table, hashed twice per request:
/// SipHash's flood resistance buys nothing there.
type AddrMap<V> = FxHashMap<SocketAddr, V>;

/// Resolution cache, keep-alive pool and per-address connection counts, shared by every
/// connection of one router.
pub struct Upstreams {
    idle: Mutex<AddrMap<Slot>>,
    /// Resolved names: by host (looked up as `&str`, no allocation), then by port.
    dns: Mutex<HashMap<String, Vec<Resolved>>>,
    /// Most connections (in use or idle) per upstream address.
    max: usize,
    gauges: prometheus::IntGaugeVec,
    saturated: prometheus::IntCounterVec,
}

impl Upstreams {
    /// An empty pool allowing `max` connections per upstream address, counted in `metrics`.
    pub fn new(max: usize, metrics: &Metrics) -> Self {
        Upstreams {
            idle: Mutex::default(),
            dns: Mutex::default(),
            max: max.max(1),
            gauges: metrics.upstream_connections.clone(),
            saturated: metrics.upstream_saturated.clone(),
        }
    }

    /// An upstream's socket address: IPs as they are, names through the resolver (a name
    /// resolved less than 10 s before `now` is not asked again; a cached name costs no
    /// allocation).
    pub async fn resolve(
        &self,
        host: &str,
        port: u16,
        now: Instant,
    ) -> Result<SocketAddr, ConnectError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, port));
        }
        if let Ok(cache) = self.dns.lock() {
            let fresh = cache.get(host).and_then(|ports| {
                ports
                    .iter()
                    .find(|(p, _, at)| *p == port && now.saturating_duration_since(*at) < DNS_TTL)
            });
            if let Some((_, addr, _)) = fresh {
                return Ok(*addr);
            }
        }
        let addr = tokio::net::lookup_host((host, port))
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| ConnectError::Resolve(host.to_string()))?;
        if let Ok(mut cache) = self.dns.lock() {
            let ports = cache.entry(host.to_string()).or_default();
            ports.retain(|(p, _, _)| *p != port);
            ports.push((port, addr, Instant::now()));
        }
        Ok(addr)
    }

    /// An idle connection to `addr`, else room for a new one, else the count to wait on
    /// (`now`: the caller's clock reading, so a request reads the clock once).
    fn take(&self, addr: SocketAddr, now: Instant) -> Option<Got> {
        let mut pool = self.idle.lock().ok()?;
        let slot = pool.entry(addr).or_insert_with(|| {
            let label = addr.to_string();
            Slot {
                idle: Vec::new(),
                held: Arc::new(Held {
                    open: AtomicUsize::new(0),
                    waiting: AtomicUsize::new(0),
                    freed: Notify::new(),
                    gauge: self.gauges.with_label_values(&[&label]),
                    saturated: self.saturated.with_label_values(&[&label]),
                }),
            }
        });
        // Dropping a stale connection gives its permit back (under this lock: the permit's
        // count is atomic and takes no lock).
        while let Some(idle) = slot.idle.pop() {
            let age = now.saturating_duration_since(idle.since);
            if age <= IDLE_TIMEOUT && clean(&idle.conn.io) {
                return Some(Got::Pooled(idle.conn));
            }
        }
        let held = &slot.held;
        if held.open.load(Ordering::Acquire) < self.max {
            held.open.fetch_add(1, Ordering::AcqRel);
            held.gauge.inc();
            return Some(Got::Room(Permit(Arc::clone(held))));
        }
        held.waiting.fetch_add(1, Ordering::AcqRel);
        Some(Got::Full(Arc::clone(held)))
    }

    /// Returns a connection that finished its exchange cleanly; `since`: when it is counted
    /// idle from (a request's start is close enough, and errs on the side of checking).
    pub fn put(&self, addr: SocketAddr, conn: UpConn, since: Instant) {
        let Ok(mut pool) = self.idle.lock() else {
            return;
        };
        let Some(slot) = pool.get_mut(&addr) else {
            return;
        };
        let stack = &mut slot.idle;
        if stack.len() >= MAX_IDLE
            || stack
                .first()
                .is_some_and(|i| since.saturating_duration_since(i.since) > IDLE_TIMEOUT)
        {
            stack.remove(0);
        }
        stack.push(Idle { conn, since });
        slot.held.wake_one();
    }

    /// A connection to `addr`: pooled, else new within `connect`; a request that finds every
    /// allowed connection in use waits for one to come back, up to `connect` as well.
    pub async fn get(
        &self,
        addr: SocketAddr,
        now: Instant,
        connect: Duration,
    ) -> Result<(UpConn, bool), ConnectError> {
        let mut until = None;
        loop {
            let got = self
                .take(addr, now)
                .ok_or_else(|| ConnectError::Io(io::Error::other("pool lock poisoned")))?;
            match got {
                Got::Pooled(conn) => return Ok((conn, true)),
                Got::Room(permit) => {
                    let io = Upstreams::connect(addr, connect).await?;
                    return Ok((UpConn { io, permit }, false));
                }
                Got::Full(held) => {
                    // Woken but beaten to the connection by another request: wait again, for
                    // what is left of the one wait.
                    let until = *until.get_or_insert_with(|| tokio::time::Instant::now() + connect);
                    let freed = tokio::time::timeout_at(until, held.freed.notified()).await;
                    held.waiting.fetch_sub(1, Ordering::AcqRel);
                    if freed.is_err() {
                        held.saturated.inc();
                        return Err(ConnectError::Saturated(self.max));
                    }
                }
            }
        }
    }

    /// A fresh connection to `addr` in place of `old` (which closes), within `connect`.
    ///
    /// The address comes from the caller: `old` is a connection the peer closed, and asking a
    /// closed socket for its peer fails (ENOTCONN) — which turned every replay of a request
    /// over a stale pooled connection into a 502.
    pub async fn reconnect(
        old: UpConn,
        addr: SocketAddr,
        connect: Duration,
    ) -> Result<UpConn, ConnectError> {
        let UpConn { io, permit } = old;
        drop(io);
        let io = Upstreams::connect(addr, connect).await?;
        Ok(UpConn { io, permit })
    }

    /// A new TCP connection to `addr`, within `within`.
    async fn connect(addr: SocketAddr, within: Duration) -> Result<TcpStream, ConnectError> {
        let conn = tokio::time::timeout(within, TcpStream::connect(addr))
            .await
            .map_err(|_| ConnectError::Timeout(within))?
            .map_err(ConnectError::Io)?;
        conn.set_nodelay(true).map_err(ConnectError::Io)?;
        Ok(conn)
    }

    /// Idle connections held, for all addresses.
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle
            .lock()
            .map(|m| m.values().map(|s| s.idle.len()).sum())
            .unwrap_or(0)
    }
}

/// Writes a warning about `target`'s backend through its [`Gate`](crate::live::Gate): at most
/// one line a second per backend, saying how many were held back since the last.
pub fn warn(target: &Target, now: Instant, what: std::fmt::Arguments<'_>) {
    let Some(gate) = target.extras.safety.warn.get(target.backend) else {
        return;
    };
    if let Some(held) = gate.pass(now) {
        let function = target.route.key();
        let version = &target.route.backends[target.backend].version;
        if held > 0 {
            tracing::warn!(%function, %version, "{what} ({held} more like it in the last second not logged)");
        } else {
            tracing::warn!(%function, %version, "{what}");
        }
    }
}

/// A connection to the target's backend: pooled, else new. When it cannot be reached, the
/// request is counted as a failed one of that version and as a failover, and moves once to
/// the version failover picks.
pub async fn connect_with_failover(
    upstreams: &Upstreams,
    target: &mut Target,
    started: Instant,
    timeouts: &Timeouts,
) -> Result<(SocketAddr, UpConn, bool), (u16, String)> {
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
        let error = match upstreams
            .resolve(&upstream.host, upstream.port, started)
            .await
        {
            Ok(addr) => match upstreams.get(addr, started, timeouts.connect).await {
                Ok((conn, reused)) => return Ok((addr, conn, reused)),
                Err(e) => e,
            },
            Err(e) => e,
        };
        if let ConnectError::Saturated(_) = error {
            // Full is not down: moving its load to another version would skew the split.
            warn(target, Instant::now(), format_args!("{error}"));
            let served_by = &target.route.backends[target.backend].served_by;
            return Err((503, format!("{served_by} is at its connection limit\n")));
        }
        match target.failover() {
            Some(next) if !failed_over => {
                if let Some(m) = target.extras.backends.get(target.backend) {
                    m.failed_over(started.elapsed());
                }
                warn(
                    target,
                    Instant::now(),
                    format_args!("cannot reach it: {error}; failing over"),
                );
                target.backend = next;
                failed_over = true;
            }
            _ => {
                // The client learns what failed, in one generic line; the upstream's address
                // and the OS error are the operator's (the log), not the client's.
                warn(
                    target,
                    Instant::now(),
                    format_args!("cannot reach it: {error}"),
                );
                let (status, what) = if matches!(error, ConnectError::Timeout(_)) {
                    (504, "did not accept a connection in time")
                } else {
                    (502, "cannot be reached")
                };
                let served_by = &target.route.backends[target.backend].served_by;
                return Err((status, format!("{served_by} {what}\n")));
            }
        }
    }
}

/// An idle connection is still usable: nothing to read and no end of stream. Asks the socket
/// itself (one non-blocking `recv` with `MSG_PEEK`), not tokio's cached readiness, which lags
/// behind bytes the reactor has not polled yet.
fn clean(conn: &TcpStream) -> bool {
    let mut byte = [std::mem::MaybeUninit::uninit(); 1];
    matches!(socket2::SockRef::from(conn).peek(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_connection_with_unread_bytes_or_closed_by_the_upstream_is_not_reused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let metrics = Metrics::new();
        let pool = Upstreams::new(16, &metrics);
        let connect = Duration::from_secs(5);
        let new_conn = || async {
            let (conn, reused) = pool.get(addr, Instant::now(), connect).await.expect("get");
            assert!(!reused);
            conn
        };
        // `take`, not `get`: a refused idle connection must not be replaced by a new one here.
        let pooled =
            |pool: &Upstreams| matches!(pool.take(addr, Instant::now()), Some(Got::Pooled(_)));
        let conn = new_conn().await;
        let (_server_side, _) = listener.accept().await.expect("accept");
        pool.put(addr, conn, Instant::now());
        assert!(pooled(&pool), "a clean idle connection is reused");

        // Loopback delivers a write (or a close) before the writer's call returns.
        let conn = new_conn().await;
        let (mut chatty, _) = listener.accept().await.expect("accept");
        chatty
            .write_all(b"HTTP/1.1 200 OK\r\n")
            .await
            .expect("write");
        pool.put(addr, conn, Instant::now());
        assert!(!pooled(&pool), "unread bytes");

        let conn = new_conn().await;
        let (closed, _) = listener.accept().await.expect("accept");
        drop(closed);
        pool.put(addr, conn, Instant::now());
        assert!(!pooled(&pool), "closed");
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn an_address_at_its_limit_makes_a_request_wait_for_a_connection_to_come_back() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let metrics = Metrics::new();
        let pool = Arc::new(Upstreams::new(1, &metrics));
        let connect = Duration::from_secs(30);
        let (first, _) = pool.get(addr, Instant::now(), connect).await.expect("get");
        let _accepted = listener.accept().await.expect("accept");
        let gauge = metrics
            .upstream_connections
            .with_label_values(&[&addr.to_string()]);
        assert_eq!(gauge.get(), 1);

        // A second request waits; the first connection coming back is what it gets.
        let waiter = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { pool.get(addr, Instant::now(), connect).await })
        };
        while pool
            .idle
            .lock()
            .expect("lock")
            .get(&addr)
            .is_none_or(|s| s.held.waiting.load(Ordering::Acquire) == 0)
        {
            tokio::task::yield_now().await;
        }
        pool.put(addr, first, Instant::now());
        let (_second, reused) = waiter.await.expect("join").expect("a connection");
        assert!(reused, "the returned connection");
        assert_eq!(gauge.get(), 1, "never more than the limit");

        // With none coming back, a short wait ends in Saturated.
        let err = pool
            .get(addr, Instant::now(), Duration::from_millis(20))
            .await
            .err()
            .expect("saturated");
        assert!(matches!(err, ConnectError::Saturated(1)), "{err}");
        assert_eq!(
            metrics
                .upstream_saturated
                .with_label_values(&[&addr.to_string()])
                .get(),
            1
        );
    }
}
