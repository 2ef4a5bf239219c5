//! `switchyard`: deploy immutable versions of HTTP functions on Kubernetes, shift traffic
//! between them, promote and roll back in one command, and wait until every router replica
//! serves the change.
//!
//! The binary is a thin shell: it reads state through a [`store::Store`] (Kubernetes today),
//! decides with `switchyard-core`, and writes back through the same store. It is not a
//! controller: nothing keeps running after a command returns (except `status --watch`).

mod args;
mod commands;
mod exit;
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

/// `{err:#}` on one line: the context chain joined by `: `, newlines folded.
fn one_line(err: &anyhow::Error) -> String {
    format!("{err:#}")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}
