//! The automated canary end to end (issue 15, docs/protocol.md "The deciding replica"): real
//! router processes judging live traffic to real upstreams on 127.0.0.1, against the real API
//! server. Rollouts are started the way `switchyard canary` starts them (`rollout::start`,
//! written with the resourceVersion read); every wait is on the Function's status or history.

mod kubernetes;
mod outage;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, PostParams};
use kube::Client;
use switchyard_core::numbers::Reading;
use switchyard_core::plan::VersionState;
use switchyard_core::report::RouterReport;
use switchyard_core::resources::{RolloutPhase, RolloutSpec, RolloutStatus};
use switchyard_core::rollout::{self, By, Outcome};
use switchyard_core::Function;
use switchyard_tests::router::{apply_function, apply_version};
use switchyard_tests::{wait_until, HttpClient};

/// How long a rollout may take in these tests before one fails.
const ROLLOUT_WAIT: Duration = Duration::from_secs(120);

/// An upstream on 127.0.0.1 that answers `label`, with `500` to every `fail_every`-th request
/// (none when 0), each answer after `delay`. Keeps connections alive; one thread each.
pub struct Faulty {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Faulty {
    /// Starts one.
    pub fn start(label: &str, fail_every: u64, delay: Duration) -> Faulty {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding an upstream");
        let addr = listener.local_addr().expect("address");
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let (s, label) = (Arc::clone(&stop), label.to_string());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (s, served, label) = (Arc::clone(&s), Arc::clone(&served), label.clone());
                std::thread::spawn(move || serve(conn, &label, fail_every, delay, &served, &s));
            }
        });
        Faulty { addr, stop }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Faulty {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(100));
    }
}

fn serve(
    conn: TcpStream,
    label: &str,
    fail_every: u64,
    delay: Duration,
    served: &AtomicU64,
    stop: &AtomicBool,
) {
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    while switchyard_tests::router::read_head(&mut reader) {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let n = served.fetch_add(1, Ordering::Relaxed) + 1;
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let status = if fail_every > 0 && n.is_multiple_of(fail_every) {
            "500 Internal Server Error"
        } else {
            "200 OK"
        };
        let reply = format!(
            "HTTP/1.1 {status}\r\nx-upstream: {label}\r\ncontent-length: {}\r\n\r\n{label}",
            label.len()
        );
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// Live traffic: one thread per router sending `GET /<function>` on a keep-alive connection
/// until stopped (or until its router is gone), counting answers by
/// `x-switchyard-served-by` and keeping the order of the last ones.
pub struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// What the load has seen.
#[derive(Default, Debug, Clone)]
pub struct Seen {
    /// Answers per `x-switchyard-served-by` (or `status <code>` without it).
    pub by: HashMap<String, u64>,
    /// Answers with status >= 500.
    pub failed: u64,
    /// Every answer's served-by, in order, across threads.
    pub order: Vec<String>,
}

impl Load {
    /// Starts sending to each of `routers`.
    pub fn start(routers: &[SocketAddr], function: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let threads = routers
            .iter()
            .map(|&addr| {
                let (stop, seen) = (Arc::clone(&stop), Arc::clone(&seen));
                let path = format!("/{function}");
                std::thread::spawn(move || {
                    let mut client = HttpClient::new(addr);
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(r) = client.get("localhost", &path, &[]) else {
                            return;
                        };
                        let by = match r.header("x-switchyard-served-by") {
                            "" => format!("status {}", r.status),
                            by => by.to_string(),
                        };
                        let mut s = seen.lock().expect("the load's counts");
                        if r.status >= 500 {
                            s.failed += 1;
                        }
                        *s.by.entry(by.clone()).or_default() += 1;
                        s.order.push(by);
                    }
                })
            })
            .collect();
        Load {
            stop,
            seen,
            threads,
        }
    }

    /// What it has seen so far.
    pub fn seen(&self) -> Seen {
        self.seen.lock().expect("the load's counts").clone()
    }

    /// How many answers so far.
    pub fn answers(&self) -> usize {
        self.seen.lock().expect("the load's counts").order.len()
    }

    /// Stops it; what it saw.
    pub fn stop(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.seen()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Each replica's latest reading, from the RouterReports in `ns` (as the CLI takes them).
pub async fn readings(client: &Client, ns: &str) -> BTreeMap<String, Reading> {
    let reports: Api<RouterReport> = Api::namespaced(client.clone(), ns);
    let list = reports
        .list(&Default::default())
        .await
        .expect("listing reports");
    list.items
        .into_iter()
        .filter_map(|r| r.status)
        .map(|s| {
            let reading = match &s.numbers {
                Some(n) => Reading::of_totals(&s.started_at, n),
                None => Reading {
                    started_at: s.started_at.clone(),
                    totals: BTreeMap::new(),
                },
            };
            (s.replica.clone(), reading)
        })
        .collect()
}

/// A plan of `canary` against `baseline` for tests: steps 1, 5, 25, 50, 100 %, held `hold`,
/// `min` requests a side, +1 pp of errors and +50 ms of p99 allowed.
/// A namespace named after `prefix` with Function `hello` on the baseline 1.2.0 (100%, served
/// by the returned upstream, its stable version) and the canary 1.3.0 deployed at 0%, served by
/// `canary`.
pub async fn two_versions(
    prefix: &str,
    canary: &Faulty,
) -> (Client, String, switchyard_tests::Upstream) {
    let client = switchyard_tests::client().await;
    let ns = switchyard_tests::namespace(&client, prefix).await;
    let baseline = switchyard_tests::Upstream::start("1.2.0");
    apply_version(&client, &ns, "hello", "1.2.0", &baseline.url()).await;
    apply_version(&client, &ns, "hello", "1.3.0", &canary.url()).await;
    apply_function(
        &client,
        &ns,
        "hello",
        &[("1.2.0", switchyard_core::TOTAL_PPM), ("1.3.0", 0)],
        serde_json::json!({"stable": "1.2.0"}),
    )
    .await;
    (client, ns, baseline)
}

pub fn plan(canary: &str, baseline: &str, hold: &str, min: u64) -> RolloutSpec {
    let mut spec = RolloutSpec::with_defaults(canary, baseline);
    spec.hold = hold.to_string();
    spec.min_requests = min;
    spec.max_wait = Some("2m".to_string());
    spec
}

/// Starts a rollout on Function `name` as `switchyard canary` does: `rollout::start` on what
/// was read, the readings of the replicas' reports, one conditional replace.
pub async fn start_rollout(client: &Client, ns: &str, name: &str, spec: &RolloutSpec) -> Function {
    let api: Api<Function> = Api::namespaced(client.clone(), ns);
    let f = api.get(name).await.expect("reading the Function");
    let versions: Vec<VersionState> = [&spec.canary, &spec.baseline]
        .iter()
        .map(|v| VersionState {
            version: v.to_string(),
            ready: true,
        })
        .collect();
    let by = By {
        now: k8s_openapi::jiff::Timestamp::now(),
        actor: "tester",
        reason: None,
    };
    let now = readings(client, ns).await;
    let next = match rollout::start(&f, spec, &versions, false, by, &now).expect("a valid start") {
        Outcome::Write(next) => *next,
        Outcome::Unchanged(why) => panic!("{why}"),
    };
    api.replace(name, &PostParams::default(), &next)
        .await
        .expect("starting the rollout")
}

/// The rollout's status on Function `name`, once `done` says so.
pub async fn wait_rollout(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    done: impl Fn(&RolloutStatus) -> bool,
) -> Function {
    let api: Api<Function> = Api::namespaced(client.clone(), ns);
    let done = &done;
    wait_until(ROLLOUT_WAIT, what, || {
        let api = api.clone();
        async move {
            let f = api.get(name).await.ok()?;
            let s = f.status.as_ref()?.rollout.as_ref()?;
            done(s).then_some(f)
        }
    })
    .await
}

/// The rollout's status.
pub fn status(f: &Function) -> &RolloutStatus {
    f.status
        .as_ref()
        .and_then(|s| s.rollout.as_ref())
        .expect("a rollout status")
}

/// Whether the rollout is over with `phase`.
pub fn ended(phase: RolloutPhase) -> impl Fn(&RolloutStatus) -> bool {
    move |s| s.phase == phase || (s.phase.finished() && phase != s.phase && panic_on(s, phase))
}

/// A rollout that ended otherwise than expected fails the test at once, with its reason.
fn panic_on(s: &RolloutStatus, expected: RolloutPhase) -> bool {
    panic!(
        "the rollout ended {} instead of {expected}: {:?} by {}",
        s.phase, s.reason, s.actor
    )
}

/// The reasons of the canary entries of the history, in order.
/// The Function once its rollout succeeded, its canary history and the step of each entry
/// (`started 1/5`, `advanced 2/5`, …, `promoted`: each reason up to its first colon).
pub async fn wait_promoted(
    client: &kube::Client,
    ns: &str,
) -> (Function, Vec<(String, String)>, Vec<String>) {
    let f = wait_rollout(
        client,
        ns,
        "hello",
        "the promotion",
        ended(RolloutPhase::Succeeded),
    )
    .await;
    let history = canary_history(&f);
    let steps = history
        .iter()
        .map(|(_, reason)| reason.split(':').next().unwrap_or_default().to_string())
        .collect();
    (f, history, steps)
}

pub fn canary_history(f: &Function) -> Vec<(String, String)> {
    f.spec
        .history
        .iter()
        .filter(|h| h.action == switchyard_core::resources::Action::Canary)
        .map(|h| (h.actor.clone(), h.reason.clone().unwrap_or_default()))
        .collect()
}
