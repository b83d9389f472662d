//! What the running kernel's verifier accepts beyond Linux 5.10, the oldest kernel rstwatch
//! supports. Userspace probes each feature at start-up and writes the answers into the
//! programs' read-only global `FEATURES` before they are loaded. The verifier reads a frozen
//! read-only global as a constant and never walks a branch that constant rules out, so one
//! object loads on every kernel: a newer one takes the faster path, an older one the fallback
//! next to it.

/// The name of the programs' global holding a `ProgramFeatures`, for the loader.
pub const GLOBAL: &str = "FEATURES";

/// One byte per feature, non-zero when the kernel has it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramFeatures {
    /// `bpf_ktime_get_coarse_ns` (Linux 5.11), for per-CPU budgets and storm times. Without
    /// it they read the fine clock, which costs a little more.
    pub coarse_clock: u8,
    /// `bpf_xdp_load_bytes` (Linux 5.18), to copy a RST's frame on ingress. Without it the
    /// frame is copied from the packet data directly, which the XDP program (loaded without
    /// multi-buffer support) sees whole.
    pub xdp_load_bytes: u8,
    /// `bpf_get_socket_cookie` in BTF-typed tracepoints (Linux 5.12): the stack witness
    /// remembers each socket's owner by its cookie. Without it owners are unknown.
    pub socket_cookie: u8,
}

impl ProgramFeatures {
    /// Every feature: the object's default, what the newest kernels get.
    pub const ALL: Self = Self {
        coarse_clock: 1,
        xdp_load_bytes: 1,
        socket_cookie: 1,
    };
}

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::ProgramFeatures {}
}
