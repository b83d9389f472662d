//! `cargo xtask demo`: live resets in a lab of network namespaces, explained by rstwatch.

use anyhow::{bail, Result};

pub fn run() -> Result<()> {
    bail!("demo: not wired yet (the network-namespace lab is still being written)")
}
