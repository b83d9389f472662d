//! `cargo xtask setup`: installs what building and testing rstwatch needs on Debian 12, from
//! nothing but rustup's stable toolchain, and skips every step already done, so that it costs
//! about a second when called before each build or test run.
//!
//! Rustup cannot download `rust-src` here, so the eBPF crate is built by Debian's compiler,
//! which ships the library source that `-Z build-std=core` needs (see rstwatch/build.rs).

use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::{command, root};

/// Debian packages, in five groups: the compiler for the eBPF crate (with Debian's cargo,
/// which `rustup run` needs, and the library source) and the LLVM that bpf-linker is built
/// against; the tools the tests and benchmarks drive; the libraries bpf-linker links; what
/// the kernel matrix boots Debian's kernels with (QEMU, a static busybox for the initramfs,
/// modprobe/depmod for the extracted modules); what `cargo xtask dist` builds the package
/// with (strip, dpkg-shlibdeps) and its test checks it with (lintian, man, bash's
/// completion loader).
const DEBIAN_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "llvm-22-dev",
    "bpftool",
    "iproute2",
    "iptables",
    "conntrack",
    "tcpdump",
    "tshark",
    "netsniff-ng",
    "rsyslog",
    "rsyslog-gnutls",
    "gnutls-bin",
    "prometheus",
    "systemd",
    "python3-yaml",
    "openssl",
    "zlib1g-dev",
    "libzstd-dev",
    "qemu-system-x86",
    "busybox-static",
    "kmod",
    "binutils",
    "dpkg-dev",
    "lintian",
    "man-db",
    "bash-completion",
];

const BPF_LINKER: &str = "/usr/local/bin/bpf-linker";
const BPF_LINKER_VERSION: &str = "0.13.0";

/// The name rustup knows Debian's compiler by; rstwatch/build.rs asks aya-build for it.
const DEBIAN_TOOLCHAIN: &str = "debian-sys";

/// The tests cross-check rstwatch's Community ID against the reference implementation.
const PYTHON_MODULE: &str = "communityid";
const PYTHON_PACKAGE: &str = "communityid==1.5.0";

/// A set-up step: checks, and installs only what is missing; with `dry_run` it only says what
/// it would install.
type Step = fn(dry_run: bool) -> Result<()>;

pub fn run(dry_run: bool) -> Result<()> {
    let steps: [(&str, Step); 4] = [
        ("Debian packages", debian_packages),
        ("rustup toolchain", debian_toolchain),
        ("bpf-linker", bpf_linker),
        ("Python packages", python_packages),
    ];
    for (name, step) in steps {
        step(dry_run).with_context(|| format!("setup step `{name}` failed"))?;
    }
    Ok(())
}

fn debian_packages(dry_run: bool) -> Result<()> {
    // dpkg-query exits non-zero when a package was never installed, yet still lists the rest.
    let query = Command::new("dpkg-query")
        .args(["-W", "-f=${Package}\t${Status}\n"])
        .args(DEBIAN_PACKAGES)
        .output()
        .context("could not run dpkg-query: is this Debian?")?;
    let missing = missing_packages(&String::from_utf8_lossy(&query.stdout), DEBIAN_PACKAGES);
    if missing.is_empty() {
        println!("setup: {} Debian packages present", DEBIAN_PACKAGES.len());
        return Ok(());
    }
    let what = format!("Debian packages {}", missing.join(" "));
    if !announce_install(&what, dry_run) {
        return Ok(());
    }
    require_root(&what)?;
    // A fresh machine may still be running its own apt jobs at boot: wait for their lock.
    let apt_get = || {
        let mut apt_get = Command::new("apt-get");
        apt_get.args(["-o", "DPkg::Lock::Timeout=300"]);
        apt_get
    };
    command::run(apt_get().arg("update"))?;
    command::run(
        apt_get()
            .args(["install", "-y"])
            .args(&missing)
            // tshark asks whether non-root users may capture; keep the default, ask nothing.
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn debian_toolchain(dry_run: bool) -> Result<()> {
    let toolchains = command::read_stdout(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is needed to build the eBPF crate: is ~/.cargo/bin on PATH?")?;
    if lists_toolchain(&toolchains, DEBIAN_TOOLCHAIN) {
        println!("setup: rustup toolchain {DEBIAN_TOOLCHAIN} present");
        return Ok(());
    }
    let what = format!("rustup toolchain {DEBIAN_TOOLCHAIN} (links Debian's compiler in /usr)");
    if !announce_install(&what, dry_run) {
        return Ok(());
    }
    command::run(Command::new("rustup").args(["toolchain", "link", DEBIAN_TOOLCHAIN, "/usr"]))
}

fn bpf_linker(dry_run: bool) -> Result<()> {
    let reported = command::read_stdout(Command::new(BPF_LINKER).arg("--version"));
    if reported.is_ok_and(|version| reports_version(&version, BPF_LINKER_VERSION)) {
        println!("setup: bpf-linker {BPF_LINKER_VERSION} present");
        return Ok(());
    }
    let what = format!("bpf-linker {BPF_LINKER_VERSION} (builds against LLVM 22, takes minutes)");
    if !announce_install(&what, dry_run) {
        return Ok(());
    }
    require_root(&what)?;
    command::run(
        Command::new("/usr/bin/cargo")
            .args(["install", "--locked", "--force", "--root", "/usr/local"])
            .arg(format!("bpf-linker@{BPF_LINKER_VERSION}"))
            // The default feature wants LLVM 23, which Debian does not ship.
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .env("RUSTC", "/usr/bin/rustc")
            // `cargo run` handed xtask rustup's toolchain and library path; Debian's cargo and
            // the LLVM it links need neither.
            .env_remove("CARGO")
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("LD_LIBRARY_PATH"),
    )
}

fn python_packages(dry_run: bool) -> Result<()> {
    if command::succeeds(Command::new("python3").args(["-c", &format!("import {PYTHON_MODULE}")])) {
        println!("setup: Python package {PYTHON_MODULE} present");
        return Ok(());
    }
    if !announce_install(&format!("Python package {PYTHON_PACKAGE}"), dry_run) {
        return Ok(());
    }
    if !command::succeeds(Command::new("python3").args(["-m", "pip", "--version"])) {
        bail!("the python3 on PATH has no pip: install python3-pip, or put pyenv's python3 first");
    }
    command::run(
        Command::new("python3")
            .args(["-m", "pip", "install", PYTHON_PACKAGE])
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
            .env("PIP_ROOT_USER_ACTION", "ignore")
            // The tests import it into whichever `python3` is on PATH; if that is Debian's own,
            // PEP 668 would refuse, and Debian has no package of it.
            .env("PIP_BREAK_SYSTEM_PACKAGES", "1"),
    )
}

/// Announces an install; false if it is only a dry run.
fn announce_install(what: &str, dry_run: bool) -> bool {
    if dry_run {
        println!("setup: would install {what}");
    } else {
        println!("setup: installing {what}");
    }
    !dry_run
}

/// Saying so up front beats a permission error from deep inside apt or cargo.
fn require_root(what: &str) -> Result<()> {
    if !root::is_root() {
        bail!("installing {what} needs root: re-run with sudo");
    }
    Ok(())
}

/// The wanted packages that `dpkg-query -W -f='${Package}\t${Status}\n'` does not report as
/// installed. A package dpkg never saw is absent from that output; one removed is listed with
/// another status.
fn missing_packages(dpkg_status: &str, wanted: &[&str]) -> Vec<String> {
    let installed: Vec<&str> = dpkg_status
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(_, status)| status.split_whitespace().last() == Some("installed"))
        .map(|(package, _)| package)
        .collect();
    wanted
        .iter()
        .filter(|package| !installed.contains(package))
        .map(|package| package.to_string())
        .collect()
}

/// Whether `rustup toolchain list` output names `toolchain` (lines read like
/// `stable-x86_64-unknown-linux-gnu (active, default)`).
fn lists_toolchain(list: &str, toolchain: &str) -> bool {
    list.lines()
        .any(|line| line.split_whitespace().next() == Some(toolchain))
}

/// Whether a `--version` line such as `bpf-linker 0.13.0` reports exactly `version`.
fn reports_version(output: &str, version: &str) -> bool {
    output.split_whitespace().nth(1) == Some(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WANTED: &[&str] = &["tshark", "llvm-22-dev", "bpftool"];

    #[test]
    fn all_installed_nothing_missing() {
        let dpkg = "tshark\tinstall ok installed\nllvm-22-dev\tinstall ok installed\n\
                    bpftool\thold ok installed\n";
        assert!(missing_packages(dpkg, WANTED).is_empty());
    }

    #[test]
    fn never_installed_and_removed_packages_are_missing() {
        let dpkg = "tshark\tdeinstall ok config-files\nllvm-22-dev\tinstall ok installed\n";
        assert_eq!(missing_packages(dpkg, WANTED), ["tshark", "bpftool"]);
    }

    #[test]
    fn fresh_machine_misses_everything() {
        assert_eq!(missing_packages("", WANTED), WANTED);
    }

    #[test]
    fn linked_toolchain_is_found_whatever_its_marks() {
        let list = "stable-x86_64-unknown-linux-gnu (active, default)\ndebian-sys\n";
        assert!(lists_toolchain(list, "debian-sys"));
        assert!(lists_toolchain("debian-sys (active)\n", "debian-sys"));
    }

    #[test]
    fn toolchain_with_a_longer_name_is_not_ours() {
        let list = "stable-x86_64-unknown-linux-gnu (active, default)\ndebian-sys-old\n";
        assert!(!lists_toolchain(list, "debian-sys"));
    }

    #[test]
    fn only_the_pinned_bpf_linker_version_counts() {
        assert!(reports_version("bpf-linker 0.13.0\n", "0.13.0"));
        assert!(!reports_version("bpf-linker 0.9.13\n", "0.13.0"));
        assert!(!reports_version("bpf-linker 0.13.0-rc1\n", "0.13.0"));
        assert!(!reports_version("", "0.13.0"));
    }
}
