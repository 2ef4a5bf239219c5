//! Rendering: aligned tables, JSON and YAML, ages, and the diffs of `--dry-run`.

use std::io::Write as _;

use serde::Serialize;

use crate::args::{Format, ListFormat, ListOutput};

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

    /// The rows below the header.
    pub fn rows(&self) -> &[Vec<String>] {
        &self.rows[1..]
    }

    /// The table as text, three spaces between columns, no trailing blanks.
    pub fn render(&self) -> String {
        self.render_with(true)
    }

    /// The table as text, with or without its header line (`--no-headers`).
    pub fn render_with(&self, headers: bool) -> String {
        let widths = self.widths();
        let mut out = String::new();
        for row in self.rows.iter().skip(usize::from(!headers)) {
            out.push_str(&aligned(row, &widths));
            out.push('\n');
        }
        out
    }

    /// The width of each column: its widest cell, header included.
    pub fn widths(&self) -> Vec<usize> {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0; columns];
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        widths
    }
}

/// One row padded to `widths` (a cell wider than its column widens it), three spaces between
/// columns, no trailing blanks.
fn aligned(row: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    for (i, cell) in row.iter().enumerate() {
        if i > 0 {
            line.push_str("   ");
        }
        line.push_str(cell);
        let pad = widths
            .get(i)
            .copied()
            .unwrap_or(0)
            .saturating_sub(cell.chars().count());
        line.extend(std::iter::repeat_n(' ', pad));
    }
    line.trim_end().to_string()
}

/// How often a list command's `--watch` re-reads the store.
pub const WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// One row of a list command, in each form it can be printed in.
#[derive(Debug)]
pub struct Listed<T> {
    /// What identifies the row across re-reads (a function, a version, a history revision).
    pub key: String,
    /// `-o name`: `kind.group/name`.
    pub name: String,
    /// The table's cells.
    pub cells: Vec<String>,
    /// The extra cells of `-o wide`, after the table's.
    pub wide: Vec<String>,
    /// `-o json|yaml`.
    pub value: T,
}

/// Prints the rows of a list command in the chosen form, then (`--watch`) one line per row
/// that is new or changed, and `KIND/NAME deleted` (its `-o name` form) for one that is gone.
pub struct Lister {
    out: ListOutput,
    headers: Vec<String>,
    widths: Vec<usize>,
    /// The fingerprint of each row last seen, by key, and its name.
    seen: std::collections::BTreeMap<String, (String, String)>,
}

impl Lister {
    /// A lister with the table's headers and those `-o wide` adds.
    pub fn new(out: ListOutput, headers: &[&str], wide: &[&str]) -> Lister {
        let mut all: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
        if out.format == ListFormat::Wide {
            all.extend(wide.iter().map(|h| h.to_string()));
        }
        Lister {
            out,
            headers: all,
            widths: Vec::new(),
            seen: Default::default(),
        }
    }

    fn cells<T>(&self, row: &Listed<T>) -> Vec<String> {
        let mut cells = row.cells.clone();
        if self.out.format == ListFormat::Wide {
            cells.extend(row.wide.iter().cloned());
        }
        cells
    }

    fn remember<T: Serialize>(&mut self, rows: &[Listed<T>]) -> anyhow::Result<()> {
        self.seen.clear();
        for r in rows {
            let form = fingerprint(r)?;
            self.seen.insert(r.key.clone(), (form, r.name.clone()));
        }
        Ok(())
    }

    /// Prints every row; `empty` is the table's text when there are none.
    pub fn all<T: Serialize>(&mut self, rows: &[Listed<T>], empty: &str) -> anyhow::Result<()> {
        let values: Vec<&T> = rows.iter().map(|r| &r.value).collect();
        let mut table = Table {
            rows: vec![self.headers.clone()],
        };
        for r in rows {
            table.row(self.cells(r));
        }
        self.widths = table.widths();
        let text = match self.out.format {
            ListFormat::Json => serde_json::to_string_pretty(&values)? + "\n",
            ListFormat::Yaml => serde_yaml::to_string(&values)?,
            ListFormat::Name => rows.iter().map(|r| r.name.clone() + "\n").collect(),
            ListFormat::Table | ListFormat::Wide if rows.is_empty() && !empty.is_empty() => {
                empty.to_string()
            }
            ListFormat::Table | ListFormat::Wide => table.render_with(!self.out.no_headers),
        };
        self.remember(rows)?;
        write_out(&text)
    }

    /// Prints one line (one document in JSON or YAML) per row that is new or changed since the
    /// last call, and `KIND/NAME deleted` per row that is gone.
    pub fn changes<T: Serialize>(&mut self, rows: &[Listed<T>]) -> anyhow::Result<()> {
        let mut text = String::new();
        let keys: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.key.as_str()).collect();
        for (key, (_, name)) in &self.seen {
            if !keys.contains(key.as_str()) {
                text += &match self.out.format {
                    ListFormat::Json => serde_json::json!({ "deleted": name }).to_string() + "\n",
                    ListFormat::Yaml => format!("---\ndeleted: {name}\n"),
                    _ => format!("{name} deleted\n"),
                };
            }
        }
        for r in rows {
            let form = fingerprint(r)?;
            if self.seen.get(&r.key).is_some_and(|(seen, _)| *seen == form) {
                continue;
            }
            text += &match self.out.format {
                ListFormat::Json => serde_json::to_string(&r.value)? + "\n",
                ListFormat::Yaml => "---\n".to_string() + &serde_yaml::to_string(&r.value)?,
                ListFormat::Name => r.name.clone() + "\n",
                ListFormat::Table | ListFormat::Wide => {
                    aligned(&self.cells(r), &self.widths) + "\n"
                }
            };
        }
        self.remember(rows)?;
        write_out(&text)
    }
}

/// What makes a row changed: its value and wide cells, not its AGE, which changes by itself.
fn fingerprint<T: Serialize>(row: &Listed<T>) -> anyhow::Result<String> {
    Ok(serde_json::to_string(&row.value)? + "\t" + &row.wide.join("\t"))
}

/// Writes `text` to stdout at once; a closed pipe (`| head`) is the reader's choice.
fn write_out(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
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
    write_out(&text)
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
    /// Each changed field in one phrase, `name before → after`.
    changes: Vec<String>,
}

impl Diff {
    /// A diff headed by what changes.
    pub fn new(title: impl Into<String>) -> Diff {
        Diff {
            lines: vec![title.into()],
            changes: Vec::new(),
        }
    }

    /// A field that changes from `before` to `after` (nothing when equal).
    pub fn field(&mut self, name: &str, before: Option<String>, after: Option<String>) {
        if before == after {
            return;
        }
        let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".to_string());
        self.changes
            .push(format!("{name} {} → {}", or_none(&before), or_none(&after)));
        if let Some(b) = before {
            self.lines.push(format!("- {name}: {b}"));
        }
        if let Some(a) = after {
            self.lines.push(format!("+ {name}: {a}"));
        }
    }

    /// The fields that change, each in one phrase (`tags none → beta=1.3.0`).
    pub fn changed_fields(&self) -> &[String] {
        &self.changes
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
