//! rstwatch under faults: outputs that stall, fill up, rotate or have no reader yet;
//! interfaces that disappear and come back; inputs it must refuse naming the real cause.

use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rstwatch_tests::{
    daemon::{stalled_pipe, Daemon, SmallTmpfs},
    lab::{Family, Lab},
    scenarios::{self, CLOSED_PORT},
    watch::rstwatch_binary,
};
use serde_json::Value;

/// How long a reset may take to show up in rstwatch's counters or output.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long rstwatch may take to answer a signal or report a change.
const SAY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long rstwatch may take to refuse: some refusals come only after loading the programs.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(20);
/// SIGTERM to exit, whatever the output is doing: the writer's grace plus the final drain.
const EXIT_TIMEOUT: Duration = Duration::from_secs(6);

fn binary() -> PathBuf {
    rstwatch_binary().unwrap()
}

/// `rstwatch watch` arguments for `iface` with JSON records and a short hold.
fn watch_args<'a>(iface: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["-i", iface, "--format", "json", "--hold", "50ms"];
    args.extend_from_slice(more);
    args
}

/// Provokes `count` refused connections from the client, one reset each.
fn refused(lab: &Lab, count: u64) {
    for _ in 0..count {
        scenarios::closed_port(lab, Family::V4).unwrap();
    }
}

/// The number after `key=` in one of rstwatch's counters lines.
fn counter(line: &str, key: &str) -> u64 {
    let needle = format!("{key}=");
    let at = line
        .find(&needle)
        .unwrap_or_else(|| panic!("no {key} in {line:?}"));
    line[at + needle.len()..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("{key} is not a number in {line:?}"))
}

/// Asks for the counters (SIGUSR1) until `done` accepts the output line, or fails at the
/// deadline with the last line.
fn counters_until(daemon: &mut Daemon, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let line = daemon.output_counters(SAY_TIMEOUT).unwrap();
        if done(&line) {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "counters never got there: {line}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn lines_of(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("cut line {line:?}")))
        .collect()
}

#[test]
fn a_reader_that_stops_reading_stalls_neither_capture_nor_signals() {
    const RESETS: u64 = 40;
    let lab = Lab::new("stalled").unwrap();
    let (_never_read, stdout) = stalled_pipe().unwrap();
    // Every reset its own line: storm folding applies to every output and would fold these
    // identical refusals into counted aggregates.
    let args = watch_args(lab.client_iface(), &["--aggregate-rate", "off"]);
    let mut daemon = Daemon::start(&binary(), lab.client_ns(), &args, stdout).unwrap();
    refused(&lab, RESETS);
    // A pipe of one page holds a few records: the rest wait in the queue, and the daemon
    // still answers SIGUSR1 with every reset accounted for.
    let line = counters_until(&mut daemon, |line| {
        counter(line, "written") + counter(line, "queued") + counter(line, "dropped") == RESETS
    });
    assert!(counter(&line, "queued") > 0, "the pipe is full: {line}");
    let (status, stderr) = daemon.terminate(EXIT_TIMEOUT).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("lost at exit"), "{stderr}");
    assert!(stderr.contains("refused"), "the summary: {stderr}");
}

#[test]
fn a_full_disk_cuts_no_line_and_writing_resumes_when_space_returns() {
    const RESETS: u64 = 5;
    let lab = Lab::new("fulldisk").unwrap();
    let tmpfs = SmallTmpfs::mount("fulldisk", 256 * 1024).unwrap();
    let output = tmpfs.path("resets.jsonl");
    File::create(&output).unwrap();
    tmpfs.fill("filler").unwrap();
    let output_arg = output.to_str().unwrap();
    let args = watch_args(lab.client_iface(), &["--output", output_arg]);
    let mut daemon = Daemon::start(&binary(), lab.client_ns(), &args, Stdio::null()).unwrap();
    refused(&lab, RESETS);
    daemon
        .stderr_line("retrying until space returns", EVENT_TIMEOUT)
        .unwrap();
    counters_until(&mut daemon, |line| counter(line, "queued") == RESETS);
    assert_eq!(std::fs::metadata(&output).unwrap().len(), 0, "nothing cut");

    std::fs::remove_file(tmpfs.path("filler")).unwrap();
    daemon.stderr_line("space is back", EVENT_TIMEOUT).unwrap();
    counters_until(&mut daemon, |line| counter(line, "written") == RESETS);
    let records = lines_of(&output);
    assert_eq!(records.len() as u64, RESETS, "{records:?}");
    assert!(records.iter().all(|record| record["class"] == "refused"));
    let (status, stderr) = daemon.terminate(EXIT_TIMEOUT).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("dropped=0"), "{stderr}");
}

#[test]
fn sighup_reopens_the_output_after_rotation() {
    let lab = Lab::new("rotate").unwrap();
    let dir = std::env::temp_dir().join(format!("rw-rotate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let output = dir.join("resets.jsonl");
    let rotated = dir.join("resets.jsonl.1");
    let output_arg = output.to_str().unwrap();
    let args = watch_args(lab.client_iface(), &["--output", output_arg]);
    let mut daemon = Daemon::start(&binary(), lab.client_ns(), &args, Stdio::null()).unwrap();
    refused(&lab, 1);
    counters_until(&mut daemon, |line| counter(line, "written") == 1);
    std::fs::rename(&output, &rotated).unwrap();
    daemon.signal(libc::SIGHUP);
    daemon
        .stderr_line("reopening --output", SAY_TIMEOUT)
        .unwrap();
    refused(&lab, 1);
    counters_until(&mut daemon, |line| counter(line, "written") == 2);
    let (status, stderr) = daemon.terminate(EXIT_TIMEOUT).unwrap();
    let (old, new) = (lines_of(&rotated), lines_of(&output));
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!((old.len(), new.len()), (1, 1), "{old:?} / {new:?}");
    assert_ne!(old[0]["src_port"], Value::Null);
}

#[test]
fn a_fifo_output_without_reader_does_not_hold_up_attaching() {
    let lab = Lab::new("fifo").unwrap();
    let dir = std::env::temp_dir().join(format!("rw-fifo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("resets.fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let args = watch_args(lab.client_iface(), &["--output", fifo.to_str().unwrap()]);
    let daemon = Daemon::start(&binary(), lab.client_ns(), &args, Stdio::null()).unwrap();
    assert!(
        daemon
            .said()
            .iter()
            .any(|line| line.contains("FIFO with no reader")),
        "{:?}",
        daemon.said()
    );
    let (lines, received) = std::sync::mpsc::channel();
    let reader_path = fifo.clone();
    std::thread::spawn(move || {
        let reader = BufReader::new(File::open(reader_path).unwrap());
        for line in reader.lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let flow = scenarios::closed_port(&lab, Family::V4).unwrap();
    let line = received.recv_timeout(EVENT_TIMEOUT).unwrap();
    let record: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(record["dst_port"], flow.client.port());
    let (status, stderr) = daemon.terminate(EXIT_TIMEOUT).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(status.success(), "{status}: {stderr}");
}

/// The extra link: `rw-x0` in the client namespace, `rw-x1` in the server's.
const EXTRA_IFACE: &str = "rw-x0";
const EXTRA_SERVER: &str = "198.18.7.2";

fn add_extra_link(lab: &Lab) {
    let ip = |args: &[&str]| {
        let status = Command::new("ip").args(args).status().unwrap();
        assert!(status.success(), "ip {args:?}");
    };
    let (client, server) = (lab.client_ns(), lab.server_ns());
    ip(&[
        "-n",
        client,
        "link",
        "add",
        EXTRA_IFACE,
        "type",
        "veth",
        "peer",
        "name",
        "rw-x1",
        "netns",
        server,
    ]);
    ip(&[
        "-n",
        client,
        "addr",
        "add",
        "198.18.7.1/24",
        "dev",
        EXTRA_IFACE,
    ]);
    ip(&["-n", server, "addr", "add", "198.18.7.2/24", "dev", "rw-x1"]);
    ip(&["-n", client, "link", "set", EXTRA_IFACE, "up"]);
    ip(&["-n", server, "link", "set", "rw-x1", "up"]);
}

/// Connects from the client over the extra link to a closed port; returns the client port.
fn refused_over_extra_link(lab: &Lab) -> u16 {
    let server = SocketAddr::new(EXTRA_SERVER.parse().unwrap(), CLOSED_PORT);
    Lab::in_ns(lab.client_ns(), || {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        socket.bind(&SocketAddr::from(([198, 18, 7, 1], 0)).into())?;
        let port = socket.local_addr()?.as_socket().unwrap().port();
        let refused = socket.connect_timeout(&server.into(), SAY_TIMEOUT);
        let err = refused.expect_err("nothing listens on the closed port");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
        Ok::<_, std::io::Error>(port)
    })
    .unwrap()
    .unwrap()
}

fn record_for(daemon: &mut Daemon, client_port: u16) -> Value {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let record: Value = serde_json::from_str(&daemon.stdout_line(left).unwrap()).unwrap();
        if record["dst_port"] == client_port {
            return record;
        }
    }
}

#[test]
fn an_interface_deleted_and_recreated_is_reported_and_watched_again() {
    let lab = Lab::new("ifback").unwrap();
    add_extra_link(&lab);
    let args = watch_args(EXTRA_IFACE, &[]);
    let mut daemon = Daemon::start(&binary(), lab.client_ns(), &args, Stdio::piped()).unwrap();
    let port = refused_over_extra_link(&lab);
    assert_eq!(record_for(&mut daemon, port)["iface"], EXTRA_IFACE);

    let status = Command::new("ip")
        .args(["-n", lab.client_ns(), "link", "del", EXTRA_IFACE])
        .status()
        .unwrap();
    assert!(status.success());
    daemon
        .stderr_line("interface rw-x0 disappeared", SAY_TIMEOUT)
        .unwrap();
    add_extra_link(&lab);
    daemon
        .stderr_line("interface rw-x0 is back", SAY_TIMEOUT)
        .unwrap();
    let port = refused_over_extra_link(&lab);
    assert_eq!(record_for(&mut daemon, port)["iface"], EXTRA_IFACE);
    let (status, stderr) = daemon.terminate(EXIT_TIMEOUT).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("interfaces_lost=1"), "{stderr}");
}

/// Runs rstwatch in `ns` and returns its exit code and stderr; fails if it is still running
/// (watching instead of refusing) after `REFUSAL_TIMEOUT`.
fn run_in(ns: &str, args: &[&str]) -> (i32, String) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(binary())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + REFUSAL_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("rstwatch {args:?} was still running after {REFUSAL_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.code().unwrap_or(-1), stderr)
}

#[test]
fn refusals_name_the_real_cause() {
    let lab = Lab::new("causes").unwrap();
    let ns = lab.client_ns();
    let iface = lab.client_iface();
    for args in [
        ["tuntap", "add", "dev", "rw-tun0", "mode", "tun"].as_slice(),
        &["link", "set", "rw-tun0", "up"],
    ] {
        let status = Command::new("ip")
            .args(["-n", ns])
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "ip {args:?}");
    }
    let cases: [(&[&str], &str); 4] = [
        (&["watch", "-i", "rw-tun0"], "without an Ethernet header"),
        (&["watch", "-i", iface, "-i", iface], "is given twice"),
        (
            &["watch", "-i", iface, "--flows", "4294967295"],
            "1024 to 16777216",
        ),
        (
            &["watch", "-i", iface, "--grace", "18446744073.71s"],
            "too long",
        ),
    ];
    for (args, says) in cases {
        let (code, stderr) = run_in(ns, args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(
            stderr.contains(says),
            "{args:?} should say {says:?}: {stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }

    // Another program on the hook in generic mode: the kernel refuses native beside it.
    let generic = watch_args(iface, &["--xdp-mode", "generic", "--no-egress"]);
    let holder = Daemon::start(&binary(), ns, &generic, Stdio::null()).unwrap();
    let (code, stderr) = run_in(ns, &["watch", "-i", iface, "--no-egress"]);
    drop(holder);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("another XDP program is already attached")
            && !stderr.contains("try --xdp-mode"),
        "{stderr}"
    );
}
