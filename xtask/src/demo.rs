//! `cargo xtask demo`: live resets in a lab of network namespaces, explained by rstwatch.
//! The lab and its scenarios live in the `rstwatch-tests` crate, shared with the kernel
//! integration tests, so the demo shows exactly what the tests check.

use anyhow::{bail, Result};

use crate::{
    command::{self, cargo},
    root,
};

pub fn run() -> Result<()> {
    if !root::is_root() {
        bail!("cargo xtask demo builds network namespaces and attaches eBPF: re-run as root");
    }
    command::run(cargo().args([
        "run",
        "--quiet",
        "-p",
        "rstwatch-tests",
        "--bin",
        "rstwatch-demo",
    ]))
}
