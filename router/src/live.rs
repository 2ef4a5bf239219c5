//! The live routing state: one immutable [`Live`] table behind an `ArcSwap`, and what outlives
//! table swaps (request counters, metrics, readiness).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde::Serialize;
use switchyard_core::cowmap::CowMap;
use switchyard_core::table::Route;
use switchyard_core::RoutingTable;

use crate::config::TimeoutOverrides;

use crate::metrics::{BackendMetrics, Metrics};
use crate::shadow;

/// Why the latest generation of a Function is not served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejection {
    /// `namespace/name`.
    pub function: String,
    /// The refused `metadata.generation`.
    pub generation: i64,
    /// Why.
    pub reason: String,
}

/// What a route carries beside its core [`Route`]: its request counter (the `n` of
/// `roll(n)`, kept across table swaps) and its backends' metrics (in `route.backends` order).
pub struct RouteExtras {
    /// Requests picked by weight so far on this function, on this router.
    pub counter: Arc<AtomicU64>,
    /// Per backend, in the route's backend order.
    pub backends: Vec<BackendMetrics>,
    /// The function's own timeouts and its backends' warning gates.
    pub safety: Safety,
    /// Its shadow copies, when `spec.shadow` is set.
    pub mirror: Option<shadow::Lane>,
}

/// What a route carries for the proxy's safety: the function's `spec.timeouts`, and one
/// [`Gate`] per backend so its failures are logged at most once a second.
pub struct Safety {
    /// The function's own timeouts.
    pub timeouts: TimeoutOverrides,
    /// Per backend, in the route's backend order.
    pub warn: Box<[Gate]>,
}

impl Safety {
    /// For `function`, whose route has `backends` backends.
    pub fn new(function: &switchyard_core::Function, backends: usize) -> Safety {
        Safety {
            timeouts: TimeoutOverrides::of(function),
            warn: (0..backends).map(|_| Gate::new()).collect(),
        }
    }
}

/// Lets one warning through per second and counts the ones it holds back, with two atomics
/// and no lock: a failing backend under load would otherwise write a log line per request.
pub struct Gate {
    epoch: Instant,
    /// Milliseconds after `epoch` before which the next warning is held back.
    next_ms: AtomicU64,
    held: AtomicU64,
}

impl Gate {
    /// A gate that lets the first warning through.
    pub fn new() -> Gate {
        Gate {
            epoch: Instant::now(),
            next_ms: AtomicU64::new(0),
            held: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a warning may be written now, `n` the warnings held back since the last
    /// one; `None` when it is held back (and counted).
    pub fn pass(&self, now: Instant) -> Option<u64> {
        let now_ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        let next = self.next_ms.load(Ordering::Relaxed);
        if now_ms < next
            || self
                .next_ms
                .compare_exchange(next, now_ms + 1000, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.held.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.held.swap(0, Ordering::Relaxed))
    }
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

/// One complete, immutable routing state. Requests load it once and finish on it.
pub struct Live {
    /// The routes.
    pub table: RoutingTable,
    /// +1 on every swap.
    pub generation: u64,
    /// When the content was read from the source (for a snapshot: when it was read then).
    pub as_of: SystemTime,
    /// Functions whose latest generation is refused (they serve their last good route, if any).
    pub rejections: Vec<Rejection>,
    /// Extras of each route, by the address of its `Arc<Route>` in `table` (stable while this
    /// `Live` exists, and cheaper to hash than `namespace/name`).
    extras: CowMap<usize, Arc<RouteExtras>>,
}

impl Live {
    /// An empty table (every request is a 404) at generation 0.
    pub fn empty() -> Self {
        Live {
            table: RoutingTable::empty(),
            generation: 0,
            as_of: SystemTime::now(),
            rejections: Vec::new(),
            extras: CowMap::new(),
        }
    }

    /// Assembles a table with the extras of its routes, keyed by the address of each route's
    /// `Arc` (both are cheap to clone: see [`CowMap`]).
    pub fn new(
        table: RoutingTable,
        extras: CowMap<usize, Arc<RouteExtras>>,
        generation: u64,
        as_of: SystemTime,
        rejections: Vec<Rejection>,
    ) -> Self {
        Live {
            table,
            generation,
            as_of,
            rejections,
            extras,
        }
    }

    /// The extras of a route of this table.
    pub fn extras(&self, route: &Arc<Route>) -> Option<&Arc<RouteExtras>> {
        self.extras.get(&(Arc::as_ptr(route) as usize))
    }

    /// `/routes`: the live table as JSON.
    pub fn to_json(&self, replica: &str, connected: bool, age_seconds: u64) -> serde_json::Value {
        serde_json::json!({
            "replica": replica,
            "generation": self.generation,
            "ageSeconds": age_seconds,
            "builtFrom": jiff::Timestamp::try_from(self.as_of).map(|t| t.to_string()).unwrap_or_default(),
            "sourceConnected": connected,
            "routes": self.table.routes().iter().map(|r| r.as_ref()).collect::<Vec<&Route>>(),
            "rejections": self.rejections,
        })
    }
}

/// Everything the request path and the admin endpoints share with the control loop.
pub struct Shared {
    /// The live table.
    pub live: ArcSwap<Live>,
    /// Metrics.
    pub metrics: Metrics,
    /// Set once the first complete table is live.
    pub ready: AtomicBool,
    /// Whether the source is connected.
    pub connected: AtomicBool,
    /// This replica's name.
    pub replica: String,
    /// Until when (epoch milliseconds) the live table is known to match its source.
    current_ms: AtomicU64,
}

impl Shared {
    /// A router state with an empty table, not ready.
    pub fn new(replica: String) -> Self {
        Shared {
            live: ArcSwap::from_pointee(Live::empty()),
            metrics: Metrics::new(),
            ready: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            replica,
            current_ms: AtomicU64::new(0),
        }
    }

    /// Swaps in a new table; requests already running keep the one they loaded.
    pub fn swap(&self, live: Live) {
        self.metrics.table_generation.set(live.generation as i64);
        self.metrics.routes.set(live.table.len() as i64);
        self.metrics
            .rejected_functions
            .set(live.rejections.len() as i64);
        self.set_current(live.as_of);
        self.live.store(Arc::new(live));
        self.ready.store(true, Ordering::Release);
    }

    /// Records that the live table matched the source at `as_of`.
    pub fn set_current(&self, as_of: SystemTime) {
        let ms = as_of
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.current_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// The table's age: seconds since it was last known to match its source.
    pub fn table_age_seconds(&self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        now.saturating_sub(self.current_ms.load(Ordering::Relaxed)) / 1000
    }

    /// Records whether the source is connected.
    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
        self.metrics.source_connected.set(i64::from(connected));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_gate_passes_one_warning_a_second_and_counts_the_rest() {
        let gate = Gate::new();
        let t0 = Instant::now();
        assert_eq!(gate.pass(t0), Some(0));
        for ms in [1, 500, 999] {
            assert_eq!(gate.pass(t0 + Duration::from_millis(ms)), None);
        }
        assert_eq!(gate.pass(t0 + Duration::from_millis(1000)), Some(3));
        assert_eq!(gate.pass(t0 + Duration::from_millis(1500)), None);
        assert_eq!(gate.pass(t0 + Duration::from_secs(60)), Some(1));
    }
}
