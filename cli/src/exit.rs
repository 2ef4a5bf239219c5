//! Exit codes, and the error that carries one.
//!
//! Every failure is an `anyhow::Error`; the ones with a documented code other than 1 carry a
//! [`Fail`] somewhere in their chain, which `main` looks for.

use switchyard_core::plan::PlanError;

/// The documented exit codes (see `--help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 1: a cluster or unexpected error.
    Error = 1,
    /// 2: invalid arguments or input.
    Invalid = 2,
    /// 3: refused by a safety rule (immutability, unready version, referenced version, a
    /// differing shadow, a canary in flight, uninstall while Functions exist).
    Refused = 3,
    /// 4: timed out waiting (readiness, routers, CRDs or a local store's lock), or no live
    /// router to wait for.
    Timeout = 4,
    /// 5: lost a concurrent-change race after retrying.
    Conflict = 5,
}

/// The exit-code table shown after every `--help`, as a literal so that `concat!` can put
/// each command's examples before it.
macro_rules! exit_help {
    () => {
        "\
Exit codes:
  0  success
  1  cluster or unexpected error (including a router refusing the change)
  2  invalid arguments or input (also: a local store that does not exist, or
     a local store and a cluster named at once)
  3  refused by a safety rule (immutability, unready version, referenced version,
     a version named like an existing one but for punctuation,
     nothing to roll back or undo, a rollback or undo target that was deleted,
     traffic back to a version rolled back from without --force,
     delete --all while a live router serves the function,
     weight for a version whose shadow answers differed without --force,
     a canary while another is in flight, or none to steer,
     uninstall while Functions exist)
  4  timed out waiting (readiness, routers or CRDs; a local store's lock held by
     another writer), or no live router to wait for
  5  lost a concurrent-change race after retrying"
    };
}
pub(crate) use exit_help;

/// An error with a documented exit code.
#[derive(Debug)]
pub struct Fail {
    /// The exit code.
    pub code: Code,
    /// What went wrong, one line.
    pub message: String,
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Fail {}

/// An error exiting with `code`.
pub fn fail(code: Code, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Fail {
        code,
        message: message.into(),
    })
}

/// The exit code of a plan refused by core.
pub fn plan_code(err: &PlanError) -> Code {
    match err {
        PlanError::Invalid(_)
        | PlanError::Traffic(_)
        | PlanError::UnknownVersion { .. }
        | PlanError::NoRevision { .. } => Code::Invalid,
        PlanError::NotReady { .. }
        | PlanError::Referenced { .. }
        | PlanError::NothingToUndo(_)
        | PlanError::NoStable(_)
        | PlanError::RolledBackFrom { .. }
        | PlanError::TargetGone { .. }
        | PlanError::NameCollision { .. } => Code::Refused,
    }
}

/// A plan refusal as an error with its exit code.
pub fn plan(err: PlanError) -> anyhow::Error {
    fail(plan_code(&err), err.to_string())
}

/// The exit code of an error: the first [`Fail`] in its chain; 2 when the API server found
/// the input invalid (422) or the kubeconfig lacks the `--context` asked for; else 1.
pub fn code_of(err: &anyhow::Error) -> Code {
    for cause in err.chain() {
        if let Some(f) = cause.downcast_ref::<Fail>() {
            return f.code;
        }
        if cause
            .downcast_ref::<crate::store::kube::UnknownContext>()
            .is_some()
        {
            return Code::Invalid;
        }
        if let Some(api) = cause.downcast_ref::<crate::store::kube::ApiError>() {
            if api.code == 422 {
                return Code::Invalid;
            }
        }
    }
    Code::Error
}
