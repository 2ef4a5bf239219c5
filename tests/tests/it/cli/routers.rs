//! Waiting for routers (docs/protocol.md): traffic changes return once every live router
//! replica has acknowledged the new generation, and exit 4 when one does not in time or when
//! none is live. The replicas here are protocol peers on the real API server (a Lease and a
//! RouterReport each).

use switchyard_tests::cli as support;

use support::{two_versions, Cli, RealRouter, SimRouter};
use switchyard_tests::{client, namespace};

#[tokio::test]
async fn waiting_for_routers_works_with_two_replicas_and_times_out_with_exit_4_when_one_stops() {
    let client = client().await;
    let ns = namespace(&client, "cli-routers").await;
    let cli = Cli::new(&ns);
    two_versions(&cli).await;
    let a = SimRouter::start(&client, &ns, "router-a").await;
    let b = SimRouter::start(&client, &ns, "router-b").await;
    let out = cli.ok(&["traffic", "hello", "1.1.0=10", "1.0.0=90"]).await;
    assert!(
        out.stdout
            .contains("hello: 1.0.0=100% → 1.1.0=10% 1.0.0=90% · applied by 2/2 routers in"),
        "{out:?}"
    );
    let out = cli.ok(&["rollback", "hello"]).await;
    assert!(
        out.stdout.contains("→ 1.0.0=100% · applied by 2/2 routers"),
        "{out:?}"
    );
    let g = support::function(&client, &ns, "hello")
        .await
        .metadata
        .generation
        .expect("a generation");
    let applied = [
        ("router-a".into(), true, "applied".into(), Some(g)),
        ("router-b".into(), true, "applied".into(), Some(g)),
    ];
    assert_eq!(router_states(&cli).await, applied);
    // A metadata-only edit moves the resourceVersion but not what the routers serve: with both
    // replicas frozen before they could report it, they still serve this generation.
    a.pause();
    b.pause();
    let functions: kube::Api<switchyard_core::Function> =
        kube::Api::namespaced(client.clone(), &ns);
    functions
        .patch(
            "hello",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({
                "metadata": {"annotations": {"team": "payments"}}
            })),
        )
        .await
        .expect("an annotation");
    assert_eq!(router_states(&cli).await, applied);
    b.resume();

    let out = cli
        .run(&["promote", "hello", "1.1.0", "--force", "--timeout", "1s"])
        .await
        .expect(4);
    assert!(out.stderr.contains("waiting for router-a"), "{out:?}");
    assert!(out.stderr.contains("1/2 applied"), "{out:?}");
    // The write was made all the same.
    let f = support::function(&client, &ns, "hello").await;
    assert_eq!(f.spec.weight_of("1.1.0"), 1_000_000);
    let promoted = f.metadata.generation.expect("a generation");
    assert_eq!(
        router_states(&cli).await,
        [
            // Its report has not read the promotion: no generation of it to show.
            ("router-a".into(), true, "pending".into(), None),
            ("router-b".into(), true, "applied".into(), Some(promoted)),
        ]
    );
}

/// Each router row of `status hello -o json` as (name, live, state, observed generation), and
/// the same rows read back from the table `status hello` prints, which must agree.
async fn router_states(cli: &Cli) -> Vec<(String, bool, String, Option<i64>)> {
    let json: serde_json::Value =
        serde_json::from_str(&cli.ok(&["status", "hello", "-o", "json"]).await.stdout)
            .expect("status -o json is JSON");
    let rows: Vec<(String, bool, String, Option<i64>)> = json["routers"]
        .as_array()
        .expect("a routers array")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().expect("name").to_string(),
                r["live"].as_bool().expect("live"),
                r["state"].as_str().expect("state").to_string(),
                r["observedGeneration"].as_i64(),
            )
        })
        .collect();
    let text = cli.ok(&["status", "hello"]).await.stdout;
    let table: Vec<(String, bool, String, Option<i64>)> = text
        .lines()
        .skip_while(|l| !l.starts_with("ROUTER"))
        .skip(1)
        .map(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            (
                cells[0].to_string(),
                cells[1] == "yes",
                cells[3].to_string(),
                cells[2].parse().ok(),
            )
        })
        .collect();
    assert_eq!(
        table, rows,
        "the status table disagrees with -o json:\n{text}"
    );
    rows
}

#[tokio::test]
async fn with_no_live_router_a_change_is_written_and_exits_4_saying_so() {
    let client = client().await;
    let ns = namespace(&client, "cli-norouter").await;
    let cli = Cli::new(&ns);
    two_versions(&cli).await;
    let out = cli.run(&["promote", "hello", "1.1.0"]).await.expect(4);
    assert!(out.stderr.contains("no live router"), "{out:?}");
    let f = support::function(&client, &ns, "hello").await;
    assert_eq!(f.spec.weight_of("1.1.0"), 1_000_000);
}

#[tokio::test]
async fn waiting_works_with_two_real_router_replicas_and_exits_4_when_one_is_stopped() {
    let client = client().await;
    let ns = namespace(&client, "cli-real-routers").await;
    let cli = Cli::new(&ns);
    two_versions(&cli).await;
    let ns_ = ns.clone();
    let (a, _b) = tokio::task::spawn_blocking(move || {
        (
            RealRouter::start(&ns_, "router-a"),
            RealRouter::start(&ns_, "router-b"),
        )
    })
    .await
    .expect("routers");
    support::wait_for_leases(&client, &ns, &["router-a", "router-b"]).await;
    let out = cli.ok(&["traffic", "hello", "1.1.0=10", "1.0.0=90"]).await;
    assert!(out.stdout.contains("applied by 2/2 routers"), "{out:?}");
    let out = cli.ok(&["rollback", "hello"]).await;
    assert!(
        out.stdout.contains("→ 1.0.0=100% · applied by 2/2 routers"),
        "{out:?}"
    );
    a.stop();
    let out = cli
        .run(&["promote", "hello", "1.1.0", "--force", "--timeout", "1s"])
        .await
        .expect(4);
    assert!(out.stderr.contains("waiting for router-a"), "{out:?}");
}

#[tokio::test]
async fn a_real_router_refusing_a_change_makes_it_exit_1_naming_the_replica_and_the_reason() {
    use kube::api::{Api, Patch, PatchParams};
    let client = client().await;
    let ns = namespace(&client, "cli-refused").await;
    let cli = Cli::new(&ns);
    two_versions(&cli).await;
    for v in ["1.0.0", "1.1.0"] {
        cli.ok(&[
            "deploy",
            "other",
            v,
            "--endpoint",
            "http://127.0.0.1:9003",
            "--no-wait",
        ])
        .await;
    }
    let ns_ = ns.clone();
    let _router = tokio::task::spawn_blocking(move || RealRouter::start(&ns_, "router-a"))
        .await
        .expect("router");
    support::wait_for_leases(&client, &ns, &["router-a"]).await;
    // `other` moves onto the prefix `hello` holds: no table can route both.
    Api::<switchyard_core::Function>::namespaced(client.clone(), &ns)
        .patch(
            "other",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"pathPrefix": "/hello"}})),
        )
        .await
        .expect("moving other onto /hello");
    let out = cli
        .run(&["traffic", "other", "1.1.0=10", "1.0.0=90"])
        .await
        .expect(1);
    let g = support::function(&client, &ns, "other")
        .await
        .metadata
        .generation
        .expect("a generation");
    assert_eq!(
        out.stderr.trim_end(),
        format!(
            "error: router replica router-a rejected generation {g} of function other: \
             conflicts with function {ns}/hello: both claim host * with path prefix /hello"
        ),
        "{out:?}"
    );
    // The router still serves the last good table.
    let out = cli.ok(&["traffic", "hello", "1.1.0=10", "1.0.0=90"]).await;
    assert!(out.stdout.contains("applied by 1/1 routers"), "{out:?}");
}

#[tokio::test]
async fn without_router_namespace_leases_are_looked_for_in_switchyard_system() {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::Namespace;
    let client = client().await;
    let ns = namespace(&client, "cli-leases-default").await;
    // Where `install` puts the router (created here if no test installed it yet). The Lease
    // watches only this test's namespace, so no other test's wait counts it.
    let system = "switchyard-system";
    let namespaces: kube::Api<Namespace> = kube::Api::all(client.clone());
    let wanted: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": system}})).expect("ns");
    match namespaces.create(&Default::default(), &wanted).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating namespace {system}: {e}"),
    }
    let cli = Cli::new(&ns);
    two_versions(&cli).await;
    let name = format!("default-{ns}");
    lease(&client, system, &name, &ns, 0).await;
    // No --router-namespace: the wait finds exactly that Lease, which never acknowledges.
    let out = cli
        .run(&[
            "traffic",
            "hello",
            "1.0.0=50",
            "1.1.0=50",
            "--timeout",
            "1s",
        ])
        .await
        .expect(4);
    assert!(
        out.stderr.contains(&format!(
            "0/1 applied, waiting for {name} (the change is written)"
        )),
        "{out:?}"
    );
    kube::Api::<Lease>::namespaced(client.clone(), system)
        .delete(&name, &Default::default())
        .await
        .expect("deleting the Lease");
}

/// Writes a router Lease `name` in `ns` watching `watches`, renewed `age` ago.
async fn lease(client: &kube::Client, ns: &str, name: &str, watches: &str, age: i64) {
    use k8s_openapi::jiff::{SignedDuration, Timestamp};
    let renewed = Timestamp::now() - SignedDuration::from_secs(age);
    let lease = serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/name": "switchyard-router", "switchyard.dev/router": "true"},
            "annotations": {"switchyard.dev/watch-namespace": watches},
        },
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": 10,
            "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        },
    });
    kube::Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client.clone(), ns)
        .patch(
            name,
            &kube::api::PatchParams::apply("switchyard-tests").force(),
            &kube::api::Patch::Apply(&lease),
        )
        .await
        .unwrap_or_else(|e| panic!("writing Lease {ns}/{name}: {e}"));
}

#[tokio::test]
async fn only_fresh_leases_watching_the_function_s_namespace_count_as_routers() {
    let client = client().await;
    let ns = namespace(&client, "cli-leases").await;
    // A router namespace of this test's own, so no other test's routers count.
    let routers = namespace(&client, "cli-leases-r").await;
    let cli = Cli::new(&ns);
    two_versions(&cli).await;
    // Ignored, each for one reason: expired an hour ago; fresh but watching another namespace
    // (in the Function's namespace and in the router namespace); fresh in a namespace that is
    // neither.
    lease(&client, &ns, "expired", &ns, 3_600).await;
    lease(&client, &ns, "elsewhere", "another", 0).await;
    lease(&client, &routers, "elsewhere-r", "another", 0).await;
    let unrelated = namespace(&client, "cli-leases-x").await;
    lease(&client, &unrelated, "unrelated", &ns, 0).await;
    let out = cli
        .run(&["--router-namespace", &routers, "promote", "hello", "1.1.0"])
        .await
        .expect(4);
    assert!(out.stderr.contains("no live router"), "{out:?}");

    // Counted: fresh in the router namespace watching every namespace, and fresh in the
    // Function's namespace watching it. Neither acknowledges, so the wait names exactly them.
    lease(&client, &routers, "all", "", 0).await;
    lease(&client, &ns, "mine", &ns, 0).await;
    let out = cli
        .run(&[
            "--router-namespace",
            &routers,
            "traffic",
            "hello",
            "1.0.0=50",
            "1.1.0=50",
            "--timeout",
            "1s",
        ])
        .await
        .expect(4);
    let g = support::function(&client, &ns, "hello")
        .await
        .metadata
        .generation
        .expect("a generation");
    assert_eq!(
        out.stderr.trim_end(),
        format!(
            "error: timed out after 1s waiting for routers to apply generation {g} of function \
             hello: 0/2 applied, waiting for all, mine (the change is written)"
        ),
        "{out:?}"
    );
}
