//! `list`: the functions of the namespace (or store), or of every namespace (`-A`).

use serde::Serialize;
use switchyard_core::numbers::{live_view, HealthRule, Numbers};
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
    /// The versions failing in the last minute's live traffic (`1.3.0 12.4% errors`), `ok`
    /// when some version had enough traffic to judge, `-` otherwise.
    health: String,
}

/// Where `list` looks: one store, or every namespace of a cluster.
pub enum Scope<'a> {
    /// The store's one namespace (or directory).
    One(&'a dyn Store),
    /// Every namespace (`-A`).
    Every(&'a KubeStore),
}

/// The functions, and the live routers' numbers (one namespace or store only: `-A` does not
/// read every namespace's reports).
async fn read(scope: &Scope<'_>) -> anyhow::Result<Read> {
    Ok(match scope {
        Scope::One(store) => {
            let (functions, routers) = futures::try_join!(store.functions(), store.reports(None))?;
            let numbers = routers
                .into_iter()
                .filter(|r| r.live)
                .filter_map(|r| r.report?.numbers)
                .collect();
            (functions.into_iter().map(|f| (None, f)).collect(), numbers)
        }
        Scope::Every(kube) => (
            kube.functions_everywhere()
                .await?
                .into_iter()
                .map(|(ns, f)| (Some(ns), f))
                .collect(),
            Vec::new(),
        ),
    })
}

type Read = (Vec<(Option<String>, FunctionState)>, Vec<Numbers>);

fn rows((functions, numbers): Read) -> Vec<Listed<ListRow>> {
    let now = jiff::Timestamp::now();
    let replicas: Vec<&Numbers> = numbers.iter().collect();
    let rule = HealthRule::default();
    functions
        .into_iter()
        .map(|(namespace, f)| {
            let key = format!("{}/{}", f.namespace, f.name);
            let health = if replicas.is_empty() {
                "-".to_string()
            } else {
                crate::live::health_cell(&live_view(&key, &f.spec.traffic, &replicas), &rule)
            };
            let row = ListRow {
                namespace: namespace.clone(),
                traffic: plan::describe(&f.spec.traffic),
                weights: f.spec.traffic.clone(),
                stable: f.spec.stable.clone(),
                route: f.spec.effective_prefix(&f.name),
                generation: f.generation,
                created: f.created.map(|t| t.to_string()),
                name: f.name.clone(),
                health,
            };
            let mut cells: Vec<String> = namespace.iter().cloned().collect();
            cells.extend([
                row.name.clone(),
                row.traffic.clone(),
                row.stable.clone().unwrap_or_else(|| "-".into()),
                row.route.clone(),
                row.health.clone(),
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
    headers.extend(["NAME", "TRAFFIC", "STABLE", "ROUTE", "HEALTH", "AGE"]);
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
