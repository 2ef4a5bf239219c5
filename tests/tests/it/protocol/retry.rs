//! Transient API errors (issue 13, item 4): a command whose API server restarts under it waits
//! for it, says so on stderr, and succeeds once it is back, instead of exiting 1.
//!
//! The CLI reaches the real test API server through a loopback relay owned by the test. The
//! relay "restarts" the API server: it closes every connection and its listening port (new
//! connections are refused, as while a real API server restarts), then listens again on the
//! same port. Each step waits on a signal: the Deployment the deploy creates, the CLI's own
//! lines on stderr; none on time.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use switchyard_tests::{binary, client, free_port, kubeconfig_path, namespace, wait_until};

/// The test API server's address, from the admin kubeconfig.
fn api_server(kubeconfig: &str) -> SocketAddr {
    kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: https://"))
        .expect("a server in the kubeconfig")
        .trim_end_matches('/')
        .parse()
        .expect("the test API server listens on an IP address")
}

/// A relay on `127.0.0.1:<port>` to the API server that can go down (port closed, every
/// connection dropped) and come back on the same port.
struct Relay {
    port: u16,
    target: SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    async fn up(port: u16, target: SocketAddr) -> Relay {
        let relay = Relay {
            port,
            target,
            tasks: Arc::default(),
        };
        relay.listen().await;
        relay
    }

    async fn listen(&self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("binding the relay's port");
        let (target, tasks) = (self.target, Arc::clone(&self.tasks));
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().expect("relay tasks").push(conn);
            }
        });
        self.tasks.lock().expect("relay tasks").push(accept);
    }

    /// The API server goes away: the port closes and every connection drops.
    fn down(&self) {
        for task in self.tasks.lock().expect("relay tasks").drain(..) {
            task.abort();
        }
    }
}

/// Writes a Deployment's status as its controller would once every replica is available.
async fn mark_ready(deployments: &Api<Deployment>, name: &str) {
    let d = deployments.get(name).await.expect("reading the Deployment");
    let status = json!({"status": {
        "observedGeneration": d.metadata.generation,
        "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
        "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}],
    }});
    deployments
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("marking the Deployment ready");
}

#[tokio::test]
async fn a_deploy_whose_api_server_restarts_while_it_waits_says_so_and_succeeds() {
    let client = client().await;
    let ns = namespace(&client, "retry-restart").await;
    let admin = std::fs::read_to_string(kubeconfig_path()).expect("reading the kubeconfig");
    let real = api_server(&admin);
    let relay = Relay::up(free_port(), real).await;
    let kubeconfig = std::env::temp_dir().join(format!("{ns}.kubeconfig"));
    std::fs::write(
        &kubeconfig,
        admin.replace(&real.to_string(), &format!("127.0.0.1:{}", relay.port)),
    )
    .expect("writing a kubeconfig");

    // A first version serves the traffic, so that deploying the second (at 0%) waits for its
    // readiness and for no router.
    let first = tokio::process::Command::new(binary("switchyard"))
        .arg("--kubeconfig")
        .arg(kubeconfig_path())
        .args([
            "-n",
            &ns,
            "deploy",
            "hello",
            "1.0.0",
            "--endpoint",
            "http://127.0.0.1:9",
        ])
        .args(["--no-wait"])
        .env_remove("KUBECONFIG")
        .env_remove("SWITCHYARD_STORE")
        .output()
        .await
        .expect("deploying 1.0.0");
    assert!(first.status.success(), "{first:?}");

    let mut cli = tokio::process::Command::new(binary("switchyard"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["-n", &ns])
        .args(["deploy", "hello", "1.1.0", "--image", "registry.invalid/hello@sha256:0000000000000000000000000000000000000000000000000000000000000000"])
        .args(["--timeout", "120s"])
        .env_remove("KUBECONFIG")
        .env_remove("SWITCHYARD_STORE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting switchyard");
    let mut stderr = BufReader::new(cli.stderr.take().expect("stderr")).lines();
    let mut seen = String::new();
    // Bounded only so that a regression fails instead of hanging.
    let mut next_line = async || {
        let line = tokio::time::timeout(Duration::from_secs(60), stderr.next_line())
            .await
            .expect("the CLI fell silent")
            .expect("reading stderr");
        if let Some(line) = &line {
            seen.push_str(line);
            seen.push('\n');
        }
        line
    };

    // The deploy has created its workload and waits for it to be ready.
    loop {
        let line = next_line().await.expect("the deploy ended before waiting");
        if line.starts_with("waiting for hello@1.1.0") {
            break;
        }
    }
    relay.down();
    let retry = next_line()
        .await
        .expect("the deploy ended instead of waiting for the API server");
    assert!(
        retry.starts_with("the API server is not ready (connection refused); retrying in "),
        "{retry}"
    );

    // The API server is back, and the version becomes ready.
    relay.listen().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    wait_until(Duration::from_secs(30), "the Deployment", || async {
        deployments.get_opt("hello-1-1-0").await.ok().flatten()
    })
    .await;
    mark_ready(&deployments, "hello-1-1-0").await;
    while next_line().await.is_some() {}
    let out = cli
        .wait_with_output()
        .await
        .expect("waiting for switchyard");
    relay.down();
    let _ = std::fs::remove_file(&kubeconfig);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {seen}"
    );
    assert!(stdout.contains("hello@1.1.0 is ready"), "{stdout}");
}
