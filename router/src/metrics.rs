//! The router's Prometheus metrics, in a registry of its own (several routers can share a
//! process in tests without colliding).

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
    // Connection bounds (issue 12 item 8), one block.
    /// Client connections open on the proxy port.
    pub client_connections: IntGauge,
    /// Client connections refused at `--max-connections`.
    pub refused_connections: IntCounter,
    /// Upstream connections open (in use or idle), by upstream address.
    pub upstream_connections: prometheus::IntGaugeVec,
    /// Requests answered 503 because their upstream stayed at `--max-upstream-connections`.
    pub upstream_saturated: IntCounterVec,
}

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
        m
    }

    /// The metrics of one version of one function (`namespace/name`).
    pub fn backend(&self, function: &str, version: &str) -> BackendMetrics {
        let labels = &[function, version];
        BackendMetrics {
            requests: self.requests.with_label_values(labels),
            errors: self.errors.with_label_values(labels),
            latency: self.latency.with_label_values(labels),
        }
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
