//! The snapshot file: the inputs of every good route, written atomically after each swap, and
//! read at start when the source cannot be reached.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use switchyard_core::{Function, FunctionVersion};

use crate::source::State;

/// What the file holds, as written.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FileOut<'a> {
    /// Format version, 1.
    format: u32,
    /// When the content was read from the source, in epoch milliseconds.
    as_of_ms: u64,
    functions: Vec<&'a Function>,
    versions: Vec<&'a FunctionVersion>,
}

/// What the file holds, as read.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileIn {
    as_of_ms: u64,
    functions: Vec<Function>,
    versions: Vec<FunctionVersion>,
}

/// Collects the inputs of routes into a state to snapshot.
pub fn state_of<'a>(goods: impl Iterator<Item = &'a crate::build::Good>) -> State {
    let mut functions = Vec::new();
    let mut versions = BTreeMap::new();
    for g in goods {
        functions.push(Arc::clone(&g.function));
        for v in &g.versions {
            let m = &v.metadata;
            versions.insert((m.namespace.clone(), m.name.clone()), Arc::clone(v));
        }
    }
    State {
        functions,
        versions: versions.into_values().collect(),
    }
}

/// Writes `state` read at `as_of` to `path` (write to a temporary file beside it, then rename).
pub fn write(path: &Path, state: &State, as_of: SystemTime) -> anyhow::Result<()> {
    let file = FileOut {
        format: 1,
        as_of_ms: as_of
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        functions: state.functions.iter().map(|f| f.as_ref()).collect(),
        versions: state.versions.iter().map(|v| v.as_ref()).collect(),
    };
    let tmp = path.with_extension("tmp");
    let body = serde_json::to_vec(&file).context("serializing the snapshot")?;
    std::fs::write(&tmp, body).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// Reads a snapshot: the state and when it was read from its source.
pub fn read(path: &Path) -> anyhow::Result<(State, SystemTime)> {
    let body =
        std::fs::read(path).with_context(|| format!("reading snapshot {}", path.display()))?;
    let file: FileIn = serde_json::from_slice(&body)
        .with_context(|| format!("parsing snapshot {}", path.display()))?;
    Ok((
        State {
            functions: file.functions.into_iter().map(Arc::new).collect(),
            versions: file.versions.into_iter().map(Arc::new).collect(),
        },
        UNIX_EPOCH + Duration::from_millis(file.as_of_ms),
    ))
}
