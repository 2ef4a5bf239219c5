//! Switchyard's vocabulary and every decision, with no IO.
//!
//! This crate holds the `switchyard.dev/v1alpha1` resource types ([`Function`],
//! [`FunctionVersion`]), their validation, the CLI's traffic syntax, the routing table with its
//! version pick, and the plans of every traffic change (shift, promote, rollback, undo, delete,
//! gc), the automated canary's judgment (`canary`) and its rollout on the Function
//! (`rollout`). It is not a client: nothing here talks to a network, reads a clock or draws a random
//! number. Time comes in as an argument (`now`), randomness as a `roll`.

pub mod canary;
pub mod cowmap;
pub mod crd;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod numbers;
pub mod plan;
pub mod protocol;
pub mod report;
pub mod resources;
pub mod rollout;
pub mod shadow;
pub mod table;
pub mod traffic;
pub mod validate;
pub mod weight;
pub mod workload;

pub use resources::{
    object_name, Action, Affinity, EnvVar, Function, FunctionSpec, FunctionStatus, FunctionVersion,
    FunctionVersionSpec, HistoryEntry, Resources, RolloutPhase, RolloutSpec, RolloutStatus,
    StepReading, Tag, TrafficTarget,
};
pub use table::{BuildOptions, Route, RoutingTable};
pub use weight::TOTAL_PPM;
