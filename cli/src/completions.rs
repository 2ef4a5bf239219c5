//! What `switchyard completions SHELL` adds to clap's static script: function and version names
//! read from the cluster or store the command line names (through the hidden `__complete`
//! command), for bash, zsh and fish.

use std::io::Write as _;

use crate::args::Cli;

/// The commands whose first word is a function name.
const TAKE_A_FUNCTION: &str =
    "versions traffic promote rollback undo status describe history delete gc deploy tag untag set shadow";

/// Flags that take a value (skipped when looking for a command's positional words).
const VALUE_FLAGS: &str = "-o --output --timeout --reason --to --keep --image --endpoint --port --env -e --args --arg --replicas --cpu --memory --traffic --percent --methods --max-body --ignore-header --ignore-json --host --prefix --strip-prefix --affinity --pinning --dir";

/// Flags that name the cluster or store: passed on to `__complete`.
const TARGET_FLAGS: &str = "--kubeconfig --context -n --namespace --router-namespace --store";

/// Prints the whole completion script for `shell`.
pub fn print(shell: clap_complete::Shell) {
    use clap::CommandFactory as _;
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "switchyard", &mut script);
    let mut script = String::from_utf8_lossy(&script).into_owned();
    let extra = match shell {
        clap_complete::Shell::Bash => crate::commands::BASH_NAMES.to_string(),
        clap_complete::Shell::Zsh => {
            script = zsh_hooks(&script);
            zsh_names()
        }
        clap_complete::Shell::Fish => fish_names(),
        _ => String::new(),
    };
    let mut out = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = out.write_all(script.as_bytes());
    let _ = writeln!(out, "{extra}");
}

/// clap's zsh script completes positional names and `--to` with `_default`; these point them
/// at the functions below.
fn zsh_hooks(script: &str) -> String {
    script
        .lines()
        .map(|line| {
            if line.starts_with("':function -- ") {
                line.replace(":_default'", ":_switchyard_functions'")
            } else if line.starts_with("':version -- ") || line.starts_with("'--to=[") {
                line.replace(":_default'", ":_switchyard_versions'")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn zsh_names() -> String {
    format!(
        r#"
# Function and version names, read from the cluster or store the command line names.
# Sets reply_target (flags naming the cluster or store) and reply_words (positional words:
# the command, then its arguments) from the whole command line.
_switchyard_parse() {{
    local -a all; all=(${{(z)BUFFER}})
    reply_target=(); reply_words=()
    local i w
    for ((i = 2; i <= $#all; i++)); do
        w=${{all[i]}}
        if (( ${{${{(s: :)${{:-{TARGET_FLAGS}}}}}[(Ie)$w]}} )); then
            reply_target+=($w ${{all[i+1]}}); ((i++))
        elif (( ${{${{(s: :)${{:-{VALUE_FLAGS}}}}}[(Ie)$w]}} )); then
            ((i++))
        elif [[ $w == --*=* ]]; then
            [[ ${{w%%=*}} == (--kubeconfig|--context|--namespace|--router-namespace|--store) ]] && reply_target+=($w)
        elif [[ $w != -* ]]; then
            reply_words+=($w)
        fi
    done
}}
_switchyard_functions() {{
    local -a reply_target reply_words names
    _switchyard_parse
    names=(${{(f)"$(switchyard $reply_target __complete functions 2>/dev/null)"}})
    _describe -t functions 'function' names
}}
_switchyard_versions() {{
    local -a reply_target reply_words names
    _switchyard_parse
    [[ -n ${{reply_words[2]}} ]] || return 1
    names=(${{(f)"$(switchyard $reply_target __complete versions ${{reply_words[2]}} 2>/dev/null)"}})
    _describe -t versions 'version' names
}}"#
    )
}

fn fish_names() -> String {
    format!(
        r#"
# Function and version names, read from the cluster or store the command line names.
function __switchyard_parse --argument-names what
    set -l words (commandline -opc)
    set -e words[1]
    set -l target
    set -l positional
    while set -q words[1]
        if contains -- $words[1] {TARGET_FLAGS}
            set target $target $words[1] $words[2]
            set -e words[1]
        else if contains -- $words[1] {VALUE_FLAGS}
            set -e words[1]
        else if not string match -q -- '-*' $words[1]
            set positional $positional $words[1]
        end
        set -e words[1]
    end
    if test "$what" = target
        printf '%s\n' $target
    else
        printf '%s\n' $positional
    end
end
function __switchyard_names
    set -l words (__switchyard_parse words)
    set -l target (__switchyard_parse target)
    contains -- "$words[1]" {TAKE_A_FUNCTION}; or return
    set -l n (math (count $words) - 1)
    if test $n -eq 0
        switchyard $target __complete functions 2>/dev/null
    else if test $n -eq 1; and contains -- $words[1] promote delete shadow
        switchyard $target __complete versions $words[2] 2>/dev/null
    else if test $n -eq 2; and test $words[1] = tag
        switchyard $target __complete versions $words[2] 2>/dev/null
    end
end
complete -c switchyard -f -n '__fish_seen_subcommand_from {TAKE_A_FUNCTION}' -a '(__switchyard_names)'
complete -c switchyard -r -f -n '__fish_seen_subcommand_from rollback' -l to -a '(switchyard (__switchyard_parse target) __complete versions (__switchyard_parse words)[2] 2>/dev/null)'"#
    )
}
