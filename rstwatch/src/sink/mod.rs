//! Where rendered records go: each destination is a `Sink`.
//!
//! - `file`: standard output or `--output FILE`, one record per line, written by a thread
//!   behind a bounded queue;
//! - `syslog`: export to a SIEM over syslog (UDP, TCP, TLS), with its sender task;
//! - `metrics`: counts resets by class, sender, middlebox, direction and interface for
//!   `--metrics`;
//! - `pcap`: the kernel's copies of the reported RSTs' frames, as pcap-ng, for `--pcap`;
//! - `config`: what the syslog sink is told (receiver URL, facility, spool and queue sizes);
//! - `stats`: the syslog sink's counters;
//! - `sender`: the task that keeps the receiver fed without ever making capture wait;
//! - `transport`: connections, framing and TLS;
//! - `spool`: the on-disk queue for records the receiver could not take.

pub mod config;
pub mod file;
pub mod metrics;
pub mod pcap;
mod sender;
pub mod spool;
pub mod stats;
pub mod syslog;
pub mod transport;

use crate::report::ResetReport;

pub use config::{Facility, SyslogConfig, SyslogUrl, TlsTrust, Transport};

/// A destination for records. The pipeline renders each report once per format and hands the
/// same bytes to every sink of that format.
pub trait Sink: Send {
    /// Takes `record`, the rendered `report` (without a trailing newline: line-oriented sinks
    /// add one, syslog frames it). Must not wait on a slow destination.
    fn write(&mut self, report: &ResetReport, record: &[u8]) -> anyhow::Result<()>;

    /// End of a batch (one ring drain, one hold release): what was written becomes visible.
    fn flush(&mut self) -> anyhow::Result<()>;

    /// Whether the sink writes the frames the kernel copied (`ResetReport::frames`): reports
    /// carry them only when some sink does.
    fn takes_frames(&self) -> bool {
        false
    }
}
