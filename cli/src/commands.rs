//! The commands: each reads through a [`Store`], decides with `switchyard-core`, and writes
//! back through the same [`Store`]. One file per verb; the write-and-retry loop the traffic
//! verbs share is [`crate::write`].

mod canary;
mod delete;
mod deploy;
mod describe;
mod gc;
mod history;
mod install;
mod list;
mod promote;
mod quickstart;
mod rollback;
mod routers;
mod set;
mod shadow;

pub use shadow::describe as shadow_phrase;
mod status;
mod tag;
mod traffic;
mod undo;
mod uninstall;
mod versions;

use crate::args::{self, Cli, Command};
use crate::exit::{fail, Code};
use crate::store::kube::{KubeStore, Target};
use crate::store::local::DirStore;
use crate::store::FunctionState;
use crate::store::Store;

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // Input is checked before any connection is made, so a typo fails fast and offline.
    match &cli.command {
        Command::Completions(c) => {
            crate::completions::print(c.shell);
            return Ok(());
        }
        Command::Man(m) => return man(&m.dir),
        Command::Traffic(t) => {
            traffic::parse_split(&t.split)?;
        }
        Command::Deploy(d) => deploy::check(d, cli.global.store.is_some())?,
        Command::Canary(c) => {
            canary::prepare(c)?;
        }
        Command::Install(i) => install::check(i)?,
        _ => {}
    }
    conflicting_targets(&cli.global)?;
    if let Command::Quickstart(q) = cli.command {
        return quickstart::run(q, cli.global.store).await;
    }
    if let Command::Install(_) | Command::Uninstall(_) = cli.command {
        if let Some(dir) = &cli.global.store {
            return Err(fail(
                Code::Invalid,
                format!(
                    "install and uninstall work on a cluster; a local store (dir:{}) needs no installing",
                    dir.display()
                ),
            ));
        }
        let kube = KubeStore::open(&target(&cli.global)).await?;
        return match cli.command {
            Command::Install(i) => install::run(kube.client(), i).await,
            Command::Uninstall(u) => uninstall::run(kube.client(), u).await,
            _ => Ok(()),
        };
    }
    if let Command::List(l) = &cli.command {
        if l.all_namespaces {
            if let Some(dir) = &cli.global.store {
                // Said, not refused: the answer to "every namespace" is this one.
                eprintln!(
                    "note: a local store (dir:{}) has one namespace; -A lists it",
                    dir.display()
                );
            } else {
                let kube = KubeStore::open(&target(&cli.global)).await?;
                if let Command::List(l) = cli.command {
                    return list::list(list::Scope::Every(&kube), l).await;
                }
            }
        }
    }
    if let Command::Complete(_) = cli.command {
        // Completion must never block a prompt on a lock, nor print an error into it.
        let opened: anyhow::Result<(Box<dyn Store>, canary::Rollouts)> = match &cli.global.store {
            Some(dir) => DirStore::open(dir, false, std::time::Duration::ZERO).and_then(|s| {
                let rollouts = local_rollouts(dir, std::time::Duration::ZERO)?;
                Ok((Box::new(s) as Box<dyn Store>, rollouts))
            }),
            None => KubeStore::open(&target(&cli.global)).await.map(|s| {
                let rollouts = canary::Rollouts::Kube(s.client().clone());
                (Box::new(s) as Box<dyn Store>, rollouts)
            }),
        };
        return match opened {
            Ok((store, rollouts)) => run_on(store.as_ref(), &rollouts, cli.command).await,
            Err(_) => Ok(()),
        };
    }
    let (store, rollouts): (Box<dyn Store>, canary::Rollouts) = match &cli.global.store {
        // Only a deploy creates a store: any other command on a path that does not exist is
        // a typo to report, not an empty store to invent.
        Some(dir) => {
            let store = DirStore::open(
                dir,
                matches!(cli.command, Command::Deploy(_)),
                lock_wait(&cli.command),
            )?;
            let rollouts = local_rollouts(dir, lock_wait(&cli.command))?;
            (Box::new(store), rollouts)
        }
        None => {
            let kube = KubeStore::open(&target(&cli.global)).await?;
            let rollouts = canary::Rollouts::Kube(kube.client().clone());
            (Box::new(kube), rollouts)
        }
    };
    run_on(store.as_ref(), &rollouts, cli.command).await
}

/// The whole Functions of a local store (status included), for the canary's transitions and
/// views; opened after [`DirStore::open`] has checked the path.
fn local_rollouts(
    dir: &std::path::Path,
    lock_wait: std::time::Duration,
) -> anyhow::Result<canary::Rollouts> {
    let store = switchyard_store::LocalStore::open_existing(dir)
        .map_err(|e| fail(Code::Invalid, e.to_string()))?
        .bounded_lock_wait(lock_wait, |lock| {
            eprintln!(
                "waiting for the store's lock {} (another writer holds it)…",
                lock.display()
            )
        });
    Ok(canary::Rollouts::Dir(store))
}

/// Runs a command that works through a store.
async fn run_on(
    store: &dyn Store,
    rollouts: &canary::Rollouts,
    command: Command,
) -> anyhow::Result<()> {
    // Flags are read before anything is read from the store: bad input touches nothing.
    let prepared = match &command {
        Command::Traffic(t) => Some(traffic::parse_split(&t.split)?),
        _ => None,
    };
    let settings = match &command {
        Command::Set(s) => Some(set::settings(s)?),
        _ => None,
    };
    let mirror = match &command {
        Command::Shadow(s) => shadow::prepare(s)?,
        _ => None,
    };
    let rollout_plan = match &command {
        Command::Canary(c) => canary::prepare(c)?,
        _ => None,
    };
    match command {
        Command::Deploy(d) => deploy::run(store, d).await,
        Command::Versions(r) => versions::versions(store, r).await,
        Command::Traffic(t) => traffic::traffic(store, t, prepared.unwrap_or_default()).await,
        Command::Promote(p) => promote::promote(store, p).await,
        Command::Rollback(r) => rollback::rollback(store, r).await,
        Command::Undo(u) => undo::undo(store, u).await,
        Command::Tag(t) => tag::tag(store, t).await,
        Command::Untag(u) => tag::untag(store, u).await,
        Command::Set(s) => set::set(store, s, settings.unwrap_or_default()).await,
        Command::Shadow(s) => shadow::run(store, s, mirror).await,
        Command::Canary(c) => canary::run(store, rollouts, c, rollout_plan).await,
        Command::Status(s) => status::status(store, rollouts, s).await,
        Command::History(r) => history::run(store, r).await,
        Command::Describe(r) => describe::describe(store, rollouts, r).await,
        Command::List(l) => list::list(list::Scope::One(store), l).await,
        Command::Delete(d) => delete::delete(store, d).await,
        Command::Gc(g) => gc::gc(store, g).await,
        Command::Routers(r) => routers::routers(store, r).await,
        Command::Complete(c) => {
            // A completion that cannot read the store offers nothing rather than an error
            // line in the middle of the user's prompt.
            let names = match (c.what, &c.function) {
                (args::CompleteWhat::Functions, _) => store
                    .functions()
                    .await
                    .map(|fs| fs.into_iter().map(|f| f.name).collect())
                    .unwrap_or_default(),
                (args::CompleteWhat::Versions, Some(function)) => store
                    .versions(function)
                    .await
                    .map(|vs| vs.into_iter().map(|v| v.spec.version).collect())
                    .unwrap_or_default(),
                (args::CompleteWhat::Versions, None) => Vec::<String>::new(),
            };
            for name in names {
                crate::output::line(name);
            }
            Ok(())
        }
        Command::Completions(_)
        | Command::Man(_)
        | Command::Quickstart(_)
        | Command::Install(_)
        | Command::Uninstall(_) => Ok(()),
    }
}

/// Reads one function; exit 2 when it does not exist.
async fn function(store: &dyn Store, name: &str) -> anyhow::Result<FunctionState> {
    store.function(name).await?.ok_or_else(|| {
        fail(
            Code::Invalid,
            format!("function {name} not found in {}", store.location()),
        )
    })
}

/// How long a write to a local store waits for another writer's lock: the command's
/// `--timeout`, else the default of the write flags.
fn lock_wait(command: &Command) -> std::time::Duration {
    let write = match command {
        Command::Deploy(d) => Some(&d.write),
        Command::Traffic(t) => Some(&t.write),
        Command::Promote(p) => Some(&p.write),
        Command::Rollback(r) => Some(&r.write),
        Command::Undo(u) => Some(&u.write),
        Command::Canary(c) => Some(&c.write),
        _ => None,
    };
    write.map_or(crate::write::DEFAULT_LOCK_WAIT, |w| w.timeout)
}

/// A local store and a cluster named at once are an error naming both: otherwise one would be
/// silently ignored, and someone who believes they changed production changed a directory.
fn conflicting_targets(global: &crate::args::Global) -> anyhow::Result<()> {
    let Some(dir) = &global.store else {
        return Ok(());
    };
    let from_env = std::env::var_os("SWITCHYARD_STORE")
        .is_some_and(|v| crate::args::store_flag(&v.to_string_lossy()).ok().as_ref() == Some(dir))
        && !std::env::args_os()
            .any(|a| a == "--store" || a.to_string_lossy().starts_with("--store="));
    let store = format!(
        "--store dir:{}{}",
        dir.display(),
        if from_env {
            " (from SWITCHYARD_STORE)"
        } else {
            ""
        }
    );
    let cluster = [
        global.context.as_ref().map(|c| format!("--context {c}")),
        global
            .kubeconfig
            .as_ref()
            .map(|k| format!("--kubeconfig {}", k.display())),
        global
            .namespace
            .as_ref()
            .map(|n| format!("--namespace {n}")),
    ];
    match cluster.into_iter().flatten().next() {
        Some(flag) => Err(fail(
            Code::Invalid,
            format!(
                "{store} conflicts with {flag}: name one target, a local store or a cluster{}",
                if from_env {
                    " (unset SWITCHYARD_STORE to use the cluster)"
                } else {
                    ""
                }
            ),
        )),
        None => Ok(()),
    }
}

/// The cluster the global flags name, for [`KubeStore::open`].
fn target(global: &crate::args::Global) -> Target {
    Target {
        kubeconfig: global.kubeconfig.clone(),
        context: global.context.clone(),
        namespace: global.namespace.clone(),
        router_namespace: global.router_namespace.clone(),
    }
}

/// Appended to the bash completion script: completes function names (and the version of
/// `promote`, `delete` and `rollback --to`) by asking the same binary, with the same target
/// flags, `switchyard __complete functions|versions FN`.
/// Writes `switchyard.1` and one `switchyard-<command>.1` per visible command into `dir`.
fn man(dir: &std::path::Path) -> anyhow::Result<()> {
    use clap::CommandFactory as _;
    let write = |name: &str, cmd: clap::Command| -> anyhow::Result<()> {
        let path = dir.join(format!("{name}.1"));
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd).title(name).render(&mut page)?;
        std::fs::write(&path, page)
            .map_err(|e| fail(Code::Error, format!("writing {}: {e}", path.display())))?;
        Ok(())
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| fail(Code::Error, format!("creating {}: {e}", dir.display())))?;
    let root = Cli::command().name("switchyard");
    let mut written = 1;
    for sub in root.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("switchyard-{}", sub.get_name());
        let usage = format!("switchyard {}", sub.get_name());
        write(&name, sub.clone().bin_name(usage))?;
        written += 1;
    }
    write("switchyard", root)?;
    crate::output::line(format_args!(
        "wrote {written} man pages to {}",
        dir.display()
    ));
    Ok(())
}

/// bash's name completion (see crate::completions for zsh and fish).
pub(crate) const BASH_NAMES: &str = r#"
# Function and version names, read from the cluster or store the command line names.
_switchyard_names() {
    local i word cmd="" fn="" n=0 prev="${COMP_WORDS[COMP_CWORD-1]}"
    local -a target=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${COMP_WORDS[i]}"
        case "$word" in
            --kubeconfig|--context|-n|--namespace|--router-namespace|--store)
                target+=("$word" "${COMP_WORDS[i+1]}"); ((i++)); continue ;;
            -o|--output|--timeout|--reason|--to|--keep|--image|--endpoint|--port|--env|-e|--args|--arg|--replicas|--cpu|--memory|--traffic)
                ((i++)); continue ;;
            -*) continue ;;
        esac
        if [[ -z "$cmd" ]]; then cmd="$word"
        else ((n++)); [[ $n -eq 1 ]] && fn="$word"; fi
    done
    case "$cmd" in
        versions|traffic|promote|rollback|undo|status|describe|history|delete|gc|deploy|tag|untag|set|shadow) ;;
        *) return ;;
    esac
    if [[ "$prev" == "--to" && -n "$fn" ]]; then
        "${COMP_WORDS[0]}" "${target[@]}" __complete versions "$fn" 2>/dev/null
    elif [[ "$prev" == -* ]]; then
        return
    elif [[ $n -eq 0 ]]; then
        "${COMP_WORDS[0]}" "${target[@]}" __complete functions 2>/dev/null
    elif [[ ( $n -eq 1 && ( "$cmd" == promote || "$cmd" == delete ) ) || ( $n -eq 2 && "$cmd" == tag ) ]]; then
        "${COMP_WORDS[0]}" "${target[@]}" __complete versions "$fn" 2>/dev/null
    fi
}

_switchyard_dynamic() {
    _switchyard "$@"
    local cur="${COMP_WORDS[COMP_CWORD]}" names
    [[ "$cur" == -* ]] && return 0
    names="$(_switchyard_names)"
    if [[ -n "$names" ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$names" -- "$cur")
    fi
}

complete -F _switchyard_dynamic -o bashdefault -o default switchyard"#;
