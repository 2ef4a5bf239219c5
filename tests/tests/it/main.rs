//! Switchyard's integration tests: one test binary, a module per area.
//!
//! Every test runs against the real kube-apiserver that `scripts/testenv start` runs
//! (`KUBECONFIG`), the real binaries (built once per run by the harness) and real upstream
//! servers on 127.0.0.1. The helpers live in the `switchyard-tests` library (`tests/src/`).
//! Select an area with a filter: `cargo test -p switchyard-tests --test it router::`.

mod apiserver;
mod canary;
mod cli;
mod exclusive;
mod image;
mod install;
mod journey;
mod local_store;
mod lost_race;
mod manifests;
mod numbers;
mod protocol;
mod rollout;
mod router;
