//! `history FN`: who changed the traffic, when, how and why.

use switchyard_core::plan;

use crate::args;
use crate::output::{self, age_of, Table};
use crate::store::Store;

/// `history FN`.
pub async fn history(store: &dyn Store, args: args::Read) -> anyhow::Result<()> {
    let f = super::function(store, &args.function).await?;
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
