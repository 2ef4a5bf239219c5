//! The CLI's traffic syntax: `1.2.0=10 1.1.0=90`, `@latest=5`, `canary=0.05`.
//!
//! Parsing is two steps: [`parse`] reads the words alone (so a typo fails before any request
//! is made), [`resolve`] turns tags and `@latest` into versions against a function's state.

use crate::resources::{FunctionSpec, TrafficTarget};
use crate::weight::{parse_percent, Percent, WeightError, TOTAL_PPM};

/// Why a traffic assignment cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrafficError {
    /// Nothing given.
    #[error("no traffic given (expected VERSION=PERCENT, like 1.2.0=10 1.1.0=90)")]
    Empty,
    /// A word without `=`.
    #[error("{0:?} is not VERSION=PERCENT (like 1.2.0=10)")]
    Syntax(String),
    /// A bad percentage.
    #[error(transparent)]
    Weight(#[from] WeightError),
    /// The percentages do not make 100.
    #[error("weights add up to {}, they must add up to exactly 100%", Percent(*.0 as u32))]
    Total(u64),
    /// A name that is neither a version nor a tag of the function.
    #[error("{name:?} is neither a version nor a tag of function {function}")]
    Unknown {
        /// The function.
        function: String,
        /// The name.
        name: String,
    },
    /// `@latest` on a function with no version.
    #[error("function {0} has no version for @latest to name")]
    NoLatest(String),
    /// Two names that resolve to one version.
    #[error("version {0} is given more than once")]
    Duplicate(String),
}

/// One `NAME=PERCENT` word, before resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// A version, a tag or `@latest`.
    pub name: String,
    /// Parts per million.
    pub weight: u32,
}

/// Reads `NAME=PERCENT` words, checking syntax and that the total is exactly 100%.
pub fn parse<S: AsRef<str>>(words: &[S]) -> Result<Vec<Assignment>, TrafficError> {
    if words.is_empty() {
        return Err(TrafficError::Empty);
    }
    let mut out = Vec::with_capacity(words.len());
    let mut total: u64 = 0;
    for word in words {
        let word = word.as_ref();
        let (name, pct) = word
            .split_once('=')
            .filter(|(n, _)| !n.trim().is_empty())
            .ok_or_else(|| TrafficError::Syntax(word.to_string()))?;
        let weight = parse_percent(pct)?;
        total += u64::from(weight);
        out.push(Assignment {
            name: name.trim().to_string(),
            weight,
        });
    }
    if total != u64::from(TOTAL_PPM) {
        return Err(TrafficError::Total(total));
    }
    Ok(out)
}

/// The newest version by semver precedence, preferring releases over pre-releases.
pub fn latest<'a>(versions: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let parsed: Vec<(semver::Version, &str)> = versions
        .into_iter()
        .filter_map(|v| semver::Version::parse(v).ok().map(|p| (p, v)))
        .collect();
    let release = parsed.iter().filter(|(p, _)| p.pre.is_empty()).max();
    release.or_else(|| parsed.iter().max()).map(|(_, v)| *v)
}

/// Resolves tags and `@latest` against a function's tags and its existing versions, refusing
/// unknown names and a version named twice.
pub fn resolve<'a>(
    function: &str,
    assignments: &[Assignment],
    spec: Option<&FunctionSpec>,
    versions: impl IntoIterator<Item = &'a str> + Clone,
) -> Result<Vec<TrafficTarget>, TrafficError> {
    let mut out: Vec<TrafficTarget> = Vec::with_capacity(assignments.len());
    for a in assignments {
        let version = if a.name == "@latest" {
            latest(versions.clone())
                .ok_or_else(|| TrafficError::NoLatest(function.to_string()))?
                .to_string()
        } else if versions.clone().into_iter().any(|v| v == a.name) {
            a.name.clone()
        } else if let Some(v) = spec.and_then(|s| s.tag(&a.name)) {
            v.to_string()
        } else {
            return Err(TrafficError::Unknown {
                function: function.to_string(),
                name: a.name.clone(),
            });
        };
        if out.iter().any(|t| t.version == version) {
            return Err(TrafficError::Duplicate(version));
        }
        out.push(TrafficTarget::new(version, a.weight));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Tag;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn assignments_parse_into_exact_ppm() {
        let got = parse(&words("1.2.0=0.05 1.1.0=99.95")).expect("valid");
        assert_eq!(
            got,
            vec![
                Assignment {
                    name: "1.2.0".into(),
                    weight: 500
                },
                Assignment {
                    name: "1.1.0".into(),
                    weight: 999_500
                },
            ]
        );
    }

    #[test]
    fn bad_assignments_say_what_is_wrong() {
        let cases = [
            ("", "no traffic given"),
            ("1.2.0", "\"1.2.0\" is not VERSION=PERCENT"),
            ("=10", "is not VERSION=PERCENT"),
            (
                "1.2.0=10 1.1.0=89.99",
                "weights add up to 99.99%, they must add up to exactly 100%",
            ),
            ("1.2.0=60 1.1.0=60", "weights add up to 120%"),
            ("1.2.0=-5 1.1.0=105", "is negative"),
            ("1.2.0=101", "above 100%"),
            ("1.2.0=ten", "is not a percentage"),
            ("1.2.0=0.00001 1.1.0=99.99999", "more than four decimals"),
        ];
        for (input, expected) in cases {
            let err = parse(&words(input)).expect_err(input).to_string();
            assert!(
                err.contains(expected),
                "{input:?}: {err:?} lacks {expected:?}"
            );
        }
    }

    #[test]
    fn tags_and_latest_resolve_to_versions() {
        let spec = FunctionSpec {
            tags: vec![Tag {
                tag: "stable".into(),
                version: "1.1.0".into(),
            }],
            ..Default::default()
        };
        let versions = ["1.1.0", "1.2.0", "1.10.0", "2.0.0-rc.1"];
        let got = resolve(
            "hello",
            &parse(&words("@latest=10 stable=90")).expect("valid"),
            Some(&spec),
            versions,
        )
        .expect("resolves");
        assert_eq!(
            got,
            vec![
                TrafficTarget::new("1.10.0", 100_000),
                TrafficTarget::new("1.1.0", 900_000)
            ]
        );
    }

    #[test]
    fn resolution_refuses_unknown_names_and_duplicates() {
        let spec = FunctionSpec {
            tags: vec![Tag {
                tag: "stable".into(),
                version: "1.1.0".into(),
            }],
            ..Default::default()
        };
        let versions = ["1.1.0", "1.2.0"];
        let err = |s: &str| {
            resolve(
                "hello",
                &parse(&words(s)).expect("syntax"),
                Some(&spec),
                versions,
            )
            .expect_err(s)
            .to_string()
        };
        assert_eq!(
            err("9.9.9=100"),
            "\"9.9.9\" is neither a version nor a tag of function hello"
        );
        assert_eq!(
            err("stable=50 1.1.0=50"),
            "version 1.1.0 is given more than once"
        );
        let none: [&str; 0] = [];
        let e = resolve(
            "hello",
            &parse(&words("@latest=100")).expect("syntax"),
            None,
            none,
        )
        .expect_err("empty");
        assert_eq!(e, TrafficError::NoLatest("hello".into()));
    }

    #[test]
    fn latest_prefers_releases_and_falls_back_to_prereleases() {
        assert_eq!(latest(["1.0.0", "2.0.0-rc.1", "1.9.9"]), Some("1.9.9"));
        assert_eq!(latest(["2.0.0-rc.1", "2.0.0-rc.2"]), Some("2.0.0-rc.2"));
        assert_eq!(latest(["not-semver"]), None);
    }
}
