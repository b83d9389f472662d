//! Filters, the flow table and events: what happens to a parsed segment, the same for both
//! hooks.
//!
//! The flow table is ours (`rstwatch_common::table`): two set-associative arrays, IPv4 and
//! IPv6, whose slots the programs lock with atomic adds and the daemon reads through a memory
//! mapping. A SYN's flow never takes an established flow's slot. A RST for a flow the table
//! does not hold creates no entry at all: it is reported (or, beyond a per-CPU rate, counted
//! in `STORMS`) and remembered briefly in a per-CPU cache for its follow-ups.
//!
//! Every decision on a packet is `rstwatch_common`'s, which the capture replay
//! (`rstwatch/src/offline/replay.rs`) calls too: the filters (`FilterConfig::selects`), the flow
//! update (`FlowState::step`), what becomes of a packet whose flow the table does not hold
//! (`unheld::unheld`), how a storm is counted (`StormCount::count_reset`) and which record an event
//! is sent as (`record::of_flow_event`). What is this file's own is where things are kept: the
//! maps, the per-CPU slots and the flow table, which the replay keeps in hash maps.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{
        BPF_F_MMAPABLE, BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP,
        BPF_RB_RING_SIZE,
    },
    helpers::{bpf_ktime_get_ns, generated::bpf_ktime_get_coarse_ns},
    macros::map,
    maps::{lpm_trie::Key, Array, LpmTrie, PerCpuArray, PerCpuHashMap, RingBuf},
};
use rstwatch_common::{
    defaults,
    event::{
        record, EventKind, FlowRecord, Frame, PacketRecord, SeenAt, StormSlot, FRAME_BYTES,
        STORM_SLOTS_LOG2,
    },
    flow::Step,
    packet::FAMILY_IPV4,
    ports::{word_and_bit, PORT_SET_WORDS},
    table::{
        place, rank, same_key as same_table_key, tag_at, Key4, Key6, Lock, Place, Set, Set4, Set6,
        TableKey, Tags, Victim, Worth, WAYS,
    },
    unheld::{unheld, Budgets, RecentRst, Start, Unheld},
    zero::copy_words,
    Counter, FlowKey, FlowState, PacketMeta, Settings, StormCount, StormKey, COUNTER_COUNT,
};

const MAX_FILTER_NETS: u32 = 1024;
const MAX_STORMS: u32 = 4096;
/// Unknown-flow RSTs remembered per CPU for their follow-ups (a power of two: the slot is
/// picked with a mask).
const RECENT_RSTS: usize = 16;
/// Userspace is woken when the ring's fill crosses 1/2^N of its size; otherwise it drains on
/// its own timer, which spares a wakeup (an IPI, a VM exit on a guest) per event.
const WAKEUP_FILL_SHIFT: u64 = 4;
/// What the ring adds to each record.
const RING_RECORD_HEADER: u64 = 8;

/// The IPv4 and the IPv6 flow table, one set per element; userspace sizes them.
#[map]
static FLOWS4: Array<Set4> = Array::with_max_entries(1, BPF_F_MMAPABLE);

#[map]
static FLOWS6: Array<Set6> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// The tags of each set of `FLOWS4` and of `FLOWS6` (`table::Tags`), one element per set.
#[map]
static TAGS4: Array<Tags> = Array::with_max_entries(1, 0);

#[map]
static TAGS6: Array<Tags> = Array::with_max_entries(1, 0);

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(defaults::RING_BYTES, 0);

/// Each CPU counts the storms it sees in these slots, one storm per slot, found by the hash
/// of its key without a map lookup; a storm whose slot another holds goes to `STORMS`.
/// Slots are never freed: userspace reports each slot's growth since its last reading.
#[map]
static STORM_SLOTS: PerCpuArray<StormSlot> =
    PerCpuArray::with_max_entries(1 << STORM_SLOTS_LOG2, 0);

/// Not an LRU map: a storm's count must never vanish. When it is full, `StormMapFull` counts.
///
/// How a storm is counted is `StormCount`'s, shared with the capture replay; where is the
/// kernel's own: a per-CPU slot, else a per-CPU hash map, as a BPF program can only count in
/// maps it declares, without allocating, and the replay, which has no CPUs and allocates, keeps
/// one hash map.
#[map]
static STORMS: PerCpuHashMap<StormKey, StormCount> = PerCpuHashMap::with_max_entries(MAX_STORMS, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

/// A slot of this CPU's recent unknown-flow RSTs: the RST (`unheld::RecentRst`, shared with the
/// capture replay) and its flow's key. Kept in a few slots per CPU, found by a hash of the key,
/// where a flow may overwrite another's: a program cannot afford a map update per unknown RST.
/// The replay keeps one per flow in a hash map instead, as it has no per-packet budget and no
/// CPUs.
#[repr(C)]
pub struct RecentSlot {
    key: FlowKey,
    rst: RecentRst,
}

/// Per-CPU working memory and state: these values do not fit on the 512-byte BPF stack.
#[repr(C)]
pub struct Scratch {
    pkt: PacketMeta,
    /// Where the parser puts the TCP header's offset to drop its per-path bounds.
    tcp_offset: usize,
    key: FlowKey,
    /// `key` in the form of the table the packet's family uses (the other is stale): kept
    /// here, not on the stack, which the call chain down to `rstwatch_step` fills up.
    key4: Key4,
    key6: Key6,
    /// The flow `rstwatch_step` steps: a copy of its slot, or a new flow's state.
    flow: FlowState,
    storm: StormCount,
    /// This CPU's budgets for the current second (unknown-flow RSTs sent one by one, flows of
    /// SYNs inserted).
    budgets: Budgets,
    recent: [RecentSlot; RECENT_RSTS],
    /// The start of the current packet's frame when it is a RST, for its record.
    frame: Frame,
}

#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

#[map]
static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);

/// Indexed by port: non-zero when `--port` selected it.
#[map]
static FILTER_PORTS: Array<u8> = Array::with_max_entries(65536, 0);

/// The likely server ports of Zeek's direction heuristic, one bit each
/// (`rstwatch_common::ports::PortSet`'s words), written by userspace at start-up.
#[map]
static SERVER_PORTS: Array<u64> = Array::with_max_entries(PORT_SET_WORDS as u32, 0);

/// Whether `port` is a likely server port (`SERVER_PORTS`).
#[inline(always)]
fn likely_server(port: u16) -> bool {
    let (word, bit) = word_and_bit(port);
    SERVER_PORTS
        .get(word as u32)
        .is_some_and(|words| words & bit != 0)
}

/// IPv4-mapped IPv6 prefixes selected by `--net`.
#[map]
static FILTER_NETS: LpmTrie<[u8; 16], u8> = LpmTrie::with_max_entries(MAX_FILTER_NETS, 0);

#[inline(always)]
fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
fn count_step(step: Step) {
    if let Some(counter) = step.counter() {
        count(counter);
    }
}

/// Parses one packet, then has it tracked by `track`, the hook's global function (which runs
/// `track`). Never fails: every outcome is a counter.
#[inline(always)]
pub fn observe(data: usize, data_end: usize, vlan_hint: u16, track: impl FnOnce()) {
    count(Counter::Packets);
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let scratch = unsafe { &mut *scratch };
    let (pkt, tcp_offset) = (&mut scratch.pkt, &mut scratch.tcp_offset);
    if let Err(reason) = crate::parse::parse(data, data_end, vlan_hint, pkt, tcp_offset) {
        return count(reason);
    }
    track();
}

/// Copies the start of the frame, `wire_len` bytes long, into this CPU's scratch, for the
/// record of the RST being tracked. `load_bytes(to, offset, len)` copies `len` bytes of the
/// frame from `offset` to `to` (0, or a negative errno): `bpf_xdp_load_bytes` or
/// `bpf_skb_load_bytes`, as the hook allows.
#[inline(always)]
pub fn capture_frame(wire_len: u32, load_bytes: impl Fn(*mut c_void, u32, u32) -> i64) {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let scratch = unsafe { &mut *scratch };
    capture(&mut scratch.frame, wire_len, load_bytes);
}

/// Copies up to `FRAME_BYTES` of the frame into `frame`.
#[inline(always)]
fn capture(frame: &mut Frame, wire_len: u32, load_bytes: impl Fn(*mut c_void, u32, u32) -> i64) {
    frame.wire_len = wire_len;
    frame.captured = 0;
    // Each copy has a constant length: the helpers need one the verifier can bound, and a
    // variable length, however masked, loses its bounds on the way to the call on 6.1. A
    // shorter frame is copied as two overlapping halves, its start and its end; a parsed TCP
    // frame is at least 54 bytes long.
    const HALF: usize = FRAME_BYTES / 2;
    const QUARTER: usize = FRAME_BYTES / 4;
    let len = wire_len as usize;
    let to = frame.bytes.as_mut_ptr();
    let failed = if len >= FRAME_BYTES {
        load_bytes(to.cast(), 0, FRAME_BYTES as u32)
    } else if len >= HALF {
        overlapping_halves::<HALF>(len, to, &load_bytes)
    } else if len >= QUARTER {
        overlapping_halves::<QUARTER>(len, to, &load_bytes)
    } else {
        return;
    };
    if failed == 0 {
        frame.captured = len.min(FRAME_BYTES) as u32;
    }
}

/// Copies a frame `len` bytes long, `HALF <= len < 2 * HALF`, as its first and its last
/// `HALF` bytes; 0 if both copies succeeded.
#[inline(always)]
fn overlapping_halves<const HALF: usize>(
    len: usize,
    to: *mut u8,
    load_bytes: &impl Fn(*mut c_void, u32, u32) -> i64,
) -> i64 {
    // Masked so the verifier sees `end + HALF <= 2 * HALF <= FRAME_BYTES`; through a volatile
    // read, or the compiler, which knows the mask changes nothing, drops it.
    let from_end = len - HALF;
    // SAFETY: a read of a local.
    let end = unsafe { core::ptr::read_volatile(&from_end) } & (HALF - 1);
    // SAFETY: `end + HALF <= FRAME_BYTES` keeps the copy inside `bytes`.
    let last = unsafe { to.add(end) };
    // Both copies run; one test of their results spares the verifier a branch.
    load_bytes(to.cast(), 0, HALF as u32) | load_bytes(last.cast(), end as u32, HALF as u32)
}

/// Filters and tracks the segment the parser left in this CPU's scratch `pkt`.
/// `capture_frame` (the hook's) copies the start of the frame into the scratch; it runs only
/// for a RST whose record is sent, not for one a storm aggregate counts.
///
/// Each hook calls it from a global (exported, never inlined) function, which the verifier
/// checks once on its own, instead of once for every parse path that ends here (VLAN tags
/// times IPv6 extension chains times the option walk), which exceeds the 6.1 verifier's
/// instruction budget. A global function may take only scalars besides the context, so the
/// parsed segment comes through the per-CPU scratch (a program is not migrated between CPUs
/// while it runs), and it must return a scalar.
#[inline(always)]
pub fn track(seen: SeenAt, capture_frame: impl Fn()) {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let scratch = unsafe { &mut *scratch };
    count(Counter::TcpPackets);
    let Some(settings) = SETTINGS.get(0) else {
        return;
    };
    // The filter's lists are maps: an array by port and a longest-prefix-match trie, which
    // the kernel searches (the replay searches its lists itself).
    let port_on = |port: u16| FILTER_PORTS.get(port as u32).is_some_and(|on| *on != 0);
    let in_nets = |addr: [u8; 16]| FILTER_NETS.get(Key::new(128, addr)).is_some();
    if !settings.filter.selects(&scratch.pkt, port_on, in_nets) {
        return count(Counter::Filtered);
    }
    if scratch.pkt.is_rst() {
        count(Counter::Rsts);
    }
    // Two clocks: what enters a flow's state or a record reads the fine one (the RTT and a
    // RST's timing need it); the per-CPU budgets, the unknown-RST cache's grace period and
    // the storm counts read the coarse one (a tick's resolution), a fraction of the cost on
    // the path every packet of a flood of new 4-tuples takes. A packet of a known flow reads
    // the fine one alone.
    let fine_now = || unsafe { bpf_ktime_get_ns() };
    let dir = scratch.key.fill_from(&scratch.pkt);
    scratch.key.apply_vlan_key(settings);
    let v4 = scratch.pkt.family == FAMILY_IPV4;
    let (Place { set, tag }, way) = if v4 {
        scratch.key4 = Key4::from_flow_key(&scratch.key);
        let place = place(
            &scratch.key4,
            settings.table_seed,
            settings.table_sets_log2[0],
        );
        (place, find(&FLOWS4, &TAGS4, &scratch.key4, place))
    } else {
        scratch.key6 = Key6::from_flow_key(&scratch.key);
        let place = place(
            &scratch.key6,
            settings.table_seed,
            settings.table_sets_log2[1],
        );
        (place, find(&FLOWS6, &TAGS6, &scratch.key6, place))
    };
    // The flow is stepped on this CPU's scratch copy of its slot, locked from the load to the
    // store: `rstwatch_step` then works on one kind of pointer, so the verifier walks it once,
    // not once per table; and the load, the claim and the store are global functions of their
    // own rather than callers of it, which keeps the call chain within 5.10's stack limit.
    let step = |dir: u8| rstwatch_step(dir as u32, fine_now(), seen.direction as u32, seen.ifindex);
    let table = v4 as u32;
    if (way as usize) < WAYS {
        // Every RST of a flow the table holds is sent, with its frame.
        if scratch.pkt.is_rst() {
            capture_frame();
        }
        let at = set * WAYS as u32 + way;
        if rstwatch_load(table, at) != 0 {
            step(dir);
            rstwatch_store(table, at);
        }
        return;
    }
    let coarse_now = if crate::features::coarse_clock() {
        unsafe { bpf_ktime_get_coarse_ns() }
    } else {
        fine_now()
    };
    // The flow is not in the table: what becomes of the packet is `unheld`'s.
    let (key, pkt) = (&scratch.key, &scratch.pkt);
    let slot = &mut scratch.recent[recent_slot(key)];
    let recent = slot.rst.within_grace(coarse_now, settings) && same_key(&slot.key, key);
    let recent = recent.then_some(&slot.rst);
    match unheld(pkt, dir, recent, &mut scratch.budgets, coarse_now, settings) {
        Unheld::RstFollowUp => followup_of_recent(
            &mut slot.rst,
            fine_now(),
            seen,
            pkt,
            &scratch.frame,
            settings,
            &capture_frame,
        ),
        Unheld::RstInStorm => aggregate(&mut scratch.storm, coarse_now, seen, pkt),
        Unheld::RstAlone => {
            capture_frame();
            let now = fine_now();
            send_packet_event(record::RST_NO_STATE, now, seen, pkt, &scratch.frame);
            slot.key = *key;
            slot.rst = RecentRst::new(now, dir);
        }
        Unheld::Packet {
            data_followup,
            start,
        } => {
            if data_followup {
                // Data carries no frame: nothing to capture.
                let frame = &scratch.frame;
                followup_of_recent(&mut slot.rst, fine_now(), seen, pkt, frame, settings, || {});
            }
            let opening = match start {
                Start::Untracked => return count(Counter::SynsUntracked),
                Start::Opening => true,
                Start::Midstream => false,
            };
            let flags = table | (opening as u32) << 1 | (dir as u32) << 2 | (tag as u32) << 8;
            let claimed = rstwatch_claim(flags, set);
            if claimed != 0 {
                step(dir);
                rstwatch_store(table, claimed - 1);
            }
        }
    }
}

/// The way of `key` in its set at `place`, `WAYS` when the set does not hold it. Only the
/// keys whose tag is the key's are read: a key the table does not hold mostly costs a read of
/// the dense tags, not of its set.
#[inline(always)]
fn find<K: TableKey>(table: &Array<Set<K>>, tags: &Array<Tags>, key: &K, place: Place) -> u32 {
    let (Some(&held_tags), Some(held)) = (tags.get(place.set), table.get(place.set)) else {
        return WAYS as u32;
    };
    let mut way = 0;
    while way < WAYS {
        if tag_at(held_tags, way) == place.tag && same_table_key(&held.keys[way], key) {
            return way as u32;
        }
        way += 1;
    }
    WAYS as u32
}

/// Steps this CPU's scratch `flow` with the scratch packet, sent in direction `dir`, and
/// reports what it emits. Returns 0.
///
/// A global function, verified once on its own rather than at each of its call sites and
/// along every path leading to them: the flow update (Zeek history, repeats, baselines)
/// branches on nearly every flag, and inlined it multiplies the paths past the verifier's
/// budget. It steps the scratch copy of a slot, one kind of pointer, rather than the slot of
/// either table, which the verifier would walk once per table. Global functions take no
/// pointers to map values, hence the re-lookup of the scratch inside.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rstwatch_step(dir: u32, now: u64, direction: u32, ifindex: u32) -> u32 {
    let (Some(scratch), Some(settings)) = (SCRATCH.get_ptr_mut(0), SETTINGS.get(0)) else {
        return 0;
    };
    let scratch = unsafe { &mut *scratch };
    let seen = SeenAt {
        direction: direction as u8,
        ifindex,
    };
    let (pkt, frame) = (&scratch.pkt, &scratch.frame);
    let emit =
        |kind: EventKind, flow: &FlowState| send_flow_event(kind, now, seen, pkt, frame, flow);
    count_step(
        scratch
            .flow
            .step(pkt, dir as u8, now, settings, &likely_server, emit),
    );
    0
}

/// Locks slot `at` (set * WAYS + way) of the IPv4 table (`v4` non-zero) or the IPv6 one and
/// copies its flow into this CPU's scratch, for `rstwatch_step`; `rstwatch_store` writes it
/// back and unlocks. 1 when loaded; 0 when the slot stayed busy or its flow left it since the
/// lookup (counted). Global functions take at most five scalars and no pointers to map
/// values, hence slots by index and the re-lookups inside.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rstwatch_load(v4: u32, at: u32) -> u32 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let scratch = unsafe { &mut *scratch };
    let (pkt, flow) = (&scratch.pkt, &mut scratch.flow);
    let loaded = if v4 != 0 {
        load(&FLOWS4, &scratch.key4, at, pkt, flow)
    } else {
        load(&FLOWS6, &scratch.key6, at, pkt, flow)
    };
    loaded as u32
}

#[inline(always)]
fn load<K: TableKey>(
    table: &Array<Set<K>>,
    key: &K,
    at: u32,
    pkt: &PacketMeta,
    flow: &mut FlowState,
) -> bool {
    let (set, way) = (at / WAYS as u32, at as usize & (WAYS - 1));
    let Some(held) = table.get_ptr_mut(set) else {
        return false;
    };
    // SAFETY: a value of the table, valid for the whole run; its slot is this CPU's while it
    // holds the slot's lock.
    let held = unsafe { &mut *held };
    if rstwatch_lock(K::V4 as u32, at) == 0 {
        update_lost(pkt);
        return false;
    }
    let slot = &mut held.slots[way];
    if !same_table_key(&held.keys[way], key) {
        unlock(&mut slot.lock);
        update_lost(pkt);
        return false;
    }
    // SAFETY: the slot's flow and this CPU's scratch, both valid for the whole run.
    unsafe { copy_words(&slot.flow, flow) };
    true
}

/// Writes this CPU's scratch flow into slot `at` of the IPv4 table (`v4` non-zero) or the
/// IPv6 one, which `rstwatch_load` or `rstwatch_claim` locked, and unlocks it. Returns 0.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rstwatch_store(v4: u32, at: u32) -> u32 {
    let Some(scratch) = SCRATCH.get_ptr(0) else {
        return 0;
    };
    let flow = unsafe { &(*scratch).flow };
    if v4 != 0 {
        store(&FLOWS4, at, flow);
    } else {
        store(&FLOWS6, at, flow);
    }
    0
}

#[inline(always)]
fn store<K: TableKey>(table: &Array<Set<K>>, at: u32, flow: &FlowState) {
    let (set, way) = (at / WAYS as u32, at as usize & (WAYS - 1));
    if let Some(held) = table.get_ptr_mut(set) {
        // SAFETY: as in `load`; this CPU holds the slot's lock.
        let slot = unsafe { &mut (*held).slots[way] };
        unsafe { copy_words(flow, &mut slot.flow) };
        unlock(&mut slot.lock);
    }
}

/// Claims a slot of set `set` for this CPU's scratch packet's new flow (`table::Victim`'s):
/// locks it, writes the flow's key there and makes the scratch flow the new flow's empty
/// state, for `rstwatch_step` and then `rstwatch_store`. `table`: bit 0 set for the IPv4
/// table, bit 1 when the packet only opens its flow (a SYN), bit 2 the packet's direction in
/// its flow, bits 8 to 15 the key's tag. Returns the slot's index plus one, or 0 when there
/// is no slot to take (counted).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rstwatch_claim(table: u32, set: u32) -> u32 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let scratch = unsafe { &mut *scratch };
    let (opening, dir) = (table & 2 != 0, (table >> 2 & 1) as u8);
    let place = Place {
        set,
        tag: (table >> 8) as u8,
    };
    let (pkt, flow) = (&scratch.pkt, &mut scratch.flow);
    let way = if table & 1 != 0 {
        claim(&FLOWS4, &TAGS4, &scratch.key4, place, opening, pkt)
    } else {
        claim(&FLOWS6, &TAGS6, &scratch.key6, place, opening, pkt)
    };
    match way {
        Some(way) => {
            flow.reset(pkt, dir, &likely_server);
            set * WAYS as u32 + way as u32 + 1
        }
        None => 0,
    }
}

#[inline(always)]
fn claim<K: TableKey>(
    table: &Array<Set<K>>,
    tags: &Array<Tags>,
    key: &K,
    Place { set, tag }: Place,
    opening: bool,
    pkt: &PacketMeta,
) -> Option<usize> {
    let (held, held_tags) = (table.get_ptr_mut(set)?, tags.get_ptr_mut(set)?);
    // SAFETY: as in `load`; the tags of the set, a value of their array.
    let (held, held_tags) = unsafe { (&mut *held, &mut *held_tags) };
    // Read without the slots' locks: a choice, which the lock below confirms.
    let mut victim = Victim::new();
    let seen_tags = *held_tags;
    let mut i = 0;
    while i < WAYS {
        let held_flow = &held.slots[i].flow;
        let worth = Worth::of(tag_at(seen_tags, i) != 0, held_flow);
        victim.offer(i, rank(worth, held_flow.last_ns()));
        i += 1;
    }
    let Some(way) = victim.way(opening) else {
        count(Counter::SynsNoRoom);
        return None;
    };
    let way = way & (WAYS - 1);
    if rstwatch_lock(K::V4 as u32, set * WAYS as u32 + way as u32) == 0 {
        update_lost(pkt);
        return None;
    }
    let slot = &mut held.slots[way];
    let evicted = Worth::of(held.keys[way].is_used(), &slot.flow);
    if opening && evicted == Worth::Established {
        unlock(&mut slot.lock);
        count(Counter::SynsNoRoom);
        return None;
    }
    // Another CPU comparing keys meanwhile sees this one half written and no match: a packet
    // of the new flow that comes at that very moment may start the flow a second time, in
    // another slot of the set, where it ages out.
    held.keys[way] = *key;
    // SAFETY: byte `way` of the set's tags, which only this slot's lock holder writes.
    unsafe { core::ptr::write_volatile((held_tags as *mut Tags).cast::<u8>().add(way), tag) };
    count(Counter::FlowsInserted);
    if evicted != Worth::Free {
        count(Counter::FlowsEvicted);
    }
    if evicted == Worth::Established {
        count(Counter::EstablishedEvicted);
    }
    Some(way)
}

/// Tries to take the lock (`table::Lock`) of slot `at` (set * WAYS + way) of the IPv4 table
/// (`v4` non-zero) or the IPv6 one for a while: a writer holds a slot for one packet's
/// update, a few hundred instructions. 1 when taken. A global function, so that the verifier
/// walks the wait once, not once per way out of it along the rest of the caller; it takes
/// the slot by index, as global functions take no pointers on 5.10.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rstwatch_lock(v4: u32, at: u32) -> u32 {
    let (set, way) = (at / WAYS as u32, at as usize & (WAYS - 1));
    let lock = if v4 != 0 {
        match FLOWS4.get_ptr_mut(set) {
            // SAFETY: a value of the table, valid for the whole run.
            Some(held) => unsafe { &mut (*held).slots[way].lock as *mut Lock },
            None => return 0,
        }
    } else {
        match FLOWS6.get_ptr_mut(set) {
            // SAFETY: as above.
            Some(held) => unsafe { &mut (*held).slots[way].lock as *mut Lock },
            None => return 0,
        }
    };
    let mut tries = 0;
    while tries < LOCK_TRIES {
        // SAFETY: a slot's lock in a flow table's value, 8-aligned.
        let word = unsafe { core::ptr::read_volatile(lock.cast::<u64>()) };
        if Lock::is_free(word) {
            let begun = word as u32;
            unsafe { atomic_add(&mut (*lock).begun, 1) };
            if unsafe { core::ptr::read_volatile(&(*lock).begun) } == begun.wrapping_add(1) {
                return 1;
            }
            // Another writer began at the same moment: neither owns the slot.
            unlock(lock);
        }
        tries += 1;
    }
    0
}

/// Counts a packet whose flow's slot stayed busy.
#[inline(always)]
fn update_lost(pkt: &PacketMeta) {
    count(Counter::FlowUpdatesLost);
    if pkt.is_rst() {
        count(Counter::RstUpdatesLost);
    }
}

/// Attempts to take a slot's lock before its packet is counted in `FlowUpdatesLost`.
const LOCK_TRIES: u32 = 64;

#[inline(always)]
fn unlock(lock: *mut Lock) {
    // SAFETY: as in `rstwatch_lock`.
    unsafe { atomic_add(&mut (*lock).ended, 1) };
}

/// `*word += value` as one atomic instruction whose result is not used: the only atomic
/// Linux 5.10's verifier accepts (`BPF_XADD`). Through the compiler intrinsic: the BPF
/// target has no `AtomicU32`.
#[inline(always)]
unsafe fn atomic_add(word: *mut u32, value: u32) {
    use core::intrinsics::{atomic_xadd, AtomicOrdering};
    // SAFETY: the caller's `word` is a valid, 4-aligned u32.
    unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(word, value) };
}

#[inline(always)]
fn recent_slot(key: &FlowKey) -> usize {
    let mix = key.port[0] ^ key.port[1] ^ (key.addr[0][15] as u16) ^ (key.addr[1][15] as u16);
    (mix as usize) & (RECENT_RSTS - 1)
}

/// Word-wise comparison: an array comparison would lower to `memcmp`, which BPF cannot call.
#[inline(always)]
fn same_key(a: &FlowKey, b: &FlowKey) -> bool {
    const WORDS: usize = core::mem::size_of::<FlowKey>() / 8;
    let (a, b) = (
        (a as *const FlowKey).cast::<u64>(),
        (b as *const FlowKey).cast::<u64>(),
    );
    let mut i = 0;
    while i < WORDS {
        // SAFETY: FlowKey is 8-aligned and WORDS words long.
        if unsafe { *a.add(i) != *b.add(i) } {
            return false;
        }
        i += 1;
    }
    true
}

/// Sends a follow-up of an unknown-flow RST unless the limit is reached; `capture_frame`
/// runs first when it is sent.
#[inline(always)]
fn followup_of_recent(
    recent: &mut RecentRst,
    now: u64,
    seen: SeenAt,
    pkt: &PacketMeta,
    frame: *const Frame,
    settings: &Settings,
    capture_frame: impl FnOnce(),
) {
    if recent.take_followup(settings) {
        capture_frame();
        // SAFETY: this CPU's scratch frame, read only after `capture_frame` wrote it.
        send_packet_event(record::FOLLOW_UP, now, seen, pkt, unsafe { &*frame });
    } else {
        count(Counter::FollowUpsSuppressed);
    }
}

/// Counts an unknown-flow RST under its sender prefix and port: in its slot when the slot is
/// free or already counts this storm, else in `STORMS`; userspace reports the counts.
#[inline(always)]
fn aggregate(storm: &mut StormCount, now: u64, seen: SeenAt, pkt: &PacketMeta) {
    count(Counter::RstsAggregated);
    let key = StormKey::of(pkt, seen.direction);
    if let Some(slot) = STORM_SLOTS.get_ptr_mut(key.slot(STORM_SLOTS_LOG2)) {
        // SAFETY: this CPU's slot, used by this CPU only while the program runs.
        let slot = unsafe { &mut *slot };
        if slot.count.resets == 0 {
            slot.key = key;
        }
        if slot.key.same(&key) {
            return slot.count.count_reset(now, seen.ifindex, pkt);
        }
    }
    if let Some(counted) = STORMS.get_ptr_mut(&key) {
        // SAFETY: this CPU's value, used by this CPU only while the program runs. It starts
        // zeroed, sample and all, when another CPU made the entry.
        return unsafe { &mut *counted }.count_reset(now, seen.ifindex, pkt);
    }
    storm.start(now, seen.ifindex, pkt);
    if STORMS.insert(&key, &*storm, BPF_NOEXIST as u64).is_err() {
        count(Counter::StormMapFull);
    }
}

/// Sends a flow's event as its record (`record::of_flow_event`): a RST with the flow's state,
/// payload after a RST with its own packet alone.
#[inline(always)]
fn send_flow_event(
    kind: EventKind,
    now: u64,
    seen: SeenAt,
    pkt: &PacketMeta,
    frame: &Frame,
    flow: &FlowState,
) {
    let kind = record::of_flow_event(kind, pkt);
    if !record::carries_flow(kind) {
        return send_packet_event(kind, now, seen, pkt, frame);
    }
    let Some(mut entry) = EVENTS.reserve::<FlowRecord>(0) else {
        return count(Counter::EventsLost);
    };
    // Filled field by field in the ring buffer itself: a whole record would not fit on the
    // BPF stack.
    let event = entry.as_mut_ptr();
    unsafe {
        (*event).header = seen.header(kind, size_of::<FlowRecord>(), now);
        core::ptr::copy_nonoverlapping(pkt, &mut (*event).pkt, 1);
        (*event)._pad = 0;
        core::ptr::copy_nonoverlapping(flow, &mut (*event).flow, 1);
        copy_frame(pkt, frame, &mut (*event).frame);
    }
    entry.submit(wakeup_flag(size_of::<FlowRecord>()));
    count(Counter::EventsSent);
}

#[inline(always)]
fn send_packet_event(kind: u8, now: u64, seen: SeenAt, pkt: &PacketMeta, frame: &Frame) {
    let Some(mut entry) = EVENTS.reserve::<PacketRecord>(0) else {
        return count(Counter::EventsLost);
    };
    let event = entry.as_mut_ptr();
    unsafe {
        (*event).header = seen.header(kind, size_of::<PacketRecord>(), now);
        core::ptr::copy_nonoverlapping(pkt, &mut (*event).pkt, 1);
        (*event)._pad = 0;
        copy_frame(pkt, frame, &mut (*event).frame);
    }
    entry.submit(wakeup_flag(size_of::<PacketRecord>()));
    count(Counter::EventsSent);
}

/// A RST's record carries the frame `observe` copied for it; a data follow-up's says it has
/// none (its bytes are left as the ring had them: only counted bytes are ever read).
#[inline(always)]
fn copy_frame(pkt: &PacketMeta, frame: &Frame, to: &mut Frame) {
    if pkt.is_rst() {
        // SAFETY: this CPU's scratch and a reserved record, both valid and 8-aligned.
        unsafe { copy_words(frame, to) };
    } else {
        to.captured = 0;
        to.wire_len = 0;
    }
}

/// No wakeup while the ring holds little: the reader drains it on a short timer anyway, and
/// a wakeup per event costs an interrupt per event under a storm. One forced wakeup when this
/// record (`len` bytes, already reserved) takes the fill past the threshold, not one per record
/// above it: a reader that is busy draining needs no more.
#[inline(always)]
fn wakeup_flag(len: usize) -> u64 {
    let filled = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let threshold = EVENTS.query(BPF_RB_RING_SIZE as u64) >> WAKEUP_FILL_SHIFT;
    let record = (len as u64 + RING_RECORD_HEADER + 7) & !7;
    if filled > threshold && filled.saturating_sub(record) <= threshold {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}
