//! The routing table: which function a request belongs to, and which version serves it.
//!
//! A [`Route`] is built from one Function and its FunctionVersions, validated on the way; a
//! [`RoutingTable`] indexes routes by host and path prefix. Both are immutable once built: the
//! router swaps whole tables, it never edits one in place.
//!
//! Without affinity, versions occupy intervals of `[0, 1_000_000)` in ascending semver order,
//! each as wide as its weight, and a request's version is the interval its *roll* falls in. The
//! router draws rolls from [`roll`], a low-discrepancy sequence, so the observed shares follow
//! the weights exactly over the whole range and within two requests over any few thousand.
//!
//! With affinity, a key is placed by weighted rendezvous hashing instead: each version draws a
//! cost for the key from an exponential distribution (a hash of the key and the version's
//! name), divides it by its weight, and the cheapest version serves the key. A key lands on a
//! version with probability equal to its share, and a key moves from version `a` to version
//! `b` only when `b`'s weight grew by a larger factor than `a`'s. So a key never moves from a
//! version whose weight did not shrink to one whose weight did not grow, the version that grew
//! the most never loses a key, the one that shrank the most never gains one, and when one
//! version's weight changes while the others keep their proportions (`deploy --traffic`,
//! promote, rollback), keys move only between it and the others, on average exactly as many
//! as the weight moved.
//!
//! No stateless scheme can promise more for three or more versions, namely that keys move only
//! from shrunk to grown versions on every change: it would fix the keys of a version whose
//! weight stays put, and then A/B/C at 50/50/0 → 50/0/50 → 0/50/50 would leave C with B's
//! keys, while 50/50/0 → 0/50/50 directly would leave it A's. Intervals in semver order moved
//! a tenth of all keys from 1.0.0 to 1.1.0, whose weight had not changed, on 80/10/10 →
//! 70/10/20; rendezvous moves about 0.9% each way through 1.1.0 on that change, and none on a
//! proportional one.

use std::sync::Arc;

use serde::Serialize;

use crate::cowmap::{CowMap, FxHashMap};
use crate::resources::{Function, FunctionVersion};
use crate::validate::{self, ValidationError};
use crate::weight::TOTAL_PPM;

/// How routes turn versions into upstream addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    /// Cluster DNS domain of managed versions' Services; default `cluster.local`.
    pub cluster_domain: String,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            cluster_domain: "cluster.local".to_string(),
        }
    }
}

/// The port of every Service the CLI creates for a managed version; it forwards to the
/// container's `spec.port`.
pub const SERVICE_PORT: u16 = 80;

/// Where a version is served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Upstream {
    /// Host name or IP address to connect to.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Whether to speak TLS (an `https` endpoint).
    pub tls: bool,
    /// Path prepended to every request (an endpoint URL's path, without the trailing `/`).
    #[serde(skip_serializing_if = "str::is_empty")]
    pub base_path: String,
    /// Whether this is a managed version's Service (else an external endpoint).
    pub managed: bool,
}

impl Upstream {
    /// `host:port`, with IPv6 addresses in brackets.
    pub fn address(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// One version of a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Backend {
    /// The version.
    pub version: String,
    /// Its share, in ppm.
    pub weight: u32,
    /// Where it is served.
    pub upstream: Upstream,
    /// The value of `x-switchyard-served-by` for its responses: `<function>@<version>`.
    pub served_by: String,
}

/// Which request key keeps a client on one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AffinityKey {
    /// A request header, lowercase.
    Header(String),
    /// A cookie name.
    Cookie(String),
}

/// Why one Function cannot be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("function {function}: {}{source}", version.as_ref().map(|v| format!("version {v}: ")).unwrap_or_default())]
pub struct RouteError {
    /// `namespace/name` of the Function.
    pub function: String,
    /// The version at fault, when it is a version rather than the Function's own spec.
    pub version: Option<String>,
    /// What is wrong.
    pub source: Box<ValidationError>,
}

/// One function's routing: its match and its versions with their intervals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Namespace of the Function.
    pub namespace: String,
    /// Name of the Function.
    pub name: String,
    /// `metadata.generation` of the Function this route was built from.
    pub generation: i64,
    /// Hosts, lowercase; empty means any host.
    pub hosts: Vec<String>,
    /// Path prefix, without a trailing `/` (except the root `/`).
    pub prefix: String,
    /// Whether the prefix is removed upstream.
    pub strip_prefix: bool,
    /// Every version of the function, in ascending semver order (the stable interval order).
    pub backends: Vec<Backend>,
    /// Tag name → index into `backends`.
    pub tags: Vec<(String, usize)>,
    /// The affinity key, if any.
    pub affinity: Option<AffinityKey>,
    /// Whether `x-switchyard-version` may choose the version.
    pub pinning: bool,
    /// Upper ends of the versions' intervals, in `backends` order.
    #[serde(skip)]
    bounds: Vec<u32>,
    /// Each version's rendezvous seed: the hash of its name, so that a key's costs do not
    /// depend on which other versions exist.
    #[serde(skip)]
    seeds: Vec<u64>,
}

/// The `n`-th roll of a function's request sequence: a point in `[0, 1_000_000)`.
///
/// Consecutive rolls walk the range by the golden ratio (a Weyl sequence in 32-bit fixed
/// point), the one-dimensional sequence with the lowest discrepancy: any window of `n`
/// consecutive rolls falls into an interval of width `w` ppm `n * w / 1e6` times, within about
/// two hits for windows of thousands of requests. No coin is flipped per request, so a 0.1%
/// canary gets 10 of 10,000 requests, not 0 or 30.
pub fn roll(n: u64) -> u32 {
    const GOLDEN: u64 = 2_654_435_769; // 2^32 / golden ratio, odd
    let point = n.wrapping_mul(GOLDEN) & 0xffff_ffff;
    ((point * u64::from(TOTAL_PPM)) >> 32) as u32
}

/// The bit that marks an [`affinity_point`]: every roll is below 1,000,000 < 2^31, so a point
/// with this bit set can only be a key's, and [`Route::pick`] places it by rendezvous.
pub const AFFINITY_BIT: u32 = 1 << 31;

/// 64 bits of FNV-1a, then a 64-bit finalizer: stable across processes, platforms and
/// releases, as every router replica must place a key alike.
fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

/// The 64-bit finalizer of MurmurHash3: every input bit flips each output bit with
/// probability about one half.
fn mix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// The point of an affinity key: 31 bits of its hash with [`AFFINITY_BIT`] set. Stable across
/// processes, platforms and releases. [`Route::pick`] places it by weighted rendezvous, and
/// [`Route::failover`] takes it modulo 1,000,000 like a roll.
pub fn affinity_point(key: &[u8]) -> u32 {
    ((hash64(key) >> 33) as u32) | AFFINITY_BIT
}

/// Fixed-point scale of a rendezvous cost: 38 fractional bits. A cost is below 38 (the
/// uniform draw is at least 2^-53), so cost × weight stays below 2^44 × 2^20 = 2^64.
const COST_SCALE: f64 = (1u64 << 38) as f64;

/// A version's cost for an affinity point: an exponentially distributed draw, `-ln(u)` of a
/// uniform `u` in `(0, 1)` from the point and the version's name, in fixed point so that
/// comparing cost ÷ weight between versions is exact integer arithmetic.
fn rendezvous_cost(point: u32, seed: u64) -> u64 {
    let u = mix64(seed ^ u64::from(point).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    // 53 random bits, odd: exactly representable, never 0 or 1.
    let x = ((u >> 11) | 1) as f64 * (1.0 / (1u64 << 53) as f64);
    (-ln(x) * COST_SCALE) as u64
}

/// The natural logarithm of `x` in `(0, 1]`, from IEEE-754's correctly rounded basic
/// operations only: the platform's `ln` may differ in the last bit between machines, and two
/// router replicas must place a key alike. Relative error below 1e-13.
fn ln(x: f64) -> f64 {
    use std::f64::consts::{LN_2, SQRT_2};
    let bits = x.to_bits();
    let mut exponent = ((bits >> 52) & 0x7ff) as i64 - 1023;
    // x = m · 2^exponent with m in [1, 2), then moved to [√½, √2) so the series below is short.
    let mut m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    if m > SQRT_2 {
        m *= 0.5;
        exponent += 1;
    }
    // ln m = 2 atanh(s) = 2 (s + s³/3 + s⁵/5 + …) with |s| ≤ 0.172: eight terms suffice.
    let s = (m - 1.0) / (m + 1.0);
    let z = s * s;
    let series = 1.0
        + z * (1.0 / 3.0
            + z * (1.0 / 5.0
                + z * (1.0 / 7.0
                    + z * (1.0 / 9.0 + z * (1.0 / 11.0 + z * (1.0 / 13.0 + z * (1.0 / 15.0)))))));
    exponent as f64 * LN_2 + 2.0 * s * series
}

fn normalize_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    }
}

impl Route {
    /// Builds the route of `function` from the FunctionVersions of the same namespace
    /// (`versions` may hold other functions' versions too: they are ignored).
    pub fn build<'a>(
        function: &Function,
        versions: impl IntoIterator<Item = &'a FunctionVersion>,
        opts: &BuildOptions,
    ) -> Result<Route, RouteError> {
        let namespace = function.metadata.namespace.clone().unwrap_or_default();
        let name = function.metadata.name.clone().unwrap_or_default();
        let spec = &function.spec;
        let mut mine: Vec<(semver::Version, &FunctionVersion)> = versions
            .into_iter()
            .filter(|v| {
                v.spec.function == name
                    && v.metadata.namespace.as_deref().unwrap_or_default() == namespace
            })
            .filter_map(|v| semver::Version::parse(&v.spec.version).ok().map(|p| (p, v)))
            .collect();
        mine.sort_by(|a, b| a.0.cmp(&b.0));
        mine.dedup_by(|a, b| a.1.spec.version == b.1.spec.version);

        let invalid = |source| RouteError {
            function: format!("{namespace}/{name}"),
            version: None,
            source: Box::new(source),
        };
        validate::function(
            &name,
            spec,
            mine.iter().map(|(_, v)| v.spec.version.as_str()),
        )
        .map_err(invalid)?;

        let referenced = |version: &str| {
            spec.traffic.iter().any(|t| t.version == version)
                || spec.tags.iter().any(|t| t.version == version)
        };
        let mut backends = Vec::with_capacity(mine.len());
        for (_, fv) in &mine {
            let version = &fv.spec.version;
            let upstream = match upstream(fv, &namespace, opts) {
                Ok(u) => u,
                // A broken version nobody routes to must not take the function down.
                Err(_) if !referenced(version) => continue,
                Err(source) => {
                    return Err(RouteError {
                        function: format!("{namespace}/{name}"),
                        version: Some(version.clone()),
                        source: Box::new(source),
                    })
                }
            };
            backends.push(Backend {
                version: version.clone(),
                weight: spec.weight_of(version),
                upstream,
                served_by: format!("{name}@{version}"),
            });
        }
        let mut acc = 0;
        let bounds = backends
            .iter()
            .map(|b| {
                acc += b.weight;
                acc
            })
            .collect();
        let seeds = backends
            .iter()
            .map(|b| hash64(b.version.as_bytes()))
            .collect();
        let index = |v: &str| backends.iter().position(|b| b.version == v);
        let tags = spec
            .tags
            .iter()
            .filter_map(|t| index(&t.version).map(|i| (t.tag.clone(), i)))
            .collect();
        let affinity = spec
            .affinity
            .as_ref()
            .and_then(|a| match (&a.header, &a.cookie) {
                (Some(h), _) => Some(AffinityKey::Header(h.to_ascii_lowercase())),
                (None, Some(c)) => Some(AffinityKey::Cookie(c.clone())),
                (None, None) => None,
            });
        Ok(Route {
            generation: function.metadata.generation.unwrap_or_default(),
            hosts: spec.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            prefix: normalize_prefix(&spec.effective_prefix(&name)),
            strip_prefix: spec.strip_prefix,
            backends,
            tags,
            affinity,
            pinning: spec.pinning,
            bounds,
            seeds,
            namespace,
            name,
        })
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The backend for `point`, never a weight-0 one.
    ///
    /// A roll (any point without [`AFFINITY_BIT`], taken modulo 1,000,000) falls in a
    /// version's interval: rolls `0..1_000_000` give each version exactly its weight. An
    /// [`affinity_point`] goes to the version whose rendezvous cost for it, divided by its
    /// weight, is least (ties to the older version). The division is compared exactly, by
    /// cross-multiplying integers, so that a key moves from version `a` to version `b` only
    /// when `b`'s weight grew by a larger factor than `a`'s. Allocates nothing.
    pub fn pick(&self, point: u32) -> usize {
        if point & AFFINITY_BIT != 0 {
            return self.rendezvous(point);
        }
        let point = point % TOTAL_PPM;
        // Weights sum to TOTAL_PPM (validated), so some bound is above any point.
        self.bounds
            .iter()
            .position(|&upper| point < upper)
            .unwrap_or(self.bounds.len().saturating_sub(1))
    }

    /// The backend for an affinity key: `pick(affinity_point(key))`.
    pub fn pick_for_key(&self, key: &[u8]) -> usize {
        self.pick(affinity_point(key))
    }

    // Kept out of line so that the weighted pick, which every request without a key takes,
    // stays a few instructions that inline into the caller.
    #[inline(never)]
    fn rendezvous(&self, point: u32) -> usize {
        // The cheapest so far: (index, cost, weight). `cost / weight < best_cost / best_weight`
        // is tested as `cost * best_weight < best_cost * weight`: below 2^64 (see COST_SCALE).
        let mut best: Option<(usize, u64, u64)> = None;
        for (i, (b, &seed)) in self.backends.iter().zip(&self.seeds).enumerate() {
            if b.weight == 0 {
                continue;
            }
            let (cost, weight) = (rendezvous_cost(point, seed), u64::from(b.weight));
            match best {
                Some((_, best_cost, best_weight)) if cost * best_weight >= best_cost * weight => {}
                _ => best = Some((i, cost, weight)),
            }
        }
        best.map_or(self.backends.len().saturating_sub(1), |(i, _, _)| i)
    }

    /// Another backend with weight, for a retry after `failed` could not be reached, chosen in
    /// proportion to the remaining weights; `None` when no other version has weight.
    pub fn failover(&self, failed: usize, roll: u32) -> Option<usize> {
        let failed_weight = self.backends.get(failed).map_or(0, |b| b.weight);
        let rest = TOTAL_PPM - failed_weight;
        if rest == 0 {
            return None;
        }
        let mut point =
            ((u64::from(roll % TOTAL_PPM) * u64::from(rest)) / u64::from(TOTAL_PPM)) as u32;
        for (i, b) in self.backends.iter().enumerate() {
            if i == failed || b.weight == 0 {
                continue;
            }
            if point < b.weight {
                return Some(i);
            }
            point -= b.weight;
        }
        None
    }

    /// The backend a pin names: a version of this function, or one of its tags.
    pub fn pin(&self, name: &str) -> Option<usize> {
        self.backends
            .iter()
            .position(|b| b.version == name)
            .or_else(|| self.tags.iter().find(|(t, _)| t == name).map(|(_, i)| *i))
    }

    /// Whether `path` falls under this route's prefix, on a segment boundary.
    pub fn matches_path(&self, path: &str) -> bool {
        prefix_matches(&self.prefix, path)
    }

    /// The path to send upstream: the prefix removed if `strip_prefix`, never empty.
    pub fn upstream_path<'p>(&self, path: &'p str) -> &'p str {
        if !self.strip_prefix || self.prefix == "/" {
            return path;
        }
        match path.get(self.prefix.len()..) {
            Some(rest) if rest.starts_with('/') => rest,
            _ => "/",
        }
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || (path.starts_with(prefix)
            && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/')))
}

fn upstream(
    fv: &FunctionVersion,
    namespace: &str,
    opts: &BuildOptions,
) -> Result<Upstream, ValidationError> {
    validate::function_version(&fv.spec)?;
    if let Some(endpoint) = &fv.spec.endpoint {
        let url = validate::endpoint(endpoint)?;
        let tls = url.scheme() == "https";
        let host = url
            .host_str()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_string();
        return Ok(Upstream {
            host,
            port: url
                .port_or_known_default()
                .unwrap_or(if tls { 443 } else { 80 }),
            tls,
            base_path: url.path().trim_end_matches('/').to_string(),
            managed: false,
        });
    }
    Ok(Upstream {
        host: format!(
            "{}.{}.svc.{}",
            crate::object_name(&fv.spec.function, &fv.spec.version),
            namespace,
            opts.cluster_domain
        ),
        port: SERVICE_PORT,
        tls: false,
        base_path: String::new(),
        managed: true,
    })
}

/// Why a set of routes cannot form one table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// One function cannot be routed.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// Two functions claim the same host and prefix.
    #[error("functions {first} and {second} both claim host {host} with path prefix {prefix}")]
    Conflict {
        /// The host (`*` for any host).
        host: String,
        /// The prefix.
        prefix: String,
        /// The function already holding it.
        first: String,
        /// The function that also wants it.
        second: String,
    },
}

type PrefixMap = CowMap<String, Arc<Route>>;

/// Where a route claims its prefix: which host map.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope<'a> {
    /// A route without hosts: any host.
    Any,
    /// One host.
    Exact(&'a str),
    /// `*.example.com`, stored as `.example.com`.
    Wildcard(&'a str),
}

impl Scope<'_> {
    fn host(&self) -> String {
        match self {
            Scope::Any => "*".to_string(),
            Scope::Exact(h) => h.to_string(),
            Scope::Wildcard(suffix) => format!("*{suffix}"),
        }
    }
}

/// The host maps a route claims its prefix in (a host listed twice claims once).
fn scopes(route: &Route) -> Vec<Scope<'_>> {
    if route.hosts.is_empty() {
        return vec![Scope::Any];
    }
    let mut out: Vec<Scope<'_>> = Vec::with_capacity(route.hosts.len());
    for host in &route.hosts {
        let scope = match host.strip_prefix('*') {
            Some(suffix) => Scope::Wildcard(suffix),
            None => Scope::Exact(host),
        };
        if !out.contains(&scope) {
            out.push(scope);
        }
    }
    out
}

fn same_function(a: &Route, b: &Route) -> bool {
    a.name == b.name && a.namespace == b.namespace
}

/// Every route, indexed for lookup by host and longest path prefix.
///
/// Cloning a table is cheap (its maps share their entries), and [`RoutingTable::insert`] and
/// [`RoutingTable::remove`] change one route: a router keeps the table it serves, clones it,
/// changes the clone, and swaps that in, at a cost that does not grow with the number of
/// routes.
#[derive(Debug, Clone, Default)]
pub struct RoutingTable {
    /// By `namespace/name`.
    routes: CowMap<String, Arc<Route>>,
    exact: CowMap<String, Arc<PrefixMap>>,
    /// `*.example.com` is stored as `.example.com`.
    wildcard: CowMap<String, Arc<PrefixMap>>,
    any_host: PrefixMap,
}

impl RoutingTable {
    /// A table with no route: every request is a 404.
    pub fn empty() -> Self {
        RoutingTable::default()
    }

    /// Builds every Function's route and indexes them; the first invalid Function or conflict
    /// fails the whole build.
    pub fn build(
        functions: &[Function],
        versions: &[FunctionVersion],
        opts: &BuildOptions,
    ) -> Result<Self, TableError> {
        let mut by_function: FxHashMap<(&str, &str), Vec<&FunctionVersion>> = FxHashMap::default();
        for v in versions {
            let ns = v.metadata.namespace.as_deref().unwrap_or_default();
            by_function
                .entry((ns, v.spec.function.as_str()))
                .or_default()
                .push(v);
        }
        let routes = functions
            .iter()
            .map(|f| {
                let key = (
                    f.metadata.namespace.as_deref().unwrap_or_default(),
                    f.metadata.name.as_deref().unwrap_or_default(),
                );
                let vs = by_function.get(&key).map(Vec::as_slice).unwrap_or_default();
                Route::build(f, vs.iter().copied(), opts).map(Arc::new)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_routes(routes)
    }

    /// Indexes routes that are already built, in namespace and name order; fails when two
    /// claim the same host and prefix (the first in that order is named first).
    pub fn from_routes(routes: impl IntoIterator<Item = Arc<Route>>) -> Result<Self, TableError> {
        let mut routes: Vec<Arc<Route>> = routes.into_iter().collect();
        routes.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut table = RoutingTable::default();
        for route in routes {
            table.insert(route)?;
        }
        Ok(table)
    }

    /// Adds `route`, or replaces the route of the same function; returns the route replaced.
    /// Fails, leaving the table as it was, when another function holds one of its host and
    /// prefix claims. The cost depends on the route's hosts, not on the table's size.
    pub fn insert(&mut self, route: Arc<Route>) -> Result<Option<Arc<Route>>, TableError> {
        let claims = scopes(&route);
        for &scope in &claims {
            if let Some(holder) = self.prefixes(scope).and_then(|m| m.get(&route.prefix)) {
                if !same_function(holder, &route) {
                    return Err(TableError::Conflict {
                        host: scope.host(),
                        prefix: route.prefix.clone(),
                        first: holder.key(),
                        second: route.key(),
                    });
                }
            }
        }
        let old = self.routes.insert(route.key(), Arc::clone(&route));
        if let Some(old) = &old {
            self.unclaim(old);
        }
        for scope in claims {
            self.change_prefixes(scope, |m| {
                m.insert(route.prefix.clone(), Arc::clone(&route));
            });
        }
        Ok(old)
    }

    /// Removes the route of function `key` (`namespace/name`); returns it.
    pub fn remove(&mut self, key: &str) -> Option<Arc<Route>> {
        let old = self.routes.remove(key)?;
        self.unclaim(&old);
        Some(old)
    }

    /// The route of function `key` (`namespace/name`).
    pub fn get(&self, key: &str) -> Option<&Arc<Route>> {
        self.routes.get(key)
    }

    /// How many routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether there is no route.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Every route, ordered by namespace and name (sorted on each call: for `/routes`, tests
    /// and snapshots, not for the request path).
    pub fn routes(&self) -> Vec<Arc<Route>> {
        let mut routes: Vec<Arc<Route>> = self.routes.values().cloned().collect();
        routes.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        routes
    }

    fn prefixes(&self, scope: Scope<'_>) -> Option<&PrefixMap> {
        match scope {
            Scope::Any => Some(&self.any_host),
            Scope::Exact(host) => self.exact.get(host).map(Arc::as_ref),
            Scope::Wildcard(suffix) => self.wildcard.get(suffix).map(Arc::as_ref),
        }
    }

    /// Changes the prefix map of `scope`, creating it if needed and dropping it once empty.
    fn change_prefixes(&mut self, scope: Scope<'_>, change: impl FnOnce(&mut PrefixMap)) {
        let (hosts, host) = match scope {
            Scope::Any => return change(&mut self.any_host),
            Scope::Exact(host) => (&mut self.exact, host),
            Scope::Wildcard(suffix) => (&mut self.wildcard, suffix),
        };
        // Cloning a prefix map shares its shards: the change below copies one of them.
        let mut map: PrefixMap = hosts.get(host).map(|m| (**m).clone()).unwrap_or_default();
        change(&mut map);
        if map.is_empty() {
            hosts.remove(host);
        } else {
            hosts.insert(host.to_string(), Arc::new(map));
        }
    }

    /// Releases the claims `route` holds (those another route took over stay).
    fn unclaim(&mut self, route: &Arc<Route>) {
        for scope in scopes(route) {
            let held = self
                .prefixes(scope)
                .and_then(|m| m.get(&route.prefix))
                .is_some_and(|holder| Arc::ptr_eq(holder, route));
            if held {
                self.change_prefixes(scope, |m| {
                    m.remove(&route.prefix);
                });
            }
        }
    }

    /// The route for a request: by host (exact, then wildcard from the longest suffix, then
    /// routes for any host), then by the longest prefix of `path` on a segment boundary.
    /// `host` may carry a port.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&Arc<Route>> {
        let host = strip_port(host);
        let lower;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = host.to_ascii_lowercase();
            lower.as_str()
        } else {
            host
        };
        if let Some(found) = self.exact.get(host).and_then(|m| longest_prefix(m, path)) {
            return Some(found);
        }
        if !self.wildcard.is_empty() {
            // `.example.com` matches `a.example.com` and `a.b.example.com`, not `.example.com`:
            // try each suffix that starts at a dot after the first character, longest first.
            for (i, b) in host.bytes().enumerate().skip(1) {
                if b != b'.' {
                    continue;
                }
                if let Some(found) = self
                    .wildcard
                    .get(&host[i..])
                    .and_then(|m| longest_prefix(m, path))
                {
                    return Some(found);
                }
            }
        }
        longest_prefix(&self.any_host, path)
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [::1]:8080
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// The longest prefix of `path` (on a `/` boundary) present in `map`: tries the whole path,
/// then each shorter segment boundary, then `/`. Cost: one hash lookup per path segment.
fn longest_prefix<'m>(map: &'m PrefixMap, path: &str) -> Option<&'m Arc<Route>> {
    if map.is_empty() {
        return None;
    }
    let path = if path.is_empty() { "/" } else { path };
    let mut end = path.len();
    loop {
        let candidate = path[..end].trim_end_matches('/');
        let candidate = if candidate.is_empty() { "/" } else { candidate };
        if let Some(found) = map.get(candidate) {
            return Some(found);
        }
        if candidate == "/" {
            return None;
        }
        end = candidate.rfind('/').unwrap_or(0);
        if end == 0 {
            return map.get("/");
        }
    }
}

#[cfg(test)]
mod tests;
