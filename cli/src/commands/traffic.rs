//! `traffic FN V=P…`: set the whole split.

use switchyard_core::plan::PlanError;
use switchyard_core::traffic::{self, Assignment};
use switchyard_core::Action;

use crate::args;
use crate::exit::{self, fail, Code};
use crate::store::Store;
use crate::write::{apply, run};

/// Reads `VERSION=PERCENT` words (before anything is read from the cluster).
pub fn parse_split(words: &[String]) -> anyhow::Result<Vec<Assignment>> {
    traffic::parse(words).map_err(|e| fail(Code::Invalid, e.to_string()))
}

/// `traffic FN V=P…`.
pub async fn traffic(
    store: &dyn Store,
    args: args::Traffic,
    split: Vec<Assignment>,
) -> anyhow::Result<()> {
    let shadows = super::shadow::reported(store, args.force).await?;
    run(store, &args.function, &args.write, |input| {
        let targets = traffic::resolve(
            &input.function.name,
            &split,
            Some(&input.function.spec),
            input.versions.iter().map(|v| v.spec.version.as_str()),
        )
        .map_err(|e| exit::plan(PlanError::Traffic(e)))?;
        // More weight for a version whose shadow answers differed: refused unless forced.
        for t in &targets {
            if t.weight > input.function.spec.weight_of(&t.version) {
                super::shadow::refuse_weight(input.function, &t.version, &shadows)?;
            }
        }
        apply(input, targets, Action::Traffic, args.force)
    })
    .await
}
