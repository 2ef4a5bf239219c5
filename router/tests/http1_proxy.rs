//! The proxy loop as HTTP/1 clients and upstreams see it: bodies in every framing, both ways;
//! `Expect: 100-continue`; upgrades; hop-by-hop headers; HTTP/1.0; pipelining; malformed
//! requests; upstreams that answer early, close idle connections or end bodies by closing.
//!
//! A router with a fixed table (no API server) in front of a scripted upstream on loopback; the
//! client is a raw socket so every byte on the wire is the test's to check.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard_core::{Function, FunctionVersion};
use switchyard_router::source::State;
use switchyard_router::{RouterConfig, Source};

/// What the scripted upstream saw.
#[derive(Default)]
struct Seen {
    heads: Mutex<Vec<String>>,
    connections: AtomicUsize,
}

/// A blocking upstream whose behaviour is chosen by the request path.
fn upstream() -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let s = Arc::clone(&seen);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            s.connections.fetch_add(1, Ordering::SeqCst);
            let s = Arc::clone(&s);
            std::thread::spawn(move || serve_upstream(conn, &s));
        }
    });
    (addr, seen)
}

fn read_head(r: &mut BufReader<TcpStream>) -> Option<String> {
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

fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Reads a body as framed by `head`, decoding chunks.
fn read_body(r: &mut BufReader<TcpStream>, head: &str) -> Vec<u8> {
    if header(head, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut body = Vec::new();
        loop {
            let mut size = String::new();
            r.read_line(&mut size).expect("chunk size");
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .expect("hex size");
            if n == 0 {
                let mut end = String::new();
                while r.read_line(&mut end).expect("trailer") > 0 && end != "\r\n" {
                    end.clear();
                }
                return body;
            }
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).expect("chunk");
            body.extend_from_slice(&chunk[..n]);
        }
    }
    let n = header(head, "content-length").map_or(0, |v| v.parse().expect("length"));
    let mut body = vec![0; n];
    r.read_exact(&mut body).expect("body");
    body
}

fn serve_upstream(conn: TcpStream, seen: &Seen) {
    let mut w = conn.try_clone().expect("clone");
    let mut r = BufReader::new(conn);
    while let Some(head) = read_head(&mut r) {
        seen.heads.lock().expect("lock").push(head.clone());
        let path = head.split(' ').nth(1).unwrap_or("").to_string();
        if path == "/hello/early" {
            let _ = w.write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbig\n");
            return;
        }
        let body = read_body(&mut r, &head);
        let reply: Vec<u8> = match path.as_str() {
            "/hello/chunked" => {
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\none\r\n3\r\ntwo\r\n0\r\nx-trailer: t\r\n\r\n".to_vec()
            }
            "/hello/until-close" => {
                let _ = w.write_all(b"HTTP/1.1 200 OK\r\n\r\nall of it\n");
                return;
            }
            "/hello/hop" => b"HTTP/1.1 200 OK\r\nconnection: x-up\r\nx-up: 1\r\nkeep-alive: timeout=5\r\nx-kept: yes\r\ncontent-length: 3\r\n\r\nhop".to_vec(),
            "/hello/upgrade" => {
                let _ = w.write_all(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n");
                let mut buf = [0u8; 1024];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 || w.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                return;
            }
            "/hello/slow" => {
                std::thread::sleep(Duration::from_millis(300));
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nslow\n".to_vec()
            }
            "/hello/vanish" => {
                // Reads the request, then closes without a word: the router cannot tell whether
                // it acted on it.
                return;
            }
            "/hello/once" => {
                // Keeps no connection, yet does not say so: the router learns it on reuse.
                let _ = w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nonce\n");
                return;
            }
            _ => {
                let mut reply = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
                reply.extend_from_slice(&body);
                reply
            }
        };
        if w.write_all(&reply).is_err() {
            return;
        }
        if header(&head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
            return;
        }
    }
}

/// A router with function `hello` (one version) on `upstream`.
fn router(upstream: SocketAddr) -> (switchyard_router::RouterHandle, SocketAddr) {
    let free = || {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
    };
    let state = State {
        functions: vec![Arc::new(
            Function::test("hello")
                .with_weight("1.0.0", 1_000_000)
                .with_pinning(),
        )],
        versions: vec![Arc::new(FunctionVersion::test_endpoint(
            "hello",
            "1.0.0",
            &format!("http://{upstream}"),
        ))],
    };
    let mut config = RouterConfig::new("http1-test");
    config.listen = free();
    config.admin = free();
    config.grace_period = Duration::from_secs(1);
    let listen = config.listen;
    let handle = switchyard_router::start(config, Source::Fixed(state)).expect("router starts");
    // Waited for as long as a loaded machine needs, and never given up on silently.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(listen).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the router did not listen within 60 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    (handle, listen)
}

fn client(addr: SocketAddr) -> (TcpStream, BufReader<TcpStream>) {
    let conn = TcpStream::connect(addr).expect("connect to the router");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let r = BufReader::new(conn.try_clone().expect("clone"));
    (conn, r)
}

/// Reads one response: (head, decoded body).
fn response(r: &mut BufReader<TcpStream>) -> (String, Vec<u8>) {
    let head = read_head(r).expect("a response head");
    let body = read_body(r, &head);
    (head, body)
}

/// Sends `request` (`METHOD /path`) with no body on the connection and reads its response.
fn roundtrip(w: &mut TcpStream, r: &mut BufReader<TcpStream>, request: &str) -> (String, Vec<u8>) {
    w.write_all(format!("{request} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .expect("write");
    response(r)
}

fn status(head: &str) -> u16 {
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn closed(r: &mut BufReader<TcpStream>) -> bool {
    let mut rest = Vec::new();
    matches!(r.read_to_end(&mut rest), Ok(0))
}

#[test]
fn bodies_stream_both_ways_in_every_framing_and_the_connection_stays_usable() {
    let (up, seen) = upstream();
    let (router, addr) = router(up);
    let (mut w, mut r) = client(addr);

    // A chunked request body, written in pieces with pauses: it arrives whole, re-framed as sent.
    w.write_all(
        b"POST /hello/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .expect("write");
    std::thread::sleep(Duration::from_millis(50));
    w.write_all(b"6\r\n world\r\n0\r\n\r\n").expect("write");
    let (head, body) = response(&mut r);
    assert_eq!(status(&head), 200, "{head}");
    assert_eq!(body, b"hello world");
    assert_eq!(header(&head, "x-switchyard-served-by"), Some("hello@1.0.0"));

    // 1 MiB each way by content-length, on the same connection.
    let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    w.write_all(
        format!(
            "PUT /hello/echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            big.len()
        )
        .as_bytes(),
    )
    .expect("write");
    w.write_all(&big).expect("write");
    let (head, body) = response(&mut r);
    assert_eq!(status(&head), 200, "{head}");
    assert!(
        body == big,
        "the 1 MiB body came back changed ({} bytes)",
        body.len()
    );

    // A chunked response with a trailer is forwarded as chunks.
    let (head, body) = roundtrip(&mut w, &mut r, "GET /hello/chunked");
    assert_eq!(
        header(&head, "transfer-encoding"),
        Some("chunked"),
        "{head}"
    );
    assert_eq!(body, b"onetwo");

    // HEAD: the length header, no body, and the connection goes on.
    w.write_all(b"HEAD /hello/echo HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let head = read_head(&mut r).expect("head");
    assert_eq!(status(&head), 200, "{head}");
    let (head, _) = roundtrip(&mut w, &mut r, "GET /hello/echo");
    assert_eq!(
        status(&head),
        200,
        "the connection went on after HEAD: {head}"
    );

    // All of it on the one upstream connection the pool kept.
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
    router.stop();
}

#[test]
fn expect_continue_is_answered_by_the_router_and_not_forwarded() {
    let (up, seen) = upstream();
    let (router, addr) = router(up);
    let (mut w, mut r) = client(addr);
    w.write_all(b"POST /hello/echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        .expect("write");
    let interim = read_head(&mut r).expect("an interim response");
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    w.write_all(b"body").expect("write");
    let (head, body) = response(&mut r);
    assert_eq!(status(&head), 200, "{head}");
    assert_eq!(body, b"body");
    let heads = seen.heads.lock().expect("lock");
    assert!(header(&heads[0], "expect").is_none(), "{}", heads[0]);
    drop(heads);
    router.stop();
}

#[test]
fn hop_by_hop_headers_stop_at_the_router_both_ways() {
    let (up, seen) = upstream();
    let (router, addr) = router(up);
    let (mut w, mut r) = client(addr);
    w.write_all(
        b"GET /hello/hop HTTP/1.1\r\nHost: x\r\nConnection: x-secret\r\nX-Secret: 1\r\nKeep-Alive: 300\r\nTE: trailers\r\nX-Kept: 1\r\nx-switchyard-version: 1.0.0\r\n\r\n",
    )
    .expect("write");
    let (head, body) = response(&mut r);
    assert_eq!(body, b"hop");
    for gone in ["connection", "x-up", "keep-alive"] {
        assert!(
            header(&head, gone).is_none(),
            "{gone} reached the client: {head}"
        );
    }
    assert_eq!(header(&head, "x-kept"), Some("yes"));
    let heads = seen.heads.lock().expect("lock");
    for gone in ["connection", "x-secret", "keep-alive", "te"] {
        assert!(
            header(&heads[0], gone).is_none(),
            "{gone} reached the upstream: {}",
            heads[0]
        );
    }
    assert_eq!(header(&heads[0], "x-kept"), Some("1"));
    assert_eq!(
        header(&heads[0], "x-switchyard-version"),
        Some("1.0.0"),
        "the pin is forwarded when the function honours pins"
    );
    drop(heads);
    router.stop();
}

#[test]
fn an_upgrade_becomes_a_tunnel_after_101() {
    let (up, _) = upstream();
    let (router, addr) = router(up);
    let (mut w, mut r) = client(addr);
    w.write_all(
        b"GET /hello/upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .expect("write");
    let head = read_head(&mut r).expect("101");
    assert_eq!(status(&head), 101, "{head}");
    assert_eq!(header(&head, "upgrade"), Some("echo"));
    assert_eq!(header(&head, "x-switchyard-served-by"), Some("hello@1.0.0"));
    w.write_all(b"ping over the tunnel").expect("write");
    let mut echoed = [0u8; 20];
    r.read_exact(&mut echoed).expect("echo");
    assert_eq!(&echoed, b"ping over the tunnel");
    router.stop();
}

#[test]
fn http_1_0_pipelining_and_bodies_until_close() {
    let (up, _) = upstream();
    let (router, addr) = router(up);

    // Two requests in one write: two responses, in order.
    let (mut w, mut r) = client(addr);
    w.write_all(
        b"POST /hello/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\none\
POST /hello/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\ntwo",
    )
    .expect("write");
    assert_eq!(response(&mut r).1, b"one");
    assert_eq!(response(&mut r).1, b"two");

    // HTTP/1.0 without keep-alive: a length-framed answer, then the router closes.
    let (mut w, mut r) = client(addr);
    w.write_all(b"GET /hello/echo HTTP/1.0\r\nHost: x\r\n\r\n")
        .expect("write");
    let (head, _) = response(&mut r);
    assert_eq!(status(&head), 200, "{head}");
    assert!(
        closed(&mut r),
        "an HTTP/1.0 connection closes after its response"
    );

    // HTTP/1.0 with keep-alive stays open.
    let (mut w, mut r) = client(addr);
    for _ in 0..2 {
        w.write_all(b"GET /hello/echo HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
            .expect("write");
        let (head, _) = response(&mut r);
        assert_eq!(header(&head, "connection"), Some("keep-alive"), "{head}");
    }

    // A body the upstream ends by closing reaches the client whole, then the client's
    // connection closes too (there is no other way to mark its end).
    let (mut w, mut r) = client(addr);
    w.write_all(b"GET /hello/until-close HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let head = read_head(&mut r).expect("head");
    assert_eq!(header(&head, "connection"), Some("close"), "{head}");
    let mut body = String::new();
    r.read_to_string(&mut body).expect("body until close");
    assert_eq!(body, "all of it\n");
    router.stop();
}

#[test]
fn malformed_requests_get_a_4xx_and_the_connection_closes() {
    let (up, seen) = upstream();
    let (router, addr) = router(up);
    let cases: [(&[u8], u16); 3] = [
        (b"GARBAGE\r\n\r\n", 400),
        (b"POST /hello/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST /hello/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
    ];
    for (request, expected) in cases {
        let (mut w, mut r) = client(addr);
        w.write_all(request).expect("write");
        let (head, body) = response(&mut r);
        assert_eq!(
            status(&head),
            expected,
            "{}: {head}",
            String::from_utf8_lossy(request)
        );
        assert!(
            !body.is_empty() && body.ends_with(b"\n"),
            "a one-line reason"
        );
        assert!(
            closed(&mut r),
            "closed after {}",
            String::from_utf8_lossy(request)
        );
    }
    // A well-formed request the router does not proxy: 405 (CONNECT), 400 (another scheme),
    // and the connection goes on.
    let (mut w, mut r) = client(addr);
    let (head, _) = roundtrip(&mut w, &mut r, "CONNECT x:443");
    assert_eq!(status(&head), 405, "{head}");
    let (head, _) = roundtrip(&mut w, &mut r, "GET ftp://x/");
    assert_eq!(status(&head), 400, "{head}");
    let (head, body) = roundtrip(&mut w, &mut r, "GET /nowhere");
    assert_eq!(status(&head), 404, "{head}");
    assert!(String::from_utf8_lossy(&body).starts_with("no function matches"));

    let (mut w, mut r) = client(addr);
    let huge = format!(
        "GET /hello/echo HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70_000)
    );
    let _ = w.write_all(huge.as_bytes());
    let (head, _) = response(&mut r);
    assert_eq!(status(&head), 431, "{head}");
    assert!(
        seen.heads.lock().expect("lock").is_empty(),
        "nothing malformed went upstream"
    );
    router.stop();
}

#[test]
fn upstreams_that_answer_early_or_drop_idle_connections_are_handled() {
    let (up, seen) = upstream();
    let (router, addr) = router(up);

    // The upstream answers 413 before reading the body: the client gets the 413.
    let (mut w, mut r) = client(addr);
    w.write_all(b"POST /hello/early HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
        .expect("write");
    let _ = w.write_all(&vec![b'x'; 64 * 1024]);
    let (head, _) = response(&mut r);
    assert_eq!(status(&head), 413, "{head}");

    // The upstream closes every connection after one response without saying so. The router
    // pools the connection, finds it closed when it reuses it, and sends the request again on
    // a new one: the client never sees the race.
    let (mut w, mut r) = client(addr);
    for i in 0..5 {
        let (head, body) = roundtrip(&mut w, &mut r, "GET /hello/once");
        assert_eq!(status(&head), 200, "request {i}: {head}");
        assert_eq!(body, b"once\n");
    }
    assert!(seen.connections.load(Ordering::SeqCst) >= 6);

    // A POST is not sent twice: if the upstream closes the pooled connection under it (here:
    // after reading it), the client gets a 502 that says so, never a second execution.
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let (head, _) = roundtrip(&mut w, &mut r, "GET /hello/pool-one");
        assert_eq!(status(&head), 200, "{head}");
        w.write_all(b"POST /hello/vanish HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx")
            .expect("write");
        let (head, _) = response(&mut r);
        outcomes.push(status(&head));
    }
    assert!(
        outcomes.iter().all(|s| *s == 200 || *s == 502),
        "{outcomes:?}"
    );
    let posts = seen
        .heads
        .lock()
        .expect("lock")
        .iter()
        .filter(|h| h.starts_with("POST /hello/vanish"))
        .count();
    assert_eq!(
        posts,
        outcomes.len(),
        "no POST was sent twice ({outcomes:?})"
    );
    assert!(
        outcomes.contains(&502),
        "a POST on a closed pooled connection is not replayed"
    );
    router.stop();
}

#[test]
fn a_stop_drains_idle_connections_and_finishes_the_response_in_flight() {
    let (up, seen) = upstream();
    let (router, addr) = router(up);
    let (mut idle_w, mut idle_r) = client(addr);
    assert_eq!(
        status(&roundtrip(&mut idle_w, &mut idle_r, "GET /hello/echo").0),
        200
    );

    let (mut w, mut r) = client(addr);
    w.write_all(b"GET /hello/slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    for _ in 0..500 {
        if seen.heads.lock().expect("lock").len() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    router.shutdown();
    let (head, body) = response(&mut r);
    assert_eq!(
        (status(&head), body.as_slice()),
        (200, &b"slow\n"[..]),
        "{head}"
    );
    assert_eq!(
        header(&head, "connection"),
        Some("close"),
        "the last response says the connection ends: {head}"
    );
    assert!(closed(&mut r));
    assert!(
        closed(&mut idle_r),
        "an idle keep-alive connection is closed"
    );
    router.wait();
}
