//! Syslog export to a SIEM: RFC 5424 messages over UDP, TCP (RFC 6587 octet counting) or TLS
//! (RFC 5425), sent by a task of their own so that capture never waits for the receiver.
//!
//! `spawn` starts the sender; the pipeline hands it complete messages through a `SyslogSink`
//! (its `Sink`) that never blocks: the record is rendered once by the pipeline, the header is
//! added here, on the capture side. Records the receiver cannot take right now go to the
//! on-disk spool (see `spool`) and are re-sent in order when it comes back. Every message is
//! sent, spooled, or counted as dropped in `SinkStats`.
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
//! counted as `maybe_duplicated`. Records written in the instant a receiver dies can be lost.
//! UDP is best effort: the datagram that
//! reveals a dead receiver (through the ICMP error that follows it) is lost; after an outage a
//! single record probes the receiver before the backlog is released.

use std::{
    fs,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use super::{
    config::{Facility, SyslogConfig},
    sender::{Command, Sender},
    spool::{Spool, SpoolError},
    stats::{Counters, SinkStats},
    transport::{Connector, TlsSetupError},
    Sink,
};
use crate::report::{ResetReport, Severity};

/// The capture side's end of the sink. Cheap to clone; never blocks.
#[derive(Clone)]
pub struct SyslogHandle {
    commands: mpsc::Sender<Command>,
    counters: Arc<Counters>,
}

impl SyslogHandle {
    /// Queues one complete message for export without waiting; when the queue is full it is
    /// dropped and counted in `dropped_queue_full`.
    pub fn send(&self, message: Bytes) {
        if self.commands.try_send(Command::Message(message)).is_err() {
            Counters::add(&self.counters.dropped_queue_full, 1);
        }
    }

    pub fn stats(&self) -> SinkStats {
        self.counters.snapshot()
    }

    /// Sends what can be sent within `grace`, spools the rest and waits for the sender to stop. Reports sent through other clones of the handle
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

/// Why the syslog sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// Starts the syslog sender on the current tokio runtime (it must be called from within one).
/// Fails when the spool directory cannot
/// be used or the TLS settings are unusable; a receiver that is down is not an error (records
/// are spooled until it comes back).
pub fn spawn(config: SyslogConfig) -> Result<(SyslogHandle, JoinHandle<()>), SinkError> {
    let connector = Connector::new(&config.url, &config.tls_trust, config.io_timeout)?;
    let spool = Spool::open(&config.spool_dir, config.spool_max_bytes)?;
    let counters = Arc::new(Counters::default());
    let (commands, receiver) = mpsc::channel(config.queue_len.max(1));
    let sender = Sender::new(&config, receiver, spool, connector, Arc::clone(&counters));
    let task = tokio::spawn(sender.run());
    Ok((SyslogHandle { commands, counters }, task))
}

/// The pipeline's syslog sink: adds the RFC 5424 header to each rendered record and queues
/// the message for the sender task.
pub struct SyslogSink {
    handle: SyslogHandle,
    header: Header,
    message: Vec<u8>,
}

impl SyslogSink {
    pub fn new(handle: SyslogHandle, config: &SyslogConfig) -> Self {
        Self {
            handle,
            header: Header::new(config.facility, config.hostname.as_deref()),
            message: Vec::with_capacity(1024),
        }
    }
}

impl Sink for SyslogSink {
    fn write(&mut self, report: &ResetReport, record: &[u8]) -> anyhow::Result<()> {
        self.message.clear();
        self.header.message(report, record, &mut self.message);
        self.handle.send(Bytes::copy_from_slice(&self.message));
        Ok(())
    }

    /// Messages are queued one by one; the sender task writes them in batches of its own.
    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// The fixed part of every message.
struct Header {
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
    fn new(facility: Facility, hostname: Option<&str>) -> Self {
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

    /// Appends the complete RFC 5424 message for `report`, whose rendered record is `record`,
    /// numbered with the next `sequenceId`.
    fn message(&mut self, report: &ResetReport, record: &[u8], out: &mut Vec<u8>) {
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
        out.extend_from_slice(record);
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
    use crate::output::{cef::Cef, Format as _};

    fn render(report: &ResetReport) -> Vec<u8> {
        let mut record = Vec::new();
        Cef.render(report, &mut record);
        record
    }

    #[test]
    fn message_is_rfc5424_with_class_as_msgid() {
        let mut header = Header {
            facility: Facility::Local0,
            hostname: header_field("sensor 1", 255),
            procid: 4242,
            next_sequence: 1,
        };
        let report = crate::test_support::sample::refused_report();
        let mut out = Vec::new();
        header.message(&report, &render(&report), &mut out);
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
        let report = crate::test_support::sample::refused_report();
        let mut ids = Vec::new();
        for _ in 0..2 {
            let mut out = Vec::new();
            header.message(&report, &render(&report), &mut out);
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
        let (handle, task) = spawn(config.clone()).unwrap();
        let mut sink = SyslogSink::new(handle.clone(), &config);
        let report = crate::test_support::sample::refused_report();
        // A current-thread runtime: the sender cannot run before the next await.
        for _ in 0..10 {
            sink.write(&report, &render(&report)).unwrap();
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
        let mut report = crate::test_support::sample::refused_report();
        report.middlebox = true;
        let mut out = Vec::new();
        header.message(&report, &render(&report), &mut out);
        // daemon (3) * 8 + warning (4) = 28.
        assert!(out.starts_with(b"<28>1 "));
    }
}
