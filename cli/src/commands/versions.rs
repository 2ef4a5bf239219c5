//! `versions FN`: every version with readiness, weight, tags and age.

use serde::Serialize;
use switchyard_core::weight::Percent;

use crate::args;
use crate::exit::{fail, Code};
use crate::output::{age, Listed, Lister, Table};
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

/// The columns of the versions table.
const HEADERS: [&str; 7] = [
    "VERSION", "READY", "REPLICAS", "WEIGHT", "TAGS", "SOURCE", "AGE",
];

pub(crate) fn version_table(
    rows: &[VersionRow],
    now: jiff::Timestamp,
    stable: Option<&str>,
) -> Table {
    let mut t = Table::new(&HEADERS);
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

fn listed(
    name: &str,
    f: Option<&FunctionState>,
    versions: &[VersionInfo],
) -> Vec<Listed<VersionRow>> {
    let rows = version_rows(f, versions);
    let stable = f.and_then(|f| f.spec.stable.as_deref());
    let table = version_table(&rows, jiff::Timestamp::now(), stable);
    rows.into_iter()
        .zip(table.rows())
        .map(|(r, cells)| Listed {
            key: r.version.clone(),
            name: format!(
                "functionversion.switchyard.dev/{}",
                switchyard_core::object_name(name, &r.version)
            ),
            cells: cells.to_vec(),
            wide: vec![
                r.created.clone().unwrap_or_else(|| "-".into()),
                r.not_ready_because.clone().unwrap_or_else(|| "-".into()),
            ],
            value: r,
        })
        .collect()
}

/// `versions FN [-w]`.
pub async fn versions(store: &dyn Store, args: args::ListRead) -> anyhow::Result<()> {
    let name = &args.function;
    let (f, versions) = function_and_versions(store, name).await?;
    let mut lister = Lister::new(args.output, &HEADERS, &["CREATED", "NOT READY BECAUSE"]);
    lister.all(&listed(name, f.as_ref(), &versions), "")?;
    if !args.output.watch {
        return Ok(());
    }
    loop {
        tokio::time::sleep(crate::output::WATCH_EVERY).await;
        let (f, versions) = futures::try_join!(store.function(name), store.versions(name))?;
        lister.changes(&listed(name, f.as_ref(), &versions))?;
    }
}
