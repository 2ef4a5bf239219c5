//! `tag`, `untag`, `set` and `undo --to N` against the real API server: the CRD takes the new
//! history actions and revision numbers (an enum the schema did not list, or a field it does not
//! know, would be refused or silently pruned), and its CEL rules refuse a bad setting with one
//! line and nothing written.

use switchyard_tests::cli::{function, Cli};
use switchyard_tests::{client, namespace};

#[tokio::test]
async fn tags_settings_and_numbered_undo_round_trip_through_the_api_server() {
    let client = client().await;
    let ns = namespace(&client, "cli-verbs").await;
    let cli = Cli::new(&ns);
    for (v, ep) in [
        ("1.0.0", "http://127.0.0.1:9001"),
        ("1.1.0", "http://127.0.0.1:9002"),
    ] {
        cli.ok(&["deploy", "hello", v, "--endpoint", ep, "--no-wait"])
            .await;
    }
    cli.ok(&["promote", "hello", "1.1.0", "--no-wait"]).await;
    cli.ok(&["tag", "hello", "beta", "1.0.0", "--no-wait"])
        .await;
    cli.ok(&[
        "set",
        "hello",
        "--affinity",
        "cookie:session",
        "--pinning",
        "on",
        "--no-wait",
    ])
    .await;
    let f = function(&client, &ns, "hello").await;
    assert_eq!(f.spec.tag("beta"), Some("1.0.0"));
    assert_eq!(
        f.spec.affinity.as_ref().and_then(|a| a.cookie.as_deref()),
        Some("session")
    );
    assert!(f.spec.pinning);
    let numbered: Vec<(u64, String)> = f
        .spec
        .history
        .iter()
        .map(|h| (h.revision, h.action.to_string()))
        .collect();
    assert_eq!(
        numbered,
        [
            (1, "deploy".to_string()),
            (2, "added".to_string()),
            (3, "promote".to_string()),
            (4, "tag".to_string()),
            (5, "set".to_string())
        ]
    );
    // Back to revision 1's traffic; undo passes over the tag and the settings.
    cli.ok(&["undo", "hello", "--to", "1", "--no-wait"]).await;
    let f = function(&client, &ns, "hello").await;
    assert_eq!(f.spec.traffic.len(), 1);
    assert_eq!(f.spec.traffic[0].version, "1.0.0");
    assert_eq!(f.spec.tag("beta"), Some("1.0.0"));
    // A refused setting: exit 2, one line, nothing written.
    let generation = f.metadata.generation;
    let out = cli
        .run(&["set", "hello", "--prefix", "no-slash", "--no-wait"])
        .await;
    assert_eq!(out.code, 2, "{out:#?}");
    assert_eq!(out.stderr.lines().count(), 1, "{out:#?}");
    assert_eq!(
        function(&client, &ns, "hello").await.metadata.generation,
        generation
    );
}

#[tokio::test]
async fn a_deploy_refuses_to_take_over_a_workload_object_someone_else_owns_and_deletes_nothing_of_it(
) {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{Api, PostParams};
    let client = client().await;
    let ns = namespace(&client, "cli-foreign").await;
    let cli = Cli::new(&ns);
    // Someone's own Deployment, named as version 1.0.0 of hello would be.
    let theirs: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "hello-1-0-0", "labels": {"team": "other"}},
        "spec": {
            "selector": {"matchLabels": {"app": "theirs"}},
            "template": {
                "metadata": {"labels": {"app": "theirs"}},
                "spec": {"containers": [{"name": "c", "image": "theirs:1"}]}
            }
        }
    }))
    .expect("a Deployment");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .create(&PostParams::default(), &theirs)
        .await
        .expect("their Deployment");
    let out = cli
        .run(&[
            "deploy",
            "hello",
            "1.0.0",
            "--image",
            "acme/hello@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "--no-wait",
        ])
        .await;
    assert_eq!(out.code, 3, "{out:#?}");
    assert_eq!(out.stderr.lines().count(), 1, "{out:#?}");
    assert!(
        out.stderr
            .contains("not owned by FunctionVersion hello-1-0-0"),
        "{out:#?}"
    );
    // Theirs is untouched; nothing of the deploy is left.
    let after = deployments.get("hello-1-0-0").await.expect("still there");
    assert_eq!(
        after
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("team"))
            .map(String::as_str),
        Some("other")
    );
    let versions: Api<switchyard_core::FunctionVersion> = Api::namespaced(client.clone(), &ns);
    assert!(versions
        .get_opt("hello-1-0-0")
        .await
        .expect("read")
        .is_none());
    let fns: Api<switchyard_core::Function> = Api::namespaced(client.clone(), &ns);
    assert!(fns.get_opt("hello").await.expect("read").is_none());
}

#[tokio::test]
async fn a_deploy_stopped_by_someone_elses_service_removes_the_deployment_it_made_and_a_rerun_recreates_what_is_missing(
) {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Service;
    use kube::api::{Api, DeleteParams, PostParams};
    let client = client().await;
    let ns = namespace(&client, "cli-foreign-svc").await;
    let cli = Cli::new(&ns);
    let image =
        "acme/hello@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    // Someone's own Service, named as version 1.0.0 of hello would be: the deploy creates its
    // Deployment first, then is refused the Service.
    let theirs: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "hello-1-0-0", "labels": {"team": "other"}},
        "spec": {"selector": {"app": "theirs"}, "ports": [{"port": 80}]}
    }))
    .expect("a Service");
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    services
        .create(&PostParams::default(), &theirs)
        .await
        .expect("their Service");
    let deploy = ["deploy", "hello", "1.0.0", "--image", image, "--no-wait"];
    let out = cli.run(&deploy).await;
    assert_eq!(out.code, 3, "{out:#?}");
    assert_eq!(out.stderr.lines().count(), 1, "{out:#?}");
    assert!(
        out.stderr
            .contains("Service hello-1-0-0 already exists in namespace"),
        "{out:#?}"
    );
    // Theirs is untouched; the Deployment this deploy created is gone when it exits, and so
    // are its FunctionVersion and Function.
    let after = services.get("hello-1-0-0").await.expect("still there");
    assert_eq!(
        after.metadata.labels.as_ref().and_then(|l| l.get("team")),
        Some(&"other".to_string())
    );
    assert!(after.metadata.owner_references.is_none());
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    assert!(deployments
        .get_opt("hello-1-0-0")
        .await
        .expect("read")
        .is_none());
    let versions: Api<switchyard_core::FunctionVersion> = Api::namespaced(client.clone(), &ns);
    assert!(versions
        .get_opt("hello-1-0-0")
        .await
        .expect("read")
        .is_none());
    let fns: Api<switchyard_core::Function> = Api::namespaced(client.clone(), &ns);
    assert!(fns.get_opt("hello").await.expect("read").is_none());

    // With their Service gone the deploy goes through; a workload object deleted by hand is
    // recreated, owned by the same version, by re-running the same deploy.
    services
        .delete("hello-1-0-0", &DeleteParams::default())
        .await
        .expect("delete their Service");
    cli.ok(&deploy).await;
    let uid = versions
        .get("hello-1-0-0")
        .await
        .expect("the FunctionVersion")
        .metadata
        .uid
        .expect("a uid");
    deployments
        .delete("hello-1-0-0", &DeleteParams::background())
        .await
        .expect("delete the Deployment by hand");
    let again = cli.ok(&deploy).await;
    assert!(
        again.stdout.contains("already deployed with this spec"),
        "{again:?}"
    );
    let recreated = deployments
        .get("hello-1-0-0")
        .await
        .expect("the Deployment is back");
    let owner = &recreated.metadata.owner_references.expect("an owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("FunctionVersion", uid.as_str())
    );
    let service = services.get("hello-1-0-0").await.expect("our Service");
    assert_eq!(
        service.metadata.owner_references.expect("an owner")[0].uid,
        uid
    );
}
