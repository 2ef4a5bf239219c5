//! RBAC, for real: the router's ServiceAccount and people bound to `switchyard-viewer` or
//! `switchyard-deployer` may do what their role allows, and the rest is refused with 403.

use super::*;
use kube::api::WatchParams;
use switchyard_core::report::{AppliedVersions, RouterReport, RouterReportStatus};

/// People read reports as the CLI does (`status`, `routers`, a wait's watch), and write none.
async fn reads_reports_only(who: &Client, ns: &str, role: &str) {
    let reports: Api<RouterReport> = Api::namespaced(who.clone(), ns);
    allowed(
        reports.list(&ListParams::default()).await,
        &format!("{role} lists reports"),
    );
    allowed(
        reports
            .watch(&WatchParams::default(), "0")
            .await
            .map(|_| ()),
        &format!("{role} watches reports"),
    );
    let mut body = switchyard_core::report::report(ns, "uid", RouterReportStatus::default());
    body.metadata.name = Some("forged".into());
    forbidden(
        reports.create(&PostParams::default(), &body).await,
        &format!("{role} creates a report"),
    );
}

#[tokio::test]
async fn the_router_watches_functions_and_writes_its_report_and_may_do_nothing_else() {
    let admin = client().await;
    let ns = namespace(&admin, "rbac-router").await;
    // The ClusterRole and its binding to switchyard-system/switchyard-router, for real. The
    // ServiceAccount object itself is not needed: the test API server authenticates that
    // identity from its token file (router.kubeconfig).
    apply_cluster_scoped(&admin, "rbac.yaml").await;
    let router = client_as("router.kubeconfig").await;
    wait_until_may_list_functions(&router, None, "the router").await;

    let admin_fns: Api<Function> = Api::namespaced(admin.clone(), &ns);
    Api::<FunctionVersion>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &version("hello", "1.0.0"))
        .await
        .expect("admin creates a version");
    admin_fns
        .create(
            &PostParams::default(),
            &function("hello", &[("1.0.0", 1_000_000)]),
        )
        .await
        .expect("admin creates a Function");
    Api::<Secret>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &secret("db"))
        .await
        .expect("admin creates a Secret");

    // Reads, in every namespace: that is how the router builds its table.
    let all_fns: Api<Function> = Api::all(router.clone());
    let listed = allowed(
        all_fns.list(&ListParams::default()).await,
        "router lists Functions",
    );
    assert!(listed
        .items
        .iter()
        .any(|f| f.namespace().as_deref() == Some(&ns)));
    allowed(
        Api::<FunctionVersion>::all(router.clone())
            .list(&ListParams::default())
            .await,
        "router lists FunctionVersions",
    );
    let fns: Api<Function> = Api::namespaced(router.clone(), &ns);
    allowed(fns.get("hello").await, "router gets a Function");
    watch_sees_a_change(&router, &admin, &ns, "hello", "the router").await;

    // Its report: the whole life cycle, the way the router keeps it (server-side apply
    // creates it, merge patches follow) and by plain create, update, list and watch.
    let reports: Api<RouterReport> = Api::namespaced(router.clone(), &ns);
    let status = |replica: &str| RouterReportStatus {
        replica: replica.into(),
        applied: Some(AppliedVersions {
            functions: "1".into(),
            function_versions: "1".into(),
        }),
        ..Default::default()
    };
    // A report is owned by its replica's Lease: with a garbage collector running, a report
    // whose owner does not exist is deleted at once. The admin makes the two owners here.
    let owner_leases: Api<Lease> = Api::namespaced(admin.clone(), &ns);
    let mut uids = Vec::new();
    for name in ["router-r", "router-s"] {
        let made = owner_leases
            .create(&PostParams::default(), &lease(name))
            .await
            .expect("admin creates an owner Lease");
        uids.push(made.metadata.uid.expect("a uid"));
    }
    let body = switchyard_core::report::report(&ns, &uids[0], status("router-r"));
    allowed(
        reports
            .patch(
                "router-r",
                &PatchParams::apply("switchyard-router.router-r").force(),
                &Patch::Apply(&body),
            )
            .await,
        "router applies its report",
    );
    allowed(
        reports
            .patch(
                "router-r",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"applied": {"functions": "2"}}})),
            )
            .await,
        "router merge-patches its report",
    );
    let mut other = switchyard_core::report::report(&ns, &uids[1], status("router-s"));
    other.metadata.namespace = None;
    let created = allowed(
        reports.create(&PostParams::default(), &other).await,
        "router creates a report",
    );
    allowed(
        reports
            .replace("router-s", &PostParams::default(), &created)
            .await,
        "router updates a report",
    );
    allowed(reports.get("router-r").await, "router gets a report");
    allowed(
        reports.list(&ListParams::default()).await,
        "router lists reports",
    );
    allowed(
        reports
            .watch(&WatchParams::default(), "0")
            .await
            .map(|_| ()),
        "router watches reports",
    );
    for name in ["router-r", "router-s"] {
        allowed(
            reports.delete(name, &DeleteParams::default()).await,
            "router deletes a report",
        );
    }
    // It writes nothing on a Function, not even its status.
    forbidden(
        fns.patch_status(
            "hello",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {}})),
        )
        .await,
        "router patches functions/status",
    );
    forbidden(
        fns.get_status("hello").await,
        "router gets functions/status",
    );

    // Its Lease: the whole life cycle, the way the router keeps it (server-side apply creates
    // and renews it) and by plain create and update.
    let leases: Api<Lease> = Api::namespaced(router.clone(), &ns);
    let renew = PatchParams::apply("switchyard-router.router-b").force();
    for _ in 0..2 {
        let mut l = serde_json::to_value(lease("router-b")).expect("a Lease as JSON");
        l["apiVersion"] = json!("coordination.k8s.io/v1");
        l["kind"] = json!("Lease");
        l["metadata"]["labels"] = json!({"switchyard.dev/router": "true"});
        allowed(
            leases.patch("router-b", &renew, &Patch::Apply(&l)).await,
            "router applies its Lease",
        );
    }
    allowed(
        leases.delete("router-b", &DeleteParams::default()).await,
        "router deletes its applied Lease",
    );
    let created = allowed(
        leases
            .create(&PostParams::default(), &lease("router-a"))
            .await,
        "router creates its Lease",
    );
    allowed(leases.get("router-a").await, "router gets its Lease");
    forbidden(
        leases.list(&ListParams::default()).await,
        "router lists Leases (it reads no other replica's)",
    );
    allowed(
        leases
            .replace("router-a", &PostParams::default(), &created)
            .await,
        "router renews its Lease",
    );
    allowed(
        leases.delete("router-a", &DeleteParams::default()).await,
        "router deletes its Lease",
    );

    // The canary decider Lease: created, read and renewed conditionally, and another replica's
    // Lease read by name for its liveness; still no list or watch of Leases.
    let decider = allowed(
        leases
            .create(&PostParams::default(), &lease("switchyard-canary"))
            .await,
        "router creates the canary decider Lease",
    );
    allowed(
        leases.get("switchyard-canary").await,
        "router gets the canary decider Lease",
    );
    allowed(
        leases
            .replace("switchyard-canary", &PostParams::default(), &decider)
            .await,
        "router renews the canary decider Lease",
    );
    forbidden(
        leases.watch(&WatchParams::default(), "0").await.map(|_| ()),
        "router watches Leases",
    );

    // A canary's transition: one conditional update of the Function (traffic, history,
    // status.rollout together). A stale resourceVersion is refused by the API server (409),
    // which is what makes the write conditional.
    let mut changed = allowed(fns.get("hello").await, "router re-reads the Function");
    changed.spec.pinning = true;
    let updated = allowed(
        fns.replace("hello", &PostParams::default(), &changed).await,
        "router updates a Function (a canary transition)",
    );
    match fns.replace("hello", &PostParams::default(), &changed).await {
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        other => panic!("a stale update must conflict, got {other:?}"),
    }
    assert!(updated.spec.pinning);

    // Nothing else.
    forbidden(
        fns.patch(
            "hello",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"pinning": true}})),
        )
        .await,
        "router patches a Function's spec",
    );
    forbidden(
        fns.create(
            &PostParams::default(),
            &function("other", &[("1.0.0", 1_000_000)]),
        )
        .await,
        "router creates a Function",
    );
    forbidden(
        fns.delete("hello", &DeleteParams::default()).await,
        "router deletes a Function",
    );
    forbidden(
        Api::<FunctionVersion>::namespaced(router.clone(), &ns)
            .create(&PostParams::default(), &version("hello", "2.0.0"))
            .await,
        "router creates a FunctionVersion",
    );
    let secrets: Api<Secret> = Api::namespaced(router.clone(), &ns);
    forbidden(secrets.get("db").await, "router reads a Secret");
    forbidden(
        Api::<Secret>::all(router.clone())
            .list(&ListParams::default())
            .await,
        "router lists Secrets",
    );
    forbidden(
        Api::<Deployment>::namespaced(router.clone(), &ns)
            .create(&PostParams::default(), &deployment("hello-1-0-0"))
            .await,
        "router creates a Deployment",
    );
    forbidden(
        Api::<Service>::namespaced(router.clone(), &ns)
            .create(&PostParams::default(), &service("hello-1-0-0"))
            .await,
        "router creates a Service",
    );
    forbidden(
        Api::<Pod>::namespaced(router.clone(), &ns)
            .list(&ListParams::default())
            .await,
        "router lists Pods",
    );
}

/// The real `switchyard-router` process, killed if the test ends without stopping it.
struct RouterProcess {
    child: std::process::Child,
    log: PathBuf,
}

impl RouterProcess {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET` on a fresh connection, off the async runtime.
async fn http_get(addr: SocketAddr, host: &'static str, path: &'static str) -> Option<Response> {
    tokio::task::spawn_blocking(move || {
        HttpClient::new(addr)
            .get(host, path, &[("connection", "close")])
            .ok()
    })
    .await
    .ok()
    .flatten()
}

#[tokio::test]
async fn the_real_router_serves_and_reports_with_nothing_but_its_cluster_role() {
    let admin = client().await;
    let ns = namespace(&admin, "rbac-router-process").await;
    apply_cluster_scoped(&admin, "rbac.yaml").await;
    let router = client_as("router.kubeconfig").await;
    wait_until_may_list_functions(&router, None, "the router").await;

    let upstream = Upstream::start("1.0.0");
    let mut fv = version("hello", "1.0.0");
    fv.spec.endpoint = Some(upstream.url());
    Api::<FunctionVersion>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &fv)
        .await
        .expect("admin creates a version");
    let admin_fns: Api<Function> = Api::namespaced(admin.clone(), &ns);
    let created = admin_fns
        .create(
            &PostParams::default(),
            &function("hello", &[("1.0.0", 1_000_000)]),
        )
        .await
        .expect("admin creates a Function");
    let generation = created.metadata.generation.expect("a generation");

    // Watching one namespace (so that it acknowledges no other test's Functions) with its
    // Lease there too; the ClusterRole is what authorizes it, as in the cluster.
    let replica = format!("router-{ns}");
    let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let log = std::env::temp_dir().join(format!("{replica}.log"));
    let child = std::process::Command::new(binary("switchyard-router"))
        .args([
            "--listen",
            &listen.to_string(),
            "--admin",
            &admin_addr.to_string(),
        ])
        .args(["--namespace", &ns, "--lease-namespace", &ns])
        .args(["--replica-name", &replica, "--grace-period", "1"])
        .arg("--kubeconfig")
        .arg(kubeconfig_path().with_file_name("router.kubeconfig"))
        // Debug for the router itself: a refused acknowledgement is only logged at debug.
        .env("RUST_LOG", "info,switchyard_router=debug,kube_client=off")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("a log file"))
        .spawn()
        .expect("starting switchyard-router");
    let mut process = RouterProcess { child, log };

    wait_until(SETTLE, "router /readyz", || async {
        let r = http_get(admin_addr, "localhost", "/readyz").await?;
        (r.status == 200).then_some(())
    })
    .await;
    let served = http_get(listen, "any.example.com", "/hello")
        .await
        .expect("a response through the router");
    assert_eq!((served.status, served.body.as_str()), (200, "1.0.0"));

    // Its report covers the Function (/readyz waited for its first write) and its Lease.
    let rv = admin_fns
        .get("hello")
        .await
        .expect("admin reads the Function")
        .metadata
        .resource_version
        .expect("a resourceVersion");
    let admin_reports: Api<RouterReport> = Api::namespaced(admin.clone(), &ns);
    wait_until(SETTLE, "the router's report", || {
        let (admin_reports, replica, rv) = (admin_reports.clone(), replica.clone(), rv.clone());
        let ns = ns.clone();
        async move {
            let report = admin_reports.get_opt(&replica).await.ok()??.status?;
            let one = [(replica.clone(), Some(&report))];
            let s =
                switchyard_core::protocol::summarize(&one, &ns, "hello", &rv, generation).ok()?;
            (!s.applied.is_empty()).then_some(())
        }
    })
    .await;
    let admin_leases: Api<Lease> = Api::namespaced(admin.clone(), &ns);
    wait_until(SETTLE, "the router's Lease", || {
        let (admin_leases, replica) = (admin_leases.clone(), replica.clone());
        async move { admin_leases.get_opt(&replica).await.ok().flatten() }
    })
    .await;

    // A clean stop deletes the Lease (delete).
    let pid = process.child.id().to_string();
    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("running kill");
    assert!(signalled.success(), "kill -TERM {pid}");
    let exit = tokio::task::spawn_blocking(move || {
        let status = process.child.wait();
        (status, process)
    })
    .await
    .expect("waiting for the router");
    let (status, process) = exit;
    assert!(
        status.expect("router exit status").success(),
        "{}",
        process.log()
    );
    assert!(
        admin_leases
            .get_opt(&replica)
            .await
            .expect("admin reads Leases")
            .is_none(),
        "the router left its Lease behind"
    );
    assert!(
        admin_reports
            .get_opt(&replica)
            .await
            .expect("admin reads reports")
            .is_none(),
        "the router left its report behind"
    );
    let log = process.log();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the router was refused something:\n{log}"
    );
}

#[tokio::test]
async fn a_viewer_reads_functions_and_their_readiness_and_may_write_nothing() {
    let admin = client().await;
    let ns = namespace(&admin, "rbac-viewer").await;
    let elsewhere = namespace(&admin, "rbac-viewer-not").await;
    apply_cluster_scoped(&admin, "roles.yaml").await;
    // Granted in one namespace only, so that `viewer` stays powerless elsewhere (other tests
    // rely on that).
    bind_user(&admin, &ns, "switchyard-viewer", "viewer").await;
    let viewer = client_as("viewer.kubeconfig").await;
    wait_until_may_list_functions(&viewer, Some(&ns), "the viewer").await;

    Api::<FunctionVersion>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &version("hello", "1.0.0"))
        .await
        .expect("admin creates a version");
    Api::<Function>::namespaced(admin.clone(), &ns)
        .create(
            &PostParams::default(),
            &function("hello", &[("1.0.0", 1_000_000)]),
        )
        .await
        .expect("admin creates a Function");
    Api::<Lease>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &lease("router-a"))
        .await
        .expect("admin creates a Lease");
    Api::<Deployment>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &deployment("hello-1-0-0"))
        .await
        .expect("admin creates a Deployment");
    Api::<Secret>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &secret("db"))
        .await
        .expect("admin creates a Secret");

    let fns: Api<Function> = Api::namespaced(viewer.clone(), &ns);
    let fvs: Api<FunctionVersion> = Api::namespaced(viewer.clone(), &ns);
    let leases: Api<Lease> = Api::namespaced(viewer.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(viewer.clone(), &ns);
    let hello = allowed(fns.get("hello").await, "viewer gets a Function");
    allowed(
        fvs.list(&ListParams::default()).await,
        "viewer lists versions",
    );
    allowed(fvs.get("hello-1-0-0").await, "viewer gets a version");
    allowed(
        leases.list(&ListParams::default()).await,
        "viewer lists Leases",
    );
    allowed(leases.get("router-a").await, "viewer gets a Lease");
    reads_reports_only(&viewer, &ns, "viewer").await;
    allowed(
        deployments.get("hello-1-0-0").await,
        "viewer reads a Deployment",
    );
    allowed(
        deployments.list(&ListParams::default()).await,
        "viewer lists Deployments",
    );
    watch_sees_a_change(&viewer, &admin, &ns, "hello", "the viewer").await;

    forbidden(
        fvs.create(&PostParams::default(), &version("hello", "2.0.0"))
            .await,
        "viewer creates a version",
    );
    forbidden(
        fvs.delete("hello-1-0-0", &DeleteParams::default()).await,
        "viewer deletes a version",
    );
    forbidden(
        fns.patch(
            "hello",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"pinning": true}})),
        )
        .await,
        "viewer patches a Function",
    );
    forbidden(
        fns.replace("hello", &PostParams::default(), &hello).await,
        "viewer updates a Function",
    );
    forbidden(
        fns.patch_status(
            "hello",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"routers": []}})),
        )
        .await,
        "viewer patches a Function's status",
    );
    forbidden(
        leases
            .create(&PostParams::default(), &lease("router-b"))
            .await,
        "viewer creates a Lease",
    );
    forbidden(
        deployments
            .create(&PostParams::default(), &deployment("hello-2-0-0"))
            .await,
        "viewer creates a Deployment",
    );
    forbidden(
        Api::<Secret>::namespaced(viewer.clone(), &ns)
            .get("db")
            .await,
        "viewer reads a Secret",
    );
    forbidden(
        Api::<Pod>::namespaced(viewer.clone(), &ns)
            .list(&ListParams::default())
            .await,
        "viewer lists Pods",
    );
    forbidden(
        Api::<Function>::namespaced(viewer.clone(), &elsewhere)
            .list(&ListParams::default())
            .await,
        "viewer lists Functions where it is not bound",
    );
}

#[tokio::test]
async fn a_deployer_may_do_nothing_beyond_the_cli_tour() {
    let admin = client().await;
    let ns = namespace(&admin, "rbac-deployer").await;
    apply_cluster_scoped(&admin, "roles.yaml").await;
    // `viewer` is the only spare user of the test API server; here it is bound to
    // switchyard-deployer, in this namespace only.
    bind_user(&admin, &ns, "switchyard-deployer", "viewer").await;
    let deployer = client_as("viewer.kubeconfig").await;
    wait_until_may_list_functions(&deployer, Some(&ns), "the deployer").await;
    Api::<Lease>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &lease("router-a"))
        .await
        .expect("admin creates a Lease");
    Api::<Secret>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &secret("db"))
        .await
        .expect("admin creates a Secret");

    let fns: Api<Function> = Api::namespaced(deployer.clone(), &ns);
    let leases: Api<Lease> = Api::namespaced(deployer.clone(), &ns);
    // What the CLI does with this role is its tour, run for real in
    // a_user_bound_to_the_shipped_deployer_role_runs_the_whole_cli_tour; here, what the role
    // must not allow.
    Api::<FunctionVersion>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &version("hello", "1.0.0"))
        .await
        .expect("admin creates a version");
    Api::<Function>::namespaced(admin.clone(), &ns)
        .create(
            &PostParams::default(),
            &function("hello", &[("1.0.0", 1_000_000)]),
        )
        .await
        .expect("admin creates a Function");
    // Nothing more.
    forbidden(
        fns.delete("hello", &DeleteParams::default()).await,
        "deployer deletes a Function",
    );
    forbidden(
        fns.patch_status(
            "hello",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"routers": []}})),
        )
        .await,
        "deployer patches a Function's status",
    );
    forbidden(
        leases
            .create(&PostParams::default(), &lease("router-b"))
            .await,
        "deployer creates a Lease",
    );
    forbidden(
        leases.delete("router-a", &DeleteParams::default()).await,
        "deployer deletes a Lease",
    );
    forbidden(
        Api::<Secret>::namespaced(deployer.clone(), &ns)
            .get("db")
            .await,
        "deployer reads a Secret",
    );
    forbidden(
        Api::<Secret>::namespaced(deployer.clone(), &ns)
            .create(&PostParams::default(), &secret("mine"))
            .await,
        "deployer creates a Secret",
    );
    let pods: Api<Pod> = Api::namespaced(deployer.clone(), &ns);
    forbidden(
        pods.list(&ListParams::default()).await,
        "deployer lists Pods",
    );
    // The grants end at the namespace of the binding.
    forbidden(
        Api::<Function>::all(deployer.clone())
            .list(&ListParams::default())
            .await,
        "deployer lists Functions in every namespace",
    );
    let watch_all = Api::<Deployment>::all(deployer.clone())
        .watch(&WatchParams::default().timeout(1), "0")
        .await;
    forbidden(
        watch_all.map(|_| ()),
        "deployer watches Deployments in every namespace",
    );
}

/// A real router (as admin: its own role is tested above) watching `ns`, with its Lease
/// there, where the CLI's wait looks; started off the async runtime.
async fn real_router(admin: &Client, ns: &str, name: &str) -> switchyard_tests::cli::RealRouter {
    let (ns_, name_) = (ns.to_string(), name.to_string());
    let router =
        tokio::task::spawn_blocking(move || switchyard_tests::cli::RealRouter::start(&ns_, &name_))
            .await
            .expect("a real router");
    switchyard_tests::cli::wait_for_leases(admin, ns, &[name]).await;
    router
}

/// The CLI's output, and that nothing in it was refused.
fn unrefused(out: switchyard_tests::cli::Out, what: &str) -> switchyard_tests::cli::Out {
    assert!(
        !format!("{}{}", out.stdout, out.stderr)
            .to_lowercase()
            .contains("forbidden"),
        "{what} was refused something: {out:?}"
    );
    out
}

#[tokio::test]
async fn a_user_bound_to_the_shipped_deployer_role_runs_the_whole_cli_tour() {
    let admin = client().await;
    let ns = namespace(&admin, "rbac-deployer-cli").await;
    apply_cluster_scoped(&admin, "roles.yaml").await;
    // `viewer` is the only spare user of the test API server; here it is bound to the shipped
    // switchyard-deployer ClusterRole, in this namespace only.
    bind_user(&admin, &ns, "switchyard-deployer", "viewer").await;
    let deployer = client_as("viewer.kubeconfig").await;
    wait_until_may_list_functions(&deployer, Some(&ns), "the deployer").await;
    let cli = switchyard_tests::cli::Cli::with_kubeconfig(
        &ns,
        &switchyard_tests::viewer_kubeconfig_path(),
    );
    let (stable, canary) = (Upstream::start("1.0.0"), Upstream::start("1.1.0"));
    let _router = real_router(&admin, &ns, "router-a").await;

    let out = unrefused(
        cli.run(&["deploy", "hello", "1.0.0", "--endpoint", &stable.url()])
            .await
            .expect(0),
        "deploy",
    );
    assert!(out.stdout.contains("applied by 1/1 routers"), "{out:?}");
    // A managed version: its Deployment and Service, written as the deployer.
    unrefused(
        cli.run(&[
            "deploy",
            "hello",
            "1.2.0",
            "--image",
            "registry.example/hello:1.2.0",
            "--no-wait",
        ])
        .await
        .expect(0),
        "deploy --image",
    );
    for kind in ["deployments", "services"] {
        let found = match kind {
            "deployments" => Api::<Deployment>::namespaced(admin.clone(), &ns)
                .get_opt("hello-1-2-0")
                .await
                .map(|d| d.is_some()),
            _ => Api::<Service>::namespaced(admin.clone(), &ns)
                .get_opt("hello-1-2-0")
                .await
                .map(|s| s.is_some()),
        };
        assert!(found.expect("admin reads"), "the deployer's {kind} exist");
    }
    unrefused(
        cli.run(&["deploy", "hello", "1.1.0", "--endpoint", &canary.url()])
            .await
            .expect(0),
        "deploy",
    );
    let out = unrefused(
        cli.run(&["traffic", "hello", "1.1.0=10", "1.0.0=90"])
            .await
            .expect(0),
        "traffic",
    );
    assert!(out.stdout.contains("applied by 1/1 routers"), "{out:?}");
    let out = unrefused(
        cli.run(&["promote", "hello", "1.1.0"]).await.expect(0),
        "promote",
    );
    assert!(out.stdout.contains("→ 1.1.0=100%"), "{out:?}");
    let out = unrefused(cli.run(&["rollback", "hello"]).await.expect(0), "rollback");
    assert!(
        out.stdout.contains("→ 1.0.0=100% · applied by 1/1 routers"),
        "{out:?}"
    );
    // The router serves what the deployer wrote.
    let mut http = HttpClient::new(router_listen(&admin, &ns).await);
    let served = http.get("localhost", "/hello", &[]).expect("a request");
    assert_eq!(served.header("x-switchyard-served-by"), "hello@1.0.0");

    let status: Value = serde_json::from_str(
        &unrefused(
            cli.run(&["status", "hello", "-o", "json"]).await.expect(0),
            "status",
        )
        .stdout,
    )
    .expect("status as JSON");
    router_a_applied(&admin, &ns, &status).await;
    let history = unrefused(cli.run(&["history", "hello"]).await.expect(0), "history");
    assert!(history.stdout.contains("rollback"), "{history:?}");
    let list = unrefused(cli.run(&["list"]).await.expect(0), "list");
    assert!(list.stdout.contains("hello"), "{list:?}");
    let routers = unrefused(cli.run(&["routers"]).await.expect(0), "routers");
    assert!(routers.stdout.contains("router-a"), "{routers:?}");
}

/// The proxy address router-a gives in its report (`switchyard routers` shows the same).
async fn router_listen(admin: &Client, ns: &str) -> SocketAddr {
    let report = Api::<RouterReport>::namespaced(admin.clone(), ns)
        .get("router-a")
        .await
        .expect("router-a's report");
    report
        .status
        .expect("a status")
        .address
        .parse()
        .expect("an address")
}

#[tokio::test]
async fn a_user_bound_to_the_shipped_viewer_role_reads_everything_the_cli_shows_and_writes_nothing()
{
    let admin = client().await;
    let ns = namespace(&admin, "rbac-viewer-cli").await;
    apply_cluster_scoped(&admin, "roles.yaml").await;
    bind_user(&admin, &ns, "switchyard-viewer", "viewer").await;
    let viewer_client = client_as("viewer.kubeconfig").await;
    wait_until_may_list_functions(&viewer_client, Some(&ns), "the viewer").await;
    let owner = switchyard_tests::cli::Cli::new(&ns);
    let viewer = switchyard_tests::cli::Cli::with_kubeconfig(
        &ns,
        &switchyard_tests::viewer_kubeconfig_path(),
    );
    let _router = real_router(&admin, &ns, "router-a").await;
    switchyard_tests::cli::two_versions(&owner).await;
    owner
        .ok(&["traffic", "hello", "1.1.0=10", "1.0.0=90"])
        .await;

    let status: Value = serde_json::from_str(
        &unrefused(
            viewer
                .run(&["status", "hello", "-o", "json"])
                .await
                .expect(0),
            "status",
        )
        .stdout,
    )
    .expect("status as JSON");
    router_a_applied(&admin, &ns, &status).await;
    for args in [
        &["history", "hello"][..],
        &["list"],
        &["routers"],
        &["versions", "hello"],
    ] {
        let out = unrefused(viewer.run(args).await.expect(0), &args.join(" "));
        assert!(!out.stdout.trim().is_empty(), "{args:?}: {out:?}");
    }

    let before = Api::<Function>::namespaced(admin.clone(), &ns)
        .get("hello")
        .await
        .expect("the Function");
    for args in [
        &[
            "deploy",
            "hello",
            "1.2.0",
            "--endpoint",
            "http://127.0.0.1:9003",
        ][..],
        &["traffic", "hello", "1.1.0=50", "1.0.0=50"],
        &["promote", "hello", "1.1.0"],
        &["rollback", "hello"],
    ] {
        let out = viewer.run(args).await;
        assert_eq!(out.code, 1, "{args:?}: {out:?}");
        let stderr = out.stderr.trim_end();
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.to_lowercase().contains("forbidden"),
            "{args:?}: {stderr}"
        );
    }
    let after = Api::<Function>::namespaced(admin.clone(), &ns)
        .get("hello")
        .await
        .expect("the Function");
    assert_eq!(after.metadata.generation, before.metadata.generation);
    assert!(Api::<FunctionVersion>::namespaced(admin.clone(), &ns)
        .get_opt("hello-1-2-0")
        .await
        .expect("admin reads")
        .is_none());
}

/// Asserts that `status -o json` shows router-a live and with the Function's current
/// generation applied (a substring "router-a" would pass while it was pending).
async fn router_a_applied(admin: &Client, ns: &str, status: &Value) {
    let generation = Api::<Function>::namespaced(admin.clone(), ns)
        .get("hello")
        .await
        .expect("the Function")
        .metadata
        .generation;
    let row = status["routers"]
        .as_array()
        .expect("a list of routers")
        .iter()
        .find(|r| r["name"] == "router-a")
        .unwrap_or_else(|| panic!("router-a in status: {status}"));
    assert_eq!(
        (
            row["live"].as_bool(),
            row["state"].as_str(),
            row["observedGeneration"].as_i64()
        ),
        (Some(true), Some("applied"), generation),
        "{status}"
    );
}
