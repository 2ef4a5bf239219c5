//! The documents of the local store, as values: no IO.
//!
//! A store directory holds one file per function, `functions/<name>.yaml`, with the Function and
//! its FunctionVersions in the same shape as on Kubernetes (namespace [`LOCAL_NAMESPACE`]), and
//! one file per router replica, `routers/<replica>.json`, with its heartbeat, its table, its
//! numbers and one entry per Function (docs/protocol.md, "Local store"). This module only reads and renders those documents and checks them; the files
//! themselves (locking, atomic writes) are [`crate::LocalStore`]'s, and following them is the
//! router's.

use serde::{Deserialize, Serialize};

use switchyard_core::numbers::Numbers;
use switchyard_core::report::TableReport;
use switchyard_core::validate::{self, ValidationError};
use switchyard_core::{Function, FunctionVersion};

/// The namespace every object of a local store lives in.
pub const LOCAL_NAMESPACE: &str = "local";

/// One function's file: the Function (absent until the first version is deployed) and every
/// version of it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FunctionDocument {
    /// The Function; `metadata.generation` counts spec changes, `metadata.resourceVersion`
    /// counts writes of the file (the optimistic-concurrency token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<Function>,
    /// Its versions, in deploy order.
    #[serde(default)]
    pub versions: Vec<FunctionVersion>,
}

/// Why a store file cannot be used. Names the file, and the line where one is known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// Not YAML of the expected shape.
    #[error("{file}:{line}: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// What the parser said.
        message: String,
    },
    /// Well-formed but invalid.
    #[error("{file}: {source}")]
    Invalid {
        /// The file.
        file: String,
        /// What is wrong.
        source: Box<ValidationError>,
    },
    /// The file exists but holds nothing: a truncated or clobbered file, never what a writer
    /// leaves (a function without versions has no file at all).
    #[error(
        "{file}: the file is empty (restore it from a backup, or remove it to delete the function)"
    )]
    Empty {
        /// The file.
        file: String,
    },
    /// An object that does not belong in this file.
    #[error("{file}: {message}")]
    Mismatch {
        /// The file.
        file: String,
        /// What does not belong.
        message: String,
    },
}

impl FunctionDocument {
    /// Reads and checks the file of function `name` (`file` is its path, for messages). An
    /// empty file is an error, not an empty document: read as one, it would silently delete
    /// the function's route.
    pub fn parse(name: &str, file: &str, text: &str) -> Result<FunctionDocument, DocumentError> {
        if text.trim().is_empty() {
            return Err(DocumentError::Empty {
                file: file.to_string(),
            });
        }
        let doc: FunctionDocument =
            serde_yaml::from_str(text).map_err(|e| DocumentError::Syntax {
                file: file.to_string(),
                line: e.location().map_or(1, |l| l.line()),
                message: e
                    .to_string()
                    .split(" at line ")
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            })?;
        doc.check(name, file)?;
        Ok(doc)
    }

    /// Checks that every object belongs to function `name`, that versions are unique and valid,
    /// and that the Function is valid against them.
    pub fn check(&self, name: &str, file: &str) -> Result<(), DocumentError> {
        let invalid = |source| DocumentError::Invalid {
            file: file.to_string(),
            source: Box::new(source),
        };
        let mismatch = |message: String| DocumentError::Mismatch {
            file: file.to_string(),
            message,
        };
        validate::function_name(name).map_err(invalid)?;
        let mut seen = std::collections::HashSet::new();
        for v in &self.versions {
            if v.spec.function != name {
                return Err(mismatch(format!(
                    "version {} belongs to function {}, not {name}",
                    v.spec.version, v.spec.function
                )));
            }
            if !seen.insert(v.spec.version.as_str()) {
                return Err(mismatch(format!(
                    "version {} is listed twice",
                    v.spec.version
                )));
            }
            switchyard_core::plan::name_collision(
                name,
                self.versions.iter().map(|o| o.spec.version.as_str()),
                &v.spec.version,
            )
            .map_err(|e| mismatch(e.to_string()))?;
            validate::function_version(&v.spec).map_err(invalid)?;
        }
        if let Some(f) = &self.function {
            if f.metadata.name.as_deref() != Some(name) {
                return Err(mismatch(format!(
                    "the function is named {:?}, but the file is for {name}",
                    f.metadata.name.as_deref().unwrap_or_default()
                )));
            }
            validate::function(
                name,
                &f.spec,
                self.versions.iter().map(|v| v.spec.version.as_str()),
            )
            .map_err(invalid)?;
        }
        Ok(())
    }

    /// The document as YAML, as written to its file.
    pub fn render(&self) -> String {
        // Plain data: serialization cannot fail.
        serde_yaml::to_string(self).unwrap_or_default()
    }

    /// The optimistic-concurrency token of the document: the Function's `resourceVersion`, or
    /// `"0"` before the Function exists.
    pub fn resource_version(&self) -> String {
        self.function
            .as_ref()
            .and_then(|f| f.metadata.resource_version.clone())
            .unwrap_or_else(|| "0".to_string())
    }

    /// Prepares the document for writing after `previous`: bumps `resourceVersion`, and
    /// `generation` when the Function's spec changed; fills in namespace and names.
    pub fn next_revision(mut self, previous: &FunctionDocument) -> FunctionDocument {
        let rv: u64 = previous.resource_version().parse().unwrap_or(0);
        let old_spec = previous.function.as_ref().map(|f| &f.spec);
        let old_generation = previous
            .function
            .as_ref()
            .and_then(|f| f.metadata.generation)
            .unwrap_or(0);
        if let Some(f) = &mut self.function {
            f.metadata.namespace = Some(LOCAL_NAMESPACE.to_string());
            f.metadata.resource_version = Some((rv + 1).to_string());
            f.metadata.generation = Some(if old_spec == Some(&f.spec) {
                old_generation.max(1)
            } else {
                old_generation + 1
            });
        }
        for v in &mut self.versions {
            v.metadata.namespace = Some(LOCAL_NAMESPACE.to_string());
            v.metadata.name = Some(switchyard_core::object_name(
                &v.spec.function,
                &v.spec.version,
            ));
        }
        self
    }
}

/// One router replica's file in a local store: its heartbeat and what it serves.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouterDocument {
    /// The replica.
    pub name: String,
    /// When it last renewed, in epoch milliseconds.
    pub renewed_ms: i64,
    /// How long the heartbeat holds, in seconds.
    pub lease_duration_seconds: i32,
    /// The listen address, for people and for the quickstart.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub listen: String,
    /// When the replica started, RFC 3339: the epoch of its numbers' counters.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub started_at: String,
    /// The routing table it serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<TableReport>,
    /// Its live traffic numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numbers: Option<Numbers>,
    /// One entry per function, by name.
    #[serde(default)]
    pub functions: Vec<FunctionEntry>,
}

/// What a replica does with one function of a local store.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionEntry {
    /// The function.
    pub name: String,
    /// The latest generation of it the replica has read.
    pub observed_generation: i64,
    /// When the replica settled on that generation, RFC 3339.
    pub applied_at: String,
    /// Why it refuses that generation (it keeps the last good route); absent when it serves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
    /// What it waits for before it can serve that generation (a version not read yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
}

/// How many lease durations after its last renewal a replica's file is still shown (as gone);
/// at least [`FORGET_AFTER_MIN_MS`].
pub const FORGET_AFTER_LEASES: i64 = 10;

/// The shortest time a stopped replica's file is still shown, in milliseconds (five minutes).
pub const FORGET_AFTER_MIN_MS: i64 = 300_000;

impl RouterDocument {
    /// Whether the replica stopped renewing so long ago that readers leave it out: a router
    /// killed with -9 cannot remove its file, which would otherwise show in `status` forever.
    /// A replica gone for less than that still shows, as gone.
    pub fn forgotten(&self, now_ms: i64) -> bool {
        let window = (i64::from(self.lease_duration_seconds) * 1000 * FORGET_AFTER_LEASES)
            .max(FORGET_AFTER_MIN_MS);
        now_ms.saturating_sub(self.renewed_ms) > window
    }

    /// The replica's entry for `function`.
    pub fn entry(&self, function: &str) -> Option<&FunctionEntry> {
        self.functions.iter().find(|e| e.name == function)
    }

    /// Whether the heartbeat is fresh at `now_ms` (`protocol::lease_fresh`).
    pub fn live(&self, now_ms: i64) -> bool {
        switchyard_core::protocol::lease_fresh(self.renewed_ms, self.lease_duration_seconds, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_core::TOTAL_PPM;

    fn doc() -> FunctionDocument {
        let mut f = Function::test("hello").with_weight("1.0.0", TOTAL_PPM);
        f.metadata.generation = None;
        FunctionDocument {
            function: Some(f),
            versions: vec![FunctionVersion::test_endpoint(
                "hello",
                "1.0.0",
                "http://127.0.0.1:8081",
            )],
        }
        .next_revision(&FunctionDocument::default())
    }

    #[test]
    fn a_document_round_trips_through_its_rendering() {
        let d = doc();
        let text = d.render();
        assert_eq!(
            FunctionDocument::parse("hello", "functions/hello.yaml", &text),
            Ok(d)
        );
    }

    #[test]
    fn a_rollout_plan_and_its_progress_round_trip_through_the_file() {
        use switchyard_core::numbers::Counts;
        use switchyard_core::{
            FunctionStatus, RolloutPhase, RolloutSpec, RolloutStatus, StepReading,
        };
        let mut d = doc();
        d.versions.push(FunctionVersion::test_endpoint(
            "hello",
            "1.1.0",
            "http://127.0.0.1:8082",
        ));
        let f = d.function.as_mut().expect("function");
        f.spec.rollout = Some(Box::new(RolloutSpec::with_defaults("1.1.0", "1.0.0")));
        let counts = |n: u64| Counts {
            requests: n,
            failures: 1,
            latency: [(80, n - 1), (95, 1)].into(),
        };
        f.status = Some(FunctionStatus {
            rollout: Some(Box::new(RolloutStatus {
                phase: RolloutPhase::Progressing,
                step: 0,
                started_at: "2026-12-02T10:00:00.125Z".into(),
                step_started_at: "2026-12-02T10:00:00.125Z".into(),
                at_start: vec![StepReading {
                    replica: "r1".into(),
                    started_at: "2026-12-02T09:00:00Z".into(),
                    canary: counts(3),
                    baseline: counts(900),
                }],
                reason: Some("started step 1/5 at 1%".into()),
                actor: "alice".into(),
                updated_at: "2026-12-02T10:00:00.125Z".into(),
                canary: "1.1.0".into(),
                baseline: "1.0.0".into(),
                steps: vec![10_000, 1_000_000],
            })),
        });
        let text = d.render();
        assert!(
            text.contains("rollout:") && text.contains("atStart:"),
            "{text}"
        );
        assert_eq!(
            FunctionDocument::parse("hello", "functions/hello.yaml", &text),
            Ok(d)
        );
    }

    #[test]
    fn revisions_count_writes_and_generations_count_spec_changes() {
        let first = doc();
        assert_eq!(first.resource_version(), "1");
        let same = first.clone().next_revision(&first);
        assert_eq!(same.resource_version(), "2");
        assert_eq!(
            same.function.as_ref().and_then(|f| f.metadata.generation),
            Some(1)
        );
        let mut changed = same.clone();
        changed.function.as_mut().expect("function").spec.pinning = true;
        let changed = changed.next_revision(&same);
        assert_eq!(
            changed
                .function
                .as_ref()
                .and_then(|f| f.metadata.generation),
            Some(2)
        );
    }

    #[test]
    fn a_broken_file_is_reported_with_its_name_and_line() {
        let text = doc().render();
        let broken = text.replacen("weight: 1000000", "weight: [oops", 1);
        let err = FunctionDocument::parse("hello", "s/functions/hello.yaml", &broken)
            .expect_err("broken");
        let DocumentError::Syntax { file, line, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(file, "s/functions/hello.yaml");
        let expected = text
            .lines()
            .position(|l| l.contains("weight: 1000000"))
            .expect("line")
            + 1;
        assert!(
            line.abs_diff(expected) <= 1,
            "line {line}, expected about {expected}: {err}"
        );
        let truncated = &text[..text.len() / 2];
        assert!(FunctionDocument::parse("hello", "f", truncated).is_err());
    }

    #[test]
    fn a_hand_edited_invalid_split_is_refused_with_the_reason() {
        let text = doc()
            .render()
            .replacen("weight: 1000000", "weight: 999999", 1);
        let err = FunctionDocument::parse("hello", "f.yaml", &text)
            .expect_err("bad sum")
            .to_string();
        assert_eq!(
            err,
            "f.yaml: weights must sum to 1000000 ppm (100%), got 999999 ppm (99.9999%)"
        );
    }

    #[test]
    fn objects_of_another_function_do_not_belong() {
        let err = FunctionDocument::parse("other", "f.yaml", &doc().render())
            .expect_err("mismatch")
            .to_string();
        assert!(
            err.contains("belongs to function hello, not other"),
            "{err}"
        );
    }

    #[test]
    fn two_versions_sharing_an_object_name_do_not_belong_in_one_file() {
        let mut d = doc();
        for v in ["1.3.0-rc.1", "1.3.0+rc.1"] {
            d.versions.push(FunctionVersion::test_endpoint(
                "hello",
                v,
                "http://127.0.0.1:8082",
            ));
        }
        let err = FunctionDocument::parse("hello", "f.yaml", &d.render())
            .expect_err("collision")
            .to_string();
        assert!(
            err.contains("would be named hello-1-3-0-rc-1, like version"),
            "{err}"
        );
    }

    #[test]
    fn an_empty_file_is_an_error_and_not_a_function_without_versions() {
        for text in ["", "\n  \n"] {
            assert_eq!(
                FunctionDocument::parse("hello", "f.yaml", text),
                Err(DocumentError::Empty {
                    file: "f.yaml".into()
                })
            );
        }
    }

    #[test]
    fn a_replica_that_stopped_long_ago_is_forgotten_and_a_recent_one_is_not() {
        let r = RouterDocument {
            name: "r1".into(),
            renewed_ms: 1_000_000,
            lease_duration_seconds: 60,
            ..Default::default()
        };
        // Ten leases of 60 s: ten minutes.
        assert!(!r.forgotten(1_000_000 + 600_000));
        assert!(r.forgotten(1_000_000 + 600_001));
        // A short lease still shows for five minutes.
        let short = RouterDocument {
            lease_duration_seconds: 3,
            ..r.clone()
        };
        assert!(!short.forgotten(1_000_000 + 300_000));
        assert!(short.forgotten(1_000_000 + 300_001));
    }
}
