//! `status FN [--watch]`: desired weights, readiness, each version's live traffic summed over
//! the live router replicas (share, requests/s, error rate, p50, p99), and what each replica
//! serves.

use std::io::IsTerminal as _;

use futures::StreamExt as _;
use serde::Serialize;
use switchyard_core::numbers::{live_view, HealthRule, Numbers};
use switchyard_core::plan;
use switchyard_core::protocol;
use switchyard_core::weight::Percent;

use super::history::HistoryRow;
use super::versions::{version_rows, version_table, VersionRow};
use crate::args;
use crate::output::{self, age_of, Table};
use crate::store::{FunctionState, Router, Store, VersionInfo};

/// One router replica as `status` shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RouterRow {
    name: String,
    live: bool,
    /// `applied`, `rejected`, `pending` (not this generation yet, or waiting for a version),
    /// `unknown` (no report yet) or `gone` (not live).
    state: &'static str,
    /// The Function's generation the state is about: the current one when applied, the
    /// listed one when pending or rejected for a version, none when not read yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    observed_generation: Option<i64>,
    /// Generation of the replica's routing table.
    #[serde(skip_serializing_if = "Option::is_none")]
    table_generation: Option<u64>,
    /// When its report was last written.
    #[serde(skip_serializing_if = "Option::is_none")]
    reported_at: Option<String>,
    /// Why it refuses, or what it waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// One version's live traffic as `status` shows it, beside its weight and readiness.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LiveRow {
    version: String,
    /// Configured weight, parts per million.
    weight: u32,
    ready: bool,
    #[serde(flatten)]
    numbers: crate::live::LiveJson,
    #[serde(skip)]
    view: switchyard_core::numbers::VersionLive,
}

/// Each version's live traffic over the last minute, summed over the live replicas' reports.
pub(crate) fn live_rows(
    f: &FunctionState,
    versions: &[VersionInfo],
    routers: &[Router],
) -> Vec<LiveRow> {
    let numbers: Vec<&Numbers> = routers
        .iter()
        .filter(|r| r.live)
        .filter_map(|r| r.report.as_ref()?.numbers.as_ref())
        .collect();
    let key = format!("{}/{}", f.namespace, f.name);
    let rule = HealthRule::default();
    live_view(&key, &f.spec.traffic, &numbers)
        .iter()
        .map(|v| LiveRow {
            ready: versions
                .iter()
                .any(|i| i.spec.version == v.version && i.readiness.ready),
            version: v.version.clone(),
            weight: v.weight,
            numbers: crate::live::json(v, &rule),
            view: v.clone(),
        })
        .collect()
}

/// What `status` shows.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StatusView {
    name: String,
    generation: i64,
    pub(crate) route: String,
    traffic: String,
    weights: Vec<switchyard_core::TrafficTarget>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stable: Option<String>,
    pub(crate) versions: Vec<VersionRow>,
    /// Live traffic per version, last minute, all live replicas.
    live: Vec<LiveRow>,
    pub(crate) routers: Vec<RouterRow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_change: Option<HistoryRow>,
    /// The automated canary, in flight or the last one finished (`canary status`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rollout: Option<super::canary::CanaryView>,
    /// The shadow and what its copies found, summed over the live routers (issue 16).
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow: Option<super::shadow::ShadowView>,
}

pub(crate) fn status_view(
    f: &FunctionState,
    versions: &[VersionInfo],
    routers: &[Router],
) -> StatusView {
    let rows = routers
        .iter()
        .map(|r| {
            let one = [(r.name.clone(), r.report.as_ref())];
            let summary =
                protocol::summarize(&one, &f.namespace, &f.name, &f.written_at, f.generation);
            let (state, reason) = match &summary {
                _ if !r.live => ("gone", None),
                _ if r.report.is_none() => ("unknown", None),
                Ok(s) if !s.applied.is_empty() => ("applied", None),
                Ok(s) if !s.rejected.is_empty() => ("rejected", Some(s.rejected[0].1.clone())),
                Ok(s) => ("pending", s.waiting.first().map(|(_, why)| why.clone())),
                Err(e) => ("unknown", Some(e.to_string())),
            };
            let listed = r.report.as_ref().and_then(|rep| {
                rep.exceptions
                    .iter()
                    .find(|e| e.name == f.name && e.namespace == f.namespace)
                    .map(|e| e.generation)
            });
            let observed_generation = match state {
                "applied" => Some(listed.unwrap_or(f.generation).max(f.generation)),
                "gone" | "unknown" => None,
                _ => listed,
            };
            RouterRow {
                name: r.name.clone(),
                live: r.live,
                state,
                observed_generation,
                table_generation: r
                    .report
                    .as_ref()
                    .and_then(|rep| rep.table.as_ref())
                    .map(|t| t.generation),
                reported_at: r
                    .report
                    .as_ref()
                    .map(|rep| rep.reported_at.clone())
                    .filter(|t| !t.is_empty()),
                reason,
            }
        })
        .collect();
    StatusView {
        name: f.name.clone(),
        generation: f.generation,
        route: format!(
            "{}{}",
            if f.spec.hosts.is_empty() {
                "*".to_string()
            } else {
                f.spec.hosts.join(",")
            },
            f.spec.effective_prefix(&f.name)
        ),
        traffic: plan::describe(&f.spec.traffic),
        weights: f.spec.traffic.clone(),
        stable: f.spec.stable.clone(),
        versions: version_rows(Some(f), versions),
        live: live_rows(f, versions, routers),
        routers: rows,
        last_change: f.spec.history.last().map(HistoryRow::from),
        rollout: None,
        shadow: super::shadow::view(f, routers),
    }
}

fn status_text(v: &StatusView, now: jiff::Timestamp) -> String {
    let mut out = format!(
        "Function:    {}\nRoute:       {}\nTraffic:     {}\nStable:      {}\nGeneration:  {}\n",
        v.name,
        v.route,
        v.traffic,
        v.stable.as_deref().unwrap_or("-"),
        v.generation
    );
    if let Some(h) = &v.last_change {
        out.push_str(&format!(
            "Last change: {} by {}, {} ago{}\n",
            h.action,
            h.actor,
            age_of(&h.time, now),
            h.reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ));
    }
    if let Some(s) = &v.shadow {
        out.push_str(&format!("Shadow:      {}\n", super::shadow::status_line(s)));
    }
    if let Some(r) = &v.rollout {
        out.push_str(&super::canary::view_text(r));
    }
    out.push('\n');
    out.push_str(&version_table(&v.versions, now, v.stable.as_deref()).render());
    out.push('\n');
    out.push_str(&live_text(
        &v.live,
        v.routers.iter().filter(|r| r.live).count(),
    ));
    out.push('\n');
    out.push_str(&router_text(&v.routers, now));
    out
}

/// The live traffic table: per version, weight and readiness beside what the routers saw.
fn live_text(rows: &[LiveRow], live_routers: usize) -> String {
    let mut out = format!(
        "Live traffic (last minute, {live_routers} live router{}):\n",
        if live_routers == 1 { "" } else { "s" }
    );
    let mut headers = vec!["VERSION", "WEIGHT", "READY"];
    headers.extend(crate::live::HEADERS);
    let mut t = Table::new(&headers);
    for r in rows {
        let mut cells = vec![
            r.version.clone(),
            Percent(r.weight).to_string(),
            if r.ready { "yes" } else { "no" }.to_string(),
        ];
        cells.extend(crate::live::cells(&r.view));
        t.row(cells);
    }
    out.push_str(&t.render());
    out
}

/// The routers' table, or a line saying there is none.
pub(crate) fn router_text(routers: &[RouterRow], now: jiff::Timestamp) -> String {
    let mut out = String::new();
    if routers.is_empty() {
        out.push_str("Routers:     none live\n");
    } else {
        let mut t = Table::new(&[
            "ROUTER",
            "LIVE",
            "GENERATION",
            "STATE",
            "TABLE",
            "REPORTED",
            "REASON",
        ]);
        for r in routers {
            t.row(vec![
                r.name.clone(),
                if r.live { "yes" } else { "no" }.into(),
                r.observed_generation.map_or("-".into(), |g| g.to_string()),
                r.state.into(),
                r.table_generation.map_or("-".into(), |g| g.to_string()),
                r.reported_at
                    .as_deref()
                    .map_or("-".into(), |a| format!("{} ago", age_of(a, now))),
                r.reason.clone().unwrap_or_default(),
            ]);
        }
        out.push_str(&t.render());
    }
    out
}

/// [`status_view`] with the rollout, read whole through `rollouts`.
async fn full_view(
    rollouts: &super::canary::Rollouts,
    f: &FunctionState,
    versions: &[VersionInfo],
    routers: &[Router],
) -> anyhow::Result<StatusView> {
    let mut view = status_view(f, versions, routers);
    let whole = rollouts.read(f).await?;
    view.rollout = super::canary::canary_view(&whole, routers, jiff::Timestamp::now());
    Ok(view)
}

/// `status FN [--watch]`.
pub async fn status(
    store: &dyn Store,
    rollouts: &super::canary::Rollouts,
    args: args::Status,
) -> anyhow::Result<()> {
    let name = &args.function;
    let (f, versions) = futures::try_join!(super::function(store, name), store.versions(name))?;
    let routers = store.reports(Some(&f)).await?;
    let view = full_view(rollouts, &f, &versions, &routers).await?;
    output::print(args.output.format, &view, || {
        status_text(&view, jiff::Timestamp::now())
    })?;
    if !args.watch {
        return Ok(());
    }
    let mut last = f;
    let mut events = store.watch_function(&last).await?;
    // The numbers move every second.
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let in_place = args.output.format == args::Format::Table && std::io::stdout().is_terminal();
    tick.tick().await;
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(state)) => last = state,
                Some(Err(e)) => return Err(e),
                None => { events = store.watch_function(&last).await?; continue; }
            },
            // Leases, reports and Deployments change without touching the Function.
            _ = tick.tick() => {}
        }
        let (versions, routers) =
            futures::try_join!(store.versions(name), store.reports(Some(&last)))?;
        let view = full_view(rollouts, &last, &versions, &routers).await?;
        if in_place {
            // Redrawn in place on a terminal: home, clear, then the new view.
            print!("\x1b[H\x1b[2J");
        } else if args.output.format == args::Format::Table {
            crate::output::line(format_args!("---"));
        }
        output::print(args.output.format, &view, || {
            status_text(&view, jiff::Timestamp::now())
        })?;
    }
}
