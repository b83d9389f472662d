//! rstwatch: explains every TCP reset on a host, from evidence gathered in the kernel.
//!
//! Where things live:
//! - `kernel`: loads and attaches the eBPF programs, configures their maps, reads counters.
//! - `explain`: the pure classifier: one kernel event (plus follow-ups) to one `ResetReport`.
//! - `report`: the explained reset, the data every output renders.
//! - `output`: one module per format (text, JSON, ECS, OCSF, CEF).
//! - `sink`: where rendered records go (stdout, file, syslog with its spool).
//! - `summary`: resets counted by class and by peer, rendered at the end of a run.

pub mod explain;
pub mod output;
pub mod report;
pub mod sink;
pub mod summary;
