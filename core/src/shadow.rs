//! Comparing a shadow version's answer with the serving version's (issue 16): the status, the
//! headers that matter and the body — as bytes, or as JSON compared structurally with some
//! paths ignored. Pure: the router hands in both responses and counts what comes back.

use std::fmt;

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
}
