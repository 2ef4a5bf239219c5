//! The commands: each reads through a [`Store`], decides with `switchyard-core`, and writes
//! back through the same [`Store`]. One file per verb; the write-and-retry loop the traffic
//! verbs share is [`crate::write`].

mod delete;
mod deploy;
mod gc;
mod history;
mod install;
mod list;
mod promote;
mod quickstart;
mod rollback;
mod status;
mod traffic;
mod undo;
mod uninstall;
mod versions;

use crate::args::{Cli, Command};
use crate::exit::{fail, Code};
use crate::store::kube::KubeStore;
use crate::store::local::DirStore;
use crate::store::FunctionState;
use crate::store::Store;

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // Input is checked before any connection is made, so a typo fails fast and offline.
    let prepared = match &cli.command {
        Command::Completions(c) => {
            use clap::CommandFactory as _;
            let mut cmd = Cli::command();
            clap_complete::generate(c.shell, &mut cmd, "switchyard", &mut std::io::stdout());
            return Ok(());
        }
        Command::Traffic(t) => Some(traffic::parse_split(&t.split)?),
        Command::Deploy(d) => {
            deploy::check(d)?;
            None
        }
        Command::Install(i) => {
            install::check(i)?;
            None
        }
        _ => None,
    };
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
        let kube = KubeStore::connect(&cli.global).await?;
        return match cli.command {
            Command::Install(i) => install::run(kube.client(), i).await,
            Command::Uninstall(u) => uninstall::run(kube.client(), u).await,
            _ => Ok(()),
        };
    }
    let store: Box<dyn Store> = match &cli.global.store {
        Some(dir) => Box::new(DirStore::open(dir)?),
        None => Box::new(KubeStore::connect(&cli.global).await?),
    };
    let store: &dyn Store = store.as_ref();
    match cli.command {
        Command::Deploy(d) => deploy::run(store, d).await,
        Command::Versions(r) => versions::versions(store, r).await,
        Command::Traffic(t) => traffic::traffic(store, t, prepared.unwrap_or_default()).await,
        Command::Promote(p) => promote::promote(store, p).await,
        Command::Rollback(r) => rollback::rollback(store, r).await,
        Command::Undo(u) => undo::undo(store, u).await,
        Command::Status(s) => status::status(store, s).await,
        Command::History(r) => history::history(store, r).await,
        Command::List(l) => list::list(store, l).await,
        Command::Delete(d) => delete::delete(store, d).await,
        Command::Gc(g) => gc::gc(store, g).await,
        Command::Completions(_)
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
