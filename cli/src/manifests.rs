//! The manifests of `manifests/`, embedded in the binary, that `install` applies and
//! `uninstall` removes: parsed into objects, each with the API resource it is written to.
//!
//! The kinds are a fixed table rather than discovery: the manifests name eight built-in kinds,
//! and a table costs no round trips and is checked offline (a test fails if a manifest names a
//! kind missing here).

use anyhow::{anyhow, bail, Context as _};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject};
use serde::Deserialize as _;

/// The files of `manifests/kustomization.yaml`, in its order (which is the apply order), with
/// their text.
pub const FILES: &[(&str, &str)] = &[
    ("crds.yaml", include_str!("../../manifests/crds.yaml")),
    (
        "namespace.yaml",
        include_str!("../../manifests/namespace.yaml"),
    ),
    ("rbac.yaml", include_str!("../../manifests/rbac.yaml")),
    ("roles.yaml", include_str!("../../manifests/roles.yaml")),
    ("router.yaml", include_str!("../../manifests/router.yaml")),
];

/// The router's container in the router Deployment, whose image `--image` replaces.
pub const ROUTER_CONTAINER: &str = "router";

/// One object of the manifests.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The object as written in the file.
    pub object: DynamicObject,
    /// Where it is written.
    pub resource: ApiResource,
    /// Its namespace; `None` for a cluster-scoped object.
    pub namespace: Option<String>,
}

impl Manifest {
    /// Its name.
    pub fn name(&self) -> &str {
        self.object.metadata.name.as_deref().unwrap_or_default()
    }

    /// Its kind.
    pub fn kind(&self) -> &str {
        &self.resource.kind
    }

    /// `Kind name` or `Kind namespace/name`, for messages.
    pub fn label(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind(), self.name()),
            None => format!("{} {}", self.kind(), self.name()),
        }
    }
}

/// The API resource of each kind the manifests use, and whether it is namespaced.
fn kinds() -> Vec<(ApiResource, bool)> {
    vec![
        (ApiResource::erase::<CustomResourceDefinition>(&()), false),
        (ApiResource::erase::<Namespace>(&()), false),
        (ApiResource::erase::<ServiceAccount>(&()), true),
        (ApiResource::erase::<ClusterRole>(&()), false),
        (ApiResource::erase::<ClusterRoleBinding>(&()), false),
        (ApiResource::erase::<Deployment>(&()), true),
        (ApiResource::erase::<Service>(&()), true),
        (ApiResource::erase::<PodDisruptionBudget>(&()), true),
    ]
}

/// Every object of the embedded manifests, in apply order, with the router image replaced
/// by `image` when given.
pub fn objects(image: Option<&str>) -> anyhow::Result<Vec<Manifest>> {
    let kinds = kinds();
    let mut out = Vec::new();
    for (file, text) in FILES {
        for doc in serde_yaml::Deserializer::from_str(text) {
            let value = serde_json::Value::deserialize(doc)
                .with_context(|| format!("parsing embedded manifests/{file}"))?;
            if value.is_null() {
                continue; // a document of comments only
            }
            let object: DynamicObject = serde_json::from_value(value)
                .with_context(|| format!("reading an object of embedded manifests/{file}"))?;
            let types = object
                .types
                .clone()
                .ok_or_else(|| anyhow!("manifests/{file}: an object without apiVersion/kind"))?;
            let (resource, namespaced) = kinds
                .iter()
                .find(|(r, _)| r.api_version == types.api_version && r.kind == types.kind)
                .cloned()
                .ok_or_else(|| {
                    anyhow!(
                        "manifests/{file}: kind {} {} is not one install knows",
                        types.api_version,
                        types.kind
                    )
                })?;
            let namespace = object.metadata.namespace.clone();
            if object.metadata.name.is_none() || namespace.is_some() != namespaced {
                bail!(
                    "manifests/{file}: {} {:?} needs a name{}",
                    types.kind,
                    object.metadata.name,
                    if namespaced {
                        " and a namespace"
                    } else {
                        " and no namespace"
                    }
                );
            }
            out.push(Manifest {
                object,
                resource,
                namespace,
            });
        }
    }
    if let Some(image) = image {
        set_router_image(&mut out, image)?;
    }
    Ok(out)
}

/// Replaces the image of the router container in the router Deployment.
fn set_router_image(objects: &mut [Manifest], image: &str) -> anyhow::Result<()> {
    let mut replaced = 0;
    for m in objects.iter_mut().filter(|m| m.kind() == "Deployment") {
        let containers = m.object.data["spec"]["template"]["spec"]["containers"].as_array_mut();
        for c in containers.into_iter().flatten() {
            if c["name"] == ROUTER_CONTAINER {
                c["image"] = serde_json::Value::String(image.to_string());
                replaced += 1;
            }
        }
    }
    if replaced != 1 {
        bail!("the embedded manifests have {replaced} router containers, expected exactly 1");
    }
    Ok(())
}

/// The names of the CustomResourceDefinitions among `objects`.
pub fn crd_names(objects: &[Manifest]) -> Vec<String> {
    objects
        .iter()
        .filter(|m| m.kind() == "CustomResourceDefinition")
        .map(|m| m.name().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_files_are_the_kustomizations_resources_in_its_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests");
        let text = std::fs::read_to_string(dir.join("kustomization.yaml")).expect("kustomization");
        let k: serde_yaml::Value = serde_yaml::from_str(&text).expect("yaml");
        let listed: Vec<&str> = k["resources"]
            .as_sequence()
            .expect("resources")
            .iter()
            .map(|r| r.as_str().expect("a file name"))
            .collect();
        let embedded: Vec<&str> = FILES.iter().map(|(f, _)| *f).collect();
        assert_eq!(embedded, listed);
        for (file, text) in FILES {
            let on_disk = std::fs::read_to_string(dir.join(file)).expect("manifest file");
            assert_eq!(*text, on_disk, "{file}");
        }
    }

    #[test]
    fn every_object_has_a_known_kind_a_name_and_the_right_scope() {
        let objects = objects(None).expect("the embedded manifests parse");
        let labels: Vec<String> = objects.iter().map(Manifest::label).collect();
        assert_eq!(
            labels,
            [
                "CustomResourceDefinition functions.switchyard.dev",
                "CustomResourceDefinition functionversions.switchyard.dev",
                "CustomResourceDefinition routerreports.switchyard.dev",
                "Namespace switchyard-system",
                "ServiceAccount switchyard-system/switchyard-router",
                "ClusterRole switchyard-router",
                "ClusterRoleBinding switchyard-router",
                "ClusterRole switchyard-viewer",
                "ClusterRole switchyard-deployer",
                "Deployment switchyard-system/switchyard-router",
                "Service switchyard-system/switchyard-router",
                "PodDisruptionBudget switchyard-system/switchyard-router",
            ]
        );
        assert_eq!(
            crd_names(&objects),
            [
                "functions.switchyard.dev",
                "functionversions.switchyard.dev",
                "routerreports.switchyard.dev"
            ]
        );
    }

    #[test]
    fn image_replaces_only_the_router_containers_image() {
        let image = |objects: &[Manifest]| {
            objects.iter().find(|m| m.kind() == "Deployment").map(|m| {
                m.object.data["spec"]["template"]["spec"]["containers"][0]["image"].clone()
            })
        };
        let default = objects(None).expect("manifests");
        assert!(image(&default)
            .and_then(|i| i.as_str().map(str::to_owned))
            .is_some_and(|i| i.starts_with("ghcr.io/switchyard-dev/switchyard-router:")));
        let custom = objects(Some("registry.example/router@sha256:abc")).expect("manifests");
        assert_eq!(
            image(&custom),
            Some(serde_json::json!("registry.example/router@sha256:abc"))
        );
        // Nothing else differs.
        for (a, b) in default.iter().zip(&custom) {
            if a.kind() != "Deployment" {
                assert_eq!(a.object, b.object);
            }
        }
    }
}
