//! `shadow FN VERSION --percent P …` and `shadow stop FN`: mirrored traffic to a version no
//! user sees, whose answers the routers compare with the serving version's (issue 16);
//! `shadow status FN`: what those copies found, summed over the live routers; and the check
//! `promote` and `traffic` make before giving a version weight.

use std::io::IsTerminal as _;

use serde::Serialize;
use switchyard_core::plan;
use switchyard_core::resources::{ShadowSpec, MAX_SHADOW_BODY};
use switchyard_core::shadow::{self as core_shadow, ShadowCounts, ShadowNumbers};
use switchyard_core::validate;
use switchyard_core::weight::{parse_percent, Percent};

use crate::args::{self, ShadowStop};
use crate::exit::{self, fail, Code};
use crate::output::{self, Table};
use crate::store::{FunctionState, Router, Store};
use crate::write::{run as write, Next};

/// What `shadow FN VERSION` asks for, read from the flags before the store is touched (the
/// version is resolved later: it may be a tag or `@latest`).
#[derive(Debug, Clone)]
pub struct Prepared {
    spec: ShadowSpec,
}

/// Reads a size: bytes, or a number with `KiB`/`MiB` (`K`/`M` and `Ki`/`Mi` too).
pub fn parse_size(text: &str) -> anyhow::Result<u64> {
    let bad = || {
        fail(
            Code::Invalid,
            format!("--max-body {text:?}: expected bytes, or a size like 64KiB or 1MiB"),
        )
    };
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let scale = match unit.trim() {
        "" | "B" => 1,
        "K" | "Ki" | "KiB" => 1024,
        "M" | "Mi" | "MiB" => 1024 * 1024,
        _ => return Err(bad()),
    };
    number.checked_mul(scale).ok_or_else(bad)
}

/// Checks the flags of `shadow FN VERSION` (nothing for `shadow stop`).
pub fn prepare(args: &args::Shadow) -> anyhow::Result<Option<Prepared>> {
    if args.stop.is_some() {
        return Ok(None);
    }
    let percent = args.percent.as_deref().unwrap_or_default();
    let share =
        parse_percent(percent).map_err(|e| fail(Code::Invalid, format!("--percent: {e}")))?;
    let max_body = args.max_body.as_deref().map(parse_size).transpose()?;
    if max_body.is_some_and(|m| m > MAX_SHADOW_BODY) {
        return Err(fail(
            Code::Invalid,
            format!(
                "--max-body {}: at most 8MiB",
                args.max_body.as_deref().unwrap_or_default()
            ),
        ));
    }
    let spec = ShadowSpec {
        // A placeholder that passes the checks below; the resolved version replaces it.
        version: "0.0.0".into(),
        share,
        methods: args
            .methods
            .iter()
            .map(|m| m.trim().to_ascii_uppercase())
            .collect(),
        max_body,
        ignore_headers: args
            .ignore_header
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect(),
        ignore_json: args
            .ignore_json
            .iter()
            .map(|p| p.trim().to_string())
            .collect(),
    };
    validate::shadow(&spec).map_err(|e| fail(Code::Invalid, e.to_string()))?;
    Ok(Some(Prepared { spec }))
}

/// `shadow FN VERSION …` or `shadow stop FN`.
pub async fn run(
    store: &dyn Store,
    args: args::Shadow,
    prepared: Option<Prepared>,
) -> anyhow::Result<()> {
    if let Some(ShadowStop::Status(status_args)) = args.stop {
        return status(store, status_args).await;
    }
    if let Some(ShadowStop::Stop(stop)) = &args.stop {
        return write(store, &stop.function, &stop.write, |input| {
            let name = &input.function.name;
            match plan::shadow_stop(name, &input.function.spec, &input.states(), input.change)
                .map_err(exit::plan)?
            {
                Some(spec) => Ok(Next::from(spec)),
                None => Ok(Next::Unchanged(format!(
                    "{name}: nothing is shadowed; nothing to change"
                ))),
            }
        })
        .await;
    }
    let (Some(function), Some(version), Some(prepared)) = (&args.function, &args.version, prepared)
    else {
        return Err(fail(
            Code::Invalid,
            "shadow takes FN VERSION --percent P, or stop FN",
        ));
    };
    let unsafe_methods = prepared.spec.unsafe_methods();
    if !unsafe_methods.is_empty() && !args.write.dry_run {
        eprintln!(
            "warning: the shadow version will execute {} requests too (copies carry x-switchyard-shadow: 1)",
            unsafe_methods.join(", ")
        );
    }
    write(store, function, &args.write, |input| {
        let name = &input.function.name;
        let spec = ShadowSpec {
            version: input.resolve(version)?,
            ..prepared.spec.clone()
        };
        // Copies are sent over plain HTTP: an https version would only ever count errors.
        if let Some(v) = input
            .versions
            .iter()
            .find(|v| v.spec.version == spec.version)
        {
            core_shadow::check_target(&spec.version, v.spec.endpoint.as_deref())
                .map_err(|e| fail(Code::Invalid, e.to_string()))?;
        }
        match plan::shadow(
            name,
            &input.function.spec,
            &spec,
            &input.states(),
            input.change,
        )
        .map_err(exit::plan)?
        {
            Some(next) => Ok(Next::from(next)),
            None => Ok(Next::Unchanged(format!(
                "{name}: already shadowing {} at {}; nothing to change",
                spec.version,
                Percent(spec.share)
            ))),
        }
    })
    .await
}

/// One phrase for a shadow spec, as `--dry-run` and the change line show it:
/// `1.3.0 10% GET,HEAD maxBody=1MiB ignore=date,$.ts`.
pub fn describe(s: &ShadowSpec) -> String {
    let max = s.effective_max_body();
    let size = if max.is_multiple_of(1024 * 1024) {
        format!("{}MiB", max / (1024 * 1024))
    } else if max.is_multiple_of(1024) {
        format!("{}KiB", max / 1024)
    } else {
        format!("{max}B")
    };
    let mut text = format!(
        "{} {} {} maxBody={size}",
        s.version,
        Percent(s.share),
        s.effective_methods().join(",")
    );
    let ignored: Vec<&str> = s
        .ignore_headers
        .iter()
        .chain(&s.ignore_json)
        .map(String::as_str)
        .collect();
    if !ignored.is_empty() {
        text.push_str(" ignore=");
        text.push_str(&ignored.join(","));
    }
    text
}

/// The shadow counts of the live replicas' reports.
fn live_counts(routers: &[Router]) -> Vec<&ShadowNumbers> {
    routers
        .iter()
        .filter(|r| r.live)
        .filter_map(|r| r.report.as_ref()?.shadow.as_ref())
        .collect()
}

/// One shadowed version's counts summed over the live routers, with a verdict.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ShadowRow {
    /// `matching` (compared, none differed), `differing`, or `no comparison yet`.
    verdict: &'static str,
    /// Compared copies that differed in any way.
    differed: u64,
    /// Mean latency over compared copies, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    serving_mean_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow_mean_ms: Option<f64>,
    #[serde(flatten)]
    counts: ShadowCounts,
}

impl ShadowRow {
    fn new(counts: ShadowCounts) -> ShadowRow {
        let verdict = if counts.differed() > 0 {
            "differing"
        } else if counts.compared > 0 {
            "matching"
        } else {
            "no comparison yet"
        };
        let mean = counts.mean_ms();
        ShadowRow {
            verdict,
            differed: counts.differed(),
            serving_mean_ms: mean.map(|m| m.0),
            shadow_mean_ms: mean.map(|m| m.1),
            counts,
        }
    }

    /// `1.3.0: differing · 12 of 118 compared differ (status 2, header 0, body 12) · 2 errors
    /// · 0 dropped`.
    fn phrase(&self) -> String {
        let c = &self.counts;
        format!(
            "{}: {} · {} of {} compared differ (status {}, header {}, body {}) · {} errors · {} dropped",
            c.version,
            self.verdict,
            self.differed,
            c.compared,
            c.differing.status,
            c.differing.header,
            c.differing.body,
            c.errors,
            c.dropped
        )
    }
}

/// What `shadow status FN` shows, and `status FN` under `shadow`.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ShadowView {
    function: String,
    /// The shadow the Function asks for now; none after `shadow stop`.
    #[serde(skip_serializing_if = "Option::is_none")]
    active: Option<ShadowSpec>,
    /// The same in one phrase.
    #[serde(skip_serializing_if = "Option::is_none")]
    active_text: Option<String>,
    /// Live routers whose reports were summed.
    live_routers: usize,
    /// Every version shadowed while the live routers ran, summed over them.
    versions: Vec<ShadowRow>,
}

/// The shadow of `f` as the live routers report it; `None` when nothing is shadowed and no
/// live router counted anything for it.
pub(crate) fn view(f: &FunctionState, routers: &[Router]) -> Option<ShadowView> {
    let key = format!("{}/{}", f.namespace, f.name);
    let versions: Vec<ShadowRow> = core_shadow::summed(&key, &live_counts(routers))
        .into_iter()
        .map(ShadowRow::new)
        .collect();
    if f.spec.shadow.is_none() && versions.is_empty() {
        return None;
    }
    Some(ShadowView {
        function: f.name.clone(),
        active_text: f.spec.shadow.as_deref().map(describe),
        active: f.spec.shadow.as_deref().cloned(),
        live_routers: routers.iter().filter(|r| r.live).count(),
        versions,
    })
}

/// The line `status FN` shows for a shadow: the active one's verdict first.
pub(crate) fn status_line(v: &ShadowView) -> String {
    let active = v.active.as_ref().map(|s| s.version.as_str());
    let mut parts: Vec<String> = Vec::new();
    match &v.active_text {
        Some(text) => parts.push(text.clone()),
        None => parts.push("stopped".into()),
    }
    let mut rows: Vec<&ShadowRow> = v.versions.iter().collect();
    rows.sort_by_key(|r| Some(r.counts.version.as_str()) != active);
    if rows.is_empty() {
        parts.push("nothing copied yet".into());
    }
    parts.extend(rows.iter().map(|r| r.phrase()));
    parts.join("; ")
}

fn view_text(v: &ShadowView) -> String {
    let mut out = format!(
        "Function:  {}\nShadow:    {}\nRouters:   {} live\n\n",
        v.function,
        v.active_text.as_deref().unwrap_or("none (stopped)"),
        v.live_routers
    );
    if v.versions.is_empty() {
        out.push_str("No copies counted yet by the live routers.\n");
        return out;
    }
    let mut t = Table::new(&[
        "VERSION",
        "VERDICT",
        "SENT",
        "COMPARED",
        "MATCHED",
        "DIFFER S/H/B",
        "ERRORS",
        "DROPPED",
        "SKIPPED",
        "SERVING",
        "SHADOW",
    ]);
    let ms = |m: Option<f64>| m.map_or("-".to_string(), crate::live::millis);
    for r in &v.versions {
        let c = &r.counts;
        let skipped: Vec<String> = c.skipped.iter().map(|(k, n)| format!("{k}={n}")).collect();
        t.row(vec![
            c.version.clone(),
            r.verdict.into(),
            c.sent.to_string(),
            c.compared.to_string(),
            c.matched.to_string(),
            format!(
                "{}/{}/{}",
                c.differing.status, c.differing.header, c.differing.body
            ),
            c.errors.to_string(),
            c.dropped.to_string(),
            if skipped.is_empty() {
                "-".into()
            } else {
                skipped.join(",")
            },
            ms(r.serving_mean_ms),
            ms(r.shadow_mean_ms),
        ]);
    }
    out.push_str(&t.render());
    for r in v.versions.iter().filter(|r| !r.counts.examples.is_empty()) {
        out.push_str(&format!(
            "\nLast differing answers of {}:\n",
            r.counts.version
        ));
        for e in &r.counts.examples {
            out.push_str(&format!("  {}  {}\n", e.at, e.describe()));
        }
    }
    out
}

/// `shadow status FN [-o json|yaml] [--watch]`.
async fn status(store: &dyn Store, args: args::Status) -> anyhow::Result<()> {
    let name = &args.function;
    let show = |f: &FunctionState, routers: &[Router]| -> anyhow::Result<Option<ShadowView>> {
        let v = view(f, routers);
        let shown = v.as_ref();
        let text = || match shown {
            Some(v) => view_text(v),
            None => {
                format!("{name}: nothing is shadowed, and the live routers counted no copies\n")
            }
        };
        output::print(args.output.format, &shown, text)?;
        Ok(v)
    };
    let f = super::function(store, name).await?;
    let routers = store.reports(Some(&f)).await?;
    let mut last = show(&f, &routers)?;
    if !args.watch {
        return Ok(());
    }
    // The counts move at most once a second (docs/protocol.md, "Shadow"): print each change.
    let in_place = args.output.format == args::Format::Table && std::io::stdout().is_terminal();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let f = super::function(store, name).await?;
        let routers = store.reports(Some(&f)).await?;
        let now = view(&f, &routers);
        if now == last {
            continue;
        }
        if in_place {
            print!("\x1b[H\x1b[2J");
        } else if args.output.format == args::Format::Table {
            output::line(format_args!("---"));
        }
        last = show(&f, &routers)?;
    }
}

/// Every live router's shadow counts, for [`refuse_weight`] (nothing to read when forced).
pub(crate) async fn reported(store: &dyn Store, force: bool) -> anyhow::Result<Vec<ShadowNumbers>> {
    if force {
        return Ok(Vec::new());
    }
    let routers = store.reports(None).await?;
    Ok(live_counts(&routers).into_iter().cloned().collect())
}

/// Refuses (exit 3) weight for `version` of `f` when its shadow copies differed in the live
/// routers' counts (`switchyard_core::shadow::refuse_weight`).
pub(crate) fn refuse_weight(
    f: &FunctionState,
    version: &str,
    reported: &[ShadowNumbers],
) -> anyhow::Result<()> {
    let all: Vec<&ShadowNumbers> = reported.iter().collect();
    core_shadow::refuse_weight(&format!("{}/{}", f.namespace, f.name), version, &all)
        .map_err(|e| fail(Code::Refused, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_bytes_kib_or_mib() {
        for (text, bytes) in [
            ("0", 0),
            ("512", 512),
            ("64KiB", 65_536),
            ("1MiB", 1 << 20),
            ("2M", 2 << 20),
        ] {
            assert_eq!(parse_size(text).unwrap(), bytes, "{text}");
        }
        for bad in ["", "MiB", "1GiB", "-1", "1.5MiB", "99999999999999999999"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
