//! Where routing state comes from: the seam between the router and its configuration store.
//!
//! A source yields a *complete* state first (every Function and FunctionVersion it knows), then
//! either complete states or updates (the Functions whose inputs changed, each with all its
//! inputs), and takes acknowledgements back. The Kubernetes watch is one source; a local
//! directory store can be another without the router changing.

use std::sync::Arc;

use async_trait::async_trait;
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

/// A router's report on one Function generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Namespace of the Function.
    pub namespace: String,
    /// Name of the Function.
    pub name: String,
    /// The `metadata.generation` processed.
    pub generation: i64,
    /// Why it was refused; `None` when it is served.
    pub rejected: Option<String>,
    /// Whether it reports a generation that just changed (a person may be waiting for it), as
    /// opposed to a report owed since start-up or a reconnect: fresh ones go first.
    pub fresh: bool,
}

/// A live configuration source.
#[async_trait]
pub trait ConfigSource: Send {
    /// The next event; `None` when the source has ended for good.
    async fn next(&mut self) -> Option<SourceEvent>;
    /// Records acknowledgements; delivering them (and retrying) is the source's job.
    fn acknowledge(&mut self, acks: Vec<Ack>);
    /// Releases what the source holds (its Lease) on a clean shutdown.
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
    /// Opens the source. Fails only on errors that retrying cannot fix (a bad kubeconfig);
    /// an unreachable server shows up as [`SourceEvent::Lost`].
    pub(crate) async fn open(self, replica: &str) -> anyhow::Result<Box<dyn ConfigSource>> {
        match self {
            Source::Kubernetes(opts) => Ok(Box::new(
                kubernetes::KubernetesSource::open(opts, replica).await?,
            )),
            Source::Local(opts) => Ok(Box::new(local::LocalSource::open(opts, replica)?)),
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

    fn acknowledge(&mut self, _acks: Vec<Ack>) {}

    async fn close(&mut self) {}
}
