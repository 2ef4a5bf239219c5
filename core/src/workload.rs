//! The shape of a managed version: the Deployment and Service a FunctionVersion with an image
//! owns, their labels and selector, when the version counts as ready, and the Service address
//! the router dials.
//!
//! The CLI creates these objects and reads their status; the router dials the Service. Both
//! take the shape from here, so a change to a name, a label or a port changes both sides. No
//! IO: the CLI sends what [`workload`] returns and hands [`readiness`] what it read.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar as KEnvVar, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, Service, ServicePort, ServiceSpec, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource as _;

use crate::resources::{object_name, FunctionVersion, LABEL_FUNCTION, LABEL_VERSION};

/// `app.kubernetes.io/managed-by` of every object the CLI creates, and its field manager.
pub const MANAGED_BY: &str = "switchyard";
/// The container port of a managed version whose spec names none.
pub const DEFAULT_PORT: u16 = 8080;
/// The port of every managed version's Service; it forwards to the container's port. The
/// router dials it (see [`service_host`]).
pub const SERVICE_PORT: u16 = crate::table::SERVICE_PORT;
/// Name of the one container, and of the ports of the container and the Service.
const CONTAINER: &str = "function";
const PORT_NAME: &str = "http";

/// Why a FunctionVersion cannot have a workload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadError {
    /// An external version (an `endpoint`, no `image`) runs no workload.
    #[error("version {0} has no image")]
    NoImage(String),
    /// The FunctionVersion was not read back from the API server, so nothing can name it as
    /// owner.
    #[error("FunctionVersion {0} has no uid")]
    NoUid(String),
}

/// A semver version as a label value: build metadata's `+` is not allowed there.
pub fn label_value(version: &str) -> String {
    version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The labels of every object a version owns (and of its FunctionVersion).
pub fn labels(function: &str, version: &str) -> BTreeMap<String, String> {
    let version = label_value(version);
    BTreeMap::from([
        (LABEL_FUNCTION.to_string(), function.to_string()),
        (LABEL_VERSION.to_string(), version.clone()),
        ("app.kubernetes.io/name".to_string(), function.to_string()),
        (
            "app.kubernetes.io/instance".to_string(),
            object_name(function, &version),
        ),
        ("app.kubernetes.io/version".to_string(), version),
        (
            "app.kubernetes.io/managed-by".to_string(),
            MANAGED_BY.to_string(),
        ),
    ])
}

/// The labels that pick a version's Pods: function and version only, so that other labels
/// may change without orphaning Pods (a Deployment's selector is immutable).
pub fn selector(function: &str, version: &str) -> BTreeMap<String, String> {
    labels(function, version)
        .into_iter()
        .filter(|(k, _)| k == LABEL_FUNCTION || k == LABEL_VERSION)
        .collect()
}

/// The in-cluster host name of a managed version's Service, which the router dials on
/// [`SERVICE_PORT`].
pub fn service_host(
    function: &str,
    version: &str,
    namespace: &str,
    cluster_domain: &str,
) -> String {
    format!(
        "{}.{namespace}.svc.{cluster_domain}",
        object_name(function, version)
    )
}

/// The Deployment and Service that a managed FunctionVersion (read back from the API server,
/// so it has a uid) owns in `namespace`: both named [`object_name`], labelled with [`labels`],
/// owned by the FunctionVersion (so Kubernetes removes them with it). The Deployment runs
/// `spec.replicas` (default 1) Pods of one container with the image, args, env, and equal
/// requests and limits; the Service forwards [`SERVICE_PORT`] to the container's port
/// (`spec.port`, default [`DEFAULT_PORT`]).
///
/// The container has a readiness probe that connects to its port: without one, Kubernetes
/// counts a Pod ready (puts it in the Service's endpoints, lets the version take traffic) as
/// soon as the process starts, before it listens, and the router's first requests fail.
pub fn workload(
    fv: &FunctionVersion,
    namespace: &str,
) -> Result<(Deployment, Service), WorkloadError> {
    let spec = &fv.spec;
    let name = object_name(&spec.function, &spec.version);
    let image = spec
        .image
        .clone()
        .ok_or_else(|| WorkloadError::NoImage(spec.version.clone()))?;
    let port = i32::from(spec.port.unwrap_or(DEFAULT_PORT));
    let labels = labels(&spec.function, &spec.version);
    let selector = selector(&spec.function, &spec.version);
    let owner = OwnerReference {
        api_version: FunctionVersion::api_version(&()).into_owned(),
        kind: FunctionVersion::kind(&()).into_owned(),
        name: fv.metadata.name.clone().unwrap_or_else(|| name.clone()),
        uid: fv
            .metadata
            .uid
            .clone()
            .ok_or_else(|| WorkloadError::NoUid(name.clone()))?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let meta = ObjectMeta {
        name: Some(name),
        namespace: Some(namespace.to_string()),
        labels: Some(labels.clone()),
        owner_references: Some(vec![owner]),
        ..Default::default()
    };
    let quantities = spec.resources.as_ref().map(|r| {
        let mut q = BTreeMap::new();
        if let Some(cpu) = &r.cpu {
            q.insert("cpu".to_string(), Quantity(cpu.clone()));
        }
        if let Some(memory) = &r.memory {
            q.insert("memory".to_string(), Quantity(memory.clone()));
        }
        q
    });
    let container = Container {
        name: CONTAINER.into(),
        image: Some(image),
        args: (!spec.args.is_empty()).then(|| spec.args.clone()),
        env: (!spec.env.is_empty()).then(|| {
            spec.env
                .iter()
                .map(|e| KEnvVar {
                    name: e.name.clone(),
                    value: Some(e.value.clone()),
                    ..Default::default()
                })
                .collect()
        }),
        ports: Some(vec![ContainerPort {
            name: Some(PORT_NAME.into()),
            container_port: port,
            ..Default::default()
        }]),
        resources: quantities.map(|q| ResourceRequirements {
            limits: Some(q.clone()),
            requests: Some(q),
            ..Default::default()
        }),
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String(PORT_NAME.into()),
                ..Default::default()
            }),
            period_seconds: Some(2),
            failure_threshold: Some(3),
            ..Default::default()
        }),
        ..Default::default()
    };
    let deployment = Deployment {
        metadata: meta.clone(),
        spec: Some(DeploymentSpec {
            replicas: Some(spec.replicas.unwrap_or(1)),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    let service = Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.into()),
                port: i32::from(SERVICE_PORT),
                target_port: Some(IntOrString::Int(port)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok((deployment, service))
}

/// Whether a managed version may take traffic, from its Deployment as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadReadiness {
    /// Whether it may take traffic.
    pub ready: bool,
    /// Available replicas (0 when there is no Deployment).
    pub available: i32,
    /// Desired replicas; `None` when there is no Deployment.
    pub desired: Option<i32>,
    /// Why it is not ready; `None` when it is.
    pub detail: Option<String>,
}

/// The readiness rule of a managed version named `name`, as `kubectl rollout status` reads a
/// Deployment: its controller has observed the current spec, the desired replicas (default 1)
/// all run the current Pod template (`updatedReplicas`) and are available, and the
/// `Available` condition is true. A rollout whose `Progressing` condition says
/// `ProgressDeadlineExceeded` is named as such in the detail.
pub fn readiness(name: &str, deployment: Option<&Deployment>) -> WorkloadReadiness {
    let Some(d) = deployment else {
        return WorkloadReadiness {
            ready: false,
            available: 0,
            desired: None,
            detail: Some(format!("Deployment {name} not found")),
        };
    };
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = d.status.clone().unwrap_or_default();
    let available = status.available_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let observed = status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    let conditions = status.conditions.unwrap_or_default();
    let condition = conditions
        .iter()
        .any(|c| c.type_ == "Available" && c.status == "True");
    let stalled = conditions.iter().find(|c| {
        c.type_ == "Progressing"
            && c.status == "False"
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    let ready = observed && updated >= desired && available >= desired && condition;
    let detail = (!ready).then(|| {
        if !observed {
            format!("Deployment {name} not yet observed by its controller")
        } else if let Some(c) = stalled {
            format!(
                "{available}/{desired} replicas available; the rollout exceeded its progress deadline: {}",
                c.message.as_deref().unwrap_or("no message")
            )
        } else if updated < desired {
            format!("{available}/{desired} replicas available, {updated}/{desired} updated")
        } else if available < desired {
            format!("{available}/{desired} replicas available")
        } else {
            format!("Deployment {name} is not Available")
        }
    });
    WorkloadReadiness {
        ready,
        available,
        desired: Some(desired),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{EnvVar, FunctionVersionSpec, Resources};
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus};

    fn managed(version: &str) -> FunctionVersion {
        let mut fv = FunctionVersion::new(
            &object_name("hello", version),
            FunctionVersionSpec {
                function: "hello".into(),
                version: version.into(),
                image: Some("ghcr.io/acme/hello:1".into()),
                port: Some(9000),
                env: vec![EnvVar {
                    name: "MODE".into(),
                    value: "fast".into(),
                }],
                args: vec!["--serve".into()],
                replicas: Some(3),
                resources: Some(Resources {
                    cpu: Some("250m".into()),
                    memory: None,
                }),
                endpoint: None,
            },
        );
        fv.metadata.uid = Some("uid-1".into());
        fv
    }

    #[test]
    fn labels_carry_function_and_version_with_build_metadata_made_label_safe() {
        let l = labels("hello", "1.3.0+build.7");
        assert_eq!(l["switchyard.dev/function"], "hello");
        assert_eq!(l["switchyard.dev/version"], "1.3.0_build.7");
        assert_eq!(l["app.kubernetes.io/instance"], "hello-1-3-0-build-7");
        assert_eq!(l["app.kubernetes.io/managed-by"], "switchyard");
        assert_eq!(
            selector("hello", "1.3.0+build.7"),
            BTreeMap::from([
                ("switchyard.dev/function".to_string(), "hello".to_string()),
                (
                    "switchyard.dev/version".to_string(),
                    "1.3.0_build.7".to_string()
                ),
            ])
        );
    }

    #[test]
    fn a_managed_version_owns_a_deployment_and_a_service_of_its_object_name() {
        let (d, s) = workload(&managed("1.2.0"), "prod").expect("a workload");
        for meta in [&d.metadata, &s.metadata] {
            assert_eq!(meta.name.as_deref(), Some("hello-1-2-0"));
            assert_eq!(meta.namespace.as_deref(), Some("prod"));
            let owner = &meta.owner_references.as_ref().expect("an owner")[0];
            assert_eq!(
                (owner.kind.as_str(), owner.uid.as_str()),
                ("FunctionVersion", "uid-1")
            );
            assert_eq!(owner.controller, Some(true));
        }
        let spec = d.spec.expect("a deployment spec");
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.selector.match_labels, Some(selector("hello", "1.2.0")));
        let pod = spec.template.spec.expect("a pod spec");
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("ghcr.io/acme/hello:1"));
        assert_eq!(c.args, Some(vec!["--serve".to_string()]));
        assert_eq!(c.ports.as_ref().expect("ports")[0].container_port, 9000);
        let r = c.resources.as_ref().expect("resources");
        assert_eq!(r.limits, r.requests);
        assert_eq!(
            r.limits.as_ref().expect("limits")["cpu"],
            Quantity("250m".into())
        );
        let svc = s.spec.expect("a service spec");
        assert_eq!(svc.selector, Some(selector("hello", "1.2.0")));
        let port = &svc.ports.expect("ports")[0];
        assert_eq!(port.port, i32::from(SERVICE_PORT));
        assert_eq!(port.target_port, Some(IntOrString::Int(9000)));
    }

    #[test]
    fn defaults_are_one_replica_on_port_8080_and_no_optional_fields() {
        let mut fv = managed("1.0.0");
        fv.spec.port = None;
        fv.spec.replicas = None;
        fv.spec.env.clear();
        fv.spec.args.clear();
        fv.spec.resources = None;
        let (d, s) = workload(&fv, "ns").expect("a workload");
        let spec = d.spec.expect("spec");
        assert_eq!(spec.replicas, Some(1));
        let c = &spec.template.spec.expect("pod").containers[0];
        assert_eq!(
            (c.env.as_ref(), c.args.as_ref(), c.resources.as_ref()),
            (None, None, None)
        );
        assert_eq!(c.ports.as_ref().expect("ports")[0].container_port, 8080);
        assert_eq!(
            s.spec.expect("spec").ports.expect("ports")[0].target_port,
            Some(IntOrString::Int(8080))
        );
    }

    #[test]
    fn an_external_or_unsaved_version_has_no_workload() {
        let mut external = managed("1.0.0");
        external.spec.image = None;
        assert_eq!(
            workload(&external, "ns"),
            Err(WorkloadError::NoImage("1.0.0".into()))
        );
        let mut unsaved = managed("1.0.0");
        unsaved.metadata.uid = None;
        assert_eq!(
            workload(&unsaved, "ns"),
            Err(WorkloadError::NoUid("hello-1-0-0".into()))
        );
    }

    #[test]
    fn the_router_dials_the_service_the_workload_creates() {
        let mut fv = managed("2.0.0-rc.1");
        fv.metadata.namespace = Some("prod".into());
        let (_, service) = workload(&fv, "prod").expect("a workload");
        let function = crate::Function::test("hello")
            .in_namespace("prod")
            .with_weight("2.0.0-rc.1", crate::TOTAL_PPM);
        let route = crate::Route::build(&function, [&fv], &crate::BuildOptions::default())
            .expect("a route");
        let upstream = serde_json::to_string(&route).expect("json");
        let host = service_host("hello", "2.0.0-rc.1", "prod", "cluster.local");
        assert_eq!(
            host,
            format!(
                "{}.prod.svc.cluster.local",
                service.metadata.name.expect("a name")
            )
        );
        assert!(
            upstream.contains(&format!("\"host\":\"{host}\",\"port\":{SERVICE_PORT}")),
            "{upstream}"
        );
    }

    #[test]
    fn the_container_is_ready_only_once_its_port_accepts_connections() {
        let (d, _) = workload(&managed("1.2.0"), "prod").expect("a workload");
        let pod = d.spec.expect("spec").template.spec.expect("a pod spec");
        let c = &pod.containers[0];
        let probe = c.readiness_probe.as_ref().expect("a readiness probe");
        let port = &probe.tcp_socket.as_ref().expect("a TCP probe").port;
        // By name, so it follows the container port (9000 here).
        assert_eq!(port, &IntOrString::String("http".into()));
        let named = c.ports.as_ref().expect("ports");
        assert_eq!(
            (named[0].name.as_deref(), named[0].container_port),
            (Some("http"), 9000)
        );
    }

    fn deployment(
        generation: i64,
        observed: i64,
        desired: i32,
        available: i32,
        cond: &str,
    ) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                generation: Some(generation),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(desired),
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(observed),
                available_replicas: Some(available),
                updated_replicas: Some(desired),
                conditions: Some(vec![DeploymentCondition {
                    type_: "Available".into(),
                    status: cond.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_version_is_ready_when_its_current_spec_is_observed_available_and_scaled() {
        let cases = [
            (deployment(2, 2, 2, 2, "True"), true, None),
            (deployment(2, 2, 2, 3, "True"), true, None),
            (
                deployment(3, 2, 2, 2, "True"),
                false,
                Some("Deployment d not yet observed by its controller"),
            ),
            (
                deployment(2, 2, 2, 1, "True"),
                false,
                Some("1/2 replicas available"),
            ),
            (
                deployment(2, 2, 2, 2, "False"),
                false,
                Some("Deployment d is not Available"),
            ),
        ];
        for (i, (d, ready, detail)) in cases.into_iter().enumerate() {
            let r = readiness("d", Some(&d));
            assert_eq!((r.ready, r.detail.as_deref()), (ready, detail), "case {i}");
        }
        // Available Pods of an older template (a rollout under way) do not make it ready.
        let mut rolling = deployment(3, 3, 2, 2, "True");
        rolling.status.as_mut().expect("status").updated_replicas = Some(1);
        let r = readiness("d", Some(&rolling));
        assert_eq!(
            (r.ready, r.detail.as_deref()),
            (false, Some("2/2 replicas available, 1/2 updated"))
        );
        // A stalled rollout says so.
        let mut stalled = deployment(2, 2, 2, 0, "False");
        stalled
            .status
            .as_mut()
            .and_then(|s| s.conditions.as_mut())
            .expect("conditions")
            .push(DeploymentCondition {
                type_: "Progressing".into(),
                status: "False".into(),
                reason: Some("ProgressDeadlineExceeded".into()),
                message: Some("ReplicaSet \"d-1\" has timed out progressing.".into()),
                ..Default::default()
            });
        let r = readiness("d", Some(&stalled));
        assert_eq!(
            r.detail.as_deref(),
            Some("0/2 replicas available; the rollout exceeded its progress deadline: ReplicaSet \"d-1\" has timed out progressing.")
        );
        let missing = readiness("d", None);
        assert_eq!(
            (
                missing.ready,
                missing.available,
                missing.desired,
                missing.detail.as_deref()
            ),
            (false, 0, None, Some("Deployment d not found"))
        );
    }
}
