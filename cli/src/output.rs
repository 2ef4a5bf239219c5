//! Rendering: aligned tables, JSON and YAML, ages, and the diffs of `--dry-run`.

use std::io::Write as _;

use serde::Serialize;

use crate::args::Format;

/// A table of text cells, printed with columns aligned to their widest cell.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Table {
        Table {
            rows: vec![headers.iter().map(|h| h.to_string()).collect()],
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, three spaces between columns, no trailing blanks.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0; columns];
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("   ");
                }
                line.push_str(cell);
                let pad = widths[i] - cell.chars().count();
                line.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Prints `value` as JSON or YAML; `table` renders the table form.
pub fn print<T: Serialize>(
    format: Format,
    value: &T,
    table: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    let text = match format {
        Format::Table => table(),
        Format::Json => serde_json::to_string_pretty(value)? + "\n",
        Format::Yaml => serde_yaml::to_string(value)?,
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        // A closed pipe (`| head`) is the reader's choice, not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Prints one line on stdout; a closed pipe (`| head`) is ignored rather than a panic, so a
/// command that changes the cluster step by step never stops halfway because its reader left.
pub fn line(text: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}

/// A duration since `then`, kubectl-style: `42s`, `5m`, `3h`, `12d`.
pub fn age(then: Option<jiff::Timestamp>, now: jiff::Timestamp) -> String {
    let Some(then) = then else {
        return "-".to_string();
    };
    let secs = now.as_second().saturating_sub(then.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// The age of an RFC 3339 time.
pub fn age_of(rfc3339: &str, now: jiff::Timestamp) -> String {
    age(rfc3339.parse().ok(), now)
}

/// A before/after diff of named fields; unchanged fields are left out.
#[derive(Debug, Default)]
pub struct Diff {
    lines: Vec<String>,
}

impl Diff {
    /// A diff headed by what changes.
    pub fn new(title: impl Into<String>) -> Diff {
        Diff {
            lines: vec![title.into()],
        }
    }

    /// A field that changes from `before` to `after` (nothing when equal).
    pub fn field(&mut self, name: &str, before: Option<String>, after: Option<String>) {
        if before == after {
            return;
        }
        if let Some(b) = before {
            self.lines.push(format!("- {name}: {b}"));
        }
        if let Some(a) = after {
            self.lines.push(format!("+ {name}: {a}"));
        }
    }

    /// A line that is only added.
    pub fn added(&mut self, line: impl Into<String>) {
        self.lines.push(format!("+ {}", line.into()));
    }

    /// A line that changes nothing, for context.
    pub fn note(&mut self, line: impl Into<String>) {
        self.lines.push(format!("  {}", line.into()));
    }

    /// A line that is only removed.
    pub fn removed(&mut self, line: impl Into<String>) {
        self.lines.push(format!("- {}", line.into()));
    }

    /// Prints it, with a closing line saying nothing was written.
    pub fn print(&self) {
        for l in &self.lines {
            crate::output::line(format_args!("{l}"));
        }
        crate::output::line(format_args!("(dry run: nothing was written)"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_to_the_widest_cell() {
        let mut t = Table::new(&["VERSION", "WEIGHT"]);
        t.row(vec!["1.10.0".into(), "5%".into()]);
        t.row(vec!["1.2.0".into(), "95%".into()]);
        assert_eq!(
            t.render(),
            "VERSION   WEIGHT\n1.10.0    5%\n1.2.0     95%\n"
        );
    }

    #[test]
    fn ages_read_like_kubectl() {
        let now: jiff::Timestamp = "2026-11-27T12:00:00Z".parse().expect("time");
        let at = |s: &str| Some(s.parse().expect("time"));
        assert_eq!(age(at("2026-11-27T11:59:18Z"), now), "42s");
        assert_eq!(age(at("2026-11-27T11:00:00Z"), now), "60m");
        assert_eq!(age(at("2026-11-27T00:00:00Z"), now), "12h");
        assert_eq!(age(at("2026-11-20T12:00:00Z"), now), "7d");
        assert_eq!(age(None, now), "-");
    }
}
