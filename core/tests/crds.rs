//! The CRDs in `manifests/crds.yaml` are exactly what the Rust types generate.
//! `UPDATE_GOLDEN=1 cargo test -p switchyard-core --test crds` rewrites the file — never under
//! CI (`CI` set), where a golden test that rewrites itself could not fail.

use std::ffi::OsString;
use std::path::PathBuf;

/// Whether this run should rewrite the golden file: `UPDATE_GOLDEN` asks for it, and `CI`
/// forbids it (the run then fails rather than pass by rewriting what it checks).
fn rewrite_golden(update: Option<OsString>, ci: Option<OsString>) -> Result<bool, String> {
    match (update, ci) {
        (None, _) => Ok(false),
        (Some(_), None) => Ok(true),
        (Some(_), Some(ci)) => Err(format!(
            "UPDATE_GOLDEN is set under CI (CI={}): a golden test must compare, not rewrite; \
             update manifests/crds.yaml locally and commit it",
            ci.to_string_lossy()
        )),
    }
}

#[test]
fn manifests_crds_yaml_matches_the_rust_types() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/crds.yaml");
    let generated = switchyard_core::crd::crds_yaml();
    let rewrite = rewrite_golden(std::env::var_os("UPDATE_GOLDEN"), std::env::var_os("CI"))
        .unwrap_or_else(|refusal| panic!("{refusal}"));
    if rewrite {
        std::fs::write(&path, &generated).expect("write manifests/crds.yaml");
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "manifests/crds.yaml is out of date with the Rust types; \
         run UPDATE_GOLDEN=1 cargo test -p switchyard-core --test crds"
    );
}

#[test]
fn the_crds_carry_the_rules_the_api_server_must_enforce() {
    let yaml = switchyard_core::crd::crds_yaml();
    for rule in [
        "self.spec == oldSelf.spec",
        "self.map(t, t.weight).sum() == 1000000",
        "self.all(t, self.exists_one(u, u.version == t.version))",
        "has(self.image) != has(self.endpoint)",
    ] {
        assert!(yaml.contains(rule), "missing CEL rule {rule}");
    }
    assert!(yaml.contains("shortNames:\n    - fn") && yaml.contains("- fv"));
    // Only formats Kubernetes knows: any other warns on every `kubectl apply`.
    for line in yaml
        .lines()
        .filter(|l| l.trim_start().starts_with("format:"))
    {
        let format = line.trim_start().trim_start_matches("format:").trim();
        assert!(
            [
                "int32",
                "int64",
                "float",
                "double",
                "byte",
                "date",
                "date-time",
                "password"
            ]
            .contains(&format),
            "unknown format {format}"
        );
    }
}

#[test]
fn update_golden_rewrites_only_outside_ci() {
    let set = || Some(OsString::from("1"));
    assert_eq!(rewrite_golden(None, None), Ok(false));
    assert_eq!(rewrite_golden(None, set()), Ok(false));
    assert_eq!(rewrite_golden(set(), None), Ok(true));
    let refusal =
        rewrite_golden(set(), Some(OsString::from("true"))).expect_err("refused under CI");
    assert!(
        refusal.contains("UPDATE_GOLDEN is set under CI (CI=true)"),
        "{refusal}"
    );
}
