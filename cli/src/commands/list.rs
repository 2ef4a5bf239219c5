//! `list`: the functions of the namespace (or store).

use serde::Serialize;
use switchyard_core::plan;

use crate::args;
use crate::output::{self, age, Table};
use crate::store::Store;

/// One function as `list` shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ListRow {
    name: String,
    traffic: String,
    /// The split in ppm, as `status` and `history` give it.
    weights: Vec<switchyard_core::TrafficTarget>,
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
            weights: f.spec.traffic.clone(),
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
