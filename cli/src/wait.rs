//! Waiting: for a managed version to become ready, and for every live router replica to
//! serve a write of a Function, as its report says (docs/protocol.md).

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use switchyard_core::protocol;

use crate::exit::{fail, Code};
use crate::store::{FunctionState, Readiness, Reports, Router, Store};
use crate::timing;
use switchyard_core::report::RouterReportStatus;

/// How the routers took a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Live replicas that serve it.
    pub routers: usize,
    /// From the write to the last replica's report of it.
    pub elapsed: Duration,
    /// Replicas that were live when the wait began and stopped being live before it ended
    /// (their Lease expired or was deleted); they are not counted in `routers`.
    pub left: Vec<String>,
}

fn live(routers: &[Router]) -> Vec<String> {
    routers
        .iter()
        .filter(|r| r.live)
        .map(|r| r.name.clone())
        .collect()
}

/// How often the live line on a terminal is redrawn (for its clock).
const REDRAW: Duration = Duration::from_millis(100);

/// The live line of a router wait: `1/2 routers · r2 pending · 3.1 s`.
pub fn progress_line(summary: &protocol::AckSummary, elapsed: Duration) -> String {
    let mut line = format!(
        "{}/{} routers",
        summary.applied.len() + summary.rejected.len(),
        summary.live()
    );
    if !summary.pending.is_empty() {
        line.push_str(&format!(" · {} pending", summary.pending.join(", ")));
    }
    if let Some((_, why)) = summary.waiting.first() {
        line.push_str(&format!(" ({why})"));
    }
    line.push_str(&format!(" · {:.1} s", elapsed.as_secs_f64()));
    line
}

/// The replicas in `before` that are not in `now`, in `before`'s order.
fn gone(before: &[String], now: &[String]) -> Vec<String> {
    before
        .iter()
        .filter(|name| !now.contains(name))
        .cloned()
        .collect()
}

/// Where the live replicas stand on the write that left `written` as it is, by their reports
/// (`protocol::summarize`); a resourceVersion that cannot be compared is an error (exit 1).
fn standing(
    written: &FunctionState,
    live: &[String],
    reports: &Reports,
) -> anyhow::Result<protocol::AckSummary> {
    let view: Vec<(String, Option<&RouterReportStatus>)> = live
        .iter()
        .map(|name| {
            let report = reports.iter().find(|(n, _)| n == name).map(|(_, r)| r);
            (name.clone(), report)
        })
        .collect();
    protocol::summarize(
        &view,
        &written.namespace,
        &written.name,
        &written.revision,
        written.generation,
    )
    .map_err(|e| fail(Code::Error, format!("function {}: {e}", written.name)))
}

/// The live replicas that serve `f` as it is now (its generation or a newer one).
pub async fn serving(store: &dyn Store, f: &FunctionState) -> anyhow::Result<Vec<String>> {
    let routers = store.reports(Some(f)).await?;
    let live = live(&routers);
    let reports: Reports = routers
        .into_iter()
        .filter_map(|r| Some((r.name, r.report?)))
        .collect();
    Ok(standing(f, &live, &reports)?.applied)
}

/// The Routers column (`switchyard.dev/routers`) when nobody waited, or a wait could not tell.
pub const UNCONFIRMED: &str = switchyard_core::protocol::ROUTERS_UNCONFIRMED;

/// The Routers column after a wait that ended on `summary`: `3/3` when every live replica
/// serves the write, else how many do and who does not yet (`2/3 (r2 pending)`) or refuses
/// it (`1/2 (r2 rejected)`).
pub fn routers_note(summary: &protocol::AckSummary) -> String {
    let count = format!("{}/{}", summary.applied.len(), summary.live());
    if let Some((replica, _)) = summary.rejected.first() {
        return format!("{count} ({replica} rejected)");
    }
    if summary.pending.is_empty() {
        return count;
    }
    format!("{count} ({} pending)", summary.pending.join(", "))
}

/// What a router wait found, and how the Routers column says it ([`routers_note`]).
pub struct Waited {
    /// How the routers took the write, or why the wait failed.
    pub result: anyhow::Result<Applied>,
    /// The value for `switchyard.dev/routers`.
    pub note: String,
}

/// What a wait may be handed from before the write: the replicas as read with the function,
/// and the report watch opened while the write was in flight ([`Store::watch_reports_ahead`]).
/// Either missing is read or opened when the wait starts.
#[derive(Default)]
pub struct Ahead {
    /// The router replicas (their Leases).
    pub routers: Option<Vec<Router>>,
    /// The report watch.
    pub reports: Option<futures::stream::BoxStream<'static, anyhow::Result<Reports>>>,
}

/// Waits until every live router replica serves `written` (its resourceVersion and
/// generation): the replicas' reports are watched, the Leases re-read every
/// [`Store::router_refresh`] (a replica whose Lease expires stops counting, and is named on
/// stderr). A replica still waiting for a version keeps the wait going; one that refuses the
/// generation ends it at once (exit 1). `ahead` may hold the replicas as read just before
/// the write and the report watch already open; `since` is when the write was sent. On a terminal, a live line shows who is
/// still pending.
pub async fn routers(
    store: &dyn Store,
    written: &FunctionState,
    ahead: Ahead,
    timeout: Duration,
    since: Instant,
) -> Waited {
    let mut note = UNCONFIRMED.to_string();
    let result = wait_routers(store, written, ahead, timeout, since, &mut note).await;
    Waited { result, note }
}

/// [`routers`], keeping `note` current with each standing seen.
async fn wait_routers(
    store: &dyn Store,
    written: &FunctionState,
    ahead: Ahead,
    timeout: Duration,
    since: Instant,
    note: &mut String,
) -> anyhow::Result<Applied> {
    let name = &written.name;
    let generation = written.generation;
    let deadline = tokio::time::Instant::from_std(since + timeout);
    let location = store.location();
    let no_router = || {
        let message = if location.starts_with("store dir:") {
            format!(
                "function {name}: no router is running on {location} (the change is written; \
                 start one with `switchyard-router --store {}`)",
                location.trim_start_matches("store ")
            )
        } else {
            format!(
                "function {name}: no live router replica to wait for in {location} (the change is \
                 written; is the router installed and running?)"
            )
        };
        fail(Code::Timeout, message)
    };
    // Both in flight at once: the wait costs one round trip before the first report.
    let lease_read = async {
        match ahead.routers {
            Some(known) => Ok(known),
            None => store.routers().await,
        }
    };
    let watch = async {
        match ahead.reports {
            Some(open) => Ok(open),
            None => store.watch_reports(written).await,
        }
    };
    let (routers, mut events) = futures::try_join!(lease_read, watch)?;
    timing::mark("watch");
    let mut trace = Trace::new(since);
    let mut live_names = live(&routers);
    if live_names.is_empty() {
        return Err(no_router());
    }
    let mut reports: Reports = Vec::new();
    let mut line = Line::new();
    let mut left: Vec<String> = Vec::new();
    let mut refresh = tokio::time::interval(store.router_refresh());
    refresh.tick().await;
    let mut redraw = tokio::time::interval(REDRAW);
    loop {
        let summary = match standing(written, &live_names, &reports) {
            Ok(s) => s,
            Err(e) => {
                line.clear();
                return Err(e);
            }
        };
        if let Some((replica, why)) = summary.rejected.first() {
            line.clear();
            return Err(fail(
                Code::Error,
                format!(
                    "router replica {replica} rejected generation {generation} of function {name}: {why}"
                ),
            ));
        }
        trace.saw(&summary.applied);
        *note = routers_note(&summary);
        if summary.complete() {
            line.clear();
            trace.print();
            return Ok(Applied {
                routers: summary.live(),
                elapsed: since.elapsed(),
                left,
            });
        }
        if tokio::time::Instant::now() >= deadline {
            line.clear();
            let mut waiting = summary
                .pending
                .iter()
                .map(|r| match summary.waiting.iter().find(|(w, _)| w == r) {
                    Some((_, why)) => format!("{r} ({why})"),
                    None => r.clone(),
                })
                .collect::<Vec<_>>()
                .join(", ");
            if !left.is_empty() {
                waiting.push_str(&format!("; left while waiting: {}", left.join(", ")));
            }
            return Err(fail(
                Code::Timeout,
                format!(
                    "timed out after {} waiting for routers to apply generation {generation} of function {name}: \
                     {}/{} applied, waiting for {waiting} (the change is written)",
                    show(timeout),
                    summary.applied.len(),
                    summary.live(),
                ),
            ));
        }
        line.show(&progress_line(&summary, since.elapsed()));
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(now)) => reports = now,
                Some(Err(e)) => {
                    line.clear();
                    return Err(e);
                }
                // The server closed the watches: start again. A store retrying a busy API
                // server must not hold the wait past its deadline.
                None => {
                    if let Ok(watch) = tokio::time::timeout_at(deadline, store.watch_reports(written)).await {
                        events = watch?;
                    }
                }
            },
            _ = refresh.tick() => {
                let Ok(routers) = tokio::time::timeout_at(deadline, store.routers()).await else {
                    continue;
                };
                let now = live(&routers?);
                for replica in gone(&live_names, &now) {
                    line.clear();
                    eprintln!(
                        "router replica {replica} left while waiting (its Lease expired or was deleted); not counting it"
                    );
                    left.push(replica);
                }
                live_names = now;
                if live_names.is_empty() {
                    line.clear();
                    return Err(no_router());
                }
            }
            _ = redraw.tick(), if line.tty => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// With `SWITCHYARD_TIMING` set, when each replica was first seen serving the write, from the
/// write (the watch opened at the first mark), on one stderr line after the wait: where a
/// rollback's wait goes, replica by replica.
struct Trace {
    on: bool,
    since: Instant,
    seen: Vec<(String, Duration)>,
}

impl Trace {
    fn new(since: Instant) -> Trace {
        let on = std::env::var_os("SWITCHYARD_TIMING").is_some_and(|v| !v.is_empty() && v != "0");
        let mut t = Trace {
            on,
            since,
            seen: Vec::new(),
        };
        if on {
            t.seen.push(("(watch open)".to_string(), since.elapsed()));
        }
        t
    }

    fn saw(&mut self, applied: &[String]) {
        if !self.on {
            return;
        }
        for replica in applied {
            if !self.seen.iter().any(|(r, _)| r == replica) {
                self.seen.push((replica.clone(), self.since.elapsed()));
            }
        }
    }

    fn print(&self) {
        if self.on {
            // "+12.3 ms", not "=12.3ms": the stage list's parsers read only `stage=Nms`.
            let parts: Vec<String> = self
                .seen
                .iter()
                .map(|(r, d)| format!("{r} +{:.1} ms", d.as_secs_f64() * 1000.0))
                .collect();
            eprintln!("timing: from the write: {}", parts.join(", "));
        }
    }
}

/// A line on stderr redrawn in place on a terminal; nothing elsewhere (pipes and files get
/// only the final outcome).
struct Line {
    tty: bool,
    shown: bool,
}

impl Line {
    fn new() -> Line {
        Line {
            tty: std::io::stderr().is_terminal(),
            shown: false,
        }
    }

    fn show(&mut self, text: &str) {
        if self.tty {
            eprint!("\r\x1b[2K{text}");
            self.shown = true;
        }
    }

    fn clear(&mut self) {
        if self.shown {
            eprint!("\r\x1b[2K");
            self.shown = false;
        }
    }
}

/// A duration for people: `30s`, `1.5s`, `250ms`.
pub fn show(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{} ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

fn replicas(r: &Readiness) -> String {
    match (r.ready_replicas, r.desired_replicas) {
        (Some(a), Some(d)) => format!("{a}/{d} replicas available"),
        _ => "not ready".to_string(),
    }
}

/// The live line of a readiness wait: `waiting for hello@1.2.0: 1/3 ready · 4.2 s`
/// (`not ready` while the Deployment has no status to count from).
pub fn ready_line(function: &str, version: &str, r: &Readiness, elapsed: Duration) -> String {
    let count = match (r.ready_replicas, r.desired_replicas) {
        (Some(a), Some(d)) => format!("{a}/{d} ready"),
        _ => "not ready".to_string(),
    };
    format!(
        "waiting for {function}@{version}: {count} · {:.1} s",
        elapsed.as_secs_f64()
    )
}

/// Waits until version `version` of `function` is ready, showing a live progress line on a
/// terminal.
pub async fn ready(
    store: &dyn Store,
    function: &str,
    version: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut announced = false;
    loop {
        let versions = store.versions(function).await?;
        let Some(v) = versions.iter().find(|v| v.spec.version == version) else {
            return Err(fail(
                Code::Error,
                format!("version {version} of function {function} disappeared while waiting"),
            ));
        };
        if v.readiness.ready {
            if tty && announced {
                eprintln!();
            }
            return Ok(());
        }
        let elapsed = started.elapsed();
        if elapsed >= timeout {
            if tty && announced {
                eprintln!();
            }
            return Err(fail(
                Code::Timeout,
                format!(
                    "timed out after {} waiting for {function}@{version} to be ready: {} (it is deployed; \
                     wait longer with --timeout or check its Deployment)",
                    show(timeout),
                    v.readiness
                        .detail
                        .clone()
                        .unwrap_or_else(|| replicas(&v.readiness)),
                ),
            ));
        }
        let line = ready_line(function, version, &v.readiness, elapsed);
        if tty {
            eprint!("\r\x1b[2K{line}");
        } else if !announced {
            eprintln!("{line}");
        }
        announced = true;
        tokio::time::sleep(Duration::from_millis(250).min(timeout - elapsed)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_line_counts_reported_replicas_and_names_the_pending_ones() {
        let summary =
            |applied: &[&str], rejected: &[&str], pending: &[&str]| protocol::AckSummary {
                applied: applied.iter().map(|s| s.to_string()).collect(),
                rejected: rejected
                    .iter()
                    .map(|s| (s.to_string(), "why".to_string()))
                    .collect(),
                pending: pending.iter().map(|s| s.to_string()).collect(),
                waiting: Vec::new(),
            };
        let t = Duration::from_millis(3140);
        assert_eq!(
            progress_line(&summary(&["r1"], &[], &["r2"]), t),
            "1/2 routers · r2 pending · 3.1 s"
        );
        assert_eq!(
            progress_line(&summary(&[], &[], &["r1", "r2"]), Duration::ZERO),
            "0/2 routers · r1, r2 pending · 0.0 s"
        );
        assert_eq!(
            progress_line(&summary(&["a"], &["b"], &[]), t),
            "2/2 routers · 3.1 s"
        );
    }

    #[test]
    fn the_routers_column_counts_the_replicas_serving_and_names_the_others() {
        let summary = |applied: &[&str], rejected: &[&str], pending: &[&str]| {
            let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
            protocol::AckSummary {
                applied: names(applied),
                rejected: rejected
                    .iter()
                    .map(|s| (s.to_string(), "why".to_string()))
                    .collect(),
                pending: names(pending),
                waiting: Vec::new(),
            }
        };
        assert_eq!(routers_note(&summary(&["a", "b", "c"], &[], &[])), "3/3");
        assert_eq!(
            routers_note(&summary(&["r1", "r3"], &[], &["r2"])),
            "2/3 (r2 pending)"
        );
        assert_eq!(
            routers_note(&summary(&[], &[], &["r1", "r2"])),
            "0/2 (r1, r2 pending)"
        );
        assert_eq!(
            routers_note(&summary(&["r1"], &["r2"], &[])),
            "1/2 (r2 rejected)"
        );
    }

    #[test]
    fn the_readiness_line_counts_ready_replicas_of_the_desired_and_the_time_waited() {
        let r = |ready, desired| Readiness {
            ready: false,
            ready_replicas: ready,
            desired_replicas: desired,
            detail: None,
        };
        assert_eq!(
            ready_line(
                "hello",
                "1.2.0",
                &r(Some(1), Some(3)),
                Duration::from_millis(4210)
            ),
            "waiting for hello@1.2.0: 1/3 ready · 4.2 s"
        );
        assert_eq!(
            ready_line("hello", "1.2.0", &r(Some(0), None), Duration::ZERO),
            "waiting for hello@1.2.0: not ready · 0.0 s"
        );
    }

    #[test]
    fn replicas_that_left_are_those_no_longer_live() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            gone(&names(&["a", "b", "c"]), &names(&["c", "a", "d"])),
            names(&["b"])
        );
        assert!(gone(&names(&["a"]), &names(&["a", "b"])).is_empty());
    }
}
