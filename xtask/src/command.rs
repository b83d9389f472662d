//! Running the tools xtask drives. Every step shares the terminal, and an error names the
//! command line that failed.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Command, ExitStatus, Stdio},
};

use anyhow::{bail, Context as _, Result};

/// `cargo`, working in the workspace root. Under rustup it is the toolchain that runs xtask:
/// rustup passes its choice on in `RUSTUP_TOOLCHAIN`.
pub fn cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root());
    cmd
}

pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
}

/// Runs `cmd` with the terminal's stdin, stdout and stderr.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{}`", show(cmd)))?;
    check(cmd, status)
}

/// Runs `cmd` like [`run`], and also hands each line of its stdout to `on_line` as it is
/// echoed.
pub fn run_reading_stdout(cmd: &mut Command, mut on_line: impl FnMut(&str)) -> Result<()> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{}`", show(cmd)))?;
    let child_stdout = child.stdout.take().expect("stdout is piped");
    let mut stdout = std::io::stdout().lock();
    for line in BufReader::new(child_stdout).split(b'\n') {
        let line = line.with_context(|| format!("reading the output of `{}`", show(cmd)))?;
        stdout.write_all(&line)?;
        stdout.write_all(b"\n")?;
        stdout.flush()?;
        on_line(&String::from_utf8_lossy(&line));
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for `{}`", show(cmd)))?;
    check(cmd, status)
}

/// Runs `cmd` quietly and returns its stdout; an error, with its stderr, if it fails.
pub fn read_stdout(cmd: &mut Command) -> Result<String> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{}`", show(cmd)))?;
    if !output.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            show(cmd),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Whether `cmd`, run quietly, starts and succeeds.
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn check(cmd: &Command, status: ExitStatus) -> Result<()> {
    if !status.success() {
        bail!("`{}` failed ({status})", show(cmd));
    }
    Ok(())
}

/// The command line as a person would type it.
fn show(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}
