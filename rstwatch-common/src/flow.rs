//! The flow table's key and value, and the per-packet update that both the kernel programs
//! and (later) a userspace capture replay run.

use crate::{
    config::Settings,
    event::EventKind,
    packet::{tcp_flags, PacketMeta, NO_WINDOW_SCALE},
};

/// Direction index of a packet within its flow: sent from `FlowKey::addr[0]`/`port[0]`.
pub const DIR_FROM_LOW: u8 = 0;
/// Direction index of a packet sent from `FlowKey::addr[1]`/`port[1]`.
pub const DIR_FROM_HIGH: u8 = 1;

/// Canonical flow key: the two endpoints in ascending (address, port) order plus VLAN, so both
/// directions of a conversation find the same entry with one lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub addr: [[u8; 16]; 2],
    pub port: [u16; 2],
    pub vlan: u16,
    pub family: u8,
    pub _pad: u8,
}

impl FlowKey {
    /// The key of the packet's flow and the packet's direction index within it.
    pub fn of(pkt: &PacketMeta) -> (Self, u8) {
        let mut key = FlowKey::default();
        let dir = key.fill_from(pkt);
        (key, dir)
    }

    /// Makes this the key of the packet's flow, in place, and returns the packet's direction.
    #[inline(always)]
    pub fn fill_from(&mut self, pkt: &PacketMeta) -> u8 {
        let src_first = endpoint_le(&pkt.src_addr, pkt.src_port, &pkt.dst_addr, pkt.dst_port);
        let (low, high) = if src_first { (0, 1) } else { (1, 0) };
        self.addr[low] = pkt.src_addr;
        self.port[low] = pkt.src_port;
        self.addr[high] = pkt.dst_addr;
        self.port[high] = pkt.dst_port;
        self.vlan = pkt.vlan;
        self.family = pkt.family;
        self._pad = 0;
        if src_first {
            DIR_FROM_LOW
        } else {
            DIR_FROM_HIGH
        }
    }
}

/// (a_addr, a_port) <= (b_addr, b_port), comparing addresses as two big-endian halves: a plain
/// array comparison would lower to `memcmp`, which BPF programs cannot call.
#[inline(always)]
fn endpoint_le(a: &[u8; 16], a_port: u16, b: &[u8; 16], b_port: u16) -> bool {
    let (a_hi, a_lo) = halves(a);
    let (b_hi, b_lo) = halves(b);
    (a_hi, a_lo, a_port) <= (b_hi, b_lo, b_port)
}

#[inline(always)]
fn halves(a: &[u8; 16]) -> (u64, u64) {
    let mut hi = 0u64;
    let mut lo = 0u64;
    let mut i = 0;
    while i < 8 {
        hi = (hi << 8) | a[i] as u64;
        lo = (lo << 8) | a[i + 8] as u64;
        i += 1;
    }
    (hi, lo)
}

/// Bits of `DirState::seen`. Bits 0..=8 are Zeek conn.log history events, recorded in
/// `FlowState::history` the first time each is seen per direction.
pub mod seen {
    /// `s`: SYN without ACK.
    pub const SYN: u16 = 1 << 0;
    /// `h`: SYN with ACK.
    pub const SYN_ACK: u16 = 1 << 1;
    /// `a`: pure ACK.
    pub const ACK: u16 = 1 << 2;
    /// `d`: payload.
    pub const DATA: u16 = 1 << 3;
    /// `f`: FIN.
    pub const FIN: u16 = 1 << 4;
    /// `r`: RST.
    pub const RST: u16 = 1 << 5;
    /// `t`: retransmitted payload.
    pub const RETRANSMIT: u16 = 1 << 6;
    /// `w`: zero window advertised.
    pub const ZERO_WINDOW: u16 = 1 << 7;
    /// `q`: SYN together with FIN or RST.
    pub const MULTI_FLAG: u16 = 1 << 8;
    /// Zeek history letters of the bits above, by bit index.
    pub const HISTORY_LETTERS: &[u8; 9] = b"shadfrtwq";
    /// Bits that are history events.
    pub const HISTORY_MASK: u16 = (1 << 9) - 1;

    /// A TLS alert record (content type 21) was sent.
    pub const TLS_ALERT: u16 = 1 << 12;
    /// `next_seq` holds a value.
    pub const SEQ_KNOWN: u16 = 1 << 13;
    /// `max_ack` holds a value.
    pub const ACK_KNOWN: u16 = 1 << 14;
}

/// Recent genuine IP IDs kept per direction.
pub const RECENT_IP_IDS: usize = 4;
/// Zeek history events kept per flow, in order (9 letters per direction at most).
pub const HISTORY_CAPACITY: usize = 18;
/// A history byte: bit index of `seen` in the low bits, this flag when sent by `DIR_FROM_HIGH`.
pub const HISTORY_FROM_HIGH: u8 = 0x80;

/// `FlowState::origin`: how the originator was decided.
pub mod origin {
    /// It sent a SYN without ACK.
    pub const SYN: u8 = 1;
    /// The other side sent a SYN-ACK first seen (the SYN was missed).
    pub const SYN_ACK: u8 = 2;
    /// No handshake seen: the sender of the first packet seen, a guess.
    pub const INFERRED: u8 = 3;
}

/// What one direction of a flow has shown.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirState {
    pub first_ns: u64,
    pub last_ns: u64,
    /// Silence on the flow (both directions) right before this direction's last packet.
    pub gap_before_last_ns: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// Time of the last TLS alert record from this direction, 0 if none.
    pub tls_alert_ns: u64,
    pub pkts: u32,
    /// Highest sequence number sent plus the segment's length: where the next segment starts.
    pub next_seq: u32,
    /// Highest acknowledgement number sent.
    pub max_ack: u32,
    /// Sequence number of this direction's latest RST.
    pub rst_seq: u32,
    /// Last advertised receive window, scaled when the handshake negotiated scaling.
    pub window: u32,
    /// Ring of this direction's latest IP IDs (IPv4, non-RST packets).
    pub ip_ids: [u16; RECENT_IP_IDS],
    /// `seen::*` bits.
    pub seen: u16,
    /// TTL / hop limit of this direction's genuine packets: the latest non-RST packet's.
    pub ttl: u8,
    /// Where the next IP ID goes in `ip_ids`.
    pub ip_id_next: u8,
    /// Valid entries in `ip_ids` (saturates at `RECENT_IP_IDS`).
    pub ip_ids_len: u8,
    /// Window-scale shift this direction offered in its SYN, `NO_WINDOW_SCALE` if none.
    pub window_scale: u8,
    pub rst_count: u8,
    pub _pad: u8,
}

impl DirState {
    pub const fn has(&self, bits: u16) -> bool {
        self.seen & bits != 0
    }

    /// The IP IDs in `ip_ids`, oldest first, through `f`.
    pub fn recent_ip_ids(&self, mut f: impl FnMut(u16)) {
        let len = self.ip_ids_len as usize;
        let mut i = 0;
        while i < len && i < RECENT_IP_IDS {
            let at = (self.ip_id_next as usize + RECENT_IP_IDS - len + i) % RECENT_IP_IDS;
            f(self.ip_ids[at]);
            i += 1;
        }
    }
}

/// The flow table's value: both directions plus what belongs to the conversation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowState {
    /// Indexed by direction: `DIR_FROM_LOW`, `DIR_FROM_HIGH`.
    pub dir: [DirState; 2],
    /// Time of the originator's first SYN, 0 if none seen.
    pub syn_ns: u64,
    /// Handshake round trip as seen here: originator's SYN to its handshake-completing ACK.
    pub rtt_ns: u64,
    /// Time of the flow's first RST, 0 if none; the follow-up grace period runs from here.
    pub rst_ns: u64,
    /// Zeek history events in the order they were first seen.
    pub history: [u8; HISTORY_CAPACITY],
    pub history_len: u8,
    /// Direction index of the originator.
    pub originator: u8,
    /// `origin::*`: how `originator` was decided.
    pub origin: u8,
    /// Direction index of the first RST's sender.
    pub rst_dir: u8,
    /// Follow-up events sent since the first RST.
    pub followups: u8,
    pub _pad: [u8; 3],
}

impl FlowState {
    /// Empty state for a flow whose first packet seen is `pkt`, sent in direction `dir`.
    pub fn new(pkt: &PacketMeta, dir: u8) -> Self {
        let mut flow = FlowState::default();
        flow.reset(pkt, dir);
        flow
    }

    /// Makes this the empty state of a flow whose first packet is `pkt`, in place: the state
    /// is too large for a temporary on the BPF stack.
    #[inline(always)]
    pub fn reset(&mut self, pkt: &PacketMeta, dir: u8) {
        // SAFETY: FlowState is plain old data, all zeroes is a valid value.
        unsafe { core::ptr::write_bytes(self as *mut FlowState, 0, 1) };
        let syn = pkt.has(tcp_flags::SYN);
        let ack = pkt.has(tcp_flags::ACK);
        (self.originator, self.origin) = if syn && !ack {
            (dir, origin::SYN)
        } else if syn && ack {
            (dir ^ 1, origin::SYN_ACK)
        } else {
            (dir, origin::INFERRED)
        };
        self.dir[0].window_scale = NO_WINDOW_SCALE;
        self.dir[1].window_scale = NO_WINDOW_SCALE;
    }

    /// Total packets seen on the flow, both directions.
    pub const fn packets(&self) -> u32 {
        self.dir[0].pkts + self.dir[1].pkts
    }

    /// Time of the last packet in either direction, 0 if none.
    pub const fn last_ns(&self) -> u64 {
        if self.dir[0].last_ns > self.dir[1].last_ns {
            self.dir[0].last_ns
        } else {
            self.dir[1].last_ns
        }
    }

    /// Processes one packet: starts the flow over where a new connection reuses it, reports
    /// through `emit` what userspace must hear about (with the state as it was before this
    /// packet), then records the packet.
    #[inline(always)]
    pub fn step(
        &mut self,
        pkt: &PacketMeta,
        dir: u8,
        now: u64,
        settings: &Settings,
        emit: impl FnOnce(EventKind, &FlowState),
    ) -> Step {
        let dir = dir & 1;
        let mut outcome = Step::Tracked;
        if self.starts_over(pkt, dir, now, settings) {
            self.reset(pkt, dir);
            outcome = Step::Recycled;
        }
        if self.rst_ns == 0 {
            if pkt.is_rst() {
                emit(EventKind::Rst, self);
            }
        } else if pkt.is_rst() || (dir == self.rst_dir && pkt.payload_len > 0) {
            if (self.followups as u32) < settings.followup_limit {
                emit(EventKind::FollowUp, self);
                self.followups += 1;
            } else {
                outcome = Step::FollowUpSuppressed;
            }
        }
        self.record(pkt, dir, now);
        outcome
    }

    /// A flow starts over once its post-RST grace period is over, or when a SYN opens a new
    /// connection on a 4-tuple that was closed or never seen opening.
    #[inline(always)]
    fn starts_over(&self, pkt: &PacketMeta, dir: u8, now: u64, settings: &Settings) -> bool {
        if self.rst_ns != 0 && now.saturating_sub(self.rst_ns) > settings.grace_ns {
            return true;
        }
        if !pkt.has(tcp_flags::SYN) || pkt.has(tcp_flags::ACK) || pkt.is_rst() {
            return false;
        }
        let d = &self.dir[dir as usize];
        let retransmitted_syn = d.has(seen::SYN) && pkt.seq.wrapping_add(1) == d.next_seq;
        let closed =
            self.dir[0].has(seen::FIN | seen::RST) || self.dir[1].has(seen::FIN | seen::RST);
        !retransmitted_syn && (closed || self.origin == origin::INFERRED || self.rst_ns != 0)
    }

    #[inline(always)]
    fn record(&mut self, pkt: &PacketMeta, dir: u8, now: u64) {
        let flow_last = self.last_ns();
        let syn = pkt.has(tcp_flags::SYN);
        let ack = pkt.has(tcp_flags::ACK);
        let fin = pkt.has(tcp_flags::FIN);
        let rst = pkt.is_rst();

        let mut events = 0u16;
        if syn && !ack {
            events |= seen::SYN;
        }
        if syn && ack {
            events |= seen::SYN_ACK;
        }
        if syn && (fin || rst) {
            events |= seen::MULTI_FLAG;
        }
        if fin {
            events |= seen::FIN;
        }
        if rst {
            events |= seen::RST;
        }
        if ack && !syn && !fin && !rst && pkt.payload_len == 0 {
            events |= seen::ACK;
        }
        if pkt.window == 0 && !syn && !rst {
            events |= seen::ZERO_WINDOW;
        }
        let end = pkt.seq.wrapping_add(pkt.seq_len());
        let d = &self.dir[dir as usize];
        if pkt.payload_len > 0 {
            events |= seen::DATA;
            if d.has(seen::SEQ_KNOWN) && !seq_after(end, d.next_seq) {
                events |= seen::RETRANSMIT;
            }
        }
        self.note_history(dir, events);

        if syn && !ack && self.syn_ns == 0 && dir == self.originator {
            self.syn_ns = now;
        }
        if self.rtt_ns == 0
            && self.syn_ns != 0
            && dir == self.originator
            && ack
            && !syn
            && self.dir[(dir ^ 1) as usize].has(seen::SYN_ACK)
        {
            self.rtt_ns = now.saturating_sub(self.syn_ns);
        }
        if rst && self.rst_ns == 0 {
            self.rst_ns = now;
            self.rst_dir = dir;
            self.followups = 0;
        }
        let peer_scale = self.dir[(dir ^ 1) as usize].window_scale;

        let d = &mut self.dir[dir as usize];
        d.seen |= events;
        if d.first_ns == 0 {
            d.first_ns = now;
        }
        d.gap_before_last_ns = if flow_last == 0 {
            0
        } else {
            now.saturating_sub(flow_last)
        };
        d.last_ns = now;
        d.pkts = d.pkts.wrapping_add(1);
        d.bytes += pkt.payload_len as u64;
        if pkt.tls_alert != 0 {
            d.seen |= seen::TLS_ALERT;
            d.tls_alert_ns = now;
        }
        if rst {
            d.rst_seq = pkt.seq;
            d.rst_count = d.rst_count.saturating_add(1);
            // A RST's TTL, IP ID, window and sequence are exactly what is under suspicion;
            // they must not move the baselines of genuine packets.
            return;
        }
        if syn {
            d.window_scale = pkt.window_scale;
        }
        d.ttl = pkt.ttl;
        if pkt.family == crate::packet::FAMILY_IPV4 {
            d.ip_ids[(d.ip_id_next & 3) as usize] = pkt.ip_id;
            d.ip_id_next = (d.ip_id_next + 1) & 3;
            if (d.ip_ids_len as usize) < RECENT_IP_IDS {
                d.ip_ids_len += 1;
            }
        }
        if !d.has(seen::SEQ_KNOWN) || seq_after(end, d.next_seq) {
            d.next_seq = end;
            d.seen |= seen::SEQ_KNOWN;
        }
        if ack && (!d.has(seen::ACK_KNOWN) || seq_after(pkt.ack, d.max_ack)) {
            d.max_ack = pkt.ack;
            d.seen |= seen::ACK_KNOWN;
        }
        // RFC 7323 2.2: the window in a SYN is never scaled, and scaling applies only when
        // both sides offered the option.
        let scale = if syn || d.window_scale == NO_WINDOW_SCALE || peer_scale == NO_WINDOW_SCALE {
            0
        } else {
            d.window_scale.min(14)
        };
        d.window = (pkt.window as u32) << scale;
    }

    #[inline(always)]
    fn note_history(&mut self, dir: u8, events: u16) {
        let new = events & !self.dir[dir as usize].seen & seen::HISTORY_MASK;
        let mut bit = 0u8;
        while bit < 9 {
            if new & (1 << bit) != 0 && (self.history_len as usize) < HISTORY_CAPACITY {
                let from_high = if dir == DIR_FROM_HIGH {
                    HISTORY_FROM_HIGH
                } else {
                    0
                };
                self.history[self.history_len as usize] = bit | from_high;
                self.history_len += 1;
            }
            bit += 1;
        }
    }
}

/// What `FlowState::step` did besides recording the packet, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Tracked,
    /// The flow started over (grace period ended, or a new connection on the same 4-tuple).
    Recycled,
    /// A follow-up after a RST was not reported: `followup_limit` was reached.
    FollowUpSuppressed,
}

/// `a` comes after `b` in sequence space (RFC 9293 3.4, modulo 2^32).
pub const fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowState {}
}
