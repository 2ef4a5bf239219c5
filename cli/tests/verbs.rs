//! Black-box tests of the verbs that change a function without moving its traffic (`tag`,
//! `untag`, `set`) and of numbered history (`undo --to N`), through the `switchyard` binary on
//! a local store: each asserts the exit code, the line the user sees and what was stored.

mod common;
use common::Store;

/// hello with 1.0.0 and 1.1.0 deployed (no router running: `--no-wait` throughout).
fn two_versions() -> Store {
    let store = Store::fresh("verbs");
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

fn spec(store: &Store) -> serde_json::Value {
    let text =
        std::fs::read_to_string(store.0.join("functions/hello.yaml")).expect("the function's file");
    let doc: serde_json::Value = serde_yaml::from_str(&text).expect("yaml");
    doc["function"]["spec"].clone()
}

fn exit_and_stderr(store: &Store, args: &[&str]) -> (Option<i32>, String) {
    let out = store.run(args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_tag_is_set_moved_repeated_safely_and_removed() {
    let store = two_versions();
    let out = store.ok(&["tag", "hello", "beta", "1.1.0", "--no-wait"]);
    assert!(out.contains("tags none → beta=1.1.0"), "{out}");
    assert_eq!(spec(&store)["tags"][0]["version"], "1.1.0");
    // The same again changes nothing and says so.
    let again = store.ok(&["tag", "hello", "beta", "1.1.0", "--no-wait"]);
    assert!(again.contains("already names 1.1.0"), "{again}");
    // A dry run shows the move and writes nothing.
    let dry = store.ok(&["tag", "hello", "beta", "1.0.0", "--dry-run"]);
    assert!(
        dry.contains("+ tags: beta=1.0.0") && dry.contains("dry run"),
        "{dry}"
    );
    assert_eq!(spec(&store)["tags"][0]["version"], "1.1.0");
    // Traffic words take the tag.
    store.ok(&["traffic", "hello", "beta=10", "1.0.0=90", "--no-wait"]);
    let status: serde_json::Value =
        serde_json::from_str(&store.ok(&["status", "hello", "-o", "json"])).expect("json");
    assert_eq!(status["traffic"], "1.1.0=10% 1.0.0=90%");
    // Bad input: one line, exit 2, nothing written.
    let (code, err) = exit_and_stderr(&store, &["tag", "hello", "beta", "9.9.9", "--no-wait"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("9.9.9"), "{err}");
    let (code, err) = exit_and_stderr(&store, &["tag", "hello", "Bad_Tag", "1.0.0", "--no-wait"]);
    assert_eq!((code, err.lines().count()), (Some(2), 1), "{err}");
    assert_eq!(spec(&store)["tags"].as_array().map(Vec::len), Some(1));
    store.ok(&["untag", "hello", "beta", "--no-wait"]);
    assert!(spec(&store).get("tags").is_none());
    let none = store.ok(&["untag", "hello", "beta", "--no-wait"]);
    assert!(none.contains("no tag beta"), "{none}");
    let history = store.ok(&["history", "hello"]);
    assert!(
        history.contains("tag") && history.contains("untag"),
        "{history}"
    );
}

#[test]
fn set_changes_only_the_settings_given_and_refuses_bad_ones_whole() {
    let store = two_versions();
    let before = spec(&store)["traffic"].clone();
    let out = store.ok(&[
        "set",
        "hello",
        "--affinity",
        "header:x-user",
        "--pinning",
        "on",
        "--no-wait",
    ]);
    assert!(out.contains("affinity none → header:x-user"), "{out}");
    let s = spec(&store);
    assert_eq!(s["affinity"]["header"], "x-user");
    assert_eq!(s["pinning"], true);
    assert_eq!(s["traffic"], before);
    // Repeating it is safe.
    let again = store.ok(&["set", "hello", "--pinning", "on", "--no-wait"]);
    assert!(again.contains("already so"), "{again}");
    // A bad value anywhere refuses the whole command: the good flag beside it is not applied.
    let (code, err) = exit_and_stderr(
        &store,
        &[
            "set",
            "hello",
            "--pinning",
            "off",
            "--affinity",
            "ip:1",
            "--no-wait",
        ],
    );
    assert_eq!((code, err.lines().count()), (Some(2), 1), "{err}");
    assert!(err.contains("--affinity"), "{err}");
    let (code, err) = exit_and_stderr(&store, &["set", "hello", "--prefix", "nope", "--no-wait"]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(spec(&store)["pinning"], true);
    assert!(spec(&store).get("pathPrefix").is_none());
    // No setting at all is a usage error.
    let (code, _) = exit_and_stderr(&store, &["set", "hello"]);
    assert_eq!(code, Some(2));
    store.ok(&["set", "hello", "--affinity", "none", "--no-wait"]);
    assert!(spec(&store).get("affinity").is_none());
}

#[test]
fn history_numbers_are_stable_and_undo_goes_to_one_of_them() {
    let store = two_versions(); // #1 deploy 1.0.0 (the 0% deploy of 1.1.0 moves no traffic)
    store.ok(&["traffic", "hello", "1.1.0=10", "1.0.0=90", "--no-wait"]);
    store.ok(&["promote", "hello", "1.1.0", "--no-wait"]);
    let json: serde_json::Value =
        serde_json::from_str(&store.ok(&["history", "hello", "-o", "json"])).expect("json");
    let revisions: Vec<u64> = json
        .as_array()
        .or_else(|| json["items"].as_array())
        .expect("a list")
        .iter()
        .map(|h| h["revision"].as_u64().expect("a revision"))
        .collect();
    assert_eq!(revisions, [1, 2, 3]);
    let out = store.ok(&["undo", "hello", "--to", "1", "--no-wait"]);
    assert!(out.contains("→ 1.0.0=100%"), "{out}");
    let (code, err) = exit_and_stderr(&store, &["undo", "hello", "--to", "42", "--no-wait"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("no revision 42") && err.contains("oldest kept is 1"),
        "{err}"
    );
}

#[test]
fn man_writes_one_page_per_command_and_fails_cleanly_on_a_bad_directory() {
    let store = Store::fresh("verbs-man");
    let dir = store.0.join("pages");
    let out = store.ok(&["man", "--dir", dir.to_str().expect("utf-8")]);
    assert!(out.starts_with("wrote "), "{out}");
    for page in [
        "switchyard",
        "switchyard-traffic",
        "switchyard-tag",
        "switchyard-set",
    ] {
        let text = std::fs::read_to_string(dir.join(format!("{page}.1"))).expect(page);
        assert!(text.contains(".TH"), "{page} is not a man page");
    }
    assert!(!dir.join("switchyard-__complete.1").exists());
    // A file where the directory should be: exit 1, one line.
    let file = store.0.join("a-file");
    std::fs::write(&file, "x").expect("file");
    let (code, err) = exit_and_stderr(&store, &["man", "--dir", file.to_str().expect("utf-8")]);
    assert_eq!((code, err.lines().count()), (Some(1), 1), "{err}");
}
