//! `delete FN VERSION`: remove a version that nothing references; `delete FN --all`: remove a
//! whole function.

use switchyard_core::plan;

use crate::args;
use crate::exit::{self, fail, Code};
use crate::output::Diff;
use crate::store::{Store, Written};

/// `delete FN VERSION` or `delete FN --all`.
pub async fn delete(store: &dyn Store, args: args::Delete) -> anyhow::Result<()> {
    let Some(version) = &args.version else {
        return delete_all(store, &args).await;
    };
    let name = &args.function;
    for _ in 0..crate::write::ATTEMPTS {
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
            if f.is_some() {
                d.added(format!("history: delete {version}"));
            }
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
        crate::write::record_event(
            store,
            name,
            switchyard_core::Action::Delete,
            std::slice::from_ref(version),
            args.reason.clone(),
        )
        .await?;
        crate::output::line(format_args!("{name}@{version} deleted"));
        return Ok(());
    }
    Err(fail(
        Code::Conflict,
        format!("function {name} kept changing concurrently; nothing was deleted, re-run"),
    ))
}

/// `delete FN --all`: the Function and every version, refused while a live router serves the
/// function (it would start answering 404) unless `--force`.
async fn delete_all(store: &dyn Store, args: &args::Delete) -> anyhow::Result<()> {
    let name = &args.function;
    for _ in 0..crate::write::ATTEMPTS {
        let (f, versions) = futures::try_join!(super::function(store, name), store.versions(name))?;
        let serving = crate::wait::serving(store, &f).await?;
        if !serving.is_empty() && !args.force {
            return Err(fail(
                Code::Refused,
                format!(
                    "function {name} is served by {} live router{} ({}); deleting it makes them answer 404 (use --force)",
                    serving.len(),
                    if serving.len() == 1 { "" } else { "s" },
                    serving.join(", ")
                ),
            ));
        }
        if args.dry_run {
            let mut d = Diff::new(format!("function {name} in {}:", store.location()));
            d.removed(format!(
                "Function {name} (traffic {})",
                plan::describe(&f.spec.traffic)
            ));
            for v in &versions {
                let object = switchyard_core::object_name(name, &v.spec.version);
                d.removed(format!(
                    "version {} (FunctionVersion {object})",
                    v.spec.version
                ));
                if v.spec.image.is_some() {
                    d.removed(format!("Deployment {object}"));
                    d.removed(format!("Service {object}"));
                }
            }
            d.print();
            return Ok(());
        }
        match store.delete_function(&f).await? {
            Written::Done(_) => {
                crate::output::line(format_args!(
                    "function {name} deleted with its {} version{}",
                    versions.len(),
                    if versions.len() == 1 { "" } else { "s" }
                ));
                return Ok(());
            }
            Written::Conflict => continue,
        }
    }
    Err(fail(
        Code::Conflict,
        format!("function {name} kept changing concurrently; nothing was deleted, re-run"),
    ))
}
