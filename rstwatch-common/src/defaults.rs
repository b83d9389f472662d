//! Defaults both sides rely on: the kernel's map sizes before userspace resizes them, and the
//! daemon's command-line defaults.

/// Flows tracked at once (`--flows`).
pub const FLOWS: u32 = 131_072;
/// Ring buffer between kernel and daemon (`--ring-mib`).
pub const RING_BYTES: u32 = 4 << 20;
/// How long a flow is kept after its first RST for follow-up evidence (`--grace`).
pub const GRACE_NS: u64 = 2_000_000_000;
/// How long the daemon holds a RST for its follow-ups (`--hold`).
pub const HOLD_NS: u64 = 300_000_000;
/// Silence before a reset that makes it an idle timeout (`--idle-timeout`).
pub const IDLE_TIMEOUT_NS: u64 = 30_000_000_000;
