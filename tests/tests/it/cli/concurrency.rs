//! Twenty `switchyard traffic` commands racing on one function: every one either lands in the
//! history or exits 5; none is lost silently.

use switchyard_tests::cli as support;

use support::{function, two_versions, Cli};
use switchyard_tests::{client, namespace};

#[tokio::test]
async fn twenty_concurrent_traffic_commands_lose_no_update_silently() {
    let client = client().await;
    let ns = namespace(&client, "cli-race").await;
    let cli = Cli::new(&ns);
    two_versions(&cli).await;
    // Each command gives 1.1.0 a distinct share, so its entry in the history is recognisable.
    let runs = (1..=20).map(|i| {
        let cli = cli.clone();
        async move {
            let canary = format!("1.1.0={i}");
            let rest = format!("1.0.0={}", 100 - i);
            (
                i,
                cli.run(&["traffic", "hello", &canary, &rest, "--no-wait"])
                    .await,
            )
        }
    });
    let results = futures::future::join_all(runs).await;
    let f = function(&client, &ns, "hello").await;
    let recorded: Vec<u32> = f
        .spec
        .history
        .iter()
        .filter(|h| h.action == switchyard_core::Action::Traffic)
        .map(|h| {
            h.traffic
                .iter()
                .find(|t| t.version == "1.1.0")
                .map_or(0, |t| t.weight / 10_000)
        })
        .collect();
    let mut landed = 0;
    for (i, out) in &results {
        match out.code {
            0 => {
                landed += 1;
                assert_eq!(
                    recorded.iter().filter(|r| *r == i).count(),
                    1,
                    "command {i} succeeded but is not in history once: {out:?}"
                );
            }
            5 => assert!(
                !recorded.contains(i),
                "command {i} exited 5 but its change landed"
            ),
            _ => panic!("command {i} exited neither 0 nor 5: {out:?}"),
        }
    }
    assert_eq!(
        recorded.len(),
        landed,
        "history holds exactly the changes that reported success"
    );
    assert!(landed > 0);
}
