//! What the metrics say about a version whose upstream is dead (issue 13): every request that
//! tried it counts as one of its requests and one of its errors, and as a failover; the
//! version that answered counts it as its own. Never "errors 27 of requests 0".

use switchyard_tests::router as support;

use serde_json::json;
use support::*;
use switchyard_tests::{client, namespace, Upstream};

/// The value of series `name` with exactly these labels (absent: 0, as Prometheus reads it).
fn series(metrics: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{')?;
            let rest = rest.strip_suffix('}')?;
            let mut have: Vec<(&str, &str)> = rest
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k, v.trim_matches('"')))
                .collect();
            have.sort_unstable();
            let mut want = labels.to_vec();
            want.sort_unstable();
            (metric == name && have == want).then(|| value.parse::<u64>().ok())?
        })
        .next()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_over_request_counts_against_the_dead_version_and_as_a_failover() {
    let client = client().await;
    let ns = namespace(&client, "rfov").await;
    let alive = Upstream::start("alive");
    apply_version(&client, &ns, "fov", "1.0.0", &alive.url()).await;
    apply_version(&client, &ns, "fov", "2.0.0", &dead_url()).await;
    let g = apply_function(
        &client,
        &ns,
        "fov",
        &[("1.0.0", 500_000), ("2.0.0", 500_000)],
        json!({}),
    )
    .await;
    let router = Router::start(&ns, "rfov-0");
    router.wait_serving("fov", g);
    let sent = 200;
    let counts = count_served(router.listen, "localhost", "/fov", sent);
    assert_eq!(counts.get("fov@1.0.0"), Some(&sent), "{counts:?}");
    assert_eq!(alive.hits(), sent as u64);

    let metrics = router.metrics();
    let function = format!("{ns}/fov");
    let dead = [("function", function.as_str()), ("version", "2.0.0")];
    let live = [("function", function.as_str()), ("version", "1.0.0")];
    let failovers = series(&metrics, "switchyard_router_failovers_total", &dead);
    assert!(
        failovers > 0,
        "half the requests picked the dead version:\n{metrics}"
    );
    assert_eq!(
        series(&metrics, "switchyard_router_requests_total", &dead),
        failovers,
        "every failed-over request is a request of the version it left"
    );
    assert_eq!(
        series(&metrics, "switchyard_router_errors_total", &dead),
        failovers,
        "and a failed one"
    );
    assert_eq!(
        series(&metrics, "switchyard_router_requests_total", &live),
        sent as u64,
        "the version that answered counts every request it answered"
    );
    assert_eq!(series(&metrics, "switchyard_router_errors_total", &live), 0);
    assert_eq!(
        series(&metrics, "switchyard_router_failovers_total", &live),
        0
    );
}
