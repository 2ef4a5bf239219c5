//! The two kinds of the `switchyard.dev/v1alpha1` API: [`Function`] and [`FunctionVersion`].
//!
//! The Rust types are the source of truth: `manifests/crds.yaml` is generated from them (see
//! [`crate::crd`]). Rules the API server must enforce by itself (immutability, weights summing to
//! 1,000,000, no duplicate traffic entry) are CEL rules attached here, so no client can bypass
//! them.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of every Switchyard resource.
pub const GROUP: &str = "switchyard.dev";
/// The API version of every Switchyard resource.
pub const VERSION: &str = "v1alpha1";
/// Label carrying the function name on every object Switchyard creates.
pub const LABEL_FUNCTION: &str = "switchyard.dev/function";
/// Label carrying the version on every object Switchyard creates.
pub const LABEL_VERSION: &str = "switchyard.dev/version";
/// How many traffic states `spec.history` keeps by default.
pub const DEFAULT_HISTORY_LIMIT: usize = 20;
/// The largest number of entries the API server accepts in `spec.traffic` and `spec.tags`.
pub const MAX_TRAFFIC_ENTRIES: usize = 64;
/// The largest number of entries the API server accepts in `spec.history`.
pub const MAX_HISTORY_ENTRIES: usize = 50;

/// One immutable version of one function: either a managed workload (`image`, …) that the CLI
/// runs as a Deployment and a Service, or an external `endpoint` served outside the cluster.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "switchyard.dev",
    version = "v1alpha1",
    kind = "FunctionVersion",
    derive = "PartialEq",
    plural = "functionversions",
    shortname = "fv",
    namespaced,
    printcolumn = r#"{"name":"Function","type":"string","jsonPath":".spec.function"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".spec.version"}"#,
    printcolumn = r#"{"name":"Image","type":"string","jsonPath":".spec.image"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".spec.endpoint"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    // `--field-selector spec.function=NAME`: one function's versions without listing them all.
    selectable = ".spec.function",
    validation = Rule::new("self.spec == oldSelf.spec").message("spec is immutable: versions cannot change, deploy a new version instead").field_path(".spec")
)]
#[x_kube(
    validation = Rule::new("has(self.image) != has(self.endpoint)").message("exactly one of image and endpoint must be set")
)]
#[serde(rename_all = "camelCase")]
pub struct FunctionVersionSpec {
    /// The function this version belongs to (a DNS-1123 label).
    #[schemars(length(min = 1, max = 63))]
    pub function: String,
    /// The version, in semver (`1.2.0`, `2.0.0-rc.1`).
    #[schemars(length(min = 1, max = 128))]
    pub version: String,
    /// Container image of a managed version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub image: Option<String>,
    /// Port the container listens on; default 8080.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// Environment variables of a managed version, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub env: Vec<EnvVar>,
    /// Container arguments of a managed version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(length(max = 4096)))]
    pub args: Vec<String>,
    /// Replicas of a managed version; default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: Option<i32>,
    /// CPU and memory of each replica of a managed version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// URL of an external version (`http://10.1.2.3:8080`), served outside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub endpoint: Option<String>,
}

/// One environment variable.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct EnvVar {
    /// Variable name.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// Variable value.
    #[serde(default)]
    #[schemars(length(max = 4096))]
    pub value: String,
}

/// Requests (and equal limits) of one replica, in Kubernetes quantities.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
pub struct Resources {
    /// CPU, for example `250m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub cpu: Option<String>,
    /// Memory, for example `128Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub memory: Option<String>,
}

/// The route and the traffic split of one function.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "switchyard.dev",
    version = "v1alpha1",
    kind = "Function",
    derive = "PartialEq",
    plural = "functions",
    shortname = "fn",
    namespaced,
    status = "FunctionStatus",
    printcolumn = r#"{"name":"Traffic","type":"string","jsonPath":".metadata.annotations.switchyard\\.dev/traffic","description":"the split in percent, as the switchyard CLI last wrote it (annotation switchyard.dev/traffic; a hand edit of spec.traffic leaves it stale until the next CLI write)"}"#,
    printcolumn = r#"{"name":"Stable","type":"string","jsonPath":".spec.stable","description":"the version rollback returns to"}"#,
    printcolumn = r#"{"name":"Routers","type":"string","jsonPath":".metadata.annotations.switchyard\\.dev/routers","description":"live router replicas serving the current generation, as the switchyard CLI's last write found them (annotation switchyard.dev/routers): pending, 3/3, 2/3 (r2 pending), or unconfirmed"}"#,
    printcolumn = r#"{"name":"Hosts","type":"string","jsonPath":".spec.hosts"}"#,
    printcolumn = r#"{"name":"Path","type":"string","jsonPath":".spec.pathPrefix"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct FunctionSpec {
    /// Host names whose requests belong to this function; empty matches any host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(max = 253)))]
    pub hosts: Vec<String>,
    /// Path prefix of this function's requests; default `/<name>` when no host is given,
    /// `/` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Whether the prefix is removed before the request goes upstream; default false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub strip_prefix: bool,
    /// The split: weights in parts per million, summing to 1,000,000.
    #[x_kube(
        validation = Rule::new("self.map(t, t.weight).sum() == 1000000").message("traffic weights must sum to 1000000 ppm"),
        validation = Rule::new("self.all(t, self.exists_one(u, u.version == t.version))").message("no version may appear twice in traffic"),
    )]
    #[schemars(length(min = 1, max = 64))]
    pub traffic: Vec<TrafficTarget>,
    /// Stable names that pin a version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(t, self.exists_one(u, u.tag == t.tag))").message("no tag may appear twice"))]
    #[schemars(length(max = 64))]
    pub tags: Vec<Tag>,
    /// Keeps requests carrying a key on one version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Whether a request may choose its version with `x-switchyard-version`; default false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub pinning: bool,
    /// The most recent version to have held 100% of the traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<String>,
    /// The most recent version other than `stable` to have held 100% of the traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_stable: Option<String>,
    /// The last traffic states, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub history: Vec<HistoryEntry>,
    /// How long the router waits on this function's requests; each absent field takes the
    /// router's flag of the same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// A version that gets a copy of a share of the live requests; its answers are compared
    /// with the serving version's and dropped (`switchyard shadow`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Boxed: a Function (and every enum that carries one) stays small without a shadow.
    pub shadow: Option<Box<ShadowSpec>>,
    /// An automated canary in flight (`switchyard canary`): the plan the routers judge the
    /// canary by. Present from the start of a rollout until it succeeds, aborts or is ended by
    /// a manual traffic change; its progress is `status.rollout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Boxed like the shadow: most Functions have none.
    pub rollout: Option<Box<RolloutSpec>>,
}

/// How an automated canary is rolled out and judged (docs/canary.md). Durations are written
/// like timeouts (`30s`, `1m30s`, `500ms`); the CLI writes every default explicitly, and an
/// absent limit is not checked.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.canary != self.baseline").message("the canary must not be the baseline"),
    validation = Rule::new("size(self.steps) == 0 || self.steps[0] < 1000000").message("the first step is 100%: nothing would be judged (use promote)"),
    validation = Rule::new("duration(self.hold) > duration('0s') && duration(self.hold) <= duration('24h')").message("hold must be from 1ms to 24h"),
    validation = Rule::new("!has(self.maxWait) || (duration(self.maxWait) >= duration(self.hold) && duration(self.maxWait) <= duration('24h'))").message("maxWait must be at least the hold and at most 24h"),
    validation = Rule::new("!has(self.maxP99Increase) || duration(self.maxP99Increase) <= duration('24h')").message("maxP99Increase must be at most 24h"),
    validation = Rule::new("!has(self.maxP99) || duration(self.maxP99) <= duration('24h')").message("maxP99 must be at most 24h"),
)]
pub struct RolloutSpec {
    /// The version rolled out.
    #[schemars(length(min = 1, max = 128))]
    pub canary: String,
    /// The version it is compared with, and restored on abort.
    #[schemars(length(min = 1, max = 128))]
    pub baseline: String,
    /// The canary's weight at each step, parts per million, strictly increasing in
    /// (0, 1,000,000].
    #[x_kube(
        validation = Rule::new("self.isSorted() && self.all(s, self.exists_one(t, t == s))").message("steps must strictly increase"),
    )]
    #[schemars(length(min = 1, max = 20), inner(range(min = 1, max = 1_000_000)))]
    pub steps: Vec<u32>,
    /// The least time each step is held.
    #[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub hold: String,
    /// Requests the canary and the baseline must each have served in a step before it can
    /// pass (at least 1).
    #[schemars(range(min = 1))]
    pub min_requests: u64,
    /// How long a step may wait for `minRequests` before the rollout pauses; default 10 ×
    /// hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub max_wait: Option<String>,
    /// Percentage points the canary's error rate may exceed the baseline's by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max_error_increase: Option<f64>,
    /// How much the canary's p99 may exceed the baseline's by (a duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub max_p99_increase: Option<String>,
    /// The canary's highest error rate, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub max_error_rate: Option<f64>,
    /// The canary's highest p99 (a duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub max_p99: Option<String>,
}

/// What the API server keeps beside a Function's spec. The CRD has no status subresource:
/// one write carries the traffic, the history and the rollout's progress together.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FunctionStatus {
    /// The latest automated canary, in flight or finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Boxed: a Function (and every event that carries one) stays small without a rollout.
    pub rollout: Option<Box<RolloutStatus>>,
}

/// Where a rollout is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RolloutPhase {
    /// Judged by the routers, step by step.
    Progressing,
    /// Not judged (not enough requests within `maxWait`, or `canary pause`); the weights stay.
    Paused,
    /// The canary holds 100%.
    Succeeded,
    /// A breach (or `canary abort`): the baseline holds 100%, the canary stays deployed at 0%.
    Aborted,
    /// A manual `traffic`, `promote`, `rollback` or `undo` took over the weights.
    Ended,
}

impl RolloutPhase {
    /// Whether the rollout is over (nothing resumes it).
    pub fn finished(self) -> bool {
        matches!(
            self,
            RolloutPhase::Succeeded | RolloutPhase::Aborted | RolloutPhase::Ended
        )
    }
}

impl std::fmt::Display for RolloutPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RolloutPhase::Progressing => "Progressing",
            RolloutPhase::Paused => "Paused",
            RolloutPhase::Succeeded => "Succeeded",
            RolloutPhase::Aborted => "Aborted",
            RolloutPhase::Ended => "Ended",
        })
    }
}

/// The progress of a rollout (`status.rollout`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Where it is.
    pub phase: RolloutPhase,
    /// The live step: an index into the plan's `steps`.
    pub step: u32,
    /// When the rollout started, RFC 3339 with milliseconds.
    pub started_at: String,
    /// When the live step's weight was written (or the step restarted by `resume`), RFC 3339
    /// with milliseconds.
    pub step_started_at: String,
    /// Each live router replica's cumulative counters of the canary and the baseline when the
    /// step began: what the step's counts are measured from.
    #[serde(default)]
    #[schemars(length(max = 1000))]
    pub at_start: Vec<StepReading>,
    /// The last transition's reason, with the figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who made the last transition (`switchyard-router/<replica>` for a router's decision).
    pub actor: String,
    /// When the last transition was written, RFC 3339 with milliseconds.
    pub updated_at: String,
    /// The canary, copied from the plan: the record outlives `spec.rollout`.
    #[serde(default)]
    pub canary: String,
    /// The baseline, copied from the plan.
    #[serde(default)]
    pub baseline: String,
    /// The plan's steps, ppm, copied from the plan.
    #[serde(default)]
    #[schemars(length(max = 20))]
    pub steps: Vec<u32>,
}

/// One replica's cumulative counters of the canary and the baseline at a step's start.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepReading {
    /// The replica.
    pub replica: String,
    /// The epoch of its counters (its report's `startedAt`).
    pub started_at: String,
    /// The canary's counters.
    #[schemars(schema_with = "free_form")]
    pub canary: crate::numbers::Counts,
    /// The baseline's counters.
    #[schemars(schema_with = "free_form")]
    pub baseline: crate::numbers::Counts,
}

/// Counters as the API server keeps them: an object kept as sent (histogram keys are bucket
/// indexes, which a structural schema cannot name).
fn free_form(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// The largest `maxBody` a shadow may ask for: every copy in flight holds up to three bodies of
/// this size (the request, both answers), so the router's memory bound follows from it.
pub const MAX_SHADOW_BODY: u64 = 8 * 1024 * 1024;
/// The `maxBody` of a shadow that sets none: 1 MiB.
pub const DEFAULT_SHADOW_BODY: u64 = 1024 * 1024;

/// Mirrored traffic: which version gets the copies, of which requests, and what the comparison
/// leaves out.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShadowSpec {
    /// The version that gets the copies (it must exist; usually at weight 0).
    #[schemars(length(min = 1, max = 128))]
    pub version: String,
    /// The share of matching requests copied, in parts per million (1 to 1,000,000).
    #[schemars(range(min = 1, max = 1_000_000))]
    pub share: u32,
    /// The methods copied, uppercase; default GET and HEAD.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 32)))]
    pub methods: Vec<String>,
    /// Bodies (request or response) above this many bytes are not compared; default 1 MiB,
    /// at most 8 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 8_388_608))]
    pub max_body: Option<u64>,
    /// Response headers left out of the comparison (hop-by-hop ones always are).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 256)))]
    pub ignore_headers: Vec<String>,
    /// JSON paths left out of the comparison of JSON bodies (`$.ts`, `$.items[*].id`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 2, max = 256)))]
    pub ignore_json: Vec<String>,
}

impl ShadowSpec {
    /// The methods copied: the listed ones, else GET and HEAD.
    pub fn effective_methods(&self) -> Vec<String> {
        if self.methods.is_empty() {
            vec!["GET".to_string(), "HEAD".to_string()]
        } else {
            self.methods.clone()
        }
    }

    /// The body limit in bytes.
    pub fn effective_max_body(&self) -> u64 {
        self.max_body.unwrap_or(DEFAULT_SHADOW_BODY)
    }

    /// The listed methods that are not safe (RFC 9110 §9.2.1): the shadow version executes them.
    pub fn unsafe_methods(&self) -> Vec<String> {
        self.effective_methods()
            .into_iter()
            .filter(|m| !matches!(m.as_str(), "GET" | "HEAD" | "OPTIONS" | "TRACE"))
            .collect()
    }
}

/// Per-function timeouts, each a duration like `500ms`, `30s`, `5m` or `1h30m` (1 ms to 24 h):
/// a function that streams for minutes, or answers slowly, says so here.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// Longest wait for a TCP connection to a version; router default 5s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub connect: Option<String>,
    /// Longest wait for the response head once the request is sent (then 504); router
    /// default 60s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub response_head: Option<String>,
    /// Longest silence of the function inside a response body (the gap between two events of
    /// a stream); router default 60s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub response_idle: Option<String>,
    /// Longest silence of the client inside a request body (then 408); router default 60s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub request_idle: Option<String>,
    /// Longest a write to the client may wait for it to read; router default 60s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub client_write: Option<String>,
    /// Longest both sides of an upgraded connection (a WebSocket) may be silent together;
    /// router default 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub tunnel_idle: Option<String>,
}

impl Timeouts {
    /// Each set field, by its wire name.
    pub fn fields(&self) -> [(&'static str, Option<&str>); 6] {
        [
            ("connect", self.connect.as_deref()),
            ("responseHead", self.response_head.as_deref()),
            ("responseIdle", self.response_idle.as_deref()),
            ("requestIdle", self.request_idle.as_deref()),
            ("clientWrite", self.client_write.as_deref()),
            ("tunnelIdle", self.tunnel_idle.as_deref()),
        ]
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One version's share of a function's traffic.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub struct TrafficTarget {
    /// The version (`spec.version` of a FunctionVersion of this function).
    #[schemars(length(min = 1, max = 128))]
    pub version: String,
    /// Parts per million of the traffic, 0 to 1,000,000.
    #[schemars(range(min = 0, max = 1_000_000))]
    pub weight: u32,
}

impl TrafficTarget {
    /// A target of `weight` parts per million on `version`.
    pub fn new(version: impl Into<String>, weight: u32) -> Self {
        TrafficTarget {
            version: version.into(),
            weight,
        }
    }
}

/// A stable name for a version.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct Tag {
    /// The name (a DNS-1123 label).
    #[schemars(length(min = 1, max = 63))]
    pub tag: String,
    /// The version it names.
    #[schemars(length(min = 1, max = 128))]
    pub version: String,
}

/// Which request key keeps a client on one version. Exactly one of the two is set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.header) != has(self.cookie)").message("affinity takes exactly one of header and cookie"))]
pub struct Affinity {
    /// A request header whose value is the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// A cookie whose value is the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
}

/// What kind of change produced a traffic state.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A deploy created the function or moved traffic to a new version.
    Deploy,
    /// An explicit split.
    Traffic,
    /// All traffic to one version.
    Promote,
    /// All traffic back to the stable version (or a chosen one).
    Rollback,
    /// The previous state restored (or, with `undo --to N`, revision N's).
    Undo,
    /// A tag set or moved (`tag`); the traffic is unchanged.
    Tag,
    /// A tag removed (`untag`); the traffic is unchanged.
    Untag,
    /// Routing settings changed (`set`: hosts, prefix, affinity, pinning); the traffic is
    /// unchanged.
    Set,
    /// A version deployed at 0% (`versions` names it); the traffic is unchanged.
    Added,
    /// A version deleted (`delete`; `versions` names it).
    Delete,
    /// Versions collected (`gc`; `versions` names them).
    Gc,
    /// Mirrored traffic started, changed or stopped (`shadow`); the traffic is unchanged.
    Shadow,
    /// An automated canary's transition: started, advanced, paused, resumed, aborted,
    /// finished, or ended by a manual traffic change. Only the entries that moved traffic
    /// count as traffic states ([`HistoryEntry::moves_traffic`]).
    Canary,
}

impl Action {
    /// Whether the entry records a traffic state `undo` can walk back to (a tag or a setting
    /// changes no traffic, so undo passes over it).
    pub fn moves_traffic(self) -> bool {
        !matches!(
            self,
            Action::Tag
                | Action::Untag
                | Action::Set
                | Action::Added
                | Action::Delete
                | Action::Gc
                | Action::Shadow
        )
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Deploy => "deploy",
            Action::Traffic => "traffic",
            Action::Promote => "promote",
            Action::Rollback => "rollback",
            Action::Undo => "undo",
            Action::Tag => "tag",
            Action::Untag => "untag",
            Action::Set => "set",
            Action::Added => "added",
            Action::Delete => "delete",
            Action::Gc => "gc",
            Action::Shadow => "shadow",
            Action::Canary => "canary",
        })
    }
}

/// One traffic state and who made it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// The entry's number: 1 for a function's first change, +1 for each one after, never
    /// reused when old entries are trimmed (`undo --to N` names it). 0 on entries written
    /// before revisions were numbered.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub revision: u64,
    /// When, in RFC 3339.
    pub time: String,
    /// Who (the kubeconfig user, or the local user name).
    pub actor: String,
    /// What kind of change.
    pub action: Action,
    /// Why, when the actor said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The traffic after the change.
    pub traffic: Vec<TrafficTarget>,
    /// The versions an entry that moves no traffic concerns: the one `added` at 0%, the one
    /// deleted, the ones collected, the canary of a rollout paused, resumed or ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub versions: Vec<String>,
    /// Set on a state that `undo` walked back from; undo never returns to it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub undone: bool,
}

impl HistoryEntry {
    /// Whether the entry records a traffic state `undo` can walk back to: its kind moves
    /// traffic, and a canary's entry only when it changed the split (a pause, a resume or an
    /// ending leaves the split as it was).
    pub fn moves_traffic(&self) -> bool {
        match self.action {
            Action::Canary => self.versions.is_empty(),
            action => action.moves_traffic(),
        }
    }
}

/// The object name of a version's FunctionVersion, Deployment and Service:
/// `<function>-<version with every character outside [a-z0-9] as a dash>`.
///
/// ```
/// assert_eq!(switchyard_core::object_name("hello", "1.3.0"), "hello-1-3-0");
/// assert_eq!(switchyard_core::object_name("hello", "2.0.0-RC.1"), "hello-2-0-0-rc-1");
/// ```
pub fn object_name(function: &str, version: &str) -> String {
    let mut name = String::with_capacity(function.len() + version.len() + 1);
    name.push_str(function);
    name.push('-');
    for c in version.chars() {
        let c = c.to_ascii_lowercase();
        name.push(if c.is_ascii_alphanumeric() { c } else { '-' });
    }
    name
}

impl FunctionSpec {
    /// The path prefix this function answers on: `spec.pathPrefix`, else `/<name>` without hosts
    /// and `/` with hosts.
    pub fn effective_prefix(&self, name: &str) -> String {
        match &self.path_prefix {
            Some(p) => p.clone(),
            None if self.hosts.is_empty() => format!("/{name}"),
            None => "/".to_string(),
        }
    }

    /// The weight of `version`, 0 when it is not in the split.
    pub fn weight_of(&self, version: &str) -> u32 {
        self.traffic
            .iter()
            .find(|t| t.version == version)
            .map_or(0, |t| t.weight)
    }

    /// The version a tag names.
    pub fn tag(&self, tag: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|t| t.tag == tag)
            .map(|t| t.version.as_str())
    }
}
