//! `list -A` on Kubernetes (issue 13, missing verbs): the functions of every namespace, each
//! row led by its namespace, against the real API server.

use switchyard_tests::cli as support;

use support::Cli;
use switchyard_tests::{client, namespace};

#[tokio::test]
async fn list_all_namespaces_shows_each_function_with_its_namespace() {
    let client = client().await;
    let (a, b) = (
        namespace(&client, "cli-list-a").await,
        namespace(&client, "cli-list-b").await,
    );
    for (ns, function) in [(&a, "hello"), (&b, "bye")] {
        Cli::new(ns)
            .ok(&[
                "deploy",
                function,
                "1.0.0",
                "--endpoint",
                "http://127.0.0.1:9",
                "--no-wait",
            ])
            .await;
    }
    // -n names one namespace; -A lists them all, as kubectl does.
    let out = Cli::new(&a).ok(&["list", "-A"]).await;
    let lines: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        [
            "NAMESPACE",
            "NAME",
            "TRAFFIC",
            "STABLE",
            "ROUTE",
            "HEALTH",
            "AGE"
        ]
    );
    let ours: Vec<&[&str]> = lines
        .iter()
        .filter(|l| l[0] == a || l[0] == b)
        .map(|l| &l[..4])
        .collect();
    assert_eq!(
        ours,
        [
            &[a.as_str(), "hello", "1.0.0=100%", "1.0.0"][..],
            &[b.as_str(), "bye", "1.0.0=100%", "1.0.0"][..],
        ]
    );
    let json: serde_json::Value =
        serde_json::from_str(&Cli::new(&a).ok(&["list", "-A", "-o", "json"]).await.stdout)
            .expect("list -A -o json is JSON");
    let bye = json
        .as_array()
        .expect("an array")
        .iter()
        .find(|f| f["namespace"] == b.as_str())
        .expect("bye's namespace is listed");
    assert_eq!(bye["name"], "bye");
    // Without -A, only the namespace of -n.
    let one = Cli::new(&a).ok(&["list", "-o", "name"]).await;
    assert_eq!(one.stdout, "function.switchyard.dev/hello\n");
}
