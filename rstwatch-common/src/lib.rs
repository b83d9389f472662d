//! Types and logic shared by the kernel programs and the userspace daemon.
//!
//! Everything here is `#![no_std]` and `#[repr(C)]` so the same bytes mean the same thing on
//! both sides of the ring buffer and of the mapped flow table (`table`). Every per-packet
//! decision lives here too, written once so that `rstwatch explain FILE.pcap` replays captures
//! through the exact logic the kernel runs: what the headers' bytes mean (`wire`), the
//! `--port`/`--net` filter (`FilterConfig::selects`), the flow update (`FlowState::step`), what
//! becomes of a packet of a flow the table does not hold (`unheld`), storm counts
//! (`StormCount::count_reset`) and which ring record an event is (`event::record`).
#![no_std]

pub mod budget;
pub mod counter;
pub mod defaults;
pub mod event;
pub mod features;
pub mod flow;
pub mod local;
pub mod maps;
pub mod packet;
pub mod ports;
pub mod settings;
pub mod span;
pub mod table;
pub mod unheld;
pub mod wire;
pub mod zero;

pub use budget::RateWindow;
pub use counter::{Counter, COUNTER_COUNT};
pub use event::{EventKind, RstEvent, SeenAt, StormCount, StormKey};
pub use flow::{DirState, FlowKey, FlowState};
pub use packet::PacketMeta;
pub use ports::PortSet;
pub use settings::{FilterConfig, Settings};
