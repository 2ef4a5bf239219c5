//! The canary on a local store (`--store dir:PATH`, docs/protocol.md "Local store"): the
//! single router is the decider. Every 250 ms it judges each rollout with its own counters
//! and writes a transition through the store's locked, revision-checked write; a conflict (a
//! CLI wrote first) is read again and judged again.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use switchyard_core::numbers::Reading;
use switchyard_store::{FunctionDocument, LocalStore, StoreError};
use tokio::sync::watch;

use super::{actor, compared, judge, log_transition, own_reading, Rollouts};
use crate::live::Shared;

/// Attempts at one transition when a CLI keeps writing first.
const ATTEMPTS: usize = 3;

/// Starts the local decider on the current runtime, until `stop` turns true.
pub fn spawn(
    store: LocalStore,
    replica: String,
    shared: Arc<Shared>,
    mut rollouts: watch::Receiver<Rollouts>,
    mut stop: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let by = actor(&replica);
        let started_at = shared.metrics.started_at();
        let mut tick = tokio::time::interval(super::OWN_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let current = Rollouts::clone(&rollouts.borrow_and_update());
            if current.is_empty() {
                tokio::select! {
                    changed = rollouts.changed() => if changed.is_err() { return },
                    _ = super::stopped(&mut stop) => return,
                }
                continue;
            }
            tokio::select! {
                _ = tick.tick() => {}
                _ = super::stopped(&mut stop) => return,
            }
            let own = own_reading(&shared.metrics, &started_at, &compared(&current));
            let readings = BTreeMap::from([(replica.clone(), own)]);
            for function in current.values() {
                if judge(function, &readings, Timestamp::now(), &by).is_none() {
                    continue;
                }
                let name = function.metadata.name.clone().unwrap_or_default();
                let (store, readings, by) = (store.clone(), readings.clone(), by.clone());
                let done =
                    tokio::task::spawn_blocking(move || write(&store, &name, &readings, &by)).await;
                match done {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!("writing a canary transition: {e}"),
                    Err(e) => tracing::warn!("the canary writer: {e}"),
                }
            }
        }
    });
}

/// Reads function `name`, judges its rollout and writes the transition if the file is still
/// what was read; again on a conflict.
fn write(
    store: &LocalStore,
    name: &str,
    readings: &BTreeMap<String, Reading>,
    by: &str,
) -> Result<(), StoreError> {
    for _ in 0..ATTEMPTS {
        let doc = store.read(name)?;
        let expected = doc.resource_version();
        let Some(function) = &doc.function else {
            return Ok(());
        };
        let Some((next, action)) = judge(function, readings, Timestamp::now(), by) else {
            return Ok(());
        };
        let next_doc = FunctionDocument {
            function: Some(next),
            versions: doc.versions.clone(),
        };
        match store.write(name, &expected, next_doc) {
            Ok(written) => {
                if let Some(f) = &written.function {
                    log_transition(f, &action, by);
                }
                return Ok(());
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
