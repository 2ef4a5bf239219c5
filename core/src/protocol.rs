//! The router ↔ CLI protocol (docs/protocol.md) as names, one liveness rule and plain values.
//!
//! Each router replica renews a Lease named after itself and writes its own entry in each
//! Function's `status.routers`; the CLI waits until every *live* replica reports the generation
//! it wrote. Everything both sides must agree on lives here: the label and annotation names, the
//! rule "is this replica live?", the bodies the router sends (its Lease, an acknowledgement, the
//! removal of dead replicas' entries) and the CLI's reading of them. The router and the CLI only
//! send and receive these values; nothing here talks to the API server or reads the clock.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use std::collections::BTreeMap;

use crate::resources::RouterAck;

/// Label every router Lease carries, with value [`ROUTER_LABEL_VALUE`].
pub const ROUTER_LABEL: &str = "switchyard.dev/router";
/// Value of [`ROUTER_LABEL`].
pub const ROUTER_LABEL_VALUE: &str = "true";
/// The label selector that finds router Leases.
pub const ROUTER_SELECTOR: &str = "switchyard.dev/router=true";
/// `app.kubernetes.io/name` of a router Lease.
pub const ROUTER_APP_NAME: &str = "switchyard-router";
/// Annotation on a Lease: the namespace its replica watches, `""` for all namespaces.
pub const WATCH_NAMESPACE_ANNOTATION: &str = "switchyard.dev/watch-namespace";
/// Where router Leases live when nothing else says (`--router-namespace` default).
pub const DEFAULT_ROUTER_NAMESPACE: &str = "switchyard-system";
/// `spec.leaseDurationSeconds` when `--lease-duration` is not given.
pub const DEFAULT_LEASE_DURATION_SECONDS: u32 = 10;
/// API group and version of Function, for the bodies sent to it.
const FUNCTION_API_VERSION: &str = "switchyard.dev/v1alpha1";

/// The server-side-apply field manager of one replica: it owns its Lease and its
/// `status.routers` entry, and nothing else.
pub fn field_manager(replica: &str) -> String {
    format!("switchyard-router.{replica}")
}

/// The namespace a replica keeps its Lease in: `--lease-namespace`, else the one namespace it
/// watches, else `$POD_NAMESPACE` (when set and not empty), else `switchyard-system`.
pub fn lease_namespace(
    explicit: Option<&str>,
    watched: Option<&str>,
    pod_namespace: Option<&str>,
) -> String {
    explicit
        .or(watched)
        .or(pod_namespace.filter(|ns| !ns.is_empty()))
        .unwrap_or(DEFAULT_ROUTER_NAMESPACE)
        .to_string()
}

/// Whether a Lease whose holder last proved itself at `renewed_ms` (epoch milliseconds) for
/// `duration_s` seconds is still held at `now_ms`: the same rule as [`replica_live`], for stores
/// that keep epoch milliseconds.
pub fn lease_fresh(renewed_ms: i64, duration_s: i32, now_ms: i64) -> bool {
    now_ms <= renewed_ms + i64::from(duration_s.max(0)) * 1000
}

/// Whether the replica holding a Lease with this spec is live at `now`: THE rule, used by the
/// CLI's wait and by the routers' pruning alike.
///
/// A holder proves itself at `acquireTime` and at each `renewTime`; the later of the two counts
/// (a Lease taken over after a long silence carries a new `acquireTime` beside an old
/// `renewTime`). It is live until that moment plus `leaseDurationSeconds`, inclusive. A Lease
/// with neither time, or without a duration, promises nothing and is not live.
pub fn replica_live(spec: &LeaseSpec, now: Timestamp) -> bool {
    let proved = match (&spec.renew_time, &spec.acquire_time) {
        (Some(r), Some(a)) => r.0.max(a.0),
        (Some(t), None) | (None, Some(t)) => t.0,
        (None, None) => return false,
    };
    let Some(duration) = spec.lease_duration_seconds else {
        return false;
    };
    lease_fresh(proved.as_millisecond(), duration, now.as_millisecond())
}

/// Whether a replica's Lease says it serves `namespace`: its watch-namespace annotation is `""`
/// (every namespace) or that namespace. A Lease without the annotation is not a router's.
pub fn serves_namespace(lease: &Lease, namespace: &str) -> bool {
    lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(WATCH_NAMESPACE_ANNOTATION))
        .is_some_and(|w| w.is_empty() || w == namespace)
}

/// This replica's Lease, as it server-side-applies it at every renewal: named after the
/// replica, labelled as a router, annotated with the namespace it watches (`""`: all), held by
/// itself for `duration_s` seconds from `now`.
pub fn lease(replica: &str, watch_namespace: &str, duration_s: i32, now: Timestamp) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(replica.to_string()),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/name".to_string(),
                    ROUTER_APP_NAME.to_string(),
                ),
                (ROUTER_LABEL.to_string(), ROUTER_LABEL_VALUE.to_string()),
            ])),
            annotations: Some(BTreeMap::from([(
                WATCH_NAMESPACE_ANNOTATION.to_string(),
                watch_namespace.to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(replica.to_string()),
            lease_duration_seconds: Some(duration_s),
            renew_time: Some(MicroTime(now)),
            ..Default::default()
        }),
    }
}

/// `appliedAt` of an acknowledgement: RFC 3339 to the second, in UTC.
pub fn applied_at(now: Timestamp) -> String {
    now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The server-side-apply body of one replica's acknowledgement of `generation` of Function
/// `namespace/function` on its status subresource; `rejected` is why it refused it.
pub fn ack_body(
    namespace: &str,
    function: &str,
    replica: &str,
    generation: i64,
    rejected: Option<&str>,
    now: Timestamp,
) -> serde_json::Value {
    let entry = RouterAck {
        name: replica.to_string(),
        observed_generation: generation,
        applied_at: applied_at(now),
        rejected: rejected.map(str::to_string),
    };
    serde_json::json!({
        "apiVersion": FUNCTION_API_VERSION,
        "kind": "Function",
        "metadata": {"name": function, "namespace": namespace},
        "status": {"routers": [entry]},
    })
}

/// The namespaces whose Leases may vouch for an entry in a Function of `function_namespace`:
/// its own, `switchyard-system`, and the pruning replica's lease namespace.
pub fn lease_namespaces<'a>(function_namespace: &'a str, lease_namespace: &'a str) -> [&'a str; 3] {
    [
        function_namespace,
        DEFAULT_ROUTER_NAMESPACE,
        lease_namespace,
    ]
}

/// The JSON patch (RFC 6902) that removes, from a Function's `status.routers`, the entries of
/// replicas that are not `replica` itself, that `live` does not vouch for, and that are older
/// than `min_age` at `now` (a younger one's replica may be creating its Lease right now; an
/// unreadable `appliedAt` counts as old). Empty when nothing is to go.
///
/// Removals run from the highest index down, so one does not shift the next, and each is
/// guarded by a test of the name at its index: a list changed since it was read fails the
/// whole patch instead of removing the wrong entry.
pub fn prune_patch(
    routers: &[RouterAck],
    replica: &str,
    live: impl Fn(&str) -> bool,
    now: Timestamp,
    min_age: SignedDuration,
) -> Vec<serde_json::Value> {
    let old = |at: &str| {
        at.parse::<Timestamp>()
            .map_or(true, |t| now.duration_since(t) > min_age)
    };
    let mut ops = Vec::new();
    for (i, r) in routers.iter().enumerate().rev() {
        if r.name != replica && !live(&r.name) && old(&r.applied_at) {
            ops.push(serde_json::json!({"op": "test", "path": format!("/status/routers/{i}/name"), "value": r.name}));
            ops.push(serde_json::json!({"op": "remove", "path": format!("/status/routers/{i}")}));
        }
    }
    ops
}

/// Where the live routers stand on one generation of a Function.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AckSummary {
    /// Live replicas serving this generation (or a newer one).
    pub applied: Vec<String>,
    /// Live replicas that refused it, with their reason.
    pub rejected: Vec<(String, String)>,
    /// Live replicas that have not reported it yet.
    pub pending: Vec<String>,
}

impl AckSummary {
    /// Whether every live replica has reported (applied or rejected).
    pub fn complete(&self) -> bool {
        self.pending.is_empty()
    }

    /// How many live replicas there are.
    pub fn live(&self) -> usize {
        self.applied.len() + self.rejected.len() + self.pending.len()
    }
}

/// Sorts the `live` replicas by what their entry in `routers` says about `generation`.
pub fn summarize(routers: &[RouterAck], generation: i64, live: &[String]) -> AckSummary {
    let mut summary = AckSummary::default();
    for name in live {
        match routers.iter().find(|r| &r.name == name) {
            Some(r) if r.observed_generation >= generation => match &r.rejected {
                Some(why) if r.observed_generation == generation => {
                    summary.rejected.push((name.clone(), why.clone()))
                }
                _ => summary.applied.push(name.clone()),
            },
            _ => summary.pending.push(name.clone()),
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(name: &str, generation: i64, rejected: Option<&str>) -> RouterAck {
        RouterAck {
            name: name.into(),
            observed_generation: generation,
            applied_at: "2026-11-27T00:00:00Z".into(),
            rejected: rejected.map(Into::into),
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().expect("a timestamp")
    }

    #[test]
    fn only_live_replicas_are_counted_and_newer_generations_count_as_applied() {
        let routers = [
            ack("a", 5, None),
            ack("b", 4, None),
            ack("c", 6, None),
            ack("dead", 1, None),
            ack("r", 5, Some("bad weights")),
        ];
        let live: Vec<String> = ["a", "b", "c", "r", "new"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let s = summarize(&routers, 5, &live);
        assert_eq!(s.applied, vec!["a", "c"]);
        assert_eq!(
            s.rejected,
            vec![("r".to_string(), "bad weights".to_string())]
        );
        assert_eq!(s.pending, vec!["b", "new"]);
        assert!(!s.complete());
        assert_eq!(s.live(), 5);
    }

    #[test]
    fn a_lease_is_fresh_until_its_duration_has_passed() {
        assert!(lease_fresh(10_000, 10, 20_000));
        assert!(!lease_fresh(10_000, 10, 20_001));
        assert!(!lease_fresh(10_000, -5, 10_001));
    }

    #[test]
    fn a_replica_is_live_from_its_latest_renewal_or_acquisition_for_one_duration() {
        let now = at("2026-12-02T08:00:10Z");
        let t = |s: &str| Some(MicroTime(at(s)));
        // (renewTime, acquireTime, leaseDurationSeconds) → live at `now`.
        let cases = [
            (t("2026-12-02T08:00:00Z"), None, Some(10), true),
            (t("2026-12-02T07:59:59Z"), None, Some(10), false),
            // Acquired but not renewed yet: live for one duration from the acquisition (the
            // router's pruning used to call it dead).
            (None, t("2026-12-02T08:00:05Z"), Some(10), true),
            (None, t("2026-12-02T07:59:00Z"), Some(10), false),
            // Re-acquired after a silence: the newer time counts, whichever field holds it.
            (
                t("2026-12-02T07:00:00Z"),
                t("2026-12-02T08:00:05Z"),
                Some(10),
                true,
            ),
            (
                t("2026-12-02T08:00:05Z"),
                t("2026-12-02T07:00:00Z"),
                Some(10),
                true,
            ),
            (
                t("2026-12-02T07:00:00Z"),
                t("2026-12-02T07:00:01Z"),
                Some(10),
                false,
            ),
            // No time, or no duration: it promises nothing.
            (None, None, Some(10), false),
            (t("2026-12-02T08:00:09Z"), None, None, false),
            (t("2026-12-02T08:00:09Z"), None, Some(0), false),
        ];
        for (i, (renew, acquire, duration, live)) in cases.into_iter().enumerate() {
            let spec = LeaseSpec {
                renew_time: renew,
                acquire_time: acquire,
                lease_duration_seconds: duration,
                ..Default::default()
            };
            assert_eq!(replica_live(&spec, now), live, "case {i}: {spec:?}");
        }
    }

    #[test]
    fn the_lease_namespace_falls_back_from_flag_to_watch_to_pod_to_switchyard_system() {
        assert_eq!(lease_namespace(Some("l"), Some("w"), Some("p")), "l");
        assert_eq!(lease_namespace(None, Some("w"), Some("p")), "w");
        assert_eq!(lease_namespace(None, None, Some("p")), "p");
        assert_eq!(lease_namespace(None, None, Some("")), "switchyard-system");
        assert_eq!(lease_namespace(None, None, None), "switchyard-system");
    }

    #[test]
    fn a_lease_serves_the_namespace_it_watches_or_all_of_them() {
        let now = at("2026-12-02T08:00:00Z");
        assert!(serves_namespace(&lease("r", "", 10, now), "prod"));
        assert!(serves_namespace(&lease("r", "prod", 10, now), "prod"));
        assert!(!serves_namespace(&lease("r", "dev", 10, now), "prod"));
        let mut unannotated = lease("r", "", 10, now);
        unannotated.metadata.annotations = None;
        assert!(!serves_namespace(&unannotated, "prod"));
    }

    #[test]
    fn the_lease_body_is_the_one_docs_protocol_md_describes() {
        let now = at("2026-12-02T08:00:00.123456Z");
        let body = serde_json::to_value(lease("r1", "prod", 10, now)).expect("json");
        assert_eq!(
            body,
            serde_json::json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": "r1",
                    "labels": {
                        "app.kubernetes.io/name": "switchyard-router",
                        "switchyard.dev/router": "true",
                    },
                    "annotations": {"switchyard.dev/watch-namespace": "prod"},
                },
                "spec": {
                    "holderIdentity": "r1",
                    "leaseDurationSeconds": 10,
                    "renewTime": "2026-12-02T08:00:00.123456Z",
                },
            })
        );
        let spec = lease("r1", "prod", 10, now).spec.expect("a spec");
        assert!(replica_live(&spec, now));
    }

    #[test]
    fn an_ack_body_carries_only_this_replicas_entry_and_its_reason() {
        let now = at("2026-12-02T08:00:00.9Z");
        assert_eq!(
            ack_body("prod", "hello", "r1", 7, Some("bad weights"), now),
            serde_json::json!({
                "apiVersion": "switchyard.dev/v1alpha1",
                "kind": "Function",
                "metadata": {"name": "hello", "namespace": "prod"},
                "status": {"routers": [{
                    "name": "r1",
                    "observedGeneration": 7,
                    "appliedAt": "2026-12-02T08:00:00Z",
                    "rejected": "bad weights",
                }]},
            })
        );
        let accepted = ack_body("prod", "hello", "r1", 7, None, now);
        assert!(accepted["status"]["routers"][0].get("rejected").is_none());
    }

    #[test]
    fn pruning_removes_only_old_entries_of_other_dead_replicas_from_the_end() {
        let now = at("2026-12-02T08:01:00Z");
        let entry = |name: &str, at: &str| RouterAck {
            applied_at: at.into(),
            ..ack(name, 1, None)
        };
        let routers = [
            entry("me", "2026-12-02T07:00:00Z"),
            entry("dead-old", "2026-12-02T08:00:00Z"),
            entry("live", "2026-12-02T07:00:00Z"),
            entry("dead-young", "2026-12-02T08:00:50Z"),
            entry("garbled", "yesterday"),
        ];
        let ops = prune_patch(
            &routers,
            "me",
            |n| n == "live",
            now,
            SignedDuration::from_secs(20),
        );
        assert_eq!(
            ops,
            vec![
                serde_json::json!({"op": "test", "path": "/status/routers/4/name", "value": "garbled"}),
                serde_json::json!({"op": "remove", "path": "/status/routers/4"}),
                serde_json::json!({"op": "test", "path": "/status/routers/1/name", "value": "dead-old"}),
                serde_json::json!({"op": "remove", "path": "/status/routers/1"}),
            ]
        );
        assert!(prune_patch(&routers[..1], "me", |_| false, now, SignedDuration::ZERO).is_empty());
    }
}
