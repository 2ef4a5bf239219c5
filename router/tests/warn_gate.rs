//! A failing backend under load is logged at most once a second, not once per request (issue
//! 12): the router writes its warnings through a per-backend gate with no lock.
//!
//! Its own test binary: it installs the process's global log subscriber, which counts the
//! router's warnings about a backend.

mod common;
use common::free;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use switchyard_core::{Function, FunctionVersion};
use switchyard_router::source::State;
use switchyard_router::{RouterConfig, Source};
use tracing_subscriber::layer::SubscriberExt;

/// Counts warnings that name a function (the router's per-backend warnings).
struct Count(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Count {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let names_a_function = event.metadata().fields().field("function").is_some();
        if *event.metadata().level() == tracing::Level::WARN && names_a_function {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[test]
fn two_hundred_failed_requests_write_a_handful_of_warnings_not_two_hundred() {
    let warnings = Arc::new(AtomicUsize::new(0));
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(Count(Arc::clone(&warnings))),
    )
    .expect("the only subscriber of this binary");

    let state = State {
        functions: vec![Arc::new(
            Function::test("dead").with_weight("1.0.0", 1_000_000),
        )],
        versions: vec![Arc::new(FunctionVersion::test_endpoint(
            "dead",
            "1.0.0",
            &format!("http://{}", free()),
        ))],
    };
    let mut config = RouterConfig::new("warn-gate-test");
    config.listen = free();
    config.admin = free();
    config.grace_period = Duration::from_secs(1);
    let listen = config.listen;
    let router = switchyard_router::start(config, Source::Fixed(state)).expect("router starts");
    // Waited for as long as a loaded machine needs (it was 5 s), and failing loudly.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let conn = loop {
        match TcpStream::connect(listen) {
            Ok(conn) => break conn,
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "the router did not listen within 60 s: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut w = conn.try_clone().expect("clone");
    let mut r = BufReader::new(conn);
    for _ in 0..200 {
        w.write_all(b"GET /dead/x HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("write");
        let mut head = String::new();
        let mut length = 0;
        loop {
            let mut line = String::new();
            r.read_line(&mut line).expect("a head line");
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().expect("a length");
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        assert!(head.starts_with("HTTP/1.1 502"), "{head}");
        let mut body = vec![0; length];
        r.read_exact(&mut body).expect("body");
    }
    let written = warnings.load(Ordering::SeqCst);
    // One a second at most: 200 answers take well under five seconds here, and one line per
    // request would be 200.
    assert!(
        (1..=5).contains(&written),
        "{written} warnings for 200 failures"
    );
    router.stop();
}
