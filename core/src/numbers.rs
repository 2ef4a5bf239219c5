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
pub fn bucket_of(micros: u64) -> u16 {
    if micros < EXACT {
        return micros as u16;
    }
    let e = 63 - u64::from(micros.leading_zeros());
    let sub = (micros >> (e - 3)) & (PER_OCTAVE - 1);
    (EXACT + (e - 4) * PER_OCTAVE + sub) as u16
}

/// The smallest latency, in microseconds, that falls into bucket `index`.
pub fn bucket_lower(index: u16) -> u64 {
    let i = u64::from(index);
    if i < EXACT {
        return i;
    }
    let e = 4 + (i - EXACT) / PER_OCTAVE;
    let sub = (i - EXACT) % PER_OCTAVE;
    (PER_OCTAVE + sub) << (e - 3)
}

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
}
