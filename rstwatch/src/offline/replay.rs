//! The kernel's flow tables, replayed in userspace over a capture's packets.
//!
//! Each packet takes the decisions the eBPF programs take (`rstwatch-ebpf/src/track.rs`),
//! through the very code they run, in `rstwatch_common`: the filters
//! (`FilterConfig::selects`), the flow update (`FlowState::step`) and, for a packet whose flow
//! the table does not hold, `unheld::unheld`: no flow at all for a RST (it is reported, or
//! beyond the per-second budget counted in its storm, `StormCount::count_reset`), follow-ups
//! of such a RST within the grace period (`unheld::RecentRst`), SYNs of new flows tracked
//! within the same per-second budget. The events it produces are the `RstEvent`s `decode`
//! makes of the records the kernel would have sent (`record::of_flow_event`,
//! `RstEvent::of_record`), with the capture's timestamps as the clock. What stays apart is
//! storage: the kernel's maps and per-CPU slots are hash maps here, and two kernel limits are
//! not replayed because a capture has no CPUs and no memory pressure to model: the table is
//! not bounded (no flow is evicted), and the recent unknown RSTs are kept per flow instead of
//! in 16 per-CPU slots that can overwrite one another.

use foldhash::HashMap;

use rstwatch_common::{
    event::{record, Frame, RecordHeader},
    flow::Step,
    unheld::{unheld, Budgets, RecentRst, Start, Unheld},
    Counter, EventKind, FilterConfig, FlowKey, FlowState, PacketMeta, PortSet, RstEvent, SeenAt,
    Settings, StormCount, StormKey, COUNTER_COUNT,
};

use crate::{
    cidr::{mapped_prefix_contains, Cidr},
    kernel::Counters,
    pipeline::hold::FlowStateSource,
};

/// `--port` and `--net`, as the kernel applies them (`FilterConfig::selects`). The kernel
/// keeps the lists in maps it searches (an array by port, a longest-prefix-match trie), which
/// userspace cannot call per packet of a capture: here they are lists, searched in turn.
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

    /// The filters in force, as the kernel's loader writes them into its settings.
    pub fn config(&self) -> FilterConfig {
        FilterConfig::new(!self.ports.is_empty(), !self.nets.is_empty())
    }

    /// The packet's source is one of the networks (and there are some).
    pub fn sent(&self, pkt: &PacketMeta) -> bool {
        self.in_nets(pkt.src_addr)
    }

    fn port_on(&self, port: u16) -> bool {
        self.ports.contains(&port)
    }

    fn in_nets(&self, addr: [u8; 16]) -> bool {
        self.nets
            .iter()
            .any(|(net, bits)| mapped_prefix_contains(net, *bits, &addr))
    }
}

/// The flow tables and counters of one replay.
pub struct Replay {
    settings: Settings,
    filter: PacketFilter,
    server_ports: &'static PortSet,
    /// The capture's flows, without a bound: a capture is finite, and no flow of it is
    /// evicted as the kernel's table may evict one.
    flows: HashMap<FlowKey, FlowState>,
    /// Recent unknown-flow RSTs, one per flow: the kernel keeps a few per CPU in slots found
    /// by a hash of the key (a map update per unknown RST costs more than a packet may), which
    /// a capture, without CPUs or such a budget, need not model.
    recent: HashMap<FlowKey, RecentRst>,
    budgets: Budgets,
    /// Storm counts, one per key: the kernel counts in a per-CPU slot, else in a per-CPU hash
    /// map, the storage a BPF program has without allocating.
    storms: HashMap<StormKey, StormCount>,
    counters: [u64; COUNTER_COUNT as usize],
}

impl Replay {
    /// `server_ports`: the likely server ports of Zeek's direction heuristic. The settings'
    /// filters in force are `filter`'s, as the kernel's loader sets them.
    pub fn new(
        mut settings: Settings,
        filter: PacketFilter,
        server_ports: &'static PortSet,
    ) -> Self {
        settings.filter = filter.config();
        Self {
            settings,
            filter,
            server_ports,
            flows: HashMap::default(),
            recent: HashMap::default(),
            budgets: Budgets::default(),
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
        seen: SeenAt,
        mut emit: impl FnMut(RstEvent),
    ) {
        self.count(Counter::TcpPackets);
        let (filter, lists) = (&self.settings.filter, &self.filter);
        if !filter.selects(pkt, |port| lists.port_on(port), |addr| lists.in_nets(addr)) {
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
        let flow_event = |kind: EventKind, flow: &FlowState| {
            let kind = record::of_flow_event(kind, pkt);
            let flow = record::carries_flow(kind).then_some(*flow);
            event(seen.header(kind, 0, now), pkt, flow)
        };
        if let Some(flow) = self.flows.get_mut(&key) {
            let emit_flow = |kind, flow: &_| emit(flow_event(kind, flow));
            let step = flow.step(pkt, dir, now, &settings, &likely_server, emit_flow);
            return self.count_step(step);
        }
        // The flow is not in the table: what becomes of the packet is `unheld`'s.
        let recent = self
            .recent
            .get(&key)
            .filter(|recent| recent.within_grace(now, &settings))
            .copied();
        match unheld(pkt, dir, recent.as_ref(), &mut self.budgets, now, &settings) {
            Unheld::RstFollowUp => self.followup_of_recent(&key, now, seen, pkt, &mut emit),
            Unheld::RstInStorm => self.aggregate(now, seen, pkt),
            Unheld::RstAlone => {
                emit(event(seen.header(record::RST_NO_STATE, 0, now), pkt, None));
                self.recent.insert(key, RecentRst::new(now, dir));
            }
            Unheld::Packet {
                data_followup,
                start,
            } => {
                if data_followup {
                    self.followup_of_recent(&key, now, seen, pkt, &mut emit);
                }
                if start == Start::Untracked {
                    return self.count(Counter::SynsUntracked);
                }
                let mut flow = FlowState::new(pkt, dir, &likely_server);
                self.count(Counter::FlowsInserted);
                let emit_flow = |kind, flow: &_| emit(flow_event(kind, flow));
                let step = flow.step(pkt, dir, now, &settings, &likely_server, emit_flow);
                self.count_step(step);
                self.flows.insert(key, flow);
            }
        }
    }

    fn count_step(&mut self, step: Step) {
        if let Some(counter) = step.counter() {
            self.count(counter);
        }
    }

    fn followup_of_recent(
        &mut self,
        key: &FlowKey,
        now: u64,
        seen: SeenAt,
        pkt: &PacketMeta,
        emit: &mut impl FnMut(RstEvent),
    ) {
        let Some(recent) = self.recent.get_mut(key) else {
            return;
        };
        if recent.take_followup(&self.settings) {
            emit(event(seen.header(record::FOLLOW_UP, 0, now), pkt, None));
        } else {
            self.count(Counter::FollowUpsSuppressed);
        }
    }

    /// Counts an unknown-flow RST in its storm.
    fn aggregate(&mut self, now: u64, seen: SeenAt, pkt: &PacketMeta) {
        self.count(Counter::RstsAggregated);
        self.storms
            .entry(StormKey::of(pkt, seen.direction))
            .or_default()
            .count_reset(now, seen.ifindex, pkt);
    }
}

/// The replay's tables are where the release step reads a flow's state at the hold's end,
/// as `watch` reads the kernel's.
impl FlowStateSource for Replay {
    fn current(&self, key: &FlowKey) -> Option<FlowState> {
        self.flows.get(key).copied()
    }
}

/// The event `decode` makes of the record the kernel sends with `header` (whose kind says
/// which record), `pkt` and, for a record that carries one, the flow's state. A capture's
/// frames are not copied into events: the replay writes no `--pcap`.
fn event(header: RecordHeader, pkt: &PacketMeta, flow: Option<FlowState>) -> RstEvent {
    RstEvent::of_record(&header, *pkt, flow, Frame::default())
        .expect("the replay sends only records of known kinds")
}
