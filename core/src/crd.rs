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
    vec![Function::crd(), FunctionVersion::crd(), router_report()]
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
