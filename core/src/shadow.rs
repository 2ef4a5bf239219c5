//! Comparing a shadow version's answer with the serving version's (issue 16): the status, the
//! headers that matter and the body — as bytes, or as JSON compared structurally with some
//! paths ignored. Pure: the router hands in both responses and counts what comes back.
//!
//! Also what the routers report of their copies ([`ShadowNumbers`], docs/protocol.md,
//! "Shadow"), its sum over replicas, and the rules that read it: [`refuse_weight`] (no weight
//! for a version whose shadow answers differed, unless forced) and [`check_target`] (a shadow
//! must be reachable the way copies are sent).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Headers never compared: hop-by-hop ones, and the framing that follows the body.
const NEVER_COMPARED: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// One step of an ignored JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// An object member.
    Key(String),
    /// An array element.
    Index(usize),
    /// Every member or element.
    Any,
}

/// A JSON path whose value is left out of the comparison: `$.ts`, `$.items[*].id`,
/// `$['odd key']`, `$.list[0]`, `$.*.etag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    text: String,
    steps: Vec<Step>,
}

/// Why a JSON path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("JSON path {path:?}: {why} (expected e.g. $.ts, $.items[*].id, $['a key'], $.list[0])")]
pub struct JsonPathError {
    path: String,
    why: &'static str,
}

impl JsonPath {
    /// Parses a path of the subset above.
    pub fn parse(text: &str) -> Result<JsonPath, JsonPathError> {
        let err = |why| JsonPathError {
            path: text.to_string(),
            why,
        };
        let rest = text
            .strip_prefix('$')
            .ok_or_else(|| err("must start with $"))?;
        let mut steps = Vec::new();
        let mut chars = rest.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '.' => {
                    let start = i + 1;
                    let mut end = rest.len();
                    while let Some(&(j, d)) = chars.peek() {
                        if d == '.' || d == '[' {
                            end = j;
                            break;
                        }
                        chars.next();
                    }
                    match &rest[start..end] {
                        "" => return Err(err("empty member name")),
                        "*" => steps.push(Step::Any),
                        name => steps.push(Step::Key(name.to_string())),
                    }
                }
                '[' => {
                    let close = rest[i..]
                        .find(']')
                        .map(|k| i + k)
                        .ok_or_else(|| err("unclosed ["))?;
                    let inner = &rest[i + 1..close];
                    let step = if inner == "*" {
                        Step::Any
                    } else if let Some(quoted) =
                        inner.strip_prefix('\'').and_then(|q| q.strip_suffix('\''))
                    {
                        Step::Key(quoted.to_string())
                    } else {
                        Step::Index(inner.parse().map_err(|_| err("bad index"))?)
                    };
                    steps.push(step);
                    while chars.peek().is_some_and(|&(j, _)| j <= close) {
                        chars.next();
                    }
                }
                _ => return Err(err("expected . or [ after a step")),
            }
        }
        if steps.is_empty() {
            return Err(err("ignoring $ would ignore the whole body"));
        }
        Ok(JsonPath {
            text: text.to_string(),
            steps,
        })
    }

    /// Whether a concrete location (as steps from the root) is this path or inside it.
    fn covers(&self, at: &[Step]) -> bool {
        at.len() >= self.steps.len()
            && self.steps.iter().zip(at).all(|(p, s)| match (p, s) {
                (Step::Any, _) => true,
                (a, b) => a == b,
            })
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// What is left out of a comparison.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ignore {
    /// Header names, lowercase.
    pub headers: Vec<String>,
    /// JSON paths.
    pub json: Vec<JsonPath>,
}

/// One response, as the router holds it.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// The status code.
    pub status: u16,
    /// The header fields, in order (names in any case).
    pub headers: &'a [(&'a str, &'a str)],
    /// The whole body.
    pub body: &'a [u8],
}

impl Answer<'_> {
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
            .collect()
    }

    fn is_json(&self) -> bool {
        self.header("content-type").iter().any(|v| {
            let v = v.to_ascii_lowercase();
            let media = v.split(';').next().unwrap_or("").trim();
            media == "application/json" || media.ends_with("+json")
        })
    }
}

/// How two answers differ; every field `None`/`false` when they match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Differences {
    /// The statuses, when they differ: (serving, shadow).
    pub status: Option<(u16, u16)>,
    /// The first header (by name, sorted) whose values differ.
    pub header: Option<String>,
    /// Where the bodies first differ: a JSON path (`$.items[2].price`), or `byte N`.
    pub body: Option<String>,
}

impl Differences {
    /// Whether the answers match.
    pub fn matched(&self) -> bool {
        self.status.is_none() && self.header.is_none() && self.body.is_none()
    }
}

/// Compares a shadow's answer with the serving version's.
pub fn compare(serving: &Answer<'_>, shadow: &Answer<'_>, ignore: &Ignore) -> Differences {
    Differences {
        status: (serving.status != shadow.status).then_some((serving.status, shadow.status)),
        header: first_header_difference(serving, shadow, ignore),
        body: body_difference(serving, shadow, ignore),
    }
}

fn first_header_difference(a: &Answer<'_>, b: &Answer<'_>, ignore: &Ignore) -> Option<String> {
    let mut names: Vec<String> = a
        .headers
        .iter()
        .chain(b.headers)
        .map(|(n, _)| n.to_ascii_lowercase())
        .filter(|n| !NEVER_COMPARED.contains(&n.as_str()) && !ignore.headers.contains(n))
        .collect();
    names.sort();
    names.dedup();
    names.into_iter().find(|n| a.header(n) != b.header(n))
}

fn body_difference(a: &Answer<'_>, b: &Answer<'_>, ignore: &Ignore) -> Option<String> {
    if a.is_json() && b.is_json() {
        if let (Ok(x), Ok(y)) = (
            serde_json::from_slice::<Value>(a.body),
            serde_json::from_slice::<Value>(b.body),
        ) {
            let mut at = Vec::new();
            return json_difference(&x, &y, &mut at, &ignore.json);
        }
    }
    if a.body == b.body {
        return None;
    }
    let at = a
        .body
        .iter()
        .zip(b.body)
        .position(|(x, y)| x != y)
        .unwrap_or(a.body.len().min(b.body.len()));
    Some(format!("byte {at}"))
}

fn json_difference(
    x: &Value,
    y: &Value,
    at: &mut Vec<Step>,
    ignored: &[JsonPath],
) -> Option<String> {
    if ignored.iter().any(|p| p.covers(at)) {
        return None;
    }
    match (x, y) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                at.push(Step::Key(k.clone()));
                let found = match (a.get(k), b.get(k)) {
                    (Some(v), Some(w)) => json_difference(v, w, at, ignored),
                    _ if ignored.iter().any(|p| p.covers(at)) => None,
                    _ => Some(render(at)),
                };
                at.pop();
                if found.is_some() {
                    return found;
                }
            }
            None
        }
        (Value::Array(a), Value::Array(b)) => {
            for i in 0..a.len().max(b.len()) {
                at.push(Step::Index(i));
                let found = match (a.get(i), b.get(i)) {
                    (Some(v), Some(w)) => json_difference(v, w, at, ignored),
                    _ if ignored.iter().any(|p| p.covers(at)) => None,
                    _ => Some(render(at)),
                };
                at.pop();
                if found.is_some() {
                    return found;
                }
            }
            None
        }
        (a, b) if a == b => None,
        _ => Some(render(at)),
    }
}

fn render(at: &[Step]) -> String {
    let mut s = String::from("$");
    for step in at {
        match step {
            Step::Key(k) if k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                s.push('.');
                s.push_str(k);
            }
            Step::Key(k) => s.push_str(&format!("['{k}']")),
            Step::Index(i) => s.push_str(&format!("[{i}]")),
            Step::Any => s.push_str("[*]"),
        }
    }
    s
}

/// Shadowed versions one report lists at most; the rest are counted in `omitted`.
pub const MAX_REPORTED: usize = 100;
/// Differing examples kept per shadowed version, in a report and in a sum.
pub const MAX_EXAMPLES: usize = 5;
/// The longest text of an example (a path, a header name, a body difference), in bytes.
pub const MAX_EXAMPLE_TEXT: usize = 200;

/// How many compared copies differed, by kind (a copy may differ in several).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Differing {
    /// A different status.
    pub status: u64,
    /// A differing header.
    pub header: u64,
    /// A differing body.
    pub body: u64,
}

/// One differing copy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ShadowExample {
    /// When it was compared, RFC 3339 (orders examples from several replicas).
    pub at: String,
    /// The request method.
    pub method: String,
    /// The request target, as the client sent it (cut at [`MAX_EXAMPLE_TEXT`]).
    pub path: String,
    /// The serving version's status.
    pub serving_status: u16,
    /// The shadow version's status.
    pub shadow_status: u16,
    /// The first differing header, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Where the bodies first differ (a JSON path or `byte N`), if they do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

impl ShadowExample {
    /// The example in one phrase: `GET /a: status 200 vs 500, header etag, body $.x`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.serving_status != self.shadow_status {
            parts.push(format!(
                "status {} vs {}",
                self.serving_status, self.shadow_status
            ));
        }
        if let Some(h) = &self.header {
            parts.push(format!("header {h}"));
        }
        if let Some(b) = &self.body {
            parts.push(format!("body {b}"));
        }
        format!("{} {}: {}", self.method, self.path, parts.join(", "))
    }
}

/// Cuts `text` to at most [`MAX_EXAMPLE_TEXT`] bytes, on a character boundary.
pub fn cut_example_text(text: &str) -> String {
    if text.len() <= MAX_EXAMPLE_TEXT {
        return text.to_string();
    }
    let mut end = MAX_EXAMPLE_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// One shadowed version's counts, since the replica started (or summed over replicas).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ShadowCounts {
    /// `namespace/name` of the Function.
    pub function: String,
    /// The shadow version.
    pub version: String,
    /// Copies handed to a worker.
    pub sent: u64,
    /// Copies whose two answers were compared.
    pub compared: u64,
    /// Compared and equal.
    pub matched: u64,
    /// Compared and different, by kind.
    #[serde(default)]
    pub differing: Differing,
    /// The shadow version failed (refused, reset, malformed, too slow).
    pub errors: u64,
    /// Chosen while every copy slot was busy: not copied.
    pub dropped: u64,
    /// Requests not copied, or copies not compared, by reason (non-zero ones only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub skipped: BTreeMap<String, u64>,
    /// The serving version's latency summed over compared copies, microseconds.
    #[serde(default)]
    pub serving_us: u64,
    /// The shadow version's latency summed over compared copies, microseconds.
    #[serde(default)]
    pub shadow_us: u64,
    /// The last differing examples, oldest first, at most [`MAX_EXAMPLES`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<ShadowExample>,
}

impl ShadowCounts {
    /// Compared copies whose answers differed in any way.
    pub fn differed(&self) -> u64 {
        self.compared.saturating_sub(self.matched)
    }

    /// Whether anything at all was counted.
    pub fn is_empty(&self) -> bool {
        self.sent == 0
            && self.compared == 0
            && self.errors == 0
            && self.dropped == 0
            && self.skipped.values().all(|&n| n == 0)
    }

    /// Adds `other`'s counts (another replica's): every counter summed, the last
    /// [`MAX_EXAMPLES`] examples of both kept by time.
    pub fn add(&mut self, other: &ShadowCounts) {
        let add = |a: &mut u64, b: u64| *a = a.saturating_add(b);
        add(&mut self.sent, other.sent);
        add(&mut self.compared, other.compared);
        add(&mut self.matched, other.matched);
        add(&mut self.differing.status, other.differing.status);
        add(&mut self.differing.header, other.differing.header);
        add(&mut self.differing.body, other.differing.body);
        add(&mut self.errors, other.errors);
        add(&mut self.dropped, other.dropped);
        add(&mut self.serving_us, other.serving_us);
        add(&mut self.shadow_us, other.shadow_us);
        for (why, &n) in &other.skipped {
            add(self.skipped.entry(why.clone()).or_default(), n);
        }
        self.examples.extend(other.examples.iter().cloned());
        // RFC 3339 times of one format sort as text; a stable sort keeps a replica's order.
        self.examples.sort_by(|a, b| a.at.cmp(&b.at));
        let extra = self.examples.len().saturating_sub(MAX_EXAMPLES);
        self.examples.drain(..extra);
    }

    /// The mean latency of (serving, shadow) over compared copies, milliseconds.
    pub fn mean_ms(&self) -> Option<(f64, f64)> {
        (self.compared > 0).then(|| {
            let n = self.compared as f64;
            (
                self.serving_us as f64 / n / 1000.0,
                self.shadow_us as f64 / n / 1000.0,
            )
        })
    }
}

/// What one replica reports of its shadow copies (`status.shadow`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ShadowNumbers {
    /// When these were read, RFC 3339.
    pub at: String,
    /// Every shadowed version the replica counted something for, by function then version,
    /// at most [`MAX_REPORTED`].
    #[serde(default)]
    pub shadows: Vec<ShadowCounts>,
    /// Shadowed versions left out past the cap.
    #[serde(default)]
    pub omitted: u32,
}

impl ShadowNumbers {
    /// The report of `all` read `at`: the ones with a count, ordered by function and version,
    /// capped at [`MAX_REPORTED`].
    pub fn new(at: String, all: Vec<ShadowCounts>) -> ShadowNumbers {
        let mut shadows: Vec<ShadowCounts> = all.into_iter().filter(|c| !c.is_empty()).collect();
        shadows.sort_by(|a, b| (&a.function, &a.version).cmp(&(&b.function, &b.version)));
        let omitted = shadows.len().saturating_sub(MAX_REPORTED);
        shadows.truncate(MAX_REPORTED);
        ShadowNumbers {
            at,
            shadows,
            omitted: u32::try_from(omitted).unwrap_or(u32::MAX),
        }
    }

    /// Whether `other` says the same but for when it was read (then it is not worth a write).
    pub fn same_counts(&self, other: &ShadowNumbers) -> bool {
        self.shadows == other.shadows && self.omitted == other.omitted
    }
}

/// The shadow counts of `function` (`namespace/name`) summed over `replicas`, one entry per
/// shadowed version, by version.
pub fn summed(function: &str, replicas: &[&ShadowNumbers]) -> Vec<ShadowCounts> {
    let mut by: BTreeMap<&str, ShadowCounts> = BTreeMap::new();
    for r in replicas {
        for c in r.shadows.iter().filter(|c| c.function == function) {
            by.entry(&c.version)
                .or_insert_with(|| ShadowCounts {
                    function: c.function.clone(),
                    version: c.version.clone(),
                    ..Default::default()
                })
                .add(c);
        }
    }
    by.into_values().collect()
}

/// Why a version may not be given weight: its shadow copies answered differently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{version} answered differently from the serving version in {differed} of {compared} shadow copies (first: {first}); --force to give it traffic anyway"
)]
pub struct ShadowRefusal {
    /// The version.
    pub version: String,
    /// Compared copies that differed.
    pub differed: u64,
    /// Compared copies.
    pub compared: u64,
    /// The oldest kept differing example, in one phrase (or the kinds when none is kept).
    pub first: String,
}

/// The rule of `promote`, `traffic` and `canary`: a version may be given weight unless, in
/// the live replicas' reports (`replicas`), it is (or was, while those counts live) a shadow
/// of `function` (`namespace/name`) whose answers differed from the serving version's. Errors
/// and skips are not differences: a shadow that could not be compared proved nothing either
/// way, and refusing on it would block a version for an outage of the shadow path.
pub fn refuse_weight(
    function: &str,
    version: &str,
    replicas: &[&ShadowNumbers],
) -> Result<(), ShadowRefusal> {
    let Some(c) = summed(function, replicas)
        .into_iter()
        .find(|c| c.version == version)
    else {
        return Ok(());
    };
    if c.differed() == 0 {
        return Ok(());
    }
    let first = match c.examples.first() {
        Some(e) => e.describe(),
        None => format!(
            "status {}, header {}, body {}",
            c.differing.status, c.differing.header, c.differing.body
        ),
    };
    Err(ShadowRefusal {
        version: version.to_string(),
        differed: c.differed(),
        compared: c.compared,
        first,
    })
}

/// Why a version cannot be shadowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{version} is served over https ({endpoint}), which shadow copies cannot reach: the router speaks plain HTTP to upstreams; shadow a version served over http")]
pub struct TargetError {
    /// The version.
    pub version: String,
    /// Its endpoint.
    pub endpoint: String,
}

/// Whether a version can be shadowed: copies are sent over plain HTTP, so a version whose
/// external endpoint is `https` would only ever count errors. A managed version (no endpoint)
/// is reached through its Service over HTTP.
pub fn check_target(version: &str, endpoint: Option<&str>) -> Result<(), TargetError> {
    match endpoint {
        Some(url)
            if url
                .get(..8)
                .is_some_and(|s| s.eq_ignore_ascii_case("https://")) =>
        {
            Err(TargetError {
                version: version.to_string(),
                endpoint: url.to_string(),
            })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: (&str, &str) = ("content-type", "application/json; charset=utf-8");

    fn answer<'a>(status: u16, headers: &'a [(&'a str, &'a str)], body: &'a str) -> Answer<'a> {
        Answer {
            status,
            headers,
            body: body.as_bytes(),
        }
    }

    fn ignore(headers: &[&str], paths: &[&str]) -> Ignore {
        Ignore {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            json: paths.iter().map(|p| JsonPath::parse(p).unwrap()).collect(),
        }
    }

    #[test]
    fn paths_parse_the_documented_subset_and_refuse_the_rest() {
        for ok in [
            "$.ts",
            "$.items[*].id",
            "$['odd key']",
            "$.list[0]",
            "$.*.etag",
        ] {
            assert!(JsonPath::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["ts", "$", "$..x", "$.a[", "$.a[x]", "$x"] {
            let e = JsonPath::parse(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn equal_answers_match_whatever_their_framing_and_header_order() {
        let a = answer(200, &[("Content-Length", "2"), ("X-A", "1"), JSON], "{}");
        let b = answer(
            200,
            &[JSON, ("x-a", "1"), ("transfer-encoding", "chunked")],
            "{}",
        );
        assert!(compare(&a, &b, &Ignore::default()).matched());
    }

    #[test]
    fn each_kind_of_difference_is_named_with_where_it_is() {
        let a = answer(
            200,
            &[JSON, ("etag", "1"), ("date", "x")],
            r#"{"items":[{"price":1},{"price":2}],"ts":1}"#,
        );
        let b = answer(
            500,
            &[JSON, ("etag", "2"), ("date", "y")],
            r#"{"ts":2,"items":[{"price":1},{"price":3}]}"#,
        );
        let d = compare(&a, &b, &ignore(&[], &[]));
        assert_eq!(d.status, Some((200, 500)));
        assert_eq!(d.header.as_deref(), Some("date"));
        assert_eq!(d.body.as_deref(), Some("$.items[1].price"));
        // Ignoring the date header and the timestamp leaves the etag and the price.
        let d = compare(&a, &b, &ignore(&["date"], &["$.ts"]));
        assert_eq!(d.header.as_deref(), Some("etag"));
        assert_eq!(d.body.as_deref(), Some("$.items[1].price"));
        let d = compare(
            &a,
            &b,
            &ignore(&["date", "etag"], &["$.ts", "$.items[*].price"]),
        );
        assert_eq!((d.header, d.body), (None, None));
    }

    #[test]
    fn a_member_present_on_one_side_only_differs_unless_ignored() {
        let a = answer(200, &[JSON], r#"{"id":1,"requestId":"a"}"#);
        let b = answer(200, &[JSON], r#"{"id":1}"#);
        assert_eq!(
            compare(&a, &b, &Ignore::default()).body.as_deref(),
            Some("$.requestId")
        );
        assert!(compare(&a, &b, &ignore(&[], &["$.requestId"])).matched());
    }

    #[test]
    fn bodies_that_are_not_json_compare_as_bytes() {
        let a = answer(200, &[("content-type", "text/plain")], "hello world");
        let b = answer(200, &[("content-type", "text/plain")], "hello there");
        assert_eq!(
            compare(&a, &b, &Default::default()).body.as_deref(),
            Some("byte 6")
        );
        let short = answer(200, &[("content-type", "text/plain")], "hello");
        assert_eq!(
            compare(&a, &short, &Default::default()).body.as_deref(),
            Some("byte 5")
        );
        // JSON that does not parse falls back to bytes, never to "equal".
        let x = answer(200, &[JSON], "{bad");
        let y = answer(200, &[JSON], "{bax");
        assert_eq!(
            compare(&x, &y, &Default::default()).body.as_deref(),
            Some("byte 3")
        );
    }

    fn counts(version: &str, compared: u64, matched: u64, at: &[&str]) -> ShadowCounts {
        ShadowCounts {
            function: "prod/hello".into(),
            version: version.into(),
            sent: compared + 1,
            compared,
            matched,
            differing: Differing {
                status: 0,
                header: 0,
                body: compared - matched,
            },
            errors: 1,
            skipped: BTreeMap::from([("method".to_string(), 2)]),
            serving_us: 1000 * compared,
            shadow_us: 2000 * compared,
            examples: at
                .iter()
                .map(|t| ShadowExample {
                    at: t.to_string(),
                    method: "GET".into(),
                    path: format!("/hello/{t}"),
                    serving_status: 200,
                    shadow_status: 200,
                    body: Some("$.v".into()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn report(shadows: Vec<ShadowCounts>) -> ShadowNumbers {
        ShadowNumbers::new("2026-12-02T10:00:00.000Z".into(), shadows)
    }

    #[test]
    fn sums_add_every_counter_and_keep_the_last_five_examples_by_time() {
        let a = report(vec![counts("1.3.0", 10, 6, &["t01", "t03", "t05"])]);
        let b = report(vec![
            counts("1.3.0", 5, 5, &["t02", "t04", "t06", "t07"]),
            counts("1.4.0", 1, 1, &[]),
            ShadowCounts {
                function: "prod/other".into(),
                ..counts("1.3.0", 9, 0, &[])
            },
        ]);
        let sum = summed("prod/hello", &[&a, &b]);
        assert_eq!(sum.len(), 2, "one entry per version of this function");
        let s = &sum[0];
        assert_eq!(
            (s.version.as_str(), s.sent, s.compared, s.matched, s.errors),
            ("1.3.0", 17, 15, 11, 2)
        );
        assert_eq!((s.differed(), s.differing.body), (4, 4));
        assert_eq!(s.skipped["method"], 4);
        assert_eq!(s.mean_ms(), Some((1.0, 2.0)));
        let at: Vec<&str> = s.examples.iter().map(|e| e.at.as_str()).collect();
        assert_eq!(at, ["t03", "t04", "t05", "t06", "t07"]);
        // A sum does not depend on the order of the replicas.
        assert_eq!(summed("prod/hello", &[&b, &a]), sum);
    }

    #[test]
    fn a_report_lists_only_counted_versions_in_order_and_caps_them() {
        let idle = ShadowCounts {
            function: "prod/a".into(),
            version: "1.0.0".into(),
            ..Default::default()
        };
        let many: Vec<ShadowCounts> = (0..MAX_REPORTED + 3)
            .map(|i| ShadowCounts {
                function: format!("prod/f{i:03}"),
                ..counts("1.0.0", 1, 1, &[])
            })
            .chain([idle])
            .collect();
        let r = report(many);
        assert_eq!((r.shadows.len(), r.omitted), (MAX_REPORTED, 3));
        assert_eq!(r.shadows[0].function, "prod/f000");
        assert!(r.shadows.iter().all(|c| c.function != "prod/a"));
        let later = ShadowNumbers {
            at: "later".into(),
            ..r.clone()
        };
        assert!(r.same_counts(&later), "the time alone is no change");
    }

    #[test]
    fn weight_is_refused_only_for_a_version_whose_copies_differed() {
        let a = report(vec![
            counts("1.3.0", 10, 7, &["t1", "t2"]),
            counts("1.4.0", 10, 10, &[]),
        ]);
        let b = report(vec![counts("1.3.0", 4, 4, &[])]);
        let no = refuse_weight("prod/hello", "1.3.0", &[&a, &b]).unwrap_err();
        assert_eq!((no.differed, no.compared), (3, 14));
        assert_eq!(
            no.to_string(),
            "1.3.0 answered differently from the serving version in 3 of 14 shadow copies (first: GET /hello/t1: body $.v); --force to give it traffic anyway"
        );
        // Matching copies, another function's shadow, a version never shadowed, no router.
        assert!(refuse_weight("prod/hello", "1.4.0", &[&a, &b]).is_ok());
        assert!(refuse_weight("prod/other", "1.3.0", &[&a, &b]).is_ok());
        assert!(refuse_weight("prod/hello", "2.0.0", &[&a, &b]).is_ok());
        assert!(refuse_weight("prod/hello", "1.3.0", &[]).is_ok());
        // Errors alone prove nothing either way.
        let errors = report(vec![ShadowCounts {
            errors: 50,
            ..counts("1.5.0", 0, 0, &[])
        }]);
        assert!(refuse_weight("prod/hello", "1.5.0", &[&errors]).is_ok());
        // Without a kept example the kinds are named.
        let bare = report(vec![ShadowCounts {
            differing: Differing {
                status: 1,
                header: 0,
                body: 0,
            },
            ..counts("1.6.0", 2, 1, &[])
        }]);
        let no = refuse_weight("prod/hello", "1.6.0", &[&bare]).unwrap_err();
        assert_eq!(no.first, "status 1, header 0, body 0");
    }

    #[test]
    fn an_example_is_described_in_one_phrase_and_its_texts_are_cut() {
        let e = ShadowExample {
            method: "GET".into(),
            path: "/a".into(),
            serving_status: 200,
            shadow_status: 500,
            header: Some("etag".into()),
            body: Some("$.x".into()),
            ..Default::default()
        };
        assert_eq!(
            e.describe(),
            "GET /a: status 200 vs 500, header etag, body $.x"
        );
        let long = "é".repeat(150);
        let cut = cut_example_text(&long);
        assert!(cut.len() <= MAX_EXAMPLE_TEXT && long.starts_with(&cut));
        assert_eq!(cut_example_text("/short"), "/short");
    }

    #[test]
    fn only_a_version_served_over_plain_http_can_be_shadowed() {
        assert!(check_target("1.3.0", None).is_ok());
        assert!(check_target("1.3.0", Some("http://127.0.0.1:9000")).is_ok());
        for https in ["https://fn.example.com", "HTTPS://fn.example.com/base"] {
            let e = check_target("1.3.0", Some(https)).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("1.3.0 is served over https ({https})")),
                "{e}"
            );
        }
    }
}
