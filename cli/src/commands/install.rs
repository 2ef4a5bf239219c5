//! `install`: the embedded manifests, applied by server-side apply in the kustomization's
//! order, with the CRDs Established before anything else is applied, then a wait until the
//! router's Deployment has rolled out.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::Client;
use serde_json::Value;
use switchyard_core::workload;

use crate::args;
use crate::exit::{fail, Code};
use crate::manifests::{self, Manifest};
use crate::output;
use crate::store::kube::{api, code, MANAGER};
use crate::wait::show;

/// Checks the flags before anything is read from the cluster.
pub fn check(args: &args::Install) -> anyhow::Result<()> {
    if let Some(image) = &args.image {
        if image.is_empty() || image.contains(char::is_whitespace) {
            return Err(fail(
                Code::Invalid,
                format!("--image {image:?} is not an image reference"),
            ));
        }
    }
    Ok(())
}

/// The API of a manifest's kind, in its namespace when it has one.
pub fn api_for(client: &Client, m: &Manifest) -> Api<DynamicObject> {
    match &m.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &m.resource),
        None => Api::all_with(client.clone(), &m.resource),
    }
}

/// What applying one object did (or would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It did not exist.
    Created,
    /// It existed and changed; the paths that changed (`spec.template.spec.containers`).
    Configured(Vec<String>),
    /// It existed as the manifest says.
    Unchanged,
}

/// The object as compared before and after an apply: without what every write changes
/// (`resourceVersion`, `generation`, `managedFields`) and without `status`, which the cluster
/// writes, not install.
fn comparable(object: &DynamicObject) -> Value {
    let mut v = serde_json::to_value(object).unwrap_or_default();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in ["managedFields", "resourceVersion", "generation"] {
            meta.remove(k);
        }
    }
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    v
}

/// The paths where `a` and `b` differ, down to `depth` levels (`spec.template.spec.containers`).
fn changed_paths(a: &Value, b: &Value, prefix: &str, depth: usize, out: &mut BTreeSet<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) if depth > 0 => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => changed_paths(p, q, &path, depth - 1, out),
                    _ => {
                        out.insert(path);
                    }
                }
            }
        }
        _ if a != b => {
            out.insert(prefix.to_string());
        }
        _ => {}
    }
}

/// Created, configured or unchanged, from the object before (absent: created) and after.
pub fn outcome(before: Option<&DynamicObject>, after: &DynamicObject) -> Outcome {
    let Some(before) = before else {
        return Outcome::Created;
    };
    let mut paths = BTreeSet::new();
    changed_paths(&comparable(before), &comparable(after), "", 4, &mut paths);
    if paths.is_empty() {
        Outcome::Unchanged
    } else {
        Outcome::Configured(paths.into_iter().collect())
    }
}

/// The line of one object:
/// `Deployment switchyard-system/switchyard-router configured (spec.template.spec.containers)`.
fn line(m: &Manifest, outcome: &Outcome, dry_run: bool) -> String {
    let would = if dry_run { "would be " } else { "" };
    match outcome {
        Outcome::Created => format!("{} {would}created", m.label()),
        Outcome::Unchanged => format!("{} unchanged", m.label()),
        Outcome::Configured(paths) => {
            const SHOWN: usize = 4;
            let mut shown = paths
                .iter()
                .take(SHOWN)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            if paths.len() > SHOWN {
                shown.push_str(&format!(", … {} more", paths.len() - SHOWN));
            }
            format!("{} {would}configured ({shown})", m.label())
        }
    }
}

/// `install [--dry-run] [--image IMG]`.
pub async fn run(client: &Client, args: args::Install) -> anyhow::Result<()> {
    let objects = manifests::objects(args.image.as_deref())?;
    let crds = manifests::crd_names(&objects);
    let (mut created, mut configured, mut unchanged) = (0, 0, 0);
    // Namespaces this run creates: the server cannot dry-run an object into a namespace that
    // does not exist yet.
    let mut new_namespaces = BTreeSet::new();
    for (i, m) in objects.iter().enumerate() {
        let api_ = api_for(client, m);
        let before = api_
            .get_opt(m.name())
            .await
            .map_err(api)
            .with_context(|| format!("reading {}", m.label()))?;
        let (outcome, unvalidated) = match &m.namespace {
            Some(ns) if args.dry_run && new_namespaces.contains(ns) => (Outcome::Created, Some(ns)),
            _ => {
                let mut pp = PatchParams::apply(MANAGER).force();
                if args.dry_run {
                    pp = pp.dry_run();
                }
                let after = api_
                    .patch(m.name(), &pp, &Patch::Apply(&m.object))
                    .await
                    .map_err(api)
                    .with_context(|| format!("applying {}", m.label()))?;
                (outcome(before.as_ref(), &after), None)
            }
        };
        if m.kind() == "Namespace" && outcome == Outcome::Created {
            new_namespaces.insert(m.name().to_string());
        }
        match outcome {
            Outcome::Created => created += 1,
            Outcome::Configured(_) => configured += 1,
            Outcome::Unchanged => unchanged += 1,
        }
        let mut text = line(m, &outcome, args.dry_run);
        if let Some(ns) = unvalidated {
            text.push_str(&format!(
                " (not validated: namespace {ns} does not exist yet)"
            ));
        }
        output::line(&text);
        // Everything after the CRDs may rely on them: wait for them to be served first.
        let last_crd = m.kind() == "CustomResourceDefinition"
            && objects
                .get(i + 1)
                .is_none_or(|next| next.kind() != "CustomResourceDefinition");
        if last_crd && !args.dry_run {
            let took = established(client, &crds, args.timeout).await?;
            output::line(format!(
                "CustomResourceDefinitions established and served in {}",
                show(took)
            ));
        }
    }
    let total = objects.len();
    if args.dry_run {
        output::line(format!(
            "dry run: {created} would be created, {configured} would be configured, \
             {unchanged} unchanged of {total} objects; nothing was written"
        ));
    } else {
        output::line(format!(
            "switchyard installed: {created} created, {configured} configured, \
             {unchanged} unchanged of {total} objects"
        ));
        for m in objects.iter().filter(|m| m.kind() == "Deployment") {
            let (took, replicas) = rolled_out(client, m, args.timeout).await?;
            output::line(format!(
                "rolled out in {}: {} ({replicas} replicas ready)",
                show(took),
                m.label()
            ));
        }
    }
    Ok(())
}

/// Waits until the Deployment of manifest `m` has rolled out (core's readiness rule: its
/// controller observed the applied spec, every desired replica runs it and is available);
/// exit 4 after `timeout`, naming what it waited for (everything is applied by then).
/// Returns how long it took and the replicas available.
async fn rolled_out(
    client: &Client,
    m: &Manifest,
    timeout: Duration,
) -> anyhow::Result<(Duration, i32)> {
    let deployments: Api<Deployment> = match &m.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::default_namespaced(client.clone()),
    };
    let started = Instant::now();
    loop {
        let d = deployments
            .get_opt(m.name())
            .await
            .map_err(api)
            .with_context(|| format!("reading {}", m.label()))?;
        let r = workload::readiness(m.name(), d.as_ref());
        if r.ready {
            return Ok((started.elapsed(), r.available));
        }
        if started.elapsed() >= timeout {
            return Err(fail(
                Code::Timeout,
                format!(
                    "timed out after {} waiting for {} to roll out: {} (everything is applied)",
                    show(timeout),
                    m.label(),
                    r.detail.unwrap_or_default()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The API of a CRD's custom resources, in the first version it serves.
fn served(crd: &CustomResourceDefinition, client: &Client) -> Option<Api<DynamicObject>> {
    let spec = &crd.spec;
    let version = spec.versions.iter().find(|v| v.served)?;
    let resource = ApiResource {
        group: spec.group.clone(),
        version: version.name.clone(),
        api_version: format!("{}/{}", spec.group, version.name),
        kind: spec.names.kind.clone(),
        plural: spec.names.plural.clone(),
    };
    Some(Api::all_with(client.clone(), &resource))
}

/// Waits until every CRD named is Established and its resources can be listed (for a moment
/// after Established the API server still answers "storage is (re)initializing", and a
/// `deploy` right after `install` would fail); exit 4 after `timeout`; an error at once when
/// the API server refuses a CRD's names.
async fn established(
    client: &Client,
    names: &[String],
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let started = Instant::now();
    let mut pending: Vec<&String> = names.iter().collect();
    let mut last = String::new();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for name in pending {
            let crd = crds
                .get(name)
                .await
                .map_err(api)
                .with_context(|| format!("reading CustomResourceDefinition {name}"))?;
            let conditions = crd
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            let is = |type_: &str, status: &str| {
                conditions
                    .iter()
                    .find(|c| c.type_ == type_ && c.status == status)
            };
            if let Some(c) = is("NamesAccepted", "False") {
                return Err(anyhow::anyhow!(
                    "CustomResourceDefinition {name}: names not accepted: {}",
                    c.message.clone().unwrap_or_default()
                ));
            }
            if is("Established", "True").is_none() {
                last = format!("{name} is not Established yet");
                still.push(name);
                continue;
            }
            let Some(resources) = served(&crd, client) else {
                return Err(anyhow::anyhow!(
                    "CustomResourceDefinition {name} serves no version"
                ));
            };
            match resources
                .list_metadata(&ListParams::default().limit(1))
                .await
            {
                Ok(_) => {}
                Err(e) if matches!(code(&e), Some(404 | 429 | 503)) => {
                    last = format!("listing {}: {}", crd.spec.names.plural, api(e));
                    still.push(name);
                }
                Err(e) => {
                    return Err(api(e))
                        .with_context(|| format!("listing {}", crd.spec.names.plural))
                }
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if started.elapsed() >= timeout {
            return Err(fail(
                Code::Timeout,
                format!(
                    "timed out after {} waiting for the CRDs to be Established and served: {last} \
                     (they are applied)",
                    show(timeout),
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(v: Value) -> DynamicObject {
        serde_json::from_value(v).expect("an object")
    }

    #[test]
    fn an_apply_that_only_moves_ownership_or_bumps_the_revision_is_unchanged() {
        let before = object(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "s", "resourceVersion": "1", "managedFields": [{"manager": "a"}]},
            "spec": {"ports": [{"port": 80}]}, "status": {}
        }));
        let after = object(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "s", "resourceVersion": "2", "managedFields": [{"manager": "switchyard"}]},
            "spec": {"ports": [{"port": 80}]}, "status": {"loadBalancer": {}}
        }));
        assert_eq!(outcome(Some(&before), &after), Outcome::Unchanged);
        assert_eq!(outcome(None, &after), Outcome::Created);
    }

    #[test]
    fn a_change_names_the_paths_that_changed_four_levels_deep() {
        let before = object(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "labels": {"a": "1"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"image": "x"}]}}}
        }));
        let after = object(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "labels": {"a": "1", "b": "2"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"image": "y"}]}}}
        }));
        assert_eq!(
            outcome(Some(&before), &after),
            Outcome::Configured(vec![
                "metadata.labels.b".into(),
                "spec.template.spec.containers".into()
            ])
        );
    }
}
