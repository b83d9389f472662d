//! The flow table's layout and rules, shared by the kernel programs, which own the table, and
//! the daemon, which reads it through a memory mapping.
//!
//! Two set-associative arrays, IPv4 flows apart from IPv6 ones so that an IPv4 flow pays for
//! a 16-byte key, not a 40-byte one. A flow's set is found by a seeded hash of its key; the
//! set's keys share the set's first cache line(s), so one line tells whether, and where, the
//! set holds a flow. There is no per-element header and no second table: a flow that has
//! only opened (`FlowState::is_half_open`) is a state of its slot, and a new flow takes a free
//! slot, else the slot `victim` picks, closed and opening flows first (a SYN never takes an
//! established flow's slot).
//!
//! Each slot has a `Lock` that needs no atomic but add, which every supported kernel has:
//! the ingress and egress of one flow run on different CPUs, and the daemon copies states
//! while programs write them. Whatever a writer cannot lock (the slot stays busy) and
//! whatever a reader cannot copy whole is counted, never silently lost.

use crate::flow::{seen, FlowKey, FlowState};

/// Slots per set.
pub const WAYS: usize = 4;

/// An IPv4 flow's key: the canonical 4-tuple of `FlowKey`, addresses in 4 bytes.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Key4 {
    pub addr: [[u8; 4]; 2],
    pub port: [u16; 2],
    pub vlan: u16,
    /// Non-zero when the slot holds a flow.
    pub used: u16,
}

/// An IPv6 flow's key.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Key6 {
    pub addr: [[u8; 16]; 2],
    pub port: [u16; 2],
    pub vlan: u16,
    pub used: u16,
}

/// A slot's lock, taken with atomic adds only. Equal halves: nobody writes. A writer adds 1
/// to `begun` after it saw them equal, and owns the slot if `begun` then reads one more than
/// it saw (no other writer began in between); it adds 1 to `ended` when done, whether it
/// owned the slot or not. A reader copies the slot between two reads of the whole lock and
/// keeps the copy when both were the same and equal halves.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lock {
    pub begun: u32,
    pub ended: u32,
}

impl Lock {
    /// The lock read as one word, `begun` in the low half.
    pub const fn word(begun: u32, ended: u32) -> u64 {
        begun as u64 | (ended as u64) << 32
    }

    /// No writer holds the lock word `word`.
    pub const fn is_free(word: u64) -> bool {
        word as u32 == (word >> 32) as u32
    }
}

/// A slot's value: its lock and its flow's state.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Slot {
    pub lock: Lock,
    pub flow: FlowState,
}

/// One element of a flow table's array map: the keys first, then their slots, in order.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Set<K> {
    pub keys: [K; WAYS],
    pub slots: [Slot; WAYS],
}

pub type Set4 = Set<Key4>;
pub type Set6 = Set<Key6>;

/// A table key: a fixed number of 64-bit words, the last of which holds `used`.
pub trait TableKey: Copy + Default {
    /// Words of the key.
    const WORDS: usize;
    /// The key of the IPv4 table.
    const V4: bool;
    /// The key of `key`'s flow in this table's form.
    fn from_flow_key(key: &FlowKey) -> Self;
    /// Word `i` of the key, `i < WORDS`.
    #[inline(always)]
    fn word(&self, i: usize) -> u64 {
        key_word(self, i)
    }
    fn is_used(&self) -> bool;
}

/// Word `i` of a plain-old-data key through a raw read: no bounds check for the verifier to
/// follow, and no `memcpy`.
#[inline(always)]
fn key_word<K>(key: &K, i: usize) -> u64 {
    let words = core::mem::size_of::<K>() / 8;
    // SAFETY: `K` is an 8-aligned key of `words` words; the index is wrapped into them.
    unsafe { core::ptr::read((key as *const K).cast::<u64>().add(i % words)) }
}

impl TableKey for Key4 {
    const WORDS: usize = 2;
    const V4: bool = true;

    #[inline(always)]
    fn from_flow_key(key: &FlowKey) -> Self {
        // One 32-bit load an address (BPF has no unaligned load).
        const _: () = assert!(core::mem::align_of::<FlowKey>() >= 4);
        // SAFETY: the last 4 bytes of an address of a 4-aligned `FlowKey`, at a 4-aligned offset.
        let v4 = |a: &[u8; 16]| {
            unsafe { core::ptr::read(a.as_ptr().add(12).cast::<u32>()) }.to_ne_bytes()
        };
        Self {
            addr: [v4(&key.addr[0]), v4(&key.addr[1])],
            port: key.port,
            vlan: key.vlan,
            used: 1,
        }
    }

    fn is_used(&self) -> bool {
        self.used != 0
    }
}

impl TableKey for Key6 {
    const WORDS: usize = 5;
    const V4: bool = false;

    #[inline(always)]
    fn from_flow_key(key: &FlowKey) -> Self {
        Self {
            addr: key.addr,
            port: key.port,
            vlan: key.vlan,
            used: 1,
        }
    }

    fn is_used(&self) -> bool {
        self.used != 0
    }
}

/// Where a key lives in a table: its set and its tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    pub set: u32,
    /// Never 0, which marks a free way in a set's `Tags`.
    pub tag: u8,
}

/// A set's tags, one byte per way (way `i` in byte `i`, little end first): the tag of the
/// way's key, 0 while the way is free. The tags of every set make an array of their own,
/// dense enough to stay in the CPU's caches, so that a packet of a flow the table does not
/// hold (a flood's 4-tuples) is told so without reading its set, whose line is cold in a
/// table of hundreds of megabytes; and a packet of a held flow compares only the keys whose
/// tag is its own. A way's tag is written, a byte at a time, by its lock's holder after
/// the key.
pub type Tags = u32;

/// The tag of way `way` in `tags`.
#[inline(always)]
pub const fn tag_at(tags: Tags, way: usize) -> u8 {
    (tags >> ((way & (WAYS - 1)) * 8)) as u8
}

/// The place of `key` in a table of `2^sets_log2` sets: a hash of its words seeded with
/// `Settings::table_seed`, so that nobody who does not know the seed can aim 4-tuples at one
/// set. The tag comes from hash bits the set does not use.
#[inline(always)]
pub fn place<K: TableKey>(key: &K, seed: u64, sets_log2: u8) -> Place {
    const MUL: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut hash = seed;
    let mut i = 0;
    while i < K::WORDS {
        hash = (hash ^ key.word(i)).wrapping_mul(MUL);
        hash ^= hash >> 29;
        i += 1;
    }
    hash = hash.wrapping_mul(MUL);
    let mask = (1u64 << (sets_log2 & 31)) - 1;
    let tag = (hash >> 24) as u8;
    Place {
        set: ((hash >> 32) & mask) as u32,
        tag: if tag == 0 { 1 } else { tag },
    }
}

/// Whether the key in a set's way `a` is `b`, word by word (an array comparison would lower
/// to `memcmp`, which BPF cannot call).
#[inline(always)]
pub fn same_key<K: TableKey>(a: &K, b: &K) -> bool {
    let mut i = 0;
    while i < K::WORDS {
        if a.word(i) != b.word(i) {
            return false;
        }
        i += 1;
    }
    true
}

/// Sets of a table sized for `flows` flows, log2: a power of two, at least one set.
pub fn sets_log2(flows: u32) -> u8 {
    (flows.div_ceil(WAYS as u32).max(1))
        .next_power_of_two()
        .trailing_zeros() as u8
}

/// Flows of the IPv6 table beside an IPv4 table of `flows`: a quarter, at least one set.
pub fn ipv6_flows(flows: u32) -> u32 {
    (flows / 4).max(WAYS as u32)
}

/// How much a slot's flow is worth keeping, lowest first: what `victim` gives up first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Worth {
    /// No flow.
    Free,
    /// Reset, or closed by a FIN from each side: only a late packet may still need it.
    Closed,
    /// Only opened: no handshake completed (what a SYN flood leaves).
    Opening,
    Established,
}

impl Worth {
    pub fn of(used: bool, flow: &FlowState) -> Self {
        if !used {
            Worth::Free
        } else if flow.is_closed() {
            Worth::Closed
        } else if flow.is_half_open() {
            Worth::Opening
        } else {
            Worth::Established
        }
    }
}

/// A way's claim to keep its flow, lowest first: its worth, then when it was last active
/// (ns of the kernel's clock, below 2^60: 36 years of uptime).
#[inline(always)]
pub fn rank(worth: Worth, last_ns: u64) -> u64 {
    (worth as u64) << 60 | last_ns.min((1 << 60) - 1)
}

/// Picks the way a new flow takes in a set: the way of the lowest `rank` offered. The best
/// so far is kept in scalars: a stack array of ranks indexed by a variable is more than the
/// verifier follows.
#[derive(Clone, Copy, Debug)]
pub struct Victim {
    way: usize,
    rank: u64,
}

impl Victim {
    #[inline(always)]
    pub const fn new() -> Self {
        Self {
            way: 0,
            rank: u64::MAX,
        }
    }

    #[inline(always)]
    pub fn offer(&mut self, way: usize, rank: u64) {
        if rank < self.rank {
            (self.way, self.rank) = (way, rank);
        }
    }

    /// The way of the lowest rank offered; `None` when a new flow that only opens
    /// (`opening`) would have to take an established flow's slot.
    #[inline(always)]
    pub fn way(&self, opening: bool) -> Option<usize> {
        if opening && self.rank >> 60 >= Worth::Established as u64 {
            return None;
        }
        Some(self.way)
    }
}

impl Default for Victim {
    fn default() -> Self {
        Self::new()
    }
}

impl FlowState {
    /// The flow has only opened: neither side sent anything but SYNs (no ACK without SYN, no
    /// payload, FIN or RST), as a SYN flood's flows and a handshake in progress.
    pub const fn is_half_open(&self) -> bool {
        let beyond = seen::ACK | seen::DATA | seen::FIN | seen::RST;
        (self.dir[0].seen | self.dir[1].seen) & beyond == 0
    }

    /// The flow was reset, or closed by a FIN from each side.
    pub const fn is_closed(&self) -> bool {
        self.has_rst() || (self.dir[0].has(seen::FIN) && self.dir[1].has(seen::FIN))
    }
}

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::Set4 {}
    unsafe impl aya::Pod for super::Set6 {}
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::collections::HashSet;

    use super::*;
    use crate::packet::{ipv4_mapped, FAMILY_IPV4, FAMILY_IPV6};

    fn flow_key4(i: u16) -> FlowKey {
        FlowKey {
            addr: [ipv4_mapped([198, 18, 0, 1]), ipv4_mapped([198, 18, 1, 2])],
            port: [40_000 + i, 443],
            family: FAMILY_IPV4,
            ..FlowKey::default()
        }
    }

    #[test]
    fn layouts_have_no_padding_and_keys_fill_the_first_line() {
        use core::mem::size_of;
        assert_eq!(size_of::<Key4>(), 16);
        assert_eq!(size_of::<Key6>(), 40);
        assert_eq!(size_of::<Slot>(), 8 + size_of::<FlowState>());
        assert_eq!(size_of::<Set4>(), WAYS * (16 + size_of::<Slot>()));
        assert_eq!(size_of::<Set6>(), WAYS * (40 + size_of::<Slot>()));
        assert_eq!(
            WAYS * size_of::<Key4>(),
            64,
            "an IPv4 set's keys in one cache line"
        );
    }

    #[test]
    fn keys_take_their_tables_form() {
        let v4 = Key4::from_flow_key(&flow_key4(7));
        assert_eq!(v4.addr, [[198, 18, 0, 1], [198, 18, 1, 2]]);
        assert_eq!((v4.port, v4.vlan), ([40_007, 443], 0));
        let flow6 = FlowKey {
            addr: [
                [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                [0x20; 16],
            ],
            port: [1, 2],
            vlan: 3,
            family: FAMILY_IPV6,
            _pad: 0,
        };
        let v6 = Key6::from_flow_key(&flow6);
        assert_eq!(
            (v6.addr, v6.port, v6.vlan),
            (flow6.addr, flow6.port, flow6.vlan)
        );
        assert!(v4.is_used() && v6.is_used() && !Key4::default().is_used());
    }

    #[test]
    fn sets_spread_keys_and_depend_on_the_seed() {
        let sets_log2 = 10;
        let spread = |seed| {
            (0..4096)
                .map(|i| place(&Key4::from_flow_key(&flow_key4(i)), seed, sets_log2).set)
                .collect::<std::vec::Vec<_>>()
        };
        let (a, b) = (spread(1), spread(2));
        assert!(a.iter().all(|&set| set < 1 << sets_log2));
        let distinct = a.iter().collect::<HashSet<_>>().len();
        assert!(distinct > 900, "4096 keys in {distinct} of 1024 sets");
        assert_ne!(a, b, "another seed, other sets");
    }

    #[test]
    fn same_key_compares_every_word() {
        let a = Key6::from_flow_key(&flow_key4(1));
        let mut b = a;
        assert!(same_key(&a, &b));
        b.addr[1][15] ^= 1;
        assert!(!same_key(&a, &b));
        let (c, mut d) = (
            Key4::from_flow_key(&flow_key4(1)),
            Key4::from_flow_key(&flow_key4(1)),
        );
        d.used = 0;
        assert!(!same_key(&c, &d), "a free slot never matches");
    }

    #[test]
    fn table_sizes_round_up_to_whole_sets() {
        assert_eq!(sets_log2(1_048_576), 18);
        assert_eq!(sets_log2(1_000_000), 18);
        assert_eq!(sets_log2(1), 0);
        assert_eq!(ipv6_flows(1_048_576), 262_144);
        assert_eq!(ipv6_flows(2), WAYS as u32);
    }

    #[test]
    fn a_new_flow_takes_the_least_worth_then_the_oldest() {
        use Worth::*;
        let victim = |worth: [Worth; WAYS], opening| {
            let last = [40, 10, 30, 20];
            let mut victim = Victim::new();
            for i in 0..WAYS {
                victim.offer(i, rank(worth[i], last[i]));
            }
            victim.way(opening)
        };
        assert_eq!(victim([Established, Free, Closed, Opening], false), Some(1));
        assert_eq!(
            victim([Established, Opening, Closed, Opening], true),
            Some(2)
        );
        assert_eq!(
            victim([Opening, Established, Established, Opening], true),
            Some(3)
        );
        assert_eq!(victim([Established; WAYS], false), Some(1), "the oldest");
        assert_eq!(
            victim([Established; WAYS], true),
            None,
            "a SYN never takes an established flow's slot"
        );
        assert!(rank(Opening, u64::MAX) < rank(Established, 0));
    }

    #[test]
    fn lock_words_are_free_when_both_halves_agree() {
        assert!(Lock::is_free(Lock::word(7, 7)));
        assert!(!Lock::is_free(Lock::word(8, 7)));
        assert!(Lock::is_free(Lock::word(0, 0)));
        assert_eq!(Lock::word(1, 2), 1 | 2 << 32);
    }
}
