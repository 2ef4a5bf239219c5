//! Exit 5 (issue 18): a write that loses the concurrent-change race on every one of its
//! attempts gives up with one line and writes nothing. Produced deterministically, with no seam
//! in the product: the function's file in a local store is replaced by a FIFO, so that every
//! read the CLI makes is answered by the test, which plays a concurrent writer. When the CLI
//! reads under the store's lock (its conditional write re-reading the file), the test answers
//! with a newer revision whose split and history changed, as a writer that landed between the
//! CLI's read and its write would have left it; every other read gets the current revision.
//! So each attempt plans against revision N and finds N+1 at write time: a conflict each time.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use serde_yaml::Value;
use switchyard_tests::binary;
use switchyard_tests::cli::local;

fn ok(store: &Path, args: &[&str]) -> String {
    let out = local(store, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The document a concurrent writer leaves after `doc`: the next resourceVersion and
/// generation, the canary at `percent`, and a history entry with reason `racer-K`.
fn landed_after(doc: &Value, k: u32) -> Value {
    let mut next = doc.clone();
    let f = &mut next["function"];
    let rv: u64 = f["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("a resourceVersion");
    f["metadata"]["resourceVersion"] = Value::from((rv + 1).to_string());
    let generation = f["metadata"]["generation"].as_u64().expect("a generation");
    f["metadata"]["generation"] = Value::from(generation + 1);
    let canary = 10_000 * (1 + k % 30) as u64;
    let traffic: Value = serde_yaml::from_str(&format!(
        "[{{version: 1.1.0, weight: {canary}}}, {{version: 1.0.0, weight: {}}}]",
        1_000_000 - canary
    ))
    .expect("traffic");
    f["spec"]["traffic"] = traffic.clone();
    let history = f["spec"]["history"].as_sequence_mut().expect("a history");
    let mut entry = history.last().expect("an entry").clone();
    let revision = entry["revision"].as_u64().expect("a revision");
    entry["revision"] = Value::from(revision + 1);
    entry["action"] = Value::from("traffic");
    entry["traffic"] = traffic;
    entry["reason"] = Value::from(format!("racer-{k}"));
    history.push(entry);
    next
}

#[test]
fn a_write_that_loses_every_attempt_exits_5_with_one_line_and_writes_nothing() {
    let store = std::env::temp_dir().join(format!(
        "switchyard-lost-race-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    std::fs::create_dir_all(&store).expect("a store");
    for (version, port) in [("1.0.0", 9001), ("1.1.0", 9002)] {
        let endpoint = format!("http://127.0.0.1:{port}");
        ok(
            &store,
            &[
                "deploy",
                "hello",
                version,
                "--endpoint",
                &endpoint,
                "--no-wait",
            ],
        );
    }
    ok(
        &store,
        &["traffic", "hello", "1.1.0=10", "1.0.0=90", "--no-wait"],
    );
    let file = store.join("functions").join("hello.yaml");
    let first: Value =
        serde_yaml::from_str(&std::fs::read_to_string(&file).expect("the file")).expect("YAML");
    std::fs::remove_file(&file).expect("remove the file");
    let made = Command::new("mkfifo").arg(&file).status().expect("mkfifo");
    assert!(made.success());

    let cli = Command::new(binary("switchyard"))
        .arg("--store")
        .arg(format!("dir:{}", store.display()))
        .args([
            "traffic",
            "hello",
            "1.1.0=50",
            "1.0.0=50",
            "--no-wait",
            "--reason",
            "loser",
        ])
        .env_remove("KUBECONFIG")
        .env_remove("SWITCHYARD_STORE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running switchyard");
    let pid = cli.id();

    // The concurrent writer: answers each read of the file.
    let stop = Arc::new(AtomicBool::new(false));
    let conflicts = Arc::new(AtomicU32::new(0));
    let reads = Arc::new(AtomicU32::new(0));
    let racer = {
        let (file, lock, stop) = (file.clone(), store.join(".lock"), Arc::clone(&stop));
        let (conflicts, reads) = (Arc::clone(&conflicts), Arc::clone(&reads));
        std::thread::spawn(move || {
            let mut current = first;
            loop {
                // Blocks until a reader opens the FIFO.
                let mut pipe = OpenOptions::new()
                    .write(true)
                    .open(&file)
                    .expect("the FIFO");
                if stop.load(Ordering::SeqCst) {
                    return current;
                }
                // The reader's descriptor shows once its open() returned: from then on its
                // close is what tells this read apart from the next.
                while !reading(pid, &file) {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                reads.fetch_add(1, Ordering::SeqCst);
                if held_by_another(&lock) {
                    // The CLI's re-read under its lock, just before its conditional write:
                    // another write landed since it read.
                    let k = conflicts.fetch_add(1, Ordering::SeqCst) + 1;
                    current = landed_after(&current, k);
                }
                let text = serde_yaml::to_string(&current).expect("YAML");
                // A reader that went away (it exits) is not the writer's problem.
                let _ = pipe.write_all(text.as_bytes());
                drop(pipe);
                // The next open for writing must meet the next read, not this reader before
                // it saw the end of the file: wait until the CLI has closed it.
                while reading(pid, &file) {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        })
    };

    let out = cli.wait_with_output().expect("the CLI's exit");
    stop.store(true, Ordering::SeqCst);
    // Releases the racer from its open(): it sees `stop` and ends.
    let _ = std::fs::read(&file);
    let last = racer.join().expect("the racer");

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        "error: function hello kept changing concurrently (12 attempts); \
         this command wrote nothing, re-run it"
    );
    // ATTEMPTS (cli/src/write.rs) conditional writes, each refused by a newer revision: the
    // conflicts really happened, once per attempt, and each attempt read before it wrote.
    let conflicts = conflicts.load(Ordering::SeqCst);
    assert_eq!(conflicts, 12, "one lost conditional write per attempt");
    assert!(reads.load(Ordering::SeqCst) >= 2 * conflicts);

    // Back to a plain file holding what the concurrent writer left: every one of its changes
    // is in the history, the losing command's is not.
    std::fs::remove_file(&file).expect("remove the FIFO");
    std::fs::write(&file, serde_yaml::to_string(&last).expect("YAML")).expect("the file");
    let history = ok(&store, &["history", "hello", "-o", "json"]);
    for k in 1..=conflicts {
        assert!(
            history.contains(&format!("racer-{k}\"")),
            "racer-{k}: {history}"
        );
    }
    assert!(!history.contains("loser"), "{history}");
    let status = ok(&store, &["status", "hello", "-o", "json"]);
    assert!(!status.contains("1.1.0=50"), "{status}");
}

/// Whether process `pid` has `path` open now (false once it exited).
fn reading(pid: u32, path: &Path) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == path))
}

/// Whether another process holds the store's lock now (the CLI, inside its write).
fn held_by_another(lock: &PathBuf) -> bool {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock)
        .expect("the lock file");
    match file.try_lock() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(std::fs::TryLockError::WouldBlock) => true,
        Err(std::fs::TryLockError::Error(e)) => panic!("locking {}: {e}", lock.display()),
    }
}
