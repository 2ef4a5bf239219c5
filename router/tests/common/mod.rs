//! What the proxy tests (`http1_proxy`, `http1_safety`) share: a router with a fixed table on
//! loopback, a raw client socket, and an HTTP/1 reader for both sides of the wire, so that
//! every byte is the test's to check. Each test file scripts its own upstream.

// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use switchyard_router::source::State;
use switchyard_router::{RouterConfig, RouterHandle, Source};

/// A loopback address for a router to listen on, free at the time of asking, from below the
/// kernel's ephemeral range (32768–60999 by default). Every upstream and client socket in these
/// tests binds port 0, which lands in that range: a port handed out here and bound by the
/// router a moment later cannot be taken meanwhile by another test's upstream (which then
/// answered the router's requests). Each port is handed out once per process; processes start
/// 1,000 ports apart.
pub fn free() -> SocketAddr {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 10) as u16 * 1000;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(
            n < 1000,
            "1,000 router ports handed out in one test process"
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], base + n));
        if TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
}

/// A router named `name` serving the fixed `state`, and its proxy address once it accepts
/// connections (waited for as long as a loaded machine needs, never given up on silently).
pub fn router(name: &str, state: State) -> (RouterHandle, SocketAddr) {
    let mut config = RouterConfig::new(name);
    config.listen = free();
    config.admin = free();
    config.grace_period = Duration::from_secs(1);
    let listen = config.listen;
    let handle = switchyard_router::start(config, Source::Fixed(state)).expect("router starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(listen).is_err() {
        assert!(
            Instant::now() < deadline,
            "the router did not listen within 60 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    (handle, listen)
}

/// A client connection to `addr`: the writing half and a buffered reading half. A read that
/// waits 10 s fails the test instead of hanging it.
pub fn client(addr: SocketAddr) -> (TcpStream, BufReader<TcpStream>) {
    let conn = TcpStream::connect(addr).expect("connect to the router");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let r = BufReader::new(conn.try_clone().expect("clone"));
    (conn, r)
}

/// One message head, up to and including its blank line; `None` at the end of the stream.
pub fn read_head<R: Read>(r: &mut BufReader<R>) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            return Some(head);
        }
    }
}

/// The value of header `name` in `head` (the first, trimmed).
pub fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A body as `head` frames it (chunks decoded, trailers read and dropped; no length means no
/// body); `None` when the framing is broken or the stream ends early.
pub fn read_body<R: Read>(r: &mut BufReader<R>, head: &str) -> Option<Vec<u8>> {
    if header(head, "transfer-encoding").is_some() {
        let mut body = Vec::new();
        loop {
            let mut size = String::new();
            r.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim_end().split(';').next()?, 16).ok()?;
            if n == 0 {
                let mut end = String::new();
                while r.read_line(&mut end).ok()? > 0 && end != "\r\n" {
                    end.clear();
                }
                return Some(body);
            }
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).ok()?;
            body.extend_from_slice(&chunk[..n]);
        }
    }
    let n = match header(head, "content-length") {
        Some(v) => v.parse().ok()?,
        None => 0,
    };
    let mut body = vec![0; n];
    r.read_exact(&mut body).ok()?;
    Some(body)
}

/// One response: (head, decoded body).
pub fn response(r: &mut BufReader<TcpStream>) -> (String, Vec<u8>) {
    let head = read_head(r).expect("a response head");
    let body = read_body(r, &head).expect("a framed response body");
    (head, body)
}

/// The status code of a response head (0 when there is none).
pub fn status(head: &str) -> u16 {
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Whether the peer closed the connection with nothing more to read.
pub fn closed(r: &mut BufReader<TcpStream>) -> bool {
    let mut rest = Vec::new();
    matches!(r.read_to_end(&mut rest), Ok(0))
}
