//! The router's Prometheus metrics, in a registry of its own (several routers can share a
//! process in tests without colliding), and the per-version counters behind its published
//! numbers (docs/protocol.md, "Numbers"): lock-free, one histogram of `numbers::bucket_of`
//! buckets per version, read once a second by `crate::numbers`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use switchyard_core::numbers::{bucket_of, Counts};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Every metric one router exports.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    errors: IntCounterVec,
    latency: HistogramVec,
    /// Requests no route matched (404).
    pub unmatched: IntCounter,
    /// Requests refused before routing (unknown pin: 400).
    pub refused: IntCounter,
    /// The router's table generation: +1 on every swap.
    pub table_generation: IntGauge,
    /// Seconds since the live table's content was read from its source (set at scrape time).
    pub table_age: IntGauge,
    /// Routes in the live table.
    pub routes: IntGauge,
    /// Function updates refused (invalid spec or conflict) since start.
    pub rejected_updates: IntCounter,
    /// Functions whose latest generation is refused right now (they serve their last good one).
    pub rejected_functions: IntGauge,
    /// 1 while the config source is connected, 0 while serving a table it can no longer refresh.
    pub source_connected: IntGauge,
    /// Time to build the last table, seconds.
    pub build_seconds: Histogram,
    /// The counters behind the published numbers, by function then version. Locked only
    /// when a table is built and when the sampler lists them, never per request.
    versions: Mutex<HashMap<Arc<str>, ByVersion>>,
    /// The epoch of every counter here: the report's `startedAt`.
    started: SystemTime,
    // Shadow traffic (issue 16), one block: its counts, rendered beside the registry's.
    /// Every function's shadow counts and examples.
    pub shadow: crate::shadow::Registry,
    // Connection bounds (issue 12 item 8), one block.
    /// Client connections open on the proxy port.
    pub client_connections: IntGauge,
    /// Client connections refused at `--max-connections`.
    pub refused_connections: IntCounter,
    /// Upstream connections open (in use or idle), by upstream address.
    pub upstream_connections: prometheus::IntGaugeVec,
    /// Requests answered 503 because their upstream stayed at `--max-upstream-connections`.
    pub upstream_saturated: IntCounterVec,
    // Failovers (issue 13), one block.
    /// Requests that moved to another version because theirs could not be reached, by the
    /// version they left.
    failovers: IntCounterVec,
}

/// One Function's version counters, by version.
type ByVersion = HashMap<Arc<str>, Arc<VersionCounters>>;

/// A backend's request metrics, resolved once per route build so the request path never
/// hashes label values.
#[derive(Clone)]
pub struct BackendMetrics {
    /// Requests answered.
    pub requests: IntCounter,
    /// Requests that failed upstream or answered 5xx.
    pub errors: IntCounter,
    /// Time from request start to the end of the response, seconds.
    pub latency: Histogram,
    /// The same, for the published numbers.
    pub numbers: Arc<VersionCounters>,
    /// Requests that left this version for another because it could not be reached.
    pub failovers: IntCounter,
}

impl BackendMetrics {
    /// Counts one finished request that took `elapsed` (arrival to the end of its response)
    /// and `failed` (5xx, or the upstream never answered): atomic adds only.
    #[inline]
    pub fn record(&self, elapsed: Duration, failed: bool) {
        self.requests.inc();
        self.latency.observe(elapsed.as_secs_f64());
        if failed {
            self.errors.inc();
        }
        self.numbers.record(elapsed, failed);
    }

    /// Counts one request that could not reach this version after `elapsed` and moved to
    /// another: a failed request of this version (so its errors never exceed its requests,
    /// here and in the published numbers) and a failover. The version that then answers
    /// counts the request again, as its own.
    #[inline]
    pub fn failed_over(&self, elapsed: Duration) {
        self.record(elapsed, true);
        self.failovers.inc();
    }
}

/// Latencies the histogram tells apart: up to 2^32 µs (71 minutes); anything longer (a
/// long-lived tunnel) is counted in the last bucket.
pub const RECORDED_BUCKETS: usize = bucket_of(u32::MAX as u64) as usize + 1;

/// One version's counters since the router started: requests, failures and a histogram of
/// [`bucket_of`] buckets, each a relaxed atomic add on the request path.
pub struct VersionCounters {
    /// `namespace/name` of the Function.
    pub function: Arc<str>,
    /// The version.
    pub version: Arc<str>,
    requests: AtomicU64,
    failures: AtomicU64,
    /// Allocated by the first request of the version (1.9 KB, once per version for the
    /// process's life): versions that never serve, the weight-0 ones of 10,000 Functions,
    /// cost nothing. After that, `get` is one load.
    latency: OnceLock<Box<[AtomicU64; RECORDED_BUCKETS]>>,
}

impl VersionCounters {
    fn new(function: Arc<str>, version: Arc<str>) -> Self {
        VersionCounters {
            function,
            version,
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            latency: OnceLock::new(),
        }
    }

    /// Counts one request (see [`BackendMetrics::record`]).
    #[inline]
    pub fn record(&self, elapsed: Duration, failed: bool) {
        let micros = elapsed
            .as_secs()
            .saturating_mul(1_000_000)
            .saturating_add(u64::from(elapsed.subsec_micros()));
        let bucket = (bucket_of(micros) as usize).min(RECORDED_BUCKETS - 1);
        let histogram = self
            .latency
            .get_or_init(|| Box::new(std::array::from_fn(|_| AtomicU64::new(0))));
        histogram[bucket].fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        // Last, and released: a reader that sees this request also sees its bucket.
        self.requests.fetch_add(1, Ordering::Release);
    }

    /// Requests counted so far (cheap: the sampler reads the rest only when this moved).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Acquire)
    }

    /// Everything counted so far, with only the buckets in use. Concurrent requests may be
    /// in the histogram and not yet in `requests`, never the other way round.
    pub fn read(&self) -> Counts {
        let requests = self.requests.load(Ordering::Acquire);
        let failures = self.failures.load(Ordering::Relaxed);
        let latency = self
            .latency
            .get()
            .map(|h| {
                h.iter()
                    .enumerate()
                    .filter_map(|(i, n)| {
                        let n = n.load(Ordering::Relaxed);
                        (n > 0).then_some((i as u16, n))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Counts {
            requests,
            failures,
            latency,
        }
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let labels = &["function", "version"];
        let requests = IntCounterVec::new(
            Opts::new(
                "switchyard_router_requests_total",
                "Requests proxied, by function and version",
            ),
            labels,
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new(
                "switchyard_router_errors_total",
                "Requests that failed upstream or answered 5xx, by function and version",
            ),
            labels,
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "switchyard_router_request_duration_seconds",
                "Request latency through the router, by function and version",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            labels,
        )
        .expect("valid metric");
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        let m = Metrics {
            unmatched: counter(
                "switchyard_router_unmatched_requests_total",
                "Requests no route matched (404)",
            ),
            refused: counter(
                "switchyard_router_refused_requests_total",
                "Requests refused before routing (unknown pin: 400)",
            ),
            table_generation: gauge(
                "switchyard_router_table_generation",
                "Generation of the live routing table, +1 per swap",
            ),
            table_age: gauge(
                "switchyard_router_table_age_seconds",
                "Seconds since the live table's content was read from its source",
            ),
            routes: gauge("switchyard_router_routes", "Routes in the live table"),
            rejected_updates: counter(
                "switchyard_router_rejected_updates_total",
                "Function updates refused (invalid or conflicting) since start",
            ),
            rejected_functions: gauge(
                "switchyard_router_rejected_functions",
                "Functions whose latest generation is refused and that serve their last good one",
            ),
            source_connected: gauge(
                "switchyard_router_source_connected",
                "1 while the config source is connected, else 0",
            ),
            build_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "switchyard_router_table_build_seconds",
                    "Time to build a routing table",
                )
                .buckets(vec![0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
            )
            .expect("valid metric"),
            registry,
            requests,
            errors,
            latency,
            versions: Mutex::new(HashMap::new()),
            started: SystemTime::now(),
            shadow: Default::default(),
            client_connections: gauge(
                "switchyard_router_client_connections",
                "Client connections open on the proxy port",
            ),
            refused_connections: counter(
                "switchyard_router_refused_connections_total",
                "Client connections refused at --max-connections",
            ),
            upstream_connections: prometheus::IntGaugeVec::new(
                Opts::new(
                    "switchyard_router_upstream_connections",
                    "Upstream connections open (in use or idle), by upstream address",
                ),
                &["upstream"],
            )
            .expect("valid metric"),
            upstream_saturated: IntCounterVec::new(
                Opts::new(
                    "switchyard_router_upstream_saturated_total",
                    "Requests answered 503 because their upstream stayed at --max-upstream-connections",
                ),
                &["upstream"],
            )
            .expect("valid metric"),
            failovers: IntCounterVec::new(
                Opts::new(
                    "switchyard_router_failovers_total",
                    "Requests that failed over to another version because this one could not be reached (also counted in its requests and errors)",
                ),
                &["function", "version"],
            )
            .expect("valid metric"),
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.requests.clone()),
            Box::new(m.errors.clone()),
            Box::new(m.latency.clone()),
            Box::new(m.unmatched.clone()),
            Box::new(m.refused.clone()),
            Box::new(m.table_generation.clone()),
            Box::new(m.table_age.clone()),
            Box::new(m.routes.clone()),
            Box::new(m.rejected_updates.clone()),
            Box::new(m.rejected_functions.clone()),
            Box::new(m.source_connected.clone()),
            Box::new(m.build_seconds.clone()),
        ];
        for c in collectors {
            m.registry.register(c).expect("metric names are unique");
        }
        let bounds: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.client_connections.clone()),
            Box::new(m.refused_connections.clone()),
            Box::new(m.upstream_connections.clone()),
            Box::new(m.upstream_saturated.clone()),
        ];
        for c in bounds {
            m.registry.register(c).expect("metric names are unique");
        }
        m.registry
            .register(Box::new(m.failovers.clone()))
            .expect("metric names are unique");
        m
    }

    /// The metrics of one version of one function (`namespace/name`).
    pub fn backend(&self, function: &str, version: &str) -> BackendMetrics {
        let labels = &[function, version];
        BackendMetrics {
            requests: self.requests.with_label_values(labels),
            errors: self.errors.with_label_values(labels),
            latency: self.latency.with_label_values(labels),
            numbers: self.version_counters(function, version),
            failovers: self.failovers.with_label_values(labels),
        }
    }

    /// The counters of one version, the same for every table that routes to it.
    fn version_counters(&self, function: &str, version: &str) -> Arc<VersionCounters> {
        // A poisoned lock only means a panic elsewhere mid-insert: the map is still whole.
        let mut all = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        let function_key = match all.get_key_value(function) {
            Some((k, _)) => Arc::clone(k),
            None => Arc::from(function),
        };
        let versions = all.entry(Arc::clone(&function_key)).or_default();
        if let Some(c) = versions.get(version) {
            return Arc::clone(c);
        }
        let version: Arc<str> = Arc::from(version);
        let counters = Arc::new(VersionCounters::new(function_key, Arc::clone(&version)));
        versions.insert(version, Arc::clone(&counters));
        counters
    }

    /// Every version's counters, for the sampler (they are kept for the process's life, like
    /// the Prometheus series: a version that comes back keeps counting where it was).
    pub fn all_version_counters(&self) -> Vec<Arc<VersionCounters>> {
        let all = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        all.values().flat_map(|v| v.values().cloned()).collect()
    }

    /// When the counters started: the epoch of the published `total`s.
    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// [`Self::started`] in RFC 3339 with milliseconds, as the report's `startedAt`.
    pub fn started_at(&self) -> String {
        jiff::Timestamp::try_from(self.started)
            .map(|t| format!("{t:.3}"))
            .unwrap_or_default()
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        self.shadow.render(&mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_core::numbers::bucket_lower;

    #[test]
    fn recording_counts_requests_failures_and_the_latency_bucket() {
        let metrics = Metrics::new();
        let m = metrics.backend("prod/hello", "1.0.0");
        m.record(Duration::from_micros(5), false);
        m.record(Duration::from_micros(1_500), true);
        m.record(Duration::from_micros(1_500), false);
        m.record(Duration::from_secs(2), true);
        let c = m.numbers.read();
        assert_eq!((c.requests, c.failures), (4, 2));
        let expected: Counts = Counts {
            requests: 4,
            failures: 2,
            latency: [
                (bucket_of(5), 1),
                (bucket_of(1_500), 2),
                (bucket_of(2_000_000), 1),
            ]
            .into(),
        };
        assert_eq!(c, expected);
        // The Prometheus series count the same requests.
        assert_eq!(m.requests.get(), 4);
        assert_eq!(m.errors.get(), 2);
        assert_eq!(m.latency.get_sample_count(), 4);
    }

    #[test]
    fn a_version_never_served_has_no_histogram_and_reads_empty() {
        let metrics = Metrics::new();
        let m = metrics.backend("prod/hello", "0.9.0");
        assert!(m.numbers.latency.get().is_none());
        assert_eq!(m.numbers.read(), Counts::default());
    }

    #[test]
    fn latencies_past_71_minutes_fall_in_the_last_bucket() {
        let metrics = Metrics::new();
        let m = metrics.backend("prod/hello", "1.0.0");
        m.record(Duration::from_secs(3 * 3600), false);
        m.record(Duration::MAX, false);
        let c = m.numbers.read();
        let last = (RECORDED_BUCKETS - 1) as u16;
        assert_eq!(c.latency, [(last, 2)].into());
        assert!(bucket_lower(last) <= u64::from(u32::MAX));
        assert!(bucket_lower(last + 1) > u64::from(u32::MAX));
    }

    #[test]
    fn every_table_build_gets_the_same_counters_for_a_version() {
        let metrics = Metrics::new();
        let a = metrics.backend("prod/hello", "1.0.0");
        let b = metrics.backend("prod/hello", "1.0.0");
        let other = metrics.backend("prod/hello", "1.1.0");
        assert!(Arc::ptr_eq(&a.numbers, &b.numbers));
        assert!(!Arc::ptr_eq(&a.numbers, &other.numbers));
        a.record(Duration::from_millis(1), false);
        assert_eq!(b.numbers.requests(), 1);
        let mut listed: Vec<(String, String)> = metrics
            .all_version_counters()
            .iter()
            .map(|c| (c.function.to_string(), c.version.to_string()))
            .collect();
        listed.sort();
        assert_eq!(
            listed,
            [
                ("prod/hello".to_string(), "1.0.0".to_string()),
                ("prod/hello".to_string(), "1.1.0".to_string())
            ]
        );
    }

    #[test]
    fn concurrent_requests_are_all_counted() {
        let metrics = Metrics::new();
        let m = metrics.backend("prod/hello", "1.0.0");
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let m = m.clone();
                s.spawn(move || {
                    for i in 0..10_000u64 {
                        m.record(Duration::from_micros(t * 1_000 + i % 7), i % 10 == 0);
                    }
                });
            }
        });
        let c = m.numbers.read();
        assert_eq!((c.requests, c.failures), (40_000, 4_000));
        assert_eq!(c.latency.values().sum::<u64>(), 40_000);
    }

    #[test]
    fn started_at_is_rfc3339_with_milliseconds() {
        let at = Metrics::new().started_at();
        let parsed: jiff::Timestamp = at.parse().expect("a timestamp");
        assert_eq!(format!("{parsed:.3}"), at);
        assert!(at.ends_with('Z'), "{at}");
    }
}
