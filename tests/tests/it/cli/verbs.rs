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
