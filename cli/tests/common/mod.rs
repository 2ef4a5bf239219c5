//! What the CLI's black-box test files share: a fresh local store and the real `switchyard`
//! binary run against it.

use std::path::PathBuf;
use std::process::{Command, Output};

/// A fresh store directory, removed at the end of the test.
pub struct Store(pub PathBuf);

impl Store {
    /// An empty store directory named after the test file (`prefix`) and a per-process count.
    pub fn fresh(prefix: &str) -> Store {
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("switchyard-{prefix}-{}-{run}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Store(dir)
    }

    /// The `--store` value naming this directory.
    pub fn flag(&self) -> String {
        format!("dir:{}", self.0.display())
    }

    /// `switchyard --store dir:… ARGS`, with no store or kubeconfig from the environment and no
    /// colour.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        c.arg("--store")
            .arg(self.flag())
            .args(args)
            .env_remove("SWITCHYARD_STORE")
            .env_remove("KUBECONFIG")
            .env("NO_COLOR", "1");
        c
    }

    /// Runs a command to its end.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running switchyard")
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: exit {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

// Used by some of the test files that share this module, not all (each compiles it apart).
#[allow(dead_code)]
impl Store {
    /// A fresh store with hello at 1.0.0 (all the traffic) and 1.1.0 (none), both external;
    /// no router runs (`--no-wait`).
    pub fn two_versions(prefix: &str) -> Store {
        let store = Store::fresh(prefix);
        for v in ["1.0.0", "1.1.0"] {
            store.ok(&[
                "deploy",
                "hello",
                v,
                "--endpoint",
                "http://127.0.0.1:9",
                "--no-wait",
            ]);
        }
        store
    }

    /// hello's stored spec, as JSON.
    pub fn spec(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.0.join("functions/hello.yaml"))
            .expect("the function's file");
        let doc: serde_json::Value = serde_yaml::from_str(&text).expect("yaml");
        doc["function"]["spec"].clone()
    }

    /// Runs a command; its exit code and stderr.
    pub fn code_and_stderr(&self, args: &[&str]) -> (Option<i32>, String) {
        let out = self.run(args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
