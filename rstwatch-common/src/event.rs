//! What the kernel reports: the records it pushes through the ring buffer, the storm counts
//! it keeps in a map, and the event userspace rebuilds from either.
//!
//! A record starts with a `RecordHeader` (kind and length first), so the reader can dispatch
//! on it and skip what it does not know. Records carry nothing userspace can work out itself:
//! the flow key and the packet's direction within its flow follow from the packet's
//! addresses, and only the first RST of a known flow carries the flow's state.

use crate::{
    flow::{FlowKey, FlowState},
    packet::PacketMeta,
};

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

/// `RecordHeader::kind`: what follows the header.
pub mod record {
    /// A RST on a flow the table knows: `FlowRecord`, with the flow's state before the RST.
    pub const RST: u8 = 1;
    /// A follow-up packet after a RST (known flow or not): `PacketRecord`.
    pub const FOLLOW_UP: u8 = 2;
    /// A RST on a flow the table does not know: `PacketRecord`, there is no state to send.
    pub const RST_NO_STATE: u8 = 3;
}

/// Where the packet was seen.
pub const DIRECTION_INGRESS: u8 = 0;
pub const DIRECTION_EGRESS: u8 = 1;

/// The start of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordHeader {
    /// `record::*`.
    pub kind: u8,
    /// `DIRECTION_INGRESS` (XDP) or `DIRECTION_EGRESS` (TC).
    pub direction: u8,
    /// Bytes of the whole record, header included.
    pub len: u16,
    pub ifindex: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC.
    pub ts_ns: u64,
}

/// `record::FOLLOW_UP` and `record::RST_NO_STATE`: the packet alone.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketRecord {
    pub header: RecordHeader,
    pub pkt: PacketMeta,
}

/// `record::RST`: the RST and the flow's state just before it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowRecord {
    pub header: RecordHeader,
    pub pkt: PacketMeta,
    pub flow: FlowState,
}

/// A decoded record, as the rest of userspace uses it.
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

impl RstEvent {
    /// The event of a record's header and packet; the flow's state is empty (never seen)
    /// until the caller sets it.
    pub fn of_packet(header: &RecordHeader, kind: EventKind, pkt: PacketMeta) -> Self {
        let (key, dir) = FlowKey::of(&pkt);
        Self {
            ts_ns: header.ts_ns,
            ifindex: header.ifindex,
            kind: kind as u8,
            direction: header.direction,
            dir,
            _pad: 0,
            key,
            pkt,
            flow: FlowState::new(&pkt, dir),
        }
    }
}

/// Why a ring-buffer record could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than its header or than its header's kind requires.
    Short,
    /// A kind this version does not know.
    UnknownKind(u8),
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<RstEvent, DecodeError> {
    let header: RecordHeader = read(bytes).ok_or(DecodeError::Short)?;
    if (header.len as usize) > bytes.len() {
        return Err(DecodeError::Short);
    }
    match header.kind {
        record::RST => {
            let FlowRecord { pkt, flow, .. } = read(bytes).ok_or(DecodeError::Short)?;
            let mut event = RstEvent::of_packet(&header, EventKind::Rst, pkt);
            event.flow = flow;
            Ok(event)
        }
        record::RST_NO_STATE | record::FOLLOW_UP => {
            let PacketRecord { pkt, .. } = read(bytes).ok_or(DecodeError::Short)?;
            let kind = if header.kind == record::RST_NO_STATE {
                EventKind::Rst
            } else {
                EventKind::FollowUp
            };
            Ok(RstEvent::of_packet(&header, kind, pkt))
        }
        other => Err(DecodeError::UnknownKind(other)),
    }
}

/// Copies a `T` out of the start of `bytes`, `None` if it is too short.
fn read<T: Copy>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < core::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: length checked; only used with the plain-old-data record types of this module,
    // valid for any bit pattern.
    Some(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}

/// Where unknown-flow RSTs beyond the per-CPU rate are counted: one entry per sender prefix
/// (IPv4 /24, IPv6 /64), sender service port, family and hook.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StormKey {
    /// The RST sender's address, IPv4-mapped for IPv4, with the host bits cleared.
    pub sender_prefix: [u8; 16],
    /// The sender's port when it is a well-known service port (below 1024), else 0: a RST
    /// storm from ephemeral ports (a scan's backscatter, a client's retries) is one storm.
    pub sender_port: u16,
    pub family: u8,
    /// `DIRECTION_INGRESS` or `DIRECTION_EGRESS`.
    pub direction: u8,
}

/// One CPU's count of the resets under a `StormKey`, since the entry was made.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StormCount {
    pub resets: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub ifindex: u32,
    pub _pad: u32,
    /// The first reset counted here, as a sample for the report.
    pub sample: PacketMeta,
}

impl StormKey {
    /// The key of an unknown-flow RST.
    pub const fn of(pkt: &PacketMeta, direction: u8) -> Self {
        let a = pkt.src_addr;
        // Written out rather than cleared in a loop: a loop becomes a `memset` call, which
        // BPF cannot make.
        let sender_prefix = if pkt.family == crate::packet::FAMILY_IPV4 {
            // IPv4 is mapped into the last four bytes: a /24 keeps three of them.
            [
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[12], a[13], a[14], 0,
            ]
        } else {
            [
                a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], 0, 0, 0, 0, 0, 0, 0, 0,
            ]
        };
        Self {
            sender_prefix,
            sender_port: if pkt.src_port < 1024 { pkt.src_port } else { 0 },
            family: pkt.family,
            direction,
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::RstEvent {}
    unsafe impl aya::Pod for super::StormKey {}
    unsafe impl aya::Pod for super::StormCount {}
}
