//! Turns source states and updates into routing tables, one Function at a time.
//!
//! A Function's route is rebuilt only when the Function's generation or its set of versions
//! changed, and only that route changes in the table: the builder keeps the table it last
//! handed out and changes a clone of it (cheap: see [`RoutingTable`]), so a change costs the
//! same with 10 Functions as with 10,000. A complete state is compared with what the builder
//! holds to find the changed Functions; an [`Update`] names them.
//!
//! A Function whose new spec is invalid keeps its last good route and is reported as rejected;
//! so is a changed Function whose route would conflict with another one (the one already
//! serving keeps its claim; among Functions new at once, the first by namespace and name). A
//! Function naming a FunctionVersion not seen yet is *pending* instead (the two watches deliver
//! independently; the version is usually a moment behind): it keeps its last good route too,
//! and its report says what it waits for (docs/protocol.md, "Exceptions").

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use switchyard_core::cowmap::{CowMap, FxHashMap};
use switchyard_core::report::{Exception, ExceptionState};
use switchyard_core::table::{Route, TableError};
use switchyard_core::validate::ValidationError;
use switchyard_core::{BuildOptions, Function, FunctionVersion, RoutingTable};

use crate::live::{Live, Rejection, RouteExtras};
use crate::metrics::Metrics;
use crate::source::{State, Update};

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
}

/// Every good route by `namespace/name`; cheap to clone (for the snapshot writer).
pub type Goods = CowMap<String, Good>;

struct Entry {
    /// The last complete state this Function was part of.
    epoch: u64,
    /// The objects last seen for this Function, versions in pointer order.
    seen: Option<(Arc<Function>, Vec<Arc<FunctionVersion>>)>,
    fingerprint: Option<Fingerprint>,
}

/// What applying a state produced.
pub struct Outcome {
    /// The new table, when anything changed.
    pub live: Option<Live>,
    /// Functions refused by this state.
    pub rejected: usize,
    /// Every Function this state changed or removed, by `namespace/name` (for the swap log).
    pub touched: Vec<String>,
}

/// The router's memory between states.
pub struct Builder {
    opts: BuildOptions,
    replica: String,
    entries: FxHashMap<String, Entry>,
    counters: FxHashMap<String, Arc<AtomicU64>>,
    generation: u64,
    epoch: u64,
    /// Every good route, indexed: the table last handed out.
    table: RoutingTable,
    /// The extras of every route in `table`, by the route's address.
    extras: CowMap<usize, Arc<RouteExtras>>,
    goods: Goods,
    rejections: BTreeMap<String, Rejection>,
    /// Every Function not served as written (pending or rejected), by `namespace/name`.
    exceptions: BTreeMap<String, Exception>,
}

fn address(route: &Arc<Route>) -> usize {
    Arc::as_ptr(route) as usize
}

fn key_of(namespace: &str, name: &str) -> String {
    let mut key = String::with_capacity(namespace.len() + 1 + name.len());
    key.push_str(namespace);
    key.push('/');
    key.push_str(name);
    key
}

impl Builder {
    /// A builder with no routes yet, for replica `replica`.
    pub fn new(opts: BuildOptions, replica: String) -> Self {
        Builder {
            opts,
            replica,
            entries: FxHashMap::default(),
            counters: FxHashMap::default(),
            generation: 0,
            epoch: 0,
            table: RoutingTable::empty(),
            extras: CowMap::new(),
            goods: CowMap::new(),
            rejections: BTreeMap::new(),
            exceptions: BTreeMap::new(),
        }
    }

    /// The replica this builder builds for.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Every Function the table does not serve as written, uncapped (the report caps them).
    pub fn exceptions(&self) -> Vec<Exception> {
        self.exceptions.values().cloned().collect()
    }

    /// Every Function known, as `(namespace, name, generation)` of its latest spec (the local
    /// store's per-Function entries).
    pub fn functions(&self) -> Vec<(String, String, i64)> {
        self.entries
            .values()
            .filter_map(|e| e.seen.as_ref())
            .map(|(f, _)| {
                (
                    f.metadata.namespace.clone().unwrap_or_default(),
                    f.metadata.name.clone().unwrap_or_default(),
                    f.metadata.generation.unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Every last good route with its inputs (for the snapshot).
    pub fn good(&self) -> impl Iterator<Item = &Good> {
        self.goods.values()
    }

    /// The same, as a cheap copy that another thread can read.
    pub fn goods(&self) -> Goods {
        self.goods.clone()
    }

    /// Applies a complete state read at `as_of`; returns a new table when anything changed.
    pub fn apply(&mut self, state: &State, as_of: SystemTime, metrics: &Metrics) -> Outcome {
        let started = Instant::now();
        let mut by_function: FxHashMap<(&str, &str), Vec<&Arc<FunctionVersion>>> =
            FxHashMap::default();
        for v in &state.versions {
            let ns = v.metadata.namespace.as_deref().unwrap_or_default();
            by_function
                .entry((ns, v.spec.function.as_str()))
                .or_default()
                .push(v);
        }
        // Entries not stamped with this epoch below are Functions that are gone.
        self.epoch += 1;
        let mut changed = Vec::new();
        for f in &state.functions {
            let ns = f.metadata.namespace.as_deref().unwrap_or_default();
            let name = f.metadata.name.as_deref().unwrap_or_default();
            let inputs = by_function.remove(&(ns, name)).unwrap_or_default();
            let key = key_of(ns, name);
            if self.observe(&key, f, inputs) {
                changed.push(key);
            }
        }
        let gone: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.epoch != self.epoch)
            .map(|(k, _)| k.clone())
            .collect();
        self.commit(changed, gone, as_of, metrics, started)
    }

    /// Applies an update of the Functions it names; returns a new table when anything changed.
    pub fn apply_update(
        &mut self,
        update: &Update,
        as_of: SystemTime,
        metrics: &Metrics,
    ) -> Outcome {
        let started = Instant::now();
        let mut changed = Vec::new();
        let mut gone = Vec::new();
        for inputs in &update.functions {
            let key = key_of(&inputs.namespace, &inputs.name);
            match &inputs.function {
                Some(f) if self.observe(&key, f, inputs.versions.iter().collect()) => {
                    changed.push(key)
                }
                Some(_) => {}
                None if self.entries.contains_key(&key) => gone.push(key),
                None => {}
            }
        }
        self.commit(changed, gone, as_of, metrics, started)
    }

    /// Records a Function's current inputs; true when its route must be rebuilt.
    fn observe(
        &mut self,
        key: &str,
        f: &Arc<Function>,
        mut inputs: Vec<&Arc<FunctionVersion>>,
    ) -> bool {
        inputs.sort_by_key(|v| Arc::as_ptr(v) as usize);
        // Fast path: the very same objects as last time (a source keeps unchanged objects'
        // Arcs), so nothing to compare field by field.
        if let Some(e) = self.entries.get_mut(key) {
            e.epoch = self.epoch;
            if let Some(seen) = &e.seen {
                if Arc::ptr_eq(&seen.0, f)
                    && seen.1.len() == inputs.len()
                    && seen.1.iter().zip(&inputs).all(|(a, b)| Arc::ptr_eq(a, b))
                {
                    return false;
                }
            }
        }
        let versions: Vec<Arc<FunctionVersion>> = inputs.into_iter().cloned().collect();
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
        let epoch = self.epoch;
        let entry = self.entries.entry(key.to_string()).or_insert(Entry {
            epoch,
            seen: None,
            fingerprint: None,
        });
        entry.seen = Some((Arc::clone(f), versions));
        if entry.fingerprint.as_ref() == Some(&fingerprint) {
            return false;
        }
        entry.fingerprint = Some(fingerprint);
        true
    }

    /// Drops a Function that is gone, with its route.
    fn forget(&mut self, key: &str) {
        if let Some(old) = self.table.remove(key) {
            self.extras.remove(&address(&old));
        }
        self.goods.remove(key);
        self.entries.remove(key);
        self.counters.remove(key);
        self.rejections.remove(key);
        self.exceptions.remove(key);
    }

    /// Rebuilds the changed Functions' routes into the table, drops the gone ones, and hands
    /// out the table if anything changed.
    fn commit(
        &mut self,
        mut changed: Vec<String>,
        gone: Vec<String>,
        as_of: SystemTime,
        metrics: &Metrics,
        started: Instant,
    ) -> Outcome {
        for key in &gone {
            self.forget(key);
        }
        // In name order, so that of two new Functions claiming one prefix the first keeps it,
        // whichever way they arrived.
        changed.sort_unstable();
        changed.dedup();
        let mut rejected = 0;
        for key in &changed {
            let Some((f, versions)) = self.entries.get(key).and_then(|e| e.seen.clone()) else {
                continue;
            };
            let generation = f.metadata.generation.unwrap_or_default();
            let namespace = f.metadata.namespace.clone().unwrap_or_default();
            let name = f.metadata.name.clone().unwrap_or_default();
            let refused = match Route::build(&f, versions.iter().map(|v| v.as_ref()), &self.opts) {
                Ok(route) => self
                    .serve(key, Arc::new(route), f, versions, metrics)
                    .map(|why| (ExceptionState::Rejected, why)),
                Err(e) => Some(match *e.source {
                    // The version may simply not have arrived through its own watch yet.
                    ValidationError::UnknownVersion { function, version } => (
                        ExceptionState::Pending,
                        format!(
                            "waiting for FunctionVersion {}",
                            switchyard_core::object_name(&function, &version)
                        ),
                    ),
                    _ => (ExceptionState::Rejected, e.to_string()),
                }),
            };
            self.rejections.remove(key);
            match refused {
                Some((state, reason)) => {
                    if state == ExceptionState::Rejected {
                        rejected += 1;
                        self.rejections.insert(
                            key.clone(),
                            Rejection {
                                function: key.clone(),
                                generation,
                                reason: reason.clone(),
                            },
                        );
                    }
                    self.exceptions.insert(
                        key.clone(),
                        Exception {
                            namespace,
                            name,
                            generation,
                            state,
                            reason,
                        },
                    );
                }
                None => {
                    self.exceptions.remove(key);
                }
            }
        }

        let mut live = None;
        if !changed.is_empty() || !gone.is_empty() || self.generation == 0 {
            self.generation += 1;
            live = Some(Live::new(
                self.table.clone(),
                self.extras.clone(),
                self.generation,
                as_of,
                self.rejections.values().cloned().collect(),
            ));
            metrics
                .build_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        metrics.rejected_updates.inc_by(rejected as u64);
        changed.extend(gone);
        Outcome {
            live,
            rejected,
            touched: changed,
        }
    }

    /// Puts a freshly built route in the table; the reason when it cannot go there (it claims
    /// what another Function serves), in which case the last good route stays.
    fn serve(
        &mut self,
        key: &str,
        route: Arc<Route>,
        function: Arc<Function>,
        versions: Vec<Arc<FunctionVersion>>,
        metrics: &Metrics,
    ) -> Option<String> {
        match self.table.insert(Arc::clone(&route)) {
            Ok(old) => {
                if let Some(old) = old {
                    self.extras.remove(&address(&old));
                }
                let counter = self.counters.entry(key.to_string()).or_default().clone();
                let extras = Arc::new(RouteExtras {
                    counter,
                    backends: route
                        .backends
                        .iter()
                        .map(|b| metrics.backend(key, &b.version))
                        .collect(),
                    safety: crate::live::Safety::new(&function, route.backends.len()),
                    mirror: function.spec.shadow.as_ref().and_then(|s| {
                        let stats = metrics.shadow.stats(key, &s.version);
                        crate::shadow::Lane::new(s, &route, stats)
                    }),
                });
                self.extras.insert(address(&route), extras);
                self.goods.insert(
                    key.to_string(),
                    Good {
                        route,
                        function,
                        versions,
                    },
                );
                None
            }
            Err(TableError::Conflict {
                host,
                prefix,
                first,
                ..
            }) => Some(format!(
                "conflicts with function {first}: both claim host {host} with path prefix {prefix}"
            )),
            // insert only reports conflicts: the route is built already.
            Err(e) => Some(e.to_string()),
        }
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
        let routes = live.table.routes();
        let route = routes.iter().find(|r| r.name == name).expect("routed");
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

        // Weights that do not add up: a refusal (a version not seen yet would be pending).
        let bad = Function::test("hello")
            .with_weight("1.0.0", 800_000)
            .with_weight("2.0.0", 100_000)
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
            live.rejections[0].reason.contains("900000"),
            "{}",
            live.rejections[0].reason
        );
        let exceptions = b.exceptions();
        assert_eq!(exceptions.len(), 1);
        assert_eq!(exceptions[0].generation, 2);
        assert_eq!(exceptions[0].state, ExceptionState::Rejected);
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
        let routes = live.table.routes();
        let names: Vec<_> = routes.iter().map(|r| r.name.as_str()).collect();
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
    fn a_function_naming_a_version_not_seen_yet_is_pending_then_served() {
        let (mut b, m) = builder();
        let old = Function::test("d").with_weight("1.0.0", 1_000_000);
        b.apply(&state(vec![old], versions("d")), SystemTime::now(), &m);
        // The Function's watch delivers generation 2 before the version's watch delivers 3.0.0.
        let new = Function::test("d")
            .with_weight("3.0.0", 1_000_000)
            .at_generation(2);
        let out = b.apply(
            &state(vec![new.clone()], versions("d")),
            SystemTime::now(),
            &m,
        );
        assert_eq!(out.rejected, 0, "pending is not a refusal");
        let live = out.live.expect("a table");
        assert!(live.rejections.is_empty());
        assert_eq!(weight_of(&live, "d", "1.0.0"), 1_000_000, "last good route");
        let exceptions = b.exceptions();
        assert_eq!(exceptions.len(), 1);
        assert_eq!(exceptions[0].state, ExceptionState::Pending);
        assert_eq!(exceptions[0].reason, "waiting for FunctionVersion d-3-0-0");
        assert_eq!(exceptions[0].generation, 2);
        // The version arrives: served, nothing listed.
        let mut vs = versions("d");
        vs.push(FunctionVersion::test_endpoint(
            "d",
            "3.0.0",
            "http://127.0.0.1:9",
        ));
        let live = b
            .apply(&state(vec![new], vs), SystemTime::now(), &m)
            .live
            .expect("a table");
        assert_eq!(weight_of(&live, "d", "3.0.0"), 1_000_000);
        assert!(b.exceptions().is_empty());
        assert_eq!(b.functions(), [("default".to_string(), "d".to_string(), 2)]);
    }

    /// The update a source sends for the Functions named, as they are in `state`.
    fn update_of(state: &State, names: &[&str]) -> Update {
        Update {
            functions: names
                .iter()
                .map(|name| crate::source::FunctionInputs {
                    namespace: "default".into(),
                    name: name.to_string(),
                    function: state
                        .functions
                        .iter()
                        .find(|f| f.metadata.name.as_deref() == Some(name))
                        .cloned(),
                    versions: state
                        .versions
                        .iter()
                        .filter(|v| v.spec.function == *name)
                        .cloned()
                        .collect(),
                })
                .collect(),
        }
    }

    fn served(live: &Live) -> Vec<(String, i64, Vec<u32>)> {
        live.table
            .routes()
            .iter()
            .map(|r| {
                let weights = r.backends.iter().map(|b| b.weight).collect();
                (r.key(), r.generation, weights)
            })
            .collect()
    }

    #[test]
    fn updates_give_the_table_and_refusals_a_complete_state_gives() {
        let names = ["a", "b", "c", "d"];
        let fleet = |a: Function, b: Function, c: Option<Function>| {
            let mut fs = vec![
                a,
                b,
                Function::test("d")
                    .with_prefix("/d")
                    .with_weight("1.0.0", 1_000_000),
            ];
            fs.extend(c);
            let vs = names.iter().flat_map(|n| versions(n)).collect();
            state(fs, vs)
        };
        let a = Function::test("a").with_weight("1.0.0", 1_000_000);
        let b = Function::test("b")
            .with_prefix("/b")
            .with_weight("1.0.0", 1_000_000);
        let steps = [
            // a shifts; b moves onto d's prefix (refused, keeps /b); c arrives.
            fleet(
                a.clone()
                    .with_weight("1.0.0", 400_000)
                    .with_weight("2.0.0", 600_000)
                    .at_generation(2),
                b.clone().with_prefix("/d").at_generation(2),
                Some(
                    Function::test("c")
                        .with_prefix("/c")
                        .with_weight("2.0.0", 1_000_000),
                ),
            ),
            // a names a version that does not exist (refused, keeps its route); c goes.
            fleet(
                Function::test("a")
                    .with_weight("9.0.0", 1_000_000)
                    .at_generation(3),
                b.clone().with_prefix("/d").at_generation(2),
                None,
            ),
        ];
        // The same history, once as updates and once as complete states.
        let (mut stepwise, m) = builder();
        let (mut whole, m2) = builder();
        let first = fleet(a, b, None);
        stepwise.apply(&first, SystemTime::now(), &m);
        whole.apply(&first, SystemTime::now(), &m2);
        let mut last = first;
        for step in steps {
            let update = update_of(&step, &names);
            let by_update = stepwise
                .apply_update(&update, SystemTime::now(), &m)
                .live
                .expect("a table");
            let by_state = whole
                .apply(&step, SystemTime::now(), &m2)
                .live
                .expect("a table");
            assert_eq!(served(&by_update), served(&by_state));
            assert_eq!(by_update.rejections, by_state.rejections);
            last = step;
        }
        let again = stepwise.apply(&last, SystemTime::now(), &m).live;
        assert!(again.is_none(), "the same state again changes nothing");
    }

    #[test]
    fn an_update_rebuilds_only_the_changed_function() {
        let (mut b, m) = builder();
        let fs = vec![
            Function::test("a").with_weight("1.0.0", 1_000_000),
            Function::test("b").with_weight("1.0.0", 1_000_000),
        ];
        let vs = [versions("a"), versions("b")].concat();
        b.apply(&state(fs.clone(), vs.clone()), SystemTime::now(), &m);
        let next = state(
            vec![
                Function::test("a")
                    .with_weight("2.0.0", 1_000_000)
                    .at_generation(2),
                fs[1].clone(),
            ],
            vs,
        );
        let out = b.apply_update(&update_of(&next, &["a"]), SystemTime::now(), &m);
        let live = out.live.expect("a table");
        assert_eq!(weight_of(&live, "a", "2.0.0"), 1_000_000);
        assert_eq!(weight_of(&live, "b", "1.0.0"), 1_000_000);

        let gone = b.apply_update(
            &Update {
                functions: vec![crate::source::FunctionInputs {
                    namespace: "default".into(),
                    name: "b".into(),
                    function: None,
                    versions: Vec::new(),
                }],
            },
            SystemTime::now(),
            &m,
        );
        let live = gone.live.expect("a table");
        assert_eq!(live.table.len(), 1);
        assert!(live.table.get("default/b").is_none());
        assert!(b.good().all(|g| g.route.name == "a"));
    }
}
