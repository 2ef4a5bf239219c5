//! Shell completion of function and version names, through real zsh and fish (installed by
//! `.ci/run`; a test whose shell is missing says so and passes only outside CI), against a local
//! store the command line names.

use std::process::Command;

mod common;
use common::Store;

/// `hello` with versions 1.0.0 and 1.1.0, and the directory of the `switchyard` binary.
fn store() -> (Store, String) {
    let store = Store::two_versions("completions");
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_switchyard"));
    let path = format!(
        "{}:{}",
        bin.parent().expect("a directory").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (store, path)
}

/// Runs `shell -c script`; `None` when the shell is not installed (an error in CI).
fn run(shell: &str, path: &str, script: &str) -> Option<String> {
    let out = match Command::new(shell)
        .args(["-c", script])
        .env("PATH", path)
        .env_remove("SWITCHYARD_STORE")
        .env_remove("KUBECONFIG")
        .output()
    {
        Ok(out) => out,
        Err(_) if std::env::var_os("CI").is_none() => {
            eprintln!(
                "{shell} is not installed: its completion is not tested here (.ci/run installs it)"
            );
            return None;
        }
        Err(e) => panic!("{shell} must be installed in CI: {e}"),
    };
    assert!(
        out.status.success(),
        "{shell}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn fish_completes_functions_then_versions_from_the_store_on_the_command_line() {
    let (store, path) = store();
    let flag = store.flag();
    let script = format!(
        "switchyard completions fish | source
         complete -C 'switchyard --store {flag} promote '; echo ---
         complete -C 'switchyard --store {flag} promote hello '; echo ---
         complete -C 'switchyard --store {flag} rollback hello --to '; echo ---
         complete -C 'switchyard --store {flag} tag hello beta '"
    );
    let Some(out) = run("fish", &path, &script) else {
        return;
    };
    let parts: Vec<Vec<&str>> = out
        .split("---\n")
        .map(|p| {
            p.lines()
                .map(|l| l.split('\t').next().unwrap_or(""))
                .collect()
        })
        .collect();
    assert_eq!(parts[0], ["hello"], "{out}");
    for p in &parts[1..] {
        assert_eq!(p, &["1.0.0", "1.1.0"], "{out}");
    }
}

#[test]
fn zsh_completes_functions_then_versions_from_the_store_on_the_command_line() {
    let (store, path) = store();
    let flag = store.flag();
    let script_file = store.0.join("_switchyard");
    let script = store.ok(&["completions", "zsh"]);
    std::fs::write(&script_file, &script).expect("the script");
    // compdef and _describe belong to zsh's completion system; stand-ins print what the
    // completion functions would offer.
    let driver = format!(
        "compdef() {{ :; }}
         source {}
         _describe() {{ print -l -- ${{(P)4}}; }}
         BUFFER='switchyard --store {flag} promote '; _switchyard_functions; print -- '---'
         BUFFER='switchyard --store={flag} promote hello '; _switchyard_versions; print -- '---'
         BUFFER='switchyard rollback --store {flag} hello --to '; _switchyard_versions",
        script_file.display()
    );
    let Some(out) = run("zsh", &path, &driver) else {
        return;
    };
    let parts: Vec<Vec<&str>> = out.split("---\n").map(|p| p.lines().collect()).collect();
    assert_eq!(parts[0], ["hello"], "{out}");
    assert_eq!(parts[1], ["1.0.0", "1.1.0"], "{out}");
    assert_eq!(parts[2], ["1.0.0", "1.1.0"], "{out}");
    // The generated script points positional names at those functions.
    assert!(
        script.contains(":_switchyard_functions'"),
        "no hook for function names"
    );
    assert!(
        script.contains(":_switchyard_versions'"),
        "no hook for versions"
    );
}
