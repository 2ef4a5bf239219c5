//! Transient API errors (issue 13, item 4): a command sent while the API server cannot answer
//! waits for it, says so on stderr, and succeeds once it is back, instead of exiting 1.
//!
//! The API server "restarts" behind a loopback port: nothing listens there at first (every
//! connection is refused, as while a real API server restarts), then a TCP forwarder to the
//! real test API server takes the port. The forwarder starts only once the CLI has said that
//! it waits, so the test synchronises on the CLI's own signal, not on time.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use switchyard_tests::{binary, client, free_port, kubeconfig_path, namespace};

/// The test API server's `host:port`, from the admin kubeconfig.
fn api_server(kubeconfig: &str) -> String {
    kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: https://"))
        .expect("a server in the kubeconfig")
        .to_string()
}

#[tokio::test]
async fn a_command_sent_while_the_api_server_refuses_connections_waits_says_so_and_succeeds() {
    let client = client().await;
    let ns = namespace(&client, "retry-refused").await;
    let admin = std::fs::read_to_string(kubeconfig_path()).expect("reading the kubeconfig");
    let real = api_server(&admin);
    let port = free_port();
    let kubeconfig = std::env::temp_dir().join(format!("{ns}.kubeconfig"));
    std::fs::write(
        &kubeconfig,
        admin.replace(&real, &format!("127.0.0.1:{port}")),
    )
    .expect("writing a kubeconfig");

    let mut cli = tokio::process::Command::new(binary("switchyard"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["-n", &ns, "list"])
        .env_remove("KUBECONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting switchyard");
    let mut stderr = BufReader::new(cli.stderr.take().expect("stderr")).lines();
    // Bounded only so that a regression fails instead of hanging; the CLI says it waits after
    // its first second of retries.
    let first = tokio::time::timeout(Duration::from_secs(60), stderr.next_line())
        .await
        .expect("the CLI neither waited nor ended")
        .expect("reading stderr")
        .expect("the CLI ended without a word on stderr");
    assert!(
        first.starts_with("the API server is not ready (connection refused); retrying in "),
        "{first}"
    );

    // The API server is back.
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("taking the port back");
    let forwarder = tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let real = real.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(&real).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });

    let mut rest = String::new();
    while let Some(line) = stderr.next_line().await.expect("reading stderr") {
        rest.push_str(&line);
        rest.push('\n');
    }
    let mut stdout = String::new();
    cli.stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut stdout)
        .await
        .expect("reading stdout");
    let status = cli.wait().await.expect("waiting for switchyard");
    forwarder.abort();
    let _ = std::fs::remove_file(&kubeconfig);
    assert_eq!(
        status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {first}\n{rest}"
    );
    assert!(
        rest.lines()
            .all(|l| l.starts_with("the API server is not ready (connection refused)")),
        "only waiting lines on stderr: {rest}"
    );
}
