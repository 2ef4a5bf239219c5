//! Where a command's time goes, printed on stderr with `SWITCHYARD_TIMING=1`.
//!
//! Stages are marked from `main`'s start: `kubeconfig` (reading and loading it, building the
//! client), `read` (the reads before a write), `write` (the conditional write itself), `wait`
//! (readiness or router acknowledgements). Process start is what an outside clock sees on top.

use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Clock {
    start: Instant,
    last: Instant,
    stages: Vec<(&'static str, Duration)>,
}

static CLOCK: Mutex<Option<Clock>> = Mutex::new(None);

/// Starts the clock; call first thing in `main`.
pub fn start() {
    let now = Instant::now();
    if let Ok(mut c) = CLOCK.lock() {
        *c = Some(Clock {
            start: now,
            last: now,
            stages: Vec::new(),
        });
    }
}

/// Ends the stage `name` now: it lasted since the previous mark.
pub fn mark(name: &'static str) {
    let now = Instant::now();
    if let Ok(mut guard) = CLOCK.lock() {
        if let Some(c) = guard.as_mut() {
            let d = now - c.last;
            c.last = now;
            c.stages.push((name, d));
        }
    }
}

/// Prints the breakdown on stderr when `SWITCHYARD_TIMING` is set.
pub fn report() {
    if std::env::var_os("SWITCHYARD_TIMING").is_none_or(|v| v.is_empty() || v == "0") {
        return;
    }
    let Ok(guard) = CLOCK.lock() else { return };
    let Some(c) = guard.as_ref() else { return };
    let mut merged: Vec<(&'static str, Duration)> = Vec::new();
    for (name, d) in &c.stages {
        match merged.iter_mut().find(|(n, _)| n == name) {
            Some((_, total)) => *total += *d,
            None => merged.push((name, *d)),
        }
    }
    let parts: Vec<String> = merged
        .iter()
        .map(|(n, d)| format!("{n}={:.1}ms", d.as_secs_f64() * 1000.0))
        .collect();
    eprintln!(
        "timing: {} total={:.1}ms",
        parts.join(" "),
        c.start.elapsed().as_secs_f64() * 1000.0
    );
}
