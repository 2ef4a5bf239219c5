//! Black-box tests of the `switchyard` binary that need no cluster: help, bad input and exit
//! codes. Input errors must be caught before any connection is made.

use std::process::Command;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str]) -> Out {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("switchyard-cli-test-{}-{run}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // A cluster that refuses connections: anything reaching the network fails with exit 1.
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\ncurrent-context: nowhere\nclusters:\n- name: nowhere\n  cluster:\n    server: https://127.0.0.1:1\ncontexts:\n- name: nowhere\n  context:\n    cluster: nowhere\n    user: someone\nusers:\n- name: someone\n  user:\n    token: t\n",
    )
    .expect("kubeconfig");
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .expect("running switchyard");
    let _ = std::fs::remove_dir_all(&dir);
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn one_error_line(out: &Out, code: i32, needle: &str) {
    assert_eq!(
        out.code, code,
        "stdout: {} stderr: {}",
        out.stdout, out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
    assert!(
        out.stderr.contains(needle),
        "{:?} lacks {needle:?}",
        out.stderr
    );
}

#[test]
fn help_lists_every_command_and_the_exit_codes() {
    let out = run(&["--help"]);
    assert_eq!(out.code, 0);
    for word in [
        "install",
        "uninstall",
        "deploy",
        "versions",
        "traffic",
        "promote",
        "rollback",
        "undo",
        "status",
        "history",
        "list",
        "delete",
        "gc",
        "completions",
        "--kubeconfig",
        "--context",
        "--namespace",
        "Exit codes:",
        "lost a concurrent-change race",
    ] {
        assert!(
            out.stdout.contains(word),
            "--help lacks {word}:\n{}",
            out.stdout
        );
    }
    let out = run(&["rollback", "--help"]);
    assert_eq!(out.code, 0);
    for word in [
        "--to",
        "--dry-run",
        "--no-wait",
        "--timeout",
        "--reason",
        "Exit codes:",
    ] {
        assert!(out.stdout.contains(word), "rollback --help lacks {word}");
    }
    assert!(run(&["versions", "--help"]).stdout.contains("--output"));
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        vec!["frobnicate"],
        vec!["traffic", "hello"],
        vec!["deploy", "hello", "1.0.0"],
        vec![
            "deploy",
            "hello",
            "1.0.0",
            "--image",
            "a",
            "--endpoint",
            "http://x",
        ],
        vec!["versions", "hello", "-o", "xml"],
        vec!["traffic", "hello", "1.0.0=100", "--timeout", "soon"],
        vec!["gc", "hello"],
        vec!["install", "--image"],
        vec!["install", "--timeout", "soon"],
        vec!["uninstall", "--yes"],
    ] {
        let out = run(&args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains("error"), "{args:?}: {}", out.stderr);
    }
}

#[test]
fn bad_input_exits_2_with_one_line_before_any_connection() {
    one_error_line(
        &run(&["traffic", "hello", "1.1.0=10", "1.0.0=80"]),
        2,
        "weights add up to 90%, they must add up to exactly 100%",
    );
    one_error_line(
        &run(&["traffic", "hello", "1.1.0"]),
        2,
        "is not VERSION=PERCENT",
    );
    one_error_line(
        &run(&["traffic", "hello", "1.1.0=ten", "1.0.0=90"]),
        2,
        "is not a percentage",
    );
    one_error_line(
        &run(&["deploy", "hello", "v1", "--endpoint", "http://127.0.0.1:1"]),
        2,
        "is not semver",
    );
    one_error_line(
        &run(&[
            "deploy",
            "Hello",
            "1.0.0",
            "--endpoint",
            "http://127.0.0.1:1",
        ]),
        2,
        "is not a valid name",
    );
    one_error_line(
        &run(&["deploy", "hello", "1.0.0", "--endpoint", "ftp://x"]),
        2,
        "only http and https",
    );
    one_error_line(
        &run(&[
            "deploy", "hello", "1.0.0", "--image", "img", "--env", "NOEQUALS",
        ]),
        2,
        "is not K=V",
    );
    one_error_line(
        &run(&[
            "deploy",
            "hello",
            "1.0.0",
            "--image",
            "img",
            "--traffic",
            "101",
        ]),
        2,
        "above 100%",
    );
}

#[test]
fn an_unreachable_cluster_exits_1_with_one_line_naming_the_object() {
    one_error_line(
        &run(&["status", "hello"]),
        1,
        "reading function hello in namespace default",
    );
    one_error_line(
        &run(&["rollback", "hello", "-n", "prod"]),
        1,
        "function hello in namespace prod",
    );
    one_error_line(
        &run(&["--context", "missing", "list"]),
        2,
        "context missing is not in the kubeconfig (it has: nowhere)",
    );
}

#[test]
fn install_and_uninstall_are_documented_and_check_input_before_connecting() {
    let out = run(&["install", "--help"]);
    assert_eq!(out.code, 0);
    for word in [
        "server-side apply",
        "Established",
        "created, configured (changed) or unchanged",
        "--dry-run",
        "--image",
        "Exit codes:",
    ] {
        assert!(out.stdout.contains(word), "install --help lacks {word}");
    }
    let out = run(&["uninstall", "--help"]);
    assert_eq!(out.code, 0);
    for word in ["Refuses (exit 3)", "--force", "--dry-run", "(last)"] {
        assert!(out.stdout.contains(word), "uninstall --help lacks {word}");
    }
    one_error_line(
        &run(&["install", "--image", ""]),
        2,
        "--image \"\" is not an image reference",
    );
    one_error_line(
        &run(&["install", "--store", "dir:/nonexistent"]),
        2,
        "install and uninstall work on a cluster",
    );
    one_error_line(
        &run(&["install"]),
        1,
        "reading CustomResourceDefinition functions.switchyard.dev: cannot reach the API server",
    );
    one_error_line(&run(&["uninstall", "--force"]), 1, "listing Function");
}

#[test]
fn completions_are_generated_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completions", shell]);
        assert_eq!(out.code, 0, "{shell}: {}", out.stderr);
        assert!(out.stdout.contains("switchyard"), "{shell}");
        assert!(out.stdout.contains("rollback"), "{shell}");
    }
}

/// The subcommands `switchyard --help` lists (the word after two spaces on each line of its
/// "Commands:" section; wrapped descriptions are indented further), so that a new command cannot be added without being walked below.
fn subcommands() -> Vec<String> {
    let out = run(&["--help"]);
    out.stdout
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn every_command_help_has_examples_before_its_exit_codes() {
    let commands = subcommands();
    assert!(commands.len() >= 16, "{commands:?}");
    for command in [None].into_iter().chain(commands.iter().map(Some)) {
        let args: Vec<&str> = command
            .map(String::as_str)
            .into_iter()
            .chain(["--help"])
            .collect();
        let out = run(&args);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        let examples = out.stdout.find("\nExamples:\n  switchyard ");
        let codes = out.stdout.find("\nExit codes:\n");
        assert!(
            matches!((examples, codes), (Some(e), Some(c)) if e < c),
            "{args:?} --help lacks Examples: before Exit codes:\n{}",
            out.stdout
        );
    }
}

#[test]
fn completions_help_says_how_to_install_in_each_shell() {
    let out = run(&["completions", "--help"]);
    assert_eq!(out.code, 0);
    for line in [
        "  bash        switchyard completions bash > ~/.local/share/bash-completion/completions/switchyard",
        "  zsh         mkdir -p ~/.zfunc && switchyard completions zsh > ~/.zfunc/_switchyard",
        "  fish        switchyard completions fish > ~/.config/fish/completions/switchyard.fish",
        "  elvish      switchyard completions elvish >> ~/.config/elvish/rc.elv",
        "  powershell  switchyard completions powershell >> $PROFILE",
    ] {
        assert!(
            out.stdout.lines().any(|l| l == line),
            "completions --help lacks {line:?}:\n{}",
            out.stdout
        );
    }
    // What it says to run works: the bash script it prints defines the completion function.
    let script = run(&["completions", "bash"]);
    assert_eq!(script.code, 0);
    assert!(
        script.stdout.contains("complete -F _switchyard"),
        "{}",
        &script.stdout[..200.min(script.stdout.len())]
    );
}
