//! `delete` and `gc`: removing versions that nothing references any more.

use switchyard_core::plan::{self, Protection};
use switchyard_core::weight::Percent;

use crate::args;
use crate::exit::{self, fail, Code};
use crate::output::Diff;
use crate::store::{Store, Written};

fn why(p: &Protection) -> String {
    match p {
        Protection::Weighted(w) => format!("has {} of the traffic", Percent(*w)),
        Protection::Tagged(t) => format!("named by tag {t}"),
        Protection::Stable => "a rollback target".into(),
        Protection::RecentHistory => "in the rollback window".into(),
        Protection::Unreleased => "not released yet".into(),
    }
}

/// `delete FN VERSION`.
pub async fn delete(store: &dyn Store, args: args::Delete) -> anyhow::Result<()> {
    let (name, version) = (&args.function, &args.version);
    for _ in 0..super::shift::ATTEMPTS {
        let (f, versions) = futures::try_join!(store.function(name), store.versions(name))?;
        let all: Vec<String> = versions.iter().map(|v| v.spec.version.clone()).collect();
        let tags = plan::delete(
            name,
            f.as_ref().map(|f| &f.spec),
            &all,
            version,
            args.keep,
            args.force,
        )
        .map_err(exit::plan)?;
        let object = switchyard_core::object_name(name, version);
        if args.dry_run {
            let mut d = Diff::new(format!("{name}@{version} in {}:", store.location()));
            for t in &tags {
                d.removed(format!("tag {t}={version}"));
            }
            d.removed(format!("FunctionVersion {object}"));
            if versions
                .iter()
                .any(|v| v.spec.version == *version && v.spec.image.is_some())
            {
                d.removed(format!("Deployment {object}"));
                d.removed(format!("Service {object}"));
            }
            d.print();
            return Ok(());
        }
        // Tags go first, so the Function never names a version that is gone.
        if let (Some(f), false) = (&f, tags.is_empty()) {
            let mut spec = f.spec.clone();
            spec.tags.retain(|t| !tags.contains(&t.tag));
            if store.write_function(f, &spec).await? == Written::Conflict {
                continue;
            }
        }
        store.delete_version(name, version).await?;
        crate::output::line(format_args!("{name}@{version} deleted"));
        return Ok(());
    }
    Err(fail(
        Code::Conflict,
        format!("function {name} kept changing concurrently; nothing was deleted, re-run"),
    ))
}

/// `gc FN --keep N`.
pub async fn gc(store: &dyn Store, args: args::Gc) -> anyhow::Result<()> {
    let name = &args.function;
    let (f, versions) = super::read::function_and_versions(store, name).await?;
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
        d.print();
        return Ok(());
    }
    for v in &gc.delete {
        store.delete_version(name, v).await?;
        crate::output::line(format_args!("{name}@{v} deleted"));
    }
    Ok(())
}
