//! `pixelgate-bench`: the side-by-side benchmark of `make bench`, its load and its floor.
//!
//! `run` measures and writes `docs/benchmarks.md`'s generated section and `docs/bench/*.svg`;
//! `report` redraws them from a saved `results.json`; `load` is the fixed-rate load generator
//! and `floor` the bare hyper server that `run` starts from this same binary.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use pixelgate_bench::{
    Options, Placement, Results, load::FixedRate, plot, report, servers::Server,
};

/// pixelgate beside an nginx + Lua + Redis frontend, bare hyper and nginx's empty_gif.
#[derive(Debug, Parser)]
#[command(name = "pixelgate-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure every server, then write the report and plots
    Run {
        /// The release pixelgate binary
        #[arg(long, default_value = "target/release/pixelgate")]
        pixelgate: PathBuf,
        /// The repository's bench/ folder (nginx templates, Lua, wrk scripts)
        #[arg(long, default_value = "bench")]
        bench_dir: PathBuf,
        /// Path lists, logs and results.json
        #[arg(long, default_value = "target/bench")]
        work_dir: PathBuf,
        /// The page whose generated section is replaced; `-` leaves it alone
        #[arg(long, default_value = "docs/benchmarks.md")]
        doc: PathBuf,
        /// Where the SVG plots go
        #[arg(long, default_value = "docs/bench")]
        plots: PathBuf,
        /// wrk connection counts
        #[arg(long, value_delimiter = ',', default_value = "16,64,256")]
        connections: Vec<u32>,
        /// Length of each wrk run
        #[arg(long, default_value = "5s")]
        duration: humantime::Duration,
        /// Length of each fixed-rate run
        #[arg(long, default_value = "10s")]
        fixed_duration: humantime::Duration,
        /// Only these servers: pixelgate, lua, bare-hyper, empty-gif
        #[arg(long, value_delimiter = ',', value_parser = parse_server)]
        only: Vec<Server>,
        /// Only these placements: pinned, shared
        #[arg(long, value_delimiter = ',', value_parser = parse_placement)]
        placements: Vec<Placement>,
    },
    /// Redraw the report and plots from a saved results.json
    Report {
        #[arg(long, default_value = "target/bench/results.json")]
        results: PathBuf,
        #[arg(long, default_value = "docs/benchmarks.md")]
        doc: PathBuf,
        #[arg(long, default_value = "docs/bench")]
        plots: PathBuf,
    },
    /// Send requests at a fixed rate and print one bench-json line
    Load {
        #[arg(long)]
        addr: std::net::SocketAddr,
        /// One request path per line
        #[arg(long)]
        paths: PathBuf,
        /// Requests per second over all connections
        #[arg(long)]
        rate: f64,
        #[arg(long, default_value_t = 64)]
        connections: u32,
        #[arg(long, default_value = "10s")]
        duration: humantime::Duration,
    },
    /// Serve pixelgate's pixel from bare hyper on 127.0.0.1:PORT until killed
    Floor {
        #[arg(long)]
        port: u16,
    },
}

fn parse_server(s: &str) -> Result<Server, String> {
    match s {
        "pixelgate" => Ok(Server::Pixelgate),
        "lua" => Ok(Server::NginxLua),
        "bare-hyper" => Ok(Server::BareHyper),
        "empty-gif" => Ok(Server::EmptyGif),
        _ => Err(format!("{s}: one of pixelgate, lua, bare-hyper, empty-gif")),
    }
}

fn parse_placement(s: &str) -> Result<Placement, String> {
    Placement::ALL
        .into_iter()
        .find(|p| p.name() == s)
        .ok_or_else(|| format!("{s}: one of pinned, shared"))
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pixelgate-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run {
            pixelgate,
            bench_dir,
            work_dir,
            doc,
            plots,
            connections,
            duration,
            fixed_duration,
            only,
            placements,
        } => {
            let options = Options {
                pixelgate,
                bench_dir,
                work_dir,
                servers: if only.is_empty() {
                    Server::ALL.to_vec()
                } else {
                    only
                },
                placements: if placements.is_empty() {
                    Placement::ALL.to_vec()
                } else {
                    placements
                },
                connections,
                duration: duration.into(),
                fixed_duration: fixed_duration.into(),
            };
            let results = pixelgate_bench::run(&options)?;
            write(&results, &doc, &plots)
        }
        Command::Report {
            results,
            doc,
            plots,
        } => {
            let text = std::fs::read_to_string(&results)
                .with_context(|| format!("read {}", results.display()))?;
            let results: Results = serde_json::from_str(&text)?;
            write(&results, &doc, &plots)
        }
        Command::Load {
            addr,
            paths,
            rate,
            connections,
            duration,
        } => {
            let measured = pixelgate_bench::load::run(&FixedRate {
                addr,
                paths,
                rate,
                connections,
                duration: Duration::from(duration),
            })?;
            #[allow(clippy::print_stdout)] // The line `run` reads.
            {
                println!("{}", measured.line()?);
            }
            Ok(())
        }
        Command::Floor { port } => pixelgate_bench::floor::run(port),
    }
}

/// The plots, and the report unless `doc` is `-`.
fn write(results: &Results, doc: &std::path::Path, plots: &std::path::Path) -> anyhow::Result<()> {
    plot::all(results, plots)?;
    eprintln!("plots in {}", plots.display());
    if doc.as_os_str() != "-" {
        let text = std::fs::read_to_string(doc).unwrap_or_default();
        std::fs::write(doc, report::splice(&text, &report::section(results)))
            .with_context(|| format!("write {}", doc.display()))?;
        eprintln!("report in {}", doc.display());
    }
    for placement in results.placements() {
        for goal in report::goals(&results.placed(placement)) {
            eprintln!(
                "goal ({placement}): {}: {} ({})",
                goal.name, goal.measured, goal.verdict
            );
        }
    }
    Ok(())
}
