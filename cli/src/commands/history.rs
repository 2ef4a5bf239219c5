//! `history FN`: who changed the traffic, when, how and why.

use serde::Serialize;
use switchyard_core::plan;
use switchyard_core::{Action, HistoryEntry, TrafficTarget};

use crate::args;
use crate::output::{self, age_of, Table};
use crate::store::Store;

/// One history entry as every `-o json|yaml` shows it (`history`, `status`'s `lastChange`,
/// `describe`'s `recentHistory`): a split is `traffic` as the tables print it plus `weights`
/// in ppm, as in `list`, `status` and `describe`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HistoryRow {
    pub(crate) time: String,
    pub(crate) actor: String,
    pub(crate) action: Action,
    pub(crate) undone: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    pub(crate) traffic: String,
    pub(crate) weights: Vec<TrafficTarget>,
}

impl From<&HistoryEntry> for HistoryRow {
    fn from(h: &HistoryEntry) -> HistoryRow {
        HistoryRow {
            time: h.time.clone(),
            actor: h.actor.clone(),
            action: h.action,
            undone: h.undone,
            reason: h.reason.clone(),
            traffic: plan::describe(&h.traffic),
            weights: h.traffic.clone(),
        }
    }
}

/// `history FN`.
pub async fn history(store: &dyn Store, args: args::Read) -> anyhow::Result<()> {
    let f = super::function(store, &args.function).await?;
    let now = jiff::Timestamp::now();
    let rows: Vec<HistoryRow> = f.spec.history.iter().map(HistoryRow::from).collect();
    output::print(args.output.format, &rows, || {
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
