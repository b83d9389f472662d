//! The kernel's flow tables, replayed in userspace over a capture's packets.
//!
//! Each packet takes the decisions the eBPF programs take (`rstwatch-ebpf/src/track.rs`):
//! the same `FlowState::step` on the same state, SYNs of new flows tracked within the same
//! per-second budget, no flow at all for a RST on a flow the table does not know (it is
//! reported, or beyond the per-second budget counted as a storm), and follow-ups of such a
//! RST within the grace period. The events it produces are the `RstEvent`s the ring buffer
//! would have carried, with the capture's timestamps as the clock. Two kernel limits are not
//! replayed because a capture has no CPUs and no memory pressure to model: the table is not
//! bounded (no flow is evicted), and the recent unknown RSTs are kept per flow instead of in
//! 16 per-CPU slots that can overwrite one another.

use foldhash::HashMap;

use rstwatch_common::{
    event::RecordHeader, packet::tcp_flags, Counter, EventKind, FlowKey, FlowState, PacketMeta,
    PortSet, RateWindow, RstEvent, Settings, StormCount, StormKey, COUNTER_COUNT,
};

use crate::{cidr::Cidr, kernel::Counters, pipeline::hold::FlowStateSource};

/// Where the packet was seen: the event header's fields that do not depend on the event.
#[derive(Clone, Copy, Debug)]
pub struct Hook {
    /// `DIRECTION_INGRESS` or `DIRECTION_EGRESS`.
    pub direction: u8,
    pub ifindex: u32,
}

/// `--port` and `--net`, as the kernel applies them.
#[derive(Clone, Debug, Default)]
pub struct PacketFilter {
    ports: Vec<u16>,
    nets: Vec<([u8; 16], u32)>,
}

impl PacketFilter {
    pub fn new(ports: &[u16], nets: &[Cidr]) -> Self {
        Self {
            ports: ports.to_vec(),
            nets: nets.iter().map(Cidr::mapped).collect(),
        }
    }

    /// The packet's source is one of the networks (and there are some).
    pub fn sent(&self, pkt: &PacketMeta) -> bool {
        self.nets
            .iter()
            .any(|(net, bits)| prefix_matches(&pkt.src_addr, net, *bits))
    }

    pub fn selects(&self, pkt: &PacketMeta) -> bool {
        let port_on = |port: u16| self.ports.contains(&port);
        if !self.ports.is_empty() && !port_on(pkt.src_port) && !port_on(pkt.dst_port) {
            return false;
        }
        let in_nets = |addr: &[u8; 16]| {
            self.nets
                .iter()
                .any(|(net, bits)| prefix_matches(addr, net, *bits))
        };
        self.nets.is_empty() || in_nets(&pkt.src_addr) || in_nets(&pkt.dst_addr)
    }
}

fn prefix_matches(addr: &[u8; 16], net: &[u8; 16], bits: u32) -> bool {
    let addr = u128::from_be_bytes(*addr);
    let net = u128::from_be_bytes(*net);
    let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
    addr & mask == net & mask
}

/// An unknown-flow RST, kept so that what follows it is reported as its follow-ups.
#[derive(Clone, Copy, Debug)]
struct RecentRst {
    rst_ns: u64,
    rst_dir: u8,
    followups: u8,
}

/// The flow tables and counters of one replay.
pub struct Replay {
    settings: Settings,
    filter: PacketFilter,
    server_ports: &'static PortSet,
    /// The capture's flows, without a bound: a capture is finite, and no flow of it is
    /// evicted as the kernel's table may evict one.
    flows: HashMap<FlowKey, FlowState>,
    recent: HashMap<FlowKey, RecentRst>,
    unknown_rsts: RateWindow,
    half_open_budget: RateWindow,
    storms: HashMap<StormKey, StormCount>,
    counters: [u64; COUNTER_COUNT as usize],
}

impl Replay {
    /// `server_ports`: the likely server ports of Zeek's direction heuristic.
    pub fn new(settings: Settings, filter: PacketFilter, server_ports: &'static PortSet) -> Self {
        Self {
            settings,
            filter,
            server_ports,
            flows: HashMap::default(),
            recent: HashMap::default(),
            unknown_rsts: RateWindow::default(),
            half_open_budget: RateWindow::default(),
            storms: HashMap::default(),
            counters: [0; COUNTER_COUNT as usize],
        }
    }

    pub fn count(&mut self, counter: Counter) {
        self.counters[counter as usize] += 1;
    }

    pub fn counters(&self) -> Counters {
        Counters(self.counters)
    }

    /// Flows in the table.
    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    /// The storm counts so far, in the form the kernel's per-CPU map is read (one CPU).
    pub fn storms(&self) -> Vec<(StormKey, Vec<StormCount>)> {
        self.storms.iter().map(|(k, v)| (*k, vec![*v])).collect()
    }

    /// Filters and tracks one parsed TCP packet seen at `now` (capture time, ns); every event
    /// the kernel would send goes to `emit`.
    pub fn packet(
        &mut self,
        pkt: &PacketMeta,
        now: u64,
        hook: Hook,
        mut emit: impl FnMut(RstEvent),
    ) {
        self.count(Counter::TcpPackets);
        if !self.filter.selects(pkt) {
            return self.count(Counter::Filtered);
        }
        if pkt.is_rst() {
            self.count(Counter::Rsts);
        }
        let (mut key, dir) = FlowKey::of(pkt);
        key.apply_vlan_key(&self.settings);
        let settings = self.settings;
        let server_ports = self.server_ports;
        let likely_server = |port| server_ports.contains(port);
        let mut emit_flow =
            |kind: EventKind, flow: &FlowState| emit(flow_event(kind, now, hook, pkt, flow));
        if let Some(flow) = self.flows.get_mut(&key) {
            let step = flow.step(pkt, dir, now, &settings, &likely_server, &mut emit_flow);
            return self.count_step(step);
        }
        let recent = self
            .recent
            .get(&key)
            .copied()
            .filter(|r| now.saturating_sub(r.rst_ns) <= settings.grace_ns);
        if pkt.is_rst() {
            if recent.is_some() {
                return self.followup_of_recent(&key, now, hook, pkt, &mut emit);
            }
            if !self.unknown_rsts.take(now, settings.unknown_rsts_per_sec) {
                return self.aggregate(now, hook, pkt);
            }
            emit(packet_event(EventKind::Rst, now, hook, pkt));
            self.recent.insert(
                key,
                RecentRst {
                    rst_ns: now,
                    rst_dir: dir,
                    followups: 0,
                },
            );
            return;
        }
        if recent.is_some_and(|r| r.rst_dir == dir) && pkt.payload_len > 0 {
            self.followup_of_recent(&key, now, hook, pkt, &mut emit);
        }
        // A SYN alone proves nothing about its sender: beyond the budget it is not tracked at
        // all (its flow starts at its next packet).
        let opening = pkt.has(tcp_flags::SYN) && !pkt.has(tcp_flags::ACK);
        if opening && !self.half_open_budget.take(now, settings.half_open_per_sec) {
            return self.count(Counter::SynsUntracked);
        }
        let mut flow = FlowState::new(pkt, dir, &likely_server);
        flow.step(pkt, dir, now, &settings, &likely_server, |kind, flow| {
            emit(flow_event(kind, now, hook, pkt, flow))
        });
        self.flows.insert(key, flow);
        self.count(Counter::FlowsInserted);
    }

    fn count_step(&mut self, step: rstwatch_common::flow::Step) {
        use rstwatch_common::flow::Step;
        match step {
            Step::Tracked => {}
            Step::Recycled => self.count(Counter::FlowsRecycled),
            Step::FollowUpSuppressed => self.count(Counter::FollowUpsSuppressed),
        }
    }

    fn followup_of_recent(
        &mut self,
        key: &FlowKey,
        now: u64,
        hook: Hook,
        pkt: &PacketMeta,
        emit: &mut impl FnMut(RstEvent),
    ) {
        let limit = self.settings.followup_limit.min(u8::MAX as u32);
        let Some(recent) = self.recent.get_mut(key) else {
            return;
        };
        if (recent.followups as u32) < limit {
            recent.followups += 1;
            emit(packet_event(EventKind::FollowUp, now, hook, pkt));
        } else {
            self.count(Counter::FollowUpsSuppressed);
        }
    }

    fn aggregate(&mut self, now: u64, hook: Hook, pkt: &PacketMeta) {
        self.count(Counter::RstsAggregated);
        let storm = self
            .storms
            .entry(StormKey::of(pkt, hook.direction))
            .or_insert(StormCount {
                resets: 0,
                first_ns: now,
                last_ns: now,
                ifindex: hook.ifindex,
                _pad: 0,
                sample: *pkt,
            });
        storm.resets += 1;
        storm.last_ns = now;
    }
}

/// The replay's tables are where the release step reads a flow's state at the hold's end,
/// as `watch` reads the kernel's.
impl FlowStateSource for Replay {
    fn current(&self, key: &FlowKey) -> Option<FlowState> {
        self.flows.get(key).copied()
    }
}

fn header(now: u64, hook: Hook) -> RecordHeader {
    RecordHeader {
        kind: 0,
        direction: hook.direction,
        len: 0,
        ifindex: hook.ifindex,
        ts_ns: now,
    }
}

/// What the kernel sends for a flow's event: a RST with the flow's state, payload after a RST
/// with its packet alone (the ring record that carries no state decodes to an empty one).
fn flow_event(
    kind: EventKind,
    now: u64,
    hook: Hook,
    pkt: &PacketMeta,
    flow: &FlowState,
) -> RstEvent {
    let mut event = RstEvent::of_packet(&header(now, hook), kind, *pkt);
    if pkt.is_rst() {
        event.flow = *flow;
    }
    event
}

/// An event that carries the packet alone.
fn packet_event(kind: EventKind, now: u64, hook: Hook, pkt: &PacketMeta) -> RstEvent {
    RstEvent::of_packet(&header(now, hook), kind, *pkt)
}
