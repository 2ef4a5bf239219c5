//! `shadow FN VERSION --percent P …` and `shadow stop FN`: mirrored traffic to a version no
//! user sees, whose answers the routers compare with the serving version's (issue 16).

use switchyard_core::plan;
use switchyard_core::resources::{ShadowSpec, MAX_SHADOW_BODY};
use switchyard_core::validate;
use switchyard_core::weight::{parse_percent, Percent};

use crate::args::{self, ShadowStop};
use crate::exit::{self, fail, Code};
use crate::store::Store;
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
