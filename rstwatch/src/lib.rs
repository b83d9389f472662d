//! rstwatch: explains every TCP reset on a host, from evidence gathered in the kernel.
//!
//! Where things live:
//! - `cli`: the command line and the parsers for its values.
//! - `config`: `--config FILE`: a TOML file's options merged under the command line's.
//! - `error`: `UserError`, a failure the user can fix (one line, exit code 2).
//! - `filter`: the in-kernel filters' values (`--net` networks).
//! - `preflight`: checks before touching the kernel (interfaces, capabilities).
//! - `features`: what the running kernel offers (TCX, BTF, reset reasons), and the fallbacks.
//! - `kernel`: loads and attaches the eBPF programs, configures their maps, reads counters.
//! - `metrics`: `--metrics ADDR`: the Prometheus page and its small HTTP responder.
//! - `tc_filter`: TC egress without TCX: rstwatch's netlink filter, and its stale-filter cleanup.
//! - `detach`: removes the egress filter a killed rstwatch left (kernels without TCX).
//! - `watch`: the daemon: attach, hand the ring buffer to the pipeline, signals.
//! - `pipeline`: the one path from kernel records to written records (decode, hold, explain,
//!   aggregate, render once, sinks), used by `watch`, `explain` and the benchmark alike.
//! - `local`: the host's own TCP stack on its resets (the kernel's reason, the socket's
//!   owner), from tracepoints, joined with the RSTs on the wire.
//! - `event`: the kernel event's raw fields as types (`Hook`, `FlowSide`, `Origin`).
//! - `ifaces`: watched interfaces that disappear and come back.
//! - `hold`: keeps each RST briefly so its follow-up evidence joins the verdict, and finds the
//!   connection's state as of the hold's end, live and offline alike.
//! - `explain`: the pure classifier: one kernel event (plus follow-ups) to one `ResetReport`.
//! - `report`: the explained reset, the data every output renders.
//! - `output`: one module per format (text, JSON, ECS, OCSF, CEF).
//! - `sink`: where rendered records go: the `Sink` trait, stdout or a file, syslog with its
//!   spool.
//! - `storm`: turns the kernel's storm counts into aggregate reports.
//! - `summary`: resets counted by class and by peer, rendered at the end of a run.
//! - `offline`: `rstwatch explain FILE`: a capture file through the same hold and explain.
//! - `capture`: reads pcap and pcap-ng, link layers, IP and TCP headers of captured frames.
//! - `replay`: the kernel's flow tables, replayed over a capture's packets.
//! - `timeline`: `--flow`: one conversation's packets and verdicts, in order.

pub mod capture;
pub mod cli;
pub mod clock;
pub mod config;
pub mod detach;
pub mod error;
pub mod event;
pub mod explain;
pub mod features;
pub mod filter;
pub mod hold;
pub mod ifaces;
pub mod kernel;
pub mod local;
pub mod metrics;
pub mod offline;
pub mod output;
pub mod pipeline;
pub mod preflight;
pub mod replay;
pub mod report;
pub mod sink;
pub mod storm;
pub mod summary;
pub mod table;
pub mod tc_filter;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
pub mod timeline;
pub mod watch;
