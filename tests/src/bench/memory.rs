//! What the flow tables and their presence filter occupy: the kernel's own account
//! (`memlock` in each map's fdinfo).

use std::fs;

use anyhow::{Context, Result};
use rstwatch::kernel::KernelConfig;
use rstwatch_common::{
    presence::{self, Chunk},
    FlowKey, FlowState,
};

use super::fdinfo_fields;

const BPF_MAP_TYPE_ARRAY: &str = "2";
const BPF_MAP_TYPE_LRU_HASH: &str = "9";

#[derive(Clone, Debug)]
pub struct FlowTableMemory {
    pub max_entries: u64,
    pub memlock_bytes: u64,
    pub key_bytes: usize,
    pub value_bytes: usize,
}

impl FlowTableMemory {
    pub fn mib(&self) -> f64 {
        self.memlock_bytes as f64 / f64::from(1 << 20)
    }

    pub fn bytes_per_flow(&self) -> f64 {
        self.memlock_bytes as f64 / self.max_entries as f64
    }
}

/// The main and the half-open flow table of a kernel side this process loaded, and the
/// presence filter in front of them.
#[derive(Clone, Debug)]
pub struct FlowTables {
    pub main: FlowTableMemory,
    pub half_open: FlowTableMemory,
    pub presence_memlock_bytes: u64,
}

impl FlowTables {
    pub fn presence_mib(&self) -> f64 {
        self.presence_memlock_bytes as f64 / f64::from(1 << 20)
    }

    pub fn mib(&self) -> f64 {
        self.main.mib() + self.half_open.mib() + self.presence_mib()
    }
}

/// The flow tables of the kernel side loaded with `config`, found by their sizes.
pub fn flow_tables(config: &KernelConfig) -> Result<FlowTables> {
    let presence_chunks = presence::chunks(config.presence_slots_log2());
    Ok(FlowTables {
        main: flow_table(config.flows)?,
        half_open: flow_table(config.half_open_flows())?,
        presence_memlock_bytes: memlock(BPF_MAP_TYPE_ARRAY, presence_chunks, size_of::<Chunk>())?,
    })
}

/// The LRU hash map of `max_entries` flows this process holds.
fn flow_table(max_entries: u32) -> Result<FlowTableMemory> {
    Ok(FlowTableMemory {
        max_entries: u64::from(max_entries),
        memlock_bytes: memlock(BPF_MAP_TYPE_LRU_HASH, max_entries, size_of::<FlowState>())?,
        key_bytes: size_of::<FlowKey>(),
        value_bytes: size_of::<FlowState>(),
    })
}

/// `memlock` of the map of this type and these sizes this process holds.
fn memlock(map_type: &str, max_entries: u32, value_size: usize) -> Result<u64> {
    for entry in fs::read_dir("/proc/self/fdinfo")? {
        let Ok(info) = fs::read_to_string(entry?.path()) else {
            continue;
        };
        let fields = fdinfo_fields(&info);
        let field = |key: &str| fields.get(key).map(String::as_str);
        if field("map_type") == Some(map_type)
            && field("max_entries") == Some(max_entries.to_string().as_str())
            && field("value_size") == Some(value_size.to_string().as_str())
        {
            return field("memlock")
                .and_then(|v| v.parse().ok())
                .context("the map's fdinfo has no memlock line");
        }
    }
    anyhow::bail!(
        "no map of type {map_type} with {max_entries} entries of {value_size} bytes among this \
         process's file descriptors"
    )
}
