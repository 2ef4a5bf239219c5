//! The router in front of real users (issue 12): no request smuggling through `Connection` or
//! odd framing, no response crossing from one request to the next on a pooled connection, Host
//! rules, response framing, and nothing internal leaking to clients or forged to functions.
//!
//! A router with a fixed table in front of a strict upstream that records every byte it
//! receives; the client is a raw socket. Each test here failed on the router before the fix.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use switchyard_core::{Function, FunctionVersion};
use switchyard_router::source::State;

mod common;
use common::{client, free, header, read_body, read_head, response, status};

/// What the strict upstream received.
#[derive(Default)]
struct Seen {
    /// Every byte of every connection, in arrival order per connection.
    bytes: Mutex<Vec<u8>>,
    /// Each request head, as parsed.
    heads: Mutex<Vec<String>>,
    connections: AtomicUsize,
    /// `/hello/stray` waits for this before writing bytes nobody asked for, then says so.
    stray_go: Mutex<Option<mpsc::Receiver<()>>>,
    stray_done: Mutex<Option<mpsc::Sender<()>>>,
    /// Told of each request head as soon as it is read (before its body).
    on_head: Mutex<Option<mpsc::Sender<()>>>,
    /// `/hello/events` sends its second event only after this.
    events_go: Mutex<Option<mpsc::Receiver<()>>>,
}

impl Seen {
    fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("lock").clone()
    }

    fn received(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock().expect("lock")).into_owned()
    }
}

/// Reads from the connection and records what it read.
struct Recording<'s> {
    conn: TcpStream,
    seen: &'s Seen,
}

impl Read for Recording<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.conn.read(buf)?;
        self.seen
            .bytes
            .lock()
            .expect("lock")
            .extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

fn upstream() -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let s = Arc::clone(&seen);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            s.connections.fetch_add(1, Ordering::SeqCst);
            let s = Arc::clone(&s);
            std::thread::spawn(move || serve(conn, &s));
        }
    });
    (addr, seen)
}

/// Strict: a request it cannot frame ends the connection. Behaviour by path.
fn serve(conn: TcpStream, seen: &Seen) {
    let mut w = conn.try_clone().expect("clone");
    let mut r = BufReader::new(Recording { conn, seen });
    while let Some(head) = read_head(&mut r) {
        seen.heads.lock().expect("lock").push(head.clone());
        if let Some(tell) = &*seen.on_head.lock().expect("lock") {
            let _ = tell.send(());
        }
        let path = head.split(' ').nth(1).unwrap_or("").to_string();
        let Some(body) = read_body(&mut r, &head) else {
            return;
        };
        let reply: Vec<u8> = match path.as_str() {
            "/hello/stray" => {
                if w.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").is_err() {
                    return;
                }
                let go = seen.stray_go.lock().expect("lock").take();
                if let Some(go) = go {
                    let _ = go.recv();
                }
                // Bytes after a 204, as a buggy function writes them: a whole response.
                let _ = w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nstolen\n");
                if let Some(done) = seen.stray_done.lock().expect("lock").take() {
                    let _ = done.send(());
                }
                continue;
            }
            "/hello/events" => {
                let first = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n";
                if w.write_all(first).is_err() {
                    return;
                }
                let go = seen.events_go.lock().expect("lock").take();
                if let Some(go) = go {
                    let _ = go.recv();
                }
                b"9\r\ndata: 2\n\n\r\n0\r\n\r\n".to_vec()
            }
            "/hello/te-and-cl" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 50\r\n\r\n3\r\none\r\n0\r\n\r\n".to_vec(),
            "/hello/connection-names-length" => {
                b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 2\r\n\r\nok".to_vec()
            }
            _ => {
                let mut reply =
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len())
                        .into_bytes();
                reply.extend_from_slice(&body);
                reply
            }
        };
        if w.write_all(&reply).is_err() {
            return;
        }
    }
}

/// A router with `hello` (pinning on) on `upstream`, and `dead` on a port nobody listens on.
fn router(upstream: SocketAddr) -> (switchyard_router::RouterHandle, SocketAddr) {
    let state = State {
        functions: vec![
            Arc::new(
                Function::test("hello")
                    .with_weight("1.0.0", 1_000_000)
                    .with_pinning(),
            ),
            Arc::new(Function::test("dead").with_weight("1.0.0", 1_000_000)),
        ],
        versions: vec![
            Arc::new(FunctionVersion::test_endpoint(
                "hello",
                "1.0.0",
                &format!("http://{upstream}"),
            )),
            Arc::new(FunctionVersion::test_endpoint(
                "dead",
                "1.0.0",
                &format!("http://{}", free()),
            )),
        ],
    };
    common::router("http1-safety-test", state)
}

/// Sends `raw` on a new connection; the response, and whether the router closed after it.
fn exchange_once(addr: SocketAddr, raw: &[u8]) -> (String, Vec<u8>, bool) {
    let (mut w, mut r) = client(addr);
    w.write_all(raw).expect("write");
    let head = read_head(&mut r).expect("a response head");
    let body = read_body(&mut r, &head).expect("a framed body");
    // The router answered; does it still read on this connection?
    let closed = header(&head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    (head, body, closed)
}

#[test]
fn connection_never_removes_framing_headers_or_host() {
    let (up, seen) = upstream();
    let (router, addr) = router(up);
    let smuggled = "GET /hello/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

    let raw = format!(
        "POST /hello/echo HTTP/1.1\r\nHost: x\r\nConnection: content-length\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let (head, body, _) = exchange_once(addr, raw.as_bytes());
    assert_eq!(status(&head), 200, "{head}");
    assert_eq!(body, smuggled.as_bytes(), "the body is the body");

    let raw = format!(
        "POST /hello/echo HTTP/1.1\r\nHost: x\r\nConnection: transfer-encoding, host\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n",
        smuggled.len()
    );
    let (head, body, _) = exchange_once(addr, raw.as_bytes());
    assert_eq!(status(&head), 200, "{head}");
    assert_eq!(body, smuggled.as_bytes());

    let heads = seen.heads();
    assert!(
        heads.iter().all(|h| !h.contains("/hello/smuggled")),
        "the upstream read a body as a request: {heads:?}"
    );
    assert!(
        heads.iter().all(|h| header(h, "host") == Some("x")),
        "{heads:?}"
    );

    // A response whose Connection names its Content-Length keeps it, and its connection is
    // not reused (its framing is in doubt).
    let (mut w, mut r) = client(addr);
    w.write_all(b"GET /hello/connection-names-length HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let (head, body) = response(&mut r);
    assert_eq!(header(&head, "content-length"), Some("2"), "{head}");
    assert_eq!(body, b"ok");
    let before = seen.connections.load(Ordering::SeqCst);
    w.write_all(b"GET /hello/next HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let (head, _) = response(&mut r);
    assert_eq!(status(&head), 200, "{head}");
    assert_eq!(seen.connections.load(Ordering::SeqCst), before + 1);
    router.stop();
}

#[test]
fn faulty_request_framing_is_refused_and_closes() {
    let (up, seen) = upstream();
    let (router, addr) = router(up);
    let smuggled = "GET /hello/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let cases = [
        // HTTP/1.0 with Transfer-Encoding (RFC 9112 §6.1).
        format!("POST /hello/echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        // Two Transfer-Encoding lines.
        format!("POST /hello/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        // A coding other than exactly `chunked`.
        format!("POST /hello/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        // Whitespace after a chunk size.
        format!("POST /hello/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n{smuggled}"),
    ];
    for raw in &cases {
        let (head, _, closed) = exchange_once(addr, raw.as_bytes());
        assert_eq!(status(&head), 400, "{raw:?}: {head}");
        assert!(closed, "{raw:?}: {head}");
    }
    assert_eq!(
        seen.heads(),
        Vec::<String>::new(),
        "nothing reached the upstream"
    );
    router.stop();
}

#[test]
fn a_pooled_connection_with_unread_bytes_is_never_reused() {
    let (up, seen) = upstream();
    let (go, go_rx) = mpsc::channel();
    let (done_tx, done) = mpsc::channel();
    *seen.stray_go.lock().expect("lock") = Some(go_rx);
    *seen.stray_done.lock().expect("lock") = Some(done_tx);
    let (router, addr) = router(up);
    let (mut w, mut r) = client(addr);

    w.write_all(b"GET /hello/stray HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let (head, _) = response(&mut r);
    assert_eq!(status(&head), 204, "{head}");
    // The exchange is over (its connection back in the pool) before the next request is read;
    // now the upstream writes a response nobody asked for on that idle connection.
    go.send(()).expect("go");
    done.recv().expect("stray bytes written");

    w.write_all(b"POST /hello/mine HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nmine\n")
        .expect("write");
    let (head, body) = response(&mut r);
    assert_eq!(status(&head), 200, "{head}");
    assert_eq!(body, b"mine\n", "the previous exchange's stray response");
    assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
    router.stop();
}

#[test]
fn host_is_exactly_one_and_an_absolute_target_sets_it() {
    let (up, seen) = upstream();
    let (router, addr) = router(up);
    for raw in [
        &b"GET /hello/a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n"[..],
        b"GET /hello/a HTTP/1.1\r\n\r\n",
        b"GET /hello/a HTTP/1.0\r\nHost: x\r\nhost: y\r\n\r\n",
    ] {
        let (head, _, closed) = exchange_once(addr, raw);
        assert_eq!(
            status(&head),
            400,
            "{}: {head}",
            String::from_utf8_lossy(raw)
        );
        assert!(closed);
    }
    assert_eq!(seen.heads(), Vec::<String>::new());

    let (head, _, _) = exchange_once(
        addr,
        b"GET http://fn.example:8080/hello/abs HTTP/1.1\r\nHost: other.example\r\n\r\n",
    );
    assert_eq!(status(&head), 200, "{head}");
    let (head, _, _) = exchange_once(addr, b"GET /hello/old HTTP/1.0\r\n\r\n");
    assert_eq!(status(&head), 200, "HTTP/1.0 may omit Host: {head}");
    let heads = seen.heads();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert!(
        heads[0].starts_with("GET /hello/abs HTTP/1.1\r\n"),
        "{heads:?}"
    );
    assert_eq!(header(&heads[0], "host"), Some("fn.example:8080"));
    assert_eq!(
        heads[0]
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("host:"))
            .count(),
        1,
        "one Host: {}",
        heads[0]
    );
    router.stop();
}

#[test]
fn a_response_with_chunks_and_a_length_loses_the_length() {
    let (up, _seen) = upstream();
    let (router, addr) = router(up);
    let (mut w, mut r) = client(addr);
    w.write_all(b"GET /hello/te-and-cl HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let (head, body) = response(&mut r);
    assert_eq!(status(&head), 200, "{head}");
    assert_eq!(header(&head, "content-length"), None, "{head}");
    assert_eq!(header(&head, "transfer-encoding"), Some("chunked"));
    assert_eq!(body, b"one");
    router.stop();
}

#[test]
fn clients_learn_no_internals_and_cannot_forge_router_headers_or_escape_a_prefix() {
    let (up, seen) = upstream();
    let (router, addr) = router(up);

    let (head, body, _) = exchange_once(addr, b"GET /dead/x HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status(&head), 502, "{head}");
    let body = String::from_utf8_lossy(&body);
    assert_eq!(body, "dead@1.0.0 cannot be reached\n");

    let (head, _, _) = exchange_once(
        addr,
        b"GET /hello/h HTTP/1.1\r\nHost: x\r\nx-switchyard-served-by: forged\r\nX-Switchyard-Trace: 1\r\nX-Other: kept\r\n\r\n",
    );
    assert_eq!(status(&head), 200, "{head}");
    let heads = seen.heads();
    assert_eq!(heads.len(), 1);
    assert!(
        !heads[0].to_ascii_lowercase().contains("x-switchyard-"),
        "{}",
        heads[0]
    );
    assert_eq!(header(&heads[0], "x-other"), Some("kept"));

    for path in [
        "/hello/../admin",
        "/hello/./x",
        "/hello/%2e%2E/admin",
        "/hello/a/..",
        "/hello/..?q",
    ] {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let (head, _, _) = exchange_once(addr, raw.as_bytes());
        assert_eq!(status(&head), 400, "{path}: {head}");
    }
    assert_eq!(seen.heads().len(), 1, "{:?}", seen.heads());
    assert!(!seen.received().contains(".."));
    router.stop();
}

#[test]
fn a_streamed_response_reaches_the_client_as_it_is_produced() {
    let (up, seen) = upstream();
    let (go, go_rx) = mpsc::channel();
    *seen.events_go.lock().expect("lock") = Some(go_rx);
    let (router, addr) = router(up);
    let (mut w, mut r) = client(addr);
    w.write_all(b"GET /hello/events HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    // The upstream holds the second event until the client has the first: a router that
    // buffers the response until it ends never delivers either (the read times out).
    let head = read_head(&mut r).expect("the head before the response ends");
    assert_eq!(status(&head), 200, "{head}");
    let mut first = String::new();
    r.read_line(&mut first).expect("chunk size");
    assert_eq!(first, "9\r\n");
    let mut event = [0u8; 11];
    r.read_exact(&mut event).expect("the first event");
    assert_eq!(&event, b"data: 1\n\n\r\n");
    go.send(()).expect("go");
    let rest = read_body(&mut r, &head).expect("the rest");
    assert_eq!(rest, b"data: 2\n\n");
    router.stop();
}

#[test]
fn connect_is_refused_with_405() {
    let (up, seen) = upstream();
    let (router, addr) = router(up);
    let (head, _, _) = exchange_once(
        addr,
        b"CONNECT fn.example:443 HTTP/1.1\r\nHost: fn.example:443\r\n\r\n",
    );
    assert_eq!(status(&head), 405, "{head}");
    assert!(seen.heads().is_empty());
    router.stop();
}

#[test]
fn an_http_1_0_client_gets_no_100_continue() {
    let (up, seen) = upstream();
    let (head_seen, heads) = mpsc::channel();
    *seen.on_head.lock().expect("lock") = Some(head_seen);
    let (router, addr) = router(up);

    // The head goes upstream before the body exists; by then a 100 would have been written.
    let (mut w, mut r) = client(addr);
    w.write_all(b"PUT /hello/echo HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        .expect("write");
    heads.recv().expect("the upstream has the head");
    w.write_all(b"body\n").expect("write");
    let (head, body) = response(&mut r);
    assert_eq!(
        status(&head),
        200,
        "the first response is the answer: {head}"
    );
    assert_eq!(body, b"body\n");
    assert_eq!(seen.heads().len(), 1);
    router.stop();
}

#[test]
fn a_list_of_equal_content_lengths_is_that_length() {
    let (up, _seen) = upstream();
    let (router, addr) = router(up);
    let (head, body, _) = exchange_once(
        addr,
        b"POST /hello/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nfive\n",
    );
    assert_eq!(status(&head), 200, "{head}");
    assert_eq!(body, b"five\n");
    router.stop();
}

#[test]
fn the_function_learns_the_clients_address_and_no_client_forged_one() {
    let (up, seen) = upstream();
    let (router, addr) = router(up);
    let (head, _, _) = exchange_once(
        addr,
        b"GET /hello/who HTTP/1.1\r\nHost: fn.example\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\n\r\n",
    );
    assert_eq!(status(&head), 200, "{head}");
    let heads = seen.heads();
    assert_eq!(heads.len(), 1);
    let up = &heads[0];
    assert_eq!(header(up, "x-forwarded-for"), Some("127.0.0.1"), "{up}");
    assert_eq!(header(up, "x-forwarded-proto"), Some("http"), "{up}");
    assert_eq!(header(up, "x-forwarded-host"), Some("fn.example"), "{up}");
    assert_eq!(up.matches("orwarded-").count(), 3, "one of each: {up}");
    router.stop();
}

#[test]
fn an_http_1_2_request_is_served_as_http_1_1() {
    let (up, seen) = upstream();
    let (router, addr) = router(up);
    let (mut w, mut r) = client(addr);
    w.write_all(b"GET /hello/newer HTTP/1.2\r\nHost: x\r\n\r\n")
        .expect("write");
    let (head, _) = response(&mut r);
    assert_eq!(status(&head), 200, "{head}");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Kept alive as 1.1 is.
    w.write_all(b"GET /hello/again HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let (head, _) = response(&mut r);
    assert_eq!(status(&head), 200, "{head}");
    let heads = seen.heads();
    assert!(
        heads[0].starts_with("GET /hello/newer HTTP/1.1\r\n"),
        "{heads:?}"
    );
    // Other versions are still refused.
    for raw in [
        &b"GET /hello/x HTTP/2.0\r\nHost: x\r\n\r\n"[..],
        b"GET /hello/x HTTP/1.x\r\nHost: x\r\n\r\n",
    ] {
        let (head, _, _) = exchange_once(addr, raw);
        assert_eq!(status(&head), 400, "{head}");
    }
    router.stop();
}
