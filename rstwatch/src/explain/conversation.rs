//! Test helper: a scripted TCP conversation replayed packet by packet through
//! `FlowState::step`, the update the kernel runs, collecting the events the kernel would send.
//! Sequence and acknowledgement numbers, TTLs and IP IDs follow each side's genuine stack
//! unless a step edits the packet, as an injecting middlebox would.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, SystemTime},
};

use rstwatch_common::{
    event::{EventKind, Frame, DIRECTION_EGRESS, DIRECTION_INGRESS},
    flow::{FlowKey, FlowState},
    packet::{ipv4_mapped, tcp_flags::*, FAMILY_IPV4, FAMILY_IPV6, NO_WINDOW_SCALE},
    PacketMeta, PortSet, RstEvent, Settings,
};

use super::{explain, explain_held, ExplainSettings};
use crate::{
    pipeline::hold::{Held, HoldQueue},
    report::ResetReport,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

impl Side {
    const fn index(self) -> usize {
        match self {
            Side::Client => 0,
            Side::Server => 1,
        }
    }

    const fn peer(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }
}

/// The client's genuine TTL: it is the local host, its packets leave with their initial TTL.
pub const CLIENT_TTL: u8 = 64;
/// The server's genuine TTL: it started at 64 and crossed 7 routers.
pub const SERVER_TTL: u8 = 57;
/// Handshake round trip of `Conversation::handshake`.
pub const RTT_MS: u64 = 40;
/// The monotonic clock at the conversation's start: 0 means "never" in the flow state.
const START_NS: u64 = 1_000_000_000;
/// The daemon's default hold (`--hold`) before a RST is explained.
pub const HOLD_NS: u64 = 300_000_000;

pub struct Conversation {
    /// Indexed by `Side::index`.
    addr: [SocketAddr; 2],
    next_seq: [u32; 2],
    ttl: [u8; 2],
    ip_id: [u16; 2],
    vlan: u16,
    /// Packets from this side are egress (TC), the others ingress (XDP); `None` on a sensor,
    /// where XDP sees both directions.
    local: Option<Side>,
    now_ns: u64,
    settings: Settings,
    table: Option<FlowState>,
    /// The table's entry after each packet, with the packet's time.
    table_log: Vec<(u64, FlowState)>,
    events: Vec<RstEvent>,
}

impl Conversation {
    pub fn v4() -> Self {
        Self::between("198.18.0.1:40000", "198.18.1.2:80")
    }

    pub fn v6() -> Self {
        Self::between("[2001:db8::1]:40000", "[2001:db8::2]:443")
    }

    pub fn between(client: &str, server: &str) -> Self {
        Self {
            addr: [client.parse().unwrap(), server.parse().unwrap()],
            next_seq: [1_000_000, 3_000_000_000],
            ttl: [CLIENT_TTL, SERVER_TTL],
            ip_id: [1_000, 30_000],
            vlan: 0,
            local: Some(Side::Client),
            now_ns: START_NS,
            settings: Settings::default(),
            table: None,
            table_log: Vec::new(),
            events: Vec::new(),
        }
    }

    pub fn vlan(&mut self, vlan: u16) -> &mut Self {
        self.vlan = vlan;
        self
    }

    /// Which side is this host; the default is the client.
    pub fn local(&mut self, side: Side) -> &mut Self {
        self.local = Some(side);
        self
    }

    /// Seen from a sensor (a mirror port, a capture file): every packet is ingress.
    pub fn sensor(&mut self) -> &mut Self {
        self.local = None;
        self
    }

    /// The TTL this side's packets arrive with from now on.
    pub fn ttl(&mut self, side: Side, ttl: u8) -> &mut Self {
        self.ttl[side.index()] = ttl;
        self
    }

    pub fn ip_id(&mut self, side: Side, next: u16) -> &mut Self {
        self.ip_id[side.index()] = next;
        self
    }

    pub fn wait_ms(&mut self, ms: u64) -> &mut Self {
        self.now_ns += ms * 1_000_000;
        self
    }

    pub fn wait_us(&mut self, us: u64) -> &mut Self {
        self.now_ns += us * 1_000;
        self
    }

    pub fn wait_s(&mut self, s: u64) -> &mut Self {
        self.wait_ms(s * 1_000)
    }

    /// Client SYN, the server's SYN-ACK one `RTT_MS` later, and the client's ACK.
    pub fn handshake(&mut self) -> &mut Self {
        self.syn(Side::Client)
            .wait_ms(RTT_MS)
            .syn_ack(Side::Server)
            .ack(Side::Client)
    }

    pub fn syn(&mut self, from: Side) -> &mut Self {
        self.send(from, SYN, 0)
    }

    pub fn syn_ack(&mut self, from: Side) -> &mut Self {
        self.send(from, SYN | ACK, 0)
    }

    pub fn ack(&mut self, from: Side) -> &mut Self {
        self.send(from, ACK, 0)
    }

    pub fn data(&mut self, from: Side, len: u16) -> &mut Self {
        self.send(from, PSH | ACK, len)
    }

    pub fn fin(&mut self, from: Side) -> &mut Self {
        self.send(from, FIN | ACK, 0)
    }

    pub fn rst(&mut self, from: Side) -> &mut Self {
        self.send(from, RST, 0)
    }

    pub fn rst_ack(&mut self, from: Side) -> &mut Self {
        self.send(from, RST | ACK, 0)
    }

    /// A TLS alert record (21 bytes of payload: a 5-byte header and an encrypted alert).
    pub fn tls_alert(&mut self, from: Side) -> &mut Self {
        self.send_with(from, PSH | ACK, 21, |p| p.tls_alert = 1)
    }

    pub fn send(&mut self, from: Side, flags: u8, payload_len: u16) -> &mut Self {
        self.send_with(from, flags, payload_len, |_| {})
    }

    /// Sends a packet as `from`'s stack would, after `edit` changed what a forger changes.
    pub fn send_with(
        &mut self,
        from: Side,
        flags: u8,
        payload_len: u16,
        edit: impl FnOnce(&mut PacketMeta),
    ) -> &mut Self {
        let mut pkt = self.genuine(from, flags, payload_len);
        edit(&mut pkt);
        let end = pkt.seq.wrapping_add(pkt.seq_len());
        let i = from.index();
        if rstwatch_common::flow::seq_after(end, self.next_seq[i]) {
            self.next_seq[i] = end;
        }
        self.ip_id[i] = self.ip_id[i].wrapping_add(1);
        let direction = if Some(from) == self.local {
            DIRECTION_EGRESS
        } else {
            DIRECTION_INGRESS
        };
        self.track(pkt, direction);
        self
    }

    fn genuine(&self, from: Side, flags: u8, payload_len: u16) -> PacketMeta {
        let (i, p) = (from.index(), from.peer().index());
        let (src, dst) = (self.addr[i], self.addr[p]);
        let family = if src.is_ipv4() {
            FAMILY_IPV4
        } else {
            FAMILY_IPV6
        };
        PacketMeta {
            src_addr: kernel_addr(src.ip()),
            dst_addr: kernel_addr(dst.ip()),
            src_port: src.port(),
            dst_port: dst.port(),
            seq: self.next_seq[i],
            ack: if flags & ACK != 0 {
                self.next_seq[p]
            } else {
                0
            },
            payload_len,
            window: 1_000,
            ip_id: if family == FAMILY_IPV4 {
                self.ip_id[i]
            } else {
                0
            },
            vlan: self.vlan,
            ttl: self.ttl[i],
            tcp_flags: flags,
            family,
            df: 1,
            window_scale: if flags & SYN != 0 { 7 } else { NO_WINDOW_SCALE },
            tls_alert: 0,
            _pad: [0; 2],
        }
    }

    /// What the kernel programs do with one parsed packet.
    fn track(&mut self, pkt: PacketMeta, direction: u8) {
        let (key, dir) = FlowKey::of(&pkt);
        let likely_server = |port| PortSet::LIKELY_SERVERS.contains(port);
        let mut flow = self
            .table
            .take()
            .unwrap_or_else(|| FlowState::new(&pkt, dir, &likely_server));
        let mut emitted = None;
        let settings = &self.settings;
        flow.step(
            &pkt,
            dir,
            self.now_ns,
            settings,
            &likely_server,
            |kind, snapshot| {
                emitted = Some((kind, *snapshot));
            },
        );
        self.table = Some(flow);
        self.table_log.push((self.now_ns, flow));
        if let Some((kind, snapshot)) = emitted {
            self.events.push(RstEvent {
                ts_ns: self.now_ns,
                ifindex: 2,
                kind: kind as u8,
                direction,
                dir,
                _pad: 0,
                key,
                pkt,
                flow: snapshot,
                frame: Frame::default(),
            });
        }
    }

    /// The flow table's entry now.
    pub fn flow(&self) -> FlowState {
        self.table.expect("no packet was sent")
    }

    /// Every event the kernel sent, in order.
    pub fn events(&self) -> &[RstEvent] {
        &self.events
    }

    /// The table's entry as the packets before `ns` left it, as the release step of a hold
    /// ending at `ns` reads it.
    pub fn table_at(&self, ns: u64) -> Option<FlowState> {
        self.table_log
            .iter()
            .rev()
            .find(|(at, _)| *at < ns)
            .map(|(_, flow)| *flow)
    }

    /// The event of the flow's first RST.
    pub fn rst_event(&self) -> RstEvent {
        *self
            .events
            .iter()
            .find(|e| e.kind == EventKind::Rst as u8)
            .expect("the conversation has no RST")
    }

    pub fn followups(&self) -> Vec<RstEvent> {
        self.events
            .iter()
            .filter(|e| e.kind == EventKind::FollowUp as u8)
            .copied()
            .collect()
    }

    /// The report on the first RST, with default settings.
    pub fn explain(&self) -> ResetReport {
        self.explain_with(&ExplainSettings::default())
    }

    pub fn explain_with(&self, settings: &ExplainSettings) -> ResetReport {
        explain(
            &self.rst_event(),
            &self.followups(),
            settings,
            &"eth0".into(),
            SystemTime::UNIX_EPOCH,
        )
    }
}

impl Conversation {
    /// Every report the daemon writes for this conversation, in order: its events through the
    /// hold queue as they arrive, each released report explained with the flow's entry as it
    /// was when its hold ended.
    pub fn reports(&self) -> Vec<ResetReport> {
        let mut hold = HoldQueue::new(HOLD_NS, self.settings.grace_ns);
        let mut released = Vec::new();
        for event in &self.events {
            released.extend(hold.release(event.ts_ns));
            hold.offer(*event);
        }
        released.extend(hold.release_all());
        released
            .iter()
            .map(|held| self.explain_released(held, held.hold_end_ns))
            .collect()
    }

    /// Every report the daemon writes for this conversation when it releases each hold
    /// `late_ns` after its end, as `watch` does at its next tick: the events until then are
    /// offered first, and the table is read as the packets until then left it.
    pub fn reports_released_late(&self, late_ns: u64) -> Vec<ResetReport> {
        let mut hold = HoldQueue::new(HOLD_NS, self.settings.grace_ns);
        let mut reports = Vec::new();
        for event in &self.events {
            for held in hold.release(event.ts_ns.saturating_sub(late_ns)) {
                reports.push(self.explain_released(&held, event.ts_ns));
            }
            hold.offer(*event);
        }
        for held in hold.release_all() {
            reports.push(self.explain_released(&held, u64::MAX));
        }
        reports
    }

    /// The report on `held`, released with the table as the packets before `read_ns` left it.
    fn explain_released(&self, held: &Held, read_ns: u64) -> ResetReport {
        let table_then = |_: &FlowKey| self.table_at(read_ns);
        explain_held(
            held,
            held.state_at_hold_end(&table_then),
            &ExplainSettings::default(),
            &"eth0".into(),
            |ns| SystemTime::UNIX_EPOCH + Duration::from_nanos(ns),
        )
    }
}

/// A client that opened a connection and exchanged a request and a response.
pub fn established() -> Conversation {
    let mut c = Conversation::v4();
    c.handshake()
        .data(Side::Client, 300)
        .wait_ms(RTT_MS)
        .data(Side::Server, 1_400);
    c
}

fn kernel_addr(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => ipv4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}
