//! `list`: the functions of the namespace (or store), or of every namespace (`-A`).

use serde::Serialize;
use switchyard_core::plan;

use crate::args;
use crate::output::{age, Listed, Lister};
use crate::store::kube::KubeStore;
use crate::store::{FunctionState, Store};

/// One function as `list` shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ListRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
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

/// Where `list` looks: one store, or every namespace of a cluster.
pub enum Scope<'a> {
    /// The store's one namespace (or directory).
    One(&'a dyn Store),
    /// Every namespace (`-A`).
    Every(&'a KubeStore),
}

async fn read(scope: &Scope<'_>) -> anyhow::Result<Vec<(Option<String>, FunctionState)>> {
    Ok(match scope {
        Scope::One(store) => store
            .functions()
            .await?
            .into_iter()
            .map(|f| (None, f))
            .collect(),
        Scope::Every(kube) => kube
            .functions_everywhere()
            .await?
            .into_iter()
            .map(|(ns, f)| (Some(ns), f))
            .collect(),
    })
}

fn rows(functions: Vec<(Option<String>, FunctionState)>) -> Vec<Listed<ListRow>> {
    let now = jiff::Timestamp::now();
    functions
        .into_iter()
        .map(|(namespace, f)| {
            let row = ListRow {
                namespace: namespace.clone(),
                traffic: plan::describe(&f.spec.traffic),
                weights: f.spec.traffic.clone(),
                stable: f.spec.stable.clone(),
                route: f.spec.effective_prefix(&f.name),
                generation: f.generation,
                created: f.created.map(|t| t.to_string()),
                name: f.name.clone(),
            };
            let mut cells: Vec<String> = namespace.iter().cloned().collect();
            cells.extend([
                row.name.clone(),
                row.traffic.clone(),
                row.stable.clone().unwrap_or_else(|| "-".into()),
                row.route.clone(),
                age(f.created, now),
            ]);
            Listed {
                key: format!("{}/{}", namespace.as_deref().unwrap_or_default(), f.name),
                name: format!("function.switchyard.dev/{}", f.name),
                cells,
                wide: vec![
                    if f.spec.hosts.is_empty() {
                        "*".into()
                    } else {
                        f.spec.hosts.join(",")
                    },
                    f.generation.to_string(),
                ],
                value: row,
            }
        })
        .collect()
}

/// `list`.
pub async fn list(scope: Scope<'_>, args: args::List) -> anyhow::Result<()> {
    let mut headers = Vec::new();
    if matches!(scope, Scope::Every(_)) {
        headers.push("NAMESPACE");
    }
    headers.extend(["NAME", "TRAFFIC", "STABLE", "ROUTE", "AGE"]);
    let mut lister = Lister::new(args.output, &headers, &["HOSTS", "GENERATION"]);
    let empty = match &scope {
        Scope::One(store) => format!("No functions in {}.\n", store.location()),
        Scope::Every(_) => "No functions in any namespace.\n".to_string(),
    };
    lister.all(&rows(read(&scope).await?), &empty)?;
    if !args.output.watch {
        return Ok(());
    }
    loop {
        tokio::time::sleep(crate::output::WATCH_EVERY).await;
        lister.changes(&rows(read(&scope).await?))?;
    }
}
