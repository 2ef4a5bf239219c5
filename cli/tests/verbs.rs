//! Black-box tests of the verbs that change a function without moving its traffic (`tag`,
//! `untag`, `set`) and of numbered history (`undo --to N`), through the `switchyard` binary on
//! a local store: each asserts the exit code, the line the user sees and what was stored.

mod common;
use common::Store;

#[test]
fn a_tag_is_set_moved_repeated_safely_and_removed() {
    let store = Store::two_versions("verbs");
    let out = store.ok(&["tag", "hello", "beta", "1.1.0", "--no-wait"]);
    assert!(out.contains("tags none → beta=1.1.0"), "{out}");
    assert_eq!(store.spec()["tags"][0]["version"], "1.1.0");
    // The same again changes nothing and says so.
    let again = store.ok(&["tag", "hello", "beta", "1.1.0", "--no-wait"]);
    assert!(again.contains("already names 1.1.0"), "{again}");
    // A dry run shows the move and writes nothing.
    let dry = store.ok(&["tag", "hello", "beta", "1.0.0", "--dry-run"]);
    assert!(
        dry.contains("+ tags: beta=1.0.0") && dry.contains("dry run"),
        "{dry}"
    );
    assert_eq!(store.spec()["tags"][0]["version"], "1.1.0");
    // Traffic words take the tag.
    store.ok(&["traffic", "hello", "beta=10", "1.0.0=90", "--no-wait"]);
    let status: serde_json::Value =
        serde_json::from_str(&store.ok(&["status", "hello", "-o", "json"])).expect("json");
    assert_eq!(status["traffic"], "1.1.0=10% 1.0.0=90%");
    // Bad input: one line, exit 2, nothing written.
    let (code, err) = store.code_and_stderr(&["tag", "hello", "beta", "9.9.9", "--no-wait"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("9.9.9"), "{err}");
    let (code, err) = store.code_and_stderr(&["tag", "hello", "Bad_Tag", "1.0.0", "--no-wait"]);
    assert_eq!((code, err.lines().count()), (Some(2), 1), "{err}");
    assert_eq!(store.spec()["tags"].as_array().map(Vec::len), Some(1));
    store.ok(&["untag", "hello", "beta", "--no-wait"]);
    assert!(store.spec().get("tags").is_none());
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
    let store = Store::two_versions("verbs");
    let before = store.spec()["traffic"].clone();
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
    let s = store.spec();
    assert_eq!(s["affinity"]["header"], "x-user");
    assert_eq!(s["pinning"], true);
    assert_eq!(s["traffic"], before);
    // Repeating it is safe.
    let again = store.ok(&["set", "hello", "--pinning", "on", "--no-wait"]);
    assert!(again.contains("already so"), "{again}");
    // A bad value anywhere refuses the whole command: the good flag beside it is not applied.
    let (code, err) = store.code_and_stderr(&[
        "set",
        "hello",
        "--pinning",
        "off",
        "--affinity",
        "ip:1",
        "--no-wait",
    ]);
    assert_eq!((code, err.lines().count()), (Some(2), 1), "{err}");
    assert!(err.contains("--affinity"), "{err}");
    let (code, err) = store.code_and_stderr(&["set", "hello", "--prefix", "nope", "--no-wait"]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(store.spec()["pinning"], true);
    assert!(store.spec().get("pathPrefix").is_none());
    // No setting at all is a usage error.
    let (code, _) = store.code_and_stderr(&["set", "hello"]);
    assert_eq!(code, Some(2));
    store.ok(&["set", "hello", "--affinity", "none", "--no-wait"]);
    assert!(store.spec().get("affinity").is_none());
}

#[test]
fn history_numbers_are_stable_and_undo_goes_to_one_of_them() {
    let store = Store::two_versions("verbs"); // #1 deploy 1.0.0, #2 1.1.0 added at 0%
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
    assert_eq!(revisions, [1, 2, 3, 4]);
    let out = store.ok(&["undo", "hello", "--to", "1", "--no-wait"]);
    assert!(out.contains("→ 1.0.0=100%"), "{out}");
    let (code, err) = store.code_and_stderr(&["undo", "hello", "--to", "42", "--no-wait"]);
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
    let (code, err) = store.code_and_stderr(&["man", "--dir", file.to_str().expect("utf-8")]);
    assert_eq!((code, err.lines().count()), (Some(1), 1), "{err}");
}

#[test]
fn a_deploy_at_zero_percent_a_delete_and_a_gc_leave_an_audit_trail() {
    let store = Store::fresh("verbs-audit");
    let deploy = |v: &str, reason: &str| {
        store.ok(&[
            "deploy",
            "hello",
            v,
            "--endpoint",
            "http://127.0.0.1:9",
            "--no-wait",
            "--reason",
            reason,
        ])
    };
    deploy("1.0.0", "first");
    deploy("1.1.0", "staged for Friday");
    deploy("1.2.0", "a try");
    deploy("1.3.0", "another try");
    // A dry run of a delete shows the history line it would add, and writes nothing.
    let dry = store.ok(&["delete", "hello", "1.2.0", "--force", "--dry-run"]);
    assert!(dry.contains("+ history: delete 1.2.0"), "{dry}");
    store.ok(&[
        "delete",
        "hello",
        "1.2.0",
        "--force",
        "--reason",
        "broken build",
    ]);
    let gc = store.ok(&["gc", "hello", "--keep", "1", "--force", "--reason", "tidy"]);
    assert!(gc.contains("deleted"), "{gc}");
    let json: serde_json::Value =
        serde_json::from_str(&store.ok(&["history", "hello", "-o", "json"])).expect("json");
    let entries: Vec<(String, Vec<String>, String)> = json
        .as_array()
        .or_else(|| json["items"].as_array())
        .expect("a list")
        .iter()
        .map(|h| {
            (
                h["action"].as_str().unwrap_or_default().to_string(),
                h["versions"]
                    .as_array()
                    .map(|v| {
                        v.iter()
                            .map(|s| s.as_str().unwrap_or_default().to_string())
                            .collect()
                    })
                    .unwrap_or_default(),
                h["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let s = |x: &str| x.to_string();
    assert_eq!(entries[0], (s("deploy"), vec![], s("first")));
    assert_eq!(
        entries[1],
        (s("added"), vec![s("1.1.0")], s("staged for Friday"))
    );
    assert_eq!(
        entries[4],
        (s("delete"), vec![s("1.2.0")], s("broken build"))
    );
    assert_eq!(entries[5].0, "gc");
    assert_eq!(entries[5].2, "tidy");
    assert!(!entries[5].1.is_empty());
    // The table names the versions beside the action, and undo passes over all of them.
    let table = store.ok(&["history", "hello"]);
    assert!(
        table.contains("added 1.1.0") && table.contains("delete 1.2.0"),
        "{table}"
    );
    let (code, err) = store.code_and_stderr(&["undo", "hello", "--no-wait"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("nothing to undo"), "{err}");
}
