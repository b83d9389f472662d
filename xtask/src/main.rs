//! Project automation, run as `cargo xtask <command>`: set-up of a fresh Debian 12 machine,
//! build, the checks CI applies, the demo lab and the benchmarks.

mod build;
mod command;
mod root;
mod setup;

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    bin_name = "cargo xtask",
    about = "Set-up, build, test, demo and benchmarks for rstwatch"
)]
enum Task {
    /// Install what building and testing needs; steps already done are skipped.
    Setup {
        /// Print what would be installed and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Set up, then build rstwatch with its eBPF object embedded.
    Build {
        /// Build optimised, as the benchmarks and a deployment would.
        #[arg(long)]
        release: bool,
    },
}

fn main() -> ExitCode {
    let result = match Task::parse() {
        Task::Setup { dry_run } => setup::run(dry_run),
        Task::Build { release } => setup_and_build(release),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn setup_and_build(release: bool) -> anyhow::Result<()> {
    setup::run(false)?;
    build::run(release)
}
