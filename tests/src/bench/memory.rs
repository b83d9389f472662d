//! What the flow tables, and all of rstwatch's maps, occupy: the kernel's own account
//! (`memlock` in each map's fdinfo).

use std::{collections::HashSet, fs};

use anyhow::{Context, Result};
use rstwatch::kernel::{table_capacity, KernelConfig};
use rstwatch_common::table::{Set4, Set6, Tags, WAYS};

use super::fdinfo_fields;

const BPF_MAP_TYPE_ARRAY: &str = "2";

#[derive(Clone, Debug)]
pub struct FlowTableMemory {
    /// Flows the table holds at most.
    pub flows: u64,
    /// The sets' array and their tags' (`table::Tags`).
    pub memlock_bytes: u64,
    /// Bytes of a set: `WAYS` keys, then `WAYS` slots (lock and state).
    pub set_bytes: usize,
}

impl FlowTableMemory {
    pub fn mib(&self) -> f64 {
        self.memlock_bytes as f64 / f64::from(1 << 20)
    }

    pub fn bytes_per_flow(&self) -> f64 {
        self.memlock_bytes as f64 / self.flows as f64
    }
}

/// The IPv4 and the IPv6 flow table of a kernel side this process loaded, and every map this
/// process holds.
#[derive(Clone, Debug)]
pub struct FlowTables {
    pub v4: FlowTableMemory,
    pub v6: FlowTableMemory,
    pub all_maps_bytes: u64,
}

impl FlowTables {
    pub fn mib(&self) -> f64 {
        self.v4.mib() + self.v6.mib()
    }

    pub fn all_maps_mib(&self) -> f64 {
        self.all_maps_bytes as f64 / f64::from(1 << 20)
    }
}

/// The flow tables of the kernel side loaded with `config`, found by their sizes, and the sum
/// over every BPF map this process holds (the bench holds one kernel side at a time).
pub fn flow_tables(config: &KernelConfig) -> Result<FlowTables> {
    let [v4_flows, v6_flows] = table_capacity(config.flows);
    let table = |flows: u64, set_bytes: usize| -> Result<FlowTableMemory> {
        let sets = (flows / WAYS as u64) as u32;
        Ok(FlowTableMemory {
            flows,
            memlock_bytes: memlock(BPF_MAP_TYPE_ARRAY, sets, set_bytes)?
                + memlock(BPF_MAP_TYPE_ARRAY, sets, size_of::<Tags>())?,
            set_bytes,
        })
    };
    Ok(FlowTables {
        v4: table(v4_flows, size_of::<Set4>())?,
        v6: table(v6_flows, size_of::<Set6>())?,
        all_maps_bytes: all_maps()?,
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

/// `memlock` summed over every BPF map this process holds, each map once.
fn all_maps() -> Result<u64> {
    let mut seen = HashSet::new();
    let mut total = 0;
    for entry in fs::read_dir("/proc/self/fdinfo")? {
        let Ok(info) = fs::read_to_string(entry?.path()) else {
            continue;
        };
        let fields = fdinfo_fields(&info);
        let (Some(id), Some(memlock)) = (fields.get("map_id"), fields.get("memlock")) else {
            continue;
        };
        if seen.insert(id.clone()) {
            total += memlock.parse::<u64>().context("a map's memlock")?;
        }
    }
    Ok(total)
}
