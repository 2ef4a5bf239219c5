//! Where routing state comes from: the seam between the router and its configuration store.
//!
//! A source yields a *complete* state first (every Function and FunctionVersion it knows), then
//! either complete states or updates (the Functions whose inputs changed, each with all its
//! inputs), and takes back what the router serves after each (to report it) and its traffic
//! numbers (to publish them). The Kubernetes watch is one source; a local
//! directory store can be another without the router changing.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use switchyard_core::numbers::Numbers;
use switchyard_core::report::Exception;
use switchyard_core::{Function, FunctionVersion};

pub mod kubernetes;
pub mod local;

pub use kubernetes::KubernetesOptions;

/// Every Function and FunctionVersion the source holds, at one moment.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// The Functions.
    pub functions: Vec<Arc<Function>>,
    /// The FunctionVersions.
    pub versions: Vec<Arc<FunctionVersion>>,
}

/// The inputs of one Function's route, as the source holds them now.
#[derive(Debug, Clone)]
pub struct FunctionInputs {
    /// Namespace of the Function.
    pub namespace: String,
    /// Name of the Function.
    pub name: String,
    /// The Function; `None` when there is none (any more).
    pub function: Option<Arc<Function>>,
    /// Every FunctionVersion of the function (same namespace, `spec.function` naming it).
    pub versions: Vec<Arc<FunctionVersion>>,
}

/// The Functions whose inputs changed since the source's previous event; every other
/// Function is as it was.
#[derive(Debug, Clone, Default)]
pub struct Update {
    /// The changed Functions, each with all of its inputs.
    pub functions: Vec<FunctionInputs>,
}

/// What a source reports.
#[derive(Debug)]
pub enum SourceEvent {
    /// A new complete state.
    State(State),
    /// A change to the previous state (never the first event).
    Update(Update),
    /// The source cannot be reached; the router keeps serving what it has. Repeated while the
    /// source stays unreachable is fine; a later `State` means it is back.
    Lost(String),
}

/// What the router serves after a source event was applied: the table now live and the
/// Functions it does not serve as written. The source reports it (docs/protocol.md): it alone
/// knows how far it had read when it produced the event this table was built from.
#[derive(Debug, Clone, Default)]
pub struct Served {
    /// Generation of the live table.
    pub generation: u64,
    /// When the live table was last known to match the source.
    pub as_of: Option<SystemTime>,
    /// Routes in the live table.
    pub routes: usize,
    /// Every Function not served as written, uncapped.
    pub exceptions: Vec<Exception>,
    /// `(namespace, name, generation)` of every Function, only for a source that asks
    /// ([`ConfigSource::wants_functions`]); empty otherwise.
    pub functions: Vec<(String, String, i64)>,
}

/// Who this replica is, for what it writes about itself.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The replica's name (its Lease, report and local file).
    pub replica: String,
    /// Where it serves traffic, for people and tools (the listen address unless advertised).
    pub address: String,
    /// When its counters started, RFC 3339 (its report's `startedAt`).
    pub started_at: String,
    /// Where the source says the replica can be counted by a CLI wait.
    pub ready: Arc<ReadyGate>,
}

/// Whether a CLI wait would count this replica: its Lease (or heartbeat file) renewed and still
/// fresh, and its first report written (docs/protocol.md, "When a replica writes its report").
/// `/readyz` answers 200 only then.
#[derive(Debug, Default)]
pub struct ReadyGate {
    reported: AtomicBool,
    fresh_until_ms: AtomicI64,
    from_snapshot: AtomicBool,
}

impl ReadyGate {
    /// A gate that is closed until both have happened.
    pub fn new() -> Self {
        ReadyGate::default()
    }

    /// The Lease (or heartbeat) was renewed: it holds until `until_ms`, epoch milliseconds.
    pub fn renewed(&self, until_ms: i64) {
        self.fresh_until_ms.fetch_max(until_ms, Ordering::AcqRel);
    }

    /// A first report was written.
    pub fn reported(&self) {
        self.reported.store(true, Ordering::Release);
    }

    /// The replica serves its snapshot because the source was unreachable at start: until its
    /// first report it is ready on its table alone (the snapshot exists to keep serving while
    /// the API server is down; no wait can count any replica then anyway).
    pub fn started_from_snapshot(&self) {
        self.from_snapshot.store(true, Ordering::Release);
    }

    /// Whether a wait would count the replica at `now_ms` (or it serves its snapshot and has
    /// not reported yet).
    pub fn open(&self, now_ms: i64) -> bool {
        if !self.reported.load(Ordering::Acquire) {
            return self.from_snapshot.load(Ordering::Acquire);
        }
        now_ms <= self.fresh_until_ms.load(Ordering::Acquire)
    }

    /// Why it is closed, for `/readyz`.
    pub fn why_closed(&self, now_ms: i64) -> &'static str {
        if self.fresh_until_ms.load(Ordering::Acquire) == 0 {
            "no lease renewed yet"
        } else if now_ms > self.fresh_until_ms.load(Ordering::Acquire) {
            "the lease is not fresh"
        } else {
            "no report written yet"
        }
    }
}

/// A live configuration source.
#[async_trait]
pub trait ConfigSource: Send {
    /// The next event; `None` when the source has ended for good.
    async fn next(&mut self) -> Option<SourceEvent>;
    /// Takes what the router serves after the last event was applied (swapped or not);
    /// reporting it (coalesced, retried) is the source's job.
    fn served(&mut self, served: Served);
    /// Whether [`Served::functions`] is wanted (a per-Function report, as the local store's).
    fn wants_functions(&self) -> bool {
        false
    }
    /// Takes this replica's latest traffic numbers; the source publishes them at a bounded
    /// rate, only when they changed.
    fn publish(&mut self, numbers: Numbers);
    /// Takes this replica's latest shadow counts (docs/protocol.md, "Shadow"); published with
    /// the numbers, only when they changed. A source that reports nothing ignores them.
    fn publish_shadow(&mut self, _shadow: switchyard_core::shadow::ShadowNumbers) {}
    /// Releases what the source holds (its Lease and report) on a clean shutdown.
    async fn close(&mut self);
}

/// Which source a router follows.
#[derive(Debug)]
pub enum Source {
    /// Functions and FunctionVersions watched on a Kubernetes API server.
    Kubernetes(KubernetesOptions),
    /// Functions and FunctionVersions in a local store directory (no cluster).
    Local(local::LocalOptions),
    /// One fixed state that never changes (benchmarks, and a router with no store).
    Fixed(State),
}

impl Source {
    /// Whether this source reports (a Lease and report, or a heartbeat file): then `/readyz`
    /// waits for the [`ReadyGate`] too.
    pub(crate) fn reports(&self) -> bool {
        !matches!(self, Source::Fixed(_))
    }

    /// Opens the source. Fails only on errors that retrying cannot fix (a bad kubeconfig);
    /// an unreachable server shows up as [`SourceEvent::Lost`].
    pub(crate) async fn open(self, identity: Identity) -> anyhow::Result<Box<dyn ConfigSource>> {
        match self {
            Source::Kubernetes(opts) => Ok(Box::new(
                kubernetes::KubernetesSource::open(opts, identity).await?,
            )),
            Source::Local(opts) => Ok(Box::new(local::LocalSource::open(opts, identity)?)),
            Source::Fixed(state) => Ok(Box::new(FixedSource(Some(state)))),
        }
    }
}

struct FixedSource(Option<State>);

#[async_trait]
impl ConfigSource for FixedSource {
    async fn next(&mut self) -> Option<SourceEvent> {
        match self.0.take() {
            Some(state) => Some(SourceEvent::State(state)),
            None => futures::future::pending().await,
        }
    }

    fn served(&mut self, _served: Served) {}

    fn publish(&mut self, _numbers: Numbers) {}

    async fn close(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_opens_with_a_fresh_lease_and_a_first_report_only() {
        let gate = ReadyGate::new();
        assert!(!gate.open(0));
        assert_eq!(gate.why_closed(0), "no lease renewed yet");
        gate.renewed(10_000);
        assert!(!gate.open(5_000), "no report yet");
        assert_eq!(gate.why_closed(5_000), "no report written yet");
        gate.reported();
        assert!(gate.open(10_000));
        assert!(!gate.open(10_001), "the lease is not fresh any more");
        assert_eq!(gate.why_closed(10_001), "the lease is not fresh");
        gate.renewed(5_000);
        assert!(!gate.open(10_001), "an older renewal does not move it back");
    }

    #[test]
    fn a_replica_serving_its_snapshot_is_ready_until_its_first_report_then_as_any_other() {
        let gate = ReadyGate::new();
        gate.started_from_snapshot();
        assert!(
            gate.open(1_000_000),
            "serving the snapshot, API server down"
        );
        gate.renewed(10_000);
        gate.reported();
        assert!(!gate.open(10_001), "reported: the lease rule applies");
    }
}
