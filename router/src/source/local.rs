//! The router's side of the local store: following a store directory (`--store dir:PATH`).
//!
//! The documents and their locked, atomic files are the `switchyard-store` crate's, shared with
//! the CLI; here [`LocalSource`] is the router's [`ConfigSource`] over a [`LocalStore`],
//! following its `functions/` directory with file notifications and writing the router's own
//! file, `routers/<replica>.json`: heartbeat, table, numbers and one entry per function
//! (docs/protocol.md, "Local store").

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use switchyard_core::numbers::Numbers;
use switchyard_core::protocol;
use switchyard_core::report::{ExceptionState, TableReport};
use switchyard_store::{
    FunctionDocument, FunctionEntry, LocalStore, RouterDocument, StoreError, LOCAL_NAMESPACE,
};
use tokio::sync::mpsc;

use super::{ConfigSource, Identity, ReadyGate, Served, SourceEvent, State};

/// The least time between two writes of the numbers.
const NUMBERS_EVERY: Duration = Duration::from_secs(1);

/// How a router follows a local store.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// The store directory.
    pub root: PathBuf,
    /// How long the router's heartbeat holds; it is renewed every third of it. Default 10 s.
    pub lease_duration: Duration,
    /// The router's listen address, recorded for people and tools.
    pub listen: String,
}

/// The router's [`ConfigSource`] over a local store.
pub struct LocalSource {
    store: LocalStore,
    doc: RouterDocument,
    last_good: BTreeMap<String, FunctionDocument>,
    changes: mpsc::UnboundedReceiver<()>,
    _watcher: RecommendedWatcher,
    heartbeat: tokio::time::Interval,
    started: bool,
    /// Whether the file has been written once (the heartbeat starts then).
    written: bool,
    gate: Arc<ReadyGate>,
    numbers_written: Option<Instant>,
    numbers_due: bool,
    /// The rollouts to judge, for the canary decider (see [`LocalSource::canary`]).
    rollouts: Option<tokio::sync::watch::Sender<crate::canary::Rollouts>>,
}

impl LocalSource {
    /// Opens the store and starts following its `functions/` directory. A store that does
    /// not exist is an error, not an empty routing table reported ready.
    pub fn open(opts: LocalOptions, identity: Identity) -> anyhow::Result<LocalSource> {
        let store = LocalStore::open_existing(&opts.root)?;
        let (tx, changes) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // Only writes count: the router's own reads raise open and access events,
                // and following those would rescan the directory in a loop.
                let write = event.is_ok_and(|e| {
                    matches!(
                        e.kind,
                        notify::EventKind::Create(_)
                            | notify::EventKind::Modify(_)
                            | notify::EventKind::Remove(_)
                    )
                });
                if write {
                    let _ = tx.send(());
                }
            })?;
        watcher.watch(&store.functions_dir(), RecursiveMode::NonRecursive)?;
        let duration = opts.lease_duration.max(Duration::from_secs(1));
        // Written with the first table (see `served`): a replica counts once it says something.
        let doc = RouterDocument {
            name: identity.replica.clone(),
            renewed_ms: now_ms(),
            lease_duration_seconds: duration.as_secs() as i32,
            listen: opts.listen,
            started_at: identity.started_at.clone(),
            ..Default::default()
        };
        Ok(LocalSource {
            store,
            doc,
            last_good: BTreeMap::new(),
            changes,
            _watcher: watcher,
            heartbeat: tokio::time::interval(duration / 3),
            started: false,
            written: false,
            gate: identity.ready,
            numbers_written: None,
            numbers_due: false,
            rollouts: None,
        })
    }

    /// Makes this (single) router the canary decider of the store: it judges every rollout
    /// with its own counters and writes the transitions (docs/protocol.md, "Local store").
    pub fn canary(
        &mut self,
        replica: String,
        shared: Arc<crate::live::Shared>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let (tx, rx) = tokio::sync::watch::channel(crate::canary::Rollouts::default());
        self.rollouts = Some(tx);
        crate::canary::local::spawn(self.store.clone(), replica, shared, rx, stop);
    }

    /// Hands the rollouts judged in the last good documents to the canary decider.
    fn send_rollouts(&self) {
        let Some(tx) = &self.rollouts else {
            return;
        };
        let judged: BTreeMap<(String, String), Arc<switchyard_core::Function>> = self
            .last_good
            .iter()
            .filter_map(|(name, doc)| {
                let f = doc.function.as_ref()?;
                crate::canary::judged(f).then(|| {
                    (
                        (LOCAL_NAMESPACE.to_string(), name.clone()),
                        Arc::new(f.clone()),
                    )
                })
            })
            .collect();
        tx.send_if_modified(|old| {
            let changed = **old != judged;
            if changed {
                *old = Arc::new(judged);
            }
            changed
        });
    }

    /// Reads every function file; a broken or invalid one keeps its last good document.
    fn read_state(&mut self) -> Result<State, StoreError> {
        let names = self.store.function_names()?;
        self.last_good.retain(|name, _| names.contains(name));
        for name in names {
            match self.store.read(&name) {
                Ok(doc) => {
                    self.last_good.insert(name, doc);
                }
                Err(e) => tracing::warn!("keeping the last good state of function {name}: {e}"),
            }
        }
        self.send_rollouts();
        let mut state = State::default();
        for doc in self.last_good.values() {
            if let Some(f) = &doc.function {
                state.functions.push(Arc::new(f.clone()));
            }
            state
                .versions
                .extend(doc.versions.iter().cloned().map(Arc::new));
        }
        Ok(state)
    }

    /// Writes the file with a renewed heartbeat; the first success opens the ready gate.
    fn renew(&mut self) {
        self.doc.renewed_ms = now_ms();
        if self.numbers_due {
            self.numbers_due = false;
            self.numbers_written = Some(Instant::now());
        }
        match self.store.write_router(&self.doc) {
            Ok(()) => {
                self.written = true;
                self.gate.renewed(
                    self.doc.renewed_ms + i64::from(self.doc.lease_duration_seconds) * 1000,
                );
                self.gate.reported();
            }
            Err(e) => tracing::warn!("writing the router file: {e}"),
        }
    }
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

#[async_trait]
impl ConfigSource for LocalSource {
    async fn next(&mut self) -> Option<SourceEvent> {
        if self.started {
            loop {
                tokio::select! {
                    change = self.changes.recv() => {
                        change?;
                        // One write is several events (create, write, rename): take them all.
                        while self.changes.try_recv().is_ok() {}
                        break;
                    }
                    _ = self.heartbeat.tick(), if self.written => self.renew(),
                }
            }
        }
        self.started = true;
        Some(match self.read_state() {
            Ok(state) => SourceEvent::State(state),
            Err(e) => SourceEvent::Lost(e.to_string()),
        })
    }

    fn wants_functions(&self) -> bool {
        true
    }

    fn served(&mut self, served: Served) {
        let now = protocol::applied_at(jiff::Timestamp::now());
        let mut entries: Vec<FunctionEntry> = served
            .functions
            .into_iter()
            .filter(|(ns, _, _)| ns == LOCAL_NAMESPACE)
            .map(|(_, name, generation)| {
                let exception = served.exceptions.iter().find(|e| {
                    e.name == name && e.namespace == LOCAL_NAMESPACE && e.generation == generation
                });
                let why = |state| {
                    exception
                        .filter(|e| e.state == state)
                        .map(|e| e.reason.clone())
                };
                FunctionEntry {
                    rejected: why(ExceptionState::Rejected),
                    pending: why(ExceptionState::Pending),
                    name,
                    observed_generation: generation,
                    applied_at: String::new(),
                }
            })
            .collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        // An entry that says what it said keeps its time.
        for e in &mut entries {
            e.applied_at = match self.doc.entry(&e.name) {
                Some(old)
                    if old.observed_generation == e.observed_generation
                        && old.rejected == e.rejected
                        && old.pending == e.pending =>
                {
                    old.applied_at.clone()
                }
                _ => now.clone(),
            };
        }
        let table = TableReport {
            generation: served.generation,
            read_at: served
                .as_of
                .and_then(|t| jiff::Timestamp::try_from(t).ok())
                .map(protocol::report_time)
                .unwrap_or_default(),
            routes: served.routes as u64,
        };
        let same = self.written
            && self.doc.functions == entries
            && self
                .doc
                .table
                .as_ref()
                .is_some_and(|t| (t.generation, t.routes) == (table.generation, table.routes));
        self.doc.functions = entries;
        self.doc.table = Some(table);
        if !same {
            self.renew();
        }
    }

    fn publish(&mut self, numbers: Numbers) {
        let changed = match &self.doc.numbers {
            // Nothing counted yet is nothing to say.
            None => !numbers.versions.is_empty() || numbers.omitted > 0,
            Some(l) => l.versions != numbers.versions || l.omitted != numbers.omitted,
        };
        if changed {
            self.doc.numbers = Some(numbers);
            self.numbers_due = true;
        }
        // Shadow counts alone are due too (`publish_shadow` came just before).
        if !self.numbers_due {
            return;
        }
        // At most once a second; otherwise the next heartbeat or report carries them.
        let may = self
            .numbers_written
            .is_none_or(|t| t.elapsed() >= NUMBERS_EVERY);
        if may && self.written {
            self.renew();
        }
    }

    fn publish_shadow(&mut self, shadow: switchyard_core::shadow::ShadowNumbers) {
        let changed = match &self.doc.shadow {
            None => !shadow.shadows.is_empty() || shadow.omitted > 0,
            Some(l) => !l.same_counts(&shadow),
        };
        if changed {
            // Written with the numbers (this comes just before them), or by the next heartbeat.
            self.doc.shadow = Some(shadow);
            self.numbers_due = true;
        }
    }

    async fn close(&mut self) {
        self.store.remove_router(&self.doc.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use switchyard_core::{Function, FunctionVersion, TOTAL_PPM};
    use switchyard_store::DocumentError;

    fn identity(replica: &str) -> Identity {
        Identity {
            replica: replica.into(),
            address: "127.0.0.1:1".into(),
            started_at: "2026-12-02T10:00:00.000Z".into(),
            ready: Arc::new(ReadyGate::new()),
        }
    }

    fn temp_store() -> LocalStore {
        let dir = std::env::temp_dir().join(format!(
            "switchyard-store-{}-{}",
            std::process::id(),
            jiff::Timestamp::now().as_nanosecond()
        ));
        LocalStore::open(dir).expect("store")
    }

    fn doc(weight_version: &str) -> FunctionDocument {
        let mut f = Function::test("hello").with_weight(weight_version, TOTAL_PPM);
        f.metadata.generation = None;
        FunctionDocument {
            function: Some(f),
            versions: vec![
                FunctionVersion::test_endpoint("hello", "1.0.0", "http://127.0.0.1:1"),
                FunctionVersion::test_endpoint("hello", "1.1.0", "http://127.0.0.1:2"),
            ],
        }
    }

    #[tokio::test]
    async fn the_source_follows_writes_and_records_acknowledgements() {
        let store = temp_store();
        store.write("hello", "0", doc("1.0.0")).expect("write");
        let opts = LocalOptions {
            root: store.root().to_path_buf(),
            lease_duration: Duration::from_secs(3),
            listen: "127.0.0.1:1".into(),
        };
        let mut source = LocalSource::open(opts, identity("r1")).expect("source");
        let Some(SourceEvent::State(state)) = source.next().await else {
            panic!("first state")
        };
        assert!(
            store.routers().expect("routers").is_empty(),
            "not before a table"
        );
        assert_eq!(state.functions[0].spec.weight_of("1.0.0"), TOTAL_PPM);
        store.write("hello", "1", doc("1.1.0")).expect("write");
        let next = tokio::time::timeout(Duration::from_secs(10), source.next()).await;
        let Ok(Some(SourceEvent::State(state))) = next else {
            panic!("a state after the write")
        };
        assert_eq!(state.functions[0].spec.weight_of("1.1.0"), TOTAL_PPM);
        let generation = state.functions[0].metadata.generation.expect("generation");
        source.served(Served {
            generation: 2,
            functions: vec![(LOCAL_NAMESPACE.into(), "hello".into(), generation)],
            ..Default::default()
        });
        let routers = store.routers().expect("routers");
        let entry = routers[0].entry("hello").expect("an entry");
        assert_eq!(
            (entry.observed_generation, entry.pending.as_deref()),
            (2, None)
        );
        assert_eq!(routers[0].table.as_ref().map(|t| t.generation), Some(2));
        source.served(Served {
            generation: 3,
            functions: vec![(LOCAL_NAMESPACE.into(), "hello".into(), 3)],
            exceptions: vec![switchyard_core::report::Exception {
                namespace: LOCAL_NAMESPACE.into(),
                name: "hello".into(),
                generation: 3,
                state: ExceptionState::Pending,
                reason: "waiting for FunctionVersion hello-2-0-0".into(),
            }],
            ..Default::default()
        });
        let routers = store.routers().expect("routers");
        let entry = routers[0].entry("hello").expect("an entry");
        assert_eq!(
            entry.pending.as_deref(),
            Some("waiting for FunctionVersion hello-2-0-0")
        );
        assert!(entry.rejected.is_none());
        source.close().await;
        assert!(store.routers().expect("routers").is_empty());
    }

    #[tokio::test]
    async fn an_emptied_function_file_keeps_the_last_good_route() {
        let store = temp_store();
        store.write("hello", "0", doc("1.0.0")).expect("write");
        let opts = LocalOptions {
            root: store.root().to_path_buf(),
            lease_duration: Duration::from_secs(3),
            listen: "127.0.0.1:1".into(),
        };
        let mut source = LocalSource::open(opts, identity("r1")).expect("source");
        let Some(SourceEvent::State(_)) = source.next().await else {
            panic!("first state")
        };
        fs::write(store.function_path("hello"), "").expect("truncate");
        let next = tokio::time::timeout(Duration::from_secs(10), source.next()).await;
        let Ok(Some(SourceEvent::State(state))) = next else {
            panic!("a state after the truncation")
        };
        assert_eq!(state.functions.len(), 1, "the route is kept");
        assert_eq!(state.functions[0].spec.weight_of("1.0.0"), TOTAL_PPM);
        // And a writer refuses to build on the broken file.
        assert!(matches!(
            store.write("hello", "1", doc("1.1.0")),
            Err(StoreError::Document(DocumentError::Empty { .. }))
        ));
    }

    #[test]
    fn a_router_on_a_store_that_does_not_exist_does_not_start() {
        let root = std::env::temp_dir().join(format!("switchyard-missing-{}", std::process::id()));
        let opts = LocalOptions {
            root: root.clone(),
            lease_duration: Duration::from_secs(3),
            listen: "127.0.0.1:1".into(),
        };
        let err = LocalSource::open(opts, identity("r1"))
            .err()
            .expect("refused");
        assert_eq!(
            err.to_string(),
            format!(
                "store dir:{} does not exist (a first deploy creates it)",
                root.display()
            )
        );
        assert!(!root.exists(), "nothing was created");
    }
}
