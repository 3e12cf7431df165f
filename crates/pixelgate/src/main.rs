//! `pixelgate`: parse the command line, run the command, report errors as one line.
//!
//! Exit codes: 0 success, 1 a failed command (one line on stderr), 2 a usage error.

use std::{io::Write as _, process::ExitCode};

use clap::{Parser as _, error::ErrorKind};
use pixelgate::{cli, config::Environment};

/// mimalloc for every allocation of the process: a request makes a couple of dozen small,
/// short-lived ones, where it beats glibc's malloc (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return ExitCode::from(2);
        }
        Err(e) => {
            // clap's message spans several lines (tip, usage); the first one is the reason.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or_default();
            let reason = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("pixelgate: {reason} (see pixelgate --help)");
            return ExitCode::from(2);
        }
    };
    let mut stdout = std::io::stdout().lock();
    match cli::run(cli, &Environment::from_process(), &mut stdout) {
        Ok(()) => match stdout.flush() {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        },
        Err(e) => {
            // `{:#}` joins the error's causes with ": " on one line.
            eprintln!("pixelgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
