//! The router wait (issue 13, item 8): a replica that leaves mid-wait is named, and a store
//! with no router says so in its own words. The router replicas here are protocol peers on the
//! real API server, sending exactly the values `switchyard_core::protocol` builds.

use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::Client;
use switchyard_core::{protocol, Function};
use switchyard_tests::cli::{local, write_report};
use switchyard_tests::{binary, client, kubeconfig_path, namespace, wait_until};

fn cli(ns: &str, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(binary("switchyard"));
    cmd.arg("--kubeconfig")
        .arg(kubeconfig_path())
        .args(["-n", ns])
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("SWITCHYARD_STORE")
        .kill_on_drop(true);
    cmd
}

async fn ok(mut cmd: tokio::process::Command) -> std::process::Output {
    let out = cmd.output().await.expect("running switchyard");
    assert!(out.status.success(), "{out:?}");
    out
}

/// Announces replica `name` as the router does: its Lease, in `ns`, watching `ns`.
async fn hold_lease(client: &Client, ns: &str, name: &str) {
    let lease = protocol::lease(name, ns, 10, k8s_openapi::jiff::Timestamp::now());
    Api::<Lease>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::apply(&protocol::field_manager(name)).force(),
            &Patch::Apply(&lease),
        )
        .await
        .expect("applying a router Lease");
}

#[tokio::test]
async fn a_replica_that_leaves_mid_wait_is_named_and_not_counted() {
    let client = client().await;
    let ns = namespace(&client, "wait-left").await;
    for version in ["1.0.0", "1.1.0"] {
        ok(cli(
            &ns,
            &[
                "deploy",
                "hello",
                version,
                "--endpoint",
                "http://127.0.0.1:9",
                "--no-wait",
            ],
        ))
        .await;
    }
    for replica in ["r1", "r2"] {
        hold_lease(&client, &ns, replica).await;
    }
    let functions: Api<Function> = Api::namespaced(client.clone(), &ns);
    let before = functions
        .get("hello")
        .await
        .expect("reading hello")
        .metadata
        .generation
        .unwrap_or_default();

    let mut shift = cli(
        &ns,
        &[
            "traffic",
            "hello",
            "1.1.0=10",
            "1.0.0=90",
            "--timeout",
            "60s",
        ],
    );
    let shift = shift
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting switchyard");

    // The change is written: r1 reports it served, r2 goes away without a word.
    let rv = wait_until(Duration::from_secs(30), "the traffic write", || async {
        let f = functions.get("hello").await.ok()?;
        (f.metadata.generation? > before).then_some(f.metadata.resource_version?)
    })
    .await;
    assert!(write_report(&client, &ns, "r1", &rv).await, "r1's report");
    Api::<Lease>::namespaced(client.clone(), &ns)
        .delete("r2", &DeleteParams::default())
        .await
        .expect("deleting r2's Lease");

    let out = shift
        .wait_with_output()
        .await
        .expect("waiting for switchyard");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("applied by 1/1 routers"), "{stdout}");
    assert!(
        stderr.contains("router replica r2 left while waiting"),
        "stderr: {stderr}"
    );
}

#[test]
fn with_no_router_on_a_store_directory_the_wait_says_so_and_exits_4() {
    let store = switchyard_tests::router::temp_dir("wait-no-router");
    for version in ["1.0.0", "1.1.0"] {
        let out = local(
            &store,
            &[
                "deploy",
                "hello",
                version,
                "--endpoint",
                "http://127.0.0.1:9",
                "--no-wait",
            ],
        );
        assert!(out.status.success(), "{out:?}");
    }
    let out = local(&store, &["traffic", "hello", "1.1.0=10", "1.0.0=90"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "function hello: no router is running on store dir:{}",
            store.display()
        )),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&store);
}
