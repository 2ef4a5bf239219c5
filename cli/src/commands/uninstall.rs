//! `uninstall`: the objects of the embedded manifests, deleted in the reverse of the install
//! order (the router first, the CRDs last), but not while Functions or FunctionVersions exist
//! unless forced; forced, every FunctionVersion goes first, with its workload.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use kube::api::{Api, DeleteParams, ListParams, PropagationPolicy};
use kube::core::PartialObjectMeta;
use kube::{Client, ResourceExt as _};
use switchyard_core::{Function, FunctionVersion};

use super::install::api_for;
use crate::args;
use crate::exit::{fail, Code};
use crate::manifests;
use crate::output;
use crate::store::kube::{api, code};
use crate::wait::show;

/// How long `uninstall --force` waits, without a single FunctionVersion it deleted going away
/// (with its Deployment and Service), before it gives up and leaves the CRDs in place: the
/// garbage collector's pace, not the number of versions, sets how long the whole wait takes.
const NO_PROGRESS: Duration = Duration::from_secs(120);

/// Deletes every FunctionVersion in the foreground and waits until none is left; each one goes
/// only after the garbage collector has deleted its Deployment and Service (they name it as
/// owner with blockOwnerDeletion). Returns how many it deleted.
///
/// Why before the CRDs: once FunctionVersion is no longer served, the garbage collector cannot
/// map the owner references of those objects to a resource; it retries them for ever and never
/// deletes them (kube-controller-manager's garbagecollector.go, `restMappingError`: "log the
/// error and retry"). Deleting the CRD alone therefore orphaned the workloads whenever the
/// collector's discovery resync (every 30 s) came between the versions' deletion and its
/// handling of their dependents: a real `uninstall --force` left Deployments running.
async fn delete_versions(client: &Client) -> anyhow::Result<usize> {
    let all: Api<FunctionVersion> = Api::all(client.clone());
    let listed = all
        .list_metadata(&ListParams::default())
        .await
        .map_err(api)
        .context("listing FunctionVersions in all namespaces")?;
    let foreground = DeleteParams::foreground();
    for fv in &listed.items {
        let (ns, name) = (fv.namespace().unwrap_or_default(), fv.name_any());
        match Api::<FunctionVersion>::namespaced(client.clone(), &ns)
            .delete(&name, &foreground)
            .await
        {
            Ok(_) => {}
            Err(e) if code(&e) == Some(404) => {}
            Err(e) => {
                return Err(api(e))
                    .with_context(|| format!("deleting FunctionVersion {ns}/{name}"));
            }
        }
    }
    let (mut progress_at, mut fewest) = (Instant::now(), u64::MAX);
    loop {
        let left = all
            .list_metadata(&ListParams::default().limit(1))
            .await
            .map_err(api)
            .context("listing FunctionVersions in all namespaces")?;
        if left.items.is_empty() {
            return Ok(listed.items.len());
        }
        // One small page: its remainingItemCount says how many are left.
        let count = 1 + left.metadata.remaining_item_count.unwrap_or(0).max(0) as u64;
        if count < fewest {
            (progress_at, fewest) = (Instant::now(), count);
        }
        if progress_at.elapsed() >= NO_PROGRESS {
            let fv = &left.items[0];
            return Err(fail(
                Code::Timeout,
                format!(
                    "no FunctionVersion went away for {} ({count} left, {}/{} among them): \
                     their Deployments and Services are not being deleted (nothing else was \
                     deleted)",
                    show(NO_PROGRESS),
                    fv.namespace().unwrap_or_default(),
                    fv.name_any()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// How many objects of kind `K` exist in the cluster (none when its CRD is absent), and the
/// `namespace/name` of the first few.
async fn everywhere<K>(client: &Client, what: &str) -> anyhow::Result<Option<String>>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    const SHOWN: u32 = 3;
    // One small page: its remainingItemCount says how many more there are, without reading
    // them all (a cluster may hold tens of thousands).
    let list = match Api::<K>::all(client.clone())
        .list_metadata(&ListParams::default().limit(SHOWN))
        .await
    {
        Ok(list) => list,
        Err(e) if code(&e) == Some(404) => return Ok(None),
        Err(e) => return Err(api(e)).with_context(|| format!("listing {what} in all namespaces")),
    };
    if list.items.is_empty() {
        return Ok(None);
    }
    let mut names: Vec<String> = list
        .items
        .iter()
        .map(|o: &PartialObjectMeta<K>| {
            format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any())
        })
        .collect();
    let more = list.metadata.remaining_item_count.unwrap_or(0).max(0);
    let more_pages = list
        .metadata
        .continue_
        .as_ref()
        .is_some_and(|c| !c.is_empty());
    let count = if more > 0 {
        names.push("…".into());
        (names.len() as i64 - 1 + more).to_string()
    } else if more_pages {
        // The server may not count (e.g. with a field selector); say "at least".
        names.push("…".into());
        format!("{}+", names.len() - 1)
    } else {
        names.len().to_string()
    };
    // "1 Function", "2 Functions".
    let what = if count == "1" {
        what.trim_end_matches('s')
    } else {
        what
    };
    Ok(Some(format!("{count} {what} ({})", names.join(", "))))
}

/// `uninstall [--force] [--dry-run]`.
pub async fn run(client: &Client, args: args::Uninstall) -> anyhow::Result<()> {
    let objects = manifests::objects(None)?;
    let (functions, versions) = futures::try_join!(
        everywhere::<Function>(client, "Functions"),
        everywhere::<FunctionVersion>(client, "FunctionVersions"),
    )?;
    let existing: Vec<String> = [functions, versions].into_iter().flatten().collect();
    if !existing.is_empty() {
        let existing = existing.join(" and ");
        if !args.force {
            return Err(fail(
                Code::Refused,
                format!(
                    "refusing to uninstall: {existing} exist, and deleting the CRDs deletes them \
                     all (with the Deployments and Services of managed versions); delete them \
                     first, or pass --force"
                ),
            ));
        }
        let would = if args.dry_run {
            "would delete"
        } else {
            "deletes"
        };
        output::line(format!("--force: deleting the CRDs {would} {existing}"));
        if !args.dry_run {
            let line = match delete_versions(client).await? {
                1 => "1 FunctionVersion deleted with its Deployment and Service".to_string(),
                n => format!("{n} FunctionVersions deleted with their Deployments and Services"),
            };
            output::line(line);
        }
    }
    let dp = DeleteParams {
        dry_run: args.dry_run,
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    let (mut deleted, mut terminating, mut absent) = (0, 0, 0);
    for m in objects.iter().rev() {
        let outcome = match api_for(client, m).delete(m.name(), &dp).await {
            Ok(_) if args.dry_run => {
                deleted += 1;
                "would be deleted"
            }
            // Still there with a deletion timestamp: finalizers (a namespace's, until the
            // cluster has emptied it) hold it.
            Ok(answer)
                if answer
                    .as_ref()
                    .left()
                    .is_some_and(|o| o.metadata.deletion_timestamp.is_some()) =>
            {
                terminating += 1;
                "terminating"
            }
            Ok(_) => {
                deleted += 1;
                "deleted"
            }
            Err(e) if code(&e) == Some(404) => {
                absent += 1;
                "not found"
            }
            Err(e) => return Err(api(e)).with_context(|| format!("deleting {}", m.label())),
        };
        output::line(format!("{} {outcome}", m.label()));
    }
    if args.dry_run {
        output::line(format!(
            "dry run: {deleted} would be deleted, {absent} not found; nothing was deleted"
        ));
    } else {
        output::line(format!(
            "switchyard uninstalled: {deleted} deleted, {terminating} terminating, {absent} not found"
        ));
    }
    Ok(())
}
