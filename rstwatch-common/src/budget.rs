//! A per-second budget: how the kernel limits what it does one by one under a flood (unknown-
//! flow RSTs sent as events, flows of SYNs inserted), and how the capture replay follows the
//! same limits with the capture's clock.

const NS_PER_SEC: u64 = 1_000_000_000;

/// How much of a budget per second the current second has used. The kernel keeps one per CPU
/// (in its per-CPU scratch, hence `repr(C)`); the replay keeps one per budget.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateWindow {
    /// When the current second started (the first `take` at least a second after the last).
    pub start_ns: u64,
    pub used: u32,
    pub _pad: u32,
}

impl RateWindow {
    /// Takes one from the budget of `per_sec` if the current second has any left; a second
    /// starts at the first call a full second after the previous second's start.
    #[inline(always)]
    pub fn take(&mut self, now_ns: u64, per_sec: u32) -> bool {
        if now_ns.saturating_sub(self.start_ns) >= NS_PER_SEC {
            self.start_ns = now_ns;
            self.used = 0;
        }
        if self.used >= per_sec {
            return false;
        }
        self.used += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_refills_a_second_after_its_second_started() {
        let mut window = RateWindow::default();
        let now = 5 * NS_PER_SEC;
        assert!(window.take(now, 2));
        assert!(window.take(now + 1, 2));
        assert!(
            !window.take(now + NS_PER_SEC - 1, 2),
            "the second is used up"
        );
        assert!(window.take(now + NS_PER_SEC, 2), "a new second");
        assert_eq!(window.start_ns, now + NS_PER_SEC);
        assert_eq!(window.used, 1);
    }

    #[test]
    fn a_zero_budget_takes_nothing() {
        let mut window = RateWindow::default();
        assert!(!window.take(NS_PER_SEC, 0));
        assert!(!window.take(3 * NS_PER_SEC, 0));
    }
}
