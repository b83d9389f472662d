//! `cargo xtask bench`: the performance targets (docs/performance.md) measured in one run (needs
//! root, about 10 minutes on two cores). Not part of the test suite. Prints the results table
//! and writes `target/bench/report.json` (and the same table as `target/bench/report.md`).

use anyhow::{bail, Result};

use crate::{
    command::{self, cargo},
    root,
};

/// Runs the benchmark binary; `cargo xtask bench` has built rstwatch in release mode first.
pub fn run() -> Result<()> {
    if !root::is_root() {
        bail!(
            "cargo xtask bench loads eBPF programs and builds network namespaces: re-run as root"
        );
    }
    command::run(cargo().args([
        "run",
        "--release",
        "--quiet",
        "-p",
        "rstwatch-tests",
        "--bin",
        "rstwatch-bench",
        "--",
        "--json",
        "target/bench/report.json",
    ]))
}
