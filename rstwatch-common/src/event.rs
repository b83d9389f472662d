//! The record the kernel pushes through the ring buffer.

use crate::{flow::FlowKey, flow::FlowState, packet::PacketMeta};

/// Why an event was sent.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The flow's first RST (or the first after its grace period).
    Rst = 1,
    /// A packet within the grace period after a RST: another RST, or payload from the first
    /// RST's claimed sender. Evidence for the verdict on that RST.
    FollowUp = 2,
}

impl EventKind {
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(EventKind::Rst),
            2 => Some(EventKind::FollowUp),
            _ => None,
        }
    }
}

/// Where the packet was seen.
pub const DIRECTION_INGRESS: u8 = 0;
pub const DIRECTION_EGRESS: u8 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RstEvent {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC.
    pub ts_ns: u64,
    pub ifindex: u32,
    /// `EventKind` as u8: the kernel never writes an enum userspace could misread.
    pub kind: u8,
    /// `DIRECTION_INGRESS` (XDP) or `DIRECTION_EGRESS` (TC).
    pub direction: u8,
    /// Direction index of the packet within its flow.
    pub dir: u8,
    pub _pad: u8,
    pub key: FlowKey,
    /// The packet's own fields.
    pub pkt: PacketMeta,
    /// Both directions as they were just before this packet; an empty snapshot (no packets)
    /// means the table had never seen the flow.
    pub flow: FlowState,
}

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::RstEvent {}
}
