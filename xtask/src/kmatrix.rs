//! `cargo xtask kmatrix`: boots Debian 12's own kernels (6.1, which has no TCX, and 6.12)
//! under QEMU and runs rstwatch inside each against that kernel: the verifier loads both
//! programs, it attaches (a clsact qdisc and a netlink filter where TCX is missing), reports a
//! refused connection on ingress and an abort on egress between two namespaces, leaves only
//! its recognisable filter after SIGKILL and removes it at the next start or on
//! `rstwatch detach`; then BPF_PROG_TEST_RUN tests of `tests/tests/kernel/` run there.
//!
//! The guest's root file system is this machine's, read-only over 9p, so the binaries built
//! here run inside unchanged (`kmatrix/run.sh`). Kernel packages are resolved to Debian's
//! current names (the numbers move with security updates), downloaded once and extracted into
//! a cache outside the repository. KVM does not work on this machine kind, so the guests run
//! under TCG, one after the other: two at once fight for the CPUs.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, ensure, Context as _, Result};

use crate::{
    command::{self, cargo},
    setup,
};

/// Extracted kernels and initramfs images, kept between runs.
const CACHE_DIR: &str = "/var/cache/rstwatch-kmatrix";

/// A kernel line of Debian 12 and the package name pattern of its current build (generic
/// flavour: the cloud one has no 9p, which the guest's root needs).
pub struct Series {
    pub name: &'static str,
    /// Regular expression for `apt-cache search --names-only`.
    pattern: &'static str,
    /// What comes before the number that grows with each update.
    prefix: &'static str,
}

pub const SERIES: [Series; 2] = [
    Series {
        name: "6.1",
        pattern: r"^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$",
        prefix: "linux-image-6.1.0-",
    },
    Series {
        name: "6.12",
        pattern: r"^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$",
        prefix: "linux-image-6.12.",
    },
];

/// The BPF_PROG_TEST_RUN tests run in every guest by default: the parse paths (VLAN tags,
/// IPv6 chains, the TCP options walk) the older verifiers judge differently, and the flow
/// state through a whole conversation. `--full` runs every test of the file (~20 minutes).
const GUEST_KERNEL_TESTS: &[&str] = &[
    "parser::syn_window_scale_is_found_anywhere_in_the_options",
    "parser::every_vlan_and_ip_header_variant_parses_and_tracks",
    "flow::handshake_data_fin_rst_and_followups_are_tracked_and_reported",
    "frames::a_rst_record_carries_the_start_of_its_frame_from_either_hook",
];

/// Seconds one guest may run before it is stopped.
const GUEST_TIMEOUT_DEFAULT: u32 = 600;
const GUEST_TIMEOUT_FULL: u32 = 1800;

pub fn run(only: Option<&str>, full: bool) -> Result<()> {
    let series: Vec<&Series> = SERIES
        .iter()
        .filter(|series| only.is_none_or(|name| series.name == name))
        .collect();
    if series.is_empty() {
        let known: Vec<&str> = SERIES.iter().map(|series| series.name).collect();
        bail!(
            "unknown kernel {:?}: the matrix has {}",
            only.unwrap_or_default(),
            known.join(", ")
        );
    }
    setup::run(false)?;
    let rstwatch = built_executable(&["build", "-p", "rstwatch"], "rstwatch")?;
    let kernel_tests = built_executable(
        &[
            "test",
            "-p",
            "rstwatch-tests",
            "--test",
            "kernel",
            "--no-run",
        ],
        "kernel",
    )?;
    let cache = Path::new(CACHE_DIR);
    let mut summaries = Vec::new();
    let mut failed = false;
    for series in series {
        let package = resolve(series)?;
        let kernel = cached_kernel(cache, series, &package)?;
        let outcome = boot_and_check(cache, &kernel, &rstwatch, &kernel_tests, full)?;
        failed |= !outcome.passed();
        summaries.push(format!(
            "kmatrix: {} ({package}): {}",
            series.name,
            outcome.describe()
        ));
    }
    for summary in &summaries {
        println!("{summary}");
    }
    ensure!(!failed, "the kernel matrix failed");
    Ok(())
}

/// Builds with `cargo ARGS --message-format=json` and returns the executable of target `name`.
fn built_executable(args: &[&str], name: &str) -> Result<PathBuf> {
    let messages = command::read_stdout(cargo().args(args).arg("--message-format=json"))?;
    for line in messages.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] == "compiler-artifact" && message["target"]["name"] == name {
            if let Some(executable) = message["executable"].as_str() {
                return Ok(PathBuf::from(executable));
            }
        }
    }
    bail!(
        "`cargo {}` built no executable named {name}",
        args.join(" ")
    )
}

/// The newest package of `series` Debian offers now; the package lists are refreshed once if
/// they know none.
fn resolve(series: &Series) -> Result<String> {
    if let Some(package) = newest(series)? {
        return Ok(package);
    }
    command::run(Command::new("apt-get").args(["update", "-qq"]))?;
    newest(series)?.with_context(|| {
        format!(
            "Debian offers no package matching {} (is bookworm-security in the sources?)",
            series.pattern
        )
    })
}

fn newest(series: &Series) -> Result<Option<String>> {
    let listing = command::read_stdout(Command::new("apt-cache").args([
        "search",
        "--names-only",
        series.pattern,
    ]))?;
    Ok(newest_package(&listing, series))
}

/// The package with the highest update number in an `apt-cache search` listing.
fn newest_package(listing: &str, series: &Series) -> Option<String> {
    listing
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|package| Some((update_number(package, series)?, package)))
        .max()
        .map(|(_, package)| package.to_owned())
}

fn update_number(package: &str, series: &Series) -> Option<u32> {
    let rest = package.strip_prefix(series.prefix)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// An extracted kernel package: its image and the tree holding `lib/modules/VERSION`.
struct Kernel {
    image: PathBuf,
    modules_base: PathBuf,
}

/// Downloads and extracts `package` unless the cache has it, and drops older packages of the
/// same series from the cache.
fn cached_kernel(cache: &Path, series: &Series, package: &str) -> Result<Kernel> {
    let kernels = cache.join("kernels");
    let dir = kernels.join(package);
    let complete = dir.join(".complete");
    if !complete.exists() {
        println!("kmatrix: downloading {package} into {}", kernels.display());
        let download = cache.join("download");
        let _ = fs::remove_dir_all(&download);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&download)?;
        // As root into a root-owned cache: apt's `_apt` sandbox user could not write there.
        command::run(
            Command::new("apt-get")
                .args(["download", "-qq", "-o", "APT::Sandbox::User=root", package])
                .current_dir(&download),
        )?;
        let deb = fs::read_dir(&download)?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
            .with_context(|| format!("apt-get download {package} left no .deb"))?;
        command::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir))?;
        fs::remove_dir_all(&download)?;
        let release = module_release(&dir)?;
        command::run(Command::new("depmod").arg("-b").arg(&dir).arg(&release))?;
        fs::write(&complete, "")?;
    }
    for entry in fs::read_dir(&kernels)? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if update_number(&name, series).is_some() && name != package {
            fs::remove_dir_all(&path)?;
        }
    }
    let image = fs::read_dir(dir.join("boot"))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .find(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("vmlinuz-"))
        })
        .with_context(|| format!("{package} has no boot/vmlinuz-*"))?;
    Ok(Kernel {
        image,
        modules_base: dir,
    })
}

fn module_release(dir: &Path) -> Result<String> {
    let modules = dir.join("lib/modules");
    let entry = fs::read_dir(&modules)?
        .next()
        .with_context(|| format!("{} is empty", modules.display()))??;
    Ok(entry.file_name().to_string_lossy().into_owned())
}

/// What one guest run found.
struct Outcome {
    exit: Option<i32>,
    passed_checks: usize,
    failed_checks: Vec<String>,
    seconds: u64,
}

impl Outcome {
    fn passed(&self) -> bool {
        self.exit == Some(0) && self.failed_checks.is_empty() && self.passed_checks > 0
    }

    fn describe(&self) -> String {
        if self.passed() {
            return format!("PASS, {} checks in {} s", self.passed_checks, self.seconds);
        }
        let why = match self.exit {
            Some(124) => "the guest timed out".to_owned(),
            Some(125) => "the guest died".to_owned(),
            Some(code) => format!("exit {code}"),
            None => "killed".to_owned(),
        };
        format!(
            "FAIL ({why}) after {} s; failed checks: {}",
            self.seconds,
            if self.failed_checks.is_empty() {
                "none reported".to_owned()
            } else {
                self.failed_checks.join(", ")
            }
        )
    }
}

fn boot_and_check(
    cache: &Path,
    kernel: &Kernel,
    rstwatch: &Path,
    kernel_tests: &Path,
    full: bool,
) -> Result<Outcome> {
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("kmatrix");
    let mut guest = Command::new("bash");
    guest
        .arg(scripts.join("run.sh"))
        .arg(&kernel.image)
        .arg("bash")
        .arg(scripts.join("guest-check.sh"))
        .arg(rstwatch)
        .arg(kernel_tests)
        .env("KM_MODULES_BASE", &kernel.modules_base)
        .env("KM_CACHE", cache.join("initramfs"))
        .env(
            "KM_TIMEOUT",
            if full {
                GUEST_TIMEOUT_FULL
            } else {
                GUEST_TIMEOUT_DEFAULT
            }
            .to_string(),
        );
    if !full {
        guest.args(GUEST_KERNEL_TESTS);
    }
    let start = Instant::now();
    let mut child = guest
        .stdout(Stdio::piped())
        .spawn()
        .context("could not start kmatrix/run.sh")?;
    let mut passed_checks = 0;
    let mut failed_checks = Vec::new();
    // The guest's output is echoed as it comes; the `check:` lines are also counted.
    for line in BufReader::new(child.stdout.take().expect("stdout is piped")).lines() {
        let line = line.context("reading the guest's output")?;
        println!("{line}");
        if let Some(check) = line.strip_prefix("check: ") {
            match check.split_once(" FAILED") {
                Some((name, _)) => failed_checks.push(name.to_owned()),
                None => passed_checks += 1,
            }
        }
    }
    let status = child.wait().context("waiting for kmatrix/run.sh")?;
    Ok(Outcome {
        exit: status.code(),
        passed_checks,
        failed_checks,
        seconds: start.elapsed().as_secs(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_update_wins_whatever_the_listing_order() {
        let listing = "linux-image-6.1.0-9-amd64-unsigned - Linux 6.1 for 64-bit PCs\n\
                       linux-image-6.1.0-57-amd64-unsigned - Linux 6.1 for 64-bit PCs\n\
                       linux-image-6.1.0-47-amd64-unsigned - Linux 6.1 for 64-bit PCs\n";
        assert_eq!(
            newest_package(listing, &SERIES[0]).as_deref(),
            Some("linux-image-6.1.0-57-amd64-unsigned")
        );
        let listing = "linux-image-6.12.117+deb12-amd64-unsigned - Linux 6.12\n\
                       linux-image-6.12.99+deb12-amd64-unsigned - Linux 6.12\n";
        assert_eq!(
            newest_package(listing, &SERIES[1]).as_deref(),
            Some("linux-image-6.12.117+deb12-amd64-unsigned")
        );
        assert_eq!(newest_package("", &SERIES[0]), None);
    }

    #[test]
    fn one_series_never_takes_the_others_packages() {
        assert_eq!(
            update_number("linux-image-6.12.117+deb12-amd64-unsigned", &SERIES[0]),
            None
        );
        assert_eq!(
            update_number("linux-image-6.1.0-57-amd64-unsigned", &SERIES[1]),
            None
        );
    }
}
