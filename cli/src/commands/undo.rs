//! `undo FN [--to N]`: restore the previous traffic state exactly, or revision N's.

use switchyard_core::plan;

use crate::args;
use crate::exit;
use crate::store::Store;
use crate::write::{run, Next};

/// `undo FN [--to N]`.
pub async fn undo(store: &dyn Store, args: args::Undo) -> anyhow::Result<()> {
    run(store, &args.function, &args.write, |input| {
        let (name, spec, states) = (&input.function.name, &input.function.spec, input.states());
        match args.to {
            Some(revision) => {
                plan::undo_to(name, spec, revision, &states, args.force, input.change)
            }
            None => plan::undo(name, spec, &states, args.force, input.change),
        }
        .map(Next::from)
        .map_err(exit::plan)
    })
    .await
}
