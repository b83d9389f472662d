//! The kernel side, from userspace: loads the embedded eBPF object, configures its maps,
//! attaches the programs and reads the counters and the flow table.
//!
//! XDP always attaches through a BPF link, and so does TC egress where the kernel has TCX
//! (6.6+): nothing outlives the process, even on SIGKILL. Older kernels get a netlink filter
//! (see `tc_egress`), removed when `Kernel` drops.

pub mod detach;
pub mod features;
pub mod ifaces;
pub mod preflight;
pub mod table;
pub mod tc_egress;

use std::{collections::HashMap, fmt, io, path::PathBuf};

use aya::{
    maps::{lpm_trie::Key, Array, LpmTrie, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{
        tc::{self, NlOptions, TcAttachOptions, TcAttachType, TcHandle},
        LinkOrder, ProgramError, SchedClassifier, Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use rstwatch_common::{
    defaults,
    event::{StormSlot, STORM_SLOTS_LOG2},
    features::{self as program_features, ProgramFeatures},
    maps,
    table::{self as flow_table, WAYS},
    Counter, FilterConfig, FlowKey, FlowState, PortSet, Settings, StormCount, StormKey,
    COUNTER_COUNT,
};

use self::{
    table::FlowTables,
    tc_egress::{EgressLock, LockState, TcFilter},
};
use crate::{cidr::Cidr, error::UserError, pipeline::hold::FlowStateSource};

/// Where the daemon's release step reads a held RST's flow: the kernel's table, mapped, as it is
/// now, later than the hold's end, which the release step allows for (`crate::pipeline::hold`). A
/// read the programs kept tearing counts as no entry (and is counted, `FlowTables::torn_reads`).
impl FlowStateSource for Kernel {
    fn current(&self, key: &FlowKey) -> Option<FlowState> {
        self.tables.get(key).ok().flatten()
    }

    fn prefetch(&self, key: &FlowKey) {
        self.tables.prefetch(key);
    }
}

/// The eBPF object, built by `build.rs` and embedded so the binary is self-contained.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/rstwatch"));

/// Where a rejected program's whole verifier log is written: root-owned, unlike /tmp.
const VERIFIER_LOG_DIR: &str = "/run/rstwatch";

pub const XDP_PROGRAM: &str = "rstwatch_xdp";
pub const TC_PROGRAM: &str = "rstwatch_tc_egress";

/// Sets of the IPv4 and the IPv6 flow table, log2, for `--flows`.
pub fn table_sets_log2(flows: u32) -> [u8; 2] {
    [
        flow_table::sets_log2(flows),
        flow_table::sets_log2(flow_table::ipv6_flows(flows)),
    ]
}

/// Flows each table holds at most for `--flows`: whole sets.
pub fn table_capacity(flows: u32) -> [u64; 2] {
    table_sets_log2(flows).map(|log2| (WAYS as u64) << log2)
}

/// What to load: table sizes, the runtime settings and the filters.
#[derive(Clone, Debug)]
pub struct KernelConfig {
    pub flows: u32,
    pub ring_bytes: u32,
    pub settings: Settings,
    pub ports: Vec<u16>,
    pub nets: Vec<Cidr>,
    /// Likely server ports, for Zeek's direction heuristic.
    pub server_ports: PortSet,
    /// What the programs may use on this kernel; the rest takes its fallback.
    pub features: ProgramFeatures,
}

impl KernelConfig {
    /// Sets of the IPv4 and the IPv6 flow table, log2: `flows` IPv4 flows and a quarter as
    /// many IPv6 ones, rounded up to whole sets.
    pub fn sets_log2(&self) -> [u8; 2] {
        table_sets_log2(self.flows)
    }
}

impl Default for KernelConfig {
    fn default() -> Self {
        Self {
            flows: defaults::FLOWS,
            ring_bytes: defaults::RING_BYTES,
            settings: Settings::default(),
            ports: Vec::new(),
            nets: Vec::new(),
            server_ports: PortSet::LIKELY_SERVERS,
            features: features::probe_programs(),
        }
    }
}

/// How TC egress is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcAttach {
    /// TCX where the kernel has it, else netlink.
    Auto,
    /// A TCX BPF link (Linux 6.6+).
    Tcx,
    /// A `clsact` qdisc plus a netlink filter at rstwatch's fixed priority and handle.
    Netlink,
}

/// The kernel's verifier refused a program: which one, its complaint (the log's last line
/// that says something), and the whole log.
#[derive(Debug)]
pub struct VerifierRejection {
    pub program: String,
    pub complaint: String,
    pub log: String,
    /// Where the whole log was written, if it could be.
    pub log_file: Option<PathBuf>,
}

impl fmt::Display for VerifierRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the kernel's verifier rejected {}: {}",
            self.program, self.complaint
        )?;
        match &self.log_file {
            Some(path) => write!(
                f,
                " (whole log in {}, or run with --verbose)",
                path.display()
            ),
            None => f.write_str(" (run with --verbose for the whole log)"),
        }
    }
}

impl std::error::Error for VerifierRejection {}

/// The loaded programs and their maps. Dropping it detaches everything.
pub struct Kernel {
    ebpf: Ebpf,
    features: ProgramFeatures,
    tables: FlowTables,
    /// Claims on the netlink egress filters attached; declared after `ebpf` so they are
    /// released only once the filters are gone.
    egress_locks: Vec<EgressLock>,
}

impl Kernel {
    /// Loads both programs through the verifier and writes settings and filters; attaches
    /// nothing yet.
    pub fn load(config: &KernelConfig) -> anyhow::Result<Self> {
        let sets_log2 = config.sets_log2();
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(maps::FLOWS4, 1 << sets_log2[0])
            .map_max_entries(maps::FLOWS6, 1 << sets_log2[1])
            .map_max_entries(maps::TAGS4, 1 << sets_log2[0])
            .map_max_entries(maps::TAGS6, 1 << sets_log2[1])
            .map_max_entries(maps::EVENTS, config.ring_bytes)
            .override_global(program_features::GLOBAL, &config.features, true)
            .load(EBPF_OBJECT)
            .map_err(|err| load_error(&err))?;
        let mut settings = config.settings;
        settings.table_sets_log2 = sets_log2;
        // A seed nobody outside this process knows, from the OS's randomness.
        settings.table_seed = {
            use std::hash::{BuildHasher as _, Hasher as _};
            std::hash::RandomState::new().build_hasher().finish()
        };
        settings.filter = FilterConfig::new(!config.ports.is_empty(), !config.nets.is_empty());
        Array::<_, Settings>::try_from(map(&mut ebpf, maps::SETTINGS)?)?.set(0, settings, 0)?;
        let mut ports = Array::<_, u8>::try_from(map(&mut ebpf, maps::FILTER_PORTS)?)?;
        for &port in &config.ports {
            ports.set(port as u32, 1, 0)?;
        }
        let mut server_ports = Array::<_, u64>::try_from(map(&mut ebpf, maps::SERVER_PORTS)?)?;
        for (index, &word) in config.server_ports.words.iter().enumerate() {
            if word != 0 {
                server_ports.set(index as u32, word, 0)?;
            }
        }
        let mut nets = LpmTrie::<_, [u8; 16], u8>::try_from(map(&mut ebpf, maps::FILTER_NETS)?)?;
        for net in &config.nets {
            let (addr, prefix_len) = net.mapped();
            nets.insert(&Key::new(prefix_len, addr), 1, 0)?;
        }
        program::<Xdp>(&mut ebpf, XDP_PROGRAM)?
            .load()
            .map_err(|err| verifier_error(XDP_PROGRAM, err))?;
        program::<SchedClassifier>(&mut ebpf, TC_PROGRAM)?
            .load()
            .map_err(|err| verifier_error(TC_PROGRAM, err))?;
        let tables = FlowTables::open(
            map_data(&ebpf, maps::FLOWS4)?,
            map_data(&ebpf, maps::FLOWS6)?,
            sets_log2,
            settings.table_seed,
        )?;
        Ok(Self {
            ebpf,
            features: config.features,
            tables,
            egress_locks: Vec::new(),
        })
    }

    /// Attaches XDP (ingress) and, unless `egress` is `None`, TC egress to `iface`. Returns
    /// the stale egress filter of a killed rstwatch it removed first, if there was one.
    pub fn attach(
        &mut self,
        iface: &str,
        mode: XdpMode,
        egress: Option<TcAttach>,
    ) -> anyhow::Result<Option<TcFilter>> {
        program::<Xdp>(&mut self.ebpf, XDP_PROGRAM)?
            .attach(iface, mode)
            .map_err(|err| {
                match os_error(&err) {
                    Some(libc::EBUSY) => {
                        return UserError(format!(
                            "another XDP program (another rstwatch?) is already attached to \
                             {iface}: `ip link show {iface}` names it; stop it first"
                        ))
                    }
                    // The kernel refuses native and generic XDP side by side on one device.
                    Some(libc::EEXIST) => {
                        return UserError(format!(
                            "another XDP program is already attached to {iface} in the other \
                             XDP mode (native or generic): `ip link show {iface}` names it; \
                             stop it first"
                        ))
                    }
                    _ => {}
                }
                UserError(format!(
                    "XDP attach refused on {iface} ({}): try --xdp-mode generic",
                    root_cause(&err)
                ))
            })?;
        let Some(how) = egress else {
            return Ok(None);
        };
        let netlink = match how {
            TcAttach::Auto => !features::has_tcx(),
            TcAttach::Tcx => false,
            TcAttach::Netlink => true,
        };
        let ifindex = crate::kernel::preflight::interface_index(iface)?;
        let lock = tc_egress::lock(ifindex)
            .map_err(|err| anyhow::anyhow!("cannot lock {iface}'s egress filter: {err}"))?;
        let (lock, removed) = match lock {
            LockState::Acquired(lock) => {
                let removed =
                    tc_egress::remove_stale(iface, ifindex, TC_PROGRAM).map_err(|err| {
                        anyhow::anyhow!("cannot remove the stale egress filter on {iface}: {err}")
                    })?;
                (Some(lock), removed)
            }
            // A live rstwatch's filter: not stale. With TCX both can run side by side.
            LockState::HeldBy(pid) if netlink => {
                return Err(UserError(format!(
                    "another rstwatch{} already watches egress on {iface} through a netlink \
                     filter: stop it first, or start this one with --no-egress",
                    pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
                ))
                .into())
            }
            LockState::HeldBy(_) => (None, None),
        };
        let refused = |err: &dyn std::error::Error| {
            UserError(format!(
                "TC egress attach refused on {iface} ({}): try --no-egress",
                root_cause(err)
            ))
        };
        let classifier = program::<SchedClassifier>(&mut self.ebpf, TC_PROGRAM)?;
        if netlink {
            // Another tool's clsact qdisc is shared, never replaced; rstwatch never deletes it.
            if let Err(err) = tc::qdisc_add_clsact(iface) {
                let exists = matches!(&err, tc::TcError::NetlinkError(nl)
                    if nl.raw_os_error() == Some(libc::EEXIST));
                if !exists {
                    return Err(refused(&err).into());
                }
            }
            classifier
                .attach_with_options(
                    iface,
                    TcAttachType::Egress,
                    TcAttachOptions::Netlink(NlOptions {
                        priority: tc_egress::FILTER_PRIORITY,
                        handle: TcHandle::from(tc_egress::FILTER_HANDLE),
                        classid: None,
                    }),
                )
                .map_err(|err| refused(&err))?;
            self.egress_locks.extend(lock);
        } else {
            classifier
                .attach_with_options(
                    iface,
                    TcAttachType::Egress,
                    TcAttachOptions::TcxOrder(LinkOrder::default()),
                )
                .map_err(|err| refused(&err))?;
        }
        Ok(removed)
    }

    /// The ring buffer the programs write events to; can be taken once.
    pub fn take_events(&mut self) -> anyhow::Result<RingBuf<MapData>> {
        let events = self
            .ebpf
            .take_map(maps::EVENTS)
            .ok_or_else(|| anyhow::anyhow!("{} ring buffer already taken", maps::EVENTS))?;
        Ok(RingBuf::try_from(events)?)
    }

    /// Attaches the tracepoints through which the host's TCP stack reports its resets
    /// (`crate::local`), where the kernel has them.
    pub fn attach_stack_witness(
        &mut self,
    ) -> Result<crate::local::witness::Witness, crate::local::witness::Unavailable> {
        crate::local::witness::attach(&mut self.ebpf, self.features)
    }

    /// Attaches or detaches the stack witness's reset programs (`crate::local::gate`).
    pub fn set_reset_probes(
        &mut self,
        probes: &mut crate::local::witness::ResetProbes,
        attached: bool,
    ) -> Result<(), String> {
        if attached {
            probes.attach(&mut self.ebpf)
        } else {
            probes.detach(&mut self.ebpf)
        }
    }

    /// Counters summed over all CPUs.
    pub fn counters(&self) -> anyhow::Result<Counters> {
        let counters = PerCpuArray::<_, u64>::try_from(self.named_map(maps::COUNTERS)?)?;
        let mut totals = [0u64; COUNTER_COUNT as usize];
        for (index, total) in totals.iter_mut().enumerate() {
            *total = counters.get(&(index as u32), 0)?.iter().sum();
        }
        Ok(Counters(totals))
    }

    /// The state of `key`'s flow in the flow table, if it holds the flow. A read that
    /// programs kept tearing is an error (and counted in `FlowTables::torn_reads`).
    pub fn flow(&self, key: &FlowKey) -> anyhow::Result<Option<FlowState>> {
        self.tables
            .get(key)
            .map_err(|_| anyhow::anyhow!("the flow's slot stayed busy through every read"))
    }

    /// Whether the table holds `key`'s flow and it has only opened (no handshake completed).
    pub fn is_half_open(&self, key: &FlowKey) -> anyhow::Result<bool> {
        Ok(self.flow(key)?.is_some_and(|flow| flow.is_half_open()))
    }

    /// Flows the table holds now (a walk over its keys: a few ms at a million flows).
    pub fn flow_count(&self) -> u64 {
        self.tables.count()
    }

    /// Holds or releases the lock of `key`'s slot as another CPU would (`FlowTables::hold_lock`).
    #[cfg(any(test, feature = "test-support"))]
    pub fn hold_slot_lock(&self, key: &FlowKey, held: bool) -> bool {
        self.tables.hold_lock(key, held)
    }

    /// Reads of a flow's slot given up as torn since the start.
    pub fn torn_reads(&self) -> u64 {
        self.tables.torn_reads()
    }

    /// The in-kernel storm counts: every key with its counts since they were made, from the
    /// storm map at index `cpu` and from the CPU's storm slot at index `cpus + cpu` (a storm
    /// may be counted in a slot on one CPU and in the map on another). Each position only
    /// ever grows, which is what `crate::pipeline::storm::StormTally` needs.
    pub fn storms(&self) -> anyhow::Result<Vec<(StormKey, Vec<StormCount>)>> {
        let storms =
            PerCpuHashMap::<_, StormKey, StormCount>::try_from(self.named_map(maps::STORMS)?)?;
        let slots = PerCpuArray::<_, StormSlot>::try_from(self.named_map(maps::STORM_SLOTS)?)?;
        let cpus = aya::util::nr_cpus().map_err(|(_, err)| err)?;
        let mut by_key: HashMap<StormKey, Vec<StormCount>> = HashMap::new();
        let mut put = |key: StormKey, at: usize, count: StormCount| {
            by_key
                .entry(key)
                .or_insert_with(|| vec![StormCount::default(); 2 * cpus])[at] = count;
        };
        for entry in storms.iter() {
            let (key, per_cpu) = entry?;
            for (cpu, count) in per_cpu.iter().enumerate().take(cpus) {
                put(key, cpu, *count);
            }
        }
        for index in 0..1u32 << STORM_SLOTS_LOG2 {
            for (cpu, slot) in slots.get(&index, 0)?.iter().enumerate().take(cpus) {
                if slot.count.resets != 0 {
                    put(slot.key, cpus + cpu, slot.count);
                }
            }
        }
        Ok(by_key.into_iter().collect())
    }

    fn named_map(&self, name: &str) -> anyhow::Result<&aya::maps::Map> {
        self.ebpf
            .map(name)
            .ok_or_else(|| anyhow::anyhow!("{name} map missing from the eBPF object"))
    }

    /// The XDP program, e.g. for BPF_PROG_TEST_RUN.
    pub fn xdp(&self) -> &Xdp {
        self.ebpf
            .program(XDP_PROGRAM)
            .and_then(|p| <&Xdp>::try_from(p).ok())
            .expect("the object defines the XDP program")
    }

    /// The TC egress program, e.g. for BPF_PROG_TEST_RUN.
    pub fn tc(&self) -> &SchedClassifier {
        self.ebpf
            .program(TC_PROGRAM)
            .and_then(|p| <&SchedClassifier>::try_from(p).ok())
            .expect("the object defines the TC program")
    }
}

/// Totals of the per-CPU counters, indexed by `Counter`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters(pub [u64; COUNTER_COUNT as usize]);

impl Counters {
    pub fn get(&self, counter: Counter) -> u64 {
        self.0[counter as usize]
    }

    /// `name=value` pairs of the non-zero counters, for logs and summaries.
    pub fn describe(&self) -> String {
        Counter::ALL
            .iter()
            .filter(|c| self.get(**c) != 0)
            .map(|c| format!("{}={}", c.name(), self.get(*c)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn map_data<'a>(ebpf: &'a Ebpf, name: &str) -> anyhow::Result<&'a MapData> {
    match ebpf.map(name) {
        Some(aya::maps::Map::Array(data)) => Ok(data),
        Some(_) => anyhow::bail!("map {name} is not the array rstwatch made"),
        None => anyhow::bail!("map {name} missing from the eBPF object"),
    }
}

fn map<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut aya::maps::Map> {
    ebpf.map_mut(name)
        .ok_or_else(|| anyhow::anyhow!("map {name} missing from the eBPF object"))
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let program = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow::anyhow!("program {name} missing from the eBPF object"))?;
    Ok(program.try_into()?)
}

fn root_cause(err: &dyn std::error::Error) -> String {
    let mut cause = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// EPERM somewhere in the error chain: the process lacks a capability. (The verifier
/// rejects programs with EACCES, which is a different story.)
fn lacks_privilege(err: &(dyn std::error::Error + 'static)) -> bool {
    os_error(err) == Some(libc::EPERM)
}

/// The errno of the first I/O error in the chain.
fn os_error(err: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(err) = cause {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return io.raw_os_error();
        }
        cause = err.source();
    }
    None
}

fn load_error(err: &aya::EbpfError) -> anyhow::Error {
    if lacks_privilege(err) {
        return UserError(
            "permission denied loading eBPF: run as root or grant CAP_BPF, CAP_NET_ADMIN and \
             CAP_PERFMON (e.g. `sudo setcap cap_bpf,cap_net_admin,cap_perfmon+ep rstwatch`)"
                .into(),
        )
        .into();
    }
    UserError(format!(
        "this kernel cannot load rstwatch's eBPF maps ({}): rstwatch needs Linux >= 5.8 with \
         BPF ring buffers and BTF",
        root_cause(err)
    ))
    .into()
}

fn verifier_error(name: &str, err: ProgramError) -> anyhow::Error {
    if lacks_privilege(&err) {
        return UserError(format!(
            "permission denied loading {name}: run as root or grant CAP_BPF, CAP_NET_ADMIN and \
             CAP_PERFMON"
        ))
        .into();
    }
    let ProgramError::LoadError {
        io_error,
        verifier_log,
    } = &err
    else {
        return anyhow::Error::new(err).context(format!("cannot load {name}"));
    };
    let log = verifier_log.to_string();
    let complaint = verifier_complaint(&log).unwrap_or_else(|| io_error.to_string());
    let log_file = PathBuf::from(VERIFIER_LOG_DIR).join(format!("verifier-{name}.log"));
    let log_file = std::fs::create_dir_all(VERIFIER_LOG_DIR)
        .and_then(|()| std::fs::write(&log_file, &log))
        .ok()
        .map(|()| log_file);
    VerifierRejection {
        program: name.to_owned(),
        complaint,
        log,
        log_file,
    }
    .into()
}

/// The verifier's actual complaint: the last line of its log before the statistics it always
/// appends.
fn verifier_complaint(log: &str) -> Option<String> {
    const STATISTICS: [&str; 4] = [
        "verification time",
        "stack depth",
        "processed ",
        "max_states_per_insn",
    ];
    log.lines()
        .map(str::trim)
        .rfind(|line| !line.is_empty() && !STATISTICS.iter().any(|prefix| line.starts_with(prefix)))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_complaint_is_the_last_line_before_the_statistics() {
        let log = "func#0 @0\n40: (71) r3 = *(u8 *)(r3 +0)\nR3 invalid mem access 'scalar'\n\
                   verification time 1733 usec\nstack depth 64+0\n\
                   processed 1161 insns (limit 1000000) max_states_per_insn 4 total_states 59\n";
        assert_eq!(
            verifier_complaint(log).as_deref(),
            Some("R3 invalid mem access 'scalar'")
        );
        assert_eq!(verifier_complaint("\n\n"), None);
    }

    /// Userspace opens maps by the names in `rstwatch_common::maps` and programs by the names
    /// here and in `crate::local::witness`: each must be in the object it embeds.
    #[test]
    fn every_map_and_program_userspace_names_is_in_the_ebpf_object() {
        let object = aya_obj::Object::parse(EBPF_OBJECT).expect("the embedded object parses");
        for name in maps::ALL {
            assert!(
                object.maps.contains_key(name),
                "no map {name} in the eBPF object; it has {:?}",
                object.maps.keys().collect::<Vec<_>>()
            );
        }
        use crate::local::witness::{RECEIVE_RESET, SEND_RESET, SEND_RESET_NO_REASON, SOCK_OWNER};
        for name in [
            XDP_PROGRAM,
            TC_PROGRAM,
            SEND_RESET,
            SEND_RESET_NO_REASON,
            RECEIVE_RESET,
            SOCK_OWNER,
        ] {
            assert!(
                object.programs.contains_key(name),
                "no program {name} in the eBPF object; it has {:?}",
                object.programs.keys().collect::<Vec<_>>()
            );
        }
    }
}
