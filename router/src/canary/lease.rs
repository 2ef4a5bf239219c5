//! The decider Lease `switchyard-canary` (docs/protocol.md, "The decider Lease"): at most one
//! replica judges rollouts at a time. Taken and renewed by conditional writes (the
//! resourceVersion read), so of two contenders exactly one wins; released (holder cleared)
//! when no rollout is in progress, so an idle fleet writes nothing.
//!
//! [`claim`] is the decision, pure; [`DeciderLease`] does the reads and writes.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use switchyard_core::protocol;

/// The name of the decider Lease.
pub const NAME: &str = "switchyard-canary";
/// How long the decider Lease holds without a renewal.
pub const DURATION: Duration = Duration::from_secs(6);
/// How often the holder renews it (and a contender reads it).
pub const RENEW_EVERY: Duration = Duration::from_secs(2);

/// What a replica may do with the decider Lease as it finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// No Lease yet: create it.
    Create,
    /// It is ours (renew it), free, or its holder is no longer live: write ourselves in.
    Take,
    /// Another replica holds it and is live.
    Held,
}

/// Whether `me` may take the Lease `found` (its spec, `None` when there is no Lease) at `now`.
/// The liveness of a holder is the one rule of [`protocol::replica_live`].
pub fn claim(found: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Claim {
    let Some(spec) = found else {
        return Claim::Create;
    };
    match spec.holder_identity.as_deref() {
        None | Some("") => Claim::Take,
        Some(holder) if holder == me => Claim::Take,
        Some(_) if protocol::replica_live(spec, now) => Claim::Held,
        Some(_) => Claim::Take,
    }
}

/// The spec that makes `me` the holder at `now`; `before` is the spec found (to keep the
/// acquisition time and count transitions).
fn held_by(me: &str, before: Option<&LeaseSpec>, now: Timestamp) -> LeaseSpec {
    let ours = before.is_some_and(|s| s.holder_identity.as_deref() == Some(me));
    let transitions = before.and_then(|s| s.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(DURATION.as_secs() as i32),
        acquire_time: if ours {
            before.and_then(|s| s.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if ours { transitions } else { transitions + 1 }),
        ..Default::default()
    }
}

/// Whether the Lease as this replica last wrote it (`spec`) still makes it the decider at
/// `now`: live by [`protocol::replica_live`] a second from now, so that it stops deciding
/// before any contender could find the Lease expired.
pub fn still_held(spec: &LeaseSpec, now: Timestamp) -> bool {
    let soon = now
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(1))
        .unwrap_or(now);
    protocol::replica_live(spec, soon)
}

/// This replica's side of the decider Lease.
pub struct DeciderLease {
    api: Api<Lease>,
    replica: String,
    /// The Lease as last written by us while we hold it.
    held: Option<Lease>,
}

impl DeciderLease {
    /// For `replica`, the Lease in `api`'s namespace.
    pub fn new(api: Api<Lease>, replica: String) -> Self {
        DeciderLease {
            api,
            replica,
            held: None,
        }
    }

    /// Whether this replica holds the Lease now: it wrote itself in, and that write is still
    /// live with a second to spare (by the one rule of [`protocol::replica_live`]). A renewal
    /// that failed (the API server unreachable) does not extend it: once the last write that
    /// landed could have expired, a contender may take the Lease, and this replica stops
    /// deciding first.
    pub fn holds(&self) -> bool {
        self.held
            .as_ref()
            .and_then(|l| l.spec.as_ref())
            .is_some_and(|spec| still_held(spec, Timestamp::now()))
    }

    /// Takes or renews the Lease; `Ok(true)` while this replica holds it. A lost race (409) is
    /// `Ok(false)`, not an error.
    pub async fn hold(&mut self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        // Renewing what we wrote needs no read: the resourceVersion is ours unless someone
        // took it meanwhile (then 409, and we read).
        if let Some(mut lease) = self.held.take() {
            let before = lease.spec.clone();
            lease.spec = Some(held_by(&self.replica, before.as_ref(), now));
            match self.api.replace(NAME, &PostParams::default(), &lease).await {
                Ok(written) => {
                    self.held = Some(written);
                    return Ok(true);
                }
                Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {}
                Err(e) => {
                    // Unknown outcome: keep what last landed (not the renewal that may not
                    // have), so `holds` turns false once that could have expired.
                    lease.spec = before;
                    self.held = Some(lease);
                    return Err(e);
                }
            }
        }
        let found = self.api.get_opt(NAME).await?;
        let spec = found.as_ref().and_then(|l| l.spec.as_ref());
        let written = match claim(spec, &self.replica, now) {
            Claim::Held => return Ok(false),
            Claim::Create => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(NAME.to_string()),
                        ..Default::default()
                    },
                    spec: Some(held_by(&self.replica, None, now)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Claim::Take => {
                let mut lease = found.clone().unwrap_or_default();
                lease.spec = Some(held_by(&self.replica, spec, now));
                self.api.replace(NAME, &PostParams::default(), &lease).await
            }
        };
        match written {
            Ok(lease) => {
                tracing::info!(replica = %self.replica, "took the canary decider lease");
                self.held = Some(lease);
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up (holder cleared, conditionally: a Lease someone else took since is
    /// left alone), so that no replica renews anything while no rollout is in progress.
    pub async fn release(&mut self) {
        let Some(mut lease) = self.held.take() else {
            return;
        };
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.renew_time = None;
            spec.acquire_time = None;
        }
        match self.api.replace(NAME, &PostParams::default(), &lease).await {
            Ok(_) => tracing::info!(replica = %self.replica, "released the canary decider lease"),
            Err(e) => tracing::debug!(replica = %self.replica, "releasing the decider lease: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed_s_ago: i64, now: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: Some(6),
            renew_time: Some(MicroTime(
                now.checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(renewed_s_ago))
                    .unwrap(),
            )),
            ..Default::default()
        }
    }

    #[test]
    fn a_replica_takes_a_missing_free_or_expired_lease_and_renews_its_own_only() {
        let now: Timestamp = "2026-12-02T10:00:00Z".parse().unwrap();
        let cases = [
            (None, Claim::Create),
            (Some(spec(None, 1, now)), Claim::Take),
            (Some(spec(Some(""), 1, now)), Claim::Take),
            (Some(spec(Some("r1"), 100, now)), Claim::Take),
            (Some(spec(Some("r2"), 1, now)), Claim::Held),
            (Some(spec(Some("r2"), 6, now)), Claim::Held),
            (Some(spec(Some("r2"), 7, now)), Claim::Take),
        ];
        for (found, expected) in cases {
            assert_eq!(claim(found.as_ref(), "r1", now), expected, "{found:?}");
        }
    }

    #[test]
    fn a_holder_whose_renewals_fail_stops_deciding_before_anyone_may_take_over() {
        let now: Timestamp = "2026-12-02T10:00:00Z".parse().unwrap();
        // Renewed 1 s ago: still the decider.
        assert!(still_held(&spec(Some("r1"), 1, now), now));
        // Its last landed renewal 6 s ago (duration 6 s): a contender still finds it held,
        // and the holder has already stopped — never two deciders by the clock.
        let stale = spec(Some("r1"), 6, now);
        assert_eq!(claim(Some(&stale), "r2", now), Claim::Held);
        assert!(!still_held(&stale, now));
        assert!(!still_held(&spec(Some("r1"), 100, now), now));
    }

    #[test]
    fn taking_over_counts_a_transition_and_renewing_keeps_the_acquisition() {
        let now: Timestamp = "2026-12-02T10:00:00Z".parse().unwrap();
        let mut theirs = spec(Some("r2"), 60, now);
        theirs.lease_transitions = Some(3);
        let taken = held_by("r1", Some(&theirs), now);
        assert_eq!(taken.lease_transitions, Some(4));
        assert_eq!(taken.acquire_time, Some(MicroTime(now)));
        let later = now
            .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(2))
            .unwrap();
        let renewed = held_by("r1", Some(&taken), later);
        assert_eq!(renewed.lease_transitions, Some(4));
        assert_eq!(renewed.acquire_time, Some(MicroTime(now)));
        assert_eq!(renewed.renew_time, Some(MicroTime(later)));
    }
}
