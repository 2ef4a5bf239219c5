//! The router's request path against a real API server and real upstreams on loopback: exact
//! weighted shares, weight 0, affinity ramps, pinning, unknown hosts, failover.

use switchyard_tests::router as support;

use std::collections::{HashMap, HashSet};

use serde_json::json;
use support::*;
use switchyard_tests::{client, namespace, wait_until_blocking, HttpClient, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splits_of_90_10_and_99_9_0_1_give_exact_shares() {
    let client = client().await;
    let ns = namespace(&client, "rsplit").await;
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    for f in ["ninety", "canary"] {
        apply_version(&client, &ns, f, "1.0.0", &v1.url()).await;
        apply_version(&client, &ns, f, "2.0.0", &v2.url()).await;
    }
    let g1 = apply_function(
        &client,
        &ns,
        "ninety",
        &[("1.0.0", 900_000), ("2.0.0", 100_000)],
        json!({}),
    )
    .await;
    let g2 = apply_function(
        &client,
        &ns,
        "canary",
        &[("1.0.0", 999_000), ("2.0.0", 1_000)],
        json!({}),
    )
    .await;
    let router = Router::start(&ns, "rsplit-0");
    router.wait_serving("ninety", g1);
    router.wait_serving("canary", g2);

    let ninety = count_served(router.listen, "localhost", "/ninety/x", 1_000);
    let canary = count_served(router.listen, "localhost", "/canary/x", 10_000);

    let new90 = ninety.get("ninety@2.0.0").copied().unwrap_or(0);
    assert_eq!(ninety.values().sum::<usize>(), 1_000, "{ninety:?}");
    assert!(
        (98..=102).contains(&new90),
        "90/10 over 1,000 requests gave {ninety:?}"
    );
    let new = canary.get("canary@2.0.0").copied().unwrap_or(0);
    assert_eq!(
        canary.get("canary@1.0.0").copied().unwrap_or(0) + new,
        10_000,
        "{canary:?}"
    );
    assert!(
        (8..=12).contains(&new),
        "99.9/0.1 over 10,000 requests gave the canary {new}: {canary:?}"
    );
    // The upstreams saw exactly what the router reported.
    assert_eq!(v2.hits() as usize, new90 + new);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_with_weight_zero_is_never_served_by_weight() {
    let client = client().await;
    let ns = namespace(&client, "rzero").await;
    let (a, b, zero) = (
        Upstream::start("a"),
        Upstream::start("b"),
        Upstream::start("zero"),
    );
    apply_version(&client, &ns, "zed", "1.0.0", &a.url()).await;
    apply_version(&client, &ns, "zed", "2.0.0", &b.url()).await;
    apply_version(&client, &ns, "zed", "3.0.0", &zero.url()).await;
    let g = apply_function(
        &client,
        &ns,
        "zed",
        &[("1.0.0", 500_000), ("2.0.0", 500_000), ("3.0.0", 0)],
        json!({}),
    )
    .await;
    let router = Router::start(&ns, "rzero-0");
    router.wait_serving("zed", g);
    let counts = count_served(router.listen, "localhost", "/zed", 2_000);
    assert_eq!(counts.get("zed@1.0.0"), Some(&1_000), "{counts:?}");
    assert_eq!(counts.get("zed@2.0.0"), Some(&1_000), "{counts:?}");
    assert_eq!(
        zero.hits(),
        0,
        "the weight-0 version got traffic: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_upstream_fails_over_to_the_other_weighted_version_never_to_weight_zero() {
    let client = client().await;
    let ns = namespace(&client, "rfail").await;
    let (alive, zero) = (Upstream::start("alive"), Upstream::start("zero"));
    apply_version(&client, &ns, "fo", "1.0.0", &alive.url()).await;
    apply_version(&client, &ns, "fo", "2.0.0", &dead_url()).await;
    apply_version(&client, &ns, "fo", "3.0.0", &zero.url()).await;
    let g = apply_function(
        &client,
        &ns,
        "fo",
        &[("1.0.0", 500_000), ("2.0.0", 500_000), ("3.0.0", 0)],
        json!({}),
    )
    .await;
    let router = Router::start(&ns, "rfail-0");
    router.wait_serving("fo", g);
    let counts = count_served(router.listen, "localhost", "/fo", 400);
    assert_eq!(
        counts.get("fo@1.0.0"),
        Some(&400),
        "every request should land on the live version: {counts:?}"
    );
    assert_eq!(zero.hits(), 0);

    // With no other weighted version, a dead upstream is an error, not a weight-0 fallback.
    let g = apply_function(
        &client,
        &ns,
        "fo",
        &[("2.0.0", 1_000_000), ("3.0.0", 0)],
        json!({}),
    )
    .await;
    router.wait_serving("fo", g);
    let counts = count_served(router.listen, "localhost", "/fo", 20);
    assert_eq!(counts.get("status 502"), Some(&20), "{counts:?}");
    assert_eq!(zero.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_affinity_ramp_of_10_25_50_percent_moves_keys_only_forward() {
    let client = client().await;
    let ns = namespace(&client, "raff").await;
    let (old, new) = (Upstream::start("old"), Upstream::start("new"));
    apply_version(&client, &ns, "sticky", "1.0.0", &old.url()).await;
    apply_version(&client, &ns, "sticky", "2.0.0", &new.url()).await;
    let affinity = json!({"affinity": {"header": "x-user"}});
    let router = Router::start(&ns, "raff-0");
    let mut http = HttpClient::new(router.listen);
    let keys: Vec<String> = (0..1_000).map(|i| format!("user-{i}")).collect();
    let mut on_new: HashSet<String> = HashSet::new();
    for percent in [10u32, 25, 50] {
        let w = percent * 10_000;
        let g = apply_function(
            &client,
            &ns,
            "sticky",
            &[("1.0.0", 1_000_000 - w), ("2.0.0", w)],
            affinity.clone(),
        )
        .await;
        router.wait_serving("sticky", g);
        let mut now_new = HashSet::new();
        for key in &keys {
            // Twice per key: the same key must get the same version both times.
            let mut seen = Vec::new();
            for _ in 0..2 {
                let r = http
                    .get("localhost", "/sticky", &[("x-user", key)])
                    .expect("request");
                assert_eq!(r.status, 200);
                seen.push(r.header("x-switchyard-served-by").to_string());
            }
            assert_eq!(
                seen[0], seen[1],
                "key {key} changed version between two requests"
            );
            if seen[0] == "sticky@2.0.0" {
                now_new.insert(key.clone());
            }
        }
        let moved_back: Vec<_> = on_new.difference(&now_new).collect();
        assert!(
            moved_back.is_empty(),
            "keys moved back to the old version at {percent}%: {moved_back:?}"
        );
        let share = now_new.len() as f64 / keys.len() as f64 * 100.0;
        assert!(
            (share - f64::from(percent)).abs() <= 4.5,
            "{percent}% ramp put {share:.1}% of 1,000 keys on the new version"
        );
        on_new = now_new;
    }
}

/// Whether `b`'s weight grew by a strictly larger factor than `a`'s from `w` to `next`.
fn grew_more(w: &[u32; 3], next: &[u32; 3], a: usize, b: usize) -> bool {
    u64::from(next[b]) * u64::from(w[a]) > u64::from(next[a]) * u64::from(w[b])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_version_affinity_ramp_moves_keys_only_towards_versions_that_grew() {
    let client = client().await;
    let ns = namespace(&client, "raff3").await;
    let versions = ["1.0.0", "1.1.0", "1.2.0"];
    let served = versions.map(|v| format!("sticky3@{v}"));
    let upstreams = versions.map(Upstream::start);
    for (v, u) in versions.iter().zip(&upstreams) {
        apply_version(&client, &ns, "sticky3", v, &u.url()).await;
    }
    let affinity = json!({"affinity": {"header": "x-user"}});
    let router = Router::start(&ns, "raff3-0");
    let mut http = HttpClient::new(router.listen);
    let keys: Vec<String> = (0..1_000).map(|i| format!("user-{i}")).collect();
    // 1.2.0 ramps while 1.0.0 and 1.1.0 keep their 8:1 proportion, then takes 10% from 1.0.0
    // alone: the step that moved 1.1.0's keys when versions were intervals in semver order.
    let steps: [[u32; 3]; 4] = [
        [800_000, 100_000, 100_000],
        [700_000, 87_500, 212_500],
        [400_000, 50_000, 550_000],
        [300_000, 50_000, 650_000],
    ];
    let mut before: Option<([u32; 3], Vec<usize>)> = None;
    for w in steps {
        let traffic: Vec<(&str, u32)> = versions.iter().copied().zip(w).collect();
        let g = apply_function(&client, &ns, "sticky3", &traffic, affinity.clone()).await;
        router.wait_serving("sticky3", g);
        let placed: Vec<usize> = keys
            .iter()
            .map(|key| {
                let r = http
                    .get("localhost", "/sticky3", &[("x-user", key)])
                    .expect("request");
                assert_eq!(r.status, 200, "{}", r.body);
                let by = r.header("x-switchyard-served-by");
                served
                    .iter()
                    .position(|s| s == by)
                    .unwrap_or_else(|| panic!("served by {by:?}"))
            })
            .collect();
        for (i, weight) in w.iter().enumerate() {
            let n = placed.iter().filter(|p| **p == i).count();
            let expected = *weight as usize / 1_000;
            // Five standard deviations of a binomial count over 1,000 keys.
            let p = f64::from(*weight) / 1e6;
            let tolerance = (5.0 * (1_000.0 * p * (1.0 - p)).sqrt()).ceil() as usize;
            assert!(
                n.abs_diff(expected) <= tolerance,
                "{w:?} put {n} of 1,000 keys on {}",
                versions[i]
            );
        }
        if let Some((prev, was)) = &before {
            let proportional =
                u64::from(w[0]) * u64::from(prev[1]) == u64::from(w[1]) * u64::from(prev[0]);
            let mut moved = 0usize;
            for (key, (&a, &b)) in keys.iter().zip(was.iter().zip(&placed)) {
                if a == b {
                    continue;
                }
                moved += 1;
                assert!(
                    grew_more(prev, &w, a, b),
                    "{prev:?} -> {w:?} moved {key} from {} to {}",
                    versions[a],
                    versions[b]
                );
                if proportional {
                    assert_eq!(b, 2, "{prev:?} -> {w:?} moved {key} to {}", versions[b]);
                }
            }
            // As many keys as weight moved, within five standard deviations (and, when 1.0.0
            // alone gives way, the few keys 1.1.0 trades on the way: about 0.9% each way).
            let expected = (w[2] - prev[2]) as usize / 1_000;
            let p = f64::from(w[2] - prev[2]) / 1e6;
            let sd = (1_000.0 * p * (1.0 - p)).sqrt();
            let tolerance = (5.0 * sd).ceil() as usize + if proportional { 0 } else { 30 };
            assert!(
                moved.abs_diff(expected) <= tolerance,
                "{prev:?} -> {w:?} moved {moved} of 1,000 keys for {expected}"
            );
        }
        before = Some((w, placed));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_by_version_and_tag_work_when_allowed_and_unknown_pins_are_400() {
    let client = client().await;
    let ns = namespace(&client, "rpin").await;
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    for f in ["pinned", "unpinned"] {
        apply_version(&client, &ns, f, "1.0.0", &v1.url()).await;
        apply_version(&client, &ns, f, "2.0.0", &v2.url()).await;
    }
    let g1 = apply_function(
        &client,
        &ns,
        "pinned",
        &[("1.0.0", 1_000_000), ("2.0.0", 0)],
        json!({"pinning": true, "tags": [{"tag": "canary", "version": "2.0.0"}]}),
    )
    .await;
    let g2 = apply_function(
        &client,
        &ns,
        "unpinned",
        &[("1.0.0", 1_000_000), ("2.0.0", 0)],
        json!({}),
    )
    .await;
    let router = Router::start(&ns, "rpin-0");
    router.wait_serving("pinned", g1);
    router.wait_serving("unpinned", g2);
    let mut http = HttpClient::new(router.listen);
    let pin = |http: &mut HttpClient, path: &str, pin: &str| {
        http.get("localhost", path, &[("x-switchyard-version", pin)])
            .expect("request")
    };

    let r = pin(&mut http, "/pinned", "2.0.0");
    assert_eq!(
        (r.status, r.header("x-switchyard-served-by")),
        (200, "pinned@2.0.0")
    );
    let r = pin(&mut http, "/pinned", "canary");
    assert_eq!(
        (r.status, r.header("x-switchyard-served-by")),
        (200, "pinned@2.0.0")
    );
    let r = pin(&mut http, "/pinned", "9.9.9");
    assert_eq!(r.status, 400, "unknown pin: {r:?}");
    assert!(
        r.body.contains("9.9.9"),
        "the 400 says what was unknown: {}",
        r.body
    );
    let r = http.get("localhost", "/pinned", &[]).expect("request");
    assert_eq!(r.header("x-switchyard-served-by"), "pinned@1.0.0");
    // With pinning off the header is ignored, even for a version that exists.
    let r = pin(&mut http, "/unpinned", "2.0.0");
    assert_eq!(
        (r.status, r.header("x-switchyard-served-by")),
        (200, "unpinned@1.0.0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_hosts_and_paths_get_a_one_line_404_and_known_hosts_route_by_longest_prefix() {
    let client = client().await;
    let ns = namespace(&client, "rhost").await;
    let (root, api) = (Upstream::start("root"), Upstream::start("api"));
    apply_version(&client, &ns, "site", "1.0.0", &root.url()).await;
    apply_version(&client, &ns, "siteapi", "1.0.0", &api.url()).await;
    let g1 = apply_function(
        &client,
        &ns,
        "site",
        &[("1.0.0", 1_000_000)],
        json!({"hosts": ["shop.example"]}),
    )
    .await;
    let g2 = apply_function(
        &client,
        &ns,
        "siteapi",
        &[("1.0.0", 1_000_000)],
        json!({"hosts": ["shop.example"], "pathPrefix": "/api", "stripPrefix": true}),
    )
    .await;
    let router = Router::start(&ns, "rhost-0");
    router.wait_serving("site", g1);
    router.wait_serving("siteapi", g2);
    let mut http = HttpClient::new(router.listen);

    let r = http.get("other.example", "/", &[]).expect("request");
    assert_eq!(r.status, 404);
    assert_eq!(
        r.body.trim_end().lines().count(),
        1,
        "one-line body: {:?}",
        r.body
    );
    let r = http
        .get("shop.example:8080", "/cart", &[])
        .expect("request");
    assert_eq!(
        (r.status, r.header("x-switchyard-served-by")),
        (200, "site@1.0.0")
    );
    assert_eq!(r.header("x-path"), "/cart");
    let r = http
        .get("SHOP.example", "/api/orders?id=1", &[])
        .expect("request");
    assert_eq!(
        (r.status, r.header("x-switchyard-served-by")),
        (200, "siteapi@1.0.0")
    );
    assert_eq!(
        r.header("x-path"),
        "/orders?id=1",
        "the prefix is stripped upstream"
    );
    let r = http.get("shop.example", "/apis", &[]).expect("request");
    assert_eq!(
        r.header("x-switchyard-served-by"),
        "site@1.0.0",
        "prefixes match on segment boundaries"
    );

    // Each request counted once, under its function and version: /cart and /apis on site,
    // /api/orders on siteapi (the 404 only as unmatched). A request is counted once its
    // response is written, so the last one may land just after the client has read it.
    let requests_total = |metrics: &str| -> HashMap<String, u64> {
        metrics
            .lines()
            .filter_map(|l| l.strip_prefix("switchyard_router_requests_total{"))
            .filter_map(|l| l.split_once("} "))
            .map(|(labels, value)| {
                let mut labels: Vec<&str> = labels.split(',').collect();
                labels.sort_unstable();
                (labels.join(","), value.parse().expect("a counter value"))
            })
            .collect()
    };
    let metrics = wait_until_blocking(WAIT, "three routed requests counted", || {
        let metrics = router.metrics();
        (requests_total(&metrics).values().sum::<u64>() >= 3).then_some(metrics)
    });
    assert!(
        metrics.contains("switchyard_router_unmatched_requests_total 1"),
        "{metrics}"
    );
    let counted = requests_total(&metrics);
    let expected: HashMap<String, u64> = [
        (format!("function=\"{ns}/site\",version=\"1.0.0\""), 2),
        (format!("function=\"{ns}/siteapi\",version=\"1.0.0\""), 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(counted, expected, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_affinity_sticks_and_an_https_endpoint_is_a_502_that_says_why() {
    let client = client().await;
    let ns = namespace(&client, "rcookie").await;
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    apply_version(&client, &ns, "crumb", "1.0.0", &v1.url()).await;
    apply_version(&client, &ns, "crumb", "2.0.0", &v2.url()).await;
    // Nothing is dialed for an https endpoint: this build answers 502 before connecting.
    apply_version(&client, &ns, "secure", "1.0.0", "https://127.0.0.1:1").await;
    let g1 = apply_function(
        &client,
        &ns,
        "crumb",
        &[("1.0.0", 500_000), ("2.0.0", 500_000)],
        json!({"affinity": {"cookie": "session"}}),
    )
    .await;
    let g2 = apply_function(&client, &ns, "secure", &[("1.0.0", 1_000_000)], json!({})).await;
    let router = Router::start(&ns, "rcookie-0");
    router.wait_serving("crumb", g1);
    router.wait_serving("secure", g2);
    let mut http = HttpClient::new(router.listen);
    let mut versions = HashSet::new();
    for i in 0..50 {
        let cookie = format!("theme=dark; session=s{i}");
        let first = http
            .get("localhost", "/crumb", &[("cookie", &cookie)])
            .expect("request");
        for _ in 0..3 {
            let again = http
                .get("localhost", "/crumb", &[("cookie", &cookie)])
                .expect("request");
            assert_eq!(
                again.header("x-switchyard-served-by"),
                first.header("x-switchyard-served-by")
            );
        }
        versions.insert(first.header("x-switchyard-served-by").to_string());
    }
    assert_eq!(
        versions.len(),
        2,
        "50 sessions over a 50/50 split land on both versions"
    );

    let r = http.get("localhost", "/secure", &[]).expect("request");
    assert_eq!(r.status, 502);
    assert!(r.body.contains("https"), "{}", r.body);
}
