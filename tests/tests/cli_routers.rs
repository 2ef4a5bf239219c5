//! Waiting for routers (docs/protocol.md): traffic changes return once every live router
//! replica has acknowledged the new generation, and exit 4 when one does not in time or when
//! none is live. The replicas here are protocol peers on the real API server (a Lease and
//! server-side-applied acks each).

#[path = "cli_support.rs"]
mod support;

use support::{two_versions, Cli, RealRouter, SimRouter};
use switchyard_tests::{client, namespace};

#[tokio::test]
async fn waiting_for_routers_works_with_two_replicas_and_times_out_with_exit_4_when_one_stops() {
    let client = client().await;
    let ns = namespace(&client, "cli-routers").await;
    let cli = Cli::new(&ns);
    two_versions(&cli).await;
    let a = SimRouter::start(&client, &ns, "router-a").await;
    let _b = SimRouter::start(&client, &ns, "router-b").await;
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
    let status = cli.ok(&["status", "hello"]).await.stdout;
    assert!(
        status.contains("router-a") && status.contains("applied"),
        "{status}"
    );

    a.pause();
    let out = cli
        .run(&["promote", "hello", "1.1.0", "--timeout", "1s"])
        .await
        .expect(4);
    assert!(out.stderr.contains("waiting for router-a"), "{out:?}");
    assert!(out.stderr.contains("1/2 applied"), "{out:?}");
    // The write was made all the same.
    let f = support::function(&client, &ns, "hello").await;
    assert_eq!(f.spec.weight_of("1.1.0"), 1_000_000);
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
        .run(&["promote", "hello", "1.1.0", "--timeout", "1s"])
        .await
        .expect(4);
    assert!(out.stderr.contains("waiting for router-a"), "{out:?}");
}
