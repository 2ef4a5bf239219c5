//! What the controllers of the test control plane do, as tests observe it: Pods that
//! kube-controller-manager creates for a Deployment and kwok marks Running and Ready on a
//! simulated Node, the EndpointSlices of a Service, and objects the garbage collector removes.
//!
//! `scripts/testenv start` runs kube-controller-manager (deployment, replicaset,
//! endpointslice, garbage collector, namespace, serviceaccount controllers), kube-scheduler and
//! kwok with a few simulated Nodes. Nothing runs in a Pod and Pod IPs are labels that nothing
//! dials: these helpers only read the API server.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt as _};

/// How long a test waits for the controllers: a rollout takes well under a second here, but
/// the garbage collector learns of a new CRD (the owners' kind) only on its next discovery
/// pass, every 30 s, and the machine is shared.
pub const CONTROLLERS: Duration = Duration::from_secs(120);

/// Panics with how to start them unless the simulated Nodes are there and Ready: without the
/// controllers a Deployment never gets Pods, and a test would only time out.
pub async fn require_controllers(client: &Client) {
    let nodes: Api<Node> = Api::all(client.clone());
    let ready = nodes
        .list(&ListParams::default().labels("type=kwok"))
        .await
        .expect("listing Nodes")
        .items
        .iter()
        .filter(|n| node_ready(n))
        .count();
    assert!(
        ready > 0,
        "no Ready simulated Node: this test needs the test control plane's controllers and kwok \
         (run `scripts/testenv start`, which adds them to a running API server)"
    );
}

fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn selector_string(selector: &BTreeMap<String, String>) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The Pods in `ns` that `selector` picks.
pub async fn pods(client: &Client, ns: &str, selector: &BTreeMap<String, String>) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&selector_string(selector)))
        .await
        .expect("listing Pods")
        .items
}

/// Whether a Pod's `Ready` condition is true.
pub fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Names of the Pods behind the ready endpoints of Service `service` in `ns`, from every
/// EndpointSlice the EndpointSlice controller keeps for it.
pub async fn endpoint_pods(client: &Client, ns: &str, service: &str) -> BTreeSet<String> {
    Api::<EndpointSlice>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await
        .expect("listing EndpointSlices")
        .items
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .filter_map(|e| e.target_ref.as_ref().and_then(|r| r.name.clone()))
        .collect()
}

/// What is left in `ns` of a workload whose objects carry the labels `selector`: its
/// Deployments, ReplicaSets, Pods and Services, as `Kind/name`.
pub async fn workload_objects(
    client: &Client,
    ns: &str,
    selector: &BTreeMap<String, String>,
) -> Vec<String> {
    let lp = ListParams::default().labels(&selector_string(selector));
    let mut left = Vec::new();
    macro_rules! collect {
        ($kind:ty, $name:literal) => {
            for o in Api::<$kind>::namespaced(client.clone(), ns)
                .list(&lp)
                .await
                .expect(concat!("listing ", $name, "s"))
                .items
            {
                left.push(format!("{}/{}", $name, o.name_any()));
            }
        };
    }
    collect!(Deployment, "Deployment");
    collect!(ReplicaSet, "ReplicaSet");
    collect!(Pod, "Pod");
    collect!(Service, "Service");
    left
}

/// Waits until nothing of the workload `selector` picks is left in `ns`.
pub async fn wait_workload_gone(client: &Client, ns: &str, selector: &BTreeMap<String, String>) {
    let start = std::time::Instant::now();
    loop {
        let left = workload_objects(client, ns, selector).await;
        if left.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < CONTROLLERS,
            "timed out after {CONTROLLERS:?} waiting for the garbage collector; still there: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A simulated Node that a test adds (kwok manages it like the ones `scripts/testenv`
/// creates): capacity arriving in the cluster, as when an autoscaler adds a bigger machine.
/// Remove it with [`SimulatedNode::remove`]; one left behind by a failed test only adds
/// capacity.
pub struct SimulatedNode {
    /// Its name.
    pub name: String,
    client: Client,
}

impl SimulatedNode {
    /// Creates Node `name` with `cpu` and `memory` allocatable and waits until kwok has made
    /// it Ready.
    pub async fn add(client: &Client, name: &str, cpu: &str, memory: &str) -> SimulatedNode {
        let nodes: Api<Node> = Api::all(client.clone());
        let capacity = serde_json::json!({"cpu": cpu, "memory": memory, "pods": "110"});
        let node: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake"},
                "labels": {"type": "kwok", "kubernetes.io/hostname": name, "switchyard.dev/simulated": "true"}
            },
            "status": {"capacity": capacity, "allocatable": capacity}
        }))
        .expect("a Node");
        nodes
            .create(&Default::default(), &node)
            .await
            .unwrap_or_else(|e| panic!("creating Node {name}: {e}"));
        crate::wait_until(CONTROLLERS, &format!("Node {name} Ready"), || {
            let nodes = nodes.clone();
            async move { nodes.get(name).await.ok().filter(node_ready) }
        })
        .await;
        // Lift the not-ready taint that admission puts on every new Node, as the node
        // lifecycle controller (not run here; see scripts/testenv) would once it is Ready.
        nodes
            .patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(serde_json::json!({"spec": {"taints": null}})),
            )
            .await
            .unwrap_or_else(|e| panic!("untainting Node {name}: {e}"));
        SimulatedNode {
            name: name.to_string(),
            client: client.clone(),
        }
    }

    /// Cordons and drains the Node (its Pods deleted at once, as a node going away would have
    /// them evicted) and deletes it. The test control plane runs no pod garbage collector, so a
    /// Pod left bound to a deleted Node would stay for ever, and with it every owner deleted
    /// in the foreground (a real `uninstall --force` at the end of the suite waited on one).
    pub async fn remove(self) {
        // Cordoned first, so that the replacements of the Pods deleted below are not
        // scheduled back onto it.
        let _ = Api::<Node>::all(self.client.clone())
            .patch(
                &self.name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(serde_json::json!({"spec": {"unschedulable": true}})),
            )
            .await;
        let pods = Api::<Pod>::all(self.client.clone());
        let on_node = ListParams::default().fields(&format!("spec.nodeName={}", self.name));
        if let Ok(list) = pods.list(&on_node).await {
            for pod in list.items {
                let ns = pod.namespace().unwrap_or_default();
                let _ = Api::<Pod>::namespaced(self.client.clone(), &ns)
                    .delete(
                        &pod.name_any(),
                        &kube::api::DeleteParams::default().grace_period(0),
                    )
                    .await;
            }
        }
        let _ = Api::<Node>::all(self.client.clone())
            .delete(&self.name, &Default::default())
            .await;
    }
}
