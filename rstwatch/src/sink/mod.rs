//! Where rendered records go.
//!
//! - `file`: standard output or `--output FILE`, written by a thread behind a bounded queue;
//! - `syslog`: export to a SIEM over syslog (UDP, TCP, TLS), the public face of the sink;
//! - `sender`: the task that keeps the receiver fed without ever making capture wait;
//! - `transport`: connections, framing and TLS;
//! - `spool`: the on-disk queue for records the receiver could not take;
//! - `aggregate`: folding of reset storms into counted reports.

pub mod aggregate;
pub mod file;
mod sender;
pub mod spool;
pub mod syslog;
pub mod transport;
