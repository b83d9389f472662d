//! What the running kernel offers, detected once at start-up, so that a missing feature is
//! reported in one line with the fallback used instead of failing later. The programs' own
//! features (`rstwatch_common::features`) are probed by loading a tiny program that uses each:
//! the verifier's answer, not the version number, says what a kernel has (distributions
//! backport). (The reset tracepoints report their own, `crate::local::witness`.)

use aya::{util::KernelVersion, Btf};
use rstwatch_common::features::ProgramFeatures;

/// Where the kernel publishes its own BTF.
const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelFeatures {
    /// TC programs attach through BPF links (TCX, Linux 6.6): nothing outlives the process.
    pub tcx: bool,
    /// The kernel's BTF is readable.
    pub btf: bool,
    /// What the programs may use beyond Linux 5.10.
    pub programs: ProgramFeatures,
}

impl KernelFeatures {
    pub fn detect() -> Self {
        Self {
            tcx: has_tcx(),
            btf: Btf::from_sys_fs().is_ok(),
            programs: probe_programs(),
        }
    }

    /// One line for each thing this kernel lacks, naming the fallback used instead; empty
    /// when nothing is missing.
    pub fn missing(&self) -> Vec<String> {
        let mut missing = Vec::new();
        if !self.tcx {
            missing.push(
                "no TCX (before Linux 6.6): TC egress through a clsact qdisc and a netlink \
                 filter, removed on exit; after a SIGKILL `rstwatch detach` or the next start \
                 removes it"
                    .to_owned(),
            );
        }
        if !self.btf {
            missing.push(format!(
                "no kernel BTF ({VMLINUX_BTF}): the programs load without type information \
                 (untested; a kernel built with CONFIG_DEBUG_INFO_BTF is the supported setup)"
            ));
        }
        let programs = &self.programs;
        if programs.coarse_clock == 0 {
            missing.push(
                "no bpf_ktime_get_coarse_ns (before Linux 5.11): budgets and storm counts read \
                 the fine clock, which costs a little more; verdicts are the same"
                    .to_owned(),
            );
        }
        if programs.xdp_load_bytes == 0 {
            missing.push(
                "no bpf_xdp_load_bytes (before Linux 5.18): a RST's frame is copied from the \
                 XDP packet data directly; --pcap and verdicts are the same"
                    .to_owned(),
            );
        }
        let release = KernelVersion::current()
            .map(|v| v.to_string())
            .unwrap_or_else(|_| "?".into());
        missing
            .into_iter()
            .map(|line| format!("kernel {release}: {line}"))
            .collect()
    }
}

/// Whether TC programs attach through TCX links (Linux 6.6).
pub fn has_tcx() -> bool {
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
}

/// Each program feature, probed by the verifier.
pub fn probe_programs() -> ProgramFeatures {
    let xdp = |insns: &[u64]| u8::from(probe::loads(probe::PROG_TYPE_XDP, insns, None));
    ProgramFeatures {
        coarse_clock: xdp(&probe::COARSE_CLOCK),
        xdp_load_bytes: xdp(&probe::XDP_LOAD_BYTES),
        socket_cookie: u8::from(probe::socket_cookie_in_tracing()),
    }
}

/// Tiny programs, written as raw instructions: each is the smallest use of one feature,
/// loaded through `bpf(BPF_PROG_LOAD)` and closed at once.
mod probe {
    pub const PROG_TYPE_XDP: u32 = 6;
    const PROG_TYPE_TRACING: u32 = 26;
    const TRACE_RAW_TP: u32 = 23;
    const BPF_PROG_LOAD: libc::c_long = 5;

    const R0: u8 = 0;
    const R1: u8 = 1;
    const R2: u8 = 2;
    const R3: u8 = 3;
    const R4: u8 = 4;
    const R10: u8 = 10;

    /// One instruction: opcode, registers, offset and immediate, as the kernel lays them out.
    const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
        code as u64
            | ((dst | (src << 4)) as u64) << 8
            | (off as u16 as u64) << 16
            | (imm as u32 as u64) << 32
    }
    const fn mov_imm(dst: u8, imm: i32) -> u64 {
        insn(0xb7, dst, 0, 0, imm)
    }
    const fn call(helper: i32) -> u64 {
        insn(0x85, 0, 0, 0, helper)
    }
    const EXIT: u64 = insn(0x95, 0, 0, 0, 0);
    const XDP_PASS: i32 = 2;

    /// `bpf_ktime_get_coarse_ns()`.
    pub const COARSE_CLOCK: [u64; 3] = [call(160), mov_imm(R0, XDP_PASS), EXIT];

    /// `bpf_xdp_load_bytes(ctx, 0, r10 - 8, 8)`.
    pub const XDP_LOAD_BYTES: [u64; 8] = [
        insn(0x7a, R10, 0, -8, 0),
        mov_imm(R2, 0),
        insn(0xbf, R3, R10, 0, 0),
        insn(0x07, R3, 0, 0, -8),
        mov_imm(R4, 8),
        call(189),
        mov_imm(R0, XDP_PASS),
        EXIT,
    ];

    /// `bpf_get_socket_cookie(sk)` in a BTF-typed tracepoint on `inet_sock_set_state`, whose
    /// first argument is the socket.
    pub fn socket_cookie_in_tracing() -> bool {
        const PROGRAM: [u64; 4] = [insn(0x79, R1, R1, 0, 0), call(46), mov_imm(R0, 0), EXIT];
        let Ok(btf) = btf_rs::Btf::from_file(super::VMLINUX_BTF) else {
            return false;
        };
        let Some(id) = btf
            .resolve_ids_by_name("btf_trace_inet_sock_set_state")
            .ok()
            .and_then(|ids| ids.first().copied())
        else {
            return false;
        };
        loads(PROG_TYPE_TRACING, &PROGRAM, Some((TRACE_RAW_TP, id)))
    }

    /// Whether the verifier accepts `insns` as a program of `prog_type` (with an expected
    /// attach type and BTF id for tracing programs).
    pub fn loads(prog_type: u32, insns: &[u64], attach: Option<(u32, u32)>) -> bool {
        const LICENSE: &[u8] = b"GPL\0";
        // `union bpf_attr` for BPF_PROG_LOAD, up to `attach_btf_id`; the rest stays zero.
        let mut attr = [0u8; 120];
        let mut put = |at: usize, bytes: &[u8]| attr[at..at + bytes.len()].copy_from_slice(bytes);
        put(0, &prog_type.to_ne_bytes());
        put(4, &(insns.len() as u32).to_ne_bytes());
        put(8, &(insns.as_ptr() as u64).to_ne_bytes());
        put(16, &(LICENSE.as_ptr() as u64).to_ne_bytes());
        if let Some((attach_type, btf_id)) = attach {
            put(68, &attach_type.to_ne_bytes());
            put(108, &btf_id.to_ne_bytes());
        }
        // SAFETY: `attr` is a valid `union bpf_attr` prefix, zero beyond what is set; the
        // pointers in it outlive the call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_LOAD,
                attr.as_ptr(),
                attr.len() as libc::c_uint,
            )
        };
        if fd < 0 {
            return false;
        }
        // SAFETY: the program's descriptor, ours alone.
        unsafe { libc::close(fd as libc::c_int) };
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> KernelFeatures {
        KernelFeatures {
            tcx: true,
            btf: true,
            programs: ProgramFeatures::ALL,
        }
    }

    #[test]
    fn a_complete_kernel_has_nothing_to_report() {
        assert!(all().missing().is_empty());
    }

    #[test]
    fn each_missing_feature_is_named_with_its_fallback_on_a_line_of_its_own() {
        let old = KernelFeatures {
            tcx: false,
            ..all()
        };
        let lines = old.missing();
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("no TCX") && lines[0].contains("netlink filter"));
        let kernel_5_10 = KernelFeatures {
            tcx: false,
            btf: true,
            programs: ProgramFeatures {
                coarse_clock: 0,
                xdp_load_bytes: 0,
                socket_cookie: 0,
            },
        };
        let lines = kernel_5_10.missing();
        assert_eq!(lines.len(), 3, "{lines:?}");
        for (line, names) in lines.iter().zip([
            "no TCX",
            "no bpf_ktime_get_coarse_ns",
            "no bpf_xdp_load_bytes",
        ]) {
            assert!(
                line.starts_with("kernel ") && line.contains(names),
                "{line}"
            );
            assert!(!line.contains('\n'));
        }
    }
}
