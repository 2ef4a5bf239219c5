//! The sampler behind the published numbers (docs/protocol.md, "Numbers"): once a second, off
//! the request path, it reads every version's cumulative counters ([`crate::metrics`]), keeps
//! one reading per 5 s for the last minute, and publishes [`Numbers`] (totals since start and
//! the last minute's difference) on a `watch` channel, only when they changed.
//!
//! The arithmetic is `switchyard_core::numbers`; [`Sampler`] is pure (readings and the time
//! come in as arguments) so it is tested without a clock.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use switchyard_core::numbers::{Counts, Numbers, VersionNumbers};
use tokio::sync::watch;

use crate::live::Shared;
use crate::metrics::Metrics;

/// How often the counters are read.
pub const READ_EVERY: Duration = Duration::from_secs(1);
/// How often a reading is kept for the window.
const KEEP_EVERY_MS: u64 = 5_000;
/// Slack on [`KEEP_EVERY_MS`]: a tick that comes a little early still keeps its reading, so
/// kept readings do not drift to 6 s apart.
const KEEP_SLACK_MS: u64 = 500;
/// The span of `window`.
pub const WINDOW: Duration = Duration::from_secs(60);
/// At most this many versions per report; `omitted` counts the rest.
pub const MAX_VERSIONS: usize = 300;

/// `(function, version)`, shared with the counters (no string copied per reading).
pub type Key = (Arc<str>, Arc<str>);

/// The versions that in-flight rollouts compare (`crate::canary::compared_of`): every report
/// lists those that served ahead of the others, so that the cap never hides a canary or its
/// baseline from the decider.
pub type Compared = std::collections::HashSet<Key>;

/// Every served version's cumulative counts at one moment. A version whose counters did not
/// move since the previous reading shares its `Counts` with it.
pub type Reading = HashMap<Key, Arc<Counts>>;

/// A reading kept for the window, taken `at_ms` on the sampler's monotonic clock.
struct Kept {
    at_ms: u64,
    reading: Reading,
}

/// The window arithmetic over successive readings, with no clock and no IO.
pub struct Sampler {
    window_ms: u64,
    max_versions: usize,
    /// Oldest first, at least [`KEEP_EVERY_MS`] (less the slack) apart, none older than the
    /// window once a newer one is there.
    kept: VecDeque<Kept>,
    /// The newest reading, for [`read`] to reuse unchanged counts.
    last: Reading,
    /// Listed first, within the cap.
    compared: Arc<Compared>,
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler::new(WINDOW, MAX_VERSIONS)
    }
}

impl Sampler {
    /// A sampler for windows of `window` and at most `max_versions` versions per report.
    pub fn new(window: Duration, max_versions: usize) -> Self {
        Sampler {
            window_ms: window.as_millis() as u64,
            max_versions,
            kept: VecDeque::new(),
            last: Reading::new(),
            compared: Arc::default(),
        }
    }

    /// Sets the versions the rollouts in flight compare; from the next [`Self::observe`] on,
    /// those that served are listed ahead of every other version and count within the cap.
    pub fn set_compared(&mut self, compared: Arc<Compared>) {
        self.compared = compared;
    }

    /// The newest reading passed to [`Self::observe`] (empty before the first).
    pub fn last(&self) -> &Reading {
        &self.last
    }

    /// Takes the reading `current`, made `now_ms` on a monotonic clock (milliseconds, never
    /// decreasing) and `at` on the wall clock (RFC 3339), and returns the numbers to publish:
    /// per version its counts since start (`total`) and since the oldest kept reading within
    /// the window (`window`, whose actual span is `windowSeconds`: under a minute while the
    /// router is young, between 55 and 60 s after). Versions that never served are left out;
    /// the others are ordered by window requests, most first, then by name, at most
    /// `max_versions` of them.
    pub fn observe(&mut self, now_ms: u64, at: String, current: Reading) -> Numbers {
        // Drop readings that left the window; keep the first one ever until a newer one
        // exists, so a young router's window starts at its first reading.
        let horizon = now_ms.saturating_sub(self.window_ms);
        while self.kept.len() > 1 && self.kept[0].at_ms < horizon {
            self.kept.pop_front();
        }
        if self.kept.len() == 1 && self.kept[0].at_ms < horizon {
            self.kept.pop_front();
        }
        let due = match self.kept.back() {
            None => true,
            Some(k) => now_ms.saturating_sub(k.at_ms) + KEEP_SLACK_MS >= KEEP_EVERY_MS,
        };
        if due {
            self.kept.push_back(Kept {
                at_ms: now_ms,
                reading: current.clone(),
            });
        }
        let base = &self.kept[0];
        let span_ms = now_ms.saturating_sub(base.at_ms);
        let none = Counts::default();
        // `later` is false for a compared version: it sorts first.
        let mut versions: Vec<(&Key, &Arc<Counts>, Counts, bool)> = current
            .iter()
            .filter(|(_, total)| total.requests > 0)
            .map(|(key, total)| {
                let window = match base.reading.get(key) {
                    // Untouched since the window's start (most versions of a big table).
                    Some(before) if Arc::ptr_eq(before, total) => Counts::default(),
                    Some(before) => total.since(before),
                    None => total.since(&none),
                };
                (key, total, window, !self.compared.contains(key))
            })
            .collect();
        versions.sort_by(|a, b| {
            (a.3.cmp(&b.3))
                .then_with(|| b.2.requests.cmp(&a.2.requests))
                .then_with(|| a.0.cmp(b.0))
        });
        let omitted = versions.len().saturating_sub(self.max_versions);
        versions.truncate(self.max_versions);
        let numbers = Numbers {
            at,
            window_seconds: ((span_ms + 500) / 1000) as u32,
            versions: versions
                .into_iter()
                .map(|((function, version), total, window, _)| VersionNumbers {
                    function: function.to_string(),
                    version: version.to_string(),
                    total: total.as_ref().clone(),
                    window,
                })
                .collect(),
            omitted: omitted as u32,
        };
        self.last = current;
        numbers
    }
}

/// Whether `new` says something `old` did not: a count, the set of versions, or (while
/// anything is in the window) the window's span. An idle router's numbers never change, so
/// its report is never rewritten for them.
pub fn changed(old: &Numbers, new: &Numbers) -> bool {
    let busy = new.versions.iter().any(|v| v.window.requests > 0);
    old.versions != new.versions
        || old.omitted != new.omitted
        || (busy && old.window_seconds != new.window_seconds)
}

/// Reads every version's counters, reusing from `previous` the counts of those whose requests
/// did not move (their histogram is not read again).
pub fn read(metrics: &Metrics, previous: &Reading) -> Reading {
    metrics
        .all_version_counters()
        .into_iter()
        .filter_map(|c| {
            let requests = c.requests();
            if requests == 0 {
                return None;
            }
            let key = (Arc::clone(&c.function), Arc::clone(&c.version));
            let counts = match previous.get(&key) {
                Some(old) if old.requests == requests => Arc::clone(old),
                _ => Arc::new(c.read()),
            };
            Some((key, counts))
        })
        .collect()
}

/// This replica's counters now, of the versions `wanted` picks (`function`, `version`), as a
/// reading of its counters with the epoch `started_at`: what the canary judges its own counts
/// by, fresh rather than as last published. Versions that never served are left out, as in the
/// published numbers.
pub fn own_reading(
    metrics: &Metrics,
    started_at: &str,
    wanted: impl Fn(&str, &str) -> bool,
) -> switchyard_core::numbers::Reading {
    let totals = metrics
        .all_version_counters()
        .into_iter()
        .filter(|c| c.requests() > 0 && wanted(&c.function, &c.version))
        .map(|c| {
            let key = switchyard_core::numbers::VersionKey {
                function: c.function.to_string(),
                version: c.version.to_string(),
            };
            (key, c.read())
        })
        .collect();
    switchyard_core::numbers::Reading {
        started_at: started_at.to_string(),
        totals,
    }
}

/// Starts the sampler on the current tokio runtime: it reads the counters every second until
/// `stop` turns true (or nobody listens any more) and sends each new [`Numbers`] on the
/// returned channel (the first value: nothing counted, `at` = the counters' start). Pair it
/// with `shared.metrics.started_at()` as the report's `startedAt`. `compared` carries the
/// versions the rollouts in flight compare (see [`Sampler::set_compared`]).
pub fn spawn(
    shared: Arc<Shared>,
    mut compared: watch::Receiver<Arc<Compared>>,
    mut stop: watch::Receiver<bool>,
) -> watch::Receiver<Arc<Numbers>> {
    let first = Numbers {
        at: shared.metrics.started_at(),
        window_seconds: 0,
        versions: Vec::new(),
        omitted: 0,
    };
    let (tx, rx) = watch::channel(Arc::new(first));
    tokio::spawn(async move {
        let origin = Instant::now();
        let mut sampler = Sampler::default();
        let mut tick = tokio::time::interval(READ_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => {}
                () = tx.closed() => return,
            }
            if *stop.borrow() {
                return;
            }
            if compared.has_changed().unwrap_or(false) {
                sampler.set_compared(Arc::clone(&compared.borrow_and_update()));
            }
            let current = read(&shared.metrics, sampler.last());
            let now_ms = origin.elapsed().as_millis() as u64;
            let numbers = sampler.observe(now_ms, rfc3339(SystemTime::now()), current);
            tx.send_if_modified(|old| {
                if changed(old, &numbers) {
                    *old = Arc::new(numbers);
                    true
                } else {
                    false
                }
            });
        }
    });
    rx
}

/// RFC 3339 with milliseconds, as every time in the report.
fn rfc3339(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .map(|t| format!("{t:.3}"))
        .unwrap_or_default()
}

/// The admin port's view of the numbers: the counters' epoch, what is published, and per
/// version the window's rate, error rate and quantiles as `switchyard status` computes them.
pub fn to_json(started_at: &str, numbers: &Numbers) -> serde_json::Value {
    let seconds = f64::from(numbers.window_seconds.max(1));
    let summary: Vec<serde_json::Value> = numbers
        .versions
        .iter()
        .map(|v| {
            serde_json::json!({
                "function": v.function,
                "version": v.version,
                "requestsPerSecond": v.window.requests as f64 / seconds,
                "errorRate": v.window.error_rate(),
                "p50Ms": v.window.p50_ms(),
                "p99Ms": v.window.p99_ms(),
            })
        })
        .collect();
    serde_json::json!({
        "startedAt": started_at,
        "numbers": numbers,
        "window": summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_core::numbers::bucket_of;

    fn key(function: &str, version: &str) -> Key {
        (Arc::from(function), Arc::from(version))
    }

    /// A reading where each version has `requests` requests, a tenth of them failed, all in
    /// the 1 ms bucket.
    fn reading(versions: &[(&str, &str, u64)]) -> Reading {
        versions
            .iter()
            .map(|&(f, v, requests)| {
                let counts = Counts {
                    requests,
                    failures: requests / 10,
                    latency: [(bucket_of(1_000), requests)].into(),
                };
                (key(f, v), Arc::new(counts))
            })
            .collect()
    }

    fn at(ms: u64) -> String {
        format!("t+{ms}")
    }

    fn find<'a>(n: &'a Numbers, version: &str) -> &'a VersionNumbers {
        n.versions.iter().find(|v| v.version == version).unwrap()
    }

    #[test]
    fn a_young_router_s_window_starts_at_its_first_reading() {
        let mut s = Sampler::default();
        let n = s.observe(0, at(0), reading(&[("prod/a", "1", 5)]));
        assert_eq!(n.window_seconds, 0);
        assert_eq!(find(&n, "1").total.requests, 5);
        assert_eq!(find(&n, "1").window.requests, 0);
        let n = s.observe(20_000, at(20_000), reading(&[("prod/a", "1", 45)]));
        assert_eq!(n.window_seconds, 20);
        assert_eq!(find(&n, "1").total.requests, 45);
        assert_eq!(find(&n, "1").window.requests, 40);
        assert_eq!(find(&n, "1").window.failures, 4);
        assert_eq!(n.at, "t+20000");
    }

    #[test]
    fn the_window_is_the_last_minute_read_from_readings_kept_every_5_s() {
        let mut s = Sampler::default();
        // 10 requests per second for 2 minutes, read every second.
        let mut last = None;
        for second in 0..=120u64 {
            let n = s.observe(
                second * 1_000,
                at(second),
                reading(&[("prod/a", "1", second * 10)]),
            );
            last = Some(n);
        }
        let n = last.unwrap();
        let v = find(&n, "1");
        assert_eq!(v.total.requests, 1_200);
        // The oldest kept reading within the minute: at most 5 s younger than a minute.
        assert!(
            (55..=60).contains(&n.window_seconds),
            "{}",
            n.window_seconds
        );
        assert_eq!(v.window.requests, u64::from(n.window_seconds) * 10);
        // Never more than a minute's and a reading's worth of readings are kept.
        assert!(s.kept.len() <= 13, "{} readings kept", s.kept.len());
    }

    #[test]
    fn traffic_that_stopped_leaves_the_window_but_stays_in_the_total() {
        let mut s = Sampler::default();
        s.observe(0, at(0), reading(&[("prod/a", "1", 0)]));
        for second in 1..=10u64 {
            s.observe(second * 1_000, at(second), reading(&[("prod/a", "1", 100)]));
        }
        let mut n = None;
        for second in 11..=80u64 {
            n = Some(s.observe(second * 1_000, at(second), reading(&[("prod/a", "1", 100)])));
        }
        let n = n.unwrap();
        let v = find(&n, "1");
        assert_eq!((v.total.requests, v.window.requests), (100, 0));
        assert!(v.window.latency.is_empty());
    }

    #[test]
    fn versions_are_ordered_by_window_requests_and_capped() {
        let mut s = Sampler::new(WINDOW, 2);
        s.observe(
            0,
            at(0),
            reading(&[
                ("prod/a", "1", 0),
                ("prod/a", "2", 0),
                ("prod/b", "1", 500),
                ("prod/c", "1", 0),
            ]),
        );
        let n = s.observe(
            10_000,
            at(10),
            reading(&[
                ("prod/a", "1", 10),
                ("prod/a", "2", 30),
                ("prod/b", "1", 500),
                ("prod/c", "1", 20),
            ]),
        );
        let order: Vec<(&str, &str)> = n
            .versions
            .iter()
            .map(|v| (v.function.as_str(), v.version.as_str()))
            .collect();
        assert_eq!(order, [("prod/a", "2"), ("prod/c", "1")]);
        assert_eq!(n.omitted, 2);
    }

    #[test]
    fn the_versions_a_rollout_compares_are_listed_first_within_the_cap() {
        // Three busy versions and a canary and its baseline with less traffic: under a cap of
        // three, the canary and the baseline are published and the busiest other version
        // after them; the rest are omitted.
        let mut s = Sampler::new(WINDOW, 3);
        s.set_compared(Arc::new(Compared::from([
            key("prod/shop", "2"),
            key("prod/shop", "1"),
            // Compared but never served here: still left out.
            key("prod/idle", "9"),
        ])));
        let traffic = |scale: u64| {
            reading(&[
                ("prod/a", "1", 300 * scale),
                ("prod/b", "1", 200 * scale),
                ("prod/c", "1", 100 * scale),
                ("prod/shop", "1", 20 * scale),
                ("prod/shop", "2", 2 * scale),
                ("prod/idle", "9", 0),
            ])
        };
        s.observe(0, at(0), traffic(0));
        let n = s.observe(10_000, at(10), traffic(1));
        let order: Vec<(&str, &str)> = n
            .versions
            .iter()
            .map(|v| (v.function.as_str(), v.version.as_str()))
            .collect();
        assert_eq!(
            order,
            [("prod/shop", "1"), ("prod/shop", "2"), ("prod/a", "1")]
        );
        assert_eq!(n.omitted, 2);
        assert_eq!(find(&n, "2").window.requests, 2);

        // More compared versions than the cap: the cap still holds.
        s.set_compared(Arc::new(Compared::from([
            key("prod/shop", "2"),
            key("prod/shop", "1"),
            key("prod/c", "1"),
            key("prod/b", "1"),
        ])));
        let n = s.observe(20_000, at(20), traffic(2));
        assert_eq!(n.versions.len(), 3);
        assert_eq!(n.omitted, 2);
        assert!(n.versions.iter().all(|v| v.function != "prod/a"));

        // The rollouts ended: back to the busiest first.
        s.set_compared(Arc::default());
        let n = s.observe(30_000, at(30), traffic(3));
        let functions: Vec<&str> = n.versions.iter().map(|v| v.function.as_str()).collect();
        assert_eq!(functions, ["prod/a", "prod/b", "prod/c"]);
    }

    #[test]
    fn versions_that_never_served_are_not_published() {
        let mut s = Sampler::default();
        let n = s.observe(0, at(0), reading(&[("prod/a", "1", 0)]));
        assert!(n.versions.is_empty());
        assert_eq!(n.omitted, 0);
    }

    #[test]
    fn an_idle_router_publishes_no_change_and_a_busy_one_does() {
        let mut s = Sampler::default();
        let idle = |s: &mut Sampler, second: u64| {
            s.observe(second * 1_000, at(second), reading(&[("prod/a", "1", 7)]))
        };
        let mut old = idle(&mut s, 0);
        // Once the 7 requests are out of the window, nothing changes any more.
        for second in 1..70 {
            old = idle(&mut s, second);
        }
        for second in 70..200 {
            let new = idle(&mut s, second);
            assert!(!changed(&old, &new), "second {second}: {new:?}");
            old = new;
        }
        let busy = s.observe(200_000, at(200), reading(&[("prod/a", "1", 8)]));
        assert!(changed(&old, &busy));
    }

    #[test]
    fn reading_reuses_counts_that_did_not_move_and_rereads_those_that_did() {
        let metrics = Metrics::new();
        let a = metrics.backend("prod/a", "1");
        let b = metrics.backend("prod/a", "2");
        metrics.backend("prod/a", "never");
        a.record(Duration::from_millis(1), false);
        b.record(Duration::from_millis(2), true);
        let first = read(&metrics, &Reading::new());
        assert_eq!(first.len(), 2, "a version that never served is not read");
        b.record(Duration::from_millis(3), false);
        let second = read(&metrics, &first);
        let (ka, kb) = (key("prod/a", "1"), key("prod/a", "2"));
        assert!(Arc::ptr_eq(&first[&ka], &second[&ka]));
        assert_eq!(second[&kb].requests, 2);
        assert_eq!(second[&kb].failures, 1);
        assert_eq!(second[&kb].latency.values().sum::<u64>(), 2);
    }

    #[test]
    fn the_own_reading_holds_the_wanted_versions_that_served_with_the_epoch() {
        let metrics = Metrics::new();
        let a = metrics.backend("prod/a", "1");
        let b = metrics.backend("prod/a", "2");
        metrics.backend("prod/a", "3");
        a.record(Duration::from_millis(1), false);
        a.record(Duration::from_millis(1), true);
        b.record(Duration::from_millis(1), false);
        let r = own_reading(&metrics, "epoch", |f, v| f == "prod/a" && v != "2");
        assert_eq!(r.started_at, "epoch");
        let versions: Vec<&str> = r.totals.keys().map(|k| k.version.as_str()).collect();
        assert_eq!(versions, ["1"], "2 is not wanted, 3 never served");
        let counts = r.totals.values().next().unwrap();
        assert_eq!((counts.requests, counts.failures), (2, 1));
    }

    #[test]
    fn the_admin_json_carries_the_epoch_the_numbers_and_a_summary() {
        let mut s = Sampler::default();
        s.observe(0, at(0), reading(&[("prod/a", "1", 0)]));
        let n = s.observe(10_000, at(10), reading(&[("prod/a", "1", 100)]));
        let json = to_json("2026-12-02T10:00:00.000Z", &n);
        assert_eq!(json["startedAt"], "2026-12-02T10:00:00.000Z");
        assert_eq!(json["numbers"]["windowSeconds"], 10);
        assert_eq!(json["numbers"]["versions"][0]["window"]["requests"], 100);
        assert_eq!(json["window"][0]["requestsPerSecond"], 10.0);
        assert_eq!(json["window"][0]["errorRate"], 0.1);
        assert!(json["window"][0]["p99Ms"].as_f64().unwrap() >= 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_spawned_sampler_publishes_what_the_router_counted() {
        let shared = Arc::new(Shared::new("r1".into()));
        let (stop_tx, stop) = watch::channel(false);
        let (_compared, compared) = watch::channel(Arc::default());
        let mut rx = spawn(Arc::clone(&shared), compared, stop);
        assert!(rx.borrow().versions.is_empty());
        let m = shared.metrics.backend("prod/a", "1");
        m.record(Duration::from_millis(1), true);
        // The paused clock jumps to the next tick; the value changes once it was read.
        rx.changed().await.expect("the sampler runs");
        let n = Arc::clone(&rx.borrow_and_update());
        assert_eq!(n.versions.len(), 1);
        assert_eq!(n.versions[0].total.requests, 1);
        assert_eq!(n.versions[0].total.failures, 1);
        stop_tx.send(true).unwrap();
        // Stopped: the sender is dropped and the channel closes.
        while rx.changed().await.is_ok() {}
    }

    /// An upstream on 127.0.0.1 that answers every request on its own connection, with 500 to
    /// `fail_of_ten` of every ten requests (the first ones of each ten) and 200 to the rest.
    fn upstream(fail_of_ten: u64) -> std::net::SocketAddr {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for (n, conn) in listener.incoming().enumerate() {
                let Ok(mut conn) = conn else { return };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match conn.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                let status = if (n as u64) % 10 < fail_of_ten {
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                let _ = conn.write_all(
                    format!(
                        "HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                    )
                    .as_bytes(),
                );
            }
        });
        addr
    }

    fn free_addr() -> std::net::SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    /// One request through the router; its status, or `None` when it could not connect yet.
    fn get(router: std::net::SocketAddr) -> Option<u16> {
        use std::io::{Read as _, Write as _};
        let mut conn = std::net::TcpStream::connect(router).ok()?;
        conn.write_all(b"GET /hello/x HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .ok()?;
        let mut reply = String::new();
        conn.read_to_string(&mut reply).ok()?;
        reply.get(9..12)?.parse().ok()
    }

    #[test]
    fn requests_through_the_proxy_show_in_the_numbers_per_version() {
        use switchyard_core::numbers::live_view;
        use switchyard_core::{Function, FunctionVersion};

        let good = upstream(0);
        let bad = upstream(3);
        let function = Function::test("hello")
            .with_weight("1.0.0", 500_000)
            .with_weight("2.0.0", 500_000);
        let split = function.spec.traffic.clone();
        let state = crate::source::State {
            functions: vec![Arc::new(function)],
            versions: vec![
                Arc::new(FunctionVersion::test_endpoint(
                    "hello",
                    "1.0.0",
                    &format!("http://{good}"),
                )),
                Arc::new(FunctionVersion::test_endpoint(
                    "hello",
                    "2.0.0",
                    &format!("http://{bad}"),
                )),
            ],
        };
        let mut config = crate::RouterConfig::new("r1");
        config.listen = free_addr();
        config.admin = free_addr();
        let router =
            crate::start(config.clone(), crate::Source::Fixed(state)).expect("router starts");
        let metrics = &router.shared().metrics;
        let mut sampler = Sampler::default();
        sampler.observe(0, at(0), read(metrics, &Reading::new()));

        // The first request also waits for the listener: retried until it connects.
        let mut statuses = Vec::new();
        for _ in 0..500 {
            if let Some(status) = get(config.listen) {
                statuses.push(status);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(statuses.len(), 1, "the router never accepted a connection");
        while statuses.len() < 200 {
            statuses.push(get(config.listen).expect("a reply"));
        }
        let n = sampler.observe(10_000, at(10_000), read(metrics, sampler.last()));
        router.stop();

        // Exact shares: 100 requests each; the bad version failed 3 of every 10.
        let failed = statuses.iter().filter(|&&s| s == 500).count();
        assert_eq!(failed, 30, "{statuses:?}");
        let view = live_view("default/hello", &split, &[&n]);
        let summary = |v: &switchyard_core::numbers::VersionLive| {
            (
                v.version.clone(),
                v.requests,
                v.failures,
                v.share,
                v.error_rate,
            )
        };
        assert_eq!(view.len(), 2);
        assert_eq!(
            summary(&view[0]),
            ("1.0.0".into(), 100, 0, Some(0.5), Some(0.0))
        );
        assert_eq!(
            summary(&view[1]),
            ("2.0.0".into(), 100, 30, Some(0.5), Some(0.3))
        );
        assert_eq!(view[0].requests_per_second, 10.0);
        assert!(view
            .iter()
            .all(|v| v.p50_ms.is_some() && v.p99_ms >= v.p50_ms));
        // The window and the totals agree on a router this young.
        assert!(n
            .versions
            .iter()
            .all(|v| v.total.requests == v.window.requests));
    }
}
