//! `routers [--prune [--dry-run]]`: the router replicas as their Leases and reports show them
//! (docs/protocol.md), and the removal of those gone for good.

use serde::Serialize;
use switchyard_core::report::RouterReportStatus;

use crate::args;
use crate::output::{self, age_of, Diff, Table};
use crate::store::{Router, Store};

/// One replica as `routers` shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RouterView {
    name: String,
    /// Namespace of its Lease (absent in a local store).
    #[serde(skip_serializing_if = "String::is_empty")]
    namespace: String,
    /// Where it serves traffic, as it reports.
    #[serde(skip_serializing_if = "String::is_empty")]
    address: String,
    /// Whether its Lease is fresh.
    live: bool,
    /// When it last renewed its Lease.
    #[serde(skip_serializing_if = "Option::is_none")]
    renewed_at: Option<String>,
    /// Its whole report, when it has written one.
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<RouterReportStatus>,
}

fn view(r: Router) -> RouterView {
    RouterView {
        address: r
            .report
            .as_ref()
            .map(|rep| rep.address.clone())
            .unwrap_or_default(),
        name: r.name,
        namespace: r.namespace,
        live: r.live,
        renewed_at: r.renewed.map(|t| t.to_string()),
        report: r.report,
    }
}

fn text(rows: &[RouterView], location: &str, now: jiff::Timestamp) -> String {
    if rows.is_empty() {
        return format!("No router replicas in {location}.\n");
    }
    let mut t = Table::new(&[
        "NAME",
        "ADDRESS",
        "LIVE",
        "TABLE",
        "TABLE AGE",
        "REPORTED",
        "EXCEPTIONS",
    ]);
    for r in rows {
        let report = r.report.as_ref();
        let table = report.and_then(|rep| rep.table.as_ref());
        t.row(vec![
            r.name.clone(),
            if r.address.is_empty() {
                "-".into()
            } else {
                r.address.clone()
            },
            if r.live { "yes" } else { "no" }.into(),
            table.map_or("-".into(), |t| t.generation.to_string()),
            table.map_or("-".into(), |t| age_of(&t.read_at, now)),
            report
                .filter(|rep| !rep.reported_at.is_empty())
                .map_or("-".into(), |rep| {
                    format!("{} ago", age_of(&rep.reported_at, now))
                }),
            report.map_or("-".into(), |rep| {
                let n = rep.exceptions.len() + rep.exceptions_omitted as usize;
                n.to_string()
            }),
        ]);
    }
    t.render()
}

/// `routers`.
pub async fn routers(store: &dyn Store, args: args::Routers) -> anyhow::Result<()> {
    if args.prune {
        let doomed = store.prune_routers(args.dry_run).await?;
        if doomed.is_empty() {
            output::line(format_args!(
                "no router replica in {} has been gone for two lease durations",
                store.location()
            ));
        } else if args.dry_run {
            let mut d = Diff::new(format!("router replicas in {}:", store.location()));
            for name in &doomed {
                d.removed(format!("router {name} (Lease and report)"));
            }
            d.print();
        } else {
            for name in &doomed {
                output::line(format_args!("router {name} pruned"));
            }
        }
        return Ok(());
    }
    let rows: Vec<RouterView> = store.reports(None).await?.into_iter().map(view).collect();
    let location = store.location();
    output::print(args.output.format, &rows, || {
        text(&rows, &location, jiff::Timestamp::now())
    })
}
