//! Syslog export to a SIEM: RFC 5424 messages over UDP, TCP (RFC 6587 octet counting) or TLS
//! (RFC 5425), sent by a task of their own so that capture never waits for the receiver.
//!
//! `spawn` starts the sender; the daemon hands it reports through a `SyslogHandle` that never
//! blocks. Records the receiver cannot take right now go to the on-disk spool (see `spool`) and
//! are re-sent in order when it comes back; storms of identical resets are folded (see
//! `aggregate`). Every record is sent, spooled, or counted as dropped in `SinkStats`.
//!
//! Message layout: `<PRI>1 TIMESTAMP HOSTNAME rstwatch PROCID MSGID [origin ...][meta
//! sequenceId="N"] MSG` where
//! - PRI = facility * 8 + severity; the facility defaults to `local0` (reserved for local use,
//!   so a receiver can route rstwatch's stream on its own) and the severity follows the
//!   report's: benign -> 6 informational, notice -> 5 notice, alert -> 4 warning (syslog's own
//!   "alert" level means "act immediately", too strong for a reset);
//! - TIMESTAMP is the reset's time in UTC with microseconds;
//! - MSGID is the class (`refused`, `abort`, ...), so receivers can filter on it;
//! - the structured data is the IANA-registered `origin` element naming the software, and the
//!   registered `meta` element whose `sequenceId` numbers the records of one run (1 to
//!   2147483647, then 1 again): a re-sent record keeps its number;
//! - MSG is the record in the chosen format, without the optional UTF-8 BOM: many SIEM JSON
//!   parsers reject a leading BOM, and every format here is UTF-8 anyway.
//!
//! Delivery guarantees: over TCP and TLS a receiver that closes or crashes between two writes
//! loses nothing (the connection is checked before every write). Syslog has no acknowledgement,
//! so the sender cannot know how much of a write that failed midway (a receiver that stalled
//! past the I/O timeout, a connection that broke) reached the receiver: the contract is
//! at-least-once. Such a batch is re-sent whole, never skipped; its records keep their
//! `sequenceId`, so a receiver drops a repeat by (HOSTNAME, PROCID, sequenceId), and they are
//! counted as `maybe_duplicated`. Records written in the instant a receiver dies can be lost. UDP is best effort: the datagram that
//! reveals a dead receiver (through the ICMP error that follows it) is lost; after an outage a
//! single record probes the receiver before the backlog is released.

use std::{
    fmt, fs,
    path::PathBuf,
    str::FromStr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use super::{
    aggregate::AggregateConfig,
    sender::{Command, Sender},
    spool::{Spool, SpoolError},
    transport::{Connector, TlsSetupError, TlsTrust},
};
use crate::{
    output::Format,
    report::{ResetReport, Severity},
};

/// How records reach the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    /// RFC 6587 octet counting.
    Tcp,
    /// RFC 5425.
    Tls,
}

impl Transport {
    pub const fn scheme(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }

    /// The IANA port for syslog over this transport.
    pub const fn standard_port(self) -> u16 {
        match self {
            Transport::Udp | Transport::Tcp => 514,
            Transport::Tls => 6514,
        }
    }
}

/// A syslog receiver: `udp://HOST:PORT`, `tcp://HOST:PORT` or `tls://HOST:PORT`, HOST being a
/// name, an IPv4 address or a bracketed IPv6 address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyslogUrl {
    pub transport: Transport,
    /// Without brackets for IPv6.
    pub host: String,
    pub port: u16,
}

/// Why a `--syslog` URL was rejected; each message says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("syslog URL `{url}` has no scheme: write udp://HOST:PORT, tcp://HOST:PORT or tls://HOST:PORT")]
    MissingScheme { url: String },
    #[error("syslog URL `{url}`: unknown scheme `{scheme}`: use udp://, tcp:// (octet-counted, RFC 6587) or tls:// (RFC 5425)")]
    UnknownScheme { url: String, scheme: String },
    #[error("syslog URL `{url}` names no host: write {scheme}://HOST:{port}")]
    MissingHost {
        url: String,
        scheme: &'static str,
        port: u16,
    },
    #[error("syslog URL `{url}` has no port: write {url}:{port} ({port} is the standard port for {scheme})")]
    MissingPort {
        url: String,
        scheme: &'static str,
        port: u16,
    },
    #[error("syslog URL `{url}`: `{port}` is not a port number; use 1-65535")]
    BadPort { url: String, port: String },
    #[error(
        "syslog URL `{url}`: put an IPv6 address in brackets, like {scheme}://[2001:db8::1]:{port}"
    )]
    UnbracketedIpv6 {
        url: String,
        scheme: &'static str,
        port: u16,
    },
    #[error("syslog URL `{url}`: `{host}` is not a host name or address")]
    BadHost { url: String, host: String },
    #[error("syslog URL `{url}` has a path, query or user part; write only {scheme}://HOST:PORT")]
    ExtraParts { url: String, scheme: &'static str },
}

impl FromStr for SyslogUrl {
    type Err = UrlError;

    fn from_str(url: &str) -> Result<Self, UrlError> {
        let owned = || url.to_owned();
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| UrlError::MissingScheme { url: owned() })?;
        let transport = match scheme.to_ascii_lowercase().as_str() {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            "tls" => Transport::Tls,
            _ => {
                return Err(UrlError::UnknownScheme {
                    url: owned(),
                    scheme: scheme.to_owned(),
                })
            }
        };
        let (scheme, standard_port) = (transport.scheme(), transport.standard_port());
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#', '@']) {
            return Err(UrlError::ExtraParts {
                url: owned(),
                scheme,
            });
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').ok_or(UrlError::UnbracketedIpv6 {
                url: owned(),
                scheme,
                port: standard_port,
            })?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(UrlError::BadHost {
                    url: owned(),
                    host: host.to_owned(),
                });
            }
            (host, after.strip_prefix(':'))
        } else {
            match authority.split_once(':') {
                Some((_, port)) if port.contains(':') => {
                    return Err(UrlError::UnbracketedIpv6 {
                        url: owned(),
                        scheme,
                        port: standard_port,
                    })
                }
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(UrlError::MissingHost {
                url: owned(),
                scheme,
                port: standard_port,
            });
        }
        let valid_name = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
        if !authority.starts_with('[') && !host.chars().all(valid_name) {
            return Err(UrlError::BadHost {
                url: owned(),
                host: host.to_owned(),
            });
        }
        let port = match port {
            None | Some("") => {
                return Err(UrlError::MissingPort {
                    url: url.trim_end_matches([':', '/']).to_owned(),
                    scheme,
                    port: standard_port,
                })
            }
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|&port| port != 0)
                .ok_or_else(|| UrlError::BadPort {
                    url: owned(),
                    port: port.to_owned(),
                })?,
        };
        Ok(SyslogUrl {
            transport,
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for SyslogUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = self.transport.scheme();
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// The syslog facilities of RFC 5424, by their usual names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Facility {
    Kern = 0,
    User = 1,
    Mail = 2,
    Daemon = 3,
    Auth = 4,
    Syslog = 5,
    Lpr = 6,
    News = 7,
    Uucp = 8,
    Cron = 9,
    Authpriv = 10,
    Ftp = 11,
    Local0 = 16,
    Local1 = 17,
    Local2 = 18,
    Local3 = 19,
    Local4 = 20,
    Local5 = 21,
    Local6 = 22,
    Local7 = 23,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown syslog facility `{0}`: use one of kern, user, mail, daemon, auth, syslog, lpr, news, uucp, cron, authpriv, ftp, local0 ... local7")]
pub struct FacilityError(String);

impl FromStr for Facility {
    type Err = FacilityError;

    fn from_str(name: &str) -> Result<Self, FacilityError> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "kern" => Facility::Kern,
            "user" => Facility::User,
            "mail" => Facility::Mail,
            "daemon" => Facility::Daemon,
            "auth" => Facility::Auth,
            "syslog" => Facility::Syslog,
            "lpr" => Facility::Lpr,
            "news" => Facility::News,
            "uucp" => Facility::Uucp,
            "cron" => Facility::Cron,
            "authpriv" => Facility::Authpriv,
            "ftp" => Facility::Ftp,
            "local0" => Facility::Local0,
            "local1" => Facility::Local1,
            "local2" => Facility::Local2,
            "local3" => Facility::Local3,
            "local4" => Facility::Local4,
            "local5" => Facility::Local5,
            "local6" => Facility::Local6,
            "local7" => Facility::Local7,
            _ => return Err(FacilityError(name.to_owned())),
        })
    }
}

/// Everything the syslog sink needs; `SyslogConfig::new` fills in the defaults.
#[derive(Clone, Debug)]
pub struct SyslogConfig {
    pub url: SyslogUrl,
    /// How the receiver's certificate is checked (tls:// only).
    pub tls_trust: TlsTrust,
    pub facility: Facility,
    /// HOSTNAME field; the system's host name when `None`.
    pub hostname: Option<String>,
    pub spool_dir: PathBuf,
    /// Disk space the spool may use; beyond it records are dropped and counted.
    pub spool_max_bytes: u64,
    /// Storm folding; `None` sends every reset on its own.
    pub aggregate: Option<AggregateConfig>,
    /// Reports waiting between capture and the sender; when full, reports are dropped (and
    /// counted) rather than making capture wait.
    pub queue_len: usize,
    /// Records held in memory while the receiver is up but busy; beyond that they are spooled.
    pub memory_len: usize,
    /// Limit for connecting (including the TLS handshake) and for each write.
    pub io_timeout: Duration,
    /// Reconnection delay: doubles from `retry_min` up to `retry_max` while the receiver is down.
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl SyslogConfig {
    pub fn new(url: SyslogUrl, spool_dir: impl Into<PathBuf>) -> Self {
        SyslogConfig {
            url,
            tls_trust: TlsTrust::SystemRoots,
            facility: Facility::Local0,
            hostname: None,
            spool_dir: spool_dir.into(),
            spool_max_bytes: 256 << 20,
            aggregate: Some(AggregateConfig::per_second(10)),
            queue_len: 8192,
            memory_len: 1024,
            io_timeout: Duration::from_secs(5),
            retry_min: Duration::from_millis(250),
            retry_max: Duration::from_secs(30),
        }
    }
}

/// Why the syslog sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// A snapshot of the sink's counters. Every report handed to the sink ends up in exactly one
/// of: sent, resent (after a stay in the spool), folded into an aggregate, or one of the drops;
/// `pending` are still on their way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Records delivered straight from memory.
    pub sent: u64,
    /// Records written to the disk spool (the receiver was down or too slow).
    pub spooled: u64,
    /// Records delivered from the spool.
    pub resent: u64,
    /// Re-sent records that were in a write that failed midway: the receiver may have them
    /// twice, with the same `sequenceId`.
    pub maybe_duplicated: u64,
    /// Times the connection failed or a write timed out (the receiver went away or stalled).
    pub link_failures: u64,
    /// Resets folded into storm aggregates (they are in an aggregate's count, not lost).
    pub folded: u64,
    /// Reports refused because the sink's queue was full.
    pub dropped_queue_full: u64,
    /// Records lost because the spool was full or could not be written.
    pub dropped_spool: u64,
    /// Records too large for one UDP datagram.
    pub dropped_too_large: u64,
    /// Records waiting in memory or in the spool (refreshed every 100 ms).
    pub pending: u64,
    /// Disk used by the spool (refreshed every 100 ms).
    pub spool_bytes: u64,
    /// Whether the receiver is connected right now.
    pub connected: bool,
}

impl SinkStats {
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full + self.dropped_spool + self.dropped_too_large
    }
}

/// The counters behind `SinkStats`, shared by the handle and the sender task.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub sent: AtomicU64,
    pub spooled: AtomicU64,
    pub resent: AtomicU64,
    pub maybe_duplicated: AtomicU64,
    pub link_failures: AtomicU64,
    pub folded: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_spool: AtomicU64,
    pub dropped_too_large: AtomicU64,
    pub pending: AtomicU64,
    pub spool_bytes: AtomicU64,
    pub connected: AtomicBool,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> SinkStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        SinkStats {
            sent: get(&self.sent),
            spooled: get(&self.spooled),
            resent: get(&self.resent),
            maybe_duplicated: get(&self.maybe_duplicated),
            link_failures: get(&self.link_failures),
            folded: get(&self.folded),
            dropped_queue_full: get(&self.dropped_queue_full),
            dropped_spool: get(&self.dropped_spool),
            dropped_too_large: get(&self.dropped_too_large),
            pending: get(&self.pending),
            spool_bytes: get(&self.spool_bytes),
            connected: self.connected.load(Ordering::Relaxed),
        }
    }
}

/// The capture side's end of the sink. Cheap to clone; never blocks.
#[derive(Clone)]
pub struct SyslogHandle {
    commands: mpsc::Sender<Command>,
    counters: Arc<Counters>,
}

impl SyslogHandle {
    /// Queues a report for export without waiting; when the queue is full the report is
    /// dropped and counted in `dropped_queue_full`.
    pub fn send(&self, report: ResetReport) {
        if self
            .commands
            .try_send(Command::Report(Box::new(report)))
            .is_err()
        {
            Counters::add(&self.counters.dropped_queue_full, 1);
        }
    }

    pub fn stats(&self) -> SinkStats {
        self.counters.snapshot()
    }

    /// Sends what can be sent within `grace`, spools the rest (including storm aggregates still
    /// open) and waits for the sender to stop. Reports sent through other clones of the handle
    /// in the meantime are handled the same way.
    pub async fn shutdown(self, grace: Duration) -> SinkStats {
        let deadline = Instant::now() + grace;
        let (done, stopped) = oneshot::channel();
        let command = Command::Shutdown { deadline, done };
        // A full queue still gets the shutdown through once the sender catches up; if it never
        // does, the sender is gone and there is nothing to wait for.
        if tokio::time::timeout(grace, self.commands.send(command))
            .await
            .is_ok_and(|sent| sent.is_ok())
        {
            let _stopped = stopped.await;
        }
        self.counters.snapshot()
    }
}

/// Starts the syslog sender on the current tokio runtime (it must be called from within one).
/// Fails when the spool directory cannot
/// be used or the TLS settings are unusable; a receiver that is down is not an error (records
/// are spooled until it comes back).
pub fn spawn(
    config: SyslogConfig,
    format: Box<dyn Format>,
) -> Result<(SyslogHandle, JoinHandle<()>), SinkError> {
    let connector = Connector::new(&config.url, &config.tls_trust, config.io_timeout)?;
    let spool = Spool::open(&config.spool_dir, config.spool_max_bytes)?;
    let header = Header::new(config.facility, config.hostname.as_deref());
    let counters = Arc::new(Counters::default());
    let (commands, receiver) = mpsc::channel(config.queue_len.max(1));
    let sender = Sender::new(
        &config,
        receiver,
        format,
        header,
        spool,
        connector,
        Arc::clone(&counters),
    );
    let task = tokio::spawn(sender.run());
    Ok((SyslogHandle { commands, counters }, task))
}

/// The fixed part of every message.
pub(crate) struct Header {
    facility: Facility,
    hostname: String,
    procid: u32,
    /// The `sequenceId` of the next message.
    next_sequence: u32,
}

/// RFC 5424 section 7.3.1: `sequenceId` runs from 1 to 2147483647 and then starts over.
const MAX_SEQUENCE_ID: u32 = i32::MAX as u32;

/// RFC 5424 section 7.2: the `origin` SD-ID is registered with IANA; no enterprise number
/// is needed.
const STRUCTURED_DATA: &str = concat!(
    "[origin software=\"rstwatch\" swVersion=\"",
    env!("CARGO_PKG_VERSION"),
    "\"]"
);

impl Header {
    pub fn new(facility: Facility, hostname: Option<&str>) -> Self {
        let system_hostname = || fs::read_to_string("/proc/sys/kernel/hostname").ok();
        let hostname = hostname
            .map(str::to_owned)
            .or_else(system_hostname)
            .unwrap_or_default();
        Header {
            facility,
            hostname: header_field(hostname.trim(), 255),
            procid: std::process::id(),
            next_sequence: 1,
        }
    }

    /// Appends the complete RFC 5424 message for `report`, numbered with the next
    /// `sequenceId`.
    pub fn message(&mut self, report: &ResetReport, format: &dyn Format, out: &mut Vec<u8>) {
        let pri = self.facility as u8 * 8 + severity(report.severity());
        let timestamp = humantime::format_rfc3339_micros(report.ts);
        let sequence = self.next_sequence;
        self.next_sequence = if sequence >= MAX_SEQUENCE_ID {
            1
        } else {
            sequence + 1
        };
        let header = format!(
            "<{pri}>1 {timestamp} {} rstwatch {} {} {STRUCTURED_DATA}[meta sequenceId=\"{sequence}\"] ",
            self.hostname,
            self.procid,
            report.class.as_str(),
        );
        out.extend_from_slice(header.as_bytes());
        format.render(report, out);
    }
}

fn severity(severity: Severity) -> u8 {
    match severity {
        Severity::Benign => 6,
        Severity::Notice => 5,
        Severity::Alert => 4,
    }
}

/// RFC 5424 header fields are printable US-ASCII without spaces, or `-` when empty.
fn header_field(value: &str, max_len: usize) -> String {
    let field: String = value
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .take(max_len)
        .collect();
    if field.is_empty() {
        "-".to_owned()
    } else {
        field
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::cef::Cef;

    fn url(text: &str) -> Result<SyslogUrl, UrlError> {
        text.parse()
    }

    #[test]
    fn accepts_the_three_transports() {
        assert_eq!(
            url("udp://siem.example:514").unwrap(),
            SyslogUrl {
                transport: Transport::Udp,
                host: "siem.example".into(),
                port: 514
            }
        );
        assert_eq!(
            url("TCP://10.0.0.5:1514").unwrap().transport,
            Transport::Tcp
        );
        let tls = url("tls://[2001:db8::5]:6514/").unwrap();
        assert_eq!(tls.host, "2001:db8::5");
        assert_eq!(tls.to_string(), "tls://[2001:db8::5]:6514");
    }

    #[test]
    fn errors_tell_what_to_write() {
        let message = |text: &str| url(text).unwrap_err().to_string();
        assert_eq!(
            message("siem:514"),
            "syslog URL `siem:514` has no scheme: write udp://HOST:PORT, tcp://HOST:PORT or tls://HOST:PORT"
        );
        assert!(message("http://siem:514").contains("unknown scheme `http`"));
        assert_eq!(
            message("tls://siem.example"),
            "syslog URL `tls://siem.example` has no port: write tls://siem.example:6514 (6514 is the standard port for tls)"
        );
        assert!(message("udp://siem:").contains("write udp://siem:514"));
        assert!(message("tcp://:514").contains("names no host"));
        assert!(message("tcp://siem:99999").contains("`99999` is not a port number"));
        assert!(message("tcp://siem:0").contains("`0` is not a port number"));
        assert!(message("tcp://2001:db8::5:514").contains("[2001:db8::1]"));
        assert!(message("tcp://[2001:db8::5:514").contains("in brackets"));
        assert!(message("tcp://siem:514/path").contains("path, query or user part"));
        assert!(message("tcp://user@siem:514").contains("path, query or user part"));
        assert!(message("tcp://si em:514").contains("not a host name"));
    }

    #[test]
    fn facility_names() {
        assert_eq!("local0".parse::<Facility>(), Ok(Facility::Local0));
        assert_eq!("AUTHPRIV".parse::<Facility>(), Ok(Facility::Authpriv));
        assert!("local8"
            .parse::<Facility>()
            .unwrap_err()
            .to_string()
            .contains("local0 ... local7"));
    }

    #[test]
    fn message_is_rfc5424_with_class_as_msgid() {
        let mut header = Header {
            facility: Facility::Local0,
            hostname: header_field("sensor 1", 255),
            procid: 4242,
            next_sequence: 1,
        };
        let mut out = Vec::new();
        header.message(&crate::output::sample::refused_report(), &Cef, &mut out);
        let text = String::from_utf8(out).unwrap();
        // local0 (16) * 8 + notice (5) = 133.
        let expected = format!(
            "<133>1 2023-11-14T22:13:20.123000Z sensor_1 rstwatch 4242 refused \
             [origin software=\"rstwatch\" swVersion=\"{}\"][meta sequenceId=\"1\"] \
             CEF:0|rstwatch|",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.starts_with(&expected), "{text}");
    }

    #[test]
    fn sequence_ids_count_up_and_start_over_after_the_largest() {
        let mut header = Header::new(Facility::Local0, Some("h"));
        header.next_sequence = MAX_SEQUENCE_ID;
        let mut ids = Vec::new();
        for _ in 0..2 {
            let mut out = Vec::new();
            header.message(&crate::output::sample::refused_report(), &Cef, &mut out);
            let text = String::from_utf8(out).unwrap();
            let id = text.split("sequenceId=\"").nth(1).unwrap();
            ids.push(id[..id.find('"').unwrap()].to_owned());
        }
        assert_eq!(ids, ["2147483647", "1"]);
    }

    /// Capture never waits: with the sender busy elsewhere, reports beyond the queue are
    /// dropped and counted; those queued are spooled when the receiver cannot be reached.
    #[tokio::test]
    async fn a_full_queue_and_a_dead_receiver_are_counted_never_waited_for() {
        let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .unwrap()
            .port();
        let spool =
            std::env::temp_dir().join(format!("rstwatch-queue-test-{}", std::process::id()));
        let url = format!("tcp://127.0.0.1:{closed_port}").parse().unwrap();
        let mut config = SyslogConfig::new(url, &spool);
        config.queue_len = 2;
        config.aggregate = None;
        let (handle, task) = spawn(config, Box::new(Cef)).unwrap();
        // A current-thread runtime: the sender cannot run before the next await.
        for _ in 0..10 {
            handle.send(crate::output::sample::refused_report());
        }
        assert_eq!(handle.stats().dropped_queue_full, 8);
        let stats = handle.shutdown(Duration::from_millis(300)).await;
        task.await.unwrap();
        std::fs::remove_dir_all(&spool).unwrap();
        assert_eq!(
            (stats.sent, stats.spooled, stats.pending),
            (0, 2, 2),
            "{stats:?}"
        );
        assert_eq!(stats.dropped(), 8);
        assert!(!stats.connected);
    }

    #[test]
    fn severity_follows_the_report() {
        let mut header = Header::new(Facility::Daemon, Some(""));
        assert_eq!(header.hostname, "-");
        let mut report = crate::output::sample::refused_report();
        report.middlebox = true;
        let mut out = Vec::new();
        header.message(&report, &Cef, &mut out);
        // daemon (3) * 8 + warning (4) = 28.
        assert!(out.starts_with(b"<28>1 "));
    }
}
