//! `deploy`: a new immutable version (managed image or external endpoint), the Function on a
//! first deploy, and optionally a share of the traffic.

use switchyard_core::plan::{self, Change};
use switchyard_core::weight::parse_percent;
use switchyard_core::{validate, Action, EnvVar, FunctionVersionSpec, Resources};

use crate::args;
use crate::exit::{self, fail, Code};
use crate::output::Diff;
use crate::store::kube::DEFAULT_PORT;
use crate::store::{Created, Store, Written};
use crate::{timing, wait, write};

/// The FunctionVersion spec the flags describe, validated.
fn spec(d: &args::Deploy) -> anyhow::Result<FunctionVersionSpec> {
    let env = d
        .env
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| EnvVar {
                    name: k.to_string(),
                    value: v.to_string(),
                })
                .ok_or_else(|| fail(Code::Invalid, format!("--env {kv:?} is not K=V")))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let managed = d.endpoint.is_none();
    let spec = FunctionVersionSpec {
        function: d.function.clone(),
        version: d.version.clone(),
        image: d.image.clone(),
        port: managed.then_some(d.port),
        env,
        args: d.args.clone(),
        replicas: managed.then_some(d.replicas),
        resources: (d.cpu.is_some() || d.memory.is_some()).then(|| Resources {
            cpu: d.cpu.clone(),
            memory: d.memory.clone(),
        }),
        endpoint: d.endpoint.clone(),
    };
    validate::function_version(&spec).map_err(|e| fail(Code::Invalid, e.to_string()))?;
    Ok(spec)
}

/// Checks the flags before anything is read from the cluster; `local`: the target is a local
/// store, which runs external versions only.
pub fn check(d: &args::Deploy, local: bool) -> anyhow::Result<()> {
    let (name, version) = (&d.function, &d.version);
    match (&d.image, &d.endpoint, local) {
        (None, None, true) => {
            return Err(fail(
                Code::Invalid,
                format!("deploy {name}@{version} to a local store needs --endpoint URL (it runs external versions only)"),
            ))
        }
        (None, None, false) => {
            return Err(fail(
                Code::Invalid,
                format!("deploy {name}@{version} needs --image IMG (a managed version) or --endpoint URL (an external one)"),
            ))
        }
        (Some(_), _, true) => {
            return Err(fail(
                Code::Invalid,
                format!("the local store runs external versions only: deploy {name}@{version} with --endpoint URL (--image needs a Kubernetes cluster)"),
            ))
        }
        _ => {}
    }
    spec(d)?;
    if let Some(p) = &d.traffic {
        parse_percent(p).map_err(|e| fail(Code::Invalid, format!("--traffic: {e}")))?;
    }
    Ok(())
}

/// `deploy FN VERSION …`.
pub async fn run(store: &dyn Store, d: args::Deploy) -> anyhow::Result<()> {
    let spec = spec(&d)?;
    let share = d.traffic.as_deref().map(parse_percent).transpose()?;
    let (name, version) = (&d.function, &d.version);
    if let Some(image) = &spec.image {
        if !image.contains("@sha256:") {
            eprintln!(
                "warning: image {image} is not pinned by digest; the version is immutable but the tag may move (use {image}@sha256:…)"
            );
        }
    }
    let (function, versions) = futures::try_join!(store.function(name), store.versions(name))?;
    timing::mark("read");
    plan::name_collision(
        name,
        versions.iter().map(|v| v.spec.version.as_str()),
        version,
    )
    .map_err(exit::plan)?;
    let existing = versions.iter().find(|v| v.spec.version == *version);
    if let Some(v) = existing {
        if v.spec != spec {
            return Err(immutable(name, version));
        }
    }
    if d.write.dry_run {
        let mut diff = Diff::new(format!("{name}@{version} in {}:", store.location()));
        match existing {
            Some(_) => diff.note("already deployed with this spec: nothing to create"),
            None => {
                let object = switchyard_core::object_name(name, version);
                diff.added(format!("FunctionVersion {object}"));
                for line in serde_yaml::to_string(&spec)?.lines() {
                    diff.added(format!("  {line}"));
                }
                if spec.image.is_some() {
                    diff.added(format!(
                        "Deployment {object} ({} replicas, port {})",
                        spec.replicas.unwrap_or(1),
                        spec.port.unwrap_or(DEFAULT_PORT)
                    ));
                    diff.added(format!("Service {object} (port 80)"));
                }
            }
        }
        // The whole change to the Function, as the write would make it.
        let change = Change {
            now: format!("{:.0}", jiff::Timestamp::now()),
            actor: store.actor(),
            reason: d.write.reason.clone(),
        };
        match &function {
            None => {
                diff.added(format!("Function {name}"));
                let first = plan::first_deploy(version, &change);
                write::diff_into(&mut diff, &Default::default(), &first);
            }
            Some(f) => {
                if let Some(share) = share.filter(|s| *s > 0) {
                    let mut states: Vec<_> = versions.iter().map(|v| v.state()).collect();
                    if existing.is_none() {
                        // Created by this deploy; a managed one is ready once it has waited.
                        states.push(plan::VersionState {
                            version: version.clone(),
                            ready: true,
                        });
                    }
                    let traffic = plan::with_share(&f.spec.traffic, version, share);
                    let next = plan::apply(
                        name,
                        &f.spec,
                        traffic,
                        Action::Deploy,
                        &states,
                        d.force,
                        &change,
                    )
                    .map_err(exit::plan)?;
                    write::diff_into(&mut diff, &f.spec, &next);
                }
            }
        }
        diff.print();
        return Ok(());
    }

    let created = store.create_version(&spec).await?;
    timing::mark("write");
    match created {
        Created::Different => return Err(immutable(name, version)),
        Created::Same => crate::output::line(format_args!(
            "{name}@{version} is already deployed with this spec"
        )),
        Created::New => match &spec.endpoint {
            Some(url) => crate::output::line(format_args!(
                "{name}@{version} registered: external endpoint {url}"
            )),
            None => {
                let object = switchyard_core::object_name(name, version);
                crate::output::line(format_args!(
                    "{name}@{version} created: Deployment and Service {object}"
                ))
            }
        },
    }
    if spec.image.is_some() && !d.write.no_wait {
        let waited = wait::ready(store, name, version, d.write.timeout).await;
        timing::mark("wait");
        waited?;
        crate::output::line(format_args!("{name}@{version} is ready"));
    }

    let change = Change {
        now: format!("{:.0}", jiff::Timestamp::now()),
        actor: store.actor(),
        reason: d.write.reason.clone(),
    };
    if function.is_none() {
        let first = plan::first_deploy(version, &change);
        if let Written::Done(after) = store.create_function(name, &first).await? {
            // Timed from the landed write, not from any wait for a local store's lock.
            let sent = std::time::Instant::now();
            let landed = write::Landed {
                before: crate::store::FunctionState {
                    spec: Default::default(),
                    ..(*after).clone()
                },
                after: *after,
                sent,
                ahead: Default::default(),
            };
            return write::finish(store, landed, &d.write).await;
        }
        // Someone created it meanwhile: carry on as for an existing function.
    }
    match share {
        Some(share) if share > 0 => {
            let landed = write::change(store, name, &d.write, |input| {
                let traffic = plan::with_share(&input.function.spec.traffic, version, share);
                plan::apply(
                    name,
                    &input.function.spec,
                    traffic,
                    Action::Deploy,
                    &input.states(),
                    d.force,
                    input.change,
                )
                .map(write::Next::from)
                .map_err(exit::plan)
            })
            .await?;
            match landed {
                Some(landed) => write::finish(store, landed, &d.write).await,
                None => Ok(()),
            }
        }
        _ => {
            if created == Created::New {
                // No traffic moves, but the deploy (and its --reason) goes into the history.
                write::record_event(
                    store,
                    name,
                    Action::Added,
                    &[version.to_string()],
                    d.write.reason.clone(),
                )
                .await?;
                crate::output::line(format_args!(
                    "{name}@{version} has 0% of the traffic; shift some with `switchyard traffic {name} {version}=10 …`"
                ));
            }
            Ok(())
        }
    }
}

fn immutable(name: &str, version: &str) -> anyhow::Error {
    fail(
        Code::Refused,
        format!(
            "version {version} of function {name} already exists with a different spec: versions are immutable, deploy a new version"
        ),
    )
}
