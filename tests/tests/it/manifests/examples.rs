//! `manifests/examples/`: every valid example accepted and every invalid one refused, by core
//! and by the server, for the reason its top comment states.

use super::*;

/// The value of a `# <key>: ...` line in the file's top comment.
fn top_comment_value(path: &Path, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).expect("reading an example");
    let prefix = format!("# {key}:");
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .find_map(|l| l.strip_prefix(&prefix).map(|v| v.trim().to_string()))
}

fn assert_top_comment(path: &Path) {
    let text = std::fs::read_to_string(path).expect("reading an example");
    let comment: Vec<&str> = text.lines().take_while(|l| l.starts_with('#')).collect();
    assert!(
        comment
            .iter()
            .any(|l| l.trim_start_matches('#').trim().len() > 10),
        "{} must open with a comment saying what it shows",
        path.display()
    );
}

/// Runs switchyard-core's validation on every Function and FunctionVersion of one example
/// file. A Function is checked against the versions of the same file; where a file holds no
/// version of it, against the versions it names itself (so that the file's intended flaw is
/// what shows).
fn core_verdicts(manifests: &[Manifest]) -> Vec<(String, Result<(), validate::ValidationError>)> {
    let versions: Vec<FunctionVersion> = manifests
        .iter()
        .filter(|m| m.kind() == "FunctionVersion")
        .map(|m| serde_json::from_value(m.json()).unwrap_or_else(|e| panic!("{}: {e}", m.label())))
        .collect();
    let mut verdicts = Vec::new();
    for fv in &versions {
        let name = fv.metadata.name.clone().unwrap_or_default();
        let verdict = validate::function_version(&fv.spec);
        if verdict.is_ok() {
            assert_eq!(
                name,
                switchyard_core::object_name(&fv.spec.function, &fv.spec.version),
                "a FunctionVersion is named <function>-<version with dots as dashes>"
            );
        }
        verdicts.push((format!("FunctionVersion {name}"), verdict));
    }
    for m in manifests.iter().filter(|m| m.kind() == "Function") {
        let f: Function =
            serde_json::from_value(m.json()).unwrap_or_else(|e| panic!("{}: {e}", m.label()));
        let name = m.name();
        let mut known: Vec<String> = versions
            .iter()
            .filter(|v| v.spec.function == name)
            .map(|v| v.spec.version.clone())
            .collect();
        if known.is_empty() {
            known.extend(f.spec.traffic.iter().map(|t| t.version.clone()));
            known.extend(f.spec.tags.iter().map(|t| t.version.clone()));
        }
        let verdict = validate::function(&name, &f.spec, known.iter().map(String::as_str));
        verdicts.push((format!("Function {name}"), verdict));
    }
    verdicts
}

#[tokio::test]
async fn every_valid_example_is_accepted_by_core_and_by_the_server() {
    let client = client().await;
    let files = yaml_files(&manifests_dir().join("examples"));
    assert!(files.len() >= 2, "expected valid examples, found {files:?}");
    for path in &files {
        assert_top_comment(path);
        let manifests = read_manifests(path);
        assert!(!manifests.is_empty(), "{} holds no object", path.display());
        for (what, verdict) in core_verdicts(&manifests) {
            if let Err(e) = verdict {
                panic!("{}: core refuses {what}: {e}", path.display());
            }
        }
        // Each example in a namespace of its own, since several use the same names.
        let ns = namespace(&client, "example").await;
        for m in &manifests {
            apply(&client, m, &ns, true)
                .await
                .unwrap_or_else(|e| panic!("dry-run apply of {}: {e}", m.label()));
        }
    }
}

#[tokio::test]
async fn every_invalid_example_is_refused_by_core_and_by_the_server_for_the_reason_it_states() {
    let client = client().await;
    let ns = namespace(&client, "example-invalid").await;
    let files = yaml_files(&manifests_dir().join("examples/invalid"));
    assert!(
        files.len() >= 4,
        "expected invalid examples, found {files:?}"
    );
    for path in &files {
        let file = path.display();
        assert_top_comment(path);
        let server_says = top_comment_value(path, "server says")
            .unwrap_or_else(|| panic!("{file}: no `# server says:` line"));
        let core_says = top_comment_value(path, "core says")
            .unwrap_or_else(|| panic!("{file}: no `# core says:` line"));
        let manifests = read_manifests(path);
        assert_eq!(manifests.len(), 1, "{file}: one invalid object per file");
        let m = &manifests[0];

        let verdicts = core_verdicts(&manifests);
        let refusal = verdicts
            .iter()
            .find_map(|(_, v)| v.as_ref().err())
            .unwrap_or_else(|| panic!("{file}: core accepts it"));
        assert!(
            refusal.to_string().contains(&core_says),
            "{file}: core says {refusal:?}, the file expects {core_says:?}"
        );

        match apply(&client, m, &ns, true).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{file}: {}", status.message);
                assert!(
                    status.message.contains(&server_says),
                    "{file}: the server says {:?}, the file expects {server_says:?}",
                    status.message
                );
            }
            Err(e) => panic!("{file}: expected a 422 from the server, got {e}"),
            Ok(_) => panic!("{file}: the server accepted it"),
        }
    }
}
