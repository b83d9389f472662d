//! The presence filter: one bit per slot, set for every flow key the kernel puts in a flow
//! table, so that a packet of a flow neither table holds (a flood of new 4-tuples) is known
//! as such from a small array that stays in the CPU's cache, instead of from two hash-table
//! lookups whose buckets do not.
//!
//! A clear bit proves the key is in no table; a set bit only says it may be (another key
//! with the same slot, or a flow evicted since). Bits are never cleared one by one: the
//! kernel sets a key's bit in both generations whenever it inserts the key, and the daemon
//! rebuilds the inactive generation from the tables' keys, then makes it the active one.
//! Both sides set bits with an atomic OR, so neither undoes the other's.

use crate::flow::FlowKey;

/// Bytes of one element of the filter's array map: the kernel indexes chunks by the slot's
/// high bits and words within a chunk by its low bits.
pub const CHUNK_BYTES: usize = 4096;
pub const CHUNK_WORDS: usize = CHUNK_BYTES / 8;
/// Slots (bits) per chunk, log2.
pub const CHUNK_SHIFT: u32 = (CHUNK_BYTES * 8).trailing_zeros();
/// The filter keeps two generations, the active one and the one being rebuilt.
pub const GENERATIONS: u32 = 2;
/// Slots per flow-table entry (rounded up to a power of two): at full tables at most one slot
/// in fifteen is set (1 - e^(-1/8)), so nearly every key no table holds is told apart without
/// a lookup, and the default tables' filter (256 KiB a generation) stays in a core's L2
/// cache, which decides its cost under a flood.
pub const SLOTS_PER_FLOW: u64 = 8;

/// One element of the filter's array map.
pub type Chunk = [u64; CHUNK_WORDS];

/// Slots of one generation for tables holding `entries` flows in all, log2: a power of two,
/// at least one chunk.
pub fn slots_log2(entries: u64) -> u8 {
    let wanted = (entries * SLOTS_PER_FLOW).max(1 << CHUNK_SHIFT);
    wanted.next_power_of_two().trailing_zeros() as u8
}

/// Chunks of the filter's array map for `slots_log2`: both generations.
pub const fn chunks(slots_log2: u8) -> u32 {
    GENERATIONS << (slots_log2 as u32 - CHUNK_SHIFT)
}

/// Where a key's bit is within a generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Slot {
    pub chunk: u32,
    /// Word within the chunk.
    pub word: usize,
    pub mask: u64,
}

impl Slot {
    /// Word index within a whole generation.
    pub const fn generation_word(&self) -> usize {
        self.chunk as usize * CHUNK_WORDS + self.word
    }
}

/// The slot of `key` in a generation of `2^slots_log2` slots.
#[inline(always)]
pub fn locate(key: &FlowKey, slots_log2: u8) -> Slot {
    let slot = key.presence_hash() >> (64 - slots_log2 as u32);
    Slot {
        chunk: (slot >> CHUNK_SHIFT) as u32,
        word: (slot >> 6) as usize & (CHUNK_WORDS - 1),
        mask: 1 << (slot & 63),
    }
}

impl FlowKey {
    /// A multiplicative hash of the key's five words; its high bits pick the slot. The same
    /// function on both sides: the daemon rebuilds the filter from the tables' keys.
    #[inline(always)]
    pub fn presence_hash(&self) -> u64 {
        const WORDS: usize = core::mem::size_of::<FlowKey>() / 8;
        const MUL: u64 = 0x9e37_79b9_7f4a_7c15;
        let words = (self as *const FlowKey).cast::<u64>();
        let mut hash = 0u64;
        let mut i = 0;
        while i < WORDS {
            // SAFETY: FlowKey is 8-aligned and WORDS words long, with no padding bytes left
            // unset (`_pad` is a field, zeroed by `fill_from`).
            let word = unsafe { *words.add(i) };
            hash = (hash ^ word).wrapping_mul(MUL);
            hash ^= hash >> 29;
            i += 1;
        }
        hash.wrapping_mul(MUL)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::{collections::HashSet, vec::Vec};

    use super::*;

    fn key(n: u32) -> FlowKey {
        let mut key = FlowKey {
            family: 4,
            vlan: (n % 3) as u16,
            ..FlowKey::default()
        };
        key.addr[0][10..12].copy_from_slice(&[0xff, 0xff]);
        key.addr[0][12..].copy_from_slice(&[198, 18, 0, 1]);
        key.addr[1][10..12].copy_from_slice(&[0xff, 0xff]);
        key.addr[1][12..].copy_from_slice(&(0xc612_0000 | (n >> 16)).to_be_bytes());
        key.port = [(n & 0xffff) as u16, 443];
        key
    }

    #[test]
    fn sizes_are_powers_of_two_of_at_least_one_chunk_per_generation() {
        assert_eq!(slots_log2(0), 15);
        // The default tables: 256 KiB a generation.
        assert_eq!(slots_log2(131_072 + 16_384), 21);
        assert_eq!(chunks(21), 2 * 64);
        assert_eq!(chunks(15), 2);
    }

    #[test]
    fn keys_spread_over_the_slots() {
        // 100,000 keys that differ only in ports and the last address bytes, as a flood's
        // do, into 2^20 slots: a uniform hash fills 1 - e^(-100000/2^20) = 9.1 % of them.
        let log2 = 20;
        let slots: HashSet<Slot> = (0..100_000).map(|n| locate(&key(n), log2)).collect();
        let filled = slots.len() as f64 / f64::from(1u32 << log2);
        assert!((0.085..0.097).contains(&filled), "{filled}");
    }

    #[test]
    fn every_slot_lies_inside_its_generation() {
        let log2 = 17;
        let per_generation = chunks(log2) / GENERATIONS;
        let located: Vec<Slot> = (0..10_000).map(|n| locate(&key(n), log2)).collect();
        assert!(located.iter().all(|slot| slot.chunk < per_generation
            && slot.generation_word() < (1 << log2) / 64
            && slot.mask.count_ones() == 1));
        assert!(located.iter().any(|slot| slot.chunk == per_generation - 1));
    }
}
