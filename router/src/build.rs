//! Turns complete source states into routing tables, one Function at a time.
//!
//! Each Function's route is rebuilt only when the Function's generation or its set of versions
//! changed. A Function whose new spec is invalid keeps its last good route and is reported as
//! rejected; so is a changed Function whose route would conflict with another one. The table is
//! then assembled from all good routes and handed back to be swapped in.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use switchyard_core::table::{Route, TableError};
use switchyard_core::{BuildOptions, Function, FunctionVersion, RoutingTable};

use crate::live::{Live, Rejection, RouteExtras};
use crate::metrics::Metrics;
use crate::source::{Ack, State};

/// What one Function's route was built from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    uid: String,
    generation: i64,
    /// `(name, uid)` of every FunctionVersion of the function, sorted.
    versions: Vec<(String, String)>,
}

/// The last good route of a Function and what it was built from (also what a snapshot keeps).
#[derive(Clone)]
pub struct Good {
    /// The route.
    pub route: Arc<Route>,
    /// The Function it was built from.
    pub function: Arc<Function>,
    /// The FunctionVersions it was built from.
    pub versions: Vec<Arc<FunctionVersion>>,
    extras: Arc<RouteExtras>,
}

struct Entry {
    /// The last state this Function was part of.
    epoch: u64,
    /// The objects last seen for this Function, versions in pointer order.
    seen: Option<(Arc<Function>, Vec<Arc<FunctionVersion>>)>,
    fingerprint: Option<Fingerprint>,
    good: Option<Good>,
    rejection: Option<Rejection>,
}

/// What applying a state produced.
pub struct Outcome {
    /// The new table, when anything changed.
    pub live: Option<Live>,
    /// Acknowledgements to send.
    pub acks: Vec<Ack>,
    /// Functions refused by this state.
    pub rejected: usize,
}

/// The router's memory between states.
pub struct Builder {
    opts: BuildOptions,
    replica: String,
    entries: HashMap<String, Entry>,
    counters: HashMap<String, Arc<AtomicU64>>,
    /// What this replica last sent for a Function: `(generation, rejected)`.
    sent: HashMap<String, (i64, Option<String>)>,
    generation: u64,
    epoch: u64,
}

impl Builder {
    /// A builder with no routes yet.
    pub fn new(opts: BuildOptions, replica: String) -> Self {
        Builder {
            opts,
            replica,
            entries: HashMap::new(),
            counters: HashMap::new(),
            sent: HashMap::new(),
            generation: 0,
            epoch: 0,
        }
    }

    /// Every last good route with its inputs (for the snapshot).
    pub fn good(&self) -> impl Iterator<Item = &Good> {
        self.entries.values().filter_map(|e| e.good.as_ref())
    }

    /// Applies a complete state read at `as_of`; returns a new table when anything changed.
    pub fn apply(&mut self, state: &State, as_of: SystemTime, metrics: &Metrics) -> Outcome {
        let started = Instant::now();
        let mut by_function: HashMap<(&str, &str), Vec<&Arc<FunctionVersion>>> = HashMap::new();
        for v in &state.versions {
            let ns = v.metadata.namespace.as_deref().unwrap_or_default();
            by_function
                .entry((ns, v.spec.function.as_str()))
                .or_default()
                .push(v);
        }
        let mut changed: HashMap<String, Option<Good>> = HashMap::new();
        // Entries not stamped with this epoch below are Functions that are gone.
        self.epoch += 1;
        let epoch = self.epoch;
        let mut rejected = 0;
        let mut key = String::new();
        for f in &state.functions {
            let ns = f.metadata.namespace.as_deref().unwrap_or_default();
            let name = f.metadata.name.as_deref().unwrap_or_default();
            key.clear();
            key.push_str(ns);
            key.push('/');
            key.push_str(name);
            let mut inputs: Vec<&Arc<FunctionVersion>> =
                by_function.get(&(ns, name)).cloned().unwrap_or_default();
            inputs.sort_by_key(|v| Arc::as_ptr(v) as usize);
            // Fast path: the very same objects as last time (a source keeps unchanged
            // objects' Arcs), so nothing to compare field by field.
            if let Some(e) = self.entries.get_mut(key.as_str()) {
                e.epoch = epoch;
                if let Some(seen) = &e.seen {
                    if Arc::ptr_eq(&seen.0, f)
                        && seen.1.len() == inputs.len()
                        && seen.1.iter().zip(&inputs).all(|(a, b)| Arc::ptr_eq(a, b))
                    {
                        continue;
                    }
                }
            }
            let key = key.clone();
            let versions: Vec<Arc<FunctionVersion>> =
                inputs.iter().map(|v| Arc::clone(v)).collect();
            let mut ids: Vec<(String, String)> = versions
                .iter()
                .map(|v| {
                    (
                        v.metadata.name.clone().unwrap_or_default(),
                        v.metadata.uid.clone().unwrap_or_default(),
                    )
                })
                .collect();
            ids.sort();
            let fingerprint = Fingerprint {
                uid: f.metadata.uid.clone().unwrap_or_default(),
                generation: f.metadata.generation.unwrap_or_default(),
                versions: ids,
            };
            let entry = self.entries.entry(key.clone()).or_insert(Entry {
                epoch,
                seen: None,
                fingerprint: None,
                good: None,
                rejection: None,
            });
            entry.seen = Some((Arc::clone(f), versions.clone()));
            if entry.fingerprint.as_ref() == Some(&fingerprint) {
                continue;
            }
            entry.fingerprint = Some(fingerprint);
            changed.insert(key.clone(), entry.good.clone());
            match Route::build(f, versions.iter().map(|v| v.as_ref()), &self.opts) {
                Ok(route) => {
                    let route = Arc::new(route);
                    let counter = self.counters.entry(key.clone()).or_default().clone();
                    let extras = Arc::new(RouteExtras {
                        counter,
                        backends: route
                            .backends
                            .iter()
                            .map(|b| metrics.backend(&key, &b.version))
                            .collect(),
                    });
                    entry.good = Some(Good {
                        route,
                        function: Arc::clone(f),
                        versions,
                        extras,
                    });
                    entry.rejection = None;
                }
                Err(e) => {
                    rejected += 1;
                    entry.rejection = Some(Rejection {
                        function: key.clone(),
                        generation: f.metadata.generation.unwrap_or_default(),
                        reason: e.to_string(),
                    });
                }
            }
        }
        let gone: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.epoch != epoch)
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            self.entries.remove(&k);
            self.counters.remove(&k);
            self.sent.remove(&k);
            changed.insert(k, None);
        }

        let mut live = None;
        if !changed.is_empty() || self.generation == 0 {
            let table = loop {
                let routes = self.good().map(|g| Arc::clone(&g.route));
                match RoutingTable::from_routes(routes) {
                    Ok(table) => break table,
                    Err(TableError::Conflict {
                        first,
                        second,
                        host,
                        prefix,
                    }) => {
                        // Blame the function that changed now; the one already serving keeps
                        // its claim. With neither changed (a first build), the second loses.
                        let culprit =
                            if changed.contains_key(&second) || !changed.contains_key(&first) {
                                second.clone()
                            } else {
                                first.clone()
                            };
                        let other = if culprit == second { &first } else { &second };
                        rejected += 1;
                        if let Some(entry) = self.entries.get_mut(&culprit) {
                            let previous = changed.get(&culprit).cloned().flatten();
                            // Reverting to the previous route must not conflict again.
                            let same_claim =
                                entry.good.as_ref().zip(previous.as_ref()).is_some_and(
                                    |(now, before)| Arc::ptr_eq(&now.route, &before.route),
                                );
                            entry.good = if same_claim { None } else { previous };
                            changed.insert(culprit.clone(), None);
                            entry.rejection = Some(Rejection {
                                function: culprit.clone(),
                                generation: entry
                                    .fingerprint
                                    .as_ref()
                                    .map_or(0, |f| f.generation),
                                reason: format!(
                                    "conflicts with function {other}: both claim host {host} with path prefix {prefix}"
                                ),
                            });
                        }
                    }
                    // from_routes only reports conflicts: routes are built already.
                    Err(TableError::Route(e)) => {
                        tracing::error!("unexpected route error while indexing: {e}");
                        break RoutingTable::empty();
                    }
                }
            };
            self.generation += 1;
            let mut rejections: Vec<Rejection> = self
                .entries
                .values()
                .filter_map(|e| e.rejection.clone())
                .collect();
            rejections.sort_by(|a, b| a.function.cmp(&b.function));
            let entries = &self.entries;
            live = Some(Live::new(
                table,
                self.generation,
                as_of,
                rejections,
                |route| {
                    entries
                        .get(&route.key())
                        .and_then(|e| e.good.as_ref())
                        .map(|g| Arc::clone(&g.extras))
                        .unwrap_or_else(|| {
                            Arc::new(RouteExtras {
                                counter: Arc::default(),
                                backends: Vec::new(),
                            })
                        })
                },
            ));
            metrics
                .build_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        metrics.rejected_updates.inc_by(rejected as u64);
        let acks = self.acks();
        Outcome {
            live,
            acks,
            rejected,
        }
    }

    /// Acknowledgements this replica owes: every Function whose status entry for this replica
    /// differs from what it now serves or refuses, unless that report is already on its way.
    fn acks(&mut self) -> Vec<Ack> {
        let mut acks = Vec::new();
        for (key, entry) in &self.entries {
            let Some((f, _)) = &entry.seen else {
                continue;
            };
            let generation = f.metadata.generation.unwrap_or_default();
            let rejected = entry
                .rejection
                .as_ref()
                .filter(|r| r.generation == generation)
                .map(|r| r.reason.clone());
            let reported = f.status.as_ref().and_then(|s| {
                s.routers
                    .iter()
                    .find(|r| r.name == self.replica)
                    .map(|r| (r.observed_generation, r.rejected.clone()))
            });
            let wanted = (generation, rejected);
            if reported.as_ref() == Some(&wanted) || self.sent.get(key) == Some(&wanted) {
                continue;
            }
            self.sent.insert(key.clone(), wanted.clone());
            acks.push(Ack {
                namespace: f.metadata.namespace.clone().unwrap_or_default(),
                name: f.metadata.name.clone().unwrap_or_default(),
                generation: wanted.0,
                rejected: wanted.1,
            });
        }
        acks
    }

    /// Forgets what was sent, so that acks are re-derived from the Functions' status (after the
    /// source reconnects, writes may have been lost).
    pub fn forget_sent(&mut self) {
        self.sent.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(functions: Vec<Function>, versions: Vec<FunctionVersion>) -> State {
        State {
            functions: functions.into_iter().map(Arc::new).collect(),
            versions: versions.into_iter().map(Arc::new).collect(),
        }
    }

    fn versions(function: &str) -> Vec<FunctionVersion> {
        ["1.0.0", "2.0.0"]
            .iter()
            .map(|v| FunctionVersion::test_endpoint(function, v, "http://127.0.0.1:9"))
            .collect()
    }

    fn builder() -> (Builder, Metrics) {
        (
            Builder::new(BuildOptions::default(), "r0".into()),
            Metrics::new(),
        )
    }

    fn weight_of(live: &Live, name: &str, version: &str) -> u32 {
        let route = live
            .table
            .routes()
            .iter()
            .find(|r| r.name == name)
            .expect("routed");
        route
            .backends
            .iter()
            .find(|b| b.version == version)
            .map_or(0, |b| b.weight)
    }

    #[test]
    fn an_invalid_update_keeps_the_last_good_route_and_is_reported() {
        let (mut b, m) = builder();
        let good = Function::test("hello")
            .with_weight("1.0.0", 900_000)
            .with_weight("2.0.0", 100_000);
        let first = b.apply(&state(vec![good], versions("hello")), SystemTime::now(), &m);
        let first = first.live.expect("a first table");
        assert_eq!(weight_of(&first, "hello", "2.0.0"), 100_000);

        let bad = Function::test("hello")
            .with_weight("3.0.0", 1_000_000)
            .at_generation(2);
        let out = b.apply(&state(vec![bad], versions("hello")), SystemTime::now(), &m);
        assert_eq!(out.rejected, 1);
        let live = out.live.expect("a table carrying the rejection");
        assert_eq!(
            weight_of(&live, "hello", "2.0.0"),
            100_000,
            "the last good route stays"
        );
        assert_eq!(live.table.routes()[0].generation, 1);
        assert_eq!(live.rejections.len(), 1);
        assert_eq!(live.rejections[0].generation, 2);
        assert!(
            live.rejections[0].reason.contains("3.0.0"),
            "{}",
            live.rejections[0].reason
        );
        assert_eq!(out.acks.len(), 1);
        assert_eq!(out.acks[0].generation, 2);
        assert!(out.acks[0].rejected.is_some());
    }

    #[test]
    fn a_new_function_claiming_a_served_prefix_is_refused_and_the_served_one_keeps_it() {
        let (mut b, m) = builder();
        let a = Function::test("a")
            .with_prefix("/shop")
            .with_weight("1.0.0", 1_000_000);
        let mut vs = versions("a");
        vs.extend(versions("b"));
        b.apply(&state(vec![a.clone()], vs.clone()), SystemTime::now(), &m);
        let b_fn = Function::test("b")
            .with_prefix("/shop")
            .with_weight("1.0.0", 1_000_000);
        let out = b.apply(&state(vec![a, b_fn], vs), SystemTime::now(), &m);
        let live = out.live.expect("a table");
        let names: Vec<_> = live
            .table
            .routes()
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(names, ["a"]);
        assert_eq!(live.rejections.len(), 1);
        assert_eq!(live.rejections[0].function, "default/b");
        assert!(live.rejections[0].reason.contains("default/a"));
    }

    #[test]
    fn request_counters_survive_table_swaps_and_unchanged_states_swap_nothing() {
        let (mut b, m) = builder();
        let f = Function::test("c")
            .with_weight("1.0.0", 500_000)
            .with_weight("2.0.0", 500_000);
        let vs = versions("c");
        let first = b
            .apply(&state(vec![f.clone()], vs.clone()), SystemTime::now(), &m)
            .live
            .expect("table");
        let counter = Arc::clone(
            &first
                .extras(&first.table.routes()[0])
                .expect("extras")
                .counter,
        );
        counter.fetch_add(7, std::sync::atomic::Ordering::Relaxed);

        let same = b.apply(&state(vec![f.clone()], vs.clone()), SystemTime::now(), &m);
        assert!(same.live.is_none(), "nothing changed, nothing to swap");

        let shifted = f
            .with_weight("2.0.0", 600_000)
            .with_weight("1.0.0", 400_000)
            .at_generation(2);
        let next = b
            .apply(&state(vec![shifted], vs), SystemTime::now(), &m)
            .live
            .expect("table");
        let again = &next
            .extras(&next.table.routes()[0])
            .expect("extras")
            .counter;
        assert!(
            Arc::ptr_eq(&counter, again),
            "the roll sequence continues across swaps"
        );
        assert_eq!(next.generation, first.generation + 1);
    }

    #[test]
    fn acks_are_skipped_when_the_status_already_reports_them() {
        let (mut b, m) = builder();
        let mut f = Function::test("d").with_weight("1.0.0", 1_000_000);
        let out = b.apply(
            &state(vec![f.clone()], versions("d")),
            SystemTime::now(),
            &m,
        );
        assert_eq!(out.acks.len(), 1);
        // Not sent twice while on its way.
        let again = b.apply(
            &state(vec![f.clone()], versions("d")),
            SystemTime::now(),
            &m,
        );
        assert!(again.acks.is_empty());
        // A restarted router finds its entry in the status and sends nothing.
        f.status = Some(switchyard_core::FunctionStatus {
            routers: vec![switchyard_core::RouterAck {
                name: "r0".into(),
                observed_generation: 1,
                applied_at: "2026-11-27T00:00:00Z".into(),
                rejected: None,
            }],
        });
        let (mut fresh, m2) = builder();
        let out = fresh.apply(&state(vec![f], versions("d")), SystemTime::now(), &m2);
        assert!(out.acks.is_empty());
    }
}
