//! `describe FN`: everything about one function on one page — routing settings, the split,
//! the stable version and where a rollback would go, tags, versions, recent history and what
//! each router replica serves or rejected.

use serde::Serialize;
use switchyard_core::plan::{self, PlanError, Rollback};

use super::history::HistoryRow;
use super::status::{router_text, status_view, RouterRow};
use super::versions::{version_table, VersionRow};
use crate::args;
use crate::output::{self, age_of, Table};
use crate::store::{FunctionState, Store, VersionInfo};

/// How many history entries `describe` shows (all of them: `history`).
const RECENT: usize = 5;

/// What `describe` shows.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DescribeView {
    name: String,
    /// The automated canary, in flight or the last one finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    rollout: Option<super::canary::CanaryView>,
    location: String,
    generation: i64,
    route: String,
    strip_prefix: bool,
    /// `header:NAME`, `cookie:NAME` or `none`.
    affinity: String,
    pinning: bool,
    traffic: String,
    weights: Vec<switchyard_core::TrafficTarget>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stable: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_stable: Option<String>,
    /// Where `rollback` would send all traffic now, or why it would not.
    rollback: String,
    rolled_back_from: Vec<String>,
    tags: Vec<String>,
    versions: Vec<VersionRow>,
    routers: Vec<RouterRow>,
    recent_history: Vec<HistoryRow>,
}

fn rollback_line(f: &FunctionState, versions: &[VersionInfo]) -> String {
    let states: Vec<_> = versions.iter().map(VersionInfo::state).collect();
    match plan::rollback(&f.name, &f.spec, None, &states) {
        Ok(Rollback::To(t)) => format!(
            "to {}",
            t.first().map(|t| t.version.as_str()).unwrap_or("-")
        ),
        Ok(Rollback::Already { version, .. }) => {
            format!("nothing to do: already rolled back to {version}")
        }
        Err(PlanError::TargetGone { version, .. }) => {
            format!("refused: its target {version} was deleted (use --to VERSION)")
        }
        Err(_) => "refused: no earlier stable version (use --to VERSION)".to_string(),
    }
}

fn view(
    store: &dyn Store,
    f: &FunctionState,
    versions: &[VersionInfo],
    routers: &[crate::store::Router],
) -> DescribeView {
    let status = status_view(f, versions, routers);
    let affinity = match &f.spec.affinity {
        Some(a) => match (&a.header, &a.cookie) {
            (Some(h), _) => format!("header:{h}"),
            (None, Some(c)) => format!("cookie:{c}"),
            (None, None) => "none".into(),
        },
        None => "none".into(),
    };
    let skip = f.spec.history.len().saturating_sub(RECENT);
    DescribeView {
        name: f.name.clone(),
        rollout: None,
        location: store.location(),
        generation: f.generation,
        route: status.route,
        strip_prefix: f.spec.strip_prefix,
        affinity,
        pinning: f.spec.pinning,
        traffic: plan::describe(&f.spec.traffic),
        weights: f.spec.traffic.clone(),
        stable: f.spec.stable.clone(),
        previous_stable: f.spec.previous_stable.clone(),
        rollback: rollback_line(f, versions),
        rolled_back_from: plan::rolled_back_from(&f.spec).into_iter().collect(),
        tags: f
            .spec
            .tags
            .iter()
            .map(|t| format!("{}={}", t.tag, t.version))
            .collect(),
        versions: status.versions,
        routers: status.routers,
        recent_history: f.spec.history[skip..]
            .iter()
            .map(HistoryRow::from)
            .collect(),
    }
}

fn text(v: &DescribeView, now: jiff::Timestamp) -> String {
    let or_dash = |s: Option<&str>| s.unwrap_or("-").to_string();
    let list = |l: &[String]| {
        if l.is_empty() {
            "-".to_string()
        } else {
            l.join(" ")
        }
    };
    let mut out = String::new();
    for (k, val) in [
        ("Function", format!("{} in {}", v.name, v.location)),
        (
            "Route",
            format!(
                "{}{}",
                v.route,
                if v.strip_prefix {
                    " (prefix stripped)"
                } else {
                    ""
                }
            ),
        ),
        ("Affinity", v.affinity.clone()),
        ("Pinning", if v.pinning { "on" } else { "off" }.into()),
        ("Traffic", v.traffic.clone()),
        ("Stable", or_dash(v.stable.as_deref())),
        ("Previous stable", or_dash(v.previous_stable.as_deref())),
        ("Rollback", v.rollback.clone()),
        ("Rolled back from", list(&v.rolled_back_from)),
        ("Tags", list(&v.tags)),
        ("Generation", v.generation.to_string()),
    ] {
        out.push_str(&format!("{:<18}{val}\n", format!("{k}:")));
    }
    if let Some(r) = &v.rollout {
        out.push_str(&super::canary::view_text(r));
    }
    out.push('\n');
    out.push_str(&version_table(&v.versions, now, v.stable.as_deref()).render());
    out.push('\n');
    out.push_str(&router_text(&v.routers, now));
    out.push_str(&format!(
        "\nRecent history (last {RECENT}; all: switchyard history {}):\n",
        v.name
    ));
    let mut t = Table::new(&["AGE", "ACTOR", "ACTION", "TRAFFIC", "REASON"]);
    for h in &v.recent_history {
        t.row(vec![
            age_of(&h.time, now),
            h.actor.clone(),
            if h.undone {
                format!("{} (undone)", h.action)
            } else {
                h.action.to_string()
            },
            h.traffic.clone(),
            h.reason.clone().unwrap_or_default(),
        ]);
    }
    out.push_str(&t.render());
    out
}

/// `describe FN`.
pub async fn describe(
    store: &dyn Store,
    rollouts: &super::canary::Rollouts,
    args: args::Read,
) -> anyhow::Result<()> {
    let name = &args.function;
    let (f, versions) = futures::try_join!(super::function(store, name), store.versions(name))?;
    let (routers, whole) = futures::try_join!(store.reports(Some(&f)), rollouts.read(&f))?;
    let mut v = view(store, &f, &versions, &routers);
    v.rollout = super::canary::canary_view(&whole, &routers, jiff::Timestamp::now());
    output::print(args.output.format, &v, || text(&v, jiff::Timestamp::now()))
}
