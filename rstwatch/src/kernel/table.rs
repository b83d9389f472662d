//! The kernel's flow tables (`rstwatch_common::table`), mapped into this process: a flow's
//! state is read without a system call, by the same hash and layout the programs use.
//!
//! A slot is copied between two reads of its lock; a copy that a writer may have torn is
//! tried again, and one still torn after `READ_TRIES` is counted (`FlowTables::torn_reads`),
//! never used.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
    sync::atomic::{fence, AtomicU64, Ordering},
};

use anyhow::{bail, Context as _};
use aya::maps::MapData;
use rstwatch_common::{
    table::{place, same_key, Key4, Key6, Lock, Set, Set4, Set6, Slot, TableKey, WAYS},
    FlowKey, FlowState,
};

/// Copies of a slot tried before its read is counted as torn.
const READ_TRIES: usize = 64;
/// Bytes a prefetch brings in at once.
const CACHE_LINE: usize = 64;

/// A hint to bring the cache line at `address` in; nothing where the CPU has no such hint.
#[inline(always)]
fn prefetch_line(address: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch has no effect beyond the caches, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// Both tables, mapped.
pub struct FlowTables {
    v4: Mapping<Key4>,
    v6: Mapping<Key6>,
    seed: u64,
    torn: AtomicU64,
}

/// A lookup whose slot programs kept writing through every try (counted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TornRead;

/// What a lookup found: the flow's state, if the table holds the flow.
pub type Lookup = Result<Option<FlowState>, TornRead>;

impl FlowTables {
    /// Maps the tables `v4` (`2^sets_log2[0]` sets) and `v6`, whose sets `seed` places keys in.
    pub fn open(v4: &MapData, v6: &MapData, sets_log2: [u8; 2], seed: u64) -> anyhow::Result<Self> {
        Ok(Self {
            v4: Mapping::new(v4, 1 << sets_log2[0])?,
            v6: Mapping::new(v6, 1 << sets_log2[1])?,
            seed,
            torn: AtomicU64::new(0),
        })
    }

    /// The state of `key`'s flow (a key as the programs make it, VLAN applied).
    pub fn get(&self, key: &FlowKey) -> Lookup {
        if key.family == rstwatch_common::packet::FAMILY_IPV4 {
            self.v4
                .get(&Key4::from_flow_key(key), self.seed, &self.torn)
        } else {
            self.v6
                .get(&Key6::from_flow_key(key), self.seed, &self.torn)
        }
    }

    /// Asks the CPU to bring the set `key`'s flow would be in into its caches: a lookup of
    /// the key soon after finds it there instead of waiting on memory.
    pub fn prefetch(&self, key: &FlowKey) {
        if key.family == rstwatch_common::packet::FAMILY_IPV4 {
            self.v4.prefetch(&Key4::from_flow_key(key), self.seed);
        } else {
            self.v6.prefetch(&Key6::from_flow_key(key), self.seed);
        }
    }

    /// Flows both tables hold now: a walk over their keys, a few ms at a million flows.
    pub fn count(&self) -> u64 {
        self.v4.count() + self.v6.count()
    }

    /// Reads given up as torn since the tables were mapped.
    pub fn torn_reads(&self) -> u64 {
        self.torn.load(Ordering::Relaxed)
    }

    /// Takes (`held`) or releases the lock of the slot of `key`'s flow as a writer on another
    /// CPU would; false when the table does not hold the flow. For tests: the daemon never
    /// writes the table.
    #[cfg(any(test, feature = "test-support"))]
    pub fn hold_lock(&self, key: &FlowKey, held: bool) -> bool {
        if key.family == rstwatch_common::packet::FAMILY_IPV4 {
            self.v4
                .hold_lock(&Key4::from_flow_key(key), self.seed, held)
        } else {
            self.v6
                .hold_lock(&Key6::from_flow_key(key), self.seed, held)
        }
    }
}

/// A table's array map, mapped into this process (`BPF_F_MMAPABLE`).
struct Mapping<K> {
    start: NonNull<Set<K>>,
    sets: usize,
    len: usize,
}

// SAFETY: the mapping is shared memory that the kernel writes under the slots' locks; this
// side only reads it, through volatile copies checked against the locks.
unsafe impl<K> Send for Mapping<K> {}
unsafe impl<K> Sync for Mapping<K> {}

impl<K: TableKey> Mapping<K> {
    fn new(map: &MapData, sets: usize) -> anyhow::Result<Self> {
        let fd = map.fd().as_fd().as_raw_fd();
        let page = 4096;
        let len = (sets * size_of::<Set<K>>()).div_ceil(page) * page;
        // SAFETY: a shared mapping of the map's whole value area, unmapped on drop. Writable
        // only for tests (`hold_lock`); the daemon never writes it.
        let start = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                // Populated now: the kernel's pages exist already, and the release step would
                // otherwise fault each one in on its first lookup there.
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                0,
            )
        };
        if start == libc::MAP_FAILED {
            bail!("mapping a flow table: {}", std::io::Error::last_os_error());
        }
        let start = NonNull::new(start.cast()).context("mmap returned null")?;
        Ok(Self { start, sets, len })
    }

    fn set(&self, index: usize) -> *const Set<K> {
        assert!(index < self.sets);
        // SAFETY: inside the mapping (asserted), which lives as long as `self`.
        unsafe { self.start.as_ptr().add(index) }
    }

    fn get(&self, key: &K, seed: u64, torn: &AtomicU64) -> Lookup {
        let sets_log2 = self.sets.trailing_zeros() as u8;
        let set = self.set(place(key, seed, sets_log2).set as usize);
        for way in 0..WAYS {
            if !same_key(&key_at(set, way), key) {
                continue;
            }
            match read_slot(set, way, torn) {
                Some((held, flow)) if same_key(&held, key) => return Ok(Some(flow)),
                // The flow left the slot meanwhile.
                Some(_) => {}
                None => return Err(TornRead),
            }
        }
        Ok(None)
    }

    fn prefetch(&self, key: &K, seed: u64) {
        let sets_log2 = self.sets.trailing_zeros() as u8;
        let set = self
            .set(place(key, seed, sets_log2).set as usize)
            .cast::<u8>();
        for offset in (0..size_of::<Set<K>>()).step_by(CACHE_LINE) {
            // SAFETY: inside the set, inside the mapping; a prefetch reads nothing.
            prefetch_line(unsafe { set.add(offset) });
        }
    }

    #[cfg(any(test, feature = "test-support"))]
    fn hold_lock(&self, key: &K, seed: u64, held: bool) -> bool {
        let sets_log2 = self.sets.trailing_zeros() as u8;
        let set = self.set(place(key, seed, sets_log2).set as usize);
        let Some(way) = (0..WAYS).find(|&way| same_key(&key_at(set, way), key)) else {
            return false;
        };
        // SAFETY: the slot's lock inside the mapping, 4-aligned; the kernel adds to it
        // atomically too.
        let begun = unsafe {
            std::sync::atomic::AtomicU32::from_ptr(
                std::ptr::addr_of!((*set).slots[way].lock.begun).cast_mut(),
            )
        };
        if held {
            begun.fetch_add(1, Ordering::SeqCst);
        } else {
            begun.fetch_sub(1, Ordering::SeqCst);
        }
        true
    }

    fn count(&self) -> u64 {
        let mut count = 0;
        for index in 0..self.sets {
            let set = self.set(index);
            count += (0..WAYS).filter(|&way| key_at(set, way).is_used()).count() as u64;
        }
        count
    }
}

impl<K> Drop for Mapping<K> {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer used.
        unsafe { libc::munmap(self.start.as_ptr().cast(), self.len) };
    }
}

/// The key of `set`'s way `way`, as it reads now (a writer may be changing it).
fn key_at<K: TableKey>(set: *const Set<K>, way: usize) -> K {
    // SAFETY: `set` points into the mapping and `way < WAYS`; a volatile copy of plain data.
    unsafe { std::ptr::read_volatile(std::ptr::addr_of!((*set).keys[way])) }
}

/// A consistent copy of `set`'s way `way`, key and flow, or `None` (counted in `torn`) when
/// writers kept it busy through every try.
fn read_slot<K: TableKey>(
    set: *const Set<K>,
    way: usize,
    torn: &AtomicU64,
) -> Option<(K, FlowState)> {
    // SAFETY: as in `key_at`.
    let slot = unsafe { std::ptr::addr_of!((*set).slots[way]) };
    let lock = || {
        // SAFETY: the slot's lock, 8-aligned inside the mapping.
        unsafe { std::ptr::read_volatile(std::ptr::addr_of!((*slot).lock).cast::<u64>()) }
    };
    for _ in 0..READ_TRIES {
        let before = lock();
        if !Lock::is_free(before) {
            std::hint::spin_loop();
            continue;
        }
        fence(Ordering::Acquire);
        let key = key_at(set, way);
        // SAFETY: a volatile copy of the slot's flow, plain data; checked below.
        let flow = unsafe { std::ptr::read_volatile(std::ptr::addr_of!((*slot).flow)) };
        fence(Ordering::Acquire);
        if lock() == before {
            return Some((key, flow));
        }
    }
    torn.fetch_add(1, Ordering::Relaxed);
    None
}

const _: () = assert!(size_of::<Slot>().is_multiple_of(8) && size_of::<Set4>().is_multiple_of(8));
const _: () = assert!(size_of::<Set6>().is_multiple_of(8));

#[cfg(test)]
mod tests {
    use rstwatch_common::{packet::FAMILY_IPV4, table::Set4};

    use super::*;

    fn set_with_a_flow() -> Box<Set4> {
        let key = FlowKey {
            addr: [
                rstwatch_common::packet::ipv4_mapped([198, 18, 0, 1]),
                rstwatch_common::packet::ipv4_mapped([198, 18, 1, 2]),
            ],
            port: [40_000, 443],
            family: FAMILY_IPV4,
            ..FlowKey::default()
        };
        let mut set = Box::new(Set4 {
            keys: [Key4::default(); WAYS],
            slots: [Slot::default(); WAYS],
        });
        set.keys[2] = Key4::from_flow_key(&key);
        set.slots[2].flow.dir[0].pkts = 7;
        set.slots[2].lock = Lock {
            begun: 41,
            ended: 41,
        };
        set
    }

    #[test]
    fn a_slot_is_read_whole_between_two_equal_reads_of_a_free_lock() {
        let set = set_with_a_flow();
        let torn = AtomicU64::new(0);
        let (key, flow) = read_slot(&*set, 2, &torn).expect("a free slot reads");
        assert_eq!((key, flow.dir[0].pkts), (set.keys[2], 7));
        assert_eq!(torn.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_slot_a_writer_holds_is_never_used_and_its_read_is_counted_torn() {
        let mut set = set_with_a_flow();
        set.slots[2].lock.begun += 1;
        let torn = AtomicU64::new(0);
        assert_eq!(read_slot(&*set, 2, &torn), None);
        assert_eq!(torn.load(Ordering::Relaxed), 1);
    }
}
