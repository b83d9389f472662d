//! Project automation, run as `cargo xtask <command>`: set-up of a fresh Debian 12 machine,
//! build, the checks CI applies (with the kernel matrix), the Debian package, the demo lab
//! and the benchmarks.

mod bench;
mod build;
mod command;
mod demo;
mod dist;
mod kmatrix;
mod root;
mod setup;
mod test;

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    bin_name = "cargo xtask",
    about = "Set-up, build, test, package, demo and benchmarks for rstwatch"
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
    /// Set up, then everything CI checks: fmt, clippy, unit and kernel integration tests.
    /// Runs as root.
    /// Then the kernel matrix (`cargo xtask kmatrix`).
    Test {
        /// Skip the kernel matrix (about 10 minutes once its kernels are cached), e.g. while
        /// iterating on one test. Its cache: $RSTWATCH_KMATRIX_CACHE, else
        /// /var/cache/rstwatch-kmatrix.
        #[arg(long)]
        no_kmatrix: bool,
        /// Passed to `cargo test`, e.g. `-- refused -- --nocapture`.
        #[arg(last = true)]
        cargo_test_args: Vec<String>,
    },
    /// Set up, then build the Debian package target/dist/rstwatch_VERSION_ARCH.deb: the
    /// release binary, its man pages and shell completions, the systemd unit (not enabled)
    /// and the example configuration.
    Dist,
    /// Set up, then boot Debian's kernels (11's 5.10; 12's 6.1 without TCX and 6.12) under
    /// QEMU and run rstwatch and BPF_PROG_TEST_RUN tests inside each. Runs as root.
    Kmatrix {
        /// Only this kernel: 5.10, 6.1 or 6.12.
        #[arg(long, value_name = "VERSION")]
        kernel: Option<String>,
        /// Where kernel packages are downloaded and extracted, kept between runs
        /// (default: $RSTWATCH_KMATRIX_CACHE, else /var/cache/rstwatch-kmatrix).
        #[arg(long, value_name = "DIR")]
        cache: Option<std::path::PathBuf>,
        /// Run every test of tests/tests/kernel/ in each guest (about 10 minutes per
        /// kernel), not only the parser and flow-state ones.
        #[arg(long)]
        full: bool,
    },
    /// Set up, build, then show live resets in a lab of network namespaces. Runs as root.
    Demo,
    /// Set up, build in release mode, then measure the kernel and userspace costs.
    Bench,
}

fn main() -> ExitCode {
    let result = match Task::parse() {
        Task::Setup { dry_run } => setup::run(dry_run),
        Task::Build { release } => setup_and_build(release),
        Task::Test {
            no_kmatrix,
            cargo_test_args,
        } => test::run(&cargo_test_args, !no_kmatrix),
        Task::Dist => setup::run(false).and_then(|()| dist::run().map(drop)),
        Task::Kmatrix {
            kernel,
            cache,
            full,
        } => kmatrix::run(kernel.as_deref(), full, &kmatrix::cache_dir(cache)),
        Task::Demo => setup_and_build(false).and_then(|()| demo::run()),
        Task::Bench => setup_and_build(true).and_then(|()| bench::run()),
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
