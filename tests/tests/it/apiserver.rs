//! The CRDs on a real kube-apiserver: the server itself enforces immutability, exact weights and
//! unique traffic entries; server-side apply merges per-replica status entries; watches see
//! traffic changes.

use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use kube::ResourceExt as _;
use serde_json::json;
use switchyard_core::{Function, FunctionVersion, TOTAL_PPM};
use switchyard_tests::cli::RealRouter;
use switchyard_tests::router::report_of;
use switchyard_tests::{client, namespace};

fn function(ns: &str, traffic: serde_json::Value) -> Function {
    serde_json::from_value(json!({
        "apiVersion": "switchyard.dev/v1alpha1",
        "kind": "Function",
        "metadata": {"name": "hello", "namespace": ns},
        "spec": {"traffic": traffic}
    }))
    .expect("a Function")
}

fn version(ns: &str, v: &str, endpoint: &str) -> FunctionVersion {
    let mut fv = FunctionVersion::new(
        &switchyard_core::object_name("hello", v),
        serde_json::from_value(json!({"function": "hello", "version": v, "endpoint": endpoint}))
            .expect("spec"),
    );
    fv.metadata.namespace = Some(ns.to_string());
    fv
}

/// The API server's own message for a refused write.
fn refusal(err: kube::Error) -> String {
    match err {
        kube::Error::Api(status) => format!("{} {}", status.code, status.message),
        other => panic!("expected the API server to refuse, got {other}"),
    }
}

#[tokio::test]
async fn a_valid_function_and_version_are_accepted() {
    let client = client().await;
    let ns = namespace(&client, "crd-ok").await;
    let fvs: Api<FunctionVersion> = Api::namespaced(client.clone(), &ns);
    let fns: Api<Function> = Api::namespaced(client.clone(), &ns);
    fvs.create(
        &PostParams::default(),
        &version(&ns, "1.0.0", "http://127.0.0.1:9"),
    )
    .await
    .expect("version accepted");
    let f = fns
        .create(
            &PostParams::default(),
            &function(&ns, json!([{"version": "1.0.0", "weight": TOTAL_PPM}])),
        )
        .await
        .expect("function accepted");
    assert_eq!(f.spec.traffic[0].weight, TOTAL_PPM);
    assert_eq!(f.metadata.generation, Some(1));
}

#[tokio::test]
async fn one_function_s_versions_are_listed_by_field_selector() {
    let client = client().await;
    let ns = namespace(&client, "crd-select").await;
    let fvs: Api<FunctionVersion> = Api::namespaced(client.clone(), &ns);
    for (function, v) in [("hello", "1.0.0"), ("hello", "1.1.0"), ("other", "1.0.0")] {
        let mut fv = version(&ns, v, "http://127.0.0.1:9");
        fv.metadata.name = Some(switchyard_core::object_name(function, v));
        fv.spec.function = function.to_string();
        fvs.create(&PostParams::default(), &fv)
            .await
            .expect("version accepted");
    }
    // Both ways the CLI lists: from the watch cache (`match_any`) and from etcd.
    for params in [
        kube::api::ListParams::default().match_any(),
        kube::api::ListParams::default(),
    ] {
        let listed = fvs
            .list(&params.fields("spec.function=hello"))
            .await
            .expect("spec.function is a selectable field");
        let mut versions: Vec<String> = listed
            .items
            .iter()
            .map(|fv| fv.spec.version.clone())
            .collect();
        versions.sort();
        assert_eq!(versions, ["1.0.0", "1.1.0"]);
    }
}

#[tokio::test]
async fn the_server_refuses_a_changed_version_spec() {
    let client = client().await;
    let ns = namespace(&client, "crd-immutable").await;
    let fvs: Api<FunctionVersion> = Api::namespaced(client.clone(), &ns);
    let created = fvs
        .create(
            &PostParams::default(),
            &version(&ns, "1.0.0", "http://127.0.0.1:9"),
        )
        .await
        .expect("created");
    let mut changed = created.clone();
    changed.spec.endpoint = Some("http://127.0.0.1:10".into());
    let err = fvs
        .replace("hello-1-0-0", &PostParams::default(), &changed)
        .await
        .expect_err("spec is immutable");
    let msg = refusal(err);
    assert!(msg.starts_with("422 "), "{msg}");
    assert!(msg.contains("spec is immutable"), "{msg}");
    // The refusal names the field, not `<nil>`.
    assert!(msg.contains("spec: Invalid value"), "{msg}");
    assert!(!msg.contains("<nil>"), "{msg}");
    // Metadata is not part of the rule: labels can still change.
    let mut labelled = created;
    labelled.metadata.labels = Some([("team".to_string(), "a".to_string())].into());
    fvs.replace("hello-1-0-0", &PostParams::default(), &labelled)
        .await
        .expect("metadata may change");
}

#[tokio::test]
async fn the_server_refuses_a_version_with_both_image_and_endpoint() {
    let client = client().await;
    let ns = namespace(&client, "crd-oneof").await;
    let fvs: Api<FunctionVersion> = Api::namespaced(client.clone(), &ns);
    let mut both = version(&ns, "1.0.0", "http://127.0.0.1:9");
    both.spec.image = Some("ghcr.io/acme/hello:1".into());
    let msg = refusal(
        fvs.create(&PostParams::default(), &both)
            .await
            .expect_err("refused"),
    );
    assert!(msg.contains("exactly one of image and endpoint"), "{msg}");
}

#[tokio::test]
async fn the_server_refuses_weights_that_do_not_sum_to_a_million() {
    let client = client().await;
    let ns = namespace(&client, "crd-sum").await;
    let fns: Api<Function> = Api::namespaced(client.clone(), &ns);
    let bad = function(&ns, json!([{"version": "1.0.0", "weight": 999_999}]));
    let msg = refusal(
        fns.create(&PostParams::default(), &bad)
            .await
            .expect_err("refused"),
    );
    assert!(msg.starts_with("422 "), "{msg}");
    assert!(
        msg.contains("traffic weights must sum to 1000000 ppm"),
        "{msg}"
    );
    // Over the schema's maximum while the sum is right (the other entry below the minimum):
    // only the bounds may be named, so the sum rule's message cannot stand in for them.
    // (Sent as raw JSON: a negative weight has no Rust value.)
    let too_big = json!({
        "apiVersion": "switchyard.dev/v1alpha1",
        "kind": "Function",
        "metadata": {"name": "hello", "namespace": ns},
        "spec": {"traffic": [
            {"version": "1.0.0", "weight": 2_000_000},
            {"version": "1.1.0", "weight": -1_000_000},
        ]},
    });
    let msg = refusal(
        fns.patch(
            "hello",
            &PatchParams::apply("switchyard-tests"),
            &Patch::Apply(&too_big),
        )
        .await
        .expect_err("refused"),
    );
    assert!(
        msg.contains("spec.traffic[0].weight in body should be less than or equal to 1000000"),
        "{msg}"
    );
    assert!(!msg.contains("must sum"), "{msg}");
}

#[tokio::test]
async fn the_server_refuses_a_duplicate_traffic_entry() {
    let client = client().await;
    let ns = namespace(&client, "crd-dup").await;
    let fns: Api<Function> = Api::namespaced(client.clone(), &ns);
    let dup = function(
        &ns,
        json!([{"version": "1.0.0", "weight": 500_000}, {"version": "1.0.0", "weight": 500_000}]),
    );
    let msg = refusal(
        fns.create(&PostParams::default(), &dup)
            .await
            .expect_err("refused"),
    );
    assert!(
        msg.contains("no version may appear twice in traffic"),
        "{msg}"
    );
}

#[tokio::test]
async fn server_side_apply_keeps_each_managers_fields_of_the_spec() {
    let client = client().await;
    let ns = namespace(&client, "crd-ssa").await;
    let fns: Api<Function> = Api::namespaced(client.clone(), &ns);
    fns.create(
        &PostParams::default(),
        &function(&ns, json!([{"version": "1.0.0", "weight": TOTAL_PPM}])),
    )
    .await
    .expect("created");
    // Two managers on the spec: the CLI owns traffic, another tool owns hosts.
    let hosts = json!({"apiVersion": "switchyard.dev/v1alpha1", "kind": "Function", "spec": {"hosts": ["hello.example.com"]}});
    fns.patch(
        "hello",
        &PatchParams::apply("other-tool"),
        &Patch::Apply(&hosts),
    )
    .await
    .expect("hosts applied");
    let f = fns.get("hello").await.expect("read");
    assert_eq!(f.spec.hosts, vec!["hello.example.com"]);
    assert_eq!(f.spec.traffic[0].weight, TOTAL_PPM, "traffic kept");
}

#[tokio::test]
async fn a_watch_observes_a_traffic_change() {
    let client = client().await;
    let ns = namespace(&client, "crd-watch").await;
    let fns: Api<Function> = Api::namespaced(client.clone(), &ns);
    let fvs: Api<FunctionVersion> = Api::namespaced(client.clone(), &ns);
    for v in ["1.0.0", "1.1.0"] {
        fvs.create(
            &PostParams::default(),
            &version(&ns, v, "http://127.0.0.1:9"),
        )
        .await
        .expect("version");
    }
    fns.create(
        &PostParams::default(),
        &function(&ns, json!([{"version": "1.0.0", "weight": TOTAL_PPM}])),
    )
    .await
    .expect("created");
    let mut events = watcher(fns.clone(), watcher::Config::default()).boxed();
    let split = json!({"spec": {"traffic": [{"version": "1.1.0", "weight": 100_000}, {"version": "1.0.0", "weight": 900_000}]}});
    fns.patch("hello", &PatchParams::default(), &Patch::Merge(&split))
        .await
        .expect("shifted");
    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(event) = events.next().await {
            if let Ok(watcher::Event::Apply(f) | watcher::Event::InitApply(f)) = event {
                if f.spec.traffic.len() == 2 {
                    return f;
                }
            }
        }
        panic!("the watch ended before the new split arrived");
    })
    .await
    .expect("the watch delivers the new split within 30 s");
    assert_eq!(seen.spec.weight_of("1.1.0"), 100_000);
    assert_eq!(seen.metadata.generation, Some(2));
}

/// The cells of `kubectl get fn` (the server's Table for the Function list), by column name.
async fn printed(
    client: &kube::Client,
    ns: &str,
) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut request = kube::core::Request::new(format!(
        "/apis/switchyard.dev/v1alpha1/namespaces/{ns}/functions"
    ))
    .list(&kube::api::ListParams::default())
    .expect("a request");
    request.headers_mut().insert(
        "accept",
        "application/json;as=Table;v=v1;g=meta.k8s.io"
            .parse()
            .expect("a header value"),
    );
    let table: serde_json::Value = client.request(request).await.expect("the Table");
    assert_eq!(table["kind"], "Table", "{table}");
    let columns: Vec<String> = table["columnDefinitions"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c["name"].as_str().expect("a name").to_string())
        .collect();
    table["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| {
            let cells = row["cells"].as_array().expect("cells");
            columns
                .iter()
                .zip(cells)
                .map(|(name, cell)| {
                    let text = match cell {
                        serde_json::Value::String(s) => s.clone(),
                        // kubectl prints <none>.
                        serde_json::Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    (name.clone(), text)
                })
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn kubectl_get_fn_shows_the_whole_split_in_percent_and_the_stable_version() {
    let client = client().await;
    let ns = namespace(&client, "crd-columns").await;
    let cli = switchyard_tests::cli::Cli::new(&ns);
    switchyard_tests::cli::two_versions(&cli).await;
    cli.ok(&["traffic", "hello", "1.1.0=10", "1.0.0=90", "--no-wait"])
        .await;
    let rows = printed(&client, &ns).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    let names: Vec<&str> = row.keys().map(String::as_str).collect();
    assert!(
        !names.contains(&"Weights"),
        "no ppm column any more: {names:?}"
    );
    assert_eq!(row["Name"], "hello");
    assert_eq!(row["Traffic"], "1.1.0=10% 1.0.0=90%", "{row:?}");
    assert_eq!(row["Stable"], "1.0.0", "{row:?}");
    assert_eq!(row["Path"], "", "no prefix set: the default applies");
    assert!(
        row.contains_key("Hosts") && row.contains_key("Age"),
        "{row:?}"
    );

    // Each CLI write keeps it current (a promote changes the stable version too).
    cli.ok(&["promote", "hello", "1.1.0", "--no-wait"]).await;
    let row = &printed(&client, &ns).await[0];
    assert_eq!(
        (row["Traffic"].as_str(), row["Stable"].as_str()),
        ("1.1.0=100%", "1.1.0"),
        "{row:?}"
    );
    // Other annotations survive the CLI's writes.
    let fns: Api<Function> = Api::namespaced(client.clone(), &ns);
    fns.patch(
        "hello",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"team": "payments"}}})),
    )
    .await
    .expect("an annotation of someone else's");
    cli.ok(&["rollback", "hello", "--no-wait"]).await;
    let f = fns.get("hello").await.expect("the Function");
    let annotations = f.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations.get("team").map(String::as_str),
        Some("payments")
    );
    assert_eq!(
        annotations
            .get("switchyard.dev/traffic")
            .map(String::as_str),
        Some("1.0.0=100%")
    );
    // Nobody waited for the routers (--no-wait): the column says so.
    assert_eq!(printed(&client, &ns).await[0]["Routers"], "unconfirmed");

    // With a real router the writer's wait ends in the column: `pending` in the spec write
    // itself, then `1/1` in a patch of its own that moves neither the Function's generation
    // nor the router's table.
    let ns_ = ns.clone();
    let _router = tokio::task::spawn_blocking(move || RealRouter::start(&ns_, "r1"))
        .await
        .expect("the router");
    switchyard_tests::cli::wait_for_leases(&client, &ns, &["r1"]).await;
    let table = |r: &switchyard_core::report::RouterReportStatus| {
        r.table.as_ref().map_or(0, |t| t.generation)
    };
    let tables_before = table(&report_of(&client, &ns, "r1").await.expect("r1's report"));
    let before = fns.get("hello").await.expect("the Function");
    let g = before.metadata.generation.expect("a generation");
    let mut events = fns
        .watch(
            &WatchParams::default().fields("metadata.name=hello"),
            &before.resource_version().expect("a resourceVersion"),
        )
        .await
        .expect("watching the Function")
        .boxed();
    // --force: 1.1.0 was rolled back from above.
    let out = cli
        .ok(&["traffic", "hello", "1.1.0=50", "1.0.0=50", "--force"])
        .await;
    assert!(out.stdout.contains("applied by 1/1 routers"), "{out:?}");
    let mut seen: Vec<(i64, String)> = Vec::new();
    let noted = loop {
        let event = tokio::time::timeout(Duration::from_secs(30), events.next())
            .await
            .expect("a change of the Function within 30 s")
            .expect("the watch goes on")
            .expect("a watch event");
        if let WatchEvent::Modified(f) = event {
            let note = f.annotations().get("switchyard.dev/routers").cloned();
            seen.push((
                f.metadata.generation.unwrap_or_default(),
                note.clone().unwrap_or_default(),
            ));
            if note.as_deref() == Some("1/1") {
                break f;
            }
        }
    };
    assert_eq!(
        seen,
        [(g + 1, "pending".to_string()), (g + 1, "1/1".to_string())],
        "one spec write (pending), then the note alone"
    );
    assert_eq!(printed(&client, &ns).await[0]["Routers"], "1/1");
    // The router reads the note (its report covers it) without building a table for it: one
    // swap for the one spec change.
    let noted_at: u64 = noted
        .resource_version()
        .and_then(|rv| rv.parse().ok())
        .expect("an integer resourceVersion");
    let report =
        switchyard_tests::wait_until(Duration::from_secs(30), "r1 reading the note", || {
            let client = client.clone();
            let ns = ns.clone();
            async move {
                let r = report_of(&client, &ns, "r1").await?;
                let read: u64 = r.applied.as_ref()?.functions.parse().ok()?;
                (read >= noted_at).then_some(r)
            }
        })
        .await;
    assert_eq!(table(&report), tables_before + 1, "{report:?}");
}
