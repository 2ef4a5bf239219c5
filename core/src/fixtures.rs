//! Test states that read like sentences: `Function::test("hello").with_weight("1.0.0", 900_000)`.
//!
//! Compiled for this crate's tests and, with the `fixtures` feature, for other crates' tests.

use kube::api::ObjectMeta;

use crate::resources::{
    Affinity, Function, FunctionSpec, FunctionVersion, FunctionVersionSpec, Tag, TrafficTarget,
};

impl Function {
    /// A Function named `name` in namespace `default`, generation 1, with no traffic yet.
    pub fn test(name: &str) -> Function {
        let mut f = Function::new(name, FunctionSpec::default());
        f.metadata.namespace = Some("default".into());
        f.metadata.generation = Some(1);
        f
    }

    /// The same Function in namespace `ns`.
    pub fn in_namespace(mut self, ns: &str) -> Function {
        self.metadata.namespace = Some(ns.into());
        self
    }

    /// With `version` at `ppm` (replacing its previous weight).
    pub fn with_weight(mut self, version: &str, ppm: u32) -> Function {
        self.spec.traffic.retain(|t| t.version != version);
        self.spec.traffic.push(TrafficTarget::new(version, ppm));
        self
    }

    /// With tag `tag` naming `version`.
    pub fn with_tag(mut self, tag: &str, version: &str) -> Function {
        self.spec.tags.push(Tag {
            tag: tag.into(),
            version: version.into(),
        });
        self
    }

    /// Answering on these hosts.
    pub fn with_hosts(mut self, hosts: &[&str]) -> Function {
        self.spec.hosts = hosts.iter().map(|h| h.to_string()).collect();
        self
    }

    /// Answering on this path prefix.
    pub fn with_prefix(mut self, prefix: &str) -> Function {
        self.spec.path_prefix = Some(prefix.into());
        self
    }

    /// Sticking clients to versions by this header.
    pub fn with_affinity_header(mut self, header: &str) -> Function {
        self.spec.affinity = Some(Affinity {
            header: Some(header.into()),
            cookie: None,
        });
        self
    }

    /// Letting requests pin a version.
    pub fn with_pinning(mut self) -> Function {
        self.spec.pinning = true;
        self
    }

    /// At metadata generation `generation`.
    pub fn at_generation(mut self, generation: i64) -> Function {
        self.metadata.generation = Some(generation);
        self
    }
}

impl FunctionVersion {
    /// An external version of `function` served at `endpoint`, in namespace `default`.
    pub fn test_endpoint(function: &str, version: &str, endpoint: &str) -> FunctionVersion {
        Self::test_spec(function, version, None, Some(endpoint))
    }

    /// A managed version of `function` running `image`, in namespace `default`.
    pub fn test_image(function: &str, version: &str, image: &str) -> FunctionVersion {
        Self::test_spec(function, version, Some(image), None)
    }

    fn test_spec(
        function: &str,
        version: &str,
        image: Option<&str>,
        endpoint: Option<&str>,
    ) -> FunctionVersion {
        FunctionVersion {
            metadata: ObjectMeta {
                name: Some(crate::object_name(function, version)),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: FunctionVersionSpec {
                function: function.into(),
                version: version.into(),
                image: image.map(Into::into),
                port: None,
                env: vec![],
                args: vec![],
                replicas: None,
                resources: None,
                endpoint: endpoint.map(Into::into),
            },
        }
    }

    /// The same version in namespace `ns`.
    pub fn in_namespace(mut self, ns: &str) -> FunctionVersion {
        self.metadata.namespace = Some(ns.into());
        self
    }
}

impl crate::plan::VersionState {
    /// Each of `versions`, ready: what a plan is handed when every version can take traffic.
    pub fn all_ready(versions: &[&str]) -> Vec<crate::plan::VersionState> {
        versions
            .iter()
            .map(|v| crate::plan::VersionState {
                version: v.to_string(),
                ready: true,
            })
            .collect()
    }
}
