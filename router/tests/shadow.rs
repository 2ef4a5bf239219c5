//! Shadow traffic (issue 16): a real router in front of two real upstreams on 127.0.0.1, the
//! serving version 1.0.0 and the shadow version 1.1.0. Asserted: the exact share copied, the
//! mismatch counts by kind with examples, ignored headers and JSON paths, a blocked or dead
//! shadow version changing nothing for clients (copies dropped or counted as errors), unlisted
//! methods and bodies over the limit skipped and counted, and no shadow answer or header ever
//! reaching a client. Waits are on the admin port's `/shadow` counts (polled with a guard),
//! or on channels the upstreams signal; never on elapsed time.

mod common;
use common::{free, header};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard_core::resources::ShadowSpec;
use switchyard_core::{Function, FunctionVersion};
use switchyard_router::source::State;
use switchyard_router::{RouterConfig, RouterHandle, Source};

/// Longest any wait of a test lasts.
const GUARD: Duration = Duration::from_secs(20);

/// One request as an upstream saw it.
struct Seen {
    head: String,
    body: Vec<u8>,
}

/// An upstream that answers each request (one per connection) with `answer(head, n)`, `n`
/// counting its requests, and reports what it saw on `seen`.
fn upstream(
    answer: impl Fn(&str, u64) -> String + Send + Sync + 'static,
) -> (SocketAddr, mpsc::Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    let answer = Arc::new(answer);
    let (tx, rx) = mpsc::channel();
    let tx = Arc::new(Mutex::new(tx));
    let n = Arc::new(AtomicU64::new(0));
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (answer, tx, n) = (Arc::clone(&answer), Arc::clone(&tx), Arc::clone(&n));
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().expect("clone"));
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    head.push_str(&line);
                    if line == "\r\n" {
                        break;
                    }
                }
                let len = header(&head, "content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                if r.read_exact(&mut body).is_err() {
                    return;
                }
                let text = answer(&head, n.fetch_add(1, Ordering::Relaxed));
                let _ = (&conn).write_all(text.as_bytes());
                let _ = tx.lock().map(|tx| tx.send(Seen { head, body }));
            });
        }
    });
    (addr, rx)
}

fn path_of(head: &str) -> &str {
    head.split(' ').nth(1).unwrap_or_default()
}

fn json_response(status: u16, date: u64, body: &str) -> String {
    format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ndate: {date}\r\nx-kind: fn\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The serving version: `{"path": …, "ts": n}`, a `date` that changes on every answer.
fn serving(head: &str, n: u64) -> String {
    let body = format!("{{\"path\":\"{}\",\"ts\":{n}}}", path_of(head));
    json_response(200, n, &body)
}

/// The shadow version: differs from [`serving`] in `date` and `$.ts` always (both ignored),
/// and for real under `/hello/body/` (an extra member) and `/hello/status/` (a 500).
fn shadow(head: &str, n: u64) -> String {
    let path = path_of(head);
    let date = 1_000_000 + n;
    if path.starts_with("/hello/body/") {
        let body = format!("{{\"path\":\"{path}\",\"ts\":{date},\"extra\":1}}");
        return json_response(200, date, &body);
    }
    let body = format!("{{\"path\":\"{path}\",\"ts\":{date}}}");
    let status = if path.starts_with("/hello/status/") {
        500
    } else {
        200
    };
    json_response(status, date, &body)
}

fn spec(share: u32) -> ShadowSpec {
    ShadowSpec {
        version: "1.1.0".into(),
        share,
        methods: vec![],
        max_body: None,
        ignore_headers: vec!["date".into()],
        ignore_json: vec!["$.ts".into()],
    }
}

/// A router serving hello: 1.0.0 at `primary` with all the traffic, 1.1.0 at `shadow` with
/// none, shadowed per `spec`.
fn start(
    primary: SocketAddr,
    shadow: SocketAddr,
    spec: Option<ShadowSpec>,
) -> (RouterHandle, RouterConfig) {
    start_at(primary, &format!("http://{shadow}"), spec)
}

/// [`start`] with the shadow version's endpoint URL as given.
fn start_at(
    primary: SocketAddr,
    shadow_url: &str,
    spec: Option<ShadowSpec>,
) -> (RouterHandle, RouterConfig) {
    let mut f = Function::test("hello")
        .with_weight("1.0.0", 1_000_000)
        .with_weight("1.1.0", 0);
    f.spec.shadow = spec.map(Box::new);
    let state = State {
        functions: vec![Arc::new(f)],
        versions: vec![
            Arc::new(FunctionVersion::test_endpoint(
                "hello",
                "1.0.0",
                &format!("http://{primary}"),
            )),
            Arc::new(FunctionVersion::test_endpoint("hello", "1.1.0", shadow_url)),
        ],
    };
    let mut config = RouterConfig::new("shadow-test");
    config.listen = free();
    config.admin = free();
    config.grace_period = Duration::from_secs(1);
    let handle =
        switchyard_router::start(config.clone(), Source::Fixed(state)).expect("router starts");
    let until = Instant::now() + GUARD;
    while admin(config.admin, "/readyz").0 != 200 {
        assert!(Instant::now() < until, "router not ready");
        std::thread::yield_now();
    }
    (handle, config)
}

fn admin(addr: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut conn) = TcpStream::connect(addr) else {
        return (0, String::new());
    };
    let _ = conn.set_read_timeout(Some(GUARD));
    let _ = write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = conn.read_to_string(&mut text);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return (0, String::new());
    };
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

/// hello's entry of `/shadow`.
fn counts(config: &RouterConfig) -> serde_json::Value {
    let (_, body) = admin(config.admin, "/shadow");
    let all: serde_json::Value = serde_json::from_str(&body).expect("/shadow is JSON");
    all["shadows"][0].clone()
}

/// Waits until `done` holds for hello's counts, and returns them.
fn wait_counts(
    config: &RouterConfig,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let until = Instant::now() + GUARD;
    loop {
        let c = counts(config);
        if done(&c) {
            return c;
        }
        assert!(Instant::now() < until, "counts never settled: {c}");
        std::thread::yield_now();
    }
}

/// One request through the router: (status, head, body).
fn request(config: &RouterConfig, method: &str, path: &str, body: &str) -> (u16, String, String) {
    let mut conn = TcpStream::connect(config.listen).expect("connect");
    conn.set_read_timeout(Some(GUARD)).expect("timeout");
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut text = String::new();
    conn.read_to_string(&mut text).expect("answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

fn n(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or(u64::MAX)
}

#[test]
fn differences_are_counted_by_kind_with_examples_and_ignored_fields_are_ignored() {
    let (primary, _p) = upstream(serving);
    let (shadow_addr, seen) = upstream(shadow);
    let (router, config) = start(primary, shadow_addr, Some(spec(1_000_000)));
    // 40 requests: 10 whose body differs, 5 whose status differs, 25 equal but for the ignored
    // date header and $.ts.
    let mut paths = Vec::new();
    for i in 0..40 {
        paths.push(match i % 8 {
            0 | 4 => format!("/hello/body/{i}"),
            2 => format!("/hello/status/{i}"),
            _ => format!("/hello/same/{i}"),
        });
    }
    for p in &paths {
        let (status, head, body) = request(&config, "GET", p, "");
        // The client gets the serving version's answer, never the shadow's.
        assert_eq!(status, 200, "{head}");
        assert!(
            head.contains("x-switchyard-served-by: hello@1.0.0"),
            "{head}"
        );
        assert!(
            !head.to_ascii_lowercase().contains("x-switchyard-shadow"),
            "{head}"
        );
        assert!(
            !body.contains("extra") && body.contains(p.as_str()),
            "{body}"
        );
    }
    let c = wait_counts(&config, |c| n(&c["compared"]) + n(&c["errors"]) == 40);
    assert_eq!(
        (
            n(&c["sent"]),
            n(&c["compared"]),
            n(&c["matched"]),
            n(&c["dropped"])
        ),
        (40, 40, 25, 0),
        "{c}"
    );
    assert_eq!(
        (
            n(&c["differing"]["status"]),
            n(&c["differing"]["header"]),
            n(&c["differing"]["body"])
        ),
        (5, 0, 10),
        "{c}"
    );
    let examples = c["examples"].as_array().expect("examples");
    assert_eq!(examples.len(), 5, "{c}");
    for e in examples {
        let path = e["path"].as_str().unwrap_or_default();
        assert_eq!(e["method"], "GET");
        if path.starts_with("/hello/body/") {
            assert_eq!((n(&e["servingStatus"]), n(&e["shadowStatus"])), (200, 200));
            assert_eq!(e["body"], "$.extra", "{e}");
        } else {
            assert!(path.starts_with("/hello/status/"), "{e}");
            assert_eq!((n(&e["servingStatus"]), n(&e["shadowStatus"])), (200, 500));
        }
    }
    // Every copy said what it is.
    let copies: Vec<Seen> = seen.try_iter().collect();
    assert_eq!(copies.len(), 40);
    assert!(copies
        .iter()
        .all(|s| header(&s.head, "x-switchyard-shadow") == Some("1")));
    // And Prometheus has them.
    let (_, metrics) = admin(config.admin, "/metrics");
    assert!(
        metrics.contains("switchyard_shadow_copies_total{function=\"default/hello\",version=\"1.1.0\",outcome=\"differing_body\"} 10"),
        "{metrics}"
    );
    router.stop();
}

#[test]
fn the_share_is_exact_not_a_coin_flip() {
    let (primary, _p) = upstream(serving);
    let (shadow_addr, _s) = upstream(serving);
    // 25%: exactly one in four requests, within one, over 200.
    let (router, config) = start(primary, shadow_addr, Some(spec(250_000)));
    for i in 0..200 {
        assert_eq!(request(&config, "GET", &format!("/hello/{i}"), "").0, 200);
    }
    let c = wait_counts(&config, |c| {
        n(&c["compared"]) + n(&c["errors"]) == n(&c["sent"])
    });
    assert!((49..=51).contains(&n(&c["sent"])), "{c}");
    assert_eq!(n(&c["matched"]), n(&c["sent"]), "{c}");
    router.stop();
}

#[test]
fn a_blocked_shadow_drops_copies_past_the_bound_and_a_dead_one_counts_errors_without_touching_clients(
) {
    let (primary, _p) = upstream(serving);
    // A shadow version that holds every answer until the test lets it go.
    let (open_tx, open_rx) = mpsc::channel::<()>();
    let gate = Arc::new(Mutex::new(open_rx));
    let (shadow_addr, _s) = upstream(move |head, n| {
        if let Ok(rx) = gate.lock() {
            let _ = rx.recv_timeout(GUARD);
        }
        serving(head, n)
    });
    let (router, config) = start(primary, shadow_addr, Some(spec(1_000_000)));
    for i in 0..40 {
        let (status, _, body) = request(&config, "GET", &format!("/hello/{i}"), "");
        assert_eq!(status, 200);
        assert!(body.contains(&format!("/hello/{i}")), "{body}");
    }
    // 16 slots are held by copies the shadow has not answered: the other 24 were dropped.
    let c = counts(&config);
    assert_eq!((n(&c["sent"]), n(&c["dropped"])), (16, 24), "{c}");
    drop(open_tx);
    let c = wait_counts(&config, |c| n(&c["compared"]) == 16);
    assert_eq!(n(&c["matched"]), 16, "{c}");
    router.stop();

    // A shadow version that is down: every copy is an error, every client answer as before.
    let dead = free();
    let (router, config) = start(primary, dead, Some(spec(1_000_000)));
    for i in 0..10 {
        assert_eq!(request(&config, "GET", &format!("/hello/{i}"), "").0, 200);
    }
    let c = wait_counts(&config, |c| n(&c["errors"]) == 10);
    assert_eq!((n(&c["sent"]), n(&c["compared"])), (10, 0), "{c}");
    router.stop();
}

#[test]
fn unlisted_methods_and_bodies_over_the_limit_are_skipped_and_counted() {
    let (primary, _p) = upstream(serving);
    let (shadow_addr, seen) = upstream(serving);
    let (router, config) = start(primary, shadow_addr, Some(spec(1_000_000)));
    assert_eq!(request(&config, "POST", "/hello/a", "x=1").0, 200);
    let c = counts(&config);
    assert_eq!((n(&c["sent"]), n(&c["skipped"]["method"])), (0, 1), "{c}");
    router.stop();

    let listed = ShadowSpec {
        methods: vec!["GET".into(), "POST".into()],
        max_body: Some(100),
        ..spec(1_000_000)
    };
    let (router, config) = start(primary, shadow_addr, Some(listed));
    assert_eq!(
        request(&config, "POST", "/hello/big", &"x".repeat(101)).0,
        200
    );
    assert_eq!(request(&config, "POST", "/hello/small", "abc").0, 200);
    let c = wait_counts(&config, |c| n(&c["compared"]) == 1);
    assert_eq!(
        (n(&c["sent"]), n(&c["skipped"]["body-over-max"])),
        (1, 1),
        "{c}"
    );
    let copy = seen.recv_timeout(GUARD).expect("the small POST was copied");
    assert_eq!(
        (path_of(&copy.head), copy.body.as_slice()),
        ("/hello/small", &b"abc"[..])
    );
    router.stop();
}

#[test]
fn without_a_shadow_spec_nothing_is_copied() {
    let (primary, _p) = upstream(serving);
    let (shadow_addr, seen) = upstream(serving);
    let (router, config) = start(primary, shadow_addr, None);
    for i in 0..10 {
        assert_eq!(request(&config, "GET", &format!("/hello/{i}"), "").0, 200);
    }
    let (_, body) = admin(config.admin, "/shadow");
    assert_eq!(body.trim(), "{\n  \"shadows\": []\n}");
    assert!(seen.try_recv().is_err());
    router.stop();
}

#[test]
fn answers_over_the_limit_are_not_compared_but_counted() {
    let (primary, _p) = upstream(serving);
    let (shadow_addr, _s) = upstream(serving);
    // Every answer here is longer than 10 bytes.
    let tiny = ShadowSpec {
        max_body: Some(10),
        ..spec(1_000_000)
    };
    let (router, config) = start(primary, shadow_addr, Some(tiny));
    for i in 0..3 {
        assert_eq!(request(&config, "GET", &format!("/hello/{i}"), "").0, 200);
    }
    let c = wait_counts(&config, |c| n(&c["skipped"]["answer-over-max"]) == 3);
    assert_eq!((n(&c["compared"]), n(&c["errors"])), (0, 0), "{c}");
    router.stop();
}

#[test]
fn an_http_1_0_request_is_copied_on_a_connection_that_closes() {
    let (primary, _p) = upstream(serving);
    let (shadow_addr, seen) = upstream(serving);
    let (router, config) = start(primary, shadow_addr, Some(spec(1_000_000)));
    let mut conn = TcpStream::connect(config.listen).expect("connect");
    conn.set_read_timeout(Some(GUARD)).expect("timeout");
    conn.write_all(b"GET /hello/old HTTP/1.0\r\nHost: x\r\n\r\n")
        .expect("send");
    let mut text = String::new();
    conn.read_to_string(&mut text).expect("answer");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let copy = seen.recv_timeout(GUARD).expect("copied");
    assert_eq!(
        header(&copy.head, "connection"),
        Some("close"),
        "{}",
        copy.head
    );
    let c = wait_counts(&config, |c| n(&c["compared"]) == 1);
    assert_eq!(n(&c["matched"]), 1, "{c}");
    router.stop();
}

#[test]
fn a_shadow_served_over_https_is_skipped_and_counted_never_sent_as_plain_http() {
    let (primary, _p) = upstream(serving);
    let (shadow_addr, seen) = upstream(shadow);
    let (router, config) = start_at(
        primary,
        &format!("https://{shadow_addr}"),
        Some(spec(1_000_000)),
    );
    for i in 0..5 {
        let (status, _, _) = request(&config, "GET", &format!("/hello/same/{i}"), "");
        assert_eq!(status, 200);
    }
    let c = wait_counts(&config, |c| n(&c["skipped"]["https-upstream"]) == 5);
    assert_eq!((n(&c["sent"]), n(&c["errors"])), (0, 0), "{c}");
    // Before this, each copy went to the https port as plain HTTP and counted as an error.
    assert!(
        seen.try_recv().is_err(),
        "nothing reached the shadow version"
    );
    router.stop();
}
