//! Shadow traffic (issue 16), off the request path: per function a [`Lane`] of a fixed number
//! of reusable copy slots and a fixed set of workers fed by a bounded channel. A request that
//! is chosen claims a free slot (one atomic swap) and writes its copy into the slot's buffers;
//! no free slot means the copy is dropped and counted, never queued. A worker sends the copy
//! to the shadow version, reads its answer (up to `maxBody`), compares it with the serving
//! version's through [`switchyard_core::shadow::compare`], counts the outcome in [`Stats`]
//! and frees the slot. The request path itself (`proxy/mirror.rs`) never waits on any of it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard_core::resources::ShadowSpec;
use switchyard_core::shadow::{
    compare, cut_example_text, Answer, Differing, Ignore, JsonPath, ShadowCounts, ShadowExample,
    ShadowNumbers,
};
use switchyard_core::table::Route;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::http1::{Body, Head};

/// Copies in flight per function (each slot holds at most a request and the serving answer of
/// `maxBody` plus a head; each worker one shadow answer): the memory bound is
/// `SLOTS × 2 + WORKERS` bodies of `maxBody`.
pub const SLOTS: usize = 16;
/// Workers per function: copies sent at once.
pub const WORKERS: usize = 4;
/// Differing examples kept per function.
pub const EXAMPLES: usize = 5;
/// The longest a copy may take, connect to last byte; a slower shadow version counts an error.
pub const COPY_TIMEOUT: Duration = Duration::from_secs(10);
/// Room for response and request heads beside a body of `maxBody`.
pub const HEAD_ROOM: usize = 64 * 1024;

/// Why a request was not copied, or a copy not compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Its method is not listed.
    Method = 0,
    /// Its body (declared or read) is over `maxBody`.
    Body,
    /// Its body was still arriving when it was forwarded (not buffered for a copy).
    Streamed,
    /// A connection upgrade (WebSocket): nothing to compare.
    Upgrade,
    /// The shadow version itself served it.
    Serving,
    /// The serving version's answer failed or did not end cleanly.
    Primary,
    /// An answer's body is over `maxBody`.
    Answer,
    /// The shadow version is served over https, which copies are not sent over (the CLI
    /// refuses such a shadow; this counts one written by other means instead of erroring).
    Https,
}

const SKIPS: [(Skip, &str); 8] = [
    (Skip::Method, "method"),
    (Skip::Body, "body-over-max"),
    (Skip::Streamed, "body-streamed"),
    (Skip::Upgrade, "upgrade"),
    (Skip::Serving, "served-by-shadow"),
    (Skip::Primary, "serving-failed"),
    (Skip::Answer, "answer-over-max"),
    (Skip::Https, "https-upstream"),
];

/// One differing copy, as `/shadow` and `shadow status` show it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Example {
    /// When it was compared, RFC 3339.
    pub at: String,
    /// The request method.
    pub method: String,
    /// The request target, as the client sent it.
    pub path: String,
    /// The serving version's status.
    pub serving: u16,
    /// The shadow version's status.
    pub shadow: u16,
    /// The first differing header, if any.
    pub header: Option<String>,
    /// Where the bodies first differ (a JSON path or `byte N`), if they do.
    pub body: Option<String>,
}

/// The counts of one function's shadow version; they outlive table swaps.
#[derive(Default)]
pub struct Stats {
    /// The `n` of `roll(n)` for the share: copies are exact like the split, not a coin flip.
    pub counter: AtomicU64,
    /// Copies handed to a worker.
    pub sent: AtomicU64,
    /// Copies whose two answers were compared.
    pub compared: AtomicU64,
    /// Compared and equal.
    pub matched: AtomicU64,
    /// Compared with a different status.
    pub differ_status: AtomicU64,
    /// Compared with a differing header.
    pub differ_header: AtomicU64,
    /// Compared with a differing body.
    pub differ_body: AtomicU64,
    /// The shadow version failed: refused, reset, malformed or slower than [`COPY_TIMEOUT`].
    pub errors: AtomicU64,
    /// Chosen while every slot was busy: not copied.
    pub dropped: AtomicU64,
    skipped: [AtomicU64; SKIPS.len()],
    /// Sum of the serving version's latency over compared copies, microseconds.
    pub serving_us: AtomicU64,
    /// Sum of the shadow version's latency over compared copies, microseconds.
    pub shadow_us: AtomicU64,
    examples: Mutex<(usize, Vec<Example>)>,
}

impl Stats {
    /// Counts a request not copied (or a copy not compared) for `why`.
    pub fn skip(&self, why: Skip) {
        self.skipped[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The skips for `why`.
    pub fn skipped(&self, why: Skip) -> u64 {
        self.skipped[why as usize].load(Ordering::Relaxed)
    }

    /// The last differing examples, oldest first.
    pub fn examples(&self) -> Vec<Example> {
        let Ok(ring) = self.examples.lock() else {
            return Vec::new();
        };
        let (next, list) = &*ring;
        let mut out = list[*next..].to_vec();
        out.extend_from_slice(&list[..*next]);
        out
    }

    /// Keeps `e` in the ring of the last [`EXAMPLES`] (a worker's lock, never the request's).
    fn remember(&self, e: Example) {
        if let Ok(mut ring) = self.examples.lock() {
            let (next, list) = &mut *ring;
            if list.len() < EXAMPLES {
                list.push(e);
            } else {
                list[*next] = e;
                *next = (*next + 1) % EXAMPLES;
            }
        }
    }

    /// The counts as a report carries them (docs/protocol.md, "Shadow").
    pub fn counts(&self, function: &str, version: &str) -> ShadowCounts {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ShadowCounts {
            function: function.to_string(),
            version: version.to_string(),
            sent: n(&self.sent),
            compared: n(&self.compared),
            matched: n(&self.matched),
            differing: Differing {
                status: n(&self.differ_status),
                header: n(&self.differ_header),
                body: n(&self.differ_body),
            },
            errors: n(&self.errors),
            dropped: n(&self.dropped),
            skipped: SKIPS
                .iter()
                .map(|(why, name)| (name.to_string(), self.skipped(*why)))
                .filter(|(_, count)| *count > 0)
                .collect(),
            serving_us: n(&self.serving_us),
            shadow_us: n(&self.shadow_us),
            examples: self
                .examples()
                .into_iter()
                .map(|e| ShadowExample {
                    at: e.at,
                    method: cut_example_text(&e.method),
                    path: cut_example_text(&e.path),
                    serving_status: e.serving,
                    shadow_status: e.shadow,
                    header: e.header.as_deref().map(cut_example_text),
                    body: e.body.as_deref().map(cut_example_text),
                })
                .collect(),
        }
    }

    fn to_json(&self, function: &str, version: &str) -> Value {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let compared = n(&self.compared);
        let mean = |sum: u64| {
            if compared == 0 {
                Value::Null
            } else {
                json!(sum as f64 / compared as f64 / 1000.0)
            }
        };
        let skipped: serde_json::Map<String, Value> = SKIPS
            .iter()
            .map(|(s, name)| (name.to_string(), json!(self.skipped(*s))))
            .collect();
        json!({
            "function": function,
            "version": version,
            "sent": n(&self.sent),
            "compared": compared,
            "matched": n(&self.matched),
            "differing": {
                "status": n(&self.differ_status),
                "header": n(&self.differ_header),
                "body": n(&self.differ_body),
            },
            "errors": n(&self.errors),
            "dropped": n(&self.dropped),
            "skipped": skipped,
            "servingMeanMs": mean(n(&self.serving_us)),
            "shadowMeanMs": mean(n(&self.shadow_us)),
            "examples": self.examples().iter().map(|e| json!({
                "at": e.at,
                "method": e.method,
                "path": e.path,
                "servingStatus": e.serving,
                "shadowStatus": e.shadow,
                "header": e.header,
                "body": e.body,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Every function's shadow counts, by `namespace/name` and shadow version. Locked when a table
/// is built and when `/shadow` or `/metrics` is read, never per request.
#[derive(Default)]
pub struct Registry {
    by: Mutex<HashMap<(String, String), Arc<Stats>>>,
}

impl Registry {
    /// The counts of `function`'s shadow `version` (new ones on first use).
    pub fn stats(&self, function: &str, version: &str) -> Arc<Stats> {
        let Ok(mut by) = self.by.lock() else {
            return Arc::default();
        };
        Arc::clone(
            by.entry((function.to_string(), version.to_string()))
                .or_default(),
        )
    }

    fn sorted(&self) -> Vec<((String, String), Arc<Stats>)> {
        let Ok(by) = self.by.lock() else {
            return Vec::new();
        };
        let mut all: Vec<_> = by.iter().map(|(k, v)| (k.clone(), Arc::clone(v))).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// What the replica reports of its copies, read `at` (RFC 3339): every shadowed version
    /// that counted something, capped (see [`ShadowNumbers::new`]).
    pub fn report(&self, at: String) -> ShadowNumbers {
        let all = self
            .sorted()
            .iter()
            .map(|((f, v), s)| s.counts(f, v))
            .collect();
        ShadowNumbers::new(at, all)
    }

    /// `/shadow`: every function's counts and examples.
    pub fn to_json(&self) -> Value {
        let list: Vec<Value> = self
            .sorted()
            .iter()
            .map(|((f, v), s)| s.to_json(f, v))
            .collect();
        json!({ "shadows": list })
    }

    /// The counts in the Prometheus text format.
    pub fn render(&self, out: &mut Vec<u8>) {
        use std::fmt::Write;
        let all = self.sorted();
        if all.is_empty() {
            return;
        }
        let mut text = String::new();
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(text, "# HELP switchyard_shadow_copies_total Shadow copies by outcome.\n# TYPE switchyard_shadow_copies_total counter");
        for ((f, v), s) in &all {
            for (outcome, value) in [
                ("sent", n(&s.sent)),
                ("compared", n(&s.compared)),
                ("matched", n(&s.matched)),
                ("differing_status", n(&s.differ_status)),
                ("differing_header", n(&s.differ_header)),
                ("differing_body", n(&s.differ_body)),
                ("error", n(&s.errors)),
                ("dropped", n(&s.dropped)),
            ] {
                let _ = writeln!(text, "switchyard_shadow_copies_total{{function=\"{f}\",version=\"{v}\",outcome=\"{outcome}\"}} {value}");
            }
        }
        let _ = writeln!(text, "# HELP switchyard_shadow_skipped_total Requests not copied, or copies not compared, by reason.\n# TYPE switchyard_shadow_skipped_total counter");
        for ((f, v), s) in &all {
            for (why, name) in SKIPS {
                let _ = writeln!(text, "switchyard_shadow_skipped_total{{function=\"{f}\",version=\"{v}\",reason=\"{name}\"}} {}", s.skipped(why));
            }
        }
        let _ = writeln!(text, "# HELP switchyard_shadow_latency_seconds_sum Latency summed over compared copies, by side.\n# TYPE switchyard_shadow_latency_seconds_sum counter");
        for ((f, v), s) in &all {
            for (side, us) in [("serving", n(&s.serving_us)), ("shadow", n(&s.shadow_us))] {
                let _ = writeln!(text, "switchyard_shadow_latency_seconds_sum{{function=\"{f}\",version=\"{v}\",side=\"{side}\"}} {}", us as f64 / 1e6);
            }
        }
        out.extend_from_slice(text.as_bytes());
    }
}

/// What a function's shadow copies and compares, read once when its route is built.
pub struct Config {
    /// Index of the shadow version in the route's backends.
    pub backend: usize,
    /// Share of matching requests, ppm.
    pub share: u32,
    /// Methods copied, uppercase.
    pub methods: Vec<Vec<u8>>,
    /// Body limit, bytes.
    pub max_body: usize,
    /// What the comparison leaves out.
    pub ignore: Ignore,
    /// `host:port` of the shadow version.
    pub address: String,
    /// Whether the shadow version is served over https (then nothing is copied).
    pub tls: bool,
}

/// One copy: the request as sent to the shadow version, and the serving version's answer.
#[derive(Default)]
pub struct Copy {
    /// Request head (with `x-switchyard-shadow: 1`) and body.
    pub req: Vec<u8>,
    /// The serving answer, head and body as they came.
    pub primary: Vec<u8>,
    /// Whether the serving answer outgrew the limit (then it is not compared).
    pub oversized: bool,
    /// Whether it answered a HEAD request (no body follows its head).
    pub head_request: bool,
    /// The serving version's latency.
    pub serving: Duration,
}

/// A reusable copy slot: `busy` is claimed with one swap by the request that fills it, and
/// released by the worker that empties it, so the lock beside it is never contended.
pub struct Slot {
    /// Claimed.
    pub busy: AtomicBool,
    /// The buffers (their capacity is kept from copy to copy).
    pub copy: tokio::sync::Mutex<Copy>,
}

/// What the lane and its workers share.
pub struct Inner {
    /// The configuration.
    pub config: Config,
    /// The counts.
    pub stats: Arc<Stats>,
    /// The slots.
    pub slots: Box<[Slot]>,
}

/// One function's shadow machinery for one table generation: its workers end when it is
/// dropped (the table that holds it is swapped out and its last request has finished).
pub struct Lane {
    /// Shared with the workers.
    pub inner: Arc<Inner>,
    tx: mpsc::Sender<usize>,
    rx: Mutex<Option<mpsc::Receiver<usize>>>,
    started: AtomicBool,
}

impl Lane {
    /// The lane of `spec` on `route`, counted in `stats`; `None` when the shadow version is
    /// not among the route's backends (validation refuses that before it gets here).
    pub fn new(spec: &ShadowSpec, route: &Route, stats: Arc<Stats>) -> Option<Lane> {
        let backend = route
            .backends
            .iter()
            .position(|b| b.version == spec.version)?;
        let upstream = &route.backends[backend].upstream;
        let config = Config {
            backend,
            share: spec.share,
            methods: spec
                .effective_methods()
                .into_iter()
                .map(String::into_bytes)
                .collect(),
            max_body: spec.effective_max_body() as usize,
            ignore: Ignore {
                headers: spec.ignore_headers.clone(),
                json: spec
                    .ignore_json
                    .iter()
                    .filter_map(|p| JsonPath::parse(p).ok())
                    .collect(),
            },
            address: format!("{}:{}", upstream.host, upstream.port),
            tls: upstream.tls,
        };
        let (tx, rx) = mpsc::channel(SLOTS);
        Some(Lane {
            inner: Arc::new(Inner {
                config,
                stats,
                slots: (0..SLOTS)
                    .map(|_| Slot {
                        busy: AtomicBool::new(false),
                        copy: tokio::sync::Mutex::new(Copy::default()),
                    })
                    .collect(),
            }),
            tx,
            rx: Mutex::new(Some(rx)),
            started: AtomicBool::new(false),
        })
    }

    /// Claims a free slot; `None` when all are busy (the copy is dropped and counted).
    pub fn claim(&self) -> Option<usize> {
        let slots = &self.inner.slots;
        let found = slots.iter().position(|s| {
            s.busy
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        });
        if found.is_none() {
            self.inner.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// Hands a filled slot to the workers (started on the first copy, on the runtime of the
    /// request that made it).
    pub fn dispatch(&self, slot: usize) {
        if !self.started.swap(true, Ordering::AcqRel) {
            self.start();
        }
        match self.tx.try_send(slot) {
            Ok(()) => {
                self.inner.stats.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                // Cannot happen (as many places as slots), but never wait for it.
                self.inner.stats.dropped.fetch_add(1, Ordering::Relaxed);
                self.release(slot);
            }
        }
    }

    /// Frees a slot that was claimed but not dispatched.
    pub fn release(&self, slot: usize) {
        self.inner.slots[slot].busy.store(false, Ordering::Release);
    }

    fn start(&self) {
        let Some(rx) = self.rx.lock().ok().and_then(|mut rx| rx.take()) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..WORKERS {
            runtime.spawn(work(Arc::clone(&self.inner), Arc::clone(&rx)));
        }
    }
}

/// A worker: one copy at a time until the lane is gone.
async fn work(inner: Arc<Inner>, rx: Arc<tokio::sync::Mutex<mpsc::Receiver<usize>>>) {
    let mut answer = Vec::new();
    loop {
        let next = rx.lock().await.recv().await;
        let Some(i) = next else {
            return;
        };
        let slot = &inner.slots[i];
        {
            let mut copy = slot.copy.lock().await;
            answer.clear();
            one(&inner, &copy, &mut answer).await;
            copy.req.clear();
            copy.primary.clear();
            copy.oversized = false;
            // Keep at most one body's worth of capacity from copy to copy.
            copy.req.shrink_to(inner.config.max_body + HEAD_ROOM);
            copy.primary.shrink_to(inner.config.max_body + HEAD_ROOM);
        }
        answer.shrink_to(inner.config.max_body + HEAD_ROOM);
        slot.busy.store(false, Ordering::Release);
    }
}

/// Sends one copy, reads the shadow's answer into `answer`, compares and counts.
async fn one(inner: &Inner, copy: &Copy, answer: &mut Vec<u8>) {
    let stats = &inner.stats;
    let limit = inner.config.max_body + HEAD_ROOM;
    let started = Instant::now();
    let exchange = async {
        let mut up = tokio::net::TcpStream::connect(&inner.config.address).await?;
        up.write_all(&copy.req).await?;
        let mut chunk = [0u8; 8192];
        loop {
            let n = up.read(&mut chunk).await?;
            if n == 0 || answer.len() + n > limit {
                return Ok::<bool, std::io::Error>(n == 0);
            }
            answer.extend_from_slice(&chunk[..n]);
        }
    };
    let ended = match tokio::time::timeout(COPY_TIMEOUT, exchange).await {
        Ok(Ok(ended)) => ended,
        _ => {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let took = started.elapsed();
    if !ended {
        stats.skip(Skip::Answer);
        return;
    }
    let mut shadow_head = Head::default();
    let mut primary_head = Head::default();
    if !matches!(shadow_head.parse_response(answer), Ok(true)) {
        stats.errors.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if !matches!(primary_head.parse_response(&copy.primary), Ok(true)) {
        stats.skip(Skip::Primary);
        return;
    }
    let (Some(shadow_body), Some(primary_body)) = (
        body_of(&shadow_head, answer, copy.head_request),
        body_of(&primary_head, &copy.primary, copy.head_request),
    ) else {
        stats.errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    if shadow_body.len() > inner.config.max_body || primary_body.len() > inner.config.max_body {
        stats.skip(Skip::Answer);
        return;
    }
    let fields = |h: &Head, buf: &'_ [u8]| -> Vec<(String, String)> {
        h.fields
            .iter()
            .map(|f| {
                (
                    String::from_utf8_lossy(f.name.of(buf)).into_owned(),
                    String::from_utf8_lossy(f.value.of(buf)).into_owned(),
                )
            })
            .collect()
    };
    let (a, b) = (
        fields(&primary_head, &copy.primary),
        fields(&shadow_head, answer),
    );
    let (a, b) = (pairs(&a), pairs(&b));
    let serving = Answer {
        status: primary_head.status,
        headers: &a,
        body: &primary_body,
    };
    let shadow = Answer {
        status: shadow_head.status,
        headers: &b,
        body: &shadow_body,
    };
    let d = compare(&serving, &shadow, &inner.config.ignore);
    stats.compared.fetch_add(1, Ordering::Relaxed);
    stats
        .serving_us
        .fetch_add(copy.serving.as_micros() as u64, Ordering::Relaxed);
    stats
        .shadow_us
        .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    if d.matched() {
        stats.matched.fetch_add(1, Ordering::Relaxed);
        return;
    }
    for (differs, count) in [
        (d.status.is_some(), &stats.differ_status),
        (d.header.is_some(), &stats.differ_header),
        (d.body.is_some(), &stats.differ_body),
    ] {
        if differs {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }
    let line = copy.req.split(|&c| c == b'\r').next().unwrap_or_default();
    let mut words = line.split(|&c| c == b' ');
    let method = String::from_utf8_lossy(words.next().unwrap_or_default()).into_owned();
    let path = String::from_utf8_lossy(words.next().unwrap_or_default()).into_owned();
    stats.remember(Example {
        at: format!("{:.3}", jiff::Timestamp::now()),
        method,
        path,
        serving: primary_head.status,
        shadow: shadow_head.status,
        header: d.header,
        body: d.body,
    });
}

fn pairs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect()
}

/// The body of a response held whole in `buf` (chunked bodies decoded); `None` when the
/// framing is broken.
fn body_of(head: &Head, buf: &[u8], head_request: bool) -> Option<Vec<u8>> {
    let rest = &buf[head.len..];
    if head_request || head.status == 204 || head.status == 304 {
        return Some(Vec::new());
    }
    match head.meta.as_ref().ok()?.body {
        Body::Length(n) => rest.get(..n as usize).map(<[u8]>::to_vec),
        Body::UntilClose => Some(rest.to_vec()),
        Body::Chunked => dechunk(rest),
    }
}

/// Decodes a chunked body (extensions and trailers dropped).
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_decoded_and_broken_ones_refused() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").as_deref(),
            Some(&b"abcde"[..])
        );
        assert_eq!(dechunk(b"5\r\nab"), None);
        assert_eq!(dechunk(b"zz\r\n"), None);
    }

    #[test]
    fn the_example_ring_keeps_the_last_five_in_order() {
        let stats = Stats::default();
        for i in 0..8u16 {
            stats.remember(Example {
                serving: i,
                ..Example::default()
            });
        }
        let kept: Vec<u16> = stats.examples().iter().map(|e| e.serving).collect();
        assert_eq!(kept, [3, 4, 5, 6, 7]);
    }
}
