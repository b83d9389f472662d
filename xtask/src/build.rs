//! `cargo xtask build`: the workspace's default members, which leave the eBPF crate out;
//! `rstwatch`'s build script compiles that one for the BPF target and embeds the object.

use anyhow::Result;

use crate::command::{self, cargo};

pub fn run(release: bool) -> Result<()> {
    let mut build = cargo();
    build.arg("build");
    if release {
        build.arg("--release");
    }
    command::run(&mut build)
}
