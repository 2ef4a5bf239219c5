//! `delete FN --all` on Kubernetes (issue 13, missing verbs): refused with exit 3 while a live
//! router serves the function, then with `--force` the Function, every FunctionVersion and the
//! managed versions' Deployments and Services are gone, and other functions are untouched. The
//! live replica is a protocol peer on the real API server: a Lease and a RouterReport exactly
//! as `switchyard_core::{protocol, report}` build them.

use switchyard_tests::cli as support;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use support::Cli;
use switchyard_core::{Function, FunctionVersion};
use switchyard_tests::{client, namespace};

#[tokio::test]
async fn delete_all_is_refused_while_a_live_router_serves_it_and_force_removes_everything() {
    let client = client().await;
    let ns = namespace(&client, "cli-delete-all").await;
    let cli = Cli::new(&ns);
    for args in [
        ["hello", "1.0.0", "--image", "img@sha256:1"],
        ["hello", "1.1.0", "--endpoint", "http://127.0.0.1:9"],
        ["other", "1.0.0", "--endpoint", "http://127.0.0.1:9"],
    ] {
        let mut all = vec!["deploy"];
        all.extend(args);
        all.push("--no-wait");
        cli.ok(&all).await;
    }

    // Replica r1 holds a fresh Lease watching this namespace and reports that it has read
    // and served hello as it is now.
    support::renew(&client, &ns, "r1").await;
    let functions: Api<Function> = Api::namespaced(client.clone(), &ns);
    let rv = support::function(&client, &ns, "hello")
        .await
        .metadata
        .resource_version
        .expect("a resourceVersion");
    assert!(
        support::write_report(&client, &ns, "r1", &rv).await,
        "r1's report"
    );

    let refused = cli.run(&["delete", "hello", "--all"]).await.expect(3);
    assert_eq!(
        refused.stderr.trim(),
        "error: function hello is served by 1 live router (r1); deleting it makes them answer 404 (use --force)",
        "{refused:?}"
    );
    let dry = cli
        .ok(&["delete", "hello", "--all", "--force", "--dry-run"])
        .await;
    for line in [
        "- version 1.0.0 (FunctionVersion hello-1-0-0)",
        "- Deployment hello-1-0-0",
        "- Service hello-1-0-0",
        "- version 1.1.0 (FunctionVersion hello-1-1-0)",
        "(dry run: nothing was written)",
    ] {
        assert!(dry.stdout.lines().any(|l| l == line), "{line:?}: {dry:?}");
    }
    assert!(
        functions.get_opt("hello").await.expect("reading").is_some(),
        "a refusal and a dry run leave the Function"
    );

    let out = cli.ok(&["delete", "hello", "--all", "--force"]).await;
    assert_eq!(
        out.stdout.trim(),
        "function hello deleted with its 2 versions",
        "{out:?}"
    );
    assert!(functions.get_opt("hello").await.expect("reading").is_none());
    let versions: Api<FunctionVersion> = Api::namespaced(client.clone(), &ns);
    let left: Vec<String> = versions
        .list(&Default::default())
        .await
        .expect("listing versions")
        .items
        .into_iter()
        .map(|fv| fv.spec.function + "@" + &fv.spec.version)
        .collect();
    assert_eq!(left, ["other@1.0.0"]);
    let deployment = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get_opt("hello-1-0-0")
        .await
        .expect("reading the Deployment");
    let service = Api::<Service>::namespaced(client.clone(), &ns)
        .get_opt("hello-1-0-0")
        .await
        .expect("reading the Service");
    assert!(deployment.is_none() && service.is_none());
    assert!(functions.get_opt("other").await.expect("reading").is_some());

    // Deleting it again is a function that does not exist: invalid input.
    cli.run(&["delete", "hello", "--all"]).await.expect(2);
}
