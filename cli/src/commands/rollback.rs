//! `rollback FN [--to V]`: everything back to the stable version.

use switchyard_core::plan;
use switchyard_core::Action;

use crate::args;
use crate::exit;
use crate::store::Store;
use crate::write::{apply, run};

/// `rollback FN [--to V]`.
pub async fn rollback(store: &dyn Store, args: args::Rollback) -> anyhow::Result<()> {
    run(store, &args.function, &args.write, |input| {
        let to = args.to.as_deref().map(|v| input.resolve(v)).transpose()?;
        let targets = plan::rollback(&input.function.name, &input.function.spec, to.as_deref())
            .map_err(exit::plan)?;
        apply(input, targets, Action::Rollback, args.force)
    })
    .await
}
