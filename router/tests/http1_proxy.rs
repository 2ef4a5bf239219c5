//! The proxy loop as HTTP/1 clients and upstreams see it: bodies in every framing, both ways;
//! `Expect: 100-continue`; upgrades; hop-by-hop headers; HTTP/1.0; pipelining; malformed
//! requests; upstreams that answer early, close idle connections or end bodies by closing.
//!
//! A router with a fixed table (no API server) in front of a scripted upstream on loopback; the
//! client is a raw socket so every byte on the wire is the test's to check.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard_core::{Function, FunctionVersion};
use switchyard_router::source::State;

mod common;
use common::{client, closed, header, read_head, response, status};

/// How long a test waits for a signal from the scripted upstream before it fails.
const SIGNAL: Duration = Duration::from_secs(10);

/// What the scripted upstream saw, and the signals it exchanges with the test.
#[derive(Default)]
struct Seen {
    /// Each request head with the number of the upstream connection it came on (from 1).
    heads: Mutex<Vec<(usize, String)>>,
    connections: AtomicUsize,
    /// `/hello/stream-in` sends the first chunk of its request body here as soon as it has it,
    /// before it reads the rest.
    first_chunk: Mutex<Option<mpsc::Sender<Vec<u8>>>>,
    /// `/hello/held` says here that it has the request, then answers only once told to go.
    held: Mutex<Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>>,
}

impl Seen {
    fn heads(&self) -> Vec<String> {
        self.heads
            .lock()
            .expect("lock")
            .iter()
            .map(|(_, h)| h.clone())
            .collect()
    }
}

/// A blocking upstream whose behaviour is chosen by the request path.
fn upstream() -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let s = Arc::clone(&seen);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let n = s.connections.fetch_add(1, Ordering::SeqCst) + 1;
            let s = Arc::clone(&s);
            std::thread::spawn(move || serve_upstream(conn, n, &s));
        }
    });
    (addr, seen)
}

/// A body as `head` frames it; the test fails if it is not framed.
fn read_body(r: &mut BufReader<TcpStream>, head: &str) -> Vec<u8> {
    common::read_body(r, head).expect("a framed body")
}

/// Reads one chunk (size line, data, CRLF) of a chunked body.
fn read_chunk(r: &mut BufReader<TcpStream>) -> Vec<u8> {
    let mut size = String::new();
    r.read_line(&mut size).expect("chunk size");
    let n = usize::from_str_radix(size.trim_end(), 16).expect("hex size");
    let mut chunk = vec![0; n + 2];
    r.read_exact(&mut chunk).expect("chunk");
    chunk.truncate(n);
    chunk
}

fn serve_upstream(conn: TcpStream, n: usize, seen: &Seen) {
    let mut w = conn.try_clone().expect("clone");
    let mut r = BufReader::new(conn);
    while let Some(head) = read_head(&mut r) {
        seen.heads.lock().expect("lock").push((n, head.clone()));
        let path = head.split(' ').nth(1).unwrap_or("").to_string();
        if path == "/hello/early" {
            let _ = w.write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbig\n");
            return;
        }
        let body = if path == "/hello/stream-in" {
            let first = read_chunk(&mut r);
            if let Some(tell) = &*seen.first_chunk.lock().expect("lock") {
                let _ = tell.send(first.clone());
            }
            let mut body = first;
            body.extend(read_body(&mut r, &head));
            body
        } else {
            let Some(body) = common::read_body(&mut r, &head) else {
                return;
            };
            body
        };
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
            "/hello/held" => {
                // In flight for as long as the test wants: it says it has the request, and
                // answers when told.
                let held = seen.held.lock().expect("lock").take();
                if let Some((arrived, go)) = held {
                    let _ = arrived.send(());
                    let _ = go.recv();
                }
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nheld\n".to_vec()
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
    common::router("http1-test", state)
}

/// Sends `request` (`METHOD /path`) with no body on the connection and reads its response.
fn roundtrip(w: &mut TcpStream, r: &mut BufReader<TcpStream>, request: &str) -> (String, Vec<u8>) {
    w.write_all(format!("{request} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .expect("write");
    response(r)
}

#[test]
fn bodies_stream_both_ways_in_every_framing_and_the_connection_stays_usable() {
    let (up, seen) = upstream();
    let (router, addr) = router(up);
    let (mut w, mut r) = client(addr);

    // A chunked request body streams: its first chunk reaches the upstream before the client
    // has written the rest (a router that waited for the whole body would never deliver it,
    // and the wait below fails), and the whole body arrives.
    let (tell, first_chunk) = mpsc::channel();
    *seen.first_chunk.lock().expect("lock") = Some(tell);
    w.write_all(
        b"POST /hello/stream-in HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .expect("write");
    assert_eq!(
        first_chunk
            .recv_timeout(SIGNAL)
            .expect("the first chunk reaches the upstream before the rest is written"),
        b"hello"
    );
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
    let heads = seen.heads();
    assert!(header(&heads[0], "expect").is_none(), "{}", heads[0]);
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
    let heads = seen.heads();
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
    assert!(seen.heads().is_empty(), "nothing malformed went upstream");
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
    // One new upstream connection per request (the 413's, then one for each `once`), and each
    // `once` executed once.
    assert_eq!(seen.connections.load(Ordering::SeqCst), 6);
    let onces = seen
        .heads()
        .iter()
        .filter(|h| h.starts_with("GET /hello/once"))
        .count();
    assert_eq!(onces, 5);

    // A POST is not sent twice: if the upstream closes the pooled connection under it (here:
    // after reading it), the client gets a 502 that says so, never a second execution. The
    // GET before it leaves its connection on top of the pool (idle connections live 55 s), so
    // the POST goes out on that reused connection: checked below, not assumed.
    for i in 0..3 {
        let (head, _) = roundtrip(&mut w, &mut r, "GET /hello/pool-one");
        assert_eq!(status(&head), 200, "{head}");
        w.write_all(b"POST /hello/vanish HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx")
            .expect("write");
        let (head, body) = response(&mut r);
        assert_eq!(status(&head), 502, "attempt {i}: {head}");
        assert!(body.ends_with(b"\n"), "a one-line reason");
        let heads = seen.heads.lock().expect("lock").clone();
        let (get_conn, post_conn) = (heads[heads.len() - 2].0, heads[heads.len() - 1].0);
        assert!(
            heads[heads.len() - 1].1.starts_with("POST /hello/vanish"),
            "{heads:?}"
        );
        assert_eq!(
            post_conn, get_conn,
            "attempt {i}: the POST went out on the pooled connection of the GET before it"
        );
    }
    let posts = seen
        .heads()
        .iter()
        .filter(|h| h.starts_with("POST /hello/vanish"))
        .count();
    assert_eq!(posts, 3, "no POST was sent twice");
    router.stop();
}

#[test]
fn a_stop_drains_idle_connections_and_finishes_the_response_in_flight() {
    let (up, seen) = upstream();
    let (arrived_tx, arrived) = mpsc::channel();
    let (go, go_rx) = mpsc::channel();
    *seen.held.lock().expect("lock") = Some((arrived_tx, go_rx));
    let (router, addr) = router(up);
    let (mut idle_w, mut idle_r) = client(addr);
    assert_eq!(
        status(&roundtrip(&mut idle_w, &mut idle_r, "GET /hello/echo").0),
        200
    );

    // A request in flight (the upstream has it and holds the answer) when the stop begins.
    let (mut w, mut r) = client(addr);
    w.write_all(b"GET /hello/held HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    arrived
        .recv_timeout(SIGNAL)
        .expect("the upstream has the request in flight");
    router.shutdown();
    // The drain has begun once the idle keep-alive connection is closed; only then does the
    // answer come.
    assert!(
        closed(&mut idle_r),
        "an idle keep-alive connection is closed"
    );
    go.send(()).expect("go");
    let (head, body) = response(&mut r);
    assert_eq!(
        (status(&head), body.as_slice()),
        (200, &b"held\n"[..]),
        "{head}"
    );
    assert_eq!(
        header(&head, "connection"),
        Some("close"),
        "the last response says the connection ends: {head}"
    );
    assert!(closed(&mut r));
    router.wait();
}
