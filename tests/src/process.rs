//! Helpers for the commands the lab runs: set-up commands run to completion, and long-running
//! ones (tcpdump, rstwatch) read line by line and stopped with SIGINT.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

/// Runs a command to completion and returns its stdout; its stderr becomes the error.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} (is it installed?)"))?;
    ensure!(
        output.status.success(),
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Sends each line `reader` yields to the returned channel, from a thread that ends at EOF.
pub fn read_lines(reader: impl Read + Send + 'static) -> Receiver<String> {
    let (lines, received) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    received
}

/// Sends SIGINT to `child` and waits up to `timeout` for it to exit; kills it if it does not.
pub fn interrupt_and_wait(child: &mut Child, timeout: Duration) -> Result<ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    let pid = libc::pid_t::try_from(child.id())?;
    // SAFETY: kill has no memory-safety preconditions; pid is our own unreaped child.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.kill()?;
    child.wait()?;
    bail!("process {pid} did not exit within {timeout:?} of SIGINT and was killed")
}

/// Kills `child` unless it has exited, and reaps it: for `Drop` implementations.
pub fn kill_and_reap(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        // Fails only if the child exited meanwhile; wait reaps it either way.
        let _ = child.kill();
    }
    let _ = child.wait();
}
