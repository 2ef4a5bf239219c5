//! Validation of names, versions and whole specs, with errors that name the offending value.
//!
//! The API server enforces the structural rules too (CEL, schema); these checks run first in
//! the CLI and again in the router, so that nothing malformed reaches a routing table.

use std::collections::HashSet;

use crate::resources::{FunctionSpec, FunctionVersionSpec, MAX_TRAFFIC_ENTRIES};
use crate::weight::{Percent, TOTAL_PPM};

/// Why a name, version or spec is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// Not a DNS-1123 label.
    #[error("{what} {value:?} is not a valid name: {why}")]
    Name {
        /// What was being named (function, tag, …).
        what: &'static str,
        /// The offending value (cut to 80 characters).
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Not a semver version.
    #[error("version {value:?} is not semver (expected MAJOR.MINOR.PATCH, like 1.2.0): {why}")]
    Version {
        /// The offending value.
        value: String,
        /// The semver parser's complaint.
        why: String,
    },
    /// Weights do not add up to the whole.
    #[error("weights must sum to 1000000 ppm (100%), got {total} ppm ({})", Percent(*total as u32))]
    WeightSum {
        /// The actual total, in ppm.
        total: u64,
    },
    /// One weight above the whole.
    #[error("weight of {version} is {weight} ppm, above 1000000")]
    WeightTooLarge {
        /// The version.
        version: String,
        /// Its weight.
        weight: u32,
    },
    /// An empty split.
    #[error("traffic must list at least one version")]
    EmptyTraffic,
    /// Too many entries for the API server's limits.
    #[error("traffic lists {0} versions, at most 64 are allowed")]
    TooManyEntries(usize),
    /// The same version twice.
    #[error("version {0} appears twice in traffic")]
    DuplicateVersion(String),
    /// The same tag twice.
    #[error("tag {0} is defined twice")]
    DuplicateTag(String),
    /// A split or tag naming a version that does not exist.
    #[error("version {version} of function {function} does not exist")]
    UnknownVersion {
        /// The function.
        function: String,
        /// The missing version.
        version: String,
    },
    /// Affinity with neither or both keys, or a malformed key.
    #[error("affinity {0}")]
    Affinity(String),
    /// A host that is not a DNS name.
    #[error("host {0:?} is not a valid DNS name")]
    Host(String),
    /// A path prefix that is not an absolute path.
    #[error("path prefix {0:?} must start with / and contain no spaces, '?' or '#'")]
    PathPrefix(String),
    /// An endpoint that is not an http(s) URL.
    #[error("endpoint {value:?} is not a usable http(s) URL: {why}")]
    Endpoint {
        /// The offending value.
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// Neither or both of image and endpoint.
    #[error("a version needs exactly one of image and endpoint")]
    ImageOrEndpoint,
    /// Something else in a version's workload.
    #[error("{0}")]
    Workload(String),
    /// Not a duration the router accepts.
    #[error("timeout {field} {value:?} is not a duration from 1ms to 24h (like 500ms, 30s, 5m, 1h30m): {why}")]
    Timeout {
        /// The field (`connect`, `responseHead`, …) or flag.
        field: &'static str,
        /// The offending value (cut to 80 characters).
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A rollout plan that cannot run.
    #[error("rollout {0}")]
    Rollout(String),
    /// A shadow spec the router cannot follow.
    #[error("shadow {0}")]
    Shadow(String),
}

fn cut(value: &str) -> String {
    value.chars().take(80).collect()
}

/// Checks a DNS-1123 label: 1–63 characters of `a-z`, `0-9` and `-`, starting with a letter
/// (so that the name also makes a valid Service name) and not ending with `-`.
pub fn dns_label(what: &'static str, value: &str) -> Result<(), ValidationError> {
    let err = |why| {
        Err(ValidationError::Name {
            what,
            value: cut(value),
            why,
        })
    };
    if value.is_empty() {
        return err("it is empty");
    }
    if value.len() > 63 {
        return err("it is longer than 63 characters");
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return err("only lowercase letters, digits and '-' are allowed");
    }
    if !value.as_bytes()[0].is_ascii_lowercase() {
        return err("it must start with a lowercase letter");
    }
    if value.ends_with('-') {
        return err("it must not end with '-'");
    }
    Ok(())
}

/// Checks a function name: a DNS-1123 label short enough that `<name>-<version>` object names
/// still fit; the version part is checked when a version is deployed.
pub fn function_name(value: &str) -> Result<(), ValidationError> {
    dns_label("function", value)
}

/// Parses a semver version, refusing leading `v` and whitespace.
pub fn version(value: &str) -> Result<semver::Version, ValidationError> {
    semver::Version::parse(value).map_err(|e| ValidationError::Version {
        value: cut(value),
        why: e.to_string(),
    })
}

/// Checks that `<function>-<version>` makes a valid Kubernetes object name.
pub fn object_name_fits(function: &str, version: &str) -> Result<(), ValidationError> {
    let name = crate::object_name(function, version);
    if name.len() > 63 {
        return Err(ValidationError::Name {
            what: "object name",
            value: cut(&name),
            why: "function and version together are longer than 62 characters",
        });
    }
    Ok(())
}

fn header_name(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Checks a host: a DNS name of labels of `a-z0-9-`, optionally starting with `*.`.
pub fn host(value: &str) -> Result<(), ValidationError> {
    let bad = || Err(ValidationError::Host(cut(value)));
    let rest = value.strip_prefix("*.").unwrap_or(value);
    if rest.is_empty() || rest.len() > 253 {
        return bad();
    }
    for label in rest.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return bad();
        }
    }
    Ok(())
}

/// Checks a path prefix: absolute, no whitespace, query or fragment.
pub fn path_prefix(value: &str) -> Result<(), ValidationError> {
    let ok = value.starts_with('/')
        && value.len() <= 1024
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#');
    if ok {
        Ok(())
    } else {
        Err(ValidationError::PathPrefix(cut(value)))
    }
}

/// Checks an external endpoint: an absolute `http` or `https` URL with a host and without
/// credentials, query or fragment.
pub fn endpoint(value: &str) -> Result<url::Url, ValidationError> {
    let err = |why: &str| ValidationError::Endpoint {
        value: cut(value),
        why: why.to_string(),
    };
    let url = url::Url::parse(value).map_err(|e| err(&e.to_string()))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(err("only http and https are supported"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(err("it has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(err("credentials do not belong in the URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(err("a query or fragment is not allowed"));
    }
    Ok(url)
}

/// Checks the traffic list alone: at least one entry, at most 64, no duplicates, weights
/// summing to exactly 1,000,000.
pub fn traffic(traffic: &[crate::TrafficTarget]) -> Result<(), ValidationError> {
    if traffic.is_empty() {
        return Err(ValidationError::EmptyTraffic);
    }
    if traffic.len() > MAX_TRAFFIC_ENTRIES {
        return Err(ValidationError::TooManyEntries(traffic.len()));
    }
    let mut seen = HashSet::with_capacity(traffic.len());
    let mut total: u64 = 0;
    for t in traffic {
        if !seen.insert(t.version.as_str()) {
            return Err(ValidationError::DuplicateVersion(t.version.clone()));
        }
        if t.weight > TOTAL_PPM {
            return Err(ValidationError::WeightTooLarge {
                version: t.version.clone(),
                weight: t.weight,
            });
        }
        version(&t.version)?;
        total += u64::from(t.weight);
    }
    if total != u64::from(TOTAL_PPM) {
        return Err(ValidationError::WeightSum { total });
    }
    Ok(())
}

/// The longest timeout accepted: long enough for any stream that still says something once
/// a day, short enough that nothing waits forever.
pub const MAX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Parses a duration written as up to four `<number><unit>` parts, units `h`, `m`, `s`, `ms`
/// (`500ms`, `30s`, `1h30m`; the Gateway API's form), from 1 ms to [`MAX_TIMEOUT`]. `field`
/// names the value in the error.
pub fn duration(field: &'static str, value: &str) -> Result<std::time::Duration, ValidationError> {
    let err = |why| ValidationError::Timeout {
        field,
        value: cut(value),
        why,
    };
    let mut rest = value.as_bytes();
    let (mut total_ms, mut parts) = (0u64, 0);
    while !rest.is_empty() {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return Err(err("each part is a number followed by h, m, s or ms"));
        }
        if digits > 5 {
            return Err(err("a number has at most 5 digits"));
        }
        let n: u64 = std::str::from_utf8(&rest[..digits])
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| err("not a number"))?;
        rest = &rest[digits..];
        let (unit_ms, len) = match rest {
            [b'm', b's', ..] => (1, 2),
            [b'h', ..] => (3_600_000, 1),
            [b'm', ..] => (60_000, 1),
            [b's', ..] => (1_000, 1),
            _ => return Err(err("each part is a number followed by h, m, s or ms")),
        };
        rest = &rest[len..];
        total_ms += n * unit_ms;
        parts += 1;
        if parts > 4 {
            return Err(err("at most 4 parts"));
        }
    }
    if parts == 0 {
        return Err(err("empty"));
    }
    let total = std::time::Duration::from_millis(total_ms);
    if total.is_zero() {
        return Err(err("zero would mean waiting forever"));
    }
    if total > MAX_TIMEOUT {
        return Err(err("longer than 24h"));
    }
    Ok(total)
}

/// Checks a Function spec on its own and against the versions that exist for it
/// (`known` holds their `spec.version`s).
pub fn function<'a>(
    name: &str,
    spec: &FunctionSpec,
    known: impl IntoIterator<Item = &'a str> + Clone,
) -> Result<(), ValidationError> {
    function_name(name)?;
    traffic(&spec.traffic)?;
    let exists = |v: &str| known.clone().into_iter().any(|k| k == v);
    for t in &spec.traffic {
        if !exists(&t.version) {
            return Err(ValidationError::UnknownVersion {
                function: name.to_string(),
                version: t.version.clone(),
            });
        }
    }
    let mut tags = HashSet::new();
    for t in &spec.tags {
        dns_label("tag", &t.tag)?;
        if !tags.insert(t.tag.as_str()) {
            return Err(ValidationError::DuplicateTag(t.tag.clone()));
        }
        if !exists(&t.version) {
            return Err(ValidationError::UnknownVersion {
                function: name.to_string(),
                version: t.version.clone(),
            });
        }
    }
    for h in &spec.hosts {
        host(h)?;
    }
    if let Some(p) = &spec.path_prefix {
        path_prefix(p)?;
    }
    if let Some(t) = &spec.timeouts {
        for (field, value) in t.fields() {
            if let Some(value) = value {
                duration(field, value)?;
            }
        }
    }
    if let Some(s) = &spec.shadow {
        shadow(s)?;
        if !exists(&s.version) {
            return Err(ValidationError::UnknownVersion {
                function: name.to_string(),
                version: s.version.clone(),
            });
        }
    }
    if let Some(r) = &spec.rollout {
        // Only the plan's shape: its versions may be deleted once it is over, and a rollout
        // in flight keeps them weighted (so undeletable) anyway.
        r.plan()
            .map_err(|e| ValidationError::Rollout(e.to_string()))?;
        version(&r.canary)?;
        version(&r.baseline)?;
    }
    if let Some(a) = &spec.affinity {
        match (&a.header, &a.cookie) {
            (Some(h), None) if header_name(h) => {}
            (None, Some(c)) if header_name(c) => {}
            (Some(h), None) => {
                return Err(ValidationError::Affinity(format!(
                    "header {h:?} is not a valid header name"
                )))
            }
            (None, Some(c)) => {
                return Err(ValidationError::Affinity(format!(
                    "cookie {c:?} is not a valid cookie name"
                )))
            }
            _ => {
                return Err(ValidationError::Affinity(
                    "takes exactly one of header and cookie".into(),
                ))
            }
        }
    }
    Ok(())
}

/// Checks a shadow spec on its own (the version's existence is [`function`]'s to check).
pub fn shadow(spec: &crate::resources::ShadowSpec) -> Result<(), ValidationError> {
    let bad = |why: String| Err(ValidationError::Shadow(why));
    version(&spec.version)?;
    if spec.share == 0 || spec.share > TOTAL_PPM {
        return bad(format!(
            "share {} ppm is outside 1 to 1000000 ppm (0.0001% to 100%)",
            spec.share
        ));
    }
    let mut seen = HashSet::new();
    for m in &spec.methods {
        let token = !m.is_empty()
            && m.len() <= 32
            && m.bytes()
                .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_');
        if !token {
            return bad(format!(
                "method {:?} is not an uppercase method name (GET, POST, …)",
                cut(m)
            ));
        }
        if m == "CONNECT" {
            return bad("method CONNECT cannot be mirrored".into());
        }
        if !seen.insert(m.as_str()) {
            return bad(format!("method {m} is listed twice"));
        }
    }
    if let Some(max) = spec.max_body {
        if max > crate::resources::MAX_SHADOW_BODY {
            return bad(format!(
                "max body {max} bytes is above the limit of {} bytes (8 MiB)",
                crate::resources::MAX_SHADOW_BODY
            ));
        }
    }
    for h in &spec.ignore_headers {
        if !header_name(h) || h.bytes().any(|b| b.is_ascii_uppercase()) {
            return bad(format!(
                "ignored header {:?} is not a lowercase header name",
                cut(h)
            ));
        }
    }
    for p in &spec.ignore_json {
        crate::shadow::JsonPath::parse(p).map_err(|e| ValidationError::Shadow(e.to_string()))?;
    }
    Ok(())
}

/// Checks a FunctionVersion spec.
pub fn function_version(spec: &FunctionVersionSpec) -> Result<(), ValidationError> {
    function_name(&spec.function)?;
    version(&spec.version)?;
    object_name_fits(&spec.function, &spec.version)?;
    match (&spec.image, &spec.endpoint) {
        (Some(image), None) => {
            if image.trim().is_empty() || image.chars().any(char::is_whitespace) {
                return Err(ValidationError::Workload(format!(
                    "image {:?} is not a valid image reference",
                    cut(image)
                )));
            }
        }
        (None, Some(url)) => {
            endpoint(url)?;
            let managed_only = spec.port.is_some()
                || !spec.env.is_empty()
                || !spec.args.is_empty()
                || spec.replicas.is_some()
                || spec.resources.is_some();
            if managed_only {
                return Err(ValidationError::Workload(
                    "port, env, args, replicas and resources apply only to an image, not an endpoint".into(),
                ));
            }
        }
        _ => return Err(ValidationError::ImageOrEndpoint),
    }
    if spec.port == Some(0) {
        return Err(ValidationError::Workload(
            "port must be between 1 and 65535".into(),
        ));
    }
    if let Some(r) = spec.replicas {
        if !(0..=1000).contains(&r) {
            return Err(ValidationError::Workload(format!(
                "replicas must be between 0 and 1000, got {r}"
            )));
        }
    }
    let mut names = HashSet::new();
    for e in &spec.env {
        let ok = !e.name.is_empty()
            && e.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
            && !e.name.as_bytes()[0].is_ascii_digit();
        if !ok {
            return Err(ValidationError::Workload(format!(
                "env name {:?} is not a valid variable name",
                cut(&e.name)
            )));
        }
        if !names.insert(e.name.as_str()) {
            return Err(ValidationError::Workload(format!(
                "env {} is set twice",
                e.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{Affinity, Tag};
    use crate::TrafficTarget;

    fn spec(traffic: &[(&str, u32)]) -> FunctionSpec {
        FunctionSpec {
            traffic: traffic
                .iter()
                .map(|(v, w)| TrafficTarget::new(*v, *w))
                .collect(),
            ..Default::default()
        }
    }

    const KNOWN: [&str; 3] = ["1.0.0", "1.1.0", "2.0.0-rc.1"];

    #[test]
    fn a_well_formed_function_is_accepted() {
        let mut s = spec(&[("1.0.0", 900_000), ("1.1.0", 100_000), ("2.0.0-rc.1", 0)]);
        s.tags = vec![Tag {
            tag: "canary".into(),
            version: "1.1.0".into(),
        }];
        s.hosts = vec!["hello.example.com".into(), "*.fn.example.com".into()];
        s.path_prefix = Some("/api/hello".into());
        s.affinity = Some(Affinity {
            header: Some("x-user".into()),
            cookie: None,
        });
        assert_eq!(function("hello", &s, KNOWN), Ok(()));
    }

    #[test]
    fn the_bad_input_corpus_is_rejected_with_a_precise_error() {
        let long = "a".repeat(300);
        let unicode = "héllo";
        let cases: Vec<(&str, FunctionSpec, &str)> = vec![
            ("hello", spec(&[]), "traffic must list at least one version"),
            (
                "hello",
                spec(&[("1.0.0", 999_900)]),
                "weights must sum to 1000000 ppm (100%), got 999900 ppm (99.99%)",
            ),
            ("hello", spec(&[("1.0.0", 999_999)]), "got 999999 ppm"),
            (
                "hello",
                spec(&[("1.0.0", 1_000_000), ("1.1.0", 1)]),
                "got 1000001 ppm",
            ),
            (
                "hello",
                spec(&[("1.0.0", 2_000_000)]),
                "weight of 1.0.0 is 2000000 ppm, above 1000000",
            ),
            (
                "hello",
                spec(&[("1.0.0", 500_000), ("1.0.0", 500_000)]),
                "version 1.0.0 appears twice in traffic",
            ),
            (
                "hello",
                spec(&[("9.9.9", 1_000_000)]),
                "version 9.9.9 of function hello does not exist",
            ),
            (
                "hello",
                spec(&[("v1.0.0", 1_000_000)]),
                "version \"v1.0.0\" is not semver",
            ),
            (
                "hello",
                spec(&[("1.0", 1_000_000)]),
                "version \"1.0\" is not semver",
            ),
            ("hello", spec(&[("latest", 1_000_000)]), "is not semver"),
            (
                &long,
                spec(&[("1.0.0", 1_000_000)]),
                "longer than 63 characters",
            ),
            (
                unicode,
                spec(&[("1.0.0", 1_000_000)]),
                "only lowercase letters",
            ),
            (
                "Hello",
                spec(&[("1.0.0", 1_000_000)]),
                "only lowercase letters",
            ),
            (
                "1hello",
                spec(&[("1.0.0", 1_000_000)]),
                "must start with a lowercase letter",
            ),
            (
                "hello-",
                spec(&[("1.0.0", 1_000_000)]),
                "must not end with '-'",
            ),
            ("", spec(&[("1.0.0", 1_000_000)]), "it is empty"),
        ];
        for (name, s, expected) in cases {
            let err = function(name, &s, KNOWN).expect_err(expected).to_string();
            assert!(
                err.contains(expected),
                "{name:?}: {err:?} should contain {expected:?}"
            );
        }
    }

    #[test]
    fn a_rollout_plan_is_checked_with_the_spec() {
        let mut s = spec(&[("1.0.0", 990_000), ("1.1.0", 10_000)]);
        let known = ["1.0.0", "1.1.0"];
        s.rollout = Some(Box::new(crate::RolloutSpec::with_defaults(
            "1.1.0", "1.0.0",
        )));
        assert_eq!(function("hello", &s, known), Ok(()));
        if let Some(r) = s.rollout.as_mut() {
            r.steps = vec![50_000, 10_000];
        }
        assert_eq!(
            function("hello", &s, known).unwrap_err().to_string(),
            "rollout steps must strictly increase, got 5% then 1%"
        );
    }

    #[test]
    fn durations_are_parts_of_h_m_s_ms_from_a_millisecond_to_a_day() {
        use std::time::Duration;
        for (text, want) in [
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("1h30m", Duration::from_secs(5400)),
            ("1m30s250ms", Duration::from_millis(90_250)),
            ("24h", MAX_TIMEOUT),
            ("1ms", Duration::from_millis(1)),
        ] {
            assert_eq!(duration("connect", text), Ok(want), "{text}");
        }
        for (text, why) in [
            ("", "empty"),
            ("30", "each part is a number followed by h, m, s or ms"),
            ("s", "each part is a number followed by h, m, s or ms"),
            ("1.5s", "each part is a number followed by h, m, s or ms"),
            ("-1s", "each part is a number followed by h, m, s or ms"),
            ("1d", "each part is a number followed by h, m, s or ms"),
            ("123456s", "a number has at most 5 digits"),
            ("1h1m1s1ms1ms", "at most 4 parts"),
            ("0s", "zero would mean waiting forever"),
            ("25h", "longer than 24h"),
        ] {
            match duration("responseIdle", text) {
                Err(ValidationError::Timeout {
                    field, why: got, ..
                }) => {
                    assert_eq!((field, got), ("responseIdle", why), "{text}")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn tags_hosts_paths_and_affinity_are_checked() {
        let ok = || spec(&[("1.0.0", 1_000_000)]);
        let mut cases: Vec<(FunctionSpec, &str)> = Vec::new();
        let mut s = ok();
        s.tags = vec![
            Tag {
                tag: "a".into(),
                version: "1.0.0".into(),
            },
            Tag {
                tag: "a".into(),
                version: "1.1.0".into(),
            },
        ];
        cases.push((s, "tag a is defined twice"));
        let mut s = ok();
        s.tags = vec![Tag {
            tag: "a".into(),
            version: "3.0.0".into(),
        }];
        cases.push((s, "version 3.0.0 of function hello does not exist"));
        let mut s = ok();
        s.tags = vec![Tag {
            tag: "Canary!".into(),
            version: "1.0.0".into(),
        }];
        cases.push((s, "tag \"Canary!\" is not a valid name"));
        let mut s = ok();
        s.hosts = vec!["exa mple.com".into()];
        cases.push((s, "host \"exa mple.com\" is not a valid DNS name"));
        let mut s = ok();
        s.timeouts = Some(crate::resources::Timeouts {
            response_idle: Some("10m".into()),
            client_write: Some("forever".into()),
            ..Default::default()
        });
        cases.push((s, "timeout clientWrite \"forever\" is not a duration"));
        let mut s = ok();
        s.hosts = vec!["ünï.com".into()];
        cases.push((s, "is not a valid DNS name"));
        let mut s = ok();
        s.path_prefix = Some("hello".into());
        cases.push((s, "must start with /"));
        let mut s = ok();
        s.path_prefix = Some("/a?b".into());
        cases.push((s, "must start with /"));
        let mut s = ok();
        s.affinity = Some(Affinity {
            header: None,
            cookie: None,
        });
        cases.push((s, "affinity takes exactly one of header and cookie"));
        let mut s = ok();
        s.affinity = Some(Affinity {
            header: Some("x".into()),
            cookie: Some("y".into()),
        });
        cases.push((s, "affinity takes exactly one"));
        let mut s = ok();
        s.affinity = Some(Affinity {
            header: Some("bad header".into()),
            cookie: None,
        });
        cases.push((s, "is not a valid header name"));
        for (s, expected) in cases {
            let err = function("hello", &s, KNOWN)
                .expect_err(expected)
                .to_string();
            assert!(
                err.contains(expected),
                "{err:?} should contain {expected:?}"
            );
        }
    }

    fn fv(image: Option<&str>, endpoint: Option<&str>) -> FunctionVersionSpec {
        FunctionVersionSpec {
            function: "hello".into(),
            version: "1.0.0".into(),
            image: image.map(Into::into),
            port: None,
            env: vec![],
            args: vec![],
            replicas: None,
            resources: None,
            endpoint: endpoint.map(Into::into),
        }
    }

    #[test]
    fn versions_need_exactly_one_of_image_and_endpoint() {
        assert_eq!(
            function_version(&fv(Some("ghcr.io/acme/hello:1"), None)),
            Ok(())
        );
        assert_eq!(
            function_version(&fv(None, Some("http://127.0.0.1:8080"))),
            Ok(())
        );
        assert_eq!(
            function_version(&fv(None, None)),
            Err(ValidationError::ImageOrEndpoint)
        );
        assert_eq!(
            function_version(&fv(Some("a"), Some("http://x"))),
            Err(ValidationError::ImageOrEndpoint)
        );
    }

    #[test]
    fn endpoints_must_be_plain_http_urls() {
        for (url, expected) in [
            ("ftp://x.example.com", "only http and https"),
            ("http://user:pw@x.example.com", "credentials"),
            ("http://x.example.com/?a=1", "query or fragment"),
            ("not a url", "relative URL without a base"),
            ("http://", "empty host"),
        ] {
            let err = function_version(&fv(None, Some(url)))
                .expect_err(url)
                .to_string();
            assert!(err.contains(expected), "{url}: {err}");
        }
        assert!(endpoint("https://hello.internal:8443/base").is_ok());
    }

    #[test]
    fn object_names_must_fit_a_service_name() {
        let mut s = fv(Some("img"), None);
        s.function = "a".repeat(50);
        s.version = "1.0.0-alpha.beta.gamma".into();
        let err = function_version(&s).expect_err("too long").to_string();
        assert!(err.contains("longer than 62"), "{err}");
    }

    #[test]
    fn env_names_are_checked_and_unique() {
        let mut s = fv(Some("img"), None);
        s.env = vec![
            crate::resources::EnvVar {
                name: "A".into(),
                value: "1".into(),
            },
            crate::resources::EnvVar {
                name: "A".into(),
                value: "2".into(),
            },
        ];
        assert!(function_version(&s)
            .expect_err("dup")
            .to_string()
            .contains("env A is set twice"));
        s.env = vec![crate::resources::EnvVar {
            name: "1A".into(),
            value: "1".into(),
        }];
        assert!(function_version(&s)
            .expect_err("bad")
            .to_string()
            .contains("not a valid variable name"));
    }

    /// A split of 1–5 versions: either arbitrary weights (almost never summing to the whole), or
    /// weights scaled to sum exactly to it and then moved by `-2..=2` ppm on one version, so the
    /// accepted branch and its off-by-one neighbours both run.
    fn splits() -> impl proptest::strategy::Strategy<Value = Vec<u32>> {
        use proptest::prelude::*;
        let arbitrary = proptest::collection::vec(0u32..=1_000_000, 1..6);
        let near_whole = (
            proptest::collection::vec(0u32..=1_000, 1..6),
            -2i64..=2,
            any::<prop::sample::Index>(),
        )
            .prop_map(|(raw, nudge, at)| {
                let sum: u64 = raw.iter().map(|w| u64::from(*w)).sum::<u64>().max(1);
                let mut w: Vec<u32> = raw
                    .iter()
                    .map(|r| (u64::from(*r) * 1_000_000 / sum) as u32)
                    .collect();
                let short = 1_000_000 - w.iter().sum::<u32>();
                w[0] += short;
                let i = at.index(w.len());
                w[i] = (i64::from(w[i]) + nudge).clamp(0, 1_000_000) as u32;
                w
            });
        prop_oneof![arbitrary, near_whole]
    }

    proptest::proptest! {
        #[test]
        fn a_split_is_accepted_exactly_when_it_sums_to_the_whole(weights in splits()) {
            let traffic: Vec<_> = weights
                .iter()
                .enumerate()
                .map(|(i, w)| TrafficTarget::new(format!("1.{i}.0"), *w))
                .collect();
            let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
            let result = super::traffic(&traffic);
            if total == 1_000_000 {
                proptest::prop_assert_eq!(result, Ok(()));
            } else {
                proptest::prop_assert_eq!(result, Err(ValidationError::WeightSum { total }));
            }
        }

        #[test]
        fn a_name_is_accepted_exactly_when_it_is_a_label(
            // Arbitrary text, label-shaped text (mostly valid: the accepted branch runs), and
            // text of label characters in any order and length (the edges: leading digit or
            // '-', trailing '-', 63 and 64 characters).
            name in proptest::prop_oneof![
                "\\PC{0,80}",
                "[a-z]([a-z0-9-]{0,61}[a-z0-9])?",
                "[a-z0-9-]{0,66}",
            ]
        ) {
            let valid = !name.is_empty()
                && name.len() <= 63
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && name.as_bytes()[0].is_ascii_lowercase()
                && !name.ends_with('-');
            proptest::prop_assert_eq!(function_name(&name).is_ok(), valid, "{:?}", name);
        }
    }

    #[test]
    fn the_generators_reach_both_branches() {
        use proptest::strategy::{Strategy, ValueTree};
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let (mut whole, mut other) = (0, 0);
        for _ in 0..256 {
            let w = splits().new_tree(&mut runner).expect("a split").current();
            if w.iter().map(|w| u64::from(*w)).sum::<u64>() == 1_000_000 {
                whole += 1;
            } else {
                other += 1;
            }
        }
        assert!(whole >= 32 && other >= 32, "{whole} whole, {other} not");
        let names = proptest::prop_oneof!["[a-z]([a-z0-9-]{0,61}[a-z0-9])?", "[a-z0-9-]{0,66}"];
        let valid = (0..256)
            .filter(|_| {
                let n = names.new_tree(&mut runner).expect("a name").current();
                function_name(&n).is_ok()
            })
            .count();
        assert!((32..=224).contains(&valid), "{valid} of 256 names valid");
    }
}
