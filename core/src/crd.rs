//! The CustomResourceDefinitions, generated from the Rust types.
//!
//! `manifests/crds.yaml` is this module's output, kept equal to it by a golden test
//! (`UPDATE_GOLDEN=1 cargo test -p switchyard-core` rewrites it).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::report::RouterReport;
use crate::resources::{Function, FunctionVersion};

/// Every CRD: Function, FunctionVersion, RouterReport.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![function(), FunctionVersion::crd(), router_report()]
        .into_iter()
        .map(known_formats)
        .collect()
}

/// The CRD with only integer formats Kubernetes knows: schemars writes `uint16`, `uint32` and
/// `uint64` for unsigned fields, and every `kubectl apply` of such a CRD warns `unrecognized
/// format`. An unsigned field becomes `int32` (u16) or `int64`, with `minimum: 0` unless it
/// already has a lower bound.
fn known_formats(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                let known = match map.get("format").and_then(|f| f.as_str()) {
                    Some("uint16") => Some("int32"),
                    Some("uint32" | "uint64" | "uint") => Some("int64"),
                    _ => None,
                };
                if let Some(known) = known {
                    map.insert("format".into(), known.into());
                    map.entry("minimum").or_insert_with(|| 0.into());
                }
                map.values_mut().for_each(walk);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let Ok(mut value) = serde_json::to_value(&crd) else {
        return crd;
    };
    walk(&mut value);
    // The walk changes only two plain fields, so the value still reads as a CRD.
    serde_json::from_value(value).unwrap_or(crd)
}

/// Function, without the status subresource the derive adds: one write carries the traffic,
/// the history and the rollout's progress (`status.rollout`) together.
fn function() -> CustomResourceDefinition {
    let mut crd = Function::crd();
    for version in &mut crd.spec.versions {
        version.subresources = None;
    }
    crd
}

/// RouterReport, without the status subresource the derive adds: a replica writes its whole
/// report through the main endpoint (docs/protocol.md), one object, one kind of write.
fn router_report() -> CustomResourceDefinition {
    let mut crd = RouterReport::crd();
    for version in &mut crd.spec.versions {
        version.subresources = None;
    }
    crd
}

/// Every CRD as one multi-document YAML file, as in `manifests/crds.yaml`.
pub fn crds_yaml() -> String {
    let mut out = String::from(
        "# Generated from switchyard-core's Rust types; do not edit.\n\
         # Regenerate with: UPDATE_GOLDEN=1 cargo test -p switchyard-core --test crds\n",
    );
    for crd in crds() {
        out.push_str("---\n");
        // Serializing a typed CRD cannot fail: every field is plain data.
        out.push_str(&serde_yaml::to_string(&crd).unwrap_or_default());
    }
    out
}
