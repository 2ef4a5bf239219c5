//! Plans: what a deploy, shift, promote, rollback, undo, delete or gc does to a Function, as pure
//! functions from the current spec to the next one.
//!
//! Every traffic change goes through [`apply`], which validates the split, records the state in
//! the bounded history and keeps `stable` / `previousStable` up to date, so that the rollback
//! target survives any trimming of the history.

use std::collections::BTreeSet;

use crate::resources::{
    Action, Affinity, FunctionSpec, HistoryEntry, ShadowSpec, Tag, TrafficTarget,
    DEFAULT_HISTORY_LIMIT,
};
use crate::traffic::TrafficError;
use crate::validate::{self, ValidationError};
use crate::weight::{Percent, TOTAL_PPM};

/// Who makes a change, when and why. `now` comes from the caller: the core has no clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// RFC 3339 time of the change.
    pub now: String,
    /// Who makes it.
    pub actor: String,
    /// Why, if given.
    pub reason: Option<String>,
}

/// One existing version of a function and whether it can take traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionState {
    /// The version.
    pub version: String,
    /// Whether it is ready (a managed version's Deployment is available; an external one is
    /// always ready).
    pub ready: bool,
}

/// Why a plan is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The resulting spec would be invalid.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The traffic words are wrong.
    #[error(transparent)]
    Traffic(#[from] TrafficError),
    /// A version that does not exist.
    #[error("version {version} of function {function} does not exist")]
    UnknownVersion {
        /// The function.
        function: String,
        /// The version.
        version: String,
    },
    /// Weight would go to a version that is not ready.
    #[error("version {version} is not ready; weight goes only to ready versions (use --force to override)")]
    NotReady {
        /// The version.
        version: String,
    },
    /// No earlier state to restore.
    #[error("nothing to undo: the history of function {0} holds no earlier state")]
    NothingToUndo(String),
    /// `undo --to N` names a revision the history does not hold.
    #[error("function {function} has no revision {revision} in its history{}", oldest.map(|o| format!(" (the oldest kept is {o})")).unwrap_or_default())]
    NoRevision {
        /// The function.
        function: String,
        /// The revision asked for.
        revision: u64,
        /// The oldest revision still kept.
        oldest: Option<u64>,
    },
    /// No stable version to roll back to.
    #[error("no stable version to roll back to: no version other than the current one has held 100% of function {0} (use --to VERSION)")]
    NoStable(String),
    /// Traffic would go back to a version a rollback took it away from.
    #[error("version {version} of function {function} was rolled back from; sending traffic back to it needs --force")]
    RolledBackFrom {
        /// The function.
        function: String,
        /// The version.
        version: String,
    },
    /// The version a rollback or undo would restore no longer exists.
    #[error("{action} would send traffic to version {version} of function {function}, which was deleted; use {next}")]
    TargetGone {
        /// The function.
        function: String,
        /// The version.
        version: String,
        /// `rollback` or `undo`.
        action: Action,
        /// The next step to suggest.
        next: &'static str,
    },
    /// Two versions would share the names of their objects.
    #[error("version {version} of function {function} would be named {object}, like version {other} that exists; choose a version that differs in more than punctuation")]
    NameCollision {
        /// The function.
        function: String,
        /// The version asked for.
        version: String,
        /// The existing version with the same object name.
        other: String,
        /// The shared object name.
        object: String,
    },
    /// A version that is still referenced.
    #[error("version {version} of function {function} {why}")]
    Referenced {
        /// The function.
        function: String,
        /// The version.
        version: String,
        /// How it is referenced (a sentence fragment: "has 10% of the traffic", …).
        why: String,
    },
}

/// Whether two splits give every version the same weight (order and weight-0 entries aside).
pub fn same_split(a: &[TrafficTarget], b: &[TrafficTarget]) -> bool {
    let weighted = |s: &[TrafficTarget]| -> BTreeSet<(String, u32)> {
        s.iter()
            .filter(|t| t.weight > 0)
            .map(|t| (t.version.clone(), t.weight))
            .collect()
    };
    weighted(a) == weighted(b)
}

/// A split for display: `1.3.0=10% 1.2.0=90%`, weight-0 entries left out.
pub fn describe(traffic: &[TrafficTarget]) -> String {
    let parts: Vec<String> = traffic
        .iter()
        .filter(|t| t.weight > 0)
        .map(|t| format!("{}={}", t.version, Percent(t.weight)))
        .collect();
    if parts.is_empty() {
        "(none)".to_string()
    } else {
        parts.join(" ")
    }
}

fn full_holder(traffic: &[TrafficTarget]) -> Option<&str> {
    traffic
        .iter()
        .find(|t| t.weight == TOTAL_PPM)
        .map(|t| t.version.as_str())
}

/// Records `traffic` as the function's new state: validates it against the existing versions,
/// refuses weight increases on unready versions unless `force`, appends a history entry
/// (trimmed to [`DEFAULT_HISTORY_LIMIT`]) and updates the stable versions.
pub fn apply(
    function: &str,
    spec: &FunctionSpec,
    traffic: Vec<TrafficTarget>,
    action: Action,
    versions: &[VersionState],
    force: bool,
    change: &Change,
) -> Result<FunctionSpec, PlanError> {
    validate::traffic(&traffic)?;
    if !force {
        if let Some(version) = returns_to_rolled_back(spec, &traffic).into_iter().next() {
            return Err(PlanError::RolledBackFrom {
                function: function.to_string(),
                version,
            });
        }
    }
    for t in &traffic {
        let state = versions
            .iter()
            .find(|v| v.version == t.version)
            .ok_or_else(|| PlanError::UnknownVersion {
                function: function.to_string(),
                version: t.version.clone(),
            })?;
        if !force && !state.ready && t.weight > spec.weight_of(&t.version) {
            return Err(PlanError::NotReady {
                version: t.version.clone(),
            });
        }
    }
    let mut next = end_rollout(spec, action, change);
    set_traffic(&mut next, traffic);
    record(&mut next, action, change);
    validate::function(function, &next, versions.iter().map(|v| v.version.as_str()))?;
    Ok(next)
}

/// Sets `traffic` as the split and keeps `stable` / `previousStable` up to date: a version that
/// gets 100% becomes stable. No history entry (the caller records one).
pub fn set_traffic(spec: &mut FunctionSpec, traffic: Vec<TrafficTarget>) {
    spec.traffic = traffic;
    if let Some(holder) = full_holder(&spec.traffic) {
        if spec.stable.as_deref() != Some(holder) {
            spec.previous_stable = spec.stable.take();
            spec.stable = Some(holder.to_string());
        }
    }
}

/// `spec` with its rollout in flight ended by a manual traffic change (`action`: a `traffic`,
/// `promote`, `rollback`, `undo` or a deploy that moves traffic), so that no router judges it
/// against weights a person set: the plan is removed and the ending recorded in the history
/// (a canary entry naming the command, the split as it was), before the change's own entry.
/// The same spec when no rollout is in flight.
pub fn end_rollout(spec: &FunctionSpec, action: Action, change: &Change) -> FunctionSpec {
    let mut next = spec.clone();
    let Some(rollout) = next.rollout.take() else {
        return next;
    };
    if action == Action::Canary || !action.moves_traffic() {
        return spec.clone();
    }
    let ended = Change {
        reason: Some(format!(
            "ended by a manual {action} (canary {} against baseline {})",
            rollout.canary, rollout.baseline
        )),
        ..change.clone()
    };
    record(&mut next, Action::Canary, &ended);
    if let Some(last) = next.history.last_mut() {
        last.versions = vec![rollout.canary.clone()];
    }
    next
}

/// The spec of a function's first deploy: all traffic on its only version.
pub fn first_deploy(version: &str, change: &Change) -> FunctionSpec {
    let mut spec = FunctionSpec {
        stable: Some(version.to_string()),
        traffic: vec![TrafficTarget::new(version, TOTAL_PPM)],
        ..Default::default()
    };
    record(&mut spec, Action::Deploy, change);
    spec
}

/// Appends the history entry of a change to `spec` (whose traffic is already the new one),
/// numbered one past the highest revision recorded so far, and trims the history to
/// [`DEFAULT_HISTORY_LIMIT`]. Numbers are never reused: a trimmed entry's number is gone.
pub fn record(spec: &mut FunctionSpec, action: Action, change: &Change) {
    // Entries from before revisions were numbered (0) count by their position.
    let highest = spec
        .history
        .iter()
        .map(|h| h.revision)
        .max()
        .unwrap_or(0)
        .max(spec.history.len() as u64);
    spec.history.push(HistoryEntry {
        revision: highest + 1,
        time: change.now.clone(),
        actor: change.actor.clone(),
        action,
        reason: change.reason.clone(),
        traffic: spec.traffic.clone(),
        versions: Vec::new(),
        undone: false,
    });
    let excess = spec.history.len().saturating_sub(DEFAULT_HISTORY_LIMIT);
    spec.history.drain(..excess);
}

/// Records in the history an event that moves no traffic — a version `added` at 0%, deleted
/// or collected — with the versions it concerns, so every write leaves an audit trail.
pub fn record_event(
    spec: &FunctionSpec,
    action: Action,
    versions: &[String],
    change: &Change,
) -> FunctionSpec {
    debug_assert!(!action.moves_traffic());
    let mut next = spec.clone();
    record(&mut next, action, change);
    if let Some(last) = next.history.last_mut() {
        last.versions = versions.to_vec();
    }
    next
}

/// `next` with the history entry of a change that moves no traffic, validated as the API
/// server would: the common end of `tag`, `untag`, `set` and `shadow`.
fn recorded(
    function: &str,
    mut next: FunctionSpec,
    action: Action,
    versions: &[VersionState],
    change: &Change,
) -> Result<FunctionSpec, PlanError> {
    record(&mut next, action, change);
    validate::function(function, &next, versions.iter().map(|v| v.version.as_str()))?;
    Ok(next)
}

/// Whether two specs route alike: everything but the history (and the stable versions, which
/// follow from the traffic) is equal. A write that changes nothing else is not made.
pub fn same_state(a: &FunctionSpec, b: &FunctionSpec) -> bool {
    same_split(&a.traffic, &b.traffic)
        && a.hosts == b.hosts
        && a.path_prefix == b.path_prefix
        && a.strip_prefix == b.strip_prefix
        && a.tags == b.tags
        && a.affinity == b.affinity
        && a.pinning == b.pinning
        && a.shadow == b.shadow
}

/// `tag FN TAG VERSION`: `tag` names `version` (set or moved). `None` when it already does.
pub fn tag(
    function: &str,
    spec: &FunctionSpec,
    tag: &str,
    version: &str,
    versions: &[VersionState],
    change: &Change,
) -> Result<Option<FunctionSpec>, PlanError> {
    if !versions.iter().any(|v| v.version == version) {
        return Err(PlanError::UnknownVersion {
            function: function.to_string(),
            version: version.to_string(),
        });
    }
    if spec.tag(tag) == Some(version) {
        return Ok(None);
    }
    let mut next = spec.clone();
    match next.tags.iter_mut().find(|t| t.tag == tag) {
        Some(t) => t.version = version.to_string(),
        None => next.tags.push(Tag {
            tag: tag.to_string(),
            version: version.to_string(),
        }),
    }
    recorded(function, next, Action::Tag, versions, change).map(Some)
}

/// `untag FN TAG`: removes `tag`. `None` when no such tag exists.
pub fn untag(
    function: &str,
    spec: &FunctionSpec,
    tag: &str,
    versions: &[VersionState],
    change: &Change,
) -> Result<Option<FunctionSpec>, PlanError> {
    if spec.tag(tag).is_none() {
        return Ok(None);
    }
    let mut next = spec.clone();
    next.tags.retain(|t| t.tag != tag);
    recorded(function, next, Action::Untag, versions, change).map(Some)
}

/// The routing settings `set` changes; `None` leaves a setting as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Settings {
    /// The host names (empty: any host).
    pub hosts: Option<Vec<String>>,
    /// The path prefix (`Some(None)`: back to the default).
    pub path_prefix: Option<Option<String>>,
    /// Whether the prefix is stripped.
    pub strip_prefix: Option<bool>,
    /// The affinity (`Some(None)`: none).
    pub affinity: Option<Option<Affinity>>,
    /// Whether pinning is on.
    pub pinning: Option<bool>,
}

/// `set FN …`: the routing settings changed, validated as the API server would. `None` when
/// they are already so.
pub fn settings(
    function: &str,
    spec: &FunctionSpec,
    settings: &Settings,
    versions: &[VersionState],
    change: &Change,
) -> Result<Option<FunctionSpec>, PlanError> {
    let mut next = spec.clone();
    if let Some(h) = &settings.hosts {
        next.hosts = h.clone();
    }
    if let Some(p) = &settings.path_prefix {
        next.path_prefix = p.clone();
    }
    if let Some(s) = settings.strip_prefix {
        next.strip_prefix = s;
    }
    if let Some(a) = &settings.affinity {
        next.affinity = a.clone();
    }
    if let Some(p) = settings.pinning {
        next.pinning = p;
    }
    if same_state(spec, &next) {
        return Ok(None);
    }
    recorded(function, next, Action::Set, versions, change).map(Some)
}

/// Starts mirroring to `shadow.version`, or changes what is mirrored; `None` when the spec
/// already says so. The version must exist (it usually has weight 0); the traffic is unchanged.
pub fn shadow(
    function: &str,
    spec: &FunctionSpec,
    shadow: &ShadowSpec,
    versions: &[VersionState],
    change: &Change,
) -> Result<Option<FunctionSpec>, PlanError> {
    if !versions.iter().any(|v| v.version == shadow.version) {
        return Err(PlanError::UnknownVersion {
            function: function.to_string(),
            version: shadow.version.clone(),
        });
    }
    let mut next = spec.clone();
    next.shadow = Some(Box::new(shadow.clone()));
    if same_state(spec, &next) {
        return Ok(None);
    }
    recorded(function, next, Action::Shadow, versions, change).map(Some)
}

/// Stops mirroring; `None` when nothing is mirrored.
pub fn shadow_stop(
    function: &str,
    spec: &FunctionSpec,
    versions: &[VersionState],
    change: &Change,
) -> Result<Option<FunctionSpec>, PlanError> {
    if spec.shadow.is_none() {
        return Ok(None);
    }
    let mut next = spec.clone();
    next.shadow = None;
    recorded(function, next, Action::Shadow, versions, change).map(Some)
}

/// The split after moving `share` ppm to `version`, taken from the other versions in
/// proportion to their weights (largest remainder, so the total stays exact).
pub fn with_share(traffic: &[TrafficTarget], version: &str, share: u32) -> Vec<TrafficTarget> {
    let share = share.min(TOTAL_PPM);
    let others: Vec<&TrafficTarget> = traffic.iter().filter(|t| t.version != version).collect();
    let others_total: u64 = others.iter().map(|t| u64::from(t.weight)).sum();
    let budget = u64::from(TOTAL_PPM - share);
    let mut out: Vec<TrafficTarget> = Vec::with_capacity(others.len() + 1);
    if others_total == 0 {
        return vec![TrafficTarget::new(version, TOTAL_PPM)];
    }
    let mut remainders = Vec::with_capacity(others.len());
    let mut given = 0u64;
    for (i, t) in others.iter().enumerate() {
        let exact = u64::from(t.weight) * budget;
        let w = exact / others_total;
        given += w;
        remainders.push((exact % others_total, i));
        out.push(TrafficTarget::new(t.version.clone(), w as u32));
    }
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, i) in remainders.into_iter().take((budget - given) as usize) {
        out[i].weight += 1;
    }
    out.push(TrafficTarget::new(version, share));
    out.retain(|t| t.weight > 0 || t.version == version);
    out
}

/// The versions a rollback took traffic away from and that nothing has sent traffic to since,
/// as far as the retained history tells, sorted. Traffic goes back to them only with `--force`,
/// and a rollback never picks one.
pub fn rolled_back_from(spec: &FunctionSpec) -> BTreeSet<String> {
    let mut left = BTreeSet::new();
    let mut before: Option<&[TrafficTarget]> = None;
    for e in &spec.history {
        if let (Action::Rollback, Some(before)) = (e.action, before) {
            for t in before.iter().filter(|t| t.weight > 0) {
                if weight_in(&e.traffic, &t.version) == 0 {
                    left.insert(t.version.clone());
                }
            }
        }
        // A later change that gives it weight (deliberately, with --force) clears it.
        let previous = before.unwrap_or_default();
        for t in &e.traffic {
            if t.weight > weight_in(previous, &t.version) {
                left.remove(&t.version);
            }
        }
        before = Some(&e.traffic);
    }
    left
}

fn weight_in(traffic: &[TrafficTarget], version: &str) -> u32 {
    traffic
        .iter()
        .filter(|t| t.version == version)
        .map(|t| t.weight)
        .sum()
}

/// The versions rolled back from (see [`rolled_back_from`]) whose weight `traffic` raises
/// over the current split.
pub fn returns_to_rolled_back(spec: &FunctionSpec, traffic: &[TrafficTarget]) -> Vec<String> {
    let left = rolled_back_from(spec);
    left.into_iter()
        .filter(|v| weight_in(traffic, v) > weight_in(&spec.traffic, v))
        .collect()
}

/// Where `rollback` sends all traffic: the most recent version to hold 100% (`stable`, then
/// `previousStable`) other than the one holding 100% now and other than a version rolled back
/// from.
pub fn rollback_target(spec: &FunctionSpec) -> Option<&str> {
    let current = full_holder(&spec.traffic);
    let left = rolled_back_from(spec);
    [spec.stable.as_deref(), spec.previous_stable.as_deref()]
        .into_iter()
        .flatten()
        .find(|v| Some(*v) != current && !left.contains(*v))
}

/// What `rollback` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollback {
    /// Send 100% to this version.
    To(Vec<TrafficTarget>),
    /// Nothing: the traffic is already where a rollback put it (100% on `version`, the
    /// stable version). Rolling back twice is rolling back once.
    Already {
        /// The version holding 100%.
        version: String,
        /// The versions rolled back from, which a rollback never returns to.
        left: Vec<String>,
    },
}

/// The plan of `rollback`: 100% to `to`, or to the [`rollback_target`]; nothing when the
/// traffic is already where a rollback put it. `versions` are the versions that exist: a
/// target that was deleted is refused with the next step.
pub fn rollback(
    function: &str,
    spec: &FunctionSpec,
    to: Option<&str>,
    versions: &[VersionState],
) -> Result<Rollback, PlanError> {
    let target = match to {
        Some(v) => v,
        None => {
            let holder = full_holder(&spec.traffic);
            let left: Vec<String> = rolled_back_from(spec).into_iter().collect();
            let rolled_back_here = spec
                .history
                .iter()
                .rfind(|e| e.moves_traffic())
                .is_some_and(|e| {
                    e.action == Action::Rollback && same_split(&e.traffic, &spec.traffic)
                });
            let on_stable = holder.is_some() && holder == spec.stable.as_deref();
            match (holder, rollback_target(spec)) {
                (Some(h), _) if rolled_back_here => {
                    return Ok(Rollback::Already {
                        version: h.to_string(),
                        left,
                    })
                }
                (_, Some(v)) => v,
                (Some(h), None) if on_stable && !left.is_empty() => {
                    return Ok(Rollback::Already {
                        version: h.to_string(),
                        left,
                    })
                }
                _ => return Err(PlanError::NoStable(function.to_string())),
            }
        }
    };
    if to.is_none() && !versions.iter().any(|v| v.version == target) {
        return Err(PlanError::TargetGone {
            function: function.to_string(),
            version: target.to_string(),
            action: Action::Rollback,
            next: "rollback --to VERSION",
        });
    }
    Ok(Rollback::To(vec![TrafficTarget::new(target, TOTAL_PPM)]))
}

/// Refuses a new `version` whose object name (see [`crate::object_name`]) an existing, different
/// version already has: `1.3.0-rc.1`, `1.3.0-rc-1` and `1.3.0+rc.1` all map to `fn-1-3-0-rc-1`,
/// and the second would otherwise be taken for a changed copy of the first.
pub fn name_collision<'a>(
    function: &str,
    existing: impl IntoIterator<Item = &'a str>,
    version: &str,
) -> Result<(), PlanError> {
    let object = crate::object_name(function, version);
    match existing
        .into_iter()
        .find(|v| *v != version && crate::object_name(function, v) == object)
    {
        Some(other) => Err(PlanError::NameCollision {
            function: function.to_string(),
            version: version.to_string(),
            other: other.to_string(),
            object,
        }),
        None => Ok(()),
    }
}

/// Indices of the history entries that form the undo stack: every state not walked back by
/// an earlier undo, undo entries themselves excluded.
fn undo_stack(spec: &FunctionSpec) -> Vec<usize> {
    spec.history
        .iter()
        .enumerate()
        .filter(|(_, e)| !e.undone && e.action != Action::Undo && e.moves_traffic())
        .map(|(i, _)| i)
        .collect()
}

/// `undo`: restores the state before the latest one exactly, marks the latest as undone (so
/// the next undo walks back one more step) and records the undo itself.
pub fn undo(
    function: &str,
    spec: &FunctionSpec,
    versions: &[VersionState],
    force: bool,
    change: &Change,
) -> Result<FunctionSpec, PlanError> {
    let stack = undo_stack(spec);
    let [.., previous, latest] = stack[..] else {
        return Err(PlanError::NothingToUndo(function.to_string()));
    };
    let restored = spec.history[previous].traffic.clone();
    if let Some(gone) = restored
        .iter()
        .find(|t| t.weight > 0 && !versions.iter().any(|v| v.version == t.version))
    {
        return Err(PlanError::TargetGone {
            function: function.to_string(),
            version: gone.version.clone(),
            action: Action::Undo,
            next: "rollback --to VERSION or traffic",
        });
    }
    let mut marked = spec.clone();
    marked.history[latest].undone = true;
    apply(
        function,
        &marked,
        restored,
        Action::Undo,
        versions,
        force,
        change,
    )
}

/// The number of the history entry at `index`: its revision, or its position for an entry
/// written before revisions were numbered.
pub fn revision_at(spec: &FunctionSpec, index: usize) -> u64 {
    match spec.history[index].revision {
        0 => index as u64 + 1,
        r => r,
    }
}

/// `undo --to N`: restores the traffic of revision `revision` exactly, marks the traffic
/// changes after it as undone (so a later `undo` walks back from there) and records the undo.
pub fn undo_to(
    function: &str,
    spec: &FunctionSpec,
    revision: u64,
    versions: &[VersionState],
    force: bool,
    change: &Change,
) -> Result<FunctionSpec, PlanError> {
    let Some(index) = (0..spec.history.len()).find(|&i| revision_at(spec, i) == revision) else {
        return Err(PlanError::NoRevision {
            function: function.to_string(),
            revision,
            oldest: (!spec.history.is_empty()).then(|| revision_at(spec, 0)),
        });
    };
    let restored = spec.history[index].traffic.clone();
    if let Some(gone) = restored
        .iter()
        .find(|t| t.weight > 0 && !versions.iter().any(|v| v.version == t.version))
    {
        return Err(PlanError::TargetGone {
            function: function.to_string(),
            version: gone.version.clone(),
            action: Action::Undo,
            next: "rollback --to VERSION or traffic",
        });
    }
    let mut marked = spec.clone();
    for e in &mut marked.history[index + 1..] {
        if e.moves_traffic() && e.action != Action::Undo {
            e.undone = true;
        }
    }
    apply(
        function,
        &marked,
        restored,
        Action::Undo,
        versions,
        force,
        change,
    )
}

/// Why a version must not be deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protection {
    /// It has weight: deleting it would break routing, even with `--force`.
    Weighted(u32),
    /// A tag names it.
    Tagged(String),
    /// It is a rollback target (`stable` or `previousStable`).
    Stable,
    /// It has weight in one of the last N traffic states of the history (the rollback window).
    RecentHistory,
    /// It is newer than every version that has had traffic: deployed and not yet rolled out.
    Unreleased,
}

impl Protection {
    /// Whether `--force` may override it.
    pub fn forceable(&self) -> bool {
        !matches!(self, Protection::Weighted(_))
    }

    fn why(&self) -> String {
        match self {
            Protection::Weighted(w) => {
                format!("has {} of the traffic; shift it away first", Percent(*w))
            }
            Protection::Tagged(t) => {
                format!("is named by tag {t} (use --force to delete it with the tag)")
            }
            Protection::Stable => "is a rollback target (use --force)".to_string(),
            Protection::RecentHistory => {
                "is in the rollback window of recent history (use --force)".to_string()
            }
            Protection::Unreleased => {
                "is newer than every released version and has not had traffic yet (use --force)"
                    .to_string()
            }
        }
    }
}

/// What protects `version` from deletion, given the function's spec (if it exists) and a
/// rollback window of `window` history entries.
pub fn protection(spec: Option<&FunctionSpec>, version: &str, window: usize) -> Option<Protection> {
    let spec = spec?;
    let w = spec.weight_of(version);
    if w > 0 {
        return Some(Protection::Weighted(w));
    }
    if let Some(t) = spec.tags.iter().find(|t| t.version == version) {
        return Some(Protection::Tagged(t.tag.clone()));
    }
    if spec.stable.as_deref() == Some(version) || spec.previous_stable.as_deref() == Some(version) {
        return Some(Protection::Stable);
    }
    // The window counts traffic states: tags, settings and audit entries move no traffic.
    let recent = spec
        .history
        .iter()
        .rev()
        .filter(|e| e.moves_traffic())
        .take(window);
    if recent.clone().any(|e| {
        e.traffic
            .iter()
            .any(|t| t.version == version && t.weight > 0)
    }) {
        return Some(Protection::RecentHistory);
    }
    let released = spec
        .history
        .iter()
        .flat_map(|e| e.traffic.iter())
        .chain(spec.traffic.iter())
        .filter(|t| t.weight > 0)
        .filter_map(|t| semver::Version::parse(&t.version).ok())
        .max();
    let parsed = semver::Version::parse(version).ok();
    let unreleased = match (parsed, released) {
        (Some(v), Some(r)) => v > r,
        _ => false,
    };
    unreleased.then_some(Protection::Unreleased)
}

/// What `delete` may do: `Ok(tags to drop from the Function)` or the reason it is refused.
pub fn delete(
    function: &str,
    spec: Option<&FunctionSpec>,
    all_versions: &[String],
    version: &str,
    window: usize,
    force: bool,
) -> Result<Vec<String>, PlanError> {
    if !all_versions.iter().any(|v| v == version) {
        return Err(PlanError::UnknownVersion {
            function: function.to_string(),
            version: version.to_string(),
        });
    }
    // Not a `Protection` (whose list other commands render): a shadow names its version in
    // the spec, so deleting it would leave a spec no router can serve; never forceable.
    if spec
        .and_then(|s| s.shadow.as_ref())
        .is_some_and(|s| s.version == version)
    {
        return Err(PlanError::Referenced {
            function: function.to_string(),
            version: version.to_string(),
            why: format!(
                "gets the shadow copies; stop them first (switchyard shadow stop {function})"
            ),
        });
    }
    match protection(spec, version, window) {
        Some(p) if !force || !p.forceable() => Err(PlanError::Referenced {
            function: function.to_string(),
            version: version.to_string(),
            why: p.why(),
        }),
        _ => Ok(spec
            .map(|s| {
                s.tags
                    .iter()
                    .filter(|t| t.version == version)
                    .map(|t| t.tag.clone())
                    .collect()
            })
            .unwrap_or_default()),
    }
}

/// A gc plan: the versions to delete and, for the others, why they stay.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GcPlan {
    /// Versions to delete, oldest first.
    pub delete: Vec<String>,
    /// Versions kept, with the reason.
    pub keep: Vec<(String, Protection)>,
}

/// `gc --keep N`: every version that nothing protects (see [`protection`]) with a rollback
/// window of `window` history entries.
pub fn gc(spec: Option<&FunctionSpec>, all_versions: &[String], window: usize) -> GcPlan {
    let mut sorted: Vec<&String> = all_versions.iter().collect();
    sorted.sort_by_key(|v| semver::Version::parse(v).ok());
    let mut plan = GcPlan::default();
    let shadowed = spec
        .and_then(|s| s.shadow.as_ref())
        .map(|s| s.version.as_str());
    // The shadow version is neither deleted nor listed: `delete` says why it stays.
    for v in sorted.into_iter().filter(|v| Some(v.as_str()) != shadowed) {
        match protection(spec, v, window) {
            Some(p) => plan.keep.push((v.clone(), p)),
            None => plan.delete.push(v.clone()),
        }
    }
    plan
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod canary_tests;
