//! The local [`Store`]: Switchyard without a cluster (`--store dir:PATH`).
//!
//! Functions and their external versions live in files of a store directory (see the
//! `switchyard_store` crate); router replicas following the same directory write
//! their heartbeats and acknowledgements beside them, so waiting for routers works as on
//! Kubernetes. Managed versions (`--image`) need a cluster and are refused.

use std::time::Duration;

use anyhow::{bail, Context as _};
use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use switchyard_core::protocol;
use switchyard_core::report::{AppliedVersions, Exception, ExceptionState, RouterReportStatus};
use switchyard_core::{Function, FunctionSpec, FunctionVersion, FunctionVersionSpec};
use switchyard_store::{FunctionDocument, LocalStore, RouterDocument, StoreError, LOCAL_NAMESPACE};

use crate::exit::{fail, Code};

use super::{Created, FunctionState, Readiness, Reports, Router, Store, VersionInfo, Written};

/// Switchyard state in a local directory.
pub struct DirStore {
    store: LocalStore,
    actor: String,
}

impl DirStore {
    /// Opens the store directory, creating it when `create` (a deploy) and refusing a store
    /// that does not exist otherwise (exit 2: a mistyped path is not an empty store). A write
    /// waits at most `lock_wait` for another writer's lock (exit 4 after that), saying on
    /// stderr what it waits for.
    pub fn open(
        path: &std::path::Path,
        create: bool,
        lock_wait: Duration,
    ) -> anyhow::Result<DirStore> {
        let opened = if create {
            LocalStore::open(path)
        } else {
            LocalStore::open_existing(path)
        };
        let store = match opened {
            Ok(store) => store,
            // The message names the store already.
            Err(e @ StoreError::Missing { .. }) => return Err(fail(Code::Invalid, e.to_string())),
            Err(e) => {
                return Err(
                    anyhow::Error::new(e).context(format!("opening store dir:{}", path.display()))
                )
            }
        }
        .bounded_lock_wait(lock_wait, |lock| {
            eprintln!(
                "waiting for the store's lock {} (another writer holds it)…",
                lock.display()
            )
        });
        let actor = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "local".to_string());
        Ok(DirStore { store, actor })
    }

    fn read(&self, name: &str) -> anyhow::Result<FunctionDocument> {
        Ok(self.store.read(name)?)
    }

    /// The router replicas' files, without those of replicas stopped long ago (see
    /// [`RouterDocument::forgotten`]).
    fn routers_docs(&self) -> anyhow::Result<Vec<RouterDocument>> {
        let now = jiff::Timestamp::now().as_millisecond();
        let mut docs = self.store.routers()?;
        docs.retain(|r| !r.forgotten(now));
        Ok(docs)
    }

    fn state(&self, name: &str, doc: &FunctionDocument) -> anyhow::Result<Option<FunctionState>> {
        let Some(f) = &doc.function else {
            return Ok(None);
        };
        Ok(Some(FunctionState {
            name: name.to_string(),
            namespace: LOCAL_NAMESPACE.to_string(),
            spec: f.spec.clone(),
            revision: doc.resource_version(),
            generation: f.metadata.generation.unwrap_or_default(),
            written_at: doc.resource_version(),
            uid: String::new(),
            created: f.metadata.creation_timestamp.as_ref().map(|t| t.0),
            status: f.status.clone(),
        }))
    }

    /// Applies `change` to the document of `name`, retrying when another writer got there
    /// first: each attempt re-reads, so no update is lost.
    fn update<T>(
        &self,
        name: &str,
        mut change: impl FnMut(&mut FunctionDocument) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        loop {
            let current = self.read(name)?;
            let mut next = current.clone();
            let out = change(&mut next)?;
            if next == current {
                return Ok(out);
            }
            match self.store.write(name, &current.resource_version(), next) {
                Ok(_) => return Ok(out),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_error(e)),
            }
        }
    }
}

/// A replica's file read as the report a Kubernetes replica would write, so that one reading
/// (`protocol::summarize`) serves both stores. A local store keeps per-function entries, not
/// resourceVersions: for `function`, `applied.functions` is the function's revision when the
/// replica's entry has reached its generation, `"0"` otherwise. Every entry that is pending or
/// rejected is an exception.
pub fn local_report(doc: &RouterDocument, function: Option<&FunctionState>) -> RouterReportStatus {
    let time = |ms: i64| {
        jiff::Timestamp::from_millisecond(ms)
            .map(protocol::report_time)
            .unwrap_or_default()
    };
    let applied = function.map(|f| {
        let reached = doc
            .entry(&f.name)
            .is_some_and(|e| e.observed_generation >= f.generation);
        AppliedVersions {
            functions: if reached {
                f.revision.clone()
            } else {
                "0".to_string()
            },
            function_versions: String::new(),
        }
    });
    let exceptions = doc
        .functions
        .iter()
        .filter_map(|e| {
            let (state, reason) = match (&e.pending, &e.rejected) {
                (Some(why), _) => (ExceptionState::Pending, why),
                (None, Some(why)) => (ExceptionState::Rejected, why),
                (None, None) => return None,
            };
            Some(Exception {
                namespace: LOCAL_NAMESPACE.to_string(),
                name: e.name.clone(),
                generation: e.observed_generation,
                state,
                reason: reason.clone(),
            })
        })
        .collect();
    RouterReportStatus {
        replica: doc.name.clone(),
        address: doc.listen.clone(),
        watch_namespace: String::new(),
        started_at: doc.started_at.clone(),
        reported_at: time(doc.renewed_ms),
        table: doc.table.clone(),
        applied,
        exceptions,
        exceptions_omitted: 0,
        numbers: doc.numbers.clone(),
        shadow: doc.shadow.clone(),
    }
}

fn router_of(doc: &RouterDocument, now_ms: i64) -> Router {
    Router {
        name: doc.name.clone(),
        live: doc.live(now_ms),
        namespace: String::new(),
        renewed: jiff::Timestamp::from_millisecond(doc.renewed_ms).ok(),
        lease_duration_seconds: doc.lease_duration_seconds,
        report: None,
    }
}

/// A store error with its exit code: a lock held too long is a timeout (exit 4).
fn store_error(e: StoreError) -> anyhow::Error {
    match e {
        StoreError::LockTimeout { .. } => fail(Code::Timeout, e.to_string()),
        e => e.into(),
    }
}

fn local_version(spec: &FunctionVersionSpec) -> FunctionVersion {
    let mut v = FunctionVersion::new(
        &switchyard_core::object_name(&spec.function, &spec.version),
        spec.clone(),
    );
    v.metadata.namespace = Some(LOCAL_NAMESPACE.to_string());
    v.metadata.creation_timestamp = Some(now());
    v
}

/// A creation time, as the API server stamps one: AGE works in store mode too.
fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now())
}

#[async_trait]
impl Store for DirStore {
    fn location(&self) -> String {
        format!("store dir:{}", self.store.root().display())
    }

    fn actor(&self) -> String {
        self.actor.clone()
    }

    async fn function(&self, name: &str) -> anyhow::Result<Option<FunctionState>> {
        let doc = self.read(name)?;
        self.state(name, &doc)
    }

    async fn functions(&self) -> anyhow::Result<Vec<FunctionState>> {
        let mut out = Vec::new();
        for name in self.store.function_names()? {
            // One broken file hides only its own function.
            let doc = match self.read(&name) {
                Ok(doc) => doc,
                Err(e) => {
                    eprintln!("warning: skipping function {name}: {e:#}");
                    continue;
                }
            };
            if let Some(s) = self.state(&name, &doc)? {
                out.push(s);
            }
        }
        Ok(out)
    }

    async fn versions(&self, function: &str) -> anyhow::Result<Vec<VersionInfo>> {
        Ok(self
            .read(function)?
            .versions
            .into_iter()
            .map(|v| VersionInfo {
                spec: v.spec,
                created: v.metadata.creation_timestamp.as_ref().map(|t| t.0),
                readiness: Readiness {
                    ready: true,
                    ..Default::default()
                },
            })
            .collect())
    }

    async fn create_version(&self, spec: &FunctionVersionSpec) -> anyhow::Result<Created> {
        if spec.endpoint.is_none() {
            bail!(
                "the local store runs external versions only: deploy {}@{} with --endpoint URL (--image needs a Kubernetes cluster)",
                spec.function,
                spec.version
            );
        }
        self.update(&spec.function, |doc| {
            match doc.versions.iter().find(|v| v.spec.version == spec.version) {
                Some(v) if &v.spec == spec => Ok(Created::Same),
                Some(_) => Ok(Created::Different),
                None => {
                    doc.versions.push(local_version(spec));
                    Ok(Created::New)
                }
            }
        })
    }

    async fn create_function(&self, name: &str, spec: &FunctionSpec) -> anyhow::Result<Written> {
        let current = self.read(name)?;
        if current.function.is_some() {
            return Ok(Written::Conflict);
        }
        let mut next = current.clone();
        let mut f = Function::new(name, spec.clone());
        f.metadata.creation_timestamp = Some(now());
        next.function = Some(f);
        match self.store.write(name, &current.resource_version(), next) {
            Ok(doc) => Ok(Written::Done(Box::new(
                self.state(name, &doc)?
                    .context("the function was just written")?,
            ))),
            Err(StoreError::Conflict { .. }) => Ok(Written::Conflict),
            Err(e) => Err(store_error(e)),
        }
    }

    async fn write_function(
        &self,
        current: &FunctionState,
        spec: &FunctionSpec,
    ) -> anyhow::Result<Written> {
        let mut doc = self.read(&current.name)?;
        let Some(f) = doc.function.as_mut() else {
            return Ok(Written::Conflict);
        };
        f.spec = spec.clone();
        // A write that ends a rollout in flight settles its record in the same write.
        if let Some(status) = switchyard_core::rollout::status_after_write(spec, f.status.as_ref())
        {
            f.status = Some(status);
        }
        match self.store.write(&current.name, &current.revision, doc) {
            Ok(doc) => Ok(Written::Done(Box::new(
                self.state(&current.name, &doc)?
                    .context("the function was just written")?,
            ))),
            Err(StoreError::Conflict { .. }) => Ok(Written::Conflict),
            Err(e) => Err(store_error(e)),
        }
    }

    async fn delete_function(&self, current: &FunctionState) -> anyhow::Result<Written> {
        // One file holds the Function and its versions: removing it at the revision read
        // deletes them all at once.
        match self.store.remove(&current.name, &current.revision) {
            Ok(()) => Ok(Written::Done(Box::new(current.clone()))),
            Err(StoreError::Conflict { .. }) => Ok(Written::Conflict),
            Err(e) => Err(store_error(e)),
        }
    }

    async fn delete_version(&self, function: &str, version: &str) -> anyhow::Result<()> {
        self.update(function, |doc| {
            doc.versions.retain(|v| v.spec.version != version);
            Ok(())
        })
    }

    async fn routers(&self) -> anyhow::Result<Vec<Router>> {
        let now = jiff::Timestamp::now().as_millisecond();
        Ok(self
            .routers_docs()?
            .iter()
            .map(|r| router_of(r, now))
            .collect())
    }

    async fn reports(&self, function: Option<&FunctionState>) -> anyhow::Result<Vec<Router>> {
        let now = jiff::Timestamp::now().as_millisecond();
        Ok(self
            .routers_docs()?
            .iter()
            .map(|r| Router {
                report: Some(local_report(r, function)),
                ..router_of(r, now)
            })
            .collect())
    }

    async fn watch_reports(
        &self,
        function: &FunctionState,
    ) -> anyhow::Result<BoxStream<'static, anyhow::Result<Reports>>> {
        // The routers' files are few and small: re-read them every few milliseconds while
        // someone waits, and pass on each change.
        let store = self.store.clone();
        let function = function.clone();
        let read = move |store: &LocalStore| -> anyhow::Result<Reports> {
            Ok(store
                .routers()?
                .iter()
                .map(|d| (d.name.clone(), local_report(d, Some(&function))))
                .collect())
        };
        let mut last: Option<Reports> = None;
        Ok(futures::stream::unfold(
            (store, read, true),
            |(store, read, first)| async move {
                if !first {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let next = read(&store);
                Some((next, (store, read, false)))
            },
        )
        .filter(move |item| {
            let changed = match item {
                Ok(reports) => {
                    // Only a change of what they say, not of their heartbeat.
                    let said = |r: &Reports| -> Vec<(String, Option<AppliedVersions>, Vec<Exception>)> {
                        r.iter()
                            .map(|(n, s)| (n.clone(), s.applied.clone(), s.exceptions.clone()))
                            .collect()
                    };
                    let new = last.as_ref().is_none_or(|l| said(l) != said(reports));
                    if new {
                        last = Some(reports.clone());
                    }
                    new
                }
                Err(_) => true,
            };
            futures::future::ready(changed)
        })
        .boxed())
    }

    async fn prune_routers(&self, dry_run: bool) -> anyhow::Result<Vec<String>> {
        let now = jiff::Timestamp::now().as_millisecond();
        let doomed: Vec<String> = self
            .store
            .routers()?
            .into_iter()
            .filter(|d| protocol::prunable(d.renewed_ms, d.lease_duration_seconds, now))
            .map(|d| d.name)
            .collect();
        if !dry_run {
            for name in &doomed {
                self.store.remove_router(name);
            }
        }
        Ok(doomed)
    }

    async fn watch_function(
        &self,
        after: &FunctionState,
    ) -> anyhow::Result<BoxStream<'static, anyhow::Result<FunctionState>>> {
        // A cheap read of one small file, every 5 ms while someone watches.
        let store = DirStore {
            store: self.store.clone(),
            actor: self.actor.clone(),
        };
        let name = after.name.clone();
        let last = after.clone();
        // A broken file is reported once and waited out (a person may be fixing it): the
        // watch keeps the last good state rather than ending.
        let broken: Option<String> = None;
        Ok(futures::stream::unfold(
            (store, name, last, broken),
            |(store, name, mut last, mut broken)| async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let next = match store.read(&name).and_then(|doc| store.state(&name, &doc)) {
                        Ok(Some(s)) => s,
                        Ok(None) => {
                            return Some((
                                Err(anyhow::anyhow!("function {name} was deleted")),
                                (store, name, last, broken),
                            ))
                        }
                        Err(e) => {
                            let e = format!("{e:#}");
                            if broken.as_ref() != Some(&e) {
                                eprintln!("warning: {e}; showing the last good state");
                                broken = Some(e);
                            }
                            continue;
                        }
                    };
                    broken = None;
                    if next != last {
                        last = next.clone();
                        return Some((Ok(next), (store, name, last, broken)));
                    }
                }
            },
        )
        .boxed())
    }

    fn router_refresh(&self) -> Duration {
        Duration::from_millis(100)
    }
}
