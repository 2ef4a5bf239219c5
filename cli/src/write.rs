//! The conditional write-and-retry loop every verb that changes traffic shares: read the
//! function and its versions, plan with core, write only if nothing changed meanwhile (else
//! re-read and re-plan, a bounded number of times), then wait for the routers.

use std::time::{Duration, Instant};

use switchyard_core::plan::{self, Change, PlanError, VersionState};
use switchyard_core::traffic::{self, Assignment};
use switchyard_core::{Action, FunctionSpec, TOTAL_PPM};

use crate::args::Write;
use crate::exit::{self, fail, Code};
use crate::output::Diff;
use crate::store::{FunctionState, Router, Store, VersionInfo, Written};
use crate::{timing, wait};

/// How long a write that has no `--timeout` (delete, gc) waits for a local store's lock.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(30);

/// How many times a write is tried when others keep changing the function meanwhile.
pub const ATTEMPTS: u32 = 12;

/// The inputs of a plan: the function as read, its versions, who changes it and when.
pub struct Input<'a> {
    /// The function.
    pub function: &'a FunctionState,
    /// Its versions with readiness.
    pub versions: &'a [VersionInfo],
    /// Time, actor, reason.
    pub change: &'a Change,
}

impl Input<'_> {
    /// What core needs to know about the versions.
    pub fn states(&self) -> Vec<VersionState> {
        self.versions.iter().map(VersionInfo::state).collect()
    }

    /// Resolves a version, tag or `@latest`.
    pub fn resolve(&self, name: &str) -> anyhow::Result<String> {
        let one = [Assignment {
            name: name.to_string(),
            weight: TOTAL_PPM,
        }];
        let resolved = traffic::resolve(
            &self.function.name,
            &one,
            Some(&self.function.spec),
            self.versions.iter().map(|v| v.spec.version.as_str()),
        )
        .map_err(|e| exit::plan(PlanError::Traffic(e)))?;
        Ok(resolved[0].version.clone())
    }
}

/// A small random pause before a retry, growing with the attempt, so that racing writers
/// spread out instead of colliding again.
fn jitter(attempt: u32) -> Duration {
    use std::hash::{BuildHasher as _, RandomState};
    let random = RandomState::new().hash_one((attempt, Instant::now()));
    let ceiling = 10u64 << attempt.min(4);
    Duration::from_millis(5 + random % ceiling)
}

/// What a verb's plan decided.
pub enum Next {
    /// Write this spec.
    Spec(Box<FunctionSpec>),
    /// Write nothing, and say why (one line, printed as is).
    Unchanged(String),
}

impl From<FunctionSpec> for Next {
    fn from(spec: FunctionSpec) -> Next {
        Next::Spec(Box::new(spec))
    }
}

/// The outcome of a change that was written.
pub struct Landed {
    /// The function before.
    pub before: FunctionState,
    /// The function after.
    pub after: FunctionState,
    /// When the successful write landed (after any wait for the store's lock): the router
    /// wait is timed from here.
    pub sent: Instant,
    /// What the wait needs that was read or opened before the write landed.
    pub ahead: wait::Ahead,
}

/// What one read of a function and its versions leads to.
enum Decision {
    /// Write this spec over this state.
    Write(Box<(FunctionState, FunctionSpec)>),
    /// Write nothing, and say this line.
    Say(String),
    /// Write nothing: the function is missing or the plan refused.
    Fail(anyhow::Error),
}

/// Plans from one read. A refusal from a consistent read is checked once more against the
/// versions as of now: the cached list may lag one created or made ready a moment ago. (The
/// other way round, a version deleted or no longer ready within that moment, the routers still
/// validate.)
async fn decide(
    store: &dyn Store,
    name: &str,
    function: Option<FunctionState>,
    versions: Vec<VersionInfo>,
    consistent: bool,
    change: &Change,
    plan: &impl Fn(&Input<'_>) -> anyhow::Result<Next>,
) -> Decision {
    let Some(function) = function else {
        return Decision::Fail(fail(
            Code::Invalid,
            format!("function {name} not found in {}", store.location()),
        ));
    };
    let input = |versions| Input {
        function: &function,
        versions,
        change,
    };
    let planned = match plan(&input(&versions)) {
        Err(_) if consistent => match store.versions(name).await {
            Ok(now) => plan(&input(&now)),
            Err(e) => Err(e),
        },
        planned => planned,
    };
    let next = match planned {
        Ok(Next::Spec(next)) => next,
        Ok(Next::Unchanged(line)) => return Decision::Say(line),
        Err(e) => return Decision::Fail(e),
    };
    let last_action = next.history.last().map(|h| h.action);
    if plan::same_state(&function.spec, &next) && last_action != Some(Action::Undo) {
        return Decision::Say(format!(
            "{name}: already {}, nothing to change",
            plan::describe(&function.spec.traffic)
        ));
    }
    Decision::Write(Box::new((function, *next)))
}

/// Reads, plans and writes conditionally, re-reading and re-planning on a conflict up to
/// [`ATTEMPTS`] times. `None`: nothing to change, or a dry run.
pub async fn change(
    store: &dyn Store,
    name: &str,
    write: &Write,
    plan: impl Fn(&Input<'_>) -> anyhow::Result<Next>,
) -> anyhow::Result<Option<Landed>> {
    // The routers a wait will need are read alongside the first attempt's reads, and its
    // report watch opened alongside the first write.
    let mut routers: Option<Vec<Router>> = None;
    let mut reports = None;
    let wants_routers = !write.no_wait && !write.dry_run;
    // The first plan starts from the store's cache (a stale read only makes the conditional
    // write fail and re-plan); an outcome without a write, or a dry run's diff, is only said
    // from a consistent read.
    let mut consistent = write.dry_run;
    let mut warned = false;
    for attempt in 0..ATTEMPTS {
        let read_function = async {
            if consistent {
                store.function(name).await
            } else {
                store.function_cached(name).await
            }
        };
        // Concurrent requests share one HTTP/2 connection: no extra handshake.
        let reads = async { futures::try_join!(read_function, store.versions_cached(name)) };
        let lease_read = async {
            match (wants_routers, &routers) {
                (true, None) => store.routers().await.map(Some),
                _ => Ok(None),
            }
        };
        let ((function, versions), listed) = futures::try_join!(reads, lease_read)?;
        if listed.is_some() {
            routers = listed;
        }
        timing::mark("read");
        let change = Change {
            now: format!("{:.0}", jiff::Timestamp::now()),
            actor: store.actor(),
            reason: write.reason.clone(),
        };
        let decided = decide(store, name, function, versions, consistent, &change, &plan).await;
        let (function, next) = match decided {
            Decision::Write(chosen) => *chosen,
            // Said only from a consistent read: the cache may lag the write that changes it.
            _ if !consistent => {
                consistent = true;
                continue;
            }
            Decision::Say(line) => {
                crate::output::line(format_args!("{line}"));
                return Ok(None);
            }
            Decision::Fail(e) => return Err(e),
        };
        // Only --force gets here with traffic back to a version rolled back from.
        if !warned {
            warned = true;
            for v in plan::returns_to_rolled_back(&function.spec, &next.traffic) {
                eprintln!("warning: sending traffic back to {name}@{v}, which was rolled back from (--force)");
            }
        }
        if write.dry_run {
            diff(store, &function.spec, &next, name).print();
            return Ok(None);
        }
        let watch = async {
            match (wants_routers, &reports) {
                (true, None) => store.watch_reports_ahead().await,
                _ => Ok(None),
            }
        };
        let (written, opened) = futures::join!(store.write_function(&function, &next), watch);
        // A watch that cannot open now is opened again, with its error, by the wait.
        if let Ok(Some(opened)) = opened {
            reports = Some(opened);
        }
        match written? {
            Written::Done(after) => {
                let sent = Instant::now();
                timing::mark("write");
                return Ok(Some(Landed {
                    before: function,
                    after: *after,
                    sent,
                    ahead: wait::Ahead { routers, reports },
                }));
            }
            Written::Conflict => {
                timing::mark("write");
                consistent = true;
                tokio::time::sleep(jitter(attempt)).await;
            }
        }
    }
    Err(fail(
        Code::Conflict,
        format!(
            "function {name} kept changing concurrently ({ATTEMPTS} attempts); this command wrote nothing, re-run it"
        ),
    ))
}

/// Records an event that moves no traffic (a version added at 0%, deleted, collected) in the
/// function's history: a conditional write, re-read and retried on a conflict. Nothing to do
/// when the function does not exist. Routers are not waited for: no traffic changes.
pub async fn record_event(
    store: &dyn Store,
    name: &str,
    action: Action,
    versions: &[String],
    reason: Option<String>,
) -> anyhow::Result<()> {
    for attempt in 0..ATTEMPTS {
        let Some(function) = store.function(name).await? else {
            return Ok(());
        };
        let change = Change {
            now: format!("{:.0}", jiff::Timestamp::now()),
            actor: store.actor(),
            reason: reason.clone(),
        };
        let next = plan::record_event(&function.spec, action, versions, &change);
        match store.write_function(&function, &next).await? {
            Written::Done(after) => {
                // The write said `pending`; nobody waits for the routers here.
                store.note_routers(&after, wait::UNCONFIRMED).await;
                return Ok(());
            }
            Written::Conflict => tokio::time::sleep(jitter(attempt)).await,
        }
    }
    Err(fail(
        Code::Conflict,
        format!(
            "function {name} kept changing concurrently ({ATTEMPTS} attempts); the {action} happened but is not in its history"
        ),
    ))
}

/// The dry-run diff of a function spec.
pub fn diff(store: &dyn Store, before: &FunctionSpec, after: &FunctionSpec, name: &str) -> Diff {
    let mut d = Diff::new(format!("function {name} in {}:", store.location()));
    diff_into(&mut d, before, after);
    d
}

/// Adds to `d` every field a write of `after` over `before` changes: traffic, stable versions,
/// routing settings, tags and the history entry, so that a dry run shows all that the write would do.
pub fn diff_into(d: &mut Diff, before: &FunctionSpec, after: &FunctionSpec) {
    d.field(
        "traffic",
        Some(plan::describe(&before.traffic)),
        Some(plan::describe(&after.traffic)),
    );
    d.field("stable", before.stable.clone(), after.stable.clone());
    d.field(
        "previousStable",
        before.previous_stable.clone(),
        after.previous_stable.clone(),
    );
    diff_settings(d, before, after);
    if let Some(h) = after.history.last() {
        if before.history.last() != Some(h) {
            let reason = h
                .reason
                .as_ref()
                .map(|r| format!(" ({r:?})"))
                .unwrap_or_default();
            d.added(format!(
                "history: #{} {} {} by {}{reason}: {}",
                h.revision,
                h.time,
                h.action,
                h.actor,
                plan::describe(&h.traffic)
            ));
        }
    }
}

/// What a write changed, in one phrase: the traffic (`A → B`), else the settings and tags it
/// changed (`tag beta → 1.3.0`, `affinity header:x-user → none`).
pub fn changed(before: &FunctionSpec, after: &FunctionSpec) -> String {
    if !plan::same_split(&before.traffic, &after.traffic) {
        return format!(
            "{} → {}",
            plan::describe(&before.traffic),
            plan::describe(&after.traffic)
        );
    }
    let mut d = Diff::new(String::new());
    diff_settings(&mut d, before, after);
    let fields = d.changed_fields();
    if fields.is_empty() {
        // An undo that restored the same split.
        return format!("{} (unchanged)", plan::describe(&after.traffic));
    }
    fields.join(", ")
}

/// Adds to `d` the routing settings and tags that differ between `before` and `after`.
fn diff_settings(d: &mut Diff, before: &FunctionSpec, after: &FunctionSpec) {
    let hosts = |s: &FunctionSpec| (!s.hosts.is_empty()).then(|| s.hosts.join(" "));
    d.field("hosts", hosts(before), hosts(after));
    d.field(
        "pathPrefix",
        before.path_prefix.clone(),
        after.path_prefix.clone(),
    );
    let on = |b: bool| Some(if b { "on" } else { "off" }.to_string());
    d.field(
        "stripPrefix",
        on(before.strip_prefix),
        on(after.strip_prefix),
    );
    let affinity = |s: &FunctionSpec| {
        s.affinity.as_ref().map(|a| match (&a.header, &a.cookie) {
            (Some(h), _) => format!("header:{h}"),
            (None, Some(c)) => format!("cookie:{c}"),
            (None, None) => "none".to_string(),
        })
    };
    d.field("affinity", affinity(before), affinity(after));
    d.field("pinning", on(before.pinning), on(after.pinning));
    let tags = |s: &FunctionSpec| {
        let t: Vec<String> = s
            .tags
            .iter()
            .map(|t| format!("{}={}", t.tag, t.version))
            .collect();
        (!t.is_empty()).then(|| t.join(" "))
    };
    d.field("tags", tags(before), tags(after));
    let shadow = |s: &FunctionSpec| s.shadow.as_deref().map(crate::commands::shadow_phrase);
    d.field("shadow", shadow(before), shadow(after));
}

/// After a write: waits for the routers (unless `--no-wait`) and prints the one-line outcome.
pub async fn finish(store: &dyn Store, landed: Landed, write: &Write) -> anyhow::Result<()> {
    let name = &landed.after.name;
    let line = format!(
        "{name}: {}",
        changed(&landed.before.spec, &landed.after.spec)
    );
    confirm(
        store,
        &landed.after,
        landed.ahead,
        landed.sent,
        write,
        &line,
    )
    .await
}

/// After a write of `after` that landed at `sent`: waits for the routers (unless
/// `--no-wait`), prints `line` with the outcome, then notes it for `kubectl get fn`.
pub async fn confirm(
    store: &dyn Store,
    after: &FunctionState,
    ahead: wait::Ahead,
    sent: Instant,
    write: &Write,
    line: &str,
) -> anyhow::Result<()> {
    if write.no_wait {
        crate::output::line(format_args!(
            "{line} · written as generation {}, not waiting for routers",
            after.generation
        ));
        store.note_routers(after, wait::UNCONFIRMED).await;
        return Ok(());
    }
    let waited = wait::routers(store, after, ahead, write.timeout, sent).await;
    timing::mark("wait");
    // The Routers column is written after the outcome is printed: the confirmation a person
    // or a script waits for is not held back by a write only `kubectl get` reads.
    let applied = match waited.result {
        Ok(applied) => applied,
        Err(e) => {
            store.note_routers(after, &waited.note).await;
            return Err(e);
        }
    };
    crate::output::line(format_args!(
        "{line} · applied by {}/{} routers in {}",
        applied.routers,
        applied.routers,
        wait::show(applied.elapsed)
    ));
    store.note_routers(after, &waited.note).await;
    Ok(())
}

/// [`change`] then [`finish`]: the whole of a traffic verb after its plan.
pub async fn run(
    store: &dyn Store,
    name: &str,
    write: &Write,
    plan: impl Fn(&Input<'_>) -> anyhow::Result<Next>,
) -> anyhow::Result<()> {
    match change(store, name, write, plan).await? {
        Some(landed) => finish(store, landed, write).await,
        None => Ok(()),
    }
}

/// Records `traffic` through core's [`plan::apply`], a refusal carrying its exit code.
pub fn apply(
    input: &Input<'_>,
    traffic: Vec<switchyard_core::TrafficTarget>,
    action: Action,
    force: bool,
) -> anyhow::Result<Next> {
    plan::apply(
        &input.function.name,
        &input.function.spec,
        traffic,
        action,
        &input.states(),
        force,
        input.change,
    )
    .map(Next::from)
    .map_err(exit::plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::local::DirStore;
    use crate::store::{Created, Reports};
    use futures::stream::BoxStream;
    use switchyard_core::{FunctionVersionSpec, TrafficTarget};

    /// The local store, whose cache answers with a state read earlier: the API server's watch
    /// cache lagging a write.
    struct Lagging {
        store: DirStore,
        cached: Option<FunctionState>,
        /// The store's directory, removed when the test is done.
        dir: std::path::PathBuf,
    }

    impl Drop for Lagging {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn dir_of(test: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("switchyard-write-{test}-{}", std::process::id()))
    }

    #[async_trait::async_trait]
    impl Store for Lagging {
        fn location(&self) -> String {
            self.store.location()
        }
        fn actor(&self) -> String {
            self.store.actor()
        }
        async fn function(&self, name: &str) -> anyhow::Result<Option<FunctionState>> {
            self.store.function(name).await
        }
        async fn function_cached(&self, _: &str) -> anyhow::Result<Option<FunctionState>> {
            Ok(self.cached.clone())
        }
        async fn functions(&self) -> anyhow::Result<Vec<FunctionState>> {
            self.store.functions().await
        }
        async fn versions(&self, function: &str) -> anyhow::Result<Vec<VersionInfo>> {
            self.store.versions(function).await
        }
        async fn create_version(&self, spec: &FunctionVersionSpec) -> anyhow::Result<Created> {
            self.store.create_version(spec).await
        }
        async fn create_function(
            &self,
            name: &str,
            spec: &FunctionSpec,
        ) -> anyhow::Result<Written> {
            self.store.create_function(name, spec).await
        }
        async fn write_function(
            &self,
            current: &FunctionState,
            spec: &FunctionSpec,
        ) -> anyhow::Result<Written> {
            self.store.write_function(current, spec).await
        }
        async fn delete_function(&self, current: &FunctionState) -> anyhow::Result<Written> {
            self.store.delete_function(current).await
        }
        async fn delete_version(&self, function: &str, version: &str) -> anyhow::Result<()> {
            self.store.delete_version(function, version).await
        }
        async fn routers(&self) -> anyhow::Result<Vec<Router>> {
            self.store.routers().await
        }
        async fn reports(&self, function: Option<&FunctionState>) -> anyhow::Result<Vec<Router>> {
            self.store.reports(function).await
        }
        async fn watch_reports(
            &self,
            function: &FunctionState,
        ) -> anyhow::Result<BoxStream<'static, anyhow::Result<Reports>>> {
            self.store.watch_reports(function).await
        }
        async fn prune_routers(&self, dry_run: bool) -> anyhow::Result<Vec<String>> {
            self.store.prune_routers(dry_run).await
        }
        async fn watch_function(
            &self,
            after: &FunctionState,
        ) -> anyhow::Result<BoxStream<'static, anyhow::Result<FunctionState>>> {
            self.store.watch_function(after).await
        }
    }

    fn to(version: &str) -> Vec<TrafficTarget> {
        vec![TrafficTarget {
            version: version.into(),
            weight: TOTAL_PPM,
        }]
    }

    /// A local store holding function `f` at 1.0.0=100% with versions 1.0.0 and 2.0.0, in a
    /// directory of its own.
    async fn store(test: &str) -> DirStore {
        let dir = dir_of(test);
        let _ = std::fs::remove_dir_all(&dir);
        let store = DirStore::open(&dir, true, Duration::from_secs(5)).unwrap();
        for version in ["1.0.0", "2.0.0"] {
            let spec = FunctionVersionSpec {
                function: "f".into(),
                version: version.into(),
                image: None,
                port: None,
                env: Vec::new(),
                args: Vec::new(),
                replicas: None,
                resources: None,
                endpoint: Some("http://127.0.0.1:9".into()),
            };
            store.create_version(&spec).await.unwrap();
        }
        let spec = FunctionSpec {
            traffic: to("1.0.0"),
            ..FunctionSpec::default()
        };
        assert!(matches!(
            store.create_function("f", &spec).await.unwrap(),
            Written::Done(_)
        ));
        store
    }

    async fn write(store: &DirStore, edit: impl FnOnce(&mut FunctionSpec)) -> FunctionState {
        let current = store.function("f").await.unwrap().unwrap();
        let mut spec = current.spec.clone();
        edit(&mut spec);
        match store.write_function(&current, &spec).await.unwrap() {
            Written::Done(after) => *after,
            Written::Conflict => panic!("nobody else writes here"),
        }
    }

    /// Moves all traffic to `version`, keeping the rest of the spec as read.
    async fn move_all(store: &Lagging, version: &str) -> Option<Landed> {
        let no_wait = Write {
            dry_run: false,
            no_wait: true,
            timeout: Duration::from_secs(5),
            reason: None,
        };
        change(store, "f", &no_wait, |input| {
            let mut spec = input.function.spec.clone();
            spec.traffic = to(version);
            Ok(Next::from(spec))
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_plan_from_a_lagging_cache_is_made_again_and_loses_no_write() {
        let dir = store("lagging").await;
        let cached = dir.function("f").await.unwrap();
        // Someone else's write that the cache has not seen yet.
        write(&dir, |s| s.hosts = vec!["shop.example".into()]).await;
        let lagging = Lagging {
            store: dir,
            cached,
            dir: dir_of("lagging"),
        };
        let landed = move_all(&lagging, "2.0.0").await.expect("a write");
        let now = lagging.store.function("f").await.unwrap().unwrap();
        assert_eq!(now.spec.traffic, to("2.0.0"));
        assert_eq!(
            now.spec.hosts,
            vec!["shop.example".to_string()],
            "the other write survived"
        );
        assert_eq!(landed.after.revision, now.revision);
    }

    #[tokio::test]
    async fn nothing_to_change_is_only_said_from_a_consistent_read() {
        let dir = store("already").await;
        write(&dir, |s| s.traffic = to("2.0.0")).await;
        let cached = dir.function("f").await.unwrap();
        // Back to 1.0.0 since: the cache still says 2.0.0, where the change goes.
        write(&dir, |s| s.traffic = to("1.0.0")).await;
        let lagging = Lagging {
            store: dir,
            cached,
            dir: dir_of("already"),
        };
        assert!(
            move_all(&lagging, "2.0.0").await.is_some(),
            "written, not 'already'"
        );
        let now = lagging.store.function("f").await.unwrap().unwrap();
        assert_eq!(now.spec.traffic, to("2.0.0"));
        // And when the store agrees, nothing is written.
        assert!(move_all(&lagging, "2.0.0").await.is_none());
        let again = lagging.store.function("f").await.unwrap().unwrap();
        assert_eq!(again.revision, now.revision);
    }

    #[tokio::test]
    async fn a_function_the_cache_has_not_seen_yet_is_read_again() {
        let lagging = Lagging {
            store: store("unseen").await,
            cached: None,
            dir: dir_of("unseen"),
        };
        assert!(move_all(&lagging, "2.0.0").await.is_some());
    }
}
