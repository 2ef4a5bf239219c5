//! The kustomization: every file listed once, every object accepted by the server's dry-run,
//! the router's Pod admitted under the restricted Pod Security Standard, and a router that
//! stops on its own before the kubelet would kill it.

use super::*;

#[test]
fn every_yaml_file_in_manifests_is_listed_in_the_kustomization_once() {
    let listed = kustomization_resources();
    let mut on_disk: Vec<String> = yaml_files(&manifests_dir())
        .iter()
        .map(|p| {
            p.file_name()
                .expect("a file name")
                .to_string_lossy()
                .into_owned()
        })
        .filter(|f| f != "kustomization.yaml")
        .collect();
    on_disk.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        listed.len(),
        "a file is listed twice: {listed:?}"
    );
    assert_eq!(
        sorted, on_disk,
        "kustomization.yaml resources vs files in manifests/"
    );
    // Apply order: the CRDs and the namespace before anything that lives in or refers to them.
    assert_eq!(&listed[..2], ["crds.yaml", "namespace.yaml"], "{listed:?}");
}

#[test]
fn the_router_exits_on_its_own_before_the_kubelet_kills_it() {
    let all = kustomization_manifests();
    let d = find(&all, "Deployment", "switchyard-router").json();
    let pod = &d["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("router args")
        .iter()
        .map(|a| a.as_str().expect("string args"))
        .collect();
    let flag = |name: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("--{name}=")))
            .unwrap_or_else(|| panic!("no --{name}= in {args:?}"))
    };
    let grace: i64 = flag("grace-period")
        .parse()
        .expect("--grace-period in seconds");
    let pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_i64()
        .unwrap_or(0);
    let termination = pod["terminationGracePeriodSeconds"]
        .as_i64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        pre_stop + grace < termination,
        "preStop {pre_stop} s + --grace-period {grace} s must end before \
         terminationGracePeriodSeconds {termination} s"
    );
    // Probes and Prometheus reach the admin port on the pod IP, so it must not be loopback.
    assert!(flag("admin").starts_with("0.0.0.0:"), "{args:?}");
    let ports: HashMap<&str, i64> = container["ports"]
        .as_array()
        .expect("container ports")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().expect("named"),
                p["containerPort"].as_i64().expect("port"),
            )
        })
        .collect();
    assert_eq!(
        Some(&flag("admin")[8..]),
        ports.get("admin").map(|p| p.to_string()).as_deref()
    );
    assert_eq!(
        Some(&flag("listen")[8..]),
        ports.get("http").map(|p| p.to_string()).as_deref()
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"], "admin", "{probe}");
    }
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    // The replica name is the pod name, from the downward API.
    let env: HashMap<&str, &Value> = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| (e["name"].as_str().expect("named"), e))
        .collect();
    assert_eq!(
        env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(env["SWITCHYARD_REPLICA_NAME"]["value"], "$(POD_NAME)");
    // The Service, the PDB and the spread constraints all select the router's pods.
    let pod_labels = &d["spec"]["template"]["metadata"]["labels"];
    let selects = |selector: &Value, what: &str| {
        for (k, v) in selector
            .as_object()
            .unwrap_or_else(|| panic!("{what}: a selector"))
        {
            assert_eq!(
                &pod_labels[k], v,
                "{what} selects {k}={v}, the pods say otherwise"
            );
        }
    };
    selects(&d["spec"]["selector"]["matchLabels"], "the Deployment");
    let svc = find(&all, "Service", "switchyard-router").json();
    selects(&svc["spec"]["selector"], "the Service");
    let pdb = find(&all, "PodDisruptionBudget", "switchyard-router").json();
    selects(
        &pdb["spec"]["selector"]["matchLabels"],
        "the PodDisruptionBudget",
    );
    for c in pod["topologySpreadConstraints"].as_array().expect("spread") {
        selects(
            &c["labelSelector"]["matchLabels"],
            "a topology spread constraint",
        );
    }
    for p in svc["spec"]["ports"].as_array().expect("service ports") {
        let target = p["targetPort"].as_str().expect("named target ports");
        assert!(
            ports.contains_key(target),
            "the Service targets unknown port {target}"
        );
    }
}

#[tokio::test]
async fn every_manifest_in_the_kustomization_passes_server_side_dry_run() {
    let client = client().await;
    // Namespaced objects go into a fresh namespace (a dry-run Namespace is not created, so
    // switchyard-system may not exist); that is what `kustomize edit set namespace` does too.
    let ns = namespace(&client, "manifests-dry").await;
    let all = kustomization_manifests();
    let mut kinds = BTreeMap::new();
    for m in &all {
        let applied = apply(&client, m, &ns, true)
            .await
            .unwrap_or_else(|e| panic!("dry-run apply of {}: {e}", m.label()));
        assert_eq!(applied.metadata.name, Some(m.name()));
        *kinds.entry(m.kind()).or_insert(0) += 1;
    }
    let expected: BTreeMap<String, i32> = [
        ("CustomResourceDefinition", 3),
        ("Namespace", 1),
        ("ServiceAccount", 1),
        ("ClusterRole", 3),
        ("ClusterRoleBinding", 1),
        ("Deployment", 1),
        ("Service", 1),
        ("PodDisruptionBudget", 1),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_string(), n))
    .collect();
    assert_eq!(kinds, expected);
    // Dry-run created nothing.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    assert!(deployments
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .is_empty());
}

#[tokio::test]
async fn the_router_pod_is_admitted_under_the_restricted_pod_security_standard() {
    let client = client().await;
    let ns = namespace(&client, "manifests-psa").await;
    let all = kustomization_manifests();
    // The labels namespace.yaml puts on switchyard-system, on this test's namespace.
    let labels = find(&all, "Namespace", "switchyard-system").json()["metadata"]["labels"].clone();
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
    Api::<Namespace>::all(client.clone())
        .patch(
            &ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": labels}})),
        )
        .await
        .expect("labelling the namespace");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    // First prove that enforcement is on (the label reaches admission through a cache): a
    // pod running as root with privilege escalation is refused.
    let careless: Pod = serde_json::from_value(json!({
        "metadata": {"name": "careless"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .expect("a Pod");
    wait_until(
        SETTLE,
        "restricted Pod Security enforced in the namespace",
        || {
            let (pods, careless, dry) = (pods.clone(), careless.clone(), dry.clone());
            async move {
                match pods.create(&dry, &careless).await {
                    Err(kube::Error::Api(s))
                        if s.code == 403 && s.message.contains("restricted") =>
                    {
                        Some(())
                    }
                    _ => None,
                }
            }
        },
    )
    .await;
    // The router's pod, exactly as its Deployment's template describes it.
    let d = find(&all, "Deployment", "switchyard-router").json();
    let template = &d["spec"]["template"];
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "switchyard-router-test", "labels": template["metadata"]["labels"]},
        "spec": template["spec"]
    }))
    .expect("the template makes a Pod");
    pods.create(&dry, &pod)
        .await
        .unwrap_or_else(|e| panic!("the router's pod under restricted Pod Security: {e}"));
}
