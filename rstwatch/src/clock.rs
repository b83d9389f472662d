//! Kernel event times are CLOCK_MONOTONIC (`bpf_ktime_get_ns`); reports need wall-clock time.

use std::time::{Duration, SystemTime};

/// Converts kernel monotonic timestamps to wall-clock time, using the offset between the two
/// clocks measured once at start (a wall-clock step later shifts reports, not intervals).
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    realtime_minus_monotonic_ns: i128,
}

impl WallClock {
    pub fn new() -> Self {
        let monotonic = monotonic_ns() as i128;
        let realtime = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as i128;
        Self {
            realtime_minus_monotonic_ns: realtime - monotonic,
        }
    }

    /// A clock whose wall-clock time is `realtime_minus_monotonic_ns` ahead of the kernel's:
    /// reports read from a recording, or reproducible ones in tests.
    pub const fn with_offset(realtime_minus_monotonic_ns: i128) -> Self {
        Self {
            realtime_minus_monotonic_ns,
        }
    }

    pub fn to_system_time(&self, monotonic_ns: u64) -> SystemTime {
        let since_epoch = (monotonic_ns as i128 + self.realtime_minus_monotonic_ns).max(0);
        SystemTime::UNIX_EPOCH + Duration::from_nanos(since_epoch as u64)
    }
}

impl Default for WallClock {
    fn default() -> Self {
        Self::new()
    }
}

/// CLOCK_MONOTONIC now, in the kernel's `bpf_ktime_get_ns` time base.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_now_maps_to_wall_clock_now() {
        let clock = WallClock::new();
        let mapped = clock.to_system_time(monotonic_ns());
        let drift = SystemTime::now()
            .duration_since(mapped)
            .unwrap_or_else(|e| e.duration());
        assert!(drift < Duration::from_secs(1), "drift {drift:?}");
    }
}
