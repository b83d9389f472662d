//! Host impact under a flood: trafgen floods a veth pair while the receiving end has nothing
//! attached, an empty XDP program, rstwatch, or tcpdump with a RST filter, in turn, several
//! times over; the packet rate the receiving end sustains is compared with the empty program's
//! (attaching any XDP program to a veth has a cost of its own, the floor of every XDP monitor).
//! Two floods: RSTs of ever new flows, and SYNs of ever new flows, each sent twice, during
//! which established connections must keep their state.

use std::{
    collections::HashMap,
    fs,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::mpsc::Receiver,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use super::fdinfo_fields;
use crate::{
    baseline::EmptyXdp,
    lab::Lab,
    process::{command_with_default_signals, kill_and_reap, read_lines, run, signal_and_wait},
    watch::Watcher,
};

const TX_IFACE: &str = "rb-tx0";
pub const RX_IFACE: &str = "rb-rx0";
const TX_MAC: &str = "02:72:62:00:01:01";
const RX_MAC: &str = "02:72:62:00:01:02";
const RX_ADDR: &str = "198.18.1.2";
const TCPDUMP_FILTER: &str = "tcp[tcpflags] & tcp-rst != 0";
/// Time for the last events to pass the daemon's 300 ms hold and be written.
const SETTLE: Duration = Duration::from_secs(1);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections established before the SYN flood and reset after it.
pub const ESTABLISHED: usize = 32;
const ESTABLISHED_PORT: u16 = 9000;
const EXPLAINED_TIMEOUT: Duration = Duration::from_secs(15);

/// What floods the receiving end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloodKind {
    /// RSTs from 198.18.0.1: source port counting up, destination port random, so nearly
    /// every RST is the first of a new flow.
    Rst,
    /// SYNs from an address the receiver has no route back to (so it answers nothing), each
    /// 4-tuple twice in a row, as a flood's retransmissions would send it.
    Syn,
    /// SYNs from 198.18.0.1, a new source port each, to a port nothing listens on: the
    /// receiver answers every one with a RST, which leaves through the TC egress hook.
    ClosedPortSyn,
}

impl FloodKind {
    pub const fn name(self) -> &'static str {
        match self {
            FloodKind::Rst => "RST flood of new 4-tuples",
            FloodKind::Syn => "SYN flood, each 4-tuple twice",
            FloodKind::ClosedPortSyn => "SYN flood to a closed port, each answered with a RST",
        }
    }

    fn trafgen_config(self) -> &'static str {
        match self {
            FloodKind::Rst => {
                "{
  eth(da=02:72:62:00:01:02, sa=02:72:62:00:01:01),
  ipv4(saddr=198.18.0.1, daddr=198.18.1.2, ttl=64, id=drnd()),
  tcp(sp=dinc(1024, 65535), dp=drnd(), seq=drnd(), aseq=drnd(), rst, ack),
}
"
            }
            // Two packets with the same counters, sent in turn: each 4-tuple comes twice.
            // The ports step with different periods, so tuples repeat only after billions.
            FloodKind::Syn => {
                "{
  eth(da=02:72:62:00:01:02, sa=02:72:62:00:01:01),
  ipv4(saddr=198.19.0.1, daddr=198.18.1.2, ttl=64, id=dinc()),
  tcp(sp=dinc(1024, 65535), dp=dinc(1, 65521, 7), seq=dinc(), syn),
}
{
  eth(da=02:72:62:00:01:02, sa=02:72:62:00:01:01),
  ipv4(saddr=198.19.0.1, daddr=198.18.1.2, ttl=64, id=dinc()),
  tcp(sp=dinc(1024, 65535), dp=dinc(1, 65521, 7), seq=dinc(), syn),
}
"
            }
            FloodKind::ClosedPortSyn => {
                "{
  eth(da=02:72:62:00:01:02, sa=02:72:62:00:01:01),
  ipv4(saddr=198.18.0.1, daddr=198.18.1.2, ttl=64, id=dinc()),
  tcp(sp=dinc(1024, 65535), dp=9, seq=drnd(), syn),
}
"
            }
        }
    }
}

/// What the receiving end has attached during one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hooked {
    Nothing,
    EmptyProgram,
    Rstwatch,
    Tcpdump,
}

impl Hooked {
    pub const ALL: [Hooked; 4] = [
        Hooked::Nothing,
        Hooked::EmptyProgram,
        Hooked::Rstwatch,
        Hooked::Tcpdump,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Hooked::Nothing => "nothing attached",
            Hooked::EmptyProgram => "empty XDP program",
            Hooked::Rstwatch => "rstwatch",
            Hooked::Tcpdump => "tcpdump (RST filter)",
        }
    }
}

/// One timed flood.
#[derive(Clone, Copy, Debug, Default)]
pub struct Run {
    pub seconds: f64,
    /// Frames trafgen put on the wire (the sending veth's tx counter).
    pub sent: u64,
    /// Frames the receiving end took in (its rx counter).
    pub received: u64,
    /// utime + stime of the watching process during the flood (0 when nothing runs).
    pub cpu_s: f64,
}

impl Run {
    pub fn rate(&self) -> f64 {
        self.received as f64 / self.seconds
    }
}

#[derive(Clone, Debug)]
pub struct Flood {
    pub kind: FloodKind,
    pub runs: Vec<(Hooked, Run)>,
    /// One per repetition.
    pub rstwatch: Vec<RstwatchSide>,
    pub tcpdump: Vec<TcpdumpSide>,
}

impl Flood {
    fn rates(&self, hooked: Hooked) -> Vec<f64> {
        self.runs
            .iter()
            .filter(|(h, _)| *h == hooked)
            .map(|(_, run)| run.rate())
            .collect()
    }

    /// Median packet rate the receiving end sustained with `hooked` attached.
    pub fn rate(&self, hooked: Hooked) -> f64 {
        let mut rates = self.rates(hooked);
        rates.sort_by(f64::total_cmp);
        rates.get(rates.len() / 2).copied().unwrap_or(0.0)
    }

    /// `hooked`'s rate over the empty program's in the same repetition, the median over the
    /// repetitions: two runs seconds apart share the load of the moment on a shared machine,
    /// which moves rates from one repetition to the next by more than the difference measured.
    pub fn ratio(&self, hooked: Hooked) -> f64 {
        let ratios = self.ratios(hooked);
        ratios.get(ratios.len() / 2).copied().unwrap_or(0.0)
    }

    /// The lowest and the highest of the repetitions' ratios behind `ratio`.
    pub fn ratio_range(&self, hooked: Hooked) -> (f64, f64) {
        let ratios = self.ratios(hooked);
        let end = |i: Option<&f64>| i.copied().unwrap_or(0.0);
        (end(ratios.first()), end(ratios.last()))
    }

    /// Each repetition's rate with `hooked` over the empty program's, sorted.
    fn ratios(&self, hooked: Hooked) -> Vec<f64> {
        let empty = self.rates(Hooked::EmptyProgram);
        let mut ratios: Vec<f64> = self
            .rates(hooked)
            .iter()
            .zip(&empty)
            .map(|(rate, empty)| rate / empty)
            .collect();
        ratios.sort_by(f64::total_cmp);
        ratios
    }

    /// Mean share of one core the process used during `hooked`'s floods.
    pub fn cpu_share(&self, hooked: Hooked) -> f64 {
        let runs: Vec<_> = self.runs.iter().filter(|(h, _)| *h == hooked).collect();
        let cpu: f64 = runs.iter().map(|(_, run)| run.cpu_s).sum();
        let seconds: f64 = runs.iter().map(|(_, run)| run.seconds).sum();
        cpu / seconds.max(f64::EPSILON)
    }

    /// RSTs rstwatch's XDP program saw but neither reported, aggregated nor counted as lost,
    /// over all repetitions.
    pub fn unaccounted(&self) -> i64 {
        self.rstwatch.iter().map(RstwatchSide::unaccounted).sum()
    }

    /// Established connections whose reset after the SYN flood was explained with their
    /// state, and how many there were, over all repetitions.
    pub fn established_explained(&self) -> (usize, usize) {
        self.rstwatch.iter().fold((0, 0), |(k, n), side| {
            (k + side.established_explained, n + side.established)
        })
    }
}

#[derive(Clone, Debug, Default)]
pub struct RstwatchSide {
    /// The kernel counters rstwatch printed on exit.
    pub counters: HashMap<String, u64>,
    /// Resets written as records, aggregates counted by their count (its summary's total).
    pub reported: u64,
    /// Run time of its XDP program (softirq, charged to whichever task the CPU was running).
    pub xdp_cpu_s: f64,
    pub xdp_runs: u64,
    /// Connections reset after the SYN flood, and those reported with their state.
    pub established: usize,
    pub established_explained: usize,
}

impl RstwatchSide {
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    /// RSTs the XDP program saw that are neither an event in the ring, nor counted in a storm
    /// aggregate, nor counted as lost or suppressed: output must never make capture wait.
    pub fn unaccounted(&self) -> i64 {
        self.counter("rsts") as i64
            - (self.counter("events_sent")
                + self.counter("events_lost")
                + self.counter("rsts_aggregated")
                + self.counter("rst_updates_lost")
                + self.counter("followups_suppressed")) as i64
    }
}

#[derive(Clone, Debug, Default)]
pub struct TcpdumpSide {
    pub captured: u64,
    pub received_by_filter: u64,
    pub dropped_by_kernel: u64,
}

/// Floods `repetitions` times with each of `Hooked::ALL` in turn, `seconds` per run.
pub fn measure(
    rstwatch: &Path,
    kind: FloodKind,
    seconds: u64,
    repetitions: usize,
) -> Result<Flood> {
    let pair = VethPair::new()?;
    let empty = EmptyXdp::load().context("loading the empty XDP program")?;
    let config = std::env::temp_dir().join(format!(
        "rstwatch-bench-{}-{kind:?}.trafgen",
        std::process::id()
    ));
    fs::write(&config, kind.trafgen_config()).context("writing the trafgen configuration")?;
    let _remove_config = RemoveOnDrop(config.clone());
    let mut flood = Flood {
        kind,
        runs: Vec::new(),
        rstwatch: Vec::new(),
        tcpdump: Vec::new(),
    };
    for _ in 0..repetitions {
        for hooked in Hooked::ALL {
            let run = match hooked {
                Hooked::Nothing => pair.flood(&config, seconds, None)?,
                Hooked::EmptyProgram => {
                    let link = Lab::in_ns(&pair.rx_ns, || {
                        // SAFETY: the name is a NUL-terminated string.
                        let ifindex = unsafe { libc::if_nametoindex(c"rb-rx0".as_ptr()) };
                        empty.attach(ifindex)
                    })?
                    .context("attaching the empty XDP program")?;
                    let run = pair.flood(&config, seconds, None)?;
                    drop(link);
                    run
                }
                Hooked::Rstwatch => {
                    let (run, side) =
                        pair.flood_rstwatch(rstwatch, &config, seconds, kind, Accounting::Off)?;
                    flood.rstwatch.push(side);
                    run
                }
                Hooked::Tcpdump => {
                    let tcpdump = Tcpdump::start(&pair.rx_ns)?;
                    let run = pair.flood(&config, seconds, Some(tcpdump.child.id()))?;
                    flood.tcpdump.push(tcpdump.stop()?);
                    run
                }
            };
            eprintln!(
                "bench: {}, {}: {:.2} M packets/s received, {:.0}% of a core",
                kind.name(),
                hooked.name(),
                run.rate() / 1e6,
                100.0 * run.cpu_s / run.seconds
            );
            flood.runs.push((hooked, run));
        }
    }
    // The XDP program's own time per run, from one more run that is not among the rates:
    // the kernel's run-time accounting adds two clock reads to every program run.
    let (_, side) = pair.flood_rstwatch(rstwatch, &config, seconds, kind, Accounting::On)?;
    flood.rstwatch.push(side);
    Ok(flood)
}

/// Whether the kernel's BPF run-time accounting is on during a run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Accounting {
    Off,
    On,
}

/// Connections from the sending namespace to the receiving one, with a little data each way.
struct Established {
    clients: Vec<TcpStream>,
    servers: Vec<TcpStream>,
}

impl Established {
    fn open(pair: &VethPair) -> Result<Self> {
        let listener = Lab::in_ns(&pair.rx_ns, || {
            TcpListener::bind((RX_ADDR, ESTABLISHED_PORT))
        })??;
        let mut clients = Lab::in_ns(&pair.tx_ns, || {
            (0..ESTABLISHED)
                .map(|_| TcpStream::connect((RX_ADDR, ESTABLISHED_PORT)))
                .collect::<std::io::Result<Vec<_>>>()
        })??;
        let mut servers = Vec::with_capacity(ESTABLISHED);
        for client in &mut clients {
            let (mut server, _) = listener.accept()?;
            client.write_all(b"request")?;
            let mut got = [0u8; 7];
            server.read_exact(&mut got)?;
            server.write_all(b"reply")?;
            client.read_exact(&mut got[..5])?;
            servers.push(server);
        }
        Ok(Self { clients, servers })
    }

    /// Each client sends a last request, then aborts its connection: `SO_LINGER` 0 makes
    /// `close` send a RST. The request makes the reset a mid-stream abort, not an idle one.
    fn abort(mut self) -> Result<()> {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        for (client, server) in self.clients.iter_mut().zip(&mut self.servers) {
            client.write_all(b"last")?;
            let mut got = [0u8; 4];
            server.read_exact(&mut got)?;
        }
        for client in self.clients {
            // SAFETY: a valid socket fd and a `linger` of the size passed.
            let set = unsafe {
                libc::setsockopt(
                    client.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&linger as *const libc::linger).cast(),
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                )
            };
            ensure!(set == 0, "SO_LINGER: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// A reset of one of the established connections, explained with the state it had: a
/// mid-stream abort whose history starts with the client's SYN, sent before the flood (a flow
/// evicted and seen again afterwards would start mid-stream). The server's SYN-ACK is egress,
/// which the bench does not watch.
fn explained_established(report: &Value) -> bool {
    is_established_reset(report)
        && report["class"] == "abort"
        && report["history"]
            .as_str()
            .is_some_and(|history| history.starts_with('S'))
}

fn is_established_reset(report: &Value) -> bool {
    report["resp_port"].as_u64() == Some(ESTABLISHED_PORT.into())
}

/// Two namespaces joined by a veth pair, 198.18.0.1/15 and 198.18.1.2/15; dropping it deletes
/// both (and the pair with them). Named like the lab's, so a killed run's are cleaned up.
struct VethPair {
    tx_ns: String,
    rx_ns: String,
}

struct LinkStats {
    tx_packets: u64,
    rx_packets: u64,
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
            rx_packets: number(&rx["rx"]["packets"]),
        })
    }

    /// Runs trafgen with `config` for `seconds`; `watcher` is the process whose CPU time is
    /// measured meanwhile.
    fn flood(&self, config: &Path, seconds: u64, watcher: Option<u32>) -> Result<Run> {
        let before = self.link_stats()?;
        let cpu_before = watcher.map(cpu_seconds).transpose()?;
        let started = Instant::now();
        let mut trafgen = command_with_default_signals("ip")
            .args([
                "netns",
                "exec",
                &self.tx_ns,
                "trafgen",
                "-o",
                TX_IFACE,
                "-P",
                "1",
                "-q",
            ])
            .arg("-c")
            .arg(config)
            // trafgen's sender is a child process: the whole group is stopped at the end.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting trafgen (apt-get install netsniff-ng)")?;
        thread::sleep(Duration::from_secs(seconds));
        stop_group(&mut trafgen)?;
        let seconds = started.elapsed().as_secs_f64();
        let cpu_s = match (watcher, cpu_before) {
            (Some(pid), Some(before)) => cpu_seconds(pid)? - before,
            _ => 0.0,
        };
        let after = self.link_stats()?;
        Ok(Run {
            seconds,
            sent: after.tx_packets - before.tx_packets,
            received: after.rx_packets - before.rx_packets,
            cpu_s,
        })
    }

    /// A flood with rstwatch watching; for the SYN flood, established connections opened
    /// before it are reset after it and must be explained with their state.
    fn flood_rstwatch(
        &self,
        rstwatch: &Path,
        config: &Path,
        seconds: u64,
        kind: FloodKind,
        accounting: Accounting,
    ) -> Result<(Run, RstwatchSide)> {
        // The established connections are reset together after the SYN flood: each must be
        // its own report to be judged, not folded into a storm aggregate of identical aborts.
        // The SYN flood itself sends no resets, so this changes nothing of the daemon's load.
        let args: &[&str] = match kind {
            FloodKind::Syn => &["--no-egress", "--aggregate-rate", "off"],
            FloodKind::Rst => &["--no-egress"],
            // The host's answers are the resets: they leave through the egress hook.
            FloodKind::ClosedPortSyn => &[],
        };
        let mut watcher = Watcher::start(rstwatch, &self.rx_ns, RX_IFACE, args)?;
        let established = match kind {
            FloodKind::Syn => Some(Established::open(self)?),
            FloodKind::Rst | FloodKind::ClosedPortSyn => None,
        };
        let stats = (accounting == Accounting::On)
            .then(enable_bpf_stats)
            .transpose()?;
        let xdp_before = xdp_run_stats(watcher.pid())?;
        let run = self.flood(config, seconds, Some(watcher.pid()))?;
        let xdp_after = xdp_run_stats(watcher.pid())?;
        drop(stats);
        let mut side = RstwatchSide {
            xdp_cpu_s: (xdp_after.0 - xdp_before.0) as f64 / 1e9,
            xdp_runs: xdp_after.1 - xdp_before.1,
            ..RstwatchSide::default()
        };
        let mut reports = Vec::new();
        if let Some(established) = established {
            established.abort()?;
            side.established = ESTABLISHED;
            let seen = std::cell::Cell::new(0);
            reports = watcher.events_until(
                |report| {
                    seen.set(seen.get() + usize::from(is_established_reset(report)));
                    seen.get() == ESTABLISHED
                },
                EXPLAINED_TIMEOUT,
            )?;
        }
        thread::sleep(SETTLE);
        let exit = watcher.stop()?;
        if !exit.status.success() {
            bail!("rstwatch exited with {}: {}", exit.status, exit.stderr);
        }
        reports.extend(exit.events);
        side.established_explained = reports.iter().filter(|r| explained_established(r)).count();
        for report in reports.iter().filter(|r| is_established_reset(r)) {
            if !explained_established(report) {
                eprintln!(
                    "bench: established flow not explained: class {} history {}",
                    report["class"], report["history"]
                );
            }
        }
        side.counters = kernel_counters(&exit.stderr)
            .with_context(|| format!("no kernel counters in rstwatch's stderr: {}", exit.stderr))?;
        side.reported = reported(&exit.stderr);
        Ok((run, side))
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
        let mut child = command_with_default_signals("ip")
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
        signal_and_wait(&mut self.child, libc::SIGINT, STOP_TIMEOUT)?;
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
