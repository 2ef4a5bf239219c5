//! `switchyard`: deploy immutable versions of HTTP functions on Kubernetes, shift traffic
//! between them, promote and roll back in one command, and wait until every router replica
//! serves the change.
//!
//! The binary is a thin shell: it reads state through a [`store::Store`] (Kubernetes today),
//! decides with `switchyard-core`, and writes back through the same store. It is not a
//! controller: nothing keeps running after a command returns (except `status --watch`).

mod args;
mod commands;
mod completions;
mod exit;
mod live;
mod manifests;
mod output;
mod store;
mod timing;
mod wait;
mod write;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    timing::start();
    if let Some(word) = help_lookalike(std::env::args().skip(1)) {
        // clap reads `-hello` as `-h -e -l -l -o` and prints help with exit 0: a mistyped
        // name would pass for success.
        eprintln!(
            "error: unexpected argument '{word}' (put -- before a name that starts with '-')"
        );
        return ExitCode::from(exit::Code::Invalid as u8);
    }
    let cli = match args::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::Code::Invalid as u8
            } else {
                0
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(exit::Code::Error as u8);
        }
    };
    let result = runtime.block_on(commands::run(cli));
    timing::report();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            ExitCode::from(exit::code_of(&err) as u8)
        }
    }
}

/// The first word before `--` that clap would read as `-h` followed by more short flags
/// (the value of `deploy --args`, which may start with `-`, excepted).
fn help_lookalike(args: impl Iterator<Item = String>) -> Option<String> {
    let mut previous = String::new();
    for a in args.take_while(|a| a != "--") {
        let is_value = previous == "--args" || previous == "--arg";
        if !is_value && a.len() > 2 && a.starts_with("-h") {
            return Some(a);
        }
        previous = a;
    }
    None
}

/// `{err:#}` on one line: the context chain joined by `: `, newlines folded, and a cause
/// left out when the message before it already ends with it (an error that prints its source
/// and also returns it would otherwise say it twice: `Not a directory: Not a directory`).
fn one_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if parts.last().is_some_and(|p| p.ends_with(&text)) {
            continue;
        }
        parts.push(text);
    }
    parts
        .join(": ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_a_word_clap_would_read_as_help_is_a_lookalike() {
        let words = |s: &str| {
            s.split(' ')
                .map(String::from)
                .collect::<Vec<_>>()
                .into_iter()
        };
        assert_eq!(
            super::help_lookalike(words("deploy -hello 1.0.0")),
            Some("-hello".into())
        );
        assert_eq!(super::help_lookalike(words("deploy -h")), None);
        assert_eq!(
            super::help_lookalike(words("deploy hello 1.0.0 --image i --args -hv")),
            None
        );
        assert_eq!(super::help_lookalike(words("deploy -- -hello 1.0.0")), None);
    }

    #[test]
    fn a_cause_already_in_the_message_is_printed_once() {
        /// Like the store's IO error: prints its source and returns it.
        #[derive(Debug)]
        struct Io(std::io::Error);
        impl std::fmt::Display for Io {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "/s/functions: {}", self.0)
            }
        }
        impl std::error::Error for Io {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let io = std::io::Error::other("Not a directory");
        let err = anyhow::Error::new(Io(io)).context("opening store dir:/s");
        assert_eq!(
            super::one_line(&err),
            "opening store dir:/s: /s/functions: Not a directory"
        );
    }
}
