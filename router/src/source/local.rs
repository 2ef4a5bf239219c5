//! The router's side of the local store: following a store directory (`--store dir:PATH`).
//!
//! The documents and their locked, atomic files are the `switchyard-store` crate's, shared with
//! the CLI; here [`LocalSource`] is the router's [`ConfigSource`] over a [`LocalStore`],
//! following its `functions/` directory with file notifications and writing the router's own
//! heartbeat and acknowledgements.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use switchyard_core::RouterAck;
use switchyard_store::{FunctionDocument, LocalStore, RouterDocument, StoreError, LOCAL_NAMESPACE};
use tokio::sync::mpsc;

use super::{Ack, ConfigSource, SourceEvent, State};

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
}

impl LocalSource {
    /// Opens the store and starts following its `functions/` directory. A store that does
    /// not exist is an error, not an empty routing table reported ready.
    pub fn open(opts: LocalOptions, replica: &str) -> anyhow::Result<LocalSource> {
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
        let doc = RouterDocument {
            name: replica.to_string(),
            renewed_ms: now_ms(),
            lease_duration_seconds: duration.as_secs() as i32,
            listen: opts.listen,
            functions: Vec::new(),
        };
        store.write_router(&doc)?;
        Ok(LocalSource {
            store,
            doc,
            last_good: BTreeMap::new(),
            changes,
            _watcher: watcher,
            heartbeat: tokio::time::interval(duration / 3),
            started: false,
        })
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

    fn renew(&mut self) {
        self.doc.renewed_ms = now_ms();
        if let Err(e) = self.store.write_router(&self.doc) {
            tracing::warn!("renewing the router heartbeat: {e}");
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
                    _ = self.heartbeat.tick() => self.renew(),
                }
            }
        }
        self.started = true;
        Some(match self.read_state() {
            Ok(state) => SourceEvent::State(state),
            Err(e) => SourceEvent::Lost(e.to_string()),
        })
    }

    fn acknowledge(&mut self, acks: Vec<Ack>) {
        let now = jiff::Timestamp::now().to_string();
        for ack in acks.into_iter().filter(|a| a.namespace == LOCAL_NAMESPACE) {
            self.doc.functions.retain(|a| a.name != ack.name);
            self.doc.functions.push(RouterAck {
                name: ack.name,
                observed_generation: ack.generation,
                applied_at: now.clone(),
                rejected: ack.rejected,
            });
        }
        self.doc.functions.sort_by(|a, b| a.name.cmp(&b.name));
        self.renew();
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
        let mut source = LocalSource::open(opts, "r1").expect("source");
        let Some(SourceEvent::State(state)) = source.next().await else {
            panic!("first state")
        };
        assert_eq!(state.functions[0].spec.weight_of("1.0.0"), TOTAL_PPM);
        store.write("hello", "1", doc("1.1.0")).expect("write");
        let next = tokio::time::timeout(Duration::from_secs(10), source.next()).await;
        let Ok(Some(SourceEvent::State(state))) = next else {
            panic!("a state after the write")
        };
        assert_eq!(state.functions[0].spec.weight_of("1.1.0"), TOTAL_PPM);
        let generation = state.functions[0].metadata.generation.expect("generation");
        source.acknowledge(vec![Ack {
            namespace: LOCAL_NAMESPACE.into(),
            name: "hello".into(),
            generation,
            rejected: None,
            fresh: true,
        }]);
        let routers = store.routers().expect("routers");
        assert_eq!(
            routers[0]
                .ack_for("hello")
                .map(|a| (a.name, a.observed_generation)),
            Some(("r1".to_string(), 2))
        );
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
        let mut source = LocalSource::open(opts, "r1").expect("source");
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
        let err = LocalSource::open(opts, "r1").err().expect("refused");
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
