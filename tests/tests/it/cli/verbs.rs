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
