//! Defaults both sides rely on: the kernel's map sizes before userspace resizes them, and the
//! daemon's command-line defaults.

/// Flows tracked at once (`--flows`).
pub const FLOWS: u32 = 131_072;
/// Ring buffer between kernel and daemon (`--ring-mib`).
pub const RING_BYTES: u32 = 4 << 20;
/// How long a flow is kept after its first RST, for follow-up evidence, before a later packet
/// of its 4-tuple starts a new one (`--grace`): Zeek's `tcp_reset_delay`.
pub const GRACE_NS: u64 = 5_000_000_000;
/// How long a flow both sides closed with a FIN stays silent before a later packet of its
/// 4-tuple starts a new one (`--close-delay`): Zeek's `tcp_close_delay`.
pub const CLOSE_DELAY_NS: u64 = 5_000_000_000;
/// How long the daemon holds a RST for its follow-ups (`--hold`).
pub const HOLD_NS: u64 = 300_000_000;
/// Silence before a reset that makes it an idle timeout (`--idle-timeout`).
pub const IDLE_TIMEOUT_NS: u64 = 30_000_000_000;
