//! rstwatch: explains every TCP reset on a host, from evidence gathered in the kernel.
//!
//! The tree follows the data. A reset enters as a kernel event (`event`) from one of two
//! sources, runs through the one pipeline, and leaves as an explained report (`report`),
//! rendered and delivered:
//!
//! ```text
//! kernel/  (live: the eBPF programs' ring buffer)  ─┐
//!                                                  ├─> pipeline/ ─> output/ ─> sink/
//! offline/ (a capture file, replayed)             ─┘     │
//!                                      decode, local/ join, hold, explain/, aggregate, storms
//! ```
//!
//! - `kernel`: loads and attaches the eBPF programs, configures and reads their maps and
//!   flow tables; what the running kernel offers (`features`), checks before touching it
//!   (`preflight`), interfaces that come and go (`ifaces`), TC egress without TCX
//!   (`tc_egress`) and the `rstwatch detach` command for a killed run's leftovers (`detach`).
//! - `offline`: the `rstwatch explain FILE` command: capture files read (`capture`), the
//!   kernel's flow tables replayed over their packets (`replay`), one conversation's timeline
//!   (`timeline`).
//! - `local`: the host's own TCP stack on its resets (the kernel's reason, the socket's
//!   owner), from tracepoints, joined with the RSTs on the wire.
//! - `pipeline`: the one path from kernel records to written records, used by `watch`,
//!   `explain` and the benchmark alike: decode, hold (follow-up evidence joins the verdict, the
//!   connection as of the hold's end), explain, aggregate, render once per format, sinks; the
//!   kernel's storm counts and the end-of-run summary.
//! - `explain`: the pure classifier: one kernel event (plus follow-ups) to one `ResetReport`.
//! - `output`: one module per record format (text, JSON, ECS, OCSF, CEF), and `FormatKind`,
//!   the formats as `--format` names them.
//! - `sink`: where rendered records go: the `Sink` trait, stdout or a file, syslog with its
//!   spool, pcap-ng, the Prometheus counts.
//! - `daemon`: the `rstwatch watch` command: attach, hand the ring buffer to the pipeline,
//!   signals, and its Prometheus page (`metrics`).
//! - `assembly`: what `watch` and `explain` both write to, set up one way: the records'
//!   format and destination, the syslog export.
//! - `cli`: the command line and its `--config FILE` (`config`).
//! - Leaves every stage may use: `event` (the kernel event's raw fields as types), `report`
//!   (the explained reset), `cidr` (networks as `--net` and `--local` take them), `clock`,
//!   `error` (`UserError`: a failure the user can fix, exit code 2).

pub mod assembly;
pub mod cidr;
pub mod cli;
pub mod clock;
pub mod daemon;
pub mod error;
pub mod event;
pub mod explain;
pub mod kernel;
pub mod local;
pub mod offline;
pub mod output;
pub mod pipeline;
pub mod report;
pub mod sink;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
