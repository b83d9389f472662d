//! Helpers for the commands the lab runs: set-up commands run to completion, and long-running
//! ones (tcpdump, rstwatch) started with default signal dispositions, read line by line and
//! stopped with a signal.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt as _;
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

/// `Command::new(program)` whose child starts with every signal's default action and no signal
/// blocked, whatever this process inherited: every child a test stops or pokes with a signal
/// is started through it. A shell starts a background job (`cmd &`) with SIGINT and SIGQUIT
/// ignored, and so do `nohup` and some CI runners; an ignored disposition survives fork and
/// exec, so a child would inherit it and shrug off the signal a test stops it with (`sh`
/// cannot even trap a signal that was ignored when it started).
pub fn command_with_default_signals(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(program);
    // SAFETY: the closure runs in the child between fork and exec; it only calls sigaction,
    // sigemptyset and sigprocmask, which are async-signal-safe, and allocates nothing.
    unsafe { command.pre_exec(default_signal_dispositions) };
    command
}

/// Sets every standard signal but SIGKILL and SIGSTOP (whose action cannot change) to its
/// default action and empties the signal mask. std's spawn empties the mask as well, but does
/// not promise to.
fn default_signal_dispositions() -> std::io::Result<()> {
    for signal in (1..=libc::SIGSYS).filter(|&s| s != libc::SIGKILL && s != libc::SIGSTOP) {
        // SAFETY: sigaction is plain data; all zeroes is a valid value (no flags, empty mask).
        let mut default: libc::sigaction = unsafe { std::mem::zeroed() };
        default.sa_sigaction = libc::SIG_DFL;
        // SAFETY: `default` is a valid sigaction; the old action is not asked for.
        if unsafe { libc::sigaction(signal, &default, std::ptr::null_mut()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    // SAFETY: sigemptyset initialises the set before sigprocmask reads it.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        if libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sends `signal` to `child` and waits up to `timeout` for it to exit; kills it if it does not.
pub fn signal_and_wait(
    child: &mut Child,
    signal: libc::c_int,
    timeout: Duration,
) -> Result<ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    let pid = libc::pid_t::try_from(child.id())?;
    // SAFETY: kill has no memory-safety preconditions; pid is our own unreaped child.
    unsafe { libc::kill(pid, signal) };
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.kill()?;
    child.wait()?;
    bail!("process {pid} did not exit within {timeout:?} of signal {signal} and was killed")
}

/// Kills `child` unless it has exited, and reaps it: for `Drop` implementations.
pub fn kill_and_reap(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        // Fails only if the child exited meanwhile; wait reaps it either way.
        let _ = child.kill();
    }
    let _ = child.wait();
}
