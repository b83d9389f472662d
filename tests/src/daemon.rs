//! rstwatch run as a daemon under faults: its standard output wherever the test wants it
//! (a pipe nobody reads, a file), its stderr read line by line, signals sent by the test.

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::process::{
    command_with_default_signals, kill_and_reap, read_lines, run, signal_and_wait,
};

/// How long rstwatch may take to load, pass the verifier and attach.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// What rstwatch prints on stderr once its programs are attached.
const READY_LINE: &str = "rstwatch: watching ";

/// A running `rstwatch watch`; dropping it kills the process.
pub struct Daemon {
    child: Child,
    stdout: Option<Receiver<String>>,
    stderr: Receiver<String>,
    /// Every stderr line read so far.
    said: Vec<String>,
}

impl Daemon {
    /// Runs `BINARY watch ARGS...` in namespace `ns` with `stdout`, and returns once it has
    /// attached. A piped stdout is read line by line ([`Daemon::stdout_line`]).
    pub fn start(binary: &Path, ns: &str, args: &[&str], stdout: Stdio) -> Result<Daemon> {
        let mut child = command_with_default_signals("ip")
            .args(["netns", "exec", ns])
            .arg(binary)
            .arg("watch")
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .context("starting rstwatch")?;
        let stdout = child.stdout.take().map(read_lines);
        let stderr = read_lines(child.stderr.take().context("rstwatch stderr")?);
        let mut daemon = Daemon {
            child,
            stdout,
            stderr,
            said: Vec::new(),
        };
        daemon.stderr_line(READY_LINE, READY_TIMEOUT)?;
        Ok(daemon)
    }

    /// Waits for a stderr line containing `wanted` and returns it.
    pub fn stderr_line(&mut self, wanted: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.said.push(line.clone());
                    if line.contains(wanted) {
                        return Ok(line);
                    }
                }
                Err(_) => bail!(
                    "rstwatch did not say {wanted:?} within {timeout:?}; it said: {}",
                    self.said.join(" / ")
                ),
            }
        }
    }

    /// Every stderr line read so far, those before the attach included.
    pub fn said(&self) -> &[String] {
        &self.said
    }

    /// Waits for a line on the piped stdout.
    pub fn stdout_line(&mut self, timeout: Duration) -> Result<String> {
        let stdout = self.stdout.as_ref().context("stdout is not piped")?;
        stdout
            .recv_timeout(timeout)
            .with_context(|| format!("no record on stdout within {timeout:?}"))
    }

    /// Sends `signal` to rstwatch (`ip netns exec` execs it: the child is rstwatch).
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
    }

    /// Sends SIGUSR1 and returns the counters line for the output it prints in answer.
    pub fn output_counters(&mut self, timeout: Duration) -> Result<String> {
        self.signal(libc::SIGUSR1);
        self.stderr_line("rstwatch: output ", timeout)
    }

    /// Sends SIGTERM, waits up to `timeout` for the exit, and returns its status with every
    /// stderr line from the start.
    pub fn terminate(mut self, timeout: Duration) -> Result<(ExitStatus, String)> {
        let deadline = Instant::now() + timeout;
        let status = signal_and_wait(&mut self.child, libc::SIGTERM, timeout)
            .with_context(|| format!("rstwatch said: {}", self.said.join(" / ")))?;
        // The pipe closes with the process (and any child it left holding stderr).
        while let Ok(line) = self
            .stderr
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.said.push(line);
        }
        Ok((status, self.said.join("\n")))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

/// A pipe whose read end the test holds and never reads, shrunk to one page so that a few
/// records fill it: the write end is rstwatch's stdout.
pub fn stalled_pipe() -> Result<(File, Stdio)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    ensure!(
        unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == 0,
        "pipe2: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: pipe2 just created both descriptors; each is owned once from here on.
    let (read_end, write_end) =
        unsafe { (File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on a descriptor we own; the kernel rounds the size up to a page.
    unsafe { libc::fcntl(fds[0], libc::F_SETPIPE_SZ, 4096) };
    Ok((read_end, Stdio::from(write_end)))
}

/// A small tmpfs mounted for one test, unmounted when dropped.
pub struct SmallTmpfs {
    dir: PathBuf,
}

impl SmallTmpfs {
    pub fn mount(label: &str, bytes: u64) -> Result<SmallTmpfs> {
        let dir = std::env::temp_dir().join(format!("rw-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let dir_text = dir.to_str().context("temp dir path is not UTF-8")?;
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes}"),
                "tmpfs",
                dir_text,
            ],
        )?;
        Ok(SmallTmpfs { dir })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `name` until the file system is full.
    pub fn fill(&self, name: &str) -> Result<()> {
        use std::io::Write as _;
        let mut filler = File::create(self.path(name))?;
        let block = [0u8; 4096];
        loop {
            match filler.write(&block) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(err) if err.raw_os_error() == Some(libc::ENOSPC) => return Ok(()),
                Err(err) => return Err(err).context("filling the tmpfs"),
            }
        }
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let dir = self.dir.to_string_lossy().into_owned();
        if let Err(error) = run("umount", &["-l", &dir]) {
            eprintln!("tmpfs clean-up: {error:#}");
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}
