//! `pixelgate-rpm`: the command that `make rpm` and `make rpm-test` run.
//!
//! `package` writes `pixelgate-VERSION-RELEASE.x86_64.rpm`; `stub` writes the EL-base stub used
//! by the install test. `SOURCE_DATE_EPOCH`, when set, makes the output reproducible.

use std::{io::Write as _, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use pixelgate_rpm::{Inputs, Release, Sources, package, stub};

/// Builds the pixelgate RPM without rpmbuild.
#[derive(Debug, Parser)]
#[command(name = "pixelgate-rpm", version)]
struct Cli {
    /// The workspace root, which holds rpm/ and deploy/
    #[arg(long, default_value = ".", value_name = "DIR")]
    workspace: PathBuf,
    /// Where the package is written
    #[arg(long, default_value = "target/rpm", value_name = "DIR")]
    out: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write pixelgate-VERSION-RELEASE.x86_64.rpm
    Package {
        /// The release binary (built for the glibc 2.28 floor)
        #[arg(long, value_name = "FILE")]
        binary: PathBuf,
        /// The RPM release
        #[arg(long, default_value = "1")]
        release: Release,
        /// The shipped /etc/pixelgate/pixelgate.toml [default: deploy/pixelgate.toml]
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Write the file-less EL-base stub package that the install test needs
    Stub,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` joins the causes on one line, as pixelgate itself reports errors.
            eprintln!("pixelgate-rpm: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let source_date = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) => Some(
            s.parse::<u32>()
                .with_context(|| format!("SOURCE_DATE_EPOCH={s:?}"))?,
        ),
        Err(_) => None,
    };
    let written = match cli.command {
        Command::Package {
            binary,
            release,
            config,
        } => {
            let mut sources = Sources::in_workspace(&cli.workspace, &binary);
            if let Some(config) = config {
                sources.config = config;
            }
            package::write(
                &Inputs {
                    sources,
                    release,
                    source_date,
                },
                &cli.out,
            )?
        }
        Command::Stub => stub::write(
            &cli.workspace.join("rpm/stub/el-base.provides"),
            &cli.out,
            source_date,
        )?,
    };
    writeln!(std::io::stdout(), "{}", written.display())?;
    Ok(())
}
