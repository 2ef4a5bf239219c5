//! Live per-version traffic numbers as the routers publish them (docs/protocol.md, "Numbers"):
//! request and failure counters and a latency histogram whose buckets add up across replicas.
//!
//! A router keeps counters since it started; anything over a window (the last minute, a canary
//! step) is the difference of two readings of one replica, and the readings of several
//! replicas merge by adding them up.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Values below this many microseconds have a bucket each.
const EXACT: u64 = 16;
/// Buckets per power of two above [`EXACT`].
const PER_OCTAVE: u64 = 8;

/// The histogram bucket of a latency of `micros` microseconds: `micros` itself below 16; above,
/// each power of two cut in 8 (a bucket is at most 1/8 wide relative to its lower bound).
pub const fn bucket_of(micros: u64) -> u16 {
    if micros < EXACT {
        return micros as u16;
    }
    let e = 63 - micros.leading_zeros() as u64;
    let sub = (micros >> (e - 3)) & (PER_OCTAVE - 1);
    (EXACT + (e - 4) * PER_OCTAVE + sub) as u16
}

/// The smallest latency, in microseconds, that falls into bucket `index`; `u64::MAX` for an
/// index past the last bucket (a report may carry any index: reading it must not overflow).
pub fn bucket_lower(index: u16) -> u64 {
    let i = u64::from(index);
    if i < EXACT {
        return i;
    }
    let e = 4 + (i - EXACT) / PER_OCTAVE;
    let sub = (i - EXACT) % PER_OCTAVE;
    let shift = e - 3;
    if shift >= 64 {
        return u64::MAX;
    }
    u64::try_from(u128::from(PER_OCTAVE + sub) << shift).unwrap_or(u64::MAX)
}

/// The number of buckets a `u64` of microseconds can fall into (`bucket_of(u64::MAX) + 1`).
pub const BUCKETS: usize = 16 + 60 * 8;

/// A latency histogram: bucket index ([`bucket_of`]) → count, only the buckets in use.
pub type Latency = BTreeMap<u16, u64>;

/// Counts of one version's requests over some span.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// Requests answered or failed.
    pub requests: u64,
    /// Responses with status ≥ 500 and requests the upstream never answered.
    pub failures: u64,
    /// Time from arrival to the end of the response, microseconds, bucketed.
    #[serde(default)]
    pub latency: Latency,
}

/// One version's numbers in one replica's report.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct VersionNumbers {
    /// `namespace/name` of the Function.
    pub function: String,
    /// The version.
    pub version: String,
    /// Since the replica started (its report's `startedAt`).
    pub total: Counts,
    /// Over the last `windowSeconds`.
    pub window: Counts,
}

/// What one replica publishes of live traffic.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Numbers {
    /// When these were read, RFC 3339.
    pub at: String,
    /// The span of every `window`, in seconds.
    pub window_seconds: u32,
    /// The versions served in the window, most requests first.
    #[serde(default)]
    pub versions: Vec<VersionNumbers>,
    /// Versions left out past the cap.
    #[serde(default)]
    pub omitted: u32,
}

impl Counts {
    /// Adds `other` to these counts: the merge of two replicas' counts, or of two spans.
    /// Saturating, so the merge stays associative and commutative even at the bounds.
    pub fn add(&mut self, other: &Counts) {
        self.requests = self.requests.saturating_add(other.requests);
        self.failures = self.failures.saturating_add(other.failures);
        for (&bucket, &n) in &other.latency {
            if n > 0 {
                let mine = self.latency.entry(bucket).or_default();
                *mine = mine.saturating_add(n);
            }
        }
    }

    /// The sum of any number of counts.
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a Counts>) -> Counts {
        let mut total = Counts::default();
        for c in all {
            total.add(c);
        }
        total
    }

    /// What happened between an `earlier` reading of the same counters and this one (later
    /// minus earlier, field by field; buckets left at zero are dropped). Counters only grow, so
    /// a field that shrank can only come from mismatched readings: it counts as zero.
    pub fn since(&self, earlier: &Counts) -> Counts {
        let latency = self
            .latency
            .iter()
            .filter_map(|(&bucket, &n)| {
                let before = earlier.latency.get(&bucket).copied().unwrap_or(0);
                let d = n.saturating_sub(before);
                (d > 0).then_some((bucket, d))
            })
            .collect();
        Counts {
            requests: self.requests.saturating_sub(earlier.requests),
            failures: self.failures.saturating_sub(earlier.failures),
            latency,
        }
    }

    /// No request and no bucket in use.
    pub fn is_empty(&self) -> bool {
        self.requests == 0 && self.failures == 0 && self.latency.values().all(|&n| n == 0)
    }

    /// Failures per request, 0.0 to 1.0; `None` without requests (no traffic is no verdict).
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.failures.min(self.requests) as f64 / self.requests as f64)
    }

    /// The latency below which a fraction `q` (0.0 to 1.0) of the requests finished, in
    /// milliseconds, interpolated linearly inside its bucket (so within 12.5% of the truth);
    /// `None` when the histogram is empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self
            .latency
            .values()
            .fold(0u64, |a, &n| a.saturating_add(n));
        if total == 0 {
            return None;
        }
        let q = if q.is_nan() { 0.5 } else { q.clamp(0.0, 1.0) };
        let rank = q * total as f64;
        let mut below = 0u64;
        let mut last = None;
        for (&bucket, &n) in self.latency.iter().filter(|(_, &n)| n > 0) {
            last = Some(bucket);
            let through = below.saturating_add(n);
            if rank <= through as f64 {
                let into = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
                return Some(interpolate(bucket, into));
            }
            below = through;
        }
        // Rounding at q = 1.0 only: the top of the highest bucket.
        last.map(|b| interpolate(b, 1.0))
    }

    /// The median latency, ms ([`Self::quantile_ms`]).
    pub fn p50_ms(&self) -> Option<f64> {
        self.quantile_ms(0.5)
    }

    /// The 99th percentile latency, ms ([`Self::quantile_ms`]).
    pub fn p99_ms(&self) -> Option<f64> {
        self.quantile_ms(0.99)
    }
}

/// A point `into` (0.0 to 1.0) of the way through `bucket`, in milliseconds.
fn interpolate(bucket: u16, into: f64) -> f64 {
    let lower = bucket_lower(bucket) as f64;
    let upper = bucket_lower(bucket.saturating_add(1)) as f64;
    (lower + (upper - lower).max(0.0) * into) / 1000.0
}

/// Which version of which Function some counts belong to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VersionKey {
    /// `namespace/name` of the Function.
    pub function: String,
    /// The version.
    pub version: String,
}

/// One replica's cumulative counters at one moment: what a canary step or a window subtracts
/// from a later reading of the same replica.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Reading {
    /// The epoch of the counters (the report's `startedAt`): readings with different epochs
    /// come from different runs of the replica and never subtract.
    pub started_at: String,
    /// Counters since `started_at`, per version.
    pub totals: BTreeMap<VersionKey, Counts>,
}

impl Reading {
    /// The `total`s of a replica's published numbers, as a reading of its counters.
    pub fn of_totals(started_at: &str, numbers: &Numbers) -> Reading {
        let totals = numbers
            .versions
            .iter()
            .map(|v| {
                let key = VersionKey {
                    function: v.function.clone(),
                    version: v.version.clone(),
                };
                (key, v.total.clone())
            })
            .collect();
        Reading {
            started_at: started_at.to_string(),
            totals,
        }
    }

    /// What the replica counted between `earlier` and this reading, per version (versions with
    /// nothing new are left out); `None` when `earlier` is from another run of the replica (its
    /// counters restarted in between, so a difference would be meaningless).
    ///
    /// A version missing from `earlier` counts whole: a replica lists every version it served
    /// since it started, idle ones last, so a missing one had not served yet (unless it was
    /// past the 300-version cap then).
    pub fn since(&self, earlier: &Reading) -> Option<BTreeMap<VersionKey, Counts>> {
        if self.started_at != earlier.started_at {
            return None;
        }
        let none = Counts::default();
        Some(
            self.totals
                .iter()
                .filter_map(|(key, now)| {
                    let d = now.since(earlier.totals.get(key).unwrap_or(&none));
                    (!d.is_empty()).then(|| (key.clone(), d))
                })
                .collect(),
        )
    }
}

/// One version of a Function as live traffic shows it, summed over the live replicas'
/// windows: what `switchyard status` prints beside the configured weight.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VersionLive {
    /// The version.
    pub version: String,
    /// Its configured weight, parts per million (0 for a version served only by pin or not in
    /// the split any more).
    pub weight: u32,
    /// Requests in the window, all replicas.
    pub requests: u64,
    /// Failures among them.
    pub failures: u64,
    /// Its part of the Function's requests in the window, 0.0 to 1.0; `None` when the
    /// Function had none.
    pub share: Option<f64>,
    /// Requests per second: each replica's requests over its own window, summed.
    pub requests_per_second: f64,
    /// Failures per request, 0.0 to 1.0; `None` without requests.
    pub error_rate: Option<f64>,
    /// Median latency, ms; `None` without requests.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency, ms; `None` without requests.
    pub p99_ms: Option<f64>,
}

/// The live view of one Function (`namespace/name`): the versions of its configured `split`
/// first, in split order, then any other version that served requests in the window (pinned,
/// or just shifted away), by name. Pass only the numbers of live replicas.
pub fn live_view(
    function: &str,
    split: &[crate::TrafficTarget],
    replicas: &[&Numbers],
) -> Vec<VersionLive> {
    // Per version: the merged window counts, and the rate summed replica by replica (replicas
    // that started less than a window ago report a shorter window).
    let mut seen: BTreeMap<&str, (Counts, f64)> = BTreeMap::new();
    for numbers in replicas {
        let seconds = f64::from(numbers.window_seconds.max(1));
        for v in numbers.versions.iter().filter(|v| v.function == function) {
            let entry = seen.entry(v.version.as_str()).or_default();
            entry.0.add(&v.window);
            entry.1 += v.window.requests as f64 / seconds;
        }
    }
    let all: u64 = seen
        .values()
        .fold(0u64, |a, (c, _)| a.saturating_add(c.requests));
    let mut order: Vec<(&str, u32)> = split
        .iter()
        .map(|t| (t.version.as_str(), t.weight))
        .collect();
    // Replicas also list versions idle in the window (their totals anchor later differences):
    // only those that served in it are shown beside the split.
    for (version, (counts, _)) in &seen {
        if counts.requests > 0 && !split.iter().any(|t| t.version == *version) {
            order.push((version, 0));
        }
    }
    let none = (Counts::default(), 0.0);
    order
        .into_iter()
        .map(|(version, weight)| {
            let (counts, rate) = seen.get(version).unwrap_or(&none);
            VersionLive {
                version: version.to_string(),
                weight,
                requests: counts.requests,
                failures: counts.failures,
                share: (all > 0).then(|| counts.requests as f64 / all as f64),
                requests_per_second: *rate,
                error_rate: counts.error_rate(),
                p50_ms: counts.p50_ms(),
                p99_ms: counts.p99_ms(),
            }
        })
        .collect()
}

/// When a version counts as unhealthy in `switchyard list`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HealthRule {
    /// Error rate (0.0 to 1.0) above which a version is failing. Default 5%.
    pub max_error_rate: f64,
    /// Requests in the window below which no verdict is given. Default 20.
    pub min_requests: u64,
}

impl Default for HealthRule {
    fn default() -> Self {
        HealthRule {
            max_error_rate: 0.05,
            min_requests: 20,
        }
    }
}

/// A version's health by its live numbers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Health {
    /// Too few requests in the window to judge (never a pass, never a fail).
    Unknown,
    /// Error rate at or below the rule's limit.
    Healthy,
    /// Error rate above the limit over enough requests.
    Failing {
        /// The observed error rate, 0.0 to 1.0.
        error_rate: f64,
    },
}

impl HealthRule {
    /// The verdict on one version's live numbers.
    pub fn judge(&self, live: &VersionLive) -> Health {
        match live.error_rate {
            Some(rate) if live.requests >= self.min_requests.max(1) => {
                if rate > self.max_error_rate {
                    Health::Failing { error_rate: rate }
                } else {
                    Health::Healthy
                }
            }
            _ => Health::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_exact_below_16_and_an_eighth_of_an_octave_above() {
        for v in 0..16 {
            assert_eq!(bucket_of(v), v as u16);
            assert_eq!(bucket_lower(v as u16), v);
        }
        assert_eq!(bucket_of(16), 16);
        assert_eq!(bucket_of(17), 16);
        assert_eq!(bucket_of(18), 17);
        assert_eq!(bucket_of(31), 23);
        assert_eq!(bucket_of(32), 24);
        // Every value lies in [lower(b), lower(b + 1)) and a bucket is at most 1/8 wide.
        for v in (16..5_000_000u64).step_by(997).chain([u64::from(u32::MAX)]) {
            let b = bucket_of(v);
            assert!(
                bucket_lower(b) <= v && v < bucket_lower(b + 1),
                "{v} in {b}"
            );
            assert!((bucket_lower(b + 1) - bucket_lower(b)) * 8 <= bucket_lower(b));
        }
    }

    fn counts(requests: u64, failures: u64, latency: &[(u16, u64)]) -> Counts {
        Counts {
            requests,
            failures,
            latency: latency.iter().copied().collect(),
        }
    }

    fn version(function: &str, version: &str, total: Counts, window: Counts) -> VersionNumbers {
        VersionNumbers {
            function: function.into(),
            version: version.into(),
            total,
            window,
        }
    }

    fn numbers(window_seconds: u32, versions: Vec<VersionNumbers>) -> Numbers {
        Numbers {
            at: "2026-12-02T10:05:01Z".into(),
            window_seconds,
            versions,
            omitted: 0,
        }
    }

    #[test]
    fn bucket_lower_saturates_past_the_last_bucket_instead_of_overflowing() {
        assert_eq!(bucket_of(u64::MAX) as usize, BUCKETS - 1);
        assert_eq!(bucket_lower((BUCKETS - 1) as u16), 15 << 60);
        assert_eq!(bucket_lower(BUCKETS as u16), u64::MAX);
        assert_eq!(bucket_lower(u16::MAX), u64::MAX);
    }

    #[test]
    fn merging_adds_requests_failures_and_each_bucket() {
        let mut a = counts(10, 1, &[(100, 4), (120, 6)]);
        a.add(&counts(5, 2, &[(120, 1), (130, 4)]));
        assert_eq!(a, counts(15, 3, &[(100, 4), (120, 7), (130, 4)]));
    }

    #[test]
    fn since_subtracts_field_by_field_and_drops_emptied_buckets() {
        let later = counts(15, 3, &[(100, 4), (120, 7), (130, 4)]);
        let earlier = counts(10, 1, &[(100, 4), (120, 6)]);
        assert_eq!(later.since(&earlier), counts(5, 2, &[(120, 1), (130, 4)]));
        // Mismatched readings never produce a wrapped-around count.
        assert_eq!(earlier.since(&later), counts(0, 0, &[]));
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket_in_milliseconds() {
        // 100 requests in bucket 96 = [8 << 11, 9 << 11) µs = [16.384, 18.432) ms.
        let c = counts(100, 0, &[(96, 100)]);
        assert_eq!(bucket_lower(96), 16_384);
        assert!((c.p50_ms().unwrap() - 17.408).abs() < 1e-9);
        assert!((c.quantile_ms(0.0).unwrap() - 16.384).abs() < 1e-9);
        assert!((c.quantile_ms(1.0).unwrap() - 18.432).abs() < 1e-9);
        // 99 fast requests and one slow: p50 is fast, p99 at the top of the fast bucket.
        let c = counts(100, 0, &[(5, 99), (120, 1)]);
        assert!((c.p50_ms().unwrap() - (5.0 + 50.0 / 99.0) / 1000.0).abs() < 1e-12);
        assert!(
            (c.p99_ms().unwrap() - 0.006).abs() < 1e-9,
            "{:?}",
            c.p99_ms()
        );
        assert!(c.quantile_ms(0.995).unwrap() >= bucket_lower(120) as f64 / 1000.0);
    }

    #[test]
    fn no_requests_means_no_quantile_and_no_error_rate() {
        let c = Counts::default();
        assert_eq!(c.p50_ms(), None);
        assert_eq!(c.p99_ms(), None);
        assert_eq!(c.error_rate(), None);
        assert_eq!(counts(0, 0, &[(3, 0)]).p99_ms(), None);
    }

    #[test]
    fn error_rate_is_failures_per_request() {
        assert_eq!(counts(200, 50, &[]).error_rate(), Some(0.25));
        assert_eq!(counts(200, 0, &[]).error_rate(), Some(0.0));
    }

    #[test]
    fn a_reading_subtracts_only_from_the_same_run_of_a_replica() {
        let key = |v: &str| VersionKey {
            function: "prod/hello".into(),
            version: v.into(),
        };
        let earlier = Reading {
            started_at: "t0".into(),
            totals: [(key("1.0.0"), counts(10, 1, &[(100, 10)]))].into(),
        };
        let later = Reading {
            started_at: "t0".into(),
            totals: [
                (key("1.0.0"), counts(15, 1, &[(100, 15)])),
                (key("1.1.0"), counts(3, 3, &[(90, 3)])),
            ]
            .into(),
        };
        let d = later.since(&earlier).unwrap();
        assert_eq!(d[&key("1.0.0")], counts(5, 0, &[(100, 5)]));
        // A version absent earlier counts whole.
        assert_eq!(d[&key("1.1.0")], counts(3, 3, &[(90, 3)]));
        let restarted = Reading {
            started_at: "t1".into(),
            ..later.clone()
        };
        assert_eq!(restarted.since(&earlier), None);
        assert_eq!(later.since(&later), Some(BTreeMap::new()));
    }

    #[test]
    fn reading_of_totals_keys_each_version() {
        let n = numbers(
            60,
            vec![version("prod/a", "1", counts(7, 0, &[]), counts(2, 0, &[]))],
        );
        let r = Reading::of_totals("t0", &n);
        assert_eq!(r.started_at, "t0");
        assert_eq!(r.totals.len(), 1);
        assert_eq!(r.totals.values().next().unwrap().requests, 7);
    }

    #[test]
    fn live_view_sums_replicas_and_reports_shares_rates_and_errors() {
        use crate::TrafficTarget;
        let split = [
            TrafficTarget::new("1.0.0", 900_000),
            TrafficTarget::new("1.1.0", 100_000),
            TrafficTarget::new("0.9.0", 0),
        ];
        let r1 = numbers(
            60,
            vec![
                version(
                    "prod/hello",
                    "1.0.0",
                    counts(0, 0, &[]),
                    counts(540, 0, &[(100, 540)]),
                ),
                version(
                    "prod/hello",
                    "1.1.0",
                    counts(0, 0, &[]),
                    counts(60, 18, &[(120, 60)]),
                ),
                version(
                    "prod/other",
                    "1.0.0",
                    counts(0, 0, &[]),
                    counts(999, 999, &[]),
                ),
            ],
        );
        // A replica up for 30 s only: its window is 30 s.
        let r2 = numbers(
            30,
            vec![
                version(
                    "prod/hello",
                    "1.0.0",
                    counts(0, 0, &[]),
                    counts(360, 0, &[(100, 360)]),
                ),
                version(
                    "prod/hello",
                    "1.1.0",
                    counts(0, 0, &[]),
                    counts(40, 12, &[(120, 40)]),
                ),
                version(
                    "prod/hello",
                    "pinned",
                    counts(0, 0, &[]),
                    counts(2, 0, &[(90, 2)]),
                ),
                // Idle in the window: listed by the replica, not shown.
                version("prod/hello", "0.1.0", counts(9, 0, &[]), counts(0, 0, &[])),
            ],
        );
        let view = live_view("prod/hello", &split, &[&r1, &r2]);
        let names: Vec<&str> = view.iter().map(|v| v.version.as_str()).collect();
        assert_eq!(names, ["1.0.0", "1.1.0", "0.9.0", "pinned"]);
        let stable = &view[0];
        assert_eq!(
            (stable.requests, stable.failures, stable.weight),
            (900, 0, 900_000)
        );
        assert_eq!(stable.share, Some(900.0 / 1002.0));
        assert!((stable.requests_per_second - (540.0 / 60.0 + 360.0 / 30.0)).abs() < 1e-9);
        assert_eq!(stable.error_rate, Some(0.0));
        let canary = &view[1];
        assert_eq!((canary.requests, canary.failures), (100, 30));
        assert_eq!(canary.share, Some(100.0 / 1002.0));
        assert_eq!(canary.error_rate, Some(0.3));
        assert!(canary.p99_ms.unwrap() > stable.p99_ms.unwrap());
        let idle = &view[2];
        assert_eq!(
            (idle.requests, idle.share, idle.error_rate, idle.p50_ms),
            (0, Some(0.0), None, None)
        );
    }

    #[test]
    fn live_view_without_traffic_has_no_shares() {
        let split = [crate::TrafficTarget::new("1.0.0", 1_000_000)];
        let view = live_view("prod/hello", &split, &[]);
        assert_eq!(view.len(), 1);
        assert_eq!(view[0].share, None);
        assert_eq!(view[0].requests_per_second, 0.0);
    }

    #[test]
    fn health_needs_enough_requests_before_any_verdict() {
        let rule = HealthRule::default();
        let live = |requests, failures| {
            let c = counts(requests, failures, &[]);
            VersionLive {
                version: "1".into(),
                weight: 0,
                requests,
                failures,
                share: None,
                requests_per_second: 0.0,
                error_rate: c.error_rate(),
                p50_ms: None,
                p99_ms: None,
            }
        };
        assert_eq!(rule.judge(&live(0, 0)), Health::Unknown);
        assert_eq!(rule.judge(&live(19, 19)), Health::Unknown);
        assert_eq!(rule.judge(&live(20, 1)), Health::Healthy);
        assert_eq!(
            rule.judge(&live(100, 6)),
            Health::Failing { error_rate: 0.06 }
        );
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        fn any_counts() -> impl Strategy<Value = Counts> {
            (
                0u64..1_000_000,
                0u64..1_000_000,
                proptest::collection::btree_map(0u16..(BUCKETS as u16 + 4), 0u64..1_000, 0..12),
            )
                .prop_map(|(requests, failures, latency)| Counts {
                    requests,
                    failures,
                    latency,
                })
        }

        /// Equal as histograms: a bucket at zero is the same as no bucket.
        fn same(a: &Counts, b: &Counts) -> bool {
            let nonzero = |c: &Counts| -> Latency {
                c.latency
                    .iter()
                    .filter(|(_, &n)| n > 0)
                    .map(|(&k, &n)| (k, n))
                    .collect()
            };
            a.requests == b.requests && a.failures == b.failures && nonzero(a) == nonzero(b)
        }

        proptest! {
            #[test]
            fn merge_is_commutative(a in any_counts(), b in any_counts()) {
                let mut ab = a.clone();
                ab.add(&b);
                let mut ba = b.clone();
                ba.add(&a);
                prop_assert!(same(&ab, &ba));
            }

            #[test]
            fn merge_is_associative(a in any_counts(), b in any_counts(), c in any_counts()) {
                let mut left = a.clone();
                left.add(&b);
                left.add(&c);
                let mut bc = b.clone();
                bc.add(&c);
                let mut right = a.clone();
                right.add(&bc);
                prop_assert!(same(&left, &right));
            }

            #[test]
            fn merged_then_subtracted_gives_back_the_addition(a in any_counts(), b in any_counts()) {
                let mut ab = a.clone();
                ab.add(&b);
                prop_assert!(same(&ab.since(&a), &b));
            }

            #[test]
            fn the_live_view_accounts_for_every_request_of_the_function(
                replicas in proptest::collection::vec(
                    (1u32..=60, proptest::collection::vec((0usize..4, any_counts()), 0..6)),
                    0..4,
                ),
            ) {
                let names = ["1", "2", "3", "4"];
                let all: Vec<Numbers> = replicas
                    .iter()
                    .map(|(seconds, versions)| Numbers {
                        at: String::new(),
                        window_seconds: *seconds,
                        versions: versions
                            .iter()
                            .map(|(i, c)| VersionNumbers {
                                function: "prod/f".into(),
                                version: names[*i].into(),
                                total: c.clone(),
                                window: c.clone(),
                            })
                            .collect(),
                        omitted: 0,
                    })
                    .collect();
                let refs: Vec<&Numbers> = all.iter().collect();
                let split = [crate::TrafficTarget::new("1", 1_000_000)];
                let view = live_view("prod/f", &split, &refs);
                let expected: u64 = all.iter().flat_map(|n| &n.versions).map(|v| v.window.requests).sum();
                prop_assert_eq!(view.iter().map(|v| v.requests).sum::<u64>(), expected);
                prop_assert_eq!(&view[0].version, "1");
                if expected > 0 {
                    let shares: f64 = view.iter().map(|v| v.share.unwrap()).sum();
                    prop_assert!((shares - 1.0).abs() < 1e-9, "shares sum to {}", shares);
                } else {
                    prop_assert!(view.iter().all(|v| v.share.is_none()));
                }
            }

            #[test]
            fn a_reading_minus_itself_is_empty(a in any_counts()) {
                prop_assert!(a.since(&a).is_empty());
                let reading = Reading {
                    started_at: "t".into(),
                    totals: [(VersionKey { function: "f".into(), version: "v".into() }, a)].into(),
                };
                prop_assert_eq!(reading.since(&reading), Some(BTreeMap::new()));
            }

            #[test]
            fn quantiles_are_monotone_and_inside_the_used_buckets(c in any_counts(), q1 in 0.0f64..=1.0, q2 in 0.0f64..=1.0) {
                let (lo, hi) = if q1 <= q2 { (q1, q2) } else { (q2, q1) };
                match (c.quantile_ms(lo), c.quantile_ms(hi)) {
                    (Some(a), Some(b)) => {
                        prop_assert!(a <= b, "q{lo} = {a} > q{hi} = {b}");
                        let used: Vec<u16> = c.latency.iter().filter(|(_, &n)| n > 0).map(|(&k, _)| k).collect();
                        let min = bucket_lower(used[0]) as f64 / 1000.0;
                        let max = bucket_lower(used[used.len() - 1].saturating_add(1)) as f64 / 1000.0;
                        prop_assert!(min <= a && b <= max);
                    }
                    (None, None) => prop_assert!(c.latency.values().all(|&n| n == 0)),
                    other => prop_assert!(false, "one quantile without the other: {other:?}"),
                }
            }

            #[test]
            fn a_quantile_is_within_an_eighth_of_the_exact_value(values in proptest::collection::vec(0u64..100_000_000, 1..200), q in 0.0f64..=1.0) {
                let mut c = Counts::default();
                for &v in &values {
                    *c.latency.entry(bucket_of(v)).or_default() += 1;
                    c.requests += 1;
                }
                let mut sorted = values.clone();
                sorted.sort_unstable();
                // The value of rank ceil(q n) is in the same bucket as the estimate.
                let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
                let exact = sorted[rank - 1];
                let estimate_us = c.quantile_ms(q).unwrap() * 1000.0;
                let b = bucket_of(exact);
                prop_assert!(bucket_lower(b) as f64 - 1e-6 <= estimate_us && estimate_us <= bucket_lower(b + 1) as f64 + 1e-6,
                    "exact {exact} (bucket {b}), estimate {estimate_us}");
            }
        }
    }
}
