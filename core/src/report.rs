//! The `RouterReport` resource (docs/protocol.md, "The report"): one object per router replica,
//! named after it and owned by its Lease, saying how far the replica has read its sources and
//! swapped in a table built from them, which Functions it does not serve as written, and what
//! it sees of live traffic.
//!
//! This module holds the type, the bodies a replica sends (the whole object once, then merge
//! patches of what changed) and the cap on exceptions. Reading reports for a wait is
//! [`crate::protocol::summarize`]. Nothing here talks to the API server or reads the clock.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::numbers::Numbers;
use crate::protocol::{ROUTER_APP_NAME, ROUTER_LABEL, ROUTER_LABEL_VALUE};
use crate::shadow::ShadowNumbers;

/// The most exceptions one report lists; the rest are counted in `exceptionsOmitted`.
pub const MAX_EXCEPTIONS: usize = 1000;

/// Nothing: a report carries everything under `status`, written by its replica through the main
/// endpoint (the CRD has no status subresource). Present only because every custom resource
/// has a spec; a replica sends it empty.
#[derive(
    CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema,
)]
#[kube(
    group = "switchyard.dev",
    version = "v1alpha1",
    kind = "RouterReport",
    derive = "PartialEq",
    derive = "Default",
    plural = "routerreports",
    namespaced,
    status = "RouterReportStatus",
    printcolumn = r#"{"name":"Replica","type":"string","jsonPath":".status.replica"}"#,
    printcolumn = r#"{"name":"Address","type":"string","jsonPath":".status.address"}"#,
    printcolumn = r#"{"name":"Table","type":"integer","jsonPath":".status.table.generation","description":"generation of the replica's routing table"}"#,
    printcolumn = r#"{"name":"Applied","type":"string","jsonPath":".status.applied.functions","description":"resourceVersion of Functions read and served"}"#,
    printcolumn = r#"{"name":"Reported","type":"date","jsonPath":".status.reportedAt"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct RouterReportSpec {}

/// What one replica reports.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouterReportStatus {
    /// The replica (also the name of its Lease and of this report).
    pub replica: String,
    /// Where it serves traffic (`--advertise-address`, else its listen address).
    #[serde(default)]
    pub address: String,
    /// The namespace it watches, `""` for all (as on its Lease).
    #[serde(default)]
    pub watch_namespace: String,
    /// When it started, RFC 3339: the epoch of the counters in `numbers`.
    #[serde(default)]
    pub started_at: String,
    /// When this report was last written, RFC 3339.
    #[serde(default)]
    pub reported_at: String,
    /// The routing table it serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<TableReport>,
    /// The resourceVersions it has read and swapped in a table built from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<AppliedVersions>,
    /// Functions it does not serve as written, at most [`MAX_EXCEPTIONS`].
    #[serde(default)]
    pub exceptions: Vec<Exception>,
    /// Exceptions left out past the cap.
    #[serde(default)]
    pub exceptions_omitted: u32,
    /// Live traffic per version (docs/protocol.md, "Numbers").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form")]
    pub numbers: Option<Numbers>,
    /// What its shadow copies found (docs/protocol.md, "Shadow"); absent when it never
    /// copied anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form")]
    pub shadow: Option<ShadowNumbers>,
}

/// The numbers' schema: an object the API server keeps as sent (its histogram keys are bucket
/// indexes, which a structural schema cannot name).
fn free_form(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// The routing table a replica serves.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TableReport {
    /// Its generation, counting swaps since the replica started.
    pub generation: u64,
    /// When it was last known to match its source, RFC 3339.
    pub read_at: String,
    /// How many routes it holds.
    pub routes: u64,
}

/// How far a replica has read each watch and served what it read.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppliedVersions {
    /// resourceVersion of the Function watch.
    pub functions: String,
    /// resourceVersion of the FunctionVersion watch.
    pub function_versions: String,
}

/// Whether a Function not served as written may still be (its version has not arrived) or is
/// refused.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum ExceptionState {
    /// It names a FunctionVersion the replica has not seen yet: keep waiting.
    Pending,
    /// The generation is invalid or conflicts: the replica keeps the last good route.
    Rejected,
}

/// One Function a replica does not serve as written.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Exception {
    /// The Function's namespace.
    pub namespace: String,
    /// The Function's name.
    pub name: String,
    /// Its `metadata.generation` the replica does not serve.
    pub generation: i64,
    /// Pending or rejected.
    pub state: ExceptionState,
    /// Why, in one line.
    pub reason: String,
}

/// The exceptions a report lists: pending first, oldest generation first, then by namespace
/// and name (so that two writes of the same set are equal), at most [`MAX_EXCEPTIONS`]; and
/// how many were left out.
pub fn cap_exceptions(mut all: Vec<Exception>) -> (Vec<Exception>, u32) {
    all.sort_by(|a, b| {
        (a.state, a.generation, &a.namespace, &a.name).cmp(&(
            b.state,
            b.generation,
            &b.namespace,
            &b.name,
        ))
    });
    let omitted = all.len().saturating_sub(MAX_EXCEPTIONS);
    all.truncate(MAX_EXCEPTIONS);
    (all, u32::try_from(omitted).unwrap_or(u32::MAX))
}

/// The whole report of a replica as it creates (or replaces) it: named and labelled like its
/// Lease, owned by it (`lease_uid`), so the garbage collector removes it with the Lease.
pub fn report(namespace: &str, lease_uid: &str, status: RouterReportStatus) -> RouterReport {
    let replica = status.replica.clone();
    RouterReport {
        metadata: ObjectMeta {
            name: Some(replica.clone()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/name".to_string(),
                    ROUTER_APP_NAME.to_string(),
                ),
                (ROUTER_LABEL.to_string(), ROUTER_LABEL_VALUE.to_string()),
            ])),
            owner_references: Some(vec![OwnerReference {
                api_version: "coordination.k8s.io/v1".to_string(),
                kind: "Lease".to_string(),
                name: replica,
                uid: lease_uid.to_string(),
                ..Default::default()
            }]),
            ..Default::default()
        },
        spec: RouterReportSpec {},
        status: Some(status),
    }
}

/// The JSON merge patch (RFC 7386) of a report after a table swap: `applied`, `exceptions`
/// (replaced whole; `[]` clears them), `exceptionsOmitted`, `table` and `reportedAt`.
pub fn swap_patch(status: &RouterReportStatus) -> serde_json::Value {
    serde_json::json!({
        "status": {
            "reportedAt": status.reported_at,
            "table": status.table,
            "applied": status.applied,
            "exceptions": status.exceptions,
            "exceptionsOmitted": status.exceptions_omitted,
        }
    })
}

/// The JSON merge patch of a report's numbers.
pub fn numbers_patch(numbers: &Numbers, reported_at: &str) -> serde_json::Value {
    serde_json::json!({"status": {"reportedAt": reported_at, "numbers": numbers}})
}

/// The JSON merge patch of a report's live counts: the numbers, the shadow counts, or both
/// (one write when both changed); a part that is `None` is left as it is.
pub fn live_patch(
    numbers: Option<&Numbers>,
    shadow: Option<&ShadowNumbers>,
    reported_at: &str,
) -> serde_json::Value {
    let mut status = serde_json::json!({ "reportedAt": reported_at });
    if let Some(n) = numbers {
        status["numbers"] = serde_json::json!(n);
    }
    if let Some(s) = shadow {
        status["shadow"] = serde_json::json!(s);
    }
    serde_json::json!({ "status": status })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exception(name: &str, generation: i64, state: ExceptionState) -> Exception {
        Exception {
            namespace: "prod".into(),
            name: name.into(),
            generation,
            state,
            reason: "why".into(),
        }
    }

    #[test]
    fn exceptions_list_pending_first_then_oldest_and_count_the_rest() {
        use ExceptionState::*;
        let (kept, omitted) = cap_exceptions(vec![
            exception("c", 3, Rejected),
            exception("b", 9, Pending),
            exception("a", 1, Rejected),
            exception("d", 2, Pending),
        ]);
        let names: Vec<&str> = kept.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["d", "b", "a", "c"]);
        assert_eq!(omitted, 0);
        let many: Vec<Exception> = (0..MAX_EXCEPTIONS as i64 + 5)
            .map(|g| exception(&format!("f{g}"), g, Rejected))
            .chain([exception("late", 10_000, Pending)])
            .collect();
        let (kept, omitted) = cap_exceptions(many);
        assert_eq!(kept.len(), MAX_EXCEPTIONS);
        assert_eq!(omitted, 6);
        assert_eq!(kept[0].name, "late", "pending comes first whatever its age");
        assert_eq!(kept[1].generation, 0);
    }

    #[test]
    fn the_report_body_is_owned_by_its_lease_and_labelled_as_a_router() {
        let status = RouterReportStatus {
            replica: "r1".into(),
            address: "10.0.0.7:8080".into(),
            ..Default::default()
        };
        let body = serde_json::to_value(report("switchyard-system", "uid-1", status)).unwrap();
        assert_eq!(body["apiVersion"], "switchyard.dev/v1alpha1");
        assert_eq!(body["kind"], "RouterReport");
        assert_eq!(body["metadata"]["name"], "r1");
        assert_eq!(body["metadata"]["labels"]["switchyard.dev/router"], "true");
        assert_eq!(
            body["metadata"]["ownerReferences"],
            serde_json::json!([{"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "name": "r1", "uid": "uid-1"}])
        );
        assert_eq!(body["spec"], serde_json::json!({}));
        assert_eq!(body["status"]["address"], "10.0.0.7:8080");
        let back: RouterReport = serde_json::from_value(body).unwrap();
        assert_eq!(back.status.unwrap().replica, "r1");
    }

    #[test]
    fn a_swap_patch_replaces_the_exceptions_whole_and_clears_them_with_an_empty_list() {
        let mut status = RouterReportStatus {
            replica: "r1".into(),
            reported_at: "2026-12-02T10:00:00.000Z".into(),
            table: Some(TableReport {
                generation: 4,
                read_at: "2026-12-02T10:00:00.000Z".into(),
                routes: 2,
            }),
            applied: Some(AppliedVersions {
                functions: "81234".into(),
                function_versions: "81230".into(),
            }),
            ..Default::default()
        };
        let patch = swap_patch(&status);
        assert_eq!(patch["status"]["exceptions"], serde_json::json!([]));
        assert_eq!(patch["status"]["applied"]["functions"], "81234");
        assert_eq!(patch["status"]["applied"]["functionVersions"], "81230");
        assert_eq!(patch["status"]["table"]["generation"], 4);
        assert!(patch["status"].get("numbers").is_none(), "numbers go apart");
        status.exceptions = vec![exception("a", 1, ExceptionState::Pending)];
        assert_eq!(
            swap_patch(&status)["status"]["exceptions"][0]["state"],
            "pending"
        );
    }

    #[test]
    fn a_live_patch_carries_only_the_parts_that_changed() {
        let shadow = ShadowNumbers {
            at: "t".into(),
            ..Default::default()
        };
        let only_shadow = live_patch(None, Some(&shadow), "now");
        assert_eq!(only_shadow["status"]["shadow"]["at"], "t");
        assert!(only_shadow["status"].get("numbers").is_none());
        let both = live_patch(Some(&Numbers::default()), Some(&shadow), "now");
        assert!(both["status"].get("numbers").is_some());
        assert_eq!(both["status"]["reportedAt"], "now");
        // A report without shadow counts reads back as it did before the field existed.
        let old: RouterReportStatus =
            serde_json::from_value(serde_json::json!({"replica": "r1"})).unwrap();
        assert_eq!(old.shadow, None);
    }
}
