//! The router ↔ CLI protocol (docs/protocol.md) as names, one liveness rule and plain values.
//!
//! Each router replica renews a Lease named after itself and writes one report (a
//! [`crate::report::RouterReport`]) saying how far it has read and served; the CLI waits until
//! every *live* replica's report covers the write it made. Everything both sides must agree on
//! lives here: the label and annotation names, the rule "is this replica live?", the Lease body
//! and the CLI's reading of reports ([`summarize`]). The router and the CLI only
//! send and receive these values; nothing here talks to the API server or reads the clock.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use std::collections::BTreeMap;

use crate::report::{ExceptionState, RouterReportStatus};

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

/// The annotation carrying a Function's split in percent (`1.1.0=10% 1.0.0=90%`), written with
/// every spec the CLI writes, for `kubectl get fn`'s Traffic column: a printer column can
/// only show a field as it is, and the spec's weights are in ppm. A hand edit of the spec
/// leaves it stale until the next CLI write.
pub const TRAFFIC_ANNOTATION: &str = "switchyard.dev/traffic";
/// The annotation saying whether every live router replica serves the Function's current
/// generation, for `kubectl get fn`'s Routers column: `pending` from the write that changes the
/// spec (in that same write), then `3/3`, `2/3 (r2 pending)` or `unconfirmed` (`--no-wait`, a
/// wait that timed out or failed, a router's canary decision, which nobody waits for) once the
/// writer's wait is over — a metadata-only patch,
/// which moves neither the generation nor any router's table.
pub const ROUTERS_ANNOTATION: &str = "switchyard.dev/routers";
/// [`ROUTERS_ANNOTATION`] as the write of a new spec leaves it.
pub const ROUTERS_PENDING: &str = "pending";
/// [`ROUTERS_ANNOTATION`] when nobody waited, or a wait could not tell.
pub const ROUTERS_UNCONFIRMED: &str = "unconfirmed";

/// The annotation saying at which resourceVersion the Function's current spec was written, as
/// `UID/GENERATION/RESOURCEVERSION`. The writer sets it beside [`ROUTERS_ANNOTATION`] in its
/// metadata-only patch after the wait. That patch, like any metadata-only change, moves the
/// resourceVersion but not what any router serves, so `status` judges each router against
/// this one ([`written_at`]) rather than against the Function's latest resourceVersion.
pub const WRITTEN_AT_ANNOTATION: &str = "switchyard.dev/written-at";

/// [`WRITTEN_AT_ANNOTATION`]'s value for the write that left a Function with `uid` at
/// `generation` and resourceVersion `rv`.
pub fn written_at_value(uid: &str, generation: i64, rv: &str) -> String {
    format!("{uid}/{generation}/{rv}")
}

/// The resourceVersion a router must have read to serve this Function's spec as it is: the one
/// [`WRITTEN_AT_ANNOTATION`] names when it describes this very object (same uid) at its current
/// generation, else the object's own resourceVersion. A spec or status change bumps the
/// generation (the Function CRD has no status subresource), so a stale note never applies.
pub fn written_at(metadata: &ObjectMeta) -> String {
    let current = metadata.resource_version.clone().unwrap_or_default();
    let noted = metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(WRITTEN_AT_ANNOTATION))
        .and_then(|v| {
            let mut parts = v.splitn(3, '/');
            let (uid, generation, rv) = (parts.next()?, parts.next()?, parts.next()?);
            let fits = Some(uid) == metadata.uid.as_deref()
                && generation.parse().ok() == metadata.generation
                && matches!(
                    (resource_version(rv), resource_version(&current)),
                    (Ok(noted), Ok(now)) if noted <= now
                );
            fits.then(|| rv.to_string())
        });
    noted.unwrap_or(current)
}

/// Sets the annotations `kubectl get fn` shows of a Function whose spec is `spec` as it is
/// written: its split in percent ([`TRAFFIC_ANNOTATION`]) and `routers`
/// ([`ROUTERS_ANNOTATION`]). Every writer of a whole Function calls it, so the columns never
/// describe another spec.
pub fn annotate(
    metadata: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    spec: &crate::FunctionSpec,
    routers: &str,
) {
    let annotations = metadata.annotations.get_or_insert_with(Default::default);
    annotations.insert(
        TRAFFIC_ANNOTATION.to_string(),
        crate::plan::describe(&spec.traffic),
    );
    annotations.insert(ROUTERS_ANNOTATION.to_string(), routers.to_string());
}

/// The field manager of one replica: it owns its Lease and its report, and nothing else.
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
    let Some(proved) = proved_at(spec) else {
        return false;
    };
    let Some(duration) = spec.lease_duration_seconds else {
        return false;
    };
    lease_fresh(proved.as_millisecond(), duration, now.as_millisecond())
}

/// When the holder of a Lease last proved itself: the later of `renewTime` and `acquireTime`.
pub fn proved_at(spec: &LeaseSpec) -> Option<Timestamp> {
    match (&spec.renew_time, &spec.acquire_time) {
        (Some(r), Some(a)) => Some(r.0.max(a.0)),
        (Some(t), None) | (None, Some(t)) => Some(t.0),
        (None, None) => None,
    }
}

/// Whether a replica that last proved itself at `proved_ms` for `duration_s` seconds has not
/// been live for two lease durations at `now_ms`: `switchyard routers --prune` removes it.
pub fn prunable(proved_ms: i64, duration_s: i32, now_ms: i64) -> bool {
    !lease_fresh(proved_ms, duration_s.max(0).saturating_mul(3), now_ms)
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

/// `appliedAt` of a local store's entry: RFC 3339 to the second, in UTC.
pub fn applied_at(now: Timestamp) -> String {
    now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A report's timestamps (`startedAt`, `reportedAt`, `readAt`, `numbers.at`): RFC 3339 to the
/// millisecond, in UTC.
pub fn report_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Why reports cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A resourceVersion that is not an integer: the API server is not backed by etcd3.
    #[error("cannot compare resourceVersion {0:?}: waits need an etcd-backed API server")]
    ResourceVersion(String),
}

/// A resourceVersion as the integer it is on every etcd3-backed API server (docs/protocol.md,
/// "What `applied` promises").
pub fn resource_version(rv: &str) -> Result<u64, ProtocolError> {
    rv.parse()
        .map_err(|_| ProtocolError::ResourceVersion(rv.to_string()))
}

/// Where the live routers stand on one write of a Function.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AckSummary {
    /// Live replicas serving this generation (or a newer one).
    pub applied: Vec<String>,
    /// Live replicas that refused it, with their reason.
    pub rejected: Vec<(String, String)>,
    /// Live replicas that have not served it yet.
    pub pending: Vec<String>,
    /// Of the pending ones, those that said why (`waiting for FunctionVersion …`).
    pub waiting: Vec<(String, String)>,
}

impl AckSummary {
    /// Whether every live replica has settled (applied or rejected).
    pub fn complete(&self) -> bool {
        self.pending.is_empty()
    }

    /// How many live replicas there are.
    pub fn live(&self) -> usize {
        self.applied.len() + self.rejected.len() + self.pending.len()
    }
}

/// Sorts the live replicas by what their reports say about the write that left Function
/// `namespace/name` at resourceVersion `rv` and generation `generation`: docs/protocol.md's
/// table. `live` holds each live replica's name and its report (`None`: none yet). An `Err`
/// when a resourceVersion is not an integer.
pub fn summarize(
    live: &[(String, Option<&RouterReportStatus>)],
    namespace: &str,
    name: &str,
    rv: &str,
    generation: i64,
) -> Result<AckSummary, ProtocolError> {
    let written = resource_version(rv)?;
    let mut summary = AckSummary::default();
    for (replica, report) in live {
        let replica = replica.clone();
        let Some(report) = report else {
            summary.pending.push(replica);
            continue;
        };
        let exception = report
            .exceptions
            .iter()
            .find(|e| e.name == name && e.namespace == namespace);
        let read = match &report.applied {
            Some(a) => resource_version(&a.functions)? >= written,
            None => false,
        };
        match exception {
            Some(e) if e.state == ExceptionState::Rejected && e.generation == generation => {
                summary.rejected.push((replica, e.reason.clone()))
            }
            Some(e) if e.state == ExceptionState::Rejected && e.generation > generation => {
                summary.applied.push(replica)
            }
            Some(e) => {
                summary.waiting.push((replica.clone(), e.reason.clone()));
                summary.pending.push(replica);
            }
            None if read && report.exceptions_omitted == 0 => summary.applied.push(replica),
            None => summary.pending.push(replica),
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{AppliedVersions, Exception};

    #[test]
    fn written_at_is_the_noted_revision_only_for_the_same_object_at_the_same_generation() {
        let meta = |uid: &str, generation: i64, rv: &str, note: Option<&str>| ObjectMeta {
            uid: Some(uid.into()),
            generation: Some(generation),
            resource_version: Some(rv.into()),
            annotations: note
                .map(|n| BTreeMap::from([(WRITTEN_AT_ANNOTATION.to_string(), n.to_string())])),
            ..Default::default()
        };
        let note = written_at_value("u1", 4, "100");
        assert_eq!(note, "u1/4/100");
        for (what, m, want) in [
            (
                "noted, then annotated",
                meta("u1", 4, "105", Some(&note)),
                "100",
            ),
            ("no note", meta("u1", 4, "105", None), "105"),
            (
                "a newer generation",
                meta("u1", 5, "110", Some(&note)),
                "110",
            ),
            (
                "another object (recreated)",
                meta("u2", 4, "120", Some(&note)),
                "120",
            ),
            (
                "a note from the future",
                meta("u1", 4, "90", Some(&note)),
                "90",
            ),
            ("garbage", meta("u1", 4, "105", Some("4/100")), "105"),
            ("not a number", meta("u1", 4, "105", Some("u1/4/x")), "105"),
        ] {
            assert_eq!(written_at(&m), want, "{what}");
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().expect("a timestamp")
    }

    fn status(applied: Option<&str>, exceptions: Vec<Exception>) -> RouterReportStatus {
        RouterReportStatus {
            replica: "r".into(),
            applied: applied.map(|rv| AppliedVersions {
                functions: rv.into(),
                function_versions: "1".into(),
            }),
            exceptions,
            ..Default::default()
        }
    }

    fn exception(name: &str, generation: i64, state: ExceptionState) -> Exception {
        Exception {
            namespace: "prod".into(),
            name: name.into(),
            generation,
            state,
            reason: format!("{state:?} {generation}"),
        }
    }

    #[test]
    fn each_live_replica_is_sorted_by_the_table_in_docs_protocol_md() {
        use ExceptionState::*;
        // The write left prod/hello at resourceVersion 100, generation 7.
        let cases: Vec<(&str, Option<RouterReportStatus>, &str)> = vec![
            ("no report yet", None, "pending"),
            ("no applied yet", Some(status(None, vec![])), "pending"),
            (
                "read before the write",
                Some(status(Some("99"), vec![])),
                "pending",
            ),
            (
                "read the write",
                Some(status(Some("100"), vec![])),
                "applied",
            ),
            (
                "read past the write",
                Some(status(Some("250"), vec![])),
                "applied",
            ),
            // Integers, not strings: "99" > "100" as text.
            (
                "longer number",
                Some(status(Some("1000"), vec![])),
                "applied",
            ),
            (
                "waiting for its version",
                Some(status(Some("250"), vec![exception("hello", 7, Pending)])),
                "pending",
            ),
            (
                "refusing this generation",
                Some(status(Some("250"), vec![exception("hello", 7, Rejected)])),
                "rejected",
            ),
            (
                "refusing a newer generation",
                Some(status(Some("250"), vec![exception("hello", 8, Rejected)])),
                "applied",
            ),
            (
                "an older refusal still listed",
                Some(status(Some("250"), vec![exception("hello", 6, Rejected)])),
                "pending",
            ),
            (
                "another function refused",
                Some(status(Some("250"), vec![exception("other", 7, Rejected)])),
                "applied",
            ),
        ];
        for (what, report, want) in cases {
            let live = vec![("r".to_string(), report.as_ref())];
            let s = summarize(&live, "prod", "hello", "100", 7).expect(what);
            let got = match (s.applied.len(), s.rejected.len(), s.pending.len()) {
                (1, 0, 0) => "applied",
                (0, 1, 0) => "rejected",
                (0, 0, 1) => "pending",
                other => panic!("{what}: {other:?}"),
            };
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn a_namesake_in_another_namespace_is_not_this_function() {
        let mut other = exception("hello", 7, ExceptionState::Rejected);
        other.namespace = "dev".into();
        let report = status(Some("100"), vec![other]);
        let s = summarize(&[("r".into(), Some(&report))], "prod", "hello", "100", 7).unwrap();
        assert_eq!(s.applied, ["r"]);
    }

    #[test]
    fn omitted_exceptions_make_an_unlisted_function_pending_never_applied() {
        let mut report = status(Some("500"), vec![]);
        report.exceptions_omitted = 3;
        let s = summarize(&[("r".into(), Some(&report))], "prod", "hello", "100", 7).unwrap();
        assert_eq!(s.pending, ["r"]);
    }

    #[test]
    fn replicas_are_counted_together_and_pending_ones_say_why() {
        let a = status(Some("100"), vec![]);
        let b = status(
            Some("100"),
            vec![exception("hello", 7, ExceptionState::Pending)],
        );
        let live = vec![
            ("a".to_string(), Some(&a)),
            ("b".to_string(), Some(&b)),
            ("new".to_string(), None),
        ];
        let s = summarize(&live, "prod", "hello", "100", 7).unwrap();
        assert_eq!(s.applied, ["a"]);
        assert_eq!(s.pending, ["b", "new"]);
        assert_eq!(s.waiting, [("b".to_string(), "Pending 7".to_string())]);
        assert!(!s.complete());
        assert_eq!(s.live(), 3);
    }

    #[test]
    fn a_resource_version_that_is_not_an_integer_is_an_error_never_a_pass() {
        let report = status(Some("abc"), vec![]);
        let live = vec![("r".to_string(), Some(&report))];
        assert_eq!(
            summarize(&live, "prod", "hello", "100", 7),
            Err(ProtocolError::ResourceVersion("abc".into()))
        );
        let err = summarize(&[], "prod", "hello", "v2", 7).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot compare resourceVersion \"v2\": waits need an etcd-backed API server"
        );
    }

    #[test]
    fn report_times_carry_milliseconds() {
        assert_eq!(
            report_time(at("2026-12-02T10:05:01.25Z")),
            "2026-12-02T10:05:01.250Z"
        );
    }

    #[test]
    fn a_replica_is_prunable_two_lease_durations_after_it_stopped_being_live() {
        // Proved at 10 s for 10 s: live until 20 s, prunable after 40 s.
        assert!(!prunable(10_000, 10, 20_000));
        assert!(!prunable(10_000, 10, 40_000));
        assert!(prunable(10_000, 10, 40_001));
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
}
