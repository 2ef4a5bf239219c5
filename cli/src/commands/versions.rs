//! `versions FN`: every version with readiness, weight, tags and age.

use serde::Serialize;
use switchyard_core::weight::Percent;

use crate::args;
use crate::exit::{fail, Code};
use crate::output::{self, age, Table};
use crate::store::{FunctionState, Store, VersionInfo};

/// One version as `versions` and `status` show it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VersionRow {
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

pub(crate) fn version_rows(f: Option<&FunctionState>, versions: &[VersionInfo]) -> Vec<VersionRow> {
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

pub(crate) fn version_table(
    rows: &[VersionRow],
    now: jiff::Timestamp,
    stable: Option<&str>,
) -> Table {
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
