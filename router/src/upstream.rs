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

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use switchyard_core::cowmap::FxHashMap;
use tokio::net::TcpStream;

use crate::decide::Target;

/// How long a resolved upstream host name is reused.
const DNS_TTL: Duration = Duration::from_secs(10);
/// Idle connections older than this are closed instead of reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(55);
/// Most idle connections kept per upstream address.
const MAX_IDLE: usize = 1024;
/// Time allowed for a TCP connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Why no connection could be had.
#[derive(Debug)]
pub enum ConnectError {
    /// The host name does not resolve.
    Resolve(String),
    /// The connect did not finish in [`CONNECT_TIMEOUT`].
    Timeout,
    /// The connect failed (refused, unreachable, …).
    Io(io::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Resolve(host) => write!(f, "cannot resolve {host}"),
            ConnectError::Timeout => write!(f, "connect timed out after {CONNECT_TIMEOUT:?}"),
            ConnectError::Io(e) => write!(f, "cannot connect: {e}"),
        }
    }
}

struct Idle {
    conn: TcpStream,
    since: Instant,
}

/// The pool's keys are socket addresses from our own routing table, hashed twice per request:
/// SipHash's flood resistance buys nothing there.
type AddrMap<V> = FxHashMap<SocketAddr, V>;

/// Resolution cache and keep-alive pool, shared by every connection of one router.
#[derive(Default)]
pub struct Upstreams {
    idle: Mutex<AddrMap<Vec<Idle>>>,
    dns: Mutex<HashMap<(String, u16), (SocketAddr, Instant)>>,
}

impl Upstreams {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// An upstream's socket address: IPs as they are, names through the resolver.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, ConnectError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, port));
        }
        let key = (host.to_string(), port);
        if let Ok(cache) = self.dns.lock() {
            if let Some((addr, at)) = cache.get(&key) {
                if at.elapsed() < DNS_TTL {
                    return Ok(*addr);
                }
            }
        }
        let addr = tokio::net::lookup_host((host, port))
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| ConnectError::Resolve(host.to_string()))?;
        if let Ok(mut cache) = self.dns.lock() {
            cache.insert(key, (addr, Instant::now()));
        }
        Ok(addr)
    }

    /// An idle connection to `addr`, if the pool has a usable one (`now`: the caller's clock
    /// reading, so a request reads the clock once).
    pub fn take(&self, addr: SocketAddr, now: Instant) -> Option<TcpStream> {
        loop {
            let idle = self.idle.lock().ok()?.get_mut(&addr)?.pop()?;
            let age = now.saturating_duration_since(idle.since);
            if age > IDLE_TIMEOUT {
                continue;
            }
            if !clean(&idle.conn) {
                continue;
            }
            return Some(idle.conn);
        }
    }

    /// Returns a connection that finished its exchange cleanly; `since`: when it is counted
    /// idle from (a request's start is close enough, and errs on the side of checking).
    pub fn put(&self, addr: SocketAddr, conn: TcpStream, since: Instant) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        let stack = idle.entry(addr).or_default();
        if stack.len() >= MAX_IDLE
            || stack
                .first()
                .is_some_and(|i| since.saturating_duration_since(i.since) > IDLE_TIMEOUT)
        {
            stack.remove(0);
        }
        stack.push(Idle { conn, since });
    }

    /// A new connection to `addr`.
    pub async fn connect(addr: SocketAddr) -> Result<TcpStream, ConnectError> {
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| ConnectError::Timeout)?
            .map_err(ConnectError::Io)?;
        conn.set_nodelay(true).map_err(ConnectError::Io)?;
        Ok(conn)
    }

    /// Idle connections held, for all addresses.
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle
            .lock()
            .map(|m| m.values().map(Vec::len).sum())
            .unwrap_or(0)
    }
}

/// A connection to the target's backend: pooled, else new. When it cannot be reached, the
/// error is counted and the request moves once to the version failover picks.
pub async fn connect_with_failover(
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
        match target.failover() {
            Some(next) if !failed_over => {
                if let Some(m) = target.extras.backends.get(target.backend) {
                    m.errors.inc();
                }
                tracing::warn!("cannot reach {}: {error}; failing over", backend.served_by);
                target.backend = next;
                failed_over = true;
            }
            _ => {
                // The client learns what failed, in one generic line; the upstream's address
                // and the OS error are the operator's (the log), not the client's.
                tracing::warn!("cannot reach {}: {error}", backend.served_by);
                let (status, what) = if matches!(error, ConnectError::Timeout) {
                    (504, "did not accept a connection in time")
                } else {
                    (502, "cannot be reached")
                };
                return Err((status, format!("{} {what}\n", backend.served_by)));
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
        let pool = Upstreams::new();
        let conn = Upstreams::connect(addr).await.expect("connect");
        let (_server_side, _) = listener.accept().await.expect("accept");
        pool.put(addr, conn, Instant::now());
        assert!(
            pool.take(addr, Instant::now()).is_some(),
            "a clean idle connection is reused"
        );

        // Loopback delivers a write (or a close) before the writer's call returns.
        let conn = Upstreams::connect(addr).await.expect("connect");
        let (mut chatty, _) = listener.accept().await.expect("accept");
        chatty
            .write_all(b"HTTP/1.1 200 OK\r\n")
            .await
            .expect("write");
        pool.put(addr, conn, Instant::now());
        assert!(pool.take(addr, Instant::now()).is_none(), "unread bytes");

        let conn = Upstreams::connect(addr).await.expect("connect");
        let (closed, _) = listener.accept().await.expect("accept");
        drop(closed);
        pool.put(addr, conn, Instant::now());
        assert!(pool.take(addr, Instant::now()).is_none(), "closed");
        assert_eq!(pool.idle_count(), 0);
    }
}
