//! End to end: trafgen floods a veth pair with RSTs of ever new flows while `rstwatch watch`
//! and `tcpdump` watch the receiving end side by side; both are then asked what they saw.

use std::{
    collections::HashMap,
    fs,
    os::fd::{FromRawFd as _, OwnedFd},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc::Receiver,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::fdinfo_fields;
use crate::{
    process::{interrupt_and_wait, kill_and_reap, read_lines, run},
    watch::Watcher,
};

const TX_IFACE: &str = "rb-tx0";
pub const RX_IFACE: &str = "rb-rx0";
const TX_MAC: &str = "02:72:62:00:01:01";
const RX_MAC: &str = "02:72:62:00:01:02";
const TCPDUMP_FILTER: &str = "tcp[tcpflags] & tcp-rst != 0";
/// Time for the last events to pass the daemon's 300 ms hold and be written.
const SETTLE: Duration = Duration::from_secs(1);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// RSTs from 198.18.0.1 to 198.18.1.2: source port counting up, destination port random, so
/// nearly every RST is the first of a new flow and must become an event.
const TRAFGEN_CONFIG: &str = "{
  eth(da=02:72:62:00:01:02, sa=02:72:62:00:01:01),
  ipv4(saddr=198.18.0.1, daddr=198.18.1.2, ttl=64, id=drnd()),
  tcp(sp=dinc(1024, 65535), dp=drnd(), seq=drnd(), aseq=drnd(), rst, ack),
}
";

#[derive(Clone, Debug, Default)]
pub struct Flood {
    pub seconds: f64,
    /// Frames trafgen put on the wire (the sending veth's tx counter).
    pub sent: u64,
    /// Frames the veth pair dropped before any hook saw them.
    pub veth_dropped: u64,
    pub trafgen_cpu_s: f64,
    pub rstwatch: RstwatchSide,
    pub tcpdump: TcpdumpSide,
}

#[derive(Clone, Debug, Default)]
pub struct RstwatchSide {
    /// The kernel counters rstwatch printed on exit.
    pub counters: HashMap<String, u64>,
    /// Resets written as records (its summary's total).
    pub reported: u64,
    /// utime + stime of the daemon during the flood.
    pub cpu_s: f64,
    /// Run time of its XDP program (softirq, charged to whichever task the CPU was running).
    pub xdp_cpu_s: f64,
    pub xdp_runs: u64,
}

impl RstwatchSide {
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    /// RSTs the XDP program saw that are neither an event in the ring nor counted as lost or
    /// suppressed: output must never make capture wait.
    pub fn unaccounted(&self) -> i64 {
        self.counter("rsts") as i64
            - (self.counter("events_sent")
                + self.counter("events_lost")
                + self.counter("followups_suppressed")) as i64
    }
}

#[derive(Clone, Debug, Default)]
pub struct TcpdumpSide {
    pub captured: u64,
    pub received_by_filter: u64,
    pub dropped_by_kernel: u64,
    pub cpu_s: f64,
}

/// Runs a flood of `seconds` and reports both watchers.
pub fn measure(rstwatch: &Path, seconds: u64) -> Result<Flood> {
    let pair = VethPair::new()?;
    let watcher = Watcher::start(
        rstwatch,
        &pair.rx_ns,
        RX_IFACE,
        &["--output", "/dev/null", "--no-egress"],
    )?;
    let tcpdump = Tcpdump::start(&pair.rx_ns)?;
    let stats = enable_bpf_stats()?;
    let config =
        std::env::temp_dir().join(format!("rstwatch-bench-{}.trafgen", std::process::id()));
    fs::write(&config, TRAFGEN_CONFIG).context("writing the trafgen configuration")?;
    let _remove_config = RemoveOnDrop(config.clone());

    let sent_before = pair.link_stats()?;
    let rstwatch_cpu = cpu_seconds(watcher.pid())?;
    let tcpdump_cpu = cpu_seconds(tcpdump.child.id())?;
    let xdp_before = xdp_run_stats(watcher.pid())?;
    let started = Instant::now();
    let mut trafgen = Command::new("ip")
        .args([
            "netns",
            "exec",
            &pair.tx_ns,
            "trafgen",
            "-o",
            TX_IFACE,
            "-P",
            "1",
            "-q",
        ])
        .arg("-c")
        .arg(&config)
        // trafgen's sender is a child process: the whole group is stopped at the end.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting trafgen (apt-get install netsniff-ng)")?;
    thread::sleep(Duration::from_secs(seconds));
    let trafgen_cpu = cpu_seconds_with_children(trafgen.id()).unwrap_or(0.0);
    stop_group(&mut trafgen)?;
    let elapsed = started.elapsed().as_secs_f64();
    thread::sleep(SETTLE);

    let sent_after = pair.link_stats()?;
    let mut flood = Flood {
        seconds: elapsed,
        sent: sent_after.tx_packets - sent_before.tx_packets,
        veth_dropped: (sent_after.tx_dropped + sent_after.rx_dropped)
            - (sent_before.tx_dropped + sent_before.rx_dropped),
        trafgen_cpu_s: trafgen_cpu,
        ..Flood::default()
    };
    flood.rstwatch.cpu_s = cpu_seconds(watcher.pid())? - rstwatch_cpu;
    flood.tcpdump.cpu_s = cpu_seconds(tcpdump.child.id())? - tcpdump_cpu;
    let xdp_after = xdp_run_stats(watcher.pid())?;
    flood.rstwatch.xdp_cpu_s = (xdp_after.0 - xdp_before.0) as f64 / 1e9;
    flood.rstwatch.xdp_runs = xdp_after.1 - xdp_before.1;
    drop(stats);

    flood.tcpdump = TcpdumpSide {
        cpu_s: flood.tcpdump.cpu_s,
        ..tcpdump.stop()?
    };
    let exit = watcher.stop()?;
    if !exit.status.success() {
        bail!("rstwatch exited with {}: {}", exit.status, exit.stderr);
    }
    flood.rstwatch.counters = kernel_counters(&exit.stderr)
        .with_context(|| format!("no kernel counters in rstwatch's stderr: {}", exit.stderr))?;
    flood.rstwatch.reported = reported(&exit.stderr);
    Ok(flood)
}

/// Two namespaces joined by a veth pair, 198.18.0.1/15 and 198.18.1.2/15; dropping it deletes
/// both (and the pair with them). Named like the lab's, so a killed run's are cleaned up.
struct VethPair {
    tx_ns: String,
    rx_ns: String,
}

struct LinkStats {
    tx_packets: u64,
    tx_dropped: u64,
    rx_dropped: u64,
}

impl VethPair {
    fn new() -> Result<Self> {
        let id = format!("rw-bench-{}-0", std::process::id());
        let pair = VethPair {
            tx_ns: format!("{id}-tx"),
            rx_ns: format!("{id}-rx"),
        };
        for ns in [&pair.tx_ns, &pair.rx_ns] {
            run("ip", &["netns", "add", ns])?;
            // No IPv6 autoconfiguration chatter among the counted frames.
            for key in ["all", "default"] {
                let setting = format!("net.ipv6.conf.{key}.disable_ipv6=1");
                run("ip", &["netns", "exec", ns, "sysctl", "-q", "-w", &setting])?;
            }
        }
        #[rustfmt::skip]
        run("ip", &[
            "-n", &pair.tx_ns, "link", "add", TX_IFACE, "address", TX_MAC, "type", "veth",
            "peer", "name", RX_IFACE, "address", RX_MAC, "netns", &pair.rx_ns,
        ])?;
        for (ns, iface, addr) in [
            (&pair.tx_ns, TX_IFACE, "198.18.0.1/15"),
            (&pair.rx_ns, RX_IFACE, "198.18.1.2/15"),
        ] {
            run("ip", &["-n", ns, "addr", "add", addr, "dev", iface])?;
            run("ip", &["-n", ns, "link", "set", iface, "up"])?;
        }
        Ok(pair)
    }

    fn link_stats(&self) -> Result<LinkStats> {
        let stats = |ns: &str, iface: &str| -> Result<Value> {
            let text = run("ip", &["-n", ns, "-s", "-j", "link", "show", "dev", iface])?;
            let parsed: Value = serde_json::from_str(&text).context("parsing `ip -j link`")?;
            Ok(parsed[0]["stats64"].clone())
        };
        let tx = stats(&self.tx_ns, TX_IFACE)?;
        let rx = stats(&self.rx_ns, RX_IFACE)?;
        let number = |v: &Value| v.as_u64().unwrap_or(0);
        Ok(LinkStats {
            tx_packets: number(&tx["tx"]["packets"]),
            tx_dropped: number(&tx["tx"]["dropped"]),
            rx_dropped: number(&rx["rx"]["dropped"]),
        })
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        for ns in [&self.tx_ns, &self.rx_ns] {
            if let Err(error) = run("ip", &["netns", "delete", ns]) {
                eprintln!("bench clean-up: {error:#}");
            }
        }
    }
}

struct Tcpdump {
    child: std::process::Child,
    stderr: Receiver<String>,
}

impl Tcpdump {
    fn start(ns: &str) -> Result<Self> {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "tcpdump",
                "-i",
                RX_IFACE,
                "-w",
                "/dev/null",
            ])
            .arg(TCPDUMP_FILTER)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting tcpdump (is it installed?)")?;
        let stderr = read_lines(child.stderr.take().context("tcpdump stderr")?);
        let mut tcpdump = Tcpdump { child, stderr };
        match tcpdump.stderr.recv_timeout(Duration::from_secs(10)) {
            Ok(line) if line.contains("listening on") => Ok(tcpdump),
            other => {
                kill_and_reap(&mut tcpdump.child);
                bail!("tcpdump did not start listening: {other:?}")
            }
        }
    }

    /// Stops tcpdump and reads the statistics it prints on exit.
    fn stop(mut self) -> Result<TcpdumpSide> {
        interrupt_and_wait(&mut self.child, STOP_TIMEOUT)?;
        let lines: Vec<String> = self.stderr.iter().collect();
        let count = |what: &str| {
            lines
                .iter()
                .find(|line| line.contains(what))
                .and_then(|line| line.split_whitespace().next()?.parse().ok())
                .with_context(|| format!("no '{what}' in tcpdump's output: {lines:?}"))
        };
        Ok(TcpdumpSide {
            captured: count("packets captured")?,
            received_by_filter: count("packets received by filter")?,
            dropped_by_kernel: count("packets dropped by kernel")?,
            cpu_s: 0.0,
        })
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Sends SIGINT to the process group `child` leads and waits for `child`; SIGKILL to the
/// group if it does not exit in time.
fn stop_group(child: &mut Child) -> Result<()> {
    let group = -libc::pid_t::try_from(child.id())?;
    // SAFETY: kill has no memory-safety preconditions; the group is our child's own.
    unsafe { libc::kill(group, libc::SIGINT) };
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: as above.
    unsafe { libc::kill(group, libc::SIGKILL) };
    child.wait()?;
    bail!("trafgen did not stop within {STOP_TIMEOUT:?} of SIGINT and was killed")
}

/// utime + stime of a process and its direct children, in seconds.
fn cpu_seconds_with_children(pid: u32) -> Result<f64> {
    let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))?;
    let mut total = cpu_seconds(pid)?;
    for child in children.split_whitespace() {
        total += cpu_seconds(child.parse()?)?;
    }
    Ok(total)
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("malformed /proc/PID/stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks as f64 / hz)
}

const BPF_ENABLE_STATS: libc::c_long = 32;
const BPF_STATS_RUN_TIME: u32 = 0;
const BPF_PROG_TYPE_XDP: &str = "6";

/// Turns on the kernel's per-program run-time accounting for as long as the fd lives.
fn enable_bpf_stats() -> Result<OwnedFd> {
    let mut attr = [BPF_STATS_RUN_TIME, 0u32];
    // SAFETY: `attr` is a zero-padded `enable_stats` member of `union bpf_attr`, of the size
    // passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_ENABLE_STATS,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("BPF_ENABLE_STATS");
    }
    // SAFETY: BPF_ENABLE_STATS returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// (run_time_ns, run_cnt) of the XDP program process `pid` holds.
fn xdp_run_stats(pid: u32) -> Result<(u64, u64)> {
    for entry in fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let Ok(info) = fs::read_to_string(entry?.path()) else {
            continue;
        };
        let fields = fdinfo_fields(&info);
        if fields.get("prog_type").map(String::as_str) == Some(BPF_PROG_TYPE_XDP) {
            let number = |key: &str| fields.get(key).and_then(|v| v.parse().ok()).unwrap_or(0);
            return Ok((number("run_time_ns"), number("run_cnt")));
        }
    }
    bail!("process {pid} holds no XDP program")
}

/// The `name=value` pairs of rstwatch's `rstwatch: kernel ...` line.
fn kernel_counters(stderr: &str) -> Option<HashMap<String, u64>> {
    let line = stderr
        .lines()
        .find_map(|line| line.strip_prefix("rstwatch: kernel "))?;
    Some(
        line.split_whitespace()
            .filter_map(|pair| pair.split_once('='))
            .filter_map(|(name, value)| Some((name.to_owned(), value.parse().ok()?)))
            .collect(),
    )
}

/// The reset total of rstwatch's summary (`rstwatch summary: N resets, ...`), 0 if none.
fn reported(stderr: &str) -> u64 {
    stderr
        .lines()
        .find_map(|line| line.strip_prefix("rstwatch summary: "))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STDERR: &str = "rstwatch summary: 1200 resets, 0 with a middlebox suspected\n\
        by class:\n  no_state 1200\n\
        rstwatch: kernel packets=1500 tcp_packets=1500 rsts=1500 events_sent=1200 events_lost=300\n\
        rstwatch: daemon held=0 late_data_followups=0 unknown_events=0 short_events=0";

    #[test]
    fn rstwatch_exit_lines_are_read() {
        let counters = kernel_counters(STDERR).unwrap();
        assert_eq!(counters["rsts"], 1500);
        assert_eq!(counters["events_lost"], 300);
        assert_eq!(reported(STDERR), 1200);
        let side = RstwatchSide {
            counters,
            ..RstwatchSide::default()
        };
        assert_eq!(side.unaccounted(), 0);
    }

    #[test]
    fn no_resets_is_zero_reported() {
        assert_eq!(reported("rstwatch summary: no resets seen\n"), 0);
    }
}
