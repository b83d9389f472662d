//! `cargo xtask dist`: `target/dist/rstwatch_VERSION_ARCH.deb`, a Debian 12 package of the
//! release binary with its man pages and shell completions (generated from its command line
//! by `rstwatch-dist`), the systemd unit (installed, not enabled), the example configuration
//! as a conffile, the README with the pages of `docs/` it links to, and the copyright file.
//!
//! The package's tree is staged in `target/dist/build/debian/rstwatch`, the layout
//! dpkg-shlibdeps expects, and packed by `dpkg-deb`: no debhelper, so everything debhelper
//! would do (strip, compress, conffiles, md5sums, the control file) is done here.

use std::{
    fs::{self, File},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::SystemTime,
};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use crate::command::{self, cargo, workspace_root};

const PACKAGE: &str = "rstwatch";

/// The name and address the project's commits carry.
const MAINTAINER: &str = "rstwatch maintainers <maintainers@users.noreply.h-seed-79ddc7ef.example>";

/// The control file's description: a synopsis, then paragraphs indented by one space.
const DESCRIPTION: &str = "\
explain every TCP reset on this host from kernel evidence
 rstwatch watches network interfaces with eBPF (XDP for ingress, TC for
 egress), tracks every TCP conversation and explains each reset (RST) in one
 line: port closed, normal teardown, peer kept talking after close, idle
 timeout or abort mid-stream; and who really sent it, the endpoint or a
 middlebox that injected it.
 .
 It explains the resets of pcap and pcap-ng captures the same way, writes
 text, JSON, ECS, OCSF or CEF records, exports them over syslog and serves
 Prometheus metrics. The systemd unit runs it unprivileged with three
 capabilities; it is installed but not enabled.";

/// The configuration the unit reads, a conffile: an upgrade keeps the administrator's edits.
const CONFFILE: &str = "etc/rstwatch/rstwatch.toml";

/// Files taken as they are, by their path in the repository and in the package.
const FILES: &[(&str, &str)] = &[
    (
        "dist/rstwatch.service",
        "lib/systemd/system/rstwatch.service",
    ),
    ("dist/rstwatch.toml", CONFFILE),
    ("dist/deb/copyright", "usr/share/doc/rstwatch/copyright"),
];

const MAINTAINER_SCRIPTS: &[&str] = &["postinst", "prerm", "postrm"];

/// Builds the package and returns its path.
pub fn run() -> Result<PathBuf> {
    let (version, target) = package_version_and_target()?;
    let arch = command::read_stdout(Command::new("dpkg").arg("--print-architecture"))?
        .trim()
        .to_owned();
    let epoch = source_date_epoch();

    command::run(cargo().args(["build", "--release", "-p", "rstwatch"]))?;
    // Apart: built with the tests crate in the same invocation, rstwatch would get that
    // crate's `test-support` feature too.
    command::run(cargo().args([
        "build",
        "--release",
        "-p",
        "rstwatch-tests",
        "--bin",
        "rstwatch-dist",
    ]))?;
    let release = target.join("release");
    let build = target.join("dist/build");
    if build.exists() {
        fs::remove_dir_all(&build).with_context(|| format!("removing {}", build.display()))?;
    }
    let root = build.join("debian").join(PACKAGE);

    let binary = root.join("usr/bin/rstwatch");
    create_parent(&binary)?;
    // What dh_strip removes: symbols, the compiler's notes and comments. The eBPF object
    // is data inside the binary and stays whole.
    command::run(
        Command::new("strip")
            .args([
                "--strip-unneeded",
                "--remove-section=.comment",
                "--remove-section=.note",
                "-o",
            ])
            .arg(&binary)
            .arg(release.join("rstwatch")),
    )?;
    command::run(
        Command::new(release.join("rstwatch-dist"))
            .arg(&root)
            .arg(date(epoch, "+%F")?),
    )?;
    for page in files_under(&root.join("usr/share/man"))? {
        gzip(&page)?;
    }
    let workspace = workspace_root();
    for (from, to) in FILES {
        let to = root.join(to);
        create_parent(&to)?;
        fs::copy(workspace.join(from), &to).with_context(|| format!("copying {from}"))?;
    }
    let doc = root.join("usr/share/doc").join(PACKAGE);
    gzip_to(&workspace.join("README.md"), &doc.join("README.md.gz"))?;
    // The README's links (`docs/kernels.md`, ...) resolve beside it, but for the `.gz`.
    for page in doc_pages(&workspace.join("docs"))? {
        let name = page.file_name().context("a page has a name")?;
        let mut gzipped = name.to_owned();
        gzipped.push(".gz");
        gzip_to(&page, &doc.join("docs").join(gzipped))?;
    }
    let long_version = command::read_stdout(Command::new(&binary).arg("--version"))?;
    let changelog = doc.join("changelog");
    fs::write(
        &changelog,
        format!(
            "{PACKAGE} ({version}) unstable; urgency=medium\n\n  \
             * Packaged by `cargo xtask dist` from\n    {}.\n\n -- {MAINTAINER}  {}\n",
            long_version.trim(),
            date(epoch, "-R")?.trim()
        ),
    )?;
    gzip(&changelog)?;

    let control_dir = root.join("DEBIAN");
    fs::create_dir_all(&control_dir)?;
    for script in MAINTAINER_SCRIPTS {
        fs::copy(
            workspace.join("dist/deb").join(script),
            control_dir.join(script),
        )
        .with_context(|| format!("copying dist/deb/{script}"))?;
    }
    fs::write(control_dir.join("conffiles"), format!("/{CONFFILE}\n"))?;
    set_permissions(&root)?;
    let md5sums = md5sums(&root)?;
    fs::write(control_dir.join("md5sums"), md5sums)?;
    let control = format!(
        "Package: {PACKAGE}\nVersion: {version}\nArchitecture: {arch}\nMaintainer: {MAINTAINER}\n\
         Installed-Size: {}\nDepends: {}\nSection: net\nPriority: optional\n\
         Description: {DESCRIPTION}\n",
        installed_size_kib(&root)?,
        shared_library_depends(&build, &binary)?,
    );
    fs::write(control_dir.join("control"), control)?;

    let deb = target
        .join("dist")
        .join(format!("{PACKAGE}_{version}_{arch}.deb"));
    command::run(
        Command::new("dpkg-deb")
            .args(["--build", "--root-owner-group"])
            .arg(&root)
            .arg(&deb)
            // The archive's time stamps: those of the commit, not of this build.
            .env("SOURCE_DATE_EPOCH", epoch.to_string()),
    )?;
    println!("dist: {}", deb.display());
    Ok(deb)
}

/// rstwatch's version and the directory cargo builds into, as `cargo metadata` says.
fn package_version_and_target() -> Result<(String, PathBuf)> {
    let metadata: Value = serde_json::from_str(&command::read_stdout(cargo().args([
        "metadata",
        "--no-deps",
        "--format-version",
        "1",
    ]))?)
    .context("parsing cargo metadata")?;
    let version = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|package| package["name"] == PACKAGE)
        .and_then(|package| package["version"].as_str())
        .context("cargo metadata lists no rstwatch package")?;
    let target = metadata["target_directory"]
        .as_str()
        .context("cargo metadata names no target directory")?;
    Ok((version.to_owned(), PathBuf::from(target)))
}

/// The time the package claims to be from: `SOURCE_DATE_EPOCH` if set, else the commit's,
/// else now (outside a git checkout), so that building one commit twice gives the same dates.
fn source_date_epoch() -> u64 {
    let from_env = std::env::var("SOURCE_DATE_EPOCH").ok();
    let from_git = || {
        command::read_stdout(
            Command::new("git")
                .args(["log", "-1", "--format=%ct"])
                .current_dir(workspace_root()),
        )
        .ok()
    };
    from_env
        .or_else(from_git)
        .and_then(|seconds| seconds.trim().parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |since| since.as_secs())
        })
}

/// `epoch` as `date -u` writes it with `format` (`+%F`, or `-R` for a changelog).
fn date(epoch: u64, format: &str) -> Result<String> {
    command::read_stdout(
        Command::new("date")
            .args(["-u", "-d"])
            .arg(format!("@{epoch}"))
            .arg(format),
    )
    .map(|date| date.trim().to_owned())
}

/// What the binary links, as dpkg-shlibdeps reads it: `libc6 (>= 2.34), ...`. It finds the
/// package's name in `debian/control` under `build`.
fn shared_library_depends(build: &Path, binary: &Path) -> Result<String> {
    fs::write(
        build.join("debian/control"),
        format!("Source: {PACKAGE}\n\nPackage: {PACKAGE}\nArchitecture: any\n"),
    )?;
    let output = command::read_stdout(
        Command::new("dpkg-shlibdeps")
            .arg("-O")
            .arg(binary.strip_prefix(build)?)
            .current_dir(build),
    )?;
    match output.trim().strip_prefix("shlibs:Depends=") {
        Some(depends) if !depends.is_empty() => Ok(depends.to_owned()),
        _ => bail!("dpkg-shlibdeps said `{}`", output.trim()),
    }
}

/// Installed-Size as dpkg-gencontrol counts it: each file's size in KiB rounded up, and one
/// for each directory or link; the control files are not installed.
fn installed_size_kib(root: &Path) -> Result<u64> {
    let mut kib = 0;
    for entry in entries_under(root)? {
        if entry.starts_with(root.join("DEBIAN")) {
            continue;
        }
        let metadata = fs::symlink_metadata(&entry)?;
        kib += if metadata.is_file() {
            metadata.len().div_ceil(1024)
        } else {
            1
        };
    }
    Ok(kib)
}

/// `md5sum` lines of every installed file but the conffile, which dpkg checks on its own.
fn md5sums(root: &Path) -> Result<String> {
    let files: Vec<PathBuf> = files_under(root)?
        .into_iter()
        .filter_map(|file| file.strip_prefix(root).ok().map(Path::to_path_buf))
        .filter(|file| !file.starts_with("DEBIAN") && file != Path::new(CONFFILE))
        .collect();
    command::read_stdout(
        Command::new("md5sum")
            .arg("--")
            .args(&files)
            .current_dir(root),
    )
}

/// Directories 0755, files 0644 but for the binary and the maintainer scripts (0755): what
/// the package installs, whatever the umask the tree was made under.
fn set_permissions(root: &Path) -> Result<()> {
    for entry in entries_under(root)? {
        let metadata = fs::symlink_metadata(&entry)?;
        let relative = entry.strip_prefix(root)?;
        let executable = metadata.is_dir()
            || relative.starts_with("usr/bin")
            || MAINTAINER_SCRIPTS
                .iter()
                .any(|script| relative == Path::new("DEBIAN").join(script));
        let mode = if executable { 0o755 } else { 0o644 };
        fs::set_permissions(&entry, fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", entry.display()))?;
    }
    Ok(())
}

/// Every file and directory below `dir`, sorted.
fn entries_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if fs::symlink_metadata(&path)?.is_dir() {
            entries.extend(entries_under(&path)?);
        }
        entries.push(path);
    }
    entries.sort();
    Ok(entries)
}

fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in entries_under(dir)? {
        if fs::symlink_metadata(&entry)?.is_file() {
            files.push(entry);
        }
    }
    Ok(files)
}

/// The Markdown pages directly in `dir`, sorted.
fn doc_pages(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut pages = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|extension| extension == "md") && path.is_file() {
            pages.push(path);
        }
    }
    if pages.is_empty() {
        bail!("no pages in {}", dir.display());
    }
    pages.sort();
    Ok(pages)
}

fn create_parent(path: &Path) -> Result<()> {
    let dir = path.parent().context("a file has a directory")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// Compresses `file` in place as Debian ships documentation and man pages: best compression,
/// no name or time stamp in the header.
fn gzip(file: &Path) -> Result<()> {
    command::run(Command::new("gzip").arg("-9n").arg(file))
}

fn gzip_to(from: &Path, to: &Path) -> Result<()> {
    create_parent(to)?;
    let out = File::create(to).with_context(|| format!("creating {}", to.display()))?;
    command::run(Command::new("gzip").arg("-9nc").arg(from).stdout(out))
}
