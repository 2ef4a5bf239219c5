//! Acknowledgements: this replica's entry in each Function's `status.routers`, written by a
//! queue that puts fresh reports ahead of the start-up backlog, and the removal of dead
//! replicas' entries (docs/protocol.md). The bodies come from `switchyard_core::protocol`.

use std::collections::VecDeque;
use std::time::Duration;

use futures::stream::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use switchyard_core::cowmap::FxHashMap;
use switchyard_core::{protocol, Function};
use tokio::sync::mpsc;

use super::watch::{FxHashSet, Key};
use crate::source::Ack;

/// Writes at most this many acknowledgements at once.
const WRITES_IN_FLIGHT: usize = 16;
/// Of which at most this many from the backlog (start-up, reconnects): fresh ones always find
/// a slot.
const BACKLOG_IN_FLIGHT: usize = 2;
/// At least this long between two writes from the backlog (at most 50 a second). A status
/// write of a Function costs the API server a few milliseconds of CPU; 10,000 of them as fast
/// as it answers kept the test API server at 160% CPU (on 2 cores) and delayed every other
/// write and watch event by over a second, the changes a person waits for included. The
/// backlog only reports what the status already implies (this replica serves the current
/// generation), so it may trickle: 10,000 take about 3.5 minutes.
const BACKLOG_SPACING: Duration = Duration::from_millis(20);

/// Acknowledgements waiting to be written: the latest one per Function, fresh ones first, and
/// never two writes for one Function at once (the older one could land last).
#[derive(Default)]
struct AckQueue {
    /// The latest unwritten ack of each Function.
    pending: FxHashMap<Key, Ack>,
    /// Functions with a fresh pending ack, oldest first (a key may be listed twice, or be
    /// listed with nothing pending any more: skipped when taken).
    fresh: VecDeque<Key>,
    /// Functions with a pending ack from the backlog, oldest first (same).
    backlog: VecDeque<Key>,
    /// Functions whose ack is being written.
    writing: FxHashSet<Key>,
}

impl AckQueue {
    /// Queues `ack`, replacing an older one of its Function not yet written; fresh wins.
    fn push(&mut self, mut ack: Ack) {
        let key = (ack.namespace.clone(), ack.name.clone());
        let was = self.pending.get(&key).map(|a| a.fresh);
        ack.fresh |= was == Some(true);
        let fresh = ack.fresh;
        self.pending.insert(key.clone(), ack);
        if self.writing.contains(&key) {
            // Queued again once that write is done.
            return;
        }
        if fresh && was != Some(true) {
            self.fresh.push_back(key);
        } else if !fresh && was.is_none() {
            self.backlog.push_back(key);
        }
    }

    /// The next ack to write, fresh ones first; from the backlog only if `backlog` allows.
    fn take(&mut self, backlog: bool) -> Option<Ack> {
        let Self {
            pending,
            fresh,
            backlog: queued,
            writing,
        } = self;
        let lanes: &mut [&mut VecDeque<Key>] = if backlog {
            &mut [fresh, queued]
        } else {
            &mut [fresh]
        };
        for lane in lanes.iter_mut() {
            while let Some(key) = lane.pop_front() {
                if writing.contains(&key) {
                    continue;
                }
                if let Some(ack) = pending.remove(&key) {
                    writing.insert(key);
                    return Some(ack);
                }
            }
        }
        None
    }

    /// Whether backlog acks wait.
    fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Marks the write of `ack` done; a failed one is queued again unless a newer one waits.
    fn done(&mut self, ack: Ack, failed: bool) {
        let key = (ack.namespace.clone(), ack.name.clone());
        self.writing.remove(&key);
        if failed && !self.pending.contains_key(&key) {
            self.pending.insert(key.clone(), ack);
        }
        if let Some(next) = self.pending.get(&key) {
            // First in its lane: it has waited for the write before it.
            if next.fresh {
                self.fresh.push_front(key);
            } else {
                self.backlog.push_front(key);
            }
        }
    }
}

/// Server-side-applies this replica's entry in each Function's `status.routers`, several
/// writes at a time (they share the client's connection), fresh acks ahead of the start-up
/// backlog, the latest generation per Function winning; failed writes are retried after a
/// backoff.
pub(super) async fn write_acks(
    client: Client,
    replica: String,
    mut rx: mpsc::UnboundedReceiver<Ack>,
) {
    use futures::stream::FuturesUnordered;
    let params = PatchParams::apply(&protocol::field_manager(&replica)).force();
    let mut queue = AckQueue::default();
    let mut writes = FuturesUnordered::new();
    let mut backlog_writes = 0;
    let mut backoff = Duration::from_millis(200);
    let mut paused_until: Option<tokio::time::Instant> = None;
    let mut next_backlog = tokio::time::Instant::now();
    let mut open = true;
    loop {
        let now = tokio::time::Instant::now();
        if paused_until.is_some_and(|t| t <= now) {
            paused_until = None;
        }
        while paused_until.is_none() && writes.len() < WRITES_IN_FLIGHT {
            let backlog = backlog_writes < BACKLOG_IN_FLIGHT && next_backlog <= now;
            let Some(ack) = queue.take(backlog) else {
                break;
            };
            if !ack.fresh {
                backlog_writes += 1;
                next_backlog = now + BACKLOG_SPACING;
            }
            writes.push(write_ack(
                client.clone(),
                params.clone(),
                replica.clone(),
                ack,
            ));
        }
        if !open && writes.is_empty() {
            return;
        }
        // Wake up for the end of a pause, or for the next backlog write's turn.
        let wake = paused_until.or_else(|| {
            let room = writes.len() < WRITES_IN_FLIGHT && backlog_writes < BACKLOG_IN_FLIGHT;
            (room && queue.has_backlog()).then_some(next_backlog)
        });
        tokio::select! {
            ack = rx.recv(), if open => match ack {
                Some(ack) => {
                    queue.push(ack);
                    while let Ok(ack) = rx.try_recv() {
                        queue.push(ack);
                    }
                }
                // Shutting down: finish the writes under way.
                None => open = false,
            },
            Some((ack, result)) = writes.next(), if !writes.is_empty() => {
                if !ack.fresh {
                    backlog_writes -= 1;
                }
                let failed = match result {
                    Ok(_) => false,
                    // The Function is gone: nothing to acknowledge.
                    Err(kube::Error::Api(e)) if e.code == 404 => false,
                    Err(e) => {
                        tracing::debug!(function = %format!("{}/{}", ack.namespace, ack.name), "ack failed, will retry: {e}");
                        true
                    }
                };
                queue.done(ack, failed);
                if failed {
                    paused_until = Some(tokio::time::Instant::now() + backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                } else {
                    backoff = Duration::from_millis(200);
                }
            }
            _ = tokio::time::sleep_until(wake.unwrap_or(now)), if wake.is_some() => {}
        }
    }
}

/// One acknowledgement, server-side-applied; returns it with the result.
async fn write_ack(
    client: Client,
    params: PatchParams,
    replica: String,
    ack: Ack,
) -> (Ack, Result<Function, kube::Error>) {
    let api: Api<Function> = Api::namespaced(client, &ack.namespace);
    let patch = protocol::ack_body(
        &ack.namespace,
        &ack.name,
        &replica,
        ack.generation,
        ack.rejected.as_deref(),
        jiff::Timestamp::now(),
    );
    let started = std::time::Instant::now();
    let result = api
        .patch_status(&ack.name, &params, &Patch::Apply(&patch))
        .await;
    tracing::debug!(
        function = %format!("{}/{}", ack.namespace, ack.name),
        generation = ack.generation,
        fresh = ack.fresh,
        ok = result.is_ok(),
        "ack written in {:.1} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    (ack, result)
}

/// Removes entries of replicas with no live Lease in the Function's namespace,
/// `switchyard-system` or this replica's lease namespace. An entry younger than two lease
/// durations is kept (its replica may be creating its Lease right now), and nothing is removed
/// when the Leases cannot be read.
pub(super) async fn prune_stale_entries(
    client: Client,
    candidates: Vec<(String, String, Vec<switchyard_core::RouterAck>)>,
    replica: String,
    lease_namespace: String,
    lease_duration: Duration,
) {
    use std::collections::HashSet;
    let now = jiff::Timestamp::now();
    let mut namespaces: HashSet<String> = candidates.iter().map(|c| c.0.clone()).collect();
    namespaces.insert(protocol::DEFAULT_ROUTER_NAMESPACE.into());
    namespaces.insert(lease_namespace.clone());
    let live = match super::lease::live_replicas(&client, namespaces, now).await {
        Ok(live) => live,
        Err((ns, e)) => {
            tracing::debug!("not pruning router entries: listing leases in {ns}: {e}");
            return;
        }
    };
    let min_age = jiff::SignedDuration::try_from(lease_duration * 2).unwrap_or_default();
    for (ns, name, routers) in candidates {
        let holds = |n: &str| {
            protocol::lease_namespaces(&ns, &lease_namespace)
                .iter()
                .any(|l| live.contains(&(l.to_string(), n.to_string())))
        };
        let ops = protocol::prune_patch(&routers, &replica, holds, now, min_age);
        if ops.is_empty() {
            continue;
        }
        // A JSON patch, sent as a raw request (kube's typed `Patch::Json` needs a feature the
        // workspace does not enable).
        let body = serde_json::to_vec(&ops).unwrap_or_default();
        let request = http::Request::patch(format!(
            "/apis/switchyard.dev/v1alpha1/namespaces/{ns}/functions/{name}/status"
        ))
        .header(http::header::CONTENT_TYPE, "application/json-patch+json")
        .body(body);
        let Ok(request) = request else {
            continue;
        };
        // Paced like the acknowledgement backlog: thousands of removals must not crowd out the
        // writes people wait for.
        tokio::time::sleep(BACKLOG_SPACING).await;
        match client.request::<Function>(request).await {
            Ok(_) => {
                tracing::info!(function = %format!("{ns}/{name}"), "removed entries of routers whose Lease expired")
            }
            Err(e) => {
                tracing::debug!(function = %format!("{ns}/{name}"), "pruning router entries: {e}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(name: &str, generation: i64, fresh: bool) -> Ack {
        Ack {
            namespace: "ns".into(),
            name: name.into(),
            generation,
            rejected: None,
            fresh,
        }
    }

    fn taken(q: &mut AckQueue, backlog: bool) -> Option<(String, i64)> {
        q.take(backlog).map(|a| (a.name, a.generation))
    }

    #[test]
    fn a_fresh_ack_overtakes_the_backlog_and_the_latest_generation_wins() {
        let mut q = AckQueue::default();
        for i in 0..1000 {
            q.push(ack(&format!("fn-{i}"), 1, false));
        }
        assert_eq!(taken(&mut q, true), Some(("fn-0".into(), 1)));
        q.push(ack("fn-500", 2, true));
        q.push(ack("fn-500", 3, true));
        assert_eq!(taken(&mut q, true), Some(("fn-500".into(), 3)));
        // With the backlog's slots all taken, a fresh ack still gets one.
        q.push(ack("fn-700", 2, true));
        assert_eq!(taken(&mut q, false), Some(("fn-700".into(), 2)));
        assert_eq!(taken(&mut q, false), None);
        assert_eq!(taken(&mut q, true), Some(("fn-1".into(), 1)));
        // fn-500 was written once, at its latest generation, and is not in the backlog twice.
        let mut rest = Vec::new();
        while let Some((name, _)) = taken(&mut q, true) {
            rest.push(name);
        }
        assert_eq!(rest.len(), 1000 - 4);
        assert!(!rest.contains(&"fn-500".to_string()));
    }

    #[test]
    fn one_function_is_never_written_twice_at_once() {
        let mut q = AckQueue::default();
        q.push(ack("a", 1, true));
        let first = q.take(true).expect("a write");
        q.push(ack("a", 2, true));
        assert!(
            q.take(true).is_none(),
            "a's write of generation 1 is under way"
        );
        q.done(first, false);
        assert_eq!(taken(&mut q, true), Some(("a".into(), 2)));
        // A failed write is retried, unless a newer one waits.
        let second = ack("a", 2, true);
        q.done(second.clone(), true);
        assert_eq!(taken(&mut q, true), Some(("a".into(), 2)));
        q.push(ack("a", 3, false));
        q.done(second, true);
        assert_eq!(taken(&mut q, true), Some(("a".into(), 3)));
        assert_eq!(taken(&mut q, true), None);
    }
}
