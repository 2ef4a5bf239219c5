//! Black-box tests of the list habits of issue 13 ("missing verbs and habits") on a local
//! store: `-o name`, `-o wide`, `--no-headers`, `-A`, and `-w` printing one line per change.

use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod common;
use common::Store;

impl Store {
    /// A fresh store with `hello` at 1.0.0 (100%) and 1.1.0 (0%).
    fn new() -> Store {
        let store = Store::fresh("lists");
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

    /// Starts a watching command; its stdout lines arrive on the channel as it prints them.
    fn watch(&self, args: &[&str]) -> Watch {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting switchyard");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Watch { child, lines }
    }
}

/// A running `-w` command, killed (by its own handle) when dropped.
struct Watch {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Watch {
    /// The next line it prints; panics if none comes within a generous bound.
    fn next(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(30))
            .expect("a line from the watching command")
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

#[test]
fn o_name_prints_one_kind_and_name_per_line() {
    let s = Store::new();
    assert_eq!(
        s.ok(&["list", "-o", "name"]),
        "function.switchyard.dev/hello\n"
    );
    assert_eq!(
        s.ok(&["versions", "hello", "-o", "name"]),
        "functionversion.switchyard.dev/hello-1-1-0\nfunctionversion.switchyard.dev/hello-1-0-0\n"
    );
}

#[test]
fn no_headers_drops_only_the_header_line() {
    let s = Store::new();
    let with = s.ok(&["versions", "hello"]);
    let without = s.ok(&["versions", "hello", "--no-headers"]);
    assert!(with.starts_with("VERSION"), "{with}");
    assert_eq!(without.lines().count(), 2, "{without}");
    assert_eq!(
        words(without.lines().next().unwrap_or_default())[0],
        "1.1.0"
    );
    let list = s.ok(&["list", "--no-headers"]);
    assert_eq!(
        words(&list)[..3],
        ["hello", "1.0.0=100%", "1.0.0"],
        "{list}"
    );
    // The deploy of 1.0.0 and the 0% deploy of 1.1.0.
    let history = s.ok(&["history", "hello", "--no-headers"]);
    assert_eq!(history.lines().count(), 2, "{history}");
    assert!(!history.contains("ACTOR"), "{history}");
}

#[test]
fn o_wide_adds_columns_after_the_table_s() {
    let s = Store::new();
    let list = s.ok(&["list", "-o", "wide"]);
    let header = words(list.lines().next().unwrap_or_default());
    assert_eq!(
        header,
        [
            "NAME",
            "TRAFFIC",
            "STABLE",
            "ROUTE",
            "HEALTH",
            "AGE",
            "HOSTS",
            "GENERATION"
        ]
    );
    let versions = s.ok(&["versions", "hello", "-o", "wide"]);
    assert!(
        words(versions.lines().next().unwrap_or_default())
            .ends_with(&["AGE", "CREATED", "NOT", "READY", "BECAUSE"]),
        "{versions}"
    );
    let history = s.ok(&["history", "hello", "-o", "wide"]);
    assert!(
        history
            .lines()
            .nth(1)
            .unwrap_or_default()
            .ends_with("1.0.0=1000000"),
        "{history}"
    );
}

#[test]
fn all_namespaces_on_a_local_store_says_it_has_one() {
    let s = Store::new();
    let out = s.run(&["list", "-A"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("has one namespace; -A lists it"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello"));
}

#[test]
fn list_watch_prints_one_line_per_change() {
    let s = Store::new();
    let w = s.watch(&["list", "-w"]);
    assert!(w.next().starts_with("NAME"));
    assert_eq!(words(&w.next())[..2], ["hello", "1.0.0=100%"]);
    s.ok(&["traffic", "hello", "1.1.0=10", "1.0.0=90", "--no-wait"]);
    assert_eq!(words(&w.next())[..3], ["hello", "1.1.0=10%", "1.0.0=90%"]);
    s.ok(&[
        "deploy",
        "bye",
        "1.0.0",
        "--endpoint",
        "http://127.0.0.1:9",
        "--no-wait",
    ]);
    assert_eq!(words(&w.next())[..2], ["bye", "1.0.0=100%"]);
    s.ok(&["delete", "bye", "--all", "--force"]);
    assert_eq!(w.next(), "function.switchyard.dev/bye deleted");
}

#[test]
fn versions_watch_prints_a_new_version_and_a_changed_weight() {
    let s = Store::new();
    let w = s.watch(&["versions", "hello", "-w", "--no-headers"]);
    assert_eq!(words(&w.next())[0], "1.1.0");
    assert_eq!(words(&w.next())[0], "1.0.0");
    s.ok(&[
        "deploy",
        "hello",
        "1.2.0",
        "--endpoint",
        "http://127.0.0.1:9",
        "--no-wait",
    ]);
    assert_eq!(words(&w.next())[..4], ["1.2.0", "yes", "-", "0%"]);
    s.ok(&["promote", "hello", "1.2.0", "--no-wait"]);
    // Two rows changed: 1.2.0 gained the weight (and the stable mark), 1.0.0 lost both.
    let mut changed = [w.next(), w.next()];
    changed.sort();
    assert_eq!(words(&changed[0])[..4], ["1.0.0", "yes", "-", "0%"]);
    assert_eq!(words(&changed[1])[..4], ["1.2.0", "yes", "-", "100%"]);
}

#[test]
fn history_watch_prints_each_new_entry() {
    let s = Store::new();
    let w = s.watch(&["history", "hello", "-w", "-o", "json"]);
    // The current history as one JSON array, then one JSON object per line.
    let mut first = String::new();
    loop {
        let line = w.next();
        first.push_str(&line);
        if line == "]" {
            break;
        }
    }
    let entries: serde_json::Value = serde_json::from_str(&first).expect("a JSON array");
    // The deploy of 1.0.0 and the 0% deploy of 1.1.0.
    assert_eq!(entries.as_array().map(Vec::len), Some(2));
    s.ok(&[
        "traffic",
        "hello",
        "1.1.0=10",
        "1.0.0=90",
        "--no-wait",
        "--reason",
        "canary",
    ]);
    let entry: serde_json::Value = serde_json::from_str(&w.next()).expect("one JSON line");
    assert_eq!(entry["traffic"], "1.1.0=10% 1.0.0=90%");
    assert_eq!(entry["reason"], "canary");
}

/// What the bash completion script offers for the words after `switchyard --store dir:…`,
/// the last one being completed; the script asks the same binary for names.
fn bash_complete(s: &Store, words: &[&str]) -> Vec<String> {
    let bin = env!("CARGO_BIN_EXE_switchyard");
    let script = String::from_utf8(
        Command::new(bin)
            .args(["completions", "bash"])
            .output()
            .expect("completions bash")
            .stdout,
    )
    .expect("utf-8");
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "{script}\nCOMP_WORDS=('{bin}' --store 'dir:{}' {})\nCOMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))\n\
         _switchyard_dynamic switchyard \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        s.0.display(),
        quoted.join(" ")
    );
    let out = Command::new("bash")
        .args(["-c", &program])
        .env_remove("SWITCHYARD_STORE")
        .output()
        .expect("running bash");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completion_offers_function_and_version_names_from_the_store() {
    let s = Store::new();
    s.ok(&[
        "deploy",
        "bye",
        "2.0.0",
        "--endpoint",
        "http://127.0.0.1:9",
        "--no-wait",
    ]);
    assert_eq!(bash_complete(&s, &["status", ""]), ["bye", "hello"]);
    assert_eq!(bash_complete(&s, &["promote", "he"]), ["hello"]);
    assert_eq!(
        bash_complete(&s, &["promote", "hello", ""]),
        ["1.0.0", "1.1.0"]
    );
    assert_eq!(bash_complete(&s, &["delete", "bye", ""]), ["2.0.0"]);
    assert_eq!(
        bash_complete(&s, &["rollback", "hello", "--to", "1.1"]),
        ["1.1.0"]
    );
}
