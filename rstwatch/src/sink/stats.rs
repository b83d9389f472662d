//! The syslog sink's counters: shared by the capture side's handle and the sender task.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A snapshot of the sink's counters. Every message handed to the sink ends up in exactly one
/// of: sent, resent (after a stay in the spool), or one of the drops; `pending` are still on
/// their way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Records delivered straight from memory.
    pub sent: u64,
    /// Records written to the disk spool (the receiver was down or too slow).
    pub spooled: u64,
    /// Records delivered from the spool.
    pub resent: u64,
    /// Messages refused because the sink's queue was full.
    pub dropped_queue_full: u64,
    /// Records lost because the spool was full or could not be written.
    pub dropped_spool: u64,
    /// Records too large for one UDP datagram.
    pub dropped_too_large: u64,
    /// Records waiting in memory or in the spool (refreshed every 100 ms).
    pub pending: u64,
    /// Disk used by the spool (refreshed every 100 ms).
    pub spool_bytes: u64,
    /// Whether the receiver is connected right now.
    pub connected: bool,
}

impl SinkStats {
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full + self.dropped_spool + self.dropped_too_large
    }
}

/// The counters behind `SinkStats`, shared by the handle and the sender task.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub sent: AtomicU64,
    pub spooled: AtomicU64,
    pub resent: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_spool: AtomicU64,
    pub dropped_too_large: AtomicU64,
    pub pending: AtomicU64,
    pub spool_bytes: AtomicU64,
    pub connected: AtomicBool,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> SinkStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        SinkStats {
            sent: get(&self.sent),
            spooled: get(&self.spooled),
            resent: get(&self.resent),
            dropped_queue_full: get(&self.dropped_queue_full),
            dropped_spool: get(&self.dropped_spool),
            dropped_too_large: get(&self.dropped_too_large),
            pending: get(&self.pending),
            spool_bytes: get(&self.spool_bytes),
            connected: self.connected.load(Ordering::Relaxed),
        }
    }
}
