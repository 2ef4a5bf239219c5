//! The read commands: `versions`, `status`, `history`, `list`.

use futures::StreamExt as _;
use serde::Serialize;
use switchyard_core::ack;
use switchyard_core::plan;
use switchyard_core::weight::Percent;
use switchyard_core::HistoryEntry;

use crate::args;
use crate::exit::{fail, Code};
use crate::output::{self, age, age_of, Table};
use crate::store::{FunctionState, Router, Store, VersionInfo};

async fn function(store: &dyn Store, name: &str) -> anyhow::Result<FunctionState> {
    store.function(name).await?.ok_or_else(|| {
        fail(
            Code::Invalid,
            format!("function {name} not found in {}", store.location()),
        )
    })
}

/// One version as `versions` and `status` show it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct VersionRow {
    version: String,
    ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    ready_replicas: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    desired_replicas: Option<i32>,
    /// Parts per million.
    weight: u32,
    percent: String,
    tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    not_ready_because: Option<String>,
}

fn version_rows(f: Option<&FunctionState>, versions: &[VersionInfo]) -> Vec<VersionRow> {
    versions
        .iter()
        .rev()
        .map(|v| {
            let version = v.spec.version.clone();
            let weight = f.map_or(0, |f| f.spec.weight_of(&version));
            VersionRow {
                ready: v.readiness.ready,
                ready_replicas: v.readiness.ready_replicas,
                desired_replicas: v.readiness.desired_replicas,
                weight,
                percent: Percent(weight).to_string(),
                tags: f
                    .map(|f| {
                        f.spec
                            .tags
                            .iter()
                            .filter(|t| t.version == version)
                            .map(|t| t.tag.clone())
                            .collect()
                    })
                    .unwrap_or_default(),
                image: v.spec.image.clone(),
                endpoint: v.spec.endpoint.clone(),
                created: v.created.map(|t| t.to_string()),
                not_ready_because: v.readiness.detail.clone(),
                version,
            }
        })
        .collect()
}

fn version_table(rows: &[VersionRow], now: jiff::Timestamp, stable: Option<&str>) -> Table {
    let mut t = Table::new(&[
        "VERSION", "READY", "REPLICAS", "WEIGHT", "TAGS", "SOURCE", "AGE",
    ]);
    for r in rows {
        let mut tags = r.tags.clone();
        if stable == Some(r.version.as_str()) {
            tags.insert(0, "(stable)".into());
        }
        t.row(vec![
            r.version.clone(),
            if r.ready { "yes" } else { "no" }.into(),
            match (r.ready_replicas, r.desired_replicas) {
                (Some(a), Some(d)) => format!("{a}/{d}"),
                (Some(a), None) => format!("{a}/?"),
                _ => "-".into(),
            },
            r.percent.clone(),
            if tags.is_empty() {
                "-".into()
            } else {
                tags.join(",")
            },
            r.image
                .clone()
                .or_else(|| r.endpoint.clone())
                .unwrap_or_default(),
            age(r.created.as_deref().and_then(|c| c.parse().ok()), now),
        ]);
    }
    t
}

/// A function and its versions, read at once; exit 2 when neither exists.
pub(crate) async fn function_and_versions(
    store: &dyn Store,
    name: &str,
) -> anyhow::Result<(Option<FunctionState>, Vec<VersionInfo>)> {
    let (f, versions) = futures::try_join!(store.function(name), store.versions(name))?;
    if f.is_none() && versions.is_empty() {
        return Err(fail(
            Code::Invalid,
            format!("function {name} not found in {}", store.location()),
        ));
    }
    Ok((f, versions))
}

/// `versions FN`.
pub async fn versions(store: &dyn Store, args: args::Read) -> anyhow::Result<()> {
    let name = &args.function;
    let (f, versions) = function_and_versions(store, name).await?;
    let rows = version_rows(f.as_ref(), &versions);
    let stable = f.as_ref().and_then(|f| f.spec.stable.clone());
    output::print(args.output.format, &rows, || {
        version_table(&rows, jiff::Timestamp::now(), stable.as_deref()).render()
    })
}

/// One router replica as `status` shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RouterRow {
    name: String,
    live: bool,
    /// `applied`, `rejected`, `pending` (behind the current generation) or `unknown` (no entry).
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    observed_generation: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    applied_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rejected: Option<String>,
}

/// What `status` shows.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusView {
    name: String,
    generation: i64,
    route: String,
    traffic: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    stable: Option<String>,
    versions: Vec<VersionRow>,
    routers: Vec<RouterRow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_change: Option<HistoryEntry>,
}

fn status_view(f: &FunctionState, versions: &[VersionInfo], routers: &[Router]) -> StatusView {
    let mut rows: Vec<RouterRow> = Vec::new();
    let live: Vec<String> = routers
        .iter()
        .filter(|r| r.live)
        .map(|r| r.name.clone())
        .collect();
    let summary = ack::summarize(&f.routers, f.generation, &live);
    let mut names: Vec<&str> = routers.iter().map(|r| r.name.as_str()).collect();
    for a in &f.routers {
        if !names.contains(&a.name.as_str()) {
            names.push(&a.name);
        }
    }
    for name in names {
        let entry = f.routers.iter().find(|a| a.name == name);
        let is_live = live.iter().any(|l| l == name);
        let state = if summary.applied.iter().any(|a| a == name) {
            "applied"
        } else if summary.rejected.iter().any(|(a, _)| a == name) {
            "rejected"
        } else if !is_live {
            "gone"
        } else if entry.is_some() {
            "pending"
        } else {
            "unknown"
        };
        rows.push(RouterRow {
            name: name.to_string(),
            live: is_live,
            state,
            observed_generation: entry.map(|e| e.observed_generation),
            applied_at: entry.map(|e| e.applied_at.clone()),
            rejected: entry.and_then(|e| e.rejected.clone()),
        });
    }
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
        stable: f.spec.stable.clone(),
        versions: version_rows(Some(f), versions),
        routers: rows,
        last_change: f.spec.history.last().cloned(),
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
    out.push('\n');
    out.push_str(&version_table(&v.versions, now, v.stable.as_deref()).render());
    out.push('\n');
    if v.routers.is_empty() {
        out.push_str("Routers:     none live\n");
    } else {
        let mut t = Table::new(&["ROUTER", "LIVE", "GENERATION", "STATE", "APPLIED", "REASON"]);
        for r in &v.routers {
            t.row(vec![
                r.name.clone(),
                if r.live { "yes" } else { "no" }.into(),
                r.observed_generation.map_or("-".into(), |g| g.to_string()),
                r.state.into(),
                r.applied_at
                    .as_deref()
                    .map_or("-".into(), |a| format!("{} ago", age_of(a, now))),
                r.rejected.clone().unwrap_or_default(),
            ]);
        }
        out.push_str(&t.render());
    }
    out
}

/// `status FN [--watch]`.
pub async fn status(store: &dyn Store, args: args::Status) -> anyhow::Result<()> {
    let name = &args.function;
    let (f, versions, routers) =
        futures::try_join!(function(store, name), store.versions(name), store.routers())?;
    let view = status_view(&f, &versions, &routers);
    output::print(args.output.format, &view, || {
        status_text(&view, jiff::Timestamp::now())
    })?;
    if !args.watch {
        return Ok(());
    }
    let mut last = f;
    let mut events = store.watch_function(&last).await?;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
    tick.tick().await;
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(state)) => last = state,
                Some(Err(e)) => return Err(e),
                None => { events = store.watch_function(&last).await?; continue; }
            },
            // Leases and Deployments change without touching the Function.
            _ = tick.tick() => {}
        }
        let (versions, routers) = futures::try_join!(store.versions(name), store.routers())?;
        let view = status_view(&last, &versions, &routers);
        if args.output.format == args::Format::Table {
            crate::output::line(format_args!("---"));
        }
        output::print(args.output.format, &view, || {
            status_text(&view, jiff::Timestamp::now())
        })?;
    }
}

/// `history FN`.
pub async fn history(store: &dyn Store, args: args::Read) -> anyhow::Result<()> {
    let f = function(store, &args.function).await?;
    let now = jiff::Timestamp::now();
    output::print(args.output.format, &f.spec.history, || {
        let mut t = Table::new(&["#", "TIME", "AGE", "ACTOR", "ACTION", "TRAFFIC", "REASON"]);
        for (i, h) in f.spec.history.iter().enumerate() {
            t.row(vec![
                (i + 1).to_string(),
                h.time.clone(),
                age_of(&h.time, now),
                h.actor.clone(),
                if h.undone {
                    format!("{} (undone)", h.action)
                } else {
                    h.action.to_string()
                },
                plan::describe(&h.traffic),
                h.reason.clone().unwrap_or_default(),
            ]);
        }
        t.render()
    })
}

/// One function as `list` shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ListRow {
    name: String,
    traffic: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    stable: Option<String>,
    route: String,
    generation: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<String>,
}

/// `list`.
pub async fn list(store: &dyn Store, args: args::List) -> anyhow::Result<()> {
    let functions = store.functions().await?;
    let rows: Vec<ListRow> = functions
        .iter()
        .map(|f| ListRow {
            name: f.name.clone(),
            traffic: plan::describe(&f.spec.traffic),
            stable: f.spec.stable.clone(),
            route: f.spec.effective_prefix(&f.name),
            generation: f.generation,
            created: f.created.map(|t| t.to_string()),
        })
        .collect();
    let now = jiff::Timestamp::now();
    output::print(args.output.format, &rows, || {
        if rows.is_empty() {
            return format!("No functions in {}.\n", store.location());
        }
        let mut t = Table::new(&["NAME", "TRAFFIC", "STABLE", "ROUTE", "AGE"]);
        for r in &rows {
            t.row(vec![
                r.name.clone(),
                r.traffic.clone(),
                r.stable.clone().unwrap_or_else(|| "-".into()),
                r.route.clone(),
                age(r.created.as_deref().and_then(|c| c.parse().ok()), now),
            ]);
        }
        t.render()
    })
}
