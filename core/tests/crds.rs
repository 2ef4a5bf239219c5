//! The CRDs in `manifests/crds.yaml` are exactly what the Rust types generate.
//! `UPDATE_GOLDEN=1 cargo test -p switchyard-core --test crds` rewrites the file.

use std::path::PathBuf;

#[test]
fn manifests_crds_yaml_matches_the_rust_types() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/crds.yaml");
    let generated = switchyard_core::crd::crds_yaml();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
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
    assert!(
        yaml.contains("x-kubernetes-list-type: map"),
        "status.routers must be a list-map"
    );
    assert!(yaml.contains("shortNames:\n    - fn") && yaml.contains("- fv"));
}
