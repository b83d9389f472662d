use std::{path::Path, process::Command};

use anyhow::{anyhow, bail, Context as _};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata {
        packages,
        workspace_root,
        ..
    } = cargo_metadata::MetadataCommand::new()
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
    aya_build::build_ebpf(
        [Package {
            name: name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::Custom("debian-sys"),
    )?;

    let aya = locked_version(workspace_root.join("Cargo.lock").as_std_path(), "aya")?;
    let commit = git_commit();
    println!(
        "cargo:rustc-env=RSTWATCH_LONG_VERSION={} (git {commit}, aya {aya})",
        env!("CARGO_PKG_VERSION")
    );
    Ok(())
}

/// The version of `package` that Cargo.lock resolved: the one this build links.
fn locked_version(lock: &Path, package: &str) -> anyhow::Result<String> {
    println!("cargo:rerun-if-changed={}", lock.display());
    let text =
        std::fs::read_to_string(lock).with_context(|| format!("reading {}", lock.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("parsing {}", lock.display()))?;
    let versions: Vec<&str> = table
        .get("package")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter(|entry| entry.get("name").and_then(toml::Value::as_str) == Some(package))
        .filter_map(|entry| entry.get("version")?.as_str())
        .collect();
    match versions[..] {
        [version] => Ok(version.to_owned()),
        _ => bail!(
            "{} should lock exactly one version of {package}, not {versions:?}",
            lock.display()
        ),
    }
}

/// The short hash of the checked-out commit, or `unknown` outside a git checkout (a source
/// tarball, or no git installed). The build runs again when HEAD moves: HEAD's file changes
/// on a checkout, HEAD's log on every move (a commit changes only the branch's file, which
/// does not exist while git keeps the branch packed), the branch's file on a commit when
/// the log is turned off.
fn git_commit() -> String {
    let Some(commit) = git(&["rev-parse", "--short=7", "HEAD"]) else {
        return "unknown".to_owned();
    };
    let mut watched = vec!["HEAD".to_owned(), "logs/HEAD".to_owned()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for path in watched {
        // In a linked worktree HEAD is the worktree's own, branches are the repository's:
        // --git-path knows which is where.
        let Some(file) = git(&["rev-parse", "--path-format=absolute", "--git-path", &path]) else {
            continue;
        };
        if Path::new(&file).exists() {
            println!("cargo:rerun-if-changed={file}");
        }
    }
    commit
}

/// What `git ARGS` prints in this crate's directory, trimmed; `None` if it fails.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    Some(String::from_utf8(output.stdout).ok()?.trim().to_owned())
}
