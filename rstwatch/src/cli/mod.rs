//! Command line: what a user can ask for, and the parsers that turn their words into values.
//! Invalid input is rejected here, before anything touches the kernel, with exit code 2.

pub mod config;

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
use rstwatch_common::{defaults, PortSet, Settings};

use crate::{
    cidr::Cidr,
    output::FormatKind,
    sink::{Facility, SyslogUrl},
};

/// What `rstwatch --version` says after the name (`-V` says only the version): the version,
/// the commit it was built from and the aya it links (rstwatch/build.rs), for bug reports.
pub const LONG_VERSION: &str = env!("RSTWATCH_LONG_VERSION");

/// Command lines showing what rstwatch is for: in `--help`, and in the man page.
pub const EXAMPLES: &[&str] = &[
    "rstwatch watch -i eth0",
    "rstwatch watch -i eth0 --port 443 --net 10.1.2.0/24 --format json --output resets.jsonl",
    "rstwatch watch -i eth0 --format ecs --syslog tls://siem.example:6514 --syslog-ca ca.pem",
    "rstwatch watch -i mirror0 --no-egress --xdp-mode generic",
    "rstwatch detach -i eth0",
    "rstwatch explain trace.pcapng --port 443",
    "tcpdump -i eth0 -w - | rstwatch explain -",
    "rstwatch explain trace.pcap --flow tcp.port==4333",
];

/// The whole command line as clap defines it: what `main` parses, and what the man pages and
/// shell completions are generated from.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

fn examples_help() -> String {
    format!("Examples:\n  {}", EXAMPLES.join("\n  "))
}

#[derive(Debug, Parser)]
#[command(
    name = "rstwatch",
    version,
    long_version = LONG_VERSION,
    about = "Explains every TCP reset on this host, from evidence gathered in the kernel",
    long_about = "rstwatch watches network interfaces with eBPF (XDP for ingress, TC for \
egress), tracks every TCP conversation, and explains each RST the way an analyst would in \
Wireshark: port closed, normal teardown, peer kept talking after close, idle timeout, abort \
mid-stream; and who really sent it (the endpoint, or a middlebox that injected it, judged from \
TTL, IP ID and sequence evidence).",
    after_help = examples_help()
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Watch interfaces and explain every TCP reset as it happens.
    Watch(Box<WatchArgs>),
    /// Remove the TC egress filter a killed rstwatch left on an interface.
    ///
    /// Only kernels before 6.6 need it: newer kernels remove everything when the process
    /// dies. Filters and qdiscs that rstwatch did not create are never touched.
    Detach(DetachArgs),
    /// Explain every TCP reset in a capture file (pcap or pcap-ng), as `watch` would have
    /// explained it live.
    Explain(Box<ExplainArgs>),
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The capture: a pcap or pcap-ng file, or `-` for standard input (`tcpdump -w - | ...`).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Only TCP packets with this source or destination port; repeat for several.
    #[arg(long = "port", value_name = "PORT", value_parser = parse_port)]
    pub ports: Vec<u16>,

    /// Only packets with a source or destination address in this network; repeat for several.
    #[arg(long = "net", value_name = "CIDR")]
    pub nets: Vec<Cidr>,

    /// Silence before a reset that makes it an idle timeout, in the capture's own time.
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// How long (capture time) a reset is held for follow-up evidence; its report is the
    /// connection as of the hold's end, as `watch` reports it.
    #[arg(long, value_name = "DUR", default_value = "300ms", value_parser = parse_duration)]
    pub hold: Duration,

    /// How long (capture time) a flow is kept after its RST to collect follow-up packets;
    /// a later packet of its 4-tuple starts a new flow (Zeek's tcp_reset_delay).
    #[arg(long, value_name = "DUR", default_value = duration_arg(defaults::GRACE_NS), value_parser = parse_duration)]
    pub grace: Duration,

    #[command(flatten)]
    pub connections: ConnectionArgs,

    /// Output format; `text` when standard output is a terminal, `json` otherwise.
    #[arg(long, value_enum)]
    pub format: Option<FormatKind>,

    /// Write records to this file (appended) instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// This host's address or network, for captures that do not record each packet's
    /// direction (pcap from `tcpdump -i eth0`): packets from it left the host (egress), as
    /// `watch` sees them on TC. Without it, and without a direction in the file, every packet
    /// is read as arriving, as on a sensor fed by a mirror port. Repeat for several.
    #[arg(long = "local", value_name = "CIDR")]
    pub local: Vec<Cidr>,

    /// Print the timeline of each matching conversation instead of records: a 4-tuple
    /// (`10.0.0.1:40000-10.0.0.2:443`), an address or network, `tcp.port==4333` or
    /// `ip.addr==10.1.2.0/24`.
    #[arg(long, value_name = "FILTER")]
    pub flow: Option<crate::offline::timeline::FlowSelector>,

    #[command(flatten)]
    pub syslog: SyslogArgs,

    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Debug, Args)]
pub struct DetachArgs {
    /// Interface to clean; repeat for several.
    #[arg(short = 'i', long = "iface", value_name = "IFACE", required = true)]
    pub ifaces: Vec<String>,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Interface to watch; repeat for several.
    #[arg(short = 'i', long = "iface", value_name = "IFACE", required = true)]
    pub ifaces: Vec<String>,

    /// How XDP is attached: `native` runs in the driver (fastest, needs driver support),
    /// `generic` works on every interface, `auto` lets the kernel choose.
    #[arg(long, value_enum, default_value_t = XdpModeArg::Auto)]
    pub xdp_mode: XdpModeArg,

    /// Do not attach the TC egress program. Use on a sensor fed by a mirror port or TAP,
    /// where XDP alone sees both directions.
    #[arg(long)]
    pub no_egress: bool,

    /// How TC egress is attached: `tcx` through a BPF link (Linux 6.6+, nothing survives
    /// the process), `netlink` through a clsact qdisc and a filter (any kernel; removed on
    /// exit, or by `rstwatch detach` after a SIGKILL), `auto` picks `tcx` where the kernel
    /// has it.
    #[arg(long, value_enum, default_value_t = TcAttachArg::Auto)]
    pub tc_attach: TcAttachArg,

    /// Print the verifier's whole log when the kernel rejects a program (otherwise one line
    /// with its complaint, and the log in a file).
    #[arg(short, long)]
    pub verbose: bool,

    /// Only TCP packets with this source or destination port (like Wireshark's
    /// `tcp.port == P`); repeat for several.
    #[arg(long = "port", value_name = "PORT", value_parser = parse_port)]
    pub ports: Vec<u16>,

    /// Only packets with a source or destination address in this network (like
    /// `ip.addr == 10.1.2.0/24`); IPv4 or IPv6; repeat for several.
    #[arg(long = "net", value_name = "CIDR")]
    pub nets: Vec<Cidr>,

    /// Silence before a reset that makes it an idle timeout.
    #[arg(long, value_name = "DUR", default_value = duration_arg(defaults::IDLE_TIMEOUT_NS), value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// How long a reset is held for follow-up evidence (data or another RST after it)
    /// before it is reported; its report is the connection as of the hold's end.
    #[arg(long, value_name = "DUR", default_value = duration_arg(defaults::HOLD_NS), value_parser = parse_duration)]
    pub hold: Duration,

    /// How long the kernel keeps a flow after its RST to collect follow-up packets; a later
    /// packet of its 4-tuple starts a new flow (Zeek's tcp_reset_delay).
    #[arg(long, value_name = "DUR", default_value = duration_arg(defaults::GRACE_NS), value_parser = parse_duration)]
    pub grace: Duration,

    #[command(flatten)]
    pub connections: ConnectionArgs,

    /// Output format; `text` when standard output is a terminal, `json` otherwise. JSON and
    /// the SIEM formats (Elastic Common Schema, OCSF, ArcSight CEF) write one record per line.
    #[arg(long, value_enum)]
    pub format: Option<FormatKind>,

    /// Write records to this file (appended) instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// This host's name in every record (`host` in JSON, `host.name` in ECS,
    /// `device.hostname` in OCSF, `dvchost` in CEF): the node's name on Kubernetes, where a
    /// DaemonSet sets RSTWATCH_NODE_NAME from `spec.nodeName`.
    #[arg(long, value_name = "NAME", env = "RSTWATCH_NODE_NAME")]
    pub node_name: Option<crate::output::node::NodeName>,

    #[command(flatten)]
    pub syslog: SyslogArgs,

    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. `0.0.0.0:9464`, `[::1]:9464`):
    /// resets by class, sender, middlebox, direction and interface; the kernel's counters;
    /// flows; records per sink.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,

    /// Write the frames of every reported RST and of its follow-up RSTs to FILE as pcap-ng
    /// (truncated at start), up to 128 bytes each as the kernel copied them, one interface
    /// block per watched interface, each RST with its verdict as a packet comment (Wireshark:
    /// `frame.comment contains "middlebox"`). Data follow-ups and storm aggregates are not
    /// written. SIGHUP reopens it.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,

    /// Rotate `--pcap FILE` to FILE.1 (replacing an older one) once it would exceed N MiB.
    #[arg(long, value_name = "N", requires = "pcap", value_parser = clap::value_parser!(u64).range(1..))]
    pub pcap_max_mib: Option<u64>,

    /// Flows the kernel's table is sized for (1024 to 16777216). A new flow takes a free, closed
    /// or opening slot of its set before it evicts the set's least recently active flow (a SYN
    /// never evicts an established one), so a busy table holds most of N; evictions are
    /// counted.
    #[arg(long, value_name = "N", default_value_t = defaults::FLOWS, value_parser = parse_flows)]
    pub flows: u32,

    /// Identical resets per second (same class, sender, peers) written one by one during a
    /// storm, to every output; the rest are folded into one record with a count. `off` writes
    /// every one.
    #[arg(long, value_name = "N|off", default_value = "10", value_parser = parse_rate)]
    pub aggregate_rate: AggregateRate,

    /// Ring buffer between kernel and daemon, in MiB (a power of two).
    #[arg(long, value_name = "MIB", default_value_t = defaults::RING_BYTES >> 20, value_parser = parse_ring_mib)]
    pub ring_mib: u32,

    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Options from a file; read before the rest of the command line is parsed (`crate::cli::config`).
#[derive(Debug, Args)]
#[command(next_help_heading = "Configuration file")]
pub struct ConfigArgs {
    /// Read options from this TOML file: each key is a long option's name (`iface =
    /// ["eth0"]`, `idle-timeout = "45s"`, `no-egress = true`). Options on the command line
    /// replace the file's.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print the configuration in effect (command line, then `--config`, then the defaults)
    /// as TOML, and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// What makes a connection, the same for `watch` and `explain`.
#[derive(Debug, Args)]
pub struct ConnectionArgs {
    /// A flow closed by a FIN from each side ends once silent this long: a later packet of
    /// its 4-tuple starts a new flow (Zeek's tcp_close_delay).
    #[arg(long, value_name = "DUR", default_value = duration_arg(defaults::CLOSE_DELAY_NS), value_parser = parse_duration)]
    pub close_delay: Duration,

    /// A likely server port besides the built-in ones (Zeek's analyzers' well-known TCP
    /// ports): a connection first seen without its SYN, from such a port, has its roles
    /// flipped as Zeek flips them (`^` in the history); repeat for several.
    #[arg(long = "server-port", value_name = "PORT", value_parser = parse_port)]
    pub server_ports: Vec<u16>,

    /// Whether VLAN IDs are part of the flow key: `on` keeps the same 4-tuple on two VLANs
    /// apart, `off` makes a connection whose directions carry different tags (a router on a
    /// stick, a tag the NIC strips on receive only) one flow.
    #[arg(long, value_enum, default_value_t = OnOff::Off)]
    pub vlan_key: OnOff,
}

impl ConnectionArgs {
    /// The built-in likely server ports and `--server-port`'s, for the whole run (the
    /// explain settings of every report refer to them).
    pub fn server_ports(&self) -> &'static PortSet {
        let set = self
            .server_ports
            .iter()
            .fold(PortSet::LIKELY_SERVERS, |set, &port| set.with(port));
        Box::leak(Box::new(set))
    }

    /// `settings` with the close delay and the VLAN key of these options.
    pub fn settings(&self, settings: Settings) -> Settings {
        Settings {
            close_delay_ns: self.close_delay.as_nanos() as u64,
            vlan_key: u8::from(self.vlan_key == OnOff::On),
            ..settings
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum XdpModeArg {
    Auto,
    Native,
    Generic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TcAttachArg {
    Auto,
    Tcx,
    Netlink,
}

/// Export to a SIEM over syslog, alongside the records on standard output or `--output`.
#[derive(Debug, Args)]
#[command(next_help_heading = "SIEM export (syslog)")]
pub struct SyslogArgs {
    /// Also send every record to this syslog receiver: udp://HOST:PORT, tcp://HOST:PORT
    /// (RFC 6587 octet counting) or tls://HOST:PORT (RFC 5425).
    #[arg(long, value_name = "URL")]
    pub syslog: Option<SyslogUrl>,

    /// Record format sent to the receiver; defaults to `--format`, or `json` where that is
    /// `text`.
    #[arg(long, value_enum, value_name = "FORMAT", requires = "syslog")]
    pub syslog_format: Option<FormatKind>,

    /// Verify the tls:// receiver's certificate against the CAs in this PEM file instead of
    /// the system's.
    #[arg(long, value_name = "FILE", requires = "syslog")]
    pub syslog_ca: Option<PathBuf>,

    /// Do not verify the tls:// receiver's certificate (anyone in the path can impersonate
    /// it).
    #[arg(long, conflicts_with = "syslog_ca", requires = "syslog")]
    pub syslog_insecure: bool,

    /// Syslog facility of the messages.
    #[arg(long, value_name = "NAME", default_value = "local0")]
    pub syslog_facility: Facility,

    /// Records that cannot be delivered wait here, on disk, and are re-sent in order when the
    /// receiver is back.
    #[arg(long, value_name = "DIR", default_value = "/var/spool/rstwatch")]
    pub spool_dir: PathBuf,

    /// Disk space the spool may use, in MiB (1 to 1048576); beyond it records are dropped and
    /// counted.
    #[arg(long, value_name = "MIB", default_value_t = 256, value_parser = parse_spool_mib)]
    pub spool_max_mib: u64,
}

/// `--aggregate-rate`: how many identical resets per second go out one by one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggregateRate {
    Off,
    PerSecond(u32),
}

/// `off` or a number of records per second.
fn parse_rate(s: &str) -> Result<AggregateRate, String> {
    if s == "off" {
        return Ok(AggregateRate::Off);
    }
    s.parse()
        .map(AggregateRate::PerSecond)
        .map_err(|_| format!("invalid rate '{s}': write a number of records per second, or off"))
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(format!(
            "invalid port '{s}': write a number from 1 to 65535"
        )),
    }
}

/// The most flows the kernel's table may hold: each costs about 200 bytes of locked kernel
/// memory, so 2^24 is already over 3 GiB.
pub const MAX_FLOWS: u32 = 1 << 24;

fn parse_flows(s: &str) -> Result<u32, String> {
    match s.parse::<u64>() {
        Ok(n) if (1024..=u64::from(MAX_FLOWS)).contains(&n) => Ok(n as u32),
        _ => Err(format!(
            "invalid flow count '{s}': write a number from 1024 to {MAX_FLOWS}"
        )),
    }
}

/// The largest spool, in MiB (1 TiB): the size in bytes must fit a u64 with room to spare.
const MAX_SPOOL_MIB: u64 = 1 << 20;

fn parse_spool_mib(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if (1..=MAX_SPOOL_MIB).contains(&n) => Ok(n),
        _ => Err(format!(
            "invalid spool size '{s}': write a number of MiB from 1 to {MAX_SPOOL_MIB}"
        )),
    }
}

fn parse_ring_mib(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n.is_power_of_two() && n <= 1024 => Ok(n),
        _ => Err(format!(
            "invalid ring size '{s}': write a power of two from 1 to 1024 (MiB)"
        )),
    }
}

/// The longest duration any option takes: the kernel and the hold queue count time in
/// nanoseconds in a u64 (584 years); a week is far beyond any sensible setting and leaves
/// room for adding it to a timestamp.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// A default duration as it is written on the command line: `300ms`, `2s`.
fn duration_arg(ns: u64) -> String {
    if ns.is_multiple_of(1_000_000_000) {
        format!("{}s", ns / 1_000_000_000)
    } else {
        format!("{}ms", ns / 1_000_000)
    }
}

/// Parses durations written like `30s`, `500ms`, `2m`, `1h`, `250us`, `1.5s`, up to
/// [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad =
        || format!("invalid duration '{s}': write a number with a unit, like 30s, 500ms or 2m");
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (number, unit) = s.split_at(split);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let seconds_per_unit = match unit {
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    let seconds = value * seconds_per_unit;
    if !seconds.is_finite() {
        return Err(bad());
    }
    match Duration::try_from_secs_f64(seconds) {
        Ok(duration) if duration <= MAX_DURATION => Ok(duration),
        _ => Err(format!("duration '{s}' is too long: at most 168h (a week)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn durations_without_a_unit_or_number_are_rejected() {
        for bad in ["30", "s", "", "3x", "-1s", "1..2s"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("like 30s"), "{bad}: {err}");
        }
    }

    #[test]
    fn durations_beyond_a_week_are_a_range_error_not_a_wrap() {
        for long in ["18446744073.71s", "169h", "99999999999999999999h"] {
            let err = parse_duration(long).unwrap_err();
            assert!(err.contains("too long"), "{long}: {err}");
        }
        assert_eq!(parse_duration("168h"), Ok(MAX_DURATION));
    }

    #[test]
    fn flow_counts_and_spool_sizes_have_a_range() {
        assert_eq!(parse_flows("1024"), Ok(1024));
        assert_eq!(parse_flows("16777216"), Ok(MAX_FLOWS));
        for bad in [
            "4294967295",
            "16777217",
            "1023",
            "99999999999999999999",
            "x",
        ] {
            let err = parse_flows(bad).unwrap_err();
            assert!(err.contains("1024 to 16777216"), "{bad}: {err}");
        }
        assert_eq!(parse_spool_mib("256"), Ok(256));
        for bad in ["0", "18446744073709551615", "1048577"] {
            assert!(
                parse_spool_mib(bad).unwrap_err().contains("1 to 1048576"),
                "{bad}"
            );
        }
    }

    #[test]
    fn ports_must_be_1_to_65535() {
        assert_eq!(parse_port("443"), Ok(443));
        assert!(parse_port("0").is_err());
        assert!(parse_port("65536").is_err());
        assert!(parse_port("http").is_err());
    }

    #[test]
    fn watch_parses_with_every_default() {
        let cli = Cli::try_parse_from(["rstwatch", "watch", "-i", "eth0"]).unwrap();
        let Command::Watch(args) = cli.command else {
            panic!("watch parses as Watch");
        };
        assert_eq!(args.idle_timeout, Duration::from_secs(30));
        assert_eq!(args.tc_attach, TcAttachArg::Auto);
        assert_eq!(args.aggregate_rate, AggregateRate::PerSecond(10));
        let cli = Cli::try_parse_from(["rstwatch", "watch", "-i", "x", "--aggregate-rate", "off"]);
        let Command::Watch(args) = cli.unwrap().command else {
            panic!("watch parses as Watch");
        };
        assert_eq!(args.aggregate_rate, AggregateRate::Off);
    }

    #[test]
    fn detach_names_its_interfaces() {
        let cli = Cli::try_parse_from(["rstwatch", "detach", "-i", "eth0", "-i", "eth1"]);
        let Command::Detach(args) = cli.unwrap().command else {
            panic!("detach parses as Detach");
        };
        assert_eq!(args.ifaces, ["eth0", "eth1"]);
        assert!(Cli::try_parse_from(["rstwatch", "detach"]).is_err());
    }

    #[test]
    fn version_names_the_commit_and_the_aya_it_was_built_with() {
        let version = command().render_long_version();
        let build = version
            .strip_prefix(concat!("rstwatch ", env!("CARGO_PKG_VERSION"), " (git "))
            .unwrap_or_else(|| panic!("{version}"));
        assert!(
            build.contains(", aya 0.") && build.ends_with(")\n"),
            "{version}"
        );
        assert_eq!(
            command().render_version(),
            concat!("rstwatch ", env!("CARGO_PKG_VERSION"), "\n")
        );
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
