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
    // Like every Unix filter: `cloudpipe client list net1 | head` ends quietly when
    // the reader goes away, instead of panicking in println!.
    // SAFETY: SIG_DFL installs no handler code, and no other thread exists yet.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        );
    }
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cloudpipe: {e:#}");
            ExitCode::FAILURE
        }
    }
}
