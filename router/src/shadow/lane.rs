//! One function's copy machinery (issue 16): a [`Lane`] of reusable copy slots claimed by the
//! request path with one atomic swap, and a fixed set of workers that send each copy to the
//! shadow version, read its answer, compare it with the serving version's
//! (`switchyard_core::shadow::compare`) and count the outcome in the lane's [`Stats`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard_core::resources::ShadowSpec;
use switchyard_core::shadow::{compare, Answer, Ignore, JsonPath};
use switchyard_core::table::Route;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::stats::{Example, Skip, Stats};
use super::{COPY_TIMEOUT, HEAD_ROOM, SLOTS, WORKERS};
use crate::http1::{Body, Head};

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
}
