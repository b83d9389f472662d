//! `cargo xtask kmatrix`: boots Debian's own kernels (11's 5.10, the oldest rstwatch supports;
//! 12's 6.1, which has no TCX; 12's 6.12) under QEMU and runs rstwatch inside each against
//! that kernel: the verifier loads both programs, it attaches (a clsact qdisc and a netlink
//! filter where TCX is missing), reports a refused connection on ingress and an abort on
//! egress between two namespaces, leaves only its recognisable filter after SIGKILL and
//! removes it at the next start or on `rstwatch detach`; then BPF_PROG_TEST_RUN tests of
//! `tests/tests/kernel/` run there.
//!
//! The guest's root file system is this machine's, read-only over 9p, so the binaries built
//! here run inside unchanged (`kmatrix/run.sh`). Kernel packages are resolved to Debian's
//! current names (the numbers move with security updates), downloaded once and extracted into
//! a cache outside the repository (`--cache`, or `RSTWATCH_KMATRIX_CACHE`). A kernel of
//! another Debian release comes from that release's suite of the archive the host's apt
//! already uses, through a source list and package lists of the cache's own: the host's apt
//! configuration is never changed. KVM does not work on this machine kind, so the guests run
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

/// Downloaded packages, extracted kernels and initramfs images, kept between runs.
const DEFAULT_CACHE_DIR: &str = "/var/cache/rstwatch-kmatrix";
/// Names another cache directory, as `--cache` does.
const CACHE_ENV: &str = "RSTWATCH_KMATRIX_CACHE";

/// The cache directory: `flag`, else `RSTWATCH_KMATRIX_CACHE`, else the default.
pub fn cache_dir(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os(CACHE_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR))
}

/// A Debian kernel line and the package name pattern of its current build (generic flavour:
/// the cloud one has no 9p, which the guest's root needs).
pub struct Series {
    pub name: &'static str,
    /// Regular expression for `apt-cache search --names-only`.
    pattern: &'static str,
    /// What comes before the number that grows with each update.
    prefix: &'static str,
    /// The archive suite offering it when the host's own sources do not.
    suite: Option<&'static str>,
}

pub const SERIES: [Series; 3] = [
    Series {
        name: "5.10",
        pattern: r"^linux-image-5\.10\.0-[0-9]+-amd64-unsigned$",
        prefix: "linux-image-5.10.0-",
        suite: Some("bullseye"),
    },
    Series {
        name: "6.1",
        pattern: r"^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$",
        prefix: "linux-image-6.1.0-",
        suite: None,
    },
    Series {
        name: "6.12",
        pattern: r"^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$",
        prefix: "linux-image-6.12.",
        suite: None,
    },
];

/// The BPF_PROG_TEST_RUN tests run in every guest by default: the feature probes, the parse
/// paths (VLAN tags, IPv6 chains, the TCP options walk) the older verifiers judge
/// differently, and the flow state through a whole conversation. `--full` runs every test of
/// the file (~20 minutes).
const GUEST_KERNEL_TESTS: &[&str] = &[
    "features::each_feature_is_found_from_the_kernel_version_that_brought_it",
    "parser::syn_window_scale_is_found_anywhere_in_the_options",
    "parser::every_vlan_and_ip_header_variant_parses_and_tracks",
    "flow::handshake_data_fin_rst_and_followups_are_tracked_and_reported",
    "frames::a_rst_record_carries_the_start_of_its_frame_from_either_hook",
];

/// Seconds one guest may run before it is stopped: 5.10 under TCG took 343 s alone and 482 s
/// beside two builds on this machine kind.
const GUEST_TIMEOUT_DEFAULT: u32 = 900;
const GUEST_TIMEOUT_FULL: u32 = 1800;

pub fn run(only: Option<&str>, full: bool, cache: &Path) -> Result<()> {
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
    let mut summaries = Vec::new();
    let mut failed = false;
    for series in series {
        let (package, kernel) = fetch(cache, series)?;
        let outcome = boot_and_check(cache, &kernel, &rstwatch, &kernel_tests, full)?;
        failed |= !outcome.passed();
        summaries.push(format!(
            "kmatrix: {} ({package}, {}): {}",
            series.name,
            kernel.fetch.describe(),
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

/// apt as one series needs it: the host's own configuration, or for another Debian suite a
/// source list and package lists kept in the cache (the options override the host's paths
/// for that one invocation; nothing of the host's apt state is written).
struct Apt {
    options: Vec<String>,
    /// The private source list's directory, or `None` for the host's sources.
    private: Option<PathBuf>,
}

impl Apt {
    fn for_series(cache: &Path, series: &Series) -> Result<Apt> {
        let Some(suite) = series.suite else {
            return Ok(Apt {
                options: Vec::new(),
                private: None,
            });
        };
        let dir = cache.join(format!("apt-{suite}"));
        for sub in ["lists/partial", "cache/archives/partial"] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        let uri = host_archive_uri()?;
        let list = dir.join("sources.list");
        fs::write(
            &list,
            format!(
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {uri} {suite} main\n"
            ),
        )
        .with_context(|| format!("writing {}", list.display()))?;
        let path = |sub: &str| dir.join(sub).display().to_string();
        let options = [
            format!("Dir::Etc::sourcelist={}", list.display()),
            "Dir::Etc::sourceparts=-".to_owned(),
            format!("Dir::State::Lists={}", path("lists")),
            format!("Dir::Cache={}", path("cache")),
        ]
        .into_iter()
        .flat_map(|option| ["-o".to_owned(), option])
        .collect();
        Ok(Apt {
            options,
            private: Some(dir),
        })
    }

    /// `program` (`apt-get`, `apt-cache`) with this source's options.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        // As root into a root-owned cache: apt's `_apt` sandbox user could not write there.
        cmd.args(["-o", "APT::Sandbox::User=root"])
            .args(&self.options);
        cmd
    }

    fn update(&self) -> Result<()> {
        command::run(self.command("apt-get").args(["update", "-qq"]))
    }

    /// What to say when the sources offer no package of `series`.
    fn none_offered(&self, series: &Series) -> String {
        match &self.private {
            Some(dir) => format!(
                "Debian's {} suite offers no package matching {} (source list: {})",
                series.suite.unwrap_or_default(),
                series.pattern,
                dir.join("sources.list").display()
            ),
            None => format!(
                "Debian offers no package matching {} (is bookworm-security in the sources?)",
                series.pattern
            ),
        }
    }
}

/// Where the host's apt finds the Debian archive (not its security archive): the first
/// `.../debian` address of its deb822 sources or of its one-line source list.
fn host_archive_uri() -> Result<String> {
    let mut texts = Vec::new();
    if let Ok(entries) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| {
                path.extension()
                    .is_some_and(|ext| ext == "sources" || ext == "list")
            })
            .collect();
        paths.sort();
        texts.extend(
            paths
                .iter()
                .filter_map(|path| fs::read_to_string(path).ok()),
        );
    }
    texts.extend(fs::read_to_string("/etc/apt/sources.list").ok());
    texts.iter().find_map(|text| archive_uri(text)).context(
        "the host's apt sources name no Debian archive (an address ending in /debian) \
             to fetch other Debian releases' kernels from",
    )
}

/// The first Debian archive address (ending in `/debian`) in a source file, deb822
/// (`URIs: ...`) or one-line (`deb [options] URI suite ...`).
fn archive_uri(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .flat_map(|line| {
            let addresses: Vec<&str> = if let Some(uris) = line.strip_prefix("URIs:") {
                uris.split_whitespace().collect()
            } else if let Some(rest) = line.strip_prefix("deb ") {
                let rest = rest.trim_start();
                let rest = match rest.strip_prefix('[') {
                    Some(options) => options.split_once(']').map_or("", |(_, rest)| rest),
                    None => rest,
                };
                rest.split_whitespace().take(1).collect()
            } else {
                Vec::new()
            };
            addresses
        })
        .map(|uri| uri.trim_end_matches('/'))
        .find(|uri| uri.ends_with("/debian") && uri.contains("://"))
        .map(str::to_owned)
}

/// The newest package of `series`, in the cache. When the package lists name a package the
/// archive no longer has (a security update replaced it), they are refreshed and the newest
/// package resolved again.
fn fetch(cache: &Path, series: &Series) -> Result<(String, Kernel)> {
    let apt = Apt::for_series(cache, series)?;
    let package = resolve(&apt, series)?;
    match cached_kernel(&apt, cache, series, &package) {
        Ok(kernel) => Ok((package, kernel)),
        Err(err) => {
            println!("kmatrix: {err:#}; refreshing the package lists and trying again");
            apt.update()?;
            let package = resolve(&apt, series)?;
            let kernel = cached_kernel(&apt, cache, series, &package)?;
            Ok((package, kernel))
        }
    }
}

/// The newest package of `series` its source offers now; the package lists are refreshed
/// once if they know none.
fn resolve(apt: &Apt, series: &Series) -> Result<String> {
    if let Some(package) = newest(apt, series)? {
        return Ok(package);
    }
    apt.update()?;
    newest(apt, series)?.with_context(|| apt.none_offered(series))
}

fn newest(apt: &Apt, series: &Series) -> Result<Option<String>> {
    let listing = command::read_stdout(apt.command("apt-cache").args([
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
    fetch: Fetch,
}

/// What `cached_kernel` had to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fetch {
    Downloaded,
    /// The package was in the cache; its extraction had not finished.
    Extracted,
    Cached,
}

impl Fetch {
    fn describe(self) -> &'static str {
        match self {
            Fetch::Downloaded => "downloaded",
            Fetch::Extracted => "extracted from the cache",
            Fetch::Cached => "cached",
        }
    }
}

/// Makes sure `cache` holds `package` extracted, and drops older packages of the same series.
///
/// Each step leaves a mark only once it is whole, so a run interrupted anywhere is finished
/// by the next: apt downloads into `download/` (emptied first), and the package is moved into
/// `debs/` only after apt succeeded; it is extracted into `kernels/PACKAGE/`, whose
/// `.complete` is written after `depmod`. Every directory is created here: `dpkg-deb -x`
/// creates no parents.
fn cached_kernel(apt: &Apt, cache: &Path, series: &Series, package: &str) -> Result<Kernel> {
    let (debs, kernels) = (cache.join("debs"), cache.join("kernels"));
    for dir in [&debs, &kernels] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let deb = debs.join(format!("{package}.deb"));
    let dir = kernels.join(package);
    let complete = dir.join(".complete");
    let mut fetch = Fetch::Cached;
    if !deb.exists() {
        println!("kmatrix: downloading {package} into {}", debs.display());
        let download = cache.join("download");
        if download.exists() {
            fs::remove_dir_all(&download)
                .with_context(|| format!("emptying {}", download.display()))?;
        }
        fs::create_dir_all(&download)?;
        command::run(
            apt.command("apt-get")
                .args(["download", "-qq", package])
                .current_dir(&download),
        )?;
        let fetched = fs::read_dir(&download)?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
            .with_context(|| format!("apt-get download {package} left no .deb"))?;
        fs::rename(&fetched, &deb)?;
        fs::remove_dir_all(&download)?;
        fetch = Fetch::Downloaded;
    }
    if !complete.exists() {
        if fetch == Fetch::Cached {
            fetch = Fetch::Extracted;
        }
        println!("kmatrix: extracting {package} into {}", dir.display());
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("emptying {}", dir.display()))?;
        }
        fs::create_dir_all(&dir)?;
        command::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir))?;
        let release = module_release(&dir)?;
        command::run(Command::new("depmod").arg("-b").arg(&dir).arg(&release))?;
        fs::write(&complete, "")?;
    }
    for parent in [&debs, &kernels] {
        for entry in fs::read_dir(parent)? {
            let path = entry?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let name = name.strip_suffix(".deb").unwrap_or(&name);
            if update_number(name, series).is_some() && name != package {
                if path.is_dir() {
                    fs::remove_dir_all(&path)?;
                } else {
                    fs::remove_file(&path)?;
                }
            }
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
        fetch,
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
            newest_package(listing, series("6.1")).as_deref(),
            Some("linux-image-6.1.0-57-amd64-unsigned")
        );
        let listing = "linux-image-6.12.117+deb12-amd64-unsigned - Linux 6.12\n\
                       linux-image-6.12.99+deb12-amd64-unsigned - Linux 6.12\n";
        assert_eq!(
            newest_package(listing, series("6.12")).as_deref(),
            Some("linux-image-6.12.117+deb12-amd64-unsigned")
        );
        assert_eq!(newest_package("", series("6.1")), None);
    }

    #[test]
    fn one_series_never_takes_the_others_packages() {
        for (package, other) in [
            ("linux-image-6.12.117+deb12-amd64-unsigned", "6.1"),
            ("linux-image-6.1.0-57-amd64-unsigned", "6.12"),
            ("linux-image-5.10.0-32-amd64-unsigned", "6.1"),
            ("linux-image-6.1.0-57-amd64-unsigned", "5.10"),
        ] {
            assert_eq!(update_number(package, series(other)), None, "{package}");
        }
        assert_eq!(
            update_number("linux-image-5.10.0-32-amd64-unsigned", series("5.10")),
            Some(32)
        );
    }

    #[test]
    fn the_archive_address_comes_from_either_source_format() {
        let deb822 = "Types: deb\n\
                      # http://snapshot.debian.org/archive/debian/20250520T000000Z\n\
                      URIs: http://deb.debian.org/debian\n\
                      Suites: bookworm bookworm-updates\n\n\
                      Types: deb\n\
                      URIs: http://deb.debian.org/debian-security\n\
                      Suites: bookworm-security\n";
        assert_eq!(
            archive_uri(deb822).as_deref(),
            Some("http://deb.debian.org/debian")
        );
        let one_line = "deb http://security.debian.org/debian-security bookworm-security main\n\
                        # deb http://old.example/debian bookworm main\n\
                        deb [arch=amd64 signed-by=/k.gpg] https://mirror.example/debian/ bookworm main\n";
        assert_eq!(
            archive_uri(one_line).as_deref(),
            Some("https://mirror.example/debian")
        );
        assert_eq!(archive_uri("deb http://x.example/ubuntu jammy main"), None);
    }

    /// A cache directory of the test's own, removed when dropped.
    struct TempCache(PathBuf);

    impl Drop for TempCache {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// The real resolve, download and extract path, into an empty cache, then a full one, an
    /// extraction and a download interrupted half-way. Uses Debian 11's 5.10, the smallest
    /// package of the matrix, which also takes the private source list's path. Needs root
    /// (depmod, apt's lists) and Debian's archive.
    #[test]
    fn a_kernel_is_fetched_into_an_empty_cache_and_a_broken_one_is_mended() {
        let cache = TempCache(
            std::env::temp_dir().join(format!("rstwatch-kmatrix-test-{}", std::process::id())),
        );
        let series = series("5.10");
        let apt = Apt::for_series(&cache.0, series).unwrap();
        let package = resolve(&apt, series).unwrap();
        let fetch = |expected: Fetch| {
            let kernel = cached_kernel(&apt, &cache.0, series, &package).unwrap();
            assert_eq!(kernel.fetch, expected);
            assert!(kernel.image.is_file(), "{}", kernel.image.display());
            let release = module_release(&kernel.modules_base).unwrap();
            let modules = kernel.modules_base.join("lib/modules").join(release);
            assert!(modules.join("kernel/drivers/net/veth.ko").is_file());
            assert!(fs::metadata(modules.join("modules.dep")).unwrap().len() > 0);
            kernel
        };
        let kernel = fetch(Fetch::Downloaded);
        fetch(Fetch::Cached);
        // An extraction cut short: files missing, no mark.
        fs::remove_file(kernel.modules_base.join(".complete")).unwrap();
        fs::remove_file(&kernel.image).unwrap();
        fetch(Fetch::Extracted);
        // A download cut short: half a package in the download directory, none in the cache.
        let deb = cache.0.join("debs").join(format!("{package}.deb"));
        let half = fs::read(&deb).unwrap();
        fs::remove_file(&deb).unwrap();
        fs::remove_file(kernel.modules_base.join(".complete")).unwrap();
        fs::create_dir_all(cache.0.join("download")).unwrap();
        fs::write(
            cache.0.join("download").join(format!("{package}.deb")),
            &half[..half.len() / 2],
        )
        .unwrap();
        fetch(Fetch::Downloaded);
        assert!(!cache.0.join("download").exists());
    }

    fn series(name: &str) -> &'static Series {
        SERIES.iter().find(|series| series.name == name).unwrap()
    }
}
