//! Runs `rstwatch watch --format json` inside a lab namespace and reads the events it prints,
//! one JSON object per line.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::process::{command_with_default_signals, kill_and_reap, read_lines, signal_and_wait};

/// How long rstwatch may take to load, pass the verifier and attach.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// What rstwatch prints on stderr once its programs are attached.
const READY_LINE: &str = "rstwatch: watching ";
/// How long rstwatch may take to flush and exit after SIGINT or SIGTERM.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the output pipes may stay open after the process exited.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// The `rstwatch` binary of this build, in `target/<profile>/`: beside this executable, or
/// beside the `deps/` directory a test executable runs from. Under `cargo test` it is built
/// first, once per test process: `cargo test -p rstwatch-tests` rebuilds the library the tests
/// link, not the binary they run, and a stale binary would test yesterday's code.
pub fn rstwatch_binary() -> Result<PathBuf> {
    static BUILT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    if let Some(cargo) = std::env::var_os("CARGO") {
        BUILT
            .get_or_init(|| build_rstwatch(&cargo).map_err(|err| format!("{err:#}")))
            .clone()
            .map_err(anyhow::Error::msg)?;
    }
    let exe = std::env::current_exe().context("locating the running executable")?;
    let mut profile_dir = exe.parent().context("the executable has no directory")?;
    if profile_dir.ends_with("deps") {
        profile_dir = profile_dir.parent().context("deps/ has no parent")?;
    }
    let binary = profile_dir.join("rstwatch");
    ensure!(
        binary.exists(),
        "{} does not exist: build it first with `cargo build -p rstwatch` (cargo xtask test does)",
        binary.display()
    );
    Ok(binary)
}

fn build_rstwatch(cargo: &std::ffi::OsStr) -> Result<()> {
    let mut build = Command::new(cargo);
    build.args(["build", "--quiet", "-p", "rstwatch"]);
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    let status = build.status().context("running cargo build -p rstwatch")?;
    ensure!(
        status.success(),
        "cargo build -p rstwatch failed ({status})"
    );
    Ok(())
}

/// A running watcher; dropping it kills the process.
pub struct Watcher {
    child: Child,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    /// What rstwatch said on stderr before it was attached.
    startup: Vec<String>,
}

/// What a watcher left when it was stopped.
#[derive(Debug)]
pub struct WatchExit {
    /// The events printed after the last `events_until`, including those flushed on SIGINT.
    pub events: Vec<Value>,
    pub status: ExitStatus,
    pub stderr: String,
}

impl Watcher {
    /// rstwatch watching the lab client's interface with a 100 ms hold, as the lab tests
    /// run it.
    pub fn on_lab_client(lab: &crate::lab::Lab) -> Result<Watcher> {
        let binary = rstwatch_binary()?;
        Watcher::start(
            &binary,
            lab.client_ns(),
            lab.client_iface(),
            &["--hold", "100ms"],
        )
    }

    /// Runs `BINARY watch -i IFACE --format json EXTRA_ARGS...` in namespace `ns` and returns
    /// once it has attached (so no packet of a scenario started afterwards is missed).
    pub fn start(binary: &Path, ns: &str, iface: &str, extra_args: &[&str]) -> Result<Watcher> {
        let mut command = command_with_default_signals("ip");
        command
            .args(["netns", "exec", ns])
            .arg(binary)
            .args(["watch", "-i", iface, "--format", "json"])
            .args(extra_args);
        let mut watcher = Watcher::spawn(command)?;
        watcher.wait_ready()?;
        Ok(watcher)
    }

    /// Runs `command` (an rstwatch watching with `--format json`, made by
    /// [`command_with_default_signals`] so that it can be stopped) and returns once it has
    /// attached.
    pub fn start_command(command: Command) -> Result<Watcher> {
        let mut watcher = Watcher::spawn(command)?;
        watcher.wait_ready()?;
        Ok(watcher)
    }

    /// The watcher's process id (`ip netns exec` execs rstwatch, so it is rstwatch's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The lines rstwatch printed on stderr before saying it was attached.
    pub fn startup_lines(&self) -> &[String] {
        &self.startup
    }

    /// Waits for rstwatch's line saying its programs are attached.
    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.starts_with(READY_LINE) => return Ok(()),
                Ok(line) => self.startup.push(line),
                Err(_) => bail!(
                    "rstwatch did not attach within {READY_TIMEOUT:?}; stderr: {}",
                    self.startup.join(" / ")
                ),
            }
        }
    }

    /// Runs any command that prints one JSON object per line on stdout (made by
    /// [`command_with_default_signals`] so that it can be stopped).
    pub fn spawn(mut command: Command) -> Result<Watcher> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        let stdout = read_lines(child.stdout.take().context("watcher stdout")?);
        let stderr = read_lines(child.stderr.take().context("watcher stderr")?);
        Ok(Watcher {
            child,
            stdout,
            stderr,
            startup: Vec::new(),
        })
    }

    /// Reads events until one satisfies `wanted`, and returns all read, that one last.
    /// Fails when `timeout` passes first or the watcher exits, listing what it did print.
    pub fn events_until(
        &mut self,
        wanted: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Result<Vec<Value>> {
        let deadline = Instant::now() + timeout;
        let mut events = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.stdout.recv_timeout(left) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => {
                    bail!("no wanted event within {timeout:?}; {}", self.seen(&events))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    bail!(
                        "the watcher exited before the wanted event; {}",
                        self.seen(&events)
                    )
                }
            };
            let event = parse_event(&line)?;
            let done = wanted(&event);
            events.push(event);
            if done {
                return Ok(events);
            }
        }
    }

    /// Reads stderr until a line satisfies `wanted` and returns it; `None` when `timeout`
    /// passes first (a zero timeout reads only what is already there).
    pub fn stderr_line(
        &mut self,
        wanted: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.stderr.recv_timeout(left).ok()?;
            if wanted(&line) {
                return Some(line);
            }
        }
    }

    /// Waits for `count` events (or for `timeout`), then stops the watcher, which must exit
    /// cleanly; returns every event it printed, including any beyond `count`.
    pub fn stop_after(mut self, count: usize, timeout: Duration) -> Result<Vec<Value>> {
        let seen = std::cell::Cell::new(0);
        let mut events = self.events_until(
            |_| {
                seen.set(seen.get() + 1);
                seen.get() >= count
            },
            timeout,
        )?;
        let exit = self.stop()?;
        ensure!(exit.status.success(), "the watcher failed: {exit:?}");
        events.extend(exit.events);
        Ok(events)
    }

    /// Sends SIGINT, waits for the exit, and returns what the watcher printed since the last
    /// `events_until`.
    pub fn stop(self) -> Result<WatchExit> {
        self.stop_with(libc::SIGINT)
    }

    /// Like [`Watcher::stop`], with `signal` instead of SIGINT.
    pub fn stop_with(mut self, signal: libc::c_int) -> Result<WatchExit> {
        let status = signal_and_wait(&mut self.child, signal, EXIT_TIMEOUT)?;
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let events = drain(&self.stdout, deadline)
            .iter()
            .map(|line| parse_event(line))
            .collect::<Result<_>>()?;
        let stderr = drain(&self.stderr, deadline).join("\n");
        Ok(WatchExit {
            events,
            status,
            stderr,
        })
    }

    fn seen(&self, events: &[Value]) -> String {
        let stderr: Vec<String> = self.stderr.try_iter().collect();
        format!("events: {events:?}; stderr: {}", stderr.join(" / "))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

fn parse_event(line: &str) -> Result<Value> {
    serde_json::from_str(line)
        .with_context(|| format!("the watcher printed a non-JSON line {line:?}"))
}

/// The lines still to come from an exited process, until its pipe closes or `deadline`.
fn drain(lines: &Receiver<String>, deadline: Instant) -> Vec<String> {
    let mut drained = Vec::new();
    while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        drained.push(line);
    }
    drained
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    fn fake_watcher(script: &str) -> Watcher {
        let mut command = command_with_default_signals("sh");
        command.args(["-c", script]);
        Watcher::spawn(command).unwrap()
    }

    fn class_is(class: &'static str) -> impl Fn(&Value) -> bool {
        move |event| event["class"] == class
    }

    #[test]
    fn events_until_returns_the_events_up_to_the_wanted_one() {
        // One printf, one write: all three events are out before the SIGINT.
        let mut watcher = fake_watcher(
            r#"printf '%s\n' '{"class":"abort"}' '{"class":"refused"}' '{"class":"teardown"}'; exec sleep 5"#,
        );
        let events = watcher
            .events_until(class_is("refused"), Duration::from_secs(2))
            .unwrap();
        assert_eq!(
            events,
            [
                serde_json::json!({"class": "abort"}),
                serde_json::json!({"class": "refused"})
            ]
        );
        let exit = watcher.stop().unwrap();
        assert_eq!(exit.events, [serde_json::json!({"class": "teardown"})]);
        assert_eq!(exit.status.signal(), Some(libc::SIGINT));
    }

    #[test]
    fn stop_returns_what_the_watcher_flushes_on_sigint() {
        let mut watcher = fake_watcher(
            r#"trap 'echo "{\"class\":\"abort\"}"; echo bye >&2; exit 0' INT
               echo '{"ready":true}'
               while :; do sleep 0.05; done"#,
        );
        watcher
            .events_until(|event| event["ready"] == true, Duration::from_secs(2))
            .unwrap();
        let exit = watcher.stop().unwrap();
        assert!(exit.status.success(), "{exit:?}");
        assert_eq!(exit.events, [serde_json::json!({"class": "abort"})]);
        assert_eq!(exit.stderr, "bye");
    }

    #[test]
    fn events_until_times_out_naming_what_it_saw() {
        let mut watcher = fake_watcher(r#"echo '{"class":"abort"}'; exec sleep 5"#);
        let error = watcher
            .events_until(class_is("refused"), Duration::from_millis(300))
            .unwrap_err();
        assert!(error.to_string().contains("abort"), "{error}");
    }

    #[test]
    fn events_until_fails_when_the_watcher_exits() {
        let mut watcher = fake_watcher("echo 'cannot attach' >&2; exit 2");
        let error = watcher
            .events_until(class_is("refused"), Duration::from_secs(2))
            .unwrap_err();
        assert!(error.to_string().contains("exited"), "{error}");
    }

    #[test]
    fn a_line_that_is_not_json_is_an_error() {
        let mut watcher = fake_watcher("echo 'RST seen'; exec sleep 5");
        let error = watcher
            .events_until(|_| true, Duration::from_secs(2))
            .unwrap_err();
        assert!(error.to_string().contains("non-JSON"), "{error}");
    }

    #[test]
    fn dropping_the_watcher_kills_the_process() {
        let watcher = fake_watcher("exec sleep 30");
        let pid = watcher.child.id();
        drop(watcher);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }
}
