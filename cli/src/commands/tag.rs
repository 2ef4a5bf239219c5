//! `tag FN TAG VERSION` and `untag FN TAG`: stable names for versions.

use switchyard_core::plan;

use crate::args;
use crate::exit;
use crate::store::Store;
use crate::write::{run, Next};

/// `tag FN TAG VERSION`.
pub async fn tag(store: &dyn Store, args: args::TagArgs) -> anyhow::Result<()> {
    run(store, &args.function, &args.write, |input| {
        let version = input.resolve(&args.version)?;
        let name = &input.function.name;
        match plan::tag(
            name,
            &input.function.spec,
            &args.tag,
            &version,
            &input.states(),
            input.change,
        )
        .map_err(exit::plan)?
        {
            Some(spec) => Ok(Next::from(spec)),
            None => Ok(Next::Unchanged(format!(
                "{name}: tag {} already names {version}; nothing to change",
                args.tag
            ))),
        }
    })
    .await
}

/// `untag FN TAG`.
pub async fn untag(store: &dyn Store, args: args::Untag) -> anyhow::Result<()> {
    run(store, &args.function, &args.write, |input| {
        let name = &input.function.name;
        match plan::untag(
            name,
            &input.function.spec,
            &args.tag,
            &input.states(),
            input.change,
        )
        .map_err(exit::plan)?
        {
            Some(spec) => Ok(Next::from(spec)),
            None => Ok(Next::Unchanged(format!(
                "{name}: no tag {}; nothing to change",
                args.tag
            ))),
        }
    })
    .await
}
