//! `cargo xtask bench`: per-packet cost of the kernel programs and userspace event throughput.

use anyhow::{bail, Result};

pub fn run() -> Result<()> {
    bail!("bench: not wired yet (the benchmarks are still being written)")
}
