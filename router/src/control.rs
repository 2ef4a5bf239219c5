//! The control loop: wait for the first complete state (or stand in the snapshot), then follow
//! the source, build each change off the request path, swap the table in, hand the source what
//! is served (it reports it), and keep the snapshot current, until stopped; then release the
//! source (its Lease and report).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context};
use tokio::sync::watch;

use switchyard_core::numbers::Numbers;
use switchyard_core::plan;
use switchyard_core::report::{Exception, ExceptionState};

use crate::build::{Builder, Good, Goods, Outcome};
use crate::live::Shared;
use crate::source::{self, ConfigSource, Identity, Served, Source, SourceEvent, State};
use crate::{snapshot, RouterConfig};

/// Opens `source`, serves its first complete state (or the snapshot when it cannot be reached
/// and one is configured) and spawns the loop that follows it until `stop` turns true.
pub(crate) async fn start(
    config: &RouterConfig,
    source: Source,
    shared: Arc<Shared>,
    identity: Identity,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut builder = Builder::new(config.build.clone(), identity.replica.clone());
    let mut journal = Journal::default();
    let gate = Arc::clone(&identity.ready);
    // The automated canary runs beside the sources that can write a rollout's transitions.
    let mut source: Box<dyn ConfigSource> = match source {
        Source::Kubernetes(opts) => {
            let mut k = source::kubernetes::KubernetesSource::open(opts, identity).await?;
            k.canary(Arc::clone(&shared), stop.clone());
            Box::new(k)
        }
        Source::Local(opts) => {
            let replica = identity.replica.clone();
            let mut l = source::local::LocalSource::open(opts, identity)?;
            l.canary(replica, Arc::clone(&shared), stop.clone());
            Box::new(l)
        }
        other => other.open(identity).await?,
    };
    let (snapshots, snapshot_rx) = watch::channel(None::<(Goods, SystemTime)>);
    let (mut compared, compared_rx) = Compared::channel();
    if let Some(path) = config.snapshot.clone() {
        tokio::spawn(write_snapshots(path, snapshot_rx));
    }
    match first_state(
        source.as_mut(),
        config.startup_timeout,
        config.snapshot.is_some(),
    )
    .await
    {
        Ok(state) => {
            shared.set_connected(true);
            apply(
                &shared,
                &mut builder,
                source.as_mut(),
                &snapshots,
                &mut journal,
                &mut compared,
                Change::State(&state),
                SystemTime::now(),
            );
        }
        Err(why) => {
            let Some(path) = &config.snapshot else {
                return Err(anyhow!("cannot start without a routing table: {why}"));
            };
            let (state, as_of) = snapshot::read(path).with_context(|| {
                format!("the source is unreachable ({why}) and the snapshot cannot be used")
            })?;
            tracing::warn!(snapshot = %path.display(), "source unreachable ({why}); serving the snapshot");
            gate.started_from_snapshot();
            let before = builder.goods();
            let outcome = builder.apply(&state, as_of, &shared.metrics);
            journal.record(&before, &builder, &outcome);
            compared.note(&builder, &outcome.touched);
            if let Some(live) = outcome.live {
                shared.swap(live);
            }
        }
    }
    // The live numbers, sampled off the request path, go out through the source's report.
    // The versions the rollouts in flight compare are listed first, whatever the cap.
    let numbers = crate::numbers::spawn(Arc::clone(&shared), compared_rx, stop.clone());
    let control = tokio::spawn(follow(
        shared.clone(),
        builder,
        journal,
        compared,
        source,
        snapshots,
        numbers,
        stop,
    ));
    Ok(control)
}

/// Waits for the first complete state. An unreachable source is retried until `timeout`,
/// unless a snapshot can stand in, in which case the first failure is enough.
async fn first_state(
    source: &mut dyn ConfigSource,
    timeout: Duration,
    have_snapshot: bool,
) -> Result<State, String> {
    let deadline = Instant::now() + timeout;
    let mut last = "no complete state yet".to_string();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, source.next()).await {
            Ok(Some(SourceEvent::State(state))) => return Ok(state),
            // An update needs a state to apply to; a source sends a state first.
            Ok(Some(SourceEvent::Update(_))) => {}
            Ok(Some(SourceEvent::Lost(why))) => {
                last = why;
                if have_snapshot {
                    return Err(last);
                }
            }
            Ok(None) => return Err("the source ended".into()),
            Err(_) => return Err(format!("timed out after {timeout:?}: {last}")),
        }
    }
}

/// What the source reported.
enum Change<'a> {
    State(&'a State),
    Update(&'a source::Update),
}

/// The versions each rollout in flight compares, by Function (`namespace/name`), kept from
/// the good routes each build leaves and handed to the numbers' sampler, which lists them
/// ahead of its cap (docs/protocol.md, "Numbers"). A rollout is in flight exactly while
/// `spec.rollout` is present, and that is a spec change, which every build sees.
struct Compared {
    by_function: BTreeMap<String, [(String, String); 2]>,
    tx: watch::Sender<Arc<crate::numbers::Compared>>,
}

impl Compared {
    fn channel() -> (Self, watch::Receiver<Arc<crate::numbers::Compared>>) {
        let (tx, rx) = watch::channel(Arc::default());
        let me = Compared {
            by_function: BTreeMap::new(),
            tx,
        };
        (me, rx)
    }

    /// Looks again at the Functions a build `touched`; sends the set when it changed.
    fn note(&mut self, builder: &Builder, touched: &[String]) {
        if touched.is_empty() {
            return;
        }
        let goods = builder.goods();
        let mut changed = false;
        for key in touched {
            let now = goods
                .get(key)
                .and_then(|g| crate::canary::compared_of(&g.function));
            changed |= match now {
                Some(pairs) => self.by_function.insert(key.clone(), pairs.clone()) != Some(pairs),
                None => self.by_function.remove(key).is_some(),
            };
        }
        if changed {
            let set = self
                .by_function
                .values()
                .flatten()
                .map(|(f, v)| (Arc::from(f.as_str()), Arc::from(v.as_str())))
                .collect();
            // Nobody listening (the sampler stopped) is not an error here.
            let _ = self.tx.send(Arc::new(set));
        }
    }
}

/// Builds from a state or an update, swaps, tells the source what is served, snapshots.
#[allow(clippy::too_many_arguments)]
fn apply(
    shared: &Shared,
    builder: &mut Builder,
    source: &mut dyn ConfigSource,
    snapshots: &watch::Sender<Option<(Goods, SystemTime)>>,
    journal: &mut Journal,
    compared: &mut Compared,
    change: Change<'_>,
    as_of: SystemTime,
) {
    let before = builder.goods();
    let outcome = match change {
        Change::State(state) => builder.apply(state, as_of, &shared.metrics),
        Change::Update(update) => builder.apply_update(update, as_of, &shared.metrics),
    };
    journal.record(&before, builder, &outcome);
    compared.note(builder, &outcome.touched);
    if let Some(live) = outcome.live {
        shared.swap(live);
        if !snapshots.is_closed() {
            let _ = snapshots.send(Some((builder.goods(), as_of)));
        }
    } else {
        shared.set_current(as_of);
    }
    // Also when nothing was swapped: the source may have read further (a write that changed
    // nothing routed), and the table now covers that too.
    let live = shared.live.load();
    source.served(Served {
        generation: live.generation,
        as_of: Some(as_of),
        routes: live.table.len(),
        exceptions: builder.exceptions(),
        functions: if source.wants_functions() {
            builder.functions()
        } else {
            Vec::new()
        },
    });
}

/// The control loop: follow the source until stopped, then release it.
#[allow(clippy::too_many_arguments)]
async fn follow(
    shared: Arc<Shared>,
    mut builder: Builder,
    mut journal: Journal,
    mut compared: Compared,
    mut source: Box<dyn ConfigSource>,
    snapshots: watch::Sender<Option<(Goods, SystemTime)>>,
    mut numbers: watch::Receiver<Arc<switchyard_core::numbers::Numbers>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut lost = false;
    let mut sampling = true;
    loop {
        let event = tokio::select! {
            e = source.next() => e,
            changed = numbers.changed(), if sampling => {
                match changed {
                    Ok(()) => {
                        let latest = Numbers::clone(&numbers.borrow_and_update());
                        // The shadow counts ride on the numbers' tick (issue 16).
                        source.publish_shadow(shared.metrics.shadow.report(latest.at.clone()));
                        source.publish(latest);
                    }
                    Err(_) => sampling = false,
                }
                continue;
            }
            _ = stop.wait_for(|s| *s) => break,
        };
        let change = match &event {
            Some(SourceEvent::State(state)) => Some(Change::State(state)),
            Some(SourceEvent::Update(update)) => Some(Change::Update(update)),
            _ => None,
        };
        if let Some(change) = change {
            if lost {
                tracing::info!("source reachable again");
                lost = false;
            }
            shared.set_connected(true);
            apply(
                &shared,
                &mut builder,
                source.as_mut(),
                &snapshots,
                &mut journal,
                &mut compared,
                change,
                SystemTime::now(),
            );
            continue;
        }
        match event {
            Some(SourceEvent::State(_)) | Some(SourceEvent::Update(_)) => {}
            Some(SourceEvent::Lost(why)) => {
                if !lost {
                    tracing::warn!("source unreachable, serving the last good table: {why}");
                    lost = true;
                }
                shared.set_connected(false);
            }
            None => {
                tracing::warn!("source ended; serving the last table");
                stop.wait_for(|s| *s).await.ok();
                break;
            }
        }
    }
    source.close().await;
}

/// Lines the swap log gives changed Functions (and exceptions) per swap; the rest are counted.
const LOG_LINES_PER_SWAP: usize = 20;

/// What the router has said in its log about Functions it does not serve as written, so that
/// each rejection or wait is logged once per generation, not again on every later swap.
#[derive(Default)]
pub(crate) struct Journal {
    /// `namespace/name` → the generation, state and reason last logged.
    told: BTreeMap<String, (i64, ExceptionState, String)>,
}

impl Journal {
    /// Logs what one build did, at INFO: the swap with each changed Function's old → new
    /// split (what was served before, what is served now), and each new rejection or wait.
    /// `before` is the builder's good routes before the build. Off the request path.
    pub(crate) fn record(&mut self, before: &Goods, builder: &Builder, outcome: &Outcome) {
        if let Some(live) = &outcome.live {
            let after = builder.goods();
            let moved: Vec<(&String, String, String)> = outcome
                .touched
                .iter()
                .filter_map(|key| {
                    let (old, new) = (before.get(key), after.get(key));
                    // A refused change keeps the last good route: nothing moved (the
                    // rejection is logged below).
                    if let (Some(o), Some(n)) = (old, new) {
                        if Arc::ptr_eq(&o.function, &n.function) {
                            return None;
                        }
                    }
                    let split = |g: Option<&Good>, none: &str| {
                        g.map_or(none.to_string(), |g| {
                            plan::describe(&g.function.spec.traffic)
                        })
                    };
                    Some((key, split(old, "(not routed)"), split(new, "(removed)")))
                })
                .collect();
            tracing::info!(
                generation = live.generation,
                routes = live.table.len(),
                changed = moved.len(),
                "table swapped in"
            );
            for (key, from, to) in moved.iter().take(LOG_LINES_PER_SWAP) {
                let generation = after
                    .get(*key)
                    .and_then(|g| g.function.metadata.generation)
                    .unwrap_or_default();
                tracing::info!(
                    function = %key,
                    generation,
                    "{key}: {from} → {to}"
                );
            }
            if moved.len() > LOG_LINES_PER_SWAP {
                tracing::info!(
                    more = moved.len() - LOG_LINES_PER_SWAP,
                    "and {} more changed functions",
                    moved.len() - LOG_LINES_PER_SWAP
                );
            }
        }
        self.tell_exceptions(builder.exceptions());
    }

    /// Logs each exception not logged yet in this generation, state and reason; forgets the
    /// ones that are gone (served as written again, or deleted) so a later one is told again.
    fn tell_exceptions(&mut self, exceptions: Vec<Exception>) {
        let mut still = BTreeMap::new();
        let mut fresh = Vec::new();
        for e in exceptions {
            let key = format!("{}/{}", e.namespace, e.name);
            let told = (e.generation, e.state, e.reason.clone());
            if self.told.get(&key) != Some(&told) {
                fresh.push((key.clone(), e));
            }
            still.insert(key, told);
        }
        self.told = still;
        for (key, e) in fresh.iter().take(LOG_LINES_PER_SWAP) {
            match e.state {
                ExceptionState::Rejected => tracing::warn!(
                    function = %key,
                    generation = e.generation,
                    "{key} rejected, the last good route stays: {}",
                    e.reason
                ),
                ExceptionState::Pending => tracing::info!(
                    function = %key,
                    generation = e.generation,
                    "{key} pending, the last good route stays: {}",
                    e.reason
                ),
            }
        }
        if fresh.len() > LOG_LINES_PER_SWAP {
            tracing::warn!(
                more = fresh.len() - LOG_LINES_PER_SWAP,
                "and {} more functions rejected or pending",
                fresh.len() - LOG_LINES_PER_SWAP
            );
        }
    }
}

/// Writes the latest good routes' inputs to `path`, skipping states superseded while writing.
/// Collecting them is left to the writer's thread: the control loop only clones a [`Goods`].
async fn write_snapshots(
    path: std::path::PathBuf,
    mut rx: watch::Receiver<Option<(Goods, SystemTime)>>,
) {
    while rx.changed().await.is_ok() {
        let Some((goods, as_of)) = rx.borrow_and_update().clone() else {
            continue;
        };
        let path = path.clone();
        let written = tokio::task::spawn_blocking(move || {
            snapshot::write(&path, &snapshot::state_of(goods.values()), as_of)
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("snapshot: {e:#}"),
            Err(e) => tracing::warn!("snapshot writer: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use switchyard_core::resources::RolloutSpec;
    use switchyard_core::{BuildOptions, Function, FunctionVersion};

    use super::*;
    use crate::metrics::Metrics;

    fn state(function: Function) -> State {
        State {
            functions: vec![Arc::new(function)],
            versions: ["1.2.0", "1.3.0"]
                .iter()
                .map(|v| {
                    Arc::new(FunctionVersion::test_endpoint(
                        "hello",
                        v,
                        "http://127.0.0.1:9",
                    ))
                })
                .collect(),
        }
    }

    fn pairs(set: &crate::numbers::Compared) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = set
            .iter()
            .map(|(f, v)| (f.to_string(), v.to_string()))
            .collect();
        pairs.sort();
        pairs
    }

    #[test]
    fn the_sampler_is_handed_the_versions_of_each_rollout_in_flight_and_none_once_it_ended() {
        let mut builder = Builder::new(BuildOptions::default(), "r0".into());
        let metrics = Metrics::new();
        let (mut compared, mut rx) = Compared::channel();
        let plain = Function::test("hello")
            .with_weight("1.2.0", 990_000)
            .with_weight("1.3.0", 10_000);
        let mut rolling = plain.clone();
        rolling.spec.rollout = Some(Box::new(RolloutSpec::with_defaults("1.3.0", "1.2.0")));
        rolling.metadata.generation = Some(2);

        let outcome = builder.apply(&state(rolling), SystemTime::now(), &metrics);
        compared.note(&builder, &outcome.touched);
        assert!(rx.has_changed().unwrap());
        assert_eq!(
            pairs(&rx.borrow_and_update()),
            [
                ("default/hello".to_string(), "1.2.0".to_string()),
                ("default/hello".to_string(), "1.3.0".to_string()),
            ]
        );

        // The write that ends a rollout removes spec.rollout (a new generation).
        let mut ended = plain;
        ended.metadata.generation = Some(3);
        let outcome = builder.apply(&state(ended), SystemTime::now(), &metrics);
        compared.note(&builder, &outcome.touched);
        assert!(rx.has_changed().unwrap());
        assert!(rx.borrow_and_update().is_empty());
    }
}
