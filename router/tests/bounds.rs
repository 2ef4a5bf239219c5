//! Timeouts and limits (issue 12 items 7 and 8): a stalled client or upstream never holds a
//! connection forever (heads, bodies both ways, connects, writes, upgraded tunnels), a function
//! can ask for longer waits, and the router holds no more connections than it is allowed,
//! refusing the rest cleanly.
//!
//! Each test runs a router with short timeouts (or a function whose `spec.timeouts` are short
//! while the router's are long) in front of a raw upstream scripted per test, and a raw client.
//! Behaviour is asserted (the 504, the 408, the closed connection), never elapsed time; every
//! blocking read has a guard of several seconds, far above the timeout under test, so a
//! router without the timeout fails the test instead of hanging it.

mod common;
use common::{free, read_head, status};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use switchyard_core::resources::Timeouts as FunctionTimeouts;
use switchyard_core::{Function, FunctionVersion};
use switchyard_router::config::Timeouts;
use switchyard_router::source::State;
use switchyard_router::{RouterConfig, RouterHandle, Source};

/// Longest any blocking read of a test waits: well above every timeout under test.
const GUARD: Duration = Duration::from_secs(10);
/// The timeout under test.
const SHORT: Duration = Duration::from_millis(300);
/// Router timeouts no test reaches.
const LONG: Duration = Duration::from_secs(60);

/// An upstream on loopback that runs `serve` on each connection, on its own thread.
fn upstream(serve: impl Fn(TcpStream) + Send + Sync + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    let serve = Arc::new(serve);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let serve = Arc::clone(&serve);
            std::thread::spawn(move || serve(conn));
        }
    });
    addr
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0)
}

/// Reads until the router closes; true when it did (EOF or reset) within [`GUARD`].
fn closed_by_router(r: &mut impl Read) -> bool {
    let mut sink = [0u8; 64 * 1024];
    loop {
        match r.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// The upstream side: reads one request head (and its content-length body).
fn read_request(conn: &TcpStream) -> Option<(String, BufReader<TcpStream>)> {
    let mut r = BufReader::new(conn.try_clone().ok()?);
    let head = read_head(&mut r)?;
    let mut body = vec![0; content_length(&head)];
    r.read_exact(&mut body).ok()?;
    Some((head, r))
}

/// A router with the given timeouts and limits serving `functions`, each of whose one version
/// 1.0.0 lives at `upstream`.
fn router(
    functions: Vec<Function>,
    upstream: SocketAddr,
    tune: impl FnOnce(&mut RouterConfig),
) -> (RouterHandle, RouterConfig) {
    let versions = functions
        .iter()
        .map(|f| {
            let name = f.metadata.name.as_deref().unwrap_or_default();
            Arc::new(FunctionVersion::test_endpoint(
                name,
                "1.0.0",
                &format!("http://{upstream}"),
            ))
        })
        .collect();
    let state = State {
        functions: functions.into_iter().map(Arc::new).collect(),
        versions,
    };
    let mut config = RouterConfig::new("bounds-test");
    config.listen = free();
    config.admin = free();
    config.grace_period = Duration::from_secs(1);
    config.timeouts = Timeouts {
        client_idle: LONG,
        request_idle: LONG,
        connect: LONG,
        response_head: LONG,
        response_idle: LONG,
        client_write: LONG,
        tunnel_idle: LONG,
    };
    tune(&mut config);
    let handle =
        switchyard_router::start(config.clone(), Source::Fixed(state)).expect("router starts");
    // Ready: the admin port answers /readyz (the proxy's listener is up with it).
    // Waited for as long as a loaded machine needs, and never given up on silently.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while admin_get(config.admin, "/readyz").is_none_or(|(s, _)| s != 200) {
        assert!(
            std::time::Instant::now() < deadline,
            "the router did not answer /readyz within 60 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    (handle, config)
}

fn hello() -> Function {
    Function::test("hello").with_weight("1.0.0", 1_000_000)
}

fn hello_with(timeouts: FunctionTimeouts) -> Function {
    let mut f = hello();
    f.spec.timeouts = Some(timeouts);
    f
}

fn client(addr: SocketAddr) -> (TcpStream, BufReader<TcpStream>) {
    let conn = TcpStream::connect(addr).expect("connect to the router");
    conn.set_read_timeout(Some(GUARD)).expect("timeout");
    let r = BufReader::new(conn.try_clone().expect("clone"));
    (conn, r)
}

/// One admin request: its status and body.
fn admin_get(admin: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut conn = TcpStream::connect(admin).ok()?;
    conn.set_read_timeout(Some(GUARD)).ok()?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    conn.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((status(head), body.to_string()))
}

/// A metric's value on the admin port (the first sample whose line starts with `name`).
fn metric(admin: SocketAddr, name: &str) -> f64 {
    let (_, body) = admin_get(admin, "/metrics").expect("metrics");
    body.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn a_client_idle_inside_its_request_head_is_closed() {
    let up = upstream(|_| {});
    let (router, config) = router(vec![hello()], up, |c| c.timeouts.client_idle = SHORT);
    let (mut w, mut r) = client(config.listen);
    w.write_all(b"GET /hello/x HTTP/1.1\r\nHost: x\r\n")
        .expect("half a head");
    assert!(closed_by_router(&mut r), "the connection is closed");
    router.stop();
}

#[test]
fn a_request_head_that_trickles_in_is_cut_at_the_idle_timeout_for_the_whole_head() {
    let up = upstream(|_| {});
    let (router, config) = router(vec![hello()], up, |c| c.timeouts.client_idle = SHORT);
    let (mut w, mut r) = client(config.listen);
    let (tx, closed) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(closed_by_router(&mut r));
    });
    // A byte every 50 ms: never silent for the timeout, yet the head never ends.
    let trickle = b"GET /hello/x HTTP/1.1\r\nX-Slow: "
        .iter()
        .chain(std::iter::repeat(&b'a'));
    let mut outcome = None;
    for byte in trickle.take((GUARD.as_millis() / 50) as usize) {
        if w.write_all(&[*byte]).is_err() {
            break;
        }
        if let Ok(closed) = closed.recv_timeout(Duration::from_millis(50)) {
            outcome = Some(closed);
            break;
        }
    }
    let outcome = outcome.or_else(|| closed.recv_timeout(GUARD).ok());
    assert_eq!(outcome, Some(true), "the connection is closed");
    router.stop();
}

#[test]
fn a_client_silent_inside_its_request_body_gets_408_and_the_upstream_connection_closes() {
    let (upstream_closed, closed) = mpsc::channel();
    let up = upstream(move |conn| {
        let mut r = BufReader::new(conn);
        let _ = read_head(&mut r);
        if closed_by_router(&mut r) {
            let _ = upstream_closed.send(());
        }
    });
    let (router, config) = router(
        vec![hello_with(FunctionTimeouts {
            request_idle: Some("300ms".into()),
            ..Default::default()
        })],
        up,
        |_| {},
    );
    let (mut w, mut r) = client(config.listen);
    w.write_all(b"POST /hello/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        .expect("write");
    let head = read_head(&mut r).expect("an answer");
    assert!(
        head.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{head}"
    );
    assert!(head.contains("connection: close"), "{head}");
    closed
        .recv_timeout(GUARD)
        .expect("the upstream connection is closed");
    router.stop();
}

#[test]
fn an_upstream_that_never_takes_the_connection_gets_504_within_the_functions_connect_timeout() {
    // A listener with a backlog of one, filled: the kernel drops further SYNs, so a connect
    // neither succeeds nor fails.
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    socket.listen(0).expect("listen");
    let addr = socket
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("inet");
    let _fillers: Vec<TcpStream> = (0..4)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok())
        .collect();

    let (router, config) = router(
        vec![hello_with(FunctionTimeouts {
            connect: Some("300ms".into()),
            ..Default::default()
        })],
        addr,
        |_| {},
    );
    let (mut w, mut r) = client(config.listen);
    w.write_all(b"GET /hello/x HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let head = read_head(&mut r).expect("an answer before the guard");
    assert_eq!(status(&head), 504, "{head}");
    let mut body = vec![0; content_length(&head)];
    r.read_exact(&mut body).expect("body");
    assert_eq!(body, b"hello@1.0.0 did not accept a connection in time\n");
    drop(socket);
    router.stop();
}

#[test]
fn an_upstream_that_never_answers_gets_504_and_a_slow_function_may_say_it_is_slow() {
    let (answer, go) = mpsc::channel::<()>();
    let go = std::sync::Mutex::new(go);
    let up = upstream(move |conn| {
        let Some((head, _r)) = read_request(&conn) else {
            return;
        };
        let mut w = conn;
        if head.starts_with("GET /slow/") {
            // Answers once told to, after the router's own response-head timeout.
            let _ = go.lock().expect("lock").recv();
            let _ = w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nslow\n");
        }
        // /hello/ never answers: it holds the connection until the router closes it.
        let mut sink = [0u8; 1];
        let _ = (&w).read(&mut sink);
    });
    let slow = {
        let mut f = Function::test("slow").with_weight("1.0.0", 1_000_000);
        f.spec.timeouts = Some(FunctionTimeouts {
            response_head: Some("1m".into()),
            ..Default::default()
        });
        f
    };
    let (router, config) = router(vec![hello(), slow], up, |c| {
        c.timeouts.response_head = SHORT;
    });

    let (mut w, mut r) = client(config.listen);
    w.write_all(b"GET /hello/x HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let head = read_head(&mut r).expect("an answer before the guard");
    assert_eq!(status(&head), 504, "{head}");
    let mut body = vec![0; content_length(&head)];
    r.read_exact(&mut body).expect("body");
    assert_eq!(body, b"hello@1.0.0 did not answer in time\n");

    // `slow` asked for a minute: the router's short timeout passes (the upstream answers only
    // after the hello request above timed out on it) and the answer still arrives.
    let (mut w, mut r) = client(config.listen);
    w.write_all(b"GET /slow/x HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let (tx, done) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let head = read_head(&mut r);
        let _ = tx.send(());
        head
    });
    // Held past the router's own timeout: no answer may come before the upstream's.
    assert!(
        done.recv_timeout(SHORT * 3).is_err(),
        "no 504 under the function's own minute"
    );
    answer.send(()).expect("go");
    let head = waiter.join().expect("join").expect("the answer");
    assert_eq!(status(&head), 200, "{head}");
    router.stop();
}

#[test]
fn an_upstream_silent_inside_its_body_is_cut_and_both_connections_close() {
    let (upstream_closed, closed) = mpsc::channel();
    let up = upstream(move |conn| {
        let Some((_, mut r)) = read_request(&conn) else {
            return;
        };
        let mut w = conn;
        if w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
            .is_err()
        {
            return;
        }
        if closed_by_router(&mut r) {
            let _ = upstream_closed.send(());
        }
    });
    let (router, config) = router(vec![hello()], up, |c| c.timeouts.response_idle = SHORT);
    let (mut w, mut r) = client(config.listen);
    w.write_all(b"GET /hello/x HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let head = read_head(&mut r).expect("the head");
    assert_eq!(status(&head), 200, "{head}");
    let mut got = Vec::new();
    let ended = r.read_to_end(&mut got);
    assert!(ended.is_ok(), "the router closed the connection: {ended:?}");
    assert_eq!(got, b"abc", "the body is cut short, not completed");
    closed
        .recv_timeout(GUARD)
        .expect("the upstream connection is closed");
    router.stop();
}

#[test]
fn a_stream_that_pauses_longer_than_the_routers_idle_timeout_lives_when_its_function_says_so() {
    let (resume, go) = mpsc::channel::<()>();
    let go = std::sync::Mutex::new(go);
    let up = upstream(move |conn| {
        let Some(_) = read_request(&conn) else {
            return;
        };
        let mut w = conn;
        let first = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n";
        if w.write_all(first).is_err() {
            return;
        }
        let _ = go.lock().expect("lock").recv();
        let _ = w.write_all(b"9\r\ndata: 2\n\n\r\n0\r\n\r\n");
    });
    let events = hello_with(FunctionTimeouts {
        response_idle: Some("10m".into()),
        ..Default::default()
    });
    let (router, config) = router(vec![events], up, |c| c.timeouts.response_idle = SHORT);
    let (mut w, r) = client(config.listen);
    w.write_all(b"GET /hello/events HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        // Only the events: the chunk sizes and blank lines around them say nothing here.
        for line in r.lines() {
            let Ok(line) = line else { break };
            if line.starts_with("data:") && tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = lines.recv_timeout(GUARD).expect("the first event");
    assert_eq!(first, "data: 1");
    // Silent for three times the router's own response-idle timeout.
    assert!(lines.recv_timeout(SHORT * 3).is_err(), "nothing in between");
    resume.send(()).expect("resume");
    let second = lines.recv_timeout(GUARD).expect("the stream lives on");
    assert_eq!(second, "data: 2");
    router.stop();
}

#[test]
fn a_client_that_stops_reading_is_cut_and_the_upstream_connection_closes() {
    let (upstream_failed, failed) = mpsc::channel();
    let up = upstream(move |conn| {
        let Some(_) = read_request(&conn) else {
            return;
        };
        let mut w = conn;
        let total: usize = 1 << 30;
        if write!(w, "HTTP/1.1 200 OK\r\ncontent-length: {total}\r\n\r\n").is_err() {
            return;
        }
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < total {
            if w.write_all(&chunk).is_err() {
                // The router closed this connection: it gave up on the client.
                let _ = upstream_failed.send(());
                return;
            }
            sent += chunk.len();
        }
    });
    let (router, config) = router(vec![hello()], up, |c| c.timeouts.client_write = SHORT);
    let (mut w, _never_read) = client(config.listen);
    w.write_all(b"GET /hello/big HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    failed
        .recv_timeout(GUARD)
        .expect("the router closed the upstream connection of a client that does not read");
    router.stop();
}

#[test]
fn past_max_connections_a_client_gets_503_and_the_admin_port_still_answers() {
    let up = upstream(|conn| {
        while let Some((_, _r)) = read_request(&conn) {
            let mut w = &conn;
            if w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n")
                .is_err()
            {
                return;
            }
        }
    });
    let (router, config) = router(vec![hello()], up, |c| c.max_connections = 2);
    let ask = |w: &mut TcpStream, r: &mut BufReader<TcpStream>| {
        w.write_all(b"GET /hello/x HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("write");
        let head = read_head(r).expect("a head");
        let mut body = vec![0; content_length(&head)];
        r.read_exact(&mut body).expect("body");
        (status(&head), String::from_utf8_lossy(&body).into_owned())
    };
    // Two clients, each served (so each is surely held by the router).
    let (mut w1, mut r1) = client(config.listen);
    assert_eq!(ask(&mut w1, &mut r1).0, 200);
    let (mut w2, mut r2) = client(config.listen);
    assert_eq!(ask(&mut w2, &mut r2).0, 200);

    let (_w3, mut r3) = client(config.listen);
    let head = read_head(&mut r3).expect("an answer without asking");
    assert_eq!(status(&head), 503, "{head}");
    assert!(head.contains("connection: close"), "{head}");
    let mut body = String::new();
    r3.read_to_string(&mut body).expect("then the close");
    assert_eq!(body, "the router is at its limit of connections\n");

    assert_eq!(
        admin_get(config.admin, "/healthz").map(|(s, _)| s),
        Some(200)
    );
    assert_eq!(
        metric(config.admin, "switchyard_router_refused_connections_total"),
        1.0
    );

    // A client leaves: the next one is served. The router notices the close on its own
    // time; wait for the gauge to say so.
    drop((w1, r1));
    // Waited for as long as a loaded machine needs (it was 5 s), and failing loudly.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut open = metric(config.admin, "switchyard_router_client_connections");
    while open > 1.0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        open = metric(config.admin, "switchyard_router_client_connections");
    }
    assert_eq!(open, 1.0, "the gauge still counts the client that left");
    let (mut w4, mut r4) = client(config.listen);
    assert_eq!(ask(&mut w4, &mut r4).0, 200);
    assert_eq!(
        ask(&mut w2, &mut r2).0,
        200,
        "the other one is still served"
    );
    router.stop();
}

#[test]
fn a_backend_at_its_connection_limit_makes_a_request_wait_then_503() {
    let (held, heads) = mpsc::channel();
    let (release, go) = mpsc::channel::<()>();
    let go = std::sync::Mutex::new(go);
    let up = upstream(move |conn| {
        while let Some((head, _r)) = read_request(&conn) {
            if head.starts_with("GET /hello/hold ") {
                let _ = held.send(());
                let _ = go.lock().expect("lock").recv();
            }
            let mut w = &conn;
            if w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n")
                .is_err()
            {
                return;
            }
        }
    });
    let (router, config) = router(vec![hello()], up, |c| {
        c.max_upstream_connections = 1;
        c.timeouts.connect = SHORT;
    });
    // The one allowed connection is busy with a held request.
    let (mut w1, mut r1) = client(config.listen);
    w1.write_all(b"GET /hello/hold HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    heads.recv_timeout(GUARD).expect("the upstream holds it");

    let (mut w2, mut r2) = client(config.listen);
    w2.write_all(b"GET /hello/other HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let head = read_head(&mut r2).expect("an answer");
    assert!(
        head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{head}"
    );
    let mut body = vec![0; content_length(&head)];
    r2.read_exact(&mut body).expect("body");
    assert_eq!(body, b"hello@1.0.0 is at its connection limit\n");
    assert_eq!(
        metric(config.admin, "switchyard_router_upstream_saturated_total"),
        1.0
    );

    release.send(()).expect("release");
    let head = read_head(&mut r1).expect("the held answer");
    assert_eq!(status(&head), 200, "{head}");
    let mut body = [0u8; 3];
    r1.read_exact(&mut body).expect("body");
    // The connection is back in the pool: the next request gets it.
    let (mut w3, mut r3) = client(config.listen);
    w3.write_all(b"GET /hello/again HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let head = read_head(&mut r3).expect("an answer");
    assert_eq!(status(&head), 200, "{head}");
    assert_eq!(
        metric(config.admin, "switchyard_router_upstream_connections"),
        1.0
    );
    router.stop();
}

#[test]
fn an_upgraded_connection_carries_bytes_both_ways_until_both_sides_are_silent_too_long() {
    let (upstream_closed, closed) = mpsc::channel();
    let up = upstream(move |conn| {
        let Some((_, mut r)) = read_request(&conn) else {
            return;
        };
        let mut w = &conn;
        if w.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n",
        )
        .is_err()
        {
            return;
        }
        // Echoes what it reads, until the router closes.
        let mut buf = [0u8; 1024];
        loop {
            match r.read(&mut buf) {
                Ok(n) if n > 0 => {
                    if w.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                _ => break,
            }
        }
        let _ = upstream_closed.send(());
    });
    let (router, config) = router(vec![hello()], up, |c| c.timeouts.tunnel_idle = SHORT);
    let (mut w, mut r) = client(config.listen);
    w.write_all(
        b"GET /hello/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .expect("write");
    let head = read_head(&mut r).expect("101");
    assert_eq!(status(&head), 101, "{head}");
    w.write_all(b"ping").expect("write");
    let mut echo = [0u8; 4];
    r.read_exact(&mut echo).expect("the echo");
    assert_eq!(&echo, b"ping");
    // Now neither side says anything.
    assert!(closed_by_router(&mut r), "the router closes the tunnel");
    closed
        .recv_timeout(GUARD)
        .expect("and the upstream side of it");
    router.stop();
}
