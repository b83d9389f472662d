//! Filters, flow table and events: what happens to a parsed segment, the same for both hooks.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{lpm_trie::Key, Array, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use rstwatch_common::{
    defaults, event::EventKind, flow::Step, Counter, FlowKey, FlowState, PacketMeta, RstEvent,
    Settings, COUNTER_COUNT,
};

const MAX_FILTER_NETS: u32 = 1024;

#[map]
static FLOWS: LruHashMap<FlowKey, FlowState> = LruHashMap::with_max_entries(defaults::FLOWS, 0);

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(defaults::RING_BYTES, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

/// Per-CPU working memory: these values do not fit on the 512-byte BPF stack together.
#[repr(C)]
pub struct Scratch {
    pkt: PacketMeta,
    key: FlowKey,
    new_flow: FlowState,
}

#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

#[map]
static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);

/// Indexed by port: non-zero when `--port` selected it.
#[map]
static FILTER_PORTS: Array<u8> = Array::with_max_entries(65536, 0);

/// IPv4-mapped IPv6 prefixes selected by `--net`.
#[map]
static FILTER_NETS: LpmTrie<[u8; 16], u8> = LpmTrie::with_max_entries(MAX_FILTER_NETS, 0);

#[inline(always)]
fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        unsafe { *slot += 1 };
    }
}

/// Parses, filters and tracks one packet. Never fails: every outcome is a counter.
#[inline(always)]
pub fn observe(data: usize, data_end: usize, vlan_hint: u16, direction: u8, ifindex: u32) {
    count(Counter::Packets);
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let Scratch { pkt, key, new_flow } = unsafe { &mut *scratch };
    if let Err(reason) = crate::parse::parse(data, data_end, vlan_hint, pkt) {
        return count(reason);
    }
    count(Counter::TcpPackets);
    let Some(settings) = SETTINGS.get(0) else {
        return;
    };
    if !selected(pkt, settings) {
        return count(Counter::Filtered);
    }
    if pkt.is_rst() {
        count(Counter::Rsts);
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let dir = key.fill_from(pkt);
    let (key, pkt) = (&*key, &*pkt);
    let emit = |kind: EventKind, flow: &FlowState| {
        send(kind, now, ifindex, direction, dir, key, pkt, flow)
    };
    if let Some(flow) = FLOWS.get_ptr_mut(key) {
        // Known flow: one lookup, then writes in place.
        match unsafe { &mut *flow }.step(pkt, dir, now, settings, emit) {
            Step::Tracked => {}
            Step::Recycled => count(Counter::FlowsRecycled),
            Step::FollowUpSuppressed => count(Counter::FollowUpsSuppressed),
        }
        return;
    }
    new_flow.reset(pkt, dir);
    new_flow.step(pkt, dir, now, settings, emit);
    match FLOWS.insert(key, &*new_flow, 0) {
        Ok(()) => count(Counter::FlowsInserted),
        Err(_) => count(Counter::FlowInsertFailed),
    }
}

#[inline(always)]
fn selected(pkt: &PacketMeta, settings: &Settings) -> bool {
    if settings.filter.ports != 0 {
        let port_on = |port: u16| FILTER_PORTS.get(port as u32).is_some_and(|on| *on != 0);
        if !port_on(pkt.src_port) && !port_on(pkt.dst_port) {
            return false;
        }
    }
    if settings.filter.nets != 0 {
        let in_nets = |addr: [u8; 16]| FILTER_NETS.get(Key::new(128, addr)).is_some();
        if !in_nets(pkt.src_addr) && !in_nets(pkt.dst_addr) {
            return false;
        }
    }
    true
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn send(
    kind: EventKind,
    now: u64,
    ifindex: u32,
    direction: u8,
    dir: u8,
    key: &FlowKey,
    pkt: &PacketMeta,
    flow: &FlowState,
) {
    let Some(mut entry) = EVENTS.reserve::<RstEvent>(0) else {
        return count(Counter::EventsLost);
    };
    // Filled field by field in the ring buffer itself: a whole `RstEvent` would not fit on
    // the BPF stack.
    let event = entry.as_mut_ptr();
    unsafe {
        (*event).ts_ns = now;
        (*event).ifindex = ifindex;
        (*event).kind = kind as u8;
        (*event).direction = direction;
        (*event).dir = dir;
        (*event)._pad = 0;
        core::ptr::copy_nonoverlapping(key, &mut (*event).key, 1);
        core::ptr::copy_nonoverlapping(pkt, &mut (*event).pkt, 1);
        core::ptr::copy_nonoverlapping(flow, &mut (*event).flow, 1);
    }
    entry.submit(0);
    count(Counter::EventsSent);
}
