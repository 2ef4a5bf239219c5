//! What shadow copies count (issue 16): [`Stats`] per function and shadow version, kept across
//! table swaps in the [`Registry`], read by `/shadow`, `/metrics` and the replica's report
//! (`switchyard_core::shadow::ShadowNumbers`). Written by the request path with relaxed atomic
//! adds only; the example ring's lock is a worker's, never a request's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use switchyard_core::shadow::{
    cut_example_text, Differing, ShadowCounts, ShadowExample, ShadowNumbers,
};

use super::EXAMPLES;

/// Why a request was not copied, or a copy not compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Its method is not listed.
    Method = 0,
    /// Its body (declared or read) is over `maxBody`.
    Body,
    /// Its body was still arriving when it was forwarded (not buffered for a copy).
    Streamed,
    /// A connection upgrade (WebSocket): nothing to compare.
    Upgrade,
    /// The shadow version itself served it.
    Serving,
    /// The serving version's answer failed or did not end cleanly.
    Primary,
    /// An answer's body is over `maxBody`.
    Answer,
    /// The shadow version is served over https, which copies are not sent over (the CLI
    /// refuses such a shadow; this counts one written by other means instead of erroring).
    Https,
}

const SKIPS: [(Skip, &str); 8] = [
    (Skip::Method, "method"),
    (Skip::Body, "body-over-max"),
    (Skip::Streamed, "body-streamed"),
    (Skip::Upgrade, "upgrade"),
    (Skip::Serving, "served-by-shadow"),
    (Skip::Primary, "serving-failed"),
    (Skip::Answer, "answer-over-max"),
    (Skip::Https, "https-upstream"),
];

/// One differing copy, as `/shadow` and `shadow status` show it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Example {
    /// When it was compared, RFC 3339.
    pub at: String,
    /// The request method.
    pub method: String,
    /// The request target, as the client sent it.
    pub path: String,
    /// The serving version's status.
    pub serving: u16,
    /// The shadow version's status.
    pub shadow: u16,
    /// The first differing header, if any.
    pub header: Option<String>,
    /// Where the bodies first differ (a JSON path or `byte N`), if they do.
    pub body: Option<String>,
}

/// The counts of one function's shadow version; they outlive table swaps.
#[derive(Default)]
pub struct Stats {
    /// The `n` of `roll(n)` for the share: copies are exact like the split, not a coin flip.
    pub counter: AtomicU64,
    /// Copies handed to a worker.
    pub sent: AtomicU64,
    /// Copies whose two answers were compared.
    pub compared: AtomicU64,
    /// Compared and equal.
    pub matched: AtomicU64,
    /// Compared with a different status.
    pub differ_status: AtomicU64,
    /// Compared with a differing header.
    pub differ_header: AtomicU64,
    /// Compared with a differing body.
    pub differ_body: AtomicU64,
    /// The shadow version failed: refused, reset, malformed or slower than [`super::COPY_TIMEOUT`].
    pub errors: AtomicU64,
    /// Chosen while every slot was busy: not copied.
    pub dropped: AtomicU64,
    skipped: [AtomicU64; SKIPS.len()],
    /// Sum of the serving version's latency over compared copies, microseconds.
    pub serving_us: AtomicU64,
    /// Sum of the shadow version's latency over compared copies, microseconds.
    pub shadow_us: AtomicU64,
    examples: Mutex<(usize, Vec<Example>)>,
}

impl Stats {
    /// Counts a request not copied (or a copy not compared) for `why`.
    pub fn skip(&self, why: Skip) {
        self.skipped[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The skips for `why`.
    pub fn skipped(&self, why: Skip) -> u64 {
        self.skipped[why as usize].load(Ordering::Relaxed)
    }

    /// The last differing examples, oldest first.
    pub fn examples(&self) -> Vec<Example> {
        let Ok(ring) = self.examples.lock() else {
            return Vec::new();
        };
        let (next, list) = &*ring;
        let mut out = list[*next..].to_vec();
        out.extend_from_slice(&list[..*next]);
        out
    }

    /// Keeps `e` in the ring of the last [`EXAMPLES`] (a worker's lock, never the request's).
    pub(super) fn remember(&self, e: Example) {
        if let Ok(mut ring) = self.examples.lock() {
            let (next, list) = &mut *ring;
            if list.len() < EXAMPLES {
                list.push(e);
            } else {
                list[*next] = e;
                *next = (*next + 1) % EXAMPLES;
            }
        }
    }

    /// The counts as a report carries them (docs/protocol.md, "Shadow").
    pub fn counts(&self, function: &str, version: &str) -> ShadowCounts {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ShadowCounts {
            function: function.to_string(),
            version: version.to_string(),
            sent: n(&self.sent),
            compared: n(&self.compared),
            matched: n(&self.matched),
            differing: Differing {
                status: n(&self.differ_status),
                header: n(&self.differ_header),
                body: n(&self.differ_body),
            },
            errors: n(&self.errors),
            dropped: n(&self.dropped),
            skipped: SKIPS
                .iter()
                .map(|(why, name)| (name.to_string(), self.skipped(*why)))
                .filter(|(_, count)| *count > 0)
                .collect(),
            serving_us: n(&self.serving_us),
            shadow_us: n(&self.shadow_us),
            examples: self
                .examples()
                .into_iter()
                .map(|e| ShadowExample {
                    at: e.at,
                    method: cut_example_text(&e.method),
                    path: cut_example_text(&e.path),
                    serving_status: e.serving,
                    shadow_status: e.shadow,
                    header: e.header.as_deref().map(cut_example_text),
                    body: e.body.as_deref().map(cut_example_text),
                })
                .collect(),
        }
    }

    fn to_json(&self, function: &str, version: &str) -> Value {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let compared = n(&self.compared);
        let mean = |sum: u64| {
            if compared == 0 {
                Value::Null
            } else {
                json!(sum as f64 / compared as f64 / 1000.0)
            }
        };
        let skipped: serde_json::Map<String, Value> = SKIPS
            .iter()
            .map(|(s, name)| (name.to_string(), json!(self.skipped(*s))))
            .collect();
        json!({
            "function": function,
            "version": version,
            "sent": n(&self.sent),
            "compared": compared,
            "matched": n(&self.matched),
            "differing": {
                "status": n(&self.differ_status),
                "header": n(&self.differ_header),
                "body": n(&self.differ_body),
            },
            "errors": n(&self.errors),
            "dropped": n(&self.dropped),
            "skipped": skipped,
            "servingMeanMs": mean(n(&self.serving_us)),
            "shadowMeanMs": mean(n(&self.shadow_us)),
            "examples": self.examples().iter().map(|e| json!({
                "at": e.at,
                "method": e.method,
                "path": e.path,
                "servingStatus": e.serving,
                "shadowStatus": e.shadow,
                "header": e.header,
                "body": e.body,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Every function's shadow counts, by `namespace/name` and shadow version. Locked when a table
/// is built and when `/shadow` or `/metrics` is read, never per request.
#[derive(Default)]
pub struct Registry {
    by: Mutex<HashMap<(String, String), Arc<Stats>>>,
}

impl Registry {
    /// The counts of `function`'s shadow `version` (new ones on first use).
    pub fn stats(&self, function: &str, version: &str) -> Arc<Stats> {
        let Ok(mut by) = self.by.lock() else {
            return Arc::default();
        };
        Arc::clone(
            by.entry((function.to_string(), version.to_string()))
                .or_default(),
        )
    }

    fn sorted(&self) -> Vec<((String, String), Arc<Stats>)> {
        let Ok(by) = self.by.lock() else {
            return Vec::new();
        };
        let mut all: Vec<_> = by.iter().map(|(k, v)| (k.clone(), Arc::clone(v))).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// What the replica reports of its copies, read `at` (RFC 3339): every shadowed version
    /// that counted something, capped (see [`ShadowNumbers::new`]).
    pub fn report(&self, at: String) -> ShadowNumbers {
        let all = self
            .sorted()
            .iter()
            .map(|((f, v), s)| s.counts(f, v))
            .collect();
        ShadowNumbers::new(at, all)
    }

    /// `/shadow`: every function's counts and examples.
    pub fn to_json(&self) -> Value {
        let list: Vec<Value> = self
            .sorted()
            .iter()
            .map(|((f, v), s)| s.to_json(f, v))
            .collect();
        json!({ "shadows": list })
    }

    /// The counts in the Prometheus text format.
    pub fn render(&self, out: &mut Vec<u8>) {
        use std::fmt::Write;
        let all = self.sorted();
        if all.is_empty() {
            return;
        }
        let mut text = String::new();
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(text, "# HELP switchyard_shadow_copies_total Shadow copies by outcome.\n# TYPE switchyard_shadow_copies_total counter");
        for ((f, v), s) in &all {
            for (outcome, value) in [
                ("sent", n(&s.sent)),
                ("compared", n(&s.compared)),
                ("matched", n(&s.matched)),
                ("differing_status", n(&s.differ_status)),
                ("differing_header", n(&s.differ_header)),
                ("differing_body", n(&s.differ_body)),
                ("error", n(&s.errors)),
                ("dropped", n(&s.dropped)),
            ] {
                let _ = writeln!(text, "switchyard_shadow_copies_total{{function=\"{f}\",version=\"{v}\",outcome=\"{outcome}\"}} {value}");
            }
        }
        let _ = writeln!(text, "# HELP switchyard_shadow_skipped_total Requests not copied, or copies not compared, by reason.\n# TYPE switchyard_shadow_skipped_total counter");
        for ((f, v), s) in &all {
            for (why, name) in SKIPS {
                let _ = writeln!(text, "switchyard_shadow_skipped_total{{function=\"{f}\",version=\"{v}\",reason=\"{name}\"}} {}", s.skipped(why));
            }
        }
        let _ = writeln!(text, "# HELP switchyard_shadow_latency_seconds_sum Latency summed over compared copies, by side.\n# TYPE switchyard_shadow_latency_seconds_sum counter");
        for ((f, v), s) in &all {
            for (side, us) in [("serving", n(&s.serving_us)), ("shadow", n(&s.shadow_us))] {
                let _ = writeln!(text, "switchyard_shadow_latency_seconds_sum{{function=\"{f}\",version=\"{v}\",side=\"{side}\"}} {}", us as f64 / 1e6);
            }
        }
        out.extend_from_slice(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_ring_keeps_the_last_five_in_order() {
        let stats = Stats::default();
        for i in 0..8u16 {
            stats.remember(Example {
                serving: i,
                ..Example::default()
            });
        }
        let kept: Vec<u16> = stats.examples().iter().map(|e| e.serving).collect();
        assert_eq!(kept, [3, 4, 5, 6, 7]);
    }
}
