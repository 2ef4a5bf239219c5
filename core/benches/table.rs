//! Micro-benchmarks of the routing table: how long `RoutingTable::build` takes, what one
//! request's routing decision costs (`lookup` by host and path, then `Route::pick` of a
//! version; and a pick by affinity key), and what one changed Function costs the table (clone
//! it, replace one route), for 100, 1,000 and 10,000 functions with 3 versions each.
//!
//! Run with `cargo bench -p switchyard-core --bench table` (bench/run does, and copies the
//! medians into bench/RESULTS.md). Timings live here, never in tests.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switchyard_core::{
    table::roll, BuildOptions, Function, FunctionSpec, FunctionVersion, FunctionVersionSpec,
    RoutingTable, TrafficTarget,
};

const SIZES: [usize; 3] = [100, 1_000, 10_000];

/// `n` functions `fn-<i>` in namespace `bench`, each with versions 1.0.0 (weight 0), 1.1.0
/// (90%) and 1.2.0 (10%) served by external endpoints on loopback: the shape of a fleet in the
/// middle of a canary.
fn fleet(n: usize) -> (Vec<Function>, Vec<FunctionVersion>) {
    let mut functions = Vec::with_capacity(n);
    let mut versions = Vec::with_capacity(3 * n);
    for i in 0..n {
        let name = format!("fn-{i}");
        let mut f = Function::new(
            &name,
            FunctionSpec {
                traffic: vec![
                    TrafficTarget::new("1.0.0", 0),
                    TrafficTarget::new("1.1.0", 900_000),
                    TrafficTarget::new("1.2.0", 100_000),
                ],
                ..FunctionSpec::default()
            },
        );
        f.metadata.namespace = Some("bench".into());
        f.metadata.generation = Some(1);
        functions.push(f);
        for (j, v) in ["1.0.0", "1.1.0", "1.2.0"].into_iter().enumerate() {
            let mut fv = FunctionVersion::new(
                &switchyard_core::object_name(&name, v),
                FunctionVersionSpec {
                    function: name.clone(),
                    version: v.into(),
                    image: None,
                    port: None,
                    env: vec![],
                    args: vec![],
                    replicas: None,
                    resources: None,
                    endpoint: Some(format!("http://127.0.0.1:{}", 20_000 + j)),
                },
            );
            fv.metadata.namespace = Some("bench".into());
            versions.push(fv);
        }
    }
    (functions, versions)
}

fn build(c: &mut Criterion) {
    let opts = BuildOptions::default();
    let mut group = c.benchmark_group("build");
    group.sample_size(10);
    for n in SIZES {
        let (functions, versions) = fleet(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| RoutingTable::build(black_box(&functions), black_box(&versions), &opts))
        });
    }
    group.finish();
}

fn pick(c: &mut Criterion) {
    let opts = BuildOptions::default();
    let mut group = c.benchmark_group("lookup_and_pick");
    for n in SIZES {
        let (functions, versions) = fleet(n);
        let table = RoutingTable::build(&functions, &versions, &opts).expect("valid fleet");
        // Requests spread over every function, as a router serving the whole fleet sees them.
        let paths: Vec<String> = (0..1024)
            .map(|i| format!("/fn-{}/api/items", (i * 7919) % n))
            .collect();
        let mut i = 0u64;
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                i = i.wrapping_add(1);
                let path = &paths[(i as usize) & 1023];
                let route = table.lookup(black_box("bench.example.com"), black_box(path));
                route.map(|r| r.pick(roll(i)))
            })
        });
    }
    group.finish();

    // The pick alone: one route, 3 versions, a fresh roll per request.
    let (functions, versions) = fleet(1);
    let table = RoutingTable::build(&functions, &versions, &opts).expect("valid fleet");
    let route = table.routes()[0].clone();
    let mut i = 0u64;
    c.bench_function("pick_3_versions", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            route.pick(roll(black_box(i)))
        })
    });

    // A pick by affinity key on the same route: hash the key, then one rendezvous cost per
    // weighted version.
    let keys: Vec<String> = (0..1024).map(|k| format!("user-{k}")).collect();
    c.bench_function("pick_by_key_3_versions", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            route.pick_for_key(black_box(keys[(i as usize) & 1023].as_bytes()))
        })
    });
}

/// What a router does for one changed Function: clone the served table, replace one route.
fn change_one(c: &mut Criterion) {
    let opts = BuildOptions::default();
    let mut group = c.benchmark_group("change_one");
    for n in SIZES {
        let (mut functions, versions) = fleet(n);
        let table = RoutingTable::build(&functions, &versions, &opts).expect("valid fleet");
        let f = &mut functions[n / 2];
        f.spec.traffic[1].weight = 800_000;
        f.spec.traffic[2].weight = 200_000;
        let mine: Vec<&FunctionVersion> = versions[3 * (n / 2)..3 * (n / 2) + 3].iter().collect();
        let route = std::sync::Arc::new(
            switchyard_core::Route::build(f, mine, &opts).expect("valid function"),
        );
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let mut next = table.clone();
                next.insert(black_box(route.clone())).expect("no conflict");
                next
            })
        });
    }
    group.finish();
}

criterion_group!(benches, build, pick, change_one);
criterion_main!(benches);
