//! The flow table's key and value, and the per-packet update that both the kernel programs
//! and the userspace capture replay (`rstwatch explain`) run.

use crate::{
    counter::Counter,
    event::EventKind,
    packet::{tcp_flags, PacketMeta, NO_WINDOW_SCALE},
    settings::Settings,
    span::Span,
};

/// Direction index of a packet within its flow: sent from `FlowKey::addr[0]`/`port[0]`.
pub const DIR_FROM_LOW: u8 = 0;
/// Direction index of a packet sent from `FlowKey::addr[1]`/`port[1]`.
pub const DIR_FROM_HIGH: u8 = 1;

/// Canonical flow key: the two endpoints in ascending (address, port) order plus VLAN, so both
/// directions of a conversation find the same entry with one lookup. 8-aligned so that keys
/// compare as five 64-bit words.
#[repr(C, align(8))]
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
    /// The key keeps the packet's VLAN (`apply_vlan_key` drops it as the tables do).
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

    /// Makes this the key the flow tables use under `settings`: without the VLAN unless
    /// `Settings::vlan_key` asks for it.
    #[inline(always)]
    pub fn apply_vlan_key(&mut self, settings: &Settings) {
        if settings.vlan_key == 0 {
            self.vlan = 0;
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

/// An address as two big-endian numbers, from four 32-bit loads (BPF has no unaligned load:
/// a byte-wise read costs sixteen loads). `a` is 4-aligned: a `PacketMeta` address.
#[inline(always)]
fn halves(a: &[u8; 16]) -> (u64, u64) {
    const _: () = assert!(
        core::mem::align_of::<PacketMeta>() >= 4
            && core::mem::offset_of!(PacketMeta, src_addr) % 4 == 0
            && core::mem::offset_of!(PacketMeta, dst_addr) % 4 == 0
    );
    // SAFETY: word `i < 4` of the 16 bytes, 4-aligned as the caller's `PacketMeta` is.
    let word = |i: usize| unsafe {
        u32::from_be(core::ptr::read(a.as_ptr().add(4 * i).cast::<u32>())) as u64
    };
    (word(0) << 32 | word(1), word(2) << 32 | word(3))
}

/// Bits of `DirState::seen`: what a direction has ever sent. Bit `n` below 9 is also Zeek's
/// history letter `seen::HISTORY_LETTERS[n]`; the letters themselves are recorded in
/// `FlowState::history` by Zeek's own rules (`FlowState::note_history`).
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
    /// `i`: FIN together with RST (a history letter only, never a `seen` bit).
    pub const FIN_RST: u16 = 1 << 9;
    /// Zeek history letters, by bit index of the constants above.
    pub const HISTORY_LETTERS: &[u8; 10] = b"shadfrtwqi";
    /// Bits that are history events.
    pub const HISTORY_MASK: u16 = (1 << 9) - 1;

    /// The direction sent a packet: `DirState::first` holds a value.
    pub const SENT: u16 = 1 << 11;
    /// A TLS alert record (content type 21) was sent: `DirState::tls_alert` holds a value.
    pub const TLS_ALERT: u16 = 1 << 12;
    /// `next_seq` holds a value.
    pub const SEQ_KNOWN: u16 = 1 << 13;
    /// `max_ack` holds a value.
    pub const ACK_KNOWN: u16 = 1 << 14;
    /// `DirState::raw_window` was scaled by `DirState::window_scale` when it was recorded
    /// (both sides offered scaling, and it was no SYN): read it with `DirState::window`.
    pub const WINDOW_SCALED: u16 = 1 << 15;
}

/// Recent genuine IP IDs kept per direction.
pub const RECENT_IP_IDS: usize = 4;
/// Zeek history letters kept per flow, in order. Zeek repeats some letters (a FIN or RST with a
/// new sequence number, retransmissions at 1, 10, 100, ...), so a history has no fixed length;
/// letters beyond this are not recorded, only counted (`FlowState::history_cut`). Four bits
/// each in `FlowState::history_letters`, one in `FlowState::history_from_high`.
pub const HISTORY_CAPACITY: usize = 16;
/// A history byte (`FlowState::history_events`): bit index of `seen` in the low bits, this
/// flag when sent by `DIR_FROM_HIGH`.
pub const HISTORY_FROM_HIGH: u8 = 0x80;
/// Bits of a history letter in `FlowState::history_letters`: a `seen` bit index, below 16.
const HISTORY_LETTER_BITS: usize = 4;
const _: () = assert!(HISTORY_CAPACITY * HISTORY_LETTER_BITS == 64);
const _: () = assert!(HISTORY_CAPACITY <= u16::BITS as usize);

/// `FlowState::origin`: how the originator was decided (0 before the first packet).
pub mod origin {
    /// It sent a SYN without ACK.
    pub const SYN: u8 = 1;
    /// The other side sent a SYN-ACK first seen (the SYN was missed).
    pub const SYN_ACK: u8 = 2;
    /// No handshake seen: the sender of the first packet seen, a guess.
    pub const INFERRED: u8 = 3;
}

/// Bits of `FlowState::roles`, read through `FlowState::originator`, `rst_dir`, `flipped`
/// and `origin`.
mod roles {
    /// The originator is `DIR_FROM_HIGH`.
    pub const ORIGINATOR_HIGH: u8 = 1 << 0;
    /// The flow's first RST came from `DIR_FROM_HIGH`.
    pub const RST_FROM_HIGH: u8 = 1 << 1;
    /// Zeek's heuristic flipped the roles.
    pub const FLIPPED: u8 = 1 << 2;
    /// `origin::*` in the two bits from here.
    pub const ORIGIN_SHIFT: u8 = 3;
}

/// The 16-bit fingerprint of a sequence number that Zeek's `s h f r` repeat rule compares:
/// two different sequence numbers share one once in 65,536 pairs, and then a repeated letter
/// is not written.
#[inline(always)]
pub const fn seq_fingerprint(seq: u32) -> u16 {
    (seq ^ (seq >> 16)) as u16
}

/// What one direction of a flow has shown. Fields in falling order of alignment: no padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirState {
    /// Time of this direction's last packet, in full: `fast_rst` and the idle time before a
    /// RST measure from it.
    pub last_ns: u64,
    /// Payload bytes, saturating at `u32::MAX` (4 GiB - 1).
    pub bytes: u32,
    /// This direction's first packet (with `seen::SENT`) and last TLS alert record (with
    /// `seen::TLS_ALERT`), since `FlowState::start_ns`: read them with `FlowState::first_ns`
    /// and `FlowState::tls_alert_ns`.
    pub first: Span,
    pub tls_alert: Span,
    /// Silence on the flow (both directions) right before this direction's last packet.
    pub gap_before_last: Span,
    pub pkts: u32,
    /// Highest sequence number sent plus the segment's length: where the next segment starts.
    pub next_seq: u32,
    /// Highest acknowledgement number sent.
    pub max_ack: u32,
    /// Last advertised receive window as sent, unscaled: read it with `DirState::window`.
    pub raw_window: u16,
    /// `seq_fingerprint` of this direction's last SYN or SYN-ACK, last FIN (of its end:
    /// sequence plus payload) and last RST, as Zeek compares them to decide whether `s h f r`
    /// repeat. Only a packet with one of the three flags counts: a RST with SYN or FIN is `q`
    /// or `i`.
    pub history_syn_seq: u16,
    pub history_fin_seq: u16,
    pub history_rst_seq: u16,
    /// Retransmitted payload segments and zero-window advertisements: Zeek writes `t` and `w`
    /// again at the 10th, 100th, ... occurrence. Saturating at 65,535: repeats up to the
    /// 10,000th are written as Zeek writes them, none after.
    pub retransmits: u16,
    pub zero_windows: u16,
    /// Ring of this direction's latest IP IDs (IPv4, non-RST packets).
    pub ip_ids: [u16; RECENT_IP_IDS],
    /// `seen::*` bits.
    pub seen: u16,
    /// History letters this direction has written once (bit per `seen::HISTORY_LETTERS`
    /// index); Zeek writes `a d i q` once and repeats the others by their own rules.
    pub history_once: u16,
    /// TTL / hop limit of this direction's genuine packets: the latest non-RST packet's.
    pub ttl: u8,
    /// Window-scale shift this direction offered in its SYN, `NO_WINDOW_SCALE` if none.
    pub window_scale: u8,
    /// IP IDs put in `ip_ids`, counted 0, 1, ... 7 and then from 4 again: the low two bits
    /// are where the next one goes, and from 4 on the ring is full.
    pub ip_ids_pushed: u8,
    /// Payload packets this direction sent since the flow's first RST and reported as data
    /// follow-ups: counted for the first RST's sender only (`FlowState::followups`), never
    /// beyond `Settings::followup_limit` (RSTs are always sent, never counted).
    pub followups: u8,
}

impl DirState {
    pub const fn has(&self, bits: u16) -> bool {
        self.seen & bits != 0
    }

    /// Silence on the flow right before this direction's last packet, in ns (kept in the
    /// finest unit that holds it: exact in whole ms below 12.4 days).
    pub const fn gap_before_last_ns(&self) -> u64 {
        self.gap_before_last.ns()
    }

    /// Last advertised receive window, scaled as the handshake negotiated (RFC 7323 2.2: both
    /// sides offered scaling; never a SYN's window; shifts above 14 taken as 14).
    pub const fn window(&self) -> u32 {
        let shift = if self.has(seen::WINDOW_SCALED) {
            if self.window_scale < 14 {
                self.window_scale
            } else {
                14
            }
        } else {
            0
        };
        (self.raw_window as u32) << shift
    }

    /// Valid entries in `ip_ids`.
    pub const fn ip_ids_len(&self) -> usize {
        if self.ip_ids_pushed as usize >= RECENT_IP_IDS {
            RECENT_IP_IDS
        } else {
            self.ip_ids_pushed as usize
        }
    }

    /// The IP IDs in `ip_ids`, oldest first, through `f`.
    pub fn recent_ip_ids(&self, mut f: impl FnMut(u16)) {
        let len = self.ip_ids_len();
        let next = self.ip_ids_pushed as usize % RECENT_IP_IDS;
        let mut i = 0;
        while i < len {
            f(self.ip_ids[(next + RECENT_IP_IDS - len + i) % RECENT_IP_IDS]);
            i += 1;
        }
    }

    /// Puts `id` in the ring, over the oldest one when it is full.
    #[inline(always)]
    pub fn push_ip_id(&mut self, id: u16) {
        let pushed = self.ip_ids_pushed;
        self.ip_ids[(pushed & 3) as usize] = id;
        self.ip_ids_pushed = if pushed >= 2 * RECENT_IP_IDS as u8 - 1 {
            RECENT_IP_IDS as u8
        } else {
            pushed + 1
        };
    }
}

/// The flow table's value: both directions plus what belongs to the conversation.
///
/// Times are kept in full only where the evidence needs every ns at any age of the flow (each
/// direction's last packet); the others are `Span`s since the flow's first packet, exact in
/// the first 1.07 s, where a handshake's times are, and then in µs, ms or s as the flow ages
/// (a time before the start, from a capture out of order, reads as the start). Read them
/// through the methods, which give absolute ns as the kernel's clock does, 0 for none.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowState {
    /// Indexed by direction: `DIR_FROM_LOW`, `DIR_FROM_HIGH`.
    pub dir: [DirState; 2],
    /// Time of the flow's first packet, the base of the `Span`s since the start.
    pub start_ns: u64,
    /// Zeek history events in the order they were first seen (the first `HISTORY_CAPACITY`),
    /// read through `history_events`: the `seen` bit index of event `i` in bits `4 * i` up
    /// here, and bit `i` of `history_from_high` set when `DIR_FROM_HIGH` sent it.
    pub history_letters: u64,
    /// Since the start: the originator's first SYN, when the originator has `seen::SYN`.
    pub syn: Span,
    /// Handshake round trip as seen here: originator's SYN to its handshake-completing ACK;
    /// `Span::ZERO` if not seen.
    pub rtt: Span,
    /// Since the start: the flow's first RST, when either direction has `seen::RST`; the
    /// follow-up grace period runs from here.
    pub rst: Span,
    pub history_from_high: u16,
    /// History events the flow had, counted on past `HISTORY_CAPACITY` (saturating at 255):
    /// above it, the history was cut.
    pub history_len: u8,
    /// The originator, how it was decided, the first RST's sender and Zeek's flip, in bits:
    /// read through `originator`, `origin`, `rst_dir` and `flipped`.
    pub roles: u8,
}

impl FlowState {
    /// Empty state for a flow whose first packet seen is `pkt`, sent in direction `dir`;
    /// `likely_server` says whether a port is a likely server port (`ports::flips`).
    pub fn new(pkt: &PacketMeta, dir: u8, likely_server: &impl Fn(u16) -> bool) -> Self {
        let mut flow = FlowState::default();
        flow.reset(pkt, dir, likely_server);
        flow
    }

    /// Makes this the empty state of a flow whose first packet is `pkt`, in place: the state
    /// is too large for a temporary on the BPF stack.
    #[inline(always)]
    pub fn reset(&mut self, pkt: &PacketMeta, dir: u8, likely_server: &impl Fn(u16) -> bool) {
        // SAFETY: FlowState is plain old data, all zeroes is a valid value.
        unsafe { crate::zero::zero_in_place(self as *mut FlowState) };
        let syn = pkt.has(tcp_flags::SYN);
        let ack = pkt.has(tcp_flags::ACK);
        let flipped = crate::ports::flips(pkt, likely_server);
        // A SYN-ACK's receiver opened the connection whether or not Zeek's heuristic flips
        // it: the flip only adds Zeek's `^`.
        let (originator, how) = if syn && !ack {
            (dir, origin::SYN)
        } else if syn && ack {
            (dir ^ 1, origin::SYN_ACK)
        } else if flipped {
            (dir ^ 1, origin::INFERRED)
        } else {
            (dir, origin::INFERRED)
        };
        self.roles = (originator & 1)
            | if flipped { roles::FLIPPED } else { 0 }
            | (how << roles::ORIGIN_SHIFT);
        self.dir[0].window_scale = NO_WINDOW_SCALE;
        self.dir[1].window_scale = NO_WINDOW_SCALE;
    }

    /// Direction index of the originator.
    #[inline(always)]
    pub const fn originator(&self) -> u8 {
        self.roles & roles::ORIGINATOR_HIGH
    }

    /// `origin::*`: how `originator` was decided.
    #[inline(always)]
    pub const fn origin(&self) -> u8 {
        (self.roles >> roles::ORIGIN_SHIFT) & 3
    }

    /// Direction index of the first RST's sender (0 before the first RST).
    #[inline(always)]
    pub const fn rst_dir(&self) -> u8 {
        (self.roles & roles::RST_FROM_HIGH) >> 1
    }

    /// Zeek's heuristic flipped the roles (`ports::flips`): the first packet seen came from a
    /// likely server port without the originator's SYN, so its receiver is the originator.
    /// Zeek writes `^` first in the history.
    #[inline(always)]
    pub const fn flipped(&self) -> bool {
        self.roles & roles::FLIPPED != 0
    }

    /// Data follow-up events sent since the first RST (RSTs are always sent, never counted
    /// against `Settings::followup_limit`).
    #[inline(always)]
    pub const fn followups(&self) -> u8 {
        self.dir[self.rst_dir() as usize].followups
    }

    /// Time of direction `dir`'s first packet, 0 if it sent none.
    pub const fn first_ns(&self, dir: usize) -> u64 {
        let d = &self.dir[dir & 1];
        self.time_or_zero(d.has(seen::SENT), d.first)
    }

    /// Time of direction `dir`'s last TLS alert record, 0 if none.
    pub const fn tls_alert_ns(&self, dir: usize) -> u64 {
        let d = &self.dir[dir & 1];
        self.time_or_zero(d.has(seen::TLS_ALERT), d.tls_alert)
    }

    /// Time of the originator's first SYN, 0 if none seen.
    pub const fn syn_ns(&self) -> u64 {
        self.time_or_zero(self.has_syn(), self.syn)
    }

    /// Handshake round trip, 0 if not seen.
    pub const fn rtt_ns(&self) -> u64 {
        self.rtt.ns()
    }

    /// Time of the flow's first RST, 0 if none.
    pub const fn rst_ns(&self) -> u64 {
        self.time_or_zero(self.has_rst(), self.rst)
    }

    /// `ns` as this flow would keep it as a time since its start: what a time recorded then
    /// reads as now, to compare one with the other. A time before the start is returned as it
    /// is: it is no time of this flow.
    pub const fn as_kept(&self, ns: u64) -> u64 {
        if ns < self.start_ns {
            return ns;
        }
        self.start_ns
            .saturating_add(Span::from_ns(ns - self.start_ns).ns())
    }

    /// A RST was seen on the flow (and `rst` holds a value).
    #[inline(always)]
    pub const fn has_rst(&self) -> bool {
        (self.dir[0].seen | self.dir[1].seen) & seen::RST != 0
    }

    /// The originator sent a SYN (and `syn` holds a value).
    #[inline(always)]
    const fn has_syn(&self) -> bool {
        self.dir[self.originator() as usize].has(seen::SYN)
    }

    const fn time_or_zero(&self, valid: bool, since_start: Span) -> u64 {
        if valid {
            self.start_ns.saturating_add(since_start.ns())
        } else {
            0
        }
    }

    #[inline(always)]
    fn since_start(&self, now: u64) -> Span {
        Span::from_ns(now.saturating_sub(self.start_ns))
    }

    /// The Zeek history events kept, in order, each a history byte: the `seen` bit index, with
    /// `HISTORY_FROM_HIGH` when `DIR_FROM_HIGH` sent it.
    pub fn history_events(&self) -> impl Iterator<Item = u8> + '_ {
        (0..(self.history_len as usize).min(HISTORY_CAPACITY)).map(|i| {
            let letter = (self.history_letters >> (HISTORY_LETTER_BITS * i)) & 0xf;
            let from_high = if self.history_from_high & (1 << i) != 0 {
                HISTORY_FROM_HIGH
            } else {
                0
            };
            letter as u8 | from_high
        })
    }

    /// The flow had more history events than `HISTORY_CAPACITY`: those beyond were not kept.
    pub const fn history_cut(&self) -> bool {
        self.history_len as usize > HISTORY_CAPACITY
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
        likely_server: &impl Fn(u16) -> bool,
        emit: impl FnOnce(EventKind, &FlowState),
    ) -> Step {
        let dir = dir & 1;
        let mut outcome = Step::Tracked;
        if self.starts_over(pkt, dir, now, settings) {
            self.reset(pkt, dir, likely_server);
            outcome = Step::Recycled;
        }
        let mut data_followup = false;
        let event = if pkt.is_rst() {
            // Every RST on the wire reaches userspace: the first of the flow as `Rst`, the
            // later ones as `FollowUp`, which userspace folds into the first report or reports
            // on their own.
            Some(if !self.has_rst() {
                EventKind::Rst
            } else {
                EventKind::FollowUp
            })
        } else if self.has_rst() && dir == self.rst_dir() && pkt.payload_len > 0 {
            // `followups` is a u8: a limit above 255 means 255, not a counter that wraps.
            data_followup = (self.followups() as u32) < settings.followup_limit.min(u8::MAX as u32);
            if !data_followup {
                outcome = Step::FollowUpSuppressed;
            }
            data_followup.then_some(EventKind::FollowUp)
        } else {
            None
        };
        // One call site: the kernel's `emit` is then inlined, not a BPF function of its own,
        // whose stack frame would push the call chain past the 512-byte limit.
        if let Some(kind) = event {
            emit(kind, self);
        }
        // A data follow-up comes from `rst_dir`: its count is this direction's.
        self.dir[dir as usize].followups += data_followup as u8;
        self.record(pkt, dir, now);
        outcome
    }

    /// A flow starts over once its post-RST grace period is over (Zeek's reset delay), once
    /// it has been silent for the close delay after a FIN from each side (Zeek's close
    /// delay), or when a SYN opens a new connection on a 4-tuple that was reset, closed or
    /// never seen opening.
    #[inline(always)]
    fn starts_over(&self, pkt: &PacketMeta, dir: u8, now: u64, settings: &Settings) -> bool {
        if self.has_rst() && now.saturating_sub(self.rst_ns()) > settings.grace_ns {
            return true;
        }
        let closed_by_both = self.dir[0].has(seen::FIN) && self.dir[1].has(seen::FIN);
        if closed_by_both && now.saturating_sub(self.last_ns()) > settings.close_delay_ns {
            return true;
        }
        if !pkt.has(tcp_flags::SYN) || pkt.has(tcp_flags::ACK) || pkt.is_rst() {
            return false;
        }
        // A RST ends the connection on both ends (RFC 9293 3.10.7): a SYN after it can only
        // open a new one, even with the same initial sequence number (a client retrying a
        // refused connection from the same socket, or a raw-socket scanner).
        if self.has_rst() {
            return true;
        }
        let d = &self.dir[dir as usize];
        let retransmitted_syn = d.has(seen::SYN) && pkt.seq.wrapping_add(1) == d.next_seq;
        let closed =
            self.dir[0].has(seen::FIN | seen::RST) || self.dir[1].has(seen::FIN | seen::RST);
        !retransmitted_syn && (closed || self.origin() == origin::INFERRED)
    }

    #[inline(always)]
    fn record(&mut self, pkt: &PacketMeta, dir: u8, now: u64) {
        if !self.dir[0].has(seen::SENT) && !self.dir[1].has(seen::SENT) {
            self.start_ns = now;
        }
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
        self.note_history(pkt, dir, events);

        // `seen` takes this packet's events only below: `has_syn` and `has_rst` still say
        // whether an earlier packet set the time.
        if syn && !ack && dir == self.originator() && !self.has_syn() {
            self.syn = self.since_start(now);
        }
        if self.rtt == Span::ZERO
            && self.has_syn()
            && dir == self.originator()
            && ack
            && !syn
            && self.dir[(dir ^ 1) as usize].has(seen::SYN_ACK)
        {
            self.rtt = Span::from_ns(now.saturating_sub(self.syn_ns()));
        }
        if rst && !self.has_rst() {
            self.rst = self.since_start(now);
            self.roles = (self.roles & !roles::RST_FROM_HIGH) | (dir << 1);
            self.dir[dir as usize].followups = 0;
        }
        let since_start = self.since_start(now);
        let peer_scale = self.dir[(dir ^ 1) as usize].window_scale;

        let d = &mut self.dir[dir as usize];
        if !d.has(seen::SENT) {
            d.first = since_start;
        }
        d.seen |= events | seen::SENT;
        d.gap_before_last = if flow_last == 0 {
            Span::ZERO
        } else {
            Span::from_ns(now.saturating_sub(flow_last))
        };
        d.last_ns = now;
        d.pkts = d.pkts.wrapping_add(1);
        d.bytes = d.bytes.saturating_add(pkt.payload_len as u32);
        if pkt.tls_alert != 0 {
            d.seen |= seen::TLS_ALERT;
            d.tls_alert = since_start;
        }
        if rst {
            // A RST's TTL, IP ID, window and sequence are exactly what is under suspicion;
            // they must not move the baselines of genuine packets.
            return;
        }
        if syn {
            d.window_scale = pkt.window_scale;
        }
        d.ttl = pkt.ttl;
        if pkt.family == crate::packet::FAMILY_IPV4 {
            d.push_ip_id(pkt.ip_id);
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
        // both sides offered the option. `window_scale` changes only with a SYN, whose window
        // is kept unscaled: `DirState::window` applies the scale that held when it was sent.
        let scaled = !syn && d.window_scale != NO_WINDOW_SCALE && peer_scale != NO_WINDOW_SCALE;
        d.raw_window = pkt.window;
        d.seen = if scaled {
            d.seen | seen::WINDOW_SCALED
        } else {
            d.seen & !seen::WINDOW_SCALED
        };
    }

    /// Writes the packet's Zeek history letters. Per packet: a SYN, FIN or RST together with
    /// another of them is `q` (`i` for FIN with RST), written once; a lone SYN (`s`, `h` with
    /// ACK), FIN (`f`) or RST (`r`) is written the first time and again whenever its sequence
    /// number differs from that of the same flag's previous packet (a FIN's is where it ends);
    /// otherwise payload is `d` and a bare ACK `a`, once. Then `w` and `t` at the 1st, 10th,
    /// 100th... zero window and retransmission.
    #[inline(always)]
    fn note_history(&mut self, pkt: &PacketMeta, dir: u8, events: u16) {
        let syn = pkt.has(tcp_flags::SYN);
        let fin = pkt.has(tcp_flags::FIN);
        let rst = pkt.is_rst();
        let controls = syn as u8 + fin as u8 + rst as u8;
        let d = &mut self.dir[dir as usize];
        let letter = if controls > 1 {
            let (bit, letter) = if fin && rst {
                (seen::FIN_RST, letter_of(seen::FIN_RST))
            } else {
                (seen::MULTI_FLAG, letter_of(seen::MULTI_FLAG))
            };
            d.write_once(bit).then_some(letter)
        } else if syn {
            // SYN and SYN-ACK share one "seen" mark and one last sequence number, as in Zeek.
            let fingerprint = seq_fingerprint(pkt.seq);
            let repeat = d.write_once(seen::SYN) || fingerprint != d.history_syn_seq;
            d.history_syn_seq = fingerprint;
            let letter = if pkt.has(tcp_flags::ACK) {
                letter_of(seen::SYN_ACK)
            } else {
                letter_of(seen::SYN)
            };
            repeat.then_some(letter)
        } else if fin {
            let fingerprint = seq_fingerprint(pkt.seq.wrapping_add(pkt.payload_len as u32));
            let repeat = d.write_once(seen::FIN) || fingerprint != d.history_fin_seq;
            d.history_fin_seq = fingerprint;
            repeat.then_some(letter_of(seen::FIN))
        } else if rst {
            let fingerprint = seq_fingerprint(pkt.seq);
            let repeat = d.write_once(seen::RST) || fingerprint != d.history_rst_seq;
            d.history_rst_seq = fingerprint;
            repeat.then_some(letter_of(seen::RST))
        } else if pkt.payload_len > 0 {
            d.write_once(seen::DATA).then_some(letter_of(seen::DATA))
        } else if pkt.has(tcp_flags::ACK) {
            d.write_once(seen::ACK).then_some(letter_of(seen::ACK))
        } else {
            None
        };
        let zero_window = events & seen::ZERO_WINDOW != 0 && counted_repeat(&mut d.zero_windows);
        let retransmit = events & seen::RETRANSMIT != 0 && counted_repeat(&mut d.retransmits);
        if let Some(letter) = letter {
            self.push_history(dir, letter);
        }
        if zero_window {
            self.push_history(dir, letter_of(seen::ZERO_WINDOW));
        }
        if retransmit {
            self.push_history(dir, letter_of(seen::RETRANSMIT));
        }
    }

    #[inline(always)]
    fn push_history(&mut self, dir: u8, letter: u8) {
        // Read afresh (volatile) so that the check below and the index use one register: when
        // the compiler reuses a length from an earlier push, it compares one copy and indexes
        // with another, and the verifier cannot see the bound.
        // SAFETY: a plain read of a field of `self`.
        let len = unsafe { core::ptr::read_volatile(&self.history_len) };
        if len as usize >= HISTORY_CAPACITY {
            // Not kept, but counted: readers see that the history was cut.
            self.history_len = len.saturating_add(1);
            return;
        }
        // The mask repeats the bound for verifiers that lose it across the check above. The
        // slot is still zero: the state starts zeroed and the history only grows.
        let i = len as usize & (HISTORY_CAPACITY - 1);
        self.history_letters |= ((letter & 0xf) as u64) << (HISTORY_LETTER_BITS * i);
        self.history_from_high |= ((dir & 1) as u16) << i;
        self.history_len = len + 1;
    }
}

impl DirState {
    /// Marks a once-per-direction history letter; true the first time.
    #[inline(always)]
    fn write_once(&mut self, bit: u16) -> bool {
        let first = self.history_once & bit == 0;
        self.history_once |= bit;
        first
    }
}

/// The history byte (index into `seen::HISTORY_LETTERS`) of a single `seen` bit. Only ever
/// called with constants, so it folds away: BPF has no count-trailing-zeros instruction.
#[inline(always)]
const fn letter_of(bit: u16) -> u8 {
    bit.trailing_zeros() as u8
}

/// Counts one more occurrence of a counted history letter; true at the 1st, 10th, 100th,
/// 1,000th and 10,000th (`u16::MAX`, where the count saturates, is no power of ten: nothing
/// repeats beyond it).
#[inline(always)]
fn counted_repeat(count: &mut u16) -> bool {
    *count = count.saturating_add(1);
    matches!(*count, 1 | 10 | 100 | 1_000 | 10_000)
}

/// What `FlowState::step` did besides recording the packet, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Tracked,
    /// The flow started over (grace period ended, or a new connection on the same 4-tuple).
    Recycled,
    /// Payload after a RST was not reported as a follow-up: `followup_limit` was reached.
    /// (RSTs are never suppressed.)
    FollowUpSuppressed,
}

impl Step {
    /// The counter a step counts in, if any.
    #[inline(always)]
    pub const fn counter(self) -> Option<Counter> {
        match self {
            Step::Tracked => None,
            Step::Recycled => Some(Counter::FlowsRecycled),
            Step::FollowUpSuppressed => Some(Counter::FollowUpsSuppressed),
        }
    }
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

#[cfg(test)]
mod tests {
    extern crate std;

    use std::{string::String, vec, vec::Vec};

    use super::*;
    use crate::packet::{ipv4_mapped, tcp_flags::*, FAMILY_IPV4};

    const CLIENT: [u8; 4] = [198, 18, 0, 1];

    /// No port is a likely server port: the roles are never flipped.
    fn no_server_ports(_: u16) -> bool {
        false
    }
    const SERVER: [u8; 4] = [198, 18, 1, 2];

    fn segment(from_client: bool, flags: u8, seq: u32, ack: u32, payload: u16) -> PacketMeta {
        let (src, dst, sport, dport) = if from_client {
            (CLIENT, SERVER, 40000, 80)
        } else {
            (SERVER, CLIENT, 80, 40000)
        };
        PacketMeta {
            src_addr: ipv4_mapped(src),
            dst_addr: ipv4_mapped(dst),
            src_port: sport,
            dst_port: dport,
            seq,
            ack,
            payload_len: payload,
            window: 512,
            ip_id: if from_client { 100 } else { 7000 } + seq as u16 % 50,
            ttl: if from_client { 64 } else { 63 },
            tcp_flags: flags,
            family: FAMILY_IPV4,
            window_scale: if flags & SYN != 0 { 7 } else { NO_WINDOW_SCALE },
            ..PacketMeta::default()
        }
    }

    /// Replays packets through a fresh flow, 1 ms apart; returns the flow and every emitted
    /// event kind with the state it carried.
    fn replay(packets: &[PacketMeta]) -> (FlowState, Vec<(EventKind, FlowState)>) {
        let settings = Settings::default();
        let (_, first_dir) = FlowKey::of(&packets[0]);
        let mut flow = FlowState::new(&packets[0], first_dir, &no_server_ports);
        let mut events = Vec::new();
        for (i, pkt) in packets.iter().enumerate() {
            let (_, dir) = FlowKey::of(pkt);
            let now = 1_000_000 * (i as u64 + 1);
            flow.step(
                pkt,
                dir,
                now,
                &settings,
                &no_server_ports,
                |kind, snapshot| events.push((kind, *snapshot)),
            );
        }
        (flow, events)
    }

    fn history(flow: &FlowState, originator: u8) -> String {
        flow.history_events()
            .map(|h| {
                let letter = seen::HISTORY_LETTERS[(h & 0x0f) as usize] as char;
                let dir = u8::from(h & HISTORY_FROM_HIGH != 0);
                if dir == originator {
                    letter.to_ascii_uppercase()
                } else {
                    letter
                }
            })
            .collect()
    }

    #[test]
    fn steps_count_what_they_did_besides_tracking() {
        assert_eq!(Step::Tracked.counter(), None);
        assert_eq!(Step::Recycled.counter(), Some(Counter::FlowsRecycled));
        assert_eq!(
            Step::FollowUpSuppressed.counter(),
            Some(Counter::FollowUpsSuppressed)
        );
    }

    #[test]
    fn key_is_the_same_for_both_directions() {
        let (a, dir_a) = FlowKey::of(&segment(true, SYN, 1, 0, 0));
        let (b, dir_b) = FlowKey::of(&segment(false, SYN | ACK, 1, 2, 0));
        assert_eq!(a, b);
        assert_ne!(dir_a, dir_b);
    }

    #[test]
    fn handshake_data_and_rst_leave_the_expected_state() {
        let (flow, events) = replay(&[
            segment(true, SYN, 1000, 0, 0),
            segment(false, SYN | ACK, 5000, 1001, 0),
            segment(true, ACK, 1001, 5001, 0),
            segment(true, ACK | PSH, 1001, 5001, 100),
            segment(false, ACK, 5001, 1101, 0),
            segment(false, RST | ACK, 5001, 1101, 0),
        ]);
        let (client_key, client_dir) = FlowKey::of(&segment(true, SYN, 1000, 0, 0));
        assert_eq!(client_key.port[client_dir as usize], 40000);
        assert_eq!(flow.originator(), client_dir);
        assert_eq!(flow.origin(), origin::SYN);
        assert_eq!(history(&flow, flow.originator()), "ShADar");
        let client = &flow.dir[client_dir as usize];
        let server = &flow.dir[(client_dir ^ 1) as usize];
        assert_eq!(client.next_seq, 1101);
        assert_eq!(client.max_ack, 5001);
        assert_eq!(client.bytes, 100);
        assert_eq!(client.pkts, 3);
        assert_eq!(server.ttl, 63, "the RST must not move the genuine TTL");
        assert_eq!(server.history_rst_seq, seq_fingerprint(5001));
        assert_eq!(client.window_scale, 7);
        assert_eq!(
            flow.rtt_ns(),
            2_000_000,
            "SYN at 1 ms, completing ACK at 3 ms"
        );
        assert_eq!(flow.rst_ns(), 6_000_000);
        assert_eq!(flow.syn_ns(), 1_000_000);
        assert_eq!(flow.first_ns(client_dir as usize ^ 1), 2_000_000);
        assert_eq!(server.gap_before_last_ns(), 1_000_000);

        assert_eq!(events.len(), 1);
        let (kind, before) = &events[0];
        assert_eq!(*kind, EventKind::Rst);
        assert!(!before.dir[(client_dir ^ 1) as usize].has(seen::RST));
        assert_eq!(before.packets(), 5, "the snapshot is taken before the RST");
    }

    #[test]
    fn data_and_rsts_after_a_rst_are_follow_ups_up_to_the_limit() {
        let mut packets = vec![
            segment(true, SYN, 1000, 0, 0),
            segment(false, SYN | ACK, 5000, 1001, 0),
            segment(false, RST | ACK, 5001, 1001, 0),
            segment(false, ACK, 5001, 1001, 50),
            segment(true, ACK, 1001, 5001, 0),
            segment(false, RST, 9999, 0, 0),
        ];
        let (_, events) = replay(&packets);
        let kinds: Vec<_> = events.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            kinds,
            [EventKind::Rst, EventKind::FollowUp, EventKind::FollowUp],
            "data from the RST's sender and a second RST follow; the peer's ACK does not"
        );

        packets.extend((0..10).map(|i| segment(false, ACK, 5051 + 10 * i, 1001, 10)));
        packets.extend((0..10).map(|i| segment(false, RST, 20_000 + i, 0, 0)));
        packets.push(segment(true, RST, 1001, 0, 0));
        let (_, events) = replay(&packets);
        let rsts = events.len() - Settings::DEFAULT_FOLLOWUP_LIMIT as usize;
        assert_eq!(
            rsts,
            1 + 1 + 10 + 1,
            "every RST is sent, from either side; data only up to the limit"
        );
        let (kind, before) = events.last().unwrap();
        assert_eq!(*kind, EventKind::FollowUp);
        let (_, server_dir) = FlowKey::of(&segment(false, RST, 0, 0, 0));
        assert_eq!(
            (before.rst_dir(), before.followups()),
            (server_dir, Settings::DEFAULT_FOLLOWUP_LIMIT as u8),
            "the first RST's sender, and its data follow-ups up to the limit"
        );
        assert_eq!(before.dir[server_dir as usize ^ 1].followups, 0);
    }

    #[test]
    fn a_syn_after_a_rst_starts_over_even_with_the_same_isn() {
        let packets = [
            segment(true, SYN, 1000, 0, 0),
            segment(false, RST | ACK, 0, 1001, 0),
            segment(true, SYN, 1000, 0, 0),
            segment(false, RST | ACK, 0, 1001, 0),
        ];
        let (flow, events) = replay(&packets);
        let kinds: Vec<_> = events.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            kinds,
            [EventKind::Rst, EventKind::Rst],
            "two refused attempts"
        );
        assert_eq!(history(&events[1].1, flow.originator()), "S");
        assert_eq!(history(&flow, flow.originator()), "Sr");
    }

    #[test]
    fn history_repeats_letters_as_zeek_does() {
        let mut zero = segment(false, ACK, 5001, 1101, 0);
        zero.window = 0;
        let mut packets = vec![
            segment(true, SYN, 1000, 0, 0),
            segment(true, SYN, 1000, 0, 0),
            segment(false, SYN | ACK, 5000, 1001, 0),
            segment(true, ACK, 1001, 5001, 0),
            segment(true, ACK, 1001, 5001, 0),
            segment(true, ACK | PSH, 1001, 5001, 100),
            segment(true, ACK | FIN, 1101, 5001, 0),
            segment(true, ACK | FIN, 1101, 5001, 0),
        ];
        packets.extend((0..10).map(|_| segment(true, ACK | PSH, 1001, 5001, 100)));
        packets.extend((0..2).map(|_| zero));
        packets.push(segment(false, RST, 5001, 0, 0));
        packets.push(segment(false, RST, 5001, 0, 0));
        packets.push(segment(false, RST, 6001, 0, 0));
        packets.push(segment(true, FIN | RST, 1102, 0, 0));
        packets.push(segment(true, SYN | FIN | ACK, 1102, 0, 0));
        let (flow, _) = replay(&packets);
        assert_eq!(
            history(&flow, flow.originator()),
            "ShADFTTawrrIQ",
            "S once for the same ISN, F once for the same end, T at the 1st and 10th, \
             r again for a new sequence number, I and Q for flag combinations"
        );
    }

    #[test]
    fn history_stops_at_its_capacity_and_counts_on() {
        let mut packets = vec![segment(true, SYN, 1000, 0, 0)];
        packets.extend((0..14).map(|i| segment(false, RST, 100 + i, 0, 0)));
        let (flow, _) = replay(&packets);
        assert!(!flow.history_cut(), "15 letters");
        packets.push(segment(false, RST, 200, 0, 0));
        let (flow, _) = replay(&packets);
        assert_eq!(flow.history_len as usize, HISTORY_CAPACITY);
        assert!(!flow.history_cut(), "16 letters, all kept");

        packets.extend((0..24).map(|i| segment(false, RST, 300 + i, 0, 0)));
        let (flow, _) = replay(&packets);
        assert_eq!(flow.history_len, 40, "counted on past the capacity");
        assert!(flow.history_cut());
        assert_eq!(
            history(&flow, flow.originator()),
            String::from("S") + &"r".repeat(15)
        );

        packets.extend((0..300).map(|i| segment(false, RST, 1000 + i, 0, 0)));
        let (flow, _) = replay(&packets);
        assert_eq!(flow.history_len, u8::MAX, "saturates");
        assert_eq!(flow.history_events().count(), HISTORY_CAPACITY);
    }

    #[test]
    fn history_events_read_back_as_pushed() {
        let mut flow = FlowState::default();
        let pushed: Vec<(u8, u8)> = (0..HISTORY_CAPACITY as u8 + 3)
            .map(|i| ((i * 7) % seen::HISTORY_LETTERS.len() as u8, (i / 2) & 1))
            .collect();
        for &(letter, dir) in &pushed {
            flow.push_history(dir, letter);
        }
        let expected: Vec<u8> = pushed[..HISTORY_CAPACITY]
            .iter()
            .map(|&(letter, dir)| letter | if dir == 1 { HISTORY_FROM_HIGH } else { 0 })
            .collect();
        assert_eq!(flow.history_events().collect::<Vec<_>>(), expected);
        assert!(expected.contains(&(9 | HISTORY_FROM_HIGH)) && expected.contains(&0));
        assert_eq!(flow.history_len as usize, HISTORY_CAPACITY + 3);
        assert!(flow.history_cut());
    }

    #[test]
    fn a_flow_starts_over_after_the_grace_period_or_on_a_new_syn() {
        let settings = Settings {
            grace_ns: 10,
            ..Settings::default()
        };
        let rst = segment(false, RST, 1, 0, 0);
        let (_, dir) = FlowKey::of(&rst);
        let mut flow = FlowState::new(&rst, dir, &no_server_ports);
        assert_eq!(
            flow.step(&rst, dir, 100, &settings, &no_server_ports, |_, _| {}),
            Step::Tracked
        );
        assert_eq!(
            flow.step(&rst, dir, 200, &settings, &no_server_ports, |_, _| {}),
            Step::Recycled
        );
        assert_eq!(flow.packets(), 1);

        let (closed, _) = replay(&[
            segment(true, SYN, 1000, 0, 0),
            segment(true, FIN | ACK, 1001, 0, 0),
        ]);
        let mut closed = closed;
        let new_syn = segment(true, SYN, 777_000, 0, 0);
        let (_, dir) = FlowKey::of(&new_syn);
        let outcome = closed.step(
            &new_syn,
            dir,
            9_000_000,
            &Settings::default(),
            &no_server_ports,
            |_, _| {},
        );
        assert_eq!(outcome, Step::Recycled);
        let retransmitted = closed.step(
            &new_syn,
            dir,
            9_500_000,
            &Settings::default(),
            &no_server_ports,
            |_, _| {},
        );
        assert_eq!(
            retransmitted,
            Step::Tracked,
            "a retransmitted SYN is the same connection"
        );
    }

    #[test]
    fn midstream_flows_infer_the_originator_and_synack_first_flips_it() {
        let (flow, _) = replay(&[segment(false, ACK, 5000, 1000, 10)]);
        assert_eq!(flow.origin(), origin::INFERRED);
        let (_, server_dir) = FlowKey::of(&segment(false, ACK, 0, 0, 0));
        assert_eq!(flow.originator(), server_dir);

        let (flow, _) = replay(&[segment(false, SYN | ACK, 5000, 1001, 0)]);
        assert_eq!(flow.origin(), origin::SYN_ACK);
        assert_eq!(flow.originator(), server_dir ^ 1);
    }

    #[test]
    fn a_first_packet_from_a_likely_server_port_flips_the_roles() {
        let likely = |port| crate::ports::PortSet::LIKELY_SERVERS.contains(port);
        let (_, server_dir) = FlowKey::of(&segment(false, ACK, 0, 0, 0));
        let data = segment(false, ACK, 5000, 1000, 10);
        let flow = FlowState::new(&data, server_dir, &likely);
        assert_eq!((flow.flipped(), flow.origin()), (true, origin::INFERRED));
        assert_eq!(
            flow.originator(),
            server_dir ^ 1,
            "the client is the originator"
        );

        let syn_ack = segment(false, SYN | ACK, 5000, 1001, 0);
        let flow = FlowState::new(&syn_ack, server_dir, &likely);
        assert_eq!((flow.flipped(), flow.origin()), (true, origin::SYN_ACK));
        assert_eq!(flow.originator(), server_dir ^ 1);

        let from_client = segment(true, ACK, 1000, 5000, 10);
        let flow = FlowState::new(&from_client, server_dir ^ 1, &likely);
        assert_eq!((flow.flipped(), flow.originator()), (false, server_dir ^ 1));
    }

    #[test]
    fn a_flow_closed_by_both_sides_starts_over_after_the_close_delay() {
        let settings = Settings {
            close_delay_ns: 5_000_000,
            ..Settings::default()
        };
        let (closed, _) = replay(&[
            segment(true, SYN, 1000, 0, 0),
            segment(false, SYN | ACK, 5000, 1001, 0),
            segment(true, ACK, 1001, 5001, 0),
            segment(true, FIN | ACK, 1001, 5001, 0),
            segment(false, FIN | ACK, 5001, 1002, 0),
            segment(true, ACK, 1002, 5002, 0),
        ]);
        let rst = segment(false, RST, 5002, 0, 0);
        let (_, dir) = FlowKey::of(&rst);
        let last = closed.last_ns();
        let mut within = closed;
        let step = within.step(
            &rst,
            dir,
            last + 5_000_000,
            &settings,
            &no_server_ports,
            |_, _| {},
        );
        assert_eq!(step, Step::Tracked, "at the delay, still the closed flow");
        let mut after = closed;
        let mut snapshot = None;
        let step = after.step(
            &rst,
            dir,
            last + 5_000_001,
            &settings,
            &no_server_ports,
            |_, s| snapshot = Some(*s),
        );
        assert_eq!(step, Step::Recycled);
        assert_eq!(
            snapshot.map(|s| s.packets()),
            Some(0),
            "the RST meets no state"
        );
        assert_eq!(after.packets(), 1);

        let (half_closed, _) = replay(&[
            segment(true, SYN, 1000, 0, 0),
            segment(false, SYN | ACK, 5000, 1001, 0),
            segment(false, FIN | ACK, 5001, 1001, 0),
        ]);
        let mut half_closed = half_closed;
        let late = segment(true, ACK | PSH, 1001, 5002, 10);
        let (_, dir) = FlowKey::of(&late);
        let step = half_closed.step(
            &late,
            dir,
            1_000_000_000,
            &settings,
            &no_server_ports,
            |_, _| {},
        );
        assert_eq!(step, Step::Tracked, "one FIN does not end the flow");
    }

    #[test]
    fn retransmissions_and_zero_windows_are_history_events() {
        let mut zero = segment(false, ACK, 5001, 1101, 0);
        zero.window = 0;
        let (flow, _) = replay(&[
            segment(true, SYN, 1000, 0, 0),
            segment(true, ACK, 1001, 0, 100),
            segment(true, ACK, 1001, 0, 100),
            zero,
        ]);
        assert_eq!(history(&flow, flow.originator()), "SDTaw");
    }

    #[test]
    fn recent_ip_ids_keep_the_last_four_in_order() {
        let mut dir = DirState::default();
        let mut ids = Vec::new();
        for id in [1u16, 2] {
            dir.push_ip_id(id);
        }
        dir.recent_ip_ids(|id| ids.push(id));
        assert_eq!(ids, [1, 2]);
        for id in 3..=13 {
            dir.push_ip_id(id);
            if id < 4 {
                continue;
            }
            ids.clear();
            dir.recent_ip_ids(|id| ids.push(id));
            assert_eq!(ids, [id - 3, id - 2, id - 1, id], "after {id}");
        }
    }

    #[test]
    fn counted_letters_repeat_at_powers_of_ten_until_they_saturate() {
        let mut count = 0;
        let repeats: Vec<u32> = (1..=200_000)
            .filter(|_| counted_repeat(&mut count))
            .collect();
        assert_eq!(repeats, [1, 10, 100, 1_000, 10_000]);
        assert_eq!(count, u16::MAX, "saturates");
    }

    #[test]
    fn repeats_compare_sequence_fingerprints() {
        assert_eq!(seq_fingerprint(5001), 5001);
        assert_eq!(seq_fingerprint(0x1234_5678), 0x1234 ^ 0x5678);
        // Two sequence numbers with one fingerprint: the second RST is taken for a repeat.
        let (a, b) = (0x0001_0000, 0x0000_0001);
        assert_eq!(seq_fingerprint(a), seq_fingerprint(b));
        let (flow, _) = replay(&[
            segment(true, SYN, 1000, 0, 0),
            segment(false, RST, a, 0, 0),
            segment(false, RST, b, 0, 0),
            segment(false, RST, b + 1, 0, 0),
        ]);
        assert_eq!(history(&flow, flow.originator()), "Srr");
    }

    #[test]
    fn the_window_is_kept_raw_and_read_scaled() {
        let (flow, _) = replay(&[
            segment(true, SYN, 1000, 0, 0),
            segment(false, SYN | ACK, 5000, 1001, 0),
            segment(true, ACK, 1001, 5001, 0),
        ]);
        let (_, client_dir) = FlowKey::of(&segment(true, SYN, 1000, 0, 0));
        let client = &flow.dir[client_dir as usize];
        let server = &flow.dir[client_dir as usize ^ 1];
        assert_eq!((client.raw_window, client.window()), (512, 512 << 7));
        assert_eq!(server.window(), 512, "a SYN-ACK's window is never scaled");

        let mut big = segment(true, ACK, 1001, 5001, 0);
        big.window = u16::MAX;
        let mut flow = flow;
        flow.dir[client_dir as usize].window_scale = 20;
        flow.step(
            &big,
            client_dir,
            9_000_000,
            &Settings::default(),
            &no_server_ports,
            |_, _| {},
        );
        assert_eq!(
            flow.dir[client_dir as usize].window(),
            (u16::MAX as u32) << 14,
            "a shift above 14 is 14"
        );

        let (flow, _) = replay(&[segment(true, ACK, 1001, 5001, 0)]);
        assert_eq!(
            flow.dir[client_dir as usize].window(),
            512,
            "no handshake: unscaled"
        );
    }

    #[test]
    fn byte_counts_saturate() {
        let mut flow = FlowState::default();
        let data = segment(true, ACK, 1001, 5001, 100);
        let (_, dir) = FlowKey::of(&data);
        flow.dir[dir as usize].bytes = u32::MAX - 10;
        flow.step(
            &data,
            dir,
            1,
            &Settings::default(),
            &no_server_ports,
            |_, _| {},
        );
        assert_eq!(flow.dir[dir as usize].bytes, u32::MAX);
    }

    #[test]
    fn sequence_comparison_wraps() {
        assert!(seq_after(1, u32::MAX));
        assert!(!seq_after(u32::MAX, 1));
        assert!(!seq_after(5, 5));
    }
}
