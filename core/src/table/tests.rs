use super::*;
use crate::resources::{Function, FunctionVersion};
use proptest::prelude::*;

fn versions(function: &str, list: &[&str]) -> Vec<FunctionVersion> {
    list.iter()
        .map(|v| FunctionVersion::test_endpoint(function, v, &format!("http://127.0.0.1:9/{v}")))
        .collect()
}

fn route(f: Function, vs: &[FunctionVersion]) -> Route {
    Route::build(&f, vs, &BuildOptions::default()).expect("valid route")
}

fn counts(r: &Route, rolls: impl Iterator<Item = u32>) -> Vec<u32> {
    let mut c = vec![0; r.backends.len()];
    for roll in rolls {
        c[r.pick(roll)] += 1;
    }
    c
}

#[test]
fn rolls_over_the_full_range_give_exactly_the_configured_shares() {
    let vs = versions("hello", &["1.0.0", "1.1.0"]);
    let r = route(
        Function::test("hello")
            .with_weight("1.0.0", 900_000)
            .with_weight("1.1.0", 100_000),
        &vs,
    );
    assert_eq!(counts(&r, 0..TOTAL_PPM), vec![900_000, 100_000]);
}

#[test]
fn the_roll_sequence_keeps_a_tenth_of_a_percent_canary_near_ten_in_ten_thousand() {
    let vs = versions("hello", &["1.0.0", "1.1.0"]);
    // The canary is the newest version: its interval is the top 1,000 ppm.
    let r = route(
        Function::test("hello")
            .with_weight("1.0.0", 999_000)
            .with_weight("1.1.0", 1_000),
        &vs,
    );
    for start in [0u64, 1, 12_345, 999_999, 5_000_000_123] {
        let c = counts(&r, (start..start + 10_000).map(roll));
        assert!(
            (8..=12).contains(&c[1]),
            "start {start}: canary got {}",
            c[1]
        );
    }
}

#[test]
fn any_window_of_the_roll_sequence_splits_within_two_requests_of_the_weights() {
    let vs = versions("hello", &["1.0.0", "1.1.0", "1.2.0"]);
    let r = route(
        Function::test("hello")
            .with_weight("1.0.0", 899_000)
            .with_weight("1.1.0", 1_000)
            .with_weight("1.2.0", 100_000),
        &vs,
    );
    for start in (0..50u64).map(|i| i * 7_919_113) {
        let c = counts(&r, (start..start + 10_000).map(roll));
        for (got, expected) in c.iter().zip([8_990, 10, 1_000]) {
            assert!(got.abs_diff(expected) <= 2, "start {start}: {c:?}");
        }
    }
}

#[test]
fn backends_are_ordered_by_semver_not_by_traffic_order() {
    let vs = versions("hello", &["1.10.0", "1.2.0", "1.9.0"]);
    let r = route(
        Function::test("hello")
            .with_weight("1.10.0", 500_000)
            .with_weight("1.2.0", 500_000),
        &vs,
    );
    let order: Vec<&str> = r.backends.iter().map(|b| b.version.as_str()).collect();
    assert_eq!(order, ["1.2.0", "1.9.0", "1.10.0"]);
    assert_eq!(r.backends[1].weight, 0);
    assert_eq!(r.backends[2].served_by, "hello@1.10.0");
}

#[test]
fn failover_goes_to_another_weighted_version_in_proportion() {
    let vs = versions("hello", &["1.0.0", "1.1.0", "1.2.0", "1.3.0"]);
    let r = route(
        Function::test("hello")
            .with_weight("1.0.0", 500_000)
            .with_weight("1.1.0", 0)
            .with_weight("1.2.0", 250_000)
            .with_weight("1.3.0", 250_000),
        &vs,
    );
    let mut c = [0u32; 4];
    for roll in 0..TOTAL_PPM {
        c[r.failover(0, roll).expect("others have weight")] += 1;
    }
    assert_eq!(c, [0, 0, 500_000, 500_000]);
    let single = route(Function::test("hello").with_weight("1.0.0", TOTAL_PPM), &vs);
    assert_eq!(single.failover(0, 7), None);
}

#[test]
fn pins_name_versions_or_tags_including_weight_zero_ones() {
    let vs = versions("hello", &["1.0.0", "1.1.0"]);
    let r = route(
        Function::test("hello")
            .with_weight("1.0.0", TOTAL_PPM)
            .with_weight("1.1.0", 0)
            .with_tag("canary", "1.1.0"),
        &vs,
    );
    assert_eq!(r.pin("1.1.0"), Some(1));
    assert_eq!(r.pin("canary"), Some(1));
    assert_eq!(r.pin("9.9.9"), None);
}

#[test]
fn an_invalid_function_fails_the_build_with_the_reason() {
    let vs = versions("hello", &["1.0.0"]);
    let cases = [
        (
            Function::test("hello").with_weight("1.0.0", 999_999),
            "weights must sum to 1000000 ppm",
        ),
        (
            Function::test("hello")
                .with_weight("1.0.0", 500_000)
                .with_weight("2.0.0", 500_000),
            "version 2.0.0 of function hello does not exist",
        ),
        (
            Function::test("hello")
                .with_weight("1.0.0", TOTAL_PPM)
                .with_tag("x", "3.0.0"),
            "version 3.0.0",
        ),
    ];
    for (f, expected) in cases {
        let err = RoutingTable::build(&[f], &vs, &BuildOptions::default())
            .expect_err(expected)
            .to_string();
        assert!(err.starts_with("function default/hello: "), "{err}");
        assert!(err.contains(expected), "{err} lacks {expected}");
    }
}

#[test]
fn versions_of_other_namespaces_do_not_count() {
    let vs: Vec<_> = versions("hello", &["1.0.0"])
        .into_iter()
        .map(|v| v.in_namespace("other"))
        .collect();
    let err = RoutingTable::build(
        &[Function::test("hello").with_weight("1.0.0", TOTAL_PPM)],
        &vs,
        &BuildOptions::default(),
    );
    assert!(err.is_err());
}

#[test]
fn managed_versions_route_to_their_service_dns_name() {
    let vs = vec![FunctionVersion::test_image(
        "hello",
        "1.3.0",
        "ghcr.io/acme/hello@sha256:abc",
    )];
    let r = Route::build(
        &Function::test("hello").with_weight("1.3.0", TOTAL_PPM),
        &vs,
        &BuildOptions {
            cluster_domain: "corp.local".into(),
        },
    )
    .expect("valid");
    assert_eq!(
        r.backends[0].upstream.address(),
        "hello-1-3-0.default.svc.corp.local:80"
    );
    assert!(r.backends[0].upstream.managed);
}

#[test]
fn external_versions_route_to_their_endpoint() {
    let vs = vec![
        FunctionVersion::test_endpoint("hello", "1.0.0", "https://vm1.internal/base/"),
        FunctionVersion::test_endpoint("hello", "1.1.0", "http://[::1]:8081"),
    ];
    let r = route(Function::test("hello").with_weight("1.0.0", TOTAL_PPM), &vs);
    let u = &r.backends[0].upstream;
    assert_eq!(
        (u.address().as_str(), u.tls, u.base_path.as_str()),
        ("vm1.internal:443", true, "/base")
    );
    assert_eq!(r.backends[1].upstream.address(), "[::1]:8081");
}

#[test]
fn an_unreferenced_broken_version_does_not_break_the_function() {
    let mut vs = versions("hello", &["1.0.0"]);
    let mut broken = FunctionVersion::test_endpoint("hello", "0.9.0", "ftp://nope");
    broken.spec.endpoint = Some("ftp://nope".into());
    vs.push(broken);
    let r = route(Function::test("hello").with_weight("1.0.0", TOTAL_PPM), &vs);
    assert_eq!(r.backends.len(), 1);
}

fn table(functions: Vec<Function>) -> RoutingTable {
    let mut vs = Vec::new();
    for f in &functions {
        for t in &f.spec.traffic {
            vs.extend(versions(
                f.metadata.name.as_deref().unwrap_or_default(),
                &[t.version.as_str()],
            ));
        }
    }
    RoutingTable::build(&functions, &vs, &BuildOptions::default()).expect("valid table")
}

#[test]
fn lookup_matches_host_then_longest_prefix_on_segment_boundaries() {
    let t = table(vec![
        Function::test("hello").with_weight("1.0.0", TOTAL_PPM),
        Function::test("api")
            .with_weight("1.0.0", TOTAL_PPM)
            .with_prefix("/api/"),
        Function::test("apiv2")
            .with_weight("1.0.0", TOTAL_PPM)
            .with_prefix("/api/v2"),
        Function::test("site")
            .with_weight("1.0.0", TOTAL_PPM)
            .with_hosts(&["example.com"]),
        Function::test("blog")
            .with_weight("1.0.0", TOTAL_PPM)
            .with_hosts(&["example.com"])
            .with_prefix("/blog"),
        Function::test("wild")
            .with_weight("1.0.0", TOTAL_PPM)
            .with_hosts(&["*.apps.example.com"]),
    ]);
    let cases = [
        ("any.host", "/hello", Some("hello")),
        ("any.host", "/hello/world", Some("hello")),
        ("any.host", "/helloworld", None),
        ("any.host", "/api", Some("api")),
        ("any.host", "/api/v1/x", Some("api")),
        ("any.host", "/api/v2", Some("apiv2")),
        ("any.host", "/api/v2/users/7", Some("apiv2")),
        ("any.host", "/api/v20", Some("api")),
        ("example.com", "/", Some("site")),
        ("Example.COM:8080", "/blog/post/1", Some("blog")),
        ("example.com", "/hello", Some("site")),
        ("a.apps.example.com", "/x", Some("wild")),
        ("apps.example.com", "/hello", Some("hello")),
        ("other", "/", None),
        ("[::1]:80", "/hello", Some("hello")),
    ];
    for (host, path, expected) in cases {
        let got = t.lookup(host, path).map(|r| r.name.as_str());
        assert_eq!(got, expected, "{host} {path}");
    }
}

#[test]
fn two_functions_claiming_one_host_and_prefix_conflict() {
    let vs = [versions("a", &["1.0.0"]), versions("b", &["1.0.0"])].concat();
    let err = RoutingTable::build(
        &[
            Function::test("a")
                .with_weight("1.0.0", TOTAL_PPM)
                .with_prefix("/x"),
            Function::test("b")
                .with_weight("1.0.0", TOTAL_PPM)
                .with_prefix("/x/"),
        ],
        &vs,
        &BuildOptions::default(),
    )
    .expect_err("conflict");
    assert_eq!(
        err.to_string(),
        "functions default/a and default/b both claim host * with path prefix /x"
    );
}

#[test]
fn strip_prefix_removes_the_prefix_and_never_leaves_an_empty_path() {
    let vs = versions("hello", &["1.0.0"]);
    let mut f = Function::test("hello").with_weight("1.0.0", TOTAL_PPM);
    f.spec.strip_prefix = true;
    let r = route(f, &vs);
    assert_eq!(r.upstream_path("/hello/x?y=1"), "/x?y=1");
    assert_eq!(r.upstream_path("/hello"), "/");
    let kept = route(Function::test("hello").with_weight("1.0.0", TOTAL_PPM), &vs);
    assert_eq!(kept.upstream_path("/hello/x"), "/hello/x");
}

#[test]
fn affinity_ramp_moves_keys_only_forward() {
    let vs = versions("hello", &["1.0.0", "1.1.0"]);
    let at = |canary: u32| {
        route(
            Function::test("hello")
                .with_weight("1.0.0", TOTAL_PPM - canary)
                .with_weight("1.1.0", canary)
                .with_affinity_header("x-user"),
            &vs,
        )
    };
    let steps = [at(100_000), at(250_000), at(500_000)];
    let keys: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
    let mut on_canary = vec![false; keys.len()];
    let mut counts = Vec::new();
    for r in &steps {
        let mut n = 0;
        for (i, k) in keys.iter().enumerate() {
            let canary = r.pick_for_key(k.as_bytes()) == 1;
            assert!(canary || !on_canary[i], "key {k} moved back");
            on_canary[i] = canary;
            n += usize::from(canary);
        }
        counts.push(n);
    }
    // About 10%, 25% and 50% of 1,000 keys.
    for (n, expected) in counts.iter().zip([100, 250, 500]) {
        assert!(n.abs_diff(expected) <= 50, "{counts:?}");
    }
}

fn weights_strategy() -> impl Strategy<Value = Vec<u32>> {
    // Up to five versions whose weights sum to the whole, some of them zero.
    proptest::collection::vec(prop_oneof![Just(0u32), 1u32..1_000_000], 1..5).prop_map(|raw| {
        let total: u64 = raw.iter().map(|w| u64::from(*w)).sum();
        if total == 0 {
            let mut w = vec![0; raw.len()];
            w[raw.len() - 1] = TOTAL_PPM;
            return w;
        }
        let mut w: Vec<u32> = raw
            .iter()
            .map(|x| (u64::from(*x) * u64::from(TOTAL_PPM) / total) as u32)
            .collect();
        let short = TOTAL_PPM - w.iter().sum::<u32>();
        let last = w.iter().rposition(|x| *x > 0).unwrap_or(0);
        w[last] += short;
        w
    })
}

fn route_with(weights: &[u32]) -> Route {
    let names: Vec<String> = (0..weights.len()).map(|i| format!("1.{i}.0")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let vs = versions("hello", &refs);
    let mut f = Function::test("hello");
    for (n, w) in names.iter().zip(weights) {
        f = f.with_weight(n, *w);
    }
    route(f, &vs)
}

proptest! {
    // A million rolls per case: a few cases cover the shapes (zeros, one version, tiny ones).
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn every_roll_of_the_range_lands_in_its_own_interval(weights in weights_strategy()) {
        // All 1,000,000 rolls, against the interval edges walked alongside: each version gets
        // exactly the rolls from the sum of the weights before it to that sum plus its own.
        let r = route_with(&weights);
        let mut version = 0;
        let mut upper = weights[0];
        for point in 0..TOTAL_PPM {
            while point >= upper {
                version += 1;
                upper += weights[version];
            }
            prop_assert_eq!(r.pick(point), version, "roll {} with {:?}", point, weights);
        }
    }
}

proptest! {
    #[test]
    fn a_weight_zero_version_is_never_picked(weights in weights_strategy(), rolls in proptest::collection::vec(any::<u32>(), 200)) {
        let r = route_with(&weights);
        for roll in rolls {
            let i = r.pick(roll);
            prop_assert!(r.backends[i].weight > 0);
            if let Some(j) = r.failover(i, roll) {
                prop_assert!(j != i && r.backends[j].weight > 0);
            }
        }
    }

    #[test]
    fn every_key_lands_on_a_weighted_version(weights in weights_strategy(), key in any::<Vec<u8>>()) {
        let r = route_with(&weights);
        prop_assert!(r.backends[r.pick_for_key(&key)].weight > 0);
    }

    #[test]
    fn raising_one_weight_never_moves_a_key_away_from_it(
        weights in weights_strategy(),
        grow in 0usize..5,
        amount in 1u32..1_000_000,
        keys in proptest::collection::vec(any::<u64>(), 300),
    ) {
        let grow = grow % weights.len();
        // Take `amount` from the others (none of them grows), give it to `grow`.
        let mut next = weights.clone();
        let mut left = amount;
        for (i, w) in next.iter_mut().enumerate() {
            if i != grow {
                let take = left.min(*w);
                *w -= take;
                left -= take;
            }
        }
        next[grow] += amount - left;
        let before = route_with(&weights);
        let after = route_with(&next);
        for k in keys {
            let k = k.to_le_bytes();
            if before.pick_for_key(&k) == grow {
                prop_assert_eq!(after.pick_for_key(&k), grow);
            }
        }
    }
}

/// A route of function `name` for `hosts` and `prefix` (one version, all traffic).
fn claim(name: &str, hosts: &[&str], prefix: &str) -> Arc<Route> {
    let f = Function::test(name)
        .with_weight("1.0.0", TOTAL_PPM)
        .with_hosts(hosts)
        .with_prefix(prefix);
    Arc::new(route(f, &versions(name, &["1.0.0"])))
}

/// Every (host, path) pair the table tests probe, with the function each one reaches.
fn lookups(t: &RoutingTable) -> Vec<Option<String>> {
    let hosts = [
        "a.com",
        "b.a.com",
        "x.b.a.com",
        "c.a.com",
        "other",
        ".a.com",
    ];
    let paths = ["/", "/x", "/x/y", "/x/y/z", "/xy", "/z", "/z/1"];
    hosts
        .iter()
        .flat_map(|h| paths.iter().map(move |p| (h, p)))
        .map(|(h, p)| t.lookup(h, p).map(|r| r.name.clone()))
        .collect()
}

#[test]
fn a_conflicting_insert_leaves_the_table_as_it_was() {
    let mut t = RoutingTable::from_routes([claim("a", &["a.com"], "/x"), claim("b", &[], "/z")])
        .expect("no conflict");
    let before = lookups(&t);
    // b moves onto a's claim (and off its own): refused whole.
    let err = t
        .insert(claim("b", &["c.a.com", "a.com"], "/x"))
        .expect_err("conflict");
    assert_eq!(
        err.to_string(),
        "functions default/a and default/b both claim host a.com with path prefix /x"
    );
    assert_eq!(lookups(&t), before);
    assert_eq!(t.get("default/b").map(|r| r.prefix.as_str()), Some("/z"));
}

#[test]
fn a_clone_serves_on_unchanged_while_the_original_changes() {
    let mut t = RoutingTable::from_routes([claim("a", &[], "/x"), claim("b", &["*.a.com"], "/")])
        .expect("no conflict");
    let served = t.clone();
    let before = lookups(&served);
    t.insert(claim("a", &[], "/z")).expect("moved");
    t.remove("default/b").expect("removed");
    assert_eq!(lookups(&served), before);
    assert_eq!(t.lookup("b.a.com", "/x/1"), None);
    assert_eq!(
        t.lookup("b.a.com", "/z/1").map(|r| r.name.as_str()),
        Some("a")
    );
    assert_eq!(t.len(), 1);
    assert_eq!(served.len(), 2);
}

#[test]
fn a_host_listed_twice_is_one_claim() {
    let t = RoutingTable::from_routes([claim("a", &["a.com", "a.com"], "/")]).expect("one claim");
    assert_eq!(t.lookup("a.com", "/").map(|r| r.name.as_str()), Some("a"));
}

/// Which function, and `None` (removed) or its hosts and prefix, as indexes into the test's lists.
type Change = (usize, Option<(Vec<usize>, usize)>);

fn change_strategy() -> impl Strategy<Value = Vec<Change>> {
    // Which function (of 5), and either removed or set to some hosts and a prefix.
    let set = (proptest::collection::vec(0usize..4, 0..3), 0usize..4);
    proptest::collection::vec((0usize..5, proptest::option::weighted(0.8, set)), 1..40)
}

proptest! {
    #[test]
    fn changing_routes_one_at_a_time_routes_like_a_fresh_build(changes in change_strategy()) {
        let hosts = ["a.com", "*.a.com", "b.a.com", "*.b.a.com"];
        let prefixes = ["/", "/x", "/x/y", "/z"];
        let names = ["f0", "f1", "f2", "f3", "f4"];
        let mut t = RoutingTable::empty();
        let mut model: std::collections::BTreeMap<&str, Arc<Route>> = Default::default();
        for (i, change) in changes {
            let name = names[i];
            match change {
                None => {
                    let removed = t.remove(&format!("default/{name}"));
                    prop_assert_eq!(removed.is_some(), model.remove(name).is_some());
                }
                Some((hs, p)) => {
                    let hs: Vec<&str> = hs.iter().map(|h| hosts[*h]).collect();
                    let r = claim(name, &hs, prefixes[p]);
                    let mut next = model.clone();
                    next.insert(name, Arc::clone(&r));
                    let whole = RoutingTable::from_routes(next.values().cloned());
                    let one = t.insert(r);
                    prop_assert_eq!(one.is_ok(), whole.is_ok());
                    if one.is_ok() {
                        model = next;
                    }
                }
            }
            let fresh = RoutingTable::from_routes(model.values().cloned()).expect("the model is valid");
            prop_assert_eq!(lookups(&t), lookups(&fresh));
            prop_assert_eq!(t.routes(), fresh.routes());
        }
    }
}

/// `keys` distinct affinity keys, as a client population would send them.
fn user_keys(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("user-{i}").into_bytes()).collect()
}

/// Per key, its version on `before` and on `after`.
fn placements(before: &Route, after: &Route, keys: &[Vec<u8>]) -> Vec<(usize, usize)> {
    keys.iter()
        .map(|k| (before.pick_for_key(k), after.pick_for_key(k)))
        .collect()
}

/// Whether `b`'s weight grew by a strictly larger factor than `a`'s from `w` to `next`
/// (`next[b] / w[b] > next[a] / w[a]`, cross-multiplied so that weight 0 needs no case).
fn grew_more(w: &[u32], next: &[u32], a: usize, b: usize) -> bool {
    u64::from(next[b]) * u64::from(w[a]) > u64::from(next[a]) * u64::from(w[b])
}

#[test]
fn keys_land_on_versions_in_proportion_to_their_weights() {
    let keys = user_keys(200_000);
    for weights in [
        vec![900_000, 100_000],
        vec![800_000, 100_000, 100_000],
        vec![0, 500_000, 0, 250_000, 250_000],
        vec![990_000, 9_000, 1_000],
    ] {
        let r = route_with(&weights);
        let mut c = vec![0u32; weights.len()];
        for k in &keys {
            c[r.pick_for_key(k)] += 1;
        }
        for (got, w) in c.iter().zip(&weights) {
            // Five standard deviations of a binomial count over 200,000 keys.
            let expected = f64::from(*w) / f64::from(TOTAL_PPM) * 200_000.0;
            let sd = (expected * (1.0 - f64::from(*w) / f64::from(TOTAL_PPM))).sqrt();
            assert!(
                (f64::from(*got) - expected).abs() <= 5.0 * sd + 1.0,
                "{weights:?} placed {c:?}"
            );
        }
    }
}

#[test]
fn ramping_the_newest_of_three_from_the_oldest_alone_moves_keys_only_towards_growth() {
    // 80/10/10 -> 70/10/20: the newest version takes 10% from the oldest. Intervals moved the
    // keys of [700k, 800k) from 1.0.0 to 1.1.0 and of [800k, 900k) from 1.1.0 to 1.2.0.
    let w = [800_000, 100_000, 100_000];
    let next = [700_000, 100_000, 200_000];
    let keys = user_keys(100_000);
    let moves = placements(&route_with(&w), &route_with(&next), &keys);
    let count = |from: usize, to: usize| moves.iter().filter(|m| **m == (from, to)).count();
    // Nothing leaves the version that grew, nothing enters the one that shrank.
    for other in [0, 1] {
        assert_eq!(count(2, other), 0);
    }
    for other in [1, 2] {
        assert_eq!(count(other, 0), 0);
    }
    // 1.2.0 gains about 10% of the keys, mostly straight from 1.0.0.
    let gained = count(0, 2) + count(1, 2);
    assert!(gained.abs_diff(10_000) <= 500, "1.2.0 gained {gained}");
    // 1.1.0 trades a few keys, since a stateless scheme cannot avoid it (see the module doc):
    // about 0.9% of all keys each way, and its share stays 10%.
    assert!(count(0, 1) < 1_500 && count(1, 2) < 1_500);
}

#[test]
fn a_proportional_three_version_ramp_moves_keys_only_to_the_canary() {
    // 1.2.0 ramps 10% -> 21.25% -> 55%, the others keeping their 8:1 proportion.
    let steps = [
        [800_000, 100_000, 100_000],
        [700_000, 87_500, 212_500],
        [400_000, 50_000, 550_000],
    ];
    let keys = user_keys(20_000);
    for pair in steps.windows(2) {
        let moves = placements(&route_with(&pair[0]), &route_with(&pair[1]), &keys);
        let moved: Vec<_> = moves.iter().filter(|(a, b)| a != b).collect();
        assert!(moved.iter().all(|(_, b)| *b == 2), "{moved:?}");
        let expected = (pair[1][2] - pair[0][2]) as usize * keys.len() / TOTAL_PPM as usize;
        assert!(
            moved.len().abs_diff(expected) <= 350,
            "{} of {expected}",
            moved.len()
        );
    }
}

#[test]
fn the_logarithm_matches_the_platform_s_to_thirteen_digits() {
    let mut x = f64::MIN_POSITIVE;
    let mut checked = 0;
    while x < 1.0 {
        for f in [1.0, 1.1, 1.3, 1.414, 1.4143, 1.5, 1.7, 1.99] {
            let v = (x * f).min(1.0);
            let (mine, std) = (ln(v), v.ln());
            assert!(
                (mine - std).abs() <= 1e-13 * std.abs().max(1e-300) || mine == std,
                "ln({v}) = {mine}, platform {std}"
            );
            checked += 1;
        }
        x *= 2.0;
    }
    assert!(checked > 8_000);
    assert_eq!(ln(1.0), 0.0);
}

/// A weight split over exactly `n` versions, some of them zero.
fn split_of(n: usize) -> impl Strategy<Value = Vec<u32>> {
    proptest::collection::vec(prop_oneof![Just(0u32), 1u32..1_000_000], n).prop_map(normalize)
}

/// Scales raw weights to sum to the whole; all zero gives everything to the last.
fn normalize(raw: Vec<u32>) -> Vec<u32> {
    let total: u64 = raw.iter().map(|w| u64::from(*w)).sum();
    if total == 0 {
        let mut w = vec![0; raw.len()];
        w[raw.len() - 1] = TOTAL_PPM;
        return w;
    }
    let mut w: Vec<u32> = raw
        .iter()
        .map(|x| (u64::from(*x) * u64::from(TOTAL_PPM) / total) as u32)
        .collect();
    let short = TOTAL_PPM - w.iter().sum::<u32>();
    let last = w.iter().rposition(|x| *x > 0).unwrap_or(0);
    w[last] += short;
    w
}

/// A split of 2–6 versions and a change of it: either an arbitrary new split, or one that keeps
/// some versions' weights and spreads the rest over the others.
fn weight_change() -> impl Strategy<Value = (Vec<u32>, Vec<u32>)> {
    (2usize..=6).prop_flat_map(|n| {
        (
            split_of(n),
            split_of(n),
            proptest::collection::vec(any::<bool>(), n),
            proptest::collection::vec(prop_oneof![Just(0u32), 1u32..1_000_000], n),
        )
            .prop_map(|(w, arbitrary, keep, raw)| {
                if keep.iter().all(|k| !k) {
                    return (w, arbitrary);
                }
                let budget = TOTAL_PPM
                    - w.iter()
                        .zip(&keep)
                        .filter(|(_, k)| **k)
                        .map(|(w, _)| w)
                        .sum::<u32>();
                let movable: Vec<usize> = (0..w.len()).filter(|i| !keep[*i]).collect();
                let Some(&last) = movable.last() else {
                    return (w.clone(), w);
                };
                let total: u64 = movable.iter().map(|i| u64::from(raw[*i])).sum();
                let mut next = w.clone();
                let mut given = 0;
                for &i in &movable {
                    next[i] = (u64::from(raw[i]) * u64::from(budget))
                        .checked_div(total)
                        .unwrap_or(0) as u32;
                    given += next[i];
                }
                next[last] += budget - given;
                (w, next)
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_key_moves_only_to_a_version_whose_weight_grew_by_a_larger_factor(
        (w, next) in weight_change(),
        seed in any::<u32>(),
    ) {
        let keys: Vec<Vec<u8>> = (0..2_000u32).map(|i| (seed ^ i).to_le_bytes().to_vec()).collect();
        let (before, after) = (route_with(&w), route_with(&next));
        for (a, b) in placements(&before, &after, &keys) {
            prop_assert!(w[a] > 0 && next[b] > 0);
            if a != b {
                prop_assert!(grew_more(&w, &next, a, b), "{w:?} -> {next:?} moved a key {a} -> {b}");
                // So never from a version that did not shrink to one that did not grow.
                prop_assert!(next[a] < w[a] || next[b] > w[b]);
            }
        }
    }

    #[test]
    fn changing_one_weight_while_the_rest_keep_proportion_moves_exactly_that_share(
        n in 2usize..=6,
        changed in 0usize..6,
        parts in proptest::collection::vec(0u32..=40, 5),
        scales in (0u32..=1_000_000, 0u32..=1_000_000),
        seed in any::<u32>(),
    ) {
        let changed = changed % n;
        let mut parts = parts[..n - 1].to_vec();
        if parts.iter().all(|p| *p == 0) {
            parts[0] = 1;
        }
        let sum: u32 = parts.iter().sum();
        // The others are parts × c (c = c1, then c2): their ratios never change.
        let split = |c: u32| {
            let c = c % (TOTAL_PPM / sum + 1);
            let mut w: Vec<u32> = parts.iter().map(|p| p * c).collect();
            w.insert(changed, TOTAL_PPM - c * sum);
            w
        };
        let (w, next) = (split(scales.0), split(scales.1));
        let keys: Vec<Vec<u8>> = (0..20_000u32).map(|i| (seed ^ i).to_le_bytes().to_vec()).collect();
        let moves = placements(&route_with(&w), &route_with(&next), &keys);
        let mut moved = 0usize;
        for &(a, b) in &moves {
            if a != b {
                // Into the changed version if it grew, out of it if it shrank, never between others.
                let expected = if next[changed] > w[changed] { b } else { a };
                prop_assert_eq!(expected, changed, "{:?} -> {:?} moved a key {} -> {}", w, next, a, b);
                moved += 1;
            }
        }
        // As many keys as the weight moved: within five standard deviations over 20,000 keys.
        let p = f64::from(w[changed].abs_diff(next[changed])) / f64::from(TOTAL_PPM);
        let sd = (p * (1.0 - p) / 20_000.0).sqrt();
        let share = moved as f64 / 20_000.0;
        prop_assert!((share - p).abs() <= 5.0 * sd + 1e-4, "{w:?} -> {next:?} moved {share}, weight moved {p}");
    }
}
