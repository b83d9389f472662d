//! `cargo xtask bench`: SPEC section 7 measured in one run (needs root, under 10 minutes on two
//! cores). Not part of the test suite. Prints the results table and writes
//! `target/bench/report.json` (and the same table as `target/bench/report.md`).

use std::process::Command;

use anyhow::{ensure, Context, Result};

pub fn run() -> Result<()> {
    cargo(&["build", "--release", "-p", "rstwatch"])?;
    cargo(&[
        "run",
        "--release",
        "-p",
        "rstwatch-tests",
        "--bin",
        "rstwatch-bench",
        "--",
        "--json",
        "target/bench/report.json",
    ])
}

fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .args(args)
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    ensure!(status.success(), "cargo {} failed ({status})", args.join(" "));
    Ok(())
}
