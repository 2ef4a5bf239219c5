//! The watch side of the Kubernetes source: Functions and FunctionVersions as kube-runtime's
//! watchers deliver them, kept per kind, telling which changes matter for routing.

use std::sync::Arc;

use kube::runtime::watcher::{self, Event};
use kube::Resource;
use switchyard_core::cowmap::FxHashMap;
use switchyard_core::{Function, FunctionVersion};

/// A namespaced object: (namespace, name).
pub(super) type Key = (String, String);
/// A set with core's hasher.
pub(super) type FxHashSet<K> = std::collections::HashSet<K, switchyard_core::cowmap::FxBuildHasher>;

/// What one watch event did to a [`Catalog`].
pub(super) enum Seen<K> {
    /// Nothing the router reads changed.
    Nothing,
    /// An object was added, changed in what the router reads, or removed.
    Changed {
        old: Option<Arc<K>>,
        new: Option<Arc<K>>,
    },
    /// A re-list completed: every object may have changed.
    Relisted,
}

/// Objects of one kind, as the watch has delivered them so far.
pub(super) struct Catalog<K> {
    pub(super) live: FxHashMap<Key, Arc<K>>,
    /// Objects of a re-list in progress; they replace `live` at `InitDone`.
    pub(super) relist: Option<FxHashMap<Key, Arc<K>>>,
    /// Whether a first list has completed.
    pub(super) complete: bool,
    /// The resourceVersion read up to: the newest object of the last (re)list, then each
    /// event's (docs/protocol.md, "What `applied` promises"). The newest listed object stands
    /// for the LIST's own resourceVersion, which kube-runtime does not hand out: it is never
    /// newer, so a report built on it promises no more than was read.
    pub(super) read: u64,
    relist_read: u64,
}

/// An object's resourceVersion as an integer (an etcd revision); 0 when it is not one, which
/// never moves a mark.
fn revision<K: Resource>(obj: &K) -> u64 {
    obj.meta()
        .resource_version
        .as_deref()
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0)
}

impl<K: Resource> Catalog<K> {
    pub(super) fn new() -> Self {
        Catalog {
            live: FxHashMap::default(),
            relist: None,
            complete: false,
            read: 0,
            relist_read: 0,
        }
    }

    /// The key of an object.
    pub(super) fn key(obj: &K) -> Key {
        let m = obj.meta();
        (
            m.namespace.clone().unwrap_or_default(),
            m.name.clone().unwrap_or_default(),
        )
    }

    /// Applies one event.
    pub(super) fn apply(&mut self, event: Event<K>) -> Seen<K> {
        match event {
            Event::Init => {
                self.relist = Some(FxHashMap::default());
                self.relist_read = 0;
                Seen::Nothing
            }
            Event::InitApply(obj) => {
                self.relist_read = self.relist_read.max(revision(&obj));
                self.relist
                    .get_or_insert_with(FxHashMap::default)
                    .insert(Self::key(&obj), Arc::new(obj));
                Seen::Nothing
            }
            Event::InitDone => {
                self.live = self.relist.take().unwrap_or_default();
                self.complete = true;
                self.read = self.read.max(self.relist_read);
                Seen::Relisted
            }
            Event::Apply(obj) => {
                // Routing depends on specs only, and a spec change bumps the generation: a
                // status or metadata write must not trigger a rebuild (it still moves `read`).
                self.read = self.read.max(revision(&obj));
                let key = Self::key(&obj);
                let new = Arc::new(obj);
                let old = self.live.insert(key, Arc::clone(&new));
                let m = new.meta();
                let routed_same = old.as_ref().is_some_and(|old| {
                    old.meta().uid == m.uid && old.meta().generation == m.generation
                });
                if routed_same {
                    Seen::Nothing
                } else {
                    Seen::Changed {
                        old,
                        new: Some(new),
                    }
                }
            }
            Event::Delete(obj) => {
                // A deleted object carries the deletion's resourceVersion.
                self.read = self.read.max(revision(&obj));
                self.forget(&obj)
            }
        }
    }

    /// Removes a deleted object.
    fn forget(&mut self, obj: &K) -> Seen<K> {
        match self.live.remove(&Self::key(obj)) {
            Some(old) => Seen::Changed {
                old: Some(old),
                new: None,
            },
            None => Seen::Nothing,
        }
    }
}

/// The Function a FunctionVersion belongs to.
pub(super) fn function_of(v: &FunctionVersion) -> Key {
    (
        v.metadata.namespace.clone().unwrap_or_default(),
        v.spec.function.clone(),
    )
}

/// One event of either watch.
pub(super) enum Change {
    Function(Result<Event<Function>, watcher::Error>),
    Version(Result<Event<FunctionVersion>, watcher::Error>),
}
