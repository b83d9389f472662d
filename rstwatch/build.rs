use std::path::PathBuf;

use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf_package = packages
        .into_iter()
        .find(|cargo_metadata::Package { name, .. }| name.as_str() == "rstwatch-ebpf")
        .ok_or_else(|| anyhow!("rstwatch-ebpf package not found"))?;
    let cargo_metadata::Package {
        name,
        manifest_path,
        ..
    } = ebpf_package;
    let root_dir = manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {manifest_path}"))?;
    // `-Z build-std=core` is unstable; aya-build passes it only when RUSTC_BOOTSTRAP says so.
    std::env::set_var("RUSTC_BOOTSTRAP", "1");
    // aya-build forwards every line of the nested cargo's stderr as a `cargo:warning`, so its
    // progress (`Compiling ...`) would read as dozens of warnings in every clean build. Quiet
    // drops that progress; compiler warnings and errors still come through, as aya-build takes
    // them from the JSON messages on stdout.
    std::env::set_var("CARGO_TERM_QUIET", "true");
    // Debian's rustc (linked into rustup as `debian-sys` by `cargo xtask setup`) ships the
    // library source that `-Z build-std=core` needs for the BPF target; rustup's do not here.
    let build = |features: &[&str]| {
        aya_build::build_ebpf(
            [Package {
                name: name.as_str(),
                root_dir: root_dir.as_str(),
                features,
                ..Default::default()
            }],
            Toolchain::Custom("debian-sys"),
        )
    };
    // The programs twice: for kernels whose verifier knows no BPF atomic but add (before
    // 5.12), which refuses any other anywhere in a program, even where it never runs; and as
    // they are. Both land in OUT_DIR under the binary's name, the first renamed; in the same
    // nested target directory, so neither rebuilds what the other built.
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    build(&["atomic-add-only"])?;
    std::fs::rename(
        out_dir.join("rstwatch"),
        out_dir.join("rstwatch-atomic-add-only"),
    )
    .context("renaming the atomic-add-only object")?;
    build(&[])
}
