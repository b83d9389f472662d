//! What the kernel reports: the records it pushes through the ring buffer, the storm counts
//! it keeps in a map, and the event userspace rebuilds from either.
//!
//! A record starts with a `RecordHeader` (kind and length first), so the reader can dispatch
//! on it and skip what it does not know. Records carry nothing userspace can work out itself:
//! the flow key and the packet's direction within its flow follow from the packet's
//! addresses, and only a RST on a known flow carries the flow's state.

use core::sync::atomic::{compiler_fence, Ordering};

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
    /// A flow's first RST: `FlowRecord`, with the flow's state before the RST.
    pub const RST: u8 = 1;
    /// Payload after a RST from its claimed sender, or a follow-up of a flow the table does
    /// not know: `PacketRecord`; only the packet is evidence.
    pub const FOLLOW_UP: u8 = 2;
    /// A RST on a flow the table does not know: `PacketRecord`, there is no state to send.
    pub const RST_NO_STATE: u8 = 3;
    /// A later RST on a known flow: `FlowRecord`, its state matters as the first one's does.
    pub const FOLLOW_UP_RST: u8 = 4;

    use super::EventKind;
    use crate::packet::PacketMeta;

    /// The record an event of a flow the table holds (`FlowState::step`'s) is sent as: a RST
    /// with the flow's state, payload after a RST with its own packet alone.
    #[inline(always)]
    pub const fn of_flow_event(kind: EventKind, pkt: &PacketMeta) -> u8 {
        match kind {
            EventKind::Rst => RST,
            EventKind::FollowUp if pkt.is_rst() => FOLLOW_UP_RST,
            EventKind::FollowUp => FOLLOW_UP,
        }
    }

    /// Whether a record of `kind` carries the flow's state (a `FlowRecord`) rather than the
    /// packet alone (a `PacketRecord`).
    #[inline(always)]
    pub const fn carries_flow(kind: u8) -> bool {
        kind == RST || kind == FOLLOW_UP_RST
    }

    /// The event a record of `kind` reports; `None` for a kind this version does not know.
    pub const fn event_kind(kind: u8) -> Option<EventKind> {
        match kind {
            RST | RST_NO_STATE => Some(EventKind::Rst),
            FOLLOW_UP | FOLLOW_UP_RST => Some(EventKind::FollowUp),
            _ => None,
        }
    }
}

/// Where the packet was seen.
pub const DIRECTION_INGRESS: u8 = 0;
pub const DIRECTION_EGRESS: u8 = 1;

/// Where a packet was seen: its hook's direction and its interface, the fields of a record's
/// header that do not depend on the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeenAt {
    /// `DIRECTION_INGRESS` (XDP) or `DIRECTION_EGRESS` (TC).
    pub direction: u8,
    pub ifindex: u32,
}

impl SeenAt {
    /// The header of a record of `kind`, `len` bytes long, sent at `now`.
    #[inline(always)]
    pub const fn header(self, kind: u8, len: usize, now: u64) -> RecordHeader {
        RecordHeader {
            kind,
            direction: self.direction,
            len: len as u16,
            ifindex: self.ifindex,
            ts_ns: now,
        }
    }
}

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

/// Bytes of a frame a record can carry: Ethernet, VLAN tags, IP and TCP with options of a
/// RST fit (a RST frame is usually 54 to 86 bytes).
pub const FRAME_BYTES: usize = 128;

/// The first bytes of a RST's frame as its hook saw them, copied by the kernel for `--pcap`.
/// Only RSTs carry bytes: copying every data follow-up would cost a copy per data packet.
/// 8-aligned, so the kernel copies it word by word.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Bytes of `bytes` that hold the frame's start; 0 when nothing was copied.
    pub captured: u32,
    /// The frame's whole length.
    pub wire_len: u32,
    pub bytes: [u8; FRAME_BYTES],
}

impl Default for Frame {
    fn default() -> Self {
        Self {
            captured: 0,
            wire_len: 0,
            bytes: [0; FRAME_BYTES],
        }
    }
}

impl Frame {
    /// The copied bytes; empty when the record carries none.
    pub fn captured_bytes(&self) -> &[u8] {
        &self.bytes[..(self.captured as usize).min(FRAME_BYTES)]
    }
}

/// `record::FOLLOW_UP` and `record::RST_NO_STATE`: the packet alone.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketRecord {
    pub header: RecordHeader,
    pub pkt: PacketMeta,
    /// Explicit, so no byte of a record is left unwritten.
    pub _pad: u32,
    /// The RST's frame; data follow-ups carry none.
    pub frame: Frame,
}

/// `record::RST` and `record::FOLLOW_UP_RST`: the RST and the flow's state just before it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowRecord {
    pub header: RecordHeader,
    pub pkt: PacketMeta,
    /// Explicit, so no byte of a record is left unwritten.
    pub _pad: u32,
    pub flow: FlowState,
    pub frame: Frame,
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
    /// The packet's frame as the kernel copied it (RSTs only).
    pub frame: Frame,
}

impl RstEvent {
    /// The event of a record's header and packet; the flow's state is empty (never seen)
    /// until the caller sets it.
    pub fn of_packet(header: &RecordHeader, kind: EventKind, pkt: PacketMeta) -> Self {
        Self::of_parts(header, kind, pkt, |dir| empty(&pkt, dir), Frame::default())
    }

    /// The event a record reports, of its header (whose `kind` says which event), packet,
    /// flow state (`Some` for a record that carries one) and frame; `None` for a record kind
    /// this version does not know. What `decode` makes of a ring record, and the capture
    /// replay of the record the kernel would have sent.
    pub fn of_record(
        header: &RecordHeader,
        pkt: PacketMeta,
        flow: Option<FlowState>,
        frame: Frame,
    ) -> Option<Self> {
        let kind = record::event_kind(header.kind)?;
        let flow = |dir| flow.unwrap_or_else(|| empty(&pkt, dir));
        Some(Self::of_parts(header, kind, pkt, flow, frame))
    }

    /// The event of a record's header, packet, flow state (made from the packet's direction
    /// in its flow) and frame.
    fn of_parts(
        header: &RecordHeader,
        kind: EventKind,
        pkt: PacketMeta,
        flow: impl FnOnce(u8) -> FlowState,
        frame: Frame,
    ) -> Self {
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
            flow: flow(dir),
            frame,
        }
    }
}

/// The state of an event that carries none: an empty snapshot only says the table had not
/// seen the flow. Its roles are not flipped here, the report takes them from the flow after
/// the RST.
fn empty(pkt: &PacketMeta, dir: u8) -> FlowState {
    FlowState::new(pkt, dir, &|_| false)
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
    let unknown = DecodeError::UnknownKind(header.kind);
    let event = if record::carries_flow(header.kind) {
        let FlowRecord {
            pkt, flow, frame, ..
        } = read(bytes).ok_or(DecodeError::Short)?;
        RstEvent::of_record(&header, pkt, Some(flow), frame)
    } else if record::event_kind(header.kind).is_some() {
        let PacketRecord { pkt, frame, .. } = read(bytes).ok_or(DecodeError::Short)?;
        RstEvent::of_record(&header, pkt, None, frame)
    } else {
        None
    };
    event.ok_or(unknown)
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
/// (IPv4 /24, IPv6 /64), sender service port, family and hook. 8-aligned so that keys
/// compare as three words.
#[repr(C, align(8))]
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
    pub _pad: [u8; 4],
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

impl StormCount {
    /// Counts one more reset, `pkt`, seen at `now` on interface `ifindex`: the first one
    /// starts the count (`start`).
    #[inline(always)]
    pub fn count_reset(&mut self, now: u64, ifindex: u32, pkt: &PacketMeta) {
        if self.resets == 0 {
            self.start(now, ifindex, pkt);
        } else {
            self.resets += 1;
            self.last_ns = now;
        }
    }

    /// Makes this the count of a storm whose first reset is `pkt`. The count is written last:
    /// userspace copies a kernel's slot or map value while a CPU may be writing it, and a
    /// storm it reads as started must come with its sample and times (the copy reads the count
    /// first, and on x86 neither loads nor stores pass each other).
    #[inline(always)]
    pub fn start(&mut self, now: u64, ifindex: u32, pkt: &PacketMeta) {
        self.first_ns = now;
        self.last_ns = now;
        self.ifindex = ifindex;
        self._pad = 0;
        self.sample = *pkt;
        compiler_fence(Ordering::Release);
        // SAFETY: a valid, aligned field of this count.
        unsafe { core::ptr::write_volatile(&mut self.resets, 1) };
    }
}

impl StormKey {
    /// The key of an unknown-flow RST.
    #[inline(always)]
    pub fn of(pkt: &PacketMeta, direction: u8) -> Self {
        const _: () = assert!(
            core::mem::align_of::<PacketMeta>() >= 4
                && core::mem::offset_of!(PacketMeta, src_addr) % 4 == 0
        );
        // Four 32-bit loads, not sixteen byte loads (BPF has no unaligned load).
        // SAFETY: the 4-aligned address of a `PacketMeta`, read as four words.
        let a = unsafe { core::ptr::read(pkt.src_addr.as_ptr().cast::<[u32; 4]>()) };
        // The third word of every IPv4-mapped address (`packet::ipv4_mapped`).
        const MAPPED: u32 = {
            let m = crate::packet::ipv4_mapped([0; 4]);
            u32::from_ne_bytes([m[8], m[9], m[10], m[11]])
        };
        let words = if pkt.family == crate::packet::FAMILY_IPV4 {
            // IPv4 is mapped into the last word: a /24 keeps its first three bytes.
            [
                0,
                0,
                MAPPED,
                a[3] & u32::from_ne_bytes([0xff, 0xff, 0xff, 0]),
            ]
        } else {
            [a[0], a[1], 0, 0]
        };
        Self {
            // SAFETY: four words are sixteen bytes, in memory order.
            sender_prefix: unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(words) },
            sender_port: if pkt.src_port < 1024 { pkt.src_port } else { 0 },
            family: pkt.family,
            direction,
            _pad: [0; 4],
        }
    }

    /// Whether two keys are the same, word by word: an array comparison would lower to
    /// `memcmp`, which BPF cannot call.
    #[inline(always)]
    pub fn same(&self, other: &StormKey) -> bool {
        let (a, b) = (self.words(), other.words());
        a[0] == b[0] && a[1] == b[1] && a[2] == b[2]
    }

    /// Index of the key's slot among `2^slots_log2` (a multiplicative hash of its words).
    #[inline(always)]
    pub fn slot(&self, slots_log2: u32) -> u32 {
        const MUL: u64 = 0x9e37_79b9_7f4a_7c15;
        let w = self.words();
        let hash = ((w[0].wrapping_mul(MUL) ^ w[1]).wrapping_mul(MUL) ^ w[2]).wrapping_mul(MUL);
        (hash >> (64 - slots_log2)) as u32
    }

    #[inline(always)]
    fn words(&self) -> [u64; 3] {
        // SAFETY: StormKey is 8-aligned, three words long and has no implicit padding.
        unsafe { core::ptr::read(self as *const StormKey as *const [u64; 3]) }
    }
}

/// Per-CPU storm slots, log2: more storms at once than slots go to the storm hash map.
pub const STORM_SLOTS_LOG2: u32 = 7;

/// A per-CPU slot of the kernel's direct-mapped storm counts: the count and the key the slot
/// counts (the first to take it). A key whose slot holds another goes to the storm hash map
/// instead. The count comes first, its reset count at offset 0: a slot copied while it is
/// being taken either reads no resets or reads a key written before them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StormSlot {
    pub count: StormCount,
    pub key: StormKey,
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec::Vec;

    use super::*;
    use crate::packet::{ipv4_mapped, tcp_flags, FAMILY_IPV4};

    fn rst() -> PacketMeta {
        PacketMeta {
            src_addr: ipv4_mapped([198, 18, 1, 2]),
            dst_addr: ipv4_mapped([198, 18, 0, 1]),
            src_port: 80,
            dst_port: 40_000,
            tcp_flags: tcp_flags::RST,
            family: FAMILY_IPV4,
            ..PacketMeta::default()
        }
    }

    fn bytes<T>(record: &T) -> Vec<u8> {
        // SAFETY: the record types are plain old data with every padding byte an explicit
        // field.
        unsafe { core::slice::from_raw_parts((record as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    fn frame() -> Frame {
        let mut frame = Frame {
            captured: 54,
            wire_len: 54,
            ..Frame::default()
        };
        frame.bytes[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        frame
    }

    fn header(kind: u8, len: usize) -> RecordHeader {
        RecordHeader {
            kind,
            direction: DIRECTION_INGRESS,
            len: len as u16,
            ifindex: 7,
            ts_ns: 1234,
        }
    }

    #[test]
    fn records_decode_by_their_header_with_key_and_direction_worked_out() {
        let mut flow = FlowState::default();
        flow.dir[0].pkts = 3;
        for (kind, event_kind) in [
            (record::RST, EventKind::Rst),
            (record::FOLLOW_UP_RST, EventKind::FollowUp),
        ] {
            let record = FlowRecord {
                header: header(kind, size_of::<FlowRecord>()),
                pkt: rst(),
                _pad: 0,
                frame: frame(),
                flow,
            };
            let event = decode(&bytes(&record)).unwrap();
            assert_eq!(EventKind::from_u8(event.kind), Some(event_kind));
            assert_eq!(event.flow, flow);
            assert_eq!((event.key, event.dir), FlowKey::of(&rst()));
            assert_eq!((event.ts_ns, event.ifindex), (1234, 7));
            assert_eq!(event.frame.captured_bytes().len(), 54);
            assert_eq!(event.frame.captured_bytes()[..6], [2, 0, 0, 0, 0, 1]);
        }
        let record = PacketRecord {
            header: header(record::RST_NO_STATE, size_of::<PacketRecord>()),
            pkt: rst(),
            _pad: 0,
            frame: Frame::default(),
        };
        let event = decode(&bytes(&record)).unwrap();
        assert_eq!(EventKind::from_u8(event.kind), Some(EventKind::Rst));
        assert_eq!(event.flow.packets(), 0, "no state: never seen");
    }

    #[test]
    fn a_flows_events_go_as_their_records_and_come_back_as_the_same_events() {
        let data = PacketMeta {
            tcp_flags: tcp_flags::ACK,
            payload_len: 10,
            ..rst()
        };
        let mut flow = FlowState::default();
        flow.dir[0].pkts = 3;
        let seen = SeenAt {
            direction: DIRECTION_INGRESS,
            ifindex: 7,
        };
        for (kind, pkt, record_kind, carries_flow) in [
            (EventKind::Rst, rst(), record::RST, true),
            (EventKind::FollowUp, rst(), record::FOLLOW_UP_RST, true),
            (EventKind::FollowUp, data, record::FOLLOW_UP, false),
        ] {
            let sent = record::of_flow_event(kind, &pkt);
            assert_eq!(sent, record_kind, "{kind:?} {pkt:?}");
            assert_eq!(record::carries_flow(sent), carries_flow, "{sent}");
            assert_eq!(record::event_kind(sent), Some(kind), "{sent}");
            let header = seen.header(sent, 0, 1234);
            assert_eq!(header, self::header(sent, 0));
            let event =
                RstEvent::of_record(&header, pkt, carries_flow.then_some(flow), frame()).unwrap();
            assert_eq!(EventKind::from_u8(event.kind), Some(kind));
            assert_eq!(event.flow.packets(), if carries_flow { 3 } else { 0 });
            assert_eq!(event.frame, frame());
        }
        assert_eq!(
            record::event_kind(record::RST_NO_STATE),
            Some(EventKind::Rst)
        );
        assert!(!record::carries_flow(record::RST_NO_STATE));
        assert_eq!(record::event_kind(99), None);
        assert!(RstEvent::of_record(&header(99, 0), rst(), None, frame()).is_none());
    }

    #[test]
    fn a_storm_count_starts_with_its_first_reset_as_its_sample() {
        let mut count = StormCount::default();
        count.count_reset(100, 7, &rst());
        let later = PacketMeta { seq: 9, ..rst() };
        count.count_reset(250, 8, &later);
        assert_eq!(
            count,
            StormCount {
                resets: 2,
                first_ns: 100,
                last_ns: 250,
                ifindex: 7,
                _pad: 0,
                sample: rst(),
            }
        );
    }

    #[test]
    fn records_have_no_implicit_padding() {
        use core::mem::offset_of;
        let pkt_end = offset_of!(PacketRecord, _pad) + 4;
        assert_eq!(offset_of!(PacketRecord, frame), pkt_end);
        assert_eq!(size_of::<PacketRecord>(), pkt_end + size_of::<Frame>());
        let flow_end = offset_of!(FlowRecord, flow) + size_of::<FlowState>();
        assert_eq!(offset_of!(FlowRecord, frame), flow_end);
        assert_eq!(size_of::<FlowRecord>(), flow_end + size_of::<Frame>());
        assert_eq!(size_of::<Frame>(), 8 + FRAME_BYTES);
        // The flow's state is copied into records whole: its fields, in falling order of
        // alignment, end where it does.
        use crate::flow::DirState;
        assert_eq!(offset_of!(DirState, followups) + 1, size_of::<DirState>());
        assert_eq!(size_of::<DirState>(), 64);
        assert_eq!(offset_of!(FlowState, start_ns), 2 * size_of::<DirState>());
        assert_eq!(offset_of!(FlowState, roles) + 1, size_of::<FlowState>());
        assert_eq!(size_of::<FlowState>(), 160);
        assert_eq!(size_of::<FlowState>() % 8, 0, "copied in 64-bit words");
    }

    #[test]
    fn short_and_unknown_records_are_refused() {
        let record = PacketRecord {
            header: header(record::RST, size_of::<PacketRecord>()),
            pkt: rst(),
            _pad: 0,
            frame: Frame::default(),
        };
        assert_eq!(
            decode(&bytes(&record)).unwrap_err(),
            DecodeError::Short,
            "a RST record needs the flow's state"
        );
        assert_eq!(decode(&[1, 0]).unwrap_err(), DecodeError::Short);
        let unknown = PacketRecord {
            header: header(99, size_of::<PacketRecord>()),
            pkt: rst(),
            _pad: 0,
            frame: Frame::default(),
        };
        assert_eq!(
            decode(&bytes(&unknown)).unwrap_err(),
            DecodeError::UnknownKind(99)
        );
    }
}

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::RstEvent {}
    unsafe impl aya::Pod for super::StormKey {}
    unsafe impl aya::Pod for super::StormCount {}
    unsafe impl aya::Pod for super::StormSlot {}
}
