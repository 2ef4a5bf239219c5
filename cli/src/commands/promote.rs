//! `promote FN V`: everything to one version.

use switchyard_core::{Action, TOTAL_PPM};

use crate::args;
use crate::store::Store;
use crate::write::{apply, run};

/// `promote FN V`.
pub async fn promote(store: &dyn Store, args: args::Promote) -> anyhow::Result<()> {
    let shadows = super::shadow::reported(store, args.force).await?;
    run(store, &args.function, &args.write, |input| {
        let version = input.resolve(&args.version)?;
        // A version whose shadow answers differed gets no traffic unless forced (issue 16).
        super::shadow::refuse_weight(input.function, &version, &shadows)?;
        let targets = vec![switchyard_core::TrafficTarget::new(version, TOTAL_PPM)];
        apply(input, targets, Action::Promote, args.force)
    })
    .await
}
