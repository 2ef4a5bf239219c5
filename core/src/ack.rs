//! Router acknowledgements: which live router replicas serve a Function's generation.
//!
//! Each replica writes its own entry in `status.routers` and renews a Lease named after itself;
//! only replicas whose Lease is fresh count, so a replica that died never blocks a rollout.

use crate::resources::RouterAck;

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

/// Whether a Lease renewed at `renewed_ms` (epoch milliseconds) for `duration_s` seconds is
/// still held at `now_ms`.
pub fn lease_fresh(renewed_ms: i64, duration_s: i32, now_ms: i64) -> bool {
    now_ms <= renewed_ms + i64::from(duration_s.max(0)) * 1000
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
    }
}
