//! The live replicas' latest readings, as the decider sees them (docs/protocol.md, "What the
//! decider reads and writes"): the RouterReports of its namespace as one watch delivers them,
//! each replica's Lease read by name to know whether it is live (cached until that Lease could
//! have expired), and each live replica's counters as a [`Reading`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::watcher::Event;
use switchyard_core::numbers::Reading;
use switchyard_core::protocol;
use switchyard_core::report::{RouterReport, RouterReportStatus};

/// How long a Lease found not live (or missing) is believed before it is read again.
const RECHECK_MS: i64 = 1_000;

/// The reports of a namespace as a watch delivers them, and the liveness of their replicas.
pub struct Replicas {
    leases: Api<Lease>,
    /// Report name → its status, as last seen.
    reports: BTreeMap<String, Arc<RouterReportStatus>>,
    /// Reports of a re-list in progress.
    relist: Option<BTreeMap<String, Arc<RouterReportStatus>>>,
    /// Replica → until when (epoch ms) the last read of its Lease says it is live, or when to
    /// read it again (`live: false`).
    known: HashMap<String, (bool, i64)>,
}

impl Replicas {
    /// Reads Leases through `leases` (the reports' namespace).
    pub fn new(leases: Api<Lease>) -> Self {
        Replicas {
            leases,
            reports: BTreeMap::new(),
            relist: None,
            known: HashMap::new(),
        }
    }

    /// Applies one watch event; whether the reports changed.
    pub fn apply(&mut self, event: Event<RouterReport>) -> bool {
        let name = |r: &RouterReport| r.metadata.name.clone().unwrap_or_default();
        let status = |r: RouterReport| Arc::new(r.status.unwrap_or_default());
        match event {
            Event::Init => {
                self.relist = Some(BTreeMap::new());
                false
            }
            Event::InitApply(r) => {
                let n = name(&r);
                self.relist
                    .get_or_insert_with(BTreeMap::new)
                    .insert(n, status(r));
                false
            }
            Event::InitDone => {
                self.reports = self.relist.take().unwrap_or_default();
                true
            }
            Event::Apply(r) => {
                let n = name(&r);
                let s = status(r);
                let same = self
                    .reports
                    .get(&n)
                    .is_some_and(|old| old.numbers == s.numbers);
                self.reports.insert(n, s);
                !same
            }
            Event::Delete(r) => self.reports.remove(&name(&r)).is_some(),
        }
    }

    /// Whether `replica` is live at `now_ms`, by its Lease (read when what was last read of it
    /// may have changed). An unreadable Lease counts as not live.
    async fn live(&mut self, replica: &str, now_ms: i64) -> bool {
        if let Some(&(live, until)) = self.known.get(replica) {
            if now_ms <= until {
                return live;
            }
        }
        let read = self.leases.get_opt(replica).await;
        let spec = match &read {
            Ok(Some(lease)) => lease.spec.as_ref(),
            _ => None,
        };
        let now = Timestamp::from_millisecond(now_ms).unwrap_or_else(|_| Timestamp::now());
        let until = spec
            .filter(|s| protocol::replica_live(s, now))
            .and_then(|s| {
                let proved = protocol::proved_at(s)?.as_millisecond();
                Some(proved + i64::from(s.lease_duration_seconds?.max(0)) * 1000)
            });
        let entry = match until {
            Some(until) => (true, until),
            None => (false, now_ms + RECHECK_MS),
        };
        self.known.insert(replica.to_string(), entry);
        entry.0
    }

    /// Every live replica's latest reading (`Reading::of_totals` of its report's numbers; a
    /// replica that counted nothing yet has an empty one), except `me`, whose reading the
    /// caller takes fresh from its own counters.
    pub async fn readings(&mut self, me: &str, now_ms: i64) -> BTreeMap<String, Reading> {
        let reports: Vec<Arc<RouterReportStatus>> = self.reports.values().cloned().collect();
        let mut out = BTreeMap::new();
        for status in reports {
            if status.replica.is_empty() || status.replica == me {
                continue;
            }
            if !self.live(&status.replica, now_ms).await {
                continue;
            }
            let reading = match &status.numbers {
                Some(n) => Reading::of_totals(&status.started_at, n),
                None => Reading {
                    started_at: status.started_at.clone(),
                    totals: BTreeMap::new(),
                },
            };
            out.insert(status.replica.clone(), reading);
        }
        // Forget replicas whose report is gone; keep the others' answers, live or not.
        let named: std::collections::HashSet<&str> =
            self.reports.values().map(|s| s.replica.as_str()).collect();
        self.known
            .retain(|replica, _| named.contains(replica.as_str()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_core::numbers::{Counts, Numbers, VersionNumbers};

    fn report(name: &str, requests: u64) -> RouterReport {
        let mut r = RouterReport::new(name, Default::default());
        r.status = Some(RouterReportStatus {
            replica: name.to_string(),
            started_at: "2026-12-02T10:00:00.000Z".into(),
            numbers: (requests > 0).then(|| Numbers {
                versions: vec![VersionNumbers {
                    function: "prod/hello".into(),
                    version: "1.3.0".into(),
                    total: Counts {
                        requests,
                        ..Default::default()
                    },
                    window: Counts::default(),
                }],
                ..Default::default()
            }),
            ..Default::default()
        });
        r
    }

    #[tokio::test]
    async fn only_a_change_of_the_numbers_or_of_the_set_of_reports_is_news() {
        // A client that is never called: nothing here reads a Lease.
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let mut replicas = Replicas::new(Api::namespaced(client, "prod"));
        assert!(!replicas.apply(Event::Init));
        assert!(!replicas.apply(Event::InitApply(report("r1", 0))));
        assert!(replicas.apply(Event::InitDone), "a completed list is news");
        assert!(replicas.apply(Event::Apply(report("r1", 5))));
        assert!(
            !replicas.apply(Event::Apply(report("r1", 5))),
            "a report rewritten with the same numbers (a table swap) is not"
        );
        assert!(
            replicas.apply(Event::Apply(report("r2", 0))),
            "a new replica is"
        );
        assert!(replicas.apply(Event::Delete(report("r2", 0))));
        assert!(!replicas.apply(Event::Delete(report("r9", 0))));
        let reading = replicas.reports["r1"].numbers.as_ref().unwrap();
        let r = Reading::of_totals("2026-12-02T10:00:00.000Z", reading);
        assert_eq!(r.totals.values().next().unwrap().requests, 5);
    }
}
