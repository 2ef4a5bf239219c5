//! `rollback FN [--to V]`: everything back to the stable version.

use switchyard_core::plan::{self, Rollback};
use switchyard_core::Action;

use crate::args;
use crate::exit;
use crate::store::Store;
use crate::write::{apply, run, Next};

/// `rollback FN [--to V]`.
pub async fn rollback(store: &dyn Store, args: args::Rollback) -> anyhow::Result<()> {
    run(store, &args.function, &args.write, |input| {
        let to = args.to.as_deref().map(|v| input.resolve(v)).transpose()?;
        let name = &input.function.name;
        match plan::rollback(name, &input.function.spec, to.as_deref(), &input.states())
            .map_err(exit::plan)?
        {
            Rollback::To(targets) => apply(input, targets, Action::Rollback, args.force),
            Rollback::Already { version, left } => Ok(Next::Unchanged(if left.is_empty() {
                format!("{name}: already rolled back, 100% on {version}; nothing to change")
            } else {
                format!(
                    "{name}: already rolled back, 100% on {version} (rolled back from {}); nothing to change, use --to VERSION to go elsewhere",
                    left.join(", ")
                )
            })),
        }
    })
    .await
}
