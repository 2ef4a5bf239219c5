//! `gc FN --keep N`: remove every version outside the rollback window that nothing protects.

use switchyard_core::plan::{self, Protection};
use switchyard_core::weight::Percent;

use crate::args;
use crate::output::Diff;
use crate::store::Store;

fn why(p: &Protection) -> String {
    match p {
        Protection::Weighted(w) => format!("has {} of the traffic", Percent(*w)),
        Protection::Tagged(t) => format!("named by tag {t}"),
        Protection::Stable => "a rollback target".into(),
        Protection::RecentHistory => "in the rollback window".into(),
        Protection::Unreleased => "not released yet".into(),
    }
}

/// `gc FN --keep N`.
pub async fn gc(store: &dyn Store, args: args::Gc) -> anyhow::Result<()> {
    let name = &args.function;
    let (f, versions) = super::versions::function_and_versions(store, name).await?;
    let all: Vec<String> = versions.iter().map(|v| v.spec.version.clone()).collect();
    let mut gc = plan::gc(f.as_ref().map(|f| &f.spec), &all, args.keep);
    if args.force {
        // A tag still names its version (delete it with `delete --force`); weight is never
        // overridden.
        let (forced, kept): (Vec<_>, Vec<_>) = gc
            .keep
            .into_iter()
            .partition(|(_, p)| p.forceable() && !matches!(p, Protection::Tagged(_)));
        gc.delete.extend(forced.into_iter().map(|(v, _)| v));
        gc.keep = kept;
    }
    for (v, p) in &gc.keep {
        eprintln!("keeping {name}@{v}: {}", why(p));
    }
    if gc.delete.is_empty() {
        crate::output::line(format_args!("{name}: nothing to collect"));
        return Ok(());
    }
    if args.dry_run {
        let mut d = Diff::new(format!("function {name} in {}:", store.location()));
        for v in &gc.delete {
            d.removed(format!(
                "version {v} (FunctionVersion {})",
                switchyard_core::object_name(name, v)
            ));
        }
        if f.is_some() {
            d.added(format!("history: gc {}", gc.delete.join(", ")));
        }
        d.print();
        return Ok(());
    }
    let mut deleted = Vec::new();
    let mut failed = None;
    for v in &gc.delete {
        match store.delete_version(name, v).await {
            Ok(()) => {
                crate::output::line(format_args!("{name}@{v} deleted"));
                deleted.push(v.clone());
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    // What was collected is recorded even when a later deletion failed.
    if !deleted.is_empty() {
        crate::write::record_event(
            store,
            name,
            switchyard_core::Action::Gc,
            &deleted,
            args.reason.clone(),
        )
        .await?;
    }
    failed.map_or(Ok(()), Err)
}
