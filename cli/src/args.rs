//! The command line: global flags as kubectl has them, and one subcommand per verb.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::exit;

/// Deploy immutable versions of HTTP functions side by side and move traffic between them.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, after_help = TOP_HELP, args_override_self = true)]
pub struct Cli {
    /// Where the cluster is.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// Path to the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Namespace of the function (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Namespace where router replicas keep their Leases, besides the function's own.
    #[arg(
        long,
        global = true,
        value_name = "NAMESPACE",
        default_value = switchyard_core::protocol::DEFAULT_ROUTER_NAMESPACE
    )]
    pub router_namespace: String,
    /// Keep state in a local directory instead of a cluster: `dir:PATH` (external versions
    /// only; routers started with the same `--store` follow it).
    #[arg(long, global = true, env = "SWITCHYARD_STORE", value_name = "dir:PATH", value_parser = store_flag)]
    pub store: Option<PathBuf>,
}

/// Examples and exit codes of `switchyard --help`.
const TOP_HELP: &str = concat!(
    "Examples:\n  switchyard deploy hello 1.3.0 --image ghcr.io/acme/hello@sha256:…\n  switchyard traffic hello 1.3.0=10 1.2.0=90 --reason canary\n  switchyard rollback hello\n  switchyard COMMAND --help                    # examples of each command\n\n",
    exit::exit_help!()
);

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Install or upgrade Switchyard in the cluster: the CRDs, RBAC and the router.
    ///
    /// Applies the manifests built into this binary (the same files as `manifests/`, in the
    /// kustomization's order: CRDs, the switchyard-system namespace, the router's RBAC, the
    /// switchyard-viewer and switchyard-deployer ClusterRoles, the router Deployment, Service and
    /// PodDisruptionBudget) by server-side apply, field manager `switchyard`, taking over fields
    /// others set. Waits until both CRDs are Established, then prints one line per object —
    /// created, configured (changed) or unchanged — and a summary. Running it again changes
    /// nothing; running a newer binary upgrades. It does not wait for the router's Pods.
    #[command(after_help = INSTALL_HELP)]
    Install(Install),
    /// Remove what install created: the router, its RBAC, the ClusterRoles, the namespace and
    /// the CRDs (last).
    ///
    /// Refuses (exit 3) while any Function or FunctionVersion exists in any namespace: deleting
    /// the CRDs deletes every one of them, and with them (through owner references) the
    /// Deployments and Services of managed versions. `--force` does it anyway. Objects already
    /// gone are reported as `not found`; the namespace may stay `terminating` while the cluster
    /// empties it.
    #[command(after_help = UNINSTALL_HELP)]
    Uninstall(Uninstall),
    /// Deploy a new immutable version of a function (a container image, or an external endpoint).
    #[command(after_help = DEPLOY_HELP)]
    Deploy(Deploy),
    /// List a function's versions with readiness, weight, tags and age.
    #[command(after_help = VERSIONS_HELP)]
    Versions(ListRead),
    /// Set the traffic split, e.g. `traffic hello 1.3.0=10 1.2.0=90` (tags and @latest allowed).
    #[command(after_help = TRAFFIC_HELP)]
    Traffic(Traffic),
    /// Send 100% of the traffic to one version.
    #[command(after_help = PROMOTE_HELP)]
    Promote(Promote),
    /// Send all traffic back to the stable version (or to --to VERSION); a second rollback
    /// changes nothing, and a version rolled back from is never the target.
    #[command(after_help = ROLLBACK_HELP)]
    Rollback(Rollback),
    /// Restore the previous traffic state exactly; repeat to walk further back, or go to one
    /// revision of the history with --to N.
    #[command(after_help = UNDO_HELP)]
    Undo(Undo),
    /// Name a version with a tag (set it, or move it from another version); requests may pin
    /// a tag, and traffic words may use it.
    #[command(after_help = TAG_HELP)]
    Tag(TagArgs),
    /// Remove a tag.
    #[command(after_help = UNTAG_HELP)]
    Untag(Untag),
    /// Change a function's routing settings: hosts, path prefix, prefix stripping, sticky
    /// affinity and pinning. Only the settings given change; the traffic does not.
    #[command(after_help = SET_HELP)]
    Set(Set),
    /// Mirror a share of live requests to a version no user sees and compare its answers with
    /// the serving version's (`shadow FN VERSION --percent P`), or stop (`shadow stop FN`).
    #[command(after_help = SHADOW_HELP)]
    Shadow(Shadow),
    /// Roll a version out step by step, judged by the routers against the version it
    /// replaces (`canary FN VERSION`), and follow or steer it (`canary status|pause|resume|
    /// abort|promote FN`).
    ///
    /// Each step sets the canary's weight and holds at least --hold; it advances only when,
    /// over the requests of the step, the canary and the baseline each have --min-requests and
    /// the canary is within the limits. A breach aborts at once: the baseline back at 100%,
    /// the canary at 0% (still deployed). Not enough traffic waits, then pauses after
    /// --max-wait. The rollout lives on the Function (spec.rollout, status.rollout): the
    /// routers run it, whether or not this command is still running. See docs/canary.md.
    #[command(after_help = CANARY_HELP)]
    Canary(Canary),
    /// Show desired weights, readiness, and what each router replica serves.
    #[command(after_help = STATUS_HELP)]
    Status(Status),
    /// Show everything about one function: routing settings, the split, the stable version and
    /// where a rollback would go, tags, versions, recent history and each router replica.
    #[command(after_help = DESCRIBE_HELP)]
    Describe(Read),
    /// Show who changed the traffic, when, how and why.
    #[command(after_help = HISTORY_HELP)]
    History(ListRead),
    /// List the functions of the namespace.
    #[command(visible_alias = "ls", after_help = LIST_HELP)]
    List(List),
    /// Delete a version that nothing references (its Deployment and Service go with it), or
    /// with --all a whole function.
    #[command(after_help = DELETE_HELP)]
    Delete(Delete),
    /// Delete every version outside the rollback window that nothing references.
    #[command(after_help = GC_HELP)]
    Gc(Gc),
    /// List the router replicas: name, address, live, table generation, table age and last
    /// report; `--prune` removes those gone for two lease durations.
    ///
    /// A replica is live while its Lease (local store: its file's heartbeat) is fresh. A
    /// replica killed without a clean shutdown leaves its Lease and report behind: waits ignore
    /// it, and `--prune` deletes them once it has not been live for two lease durations.
    #[command(after_help = ROUTERS_HELP)]
    Routers(Routers),
    /// Print a shell completion script for bash, zsh, fish, elvish or PowerShell.
    ///
    /// The script completes commands, flags and their fixed values; bash's, zsh's and fish's
    /// also complete function names and versions, read from the cluster or store the command
    /// line names.
    /// Install it once per shell (see below), then open a new shell.
    #[command(after_help = COMPLETIONS_HELP)]
    Completions(Completions),
    /// Write man pages: switchyard(1) and one page per command (switchyard-deploy(1), …).
    #[command(after_help = MAN_HELP)]
    Man(Man),
    /// The whole idea in one command, no cluster needed: a router, two demo versions, a
    /// canary, a rollback — with the split observed on real requests.
    #[command(after_help = QUICKSTART_HELP)]
    Quickstart(Quickstart),
    /// Names for the bash completion script: the functions, or the versions of one. Prints
    /// nothing when the store cannot be read.
    #[command(name = "__complete", hide = true)]
    Complete(Complete),
}

/// Examples and exit codes of `shadow`.
const SHADOW_HELP: &str = concat!(
    "Examples:\n  switchyard shadow hello 1.3.0 --percent 10     # copy 10% of GET/HEAD to 1.3.0\n  switchyard shadow hello 1.3.0 --percent 100 --ignore-header date,x-request-id \\\n      --ignore-json '$.ts,$.requestId'         # compare all, minus what always differs\n  switchyard shadow hello 1.3.0 --percent 5 --methods GET,POST --max-body 64KiB\n  switchyard shadow hello 1.3.0 --percent 10 --dry-run\n  switchyard shadow stop hello                   # no more copies\n\nCopies carry `x-switchyard-shadow: 1`; clients only ever get the serving version's answer.\nMethods other than GET/HEAD/OPTIONS/TRACE are executed by the shadow version: a warning says so.\n\n",
    exit::exit_help!()
);

/// Examples and exit codes of `canary`.
const CANARY_HELP: &str = concat!(
    "Examples:\n  switchyard canary hello 1.3.0                  # 1,5,25,50,100% holding 30s each\n  switchyard canary hello 1.3.0 --steps 1,5,25,50,100 --hold 30s \\\n      --max-error-increase 1 --max-p99-increase 50ms --min-requests 200 --watch\n  switchyard canary hello 1.3.0 --max-error-rate 2 --max-p99 300ms   # absolute limits too\n  switchyard canary hello 1.3.0 --dry-run        # print the plan, write nothing\n  switchyard canary status hello                 # step, weights, canary vs baseline, verdict\n  switchyard canary status hello -o json --watch\n  switchyard canary pause hello                  # stop judging, keep the weights\n  switchyard canary resume hello                 # judge again (the step restarts)\n  switchyard canary abort hello                  # baseline back to 100%\n  switchyard canary promote hello                # skip the remaining steps\n\nLimits take `off` (not checked). The same plan again while it runs changes nothing; another plan\nis refused until the rollout ends. A manual traffic, promote, rollback or undo ends the rollout.\nWith --watch: exit 0 when the canary is promoted, 3 when it is aborted, paused or ended.\n\n",
    exit::exit_help!()
);

/// Examples and exit codes of `install`.
const INSTALL_HELP: &str = concat!(
    "Examples:\n  switchyard install                          # CRDs, RBAC and the router\n  switchyard install --dry-run                # what would be created or changed\n  switchyard install --image repo/router@sha256:…   # another router image\n\n",
    exit::exit_help!()
);

/// Examples and exit codes of `uninstall`.
const UNINSTALL_HELP: &str = concat!(
    "Examples:\n  switchyard uninstall --dry-run              # what would be deleted\n  switchyard uninstall                        # refused while Functions exist\n  switchyard uninstall --force                # deletes every Function too\n\n",
    exit::exit_help!()
);

/// Examples and exit codes of `deploy`.
const DEPLOY_HELP: &str = concat!(
    "Examples:\n  switchyard deploy hello 1.2.0 --image ghcr.io/acme/hello@sha256:…\n  switchyard deploy hello 1.3.0 --image ghcr.io/acme/hello@sha256:… --traffic 5\n  switchyard deploy hello 1.3.0 --endpoint http://10.0.0.7:8080 --no-wait\n  switchyard --store dir:./store deploy hello 1.0.0 --endpoint http://127.0.0.1:9001\n\n",
    exit::exit_help!()
);

/// Examples and exit codes of `versions`.
const VERSIONS_HELP: &str = concat!(
    "Examples:\n  switchyard versions hello                   # readiness, weight, tags, age\n  switchyard versions hello -o wide           # with the created time\n  switchyard versions hello -o name           # functionversion.switchyard.dev/hello-1-2-0\n  switchyard versions hello -w                # one line per change until Ctrl-C\n\n",
    exit::exit_help!()
);

/// Examples and exit codes of `traffic`.
const TRAFFIC_HELP: &str = concat!(
    "Examples:\n  switchyard traffic hello 1.3.0=10 1.2.0=90 --reason canary\n  switchyard traffic hello @latest=50 1.2.0=50\n  switchyard traffic hello 1.3.0=25 1.2.0=75 --dry-run\n\n",
    exit::exit_help!()
);

/// Examples and exit codes of `promote`.
const PROMOTE_HELP: &str = concat!(
    "Examples:\n  switchyard promote hello 1.3.0               # 100% to 1.3.0\n  switchyard promote hello @latest --reason \"canary passed\"\n\n",
    exit::exit_help!()
);

/// Examples and exit codes of `rollback`.
const ROLLBACK_HELP: &str = concat!(
    "Examples:\n  switchyard rollback hello                    # 100% to the stable version\n  switchyard rollback hello --to 1.1.0         # 100% to 1.1.0 instead\n  switchyard rollback hello --dry-run          # where it would go\n\n",
    exit::exit_help!()
);

/// Examples and exit codes of `undo`.
const UNDO_HELP: &str = concat!(
    "Examples:\n  switchyard undo hello                        # the previous traffic state\n  switchyard undo hello --to 7                 # the traffic of revision 7 (see history)\n  switchyard undo hello --dry-run              # what it would restore\n\n",
    exit::exit_help!()
);

/// Examples of `man`.
const MAN_HELP: &str = concat!(
    "Examples:\n  switchyard man --dir ~/.local/share/man/man1 && man switchyard-traffic\n  switchyard man --dir /tmp/pages && ls /tmp/pages\n\n",
    exit::exit_help!()
);

/// Examples and exit codes of `tag`.
const TAG_HELP: &str = concat!(
    "Examples:\n  switchyard tag hello beta 1.3.0              # beta names 1.3.0\n  switchyard traffic hello beta=10 1.2.0=90    # tags work in traffic words\n  curl -H 'x-switchyard-version: beta' …      # and in pins (with pinning on)\n\n",
    exit::exit_help!()
);

/// Examples and exit codes of `untag`.
const UNTAG_HELP: &str = concat!(
    "Examples:\n  switchyard untag hello beta\n  switchyard untag hello beta --dry-run\n\n",
    exit::exit_help!()
);

/// Examples and exit codes of `set`.
const SET_HELP: &str = concat!(
    "Examples:\n  switchyard set hello --affinity header:x-user-id   # sticky by a header\n  switchyard set hello --affinity cookie:session     # or by a cookie\n  switchyard set hello --affinity none --pinning off\n  switchyard set hello --host api.example.com --prefix /hello --strip-prefix on\n  switchyard set hello --no-hosts --default-prefix   # any host, prefix /hello\n  switchyard set hello --pinning on --dry-run        # show the change, write nothing\n\n",
    exit::exit_help!()
);

/// Examples and exit codes of `status`.
const STATUS_HELP: &str = concat!(
    "Examples:\n  switchyard status hello                      # weights, readiness, routers\n  switchyard status hello -w                   # follow it until Ctrl-C\n  switchyard status hello -o json\n\n",
    exit::exit_help!()
);

/// Examples and exit codes of `history`.
const HISTORY_HELP: &str = concat!(
    "Examples:\n  switchyard history hello                     # who, when, what, why\n  switchyard history hello --no-headers        # rows only, for scripts\n  switchyard history hello -w                  # one line per new change until Ctrl-C\n\n",
    exit::exit_help!()
);

/// Examples and exit codes of `list`.
const LIST_HELP: &str = concat!(
    "Examples:\n  switchyard list                              # the functions of the namespace\n  switchyard list -A                           # of every namespace (Kubernetes)\n  switchyard list -o name                      # function.switchyard.dev/hello\n  switchyard list -w                           # one line per change until Ctrl-C\n\n",
    exit::exit_help!()
);

/// Examples and exit codes of `gc`.
const GC_HELP: &str = concat!(
    "Examples:\n  switchyard gc hello --keep 5 --dry-run       # what would go\n  switchyard gc hello --keep 5\n\n",
    exit::exit_help!()
);

/// Examples and exit codes of `routers`.
const ROUTERS_HELP: &str = concat!(
    "Examples:\n  switchyard routers                           # every replica, live or not\n  switchyard routers -o json                   # with each replica's whole report\n  switchyard routers --prune --dry-run         # which gone replicas would be removed\n  switchyard routers --prune                   # remove them (Leases and reports)\n\n",
    exit::exit_help!()
);

/// Examples and exit codes of `quickstart`.
const QUICKSTART_HELP: &str = concat!(
    "Examples:\n  switchyard quickstart                        # the tour, then serve until Ctrl-C\n  switchyard quickstart --exit --requests 200  # the tour only\n\n",
    exit::exit_help!()
);

/// Examples and exit codes of `completions`.
const COMPLETIONS_HELP: &str = concat!(
    "Install (once per shell, then open a new shell):\n  bash        switchyard completions bash > ~/.local/share/bash-completion/completions/switchyard\n              (needs the bash-completion package; or add to ~/.bashrc:\n               source <(switchyard completions bash))\n  zsh         mkdir -p ~/.zfunc && switchyard completions zsh > ~/.zfunc/_switchyard\n              and in ~/.zshrc, before compinit: fpath=(~/.zfunc $fpath)\n  fish        switchyard completions fish > ~/.config/fish/completions/switchyard.fish\n  elvish      switchyard completions elvish >> ~/.config/elvish/rc.elv\n  powershell  switchyard completions powershell >> $PROFILE\n\nExamples:\n  switchyard completions bash | head           # look at the script (bash, zsh, fish complete names)\n  source <(switchyard completions bash)        # this bash session only\n\n",
    exit::exit_help!()
);

/// Examples and exit codes of `delete`.
const DELETE_HELP: &str = "\
Examples:
  switchyard delete hello 1.0.0 --dry-run     # what would go
  switchyard delete hello 1.0.0               # a version nothing references
  switchyard delete hello --all --force       # the whole function, even while routed

Exit codes:
  0  success
  1  cluster or unexpected error
  2  invalid arguments, or no such function or version
  3  refused by a safety rule (a version with weight, a tag, a rollback target, the
     rollback window; --all while a live router serves the function)
  5  lost a concurrent-change race after retrying";

/// Examples and exit codes of `describe`.
const DESCRIBE_HELP: &str = "\
Examples:
  switchyard describe hello              # one page: route, split, rollback target, routers
  switchyard describe hello -o json      # the same as one JSON object
  switchyard -n prod describe hello

Exit codes:
  0  success
  1  cluster or unexpected error
  2  invalid arguments, or no such function";

/// `install`.
#[derive(Debug, Args)]
pub struct Install {
    /// Apply with the API server's dry-run: print what would be created or changed, write
    /// nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The router's container image, instead of the release's
    /// (best pinned by digest: `repo@sha256:…`).
    #[arg(long, value_name = "IMG")]
    pub image: Option<String>,
    /// How long to wait for the CRDs to be Established: `60s`, `2m`.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `uninstall`.
#[derive(Debug, Args)]
pub struct Uninstall {
    /// Uninstall even though Functions or FunctionVersions exist (they are deleted with the CRDs).
    #[arg(long)]
    pub force: bool,
    /// Ask the API server what would be deleted (server-side dry-run), delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `quickstart`.
#[derive(Debug, Args)]
pub struct Quickstart {
    /// Run the tour and exit instead of serving until Ctrl-C.
    #[arg(long)]
    pub exit: bool,
    /// Requests sent through the router at each step of the tour.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(100..=1_000_000))]
    pub requests: u32,
}

/// Output formats of the read commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// The output flag.
#[derive(Debug, Args, Clone, Copy)]
pub struct Output {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// A read command on one function.
#[derive(Debug, Args)]
pub struct Read {
    /// The function.
    #[arg(value_name = "FN")]
    pub function: String,
    /// Output format.
    #[command(flatten)]
    pub output: Output,
}

/// Output formats of the list commands (`list`, `versions`, `history`), as kubectl has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ListFormat {
    /// Aligned columns for people.
    #[default]
    Table,
    /// The table with more columns.
    Wide,
    /// One `kind.group/name` per line, for scripts.
    Name,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// The output flags of the list commands.
#[derive(Debug, Args, Clone, Copy)]
pub struct ListOutput {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
    /// Print the table without its header line.
    #[arg(long)]
    pub no_headers: bool,
    /// After the current rows, print one line per change (a new or changed row, or
    /// `KIND/NAME deleted`), re-reading every second until interrupted.
    #[arg(short = 'w', long)]
    pub watch: bool,
}

/// A list command on one function (`versions`, `history`).
#[derive(Debug, Args)]
pub struct ListRead {
    /// The function.
    #[arg(value_name = "FN")]
    pub function: String,
    /// Output flags.
    #[command(flatten)]
    pub output: ListOutput,
}

/// `list`.
#[derive(Debug, Args)]
pub struct List {
    /// Output flags.
    #[command(flatten)]
    pub output: ListOutput,
    /// List the functions of every namespace (Kubernetes; a local store has one namespace).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

/// `status`.
#[derive(Debug, Args)]
pub struct Status {
    /// The function.
    #[arg(value_name = "FN")]
    pub function: String,
    /// Keep printing the status as it changes, until interrupted.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Output format.
    #[command(flatten)]
    pub output: Output,
}

/// Flags of every command that writes.
#[derive(Debug, Args, Clone)]
pub struct Write {
    /// Print what would change, as a diff, and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Return as soon as the change is written, without waiting for readiness or routers.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for readiness or routers: `30s`, `2m`, `500ms`.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Why, recorded in the function's history: one line, at most 200 characters.
    #[arg(long, value_name = "TEXT", value_parser = parse_reason)]
    pub reason: Option<String>,
}

/// `deploy`.
#[derive(Debug, Args)]
pub struct Deploy {
    /// The function (created on its first deploy, with 100% on this version).
    #[arg(value_name = "FN")]
    pub function: String,
    /// The version, in semver (`1.2.0`).
    #[arg(value_name = "VERSION")]
    pub version: String,
    /// Container image of a managed version (best pinned by digest: `repo@sha256:…`).
    // One of --image and --endpoint is required: `deploy::check` says which, knowing whether
    // the target is a cluster or a local store (which takes --endpoint only).
    #[arg(long, value_name = "IMG", conflicts_with = "endpoint")]
    pub image: Option<String>,
    /// URL of an external version, served outside the cluster.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Port the container listens on.
    #[arg(
        long,
        value_name = "PORT",
        default_value_t = 8080,
        conflicts_with = "endpoint"
    )]
    pub port: u16,
    /// Environment variable `K=V` (repeatable).
    #[arg(
        long = "env",
        short = 'e',
        value_name = "K=V",
        conflicts_with = "endpoint"
    )]
    pub env: Vec<String>,
    /// Container argument (repeatable, in order).
    #[arg(
        long = "args",
        alias = "arg",
        value_name = "ARG",
        allow_hyphen_values = true,
        conflicts_with = "endpoint"
    )]
    pub args: Vec<String>,
    /// Replicas.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        conflicts_with = "endpoint"
    )]
    pub replicas: i32,
    /// CPU of each replica (request and limit), e.g. `250m`.
    #[arg(long, value_name = "QTY", conflicts_with = "endpoint")]
    pub cpu: Option<String>,
    /// Memory of each replica (request and limit), e.g. `128Mi`.
    #[arg(long, value_name = "QTY", conflicts_with = "endpoint")]
    pub memory: Option<String>,
    /// Give the new version this share of the traffic, taken from the others proportionally
    /// (default: 0, or 100 for the function's first version).
    #[arg(long, value_name = "PERCENT")]
    pub traffic: Option<String>,
    /// Move traffic to the version even if it is not ready.
    #[arg(long)]
    pub force: bool,
    /// Write flags.
    #[command(flatten)]
    pub write: Write,
}

/// `traffic`.
#[derive(Debug, Args)]
pub struct Traffic {
    /// The function.
    #[arg(value_name = "FN")]
    pub function: String,
    /// The split: `VERSION=PERCENT` words summing to 100 (a tag or `@latest` may name a version).
    #[arg(value_name = "VERSION=PERCENT", required = true)]
    pub split: Vec<String>,
    /// Give weight to versions that are not ready, or that a rollback took traffic away from.
    #[arg(long)]
    pub force: bool,
    /// Write flags.
    #[command(flatten)]
    pub write: Write,
}

/// `promote`.
#[derive(Debug, Args)]
pub struct Promote {
    /// The function.
    #[arg(value_name = "FN")]
    pub function: String,
    /// The version (or tag, or `@latest`) to send 100% to.
    #[arg(value_name = "VERSION")]
    pub version: String,
    /// Promote a version that is not ready, or that a rollback took traffic away from.
    #[arg(long)]
    pub force: bool,
    /// Write flags.
    #[command(flatten)]
    pub write: Write,
}

/// `rollback`.
#[derive(Debug, Args)]
pub struct Rollback {
    /// The function.
    #[arg(value_name = "FN")]
    pub function: String,
    /// Send 100% to this version instead of the stable one.
    #[arg(long, value_name = "VERSION")]
    pub to: Option<String>,
    /// Roll back (--to) to a version that is not ready, or that a rollback took traffic away
    /// from.
    #[arg(long)]
    pub force: bool,
    /// Write flags.
    #[command(flatten)]
    pub write: Write,
}

/// `undo`.
#[derive(Debug, Args)]
pub struct Undo {
    /// The function.
    #[arg(value_name = "FN")]
    pub function: String,
    /// Restore the traffic of this revision (the `#` column of `history`) instead of the
    /// previous state.
    #[arg(long, value_name = "N")]
    pub to: Option<u64>,
    /// Restore weight on versions that are not ready, or that a rollback took traffic away from.
    #[arg(long)]
    pub force: bool,
    /// Write flags.
    #[command(flatten)]
    pub write: Write,
}

/// `tag`.
#[derive(Debug, Args)]
pub struct TagArgs {
    /// The function.
    #[arg(value_name = "FN")]
    pub function: String,
    /// The tag (a DNS-1123 label, e.g. `beta`).
    #[arg(value_name = "TAG")]
    pub tag: String,
    /// The version it names (or `@latest`).
    #[arg(value_name = "VERSION")]
    pub version: String,
    /// Write flags.
    #[command(flatten)]
    pub write: Write,
}

/// `untag`.
#[derive(Debug, Args)]
pub struct Untag {
    /// The function.
    #[arg(value_name = "FN")]
    pub function: String,
    /// The tag to remove.
    #[arg(value_name = "TAG")]
    pub tag: String,
    /// Write flags.
    #[command(flatten)]
    pub write: Write,
}

/// `canary FN VERSION …`, or `canary status|pause|resume|abort|promote FN`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Canary {
    /// `status`, `pause`, `resume`, `abort`, `promote`.
    #[command(subcommand)]
    pub verb: Option<CanaryVerb>,
    /// The function.
    #[arg(value_name = "FN", required = true)]
    pub function: Option<String>,
    /// The version rolled out (or a tag, or `@latest`); deployed and ready.
    #[arg(value_name = "VERSION", required = true)]
    pub version: Option<String>,
    /// The canary's weight at each step, percent, strictly increasing; a last step of 100 is
    /// the promotion.
    #[arg(
        long,
        value_name = "P,P",
        value_delimiter = ',',
        default_value = "1,5,25,50,100"
    )]
    pub steps: Vec<String>,
    /// The least time each step is held: `30s`, `2m`, `1m30s`.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub hold: String,
    /// Requests the canary and the baseline must each serve in a step before it can pass.
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub min_requests: u64,
    /// How long a step waits for --min-requests before the rollout pauses (default 10 ×
    /// hold).
    #[arg(long, value_name = "DURATION")]
    pub max_wait: Option<String>,
    /// Percentage points the canary's error rate may exceed the baseline's by, or `off`.
    #[arg(
        long,
        value_name = "PP",
        default_value = "1",
        allow_negative_numbers = true
    )]
    pub max_error_increase: String,
    /// How much the canary's p99 may exceed the baseline's by, or `off`.
    #[arg(long, value_name = "DURATION", default_value = "50ms")]
    pub max_p99_increase: String,
    /// The canary's highest error rate, percent (default: not checked).
    #[arg(long, value_name = "PERCENT", allow_negative_numbers = true)]
    pub max_error_rate: Option<String>,
    /// The canary's highest p99 (default: not checked).
    #[arg(long, value_name = "DURATION")]
    pub max_p99: Option<String>,
    /// The version compared with and restored on abort (default: the one holding 100%, else
    /// the stable version).
    #[arg(long, value_name = "VERSION")]
    pub baseline: Option<String>,
    /// Start even though the canary is not ready.
    #[arg(long)]
    pub force: bool,
    /// Follow the rollout until it ends (or pauses): exit 0 when promoted, 3 otherwise.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Output format of the rollout's status.
    #[command(flatten)]
    pub output: Output,
    /// Write flags.
    #[command(flatten)]
    pub write: Write,
}

/// The subcommands of `canary`.
#[derive(Debug, Subcommand)]
pub enum CanaryVerb {
    /// The rollout: step, weights, canary vs baseline over the step (requests, error rate,
    /// p50, p99), hold left and the verdict so far. Writes nothing.
    #[command(after_help = CANARY_HELP)]
    Status(CanaryStatus),
    /// Stop judging the rollout; the weights stay.
    #[command(after_help = CANARY_HELP)]
    Pause(CanaryControl),
    /// Judge a paused rollout again; its step restarts (a new hold, new counts).
    #[command(after_help = CANARY_HELP)]
    Resume(CanaryControl),
    /// End the rollout: the baseline back at 100%, the canary at 0% (still deployed).
    #[command(after_help = CANARY_HELP)]
    Abort(CanaryControl),
    /// End the rollout with the canary at 100%, skipping the remaining steps.
    #[command(after_help = CANARY_HELP)]
    Promote(CanaryControl),
}

/// `canary status FN`.
#[derive(Debug, Args)]
pub struct CanaryStatus {
    /// The function.
    #[arg(value_name = "FN")]
    pub function: String,
    /// Keep printing the rollout as it changes, until it ends or pauses.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Output format.
    #[command(flatten)]
    pub output: Output,
}

/// `canary pause|resume|abort|promote FN`.
#[derive(Debug, Args)]
pub struct CanaryControl {
    /// The function.
    #[arg(value_name = "FN")]
    pub function: String,
    /// Write flags.
    #[command(flatten)]
    pub write: Write,
}

/// `shadow FN VERSION …` or `shadow stop FN`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Shadow {
    /// `stop`.
    #[command(subcommand)]
    pub stop: Option<ShadowStop>,
    /// The function.
    #[arg(value_name = "FN", required = true)]
    pub function: Option<String>,
    /// The version that gets the copies (or a tag, or `@latest`); usually at weight 0.
    #[arg(value_name = "VERSION", required = true)]
    pub version: Option<String>,
    /// The share of matching requests copied, in percent (0.0001 to 100, up to 4 decimals).
    #[arg(long, value_name = "PERCENT", required = true)]
    pub percent: Option<String>,
    /// The methods copied, comma-separated; default GET,HEAD.
    #[arg(long, value_name = "M,M", value_delimiter = ',')]
    pub methods: Vec<String>,
    /// Requests and answers with bodies above this are not compared (counted as skipped):
    /// bytes, or with KiB / MiB; default 1MiB, at most 8MiB.
    #[arg(long, value_name = "SIZE")]
    pub max_body: Option<String>,
    /// Response headers left out of the comparison, comma-separated.
    #[arg(long, value_name = "H,H", value_delimiter = ',')]
    pub ignore_header: Vec<String>,
    /// JSON paths left out of the comparison of JSON bodies, comma-separated (`$.ts`,
    /// `$.items[*].id`).
    #[arg(long, value_name = "PATH,PATH", value_delimiter = ',')]
    pub ignore_json: Vec<String>,
    /// Write flags.
    #[command(flatten)]
    pub write: Write,
}

/// The subcommand of `shadow`.
#[derive(Debug, Subcommand)]
pub enum ShadowStop {
    /// Stop mirroring a function's requests.
    Stop(ShadowStopArgs),
}

/// `shadow stop FN`.
#[derive(Debug, Args)]
pub struct ShadowStopArgs {
    /// The function.
    #[arg(value_name = "FN")]
    pub function: String,
    /// Write flags.
    #[command(flatten)]
    pub write: Write,
}

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

impl Switch {
    /// Whether it is on.
    pub fn on(self) -> bool {
        self == Switch::On
    }
}

/// `set`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("setting").multiple(true).required(true)
    .args(["hosts", "no_hosts", "prefix", "default_prefix", "strip_prefix", "affinity", "pinning"])))]
pub struct Set {
    /// The function.
    #[arg(value_name = "FN")]
    pub function: String,
    /// The host names the function answers (repeat for several; replaces the list).
    #[arg(long = "host", value_name = "HOST", conflicts_with = "no_hosts")]
    pub hosts: Vec<String>,
    /// Answer on any host.
    #[arg(long)]
    pub no_hosts: bool,
    /// The path prefix (starts with `/`).
    #[arg(long, value_name = "PATH", conflicts_with = "default_prefix")]
    pub prefix: Option<String>,
    /// Back to the default prefix (`/<FN>` without hosts, `/` with hosts).
    #[arg(long)]
    pub default_prefix: bool,
    /// Whether the prefix is removed before the request goes upstream.
    #[arg(long, value_name = "on|off")]
    pub strip_prefix: Option<Switch>,
    /// Sticky affinity: `header:NAME`, `cookie:NAME`, or `none`.
    #[arg(long, value_name = "header:NAME|cookie:NAME|none")]
    pub affinity: Option<String>,
    /// Whether a request may choose its version with `x-switchyard-version`.
    #[arg(long, value_name = "on|off")]
    pub pinning: Option<Switch>,
    /// Write flags.
    #[command(flatten)]
    pub write: Write,
}

/// `delete`.
#[derive(Debug, Args)]
pub struct Delete {
    /// The function.
    #[arg(value_name = "FN")]
    pub function: String,
    /// The version.
    #[arg(
        value_name = "VERSION",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub version: Option<String>,
    /// Delete the whole function: the Function and every version (refused while a live router
    /// serves it, unless --force).
    #[arg(long)]
    pub all: bool,
    /// Delete it even if a tag names it or it is in the rollback window (never while it has
    /// weight); with --all, even while routers serve the function.
    #[arg(long)]
    pub force: bool,
    /// Rollback window: how many recent history entries protect their versions.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub keep: usize,
    /// Print what would be deleted and delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Why, recorded in the function's history: one line, at most 200 characters.
    #[arg(long, value_name = "TEXT", value_parser = parse_reason)]
    pub reason: Option<String>,
}

/// `gc`.
#[derive(Debug, Args)]
pub struct Gc {
    /// The function.
    #[arg(value_name = "FN")]
    pub function: String,
    /// Rollback window: versions in the last N history entries are kept.
    #[arg(long, value_name = "N", required = true)]
    pub keep: usize,
    /// Also delete versions kept only by a tag, the rollback targets or the window (never one with weight).
    #[arg(long)]
    pub force: bool,
    /// Print what would be deleted and delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Why, recorded in the function's history: one line, at most 200 characters.
    #[arg(long, value_name = "TEXT", value_parser = parse_reason)]
    pub reason: Option<String>,
}

/// `routers`.
#[derive(Debug, Args)]
pub struct Routers {
    /// Output format.
    #[command(flatten)]
    pub output: Output,
    /// Delete the Leases and reports of replicas not live for two lease durations.
    #[arg(long)]
    pub prune: bool,
    /// With --prune: print what would be deleted and delete nothing.
    #[arg(long, requires = "prune")]
    pub dry_run: bool,
}

/// `__complete`.
#[derive(Debug, Args)]
pub struct Complete {
    /// `functions`, or `versions` of FN.
    #[arg(value_enum)]
    pub what: CompleteWhat,
    /// The function whose versions to name.
    #[arg(value_name = "FN")]
    pub function: Option<String>,
}

/// What `__complete` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompleteWhat {
    /// Every function of the namespace or store.
    Functions,
    /// Every version of FN.
    Versions,
}

/// `completions`.
#[derive(Debug, Args)]
pub struct Completions {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `man`.
#[derive(Debug, Args)]
pub struct Man {
    /// The directory to write the pages into (created if missing).
    #[arg(long, value_name = "DIR", default_value = "man")]
    pub dir: PathBuf,
}

/// The longest `--reason` kept in history, in characters.
pub const REASON_MAX: usize = 200;

/// Reads `--reason`: one line (history is shown one entry per line), at most [`REASON_MAX`]
/// characters (it is stored in every history entry of the Function).
pub fn parse_reason(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.contains(['\n', '\r']) {
        return Err("a reason is one line".to_string());
    }
    let n = text.chars().count();
    if n > REASON_MAX {
        return Err(format!(
            "a reason is at most {REASON_MAX} characters, got {n}"
        ));
    }
    Ok(text.to_string())
}

/// Reads the `--store` flag (`dir:PATH`).
pub fn store_flag(value: &str) -> Result<PathBuf, String> {
    switchyard_store::parse_store_flag(value)
}

/// Reads `30s`, `2m`, `1h`, `500ms`, a sum of them as Go and kubectl write it (`1m30s`,
/// `1h2m3.5s`), or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration (like 30s, 2m, 1m30s, 500ms)");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    if rest.chars().all(|c| c.is_ascii_digit() || c == '.') {
        rest = rest.strip_suffix('.').unwrap_or(rest);
        return seconds(rest.parse().map_err(|_| bad())?, text);
    }
    let mut secs = 0.0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let n: f64 = number.parse().map_err(|_| bad())?;
        secs += n * match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        rest = tail;
    }
    seconds(secs, text)
}

fn seconds(secs: f64, text: &str) -> Result<Duration, String> {
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("{text:?} is not a duration between 0 and 24h"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl_timeouts() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(
            parse_duration("1h2m3.5s"),
            Ok(Duration::from_secs_f64(3723.5))
        );
        assert_eq!(parse_duration("2s500ms"), Ok(Duration::from_millis(2500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("1m30").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
