//! The Debian package that `cargo xtask dist` builds: lintian finds no error in it; installed,
//! it gives a working `rstwatch`, its man pages where `man` finds them, shell completion that
//! bash loads, a systemd unit that verifies and is not enabled, the configuration as a
//! conffile; purged, it leaves nothing behind, not even the links of an administrator who
//! enabled the unit.
//!
//! Runs as root and installs the package on this machine for the duration of the test: it
//! refuses to start if rstwatch is installed already, and purges the package when it ends,
//! failed or not.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

const PACKAGE: &str = "rstwatch";

/// The files the package must install, besides the pages of `docs/` (see `doc_pages`).
const INSTALLED: &[&str] = &[
    "/usr/bin/rstwatch",
    "/usr/share/man/man8/rstwatch.8.gz",
    "/usr/share/man/man8/rstwatch-watch.8.gz",
    "/usr/share/man/man8/rstwatch-detach.8.gz",
    "/usr/share/man/man1/rstwatch-explain.1.gz",
    "/usr/share/bash-completion/completions/rstwatch",
    "/usr/share/zsh/vendor-completions/_rstwatch",
    "/usr/share/fish/vendor_completions.d/rstwatch.fish",
    "/lib/systemd/system/rstwatch.service",
    "/etc/rstwatch/rstwatch.toml",
    "/usr/share/doc/rstwatch/copyright",
    "/usr/share/doc/rstwatch/changelog.gz",
    "/usr/share/doc/rstwatch/README.md.gz",
];

/// Where the package installs each page of the repository's `docs/`, which the README links
/// to: `/usr/share/doc/rstwatch/docs/NAME.md.gz`.
fn doc_pages() -> Vec<String> {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let mut pages: Vec<String> = std::fs::read_dir(&docs)
        .unwrap_or_else(|err| panic!("reading {docs:?}: {err}"))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "md"))
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            format!("/usr/share/doc/{PACKAGE}/docs/{name}.gz")
        })
        .collect();
    pages.sort();
    assert!(
        pages
            .iter()
            .any(|page| page.ends_with("/docs/design.md.gz")),
        "{pages:?}"
    );
    pages
}

/// Runs `command` and returns its stdout; panics with its output if it fails.
fn stdout_of(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// apt rather than dpkg: other builds on this machine may hold dpkg's lock for a while (their
/// set-up installing packages), and apt waits for it where dpkg gives up at once.
fn apt_get(args: &[&str]) -> Command {
    let mut command = Command::new("apt-get");
    command
        .args(["-y", "-o", "DPkg::Lock::Timeout=300"])
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive");
    command
}

fn is_installed() -> bool {
    Command::new("dpkg")
        .args(["-L", PACKAGE])
        .output()
        .is_ok_and(|output| output.status.success())
}

/// The package installed; dropping it purges it, so that a failed check leaves nothing behind.
struct Installed;

impl Installed {
    fn new(deb: &Path) -> Installed {
        let installed = Installed;
        stdout_of(apt_get(&["install"]).arg(deb));
        installed
    }

    fn purge(self) {
        std::mem::forget(self);
        stdout_of(&mut apt_get(&["purge", PACKAGE]));
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = apt_get(&["purge", PACKAGE]).status();
    }
}

/// Builds the package as a person would, through `cargo xtask dist`; its last line names it.
fn build_package() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let stdout = stdout_of(
        Command::new(cargo)
            .args(["xtask", "dist"])
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("..")),
    );
    let deb = stdout
        .lines()
        .find_map(|line| line.strip_prefix("dist: "))
        .unwrap_or_else(|| panic!("cargo xtask dist named no package:\n{stdout}"));
    PathBuf::from(deb)
}

#[test]
fn the_package_passes_lintian_installs_a_working_rstwatch_and_purges_without_a_trace() {
    assert!(
        !is_installed(),
        "rstwatch is installed on this machine: this test would replace and purge it; \
         remove it first (dpkg --purge rstwatch)"
    );
    let deb = build_package();
    assert!(
        deb.file_name()
            .is_some_and(|name| name.to_string_lossy().ends_with("_amd64.deb")
                && name.to_string_lossy().starts_with("rstwatch_")),
        "{deb:?}"
    );

    // Lintian exits non-zero on an error; each of its findings is a line `E: ...`, `W: ...`.
    let lintian = Command::new("lintian")
        .arg("--display-info")
        .arg(&deb)
        .output()
        .expect("lintian (Debian package lintian) must be installed");
    let findings = String::from_utf8_lossy(&lintian.stdout).into_owned();
    println!("lintian:\n{findings}");
    let errors: Vec<&str> = findings
        .lines()
        .filter(|line| line.starts_with("E: "))
        .collect();
    assert!(
        errors.is_empty() && lintian.status.success(),
        "lintian ({}): {errors:#?}\n{}",
        lintian.status,
        String::from_utf8_lossy(&lintian.stderr)
    );

    let installed = Installed::new(&deb);
    let files = stdout_of(Command::new("dpkg").args(["-L", PACKAGE]));
    let files: Vec<&str> = files.lines().collect();
    let pages = doc_pages();
    for file in INSTALLED
        .iter()
        .copied()
        .chain(pages.iter().map(String::as_str))
    {
        assert!(
            files.contains(&file),
            "{file} is not in the package: {files:#?}"
        );
        assert!(Path::new(file).is_file(), "{file} was not installed");
    }
    let conffiles = stdout_of(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", PACKAGE]));
    assert!(
        conffiles.contains("/etc/rstwatch/rstwatch.toml "),
        "conffiles: {conffiles}"
    );

    let version = stdout_of(Command::new("/usr/bin/rstwatch").arg("--version"));
    assert_eq!(
        version,
        format!("rstwatch {}\n", rstwatch::cli::LONG_VERSION)
    );
    assert!(
        version.contains(" (git ") && version.contains(", aya 0."),
        "{version}"
    );

    let page = stdout_of(
        Command::new("man")
            .args(["-l", "/usr/share/man/man8/rstwatch.8.gz"])
            .env("MANWIDTH", "80"),
    );
    for expected in [
        "SUBCOMMANDS",
        "rstwatch-watch(8)",
        "rstwatch-explain(1)",
        "EXAMPLES",
    ] {
        assert!(
            page.contains(expected),
            "{expected} not in the page:\n{page}"
        );
    }
    // Each page is where `man NAME` looks for it.
    for (section, name) in [
        ("8", "rstwatch"),
        ("8", "rstwatch-watch"),
        ("8", "rstwatch-detach"),
        ("1", "rstwatch-explain"),
    ] {
        let found = stdout_of(Command::new("man").args(["-w", section, name]));
        assert_eq!(
            found.trim(),
            format!("/usr/share/man/man{section}/{name}.{section}.gz")
        );
    }

    // The unit as installed, its Documentation= man page included.
    let unit = "/lib/systemd/system/rstwatch.service";
    let verify = Command::new("systemd-analyze")
        .args(["verify", unit])
        .output()
        .unwrap();
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify {unit}: {verify:?}"
    );
    let enabled = Command::new("systemctl")
        .args(["is-enabled", "rstwatch.service"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&enabled.stdout), "disabled\n");
    // Enabled by the administrator, so that the purge has links to remove.
    stdout_of(Command::new("systemctl").args(["enable", "rstwatch.service"]));
    let enabled_link = "/etc/systemd/system/multi-user.target.wants/rstwatch.service";
    assert!(Path::new(enabled_link).is_symlink(), "{enabled_link}");

    // bash-completion's loader finds the completion by the command's name, and it completes
    // a subcommand.
    let completion = stdout_of(Command::new("bash").args([
        "-c",
        ". /usr/share/bash-completion/bash_completion && __load_completion rstwatch && \
         complete -p rstwatch && \
         COMP_WORDS=(rstwatch wat) COMP_CWORD=1 && _rstwatch rstwatch wat rstwatch && \
         echo \"completes: ${COMPREPLY[*]}\"",
    ]));
    assert!(
        completion.contains("-F _rstwatch") && completion.contains(" rstwatch\n"),
        "{completion}"
    );
    assert!(completion.contains("completes: watch\n"), "{completion}");

    // The package's files, not the directories it shares with others (/usr/bin, ...).
    let own_files: Vec<&str> = files
        .into_iter()
        .filter(|file| !Path::new(file).is_dir())
        .collect();
    installed.purge();
    assert!(!is_installed(), "dpkg still lists rstwatch after the purge");
    for file in own_files {
        assert!(!Path::new(file).exists(), "{file} is left after the purge");
    }
    for left in [
        "/etc/rstwatch",
        "/usr/share/doc/rstwatch",
        "/var/lib/rstwatch",
        enabled_link,
        "/var/lib/systemd/deb-systemd-helper-enabled/rstwatch.service.dsh-also",
    ] {
        // A dangling link does not exist, yet is left.
        assert!(
            std::fs::symlink_metadata(left).is_err(),
            "{left} is left after the purge"
        );
    }
}
