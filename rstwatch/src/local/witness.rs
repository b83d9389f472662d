//! Loads and attaches the stack's tracepoint programs, where the running kernel has them.

use aya::{
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{tp_btf::BtfTracePointLinkId, BtfTracePoint},
    Ebpf,
};
use rstwatch_common::{features::ProgramFeatures, local::SocketLayout, maps};

use super::{layout, LocalJoin};

pub const SEND_RESET: &str = "rstwatch_send_reset";
pub const SEND_RESET_NO_REASON: &str = "rstwatch_send_reset_no_reason";
pub const RECEIVE_RESET: &str = "rstwatch_receive_reset";
pub const SOCK_OWNER: &str = "rstwatch_sock_owner";

/// The attached programs' ring buffer and the join of their records.
pub struct Witness {
    pub ring: RingBuf<MapData>,
    /// Records the kernel could not push into `ring`, per CPU.
    pub lost: PerCpuArray<MapData, u64>,
    pub join: LocalJoin,
    /// The programs on the reset tracepoints, which step aside during a reset flood.
    pub probes: ResetProbes,
    /// A line for each thing this kernel lacks, for the start-up messages.
    pub degraded: Vec<&'static str>,
}

/// Why the stack's evidence is not available at all.
#[derive(Debug)]
pub struct Unavailable(pub String);

/// Attaches the programs the kernel supports to `ebpf` (they stay attached while it lives),
/// loaded with `features`.
pub fn attach(ebpf: &mut Ebpf, features: ProgramFeatures) -> Result<Witness, Unavailable> {
    let unavailable =
        |what: String| Unavailable(format!("no reset evidence from the stack: {what}"));
    let btf = btf_rs::Btf::from_file(layout::VMLINUX_BTF)
        .map_err(|err| unavailable(format!("cannot read {}: {err}", layout::VMLINUX_BTF)))?;
    if !layout::has_tracepoint(&btf, "tcp_send_reset") {
        return Err(unavailable(
            "the kernel has no tcp_send_reset tracepoint".into(),
        ));
    }
    let socket_layout = layout::socket_layout(&btf).map_err(unavailable)?;
    let reasons = layout::reset_reasons(&btf);
    let aya_btf = aya::Btf::from_sys_fs()
        .map_err(|err| unavailable(format!("cannot read the kernel's BTF: {err}")))?;
    let layout_map = ebpf
        .map_mut(maps::SOCKET_LAYOUT)
        .ok_or_else(|| unavailable(format!("no {} map in the object", maps::SOCKET_LAYOUT)))?;
    Array::<_, SocketLayout>::try_from(layout_map)
        .and_then(|mut map| map.set(0, socket_layout, 0))
        .map_err(|err| unavailable(format!("cannot write the socket layout: {err}")))?;

    let with_reason = !reasons.is_empty();
    let send = if with_reason {
        SEND_RESET
    } else {
        SEND_RESET_NO_REASON
    };
    let mut probes = ResetProbes(Vec::new());
    let link = attach_one(ebpf, send, "tcp_send_reset", &aya_btf).map_err(unavailable)?;
    probes.0.push((send, Some(link)));
    let mut missing = Vec::new();
    if !with_reason {
        missing.push(
            "tcp_send_reset has no reason (enum sk_rst_reason, Linux 6.10): the stack's \
             resets are reported without one, and egress RSTs it did not send are not told \
             apart (it does not report every reset it sends)",
        );
    }
    match attach_one(ebpf, RECEIVE_RESET, "tcp_receive_reset", &aya_btf) {
        Ok(link) => probes.0.push((RECEIVE_RESET, Some(link))),
        Err(_) => missing.push("no tcp_receive_reset: received RSTs carry no socket owner"),
    }
    if features.socket_cookie == 0 {
        missing.push(
            "no bpf_get_socket_cookie in tracing programs (before Linux 5.12): owners are \
             known only for resets sent in close(), received RSTs carry none",
        );
    } else if attach_one(ebpf, SOCK_OWNER, "inet_sock_set_state", &aya_btf).is_err() {
        missing.push("no inet_sock_set_state: owners are known only for resets sent in close()");
    }
    let ring = ebpf
        .take_map(maps::LOCAL_EVENTS)
        .ok_or_else(|| unavailable(format!("no {} map in the object", maps::LOCAL_EVENTS)))
        .and_then(|map| {
            RingBuf::try_from(map)
                .map_err(|err| unavailable(format!("{}: {err}", maps::LOCAL_EVENTS)))
        })?;
    let lost = ebpf
        .take_map(maps::LOCAL_LOST)
        .ok_or_else(|| unavailable(format!("no {} map in the object", maps::LOCAL_LOST)))
        .and_then(|map| {
            PerCpuArray::try_from(map)
                .map_err(|err| unavailable(format!("{}: {err}", maps::LOCAL_LOST)))
        })?;
    Ok(Witness {
        ring,
        lost,
        join: LocalJoin::new(reasons, with_reason),
        probes,
        degraded: missing,
    })
}

/// Records lost so far, over all CPUs (0 when the map cannot be read).
pub fn lost_records(lost: &PerCpuArray<MapData, u64>) -> u64 {
    lost.get(&0, 0)
        .map(|per_cpu| per_cpu.iter().sum())
        .unwrap_or(0)
}

/// The loaded programs on `tcp_send_reset` and `tcp_receive_reset`, each with its link while
/// attached.
pub struct ResetProbes(Vec<(&'static str, Option<BtfTracePointLinkId>)>);

impl ResetProbes {
    /// Detaches every program (they stay loaded).
    pub fn detach(&mut self, ebpf: &mut Ebpf) -> Result<(), String> {
        for (name, link) in &mut self.0 {
            if let Some(link) = link.take() {
                program(ebpf, name)?
                    .detach(link)
                    .map_err(|err| format!("{name} not detached: {err}"))?;
            }
        }
        Ok(())
    }

    /// Attaches again every program that is not attached.
    pub fn attach(&mut self, ebpf: &mut Ebpf) -> Result<(), String> {
        for (name, link) in &mut self.0 {
            if link.is_none() {
                *link = Some(
                    program(ebpf, name)?
                        .attach()
                        .map_err(|err| format!("{name} not attached again: {err}"))?,
                );
            }
        }
        Ok(())
    }
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut BtfTracePoint, String> {
    ebpf.program_mut(name)
        .ok_or_else(|| format!("no program {name} in the object"))?
        .try_into()
        .map_err(|err| format!("{name}: {err}"))
}

fn attach_one(
    ebpf: &mut Ebpf,
    name: &str,
    tracepoint: &str,
    btf: &aya::Btf,
) -> Result<BtfTracePointLinkId, String> {
    let prog = program(ebpf, name)?;
    prog.load(tracepoint, btf)
        .map_err(|err| format!("{name} refused on {tracepoint}: {err}"))?;
    prog.attach()
        .map_err(|err| format!("{name} not attached to {tracepoint}: {err}"))
}
