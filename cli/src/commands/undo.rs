//! `undo FN`: restore the previous traffic state exactly.

use switchyard_core::plan;

use crate::args;
use crate::exit;
use crate::store::Store;
use crate::write::{run, Next};

/// `undo FN`.
pub async fn undo(store: &dyn Store, args: args::Undo) -> anyhow::Result<()> {
    run(store, &args.function, &args.write, |input| {
        plan::undo(
            &input.function.name,
            &input.function.spec,
            &input.states(),
            args.force,
            input.change,
        )
        .map(Next::Spec)
        .map_err(exit::plan)
    })
    .await
}
