//! Shared helpers of the `cli_*` tests: run the real `switchyard` binary against the test API
//! server and simulate router replicas that follow docs/protocol.md (a Lease and a
//! RouterReport each). Managed versions become ready through the real controllers and kwok
//! (scripts/testenv), never by writing a Deployment's status by hand.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::{binary, kubeconfig_path};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::Client;
use serde_json::json;
use switchyard_core::Function;

/// What one run of the binary did.
#[derive(Debug)]
pub struct Out {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Out {
    /// Panics with the whole output unless the exit code is `code`.
    pub fn expect(self, code: i32) -> Out {
        assert_eq!(self.code, code, "expected exit {code}, got {self:#?}");
        self
    }
}

/// The binary, pointed at one namespace of the test API server.
#[derive(Clone)]
pub struct Cli {
    /// The namespace.
    pub ns: String,
    kubeconfig: PathBuf,
}

impl Cli {
    /// As the admin user.
    pub fn new(ns: &str) -> Cli {
        Cli::with_kubeconfig(ns, &kubeconfig_path())
    }

    /// As the user of another kubeconfig.
    pub fn with_kubeconfig(ns: &str, kubeconfig: &Path) -> Cli {
        Cli {
            ns: ns.to_string(),
            kubeconfig: kubeconfig.to_path_buf(),
        }
    }

    /// Runs `switchyard --kubeconfig … -n NS args…` and collects its output.
    pub async fn run(&self, args: &[&str]) -> Out {
        let out = tokio::process::Command::new(binary("switchyard"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("-n")
            .arg(&self.ns)
            .args(args)
            .env_remove("KUBECONFIG")
            .output()
            .await
            .expect("running switchyard");
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs and expects exit 0.
    pub async fn ok(&self, args: &[&str]) -> Out {
        self.run(args).await.expect(0)
    }
}

/// The Function as the API server holds it.
pub async fn function(client: &Client, ns: &str, name: &str) -> Function {
    Api::<Function>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .expect("reading the Function")
}

/// A simulated router replica: renews its Lease and reports that it has read and served every
/// Function of its namespace (its report's `applied` follows the Functions' list), as
/// docs/protocol.md says, until paused or dropped.
pub struct SimRouter {
    /// Replica name.
    pub name: String,
    paused: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl SimRouter {
    /// Starts replica `name` watching (and leasing in) namespace `ns`.
    pub async fn start(client: &Client, ns: &str, name: &str) -> SimRouter {
        let paused = Arc::new(AtomicBool::new(false));
        renew(client, ns, name).await;
        let (client, ns_, name_, p) = (
            client.clone(),
            ns.to_string(),
            name.to_string(),
            paused.clone(),
        );
        let task = tokio::spawn(async move {
            let functions: Api<Function> = Api::namespaced(client.clone(), &ns_);
            let mut renewed = std::time::Instant::now();
            let mut reported: Option<String> = None;
            loop {
                if !p.load(Ordering::Relaxed) {
                    if renewed.elapsed() > Duration::from_secs(3) {
                        renew(&client, &ns_, &name_).await;
                        renewed = std::time::Instant::now();
                    }
                    // The list's resourceVersion covers every Function write before it.
                    let listed = functions
                        .list(&ListParams::default())
                        .await
                        .ok()
                        .and_then(|l| l.metadata.resource_version);
                    if let Some(rv) = listed {
                        if reported.as_ref() != Some(&rv)
                            && write_report(&client, &ns_, &name_, &rv).await
                        {
                            reported = Some(rv);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        SimRouter {
            name: name.to_string(),
            paused,
            task,
        }
    }

    /// Freezes the replica (as SIGSTOP would): no more acks, no more renewals, the Lease
    /// stays fresh until it expires.
    pub fn pause(&self) {
        self.paused.store(true, Ordering::Relaxed);
    }

    /// Lets a paused replica carry on (as SIGCONT would).
    pub fn resume(&self) {
        self.paused.store(false, Ordering::Relaxed);
    }
}

impl Drop for SimRouter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Takes or renews replica `name`'s Lease in `ns` (watching `ns`) for 10 s, as a router does.
pub async fn renew(client: &Client, ns: &str, name: &str) -> Lease {
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/name": "switchyard-router", "switchyard.dev/router": "true"},
            "annotations": {"switchyard.dev/watch-namespace": ns}
        },
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": 10,
            "renewTime": k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
        }
    });
    Api::<Lease>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::apply("switchyard-sim-router").force(),
            &Patch::Apply(&lease),
        )
        .await
        .expect("renewing the simulated router's Lease")
}

/// Writes replica `replica`'s report, owned by its Lease, saying it has read and served
/// every Function up to resourceVersion `rv`; false when the write failed.
pub async fn write_report(client: &Client, ns: &str, replica: &str, rv: &str) -> bool {
    use switchyard_core::report::{self, AppliedVersions, RouterReportStatus};
    let Ok(lease) = Api::<Lease>::namespaced(client.clone(), ns)
        .get(replica)
        .await
    else {
        return false;
    };
    let status = RouterReportStatus {
        replica: replica.to_string(),
        watch_namespace: ns.to_string(),
        reported_at: switchyard_core::protocol::report_time(k8s_openapi::jiff::Timestamp::now()),
        applied: Some(AppliedVersions {
            functions: rv.to_string(),
            function_versions: rv.to_string(),
        }),
        ..Default::default()
    };
    let body = report::report(ns, &lease.metadata.uid.unwrap_or_default(), status);
    Api::<report::RouterReport>::namespaced(client.clone(), ns)
        .patch(
            replica,
            &PatchParams::apply(&format!("switchyard-router.{replica}")).force(),
            &Patch::Apply(&body),
        )
        .await
        .is_ok()
}

/// A real `switchyard-router` process watching one namespace, on loopback ports.
pub struct RealRouter {
    /// Replica name.
    pub name: String,
    child: std::process::Child,
}

impl RealRouter {
    /// Starts replica `name` watching `ns` and waits until its `/readyz` answers 200.
    pub fn start(ns: &str, name: &str) -> RealRouter {
        let admin: std::net::SocketAddr = format!("127.0.0.1:{}", crate::free_port())
            .parse()
            .expect("addr");
        let child = std::process::Command::new(binary("switchyard-router"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", crate::free_port()))
            .arg("--admin")
            .arg(admin.to_string())
            .args([
                "--namespace",
                ns,
                "--replica-name",
                name,
                "--grace-period",
                "0",
            ])
            .arg("--kubeconfig")
            .arg(kubeconfig_path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting switchyard-router");
        let router = RealRouter {
            name: name.to_string(),
            child,
        };
        crate::wait_until_blocking(Duration::from_secs(30), "router /readyz", || {
            crate::get(admin, "/readyz")
                .ok()
                .filter(|r| r.status == 200)
        });
        router
    }

    /// Freezes the process (SIGSTOP): it neither acknowledges nor renews its Lease.
    pub fn stop(&self) {
        signal(self.child.id(), "-STOP");
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status();
}

impl Drop for RealRouter {
    fn drop(&mut self) {
        signal(self.child.id(), "-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until each named replica holds a Lease in `ns` (a real router renews it from a task
/// of its own, which may run just after `/readyz` answers).
pub async fn wait_for_leases(client: &Client, ns: &str, names: &[&str]) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    for name in names {
        let leases = leases.clone();
        crate::wait_until(Duration::from_secs(30), &format!("Lease {name}"), || {
            let leases = leases.clone();
            async move { leases.get_opt(name).await.ok().flatten() }
        })
        .await;
    }
}

/// Deploys `hello` 1.0.0 and 1.1.0 as external versions (never dialled), without waiting.
pub async fn two_versions(cli: &Cli) {
    cli.ok(&[
        "deploy",
        "hello",
        "1.0.0",
        "--endpoint",
        "http://127.0.0.1:9001",
        "--no-wait",
    ])
    .await;
    cli.ok(&[
        "deploy",
        "hello",
        "1.1.0",
        "--endpoint",
        "http://127.0.0.1:9002",
        "--no-wait",
    ])
    .await;
}

/// The rows of a table the CLI printed (a header line of one-word column names, columns
/// aligned), each as column name → trimmed cell; a cell cut off by a trimmed line is empty.
pub fn table_rows(text: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<char> = lines.next().expect("a header line").chars().collect();
    let starts: Vec<usize> = (0..header.len())
        .filter(|&i| header[i] != ' ' && (i == 0 || header[i - 1] == ' '))
        .collect();
    let cell = |chars: &[char], i: usize| -> String {
        let start = starts[i].min(chars.len());
        let end = starts
            .get(i + 1)
            .map_or(chars.len(), |e| (*e).min(chars.len()));
        chars[start..end]
            .iter()
            .collect::<String>()
            .trim()
            .to_string()
    };
    let names: Vec<String> = (0..starts.len()).map(|i| cell(&header, i)).collect();
    lines
        .map(|l| {
            let chars: Vec<char> = l.chars().collect();
            names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), cell(&chars, i)))
                .collect()
        })
        .collect()
}

/// Runs the real `switchyard` binary against the local store `store` (`--store dir:…`), with
/// no cluster and no `SWITCHYARD_STORE` from the environment to compete with it.
pub fn local(store: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(binary("switchyard"))
        .arg("--store")
        .arg(format!("dir:{}", store.display()))
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("SWITCHYARD_STORE")
        .output()
        .expect("running switchyard")
}
