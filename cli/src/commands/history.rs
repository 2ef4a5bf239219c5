//! `history FN`: who changed the traffic, when, how and why.

use serde::Serialize;
use switchyard_core::plan;
use switchyard_core::{Action, HistoryEntry, TrafficTarget};

use crate::args;
use crate::output::{age_of, Listed, Lister};
use crate::store::{FunctionState, Store};

/// One history entry as every `-o json|yaml` shows it (`history`, `status`'s `lastChange`,
/// `describe`'s `recentHistory`): a split is `traffic` as the tables print it plus `weights`
/// in ppm, as in `list`, `status` and `describe`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HistoryRow {
    /// The stable revision number (`undo --to N`); 0 where the caller does not know it.
    pub(crate) revision: u64,
    pub(crate) time: String,
    pub(crate) actor: String,
    pub(crate) action: Action,
    pub(crate) undone: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    pub(crate) traffic: String,
    pub(crate) weights: Vec<TrafficTarget>,
    /// The versions an entry that moves no traffic concerns (added, deleted, collected).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) versions: Vec<String>,
}

impl From<&HistoryEntry> for HistoryRow {
    fn from(h: &HistoryEntry) -> HistoryRow {
        HistoryRow {
            revision: h.revision,
            time: h.time.clone(),
            actor: h.actor.clone(),
            action: h.action,
            undone: h.undone,
            reason: h.reason.clone(),
            traffic: plan::describe(&h.traffic),
            weights: h.traffic.clone(),
            versions: h.versions.clone(),
        }
    }
}

/// `history FN` as a table, for the quickstart's tour.
pub async fn history(store: &dyn Store, args: args::Read) -> anyhow::Result<()> {
    let format = match args.output.format {
        args::Format::Table => args::ListFormat::Table,
        args::Format::Json => args::ListFormat::Json,
        args::Format::Yaml => args::ListFormat::Yaml,
    };
    run(
        store,
        args::ListRead {
            function: args.function,
            output: args::ListOutput {
                format,
                no_headers: false,
                watch: false,
            },
        },
    )
    .await
}

fn rows(f: &FunctionState) -> Vec<Listed<HistoryRow>> {
    let now = jiff::Timestamp::now();
    f.spec
        .history
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let traffic = plan::describe(&h.traffic);
            Listed {
                // An entry is the same one across re-reads (and trims) by what it says; only
                // `undone` changes in place.
                key: format!("{} {} {} {traffic}", h.time, h.actor, h.action),
                name: format!("{}@{}", f.name, h.time),
                cells: vec![
                    plan::revision_at(&f.spec, i).to_string(),
                    h.time.clone(),
                    age_of(&h.time, now),
                    h.actor.clone(),
                    match (h.undone, h.versions.is_empty()) {
                        (true, _) => format!("{} (undone)", h.action),
                        (false, true) => h.action.to_string(),
                        (false, false) => format!("{} {}", h.action, h.versions.join(",")),
                    },
                    traffic,
                    h.reason.clone().unwrap_or_default(),
                ],
                wide: vec![h
                    .traffic
                    .iter()
                    .map(|t| format!("{}={}", t.version, t.weight))
                    .collect::<Vec<_>>()
                    .join(",")],
                value: HistoryRow {
                    revision: plan::revision_at(&f.spec, i),
                    ..HistoryRow::from(h)
                },
            }
        })
        .collect()
}

/// `history FN [-w]`.
pub async fn run(store: &dyn Store, args: args::ListRead) -> anyhow::Result<()> {
    let f = super::function(store, &args.function).await?;
    let mut lister = Lister::new(
        args.output,
        &["#", "TIME", "AGE", "ACTOR", "ACTION", "TRAFFIC", "REASON"],
        &["WEIGHTS (PPM)"],
    );
    lister.all(&rows(&f), "")?;
    if !args.output.watch {
        return Ok(());
    }
    loop {
        tokio::time::sleep(crate::output::WATCH_EVERY).await;
        lister.changes(&rows(&super::function(store, &args.function).await?))?;
    }
}
