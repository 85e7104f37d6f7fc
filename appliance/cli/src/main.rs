//! `cloudpipe`: the operator and tenant CLI. Parses arguments, runs one command,
//! maps errors to exit status 1 (clap's usage errors exit 2).

mod cli;
mod commands;
mod model;
mod qr;
mod state;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cloudpipe: {e:#}");
            ExitCode::FAILURE
        }
    }
}
