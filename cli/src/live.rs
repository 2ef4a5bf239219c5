//! How the live numbers of a Function's versions read in `status` and `list`: the table cells
//! (SHARE, REQ/S, ERRORS, P50, P99), the `-o json` fields, and the health column.
//!
//! The arithmetic (summing the live replicas' windows, quantiles, the health rule) is
//! `switchyard_core::numbers`; this only renders its [`VersionLive`].

use serde::Serialize;
use switchyard_core::numbers::{Health, HealthRule, VersionLive};

/// The live columns, in order, after the configured weight and readiness.
pub(crate) const HEADERS: [&str; 5] = ["SHARE", "REQ/S", "ERRORS", "P50", "P99"];

/// The live cells of one version, in [`HEADERS`] order; `-` where there is nothing to say
/// (no requests: no share, error rate or latency).
pub(crate) fn cells(v: &VersionLive) -> Vec<String> {
    vec![
        v.share.map_or_else(dash, percent),
        rate(v.requests_per_second),
        v.error_rate.map_or_else(dash, percent),
        v.p50_ms.map_or_else(dash, millis),
        v.p99_ms.map_or_else(dash, millis),
    ]
}

fn dash() -> String {
    "-".into()
}

/// A fraction as a percentage with one decimal: `0.124` → `12.4%`; a fraction that is not
/// zero never reads `0.0%`.
pub(crate) fn percent(fraction: f64) -> String {
    let p = fraction * 100.0;
    if p > 0.0 && p < 0.05 {
        "<0.1%".into()
    } else {
        format!("{p:.1}%")
    }
}

/// Requests per second: one decimal below 10 (`<0.1` for a trickle), whole up to 9,999, then
/// thousands.
pub(crate) fn rate(per_second: f64) -> String {
    if per_second <= 0.0 {
        "0".into()
    } else if per_second < 0.05 {
        // One request a minute is not "0.0".
        "<0.1".into()
    } else if per_second < 9.95 {
        format!("{per_second:.1}")
    } else if per_second < 9_999.5 {
        format!("{per_second:.0}")
    } else {
        format!("{:.1}k", per_second / 1000.0)
    }
}

/// A latency in milliseconds with two significant-ish digits: `0.42ms`, `3.1ms`, `250ms`,
/// `1.5s`.
pub(crate) fn millis(ms: f64) -> String {
    if ms < 0.995 {
        format!("{ms:.2}ms")
    } else if ms < 9.95 {
        format!("{ms:.1}ms")
    } else if ms < 999.5 {
        format!("{ms:.0}ms")
    } else {
        format!("{:.1}s", ms / 1000.0)
    }
}

/// A version's live numbers in `-o json` (beside its weight and readiness). Fractions are
/// 0.0 to 1.0, latencies milliseconds, `null` where there were no requests.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LiveJson {
    /// Requests in the window, all live replicas.
    pub requests: u64,
    /// Failures among them (5xx and upstream failures).
    pub failures: u64,
    /// Part of the Function's requests.
    pub share: Option<f64>,
    /// Requests per second.
    pub requests_per_second: f64,
    /// Failures per request.
    pub error_rate: Option<f64>,
    /// Median latency, ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency, ms.
    pub p99_ms: Option<f64>,
    /// `healthy`, `failing` or `unknown` (too few requests to judge).
    pub health: &'static str,
}

/// The JSON of one version's live numbers, judged by `rule`.
pub(crate) fn json(v: &VersionLive, rule: &HealthRule) -> LiveJson {
    LiveJson {
        requests: v.requests,
        failures: v.failures,
        share: v.share,
        requests_per_second: v.requests_per_second,
        error_rate: v.error_rate,
        p50_ms: v.p50_ms,
        p99_ms: v.p99_ms,
        health: health_word(rule.judge(v)),
    }
}

/// The word for a verdict, as in JSON.
pub(crate) fn health_word(h: Health) -> &'static str {
    match h {
        Health::Unknown => "unknown",
        Health::Healthy => "healthy",
        Health::Failing { .. } => "failing",
    }
}

/// The `list` column for a Function: the failing versions with their error rate
/// (`1.3.0 12.4% errors`), else `ok` when some version had enough traffic to judge, else `-`.
pub(crate) fn health_cell(view: &[VersionLive], rule: &HealthRule) -> String {
    let mut failing = Vec::new();
    let mut judged = false;
    for v in view {
        match rule.judge(v) {
            Health::Failing { error_rate } => {
                failing.push(format!("{} {} errors", v.version, percent(error_rate)));
            }
            Health::Healthy => judged = true,
            Health::Unknown => {}
        }
    }
    if !failing.is_empty() {
        failing.join(", ")
    } else if judged {
        "ok".into()
    } else {
        "-".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(version: &str, requests: u64, failures: u64) -> VersionLive {
        VersionLive {
            version: version.into(),
            weight: 500_000,
            requests,
            failures,
            share: Some(0.5),
            requests_per_second: requests as f64 / 60.0,
            error_rate: (requests > 0).then(|| failures as f64 / requests as f64),
            p50_ms: (requests > 0).then_some(1.234),
            p99_ms: (requests > 0).then_some(250.4),
        }
    }

    #[test]
    fn cells_read_share_rate_errors_and_latency() {
        assert_eq!(HEADERS.len(), cells(&live("1.3.0", 1, 0)).len());
        assert_eq!(
            cells(&live("1.3.0", 600, 186)),
            ["50.0%", "10", "31.0%", "1.2ms", "250ms"]
        );
    }

    #[test]
    fn a_version_without_requests_shows_dashes_not_zeros() {
        let mut v = live("1.3.0", 0, 0);
        v.share = None;
        assert_eq!(cells(&v), ["-", "0", "-", "-", "-"]);
    }

    #[test]
    fn numbers_keep_their_meaning_at_every_scale() {
        assert_eq!(percent(0.0), "0.0%");
        assert_eq!(percent(0.0001), "<0.1%");
        assert_eq!(percent(0.124), "12.4%");
        assert_eq!(percent(1.0), "100.0%");
        assert_eq!(rate(0.0), "0");
        assert_eq!(rate(1.0 / 60.0), "<0.1");
        assert_eq!(rate(0.05), "0.1");
        assert_eq!(rate(9.94), "9.9");
        assert_eq!(rate(9.96), "10");
        assert_eq!(rate(1234.4), "1234");
        assert_eq!(rate(25_300.0), "25.3k");
        assert_eq!(millis(0.4234), "0.42ms");
        assert_eq!(millis(3.04), "3.0ms");
        assert_eq!(millis(9.96), "10ms");
        assert_eq!(millis(999.0), "999ms");
        assert_eq!(millis(1_500.0), "1.5s");
    }

    #[test]
    fn json_fields_are_camel_case_fractions_and_milliseconds() {
        let rule = HealthRule::default();
        let value = serde_json::to_value(json(&live("1.3.0", 600, 186), &rule)).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "requests": 600,
                "failures": 186,
                "share": 0.5,
                "requestsPerSecond": 10.0,
                "errorRate": 0.31,
                "p50Ms": 1.234,
                "p99Ms": 250.4,
                "health": "failing",
            })
        );
        let idle = serde_json::to_value(json(&live("1.3.0", 0, 0), &rule)).unwrap();
        assert_eq!(idle["errorRate"], serde_json::Value::Null);
        assert_eq!(idle["health"], "unknown");
    }

    #[test]
    fn the_health_cell_names_failing_versions_and_never_passes_no_traffic() {
        let rule = HealthRule::default();
        assert_eq!(health_cell(&[], &rule), "-");
        assert_eq!(health_cell(&[live("1.2.0", 5, 0)], &rule), "-");
        assert_eq!(
            health_cell(&[live("1.2.0", 500, 1), live("1.3.0", 5, 5)], &rule),
            "ok"
        );
        assert_eq!(
            health_cell(&[live("1.2.0", 500, 1), live("1.3.0", 418, 52)], &rule),
            "1.3.0 12.4% errors"
        );
    }
}
