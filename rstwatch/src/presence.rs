//! Keeps the kernel's presence filter useful (`rstwatch_common::presence`): the kernel only
//! ever sets bits, so flows evicted from the tables leave theirs set and the filter fills up.
//! Once enough keys have been inserted since the last rebuild, a thread of its own clears the
//! inactive generation, sets the bit of every key the two flow tables hold, and makes that
//! generation the active one.
//!
//! No key a table holds can lose its bit: the kernel sets a key's bit in both generations
//! after inserting it, so a key inserted after the clear keeps its bit, and one inserted
//! before it is in its table for the whole walk that follows (a batch walk visits every
//! entry that stays in the table while it runs). Bits are set with an atomic OR on both
//! sides, so setting one never undoes another in the same word.
//!
//! The same thread counts the flows the tables hold (`LiveFlows`) when asked: the count walks
//! both tables, which the daemon's loop must not wait for.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{self, RecvTimeoutError},
        Arc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use aya::maps::{Array, Map, MapData, PerCpuArray};
use rstwatch_common::{
    presence::{self, CHUNK_BYTES, GENERATIONS},
    Counter, FlowKey, Settings,
};

use crate::kernel::walk_flow_keys;

/// How often the thread looks at the insert counters.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Rebuilds are at least this far apart, which also keeps a program that read the old
/// generation number from ever reading the generation being cleared.
const MIN_INTERVAL: Duration = Duration::from_secs(10);
/// A rebuild is due once this share of a generation's slots may have filled since the last.
const INSERTS_PER_SLOT_DUE: u64 = 8;

/// The kernel maps the filter lives in, by id, so that its keeper holds handles of its own.
pub struct PresenceMaps {
    pub filter: u32,
    pub settings: u32,
    pub counters: u32,
    pub tables: [u32; 2],
}

/// The rebuild thread; dropping it stops the thread.
pub struct PresenceKeeper {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    live: Arc<LiveFlows>,
}

/// The flows both tables held when the keeper's thread last walked them (at its start, at
/// each rebuild, and within `CHECK_EVERY` of a `request`).
#[derive(Debug, Default)]
pub struct LiveFlows {
    count: AtomicU64,
    requested: AtomicBool,
}

impl LiveFlows {
    /// The last count.
    pub fn get(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Asks for a new count.
    pub fn request(&self) {
        self.requested.store(true, Ordering::Relaxed);
    }
}

impl PresenceKeeper {
    /// Starts the thread; it rebuilds the filter only if `rebuilds` (the programs use it).
    /// A failed rebuild is reported on stderr and leaves the filter as it is: stale bits cost
    /// lookups, never a flow.
    pub fn start(filter: PresenceFilter, rebuilds: bool) -> anyhow::Result<Self> {
        let (stop, stopped) = mpsc::channel();
        let live = Arc::new(LiveFlows::default());
        live.request();
        let thread_live = live.clone();
        let thread = thread::Builder::new()
            .name("presence".into())
            .spawn(move || keep(filter, rebuilds, &stopped, &thread_live))
            .context("starting the presence filter's thread")?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
            live,
        })
    }

    pub fn live_flows(&self) -> &LiveFlows {
        &self.live
    }
}

fn keep(
    mut filter: PresenceFilter,
    rebuilds: bool,
    stopped: &mpsc::Receiver<()>,
    live: &LiveFlows,
) {
    let mut inserts_at_rebuild = 0;
    let mut rebuilt_at = Instant::now();
    loop {
        if live.requested.swap(false, Ordering::Relaxed) {
            match filter.count() {
                Ok(count) => live.count.store(count, Ordering::Relaxed),
                Err(err) => eprintln!("rstwatch: counting the flows: {err:#}"),
            }
        }
        if stopped.recv_timeout(CHECK_EVERY) != Err(RecvTimeoutError::Timeout) {
            return;
        }
        if !rebuilds {
            continue;
        }
        let inserts = match filter.inserts() {
            Ok(inserts) => inserts,
            Err(err) => {
                eprintln!("rstwatch: presence filter: {err:#}");
                continue;
            }
        };
        let due = inserts.saturating_sub(inserts_at_rebuild)
            >= (1u64 << filter.slots_log2) / INSERTS_PER_SLOT_DUE;
        if due && rebuilt_at.elapsed() >= MIN_INTERVAL {
            rebuilt_at = Instant::now();
            match filter.rebuild() {
                Ok(count) => {
                    inserts_at_rebuild = inserts;
                    live.count.store(count, Ordering::Relaxed);
                }
                Err(err) => eprintln!("rstwatch: presence filter not rebuilt: {err:#}"),
            }
        }
    }
}

impl Drop for PresenceKeeper {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The kernel's presence filter, mapped into this process, with the maps its rebuild reads.
pub struct PresenceFilter {
    filter: Mapping,
    settings: Array<MapData, Settings>,
    counters: PerCpuArray<MapData, u64>,
    tables: [MapData; 2],
    slots_log2: u8,
}

impl PresenceFilter {
    pub fn open(maps: &PresenceMaps, slots_log2: u8) -> anyhow::Result<Self> {
        let by_id =
            |id: u32| -> anyhow::Result<Map> { Ok(Map::from_map_data(MapData::from_id(id)?)?) };
        let filter = MapData::from_id(maps.filter)?;
        let len = presence::chunks(slots_log2) as usize * CHUNK_BYTES;
        Ok(Self {
            filter: Mapping::new(&filter, len)?,
            settings: Array::try_from(by_id(maps.settings)?)?,
            counters: PerCpuArray::try_from(by_id(maps.counters)?)?,
            tables: [
                MapData::from_id(maps.tables[0])?,
                MapData::from_id(maps.tables[1])?,
            ],
            slots_log2,
        })
    }

    /// Keys inserted into either table since the start.
    fn inserts(&self) -> anyhow::Result<u64> {
        let mut total = 0;
        for counter in [Counter::FlowsInserted, Counter::FlowsPromoted] {
            total += self.counters.get(&(counter as u32), 0)?.iter().sum::<u64>();
        }
        Ok(total)
    }

    /// Whether the active generation has `key`'s bit set: false proves the kernel's tables
    /// do not hold it.
    pub fn may_hold(&self, key: &FlowKey) -> anyhow::Result<bool> {
        let settings = self.settings.get(&0, 0)?;
        let slot = presence::locate(key, self.slots_log2);
        let word = self.word(
            settings.presence_generation as usize,
            slot.generation_word(),
        );
        Ok(word.load(Ordering::Relaxed) & slot.mask != 0)
    }

    /// Clears the inactive generation, sets the bit of every key the tables hold and makes
    /// it the active one; returns how many keys that was. Calls must be `MIN_INTERVAL` apart
    /// while programs run, so that no program still reads the generation being cleared
    /// (tests running programs one at a time call it at will).
    pub fn rebuild(&mut self) -> anyhow::Result<u64> {
        let mut count = 0;
        let mut settings = self.settings.get(&0, 0)?;
        let next = (settings.presence_generation as u32 + 1) % GENERATIONS;
        for word in 0..self.generation_words() {
            self.word(next as usize, word).store(0, Ordering::Relaxed);
        }
        for table in &self.tables {
            walk_flow_keys(table, |key| {
                let slot = presence::locate(key, self.slots_log2);
                self.word(next as usize, slot.generation_word())
                    .fetch_or(slot.mask, Ordering::Relaxed);
                count += 1;
            })?;
        }
        settings.presence_generation = next as u8;
        self.settings.set(0, settings, 0)?;
        Ok(count)
    }

    /// The keys both tables hold now.
    pub fn count(&self) -> anyhow::Result<u64> {
        let mut count = 0;
        for table in &self.tables {
            walk_flow_keys(table, |_| count += 1)?;
        }
        Ok(count)
    }

    fn generation_words(&self) -> usize {
        (1usize << self.slots_log2) / 64
    }

    /// Word `index` of generation `generation`, shared with the kernel.
    fn word(&self, generation: usize, index: usize) -> &AtomicU64 {
        let words = self.generation_words();
        let at = generation * words + index;
        assert!(index < words && (at + 1) * 8 <= self.filter.len);
        // SAFETY: an 8-aligned u64 inside the mapping (page-aligned, asserted above), which
        // lives as long as `self`; the kernel only touches it with atomic ORs.
        unsafe { AtomicU64::from_ptr(self.filter.start.as_ptr().cast::<u64>().add(at)) }
    }
}

/// The filter's array map, mapped into this process (`BPF_F_MMAPABLE`).
struct Mapping {
    start: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory, owned by the one thread that holds it.
unsafe impl Send for Mapping {}

impl Mapping {
    fn new(map: &MapData, len: usize) -> anyhow::Result<Self> {
        let fd = map.fd().as_fd().as_raw_fd();
        // SAFETY: a shared mapping of the map's whole value area, unmapped on drop.
        let start = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if start == libc::MAP_FAILED {
            bail!(
                "mapping the presence filter: {}",
                std::io::Error::last_os_error()
            );
        }
        let start = NonNull::new(start.cast()).context("mmap returned null")?;
        Ok(Self { start, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer used.
        unsafe { libc::munmap(self.start.as_ptr().cast(), self.len) };
    }
}
